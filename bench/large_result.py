"""One large result through a supervisor (`--max-result-bytes` raised; PostgreSQL and SQLite):
how long until it is stored, the supervisor's peak resident memory meanwhile (the process
itself: not its fork server, the job's child or the process that stores the result), and how
well its loop kept time while the result crossed: the longest gap between two writes of its
status file (written at least every 2 s) and the oldest its heartbeat got (every lease / 3)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import DATABASES, fresh_database, manager, start_supervisor, stop, wait_for
from taiat.store import leases

MiB = 1 << 20
LEASE = 6.0
SAMPLE_EVERY = 0.01
TIMEOUT = 600.0


def run(quick: bool = False) -> list[dict[str, Any]]:
    return [_measure(kind, 50 if quick else 200) for kind in DATABASES]


def _updated_at(status_file: Path) -> str | None:
    try:
        return json.loads(status_file.read_text()).get("updated_at")
    except (OSError, ValueError):
        return None  # not written yet, or being replaced


def _measure(kind: str, megabytes: int) -> dict[str, Any]:
    with fresh_database(kind) as url, tempfile.TemporaryDirectory() as folder:
        status_file = Path(folder) / "status.json"
        jm = manager(url)
        process = start_supervisor(
            url,
            "--max-result-bytes",
            str((megabytes + 1) * MiB),
            "--lease",
            str(LEASE),
            "--status-file",
            str(status_file),
        )
        try:
            wait_for(lambda: _updated_at(status_file), 60, "the supervisor to start")
            supervisor = psutil.Process(process.pid)
            payload = {"agent_name": "big", "parameters": {"megabytes": megabytes}}
            job = jm.create_job("agent", "big", payload=payload)
            started = time.monotonic()
            peak = supervisor.memory_info().rss
            last, last_seen, gap, heartbeat_age = _updated_at(status_file), started, 0.0, 0.0
            checked = 0.0
            while True:
                now = time.monotonic()
                peak = max(peak, supervisor.memory_info().rss)
                updated = _updated_at(status_file)
                if updated is not None and updated != last:
                    last, last_seen = updated, now
                gap = max(gap, now - last_seen)
                if now - checked >= 0.2:
                    checked = now
                    ages = [w["heartbeat_age"] for w in leases.list_workers(jm)]
                    heartbeat_age = max([heartbeat_age, *ages])
                    current = jm.get_job(job.id)
                    if current is not None and current.status.finished:
                        break
                if now - started > TIMEOUT:
                    raise RuntimeError("timed out waiting for the large result to be stored")
                time.sleep(SAMPLE_EVERY)
            stored = time.monotonic() - started
            intact = current.status.value == "completed"
            intact = intact and current.result == "x" * (megabytes * MiB)
        finally:
            stop(process)
            jm.engine.dispose()
    return {
        "database": DATABASES[kind],
        "result_MiB": megabytes,
        "stored_s": round(stored, 1),
        "intact": intact,
        "supervisor_peak_rss_MiB": round(peak / MiB, 1),
        "longest_status_gap_s": round(gap, 2),
        "oldest_heartbeat_s": round(heartbeat_age, 2),
    }
