"""Supervisors in the database: each registers a row under a unique id and heartbeats it."""

from __future__ import annotations

from typing import Any

from taiat import queries
from taiat.job_manager import JobManager


def register(manager: JobManager, worker_id: str, host: str, pid: int) -> None:
    with manager.transaction() as conn:
        queries.register_worker(conn, worker_id, host, pid)


def heartbeat(manager: JobManager, worker_id: str, host: str, pid: int) -> None:
    """Refresh the heartbeat; re-register if the row went missing (e.g. deleted by hand)."""
    with manager.transaction() as conn:
        if not queries.heartbeat(conn, worker_id):
            queries.register_worker(conn, worker_id, host, pid)


def unregister(manager: JobManager, worker_id: str) -> None:
    with manager.transaction() as conn:
        queries.unregister_worker(conn, worker_id)


def list_workers(manager: JobManager) -> list[dict[str, Any]]:
    """Every registered supervisor with `heartbeat_age` in seconds and its running job ids."""
    with manager.transaction() as conn:
        rows = queries.list_workers(conn)
        running = queries.running_for_workers(conn, [row["id"] for row in rows])
    by_worker: dict[str, list[str]] = {}
    for job in running:
        by_worker.setdefault(job["worker_id"], []).append(job["id"])
    found = []
    for row in rows:
        entry = {key: row[key] for key in ("id", "host", "pid", "started_at", "heartbeat_at")}
        entry["heartbeat_age"] = (row["now"] - row["heartbeat_at"]).total_seconds()
        entry["running_jobs"] = sorted(by_worker.get(row["id"], []))
        found.append(entry)
    return found
