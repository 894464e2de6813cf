"""A slot is free once its job's result is in: the next job starts while the child that sent it
exits, and the ending is still written from its exit status. Such a child gets the kill grace
to exit, and no more of them free their slots than there are slots."""

from __future__ import annotations

import signal
from pathlib import Path

from conftest import pid_alive, wait_until
from support import agent_job, finished

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
    # The state is polled for, not read from one file: the file read at once may have been
    # written between `after`'s commit and its reap, `after` still listed as running.
    wait_until(
        lambda: (s := sup.status()).get("finishing") == 1 and s.get("running") == [],
        10,
        "it shown as finishing, and nothing as running",
        watch=sup,
    )

    marker.touch()
    ended = wait_until(lambda: finished(manager, lingering.id), 30, "its ending", watch=sup)
    assert ended.status is JobStatus.COMPLETED and ended.result == {"lingered": True}
    [attempt] = manager.get_attempts(lingering.id)
    assert (attempt.outcome, attempt.exit_code, attempt.pid) == ("completed", 0, child_pid)
    assert attempt.ended_at >= done.completed_at
    assert wait_until(lambda: sup.status().get("finishing") == 0, 10, "no job finishing")


def test_a_finished_child_slow_to_exit_is_killed_and_keeps_its_result(
    manager: JobManager, supervisor, tmp_path: Path
) -> None:
    pid_file = tmp_path / "linger.pid"
    job = manager.create_job(
        **agent_job("linger", "linger", marker=str(tmp_path / "never"), pid_file=str(pid_file)),
        max_retries=2,
    )
    sup = supervisor("--max-concurrent-jobs", "1", "--kill-grace", "0.5")
    ended = wait_until(lambda: finished(manager, job.id), 30, "its ending", watch=sup)
    # Its job was done; only its process was ended, with SIGKILL, after the grace.
    assert ended.status is JobStatus.COMPLETED and ended.result == {"lingered": True}
    assert ended.retry_count == 0
    [attempt] = manager.get_attempts(job.id)
    assert attempt.outcome == "completed" and attempt.exit_signal == signal.SIGKILL
    assert attempt.pid == int(pid_file.read_text()) and attempt.wall_seconds >= 0.5


def test_no_more_finishing_children_free_their_slots_than_there_are_slots(
    manager: JobManager, supervisor, tmp_path: Path
) -> None:
    marker = tmp_path / "let-go"
    pid_files = [tmp_path / f"linger{i}.pid" for i in range(3)]
    jobs = [
        manager.create_job(
            **agent_job(f"linger {i}", "linger", marker=str(marker), pid_file=str(pid_file)),
            priority=10 - i,
        )
        for i, pid_file in enumerate(pid_files)
    ]
    sup = supervisor("--max-concurrent-jobs", "1")
    wait_until(pid_files[1].exists, 30, "the second job, in the first's slot", watch=sup)
    # Both have sent their results and linger: the second counts as running again, and the
    # status file is written after the supervisor has decided what to start.
    wait_until(lambda: sup.status().get("finishing") == 2, 30, "two children finishing")
    assert not pid_files[2].exists()
    marker.touch()
    for job in jobs:
        done = wait_until(lambda j=job: finished(manager, j.id), 30, "every job", watch=sup)
        assert done.status is JobStatus.COMPLETED
