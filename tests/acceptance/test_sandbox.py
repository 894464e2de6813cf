"""A cgroup per job (`--sandbox`): the kernel caps each job's memory and processes, counts every
process the job starts, and none outlives it. Real kernel, real supervisor: these run where
root can manage cgroups (under CI=true), and skip elsewhere with the reason."""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import shutil
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
from conftest import ROOT, pid_alive, wait_until
from support import agent_job, finished

from taiat import JobManager, JobStatus
from taiat.sandbox.cgroups import parse_own_cgroups
from taiat.sandbox.detect import detect

MiB = 1 << 20


@pytest.fixture
def database_url(pg_database_url: str) -> str:
    """PostgreSQL only: what is tested is the kernel's side, the same whatever the database."""
    return pg_database_url


@pytest.fixture(autouse=True)
def cgroups_here() -> str:
    """The sandbox this host gives a root supervisor; skips unless under CI, or where no
    cgroup can be managed."""
    if os.environ.get("CI") != "true":
        pytest.skip("needs root and cgroups (runs under CI=true)")
    if os.geteuid() != 0:
        pytest.skip("needs root to manage cgroups")
    sandbox = detect("auto")
    sandbox.close()
    if sandbox.kind == "none":
        pytest.skip(f"no cgroup can be managed here: {sandbox.why}")
    return sandbox.kind


def _kill_if_alive(pid_file: Path) -> None:
    if pid_file.exists() and pid_alive(int(pid_file.read_text())):
        os.kill(int(pid_file.read_text()), signal.SIGKILL)


def _kill_all_in(pid_file: Path) -> None:
    """SIGKILL each process whose pid is a line of `pid_file`, if alive."""
    for pid in pid_file.read_text().split() if pid_file.exists() else []:
        if pid_alive(int(pid)):
            os.kill(int(pid), signal.SIGKILL)


def test_the_status_file_says_which_sandbox(supervisor, cgroups_here: str) -> None:
    sup = supervisor("--sandbox", "cgroup")
    status = wait_until(lambda: sup.status().get("state") == "running" and sup.status(), 30)
    assert status["sandbox"] == cgroups_here
    assert f"sandbox: {cgroups_here}" in sup.log()
    sup.stop()
    sup.status_file.unlink()  # the next one writes the same file
    off = supervisor("--sandbox", "none")
    wait_until(lambda: off.status().get("state") == "running", 30, watch=off)
    assert off.status()["sandbox"] == "none"


def test_memory_is_capped_by_the_kernel(manager: JobManager, supervisor) -> None:
    """2 GB as fast as it can go, under 200 MB: the kernel stops it at the limit and the ending
    says so; the group's peak never went past the limit."""
    job = manager.create_job(**agent_job("gobble", "gobble", megabytes=2048), max_retries=0)
    sup = supervisor("--memory-limit", "200", "--sandbox", "cgroup")
    done = wait_until(lambda: finished(manager, job.id), 60, "the job", watch=sup)
    assert done.status is JobStatus.FAILED
    assert done.error_message == (
        "exceeded memory limit of 200 MB (killed by the kernel's OOM killer)"
    )
    [attempt] = manager.get_attempts(job.id)
    assert attempt.outcome == "memory"
    assert 0 < attempt.peak_rss_bytes <= 200 * MiB


def test_an_escaped_grandchild_counts_and_ends_with_its_job(
    manager: JobManager, supervisor, tmp_path: Path
) -> None:
    """A double-forked, setsid grandchild holding 400 MB: in the job's peak, killed when the
    job ends, nothing of the job left."""
    pid_file = tmp_path / "escaped.pid"
    job = manager.create_job(
        **agent_job(
            "escape", "escape", pid_file=str(pid_file), megabytes=400, seconds=1, memory_first=True
        ),
        max_retries=0,
    )
    sup = supervisor("--memory-limit", "1000", "--sandbox", "cgroup")
    try:
        done = wait_until(lambda: finished(manager, job.id), 60, "the job", watch=sup)
        assert done.status is JobStatus.COMPLETED, done.error_message
        escaped = done.result["escaped"]
        [attempt] = manager.get_attempts(job.id)
        assert attempt.peak_rss_bytes >= 400 * MiB
        assert attempt.stragglers_killed == 1
        wait_until(lambda: not pid_alive(escaped), 10, "the escaped process to be killed")
    finally:
        _kill_if_alive(pid_file)
    assert sup.process.poll() is None


@pytest.mark.parametrize("forker", ["fork server", "supervisor"])
def test_stragglers_are_the_processes_a_job_left_alive(
    manager: JobManager, supervisor, tmp_path: Path, forker: str
) -> None:
    """`stragglers_killed` counts the processes of the job's group, other than the job's own,
    that were still alive when it ended: none for a job that forks nothing (or starts a thread,
    or leaves a zombie), 2 for one that leaves 2 detached grandchildren (double fork, setsid),
    1 for a grandchild left in its process group, 2 for 2 grandchildren alive when it timed out.
    Several of each, as one job after another reuses a group: each is counted, none twice."""
    specs: list[tuple[dict, int]] = []
    for n in range(3):
        specs += [
            (agent_job(f"plain {n}", "plain", value=n), 0),
            (agent_job(f"threads {n}", "threads"), 0),
            (agent_job(f"zombie {n}", "leave_behind", pid_file="", count=0, zombies=2), 0),
            (agent_job(f"two {n}", "leave_behind", pid_file=str(tmp_path / f"t{n}")), 2),
            (agent_job(f"in its group {n}", "orphan_maker", pid_file=str(tmp_path / f"g{n}")), 1),
        ]
    late = agent_job("timed out", "leave_behind", pid_file=str(tmp_path / "late"), seconds=60)
    jobs = [(manager.create_job(**spec, max_retries=0), left) for spec, left in specs]
    timed_out = manager.create_job(**late, max_retries=0, timeout_seconds=2)
    extra = ["--no-fork-server"] if forker == "supervisor" else []
    sup = supervisor("--sandbox", "cgroup", *extra)
    try:
        for job, left in jobs:
            done = wait_until(partial(finished, manager, job.id), 60, job.name, watch=sup)
            assert done.status is JobStatus.COMPLETED, done.error_message
            [attempt] = manager.get_attempts(job.id)
            assert (job.name, attempt.stragglers_killed) == (job.name, left)
        done = wait_until(lambda: finished(manager, timed_out.id), 60, "the timeout", watch=sup)
        assert done.status is JobStatus.FAILED
        [attempt] = manager.get_attempts(timed_out.id)
        assert (attempt.outcome, attempt.stragglers_killed) == ("timed_out", 2)
        left_pids = [int(p) for f in tmp_path.glob("[tg]*") for p in f.read_text().split()]
        left_pids += [int(p) for p in (tmp_path / "late").read_text().split()]
        assert len(left_pids) == 3 * 3 + 2
        wait_until(lambda: not any(map(pid_alive, left_pids)), 10, "the stragglers to be gone")
    finally:
        for pid_file in tmp_path.glob("[tg]*"):
            _kill_all_in(pid_file)
        _kill_all_in(tmp_path / "late")
    assert sup.process.poll() is None


@pytest.mark.parametrize("where", ["disk", "tmpfs"])
def test_a_jobs_peak_is_not_the_page_cache_another_left(
    manager: JobManager, supervisor, tmp_path: Path, where: str
) -> None:
    """A job writes and reads back 300 MB of a file it leaves, on disk (page cache) or in
    /dev/shm (tmpfs): charged to its group after it has ended. The no-op jobs after it, one at
    a time (under v1 in the groups it used before), record their own peak, not its file's."""
    path = tmp_path / "file" if where == "disk" else Path(f"/dev/shm/taiat-test-{os.getpid()}")
    writer = manager.create_job(
        **agent_job("writer", "write_file", path=str(path), megabytes=300, keep=True),
        max_retries=0,
    )
    after = [manager.create_job(**agent_job(f"no-op {n}", "plain", value=n)) for n in range(4)]
    sup = supervisor("--sandbox", "cgroup", "--max-concurrent-jobs", "1")
    try:
        done = wait_until(lambda: finished(manager, writer.id), 60, "the writer", watch=sup)
        assert done.status is JobStatus.COMPLETED, done.error_message
        [attempt] = manager.get_attempts(writer.id)
        assert attempt.peak_rss_bytes >= 300 * MiB  # its file's pages were charged to it
        peaks = {}
        for job in after:
            wait_until(partial(finished, manager, job.id), 60, job.name, watch=sup)
            [attempt] = manager.get_attempts(job.id)
            peaks[job.name] = attempt.peak_rss_bytes
        assert all(0 < peak < 50 * MiB for peak in peaks.values()), peaks
    finally:
        path.unlink(missing_ok=True)


@pytest.mark.parametrize("forker", ["fork server", "supervisor"])
def test_a_fork_bomb_ends_at_the_cap(
    manager: JobManager, supervisor, tmp_path: Path, forker: str
) -> None:
    """Under --max-processes 50 a fork bomb ends naming the cap; the supervisor and a job
    beside it go on untouched, and none of the bomb's processes is left."""
    bomb = manager.create_job(**agent_job("bomb", "fork_bomb", seconds=60), max_retries=0)
    neighbour = manager.create_job(**agent_job("neighbour", "busy", seconds=2))
    extra = ["--no-fork-server"] if forker == "supervisor" else []
    sup = supervisor("--max-processes", "50", "--sandbox", "cgroup", "--job-timeout", "50", *extra)
    done = wait_until(lambda: finished(manager, bomb.id), 40, "the bomb", watch=sup)
    assert done.status is JobStatus.FAILED
    assert done.error_message == "exceeded the cap of 50 processes (--max-processes)"
    other = wait_until(lambda: finished(manager, neighbour.id), 30, "the neighbour", watch=sup)
    assert other.status is JobStatus.COMPLETED, other.error_message
    [attempt] = manager.get_attempts(bomb.id)
    assert attempt.stragglers_killed is not None
    assert sup.process.poll() is None
    # Nothing of the bomb left: no process of the supervisor's but its fork server.
    servers = {sup.status().get("fork_server_pid")} - {None}

    def descendants() -> set[int]:
        found = set()
        for task in os.listdir(f"/proc/{sup.pid}/task"):
            with open(f"/proc/{sup.pid}/task/{task}/children") as children:
                found |= {int(pid) for pid in children.read().split()}
        return found - servers

    wait_until(lambda: not descendants(), 10, "the bomb's processes to be gone")


def test_a_running_job_is_in_its_group_with_its_limits(
    manager: JobManager, supervisor, cgroups_here: str
) -> None:
    """The job's own process is in a group of its own, whose files hold the supervisor's
    limits, lowered by the payload's; the supervisor is not in it."""
    spec = agent_job("sleeper", "sleep", seconds=60)
    spec["payload"] |= {"memory_limit_mb": 300, "max_processes": 40, "cpu_limit": 0.25}
    job = manager.create_job(**spec, max_retries=0)
    sup = supervisor(
        "--sandbox", "cgroup", "--memory-limit", "500", "--max-processes", "100", "--cpu-limit", "1"
    )

    def running_pid() -> int | None:
        running = sup.status().get("running") or []
        return running[0]["pid"] if running and running[0]["pid"] else None

    pid = wait_until(running_pid, 30, "the job to run", watch=sup)

    def groups(of: int) -> dict[str, str]:
        with open(f"/proc/{of}/cgroup") as text:
            lines = [line.split(":", 2) for line in text.read().splitlines()]
        return {name: path for _, names, path in lines for name in names.split(",") if name}

    mine, theirs = groups(pid), groups(sup.pid)

    def read(controller: str, name: str) -> str:
        path = Path("/sys/fs/cgroup") / controller / mine[controller].lstrip("/") / name
        return path.read_text().strip()

    if cgroups_here == "cgroup1":
        for controller in ("memory", "pids"):
            assert mine[controller] != theirs[controller]
            assert mine[controller].startswith(theirs[controller].rstrip("/") + "/taiat-")
        assert int(read("memory", "memory.limit_in_bytes")) == 300 * MiB
        assert read("pids", "pids.max") == "40"
        if "cpu" in mine and mine["cpu"] != theirs["cpu"]:
            assert read("cpu", "cpu.cfs_quota_us") == "25000"
            assert read("cpu", "cpu.cfs_period_us") == "100000"
    else:
        here = Path("/sys/fs/cgroup") / mine[""].lstrip("/")
        assert mine[""] != theirs[""]
        assert (here / "memory.max").read_text().strip() == str(300 * MiB)
        assert (here / "pids.max").read_text().strip() == "40"
    manager.cancel_job(job.id)
    wait_until(lambda: finished(manager, job.id), 30, "the job to be cancelled", watch=sup)
    wait_until(lambda: not pid_alive(pid), 10, "the job's process to be gone")


@pytest.mark.parametrize("forker", ["fork server", "supervisor"])
def test_a_process_that_left_its_jobs_group_still_ends_with_its_job(
    manager: JobManager, supervisor, tmp_path: Path, forker: str
) -> None:
    """A job as root can move a process out of its cgroup: the group's kill misses it, but as
    an orphan of the fork server (or the supervisor) outside every job's group it is killed."""
    pid_file = tmp_path / "left.pid"
    job = manager.create_job(**agent_job("leave", "leave_group", pid_file=str(pid_file)))
    extra = ["--no-fork-server"] if forker == "supervisor" else []
    sup = supervisor("--sandbox", "cgroup", *extra)
    try:
        done = wait_until(lambda: finished(manager, job.id), 60, "the job", watch=sup)
        assert done.status is JobStatus.COMPLETED, done.error_message
        assert "/taiat-" not in done.result["cgroup"]  # it did leave
        wait_until(lambda: not pid_alive(done.result["left"]), 10, "the process to be killed")
    finally:
        _kill_if_alive(pid_file)


def test_a_job_run_as_another_user_can_neither_lift_its_limit_nor_leave_its_group(
    manager: JobManager, supervisor
) -> None:
    """With --job-user the groups stay the supervisor's: the job can write none of their
    files. (Under v2, test_sandbox_cgroup2.py.)"""
    nobody = pwd.getpwnam("nobody")
    job = manager.create_job(**agent_job("lift", "lift_limits"), max_retries=0)
    sup = supervisor(
        *("--sandbox", "cgroup", "--memory-limit", "300", "--job-user", "nobody"),
        *("--path", str(Path(__file__).parent)),
    )
    done = wait_until(lambda: finished(manager, job.id), 60, "the job", watch=sup)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert done.result["uid"] == nobody.pw_uid
    assert "/taiat-" in done.result["group"]
    assert done.result["lift"] == errno.EACCES
    assert done.result["leave"] == errno.EACCES


def test_the_groups_of_a_killed_supervisor_are_removed_by_the_next(
    manager: JobManager, supervisor, cgroups_here: str, tmp_path: Path
) -> None:
    """Killed outright with its fork server (as by the OOM killer), a supervisor leaves its
    groups, and in one of them a process its job left in a session of its own; the next one to
    start under the same group ends that process and removes the groups. (Under v2 the same is
    tested in test_sandbox_cgroup2.py.)"""
    if cgroups_here != "cgroup1":
        pytest.skip("v1 here; under v2, test_sandbox_cgroup2.py tests it")
    with open("/proc/self/cgroup") as text:
        own = parse_own_cgroups(text.read())
    pid_file = tmp_path / "lost.pid"
    job = manager.create_job(
        **agent_job("lost", "escape", pid_file=str(pid_file), seconds=600), max_retries=0
    )
    first = supervisor("--sandbox", "cgroup")
    try:
        wait_until(pid_file.exists, 30, "the job's escaped process", watch=first)
        escaped = int(pid_file.read_text())
        left = Path("/sys/fs/cgroup/pids") / own["pids"].lstrip("/") / f"taiat-{first.pid}"
        assert left.is_dir()
        # The fork server, stopped first, cannot end its jobs' processes when it sees the
        # supervisor go.
        server = wait_until(lambda: first.status().get("fork_server_pid"), 30, watch=first)
        os.kill(server, signal.SIGSTOP)
        first.stop()  # SIGKILL: nothing cleaned up
        with contextlib.suppress(ProcessLookupError):  # gone with it, by its death signal
            os.kill(server, signal.SIGKILL)
        wait_until(lambda: not pid_alive(server), 10, "the fork server to be gone")
        assert left.is_dir() and pid_alive(escaped)
        first.status_file.unlink()  # the next one writes the same file
        second = supervisor("--sandbox", "cgroup")
        wait_until(lambda: second.status().get("state") == "running", 30, watch=second)
        assert not pid_alive(escaped)
        assert not left.exists()
        done = wait_until(lambda: finished(manager, job.id), 60, "the lost job", watch=second)
        assert done.status is JobStatus.FAILED
    finally:
        _kill_if_alive(pid_file)


def test_sandbox_cgroup_refuses_to_start_where_it_cannot_have_one(tmp_path: Path) -> None:
    """In a mount namespace whose cgroup file systems are read-only, no cgroup can be made:
    `--sandbox cgroup` exits 78, saying why."""
    read_only = (
        'for d in /sys/fs/cgroup /sys/fs/cgroup/*; do mountpoint -q "$d" && '
        'mount -o remount,bind,ro "$d"; done; exec "$@"'
    )
    if shutil.which("unshare") is None or shutil.which("mountpoint") is None:
        pytest.fail("this test needs unshare and mountpoint (util-linux) under CI")
    command = [
        "unshare",
        "--mount",
        "sh",
        "-c",
        read_only,
        "sh",
        sys.executable,
        "-m",
        "taiat.run_worker",
        "--database-url",
        f"sqlite:///{tmp_path / 'x.db'}",
    ]
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT))}
    done = subprocess.run(
        [*command, "--sandbox", "cgroup"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78, done.stderr
    assert "--sandbox cgroup: no cgroup can be managed here" in done.stderr
