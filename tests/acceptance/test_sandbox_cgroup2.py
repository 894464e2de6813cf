"""The sandbox under cgroup v2, on a real kernel. This host mounts the cgroup v1 hierarchies, so
the v2 controllers cannot be had on it: a virtual machine boots a kernel with only cgroup v2
(the newest in /boot, through virtme-ng, which lends it this host's files read-only) and runs
`cgroup2_guest.py` in it as root. That script gives the supervisor a cgroup of its own as
systemd's `Delegate=yes` does, runs the jobs, and reports what it saw; the assertions are here.

Runs under CI=true, as root (`.ci/run` installs QEMU, a kernel and virtme-ng); elsewhere it
skips with the reason. The machine is emulated (no KVM: under a host that is itself a virtual
machine, KVM stops the guest at boot), which makes it slow but the kernel's cgroup code real.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

MiB = 1 << 20


def _version(kernel: Path) -> list[tuple[int, str]]:
    """A kernel's version as it sorts (6.1.0-10 after 6.1.0-9)."""
    parts = re.split(r"[.-]", kernel.name.removeprefix("vmlinuz-"))
    return [(int(p), "") if p.isdigit() else (-1, p) for p in parts]


def _vm_command(folder: Path) -> list[str]:
    """The virtme-ng command that runs the guest script, its logs going to `folder`; fails
    (under CI, where all of it is installed) when a part is missing."""
    vng = shutil.which("vng") or str(Path(sys.executable).with_name("vng"))
    kernels = sorted(Path("/boot").glob("vmlinuz-*"), key=_version)
    missing = [
        what
        for what, there in [
            ("virtme-ng (the test extra)", os.access(vng, os.X_OK)),
            ("QEMU (Debian's qemu-system-x86)", shutil.which("qemu-system-x86_64")),
            ("a kernel in /boot (Debian's linux-image-amd64)", kernels),
        ]
        if not there
    ]
    if missing:
        pytest.fail(f"this test needs {', '.join(missing)}: .ci/run installs them")
    guest = f"cd {ROOT} && PYTHONDONTWRITEBYTECODE=1 {sys.executable} "
    guest += f"tests/acceptance/cgroup2_guest.py {folder}"
    return [
        vng,
        "--disable-kvm",
        "--run",
        str(kernels[-1]),
        "--memory",
        "3G",
        "--cpus",
        "2",
        f"--rwdir={folder}",
        "--exec",
        guest,
    ]


@pytest.mark.timeout(900)
def test_the_sandbox_under_cgroup_v2(tmp_path: Path) -> None:
    if os.environ.get("CI") != "true":
        pytest.skip("boots a virtual machine as root (runs under CI=true)")
    if os.geteuid() != 0:
        pytest.skip("needs root to boot the kernel under test")
    done = subprocess.run(
        _vm_command(tmp_path), capture_output=True, text=True, timeout=840, stdin=subprocess.DEVNULL
    )
    logs = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in tmp_path.glob("*.log"))
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, (
        f"the guest failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}\n"
        + logs
    )
    seen = json.loads(lines[-1])

    assert {"memory", "pids", "cpu"} <= set(seen["controllers"])
    # A cgroup shared with a process that is not the supervisor's: no sandbox, and why; the
    # other process is left where it was.
    assert seen["shared"]["sandbox"] == "none"
    assert seen["shared"]["sharer_cgroup"] == "/taiat.service"
    assert seen["shared"]["supervisor_cgroup"] == "/taiat.service"  # moved back
    assert seen["shared"]["leaf_left"] is False
    assert "other processes share /sys/fs/cgroup/taiat.service" in seen["shared"]["log"][0]
    # Its own cgroup: the supervisor moves into its leaf, the jobs' groups are made beside it.
    assert seen["sandbox"] == "cgroup2"
    assert seen["supervisor_cgroup"] == "/taiat.service/supervisor"

    gobble = seen["gobble"]
    assert gobble["status"] == "failed"
    assert gobble["error"] == "exceeded memory limit of 200 MB (killed by the kernel's OOM killer)"
    assert 0 < gobble["peak"] <= 200 * MiB

    escape = seen["escape"]
    assert escape["status"] == "completed", escape["error"]
    assert escape["peak"] >= 100 * MiB  # the escaped grandchild's memory counts
    assert escape["stragglers_killed"] == 1
    assert escape["gone"]

    bomb = seen["bomb"]
    assert bomb["status"] == "failed"
    assert bomb["error"] == "exceeded the cap of 50 processes (--max-processes)"
    assert bomb["stragglers_killed"] is not None

    sleeper = seen["sleeper"]
    assert sleeper["cgroup"].startswith("/taiat.service/job-")
    assert sleeper["memory.max"] == str(150 * MiB)  # the payload lowers the supervisor's 200
    assert sleeper["pids.max"] == "40"
    assert sleeper["cpu.max"] == "25000 100000"

    # Killed outright, the supervisor and its fork server left a job's group with a process in
    # it; the next one, restarted in place, ended the process and removed the group.
    assert seen["after_kill"] == {"group_left": True, "process_left": True}
    assert seen["after_restart"]["group_left"] is False
    assert seen["after_restart"]["process_left"] is False
    assert seen["service_after"] == ["supervisor"]

    lift = seen["lift"]
    assert lift["status"] == "completed", lift["error"]
    assert lift["result"]["uid"] == pwd.getpwnam("nobody").pw_uid
    assert lift["result"]["group"].startswith("/sys/fs/cgroup/taiat.service/job-")
    assert lift["result"]["lift"] == errno.EACCES
    assert lift["result"]["leave"] == errno.EACCES
