"""Fleet-wide limits by key: their rows, and the limit-aware claim, taken when any limit is set.

The limit-aware claim, in the claim's transaction:
1. lock every limit row (`FOR UPDATE`, in key order): limit-aware claims take turns across the
   fleet, so that each sees every start committed before it (on SQLite the write lock does it);
2. count the running jobs of each limited key, from the running jobs themselves (a job claimed
   ahead counts: it is claimed), so that whatever ends or takes back a job frees its room;
3. count each rate-limited key's starts in its window (`taiat_limit_starts`, a sliding window);
4. read the best ready jobs, leaving out those with a key that has no room, and take in order
   those whose every limited key still has room, counting each one taken.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    Float,
    Integer,
    RowMapping,
    String,
    bindparam,
    delete,
    func,
    insert,
    literal,
    not_,
    null,
    or_,
    select,
    text,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import DateTime

from taiat.store.queries.reading import (
    READY,
    READY_ORDER,
    RUNNING,
    mark_running,
    served,
    served_params,
)
from taiat.store.schema import JsonType, jobs, limit_starts, limits, utcnow
from taiat.store.validation import limit_keys


class utcclock(FunctionElement[Any]):  # noqa: N801 - reads as a SQL function
    """The database's time as the statement runs (PostgreSQL's `clock_timestamp()`, not the
    transaction's start as `utcnow`), naive UTC, plus `offset` seconds if given: a limited
    claim is stamped after it waited for the limits' lock, so that starts recorded one after
    the other have times in that order."""

    type = DateTime()
    inherit_cache = True


@compiles(utcclock, "postgresql")
def _pg_utcclock(element: utcclock, compiler: Any, **kw: Any) -> str:
    base = "(clock_timestamp() AT TIME ZONE 'utc')"
    if not element.clauses.clauses:
        return base
    offset = compiler.process(element.clauses.clauses[0], **kw)
    return f"({base} + make_interval(secs => {offset}))"


@compiles(utcclock, "sqlite")
def _sqlite_utcclock(element: utcclock, compiler: Any, **kw: Any) -> str:
    return compiler.process(utcnow(*element.clauses.clauses), **kw)


#: How many ready jobs the limit-aware claim reads per job it may take: some may be skipped
#: when a key's room runs out within the claim.
CANDIDATES_PER_JOB = 4


def any_limits(conn: Connection) -> bool:
    return conn.execute(select(limits.c.key).limit(1)).first() is not None


def limit_rows(conn: Connection, *, lock: bool = False) -> list[RowMapping]:
    stmt = select(limits).order_by(limits.c.key)
    if lock:
        stmt = stmt.with_for_update()
    return list(conn.execute(stmt).mappings())


def set_limit(
    conn: Connection, key: str, concurrency: int | None, rate: tuple[int, float] | None
) -> None:
    """Insert or replace the limit on `key`."""
    values = {
        "concurrency": concurrency,
        "rate_count": rate[0] if rate else None,
        "rate_seconds": rate[1] if rate else None,
        "updated_at": utcnow(),
    }
    changed = conn.execute(update(limits).where(limits.c.key == key).values(**values))
    if changed.rowcount == 0:
        conn.execute(insert(limits).values(key=key, **values))
    if rate is None:
        conn.execute(delete(limit_starts).where(limit_starts.c.key == key))


def clear_limit(conn: Connection, key: str) -> bool:
    """Remove the limit on `key`; False when there was none."""
    conn.execute(delete(limit_starts).where(limit_starts.c.key == key))
    return conn.execute(delete(limits).where(limits.c.key == key)).rowcount == 1


def running_counts(conn: Connection, keys: Iterable[str]) -> dict[str, int]:
    """How many running jobs (claimed ahead included) carry each of `keys`."""
    counts = dict.fromkeys(keys, 0)
    stmt = select(jobs.c.queue, jobs.c.agent, jobs.c.limit_keys).where(jobs.c.status == RUNNING)
    for row in conn.execute(stmt):
        for key in limit_keys(row.queue, row.agent, row.limit_keys):
            if key in counts:
                counts[key] += 1
    return counts


def waiting_counts(conn: Connection, keys: Iterable[str]) -> dict[str, int]:
    """How many ready jobs (pending, nothing unmet, due) carry each of `keys`: one grouped
    count over the ready jobs."""
    counts = dict.fromkeys(keys, 0)
    if not counts:
        return counts
    stmt = (
        select(jobs.c.queue, jobs.c.agent, jobs.c.limit_keys, func.count().label("jobs"))
        .where(READY, jobs.c.run_at <= utcnow())
        .group_by(jobs.c.queue, jobs.c.agent, jobs.c.limit_keys)
    )
    for row in conn.execute(stmt):
        for key in limit_keys(row.queue, row.agent, row.limit_keys):
            if key in counts:
                counts[key] += row.jobs
    return counts


#: Starts this many seconds older than a rate's window still count against it: the clock that
#: stamps a start is read a moment before the one the window is measured from.
WINDOW_MARGIN = 0.01

_CLOCK_AND_STARTS = union_all(
    select(
        literal(None, String).label("key"),
        utcclock().label("now"),
        literal(0, Integer).label("starts"),
    ),
    select(limit_starts.c.key, literal(None, DateTime), func.count())
    .join(limits, limits.c.key == limit_starts.c.key)
    .where(
        limits.c.rate_seconds.is_not(None),
        limit_starts.c.started_at >= utcclock(-(limits.c.rate_seconds + WINDOW_MARGIN)),
    )
    .group_by(limit_starts.c.key),
)


def _clock_and_starts(
    conn: Connection, rated: Mapping[str, tuple[int, float]]
) -> tuple[datetime, dict[str, int]]:
    """The database's time now (`utcclock`), and how many starts each rate-limited key had in
    its window up to then: one statement."""
    counts = dict.fromkeys(rated, 0)
    now: datetime | None = None
    for row in conn.execute(_CLOCK_AND_STARTS):
        if row.key is None:
            now = row.now
        elif row.key in counts:
            counts[row.key] = row.starts
    assert now is not None
    return now, counts


#: Every this many recordings of starts, a process prunes the starts older than every window
#: (which no claim counts, as it reads only those of the longest window).
PRUNE_EVERY = 64
_recorded = 0

#: Whether the last limit-aware claim in this process found a limit set: while it does, claims
#: try the limit-aware path first, sparing the one-statement claim that would take nothing.
_seen = False


def limits_seen() -> bool:
    return _seen


_RUNNING_KEYS = select(jobs.c.queue, jobs.c.agent, jobs.c.limit_keys).where(
    jobs.c.status == RUNNING
)
_LOCK_LIMITS = select(limits).order_by(limits.c.key).with_for_update()
_LIMITS_AND_RUNNING = union_all(
    select(
        limits.c.key,
        limits.c.concurrency,
        limits.c.rate_count,
        limits.c.rate_seconds,
        literal(None, String).label("queue"),
        literal(None, String).label("agent"),
        # A bare NULL: a bound None of the JSON type would be sent, and decoded, as 'null'.
        type_coerce(null(), JsonType).label("limit_keys"),
    ),
    select(
        literal(None, String),
        literal(None, Integer),
        literal(None, Integer),
        literal(None, Float),
        jobs.c.queue,
        jobs.c.agent,
        jobs.c.limit_keys,
    ).where(jobs.c.status == RUNNING),
)
_CANDIDATES: dict[tuple[str, bool, bool, bool, bool, bool], Any] = {}


def _candidates(
    dialect: str,
    queues: bool,
    agents: bool,
    explicit: bool,
    served_queues: bool = False,
    served_agents: bool = False,
) -> Any:
    """The best ready jobs this claim may take (see `reading.served`: `served_queues`,
    `served_agents`), locked, but those with a blocked key: with `queues`, `agents` and
    `explicit`, the blocked queues (:queues), agents (:agents) and keys (:keys). One statement
    per shape, built once."""
    shape = (dialect, queues, agents, explicit, served_queues, served_agents)
    if shape in _CANDIDATES:
        return _CANDIDATES[shape]
    filters: list[Any] = served(queues=served_queues, agents=served_agents)
    if queues:
        filters.append(jobs.c.queue.not_in(bindparam("queues", expanding=True)))
    if agents:
        filters.append(
            or_(jobs.c.agent.is_(None), jobs.c.agent.not_in(bindparam("agents", expanding=True)))
        )
    if explicit and dialect == "postgresql":
        blocked = bindparam("keys", type_=ARRAY(String))
        filters.append(not_(func.jsonb_exists_any(jobs.c.limit_keys, blocked)))
    elif explicit:
        # The keys as one JSON text: the statement is then the same at every call, not
        # rendered anew for each count of keys.
        filters.append(
            text(
                "NOT EXISTS (SELECT 1 FROM json_each(taiat_jobs.limit_keys) AS k "
                "WHERE k.value IN (SELECT value FROM json_each(:keys)))"
            ).bindparams(bindparam("keys", type_=JsonType))
        )
    stmt = (
        select(jobs.c.id, jobs.c.queue, jobs.c.agent, jobs.c.limit_keys)
        .where(READY, jobs.c.run_at <= utcnow(), *filters)
        .order_by(*READY_ORDER)
        .limit(bindparam("candidates"))
        .with_for_update(skip_locked=True, key_share=True)
    )
    _CANDIDATES[shape] = stmt
    return stmt


_TAKE_BEST: dict[tuple[Any, bool], Any] = {}


def _take_best(candidates: Any, stamped: bool) -> Any:
    """`candidates`' first :candidates jobs marked running, in one statement (`stamped`: as
    started at :now, else at the database's time)."""
    shape = (candidates, stamped)
    if shape not in _TAKE_BEST:
        chosen = candidates.cte("chosen")
        when = bindparam("now") if stamped else utcclock()
        _TAKE_BEST[shape] = mark_running(jobs.c.id == chosen.c.id, when)
    return _TAKE_BEST[shape]


_TAKEN = jobs.c.id.in_(bindparam("taken", expanding=True))
_TAKE = mark_running(_TAKEN, bindparam("now"))
_TAKE_NOW = mark_running(_TAKEN, utcclock())


def _record_starts(
    conn: Connection,
    claimed: list[RowMapping],
    rated: Mapping[str, tuple[int, float]],
    now: datetime | None,
) -> None:
    """Record the starts of the claimed jobs' rate-limited keys, and now and then forget those
    older than every window."""
    starts = [
        {"key": key, "started_at": now, "job_id": row["id"], "claim_seq": row["claim_seq"]}
        for row in claimed
        for key in limit_keys(row["queue"], row["agent"], row["limit_keys"])
        if key in rated
    ]
    if now is None or not starts:
        return
    global _recorded
    conn.execute(insert(limit_starts), starts)
    _recorded += 1
    if _recorded % PRUNE_EVERY == 0:
        longest = max(seconds for _, seconds in rated.values())
        conn.execute(
            delete(limit_starts).where(limit_starts.c.started_at < now - timedelta(seconds=longest))
        )


def claim_jobs_limited(
    conn: Connection,
    worker_id: str,
    limit: int,
    served_queues: Collection[str] | None = None,
    served_agents: Collection[str] | None = None,
) -> list[RowMapping] | None:
    """Mark up to `limit` ready jobs running for `worker_id`, best first, each only if every
    one of its limited keys has room and rate to start it; None when no limit is set. Of
    `served_queues` and `served_agents` only, and of no paused queue (see `reading.served`)."""
    global _seen
    running_keys: list[Any]
    if conn.dialect.name == "sqlite":
        # No row locks there, and the write lock is held already: one statement reads both.
        both = conn.execute(_LIMITS_AND_RUNNING).all()
        rows = [row._mapping for row in both if row.key is not None]
        running_keys = [row for row in both if row.key is None]
    else:
        rows = list(conn.execute(_LOCK_LIMITS).mappings())
        running_keys = []
    _seen = bool(rows)
    if not rows:
        return None
    if conn.dialect.name != "sqlite":
        # After the lock: a new snapshot, with every start committed before it.
        running_keys = list(conn.execute(_RUNNING_KEYS))
    caps = {row["key"]: row["concurrency"] for row in rows if row["concurrency"] is not None}
    rated = {
        row["key"]: (row["rate_count"], row["rate_seconds"])
        for row in rows
        if row["rate_count"] is not None
    }
    room = dict(caps)
    for row in running_keys:
        for key in limit_keys(row.queue, row.agent, row.limit_keys):
            if key in room:
                room[key] -= 1
    now: datetime | None = None
    tokens: dict[str, int] = {}
    if rated:
        now, in_window = _clock_and_starts(conn, rated)
        tokens = {key: rated[key][0] - n for key, n in in_window.items()}
    blocked = {key for key, n in room.items() if n <= 0} | {k for k, n in tokens.items() if n <= 0}
    queues = sorted(key[len("queue:") :] for key in blocked if key.startswith("queue:"))
    agents = sorted(key[len("agent:") :] for key in blocked if key.startswith("agent:"))
    params: dict[str, Any] = {"candidates": limit * CANDIDATES_PER_JOB}
    params |= served_params(served_queues, served_agents)
    if queues:
        params["queues"] = queues
    if agents:
        params["agents"] = agents
    if blocked:
        params["keys"] = sorted(blocked)
    stmt = _candidates(
        conn.dialect.name,
        bool(queues),
        bool(agents),
        bool(blocked),
        served_queues is not None,
        served_agents is not None,
    )
    if all(n >= limit for n in (*room.values(), *tokens.values()) if n > 0):
        # Room for `limit` more on every key not blocked: whichever jobs come first fit.
        params |= {"candidates": limit, "claimer": worker_id, "now": now}
        claimed = list(conn.execute(_take_best(stmt, now is not None), params).mappings())
        _record_starts(conn, claimed, rated, now)
        return claimed
    taken: list[str] = []
    for row in conn.execute(stmt, params):
        keys = limit_keys(row.queue, row.agent, row.limit_keys)
        if any(room.get(key, 1) <= 0 or tokens.get(key, 1) <= 0 for key in keys):
            continue
        for key in keys:
            if key in room:
                room[key] -= 1
            if key in tokens:
                tokens[key] -= 1
        taken.append(row.id)
        if len(taken) == limit:
            break
    if not taken:
        return []
    if now is None:
        return list(conn.execute(_TAKE_NOW, {"taken": taken, "claimer": worker_id}).mappings())
    params = {"taken": taken, "claimer": worker_id, "now": now}
    claimed = list(conn.execute(_TAKE, params).mappings())
    _record_starts(conn, claimed, rated, now)
    return claimed
