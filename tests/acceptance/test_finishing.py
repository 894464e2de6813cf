"""A slot is free once its job's result is in: the next job starts while the child that sent it
exits, and the ending is still written from its exit status."""

from __future__ import annotations

from pathlib import Path

from conftest import agent_job, finished, pid_alive, wait_until

from taiat import JobManager, JobStatus


def test_the_next_job_starts_while_a_finished_child_exits(
    manager: JobManager, supervisor, tmp_path: Path
) -> None:
    marker, pid_file = tmp_path / "let-go", tmp_path / "linger.pid"
    lingering = manager.create_job(
        **agent_job("linger", "linger", marker=str(marker), pid_file=str(pid_file)), priority=10
    )
    sup = supervisor("--max-concurrent-jobs", "1")
    wait_until(pid_file.exists, 30, "the lingering job to start", watch=sup)
    after = manager.create_job(**agent_job("after", "plain", value=1))

    # One slot: `after` can only run in the slot of the child that has not exited yet.
    done = wait_until(lambda: finished(manager, after.id), 30, "the next job", watch=sup)
    assert done.status is JobStatus.COMPLETED
    child_pid = int(pid_file.read_text())
    assert pid_alive(child_pid)
    assert manager.get_job(lingering.id).status is JobStatus.RUNNING  # its exit is awaited
    status = wait_until(
        lambda: (s := sup.status()).get("finishing") == 1 and s, 10, "it shown as finishing"
    )
    assert status["running"] == []

    marker.touch()
    ended = wait_until(lambda: finished(manager, lingering.id), 30, "its ending", watch=sup)
    assert ended.status is JobStatus.COMPLETED and ended.result == {"lingered": True}
    [attempt] = manager.get_attempts(lingering.id)
    assert (attempt.outcome, attempt.exit_code, attempt.pid) == ("completed", 0, child_pid)
    assert attempt.ended_at >= done.completed_at
    assert wait_until(lambda: sup.status().get("finishing") == 0, 10, "no job finishing")
