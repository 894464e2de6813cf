"""The `taiat` command: what an operator does with jobs and supervisors from a terminal.

`cli` reads the command line and dispatches; `jobs` and `admin` hold the commands over jobs,
history and supervisors; `graph` draws the dependency graph; `top` is the live view;
`progress` shows batches of jobs finishing; `options`, `render` and `store` are shared by all
of them.
"""
