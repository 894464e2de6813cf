"""The bare fork loop: the ceiling any fork-per-job supervisor can reach on this machine.

Each "job" is a child forked with `os.fork()` that writes a small JSON result to a pipe and
leaves with `os._exit(0)`; the parent reads the result and reaps the child. Fork costs more
the bigger the forking process is, so the loop runs in a fresh subprocess that first imports
what the supervisor imports ("with taiat imported"), what the supervisor's fork server imports
("fork server's imports"), or nothing beyond what the interpreter loads at start-up ("bare").

The subprocess is `python -m bench.limit --worker AT_ONCE COUNT [--taiat] [--server] [--heavy]`
(`--heavy`: the heavy agents module, `bench.heavy_agents`, for the heavy section); this module
imports only the standard library at the top so that the bare variant stays bare.
"""

from __future__ import annotations

import json
import os
import selectors
import sys
import time

#: variant -> what the forking process imports before it forks.
VARIANTS = {"bare": "", "with taiat imported": "--taiat", "fork server's imports": "--server"}
CASES = {
    "bare": "bare fork loop",
    "with taiat imported": "fork loop, taiat imported",
    "fork server's imports": "fork loop, fork server's imports",
}
#: Loops of the size of the heavy section's processes (`bench.heavy`): the fork server that
#: holds the heavy agents module, and a supervisor that does (what it forks from without one).
HEAVY_VARIANTS = {
    "fork server's imports, heavy agents module": "--server --heavy",
    "with taiat imported, heavy agents module": "--taiat --heavy",
}
CONCURRENCY = (1, 2, 4)
_WARM_UP = 20


def limit_rate(at_once: int, variant: str, count: int) -> float:
    """Jobs per second of the bare fork loop with `at_once` children in flight."""
    return measure(at_once, variant, count)["jobs_per_s"]


def measure(at_once: int, variant: str, count: int) -> dict[str, float]:
    """One run of the fork loop of `variant` (`VARIANTS` or `HEAVY_VARIANTS`), `count` jobs with
    `at_once` in flight: its jobs/s, the forking process's resident MiB, and the CPU ms a job
    of the loop and its children."""
    import subprocess  # here, not at the top: the worker must import as little as it can

    from bench.common import ROOT

    command = [sys.executable, "-m", "bench.limit", "--worker", str(at_once), str(count)]
    command += {**VARIANTS, **HEAVY_VARIANTS}[variant].split()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def fork_loop(at_once: int, count: int) -> float:
    """Run `count` fork-per-job children, `at_once` in flight; returns the seconds taken."""
    selector = selectors.DefaultSelector()
    started = time.perf_counter()
    forked = finished = 0
    while finished < count:
        while forked < count and forked - finished < at_once:
            _fork_one(selector, forked)
            forked += 1
        for key, _ in selector.select():
            pid = key.data
            chunk = os.read(key.fd, 65536)
            # The child writes a few bytes (less than PIPE_BUF) in one go, then exits: one read
            # has it all, and EOF follows.
            json.loads(chunk)
            selector.unregister(key.fd)
            os.close(key.fd)
            _, status = os.waitpid(pid, 0)
            if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
                raise RuntimeError(f"child {pid} ended with status {status}")
            finished += 1
    return time.perf_counter() - started


def _fork_one(selector: selectors.BaseSelector, number: int) -> None:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.write(write_fd, json.dumps({"ok": True, "result": None, "n": number}).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    selector.register(read_fd, selectors.EVENT_READ, pid)


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _worker(argv: list[str]) -> None:
    at_once, count = int(argv[0]), int(argv[1])
    if "--taiat" in argv:
        import psycopg  # noqa: F401 - the driver a supervisor on PostgreSQL loads

        import taiat.supervisor.daemon  # noqa: F401 - what the supervisor's process holds
    if "--server" in argv:
        import taiat.agents.examples  # noqa: F401 - the example agents, which the server holds
        import taiat.forking.server_loop  # noqa: F401 - what the fork server's process holds
    if "--heavy" in argv:
        import bench.heavy_agents  # noqa: F401 - numpy and an array: about 150 MiB

    fork_loop(at_once, _WARM_UP)
    before = os.times()
    seconds = fork_loop(at_once, count)
    after = os.times()
    # The loop's and its children's, without the imports before it.
    cpu = sum(after[:4]) - sum(before[:4])
    print(
        json.dumps(
            {
                "jobs_per_s": count / seconds,
                "parent_rss_mb": _rss_mb(),
                "cpu_ms_a_job": cpu * 1000 / count,
            }
        )
    )


def run(quick: bool = False) -> list[dict]:
    count, repeats = (500, 1) if quick else (2000, 3)
    rows = []
    for variant in VARIANTS:
        for at_once in CONCURRENCY:
            figures = sorted(
                (measure(at_once, variant, count) for _ in range(repeats)),
                key=lambda f: f["jobs_per_s"],
            )
            median = figures[len(figures) // 2]
            rows.append(
                {
                    "case": CASES[variant],
                    "at_once": at_once,
                    "jobs_per_s": round(median["jobs_per_s"]),
                    "parent_rss_mb": round(median["parent_rss_mb"], 1),
                    "runs": repeats,
                }
            )
    return rows


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker(sys.argv[2:])
