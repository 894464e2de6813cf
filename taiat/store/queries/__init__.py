"""Every SQL statement of the job manager, one named function each, for PostgreSQL and SQLite
(reads in `taiat.store.queries.reading` and the ends of claims in
`taiat.store.queries.endings`, both re-exported here; supervisors' statements in
`taiat.store.queries.supervisors`, query plans' in
`taiat.store.queries.plans`, the `taiat` command's in `taiat.store.queries.operator`).

Functions take an open connection inside the caller's transaction; none commits. Row locks
(`FOR UPDATE`, `FOR KEY SHARE`, `SKIP LOCKED`) matter on PostgreSQL; on SQLite every transaction
already holds the write lock (`BEGIN IMMEDIATE`), so the same statements are safe there.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    RowMapping,
    String,
    and_,
    any_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine

from taiat.store import db
from taiat.store.queries import limits as limit_queries
from taiat.store.queries.endings import (  # noqa: F401 - part of this module's interface
    CARRIED,
    complete_running,
    completes_in_one_statement,
    insert_attempts,
    insert_history,
    move_to_history,
    recent_attempts,
    save_output,
    take_running,
)
from taiat.store.queries.reading import (  # noqa: F401 - part of this module's interface
    PENDING,
    RUNNING,
    _latest_entries,
    active_jobs,
    attempts_for,
    completed_results,
    count_by_status,
    count_pending,
    finished_jobs,
    get_active,
    history_entries,
    latest_history,
    mark_running,
    output_for,
    ready_jobs,
    recent_peaks,
    served,
    served_params,
)
from taiat.store.queries.reading import (
    READY as _READY,
)
from taiat.store.queries.reading import (
    READY_ORDER as _READY_ORDER,
)
from taiat.store.schema import attempts, dependencies, history, jobs, output, utcnow
from taiat.store.schema import limits as limits_table
from taiat.store.validation import JobSpec


def db_now(conn: Connection, *, notify_payload: str | None = None) -> datetime:
    """The database's clock, as naive UTC; with `notify_payload`, in the same round trip, the
    `notify` of it (sent when the transaction commits)."""
    if notify_payload is not None and conn.dialect.name == "postgresql":
        stmt = select(utcnow(), func.pg_notify(CHANNEL, notify_payload))
        return conn.execute(stmt).first()[0]  # type: ignore[index]
    return conn.execute(select(utcnow())).scalar_one()


# -- creating ------------------------------------------------------------------------------


#: From this many rows on, PostgreSQL gets the jobs by COPY: several times faster than INSERT.
COPY_FROM_ROWS = 200


def insert_jobs(
    conn: Connection,
    specs: Sequence[JobSpec],
    unmet: Sequence[int],
    now: datetime,
    sent: Callable[[range], None] = lambda _: None,
) -> None:
    """Insert new jobs, checked, with their counts of unmet dependencies, stamped `now`.
    `sent(positions)` is called once those of the jobs are on their way: by COPY, the server
    stores them meanwhile, so work done then costs no time."""
    if conn.dialect.name == "postgresql" and len(specs) >= COPY_FROM_ROWS:
        lines = _copy_lines(specs, unmet, now, sent)
        db.copy_text(conn, jobs.name, COPIED_COLUMNS, lines)
    elif specs:
        rows = [spec.row(count, now) for spec, count in zip(specs, unmet, strict=True)]
        conn.execute(insert(jobs), rows)
        sent(range(len(specs)))


#: The columns `insert_jobs` sends by COPY; the others take their defaults (a new job's:
#: pending, no retry, no claim, no result, no stack).
COPIED_COLUMNS = (
    "id",
    "job_type",
    "name",
    "description",
    "payload",
    "dependencies",
    "max_retries",
    "priority",
    "timeout_seconds",
    "unmet_dependencies",
    "run_at",
    "created_at",
    "updated_at",
    "queue",
    "agent",
    "limit_keys",
)

#: Lines of COPY text sent at once: the server stores some while the next are made.
COPY_CHUNK = 1000


def _copy_lines(
    specs: Sequence[JobSpec],
    unmet: Sequence[int],
    now: datetime,
    sent: Callable[[range], None],
) -> Iterator[str]:
    """The jobs as lines of COPY's text format, `COPIED_COLUMNS` in order, `COPY_CHUNK` at a
    time (`sent` told of each once it is taken): made from the checked values straight, a
    format string a line (the payload as the JSON text its check made; queue names and limit
    keys, checked, have nothing to escape)."""
    stamp = now.isoformat()
    lines = []
    first = 0
    for spec, count in zip(specs, unmet, strict=True):
        payload = spec.payload_json
        lines.append(
            f"{_copy_text(spec.id)}\t{spec.job_type.value}\t{_copy_text(spec.name)}\t"
            f"{_NULL if spec.description is None else _copy_text(spec.description)}\t"
            f"{payload.replace(_BACKSLASH, _ESCAPED) if _BACKSLASH in payload else payload}\t"
            f"{_copy_json(spec.dependencies)}\t{spec.max_retries:d}\t{spec.priority:d}\t"
            f"{_NULL if spec.timeout_seconds is None else repr(spec.timeout_seconds)}\t"
            f"{count:d}\t{stamp if spec.run_at is None else spec.run_at.isoformat()}\t"
            f"{stamp}\t{stamp}\t{spec.queue}\t"
            f"{_NULL if spec.agent is None else _copy_text(spec.agent)}\t"
            f"{_copy_json(spec.limit_keys)}\n"
        )
        if len(lines) == COPY_CHUNK:
            yield "".join(lines)
            sent(range(first, first + COPY_CHUNK))
            first += COPY_CHUNK
            lines = []
    if lines:
        yield "".join(lines)
        sent(range(first, len(specs)))


_NULL = "\\N"
_BACKSLASH, _ESCAPED = "\\", "\\\\"
#: What COPY's text format escapes: the backslash, and the tab, newline and carriage return
#: that would end a value or a line.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str) -> str:
    """`value` as COPY's text format has it: as it is, unless it holds a backslash or a
    character that is not printable (a tab, a line end...)."""
    if _BACKSLASH in value or not value.isprintable():
        return value.translate(_COPY_ESCAPES)
    return value


def _copy_json(items: Sequence[str]) -> str:
    """A list of text (ids, limit keys) as JSON in COPY's text format."""
    if not items:
        return "[]"
    text = json.dumps(list(items))
    return text.replace(_BACKSLASH, _ESCAPED) if _BACKSLASH in text else text


#: The columns `insert_ready_job` sets; the others take their defaults (a new job's: pending,
#: no retry, no claim, nothing unmet, no result, no stack).
READY_JOB_COLUMNS = (
    "id",
    "job_type",
    "name",
    "description",
    "payload",
    "dependencies",
    "max_retries",
    "priority",
    "timeout_seconds",
    "run_at",
    "queue",
    "agent",
    "limit_keys",
)


def insert_ready_job(engine: Engine, values: Mapping[str, Any]) -> datetime:
    """Insert one job with no dependency, stamped by the database's clock (`created_at`,
    `updated_at`, and `run_at` unless given), and wake the listening supervisors, in one
    statement and one round trip (PostgreSQL, whose notification is sent when the statement
    commits, in autocommit: `db.first_row`); returns the clock's reading. `values` holds the
    driver's values of `READY_JOB_COLUMNS`, its JSON columns as JSON text."""
    return db.first_row(engine, _insert_ready_job(), values)[0]


@functools.cache
def _insert_ready_job() -> Any:
    """`insert_ready_job`'s statement, built once: building one costs more than running it."""
    now = utcnow()
    values: dict[str, Any] = {
        name: bindparam(name, type_=jobs.c[name].type) for name in READY_JOB_COLUMNS
    }
    values["run_at"] = func.coalesce(values["run_at"], now)
    values |= {"created_at": now, "updated_at": now}
    created = insert(jobs).values(values).returning(jobs.c.created_at).cte("created")
    return select(created.c.created_at, func.pg_notify(CHANNEL, "ready"))


def insert_edges(conn: Connection, edges: Sequence[Mapping[str, str]]) -> None:
    if edges:
        conn.execute(insert(dependencies), list(edges))


def lock_active(conn: Connection, ids: Collection[str]) -> dict[str, str]:
    """Status of those of `ids` still active, locked so that none can finish until we commit."""
    if not ids:
        return {}
    # Locks are always taken in id order, so that two transactions cannot wait on each other.
    stmt = (
        select(jobs.c.id, jobs.c.status)
        .where(jobs.c.id.in_(ids))
        .order_by(jobs.c.id)
        .with_for_update(read=True, key_share=True)
    )
    return {row.id: row.status for row in conn.execute(stmt)}


def latest_history_status(conn: Connection, job_ids: Collection[str]) -> dict[str, str]:
    """The status of each job's newest history entry, for those of `job_ids` in history."""
    if not job_ids:
        return {}
    stmt = (
        select(history.c.job_id, history.c.status)
        .where(history.c.job_id.in_(job_ids))
        .order_by(history.c.created_at)
    )
    return {row.job_id: row.status for row in conn.execute(stmt)}


def known_ids(conn: Connection, ids: Collection[str]) -> set[str]:
    """Those of `ids` that name a job, active or in history."""
    if not ids:
        return set()
    active = select(jobs.c.id).where(jobs.c.id.in_(ids))
    finished = select(history.c.job_id).where(history.c.job_id.in_(ids))
    return set(conn.execute(active.union(finished)).scalars())


# -- the state machine ---------------------------------------------------------------------


def _claim_statement(*, queues: bool = False, agents: bool = False, excluded: bool = False) -> Any:
    """Mark up to :claim_limit ready jobs running for :worker_id, best first; one statement.

    Only jobs of no paused queue; with `queues`, only those of the queues in :served_queues;
    with `agents`, only queries and the agent jobs whose agent is in :served_agents; with
    `excluded`, none of the agent jobs whose agent is in :excluded_agents (see
    `reading.served`). Only while no limit is set: then the limit-aware claim takes over.
    `FOR NO KEY UPDATE` rather than `FOR UPDATE`: it does not wait for the `FOR KEY SHARE` lock
    that creating a dependent job takes on its dependencies. Built once per shape (`CLAIMS`):
    this is the supervisor's hot path.
    """
    no_limit = ~exists().where(limits_table.c.key.is_not(None))
    chosen = (
        select(jobs.c.id)
        .where(
            _READY,
            jobs.c.run_at <= utcnow(),
            *served(queues=queues, agents=agents, excluded=excluded),
            no_limit,
        )
        .order_by(*_READY_ORDER)
        .limit(bindparam("claim_limit"))
        .with_for_update(skip_locked=True, key_share=True)
        .cte("chosen")
    )
    return mark_running(jobs.c.id == chosen.c.id, utcnow())


#: The claim statement of each shape: (queues listed, agents listed, agents excluded).
CLAIMS = {
    (q, a, x): _claim_statement(queues=q, agents=a, excluded=x)
    for q in (False, True)
    for a in (False, True)
    for x in (False, True)
}
CLAIM = CLAIMS[False, False, False]


def _claim_params(
    worker_id: str,
    limit: int,
    queues: Collection[str] | None,
    agents: Collection[str] | None,
    excluded: Collection[str] | None = None,
) -> tuple[Any, dict[str, Any]]:
    params: dict[str, Any] = {"claimer": worker_id, "claim_limit": limit}
    params |= served_params(queues, agents, excluded)
    return CLAIMS[queues is not None, agents is not None, bool(excluded)], params


def explain_claim(
    conn: Connection,
    limit: int = 4,
    *,
    queues: Collection[str] | None = None,
    agents: Collection[str] | None = None,
    excluded_agents: Collection[str] | None = None,
) -> str:
    """The database's plan for the claim statement (of the shape `queues`, `agents` and
    `excluded_agents` ask for: None is every one, none excluded), as text."""
    stmt, values = _claim_params("explain", limit, queues, agents, excluded_agents)
    compiled = stmt.compile(dialect=conn.dialect)
    expanded = compiled.construct_expanded_state(compiled.construct_params(values))
    params = expanded.parameters
    if compiled.positional:
        args: Any = tuple(params[name] for name in expanded.positiontup or ())
    else:
        args = params
    sql = expanded.statement
    if conn.dialect.name == "postgresql":
        return "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {sql}", args))
    rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", args)
    return "\n".join(str(row[-1]) for row in rows)


def claim_jobs(
    conn: Connection,
    worker_id: str,
    limit: int,
    *,
    queues: Collection[str] | None = None,
    agents: Collection[str] | None = None,
    excluded_agents: Collection[str] | None = None,
) -> list[RowMapping]:
    """Claim up to `limit` ready jobs of no paused queue; of `queues` only and, of the agent
    jobs, those of `agents` only, unless None (every one), and none of `excluded_agents`. By
    the one statement while no limit is set (the fast path), else by the limit-aware path,
    tried first while the last claim found limits."""
    excluded = excluded_agents or None
    if limit_queries.limits_seen():
        limited = limit_queries.claim_jobs_limited(conn, worker_id, limit, queues, agents, excluded)
        if limit_queries.limits_seen():
            return limited
    stmt, params = _claim_params(worker_id, limit, queues, agents, excluded)
    claimed = list(conn.execute(stmt, params).mappings())
    if claimed:
        return claimed
    # Nothing taken: perhaps as a limit has been set since.
    return limit_queries.claim_jobs_limited(conn, worker_id, limit, queues, agents, excluded)


def _running(job_id: str, claim_seq: int) -> Any:
    return and_(jobs.c.id == job_id, jobs.c.status == RUNNING, jobs.c.claim_seq == claim_seq)


def lock_running(conn: Connection, job_id: str, claim_seq: int) -> RowMapping | None:
    """The job if this claim of it is still the running one, locked; else None (a stale write)."""
    stmt = select(jobs).where(_running(job_id, claim_seq)).with_for_update()
    return conn.execute(stmt).mappings().first()


def reschedule(
    conn: Connection, job_id: str, claim_seq: int, error: str, delay_seconds: float
) -> bool:
    """Put a failed attempt back to pending after `delay_seconds`, spending one retry."""
    stmt = (
        update(jobs)
        .where(_running(job_id, claim_seq))
        .values(
            status=PENDING,
            retry_count=jobs.c.retry_count + 1,
            error_message=error,
            run_at=utcnow(delay_seconds),
            worker_id=None,
            updated_at=utcnow(),
        )
    )
    return conn.execute(stmt).rowcount == 1


def _requeue(job_id: str, claim_seq: int) -> Any:
    return (
        update(jobs)
        .where(_running(job_id, claim_seq))
        .values(status=PENDING, worker_id=None, started_at=None, updated_at=utcnow())
    )


def requeue(conn: Connection, job_id: str, claim_seq: int) -> bool:
    """Put a running job back to pending at once without spending a retry (shutdown)."""
    return conn.execute(_requeue(job_id, claim_seq)).rowcount == 1


def give_back(conn: Connection, job_id: str, claim_seq: int) -> bool:
    """Put a claimed job that was never started back to pending at once without spending a
    retry, and take the starts its claim counted against its keys' rates back out of their
    buckets (`limits.uncount_starts`): a start that did not happen spends no rate. False when
    the claim is stale (then nothing changes). On PostgreSQL, after the limit-aware claims'
    lock (`limits.take_turn_for_starts`), one statement: its parts read the job's row as it was
    before it, with the claim's stamp. On SQLite, whose transaction holds the write lock, the
    starts are taken back first, then the job is put back."""
    if conn.dialect.name == "postgresql":
        limit_queries.take_turn_for_starts(conn)
        requeued = _requeue(job_id, claim_seq).returning(jobs.c.id).cte("requeued")
        uncounted = limit_queries.uncount_starts(
            "postgresql", job_id, claim_seq, select(requeued.c.id)
        ).cte("uncounted")
        stmt = select(func.count()).select_from(requeued).add_cte(uncounted)
        return conn.execute(stmt).scalar_one() == 1
    conn.execute(limit_queries.uncount_starts(conn.dialect.name, job_id, claim_seq))
    return requeue(conn, job_id, claim_seq)


def make_pending(conn: Connection, row: Mapping[Any, Any], unmet: int) -> RowMapping:
    """Insert a job taken from history back as pending (retry), attempts reset; it keeps the
    time it was first created."""
    stmt = (
        insert(jobs)
        .values(
            id=row["job_id"],
            job_type=row["job_type"],
            name=row["name"],
            description=row["description"],
            payload=row["payload"],
            dependencies=row["dependencies"],
            max_retries=row["max_retries"],
            retry_count=0,
            status=PENDING,
            priority=row["priority"],
            timeout_seconds=row["timeout_seconds"],
            unmet_dependencies=unmet,
            claim_seq=row["claim_seq"],
            queue=row["queue"],
            agent=row["agent"],
            limit_keys=row["limit_keys"],
            run_at=utcnow(),
            created_at=row["job_created_at"] or utcnow(),
            updated_at=utcnow(),
        )
        .returning(*jobs.c)
    )
    return conn.execute(stmt).mappings().one()


def note_on_history_entry(conn: Connection, entry_id: str, error_message: str) -> None:
    """Rewrite a history entry's `error_message` (to say that its job was retried)."""
    conn.execute(
        update(history).where(history.c.id == entry_id).values(error_message=error_message)
    )


def pending_dependents(conn: Connection, job_ids: Collection[str]) -> list[RowMapping]:
    """The pending jobs that depend directly on any of `job_ids`, locked."""
    if not job_ids:
        return []
    dependents = _dependents(conn, job_ids)
    if not dependents:
        return []
    stmt = (
        select(jobs)
        .where(jobs.c.id.in_(dependents), jobs.c.status == PENDING)
        .order_by(jobs.c.id)
        .with_for_update()
    )
    return list(conn.execute(stmt).mappings())


#: The dependents of the jobs :done, by their edges. Built once, as the statement run on every
#: completion: on PostgreSQL the ids go as one array, where a list would be written out in
#: the text of the statement anew each time.
_EDGES_FROM = {
    "postgresql": select(dependencies.c.job_id).where(
        dependencies.c.depends_on == any_(bindparam("done", type_=ARRAY(String)))
    ),
    "sqlite": select(dependencies.c.job_id).where(
        dependencies.c.depends_on.in_(bindparam("done", expanding=True))
    ),
}


def _dependents(conn: Connection, job_ids: Collection[str]) -> list[str]:
    """The jobs that depend on any of `job_ids`, in id order: looked up from the edges first,
    so that the jobs are then found by primary key, never by a scan of the pending ones,
    whatever the planner believes of their number."""
    edges = _EDGES_FROM[conn.dialect.name]
    return sorted(set(conn.execute(edges, {"done": list(job_ids)}).scalars()))


def release_dependents(conn: Connection, job_ids: Collection[str]) -> list[str]:
    """Count the met dependencies of every job waiting on any of `job_ids` (which completed),
    and drop those edges; returns the jobs now ready.

    This must be a statement of its own, after the one that took the jobs: a dependent
    created while that one waited for its lock is seen only by a later statement's snapshot.
    """
    if not job_ids:
        return []
    dependents = _dependents(conn, job_ids)
    if not dependents:
        return []
    waiting = (
        select(jobs.c.id)
        .where(jobs.c.id.in_(dependents), jobs.c.status == PENDING)
        .order_by(jobs.c.id)
        .with_for_update(key_share=True)
    )
    ids = list(conn.execute(waiting).scalars())
    if not ids:
        return []  # edges only ever point from pending jobs: there are none to drop
    met = (
        select(func.count())
        .where(dependencies.c.job_id == jobs.c.id, dependencies.c.depends_on.in_(job_ids))
        .scalar_subquery()
    )
    stmt = (
        update(jobs)
        .where(jobs.c.id.in_(ids))
        .values(unmet_dependencies=jobs.c.unmet_dependencies - met, updated_at=utcnow())
        .returning(jobs.c.id, jobs.c.unmet_dependencies)
    )
    ready = [row.id for row in conn.execute(stmt) if row.unmet_dependencies == 0]
    conn.execute(delete(dependencies).where(dependencies.c.depends_on.in_(job_ids)))
    return ready


# -- wake-ups (PostgreSQL) -----------------------------------------------------------------

#: The channel supervisors LISTEN on. Payloads: "ready", "cancel:<job id>", or "stack:<job
#: id>" (`taiat jobs stack` asks for that job's stack).
CHANNEL = "taiat_jobs"


def notify(conn: Connection, payload: str) -> None:
    """Wake the listening supervisors when this transaction commits; nothing on SQLite."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_notify(CHANNEL, payload)))


# -- cleanup -------------------------------------------------------------------------------


def delete_history_before(conn: Connection, days: float, limit: int) -> int:
    """Delete up to `limit` of the history entries completed more than `days` ago, oldest
    first, and their attempts and their output; returns how many entries."""
    cutoff = utcnow(-days * 86400.0)
    oldest = (
        select(history.c.id)
        .where(history.c.completed_at < cutoff)
        .order_by(history.c.completed_at, history.c.id)
        .limit(limit)
    )
    their_jobs = select(history.c.job_id).where(history.c.id.in_(oldest))
    conn.execute(
        delete(attempts).where(
            attempts.c.job_id.in_(their_jobs),
            attempts.c.job_id.not_in(select(jobs.c.id)),
            attempts.c.ended_at < cutoff,
        )
    )
    conn.execute(
        delete(output).where(
            output.c.job_id.in_(their_jobs),
            output.c.job_id.not_in(select(jobs.c.id)),
            output.c.updated_at < cutoff,
        )
    )
    return conn.execute(delete(history).where(history.c.id.in_(oldest))).rowcount
