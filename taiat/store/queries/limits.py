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

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    RowMapping,
    String,
    and_,
    bindparam,
    delete,
    func,
    insert,
    not_,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection

from taiat.store.queries.reading import READY, READY_ORDER, RUNNING
from taiat.store.schema import jobs, limit_starts, limits, utcnow
from taiat.store.validation import limit_keys

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


def clock(conn: Connection) -> datetime:
    """The database's time now (not the transaction's start), naive UTC."""
    if conn.dialect.name == "postgresql":
        return conn.exec_driver_sql("SELECT clock_timestamp() AT TIME ZONE 'utc'").scalar_one()
    return conn.execute(select(utcnow())).scalar_one()


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


def _starts_in_windows(
    conn: Connection, rated: Mapping[str, tuple[int, float]], now: datetime
) -> dict[str, int]:
    counts = dict.fromkeys(rated, 0)
    if not rated:
        return counts
    longest = max(seconds for _, seconds in rated.values())
    stmt = select(limit_starts.c.key, limit_starts.c.started_at).where(
        limit_starts.c.key.in_(list(rated)),
        limit_starts.c.started_at >= now - timedelta(seconds=longest),
    )
    for row in conn.execute(stmt):
        if row.started_at >= now - timedelta(seconds=rated[row.key][1]):
            counts[row.key] += 1
    return counts


def _without_keys(conn: Connection, blocked: set[str]) -> list[Any]:
    """Filters that leave out the jobs carrying any of `blocked`."""
    if not blocked:
        return []
    queues = sorted(key[len("queue:") :] for key in blocked if key.startswith("queue:"))
    agents = sorted(key[len("agent:") :] for key in blocked if key.startswith("agent:"))
    filters: list[Any] = []
    if queues:
        filters.append(jobs.c.queue.not_in(queues))
    if agents:
        filters.append(or_(jobs.c.agent.is_(None), jobs.c.agent.not_in(agents)))
    explicit = sorted(blocked)
    if conn.dialect.name == "postgresql":
        filters.append(
            not_(
                func.jsonb_exists_any(
                    jobs.c.limit_keys, bindparam("blocked", explicit, ARRAY(String))
                )
            )
        )
    else:
        filters.append(
            text(
                "NOT EXISTS (SELECT 1 FROM json_each(taiat_jobs.limit_keys) AS k "
                "WHERE k.value IN :blocked)"
            ).bindparams(bindparam("blocked", explicit, expanding=True))
        )
    return filters


def claim_jobs_limited(conn: Connection, worker_id: str, limit: int) -> list[RowMapping]:
    """Mark up to `limit` ready jobs running for `worker_id`, best first, each only if every
    one of its limited keys has room and rate to start it."""
    rows = limit_rows(conn, lock=True)
    caps = {row["key"]: row["concurrency"] for row in rows if row["concurrency"] is not None}
    rated = {
        row["key"]: (row["rate_count"], row["rate_seconds"])
        for row in rows
        if row["rate_count"] is not None
    }
    room = {
        key: cap - n
        for key, n in running_counts(conn, caps).items()
        if (cap := caps[key]) is not None
    }
    now = clock(conn)
    tokens = {key: rated[key][0] - n for key, n in _starts_in_windows(conn, rated, now).items()}
    blocked = {key for key, n in room.items() if n <= 0} | {k for k, n in tokens.items() if n <= 0}
    chosen_rows = conn.execute(
        select(jobs.c.id, jobs.c.queue, jobs.c.agent, jobs.c.limit_keys)
        .where(READY, jobs.c.run_at <= utcnow(), *_without_keys(conn, blocked))
        .order_by(*READY_ORDER)
        .limit(limit * CANDIDATES_PER_JOB)
        .with_for_update(skip_locked=True, key_share=True)
    )
    taken: list[str] = []
    starts: list[dict[str, Any]] = []
    for row in chosen_rows:
        keys = limit_keys(row.queue, row.agent, row.limit_keys)
        if any(room.get(key, 1) <= 0 or tokens.get(key, 1) <= 0 for key in keys):
            continue
        for key in keys:
            if key in room:
                room[key] -= 1
            if key in tokens:
                tokens[key] -= 1
                starts.append({"key": key, "started_at": now, "job_id": row.id})
        taken.append(row.id)
        if len(taken) == limit:
            break
    if not taken:
        return []
    if starts:
        conn.execute(insert(limit_starts), starts)
    if rated:
        longest = max(seconds for _, seconds in rated.values())
        conn.execute(
            delete(limit_starts).where(
                and_(limit_starts.c.started_at < now - timedelta(seconds=longest))
            )
        )
    stmt = (
        update(jobs)
        .where(jobs.c.id.in_(taken))
        .values(
            status=RUNNING,
            worker_id=worker_id,
            started_at=now,
            updated_at=now,
            claim_seq=jobs.c.claim_seq + 1,
        )
        .returning(*jobs.c)
    )
    return list(conn.execute(stmt).mappings())
