"""Fleet-wide limits by key: their rows, and the limit-aware claim, taken when any limit is set.

The limit-aware claim, in the claim's transaction:
1. limit-aware claims take turns across the fleet, so that each sees every start committed
   before it: on PostgreSQL by a transaction's advisory lock keyed by the limits table, on
   SQLite by the write lock every claim holds;
2. each limited key's room is counted: the least of its cap less its running jobs (a job
   claimed ahead counts: it is claimed), counted from the running jobs themselves so that
   whatever ends or takes back a job frees its room, and of its rate less its starts in the
   window (`taiat_limit_starts`: the buckets that overlap it);
3. one statement takes the best ready jobs with no key out of room, as many as are still
   wanted and as the tightest room of any key allows (so that no key can run out within it),
   and counts their rate-limited keys' starts; the rooms are counted anew for the next take,
   until enough are taken or a take finds fewer than it asked for.

PostgreSQL takes these steps in one call, `taiat_claim_limited` (`store/sql/claim_limited.sql`):
each statement of that function reads a snapshot taken after the lock of step 1, which one
statement sent from here could not. SQLite takes them in `_take`'s statement, and its trigger
`taiat_limit_starts_counted` (`store/sql/limit_starts_sqlite.sql`) counts the starts.

A claimed job given back without being started (`queries.give_back`) has its starts taken back
out of the buckets its claim counted them in (`uncount_starts`), as it goes back to pending.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import (
    ARRAY,
    Float,
    Integer,
    RowMapping,
    String,
    bindparam,
    case,
    cast,
    column,
    delete,
    extract,
    func,
    insert,
    literal_column,
    or_,
    select,
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
    written,
)
from taiat.store.schema import STARTS_BUCKETS, jobs, limit_starts, limits, utcnow
from taiat.store.validation import limit_keys


def any_limits(conn: Connection) -> bool:
    return conn.execute(select(limits.c.key).limit(1)).first() is not None


def limit_rows(conn: Connection) -> list[RowMapping]:
    return list(conn.execute(select(limits).order_by(limits.c.key)).mappings())


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


#: Starts this many seconds older than a rate's window still count against it: a margin for the
#: clocks' resolution (a start is stamped after the window it was judged by is measured).
WINDOW_MARGIN = 0.01

#: A key's room when nothing caps it (a rate alone, or a cap alone, leaves the other unbounded).
UNBOUNDED = 2**31 - 1

#: Whether the last limit-aware claim in this process found a limit set: while it does, claims
#: try the limit-aware path first, sparing the one-statement claim that would take nothing.
_seen = False


def limits_seen() -> bool:
    return _seen


def claim_jobs_limited(
    conn: Connection,
    worker_id: str,
    limit: int,
    served_queues: Collection[str] | None = None,
    served_agents: Collection[str] | None = None,
    excluded_agents: Collection[str] | None = None,
) -> list[RowMapping]:
    """Mark up to `limit` ready jobs running for `worker_id`, best first, each only if every
    one of its limited keys has room and rate to start it; none when no limit is set. Of
    `served_queues` and `served_agents` only, none of `excluded_agents`, and of no paused
    queue (see `reading.served`)."""
    excluded = sorted(excluded_agents) if excluded_agents else None
    if conn.dialect.name == "postgresql":
        params = {
            "claimer": worker_id,
            "want": limit,
            "served_queues": None if served_queues is None else sorted(served_queues),
            "served_agents": None if served_agents is None else sorted(served_agents),
            "excluded_agents": excluded,
        }
        claimed = list(conn.execute(_CLAIM_LIMITED, params).mappings())
    else:
        claimed = _claim_limited_here(
            conn, worker_id, limit, served_queues, served_agents, excluded
        )
    global _seen
    # None taken: perhaps for want of room, perhaps as no limit is set.
    _seen = bool(claimed) or any_limits(conn)
    return claimed


_CLAIM_LIMITED = select(
    func.taiat_claim_limited(
        bindparam("claimer", type_=String),
        bindparam("want", type_=Integer),
        bindparam("served_queues", type_=ARRAY(String)),
        bindparam("served_agents", type_=ARRAY(String)),
        bindparam("excluded_agents", type_=ARRAY(String)),
        WINDOW_MARGIN,
    ).table_valued(*(column(c.name, c.type) for c in jobs.c))
)

# -- the same steps on SQLite, under its write lock --------------------------------------------


# Written in the statement, not bound: SQLite's planner treats them as the constants they are.
_QUEUE = literal_column("'queue:'", String)
_AGENT = literal_column("'agent:'", String)
_QUOTE = literal_column("'\"'", String)


# The numbers of SQLite's take, written into it (see `reading.written`).
_ZERO = written(0)
_ONE = written(1)
_UNBOUNDED = written(UNBOUNDED)
_MARGIN = literal_column(repr(WINDOW_MARGIN), Float)

#: SQLite's time now in seconds since the Unix epoch.
_EPOCH_NOW = literal_column("((julianday('now') - 2440587.5) * 86400.0)", Float)


def _has_key(queue: Any, agent: Any, explicit: Any, key: Any) -> Any:
    """Whether a job of `queue` and `agent` (NULL: not an agent job) with the explicit keys
    `explicit` has the limit key `key` (see `validation.limit_keys`). The explicit keys are
    sought in their JSON text: a key is written there as it is, in double quotes, as none
    holds a character JSON escapes (`validation.LIMIT_KEY`)."""
    quoted = _QUOTE + key + _QUOTE
    return or_(
        key == _QUEUE + queue,
        key == _AGENT + agent,
        func.instr(type_coerce(explicit, String), quoted) > _ZERO,
    )


def _running_keys() -> Any:
    """Every limit key of every running job, once a job (see `validation.limit_keys`)."""
    running = jobs.c.status == written(RUNNING)
    queue_key = _QUEUE + jobs.c.queue
    agent_key = _AGENT + jobs.c.agent
    listed = func.json_each(jobs.c.limit_keys).table_valued("value")
    return (
        union_all(
            select(queue_key.label("key")).where(running),
            select(agent_key).where(running, jobs.c.agent.is_not(None)),
            select(listed.c.value)
            .select_from(jobs, listed)
            .where(
                running, listed.c.value != queue_key, listed.c.value.is_distinct_from(agent_key)
            ),
        )
        .cte("running_keys")
        .prefix_with("MATERIALIZED")
    )


def _room() -> Any:
    """Each limited key's room: the least of its cap less its running jobs and of its rate
    less its starts in the window (`UNBOUNDED` for what it lacks)."""
    keys = _running_keys()
    running = select(keys.c.key, func.count().label("jobs")).group_by(keys.c.key).subquery()
    started = (
        select(func.coalesce(func.sum(limit_starts.c.starts), _ZERO))
        .where(
            limit_starts.c.key == limits.c.key,
            (limit_starts.c.bucket + _ONE) * limit_starts.c.width
            > _EPOCH_NOW - limits.c.rate_seconds - _MARGIN,
        )
        .scalar_subquery()
    )
    return (
        select(
            limits.c.key,
            func.min(
                func.coalesce(
                    limits.c.concurrency - func.coalesce(running.c.jobs, _ZERO), _UNBOUNDED
                ),
                case(
                    (limits.c.rate_count.is_(None), _UNBOUNDED),
                    else_=limits.c.rate_count - started,
                ),
            ).label("room"),
        )
        .select_from(limits.outerjoin(running, running.c.key == limits.c.key))
        .cte("room")
        .prefix_with("MATERIALIZED")
    )


_TAKES: dict[tuple[bool, bool, bool], Any] = {}


def _take(served_queues: bool, served_agents: bool, excluded_agents: bool = False) -> Any:
    """Mark running, as `mark_running` does, the best ready jobs (of those `reading.served`
    lets this claim take) with no key out of room, as many as :want and as the tightest room
    of any key allow: each key then has room for every job taken. Nothing while no limit is
    set. The trigger `taiat_limit_starts_counted` counts the starts of their rate-limited
    keys (`store/sql/limit_starts_sqlite.sql`). One statement per shape, built once."""
    shape = (served_queues, served_agents, excluded_agents)
    if shape in _TAKES:
        return _TAKES[shape]
    room = _room()
    out_of_room = (
        select(room.c.key)
        .where(
            room.c.room <= _ZERO,
            _has_key(jobs.c.queue, jobs.c.agent, jobs.c.limit_keys, room.c.key),
        )
        .exists()
    )
    tightest = select(func.min(room.c.room)).where(room.c.room > _ZERO).scalar_subquery()
    want = bindparam("want", type_=Integer)
    chosen = (
        select(jobs.c.id)
        .where(
            READY,
            jobs.c.run_at <= utcnow(),
            *served(queues=served_queues, agents=served_agents, excluded=excluded_agents),
            select(limits.c.key).exists(),
            ~out_of_room,
        )
        .order_by(*READY_ORDER)
        .limit(func.min(want, func.coalesce(tightest, want)))
        .cte("chosen")
    )
    stmt = mark_running(jobs.c.id == chosen.c.id, utcnow())
    _TAKES[shape] = stmt
    return stmt


#: Every this many limited claims that take jobs, a process prunes the starts older than every
#: window (which no claim counts, as it reads only those of the longest window).
PRUNE_EVERY = 64
_recorded = 0


def _forget_old_starts(conn: Connection) -> None:
    """Now and then, forget the starts older than every window (which no claim counts)."""
    global _recorded
    _recorded += 1
    if _recorded % PRUNE_EVERY == 0:
        longest = select(func.coalesce(func.max(limits.c.rate_seconds), 0)).scalar_subquery()
        ended = (limit_starts.c.bucket + 1) * limit_starts.c.width
        conn.execute(delete(limit_starts).where(ended < _EPOCH_NOW - WINDOW_MARGIN - longest))


def _claim_limited_here(
    conn: Connection,
    worker_id: str,
    limit: int,
    served_queues: Collection[str] | None,
    served_agents: Collection[str] | None,
    excluded_agents: Collection[str] | None = None,
) -> list[RowMapping]:
    """`claim_jobs_limited` on SQLite: takes (`_take`), each within the tightest room of any
    key, until `limit` are taken or one takes none; the rooms are counted anew at each."""
    stmt = _take(served_queues is not None, served_agents is not None, bool(excluded_agents))
    params: dict[str, Any] = {"claimer": worker_id}
    params |= served_params(served_queues, served_agents, excluded_agents)
    claimed: list[RowMapping] = []
    while len(claimed) < limit:
        taken = list(conn.execute(stmt, params | {"want": limit - len(claimed)}).mappings())
        if not taken:
            break
        claimed += taken
    if claimed:
        _forget_old_starts(conn)
    return claimed


# -- the starts of a job given back unstarted ------------------------------------------------


def take_turn_for_starts(conn: Connection) -> None:
    """On PostgreSQL, while any rate is set, take the limit-aware claims' lock (step 1 above)
    for the rest of the transaction: starts are then taken back from their buckets in turn
    with the claims that count them, never while a claim holds some of those buckets and waits
    for others (a deadlock)."""
    rated = select(limits.c.key).where(limits.c.rate_count.is_not(None)).exists()
    turn = func.pg_advisory_xact_lock(
        func.hashtext(literal_column("'taiat_limits'")),
        literal_column("'taiat_limits'::regclass::oid::int"),
    )
    conn.execute(select(turn).where(rated))


def _divided(dividend: Any, divisor: Any) -> Any:
    return dividend.op("/", return_type=Float)(divisor)


def uncount_starts(dialect: str, job_id: str, claim_seq: int, requeued: Any = None) -> Any:
    """Take back the starts that this claim of the job counted against its rate-limited keys:
    one from each key's bucket that holds the claim's stamp (the job's `started_at`, as the
    claim wrote it), in the width of the key's rate, found by the very arithmetic of the claim
    (`store/sql/claim_limited.sql`, `store/sql/limit_starts_sqlite.sql`); never below zero.
    Nothing when the claim is no longer the job's running one, or a bucket was pruned. With
    `requeued` (a select of job ids), only if the job is among them. The job's row is read as
    it was before the statement: on PostgreSQL, in the statement that requeues it."""
    # Divided as the claim divides (SQLAlchemy's `/` would cast its operands).
    width = _divided(limits.c.rate_seconds, written(STARTS_BUCKETS))
    bucket: Any
    if dialect == "postgresql":
        has_key = func.taiat_has_key(jobs.c.queue, jobs.c.agent, jobs.c.limit_keys, limits.c.key)
        bucket = func.floor(_divided(extract("epoch", jobs.c.started_at), width))
    else:
        has_key = _has_key(jobs.c.queue, jobs.c.agent, jobs.c.limit_keys, limits.c.key)
        epoch = (func.julianday(jobs.c.started_at) - literal_column("2440587.5")) * literal_column(
            "86400.0"
        )
        bucket = cast(_divided(epoch, width), Integer)
    counted = select(limits.c.key).select_from(jobs.join(limits, has_key))
    counted = counted.where(
        jobs.c.id == job_id,
        jobs.c.status == RUNNING,
        jobs.c.claim_seq == claim_seq,
        limits.c.rate_count.is_not(None),
        limit_starts.c.key == limits.c.key,
        limit_starts.c.width == width,
        limit_starts.c.bucket == bucket,
    )
    if requeued is not None:
        counted = counted.where(jobs.c.id.in_(requeued))
    starts = limit_starts.c.starts
    return (
        update(limit_starts)
        .where(counted.exists())
        .values(starts=case((starts > _ONE, starts - _ONE), else_=_ZERO))
    )
