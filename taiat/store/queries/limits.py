"""Fleet-wide limits by key: their rows, and the limit-aware claim, taken when any limit is set.

The limit-aware claim, in the claim's transaction:
1. lock every limit row (`FOR UPDATE`, in key order): limit-aware claims take turns across the
   fleet, so that each sees every start committed before it (on SQLite the write lock does it);
2. count each limited key's room: the least of its cap less its running jobs (a job claimed
   ahead counts: it is claimed), counted from the running jobs themselves so that whatever ends
   or takes back a job frees its room, and of its rate less its starts in the window
   (`taiat_limit_starts`, a sliding window);
3. read the best ready jobs, leaving out those with a key out of room, and take in order
   those whose every limited key still has room, counting each one taken; record the starts
   of their rate-limited keys.

PostgreSQL takes these steps in one call, `taiat_claim_limited` (`store/sql/claim_limited.sql`):
each statement of that function reads a snapshot taken after the lock of step 1, which one
statement sent from here could not. SQLite, whose claim holds the write lock, takes them here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import (
    ARRAY,
    Integer,
    RowMapping,
    String,
    bindparam,
    column,
    delete,
    func,
    insert,
    literal,
    null,
    select,
    text,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.engine import Connection

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

#: How many ready jobs the limit-aware claim reads per job it may take: some may be skipped
#: when a key's room runs out within the claim.
CANDIDATES_PER_JOB = 4

#: A key's room when nothing caps it (a rate alone, or a cap alone, leaves the other unbounded).
UNBOUNDED = 2**31 - 1

#: Whether the last limit-aware claim in this process found a limit set: while it does, claims
#: try the limit-aware path first, sparing the one-statement claim that would take nothing.
_seen = False


def limits_seen() -> bool:
    return _seen


def forget_limits() -> None:
    """The one-statement claim took jobs: no limit is set."""
    global _seen
    _seen = False


def claim_jobs_limited(
    conn: Connection,
    worker_id: str,
    limit: int,
    served_queues: Collection[str] | None = None,
    served_agents: Collection[str] | None = None,
) -> list[RowMapping]:
    """Mark up to `limit` ready jobs running for `worker_id`, best first, each only if every
    one of its limited keys has room and rate to start it; none when no limit is set. Of
    `served_queues` and `served_agents` only, and of no paused queue (see `reading.served`)."""
    if conn.dialect.name == "postgresql":
        params = {
            "claimer": worker_id,
            "want": limit,
            "served_queues": None if served_queues is None else sorted(served_queues),
            "served_agents": None if served_agents is None else sorted(served_agents),
        }
        claimed = list(conn.execute(_CLAIM_LIMITED, params).mappings())
        global _seen
        _seen = _seen or bool(claimed)  # none taken: perhaps no limit, perhaps none with room
        return claimed
    return _claim_limited_here(conn, worker_id, limit, served_queues, served_agents)


_CLAIM_LIMITED = select(
    func.taiat_claim_limited(
        bindparam("claimer", type_=String),
        bindparam("want", type_=Integer),
        bindparam("served_queues", type_=ARRAY(String)),
        bindparam("served_agents", type_=ARRAY(String)),
        CANDIDATES_PER_JOB,
        WINDOW_MARGIN,
    ).table_valued(*(column(c.name, c.type) for c in jobs.c))
)

# -- the same steps on SQLite, under its write lock --------------------------------------------

#: The limits, each with its starts in its rate's window, then the running jobs' keys: the
#: state a claim judges room by, in one statement.
_STATE = union_all(
    select(
        limits.c.key,
        limits.c.concurrency,
        limits.c.rate_count,
        select(func.count())
        .where(
            limit_starts.c.key == limits.c.key,
            limit_starts.c.started_at >= utcnow(-(limits.c.rate_seconds + WINDOW_MARGIN)),
        )
        .scalar_subquery()
        .label("starts"),
        literal(None, String).label("queue"),
        literal(None, String).label("agent"),
        # A bare NULL: a bound None of the JSON type would be sent, and decoded, as 'null'.
        type_coerce(null(), JsonType).label("limit_keys"),
    ),
    select(
        literal(None, String),
        literal(None, Integer),
        literal(None, Integer),
        literal(None, Integer),
        jobs.c.queue,
        jobs.c.agent,
        jobs.c.limit_keys,
    ).where(jobs.c.status == RUNNING),
)


def _room(state: list[Any]) -> tuple[dict[str, int], set[str]]:
    """Each limited key's room, the least of its cap less its running jobs and of its rate
    less its starts in the window (`UNBOUNDED` for what it lacks); and the rate-limited keys,
    from `_STATE`'s rows."""
    running: Counter[str] = Counter()
    limited = []
    for key, cap, rate, starts, queue, agent, explicit in state:
        if key is None:
            running.update(limit_keys(queue, agent, explicit))
        else:
            limited.append((key, cap, rate, starts))
    room = {
        key: min(
            UNBOUNDED if cap is None else cap - running[key],
            UNBOUNDED if rate is None else rate - starts,
        )
        for key, cap, rate, starts in limited
    }
    return room, {key for key, _, rate, _ in limited if rate is not None}


_TAKES: dict[tuple[bool, bool, bool], Any] = {}


def _take(blocked: bool, served_queues: bool, served_agents: bool) -> Any:
    """Mark running, as `mark_running` does, the :want best ready jobs (of those
    `reading.served` lets this claim take) with none of the keys out of room (:keys, a JSON
    array, with `blocked`). One statement per shape, built once."""
    shape = (blocked, served_queues, served_agents)
    if shape in _TAKES:
        return _TAKES[shape]
    filters: list[Any] = served(queues=served_queues, agents=served_agents)
    if blocked:
        # The keys as one JSON text: the statement is then the same at every call, not
        # rendered anew for each count of keys.
        keys = "SELECT value FROM json_each(:keys)"
        filters.append(
            text(
                f"'queue:' || taiat_jobs.queue NOT IN ({keys}) "
                f"AND coalesce('agent:' || taiat_jobs.agent, '') NOT IN ({keys}) "
                "AND NOT EXISTS (SELECT 1 FROM json_each(taiat_jobs.limit_keys) AS k "
                f"WHERE k.value IN ({keys}))"
            ).bindparams(bindparam("keys", type_=JsonType))
        )
    chosen = (
        select(jobs.c.id)
        .where(READY, jobs.c.run_at <= utcnow(), *filters)
        .order_by(*READY_ORDER)
        .limit(bindparam("want"))
        .cte("chosen")
    )
    _TAKES[shape] = mark_running(jobs.c.id == chosen.c.id, utcnow())
    return _TAKES[shape]


#: Every this many recordings of starts, a process prunes the starts older than every window
#: (which no claim counts, as it reads only those of the longest window).
PRUNE_EVERY = 64
_recorded = 0


def _record_starts(conn: Connection, taken: list[RowMapping], rated: set[str]) -> None:
    """Record the starts of the `taken` jobs' rate-limited keys, and now and then forget those
    older than every window."""
    starts = [
        {
            "key": key,
            "started_at": row["started_at"],
            "job_id": row["id"],
            "claim_seq": row["claim_seq"],
        }
        for row in taken
        for key in limit_keys(row["queue"], row["agent"], row["limit_keys"])
        if key in rated
    ]
    if not starts:
        return
    global _recorded
    conn.execute(insert(limit_starts), starts)
    _recorded += 1
    if _recorded % PRUNE_EVERY == 0:
        longest = select(func.max(limits.c.rate_seconds) + WINDOW_MARGIN).scalar_subquery()
        conn.execute(delete(limit_starts).where(limit_starts.c.started_at < utcnow(-longest)))


def _claim_limited_here(
    conn: Connection,
    worker_id: str,
    limit: int,
    served_queues: Collection[str] | None,
    served_agents: Collection[str] | None,
) -> list[RowMapping]:
    """`claim_jobs_limited` on SQLite. Each take is of the best jobs with no key out of room,
    as many as the tightest room allows, so that no key can run out within it; the rooms are
    counted anew for the next, until `limit` are taken or nothing more can be."""
    global _seen
    params: dict[str, Any] = {"claimer": worker_id} | served_params(served_queues, served_agents)
    claimed: list[RowMapping] = []
    while len(claimed) < limit:
        room, rated = _room(conn.execute(_STATE).all())
        _seen = bool(room)
        if not room:
            break
        blocked = [key for key, n in room.items() if n <= 0]
        want = min([limit - len(claimed), *(n for n in room.values() if n > 0)])
        stmt = _take(bool(blocked), served_queues is not None, served_agents is not None)
        taken = list(conn.execute(stmt, params | {"want": want, "keys": blocked}).mappings())
        if rated:
            _record_starts(conn, taken, rated)
        claimed += taken
        if len(taken) < want:
            break
    return claimed
