"""Supervisors in the database: each registers a row under a unique id and heartbeats it; a
supervisor whose heartbeat is older than the lease is dead, and the live ones take its running
jobs back."""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Connection

from taiat import lifecycle, queries
from taiat.forkserver import pid_exists
from taiat.job_manager import JobManager
from taiat.jobs import Attempt
from taiat.queries import supervisors as supervisor_queries

log = logging.getLogger(__name__)


def new_worker_id(host: str, pid: int, token: str) -> str:
    """Unique per start; host and pid stay readable even when the row is gone."""
    return f"{host}:{pid}:{token}"


def describe(worker_id: str | None) -> str:
    """ "(host, pid)" of a supervisor, from its id alone."""
    if not worker_id:
        return "(unknown host, unknown pid)"
    parts = worker_id.split(":")
    if len(parts) >= 3:
        return f"({':'.join(parts[:-2])}, {parts[-2]})"
    return f"({worker_id})"


def recover(
    manager: JobManager,
    worker_id: str,
    host: str,
    lease: float,
    running_here: Collection[str] = (),
) -> list[str]:
    """Take back the running jobs of dead supervisors, as failed attempts ("supervisor lost"),
    retried per each job's policy. A supervisor is dead when its heartbeat is older than
    `lease` seconds, when it is on this host and its process is gone, or when its row is
    missing altogether. Jobs claimed in this supervisor's own name that it is not running
    (`running_here`: its children and its unwritten results) were claimed by a statement
    whose reply was lost in a database outage: they go back to pending, no retry spent.
    Returns the ids of the jobs taken back."""

    def work(conn: Connection) -> list[str]:
        now = queries.db_now(conn)
        dead: list[str] = []
        live: list[str] = []
        for row in supervisor_queries.list_workers(conn):
            stale = row["heartbeat_at"] < now - timedelta(seconds=lease)
            gone = row["host"] == host and row["id"] != worker_id and not pid_exists(row["pid"])
            (dead if stale or gone else live).append(row["id"])
        live.append(worker_id)
        taken: list[str] = []
        for job in supervisor_queries.running_for_workers(conn, [worker_id]):
            if job["id"] not in running_here and lifecycle.requeue(
                conn, job["id"], job["claim_seq"], None
            ):
                log.warning(
                    "job %s (%s): claim reply lost; back to pending", job["id"], job["name"]
                )
                taken.append(job["id"])
        for job in supervisor_queries.orphaned_jobs(conn, live):
            error = f"supervisor lost {describe(job['worker_id'])}"
            attempt = Attempt(
                job_id=job["id"],
                attempt=job["claim_seq"],
                worker_id=job["worker_id"],
                outcome="lost",
                error_message=error,
                started_at=job["started_at"],
                ended_at=now,
            )
            status = lifecycle.fail(
                conn, job["id"], job["claim_seq"], error, attempt, manager.retry_policy
            )
            if status is not None:
                log.warning("job %s (%s): %s; now %s", job["id"], job["name"], error, status.value)
                taken.append(job["id"])
        supervisor_queries.delete_workers(conn, dead)
        return taken

    return manager.run(work)


def register(manager: JobManager, worker_id: str, host: str, pid: int) -> None:
    with manager.transaction() as conn:
        supervisor_queries.register_worker(conn, worker_id, host, pid)


def heartbeat(manager: JobManager, worker_id: str, host: str, pid: int) -> None:
    """Refresh the heartbeat; re-register if the row went missing (e.g. deleted by hand)."""
    with manager.transaction() as conn:
        if not supervisor_queries.heartbeat(conn, worker_id):
            supervisor_queries.register_worker(conn, worker_id, host, pid)


def unregister(manager: JobManager, worker_id: str) -> None:
    with manager.transaction() as conn:
        supervisor_queries.unregister_worker(conn, worker_id)


def list_workers(manager: JobManager) -> list[dict[str, Any]]:
    """Every registered supervisor with `heartbeat_age` in seconds and its running job ids."""
    with manager.transaction() as conn:
        rows = supervisor_queries.list_workers(conn)
        running = supervisor_queries.running_for_workers(conn, [row["id"] for row in rows])
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
