"""The tables: the seed's `taiat_jobs` and `taiat_job_history` with every seed column, plus ours.

Times are naive UTC timestamps taken from the database's clock (`utcnow()`), so supervisors on
many hosts agree on "now" whatever their own clocks say.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import DDL, CreateColumn
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import TypeDecorator

from taiat.errors import SchemaVersionMismatch
from taiat.store import db
from taiat.store.validation import JsonText

log = logging.getLogger(__name__)

#: Bump with every change to the tables, and add the step that upgrades to it in `UPGRADES`.
SCHEMA_VERSION = 5

JsonType = JSON().with_variant(JSONB(), "postgresql")


class ResultJson(TypeDecorator[Any]):
    """A result column: JSON (JSONB on PostgreSQL) like `JsonType`, where a `JsonText` (the
    checked text of a job's result) is stored as it is rather than encoded again."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        return dialect.type_descriptor(JSONB() if dialect.name == "postgresql" else JSON())

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        encode = self.load_dialect_impl(dialect).bind_processor(dialect)
        if dialect.name == "postgresql":
            from psycopg.types.json import Jsonb  # loaded already: the connection is psycopg's

            def text_as_is(value: JsonText) -> Any:
                return Jsonb(value, dumps=str)

        else:
            text_as_is = str

        def process(value: Any) -> Any:
            if isinstance(value, JsonText):
                return text_as_is(value)
            return encode(value) if encode is not None else value

        return process


class utcnow(FunctionElement[Any]):  # noqa: N801 - reads as a SQL function
    """The database's current time as a naive UTC timestamp, plus `offset` seconds if given."""

    type = DateTime()
    inherit_cache = True


@compiles(utcnow, "postgresql")
def _pg_utcnow(element: utcnow, compiler: Any, **kw: Any) -> str:
    base = "(now() AT TIME ZONE 'utc')"
    if not element.clauses.clauses:
        return base
    offset = compiler.process(element.clauses.clauses[0], **kw)
    return f"({base} + make_interval(secs => {offset}))"


@compiles(utcnow, "sqlite")
def _sqlite_utcnow(element: utcnow, compiler: Any, **kw: Any) -> str:
    # The same text SQLAlchemy writes for a bound datetime, so values compare as strings.
    if not element.clauses.clauses:
        return "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
    offset = compiler.process(element.clauses.clauses[0], **kw)
    return f"strftime('%Y-%m-%d %H:%M:%f000', 'now', printf('%+.6f seconds', {offset}))"


metadata = MetaData()


def _what_to_run() -> list[Column[Any]]:
    """The seed's columns describing a job, shared by the active and the history table."""
    return [
        Column("job_type", String, nullable=False),
        Column("name", String, nullable=False),
        Column("description", Text),
        Column("payload", JsonType, nullable=False, server_default=text("'{}'")),
        Column("dependencies", JsonType, nullable=False, server_default=text("'[]'")),
    ]


def _how_it_went() -> list[Column[Any]]:
    """The seed's columns describing a job's outcome, shared by both tables."""
    return [
        Column("error_message", Text),
        Column("result", ResultJson()),
        Column("started_at", DateTime),
        Column("completed_at", DateTime),
    ]


jobs = Table(
    "taiat_jobs",
    metadata,
    # The seed's columns, names and meanings unchanged.
    Column("id", String, primary_key=True),
    *_what_to_run(),
    Column("max_retries", Integer, nullable=False, server_default=text("3")),
    Column("retry_count", Integer, nullable=False, server_default=text("0")),
    Column("status", String, nullable=False, server_default=text("'pending'")),
    *_how_it_went(),
    Column("created_at", DateTime, server_default=utcnow()),
    Column("updated_at", DateTime, server_default=utcnow()),
    # Ours.
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("run_at", DateTime, nullable=False, server_default=utcnow()),
    Column("timeout_seconds", Float),
    Column("unmet_dependencies", Integer, nullable=False, server_default=text("0")),
    Column("worker_id", String),
    Column("claim_seq", Integer, nullable=False, server_default=text("0")),
    # Version 4: the job's queue, an AGENT job's agent (payload["agent_name"]), and the
    # job's explicit limit keys (its implicit ones come of its queue and agent).
    Column("queue", String, nullable=False, server_default=text("'default'")),
    Column("agent", String),
    Column("limit_keys", JsonType, nullable=False, server_default=text("'[]'")),
    # Version 5: `taiat jobs stack` asks for a running job's stack: the requests made (a
    # counter), the last one its supervisor answered, and its answer (NULL: no stack came).
    Column("stack_requests", Integer),
    Column("stack_answered", Integer),
    Column("stack", Text),
    Column("stack_at", DateTime),
    # Ready = pending, nothing unmet, run_at passed: the claim walks only this index.
    Index(
        "ix_taiat_jobs_ready",
        text("priority DESC"),
        "run_at",
        "created_at",
        postgresql_where=text("status = 'pending' AND unmet_dependencies = 0"),
        sqlite_where=text("status = 'pending' AND unmet_dependencies = 0"),
    ),
    Index("ix_taiat_jobs_status_created", "status", "created_at"),
    Index("ix_taiat_jobs_worker", "worker_id", postgresql_where=text("worker_id IS NOT NULL")),
)

#: Version 5's columns of `taiat_jobs` for `taiat jobs stack`.
STACK_REQUEST_COLUMNS = ("stack_requests", "stack_answered", "stack", "stack_at")

history = Table(
    "taiat_job_history",
    metadata,
    Column("id", String, primary_key=True),
    Column("job_id", String, nullable=False),
    *_what_to_run(),
    Column("status", String, nullable=False),
    *_how_it_went(),
    Column("duration_seconds", Integer),
    Column("created_at", DateTime, server_default=utcnow()),
    # Ours: what `retry_job` needs to run the job again, and who ran it last.
    Column("job_created_at", DateTime),
    Column("max_retries", Integer, nullable=False, server_default=text("3")),
    Column("retry_count", Integer, nullable=False, server_default=text("0")),
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("timeout_seconds", Float),
    Column("worker_id", String),
    Column("claim_seq", Integer, nullable=False, server_default=text("0")),
    # Version 4: the job's queue, an AGENT job's agent (payload["agent_name"]), and the
    # job's explicit limit keys (its implicit ones come of its queue and agent).
    Column("queue", String, nullable=False, server_default=text("'default'")),
    Column("agent", String),
    Column("limit_keys", JsonType, nullable=False, server_default=text("'[]'")),
    Index("ix_taiat_job_history_created", text("created_at DESC")),
    Index("ix_taiat_job_history_completed", "completed_at"),
    Index("ix_taiat_job_history_job", "job_id", text("created_at DESC")),
)

#: An edge per unmet dependency of an active job; it goes when the dependency completes or
#: the dependent job finishes, so edges only ever point from pending jobs.
dependencies = Table(
    "taiat_job_dependencies",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("depends_on", String, primary_key=True),
    Index("ix_taiat_job_dependencies_depends_on", "depends_on"),
)

#: One row per run of a job in a child process: how it ended and what it cost.
attempts = Table(
    "taiat_job_attempts",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("worker_id", String),
    Column("host", String),
    Column("pid", Integer),
    Column("outcome", String),
    Column("error_message", Text),
    Column("started_at", DateTime),
    Column("ended_at", DateTime),
    Column("wall_seconds", Float),
    Column("cpu_user_seconds", Float),
    Column("cpu_system_seconds", Float),
    Column("peak_rss_bytes", BigInteger),
    Column("exit_code", Integer),
    Column("exit_signal", Integer),
    # Version 5: the stack its child dumped before it was ended for a timeout or a cancel.
    Column("stack", Text),
    # Version 5: in a sandbox, the processes still in the job's cgroup after its child ended,
    # killed then (null: no sandbox).
    Column("stragglers_killed", Integer),
    Index("ix_taiat_job_attempts_ended", "ended_at"),
)

#: Version 3: what each attempt's process tree wrote to stdout and stderr, the last bytes of
#: each (as many as its supervisor's `--log-tail-bytes`) and how many came before and were
#: dropped; a row a run that wrote anything. Written at the attempt's end with its attempt
#: (`final`), and while it runs every few seconds, so that `taiat jobs logs --follow` sees it
#: grow. A table of its own: the attempts table stays narrow, as the reads of it on every
#: failure (the quarantine) and in history listings want it.
output = Table(
    "taiat_job_output",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("stdout_tail", LargeBinary),
    Column("stdout_dropped_bytes", BigInteger, nullable=False, server_default=text("0")),
    Column("stderr_tail", LargeBinary),
    Column("stderr_dropped_bytes", BigInteger, nullable=False, server_default=text("0")),
    Column("updated_at", DateTime, nullable=False, server_default=utcnow()),
    Column("final", Boolean, nullable=False, server_default=text("false")),
)

#: Version 4: fleet-wide limits by key (`queue:<name>`, `agent:<name>` or an explicit key).
#: `concurrency` caps the jobs running at once with the key (None: no cap); `rate_count` starts
#: per `rate_seconds` cap how many start in any such window (None: no rate). Running counts are
#: not kept: they are counted from the running jobs, so whatever ends a job frees its room.
limits = Table(
    "taiat_limits",
    metadata,
    Column("key", String, primary_key=True),
    Column("concurrency", Integer),
    Column("rate_count", Integer),
    Column("rate_seconds", Float),
    Column("updated_at", DateTime, nullable=False, server_default=utcnow()),
)

#: Version 5: the starts of jobs with a rate-limited key, counted in buckets of time: a key's
#: window of `rate_seconds` is judged by the buckets that overlap it, each `width` seconds
#: (`rate_seconds / STARTS_BUCKETS`) and numbered from the Unix epoch (`bucket * width` is its
#: start). A bucket at the window's far edge counts whole, so a rate errs by holding back,
#: never by letting more start; a claim reads at most `STARTS_BUCKETS + 1` rows a key, however
#: many jobs started. Rows older than every window are pruned now and then by the claims.
#: (Version 4 kept a row a start.)
limit_starts = Table(
    "taiat_limit_starts",
    metadata,
    Column("key", String, primary_key=True),
    Column("width", Float, primary_key=True),
    Column("bucket", BigInteger, primary_key=True),
    Column("starts", Integer, nullable=False),
)

#: How many buckets of `taiat_limit_starts` a rate's window is cut into.
STARTS_BUCKETS = 20

#: Supervisors register here and heartbeat; a stale heartbeat means the supervisor is dead.
workers = Table(
    "taiat_workers",
    metadata,
    Column("id", String, primary_key=True),
    Column("host", String, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", DateTime, nullable=False, server_default=utcnow()),
    Column("heartbeat_at", DateTime, nullable=False, server_default=utcnow()),
    Column("info", JsonType),
    # Version 2: the lease it is judged by (its own), and where its pid means something: the
    # boot and the PID namespace it runs in. None in rows from before.
    Column("lease_seconds", Float),
    Column("boot_id", String),
    Column("pid_namespace", String),
    # Version 4: the queues it serves (NULL: every queue), and the agents it has, an object
    # {agent name: {"inputs": [...], "outputs": [...], "queue": str | None}}.
    Column("queues", JsonType),
    Column("agents", JsonType),
)

#: Version 4: the queues an operator has paused or resumed; a queue with no row is not paused.
queues = Table(
    "taiat_queues",
    metadata,
    Column("name", String, primary_key=True),
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    Column("updated_at", DateTime),
)

schema_version = Table(
    "taiat_schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", DateTime, nullable=False, server_default=utcnow()),
)


def _add_columns(table: Table, *names: str) -> Callable[[Connection], None]:
    """A step that adds `table`'s columns `names`, as declared above, to an existing table
    (those it has already, as a table created by a later release's declaration has, are left
    as they are)."""

    def step(conn: Connection) -> None:
        present = {column["name"] for column in inspect(conn).get_columns(table.name)}
        for name in names:
            if name in present:
                continue
            column = CreateColumn(table.c[name]).compile(dialect=conn.dialect)
            conn.execute(DDL(f"ALTER TABLE {table.name} ADD COLUMN {column}"))

    return step


#: Version 5: what each database runs for the limit-aware claim, created or replaced: on
#: PostgreSQL the claim in one call (`taiat_claim_limited`, with `taiat_has_key`); on SQLite the
#: trigger that counts a claim's starts of rate-limited keys (`taiat_limit_starts_counted`).
#: Each file names the buckets a window is cut into `STARTS_BUCKETS`.
ROUTINES = {
    dialect: (Path(__file__).parent / "sql" / name)
    .read_text()
    .replace("STARTS_BUCKETS", str(STARTS_BUCKETS))
    for dialect, name in (
        ("postgresql", "claim_limited.sql"),
        ("sqlite", "limit_starts_sqlite.sql"),
    )
}


def create_routines(conn: Connection) -> None:
    """Create or replace `ROUTINES` of the connection's database."""
    conn.exec_driver_sql(ROUTINES[conn.dialect.name])


#: Steps that bring a database from version N-1 to N, keyed by N.
UPGRADES: dict[int, Callable[[Connection], None]] = {
    2: _add_columns(workers, "lease_seconds", "boot_id", "pid_namespace"),
    3: lambda conn: output.create(conn, checkfirst=True),
    4: lambda conn: _upgrade_to_4(conn),
    5: lambda conn: _upgrade_to_5(conn),
}


def _upgrade_to_4(conn: Connection) -> None:
    """Version 4: queues, agents and limits: the columns of jobs, history and supervisors,
    the table of paused queues and the limits' tables. Each part only if missing, like the
    table of version 3."""
    for table in (jobs, history):
        _add_columns(table, "queue", "agent", "limit_keys")(conn)
    _add_columns(workers, "queues", "agents")(conn)
    for table in (queues, limits, limit_starts):
        table.create(conn, checkfirst=True)
    # The agent jobs created before know their agent by their payload only.
    if conn.dialect.name == "postgresql":
        name = "payload ->> 'agent_name'"
    else:
        name = "json_extract(payload, '$.agent_name')"
    for table in (jobs, history):
        conn.execute(text(f"UPDATE {table.name} SET agent = {name} WHERE job_type = 'agent'"))


def _upgrade_to_5(conn: Connection) -> None:
    """Version 5: a rate's starts counted in buckets (version 4 kept a row a start: each is
    counted into its bucket, so that no window's starts are forgotten), the routines, and
    the attempts' `stragglers_killed`."""
    columns = {column["name"] for column in inspect(conn).get_columns(limit_starts.name)}
    if "started_at" in columns:
        rows = conn.execute(
            text(
                "SELECT s.key, s.started_at, l.rate_seconds FROM taiat_limit_starts AS s "
                "JOIN taiat_limits AS l ON l.key = s.key WHERE l.rate_seconds IS NOT NULL"
            )
        ).all()
        counted: dict[tuple[str, float, int], int] = {}
        for key, started_at, seconds in rows:
            if isinstance(started_at, str):  # SQLite's text, read without the column's type
                started_at = datetime.fromisoformat(started_at)
            width = seconds / STARTS_BUCKETS
            epoch = (started_at - datetime(1970, 1, 1)).total_seconds()
            slot = (key, width, int(epoch // width))
            counted[slot] = counted.get(slot, 0) + 1
        conn.execute(text(f"DROP TABLE {limit_starts.name}"))
        limit_starts.create(conn)
        if counted:
            conn.execute(
                insert(limit_starts),
                [
                    {"key": key, "width": width, "bucket": bucket, "starts": starts}
                    for (key, width, bucket), starts in counted.items()
                ],
            )
    _add_columns(attempts, "stragglers_killed")(conn)
    create_routines(conn)
    _add_columns(attempts, "stack")(conn)
    _add_columns(jobs, *STACK_REQUEST_COLUMNS)(conn)


# Any constant will do; it keeps two `init_worker` runs from creating the tables at once.
_SCHEMA_LOCK_KEY = 0x7A1A7


def current_version(conn: Connection) -> int | None:
    """The schema version recorded in the database, or None when it was never initialised."""
    if not inspect(conn).has_table(schema_version.name):
        return None
    return conn.execute(select(func.max(schema_version.c.version))).scalar()


def check_version(conn: Connection) -> None:
    """Raise unless the database holds exactly the schema this release reads and writes."""
    version = current_version(conn)
    if version is None:
        raise db.tables_missing(conn.engine)
    if version != SCHEMA_VERSION:
        raise _mismatch(version)


def _mismatch(version: int) -> SchemaVersionMismatch:
    if version > SCHEMA_VERSION:
        return SchemaVersionMismatch(
            f"the database schema is version {version}, newer than this release's "
            f"{SCHEMA_VERSION}: upgrade the taiat package"
        )
    return SchemaVersionMismatch(
        f"the database schema is version {version}, older than this release's "
        f"{SCHEMA_VERSION}: run `python -m taiat.init_worker` to upgrade it"
    )


def initialise(engine: Engine) -> tuple[int | None, int]:
    """Create or upgrade the tables. Returns (version before, version after); idempotent."""
    with db.begin(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
        before = current_version(conn)
        if before is not None and before > SCHEMA_VERSION:
            raise _mismatch(before)
        if before is None:
            metadata.create_all(conn)
            create_routines(conn)
            conn.execute(insert(schema_version).values(version=SCHEMA_VERSION))
            log.info("created the tables at schema version %d", SCHEMA_VERSION)
        else:
            for version in range(before + 1, SCHEMA_VERSION + 1):
                UPGRADES[version](conn)
                conn.execute(insert(schema_version).values(version=version))
                log.info("upgraded the schema to version %d", version)
    return before, SCHEMA_VERSION
