"""Large results (over `wire.LARGE_MESSAGE`): kept in a file as they come off the pipe, judged
there, and stored by a process of their own under the claim check; a refused one becomes a
failed attempt with words, a stale claim writes nothing, and through an outage the file waits.

The pipe is a real pipe, fed by a thread as a child would feed it; the helper is a real fork."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
from support import no_free_descriptor, poll

from taiat import JobManager, JobStatus
from taiat.forking import wire
from taiat.forking.job_process import Ending, JobProcess
from taiat.forking.spool import Spool
from taiat.jobs import Attempt, Job, JobType
from taiat.store import queries
from taiat.supervisor.large_results import Stored
from taiat.supervisor.recorder import Record, Recorder, storable

if TYPE_CHECKING:
    from private_postgres import PrivateCluster

WORKER = "test-worker"
#: A result whose message is over the threshold, as JSON text.
LARGE_TEXT = json.dumps({"rows": ["y" * 1000] * 3000, "note": "\u00e9\u4e2d\U0001f600"})


def fed(message: bytes) -> tuple[JobProcess, int]:
    """A job process whose pipe carries `message` (framed) from a writer thread, read until
    the message is in or the pipe has ended; and how many turns of the loop that took."""
    proc = JobProcess(
        _job(), timeout=None, memory_limit_bytes=None, max_result_bytes=64 << 20, exit_grace=5.0
    )
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    proc.fd = read_fd

    def write() -> None:
        try:
            view = memoryview(wire.HEADER.pack(len(message)) + message)
            while view:
                view = view[os.write(write_fd, view) :]
        except BrokenPipeError:
            pass  # the reader let go: it judged the message from its beginning
        finally:
            os.close(write_fd)

    writer = threading.Thread(target=write)
    writer.start()
    turns = 0

    def read() -> bool:
        nonlocal turns
        turns += 1
        proc.read_available()
        return proc.fd < 0

    poll(read, 30, "the message read")
    writer.join(30)
    return proc, turns


def _job() -> Job:
    return Job(id="j1", job_type=JobType.AGENT, name="large", status=JobStatus.RUNNING)


def test_a_large_result_is_kept_in_a_file_as_its_json_text() -> None:
    proc, _turns = fed(wire.RESULT_PREFIX + LARGE_TEXT.encode() + wire.RESULT_SUFFIX)
    assert proc.delivered
    spool = proc._message["result"]  # type: ignore[index]
    assert isinstance(spool, Spool)
    assert spool.read() == LARGE_TEXT.encode()
    spool.close()


def test_a_large_result_is_read_over_several_turns_of_the_loop() -> None:
    text = json.dumps("z" * (20 << 20)).encode()
    proc, turns = fed(wire.RESULT_PREFIX + text + wire.RESULT_SUFFIX)
    assert proc.delivered
    assert turns >= 3  # at most 8 MiB, and the read under way, a turn
    spool = proc._message["result"]  # type: ignore[index]
    assert spool.size == len(text) and spool.read() == text
    spool.close()


@pytest.mark.parametrize(
    ("message", "words"),
    [
        # A message over the threshold must be a success's result and nothing else.
        (b'{"ok": false, "error": "' + b"e" * (2 << 20) + b'"}', "that is not a result"),
        # The result's end is not where the length says.
        (wire.RESULT_PREFIX + b"[" + b"1," * (1 << 20) + b"1]]", "malformed result"),
    ],
    ids=["an error", "not closed"],
)
def test_a_large_message_that_is_not_a_result_is_refused(message: bytes, words: str) -> None:
    proc, _turns = fed(message)
    verdict = proc._verdict or (False, str((proc._message or {}).get("error")))
    assert words in verdict[1]
    assert proc._spool is None


# -- storing -------------------------------------------------------------------------------


@pytest.fixture
def claimed(manager: JobManager) -> Iterator[Job]:
    manager.create_job("agent", "large", payload={"agent_name": "huge"}, max_retries=0)
    [job] = manager.claim_jobs(WORKER, 1)
    yield job


def spooled(text: bytes) -> Spool:
    spool = Spool()
    spool.write(text)
    return spool


def record(job: Job, spool: Spool) -> Record:
    now = datetime.now(UTC).replace(tzinfo=None)
    ending = Ending(True, spool, None, "completed", 0, None, 0.5, 0.1, 0.1, 1 << 20)
    attempt = Attempt(
        job.id, job.claim_seq, WORKER, "host", 1, "completed", None, now, now, 0.5, 0.1, 0.1
    )
    return Record(job, ending, attempt)


def stored(recorder: Recorder) -> Stored:
    """Drive the recorder as the loop does until the storing process has said how it went."""
    recorder.settle(WORKER, 0)
    found: list[Stored] = []
    poll(lambda: found.extend(recorder.store()) or found, 60, "the result stored")
    return found[0]


def test_a_large_result_is_stored_by_a_process_of_its_own(
    manager: JobManager, claimed: Job
) -> None:
    recorder = Recorder(manager.port, lambda: None)
    recorder.add(record(claimed, spooled(LARGE_TEXT.encode())))
    assert stored(recorder).outcome == "done"
    assert recorder.unwritten == []
    done = manager.get_job(claimed.id)
    assert done is not None and done.status is JobStatus.COMPLETED
    assert done.result == json.loads(LARGE_TEXT)
    [attempt] = manager.get_attempts(claimed.id)
    assert attempt.outcome == "completed" and attempt.worker_id == WORKER


def test_a_large_result_that_is_not_json_fails_its_job_with_words(
    manager: JobManager, claimed: Job
) -> None:
    recorder = Recorder(manager.port, lambda: None)
    recorder.add(record(claimed, spooled(b'["not", "closed"')))
    outcome = stored(recorder)
    assert outcome.outcome == "refused"
    assert outcome.words == "the child sent a malformed result"
    recorder.settle(WORKER, 0)  # the failure, written as any other
    failed = manager.get_job(claimed.id)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error_message == "the child sent a malformed result"
    [attempt] = manager.get_attempts(claimed.id)
    assert attempt.outcome == "failed"


def _deep(levels: int) -> list:
    value: list = ["y" * (2 << 20)]
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(_deep(500)).encode(),  # ordinary job code's, too deep to store
        b'[NaN, "' + b"y" * (2 << 20) + b'"]',  # valid to Python's json, not to JSON
        b'[1e999, "' + b"y" * (2 << 20) + b'"]',
    ],
    ids=["too deep", "NaN", "infinite"],
)
def test_a_large_result_that_cannot_be_stored_fails_in_the_words_a_small_one_would(
    manager: JobManager, claimed: Job, text: bytes
) -> None:
    """Valid JSON text that no database should store is not "malformed": its job fails with
    the words its result would get were it small (`recorder.storable`)."""
    shape = record(claimed, spooled(b""))
    shape.ending.result.close()
    small = replace(shape, ending=replace(shape.ending, result=json.loads(text)))
    words = storable(small).ending.error
    assert words is not None and words.startswith("its result could not be stored: it ")
    recorder = Recorder(manager.port, lambda: None)
    recorder.add(record(claimed, spooled(text)))
    outcome = stored(recorder)
    assert (outcome.outcome, outcome.words) == ("refused", words)
    recorder.settle(WORKER, 0)
    failed = manager.get_job(claimed.id)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error_message == words


def test_a_stale_claim_cannot_store_its_large_result(manager: JobManager, claimed: Job) -> None:
    assert manager.requeue_job(claimed.id, claimed.claim_seq)  # taken back meanwhile
    recorder = Recorder(manager.port, lambda: None)
    recorder.add(record(claimed, spooled(LARGE_TEXT.encode())))
    assert stored(recorder).outcome == "stale"
    job = manager.get_job(claimed.id)
    assert job is not None and job.status is JobStatus.PENDING and job.result is None


def test_a_storing_process_that_dies_is_tried_again_then_its_job_fails_in_words(
    manager: JobManager, claimed: Job
) -> None:
    recorder = Recorder(manager.port, lambda: None)
    recorder.add(record(claimed, spooled(LARGE_TEXT.encode())))
    recorder.settle(WORKER, 0)  # to the storer (no write of its own)
    found: list[Stored] = []
    with manager.transaction() as conn:
        # The job's row is locked (on SQLite, the whole database): no helper can commit.
        assert queries.lock_running(conn, claimed.id, claimed.claim_seq) is not None
        for _ in range(3):
            recorder.store()
            helper = recorder.storer._pid
            assert recorder.storer.busy
            os.kill(helper, signal.SIGKILL)

            def ended(helper: int = helper) -> bool:
                found.extend(recorder.store())
                return bool(found) or recorder.storer._pid != helper  # or another one started

            poll(ended, 30, "the helper's end seen")
    assert [s.outcome for s in found] == ["refused"]
    words = "its result could not be stored: the process storing it ended without a word"
    assert found[0].words == words
    recorder.settle(WORKER, 0)
    failed = manager.get_job(claimed.id)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error_message == words


def test_through_an_outage_a_large_result_waits_in_its_file(
    private_pg: PrivateCluster, private_pg_url: str
) -> None:
    manager = JobManager(private_pg_url)
    manager.create_job("agent", "large", payload={"agent_name": "huge"})
    [job] = manager.claim_jobs(WORKER, 1)
    recorder = Recorder(manager.port, lambda: None)
    recorder.add(record(job, spooled(LARGE_TEXT.encode())))
    private_pg.stop()
    try:
        assert stored(recorder).outcome == "outage"
        assert not recorder.ok and recorder.retry_at is not None
        assert [r.job.id for r in recorder.unwritten] == [job.id]  # still claimed here
    finally:
        private_pg.start()
    found: list[Stored] = []
    poll(lambda: found.extend(recorder.store()) or found, 60, "the result stored after the outage")
    assert found[0].outcome == "done" and recorder.ok
    done = manager.get_job(job.id)
    assert done is not None and done.status is JobStatus.COMPLETED
    assert done.result == json.loads(LARGE_TEXT)
    manager.engine.dispose()


def test_a_large_result_waits_while_no_process_can_be_forked_to_store_it(
    manager: JobManager, claimed: Job
) -> None:
    recorder = Recorder(manager.port, lambda: None)
    recorder.add(record(claimed, spooled(LARGE_TEXT.encode())))
    recorder.settle(WORKER, 0)  # to the storer
    with no_free_descriptor():
        assert recorder.store() == []  # not the supervisor's end, nor the job's
    assert not recorder.storer.busy
    assert [r.job.id for r in recorder.unwritten] == [claimed.id]  # still claimed here
    assert recorder.retry_at is not None  # the loop wakes to try again
    found: list[Stored] = []
    poll(lambda: found.extend(recorder.store()) or found, 60, "the result stored at last")
    assert found[0].outcome == "done"
    done = manager.get_job(claimed.id)
    assert done is not None and done.status is JobStatus.COMPLETED
    assert done.result == json.loads(LARGE_TEXT)
