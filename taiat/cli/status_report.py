"""`taiat-supervisor --status`: the jobs and supervisors, printed without starting anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from taiat.config import SupervisorConfig
from taiat.job_manager import JobManager
from taiat.jobs import JobStatus
from taiat.store import db
from taiat.supervisor import liveness

#: A supervisor whose heartbeat is older than the default lease is shown as dead.
DEFAULT_LEASE_SECONDS = SupervisorConfig().lease


def print_status(database_url: str | None, status_file: Path | None = None) -> int:
    manager = JobManager(database_url)
    counts = manager.count_jobs()
    print(f"database: {db.describe(manager.engine)}")
    print("jobs: " + ", ".join(f"{s.value} {counts.get(s.value, 0)}" for s in JobStatus))
    ready = manager.get_ready_jobs(limit=10)
    print(f"ready jobs ({len(ready)} shown, up to 10):")
    for job in ready:
        print(f"  {job.id}  {job.name}  priority {job.priority}")
    history = manager.get_job_history(limit=10)
    print(f"recent history ({len(history)}):")
    for entry in history:
        took = "-" if entry.duration_seconds is None else entry.duration_seconds
        line = f"  {entry.completed_at:%Y-%m-%d %H:%M:%S}  {entry.status.value:<9}  {entry.job_id}"
        line += f"  {entry.name}  {took} s"
        if entry.error_message:
            line += f"  {entry.error_message.splitlines()[0][:80]}"
        print(line)
    found = manager.port.list_workers()
    print(f"supervisors ({len(found)}):")
    for worker in found:
        alive = "alive" if liveness.alive(worker, DEFAULT_LEASE_SECONDS) else "DEAD"
        print(
            f"  {worker['id']}  {alive}, heartbeat {worker['heartbeat_age']:.1f} s ago, "
            f"running {len(worker['running_jobs'])} jobs"
        )
    if status_file is not None:
        print(f"status file {status_file}:")
        print("  " + _status_file_line(status_file))
    manager.engine.dispose()
    return 0


def _status_file_line(path: Path) -> str:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        return f"unreadable: {exc}"
    counters = ", ".join(f"{k} {v}" for k, v in data.get("counters", {}).items())
    return (
        f"pid {data.get('pid')} on {data.get('host')}, {data.get('state')}, "
        f"{len(data.get('running', []))}/{data.get('slots')} slots busy, database "
        f"{data.get('database')}, updated {data.get('updated_at')}; {counters}"
    )
