"""A job's cgroup: its directories (one per v1 hierarchy, or one under cgroup v2), the limits
written into them, the processes in it, and the kernel's own figures for it (peak memory, CPU
time, OOM kills, refused forks). Also the pure parsing of the cgroup files, and `join`, which a
job's child calls to enter its group before it runs the job's first line.

Loaded by the fork server and the jobs' children: only the standard library's lightest parts.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

#: The period of the CPU quota (microseconds): the kernel's default, 100 ms.
CPU_PERIOD_US = 100_000
#: How long ending a job's processes may take before the group is left for later (seconds):
#: SIGKILLed processes leave the group only once the kernel has torn them down.
KILL_WAIT = 2.0


@dataclass(frozen=True)
class Limits:
    """What a job's cgroup caps: memory in bytes, processes and threads, CPU in cores (None:
    no cap)."""

    memory_bytes: int | None = None
    max_processes: int | None = None
    cpu_cores: float | None = None


def parse_keyed(text: str) -> dict[str, int]:
    """The `key value` lines of a cgroup file (memory.oom_control, memory.events, pids.events,
    cpu.stat) as a dict; lines that are not a name and a whole number are left out."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            values[parts[0]] = int(parts[1])
    return values


def parse_own_cgroups(text: str) -> dict[str, str]:
    """`/proc/self/cgroup` as controller -> path: each v1 controller of a line
    (`4:memory:/a/b`, `2:cpu,cpuacct:/`) by its name, and the v2 line (`0::/a`) under ""."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            paths[""] = path
        for name in controllers.split(","):
            if name and not name.startswith("name="):
                paths[name] = path
    return paths


def in_job_group(pid: int) -> bool:
    """Whether the process is in a job's cgroup (v1: under a supervisor's `taiat-<pid>`; v2: a
    `job-...` group), where the supervisor kills and counts it when its job ends. False when
    it is not, or is gone."""
    for path in parse_own_cgroups(read(f"/proc/{pid}/cgroup")).values():
        if "/taiat-" in path or path.rpartition("/")[2].startswith("job-"):
            return True
    return False


def cpu_quota(cores: float, period_us: int = CPU_PERIOD_US) -> int:
    """The quota (microseconds per period) that gives `cores` CPUs: at least the kernel's
    smallest, 1 ms."""
    return max(1000, round(cores * period_us))


def parse_procs(text: str) -> list[int]:
    """The pids a cgroup.procs file lists."""
    return [int(word) for word in text.split()]


def join(procs_files: Sequence[str]) -> None:
    """Move the calling process into the group whose `cgroup.procs` files are given (one per
    v1 hierarchy, or the one of v2): what it starts from then on is in the group too."""
    for path in procs_files:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)


def read(path: str) -> str:
    """A cgroup file's text ("" when it cannot be read: the group or the file is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return ""
    try:
        return os.read(fd, 65536).decode("ascii", "replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


def write(path: str, value: str) -> None:
    """Write `value` to a cgroup file (OSError as the kernel says it)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


class JobGroup:
    """One job's cgroup: `dirs` by controller (v1: "memory", "pids", "cpu", "cpuacct", each a
    directory of its hierarchy, some the same directory; v2: every name the one directory)."""

    def __init__(self, version: int, dirs: dict[str, str]) -> None:
        self.version = version
        self.dirs = dirs
        #: The `cgroup.procs` files a process writes itself into to join (one per hierarchy).
        self.procs_files = tuple(f"{d}/cgroup.procs" for d in dict.fromkeys(dirs.values()))
        self.limits = Limits()
        #: The job's processes, other than its own, that the group's signals ended since its
        #: job began (`signal_all` when the job is stopped, `kill_all` at its end): each counted
        #: once, however often it was signalled.
        self.killed: set[int] = set()
        #: `kill_all` found it empty after its job's end: nothing can come into it again
        #: until its next job (a process joins only from inside it, or by the supervisor).
        self.emptied = False
        #: The group's counters when its present job began (a v1 group serves one job after
        #: another): OOM kills, refused forks, CPU seconds.
        self._base_oom = 0
        self._base_refused = 0
        self._base_cpu: tuple[float, float] | None = (0.0, 0.0)

    def _file(self, controller: str, name: str) -> str | None:
        folder = self.dirs.get(controller)
        return None if folder is None else f"{folder}/{name}"

    # -- making it ---------------------------------------------------------------------

    def create(self, limits: Limits) -> None:
        """Make its directories and write its limits (OSError if the kernel refuses)."""
        for folder in dict.fromkeys(self.dirs.values()):
            os.mkdir(folder)
        if self.version == 2:
            self.limit(limits)
        else:
            self.begin(limits)

    def begin(self, limits: Limits) -> None:
        """Make it ready for its next job (v1, whose groups serve one job after another): the
        limits that differ from the last job's written, its peak reset, its counters noted."""
        self.limit(limits)
        self.killed.clear()
        self.emptied = False
        peak = self._file("memory", "memory.max_usage_in_bytes")
        if peak is not None:
            write(peak, "0")  # from the memory charged now
        self._base_oom = self._base_refused = 0
        self._base_cpu = (0.0, 0.0)
        self._base_oom = self.oom_kills()
        self._base_refused = self.forks_refused()
        self._base_cpu = self.cpu_seconds()

    def limit(self, limits: Limits) -> None:
        """Write the limits that differ from those in force (OSError if the kernel refuses one:
        a memory limit below what the group holds already). (Swap is not capped under v1: the
        memory+swap limit would have to be written in step with the memory one.)"""
        old = self.limits
        if self.version == 2:
            self._limits_v2(limits, old)
            self.limits = limits
            return
        memory = self._file("memory", "memory.limit_in_bytes")
        if memory is not None and limits.memory_bytes != old.memory_bytes:
            write(memory, str(limits.memory_bytes or -1))
        pids = self._file("pids", "pids.max")
        if pids is not None and limits.max_processes != old.max_processes:
            write(pids, str(limits.max_processes or "max"))
        quota = self._file("cpu", "cpu.cfs_quota_us")
        if quota is not None and limits.cpu_cores != old.cpu_cores:
            write(f"{self.dirs['cpu']}/cpu.cfs_period_us", str(CPU_PERIOD_US))
            cores = limits.cpu_cores
            write(quota, str(-1 if cores is None else cpu_quota(cores)))
        self.limits = limits

    def _limits_v2(self, limits: Limits, old: Limits) -> None:
        folder = self.dirs["memory"]
        if limits.memory_bytes != old.memory_bytes:
            write(f"{folder}/memory.max", str(limits.memory_bytes or "max"))
            if limits.memory_bytes is not None:
                if os.path.exists(f"{folder}/memory.swap.max"):
                    write(f"{folder}/memory.swap.max", "0")
                if os.path.exists(f"{folder}/memory.oom.group"):
                    write(f"{folder}/memory.oom.group", "1")  # the job dies whole, not in part
        if limits.max_processes != old.max_processes and "pids" in self.dirs:
            write(f"{folder}/pids.max", str(limits.max_processes or "max"))
        if limits.cpu_cores != old.cpu_cores and "cpu" in self.dirs:
            quota = "max" if limits.cpu_cores is None else cpu_quota(limits.cpu_cores)
            write(f"{folder}/cpu.max", f"{quota} {CPU_PERIOD_US}")

    def remove(self) -> bool:
        """Remove its directories; False if one is still busy (a process not gone yet)."""
        removed = True
        for folder in dict.fromkeys(self.dirs.values()):
            try:
                os.rmdir(folder)
            except FileNotFoundError:
                pass
            except OSError:
                removed = False
        return removed

    # -- its processes -----------------------------------------------------------------

    def pids(self) -> list[int]:
        """The processes in the group now (by the first hierarchy: every one of the job's
        processes is in each)."""
        return parse_procs(read(self.procs_files[0])) if self.procs_files else []

    def signal_all(self, signum: int, own: int = 0) -> None:
        """Send `signum` (one that ends a process) to every process in the group, whatever its
        group or session; those other than the job's own process (`own`) are its stragglers."""
        for pid in self.pids():
            if pid != own:
                self.killed.add(pid)
            try:
                os.kill(pid, signum)
            except OSError:
                pass

    def kill_all(self, wait: float = KILL_WAIT, own: int = 0) -> int:
        """SIGKILL every process in the group until none is left (or `wait` seconds have
        passed); returns the job's stragglers: how many of its processes other than its own
        (`own`) were in the group when it was stopped or ended, and were signalled to end (each
        once, however often this is called). Under cgroup v2 the kernel kills in one go
        (`cgroup.kill`).

        The processes are counted as the kernel lists them in `cgroup.procs`: a process that
        has exited is no longer listed (a zombie is not, nor is a thread), so a process counts
        only if it was still alive when it was found. For the count to be whole, nothing else
        may kill the job's processes before this has listed them (see the fork server's and
        the supervisor's leftovers)."""
        if self.emptied:
            return len(self.killed)
        deadline = time.monotonic() + wait
        kill_file = self._file("memory", "cgroup.kill") if self.version == 2 else None
        while True:
            pids = self.pids()
            if not pids:
                self.emptied = True
                return len(self.killed)
            fresh = [pid for pid in pids if pid != own and pid not in self.killed]
            self.killed.update(fresh)
            if kill_file is not None and os.path.exists(kill_file):
                write(kill_file, "1")
            else:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            if time.monotonic() >= deadline:
                return len(self.killed)
            if not fresh:
                time.sleep(0.001)  # killed, and being torn down by the kernel

    # -- the kernel's figures ----------------------------------------------------------

    def oom_kills(self) -> int:
        """How many of its processes the kernel's OOM killer killed."""
        if self.version == 2:
            name = "memory.events"
        else:
            name = "memory.oom_control"
        path = self._file("memory", name)
        found = parse_keyed(read(path)).get("oom_kill", 0) if path else 0
        return found - self._base_oom

    def forks_refused(self) -> int:
        """How many forks (or new threads) the group's process cap refused."""
        path = self._file("pids", "pids.events")
        found = parse_keyed(read(path)).get("max", 0) if path else 0
        return found - self._base_refused

    def memory_now(self) -> int:
        name = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        path = self._file("memory", name)
        text = read(path).strip() if path else ""
        return int(text) if text.isdigit() else 0

    def memory_peak(self) -> int:
        """The most memory charged to the group at once since it was made."""
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        path = self._file("memory", name)
        text = read(path).strip() if path else ""
        return int(text) if text.isdigit() else 0

    def cpu_seconds(self) -> tuple[float, float] | None:
        """User and system CPU seconds of all its processes, or None where not accounted."""
        now = self._cpu_seconds()
        base = self._base_cpu
        if now is None or base is None:
            return now
        return max(0.0, now[0] - base[0]), max(0.0, now[1] - base[1])

    def _cpu_seconds(self) -> tuple[float, float] | None:
        if self.version == 2:
            stat = parse_keyed(read(f"{self.dirs['memory']}/cpu.stat"))
            if "user_usec" not in stat:
                return None
            return stat["user_usec"] / 1e6, stat.get("system_usec", 0) / 1e6
        folder = self.dirs.get("cpuacct")
        if folder is None:
            return None
        user = read(f"{folder}/cpuacct.usage_user").strip()
        system = read(f"{folder}/cpuacct.usage_sys").strip()
        if not (user.isdigit() and system.isdigit()):
            return None
        return int(user) / 1e9, int(system) / 1e9
