"""The database boundary: engines from URLs, transactions, fork safety, driver errors made ours.

This is the only module that knows the drivers (psycopg 3 and sqlite3). Each is loaded only
when an engine for its database is made (psycopg adds about 9 MB to a process with SQLAlchemy).
"""

from __future__ import annotations

import math
import os
import re
import select
import sys
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import sqlalchemy.exc
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.sql.base import Executable

from taiat.config import url_from_environment
from taiat.errors import (
    DatabaseNotInitialised,
    DatabaseRefused,
    DatabaseUnavailable,
    DuplicateJob,
    InvalidDatabaseURL,
    InvalidJob,
    LockTimeout,
    TaiatError,
    TransientConflict,
)

if TYPE_CHECKING:
    import sqlite3

    import psycopg

SQLITE_BUSY_TIMEOUT_MS = 30_000

# SQLite's operational errors that mean "cannot use the file now", not "bad statement".
_SQLITE_UNAVAILABLE = (
    "database is locked",
    "unable to open",
    "disk I/O error",
    "readonly database",
    "file is not a database",
    "database or disk is full",
)

#: What PostgreSQL says when it refuses a connection for a name in the URL (SQLSTATE 3D000 and
#: 28000; libpq gives a failed connection's message only, and the server writes it in English
#: unless its lc_messages says otherwise).
_REFUSED = re.compile(r'FATAL:\s+((database|role) "(?:[^"]|"")*" does not exist)')

_SUPPORTED = {"postgresql", "postgresql+psycopg", "sqlite", "sqlite+pysqlite"}


def resolve_url(url: str | None = None) -> str:
    """The URL given, else the one of `url_from_environment`.

    An empty URL given on purpose is an error (an empty `TAIAT_DATABASE_URL` counts as unset).
    """
    if url is None:
        return url_from_environment()
    if not url.strip():
        raise InvalidDatabaseURL(
            "the database URL is empty: give postgresql://user@host/db or sqlite:///path, "
            "or leave the setting out for the embedded SQLite file"
        )
    return url


#: A word of text, for `mask_url`: URLs hold no whitespace.
_WORD = re.compile(r"\S+")
#: A query option or conninfo key whose value is a secret: password, sslpassword,
#: oauth_client_secret, scram_client_key...
_SECRET_OPTION = re.compile(r"(?i)((?:^|[?&\s'\"(,])[\w.-]*(?:password|secret|key)=)[^&\s'\",)]*")


def mask_url(text: str) -> str:
    """`text` with the password of every URL in it shown as `***`, for messages and logs.

    Works on what cannot be parsed as well: in each word, everything between the first colon
    after the `//` (or the word's start) and the last `@` is hidden, as is the value of any
    query option named like a password, a secret or a key.
    """
    return _WORD.sub(lambda word: _mask_word(word.group()), text)


def _mask_word(word: str) -> str:
    head, slashes, rest = word.partition("//") if "//" in word else ("", "", word)
    userinfo, at, host = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if at and colon:
        word = f"{head}{slashes}{user}:***@{host}"
    return _SECRET_OPTION.sub(r"\1***", word)


def engine_from_url(url: str | None = None, **kwargs: Any) -> Engine:
    """An engine for a PostgreSQL or SQLite URL, set up as the job manager needs it."""
    url = resolve_url(url)
    usage = "use postgresql://user@host:port/db or sqlite:///path"
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        # ValueError: a port that is not a number, or an IPv6 host without its closing bracket
        # (what follows the host's first colon is taken for the port).
        raise InvalidDatabaseURL(f"cannot parse database URL {mask_url(url)!r}: {usage}") from None
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise InvalidDatabaseURL(
            f"the port in database URL {mask_url(url)!r} must be from 1 to 65535, got {parsed.port}"
        )
    if parsed.drivername == "postgres":  # Heroku-style spelling of the same thing
        parsed = parsed.set(drivername="postgresql")
    if parsed.drivername not in _SUPPORTED:
        raise InvalidDatabaseURL(
            f"unsupported database URL scheme {parsed.drivername!r}: "
            "use postgresql://user@host/db or sqlite:///path"
        )
    if parsed.get_backend_name() == "sqlite":
        if parsed.username or parsed.password or parsed.host or parsed.port:
            raise InvalidDatabaseURL(
                f"a SQLite URL names a file, not a user or host: {mask_url(url)!r}: "
                "use sqlite:///relative/path or sqlite:////absolute/path"
            )
        database = parsed.database or ""
        if database and database != ":memory:" and not Path(database).parent.exists():
            raise InvalidDatabaseURL(
                f"the folder of the SQLite file {database!r} does not exist: create it first"
            )
        engine = create_engine(parsed, **kwargs)
    else:
        _check_pg_options(parsed.query)
        ping = kwargs.pop("pool_pre_ping", True)
        engine = create_engine(parsed, **kwargs)
        if ping:
            ping_after_idle(engine)
    return prepare_engine(engine)


#: A pooled PostgreSQL connection idle this long (seconds) is pinged before it is used again.
PING_AFTER_IDLE = 1.0


def ping_after_idle(engine: Engine, idle: float | None = None) -> None:
    """Ping a pooled connection before it is used again only when it has been idle `idle`
    seconds or more (`PING_AFTER_IDLE` when None), or when something came in on it while it
    sat in the pool (a server that restarted or ended it says so, and closes it); replace it
    when the ping fails. SQLAlchemy's `pool_pre_ping` pings before every use: a round trip as
    long as the whole work of a one-statement call (`create_job`). A connection cut without a
    word within that time is found dead by its next call, which fails (`DatabaseUnavailable`),
    and the pool replaces it."""

    def checked_in(_dbapi: Any, record: Any) -> None:
        record.info["taiat_idle_since"] = time.monotonic()

    def checked_out(dbapi: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("taiat_idle_since")
        limit = PING_AFTER_IDLE if idle is None else idle
        if since is None or (time.monotonic() - since < limit and not _has_input(dbapi)):
            return
        try:
            alive = engine.dialect.do_ping(dbapi)
        except Exception as exc:  # noqa: BLE001 - whatever the driver raises, it is gone
            raise sqlalchemy.exc.DisconnectionError(str(exc)) from exc
        if alive is False:
            raise sqlalchemy.exc.DisconnectionError("the ping went unanswered")

    event.listen(engine, "checkin", checked_in)
    event.listen(engine, "checkout", checked_out)


def _has_input(dbapi: Any) -> bool:
    """Whether the server sent something to an idle connection (nothing is due to one: a
    notice of its end, as a rule); True when that cannot be told."""
    try:
        return bool(select.select([dbapi.fileno()], [], [], 0)[0])
    except (OSError, ValueError, AttributeError):
        return True


def _check_pg_options(query: Mapping[str, Any]) -> None:
    """Refuse a query option that libpq does not know, which would fail every connection."""
    if not query:
        return
    from psycopg import pq  # the engine about to be made loads psycopg anyway

    known = {option.keyword.decode() for option in pq.Conninfo.get_defaults()}
    unknown = sorted(set(query) - known)
    if unknown:
        raise InvalidDatabaseURL(
            f"unknown option {mask_url(unknown[0])!r} in the database URL: use libpq "
            "connection parameters such as sslmode, connect_timeout or options"
        )


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names (relative ones from the working directory); None for
    another database, an in-memory one, a `file:` URI, or a URL that cannot be parsed (making
    its engine says what is wrong with it)."""
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.query.get("uri"):
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database).absolute()


def engine_from(source: Any) -> Engine:
    """An engine from a `sessionmaker` bound to one (as in the seed), an `Engine`, a URL or None."""
    if source is None or isinstance(source, str):
        return engine_from_url(source)
    if isinstance(source, Engine):
        return prepare_engine(source)
    # Only a caller that has imported the ORM can hand us a sessionmaker; importing it here
    # for the isinstance check alone would cost every supervisor several MB.
    orm = sys.modules.get("sqlalchemy.orm")
    if orm is not None and isinstance(source, orm.sessionmaker):
        bind = source.kw.get("bind")
        if isinstance(bind, Engine):
            return prepare_engine(bind)
        raise InvalidDatabaseURL("the sessionmaker is not bound to an engine: pass bind=engine")
    raise InvalidDatabaseURL(
        f"expected a database URL, an Engine or a sessionmaker, got {type(source).__name__}"
    )


def prepare_engine(engine: Engine) -> Engine:
    """Check the dialect and, for SQLite, make every transaction take the write lock up front."""
    name = engine.dialect.name
    if name not in ("postgresql", "sqlite"):
        raise InvalidDatabaseURL(f"unsupported database {name!r}: use PostgreSQL or SQLite")
    if name == "sqlite" and not getattr(engine, "_taiat_prepared", False):
        event.listen(engine, "do_connect", _sqlite_private_file)
        # pysqlite's own transaction handling begins lazily and in DEFERRED mode, which lets two
        # writers both read and then deadlock on the upgrade; BEGIN IMMEDIATE serialises them.
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        engine._taiat_prepared = True  # type: ignore[attr-defined]
    return engine


def _sqlite_private_file(_dialect: Any, _record: Any, cargs: list[Any], cparams: dict) -> None:
    """Create a new database file 0600 before SQLite does: SQLite follows the umask (0644
    under 022, so every local user could read payloads and results) and gives the -wal and
    -shm files the database file's mode. A file that exists keeps the mode its operator gave
    it. Nothing here for `:memory:` or a `file:` URI."""
    path = cargs[0] if cargs else cparams.get("database")
    if not isinstance(path, str) or path in ("", ":memory:") or cparams.get("uri"):
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except OSError:
        pass  # there already, or not ours to create: SQLite says what is wrong, if anything


def bound_sessions(
    engine: Engine,
    *,
    lock_timeout: float,
    statement_timeout: float,
    idle_timeout: float,
    connect_timeout: float,
) -> None:
    """Bound every wait of `engine`'s PostgreSQL sessions (seconds each): for a lock, for a
    statement, for a connection; and end a session left idle in a transaction (its process
    stopped, say) so that its locks go. A supervisor's engine is made so: one stopped
    supervisor must not freeze the others. A wait cut short raises `LockTimeout`, a transient
    conflict worth trying again later. No effect on SQLite."""
    if engine.dialect.name != "postgresql":
        return
    settings = {
        "lock_timeout": lock_timeout,
        "statement_timeout": statement_timeout,
        "idle_in_transaction_session_timeout": idle_timeout,
    }
    _BOUNDS[engine] = settings

    def connect(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
        # Set at connection time, in the startup packet: no round trip of their own. 0 is no
        # bound at all (see `unbound_statements`).
        ours = " ".join(
            f"-c {name}={max(1, round(value * 1000)) if value else 0}"
            for name, value in settings.items()
        )
        params["options"] = f"{params.get('options') or ''} {ours}".strip()
        params.setdefault("connect_timeout", max(2, math.ceil(connect_timeout)))
        for name, value in _TCP_BOUNDS[engine].items():
            params.setdefault(name, value)

    _TCP_BOUNDS[engine] = tcp_bounds(statement_timeout)
    event.listen(engine, "do_connect", connect)


def tcp_bounds(seconds: float) -> dict[str, int]:
    """libpq's parameters that end a connection whose peer went silent within about `seconds`:
    the server's timeouts bound its own waits, not a network that no longer carries our
    packets (a cut link), which TCP alone gives up on only after many minutes. Data left
    unacknowledged that long ends the connection (`tcp_user_timeout`); an idle one, as a
    LISTEN connection is, is probed every second after `seconds` of silence."""
    whole = max(1, math.ceil(seconds))
    return {
        "tcp_user_timeout": whole * 1000,
        "keepalives": 1,
        "keepalives_idle": whole,
        "keepalives_interval": 1,
        "keepalives_count": 3,
    }


#: The TCP bounds of each engine made by `bound_sessions`, for its LISTEN connection too.
_TCP_BOUNDS: weakref.WeakKeyDictionary[Engine, dict[str, int]] = weakref.WeakKeyDictionary()


#: The bounds `bound_sessions` set on each engine, read whenever it connects.
_BOUNDS: weakref.WeakKeyDictionary[Engine, dict[str, float]] = weakref.WeakKeyDictionary()


def unbound_statements(engine: Engine) -> None:
    """Lift the bounds on statements (and on idling in a transaction) of `engine`'s
    sessions from now on, keeping those on lock waits: for a process whose one write takes as
    long as its data does (storing a large result), and holds up no loop meanwhile."""
    settings = _BOUNDS.get(engine)
    if settings is not None:
        settings["statement_timeout"] = 0
        settings["idle_in_transaction_session_timeout"] = 0


def _sqlite_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def describe(engine: Engine) -> str:
    """The URL without its password, for messages and logs."""
    return mask_url(engine.url.render_as_string(hide_password=False))


def tables_missing(engine: Engine) -> DatabaseNotInitialised:
    return DatabaseNotInitialised(
        f"the job tables are missing in {describe(engine)}: run `taiat init` "
        "(or `python -m taiat.init_worker`)"
    )


def url_of(engine: Engine) -> str:
    """The URL in full, password included, for a process of ours that connects on its own."""
    return engine.url.render_as_string(hide_password=False)


@contextmanager
def begin(engine: Engine, *, single_statement: bool = False) -> Iterator[Connection]:
    """A transaction that commits on success and rolls back on error, driver errors made ours.

    `single_statement`: the work is one statement, atomic on its own; PostgreSQL then runs it
    in autocommit, which spares the BEGIN and COMMIT round trips.
    """
    with translate_errors(engine):
        if single_statement and engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                yield conn
        else:
            with engine.begin() as conn:
                yield conn


def sends_alone(engine: Engine) -> bool:
    """Whether `first_row` can run statements on `engine`: PostgreSQL through psycopg (an
    Engine given by a caller may use another driver; its statements take transactions)."""
    return engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"


def first_row(engine: Engine, statement: Executable, params: Mapping[str, Any]) -> Any:
    """The first row `statement` returns, run as one statement atomic on its own (PostgreSQL,
    psycopg only): on a pooled connection, in autocommit for the time of the call, as a
    prepared statement sent straight to the driver. Its text is SQLAlchemy's, compiled once
    (`driver_text`); `params` are the driver's values (JSON as text: the statement casts it).
    SQLAlchemy's own execution of it costs more than the statement's round trip: building
    its parameters, setting and resetting the isolation level on each checkout, its result."""
    text, constants = driver_text(engine, statement)
    values = {**constants, **params}
    with translate_errors(engine):
        pooled = engine.raw_connection()  # the pool's checkout: `ping_after_idle` applies
        try:
            conn: Any = pooled.driver_connection
            try:
                # A flag of the driver's connection, set without a round trip: idle and in
                # autocommit, it sends the statement without a BEGIN. Put back as it was (an
                # engine made with isolation_level="AUTOCOMMIT" keeps its connections so).
                was = conn.autocommit
                if not was:
                    conn.autocommit = True
                cursor = pooled.info.get(_CURSOR)
                if cursor is None or cursor.connection is not conn:
                    cursor = pooled.info[_CURSOR] = conn.cursor()
                row = cursor.execute(text, values, prepare=True).fetchone()
                if not was:
                    conn.autocommit = False
                return row
            except engine.dialect.loaded_dbapi.Error as exc:
                raise _driver_error(engine, pooled, text, values, exc) from exc
            except BaseException:
                # Left in autocommit, or in the middle of the statement: not to be lent again.
                pooled.invalidate()
                raise
        finally:
            pooled.close()


#: The key in a pooled connection's `info` of the cursor `first_row` keeps on it: one made
#: for each call costs as much as the rest of its work on the client.
_CURSOR = "taiat_cursor"


def _driver_error(
    engine: Engine, pooled: Any, text: str, values: Mapping[str, Any], exc: Exception
) -> sqlalchemy.exc.DBAPIError:
    """The driver's error as SQLAlchemy wraps it when it runs a statement (for `translate`).
    The connection is thrown away: it may be gone, or left in autocommit; an error is rare
    here (the values were checked), a new connection cheap beside it."""
    gone = engine.dialect.is_disconnect(exc, pooled.driver_connection, None)  # type: ignore[arg-type]
    pooled.invalidate(exc)
    return sqlalchemy.exc.DBAPIError.instance(  # type: ignore[return-value]
        text,
        values,
        exc,
        engine.dialect.loaded_dbapi.Error,
        hide_parameters=engine.hide_parameters,
        connection_invalidated=gone,
        dialect=engine.dialect,
    )


#: Each statement's driver text and its constants, by dialect (see `driver_text`).
_DRIVER_TEXTS: dict[tuple[Any, str], tuple[str, dict[str, Any]]] = {}


def driver_text(engine: Engine, statement: Executable) -> tuple[str, dict[str, Any]]:
    """`statement` compiled for `engine`'s dialect once: the driver's SQL text, with its
    parameters by name, and the values of those given in the statement itself (literals).
    The statement is one built once (module level, or `functools.cache`): it is known by its
    identity."""
    key = (statement, engine.dialect.name)
    found = _DRIVER_TEXTS.get(key)
    if found is None:
        compiled = statement.compile(dialect=engine.dialect)  # type: ignore[attr-defined]
        constants = {name: v for name, v in compiled.params.items() if v is not None}
        found = _DRIVER_TEXTS[key] = (str(compiled), constants)
    return found


@contextmanager
def translate_errors(engine: Engine) -> Iterator[None]:
    try:
        yield
    except TaiatError:
        raise
    except sqlalchemy.exc.DBAPIError as exc:
        ours = translate(exc, engine)
        if ours is None:
            raise
        raise ours from exc
    except UnicodeEncodeError as exc:
        # The driver could not send a text value: a lone surrogate (undecodable bytes kept by
        # `surrogateescape`) is not text. The callers' own checks name the value.
        raise InvalidJob(
            f"the database cannot store a text value, which is not valid: {exc}"
        ) from exc


def translate(exc: sqlalchemy.exc.DBAPIError, engine: Engine) -> TaiatError | None:
    """Our error for a driver error; None when it is a bug of ours rather than the database's."""
    orig = exc.orig
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    # The error came from a driver that is loaded; the other one may never have been.
    pg, lite = _loaded("psycopg"), _loaded("sqlite3")
    if (pg and isinstance(orig, pg.errors.UndefinedTable)) or (
        lite and isinstance(orig, lite.OperationalError) and "no such table" in str(orig)
    ):
        return tables_missing(engine)
    if pg and isinstance(orig, pg.errors.LockNotAvailable | pg.errors.QueryCanceled):
        return LockTimeout(f"gave up waiting, safe to retry: {text}")
    if pg and isinstance(
        orig,
        pg.errors.TransactionRollback | pg.errors.DeadlockDetected | pg.errors.SerializationFailure,
    ):
        return TransientConflict(f"transaction aborted by a conflict, safe to retry: {text}")
    unique = (pg and isinstance(orig, pg.errors.UniqueViolation)) or (
        lite and isinstance(orig, lite.IntegrityError)
    )
    if unique and ("unique" in str(orig).lower() or "duplicate" in str(orig).lower()):
        return DuplicateJob(f"already exists (a concurrent request made it first): {text}")
    if pg and isinstance(orig, pg.errors.DataError):
        return InvalidJob(f"the database refused a value: {text}")
    if exc.connection_invalidated or (pg and isinstance(orig, pg.OperationalError)):
        return refused(engine, str(orig)) or DatabaseUnavailable(
            f"database {describe(engine)} is unavailable: {text}"
        )
    if (
        lite
        and isinstance(orig, lite.OperationalError)
        and any(words in str(orig) for words in _SQLITE_UNAVAILABLE)
    ):
        return DatabaseUnavailable(f"database {describe(engine)} is unavailable: {text}")
    return None


def refused(engine: Engine, message: str) -> DatabaseRefused | None:
    """A DatabaseRefused if PostgreSQL's `message` says that the database or role the URL
    names does not exist; else None."""
    found = _REFUSED.search(message)
    if found is None:
        return None
    return DatabaseRefused(
        f"database {describe(engine)} refused the connection: {found.group(1)}; fix the "
        f"database URL, or create the {found.group(2)}"
    )


def _loaded(driver: str) -> Any:
    """The driver module if this process has loaded it, else None."""
    module = sys.modules.get(driver)
    return module if isinstance(module, ModuleType) else None


def after_fork_in_child(engine: Engine) -> None:
    """Forget the pooled connections inherited from the parent without closing their sockets.

    Closing them would send a terminate message on the parent's live connections.
    """
    engine.dispose(close=False)


def copy_text(conn: Connection, table: str, columns: Sequence[str], chunks: Iterable[str]) -> None:
    """COPY lines of PostgreSQL's text format, made by the caller and sent as they come, into
    `table`'s `columns`, inside the connection's transaction."""
    from psycopg import sql  # loaded already: the connection is psycopg's

    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(name) for name in columns)
    )
    with translate_errors(conn.engine), cursor.copy(statement) as copy:
        for chunk in chunks:
            copy.write(chunk)


class Listener:
    """A connection of its own, in autocommit, LISTENing on a channel (PostgreSQL only).

    Its `fileno()` goes into the supervisor's wait; `drain()` takes what has arrived.
    """

    def __init__(self, engine: Engine, channel: str) -> None:
        self.engine = engine
        self.channel = channel
        self._conn: psycopg.Connection | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def connect(self) -> None:
        import psycopg  # loaded already: the engine is psycopg's
        from psycopg import sql

        args, kwargs = self.engine.dialect.create_connect_args(self.engine.url)
        kwargs.pop("context", None)
        for name, value in _TCP_BOUNDS.get(self.engine, {}).items():
            kwargs.setdefault(name, value)
        try:
            conn = psycopg.connect(*args, **kwargs, autocommit=True)
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except psycopg.Error as exc:
            raise refused(self.engine, str(exc)) or DatabaseUnavailable(
                f"cannot LISTEN on {describe(self.engine)}: {str(exc).strip().splitlines()[0]}"
            ) from exc
        self._conn = conn

    def fileno(self) -> int:
        assert self._conn is not None
        return self._conn.fileno()

    def drain(self) -> list[str]:
        """Every payload that has arrived, without waiting."""
        assert self._conn is not None
        import psycopg

        payloads: list[str] = []
        try:
            while batch := [note.payload for note in self._conn.notifies(timeout=0)]:
                payloads.extend(batch)
        except psycopg.Error as exc:
            self.close()
            raise DatabaseUnavailable(f"lost the LISTEN connection: {exc}") from exc
        return payloads

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
