"""The statements that end a claim: the jobs of successes moved to history (on PostgreSQL in
one statement, their rows never leaving the server), history entries written, attempts
recorded. Part of the query module; see its docstring."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Integer,
    RowMapping,
    String,
    Text,
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
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from taiat.jobs import JobStatus
from taiat.store.queries.reading import RUNNING
from taiat.store.schema import attempts, dependencies, history, jobs, output, utcnow
from taiat.store.validation import utc_naive

COMPLETED = JobStatus.COMPLETED.value


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
    "queue",
    "agent",
    "limit_keys",
)


def _complete_running_statement(*, with_attempts: bool = False) -> Any:
    """PostgreSQL's `take_running` and `insert_history` of successes as one statement, the
    jobs' rows never leaving the server: :completed is a JSON array of objects with `job_id`,
    `claim_seq`, `history_id` (the new entry's id) and `result` (JSON text); `with_attempts`,
    and `insert_attempts` of their runs (:attempts) too. Built once: this is the supervisor's
    hot path."""
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
    stmt = select(
        taken.c.id, taken.c.now, case((producer, taken.c.payload)).label("payload")
    ).add_cte(kept)
    if with_attempts:
        # A statement's data-modifying parts all run to their end, whatever the rest finds:
        # the attempts are recorded even for a claim found stale, as `insert_attempts` would.
        stmt = stmt.add_cte(_insert_attempts_statement().cte("recorded"))
    return stmt


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


_COMPLETE_RUNNING = _complete_running_statement()
#: The same, recording the attempts of those runs too (:attempts, as `insert_attempts` takes
#: them): one round trip fewer on the hot path.
_COMPLETE_RUNNING_RECORDED = _complete_running_statement(with_attempts=True)


def completes_in_one_statement(conn: Connection) -> bool:
    """Whether `complete_running` serves this database (PostgreSQL)."""
    return conn.dialect.name == "postgresql"


def complete_running(
    conn: Connection,
    completed: Sequence[Mapping[str, Any]],
    attempt_rows: Sequence[Mapping[str, Any]] = (),
) -> list[RowMapping]:
    """Move the jobs whose claim is still the running one to history as completed, in one
    statement; `completed` as `_complete_running_statement` says, one item a job (a job twice
    would leave which result is kept to the plan). In the same statement, record
    `attempt_rows` as `insert_attempts` does. Returns each moved job's `id`, the database's
    time as `now`, and its `payload` when the job produces a query's goal (`goal_output`),
    else None. PostgreSQL only."""
    if not completed:
        insert_attempts(conn, attempt_rows)
        return []
    # In id order, as every lock on jobs is taken, when the plan follows the array.
    ordered = sorted(completed, key=lambda item: item["job_id"])
    ids = [item["job_id"] for item in ordered]
    values: dict[str, Any] = {"completed": ordered, "ids": ids}
    stmt = _COMPLETE_RUNNING
    if attempt_rows:
        values["attempts"] = [_as_json(row) for row in attempt_rows]
        stmt = _COMPLETE_RUNNING_RECORDED
    return list(conn.execute(stmt, values).mappings())


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


def _upsert_output_statement(dialect_insert: Any) -> Any:
    """The insert of attempts' output that replaces a row written before for the same attempt
    (its output while it ran)."""
    given = dialect_insert(output)
    kept = ("stdout_tail", "stdout_dropped_bytes", "stderr_tail", "stderr_dropped_bytes", "final")
    changes = {name: given.excluded[name] for name in kept}
    changes["updated_at"] = utcnow()
    return given.on_conflict_do_update(index_elements=["job_id", "attempt"], set_=changes)


_UPSERT_OUTPUT = {
    "postgresql": _upsert_output_statement(pg_insert),
    "sqlite": _upsert_output_statement(sqlite_insert),
}


def save_output(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write attempts' output (`taiat_job_output`), each row in place of the one written before
    for the same attempt: `job_id`, `attempt`, the tails and their dropped bytes, `final`."""
    if rows:
        conn.execute(_UPSERT_OUTPUT[conn.dialect.name], list(rows))


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
