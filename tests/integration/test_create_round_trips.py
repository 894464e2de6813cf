"""Creating one job on PostgreSQL is one round trip: one statement, in autocommit (no BEGIN, no
COMMIT, no ping of a connection used a moment ago), that stores the job with the database's
clock and wakes the listening supervisors. A job with dependencies takes a transaction."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event
from support import poll

from taiat import JobManager, JobStatus
from taiat.errors import DuplicateJob
from taiat.store import db, queries

NOOP = {"job_type": "agent", "name": "noop", "payload": {"agent_name": "noop"}}


@pytest.fixture
def watched(pg_database_url: str) -> Iterator[tuple[JobManager, list[str]]]:
    """A manager, and what its engine sends: each statement's first word, after "BEGIN" when
    the driver sends it first (its connection not in autocommit)."""
    manager = JobManager(pg_database_url)
    manager.create_job(**NOOP)  # the first call checks the schema's version
    sent: list[str] = []

    def executing(_conn: object, cursor: Any, statement: str, *_: object) -> None:
        if not cursor.connection.autocommit and cursor.connection.info.transaction_status == 0:
            sent.append("BEGIN")  # idle, not in autocommit: psycopg begins first
        sent.append(statement.split()[0])

    event.listen(manager.engine, "before_cursor_execute", executing)
    yield manager, sent
    manager.engine.dispose()


def test_one_job_is_one_statement_in_autocommit(watched: tuple[JobManager, list[str]]) -> None:
    manager, sent = watched
    for n in range(10):
        sent.clear()
        job = manager.create_job(**NOOP, priority=n)
        assert sent == ["WITH"], sent
        assert manager.get_job(job.id) == job  # what it returned is what is stored


def test_the_databases_clock_stamps_it_and_a_given_run_at_is_kept(
    watched: tuple[JobManager, list[str]],
) -> None:
    manager, _ = watched
    with manager.transaction() as conn:
        before = queries.db_now(conn)
    job = manager.create_job(**NOOP)
    assert before <= job.created_at == job.updated_at == job.run_at
    later = datetime(2030, 1, 2, 3, 4, 5)
    assert manager.create_job(**NOOP, run_at=later).run_at == later
    assert job.status is JobStatus.PENDING and job.unmet_dependencies == 0


def test_it_wakes_the_listening_supervisors(watched: tuple[JobManager, list[str]]) -> None:
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


def test_a_job_with_dependencies_takes_a_transaction(
    watched: tuple[JobManager, list[str]],
) -> None:
    manager, sent = watched
    first = manager.create_job(**NOOP)
    sent.clear()
    second = manager.create_job(**NOOP, dependencies=[first.id])
    assert sent[0] == "BEGIN" and len(sent) > 2
    assert second.unmet_dependencies == 1


def test_a_chosen_id_takes_a_transaction_and_is_checked(
    watched: tuple[JobManager, list[str]],
) -> None:
    manager, sent = watched
    sent.clear()
    manager.create_job(**NOOP, id="mine")
    assert sent[0] == "BEGIN"
    with pytest.raises(DuplicateJob, match="already taken"):
        manager.create_job(**NOOP, id="mine")


def test_a_far_run_at_is_not_a_reason_for_another_path(
    watched: tuple[JobManager, list[str]],
) -> None:
    manager, sent = watched
    sent.clear()
    job = manager.create_job(**NOOP, run_at=datetime(2000, 1, 1) + timedelta(days=1))
    assert sent == ["WITH"] and job.run_at == datetime(2000, 1, 2)


def test_a_claim_with_nothing_to_record_is_one_statement_in_autocommit(
    watched: tuple[JobManager, list[str]],
) -> None:
    """The supervisor's claim, when no ending goes with it: no BEGIN, no COMMIT."""
    manager, sent = watched
    created = manager.create_job(**NOOP)
    sent.clear()
    claimed = {job.id: job for job in manager.port.claim("w", 10).jobs}
    assert len(claimed) == 2 and claimed[created.id].status is JobStatus.RUNNING
    assert sent == ["WITH"], sent
    assert manager.get_job(created.id).status is JobStatus.RUNNING  # committed
    sent.clear()
    assert manager.port.settle([], "w", 1)[1].jobs == []  # nothing left: the limit-aware
    assert sent[0] == "WITH" and "BEGIN" not in sent, sent  # claim is tried too, still
    # without a transaction
