"""The statements behind the `taiat` command: finding jobs by name, the jobs around a job in
the dependency graph, what runs now. Part of the query module; see its docstring."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import RowMapping, and_, func, literal_column, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB, array
from sqlalchemy.engine import Connection

from taiat.store.queries import _READY, RUNNING
from taiat.store.schema import history, jobs, utcnow


def active_by_id(conn: Connection, ids: Collection[str]) -> list[RowMapping]:
    if not ids:
        return []
    return list(conn.execute(select(jobs).where(jobs.c.id.in_(list(ids)))).mappings())


def history_by_job_id(conn: Connection, ids: Collection[str]) -> list[RowMapping]:
    """Every history entry of the jobs, oldest first (the last one per job is its newest)."""
    if not ids:
        return []
    stmt = (
        select(history)
        .where(history.c.job_id.in_(list(ids)))
        .order_by(history.c.created_at, history.c.id)
    )
    return list(conn.execute(stmt).mappings())


def _depends_on_any(conn: Connection, column: Any, ids: list[str]) -> Any:
    """True where the JSON list of dependency ids in `column` names any of `ids`."""
    if conn.dialect.name == "postgresql":
        return type_coerce(column, JSONB).has_any(array(ids))
    each = func.json_each(column).table_valued("value")
    return select(literal_column("1")).select_from(each).where(each.c.value.in_(ids)).exists()


def dependents_of(conn: Connection, ids: Collection[str]) -> list[RowMapping]:
    """`(id, dependencies)` of every job, active or finished, that depends on any of `ids`.
    (The edge table keeps only unmet dependencies; the jobs' own lists keep them all.)"""
    if not ids:
        return []
    wanted = list(ids)
    active = select(jobs.c.id, jobs.c.dependencies).where(
        _depends_on_any(conn, jobs.c.dependencies, wanted)
    )
    finished = select(history.c.job_id.label("id"), history.c.dependencies).where(
        _depends_on_any(conn, history.c.dependencies, wanted)
    )
    return [*conn.execute(active).mappings(), *conn.execute(finished).mappings()]


def running_jobs(conn: Connection) -> list[RowMapping]:
    """Running jobs with the database's time as `now`, oldest start first."""
    stmt = (
        select(
            jobs.c.id,
            jobs.c.name,
            jobs.c.worker_id,
            jobs.c.started_at,
            jobs.c.retry_count,
            jobs.c.timeout_seconds,
            utcnow().label("now"),
        )
        .where(jobs.c.status == RUNNING)
        .order_by(jobs.c.started_at, jobs.c.id)
    )
    return list(conn.execute(stmt).mappings())


def count_ready(conn: Connection) -> int:
    stmt = select(func.count()).select_from(jobs).where(and_(_READY, jobs.c.run_at <= utcnow()))
    return conn.execute(stmt).scalar_one()


def count_unfinished(conn: Connection) -> int:
    """Jobs pending or running: every row of the active table."""
    return conn.execute(select(func.count()).select_from(jobs)).scalar_one()
