"""Jobs are forked by the supervisor's fork server, a small process without the database
stack; without it (asked for, or gone) the supervisor forks them itself, and nothing is lost."""

from __future__ import annotations

import ctypes
import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import AGENT_CONFIG, pid_alive, wait_until
from support import agent_job, finished

from taiat import JobManager, JobStatus


@contextmanager
def held_by_a_tracer(pid: int) -> Iterator[None]:
    """Hold process `pid` as a debugger does (PTRACE_SEIZE, PTRACE_INTERRUPT), then let it go."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    seize, interrupt, detach, wall = 0x4206, 0x4207, 17, 0x40000000
    if libc.ptrace(seize, pid, None, None) != 0:
        pytest.skip(f"cannot trace the fork server: {os.strerror(ctypes.get_errno())}")
    try:
        assert libc.ptrace(interrupt, pid, None, None) == 0
        os.waitpid(pid, wall)  # held
        yield
    finally:
        libc.ptrace(detach, pid, None, None)


def test_jobs_are_forked_by_the_fork_server(manager: JobManager, supervisor) -> None:
    sup = supervisor("--max-concurrent-jobs", "2")
    server_pid = wait_until(lambda: sup.status().get("fork_server_pid"), 30, "the fork server")
    assert server_pid != sup.pid
    job = manager.create_job("agent", "who forked me", payload={"agent_name": "parent_pid"})
    done = wait_until(lambda: finished(manager, job.id), 30, "the job", watch=sup)
    assert done.status is JobStatus.COMPLETED
    assert done.result == server_pid
    [attempt] = manager.get_attempts(job.id)
    assert attempt.outcome == "completed" and attempt.exit_code == 0
    # The job's own figures: its peak memory is that of a small process, not the supervisor's.
    assert 0 < attempt.peak_rss_bytes < 45 << 20
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0
    wait_until(lambda: not pid_alive(server_pid), 10, "the fork server to exit")


def test_dependency_results_reach_the_job_without_the_database_stack(
    manager: JobManager, supervisor
) -> None:
    """The supervisor reads a job's dependency results and sends them with it, so the job's
    small process need not load psycopg and SQLAlchemy to learn them."""
    first = manager.create_job(**agent_job("first", "plain", value=7))
    second = manager.create_job(
        "agent", "second", payload={"agent_name": "db_stack_loaded"}, dependencies=[first.id]
    )
    sup = supervisor()
    done = wait_until(lambda: finished(manager, second.id), 30, "the second job", watch=sup)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert done.result == {
        "results": {first.id: manager.get_job(first.id).result},
        "sqlalchemy": False,
    }


def test_a_job_the_fork_server_has_not_told_of_is_shown_without_a_pid(
    manager: JobManager, supervisor, tmp_path
) -> None:
    """A launch does not wait for the fork: the status file lists the job once its pid is
    known, or after a second without it (a server held up), with no pid."""
    # Each child forked when its job comes: a child forked ahead gets its job straight from the
    # supervisor, and runs it whatever the server does.
    sup = supervisor("--no-waiting-children")
    server_pid = wait_until(lambda: sup.status().get("fork_server_pid"), 30, "the fork server")
    pid_file = tmp_path / "job.pid"
    # Held by a debugger, not stopped by a signal: a server found stopped is killed.
    with held_by_a_tracer(server_pid):
        job = manager.create_job(**agent_job("late", "sleep", seconds=60, pid_file=str(pid_file)))
        [entry] = wait_until(lambda: sup.status()["running"], 30, "the job listed", watch=sup)
        assert entry["job_id"] == job.id and entry["pid"] is None
        assert not pid_file.exists()  # not forked: the server is held
    assert sup.status()["fork_server_pid"] == server_pid
    job_pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), 30, "the fork"))
    wait_until(lambda: sup.status()["running"][0]["pid"] == job_pid, 30, "its pid", watch=sup)
    assert manager.cancel_job(job.id)
    wait_until(lambda: not pid_alive(job_pid), 30, "the job to be killed", watch=sup)


def test_each_child_of_the_fork_server_has_its_own_random_seed(
    manager: JobManager, supervisor
) -> None:
    """The server forks without the interpreter's hooks, `random`'s reseed among them: it
    reseeds itself, or every job would draw the same numbers."""
    sup = supervisor("--max-concurrent-jobs", "2")
    jobs = [manager.create_job(**agent_job(f"draw {i}", "random_draw")) for i in range(4)]
    done = [wait_until(lambda j=j: finished(manager, j.id), 30, j.name, watch=sup) for j in jobs]
    assert all(job.status is JobStatus.COMPLETED for job in done)
    assert len({job.result for job in done}) == 4


def test_a_child_of_the_fork_server_runs_threads_and_logs(manager: JobManager, supervisor) -> None:
    sup = supervisor()
    job = manager.create_job(**agent_job("threads", "threads"))
    done = wait_until(lambda: finished(manager, job.id), 30, "the job", watch=sup)
    assert done.status is JobStatus.COMPLETED, done.error_message
    expected = {"joined": True, "main_is_current": True, "main_ident": True, "threads": 1}
    assert done.result == expected


def test_fork_hooks_of_the_agents_modules_run_for_every_job(
    manager: JobManager, supervisor
) -> None:
    """A module the executors load registers fork hooks: each runs once a fork, in its place."""
    config = {**AGENT_CONFIG, "hooks_seen": "fork_hooks:hooks_seen"}
    sup = supervisor("--max-concurrent-jobs", "1", env={"TAIAT_AGENT_CONFIG": json.dumps(config)})
    results = []
    for number in range(2):
        job = manager.create_job(**agent_job(f"hooks {number}", "hooks_seen"))
        results.append(wait_until(lambda j=job: finished(manager, j.id), 30, "the job", watch=sup))
    first, second = (job.result for job in results)
    assert first["events"][-2:] == ["before", f"child {first['pid']}"]
    # The server's own events, from the fork of the first job, came before the second's.
    assert second["events"] == ["parent", "before", f"child {second['pid']}"]


def test_without_the_fork_server_the_supervisor_forks(manager: JobManager, supervisor) -> None:
    sup = supervisor("--no-fork-server")
    job = manager.create_job("agent", "who forked me", payload={"agent_name": "parent_pid"})
    done = wait_until(lambda: finished(manager, job.id), 30, "the job", watch=sup)
    assert done.result == sup.pid
    assert sup.status()["fork_server_pid"] is None


def test_a_fork_server_killed_from_outside_is_replaced_and_costs_no_retry(
    manager: JobManager, supervisor, tmp_path
) -> None:
    sup = supervisor("--max-concurrent-jobs", "2")
    server_pid = wait_until(lambda: sup.status().get("fork_server_pid"), 30, "the fork server")
    pid_file = tmp_path / "sleeper.pid"
    sleeper = manager.create_job(
        **agent_job("sleeper", "sleep", seconds=60, pid_file=str(pid_file)), max_retries=0
    )
    job_pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), 30, "the job"))
    pid_file.unlink()
    os.kill(server_pid, signal.SIGKILL)

    # Its child died with it, and was reaped by the supervisor; nothing says the job did it,
    # so it goes back to pending with no retry spent, and runs again.
    wait_until(lambda: not pid_alive(job_pid), 10, "the job's child to die with the server")
    again = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), 30, "the rerun"))
    assert manager.get_job(sleeper.id).retry_count == 0
    [first, *_] = manager.get_attempts(sleeper.id)
    assert first.outcome == "stopped" and first.exit_signal == signal.SIGKILL
    assert f"its fork server (pid {server_pid}) was killed by signal 9 (SIGKILL)" in (
        first.error_message
    )
    # A new fork server forks the jobs, not the supervisor.
    new_server = wait_until(
        lambda: sup.status().get("fork_server_pid") not in (None, server_pid) and sup.status(),
        30,
        "a new fork server",
        watch=sup,
    )["fork_server_pid"]
    after = manager.create_job("agent", "after", payload={"agent_name": "parent_pid"})
    done = wait_until(lambda: finished(manager, after.id), 30, "a later job", watch=sup)
    assert done.result == new_server
    assert manager.cancel_job(sleeper.id)
    wait_until(lambda: not pid_alive(again), 30, "the rerun to be stopped", watch=sup)


def _bystanders(manager: JobManager, tmp_path: Path, seconds: float) -> tuple[list, list[Path]]:
    """Two jobs with no retry to spare that sleep `seconds` beside a misbehaving one, and the
    files where each tells its pid once it runs."""
    pid_files = [tmp_path / f"sleeper-{number}.pid" for number in range(2)]
    sleepers = [
        manager.create_job(
            **agent_job(f"sleeper {number}", "sleep", seconds=seconds, pid_file=str(path)),
            max_retries=0,
        )
        for number, path in enumerate(pid_files)
    ]
    return sleepers, pid_files


def test_a_job_that_kills_its_fork_server_is_blamed_and_its_bystanders_are_not(
    manager: JobManager, supervisor, tmp_path
) -> None:
    """`os.kill(os.getppid(), SIGKILL)` in a job kills its fork server, and the children of
    every job running there die with it. Those that sent their results keep them; the others
    go back to pending with no retry spent, and each runs next alone, in a fork server of its
    own: the one that kills that one too is the one to blame."""
    sup = supervisor("--max-concurrent-jobs", "4")
    server_pid = wait_until(lambda: sup.status().get("fork_server_pid"), 30, "the fork server")
    go = tmp_path / "go"
    sleepers, pid_files = _bystanders(manager, tmp_path, seconds=6)
    never = str(tmp_path / "never")
    lingering = manager.create_job(
        **agent_job("lingering", "linger", marker=never, pid_file=str(tmp_path / "linger.pid")),
        max_retries=0,
    )
    killer = manager.create_job(
        **agent_job("killer", "kill_parent", wait_for=str(go)), max_retries=0
    )
    wait_until(
        lambda: all(p.exists() for p in pid_files) and sup.status().get("finishing") == 1,
        30,
        "the bystanders to run, and the lingering one to send its result",
        watch=sup,
    )
    go.touch()
    jobs = [*sleepers, lingering, killer]
    done = {
        j.id: wait_until(lambda j=j: finished(manager, j.id), 90, j.name, watch=sup) for j in jobs
    }

    for sleeper in sleepers:
        assert done[sleeper.id].status is JobStatus.COMPLETED, done[sleeper.id].error_message
        assert done[sleeper.id].retry_count == 0
        first, second = manager.get_attempts(sleeper.id)
        # Not blamed (and, should its pid not have been told yet, not known to have started).
        assert first.outcome == "stopped" and f"fork server (pid {server_pid})" in (
            first.error_message
        )
        assert second.outcome == "completed"
    assert done[lingering.id].status is JobStatus.COMPLETED
    assert done[lingering.id].result == {"lingered": True}
    [lingered] = manager.get_attempts(lingering.id)
    assert lingered.outcome == "completed" and lingered.exit_signal == signal.SIGKILL

    blamed = done[killer.id]
    assert blamed.status is JobStatus.FAILED
    assert blamed.error_message.startswith("killed its fork server (pid ")
    assert [a.outcome for a in manager.get_attempts(killer.id)] == ["stopped", "crashed"]
    new_server = sup.status()["fork_server_pid"]
    assert new_server not in (None, server_pid) and pid_alive(new_server)

    # A second such job kills the new server, not the supervisor, and is blamed in turn.
    again = manager.create_job(**agent_job("killer again", "kill_parent"), max_retries=0)
    blamed = wait_until(lambda: finished(manager, again.id), 60, "the second killer", watch=sup)
    assert blamed.status is JobStatus.FAILED
    assert blamed.error_message.startswith("killed its fork server (pid ")
    after = manager.create_job("agent", "after", payload={"agent_name": "parent_pid"})
    done_after = wait_until(lambda: finished(manager, after.id), 30, "a later job", watch=sup)
    assert done_after.result == sup.status()["fork_server_pid"] != new_server
    assert sup.process.poll() is None
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0


def test_a_job_found_to_kill_its_fork_server_runs_alone_when_retried(
    manager: JobManager, supervisor
) -> None:
    sup = supervisor("--max-concurrent-jobs", "2")
    server_pid = wait_until(lambda: sup.status().get("fork_server_pid"), 30, "the fork server")
    killer = manager.create_job(**agent_job("killer", "kill_parent"), max_retries=1)
    blamed = wait_until(lambda: finished(manager, killer.id), 60, "the killer", watch=sup)
    assert blamed.status is JobStatus.FAILED
    outcomes = [a.outcome for a in manager.get_attempts(killer.id)]
    assert outcomes == ["stopped", "crashed", "crashed"]
    # It killed the jobs' fork server once; after that, only fork servers of its own.
    assert sup.log().count("was lost (it exited)") == 1
    new_server = sup.status()["fork_server_pid"]
    assert new_server not in (None, server_pid) and pid_alive(new_server)


def test_a_job_that_stops_its_fork_server_is_blamed_and_its_bystanders_are_not(
    manager: JobManager, supervisor, tmp_path
) -> None:
    """`os.kill(os.getppid(), SIGSTOP)`, which no process can hold back, leaves the server
    forking and reaping nothing: every job it forked would wait for it forever, and the
    supervisor with them. It is killed as one the job killed: the bystanders go back to pending
    with no retry spent, and the job, run alone, is blamed when it stops its own server too."""
    sup = supervisor("--max-concurrent-jobs", "3")
    server_pid = wait_until(lambda: sup.status().get("fork_server_pid"), 30, "the fork server")
    go = tmp_path / "go"
    sleepers, pid_files = _bystanders(manager, tmp_path, seconds=3)
    stopper = manager.create_job(
        **agent_job("stopper", "kill_parent", wait_for=str(go), signum=int(signal.SIGSTOP)),
        max_retries=0,
    )
    wait_until(lambda: all(p.exists() for p in pid_files), 30, "the bystanders", watch=sup)
    go.touch()
    done = {
        j.id: wait_until(lambda j=j: finished(manager, j.id), 90, j.name, watch=sup)
        for j in [*sleepers, stopper]
    }

    for sleeper in sleepers:
        assert done[sleeper.id].status is JobStatus.COMPLETED, done[sleeper.id].error_message
        assert done[sleeper.id].retry_count == 0
        first, second = manager.get_attempts(sleeper.id)
        assert first.outcome == "stopped"
        assert f"its fork server (pid {server_pid}) was stopped (SIGSTOP)" in first.error_message
        assert second.outcome == "completed"
    blamed = done[stopper.id]
    assert blamed.status is JobStatus.FAILED
    assert blamed.error_message.startswith("stopped its fork server (pid ")
    assert [a.outcome for a in manager.get_attempts(stopper.id)] == ["stopped", "crashed"]
    assert not pid_alive(server_pid)
    after = manager.create_job("agent", "after", payload={"agent_name": "parent_pid"})
    done_after = wait_until(lambda: finished(manager, after.id), 30, "a later job", watch=sup)
    assert done_after.result == sup.status()["fork_server_pid"] not in (None, server_pid)
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0


def test_signals_a_job_sends_its_fork_server_do_not_end_it(manager: JobManager, supervisor) -> None:
    """Only SIGKILL ends the server: every other signal that would is held back."""
    sup = supervisor("--max-concurrent-jobs", "2")
    server_pid = wait_until(lambda: sup.status().get("fork_server_pid"), 30, "the fork server")
    signals = [signal.SIGUSR1, signal.SIGALRM, signal.SIGTERM, signal.SIGABRT, signal.SIGRTMIN]
    jobs = [
        manager.create_job(**agent_job(f"send {signum}", "kill_parent", signum=signum))
        for signum in signals
    ]
    for job, signum in zip(jobs, signals, strict=True):
        done = wait_until(lambda j=job: finished(manager, j.id), 30, job.name, watch=sup)
        assert done.status is JobStatus.COMPLETED and done.result == signum, done.error_message
        assert [a.outcome for a in manager.get_attempts(job.id)] == ["completed"]
    assert pid_alive(server_pid) and sup.status()["fork_server_pid"] == server_pid
