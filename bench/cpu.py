"""Where the CPU goes: the CPU time per no-op job of each process taking part while one
supervisor with 2 slots drains a queue on PostgreSQL, against the bare fork loop's at 2 at once.

When every core is busy, throughput is the cores divided by the CPU one job costs: these figures
say what a job costs, and who pays. The jobs' children are counted through the fork server,
which reaps them; the database's share is that of the server processes serving this database
(the supervisor's connections, and autovacuum), so it is seen only for a server on this machine.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import NOOP, ROOT, fresh_database, manager, start_supervisor, stop, wait_for

SLOTS = 2
SAMPLE_EVERY = 0.05
DRAIN_TIMEOUT = 300.0


def run(quick: bool = False) -> list[dict[str, Any]]:
    jobs = 1000 if quick else 3000
    bare = _bare_loop_cpu(jobs)
    taiat, wall = _supervisor_cpu(jobs)
    total = sum(taiat.values())
    cores = os.cpu_count() or 1
    case = f"taiat, PostgreSQL, 1 supervisor x {SLOTS} slots"
    rows: list[dict[str, Any]] = [
        {
            "case": "bare fork loop, 2 at once",
            "who": "the loop and its children",
            "cpu_ms_per_job": bare,
            "ceiling_jobs_per_s": round(cores * 1000 / bare),
        }
    ]
    rows += [{"case": case, "who": who, "cpu_ms_per_job": ms} for who, ms in taiat.items()]
    rows.append(
        {
            "case": case,
            "who": "all of the above",
            "cpu_ms_per_job": round(total, 3),
            "ceiling_jobs_per_s": round(cores * 1000 / total),
            "measured_jobs_per_s": round(jobs / wall),
        }
    )
    return rows


def _bare_loop_cpu(count: int) -> float:
    """CPU ms per job of the bare fork loop, 2 at once: the loop's process and its children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = [sys.executable, "-m", "bench.limit", "--worker", str(SLOTS), str(count)]
    subprocess.run(command, cwd=ROOT, capture_output=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return round(spent * 1000 / count, 3)


def _supervisor_cpu(count: int) -> tuple[dict[str, float], float]:
    """CPU ms per job of each party while a supervisor drains `count` no-op jobs, and the
    drain's wall time."""
    with fresh_database("postgresql") as url, tempfile.TemporaryDirectory() as folder:
        database = url.rsplit("/", 1)[1]
        status_file = Path(folder) / "status.json"
        jobs = manager(url)
        jobs.create_jobs([NOOP] * count)
        jobs.engine.dispose()
        sup = start_supervisor(
            url, "--max-concurrent-jobs", str(SLOTS), "--status-file", str(status_file)
        )
        try:
            server_pid = wait_for(lambda: _server_pid(status_file), 60, "the fork server")
            supervisor = psutil.Process(sup.pid)
            server = psutil.Process(server_pid)
            backends: dict[int, float] = {}
            started = time.monotonic()
            while _completed(status_file) < count:
                _sample_backends(database, backends)
                if time.monotonic() > started + DRAIN_TIMEOUT:
                    raise RuntimeError("timed out waiting for the supervisor to drain the jobs")
                time.sleep(SAMPLE_EVERY)
            wall = time.monotonic() - started
            _sample_backends(database, backends)
            own, theirs = supervisor.cpu_times(), server.cpu_times()
        finally:
            stop(sup)
    per_job = 1000 / count
    return {
        "supervisor": round((own.user + own.system) * per_job, 3),
        "fork server": round((theirs.user + theirs.system) * per_job, 3),
        "jobs' children": round((theirs.children_user + theirs.children_system) * per_job, 3),
        "database server": round(sum(backends.values()) * per_job, 3),
    }, wall


def _status(status_file: Path) -> dict[str, Any]:
    try:
        return json.loads(status_file.read_text())
    except (OSError, ValueError):
        return {}  # not written yet


def _server_pid(status_file: Path) -> int | None:
    return _status(status_file).get("fork_server_pid")


def _completed(status_file: Path) -> int:
    """Jobs completed, as the status file says: no connection of ours counts as the
    database's work."""
    return _status(status_file).get("counters", {}).get("completed", 0)


def _sample_backends(database: str, seen: dict[int, float]) -> None:
    """The CPU seconds so far of each PostgreSQL process serving `database` (its title says
    "postgres: ... <database> ..."; the supervisor's own command line names it too)."""
    for process in psutil.process_iter(["cmdline"]):
        try:
            title = " ".join(process.info["cmdline"] or [])
            if title.startswith("postgres:") and database in title:
                times = process.cpu_times()
                seen[process.pid] = times.user + times.system
        except psutil.Error:
            continue
