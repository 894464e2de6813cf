"""Supervisors in the database: each registers a row under a unique id and heartbeats it; the
live ones take back the running jobs of those judged dead (the judging is the supervisor's:
`taiat.supervisor.liveness`). Each function runs inside the caller's transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection, RowMapping

from taiat.jobs import Attempt, Outcome
from taiat.store import queries, state_machine
from taiat.store.queries import supervisors as supervisor_queries
from taiat.store.state_machine import RetryPolicy

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
    conn: Connection,
    worker_id: str,
    is_dead: Callable[[RowMapping, datetime], bool],
    retry_policy: RetryPolicy,
    running_here: Collection[str] = (),
) -> list[str]:
    """Take back the running jobs of the supervisors `is_dead(row, now)` judges dead, and of
    those whose row is missing altogether, as failed attempts ("supervisor lost"), retried per
    each job's policy. Jobs claimed in this supervisor's own name that it is not running
    (`running_here`: its children and its unwritten results) were claimed by a statement whose
    reply was lost in a database outage: they go back to pending, no retry spent. Rows and jobs
    another transaction holds are left for a later turn: this never waits on another
    supervisor. Returns the ids of the jobs taken back."""
    now = queries.db_now(conn)
    dead = {
        row["id"]: row["heartbeat_at"]
        for row in supervisor_queries.list_workers(conn)
        if row["id"] != worker_id and is_dead(row, now)
    }
    taken: list[str] = []
    mine = supervisor_queries.running_for_workers(conn, [worker_id], skip_locked=True)
    for job in mine:
        if job["id"] not in running_here and state_machine.requeue(
            conn, job["id"], job["claim_seq"], None
        ):
            log.warning("job %s (%s): claim reply lost; back to pending", job["id"], job["name"])
            taken.append(job["id"])
    for job in supervisor_queries.orphaned_jobs(conn, worker_id, dead):
        error = f"supervisor lost {describe(job['worker_id'])}"
        attempt = Attempt(
            job_id=job["id"],
            attempt=job["claim_seq"],
            worker_id=job["worker_id"],
            outcome=Outcome.LOST,
            error_message=error,
            started_at=job["started_at"],
            ended_at=now,
        )
        status = state_machine.fail(conn, job["id"], job["claim_seq"], error, attempt, retry_policy)
        if status is not None:
            log.warning("job %s (%s): %s; now %s", job["id"], job["name"], error, status.value)
            taken.append(job["id"])
    supervisor_queries.delete_workers(conn, dead)
    return taken


def register(
    conn: Connection,
    worker_id: str,
    host: str,
    pid: int,
    *,
    lease: float | None = None,
    boot_id: str | None = None,
    pid_namespace: str | None = None,
    queues: Sequence[str] | None = None,
    agents: Mapping[str, Any] | None = None,
) -> None:
    """Register a supervisor under `worker_id`, judged by `lease` (seconds), in the boot and
    PID namespace given (where its pid means something), serving `queues` (None: every one)
    and the agents `agents` names (None: every agent)."""
    more = _more(lease, boot_id, pid_namespace, queues, agents)
    supervisor_queries.register_worker(conn, worker_id, host, pid, **more)


def heartbeat(
    conn: Connection,
    worker_id: str,
    host: str,
    pid: int,
    *,
    lease: float | None = None,
    boot_id: str | None = None,
    pid_namespace: str | None = None,
    queues: Sequence[str] | None = None,
    agents: Mapping[str, Any] | None = None,
) -> None:
    """Refresh the heartbeat; re-register if the row went missing (deleted by hand, or by a
    peer that took this supervisor for dead)."""
    if not supervisor_queries.heartbeat(conn, worker_id):
        more = _more(lease, boot_id, pid_namespace, queues, agents)
        supervisor_queries.register_worker(conn, worker_id, host, pid, **more)


def _more(
    lease: float | None,
    boot_id: str | None,
    pid_namespace: str | None,
    queues: Sequence[str] | None,
    agents: Mapping[str, Any] | None,
) -> dict[str, Any]:
    return {
        "lease_seconds": lease,
        "boot_id": boot_id,
        "pid_namespace": pid_namespace,
        "queues": None if queues is None else list(queues),
        "agents": None if agents is None else dict(agents),
    }


def unregister(conn: Connection, worker_id: str) -> None:
    supervisor_queries.unregister_worker(conn, worker_id)


def list_workers(conn: Connection) -> list[dict[str, Any]]:
    """Every registered supervisor with `heartbeat_age` in seconds, its own lease in seconds
    (None if it registered none) and its running job ids."""
    rows = supervisor_queries.list_workers(conn)
    running = supervisor_queries.running_for_workers(conn, [row["id"] for row in rows])
    by_worker: dict[str, list[str]] = {}
    for job in running:
        by_worker.setdefault(job["worker_id"], []).append(job["id"])
    found = []
    for row in rows:
        keys = (
            "id",
            "host",
            "pid",
            "started_at",
            "heartbeat_at",
            "lease_seconds",
            "queues",
            "agents",
        )
        entry = {key: row[key] for key in keys}
        entry["heartbeat_age"] = (row["now"] - row["heartbeat_at"]).total_seconds()
        entry["running_jobs"] = sorted(by_worker.get(row["id"], []))
        found.append(entry)
    return found
