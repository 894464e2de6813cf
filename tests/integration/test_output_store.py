"""The output of attempts in the store, on PostgreSQL and SQLite: written with the attempt at
its end, in place of what its supervisor wrote of it while it ran; its bytes kept exactly;
none for an attempt that wrote nothing; deleted with its history; and the table made by the
upgrade of a database of an older version."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, insert, inspect, text

from taiat import JobManager
from taiat.errors import SchemaVersionMismatch
from taiat.jobs import Attempt, AttemptOutput, Job, Outcome
from taiat.store import db, schema

WORKER = "here:1:test"


def _claimed(manager: JobManager, name: str = "writes") -> Job:
    manager.create_job("agent", name)
    [job] = manager.claim_jobs(WORKER, 1)
    return job


def _attempt(job: Job, output: AttemptOutput | None, outcome: Outcome) -> Attempt:
    now = datetime.now(UTC).replace(tzinfo=None)
    return Attempt(
        job_id=job.id,
        attempt=job.claim_seq,
        worker_id=WORKER,
        outcome=outcome,
        started_at=now,
        ended_at=now,
        output=output,
    )


def _output(job: Job, stdout: bytes, stderr: bytes = b"", dropped: int = 0) -> AttemptOutput:
    return AttemptOutput(job.id, job.claim_seq, stdout, dropped, stderr, 0)


def test_an_attempts_output_is_kept_with_it_byte_for_byte(manager: JobManager) -> None:
    job = _claimed(manager)
    odd = b"nul \x00, not UTF-8 \xff\xfe, a lone half \xed\xa0\x80\n"
    written = _output(job, b"x" * 10 + odd, b"careful\n", dropped=1 << 40)
    assert manager.complete_job(job.id, job.claim_seq, "done", _attempt(job, written, "completed"))
    [attempt] = manager.get_attempts(job.id)
    kept = attempt.output
    assert kept is not None and kept.final and kept.updated_at is not None
    assert kept.stdout_tail == b"x" * 10 + odd and kept.stdout_dropped_bytes == 1 << 40
    assert kept.stderr_tail == b"careful\n" and kept.stderr_dropped_bytes == 0
    assert manager.get_output(job.id) == [kept]
    # History listings carry the attempts without their output.
    [entry] = manager.get_job_history()
    assert entry.attempts[0].output is None


def test_an_attempt_that_wrote_nothing_has_no_output(manager: JobManager) -> None:
    job = _claimed(manager)
    manager.complete_job(job.id, job.claim_seq, None, _attempt(job, None, "completed"))
    other = _claimed(manager, "empty")
    manager.complete_job(
        other.id, other.claim_seq, None, _attempt(other, _output(other, b""), "completed")
    )
    assert manager.get_output(job.id) == [] and manager.get_output(other.id) == []
    assert [a.output for a in manager.get_attempts(job.id)] == [None]


def test_the_output_of_a_running_attempt_is_replaced_as_it_grows_and_at_its_end(
    manager: JobManager,
) -> None:
    job = _claimed(manager)
    port = manager.port
    port.save_output([_output(job, b"first\n")])
    [live] = manager.get_output(job.id)
    assert live.stdout_tail == b"first\n" and not live.final
    assert manager.get_attempts(job.id) == []  # still running: no attempt yet
    port.save_output([_output(job, b"first\nsecond\n", b"warn\n")])
    [grown] = manager.get_output(job.id, job.claim_seq)
    assert grown.stdout_tail == b"first\nsecond\n" and grown.stderr_tail == b"warn\n"
    assert grown.updated_at >= live.updated_at

    ended = _output(job, b"second\nthird\n", b"warn\n", dropped=6)
    status = manager.fail_job(job.id, job.claim_seq, "no", _attempt(job, ended, "failed"))
    assert status is not None
    [attempt] = manager.get_attempts(job.id)
    assert attempt.output is not None and attempt.output.final
    assert attempt.output.stdout_tail == b"second\nthird\n"
    assert attempt.output.stdout_dropped_bytes == 6
    # Written once more (a retry after a commit that was lost): the same, no error.
    manager.record_attempt(_attempt(job, ended, "failed"))
    [again] = manager.get_output(job.id)
    assert replace(again, updated_at=None) == replace(attempt.output, updated_at=None)


def test_an_attempt_ended_without_its_output_keeps_what_was_written_as_it_ran(
    manager: JobManager,
) -> None:
    """Its supervisor was lost: the attempt its peer records has no output; the output as it
    stood at the last write stays the attempt's."""
    job = _claimed(manager)
    manager.port.save_output([_output(job, b"last words\n")])
    manager.fail_job(job.id, job.claim_seq, "supervisor lost", _attempt(job, None, "lost"))
    [attempt] = manager.get_attempts(job.id)
    assert attempt.output is not None and not attempt.output.final
    assert attempt.output.stdout_tail == b"last words\n"


def test_a_second_attempt_has_output_of_its_own(manager: JobManager) -> None:
    job = _claimed(manager)
    manager.fail_job(job.id, job.claim_seq, "no", _attempt(job, _output(job, b"one\n"), "failed"))
    [again] = manager.claim_jobs(WORKER, 1)
    assert again.id == job.id and again.claim_seq > job.claim_seq
    manager.complete_job(
        again.id, again.claim_seq, 1, _attempt(again, _output(again, b"two\n"), "completed")
    )
    outputs = [a.output.stdout_tail for a in manager.get_attempts(job.id) if a.output]
    assert outputs == [b"one\n", b"two\n"]
    [second] = manager.get_output(job.id, again.claim_seq)
    assert second.stdout_tail == b"two\n"


def test_output_goes_with_the_history_it_belongs_to(manager: JobManager) -> None:
    job = _claimed(manager)
    manager.complete_job(
        job.id, job.claim_seq, None, _attempt(job, _output(job, b"old\n"), "completed")
    )
    kept = _claimed(manager, "recent")
    manager.complete_job(
        kept.id, kept.claim_seq, None, _attempt(kept, _output(kept, b"new\n"), "completed")
    )
    with manager.engine.begin() as conn:  # the first one finished long ago
        for table in (schema.history, schema.attempts, schema.output):
            column = {"taiat_job_history": "completed_at", "taiat_job_attempts": "ended_at"}
            name = column.get(table.name, "updated_at")
            conn.execute(
                table.update().where(table.c.job_id == job.id).values({name: datetime(2000, 1, 1)})
            )
    assert manager.cleanup_old_history(days=30) == 1
    assert manager.get_output(job.id) == []
    assert [o.stdout_tail for o in manager.get_output(kept.id)] == [b"new\n"]


def test_a_version_2_database_is_upgraded_to_keep_output(database_url: str) -> None:
    engine = db.engine_from_url(database_url)
    with engine.begin() as conn:  # as version 2 had it: no output table
        conn.execute(text(f"DROP TABLE {schema.output.name}"))
        conn.execute(delete(schema.schema_version))
        conn.execute(insert(schema.schema_version).values(version=2))
    with pytest.raises(SchemaVersionMismatch, match="older than this release"):
        JobManager(engine).get_job("x")
    assert schema.initialise(engine) == (2, schema.SCHEMA_VERSION)
    with engine.connect() as conn:
        assert inspect(conn).has_table(schema.output.name)
    manager = JobManager(engine)
    job = _claimed(manager)
    manager.complete_job(
        job.id, job.claim_seq, None, _attempt(job, _output(job, b"after\n"), "completed")
    )
    assert [o.stdout_tail for o in manager.get_output(job.id)] == [b"after\n"]
    engine.dispose()
