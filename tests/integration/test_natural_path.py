"""One job's natural path: the dependency results its child needs are read in the claim's own
transaction (a read that fails leaves the job pending, no retry spent), the child never opens
the database, and the JSON text the child sent is stored as it is."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from taiat import JobManager, JobStatus
from taiat.context import JobContext
from taiat.forking import wire
from taiat.forking.job_process import Ending
from taiat.jobs import Attempt, Job
from taiat.store import port
from taiat.store.validation import JsonText
from taiat.supervisor.recorder import Record, Recorder

WORKER = "test-worker"


def _completed(manager: JobManager, result: Any) -> Job:
    job = manager.create_job("agent", "first")
    [claimed] = manager.claim_jobs(WORKER, 1)
    assert manager.complete_job(claimed.id, claimed.claim_seq, result)
    return job


def test_a_claim_takes_its_jobs_dependency_results_in_the_same_transaction(
    manager: JobManager,
) -> None:
    first = _completed(manager, {"rows": [1, 2, 3]})
    then = manager.create_job("agent", "then", dependencies=[first.id])
    alone = manager.create_job("agent", "alone")
    claimed = manager.port.claim(WORKER, 5)
    assert {job.id for job in claimed.jobs} == {then.id, alone.id}
    assert claimed.dependency_results == {then.id: {first.id: {"rows": [1, 2, 3]}}}


def test_a_read_of_dependency_results_that_fails_leaves_the_job_pending_no_retry_spent(
    manager: JobManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _completed(manager, 42)
    then = manager.create_job("agent", "then", dependencies=[first.id])

    def unreadable(conn: Any, jobs: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded while decoding a JSON array")

    monkeypatch.setattr(port, "dependency_results", unreadable)
    with pytest.raises(RecursionError):
        manager.port.claim(WORKER, 5)
    monkeypatch.undo()
    # Rolled back with the claim (SQLite), or given back at once (PostgreSQL, whose claim with
    # nothing to record commits on its own): pending, no retry spent, no attempt.
    job = manager.get_job(then.id)
    assert job.status is JobStatus.PENDING and job.retry_count == 0 and job.worker_id is None
    assert job.claim_seq == (1 if manager.engine.dialect.name == "postgresql" else 0)
    assert manager.get_attempts(then.id) == []
    claimed = manager.port.claim(WORKER, 5)
    assert [job.id for job in claimed.jobs] == [then.id]
    assert claimed.dependency_results == {then.id: {first.id: 42}}


def test_a_job_context_holds_its_dependency_results_and_no_database(manager: JobManager) -> None:
    manager.create_job("agent", "plain")
    [job] = manager.claim_jobs(WORKER, 1)
    context = JobContext(job, {"a": 1})
    assert context.dependency_results == {"a": 1}
    assert JobContext(job).dependency_results == {}
    assert not any("engine" in name or "database" in name for name in vars(context))


#: Valid JSON, written as no encoder of ours would write it: spaces where there are none,
#: none where there are, keys in no order.
ODD_TEXT = '{"b" :[1,2.5,  "x"],"a":{ }}'


def test_a_results_text_comes_off_the_pipe_checked_and_unchanged() -> None:
    message = wire.read_message(wire.RESULT_PREFIX + ODD_TEXT.encode() + wire.RESULT_SUFFIX)
    assert message == {"ok": True, "result": ODD_TEXT, "plan": None}
    assert isinstance(message["result"], JsonText)
    # What needs a closer look takes the slow path, which decodes it and says what is wrong.
    for odd in (b"NaN", b"1e400", b'"\\u0000"', b'"\\ud800"', b"[1,"):
        slow = wire.read_message(wire.RESULT_PREFIX + odd + wire.RESULT_SUFFIX)
        assert not isinstance(slow.get("result"), JsonText), odd


def test_a_results_text_is_stored_as_it_is(manager: JobManager) -> None:
    manager.create_job("agent", "odd")
    [job] = manager.claim_jobs(WORKER, 1)
    result = wire.read_message(wire.RESULT_PREFIX + ODD_TEXT.encode() + wire.RESULT_SUFFIX)
    ending = Ending(True, result["result"], None, "completed", 0, None, 0.1, 0.0, 0.0, 1 << 20)
    now = datetime.now(UTC).replace(tzinfo=None)
    attempt = Attempt(job_id=job.id, attempt=job.claim_seq, outcome="completed", started_at=now)
    recorder = Recorder(manager.port, lambda: None)
    recorder.add(Record(job, ending, attempt))
    recorder.settle(WORKER, 0)
    assert manager.get_job(job.id).result == json.loads(ODD_TEXT)
    with manager.transaction() as conn:
        stored = conn.execute(
            text("SELECT CAST(result AS TEXT) FROM taiat_job_history WHERE job_id = :id"),
            {"id": job.id},
        ).scalar_one()
    if manager.engine.dialect.name == "sqlite":
        assert stored == ODD_TEXT  # the very text the child sent
    else:  # JSONB keeps the value, in its own layout
        assert json.loads(stored) == json.loads(ODD_TEXT)
