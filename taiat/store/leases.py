"""Supervisors in the database: each registers a row under a unique id and heartbeats it; the
live ones take back the running jobs of those judged dead (the judging is the supervisor's:
`taiat.supervisor.liveness`). Each function runs inside the caller's transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection, RowMapping

from taiat.jobs import Attempt, Outcome
from taiat.store import queries, state_machine
from taiat.store.queries import supervisors as supervisor_queries
from taiat.store.state_machine import RetryPolicy

log = logging.getLogger(__name__)

#: What a supervisor publishes of its agents: `{name: {"inputs": [...], "outputs": [...],
#: "queue": str | None}}` (see `taiat.agents.registry.catalogue`).
Catalogue = dict[str, dict[str, Any]]


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
    agents: Catalogue | None = None,
) -> None:
    """Register a supervisor under `worker_id`, judged by `lease` (seconds), in the boot and
    PID namespace given (where its pid means something), serving `queues` (None: every one),
    with the agents it has (its catalogue: `{name: {"inputs": [...], "outputs": [...],
    "queue": str | None}}`; None: it runs every agent)."""
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
    (None if it registered none), its agents (its catalogue, `{}` if it published none) and
    its running job ids."""
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


def live(heartbeat_age: float, lease_seconds: float | None, lease: float) -> bool:
    """Whether a supervisor is live by its heartbeat's age and its own lease (`lease` for one
    that registered none): as `taiat supervisors` judges it (`taiat.supervisor.liveness.alive`)."""
    return heartbeat_age < (lease_seconds or lease)


def fleet_catalogue(workers: Iterable[Mapping[str, Any]]) -> Catalogue:
    """The catalogue of these supervisors together (`list_workers` entries, oldest first): every
    agent any of them has. Where two declare one agent differently, the one started last wins,
    but an agent named with no inputs or outputs (a custom executor's) never hides one that
    declares them."""
    found: Catalogue = {}
    for worker in workers:
        for name, entry in (worker.get("agents") or {}).items():
            entry = dict(entry or {})
            declares = bool(entry.get("inputs") or entry.get("outputs"))
            had = found.get(name)
            if had is not None and not declares and (had.get("inputs") or had.get("outputs")):
                continue
            found[name] = {
                "inputs": list(entry.get("inputs") or []),
                "outputs": list(entry.get("outputs") or []),
                "queue": entry.get("queue"),
            }
    return found


def live_catalogue(conn: Connection, lease: float) -> Catalogue:
    """The catalogue of the live fleet (`live`), read in the caller's transaction."""
    rows = supervisor_queries.list_workers(conn)
    alive = [
        row
        for row in rows
        if live((row["now"] - row["heartbeat_at"]).total_seconds(), row["lease_seconds"], lease)
    ]
    return fleet_catalogue(alive)


def fleet_agents(workers: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each agent of these supervisors' catalogue (`fleet_catalogue`), by name: its `inputs`,
    `outputs` and `queue`, and the ids of the `supervisors` that serve it."""
    workers = list(workers)
    listed = fleet_catalogue(workers)
    serving: dict[str, list[str]] = {}
    for worker in workers:
        for name in worker.get("agents") or {}:
            serving.setdefault(name, []).append(worker["id"])
    return [
        {"name": name, **listed[name], "supervisors": sorted(serving.get(name, []))}
        for name in sorted(listed)
    ]


def live_agents(conn: Connection, lease: float) -> list[dict[str, Any]]:
    """`fleet_agents` of the live supervisors (`live`)."""
    found = [
        worker
        for worker in list_workers(conn)
        if live(worker["heartbeat_age"], worker["lease_seconds"], lease)
    ]
    return fleet_agents(found)
