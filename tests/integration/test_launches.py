"""How a job is launched, and a launch that never becomes a child: the fork server says it could
not fork, or says nothing. The job never ran, so it goes back to pending with no retry spent,
and the attempt says why. Executors that cannot be sent to a fork server stay with the
supervisor, which forks their jobs itself.

The far end of the fork server's socket is played by the test, with the server's own framing;
the later tests have a real server, whose started children do not wake the supervisor, and one
a whole supervisor in this process."""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from support import finished, no_free_descriptor, poll

from taiat import JobManager, JobStatus
from taiat.agents.executors import AgentExecutor
from taiat.forking import posix, wire
from taiat.forking import server as fork_server
from taiat.forking.job_process import DirectLauncher, JobProcess
from taiat.forking.launchers import Forking
from taiat.forking.server import ForkServer
from taiat.jobs import Job
from taiat.supervisor.daemon import Supervisor, SupervisorConfig
from taiat.supervisor.recorder import Record, Recorder, attempt_of

WORKER = "test-worker"


@pytest.fixture
def server() -> Iterator[tuple[ForkServer, socket.socket]]:
    """A fork server handle whose far end is the test's; its "process" is a stand-in."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.settimeout(10)  # a message that never comes fails the test rather than hanging it
    stand_in = subprocess.Popen(["sleep", "60"])
    handle = ForkServer(stand_in, ours)
    try:
        yield handle, theirs
    finally:
        stand_in.kill()
        handle.close()
        theirs.close()


def asked_to_run(peer: socket.socket) -> int:
    """Take the "run" message the supervisor's side sent; its token."""
    received = wire.receive_message(peer)
    assert received is not None
    (kind, token, *_), fds = received
    # The result pipe, the stdout and stderr pipes, the stack dumps' pipe.
    assert kind == "run" and len(fds) == 4
    for fd in fds:
        os.close(fd)
    return token


def launch(manager: JobManager, server: ForkServer, agent: str = "noop") -> tuple[Job, JobProcess]:
    manager.create_job("agent", "never forked", payload={"agent_name": agent}, max_retries=1)
    [job] = manager.claim_jobs(WORKER, 1)
    proc = JobProcess(job, timeout=None, memory_limit_bytes=None, max_result_bytes=1 << 20)
    proc.start(server)
    return job, proc


def test_a_fork_the_server_could_not_make_puts_the_job_back(
    manager: JobManager, server: tuple[ForkServer, socket.socket]
) -> None:
    handle, peer = server
    job, proc = launch(manager, handle)
    token = asked_to_run(peer)
    assert proc.known_pid is None and proc.try_reap() is None  # not told anything yet

    wire.send_message(peer, ("failed", token, "cannot fork: [Errno 11] Resource unavailable"))
    handle.poll()
    ending = proc.try_reap()
    assert ending is not None and not ending.ok
    assert ending.cause == "stopped"
    assert ending.error == (
        "never started: the fork server could not start it: cannot fork: [Errno 11] "
        "Resource unavailable"
    )
    assert proc.pid == 0 and not handle.gone  # the server itself is still there

    recorder = Recorder(manager.port, lambda: None)
    recorder.add(Record(job, ending, attempt_of(proc, ending, WORKER, "here")))
    assert recorder.settle(WORKER, 0).jobs == []
    after = manager.get_job(job.id)
    assert after.status is JobStatus.PENDING and after.retry_count == 0
    [attempt] = manager.get_attempts(job.id)
    assert attempt.outcome == "stopped" and attempt.pid is None
    assert attempt.error_message.startswith("never started: the fork server could not")


def test_a_server_that_says_nothing_is_given_up_and_killed(
    manager: JobManager, server: tuple[ForkServer, socket.socket], monkeypatch
) -> None:
    monkeypatch.setattr(fork_server, "LAUNCH_TIMEOUT", 0.2)
    handle, peer = server
    _, proc = launch(manager, handle)
    asked_to_run(peer)
    assert proc.pid == 0  # waited for it, in vain
    assert handle.gone
    assert handle.process.wait(10) == -signal.SIGKILL  # so that it forks nothing more
    ending = proc.try_reap()
    assert ending is not None and ending.cause == "stopped"
    assert ending.error == ("not known to have started: the fork server was lost before it said so")
    with pytest.raises(fork_server.ForkServerError, match="is gone"):
        launch(manager, handle)


def test_after_a_failed_fork_the_supervisor_forks_jobs_itself(
    manager: JobManager, server: tuple[ForkServer, socket.socket]
) -> None:
    handle, peer = server
    forking = Forking([], fork_server=False)
    forking.server = forking.launcher = handle  # as if it had started this server
    assert forking.server_in_use is handle
    _, proc = launch(manager, forking.launcher)
    wire.send_message(peer, ("failed", asked_to_run(peer), "cannot fork: out of memory"))
    handle.poll()
    ending = proc.try_reap()
    assert ending is not None and ending.cause == "stopped"
    forking.ended(proc)
    assert isinstance(forking.launcher, DirectLauncher)
    assert forking.server_in_use is None and not handle.gone
    # Not for good: a while later, the server is tried again (a job's parent is then no longer
    # the supervisor, which `os.kill(os.getppid(), SIGKILL)` would end).
    assert forking.retry_server_at is not None
    forking.retry_server_at = 0.0  # the while is over
    assert forking.replace_lost()
    assert forking.server_in_use is handle and forking.retry_server_at is None


def test_executors_that_cannot_travel_stay_with_the_supervisor(database_url: str, caplog) -> None:
    """A registry of lambdas cannot be sent to a fresh process: the supervisor forks itself."""
    supervisor = Supervisor(
        SupervisorConfig(database_url=database_url, poll_interval=0.1, max_concurrent_jobs=1),
        agent_registry={"local": lambda: os.getppid()},
    )
    manager = JobManager(database_url)
    job = manager.create_job("agent", "local", payload={"agent_name": "local"})
    runner = threading.Thread(target=supervisor.run)
    with caplog.at_level(logging.WARNING, logger="taiat.supervisor.daemon"):
        runner.start()
        try:
            done = poll(lambda: finished(manager, job.id), 30, "the job")
        finally:
            supervisor.stop()
            runner.join(30)
            manager.engine.dispose()
            supervisor.manager.engine.dispose()
    assert not runner.is_alive()
    assert done.status is JobStatus.COMPLETED
    assert done.result == os.getpid()
    assert "no fork server (the executors cannot be sent to it" in caplog.text


def test_a_lost_server_that_cannot_be_replaced_now_is_replaced_later(
    manager: JobManager,
) -> None:
    """No process or descriptor to be had (a job's fork bomb) when the server is lost: the
    supervisor forks the jobs itself for a while, rather than end, then starts a new server."""
    forking = Forking([AgentExecutor({"getpid": os.getpid})], fork_server=True)
    try:
        lost = forking.server
        assert lost is not None
        lost.process.kill()
        assert select.select([lost], [], [], 10)[0] == [lost]
        lost.poll()
        assert lost.gone
        with no_free_descriptor():
            assert forking.replace_lost()  # no exception: the supervisor's loop goes on
        assert isinstance(forking.launcher, DirectLauncher) and forking.server_in_use is None
        assert not forking.replace_lost()  # not yet
        assert forking.retry_server_at is not None
        forking.retry_server_at = 0.0
        assert forking.replace_lost()
        new = forking.server_in_use
        assert new is not None and new is not lost and new.alive
        job, proc = launch(manager, new, "getpid")
        ending = poll(lambda: new.poll() or proc.read_available() or proc.try_reap(), 30, "end")
        assert ending.ok and json.loads(ending.result) == proc.pid
    finally:
        forking.close()


def test_a_launch_to_a_stopped_server_does_not_hold_the_supervisor(
    manager: JobManager, monkeypatch
) -> None:
    """A job larger than the server's socket holds waits for the server to read it; a server
    stopped (SIGSTOP, by one of its jobs) before the supervisor saw it never will. The launch
    gives up, and the server ends as one stopped by someone else (see `end_if_stopped`)."""
    monkeypatch.setattr(fork_server, "LAUNCH_TIMEOUT", 0.5)
    with real_server() as server:
        os.kill(server.pid, signal.SIGSTOP)
        poll(lambda: posix.is_stopped(server.pid), 10, "the server stopped")
        big = "x" * (8 << 20)
        manager.create_job("agent", "large payload", payload={"agent_name": "noop", "big": big})
        [job] = manager.claim_jobs(WORKER, 1)
        proc = JobProcess(job, timeout=None, memory_limit_bytes=None, max_result_bytes=1 << 20)
        outcome: list[BaseException | None] = []

        def start() -> None:
            try:
                proc.start(server)
            except BaseException as exc:  # noqa: BLE001 - handed to the test below
                outcome.append(exc)
            else:
                outcome.append(None)

        starter = threading.Thread(target=start, daemon=True)
        starter.start()
        starter.join(30)
        assert not starter.is_alive(), "the launch still waits for the stopped server"
        [error] = outcome
        assert isinstance(error, fork_server.ForkServerError) and "was stopped" in str(error)
        assert server.gone and server.end is not None and server.end.stopped
        assert server.end.killed and not server.alive


@contextmanager
def real_server(**agents: Callable[..., Any]) -> Iterator[ForkServer]:
    server = ForkServer.start([AgentExecutor(agents)])
    try:
        yield server
    finally:
        server.close()


def test_a_started_child_does_not_wake_the_supervisor_its_end_does(manager: JobManager) -> None:
    """A real server: the pid is told apart from the socket the supervisor waits on."""
    with real_server(pause=signal.pause) as server:
        _, proc = launch(manager, server, "pause")
        # Known without a read of the socket the supervisor waits on, which stays quiet.
        pid = poll(lambda: proc.known_pid, 10, "the pid")
        assert os.getpgid(pid) == pid
        assert select.select([server], [], [], 0)[0] == []
        os.killpg(pid, signal.SIGKILL)
        assert select.select([server], [], [], 10)[0] == [server]  # its end
        server.poll()
        ending = proc.try_reap()
        assert ending is not None and ending.exit_signal == signal.SIGKILL
        assert ending.cause == "crashed"


def test_an_end_read_from_the_server_has_its_pid_read_with_it(manager: JobManager) -> None:
    """The server tells a child's pid before its end: one read of what woke the supervisor
    takes in both, though no one asked for the pid."""
    with real_server(getpid=os.getpid) as server:
        _, proc = launch(manager, server, "getpid")
        assert select.select([server], [], [], 10)[0] == [server]  # its end, and only that
        server.poll()
        ending = server.reap(proc.handle)  # none while its pid is unknown
        assert ending is not None and ending.status == 0
        proc.read_available()  # and close the result pipe


def test_a_launch_untold_when_its_server_was_killed_runs_alone_next(
    manager: JobManager, server: tuple[ForkServer, socket.socket]
) -> None:
    """Killed (not by the supervisor) before it told a pid: the child may have started and
    killed it. Not blamed for it: back to pending, no retry spent, and alone next time."""
    handle, peer = server
    _, proc = launch(manager, handle)
    asked_to_run(peer)
    handle.process.kill()  # as a job's child would: the supervisor did not do it
    peer.close()
    assert select.select([handle], [], [], 10)[0] == [handle]
    handle.poll()
    assert handle.gone and handle.end is not None and handle.end.killed
    ending = proc.try_reap()
    assert ending is not None and ending.cause == "stopped"
    assert ending.error == (
        f"not known to have started: its fork server (pid {handle.pid}) was killed by signal 9 "
        "(SIGKILL) before it said so"
    )
    assert proc.suspect and proc.pid == 0


def test_a_server_given_up_by_the_supervisor_blames_no_launch(
    manager: JobManager, server: tuple[ForkServer, socket.socket], monkeypatch
) -> None:
    monkeypatch.setattr(fork_server, "LAUNCH_TIMEOUT", 0.2)
    handle, peer = server
    _, proc = launch(manager, handle)
    asked_to_run(peer)
    assert proc.pid == 0  # no answer: given up, and killed by the supervisor
    assert handle.end is not None and handle.end.by_supervisor and not handle.end.killed
    ending = proc.try_reap()
    assert ending is not None and ending.cause == "stopped" and not proc.suspect
