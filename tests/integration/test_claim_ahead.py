"""While jobs are short the supervisor claims one job per slot ahead, to start it the moment a
slot frees. A held job is never lost: it is given back when the slots stay busy, when the
supervisor stops, and dropped when it is cancelled; it never counts as an attempt.

The supervisor runs in this process, its jobs the acceptance tests' agents, so that the test
can look at what it holds and count its writes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import acceptance_agents, agent_job, finished, poll

from taiat import JobManager, JobStatus
from taiat.forking.job_process import Ending
from taiat.jobs import Job
from taiat.supervisor.daemon import Supervisor, SupervisorConfig

agents = acceptance_agents()
REGISTRY = {"plain": agents.plain, "sleep": agents.sleep}


@contextmanager
def running(supervisor: Supervisor) -> Iterator[threading.Thread]:
    runner = threading.Thread(target=supervisor.run)
    runner.start()
    try:
        yield runner
    finally:
        supervisor.stop()
        supervisor.stop()  # and do not wait for the drain
        runner.join(30)
        supervisor.manager.engine.dispose()
    assert not runner.is_alive()


def make_supervisor(database_url: str, slots: int, **config: object) -> Supervisor:
    settings = {"poll_interval": 0.1, "check_interval": 0.1, **config}
    sup = Supervisor(
        SupervisorConfig(database_url=database_url, max_concurrent_jobs=slots, **settings),
        agent_registry=REGISTRY,
    )
    sup.ahead.short = 60.0  # every job counts as short: hold one per slot from the first end
    return sup


@contextmanager
def burst(sup: Supervisor, database_url: str, count: int) -> Iterator[tuple[JobManager, list[Job]]]:
    """`count` plain jobs, run to the end by `sup` in burst mode; a manager to look at them."""
    manager = JobManager(database_url)
    jobs = manager.create_jobs([agent_job(f"n{i}", "plain", value=i) for i in range(count)])
    try:
        runner = threading.Thread(target=sup.run)
        runner.start()
        runner.join(120)
        assert not runner.is_alive()
        yield manager, jobs
    finally:
        manager.engine.dispose()
        sup.manager.engine.dispose()


def hold_one(manager: JobManager, sup: Supervisor, tmp_path: Path) -> tuple[Job, Job]:
    """With one slot: a first job ends, then a long one runs and a short one is held."""
    first = manager.create_job(**agent_job("first", "plain", value=1))
    poll(lambda: finished(manager, first.id), 30, "the first job")
    pid_file = tmp_path / "long.pid"
    long = manager.create_job(
        **agent_job("long", "sleep", seconds=60, pid_file=str(pid_file)), priority=10
    )
    short = manager.create_job(**agent_job("short", "plain", value=2))
    poll(pid_file.exists, 30, "the long job to start")
    poll(lambda: [h.job.id for h in sup.ahead.held] == [short.id], 30, "the short job held")
    return long, short


def test_short_jobs_are_claimed_ahead_and_each_runs_once(database_url: str) -> None:
    sup = make_supervisor(database_url, 2, burst=True)
    held_at_ends: list[int] = []
    sup.observers.append(lambda job, ending: held_at_ends.append(len(sup.ahead)))
    with burst(sup, database_url, 40) as (manager, jobs):
        assert max(held_at_ends) > 0  # jobs were held ahead of free slots
        for job in jobs:
            done = manager.get_job(job.id)
            assert done.status is JobStatus.COMPLETED
            assert done.result["value"] == int(job.name[1:])
            [attempt] = manager.get_attempts(job.id)
            assert attempt.outcome == "completed"


def test_with_jobs_held_the_endings_of_one_slot_are_written_together(database_url: str) -> None:
    """One slot runs one job at a time; only endings that wait for each other are written in
    one transaction."""
    sup = make_supervisor(database_url, 1, burst=True)
    batches: list[int] = []
    write = sup.port.settle

    def counted(completions, worker_id, limit):  # noqa: ANN001, ANN202
        if completions:
            batches.append(len(completions))
        return write(completions, worker_id, limit)

    sup.port.settle = counted  # type: ignore[method-assign]
    with burst(sup, database_url, 40) as (manager, jobs):
        assert sum(batches) == 40 and max(batches) > 1
        assert all(manager.get_job(job.id).status is JobStatus.COMPLETED for job in jobs)


def test_a_job_held_while_the_slots_stay_busy_is_given_back(
    database_url: str, tmp_path: Path
) -> None:
    sup = make_supervisor(database_url, 1)
    sup.ahead.max_wait = 1.0
    manager = JobManager(database_url)
    try:
        with running(sup):
            long, short = hold_one(manager, sup, tmp_path)
            assert sup.snapshot()["claimed_ahead"] == 1
            given_back = poll(
                lambda: (j := manager.get_job(short.id)).status is JobStatus.PENDING and j,
                30,
                "the held job to be given back",
            )
            assert given_back.retry_count == 0 and given_back.worker_id is None
            assert manager.get_attempts(short.id) == []
            assert sup.ahead.typical is None  # none is held again until a job ends
            manager.cancel_job(long.id)
            done = poll(lambda: finished(manager, short.id), 30, "the short job")
        assert done.status is JobStatus.COMPLETED
        [attempt] = manager.get_attempts(short.id)
        # Claimed once ahead and given back, then claimed to run: not churned meanwhile.
        assert attempt.outcome == "completed" and attempt.attempt == 2
    finally:
        manager.engine.dispose()


@pytest.mark.parametrize("stops", [1, 2])
def test_stopping_gives_held_jobs_back_unstarted(
    database_url: str, tmp_path: Path, stops: int
) -> None:
    """One stop drains (here for 0.2 s); a second one, even at once, ends the drain: either way
    the held jobs are given back."""
    sup = make_supervisor(database_url, 1, drain_timeout=0.2, kill_grace=0.2)
    sup.ahead.max_wait = 60.0
    manager = JobManager(database_url)
    try:
        with running(sup) as runner:
            long, short = hold_one(manager, sup, tmp_path)
            for _ in range(stops):
                sup.stop()
            runner.join(30)
            assert not runner.is_alive()
        assert sup.state == "stopped"
        after = manager.get_job(short.id)
        assert after.status is JobStatus.PENDING and after.retry_count == 0
        assert after.worker_id is None and manager.get_attempts(short.id) == []
        # The long job was cut short by the drain's end: pending again, no retry spent.
        assert manager.get_job(long.id).status is JobStatus.PENDING
        assert [a.outcome for a in manager.get_attempts(long.id)] == ["stopped"]
    finally:
        manager.engine.dispose()


def test_a_held_job_that_is_cancelled_is_dropped(database_url: str, tmp_path: Path) -> None:
    sup = make_supervisor(database_url, 1)
    sup.ahead.max_wait = 60.0
    manager = JobManager(database_url)
    ended: list[tuple[str, Ending]] = []
    sup.observers.append(lambda job, ending: ended.append((job.id, ending)))
    try:
        with running(sup):
            long, short = hold_one(manager, sup, tmp_path)
            assert manager.cancel_job(short.id)
            poll(lambda: not sup.ahead.held, 30, "the cancelled job to be dropped")
            assert manager.get_job(long.id).status is JobStatus.RUNNING
        assert manager.get_job(short.id).status is JobStatus.CANCELLED
        assert manager.get_attempts(short.id) == []
        assert short.id not in [job_id for job_id, _ in ended]  # it never ran
    finally:
        manager.engine.dispose()


def test_claiming_ahead_can_be_turned_off(database_url: str) -> None:
    sup = make_supervisor(database_url, 1, burst=True, claim_ahead=False)
    held: list[int] = []
    sup.observers.append(lambda job, ending: held.append(len(sup.ahead)))
    with burst(sup, database_url, 5) as (manager, _):
        assert held == [0] * 5
        assert manager.pending_count() == 0
