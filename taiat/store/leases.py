"""Supervisors in the database: each registers a row under a unique id and heartbeats it; a
supervisor whose heartbeat is older than its lease is dead, and the live ones take its running
jobs back."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from taiat.forking.server import pid_exists
from taiat.job_manager import JobManager
from taiat.jobs import Attempt, Outcome
from taiat.store import queries, state_machine
from taiat.store.queries import supervisors as supervisor_queries

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


@dataclass(frozen=True)
class Place:
    """Where a supervisor's pid means something: the boot of the kernel it runs on and its PID
    namespace. Two supervisors in one place can tell whether the other's process is gone; a
    host name alone cannot say so (containers may share one and each have their own pids)."""

    boot_id: str | None
    pid_namespace: str | None

    @classmethod
    def here(cls) -> Place:
        return cls(_read(_BOOT_ID), _pid_namespace())

    def holds(self, row: Mapping[Any, Any]) -> bool:
        """Whether the supervisor of `row` is in this place, for sure."""
        return (
            self.boot_id is not None
            and self.pid_namespace is not None
            and row.get("boot_id") == self.boot_id
            and row.get("pid_namespace") == self.pid_namespace
        )


_BOOT_ID = "/proc/sys/kernel/random/boot_id"
_NOWHERE = Place(None, None)


def _read(path: str) -> str | None:
    try:
        with open(path) as file:
            return file.read().strip() or None
    except OSError:
        return None


def _pid_namespace() -> str | None:
    """The PID namespace of this process, as `pid:[inode]`."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def is_dead(
    row: Mapping[Any, Any],
    now: datetime,
    lease: float,
    place: Place = _NOWHERE,
    watched: float = math.inf,
) -> bool:
    """Whether the supervisor of a `taiat_workers` row is dead, in the eyes of one that has
    watched the database without a break for `watched` seconds and is at `place`.

    Its heartbeat is older than its own lease (`lease`, the observer's, for rows from before
    leases were registered), counting only the time the observer has watched: a supervisor
    that was itself cut off from the database, or stalled, cannot tell others' silence over
    that time from its own. Or it is in the same place, and its process is gone."""
    own_lease = row.get("lease_seconds") or lease
    silent = min((now - row["heartbeat_at"]).total_seconds(), watched)
    if silent > own_lease:
        return True
    return place.holds(row) and not pid_exists(row["pid"])


def recover(
    manager: JobManager,
    worker_id: str,
    lease: float,
    running_here: Collection[str] = (),
    *,
    place: Place = _NOWHERE,
    watched: float = math.inf,
) -> list[str]:
    """Take back the running jobs of dead supervisors (see `is_dead`), and of those whose row
    is missing altogether, as failed attempts ("supervisor lost"), retried per each job's
    policy. Jobs claimed in this supervisor's own name that it is not running (`running_here`:
    its children and its unwritten results) were claimed by a statement whose reply was lost in
    a database outage: they go back to pending, no retry spent. Rows and jobs another
    transaction holds are left for a later turn: this never waits on another supervisor.
    Returns the ids of the jobs taken back."""

    def work(conn: Connection) -> list[str]:
        now = queries.db_now(conn)
        dead = {
            row["id"]: row["heartbeat_at"]
            for row in supervisor_queries.list_workers(conn)
            if row["id"] != worker_id and is_dead(row, now, lease, place, watched)
        }
        taken: list[str] = []
        mine = supervisor_queries.running_for_workers(conn, [worker_id], skip_locked=True)
        for job in mine:
            if job["id"] not in running_here and state_machine.requeue(
                conn, job["id"], job["claim_seq"], None
            ):
                log.warning(
                    "job %s (%s): claim reply lost; back to pending", job["id"], job["name"]
                )
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
            status = state_machine.fail(
                conn, job["id"], job["claim_seq"], error, attempt, manager.retry_policy
            )
            if status is not None:
                log.warning("job %s (%s): %s; now %s", job["id"], job["name"], error, status.value)
                taken.append(job["id"])
        supervisor_queries.delete_workers(conn, dead)
        return taken

    return manager.run(work)


def register(
    manager: JobManager,
    worker_id: str,
    host: str,
    pid: int,
    *,
    lease: float | None = None,
    place: Place = _NOWHERE,
) -> None:
    """Register a supervisor under `worker_id`, judged by `lease` (seconds), at `place`."""
    with manager.transaction() as conn:
        supervisor_queries.register_worker(conn, worker_id, host, pid, **_more(lease, place))


def heartbeat(
    manager: JobManager,
    worker_id: str,
    host: str,
    pid: int,
    *,
    lease: float | None = None,
    place: Place = _NOWHERE,
) -> None:
    """Refresh the heartbeat, in a short transaction of its own; re-register if the row went
    missing (deleted by hand, or by a peer that took this supervisor for dead)."""
    with manager.transaction() as conn:
        if not supervisor_queries.heartbeat(conn, worker_id):
            more = _more(lease, place)
            supervisor_queries.register_worker(conn, worker_id, host, pid, **more)


def _more(lease: float | None, place: Place) -> dict[str, Any]:
    return {
        "lease_seconds": lease,
        "boot_id": place.boot_id,
        "pid_namespace": place.pid_namespace,
    }


def unregister(manager: JobManager, worker_id: str) -> None:
    with manager.transaction() as conn:
        supervisor_queries.unregister_worker(conn, worker_id)


def alive(entry: Mapping[str, Any], lease: float) -> bool:
    """Whether a supervisor `list_workers` found is alive by its own lease (`lease` for one
    that registered none)."""
    return bool(entry["heartbeat_age"] < (entry["lease_seconds"] or lease))


def list_workers(manager: JobManager) -> list[dict[str, Any]]:
    """Every registered supervisor with `heartbeat_age` in seconds, its own lease in seconds
    (None if it registered none) and its running job ids."""
    with manager.transaction() as conn:
        rows = supervisor_queries.list_workers(conn)
        running = supervisor_queries.running_for_workers(conn, [row["id"] for row in rows])
    by_worker: dict[str, list[str]] = {}
    for job in running:
        by_worker.setdefault(job["worker_id"], []).append(job["id"])
    found = []
    for row in rows:
        keys = ("id", "host", "pid", "started_at", "heartbeat_at", "lease_seconds")
        entry = {key: row[key] for key in keys}
        entry["heartbeat_age"] = (row["now"] - row["heartbeat_at"]).total_seconds()
        entry["running_jobs"] = sorted(by_worker.get(row["id"], []))
        found.append(entry)
    return found
