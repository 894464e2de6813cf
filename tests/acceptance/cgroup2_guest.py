"""The sandbox on a kernel with only cgroup v2, run inside a virtual machine by
`test_sandbox_cgroup2.py`: as root, it gives a supervisor a cgroup of its own, delegated as
systemd's `Delegate=yes` does, runs the jobs that put each promise of the sandbox to the test,
and prints what it saw as one JSON object on its last line. The test asserts on it.

Not a test module (pytest does not collect it): it runs on the guest's copy of the host's file
system, read-only but for /tmp, with the guest's own /sys/fs/cgroup.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent.parent)]

from conftest import Supervisor, pid_alive, wait_until  # noqa: E402
from support import agent_job, finished  # noqa: E402

from taiat import JobManager  # noqa: E402
from taiat.store import schema  # noqa: E402

CGROUP = Path("/sys/fs/cgroup")
#: The supervisor's cgroup, as a service manager would make it for `Delegate=yes`.
SERVICE = CGROUP / "taiat.service"
#: A command prefix that puts the supervisor into SERVICE, then execs it.
INTO_SERVICE = ["sh", "-c", f'echo $$ > {SERVICE}/cgroup.procs && exec "$@"', "sh"]
#: The same into the leaf a supervisor made before in SERVICE, where a restart in place (or
#: systemd's DelegateSubgroup=supervisor) starts it: SERVICE itself, which hands controllers
#: on, can hold no process.
INTO_LEAF = ["sh", "-c", f'echo $$ > {SERVICE}/supervisor/cgroup.procs && exec "$@"', "sh"]
#: Everything is slow in an emulated machine: generous deadlines.
WAIT = 240.0


def own_cgroup(pid: int | str) -> str:
    """The v2 cgroup of a process (`/taiat.service/supervisor`)."""
    text = Path(f"/proc/{pid}/cgroup").read_text()
    return next(line.split(":", 2)[2] for line in text.splitlines() if line.startswith("0::"))


def delegate() -> None:
    """What systemd does for a service with Delegate=yes: a cgroup of its own, with the
    controllers it may hand on."""
    SERVICE.mkdir(exist_ok=True)
    (CGROUP / "cgroup.subtree_control").write_text("+memory +pids +cpu")


def ended(manager: JobManager, job_id: str, sup: Supervisor) -> dict[str, Any]:
    job = wait_until(lambda: finished(manager, job_id), WAIT, "the job", watch=sup)
    [attempt] = manager.get_attempts(job_id)
    return {
        "status": job.status.value,
        "error": job.error_message,
        "result": job.result,
        "peak": attempt.peak_rss_bytes,
        "stragglers_killed": attempt.stragglers_killed,
    }


def main(tmp: Path) -> dict[str, Any]:
    url = f"sqlite:///{tmp / 'jobs.db'}"
    manager = JobManager(url)
    schema.initialise(manager.engine)
    seen: dict[str, Any] = {"controllers": (CGROUP / "cgroup.controllers").read_text().split()}
    delegate()

    # A process that is not the supervisor's shares its cgroup: `auto` leaves it where it is
    # and runs without a sandbox, saying why.
    sharer = subprocess.Popen([*INTO_SERVICE, "sleep", "600"])
    wait_until(lambda: own_cgroup(sharer.pid) == "/taiat.service", WAIT, "the sharer")
    shared_dir = tmp / "shared"
    shared_dir.mkdir()
    shared = Supervisor(url, shared_dir, "--sandbox", "auto", wrap=INTO_SERVICE)
    status = wait_until(
        lambda: shared.status().get("state") == "running" and shared.status(),
        WAIT,
        "the supervisor sharing its cgroup",
        watch=shared,
    )
    seen["shared"] = {
        "sandbox": status["sandbox"],
        "supervisor_cgroup": own_cgroup(shared.pid),
        "leaf_left": (SERVICE / "supervisor").exists(),
        "sharer_cgroup": own_cgroup(sharer.pid),
        "log": [line for line in shared.log().splitlines() if "sandbox:" in line],
    }
    shared.signal(signal.SIGTERM)
    shared.wait(WAIT)
    sharer.kill()
    sharer.wait()

    first_dir = tmp / "first"
    first_dir.mkdir()
    sup = Supervisor(
        url,
        first_dir,
        *("--sandbox", "cgroup", "--memory-limit", "200", "--max-processes", "50"),
        *("--cpu-limit", "1", "--job-timeout", "200"),
        wrap=INTO_SERVICE,
    )
    status = wait_until(
        lambda: sup.status().get("state") == "running" and sup.status(), WAIT, watch=sup
    )
    seen["sandbox"] = status["sandbox"]
    seen["supervisor_cgroup"] = own_cgroup(sup.pid)

    gobble = manager.create_job(**agent_job("gobble", "gobble", megabytes=2048), max_retries=0)
    seen["gobble"] = ended(manager, gobble.id, sup)

    pid_file = tmp / "escaped.pid"
    escape = manager.create_job(
        **agent_job(
            "escape", "escape", pid_file=str(pid_file), megabytes=100, seconds=1, memory_first=True
        ),
        max_retries=0,
    )
    seen["escape"] = ended(manager, escape.id, sup)
    escaped = seen["escape"]["result"]["escaped"]
    seen["escape"]["gone"] = bool(
        wait_until(lambda: not pid_alive(escaped), 30, "the escaped process to be killed")
    )

    bomb = manager.create_job(**agent_job("bomb", "fork_bomb", seconds=120), max_retries=0)
    seen["bomb"] = ended(manager, bomb.id, sup)

    spec = agent_job("sleeper", "sleep", seconds=600)
    spec["payload"] |= {"memory_limit_mb": 150, "max_processes": 40, "cpu_limit": 0.25}
    sleeper = manager.create_job(**spec, max_retries=0)

    def running_pid() -> int | None:
        """The sleeper's pid once the status file shows it running (a file written before the
        last job ended may still show that one)."""
        running = sup.status().get("running") or []
        pids = [r["pid"] for r in running if r["job_id"] == sleeper.id and r["pid"]]
        return pids[0] if pids else None

    pid = wait_until(running_pid, WAIT, "the sleeper to run", watch=sup)
    group = CGROUP / own_cgroup(pid).lstrip("/")
    seen["sleeper"] = {
        "cgroup": own_cgroup(pid),
        **{name: (group / name).read_text().strip() for name in ("memory.max", "pids.max")},
        "cpu.max": (group / "cpu.max").read_text().strip(),
    }
    manager.cancel_job(sleeper.id)
    wait_until(lambda: finished(manager, sleeper.id), WAIT, "the sleeper to end", watch=sup)
    wait_until(lambda: not group.exists(), 30, "the sleeper's group to be removed")

    # A supervisor killed outright leaves a job's group behind, with the process its job left
    # in a session of its own; the next one in the same cgroup (restarted in place, in the
    # leaf) ends it and removes the group.
    lost_pid_file = tmp / "lost.pid"
    lost = manager.create_job(
        **agent_job("lost", "escape", pid_file=str(lost_pid_file), megabytes=20, seconds=600),
        max_retries=0,
    )
    wait_until(lambda: lost_pid_file.exists(), WAIT, "the lost job's process", watch=sup)
    left = int(lost_pid_file.read_text())
    left_group = CGROUP / own_cgroup(left).lstrip("/")
    # Both killed outright, as by the OOM killer: the fork server, stopped first, cannot end
    # its jobs' processes when it sees the supervisor go.
    server = sup.status()["fork_server_pid"]
    os.kill(server, signal.SIGSTOP)
    sup.stop()  # SIGKILL
    with contextlib.suppress(ProcessLookupError):  # gone with it, by its death signal
        os.kill(server, signal.SIGKILL)
    wait_until(lambda: not pid_alive(server), 30, "the fork server to be gone")
    seen["after_kill"] = {"group_left": left_group.is_dir(), "process_left": pid_alive(left)}
    second_dir = tmp / "second"
    second_dir.mkdir()
    second = Supervisor(
        url,
        second_dir,
        *("--sandbox", "cgroup", "--job-user", "nobody", "--path", str(HERE)),
        wrap=INTO_LEAF,
    )
    wait_until(lambda: second.status().get("state") == "running", WAIT, watch=second)
    seen["after_restart"] = {
        "group_left": left_group.exists(),
        "process_left": bool(pid_alive(left)),
        "lost_job": manager.get_job(lost.id).status.value,
    }
    # Run as another user, a job can neither lift its limit nor leave its group.
    lift = manager.create_job(**agent_job("lift", "lift_limits"), max_retries=0)
    seen["lift"] = ended(manager, lift.id, second)
    second.signal(signal.SIGTERM)
    second.wait(WAIT)
    seen["service_after"] = sorted(p.name for p in SERVICE.iterdir() if p.is_dir())
    return seen


if __name__ == "__main__":
    # The database and the supervisors' files are on the guest's own /tmp (SQLite's shared
    # memory does not work on the host's folder); the logs are copied to argv[1], a folder
    # the host shares, for it to show when something failed.
    work = Path(tempfile.mkdtemp())
    try:
        print(json.dumps(main(work)), flush=True)
    finally:
        if len(sys.argv) > 1:
            for log in work.glob("*/*.log"):
                shutil.copy(log, Path(sys.argv[1]) / f"{log.parent.name}-{log.name}")
