"""Every SQL statement of the job manager, one named function each, for PostgreSQL and SQLite
(reads in `taiat.queries.reading`, re-exported here; supervisors' statements in
`taiat.queries.supervisors`, query plans' in `taiat.queries.plans`, the `taiat` command's in
`taiat.queries.operator`).

Functions take an open connection inside the caller's transaction; none commits. Row locks
(`FOR UPDATE`, `FOR KEY SHARE`, `SKIP LOCKED`) matter on PostgreSQL; on SQLite every transaction
already holds the write lock (`BEGIN IMMEDIATE`), so the same statements are safe there.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Integer,
    RowMapping,
    String,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    column,
    delete,
    extract,
    func,
    insert,
    literal,
    null,
    select,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from taiat import db
from taiat.jobs import JobStatus
from taiat.queries.reading import (  # noqa: F401 - part of this module's interface
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
    ready_jobs,
)
from taiat.queries.reading import (
    READY as _READY,
)
from taiat.queries.reading import (
    READY_ORDER as _READY_ORDER,
)
from taiat.schema import attempts, dependencies, history, jobs, utcnow
from taiat.specs import utc_naive

COMPLETED = JobStatus.COMPLETED.value


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


def insert_jobs(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert whole job rows (every column given)."""
    if conn.dialect.name == "postgresql" and len(rows) >= COPY_FROM_ROWS:
        db.copy_rows(conn, jobs, rows)
    elif rows:
        conn.execute(insert(jobs), list(rows))


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


def _claim_statement() -> Any:
    """Mark up to :claim_limit ready jobs running for :worker_id, best first; one statement.

    `FOR NO KEY UPDATE` rather than `FOR UPDATE`: it does not wait for the `FOR KEY SHARE` lock
    that creating a dependent job takes on its dependencies. Built once: this is the
    supervisor's hot path.
    """
    chosen = (
        select(jobs.c.id)
        .where(_READY, jobs.c.run_at <= utcnow())
        .order_by(*_READY_ORDER)
        .limit(bindparam("claim_limit"))
        .with_for_update(skip_locked=True, key_share=True)
        .cte("chosen")
    )
    return (
        update(jobs)
        .where(jobs.c.id == chosen.c.id)
        .values(
            status=RUNNING,
            worker_id=bindparam("claimer"),
            started_at=utcnow(),
            updated_at=utcnow(),
            claim_seq=jobs.c.claim_seq + 1,
        )
        .returning(*jobs.c)
    )


CLAIM = _claim_statement()


def explain_claim(conn: Connection, limit: int = 4) -> str:
    """The database's plan for the claim statement, as text."""
    compiled = CLAIM.compile(dialect=conn.dialect)
    params = compiled.construct_params({"claimer": "explain", "claim_limit": limit})
    if compiled.positional:
        args: Any = tuple(params[name] for name in compiled.positiontup or ())
    else:
        args = params
    if conn.dialect.name == "postgresql":
        return "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {compiled}", args))
    rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", args)
    return "\n".join(str(row[-1]) for row in rows)


def claim_jobs(conn: Connection, worker_id: str, limit: int) -> list[RowMapping]:
    params = {"claimer": worker_id, "claim_limit": limit}
    return list(conn.execute(CLAIM, params).mappings())


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


def requeue(conn: Connection, job_id: str, claim_seq: int) -> bool:
    """Put a running job back to pending at once without spending a retry (shutdown)."""
    stmt = (
        update(jobs)
        .where(_running(job_id, claim_seq))
        .values(status=PENDING, worker_id=None, started_at=None, updated_at=utcnow())
    )
    return conn.execute(stmt).rowcount == 1


def make_pending(conn: Connection, row: Mapping[Any, Any], unmet: int) -> RowMapping:
    """Insert a job taken from history back as pending (retry), attempts reset."""
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
            run_at=utcnow(),
            created_at=utcnow(),
            updated_at=utcnow(),
        )
        .returning(*jobs.c)
    )
    return conn.execute(stmt).mappings().one()


_TAKE_RUNNING = (
    delete(jobs)
    .where(
        jobs.c.status == RUNNING,
        tuple_(jobs.c.id, jobs.c.claim_seq).in_(bindparam("claims", expanding=True)),
    )
    .returning(*jobs.c, utcnow().label("now"))
)


def take_running(conn: Connection, claims: Mapping[str, int]) -> list[RowMapping]:
    """Delete the jobs (id -> claim_seq) whose claim is still the running one, returning their
    rows and the database's time as `now`: the guard, the lock and the removal in one."""
    if not claims:
        return []
    return list(conn.execute(_TAKE_RUNNING, {"claims": list(claims.items())}).mappings())


#: The columns a history entry takes over from its job's row as they are.
CARRIED = (
    "job_type",
    "name",
    "description",
    "payload",
    "dependencies",
    "max_retries",
    "retry_count",
    "priority",
    "timeout_seconds",
    "worker_id",
    "claim_seq",
)


def _complete_running_statement() -> Any:
    """PostgreSQL's `take_running` and `insert_history` of successes as one statement, the
    jobs' rows never leaving the server: :completed is a JSON array of objects with `job_id`,
    `claim_seq`, `history_id` (the new entry's id) and `result` (JSON text). Built once: this is
    the supervisor's hot path."""
    done = (
        func.jsonb_to_recordset(bindparam("completed", type_=JSONB))
        .table_valued(
            column("job_id", String),
            column("claim_seq", Integer),
            column("history_id", String),
            column("result", Text),
        )
        .render_derived(name="done", with_types=True)
    )
    taken = (
        delete(jobs)
        .where(
            # The same ids again, as an array: the planner knows how few they are only so, and
            # finds them by the primary key instead of reading every running job.
            jobs.c.id == any_(bindparam("ids", type_=ARRAY(String))),
            jobs.c.id == done.c.job_id,
            jobs.c.claim_seq == done.c.claim_seq,
            jobs.c.status == RUNNING,
        )
        .returning(
            *jobs.c, done.c.history_id, done.c.result.label("new_result"), utcnow().label("now")
        )
        .cte("taken")
    )
    entry = {
        "id": taken.c.history_id,
        "job_id": taken.c.id,
        **{name: taken.c[name] for name in CARRIED},
        "status": literal(COMPLETED),
        "error_message": null(),
        "result": cast(taken.c.new_result, JSONB),
        "started_at": taken.c.started_at,
        "completed_at": taken.c.now,
        "duration_seconds": cast(
            func.trunc(extract("epoch", taken.c.now - taken.c.started_at)), Integer
        ),
        "created_at": taken.c.now,
        "job_created_at": taken.c.created_at,
    }
    kept = insert(history).from_select(list(entry), select(*entry.values())).cte("kept")
    producer = type_coerce(taken.c.payload, JSONB).has_key("goal_output")
    return select(
        taken.c.id, taken.c.now, case((producer, taken.c.payload)).label("payload")
    ).add_cte(kept)


_COMPLETE_RUNNING = _complete_running_statement()


def completes_in_one_statement(conn: Connection) -> bool:
    """Whether `complete_running` serves this database (PostgreSQL)."""
    return conn.dialect.name == "postgresql"


def complete_running(conn: Connection, completed: Sequence[Mapping[str, Any]]) -> list[RowMapping]:
    """Move the jobs whose claim is still the running one to history as completed, in one
    statement; `completed` as `_complete_running_statement` says, one item a job (a job twice
    would leave which result is kept to the plan). Returns each
    moved job's `id`, the database's time as `now`, and its `payload` when the job produces a
    query's goal (`goal_output`), else None. PostgreSQL only."""
    if not completed:
        return []
    # In id order, as every lock on jobs is taken, when the plan follows the array.
    ordered = sorted(completed, key=lambda item: item["job_id"])
    ids = [item["job_id"] for item in ordered]
    return list(conn.execute(_COMPLETE_RUNNING, {"completed": ordered, "ids": ids}).mappings())


def insert_history(conn: Connection, entries: Sequence[Mapping[str, Any]]) -> None:
    if entries:
        conn.execute(insert(history), list(entries))


def move_to_history(conn: Connection, entries: Sequence[Mapping[str, Any]]) -> None:
    """Write the history entries and delete their jobs and edges; `entries` carry `job_id`."""
    if not entries:
        return
    ids = [entry["job_id"] for entry in entries]
    conn.execute(insert(history), list(entries))
    conn.execute(delete(jobs).where(jobs.c.id.in_(ids)))
    conn.execute(delete(dependencies).where(dependencies.c.job_id.in_(ids)))


def pending_dependents(conn: Connection, job_ids: Collection[str]) -> list[RowMapping]:
    """The pending jobs that depend directly on any of `job_ids`, locked."""
    if not job_ids:
        return []
    dependents = _dependents(conn, _edges_from(job_ids))
    if not dependents:
        return []
    stmt = (
        select(jobs)
        .where(jobs.c.id.in_(dependents), jobs.c.status == PENDING)
        .order_by(jobs.c.id)
        .with_for_update()
    )
    return list(conn.execute(stmt).mappings())


def _edges_from(job_ids: Collection[str]) -> Any:
    return select(dependencies.c.job_id).where(dependencies.c.depends_on.in_(job_ids))


def _dependents(conn: Connection, edges: Any) -> list[str]:
    """The jobs at the far end of `edges`, in id order: looked up from the edges first, so that
    the jobs are then found by primary key, never by a scan of the pending ones, whatever the
    planner believes of their number."""
    return sorted(set(conn.execute(edges).scalars()))


def release_dependents(conn: Connection, job_ids: Collection[str]) -> list[str]:
    """Count the met dependencies of every job waiting on any of `job_ids` (which completed),
    and drop those edges; returns the jobs now ready.

    This must be a statement of its own, after the one that took the jobs: a dependent
    created while that one waited for its lock is seen only by a later statement's snapshot.
    """
    if not job_ids:
        return []
    dependents = _dependents(conn, _edges_from(job_ids))
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


def _insert_attempts_statement() -> Any:
    """PostgreSQL's insert of attempts: the rows as one JSON array (:attempts) that the server
    takes apart, one statement whatever their number, where `executemany` sends each row."""
    given = (
        func.jsonb_to_recordset(bindparam("attempts", type_=JSONB))
        .table_valued(*(column(c.name, c.type) for c in attempts.c))
        .render_derived(name="given", with_types=True)
    )
    names = [c.name for c in attempts.c]
    return pg_insert(attempts).from_select(names, select(*given.c)).on_conflict_do_nothing()


_INSERT_ATTEMPTS = _insert_attempts_statement()
_INSERT_ATTEMPT_SQLITE = sqlite_insert(attempts).on_conflict_do_nothing()


def insert_attempts(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Record attempts once: writing one again (a retry after a lost commit) changes nothing.
    Their times are stored as naive UTC, as every time in the tables."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(_INSERT_ATTEMPTS, {"attempts": [_as_json(row) for row in rows]})
    else:
        conn.execute(_INSERT_ATTEMPT_SQLITE, [_utc_times(row) for row in rows])


def _utc_times(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row with its times as naive UTC."""
    return {
        name: utc_naive(value) if isinstance(value, datetime) else value
        for name, value in row.items()
    }


def _as_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row as a JSON record that `jsonb_to_recordset` reads back into the same values as
    the columns would take them as parameters: times as ISO text of naive UTC, floats that JSON
    has no number for as PostgreSQL's words for them, booleans as integers."""
    return {name: _json_value(value) for name, value in row.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return utc_naive(value).isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, bool):
        return int(value)
    return value


def recent_attempts(conn: Connection, job_id: str, count: int) -> list[RowMapping]:
    """The job's last `count` attempts, newest first."""
    stmt = (
        select(attempts)
        .where(attempts.c.job_id == job_id)
        .order_by(attempts.c.attempt.desc())
        .limit(count)
    )
    return list(conn.execute(stmt).mappings())


# -- wake-ups (PostgreSQL) -----------------------------------------------------------------

#: The channel supervisors LISTEN on. Payloads: "ready", or "cancel:<job id>".
CHANNEL = "taiat_jobs"


def notify(conn: Connection, payload: str) -> None:
    """Wake the listening supervisors when this transaction commits; nothing on SQLite."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_notify(CHANNEL, payload)))


# -- cleanup -------------------------------------------------------------------------------


def delete_history_before(conn: Connection, days: float) -> int:
    """Delete history entries completed more than `days` ago, and their attempts."""
    cutoff = utcnow(-days * 86400.0)
    old = select(history.c.job_id).where(history.c.completed_at < cutoff)
    conn.execute(
        delete(attempts).where(
            attempts.c.job_id.in_(old),
            attempts.c.job_id.not_in(select(jobs.c.id)),
            attempts.c.ended_at < cutoff,
        )
    )
    return conn.execute(delete(history).where(history.c.completed_at < cutoff)).rowcount
