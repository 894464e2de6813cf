"""`--job-user`: each job's child becomes another user before it runs the job, so that it
cannot signal its supervisor or its fork server, and its result (a large one too) still comes
back. Switching users needs root: these run under CI=true and skip elsewhere."""

from __future__ import annotations

import errno
import os
import pwd
import signal
from pathlib import Path
from typing import Any

import pytest
from conftest import HERE, pid_alive, wait_until
from support import agent_job, finished

from taiat import JobManager
from taiat.jobs import JobStatus

LAUNCHERS = {"fork server": (), "direct fork": ("--no-fork-server",)}


@pytest.fixture
def nobody() -> pwd.struct_passwd:
    if os.environ.get("CI") != "true":
        pytest.skip("switching users needs root (runs under CI=true)")
    if os.geteuid() != 0:
        pytest.fail("the job user tests need root, and CI=true is set")
    return pwd.getpwnam("nobody")


def _as_nobody(supervisor: Any, launcher: str, *args: str) -> Any:
    """A supervisor whose jobs run as nobody, forked by `launcher`, the agents' folder (which
    nobody can read) on their path."""
    return supervisor("--job-user", "nobody", "--path", str(HERE), *LAUNCHERS[launcher], *args)


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_job_run_as_nobody_cannot_signal_its_supervisor_and_its_result_comes_back(
    launcher: str,
    nobody: pwd.struct_passwd,
    manager: JobManager,
    supervisor: Any,
    tmp_path: Path,
) -> None:
    # The agents' folder is readable by nobody; the test's own tmp_path (cwd) is not.
    sup = _as_nobody(supervisor, launcher)
    job = manager.create_job(
        **agent_job("probe", "try_the_supervisor", supervisor_pid=sup.pid,
                    status_file=str(sup.status_file))
    )  # fmt: skip
    wait_until(lambda: finished(manager, job.id), 60, "the probe job", watch=sup)

    done = manager.get_job(job.id)
    assert done is not None and done.status == JobStatus.COMPLETED, done
    seen = done.result
    assert seen["uid"] == seen["euid"] == nobody.pw_uid
    assert seen["gid"] == nobody.pw_gid
    assert set(seen["groups"]) == set(os.getgrouplist("nobody", nobody.pw_gid))
    assert (seen["home"], seen["user"], seen["logname"]) == (nobody.pw_dir, "nobody", "nobody")
    assert seen["cwd_usable"]
    assert seen["probe_supervisor"] == errno.EPERM
    assert seen["sigterm_supervisor"] == errno.EPERM
    assert seen["probe_parent"] == errno.EPERM  # the fork server, or the supervisor itself
    assert seen["become_root"] == errno.EPERM
    assert seen["read_status"] == errno.EACCES  # under the test's tmp_path, closed to others
    # Neither the supervisor's database connections nor its files came down to the job.
    assert seen["open_files"] == []
    assert seen["stdin_is_null"]
    assert seen["settings"] == []  # TAIAT_AGENT_CONFIG, say, was the supervisor's

    # Written now and then: the file read at once may still be the one written at start.
    status = wait_until(
        lambda: (lambda st: st if st.get("state") == "running" else None)(sup.status()),
        30, "the status file of a running supervisor", watch=sup,
    )  # fmt: skip
    assert status["job_user"] == "nobody"
    assert "jobs run as user nobody (uid 65534" in sup.log()
    direct = "are forked from the supervisor, and carry a copy of its memory" in sup.log()
    assert direct == (launcher == "direct fork")
    assert sup.process.poll() is None  # the SIGTERM never reached it


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_large_result_of_a_job_run_as_nobody_comes_back(
    launcher: str,
    nobody: pwd.struct_passwd,
    database_url: str,
    manager: JobManager,
    supervisor: Any,
) -> None:
    sup = _as_nobody(supervisor, launcher, "--max-result-bytes", str(64 << 20))
    job = manager.create_job(**agent_job("large", "huge", megabytes=24))
    wait_until(lambda: finished(manager, job.id), 120, "the large result", watch=sup)

    done = manager.get_job(job.id)
    assert done is not None and done.status == JobStatus.COMPLETED, done
    assert done.result == "x" * (24 << 20)
    if database_url.startswith("postgresql"):  # stored on the side, as it crossed
        assert "its large result is stored" in sup.log()


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_job_run_as_nobody_dies_with_its_supervisor(
    launcher: str, nobody: pwd.struct_passwd, manager: JobManager, supervisor: Any
) -> None:
    sup = _as_nobody(supervisor, launcher)
    manager.create_job(**agent_job("long", "sleep", seconds=120))
    running = wait_until(lambda: sup.status().get("running"), 30, "the running job", watch=sup)
    child = running[0]["pid"]
    wait_until(lambda: _uid_of(child) == nobody.pw_uid, 10, "the child to be nobody", watch=sup)

    sup.signal(signal.SIGKILL)
    sup.wait(10)
    # Death with the parent, which the kernel forgets when the user changes, was set again.
    wait_until(lambda: not pid_alive(child), 10, "the child to die with its supervisor")


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_job_run_as_nobody_that_overruns_is_stopped_by_its_supervisor(
    launcher: str, nobody: pwd.struct_passwd, manager: JobManager, supervisor: Any
) -> None:
    sup = _as_nobody(supervisor, launcher)
    spec = agent_job("overrun", "stubborn", seconds=120)  # ignores SIGTERM: SIGKILL it is
    job = manager.create_job(**{**spec, "timeout_seconds": 1, "max_retries": 0})
    wait_until(lambda: finished(manager, job.id), 60, "the job to time out", watch=sup)

    done = manager.get_job(job.id)
    assert done is not None and done.status == JobStatus.FAILED
    assert "timed out after 1 s" in (done.error_message or "")
    (attempt,) = manager.get_attempts(job.id)
    assert attempt.outcome == "timed_out"
    assert attempt.exit_signal == signal.SIGKILL


def _uid_of(pid: int) -> int | None:
    """The real uid of process `pid`, from /proc; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("Uid:"))
    except (OSError, StopIteration):
        return None


def test_a_path_the_job_user_cannot_read_is_refused(
    nobody: pwd.struct_passwd, supervisor: Any, tmp_path: Path
) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    sup = supervisor("--job-user", "nobody", "--path", str(closed))
    assert sup.wait() == 78
    assert f"jobs run as user 'nobody' (--job-user), who cannot read {closed}," in sup.log()
