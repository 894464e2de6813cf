"""The statements behind the `taiat` command: finding jobs by name, the jobs around a job in
the dependency graph, what runs now. Part of the query module; see its docstring."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import RowMapping, and_, func, literal_column, select, true, type_coerce
from sqlalchemy.dialects.postgresql import JSONB, array
from sqlalchemy.engine import Connection

from taiat.queries import _READY, _READY_ORDER, RUNNING, _latest_entries
from taiat.schema import history, jobs, utcnow

#: LIKE's escape character; the operator's patterns use the shell's `*` and `?` instead.
_ESCAPE = "\\"


def like_pattern(glob: str) -> str:
    """A shell-style pattern (`*` any text, `?` one character) as a LIKE pattern."""
    escaped = glob.replace(_ESCAPE, _ESCAPE * 2).replace("%", r"\%").replace("_", r"\_")
    return escaped.replace("*", "%").replace("?", "_")


def _named(column: Any, glob: str | None) -> Any:
    if glob is None:
        return true()
    return column.ilike(like_pattern(glob), escape=_ESCAPE)


def find_active(
    conn: Connection, status: str | None, name: str | None, limit: int | None
) -> list[RowMapping]:
    """Active jobs with `status` whose name matches `name` (a shell pattern, any case), most
    recently changed first."""
    stmt = select(jobs).where(_named(jobs.c.name, name))
    if status is not None:
        stmt = stmt.where(jobs.c.status == status)
    stmt = stmt.order_by(jobs.c.updated_at.desc(), jobs.c.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(conn.execute(stmt).mappings())


def find_ready(conn: Connection, name: str | None, limit: int | None) -> list[RowMapping]:
    """Ready jobs whose name matches `name`, in the order supervisors claim them."""
    stmt = (
        select(jobs)
        .where(_READY, jobs.c.run_at <= utcnow(), _named(jobs.c.name, name))
        .order_by(*_READY_ORDER)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(conn.execute(stmt).mappings())


def find_finished(
    conn: Connection, status: str | None, name: str | None, limit: int | None
) -> list[RowMapping]:
    """Finished jobs (each by its newest history entry) with `status` whose name matches."""
    stmt = select(history).where(_latest_entries(), _named(history.c.name, name))
    if status is not None:
        stmt = stmt.where(history.c.status == status)
    stmt = stmt.order_by(history.c.created_at.desc(), history.c.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(conn.execute(stmt).mappings())


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
