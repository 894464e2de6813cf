"""The job store through the public API, on PostgreSQL and SQLite."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from taiat import JobManager, JobStatus, JobType
from taiat.errors import InvalidDependency, InvalidJob, InvalidTransition, JobNotFound
from taiat.jobs import Attempt
from taiat.store import queries, state_machine
from taiat.store.schema import jobs, utcnow
from taiat.store.state_machine import Completion, RetryPolicy


def finish(manager: JobManager, job_id: str, result: object = None) -> None:
    """Claim exactly this job (it must be the only ready one) and complete it."""
    [job] = manager.claim_jobs("test-worker", 1)
    assert job.id == job_id
    assert manager.complete_job(job.id, job.claim_seq, result)


def fail_for_good(manager: JobManager, job_id: str, error: str = "boom") -> None:
    while True:
        [job] = manager.claim_jobs("test-worker", 1)
        assert job.id == job_id
        if manager.fail_job(job.id, job.claim_seq, error) is JobStatus.FAILED:
            return


def test_create_and_get(manager: JobManager) -> None:
    job = manager.create_job(
        JobType.AGENT, "a", "desc", {"k": [1, 2]}, max_retries=5, priority=7, timeout_seconds=2.5
    )
    got = manager.get_job(job.id)
    assert got == job
    assert (got.name, got.description, got.payload) == ("a", "desc", {"k": [1, 2]})
    assert (got.max_retries, got.priority, got.timeout_seconds) == (5, 7, 2.5)
    assert got.status is JobStatus.PENDING and got.retry_count == 0
    assert got.created_at is not None and got.run_at is not None
    assert manager.get_job("no-such-id") is None


def test_completed_job_comes_back_from_history(manager: JobManager) -> None:
    job = manager.create_job(JobType.AGENT, "a")
    finish(manager, job.id, {"answer": 42})
    got = manager.get_job(job.id)
    assert got.status is JobStatus.COMPLETED
    assert got.result == {"answer": 42}
    assert got.completed_at >= got.started_at
    [entry] = manager.get_job_history()
    assert entry.job_id == job.id and entry.id != job.id
    assert entry.status is JobStatus.COMPLETED and entry.result == {"answer": 42}
    assert entry.duration_seconds == 0
    assert manager.list_jobs(status="pending") == []


def test_a_completion_writes_the_entry_that_history_entry_builds(manager: JobManager) -> None:
    """On PostgreSQL a success moves to history in one statement on the server; its entry is
    the one `state_machine.history_entry` builds from the job's row (which SQLite writes)."""
    parent = manager.create_job(JobType.AGENT, "parent")
    job = manager.create_job(
        JobType.AGENT,
        "n",
        "what it does",
        {"agent_name": "x", "deep": {"list": [1, 2.5, None]}},
        dependencies=[parent.id],
        max_retries=4,
        priority=3,
        timeout_seconds=7.5,
    )
    finish(manager, parent.id)
    [first] = manager.claim_jobs("first-worker", 1)
    assert manager.fail_job(job.id, first.claim_seq, "once") is JobStatus.PENDING
    with manager.transaction() as conn:  # due now: no waiting out the retry's backoff
        conn.execute(jobs.update().values(run_at=utcnow()))
    [claimed] = manager.claim_jobs("second-worker", 1)
    with manager.transaction() as conn:  # started 1.7 s ago: a duration of 1 s, not 2
        conn.execute(jobs.update().where(jobs.c.id == job.id).values(started_at=utcnow(-1.7)))
        row = dict(queries.get_active(conn, job.id))
    result = {"answer": [42, "forty-two"], "nested": {"ok": True}}
    assert manager.complete_job(job.id, claimed.claim_seq, result)
    with manager.transaction() as conn:
        stored = dict(queries.latest_history(conn, job.id))
    assert row["error_message"] == "once" and row["retry_count"] == 1
    expected = state_machine.history_entry(
        row, JobStatus.COMPLETED, stored["completed_at"], result=result
    )
    assert stored.keys() == expected.keys()
    assert stored["id"] != job.id
    assert {k: v for k, v in stored.items() if k != "id"} == {
        k: v for k, v in expected.items() if k != "id"
    }
    assert stored["duration_seconds"] == 1


def test_one_batch_of_completions_records_the_current_claims_only(manager: JobManager) -> None:
    """Current, stale and repeated claims in one batch; results of every JSON kind, None too."""
    made = [manager.create_job(JobType.AGENT, f"j{i}") for i in range(5)]
    claimed = {job.id: job for job in manager.claim_jobs("w", 5)}
    a, b, c, d, e = (claimed[job.id] for job in made)
    manager.cancel_job(e.id)  # no longer running: its claim is not current
    completions = [
        Completion(a.id, a.claim_seq, None),
        Completion(b.id, b.claim_seq, "text"),
        Completion(c.id, c.claim_seq + 1, {"stale": True}),
        Completion(d.id, d.claim_seq, [1, 2]),
        Completion(d.id, d.claim_seq, [3]),  # the same claim again: the last result counts
        Completion(e.id, e.claim_seq, 5),
    ]
    done, claimed_now = manager.complete_and_claim(completions, "w", 1)
    assert done == {a.id, b.id, d.id}
    assert claimed_now == []  # c is still running, under its current claim
    assert manager.get_job(a.id).result is None
    assert manager.get_job(b.id).result == "text"
    assert manager.get_job(d.id).result == [3]
    assert manager.get_job(c.id).status is JobStatus.RUNNING
    assert manager.get_job(e.id).status is JobStatus.CANCELLED
    assert len(manager.get_job_history(status="completed")) == 3


def test_chain_runs_in_order(manager: JobManager) -> None:
    a = manager.create_job(JobType.AGENT, "a")
    b = manager.create_job(JobType.AGENT, "b", dependencies=[a.id])
    c = manager.create_job(JobType.AGENT, "c", dependencies=[b.id])
    assert [j.id for j in manager.get_ready_jobs()] == [a.id]
    assert (b.unmet_dependencies, c.unmet_dependencies) == (1, 1)
    finish(manager, a.id)
    assert [j.id for j in manager.get_ready_jobs()] == [b.id]
    finish(manager, b.id)
    finish(manager, c.id)
    assert [e.name for e in manager.get_job_history()] == ["c", "b", "a"]


def test_diamond_waits_for_both_branches(manager: JobManager) -> None:
    top = manager.create_job(JobType.AGENT, "top")
    left = manager.create_job(JobType.AGENT, "left", dependencies=[top.id])
    right = manager.create_job(JobType.AGENT, "right", dependencies=[top.id])
    bottom = manager.create_job(JobType.AGENT, "bottom", dependencies=[left.id, right.id])
    assert bottom.unmet_dependencies == 2
    finish(manager, top.id)
    claimed = manager.claim_jobs("w", 5)
    assert {j.id for j in claimed} == {left.id, right.id}
    by_id = {j.id: j for j in claimed}
    assert manager.complete_job(left.id, by_id[left.id].claim_seq)
    assert manager.get_ready_jobs() == []
    assert manager.complete_job(right.id, by_id[right.id].claim_seq)
    assert [j.id for j in manager.get_ready_jobs()] == [bottom.id]


def test_completed_dependency_counts_as_met(manager: JobManager) -> None:
    a = manager.create_job(JobType.AGENT, "a")
    finish(manager, a.id)
    b = manager.create_job(JobType.AGENT, "b", dependencies=[a.id, a.id])
    assert b.unmet_dependencies == 0
    assert b.dependencies == [a.id]
    assert [j.id for j in manager.get_ready_jobs()] == [b.id]


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


def test_create_jobs_builds_a_dag_in_one_go(manager: JobManager) -> None:
    jobs = manager.create_jobs(
        [
            {"id": "fetch", "job_type": JobType.AGENT, "name": "fetch"},
            {"id": "clean", "job_type": "agent", "name": "clean", "dependencies": ["fetch"]},
            {"id": "plot", "job_type": "agent", "name": "plot", "dependencies": ["clean"]},
            {"id": "stats", "job_type": "agent", "name": "stats", "dependencies": ["clean"]},
            {
                "job_type": "query",
                "name": "report",
                "payload": {"inferred_goal_output": "report"},
                "dependencies": ["plot", "stats"],
                "priority": 3,
                "max_retries": 0,
            },
        ]
    )
    assert [j.name for j in jobs] == ["fetch", "clean", "plot", "stats", "report"]
    assert [j.unmet_dependencies for j in jobs] == [0, 1, 1, 1, 2]
    assert jobs[4].priority == 3 and jobs[4].max_retries == 0
    for name in ["fetch", "clean"]:
        finish(manager, name)
    assert {j.id for j in manager.get_ready_jobs()} == {"plot", "stats"}


def test_retries_then_fails_for_good(manager: JobManager) -> None:
    job = manager.create_job(JobType.AGENT, "flaky", max_retries=2)
    outcomes = []
    for _ in range(3):
        [claimed] = manager.claim_jobs("w", 1)
        assert claimed.attempt == len(outcomes) + 1
        outcomes.append(manager.fail_job(claimed.id, claimed.claim_seq, f"try {len(outcomes)}"))
    assert outcomes == [JobStatus.PENDING, JobStatus.PENDING, JobStatus.FAILED]
    got = manager.get_job(job.id)
    assert got.status is JobStatus.FAILED and got.error_message == "try 2"
    assert got.retry_count == 2
    assert manager.claim_jobs("w", 1) == []


def test_retry_waits_out_its_backoff(database_url: str) -> None:
    from taiat.store.state_machine import RetryPolicy

    manager = JobManager(database_url, retry_policy=RetryPolicy(base_delay=3600, max_delay=7200))
    job = manager.create_job(JobType.AGENT, "later")
    [claimed] = manager.claim_jobs("w", 1)
    assert manager.fail_job(job.id, claimed.claim_seq, "x") is JobStatus.PENDING
    waiting = manager.get_job(job.id)
    delay = waiting.run_at - datetime.now(UTC).replace(tzinfo=None)
    assert timedelta(minutes=29) < delay <= timedelta(hours=1, seconds=5)
    assert manager.get_ready_jobs() == [] and manager.claim_jobs("w", 1) == []
    assert manager.pending_count() == 1
    manager.engine.dispose()


def test_fail_without_retry_is_final(manager: JobManager) -> None:
    job = manager.create_job(JobType.AGENT, "once", max_retries=5)
    [claimed] = manager.claim_jobs("w", 1)
    assert manager.fail_job(job.id, claimed.claim_seq, "fatal", retry=False) is JobStatus.FAILED


def test_requeue_spends_no_attempt(manager: JobManager) -> None:
    job = manager.create_job(JobType.AGENT, "cut short")
    [claimed] = manager.claim_jobs("w", 1)
    assert manager.requeue_job(job.id, claimed.claim_seq)
    again = manager.get_job(job.id)
    assert again.status is JobStatus.PENDING and again.retry_count == 0
    assert again.worker_id is None
    [reclaimed] = manager.claim_jobs("w2", 1)
    assert reclaimed.claim_seq == claimed.claim_seq + 1
    assert not manager.requeue_job(job.id, claimed.claim_seq)  # stale claim


def test_failure_cancels_dependents_transitively(manager: JobManager) -> None:
    a = manager.create_job(JobType.AGENT, "a", max_retries=0)
    b = manager.create_job(JobType.AGENT, "b", dependencies=[a.id])
    c = manager.create_job(JobType.AGENT, "c", dependencies=[b.id])
    other = manager.create_job(JobType.AGENT, "other")
    fail_for_good(manager, a.id)
    for dependent in (b, c):
        got = manager.get_job(dependent.id)
        assert got.status is JobStatus.CANCELLED
        assert a.id in got.error_message and "failed" in got.error_message
    assert b.id in manager.get_job(c.id).error_message
    assert [j.id for j in manager.get_ready_jobs()] == [other.id]
    assert {j.id for j in manager.list_jobs(status="pending")} == {other.id}


def test_cancel_pending_job_cancels_dependents(manager: JobManager) -> None:
    a = manager.create_job(JobType.AGENT, "a")
    b = manager.create_job(JobType.AGENT, "b", dependencies=[a.id])
    assert manager.cancel_job(a.id) is True
    assert manager.get_job(a.id).status is JobStatus.CANCELLED
    got = manager.get_job(b.id)
    assert got.status is JobStatus.CANCELLED and "was cancelled" in got.error_message
    assert manager.cancel_job(a.id) is False
    with pytest.raises(JobNotFound):
        manager.cancel_job("nope")


def test_cancelled_job_stays_cancelled_after_late_completion(manager: JobManager) -> None:
    job = manager.create_job(JobType.AGENT, "slow")
    [claimed] = manager.claim_jobs("w", 1)
    assert manager.cancel_job(job.id)
    assert manager.complete_job(job.id, claimed.claim_seq, {"late": True}) is False
    assert manager.fail_job(job.id, claimed.claim_seq, "late") is None
    got = manager.get_job(job.id)
    assert got.status is JobStatus.CANCELLED and got.result is None
    assert [e.status for e in manager.get_job_history()] == [JobStatus.CANCELLED]


def test_duplicate_completion_is_refused(manager: JobManager) -> None:
    job = manager.create_job(JobType.AGENT, "a")
    [claimed] = manager.claim_jobs("w", 1)
    assert manager.complete_job(job.id, claimed.claim_seq, 1)
    assert not manager.complete_job(job.id, claimed.claim_seq, 2)
    assert len(manager.get_job_history()) == 1


def test_stale_claim_cannot_finish_newer_attempt(manager: JobManager) -> None:
    job = manager.create_job(JobType.AGENT, "a")
    [first] = manager.claim_jobs("w1", 1)
    assert manager.fail_job(job.id, first.claim_seq, "x") is JobStatus.PENDING
    [second] = manager.claim_jobs("w2", 1)
    assert not manager.complete_job(job.id, first.claim_seq, "old")
    assert manager.get_job(job.id).status is JobStatus.RUNNING
    assert manager.complete_job(job.id, second.claim_seq, "new")
    assert manager.get_job(job.id).result == "new"


def test_a_claim_put_back_to_pending_cannot_complete_the_job(manager: JobManager) -> None:
    """The claim's number alone does not make it current: the job must still be running."""
    job = manager.create_job(JobType.AGENT, "a")
    [claimed] = manager.claim_jobs("w", 1)
    assert manager.requeue_job(job.id, claimed.claim_seq)
    assert not manager.complete_job(job.id, claimed.claim_seq, "late")
    assert manager.get_job(job.id).status is JobStatus.PENDING
    assert manager.get_job_history() == []


def test_retry_job_runs_a_failed_job_again(manager: JobManager) -> None:
    job = manager.create_job(JobType.AGENT, "a", max_retries=0)
    fail_for_good(manager, job.id)
    again = manager.retry_job(job.id)
    assert again.status is JobStatus.PENDING and again.retry_count == 0
    finish(manager, job.id, "second time")
    assert manager.get_job(job.id).status is JobStatus.COMPLETED
    assert [e.status for e in manager.get_job_history()] == [
        JobStatus.COMPLETED,
        JobStatus.FAILED,
    ]


def test_a_retried_job_keeps_its_creation_time_and_its_history_says_when_it_was_retried(
    manager: JobManager,
) -> None:
    job = manager.create_job(JobType.AGENT, "a", max_retries=0)
    fail_for_good(manager, job.id, "boom")
    again = manager.retry_job(job.id)
    assert again.created_at == job.created_at and again.updated_at > job.created_at
    assert manager.get_job(job.id).created_at == job.created_at
    [failed] = manager.get_job_history()
    assert failed.status is JobStatus.FAILED
    when = f"{again.updated_at:%Y-%m-%d %H:%M:%S}"
    assert failed.error_message == f"retried by request at {when} UTC, after: boom"
    finish(manager, job.id)
    assert manager.get_job(job.id).created_at == job.created_at
    cancelled = manager.create_job(JobType.AGENT, "b")
    manager.cancel_job(cancelled.id)
    manager.retry_job(cancelled.id)
    [entry] = manager.get_job_history(status="cancelled")
    assert entry.error_message.endswith(" UTC, after: cancelled by request")


def test_retry_job_refuses_active_and_completed(manager: JobManager) -> None:
    job = manager.create_job(JobType.AGENT, "a")
    with pytest.raises(InvalidTransition, match="pending"):
        manager.retry_job(job.id)
    finish(manager, job.id)
    with pytest.raises(InvalidTransition, match="completed"):
        manager.retry_job(job.id)
    with pytest.raises(JobNotFound):
        manager.retry_job("nope")


def test_a_refused_dependency_is_named_not_the_job_never_created(manager: JobManager) -> None:
    uuid = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    failed = manager.create_job(JobType.AGENT, "extract", max_retries=0)
    fail_for_good(manager, failed.id)
    cancelled = manager.create_job(JobType.AGENT, "clean")
    manager.cancel_job(cancelled.id)
    before = manager.count_jobs()
    cases = [
        (lambda: manager.create_job("agent", "train", dependencies=[failed.id]), failed.id),
        (lambda: manager.create_jobs([agent("train", [failed.id])]), failed.id),
        (lambda: manager.create_job("agent", "train", dependencies=[cancelled.id]), cancelled.id),
        (lambda: manager.create_job("agent", "train", dependencies=["ghost"]), "ghost"),
        (lambda: manager.create_jobs([agent("train", ["ghost"])]), "ghost"),
    ]
    for create, dependency in cases:
        with pytest.raises(InvalidDependency) as refused:
            create()
        words = str(refused.value)
        assert words.startswith("cannot create job 'train': its dependency ")
        assert dependency in words and uuid.findall(words) == uuid.findall(dependency)
    with pytest.raises(InvalidDependency) as refused:
        manager.create_jobs([{"id": "a-2", **agent("train", [failed.id])}])
    assert str(refused.value) == (
        f"cannot create job a-2 ('train'): its dependency {failed.id} failed and can never "
        "complete: retry it first"
    )
    with pytest.raises(InvalidDependency, match="dependency ghost does not exist"):
        manager.create_job("agent", "train", dependencies=["ghost"], id="mine")
    assert manager.count_jobs() == before


def agent(name: str, dependencies: list[str]) -> dict[str, object]:
    return {"job_type": "agent", "name": name, "dependencies": dependencies}


def test_retried_dependent_waits_for_retried_dependency(manager: JobManager) -> None:
    a = manager.create_job(JobType.AGENT, "a", max_retries=0)
    b = manager.create_job(JobType.AGENT, "b", dependencies=[a.id])
    fail_for_good(manager, a.id)
    from taiat.errors import InvalidDependency

    with pytest.raises(InvalidDependency, match="retry it first"):
        manager.retry_job(b.id)
    manager.retry_job(a.id)
    again = manager.retry_job(b.id)
    assert again.unmet_dependencies == 1
    finish(manager, a.id)
    assert [j.id for j in manager.get_ready_jobs()] == [b.id]


def test_priority_then_age(manager: JobManager) -> None:
    low = manager.create_job(JobType.AGENT, "low")
    high = manager.create_job(JobType.AGENT, "high", priority=10)
    low2 = manager.create_job(JobType.AGENT, "low2")
    assert [j.id for j in manager.get_ready_jobs()] == [high.id, low.id, low2.id]
    assert [j.id for j in manager.claim_jobs("w", 2)] == [high.id, low.id]


def test_run_at_in_the_future_is_not_ready(manager: JobManager) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    job = manager.create_job(JobType.AGENT, "later", run_at=later)
    assert manager.get_ready_jobs() == []
    assert manager.get_job(job.id).run_at == later.replace(tzinfo=None)
    past = manager.create_job(JobType.AGENT, "past", run_at=datetime(2000, 1, 1))
    assert [j.id for j in manager.claim_jobs("w", 5)] == [past.id]


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


def test_list_jobs(manager: JobManager) -> None:
    a = manager.create_job(JobType.AGENT, "a")
    b = manager.create_job(JobType.AGENT, "b")
    finish(manager, a.id)
    assert [j.id for j in manager.list_jobs()] == [a.id, b.id]
    assert [j.id for j in manager.list_jobs(status=JobStatus.COMPLETED)] == [a.id]
    assert [j.id for j in manager.list_jobs(status="pending")] == [b.id]
    assert len(manager.list_jobs(limit=1)) == 1
    from taiat.errors import InvalidJob

    with pytest.raises(InvalidJob, match="unknown status"):
        manager.list_jobs(status="bogus")


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


def test_history_newest_first_with_limit_and_attempts(manager: JobManager) -> None:
    ids = [manager.create_job(JobType.AGENT, f"j{i}").id for i in range(3)]
    for job_id in ids:
        [claimed] = manager.claim_jobs("w", 1)
        attempt = Attempt(
            job_id=job_id,
            attempt=claimed.claim_seq,
            worker_id="w",
            host="h",
            pid=123,
            outcome="completed",
            wall_seconds=0.5,
            cpu_user_seconds=0.1,
            cpu_system_seconds=0.05,
            peak_rss_bytes=10_000_000,
            exit_code=0,
        )
        assert manager.complete_job(job_id, claimed.claim_seq, None, attempt)
    history = manager.get_job_history(limit=2)
    assert [e.job_id for e in history] == [ids[2], ids[1]]
    assert history[0].attempts[0].peak_rss_bytes == 10_000_000
    assert history[0].attempts[0].exit_code == 0
    assert manager.get_attempts(ids[0])[0].host == "h"


def test_an_attempt_is_stored_as_given_once(manager: JobManager) -> None:
    """Every field back as it went in, times as naive UTC; written again, nothing changes (on
    PostgreSQL the attempts go as one JSON array)."""
    job = manager.create_job(JobType.AGENT, "a")
    [claimed] = manager.claim_jobs("w", 1)
    started = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=5)))
    attempt = Attempt(
        job_id=job.id,
        attempt=claimed.claim_seq,
        worker_id="w-1",
        host="höst",
        pid=2**31 - 1,
        outcome="failed",
        error_message="boom: ünïcode, 'quotes' and \"double\" and \\ back",
        started_at=started,
        ended_at=datetime(2026, 3, 1, 7, 30, 16, 5),
        wall_seconds=0.1 + 0.2,
        cpu_user_seconds=1e-06,
        cpu_system_seconds=float("inf"),  # no JSON number: sent as PostgreSQL's word for it
        peak_rss_bytes=2**40,
        exit_code=None,
        exit_signal=9,
    )
    assert manager.fail_job(job.id, claimed.claim_seq, "boom", attempt) is JobStatus.PENDING
    again = Attempt(**{**vars(attempt), "outcome": "completed", "exit_signal": None})
    manager.record_attempt(again)
    [stored] = manager.get_attempts(job.id)
    assert stored == Attempt(
        **{**vars(attempt), "started_at": datetime(2026, 3, 1, 7, 30, 15, 123456)}
    )


def test_cleanup_old_history(manager: JobManager) -> None:
    job = manager.create_job(JobType.AGENT, "a")
    finish(manager, job.id)
    assert manager.cleanup_old_history(days=30) == 0
    assert manager.cleanup_old_history(days=0) == 1
    assert manager.get_job_history() == []
    assert manager.get_job(job.id) is None


def test_cleanup_goes_in_batches_until_none_is_left(manager: JobManager) -> None:
    done = [manager.create_job(JobType.AGENT, f"old {i}") for i in range(5)]
    for _ in done:
        [claimed] = manager.claim_jobs("w", 1)
        ended = datetime.now(UTC) - timedelta(minutes=1)
        attempt = Attempt(
            job_id=claimed.id, attempt=claimed.claim_seq, outcome="completed", ended_at=ended
        )
        manager.complete_job(claimed.id, claimed.claim_seq, None, attempt)
    assert all(manager.get_attempts(job.id) for job in done)
    kept = manager.create_job(JobType.AGENT, "still pending")
    assert manager.cleanup_old_history(days=0, batch_size=2) == 5
    assert manager.get_job_history() == []
    assert not any(manager.get_attempts(job.id) for job in done)
    assert manager.get_job(kept.id) is not None
    with pytest.raises(InvalidJob, match="batch_size"):
        manager.cleanup_old_history(days=0, batch_size=0)


def test_count_jobs(manager: JobManager) -> None:
    a = manager.create_job(JobType.AGENT, "a")
    manager.create_job(JobType.AGENT, "b")
    finish(manager, a.id)
    assert manager.count_jobs() == {"pending": 1, "completed": 1}


def test_the_backlog_tells_the_jobs_apart_by_what_they_wait_for(manager: JobManager) -> None:
    ahead = datetime.now(UTC)
    manager.create_job(JobType.AGENT, "ready")
    soon = manager.create_job(JobType.AGENT, "soon", run_at=ahead + timedelta(seconds=30))
    later = manager.create_job(JobType.AGENT, "later", run_at=ahead + timedelta(hours=2))
    manager.create_job(JobType.AGENT, "blocked", dependencies=[later.id])
    flaky = manager.create_job(JobType.AGENT, "flaky", priority=9)
    running = manager.create_job(JobType.AGENT, "running", priority=8)
    manager.retry_policy = RetryPolicy(base_delay=3600.0, max_delay=3600.0)
    claimed = {job.id: job for job in manager.claim_jobs("w", 2)}
    assert set(claimed) == {flaky.id, running.id}
    assert manager.fail_job(flaky.id, claimed[flaky.id].claim_seq, "boom") is JobStatus.PENDING
    backlog = manager.port.backlog(within=60)
    assert (backlog.running, backlog.ready, backlog.blocked, backlog.backoff) == (1, 1, 1, 1)
    assert (backlog.soon, backlog.later, backlog.pending) == (1, 1, 5)
    assert backlog.later_from == manager.get_job(later.id).run_at
    assert not backlog.only_later
    # With no window, `soon` is scheduled for later too: the metrics' statuses.
    assert manager.port.backlog().by_status() == {
        "pending": 2,  # one waits for its dependency, one for its retry's backoff
        "ready": 1,
        "scheduled": 2,
        "running": 1,
    }
    for job in manager.list_jobs():
        if job.id not in (later.id, soon.id) and job.status is JobStatus.PENDING:
            manager.cancel_job(job.id)
    manager.cancel_job(running.id)
    backlog = manager.port.backlog(within=60)
    assert (backlog.soon, backlog.later, backlog.only_later) == (1, 1, False)
    manager.cancel_job(soon.id)
    assert manager.port.backlog(within=60).only_later  # only what waits for later is left
    assert manager.port.backlog(within=60).pending == 1
