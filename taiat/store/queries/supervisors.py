"""The statements about supervisors: their rows and heartbeats, the jobs they run, and
whether a claim is still the running one. Part of the query module; see its docstring."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import (
    RowMapping,
    and_,
    case,
    delete,
    exists,
    false,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection

from taiat.store.queries import RUNNING
from taiat.store.schema import jobs, utcnow, workers
from taiat.store.schema import queues as queues_table


def backlog(
    conn: Connection,
    within: float,
    *,
    served: bool = False,
    queues: Collection[str] | None = None,
    agents: Collection[str] | None = None,
) -> list[RowMapping]:
    """The active jobs by queue and what they wait for, one grouped count: `(queue, kind,
    jobs, earliest)`, where `kind` is `running`; else, for a pending job, `blocked` (a
    dependency not completed yet), `ready` (its `run_at` has passed), `backoff` (a retry
    waiting out its backoff), `soon` (its `run_at` comes within `within` seconds) or `later`;
    `earliest` is the kind's first `run_at` in the queue. With `served`, only the jobs a
    supervisor serving `queues` and `agents` could claim (None: every one), of no paused
    queue."""
    kind = case(
        (jobs.c.status == RUNNING, "running"),
        (jobs.c.unmet_dependencies > 0, "blocked"),
        (jobs.c.run_at <= utcnow(), "ready"),
        (jobs.c.retry_count > 0, "backoff"),
        (jobs.c.run_at <= utcnow(float(within)), "soon"),
        else_="later",
    )
    each_stmt = select(jobs.c.queue, kind.label("kind"), jobs.c.run_at)
    if served:
        each_stmt = each_stmt.where(
            jobs.c.queue.not_in(select(queues_table.c.name).where(queues_table.c.paused))
        )
        if queues is not None:
            each_stmt = each_stmt.where(jobs.c.queue.in_(sorted(queues)))
        if agents is not None:
            each_stmt = each_stmt.where(jobs.c.agent.is_(None) | jobs.c.agent.in_(sorted(agents)))
    each = each_stmt.subquery()
    stmt = select(
        each.c.queue,
        each.c.kind,
        func.count().label("jobs"),
        func.min(each.c.run_at).label("earliest"),
    ).group_by(each.c.queue, each.c.kind)
    return list(conn.execute(stmt).mappings())


def current_claims(conn: Connection, claims: Mapping[str, int]) -> set[str]:
    """Those of the jobs (id -> claim_seq) whose claim is still the running one."""
    if not claims:
        return set()
    stmt = select(jobs.c.id, jobs.c.claim_seq).where(
        jobs.c.id.in_(list(claims)), jobs.c.status == RUNNING
    )
    return {row.id for row in conn.execute(stmt) if claims.get(row.id) == row.claim_seq}


def register_worker(conn: Connection, worker_id: str, host: str, pid: int, **more: Any) -> None:
    """A supervisor's row; `more`: its `lease_seconds`, `boot_id` and `pid_namespace`."""
    conn.execute(insert(workers).values(id=worker_id, host=host, pid=pid, **more))


def heartbeat(conn: Connection, worker_id: str) -> bool:
    """Refresh a supervisor's heartbeat: one statement on its own row, which no other
    supervisor locks but for a moment."""
    stmt = update(workers).where(workers.c.id == worker_id).values(heartbeat_at=utcnow())
    return conn.execute(stmt).rowcount == 1


def unregister_worker(conn: Connection, worker_id: str) -> None:
    conn.execute(delete(workers).where(workers.c.id == worker_id))


def list_workers(conn: Connection) -> list[RowMapping]:
    stmt = select(workers, utcnow().label("now")).order_by(workers.c.started_at)
    return list(conn.execute(stmt).mappings())


def _as_seen(dead: Mapping[str, datetime]) -> Any:
    """The rows of `dead` (id -> heartbeat_at) that have not heartbeated since."""
    if not dead:
        return false()
    return or_(
        *(and_(workers.c.id == id_, workers.c.heartbeat_at == at) for id_, at in dead.items())
    )


def orphaned_jobs(
    conn: Connection, worker_id: str, dead: Mapping[str, datetime]
) -> list[RowMapping]:
    """Running jobs of other supervisors that are dead, locked: those whose supervisor's row is
    one of `dead` (id -> heartbeat_at as judged) and has not heartbeated since, or is missing
    altogether. One statement, so a supervisor that registered and claimed meanwhile is seen
    with its row; rows another transaction has locked are skipped (taken on a later turn), so
    that no supervisor ever waits here on another's lock."""
    alive = exists().where(workers.c.id == jobs.c.worker_id, ~_as_seen(dead))
    stmt = (
        select(jobs)
        .where(
            jobs.c.status == RUNNING,
            (jobs.c.worker_id.is_(None)) | ((jobs.c.worker_id != worker_id) & ~alive),
        )
        .order_by(jobs.c.id)
        .with_for_update(skip_locked=True, of=jobs)
    )
    return list(conn.execute(stmt).mappings())


def delete_workers(conn: Connection, dead: Mapping[str, datetime]) -> None:
    """Delete the rows of `dead` (id -> heartbeat_at as judged) that have not heartbeated
    since, skipping any another transaction has locked."""
    if dead:
        chosen = select(workers.c.id).where(_as_seen(dead)).with_for_update(skip_locked=True)
        conn.execute(delete(workers).where(workers.c.id.in_(chosen.scalar_subquery())))


def running_for_workers(
    conn: Connection, worker_ids: Iterable[str], *, skip_locked: bool = False
) -> list[RowMapping]:
    """Running jobs of these supervisors; with `skip_locked`, locked, skipping those another
    transaction has locked."""
    stmt = select(jobs).where(jobs.c.status == RUNNING, jobs.c.worker_id.in_(list(worker_ids)))
    if skip_locked:
        stmt = stmt.with_for_update(skip_locked=True, of=jobs)
    return list(conn.execute(stmt).mappings())
