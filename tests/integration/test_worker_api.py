"""The seed's worker API: TaiatWorker(session_maker=..., agent_registry=...), add_executor,
run() until stop(); run in this process, forking real children."""

from __future__ import annotations

import threading

from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker
from support import poll

from taiat import JobManager, JobStatus, JobType
from taiat.jobs import Job
from taiat.worker import JobExecutor, TaiatWorker


def my_custom_agent(**kwargs):
    # Your agent logic here
    return {"result": "agent_completed", "got": kwargs}


class MyCustomExecutor(JobExecutor):
    def can_execute(self, job: Job) -> bool:
        return job.job_type == JobType.AGENT and job.payload.get("agent_name") == "my_agent"

    def execute(self, job: Job):
        # Your custom execution logic here
        return {"success": True, "result": "custom_result"}


class RefusingExecutor:
    def can_execute(self, job: Job) -> bool:
        return job.name == "refused"

    def execute(self, job: Job):
        return {"success": False, "error": "not today"}


def test_seed_worker_api(database_url: str) -> None:
    engine = create_engine(database_url)
    session_maker = sessionmaker(bind=engine)
    agent_registry = {"my_custom_agent": my_custom_agent}
    worker = TaiatWorker(
        session_maker=session_maker,
        agent_registry=agent_registry,
        poll_interval=0.1,
        max_concurrent_jobs=2,
    )
    worker.add_executor(MyCustomExecutor())
    worker.add_executor(RefusingExecutor())
    manager = JobManager(session_maker)
    agent = manager.create_job(
        JobType.AGENT, "a", payload={"agent_name": "my_custom_agent", "parameters": {"x": 1}}
    )
    custom = manager.create_job(JobType.AGENT, "c", payload={"agent_name": "my_agent"})
    refused = manager.create_job(
        JobType.AGENT, "refused", max_retries=0, payload={"agent_name": "my_custom_agent"}
    )
    # run() blocks until stop(); off the main thread it takes no signal handlers.
    runner = threading.Thread(target=worker.run)
    runner.start()
    try:
        for job in (agent, custom, refused):
            poll(lambda j=job: manager.get_job(j.id).status.finished, 60, job.name)
    finally:
        worker.stop()
        runner.join(60)
    assert not runner.is_alive()
    assert manager.get_job(agent.id).result == {"result": "agent_completed", "got": {"x": 1}}
    assert manager.get_job(custom.id).result == {"success": True, "result": "custom_result"}
    failed = manager.get_job(refused.id)
    assert failed.status is JobStatus.FAILED and failed.error_message == "not today"
    assert worker.counters["completed"] == 2 and worker.counters["failed"] == 1
    engine.dispose()


def test_an_unregistered_agent_is_never_claimed_and_a_burst_leaves_it(database_url: str) -> None:
    manager = JobManager(database_url)
    job = manager.create_job(JobType.AGENT, "lost", payload={"agent_name": "nobody"})
    worker = TaiatWorker(
        database_url=database_url,
        agent_registry={"my_custom_agent": my_custom_agent},
        burst=True,
        poll_interval=0.1,
        listen=False,
    )
    try:
        assert worker.run() == 0  # nothing it could run was left
    finally:
        worker.manager.engine.dispose()
    waiting = manager.get_job(job.id)
    assert waiting.status is JobStatus.PENDING and waiting.retry_count == 0
    assert manager.get_attempts(job.id) == []
    assert manager.unserved_agent(waiting) == "nobody"
    manager.engine.dispose()


class CatchAllExecutor:
    """Declares no agent names, so its supervisor claims agent jobs of every name."""

    def can_execute(self, job: Job) -> bool:
        return False

    def execute(self, job: Job):
        raise AssertionError("never called")


def test_an_unregistered_agent_claimed_through_a_catch_all_executor_fails_at_once(
    database_url: str,
) -> None:
    manager = JobManager(database_url)
    job = manager.create_job(JobType.AGENT, "lost", payload={"agent_name": "nobody"})
    worker = TaiatWorker(
        database_url=database_url,
        agent_registry={"my_custom_agent": my_custom_agent},
        burst=True,
        poll_interval=0.1,
        listen=False,
    )
    worker.add_executor(CatchAllExecutor())
    try:
        assert worker.run() == 0
    finally:
        worker.manager.engine.dispose()
    failed = manager.get_job(job.id)
    assert failed.status is JobStatus.FAILED and failed.retry_count == 0
    assert failed.error_message.startswith("agent nobody is not registered (known: ")
    assert "my_custom_agent" in failed.error_message
    assert "without a retry, as a retry cannot register it" in failed.error_message
    [attempt] = manager.get_attempts(job.id)  # one run of the four it was allowed
    assert attempt.outcome == "failed" and attempt.error_message == failed.error_message
    manager.engine.dispose()
