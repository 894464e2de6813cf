"""Several supervisors on one database: wake-ups, cancels, leases, quarantine."""

from __future__ import annotations

import signal
import socket

from conftest import pid_alive, wait_until
from support import agent_job, finished

from taiat import JobManager, JobStatus


def test_cancel_of_a_running_job_kills_it_within_a_second(
    manager: JobManager, supervisor, tmp_path
) -> None:
    pid_file = tmp_path / "job.pid"
    [job, dependent] = manager.create_jobs(
        [
            {**agent_job("long", "sleep", seconds=60, pid_file=str(pid_file)), "id": "long"},
            {**agent_job("after", "plain"), "dependencies": ["long"]},
        ]
    )
    sup = supervisor()
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), 30, "the job", watch=sup)
    child = int(pid_file.read_text())
    assert manager.cancel_job(job.id)
    # The job sleeps a minute: killed within the deadline, it was killed for its cancel.
    wait_until(lambda: not pid_alive(child), 5, "the child to be killed", watch=sup)
    assert manager.get_job(job.id).status is JobStatus.CANCELLED
    assert manager.get_job(dependent.id).status is JobStatus.CANCELLED
    [attempt] = wait_until(lambda: manager.get_attempts(job.id), 10, "the attempt", watch=sup)
    assert attempt.outcome in ("cancelled", "superseded")
    assert sup.settled_counters()["failed"] == 0


def test_idle_supervisor_hears_new_jobs_at_once(pg_database_url, pg_manager, tmp_path) -> None:
    from conftest import Supervisor

    manager = pg_manager
    sup = Supervisor(pg_database_url, tmp_path, "--poll-interval", "60")
    try:
        wait_until(lambda: sup.status().get("state") == "running", 30, "start", watch=sup)
        for _ in range(3):
            # Idle after a status write: only a NOTIFY can wake it before its 60 s poll.
            sup.settled_counters()
            job = manager.create_job("agent", "ping", payload={"agent_name": "plain"})
            wait_until(lambda j=job: finished(manager, j.id), 10, "the job", watch=sup)
    finally:
        sup.stop()


def test_same_host_restart_takes_back_a_killed_supervisors_job(
    manager: JobManager, supervisor, tmp_path
) -> None:
    pid_file = tmp_path / "job.pid"
    [job] = manager.create_jobs([agent_job("slow", "sleep", seconds=2, pid_file=str(pid_file))])
    first = supervisor()
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), 30, "the job", watch=first)
    first.signal(signal.SIGKILL)
    first.wait(10)
    assert manager.get_job(job.id).status is JobStatus.RUNNING
    second = supervisor("--lease", "600")  # the lease is long: only "pid gone" can tell
    done = wait_until(lambda: finished(manager, job.id), 30, "the retried job", watch=second)
    assert done.status is JobStatus.COMPLETED and done.retry_count == 1
    lost, ran = manager.get_attempts(job.id)
    assert lost.outcome == "lost"
    assert lost.error_message == f"supervisor lost ({socket.gethostname()}, {first.pid})"
    assert ran.outcome == "completed" and ran.worker_id != lost.worker_id


def test_stale_heartbeat_and_missing_row_mean_dead(manager: JobManager, supervisor) -> None:
    stale_job, ghost_job = manager.create_jobs(
        [agent_job("stale", "plain"), agent_job("ghost", "plain")]
    )
    manager.port.register("elsewhere:4242:aaaa", "elsewhere", 4242)
    [claimed] = manager.claim_jobs("elsewhere:4242:aaaa", 1)
    [ghost] = manager.claim_jobs("nowhere:7:bbbb", 1)  # no row at all
    sup = supervisor("--lease", "1")
    for job_id in (claimed.id, ghost.id):
        done = wait_until(lambda j=job_id: finished(manager, j), 30, job_id, watch=sup)
        assert done.status is JobStatus.COMPLETED and done.retry_count == 1
    errors = {a.error_message for j in (claimed, ghost) for a in manager.get_attempts(j.id)}
    assert "supervisor lost (elsewhere, 4242)" in errors
    assert "supervisor lost (nowhere, 7)" in errors
    assert [w["id"] for w in manager.port.list_workers()] == [sup.status()["worker_id"]]
    # The dead supervisor's late result is refused by the fence.
    assert not manager.complete_job(claimed.id, claimed.claim_seq, "late")
    assert manager.get_job(claimed.id).result != "late"


def test_a_job_that_keeps_crashing_is_quarantined(manager: JobManager, supervisor) -> None:
    job = manager.create_job("agent", "crasher", payload={"agent_name": "segfault"}, max_retries=10)
    sup = supervisor("--quarantine-after", "3", "--burst")
    assert sup.wait(60) == 0
    done = manager.get_job(job.id)
    assert done.status is JobStatus.FAILED
    assert done.error_message.startswith("quarantined: crashed on 3 attempts in a row; last: ")
    assert "SIGSEGV" in done.error_message
    assert len(manager.get_attempts(job.id)) == 3


def test_priority_across_supervisors(manager: JobManager, supervisor) -> None:
    low = manager.create_job("agent", "low", payload={"agent_name": "plain"})
    high = manager.create_job("agent", "high", payload={"agent_name": "plain"}, priority=5)
    assert supervisor("--burst", "--max-concurrent-jobs", "1").wait(60) == 0
    assert manager.get_job(high.id).started_at <= manager.get_job(low.id).started_at
