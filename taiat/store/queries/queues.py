"""The statements about queues: pausing and resuming one, and the counts of the jobs of each
(by queue and, for pending agent jobs, by agent). Part of the query module; see its
docstring."""

from __future__ import annotations

from typing import Any

from sqlalchemy import RowMapping, case, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from taiat.jobs import JobType
from taiat.store.queries.reading import PENDING, READY, RUNNING
from taiat.store.schema import jobs, queues, utcnow


def pause(conn: Connection, name: str) -> None:
    """Mark the queue paused, whether or not it had a row."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = insert(queues).values(name=name, paused=True, updated_at=utcnow())
    stmt = stmt.on_conflict_do_update(
        index_elements=[queues.c.name], set_={"paused": True, "updated_at": utcnow()}
    )
    conn.execute(stmt)


def resume(conn: Connection, name: str) -> bool:
    """Mark the queue not paused; whether it was paused."""
    stmt = (
        update(queues)
        .where(queues.c.name == name, queues.c.paused)
        .values(paused=False, updated_at=utcnow())
    )
    return conn.execute(stmt).rowcount == 1


def paused_queues(conn: Connection) -> list[str]:
    return list(conn.execute(select(queues.c.name).where(queues.c.paused)).scalars())


def by_queue(conn: Connection) -> list[RowMapping]:
    """The active jobs of each queue by kind, one grouped count: `(queue, kind, jobs)`, where
    `kind` is `running`, `ready` (pending, nothing unmet, its `run_at` passed) or `pending`
    (any other pending job)."""
    kind = case(
        (jobs.c.status == RUNNING, "running"),
        (READY & (jobs.c.run_at <= utcnow()), "ready"),
        else_="pending",
    )
    each = select(jobs.c.queue, kind.label("kind")).subquery()
    stmt = select(each.c.queue, each.c.kind, func.count().label("jobs")).group_by(
        each.c.queue, each.c.kind
    )
    return list(conn.execute(stmt).mappings())


def pending_agents(conn: Connection, job_id: str | None = None) -> list[RowMapping]:
    """The pending agent jobs by queue and agent, `(queue, agent, jobs)`; with `job_id`, that
    job's only (if it is one)."""
    stmt: Any = select(jobs.c.queue, jobs.c.agent, func.count().label("jobs")).where(
        jobs.c.status == PENDING,
        jobs.c.job_type == JobType.AGENT.value,
        jobs.c.agent.is_not(None),
    )
    if job_id is not None:
        stmt = stmt.where(jobs.c.id == job_id)
    stmt = stmt.group_by(jobs.c.queue, jobs.c.agent)
    return list(conn.execute(stmt).mappings())
