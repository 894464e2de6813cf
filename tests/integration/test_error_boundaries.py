"""Each job is handled inside an error boundary: an exception while computing its limits,
starting it or reading its ending ends that job, failed with the reason in words, and never
the supervisor's loop; the jobs beside it complete. (Each exception stands in for any bug a
job's data could set off there.)"""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest
from support import no_free_descriptor

from taiat import JobManager, JobStatus
from taiat.config import SupervisorConfig
from taiat.forking.job_process import Ending, JobProcess
from taiat.forking.launchers import Forking
from taiat.jobs import Job
from taiat.supervisor.daemon import Supervisor


def plain(value: Any = None) -> dict[str, Any]:
    return {"value": value, "pid": os.getpid()}


def run_burst(manager: JobManager, poison_retries: int = 3) -> tuple[Job, list[Job]]:
    agent = {"agent_name": "plain"}
    poison = manager.create_job("agent", "poison", payload=agent, max_retries=poison_retries)
    others = [manager.create_job("agent", f"innocent {i}", payload=agent) for i in range(3)]
    config = SupervisorConfig(
        burst=True, poll_interval=0.1, max_concurrent_jobs=2, fork_server=False, listen=False
    )
    supervisor = Supervisor(config, manager=manager, agent_registry={"plain": plain})
    assert supervisor.run() == 0
    for job in others:
        assert manager.get_job(job.id).status is JobStatus.COMPLETED
    return manager.get_job(poison.id), others


def test_a_bug_computing_a_jobs_limits_fails_it_for_good(
    manager: JobManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    computed = Supervisor._memory_limit

    def limit(self: Supervisor, job: Job) -> int | None:
        if job.name == "poison":
            raise ArithmeticError("no limit like it")
        return computed(self, job)

    monkeypatch.setattr(Supervisor, "_memory_limit", limit)
    poison, _ = run_burst(manager)
    assert poison.status is JobStatus.FAILED and poison.retry_count == 0  # as it is, never
    assert poison.error_message == "it cannot be started: ArithmeticError: no limit like it"
    assert manager.get_attempts(poison.id) == []  # no child, so no attempt


def test_a_launch_that_fails_is_a_failed_attempt(
    manager: JobManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = Forking.start

    def launch(self: Forking, proc: JobProcess, dependency_results: Any) -> None:
        if proc.job.name == "poison":
            raise OSError(errno.EBADF, "Bad file descriptor")
        start(self, proc, dependency_results)

    monkeypatch.setattr(Forking, "start", launch)
    poison, _ = run_burst(manager, poison_retries=0)
    assert poison.status is JobStatus.FAILED
    assert poison.error_message == "it could not be started: OSError: [Errno 9] Bad file descriptor"


def test_a_launch_with_no_descriptor_to_be_had_spends_no_retry(manager: JobManager) -> None:
    """No process or descriptor to be had (a neighbour's fork bomb under the user's process
    limit, here every descriptor taken): the job never ran, and goes back to pending with no
    retry spent, rather than fail for good for its neighbour's doing."""
    job = manager.create_job("agent", "innocent", payload={"agent_name": "plain"}, max_retries=0)
    config = SupervisorConfig(fork_server=False, listen=False)
    supervisor = Supervisor(config, manager=manager, agent_registry={"plain": plain})
    supervisor.forking = Forking([], fork_server=False)
    [claimed] = manager.claim_jobs(supervisor.worker_id, 1)
    with no_free_descriptor():
        supervisor._start(claimed, None)  # the supervisor's loop goes on
    assert supervisor.children == []
    assert supervisor.recorder.settle(supervisor.worker_id, 0).jobs == []
    again = manager.get_job(job.id)
    assert again.status is JobStatus.PENDING and again.retry_count == 0
    assert manager.get_attempts(job.id) == []  # no child, so no attempt


def test_a_bug_reading_a_jobs_ending_fails_that_job(
    manager: JobManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    reap = JobProcess.try_reap

    def try_reap(self: JobProcess) -> Ending | None:
        ending = reap(self)
        if ending is not None and self.job.name == "poison":
            raise KeyError("not what was expected")
        return ending

    monkeypatch.setattr(JobProcess, "try_reap", try_reap)
    poison, _ = run_burst(manager, poison_retries=0)
    assert poison.status is JobStatus.FAILED
    assert poison.error_message == "its ending could not be read: KeyError: 'not what was expected'"
    [attempt] = manager.get_attempts(poison.id)
    assert attempt.outcome == "failed"
