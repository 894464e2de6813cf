"""The jobs' sandbox: a cgroup per job where the host lets the supervisor manage cgroups (v2
with a delegated subtree, else the v1 hierarchies), so that the kernel enforces each job's
memory, process and CPU limits, counts every process the job starts, and lets none of them
outlive it. `cgroups` holds the cgroup files' formats and a job's group; `detect` finds what
the host allows. Light to import: a job's child loads `cgroups` to join its group."""
