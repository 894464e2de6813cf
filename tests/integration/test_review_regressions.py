"""Edge cases that once went wrong: NUL characters, mixed run_at, lists after retries,
concurrent finishes sharing dependents, and cleanup arguments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from support import race

from taiat import JobManager, JobStatus, JobType
from taiat.errors import DuplicateJob, InvalidJob


def test_nul_characters_are_refused_or_escaped(manager: JobManager) -> None:
    with pytest.raises(InvalidJob, match="NUL"):
        manager.create_job(JobType.AGENT, "x", payload={"s": "a\x00b"})
    with pytest.raises(InvalidJob, match="NUL"):
        manager.create_job(JobType.AGENT, "a\x00b")
    job = manager.create_job(JobType.AGENT, "x", payload={"s": "a\\u0000 is fine"}, max_retries=0)
    assert manager.get_job(job.id).payload == {"s": "a\\u0000 is fine"}
    [claimed] = manager.claim_jobs("w", 1)
    with pytest.raises(InvalidJob, match="NUL"):
        manager.complete_job(job.id, claimed.claim_seq, {"s": "\x00"})
    assert manager.fail_job(job.id, claimed.claim_seq, "bad\x00byte") is JobStatus.FAILED
    assert manager.get_job(job.id).error_message == "bad\\0byte"


def test_run_at_given_for_some_items_only(manager: JobManager) -> None:
    later = datetime.now(UTC) + timedelta(days=1)
    for order in ([None, later], [later, None]):
        jobs = manager.create_jobs(
            [{"job_type": "agent", "name": str(at), "run_at": at} for at in order]
        )
        ready = {job.id for job in manager.get_ready_jobs()}
        for job, at in zip(jobs, order, strict=True):
            assert (job.id in ready) is (at is None)
        for job in jobs:
            manager.cancel_job(job.id)


def test_list_and_count_show_each_job_once(manager: JobManager) -> None:
    job = manager.create_job(JobType.AGENT, "a", max_retries=0)
    [claimed] = manager.claim_jobs("w", 1)
    manager.fail_job(job.id, claimed.claim_seq, "boom")
    manager.retry_job(job.id)
    assert [j.status for j in manager.list_jobs()] == [JobStatus.PENDING]
    assert manager.list_jobs(status="failed") == []
    assert manager.count_jobs() == {"pending": 1}
    [claimed] = manager.claim_jobs("w", 1)
    manager.complete_job(job.id, claimed.claim_seq, 1)
    assert [j.status for j in manager.list_jobs()] == [JobStatus.COMPLETED]
    assert manager.count_jobs() == {"completed": 1}
    assert len(manager.get_job_history()) == 2  # the history itself keeps both


def test_list_jobs_is_most_recently_changed_first(manager: JobManager) -> None:
    a, b, c = (manager.create_job(JobType.AGENT, name) for name in "abc")
    [first] = manager.claim_jobs("w", 1)
    assert first.id == a.id
    everything = [j.id for j in manager.list_jobs(limit=3)]
    assert everything[0] == a.id and set(everything) == {a.id, b.id, c.id}
    assert [j.id for j in manager.list_jobs(limit=2)] == everything[:2]


def test_cleanup_rejects_nonsense(manager: JobManager) -> None:
    job = manager.create_job(JobType.AGENT, "a")
    manager.cancel_job(job.id)
    for days in (float("nan"), float("inf"), -1, 1e12, "30"):
        with pytest.raises(InvalidJob, match="days"):
            manager.cleanup_old_history(days=days)
    assert len(manager.get_job_history()) == 1


def test_completed_dependency_id_reused_later_does_not_count_twice(manager: JobManager) -> None:
    dep = manager.create_job(JobType.AGENT, "dep", id="reused")
    other = manager.create_job(JobType.AGENT, "other")
    waiting = manager.create_job(JobType.AGENT, "waiting", dependencies=[dep.id, other.id])
    [claimed] = manager.claim_jobs("w", 1)
    manager.complete_job(dep.id, claimed.claim_seq)
    manager.cleanup_old_history(days=0)
    manager.create_job(JobType.AGENT, "impostor", id="reused")  # the id is free again
    [claimed] = [j for j in manager.claim_jobs("w", 2) if j.id == "reused"]
    manager.complete_job("reused", claimed.claim_seq)
    assert manager.get_job(waiting.id).unmet_dependencies == 1


def test_concurrent_finishes_sharing_dependents(pg_manager: JobManager) -> None:
    """A completion and a failure whose dependents overlap must both go through."""
    manager = pg_manager
    for _ in range(5):
        d = manager.create_job(JobType.AGENT, "d")
        x = manager.create_job(JobType.AGENT, "x", max_retries=0)
        manager.create_jobs(
            [
                {"job_type": "agent", "name": f"s{i}", "dependencies": [d.id, x.id]}
                for i in range(100)
            ]
        )
        claims = {j.id: j for j in manager.claim_jobs("w", 2)}
        race(
            lambda: manager.complete_job(d.id, claims[d.id].claim_seq),  # noqa: B023
            lambda: manager.fail_job(x.id, claims[x.id].claim_seq, "boom"),  # noqa: B023
        )
        assert manager.count_jobs().get("pending", 0) == 0


def test_same_id_created_concurrently(pg_manager: JobManager) -> None:
    manager = pg_manager

    def create() -> object:
        try:
            return manager.create_job(JobType.AGENT, "x", id="same")
        except DuplicateJob as exc:
            return exc

    outcomes = race(create, create, create, create)
    assert sum(1 for o in outcomes if isinstance(o, DuplicateJob)) == 3
