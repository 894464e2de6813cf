"""The statements that read jobs, history and attempts without changing them. Part of the query
module (`taiat.store.queries`, which re-exports them); see its docstring."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import (
    Integer,
    RowMapping,
    String,
    and_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.engine import Connection

from taiat.jobs import JobStatus
from taiat.store.schema import attempts, history, jobs, output, utcnow
from taiat.store.schema import queues as queues_table

PENDING = JobStatus.PENDING.value
RUNNING = JobStatus.RUNNING.value


def written(value: str | int) -> Any:
    """A constant written into the statement rather than bound: a planner that sees the value
    can use the partial index whose condition it matches (SQLite otherwise scans with the
    whole index, several times slower). Only for this module's own constants."""
    text_ = f"'{value}'" if isinstance(value, str) else str(int(value))
    return literal_column(text_, String if isinstance(value, str) else Integer)


#: A job that may run once it is due: pending, no dependency unmet (`ix_taiat_jobs_ready`'s
#: condition, written as such).
READY = and_(jobs.c.status == written(PENDING), jobs.c.unmet_dependencies == written(0))


def mark_running(where: Any, when: Any) -> Any:
    """The claim's write: the jobs `where` selects marked running for :claimer, as started at
    `when`, their claim counted; returning their rows. Every claim, limited or not, is this."""
    return (
        update(jobs)
        .where(where)
        .values(
            status=RUNNING,
            worker_id=bindparam("claimer"),
            started_at=when,
            updated_at=when,
            claim_seq=jobs.c.claim_seq + 1,
        )
        .returning(*jobs.c)
    )


def served(*, queues: bool, agents: bool, excluded: bool = False) -> list[Any]:
    """What a claim may take besides being ready: a job of no paused queue; with `queues`, of
    the queues in :served_queues; with `agents`, a query or an agent job whose agent is in
    :served_agents; with `excluded`, a query or an agent job whose agent is not in
    :excluded_agents (held back for now: see `taiat.supervisor.admission`). Expanding lists:
    see `served_params`."""
    paused = select(queues_table.c.name).where(queues_table.c.paused)
    conditions: list[Any] = [jobs.c.queue.not_in(paused)]
    if queues:
        conditions.append(jobs.c.queue.in_(bindparam("served_queues", expanding=True)))
    if agents:
        listed = jobs.c.agent.in_(bindparam("served_agents", expanding=True))
        conditions.append(or_(jobs.c.agent.is_(None), listed))
    if excluded:
        unlisted = jobs.c.agent.not_in(bindparam("excluded_agents", expanding=True))
        conditions.append(or_(jobs.c.agent.is_(None), unlisted))
    return conditions


def served_params(
    queues: Collection[str] | None,
    agents: Collection[str] | None,
    excluded: Collection[str] | None = None,
) -> dict[str, list[str]]:
    """The parameters of `served`'s conditions (None: every queue, every agent, none
    excluded)."""
    params: dict[str, list[str]] = {}
    if queues is not None:
        params["served_queues"] = sorted(queues)
    if agents is not None:
        params["served_agents"] = sorted(agents)
    if excluded:
        params["excluded_agents"] = sorted(excluded)
    return params


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


#: LIKE's escape character; name patterns use the shell's `*` and `?` instead.
_ESCAPE = "\\"


def like_pattern(glob: str) -> str:
    """A shell-style pattern (`*` any text, `?` one character) as a LIKE pattern."""
    escaped = glob.replace(_ESCAPE, _ESCAPE * 2).replace("%", r"\%").replace("_", r"\_")
    return escaped.replace("*", "%").replace("?", "_")


def _named(column: Any, glob: str | None) -> Any:
    """Rows whose `column` matches the shell-style pattern `glob` in any case; all if None."""
    if glob is None:
        return true()
    return column.ilike(like_pattern(glob), escape=_ESCAPE)


def _rows(conn: Connection, stmt: Any, limit: int | None) -> list[RowMapping]:
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(conn.execute(stmt).mappings())


def _in_queue(column: Any, queue: str | None) -> Any:
    return true() if queue is None else column == queue


def ready_jobs(
    conn: Connection, limit: int | None, name: str | None = None, queue: str | None = None
) -> list[RowMapping]:
    """Ready jobs whose name matches `name` (of `queue`, if given), in the order supervisors
    claim them."""
    stmt = (
        select(jobs)
        .where(
            READY,
            jobs.c.run_at <= utcnow(),
            _named(jobs.c.name, name),
            _in_queue(jobs.c.queue, queue),
        )
        .order_by(*READY_ORDER)
    )
    return _rows(conn, stmt, limit)


def active_jobs(
    conn: Connection,
    status: str | None,
    limit: int | None,
    name: str | None = None,
    queue: str | None = None,
) -> list[RowMapping]:
    """Active jobs with `status` (any if None) whose name matches `name` (of `queue`, if
    given), most recently changed first."""
    stmt = select(jobs).where(_named(jobs.c.name, name), _in_queue(jobs.c.queue, queue))
    if status is not None:
        stmt = stmt.where(jobs.c.status == status)
    return _rows(conn, stmt.order_by(jobs.c.updated_at.desc(), jobs.c.id), limit)


def history_entries(
    conn: Connection, limit: int | None, status: str | None = None
) -> list[RowMapping]:
    stmt = select(history)
    if status is not None:
        stmt = stmt.where(history.c.status == status)
    return _rows(conn, stmt.order_by(history.c.created_at.desc(), history.c.id), limit)


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


def finished_jobs(
    conn: Connection,
    status: str | None,
    limit: int | None,
    name: str | None = None,
    queue: str | None = None,
) -> list[RowMapping]:
    """Each finished job once, by its newest history entry, with `status` (any if None) and a
    name matching `name` (of `queue`, if given), most recently finished first."""
    stmt = select(history).where(
        _latest_entries(), _named(history.c.name, name), _in_queue(history.c.queue, queue)
    )
    if status is not None:
        stmt = stmt.where(history.c.status == status)
    return _rows(conn, stmt.order_by(history.c.created_at.desc(), history.c.id), limit)


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


def output_for(conn: Connection, job_id: str, attempt: int | None = None) -> list[RowMapping]:
    """The output of the job's attempts (of attempt `attempt` only, if given), oldest first."""
    stmt = select(output).where(output.c.job_id == job_id).order_by(output.c.attempt)
    if attempt is not None:
        stmt = stmt.where(output.c.attempt == attempt)
    return list(conn.execute(stmt).mappings())


def recent_peaks(
    conn: Connection, per_agent: int, most: int, since: Any = None
) -> list[RowMapping]:
    """The peak memory of the latest attempts of agent jobs, at most `per_agent` of each
    agent, newest first, read from the newest `most` attempts that ended at or after `since`
    (naive UTC; None: any) and recorded a peak: rows of (agent, job_id, attempt, ended_at,
    peak_rss_bytes). Bounded by `most` (an index walk on `ended_at`), however many attempts
    the table holds; an agent found only further back is left out."""
    a = attempts.c
    peaked = select(a.job_id, a.attempt, a.ended_at, a.peak_rss_bytes).where(
        a.peak_rss_bytes > 0, a.ended_at.is_not(None)
    )
    if since is not None:
        peaked = peaked.where(a.ended_at >= since)
    newest = peaked.order_by(a.ended_at.desc()).limit(most).subquery("newest")
    active = select(jobs.c.agent).where(jobs.c.id == newest.c.job_id).scalar_subquery()
    finished = (
        select(history.c.agent).where(history.c.job_id == newest.c.job_id).limit(1)
    ).scalar_subquery()
    named = select(newest, func.coalesce(active, finished).label("agent")).subquery("named")
    ranked = select(
        named,
        func.row_number()
        .over(
            partition_by=named.c.agent,
            order_by=(named.c.ended_at.desc(), named.c.job_id, named.c.attempt),
        )
        .label("rank"),
    ).subquery("ranked")
    stmt = (
        select(
            ranked.c.agent,
            ranked.c.job_id,
            ranked.c.attempt,
            ranked.c.ended_at,
            ranked.c.peak_rss_bytes,
        )
        .where(ranked.c.agent.is_not(None), ranked.c.rank <= per_agent)
        .order_by(ranked.c.ended_at.desc())
    )
    return list(conn.execute(stmt).mappings())
