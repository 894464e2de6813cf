"""A supervisor's PostgreSQL sessions never wait long: on another's lock, on a statement, or
holding a transaction its process left open."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy.exc
from support import poll

from taiat import JobManager
from taiat.errors import LockTimeout
from taiat.store import db


def _bounded(url: str) -> JobManager:
    engine = db.engine_from_url(url)
    db.bound_sessions(
        engine, lock_timeout=0.2, statement_timeout=1.0, idle_timeout=1.0, connect_timeout=2.0
    )
    return JobManager(engine)


def _connect(url: str) -> psycopg.Connection:
    from urllib.parse import parse_qs, urlsplit

    options = parse_qs(urlsplit(url).query).get("options", [""])[0]
    return psycopg.connect(url.split("?")[0], options=options)


def test_a_lock_held_elsewhere_is_waited_on_briefly(pg_database_url: str) -> None:
    manager = _bounded(pg_database_url)
    job = manager.create_job("agent", "locked", payload={"agent_name": "plain"})
    with _connect(pg_database_url) as holder:
        holder.execute("SELECT 1 FROM taiat_jobs WHERE id = %s FOR UPDATE", (job.id,))
        with pytest.raises(LockTimeout, match="gave up waiting"):
            manager.cancel_job(job.id)
        holder.rollback()
    assert manager.cancel_job(job.id)
    manager.engine.dispose()


def test_a_transaction_left_open_ends_and_its_locks_go(pg_database_url: str) -> None:
    manager = _bounded(pg_database_url)
    job = manager.create_job("agent", "left open", payload={"agent_name": "plain"})
    left = manager.engine.connect()
    left.begin()
    left.exec_driver_sql("SELECT 1 FROM taiat_jobs WHERE id = %s FOR UPDATE", (job.id,))
    # As if its process were stopped here: the server ends the session, and the lock goes.
    with _connect(pg_database_url) as other:

        def free() -> bool:
            try:
                other.execute("SELECT 1 FROM taiat_jobs WHERE id = %s FOR UPDATE NOWAIT", (job.id,))
            except psycopg.errors.LockNotAvailable:
                other.rollback()
                return False
            other.rollback()
            return True

        poll(free, 30, "the lock to go")
    left.invalidate()
    left.close()
    manager.engine.dispose()


def test_statements_unbound_for_a_process_that_owns_its_session(pg_database_url: str) -> None:
    """The process that stores a large result lifts the bound on its statements (its one
    write takes as long as its data does), and keeps the one on lock waits."""
    manager = _bounded(pg_database_url)
    with manager.engine.connect() as conn, pytest.raises(sqlalchemy.exc.OperationalError):
        conn.exec_driver_sql("SELECT pg_sleep(1.3)")
    manager.engine.dispose()  # the storing process starts with no connection of its own, then:
    db.unbound_statements(manager.engine)
    with manager.engine.connect() as conn:
        conn.exec_driver_sql("SELECT pg_sleep(1.3)")
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "0"
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "200ms"
    manager.engine.dispose()


def test_a_silent_link_ends_the_sessions_and_the_listener_within_seconds(
    pg_database_url: str,
) -> None:
    """A cut link carries no error back: libpq is told to give up on a peer silent for about
    the statement bound, on the engine's sessions and on its LISTEN connection alike."""
    manager = _bounded(pg_database_url)
    listener = db.Listener(manager.engine, "taiat_test_tcp")
    try:
        with manager.engine.connect() as conn:
            session = conn.connection.dbapi_connection.info.get_parameters()
        listener.connect()
        assert listener._conn is not None
        listening = listener._conn.info.get_parameters()
        for parameters in (session, listening):
            assert parameters["tcp_user_timeout"] == "1000", parameters
            assert parameters["keepalives_idle"] == "1", parameters
    finally:
        listener.close()
        manager.engine.dispose()
