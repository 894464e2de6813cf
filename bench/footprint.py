"""What one supervisor costs (4 slots, on PostgreSQL and on SQLite): resident memory and CPU when
idle, and its peak resident memory while it drains a burst of no-op jobs. The supervisor process,
and its fork server beside it; and the memory of each child forked ahead, waiting for a job (one
per free slot): what is its own (USS), and its share of what it shares with the server (PSS).
Not the jobs' children. Each loads only its own database's driver, so the two differ."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import DATABASES, NOOP, fresh_database, manager, start_supervisor, stop, wait_for

MiB = 1 << 20
SETTLE_SECONDS = 3.0
SAMPLE_EVERY = 0.05
#: Completed jobs are counted in the database every this many memory samples.
COUNT_EVERY = 10
LOAD_JOBS = 2_000
LOAD_TIMEOUT = 300.0


def _state(status_file: Path) -> str | None:
    try:
        return json.loads(status_file.read_text()).get("state")
    except (OSError, ValueError):
        return None  # not written yet


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def run(quick: bool = False) -> list[dict[str, Any]]:
    return [_measure(kind, 3.0 if quick else 10.0) for kind in DATABASES]


def _measure(kind: str, idle_seconds: float) -> dict[str, Any]:
    with fresh_database(kind) as url, tempfile.TemporaryDirectory() as folder:
        status_file = Path(folder) / "status.json"
        sup = start_supervisor(url, "--max-concurrent-jobs", "4", "--status-file", str(status_file))
        jobs = manager(url)
        try:
            wait_for(lambda: _state(status_file) == "running", 60, "the supervisor to run")
            process = psutil.Process(sup.pid)
            time.sleep(SETTLE_SECONDS)
            rss_idle = process.memory_info().rss
            status = json.loads(status_file.read_text())
            server_pid = status.get("fork_server_pid")
            server_rss = psutil.Process(server_pid).memory_info().rss if server_pid else 0
            waiting = [psutil.Process(pid).memory_full_info() for pid in status["waiting_children"]]
            before = _cpu_seconds(process)
            time.sleep(idle_seconds)
            idle_cpu = (_cpu_seconds(process) - before) / idle_seconds

            jobs.create_jobs([NOOP] * LOAD_JOBS)
            started = time.monotonic()
            peak = rss_idle
            deadline = started + LOAD_TIMEOUT
            samples = 0
            while True:
                peak = max(peak, process.memory_info().rss)
                samples += 1
                if samples % COUNT_EVERY == 0 and _completed(jobs) == LOAD_JOBS:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("timed out waiting for the supervisor to drain the jobs")
                time.sleep(SAMPLE_EVERY)
            drained = time.monotonic() - started
        finally:
            stop(sup)
            jobs.engine.dispose()
    return {
        "case": f"1 supervisor, {DATABASES[kind]}, 4 slots",
        "rss_idle_mb": round(rss_idle / MiB, 1),
        "fork_server_rss_idle_mb": round(server_rss / MiB, 1),
        "waiting_children": len(waiting),
        "waiting_child_uss_mb": _mean_mb([m.uss for m in waiting]),
        "waiting_child_pss_mb": _mean_mb([m.pss for m in waiting]),
        "idle_cpu_percent": round(idle_cpu * 100, 2),
        "idle_seconds": idle_seconds,
        "rss_peak_under_load_mb": round(peak / MiB, 1),
        "load_jobs": LOAD_JOBS,
        "drain_s": round(drained, 1),
    }


def _mean_mb(values: list[int]) -> float | None:
    return round(sum(values) / len(values) / MiB, 2) if values else None


def _completed(jobs: Any) -> int:
    return jobs.count_jobs().get("completed", 0)
