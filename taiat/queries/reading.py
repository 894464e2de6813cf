"""The statements that read jobs, history and attempts without changing them. Part of the query
module (`taiat.queries`, which re-exports them); see its docstring."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import RowMapping, and_, func, select
from sqlalchemy.engine import Connection

from taiat.jobs import JobStatus
from taiat.schema import attempts, history, jobs, utcnow

PENDING = JobStatus.PENDING.value
RUNNING = JobStatus.RUNNING.value

READY = and_(jobs.c.status == PENDING, jobs.c.unmet_dependencies == 0)
READY_ORDER = (jobs.c.priority.desc(), jobs.c.run_at, jobs.c.created_at)


def get_active(conn: Connection, job_id: str, *, lock: bool = False) -> RowMapping | None:
    stmt = select(jobs).where(jobs.c.id == job_id)
    if lock:
        stmt = stmt.with_for_update()
    return conn.execute(stmt).mappings().first()


def latest_history(conn: Connection, job_id: str) -> RowMapping | None:
    stmt = (
        select(history)
        .where(history.c.job_id == job_id)
        .order_by(history.c.created_at.desc())
        .limit(1)
    )
    return conn.execute(stmt).mappings().first()


def completed_results(conn: Connection, job_ids: Collection[str]) -> dict[str, Any]:
    """The result of each of `job_ids` that has completed, by id."""
    if not job_ids:
        return {}
    h = history.c
    stmt = select(h.job_id, h.result).where(h.job_id.in_(job_ids), h.status == "completed")
    return {row.job_id: row.result for row in conn.execute(stmt)}


def ready_jobs(conn: Connection, limit: int | None) -> list[RowMapping]:
    stmt = select(jobs).where(READY, jobs.c.run_at <= utcnow()).order_by(*READY_ORDER)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(conn.execute(stmt).mappings())


def active_jobs(conn: Connection, status: str | None, limit: int | None) -> list[RowMapping]:
    """Active jobs, most recently changed first."""
    stmt = select(jobs).order_by(jobs.c.updated_at.desc(), jobs.c.id)
    if status is not None:
        stmt = stmt.where(jobs.c.status == status)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(conn.execute(stmt).mappings())


def history_entries(
    conn: Connection, limit: int | None, status: str | None = None
) -> list[RowMapping]:
    stmt = select(history).order_by(history.c.created_at.desc(), history.c.id)
    if status is not None:
        stmt = stmt.where(history.c.status == status)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(conn.execute(stmt).mappings())


def _latest_entries() -> Any:
    """History entries that stand for their job: its newest, and only if it is not active again
    (a job retried after failing has an older failed entry)."""
    newer = history.alias("newer")
    return and_(
        ~select(jobs.c.id).where(jobs.c.id == history.c.job_id).exists(),
        ~select(newer.c.id)
        .where(newer.c.job_id == history.c.job_id, newer.c.created_at > history.c.created_at)
        .exists(),
    )


def finished_jobs(conn: Connection, status: str | None, limit: int | None) -> list[RowMapping]:
    """Each finished job once, by its newest history entry, most recently finished first."""
    stmt = select(history).where(_latest_entries())
    if status is not None:
        stmt = stmt.where(history.c.status == status)
    stmt = stmt.order_by(history.c.created_at.desc(), history.c.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(conn.execute(stmt).mappings())


def count_by_status(conn: Connection) -> dict[str, int]:
    """Jobs per status, each job counted once."""
    counts: dict[str, int] = {}
    active = select(jobs.c.status, func.count()).group_by(jobs.c.status)
    finished = (
        select(history.c.status, func.count()).where(_latest_entries()).group_by(history.c.status)
    )
    for stmt in (active, finished):
        for status, count in conn.execute(stmt):
            counts[status] = counts.get(status, 0) + count
    return counts


def count_pending(conn: Connection) -> int:
    stmt = select(func.count()).select_from(jobs).where(jobs.c.status == PENDING)
    return conn.execute(stmt).scalar_one()


def attempts_for(conn: Connection, job_ids: Collection[str]) -> list[RowMapping]:
    if not job_ids:
        return []
    stmt = (
        select(attempts)
        .where(attempts.c.job_id.in_(job_ids))
        .order_by(attempts.c.job_id, attempts.c.attempt)
    )
    return list(conn.execute(stmt).mappings())
