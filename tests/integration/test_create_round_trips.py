"""Creating one job on PostgreSQL is one round trip: one prepared statement, in autocommit (no
BEGIN, no COMMIT, no ping of a connection used a moment ago), that stores the job with the
database's clock and wakes the listening supervisors. A job with dependencies takes a
transaction. What each call sends is read from libpq's trace of the pooled connection, below
SQLAlchemy, which the one-statement path goes around."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.exc
from psycopg import pq
from sqlalchemy import event, text
from support import poll

from taiat import JobManager, JobStatus
from taiat.errors import DuplicateJob
from taiat.store import db, queries

NOOP = {"job_type": "agent", "name": "noop", "payload": {"agent_name": "noop"}}

#: A message a client sends, in libpq's trace: a Parse's statement name and first word, a
#: Bind's statement name (after its portal's), a Query's first word.
_SENT = re.compile(
    r'^F\t\d+\t(?:Parse\t "(?P<parsed>[^"]*)" "(?P<parse_word>[^\s"]+)'
    r'|Bind\t "[^"]*" "(?P<bound>[^"]*)"'
    r'|Query\t "(?P<query_word>[^\s"]+))',
    re.MULTILINE,
)


class Wire:
    """What a manager's pooled connections say to PostgreSQL while they are lent, as libpq
    traces it: the statements, and the round trips (each answered by a ReadyForQuery)."""

    def __init__(self, engine: Any, path: Path) -> None:
        self.path = path
        self._out = path.open("a")
        self._start = 0
        self._prepared: dict[str, str] = {}
        event.listen(engine, "checkout", self._lent)
        event.listen(engine, "checkin", self._back)

    def _lent(self, dbapi: Any, _record: Any, _proxy: Any) -> None:
        dbapi.pgconn.trace(os.dup(self._out.fileno()))  # the trace closes its own copy
        dbapi.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)

    def _back(self, dbapi: Any, _record: Any) -> None:
        if dbapi is not None and not dbapi.closed:
            dbapi.pgconn.untrace()  # writes out what it holds

    def close(self) -> None:
        self._out.close()

    def clear(self) -> None:
        self._read()
        self._start = self.path.stat().st_size

    def _read(self) -> str:
        text = self.path.read_text()
        for sent in _SENT.finditer(text):
            if sent["parsed"] is not None:
                self._prepared[sent["parsed"]] = sent["parse_word"]
        return text[self._start :]

    def statements(self) -> list[str]:
        """Since `clear`: each statement run, by its first word (BEGIN and COMMIT too)."""
        run = []
        for sent in _SENT.finditer(self._read()):
            if sent["query_word"] is not None:
                run.append(sent["query_word"])
            elif sent["bound"] is not None:
                run.append(self._prepared[sent["bound"]])
        return run

    def round_trips(self) -> int:
        """Since `clear`: how many times the client waited for the server to be ready."""
        return self._read().count("\tReadyForQuery\t")


@pytest.fixture
def watched(pg_database_url: str, tmp_path: Path) -> Iterator[tuple[JobManager, Wire]]:
    """A manager, warmed up (the first call checks the schema's version and prepares the
    statement), and what its pooled connections say."""
    manager = JobManager(pg_database_url)
    wire = Wire(manager.engine, tmp_path / "wire.trace")
    manager.create_job(**NOOP)
    yield manager, wire
    manager.engine.dispose()
    wire.close()


def test_one_job_is_one_round_trip_in_autocommit(watched: tuple[JobManager, Wire]) -> None:
    manager, wire = watched
    for n in range(10):
        wire.clear()
        job = manager.create_job(**NOOP, priority=n)
        assert wire.statements() == ["WITH"] and wire.round_trips() == 1
        assert manager.get_job(job.id) == job  # what it returned is what is stored


def test_the_connection_goes_back_to_the_pool_out_of_autocommit(
    watched: tuple[JobManager, Wire],
) -> None:
    """What runs next on it is a transaction again, after a job made and after a refusal."""
    manager, wire = watched
    with manager.transaction() as conn:  # a refusal no check of ours makes
        conn.execute(text("ALTER TABLE taiat_jobs ADD CHECK (name <> 'refused')"))
    manager.create_job(**NOOP)
    with pytest.raises(sqlalchemy.exc.IntegrityError, match="check constraint"):
        manager.create_job("agent", "refused")
    for _ in range(2):
        wire.clear()
        first = manager.create_job(**NOOP)
        manager.create_job(**NOOP, dependencies=[first.id])
        assert wire.statements()[1:2] == ["BEGIN"] and wire.statements()[-1] == "COMMIT"


def test_the_databases_clock_stamps_it_and_a_given_run_at_is_kept(
    watched: tuple[JobManager, Wire],
) -> None:
    manager, _ = watched
    with manager.transaction() as conn:
        before = queries.db_now(conn)
    job = manager.create_job(**NOOP)
    assert before <= job.created_at == job.updated_at == job.run_at
    later = datetime(2030, 1, 2, 3, 4, 5)
    assert manager.create_job(**NOOP, run_at=later).run_at == later
    assert job.status is JobStatus.PENDING and job.unmet_dependencies == 0


def test_it_wakes_the_listening_supervisors(watched: tuple[JobManager, Wire]) -> None:
    manager, _ = watched
    listener = db.Listener(manager.engine, queries.CHANNEL)
    try:
        listener.connect()
        manager.create_job(**NOOP)
        heard: list[str] = []
        poll(lambda: heard.extend(listener.drain()) or heard, 10, "the notification")
        assert "ready" in heard
    finally:
        listener.close()


def test_a_job_with_dependencies_takes_a_transaction(watched: tuple[JobManager, Wire]) -> None:
    manager, wire = watched
    first = manager.create_job(**NOOP)
    wire.clear()
    second = manager.create_job(**NOOP, dependencies=[first.id])
    assert wire.statements()[0] == "BEGIN" and len(wire.statements()) > 2
    assert second.unmet_dependencies == 1


def test_a_chosen_id_takes_a_transaction_and_is_checked(watched: tuple[JobManager, Wire]) -> None:
    manager, wire = watched
    wire.clear()
    manager.create_job(**NOOP, id="mine")
    assert wire.statements()[0] == "BEGIN"
    with pytest.raises(DuplicateJob, match="already taken"):
        manager.create_job(**NOOP, id="mine")


def test_a_far_run_at_is_not_a_reason_for_another_path(watched: tuple[JobManager, Wire]) -> None:
    manager, wire = watched
    wire.clear()
    job = manager.create_job(**NOOP, run_at=datetime(2000, 1, 1) + timedelta(days=1))
    assert wire.statements() == ["WITH"] and job.run_at == datetime(2000, 1, 2)


def test_an_engine_in_autocommit_keeps_its_connections_so(pg_database_url: str) -> None:
    engine = db.engine_from_url(pg_database_url, isolation_level="AUTOCOMMIT")
    try:
        manager = JobManager(engine)
        for _ in range(2):
            manager.create_job(**NOOP)
            with engine.connect() as conn:
                assert conn.connection.driver_connection.autocommit  # type: ignore[union-attr]
    finally:
        engine.dispose()


def test_a_claim_with_nothing_to_record_is_one_round_trip_in_autocommit(
    watched: tuple[JobManager, Wire],
) -> None:
    """The supervisor's claim, when no ending goes with it: no BEGIN, no COMMIT."""
    manager, wire = watched
    created = manager.create_job(**NOOP)
    wire.clear()
    claimed = {job.id: job for job in manager.port.claim("w", 10).jobs}
    assert len(claimed) == 2 and claimed[created.id].status is JobStatus.RUNNING
    assert wire.statements() == ["WITH"] and wire.round_trips() == 1
    assert manager.get_job(created.id).status is JobStatus.RUNNING  # committed
    wire.clear()
    # Nothing left: the limit-aware claim is tried too, still without a transaction.
    assert manager.port.settle([], "w", 1)[1].jobs == []
    run = wire.statements()
    assert run and "BEGIN" not in run and "COMMIT" not in run, run
