"""An ending is always recorded. Text from a job is made valid on its way to the database; a
write the database refuses for anything but an outage leaves a plain ending that says why, and
a success refused among others fails alone, the others and the claim made with them kept."""

from __future__ import annotations

import math
import os
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from taiat import JobManager, JobStatus
from taiat.forking.job_process import Ending
from taiat.jobs import Attempt, Job
from taiat.supervisor.recorder import Record, Recorder

WORKER = "test-worker"
UNDECODABLE = os.fsdecode(b"report-\xff.txt")  # as os.listdir gives it: a lone surrogate


def claimed(manager: JobManager, count: int, max_retries: int = 0) -> list[Job]:
    for index in range(count):
        manager.create_job("agent", f"job {index}", max_retries=max_retries, priority=-index)
    jobs = manager.claim_jobs(WORKER, count)
    assert len(jobs) == count
    return jobs


def record(job: Job, ok: bool, result: Any = None, error: str | None = None) -> Record:
    cause = "completed" if ok else "failed"
    ending = Ending(ok, result, error, cause, 0, None, 0.5, 0.1, 0.0, 1 << 20)
    attempt = Attempt(
        job_id=job.id,
        attempt=job.claim_seq,
        worker_id=WORKER,
        host="here",
        pid=4242,
        outcome=cause,
        error_message=error,
        started_at=datetime.now(UTC).replace(tzinfo=None),
        ended_at=datetime.now(UTC).replace(tzinfo=None),
        wall_seconds=0.5,
        exit_code=0,
    )
    return Record(job, ending, attempt)


def test_an_error_from_a_job_is_recorded_with_its_text_made_valid(manager: JobManager) -> None:
    [job] = claimed(manager, 1)
    recorder = Recorder(manager.port, lambda: None)
    recorder.add(record(job, False, error=f"ValueError: bad file name {UNDECODABLE}\x00"))
    assert recorder.settle(WORKER, 0).jobs == []
    after = manager.get_job(job.id)
    assert after.status is JobStatus.FAILED
    assert after.error_message == "ValueError: bad file name report-\\udcff.txt\\0"
    [attempt] = manager.get_attempts(job.id)
    assert attempt.error_message == after.error_message and attempt.outcome == "failed"


def test_a_result_from_a_job_is_stored_with_its_text_made_valid(manager: JobManager) -> None:
    [job] = claimed(manager, 1)
    recorder = Recorder(manager.port, lambda: None)
    recorder.add(record(job, True, {UNDECODABLE: [UNDECODABLE, "nul\x00"]}))
    recorder.settle(WORKER, 0)
    after = manager.get_job(job.id)
    assert after.status is JobStatus.COMPLETED
    assert after.result == {"report-\\udcff.txt": ["report-\\udcff.txt", "nul\\0"]}


def test_a_failure_the_database_refuses_is_recorded_plainly_not_lost(manager: JobManager) -> None:
    [job] = claimed(manager, 1)
    recorder = Recorder(manager.port, lambda: None)
    # A value no column takes stands for any write the database refuses.
    refused = record(job, False, error="boom")
    recorder.add(replace(refused, attempt=replace(refused.attempt, pid=2**70)))
    assert recorder.settle(WORKER, 0).jobs == []
    assert recorder.ok and not recorder.pending
    after = manager.get_job(job.id)
    assert after.status is JobStatus.FAILED  # its one try spent: not run again and again
    assert after.error_message.startswith("its ending could not be stored: ")
    assert manager.get_attempts(job.id) == []  # the attempt itself was what it refused


def test_a_success_refused_among_others_fails_alone(manager: JobManager) -> None:
    good, bad, also_good = claimed(manager, 3, max_retries=1)
    waiting = manager.create_job("agent", "next")
    recorder = Recorder(manager.port, lambda: None)
    recorder.add(record(good, True, {"n": 1}))
    recorder.pending.append(record(bad, True, [math.nan]))  # past `add`: refused
    recorder.add(record(also_good, True, {"n": 3}))

    [next_job] = recorder.settle(WORKER, 1).jobs  # the claim made with them is made all the same
    assert next_job.id == waiting.id
    assert not recorder.pending
    assert manager.get_job(good.id).result == {"n": 1}
    assert manager.get_job(also_good.id).result == {"n": 3}
    after = manager.get_job(bad.id)
    assert after.status is JobStatus.PENDING and after.retry_count == 1  # a failed attempt
    assert after.error_message.startswith("its result could not be stored: ")
    [attempt] = manager.get_attempts(bad.id)
    assert attempt.outcome == "failed" and attempt.error_message == after.error_message
