"""Many claimers at once, a dependency finishing while a dependent is being created, a
completion and a failure whose dependents overlap, and one id created by several at once."""

from __future__ import annotations

from collections import Counter

import multiprocess
from support import race

from taiat import JobManager, JobStatus, JobType
from taiat.errors import DuplicateJob


def claim_until_empty(url: str, worker: str) -> list[str]:
    manager = JobManager(url)
    claimed: list[str] = []
    while True:
        batch = manager.claim_jobs(worker, 7)
        if not batch:
            manager.engine.dispose()
            return claimed
        claimed.extend(job.id for job in batch)


def test_eight_processes_claim_each_job_exactly_once(pg_database_url: str) -> None:
    manager = JobManager(pg_database_url)
    created = manager.create_jobs([{"job_type": "agent", "name": f"job-{i}"} for i in range(2000)])
    manager.engine.dispose()  # nothing pooled crosses the fork
    ctx = multiprocess.get_context("spawn")
    with ctx.Pool(8) as pool:
        results = pool.starmap(claim_until_empty, [(pg_database_url, f"w{i}") for i in range(8)])
    counts = Counter(job_id for ids in results for job_id in ids)
    assert set(counts) == {job.id for job in created}
    assert max(counts.values()) == 1
    assert sum(1 for ids in results if ids) > 1  # the work really was shared
    running = manager.list_jobs(status=JobStatus.RUNNING, limit=None)
    manager.engine.dispose()
    assert len(running) == 2000 and {job.claim_seq for job in running} == {1}


def test_dependency_finishing_while_dependent_is_created(pg_database_url: str) -> None:
    """Whichever commits first, the dependent's count of unmet dependencies is right."""
    manager = JobManager(pg_database_url)
    for round_ in range(60):
        dep = manager.create_job(JobType.AGENT, f"dep-{round_}")
        [claimed] = manager.claim_jobs("w", 1)
        made: list = []
        race(
            lambda: manager.complete_job(dep.id, claimed.claim_seq),  # noqa: B023
            lambda: made.append(  # noqa: B023
                manager.create_job(JobType.AGENT, "child", dependencies=[dep.id])  # noqa: B023
            ),
        )
        child = manager.get_job(made[0].id)
        assert child.unmet_dependencies == 0, f"round {round_}: child waits forever"
        [ready] = manager.claim_jobs("w", 1)
        assert ready.id == child.id
        manager.complete_job(ready.id, ready.claim_seq)
    manager.engine.dispose()


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
