"""The benchmark suite: `python -m bench` (or `bench/run`) prints a table and writes JSON."""
