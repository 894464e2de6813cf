"""Nothing a job does takes the supervisor down, and every ending is recorded in words."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from conftest import pid_alive, wait_until
from support import agent_job, finished

from taiat import JobManager, JobStatus


def test_every_kind_of_ending_is_recorded(manager: JobManager, supervisor, tmp_path: Path) -> None:
    grandchild_file = tmp_path / "grandchild.pid"
    stubborn_file = tmp_path / "stubborn.pid"
    specs = [
        agent_job("segfault", "segfault"),
        agent_job("exit_hard", "exit_hard", code=3),
        agent_job("exit_soft", "exit_soft", code=2),
        agent_job("explode", "explode", message="kaboom"),
        {**agent_job("too_slow", "sleep", seconds=60), "timeout_seconds": 1},
        {
            **agent_job("stubborn", "stubborn", seconds=60, pid_file=str(stubborn_file)),
            "timeout_seconds": 1,
        },
        agent_job("hog", "hog", megabytes=400),
        agent_job("orphan_maker", "orphan_maker", pid_file=str(grandchild_file)),
        agent_job("unserialisable", "unserialisable"),
        agent_job("unknown", "no_such_agent"),
        agent_job("busy", "busy", seconds=0.3),
    ]
    jobs = manager.create_jobs([{**spec, "max_retries": 0} for spec in specs])
    sup = supervisor("--max-concurrent-jobs", "4", "--memory-limit", "200", "--kill-grace", "1")
    by_name = {}
    for job in jobs:
        if job.name == "unknown":
            continue  # no supervisor has its agent: it waits for one, pending
        by_name[job.name] = wait_until(
            lambda j=job: finished(manager, j.id), 90, job.name, watch=sup
        )

    def error(name: str) -> str:
        assert by_name[name].status is JobStatus.FAILED, by_name[name]
        return by_name[name].error_message

    assert "killed by signal 11 (SIGSEGV): segmentation fault" in error("segfault")
    assert error("exit_hard") == "exited with code 3 without a result"
    assert error("exit_soft") == "job called sys.exit(2)"
    assert error("explode").startswith("ValueError: kaboom\n")
    assert "Traceback" in error("explode") and "agents.py" in error("explode")
    assert error("too_slow").startswith("timed out after 1 s; it was at: File ")
    assert error("stubborn").startswith("timed out after 1 s; it was at: File ")
    # The kernel's words in a sandbox (see test_sandbox), the supervisor's without one.
    assert error("hog").startswith("exceeded memory limit of 200 MB")
    assert "not JSON-serialisable" in error("unserialisable")
    [unknown] = [job for job in jobs if job.name == "unknown"]
    waiting = manager.get_job(unknown.id)
    assert waiting.status is JobStatus.PENDING and manager.get_attempts(unknown.id) == []
    assert manager.unserved_agent(waiting) == "no_such_agent"
    assert by_name["orphan_maker"].status is JobStatus.COMPLETED
    assert by_name["busy"].status is JobStatus.COMPLETED

    # The grandchild left behind went with its job's process group; so did the stubborn job.
    grandchild = int(grandchild_file.read_text())
    wait_until(lambda: not pid_alive(grandchild), 10, "the grandchild to be killed")
    wait_until(lambda: not pid_alive(int(stubborn_file.read_text())), 10, "stubborn job")

    # Per-attempt records: how it ended and what it cost.
    [segv] = manager.get_attempts(by_name["segfault"].id)
    assert segv.exit_signal == signal.SIGSEGV and segv.exit_code is None
    assert segv.outcome == "crashed" and segv.worker_id and segv.host
    [hard] = manager.get_attempts(by_name["exit_hard"].id)
    assert hard.exit_code == 3 and hard.exit_signal is None
    [cpu] = manager.get_attempts(by_name["busy"].id)
    assert cpu.cpu_user_seconds + cpu.cpu_system_seconds >= 0.25
    # In a sandbox the peak is the memory charged to the job's cgroup: what the job itself
    # touched, not the pages it shares with the process that forked it.
    assert cpu.peak_rss_bytes > 0 and cpu.wall_seconds >= 0.25
    [mem] = manager.get_attempts(by_name["hog"].id)
    assert mem.outcome == "memory" and mem.peak_rss_bytes >= 190 << 20
    history = {e.job_id: e for e in manager.get_job_history(limit=None)}
    assert history[by_name["busy"].id].attempts[0].cpu_user_seconds == cpu.cpu_user_seconds

    # After all that, the same supervisor still serves a plain job.
    plain = manager.create_job(
        "agent", "after", payload={"agent_name": "plain", "parameters": {"value": 1}}
    )
    done = wait_until(lambda: finished(manager, plain.id), 30, "the plain job", watch=sup)
    assert done.status is JobStatus.COMPLETED and done.result["value"] == 1
    assert sup.process.poll() is None
    status = sup.status()
    assert status["pid"] == sup.pid
    assert status["counters"]["timed_out"] == 2
    assert status["counters"]["crashed"] >= 3  # segfault, os._exit, memory
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0


def test_oversized_result_fails_the_job(manager: JobManager, supervisor) -> None:
    huge = manager.create_job(
        "agent",
        "huge",
        payload={"agent_name": "huge", "parameters": {"megabytes": 100}},
        max_retries=0,
    )
    small = manager.create_job(
        "agent",
        "small",
        payload={"agent_name": "huge", "parameters": {"megabytes": 1}},
        max_retries=0,
    )
    assert supervisor("--burst").wait(120) == 0
    failed = manager.get_job(huge.id)
    assert failed.status is JobStatus.FAILED
    assert "is over the limit of 16777216 bytes" in failed.error_message
    assert manager.get_job(small.id).result == "x" * (1 << 20)


def test_failed_attempt_is_retried(manager: JobManager, supervisor, tmp_path: Path) -> None:
    job = manager.create_job(
        "agent",
        "flaky",
        payload={"agent_name": "flaky", "parameters": {"marker": str(tmp_path / "marker")}},
    )
    sup = supervisor("--burst")
    assert sup.wait(60) == 0
    done = manager.get_job(job.id)
    assert done.status is JobStatus.COMPLETED and done.result == "second attempt works"
    assert done.retry_count == 1
    attempts = manager.get_attempts(job.id)
    assert [a.outcome for a in attempts] == ["failed", "completed"]


def test_current_job_sees_dependency_results(manager: JobManager, supervisor) -> None:
    first = manager.create_job(
        "agent", "first", payload={"agent_name": "plain", "parameters": {"value": 42}}
    )
    second = manager.create_job(
        "agent", "second", payload={"agent_name": "whoami"}, dependencies=[first.id]
    )
    assert supervisor("--burst").wait(60) == 0
    result = manager.get_job(second.id).result
    assert result["id"] == second.id and result["name"] == "second"
    assert result["attempt"] == 1
    assert result["dependency_results"][first.id]["value"] == 42


def _kill_if_alive(pid_file: Path) -> None:
    """Clean up after a failing test: the escaped process is not the test's child."""
    if pid_file.exists() and pid_alive(int(pid_file.read_text())):
        os.kill(int(pid_file.read_text()), signal.SIGKILL)


@pytest.mark.parametrize("forker", ["fork server", "supervisor"])
def test_a_process_that_escapes_into_its_own_session_ends_with_its_job(
    manager: JobManager, supervisor, tmp_path: Path, forker: str
) -> None:
    """A double fork and setsid leave the job's process group, but not the job: the process
    is killed when its job ends (by the fork server, or by the supervisor when it forks the
    jobs itself), and the supervisor serves on."""
    pid_file = tmp_path / "escaped.pid"
    job = manager.create_job(**agent_job("escape", "escape", pid_file=str(pid_file)))
    sup = supervisor(*(["--no-fork-server"] if forker == "supervisor" else []))
    try:
        done = wait_until(lambda: finished(manager, job.id), 30, "the job", watch=sup)
        assert done.status is JobStatus.COMPLETED, done.error_message
        escaped = done.result["escaped"]
        wait_until(lambda: not pid_alive(escaped), 10, "the escaped process to be killed")
    finally:
        _kill_if_alive(pid_file)
    assert sup.process.poll() is None


def test_the_memory_of_an_escaped_process_counts_against_its_job(
    manager: JobManager, supervisor, tmp_path: Path
) -> None:
    """Without a sandbox (see test_sandbox for the kernel's own account), the supervisor
    samples the memory of the job's processes, an escaped one among them."""
    pid_file = tmp_path / "escaped.pid"
    job = manager.create_job(
        **agent_job("escape", "escape", pid_file=str(pid_file), megabytes=150, seconds=60),
        max_retries=0,
        timeout_seconds=30,
    )
    sup = supervisor("--memory-limit", "100", "--sandbox", "none")
    try:
        done = wait_until(lambda: finished(manager, job.id), 60, "the job", watch=sup)
        assert done.status is JobStatus.FAILED
        assert done.error_message == "exceeded memory limit of 100 MB"
        [attempt] = manager.get_attempts(job.id)
        assert attempt.outcome == "memory" and attempt.peak_rss_bytes > 100 << 20
        escaped = int(pid_file.read_text())
        wait_until(lambda: not pid_alive(escaped), 10, "the escaped process to be killed")
    finally:
        _kill_if_alive(pid_file)
