"""Children forked ahead: the fork server keeps one waiting for each free slot, so that a claimed
job starts without waiting for a fork. Each runs one job and is replaced; one that is killed or
stopped before its job comes costs that job nothing; none outlives the supervisor."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from conftest import pid_alive, wait_until
from support import agent_job, finished

from taiat import JobManager, JobStatus
from taiat.sandbox.cgroups import in_job_group
from taiat.sandbox.detect import detect


def _waiting(sup, count: int) -> list[int]:
    """The pids of the children waiting, once the status file lists `count` of them."""
    return wait_until(
        lambda: len(pids := sup.status().get("waiting_children") or []) == count and pids,
        30,
        f"{count} children waiting",
        watch=sup,
    )


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2].split()[1])


def _run(manager: JobManager, sup, **payload) -> dict:
    """Run the `where` agent (with these payload fields) and wait for what it says."""
    spec = agent_job("where", "where")
    spec["payload"] |= payload
    job = manager.create_job(**spec)
    done = wait_until(lambda: finished(manager, job.id), 30, "the job", watch=sup)
    assert done.status is JobStatus.COMPLETED, done.error
    assert done.attempt == 1
    return done.result


def test_a_child_waits_for_each_free_slot_and_runs_one_job_only(
    manager: JobManager, supervisor
) -> None:
    sup = supervisor("--max-concurrent-jobs", "2")
    waiting = _waiting(sup, 2)
    server = sup.status()["fork_server_pid"]
    assert all(_parent(pid) == server for pid in waiting)
    seen: set[int] = set()
    for _ in range(3):
        ran = _run(manager, sup)
        assert ran["pid"] in waiting and ran["ppid"] == server
        assert ran["pid"] not in seen  # never reused
        seen.add(ran["pid"])
        # Replaced: two wait again, the one that ran the job not among them.
        waiting = wait_until(
            lambda pid=ran["pid"]: len(w := _waiting(sup, 2)) == 2 and pid not in w and w,
            30,
            "a child forked in its place",
            watch=sup,
        )


def test_a_busy_slot_has_no_child_waiting_for_it(
    manager: JobManager, supervisor, tmp_path: Path
) -> None:
    pid_file = tmp_path / "sleeper.pid"
    sup = supervisor("--max-concurrent-jobs", "2")
    _waiting(sup, 2)
    job = manager.create_job(**agent_job("sleep", "sleep", seconds=60, pid_file=str(pid_file)))
    wait_until(pid_file.exists, 30, "the sleeper", watch=sup)
    [left] = _waiting(sup, 1)
    assert left != int(pid_file.read_text())
    manager.cancel_job(job.id)
    _waiting(sup, 2)


def test_a_waiting_child_killed_or_stopped_costs_its_job_nothing(
    manager: JobManager, supervisor
) -> None:
    """A job meant for a waiting child that is gone, or stopped by a signal (it would hold the
    job), is forked afresh: it runs at its first attempt, and the stopped child is killed."""
    sup = supervisor("--max-concurrent-jobs", "2")
    killed, stopped = _waiting(sup, 2)
    os.kill(killed, signal.SIGKILL)
    os.kill(stopped, signal.SIGSTOP)
    try:
        ran = [_run(manager, sup)["pid"] for _ in range(3)]
        assert not {killed, stopped} & set(ran)
        wait_until(lambda: not pid_alive(stopped), 30, "the stopped child to be killed", watch=sup)
    finally:
        if pid_alive(stopped):
            os.kill(stopped, signal.SIGKILL)


def test_no_child_waits_when_asked_for_none(manager: JobManager, supervisor) -> None:
    sup = supervisor("--max-concurrent-jobs", "2", "--no-waiting-children")
    server = wait_until(lambda: sup.status().get("fork_server_pid"), 30, "the fork server")
    ran = _run(manager, sup)
    assert ran["ppid"] == server
    # Every child of the fork server ran a job, or is running one: none waits.
    assert sup.status()["waiting_children"] == []
    assert Path(f"/proc/{server}/task/{server}/children").read_text().split() == []


def test_waiting_children_end_with_the_supervisor(manager: JobManager, supervisor) -> None:
    sup = supervisor("--max-concurrent-jobs", "3")
    waiting = _waiting(sup, 3)
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0
    wait_until(lambda: not any(map(pid_alive, waiting)), 10, "the waiting children to end")


def test_a_waiting_child_waits_in_its_cgroup_and_its_job_gets_its_own_limits(
    manager: JobManager, supervisor
) -> None:
    """In a sandbox the child joins its cgroup while it waits (a move into a cgroup can take
    milliseconds); the job's own limits are written into it when the job comes."""
    if os.environ.get("CI") != "true" or os.geteuid() != 0:
        pytest.skip("needs root and cgroups (runs under CI=true)")
    sandbox = detect("auto")
    sandbox.close()
    if sandbox.kind == "none":
        pytest.skip(f"no cgroup can be managed here: {sandbox.why}")
    sup = supervisor("--max-concurrent-jobs", "1", "--sandbox", "cgroup", "--memory-limit", "300")
    [waiting] = _waiting(sup, 1)
    # It joins its group once forked (its pid is told at once), and before it reads a job.
    wait_until(lambda: in_job_group(waiting), 10, "the waiting child in its cgroup", watch=sup)
    ran = _run(manager, sup, memory_limit_mb=120)
    assert ran["pid"] == waiting
    assert int(ran["memory_limit"]) == 120 << 20
    # The one forked in its place (a status file written before the job may still list it).
    [waiting] = wait_until(
        lambda: (w := _waiting(sup, 1)) != [ran["pid"]] and w, 30, "another", watch=sup
    )
    ran = _run(manager, sup)
    assert ran["pid"] == waiting
    assert int(ran["memory_limit"]) == 300 << 20  # the next job's own: the supervisor's
