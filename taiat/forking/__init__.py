"""A job's process, from its fork to its reaping. Its handle in the supervisor
(`job_process`), who forks it (`launchers`: the fork server of `server` and `server_loop`, or
the supervisor itself), the fast fork (`fast_fork`), the child's life (`child`), every byte
format between the processes (`wire`), process groups, pids and signals (`posix`), and results
spooled on their way (`spool`).

Light on purpose: the fork server imports this package and must never load the database
stack."""
