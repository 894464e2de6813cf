"""The statements behind the `taiat` command: finding jobs by name, the jobs around a job in
the dependency graph, what runs now. Part of the query module; see its docstring."""

from __future__ import annotations

import sys
import weakref
from collections.abc import Collection
from typing import Any

from sqlalchemy import RowMapping, and_, func, literal_column, select, text, type_coerce
from sqlalchemy.dialects.postgresql import JSONB, array
from sqlalchemy.engine import Connection, Engine

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


def job_ids_from(conn: Connection, prefix: str, limit: int) -> list[str]:
    """The ids of the jobs, active or finished, that begin with `prefix`, in order, at most
    `limit` of them. A range of the primary key (of the history's `job_id` index for finished
    jobs): ids with a prefix lie between it and the next string after all of them, in code
    point order, which is the order of SQLite's keys and of PostgreSQL's under a C collation.
    A database that sorts text another way (en_US, ICU) does not keep them together, and is
    searched whole."""
    upper = _past_prefix(prefix)

    def starting(column: Any) -> Any:
        begins = func.substr(column, 1, len(prefix)) == prefix
        if not _code_point_order(conn):
            return begins
        bounds = [column >= prefix] + ([column < upper] if upper is not None else [])
        return and_(*bounds, begins)

    active = select(jobs.c.id).where(starting(jobs.c.id)).order_by(jobs.c.id).limit(limit)
    finished = (
        select(history.c.job_id)
        .where(starting(history.c.job_id))
        .group_by(history.c.job_id)
        .order_by(history.c.job_id)
        .limit(limit)
    )
    found = {*conn.execute(active).scalars(), *conn.execute(finished).scalars()}
    return sorted(found)[:limit]


def _past_prefix(prefix: str) -> str | None:
    """The first string, in code point order, after every string that begins with `prefix`:
    its last character that can be, one higher, and what came before it; None if none can."""
    for end in range(len(prefix) - 1, -1, -1):
        code = ord(prefix[end]) + 1
        if 0xD800 <= code <= 0xDFFF:  # no text holds a surrogate
            code = 0xE000
        if code <= sys.maxunicode:
            return prefix[:end] + chr(code)
    return None


#: Whether each engine's database compares text by code point, as learnt once.
_ORDER: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()


def _code_point_order(conn: Connection) -> bool:
    """Whether the database's text sorts by code point: always on SQLite (its keys compare
    bytes of UTF-8); on PostgreSQL when its collation is C (C, POSIX, C.UTF-8)."""
    if conn.dialect.name != "postgresql":
        return True
    known = _ORDER.get(conn.engine)
    if known is None:
        # Under a linguistic collation upper case sorts after lower, and punctuation is
        # ignored, or sorts before digits.
        probe = text("SELECT 'B' < 'a' AND 'a-c' < 'ab' AND 'x9' < 'x:'")
        known = _ORDER[conn.engine] = bool(conn.execute(probe).scalar_one())
    return known


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
