"""What the host lets the supervisor do with cgroups, found at its start: cgroup v2 with a
subtree delegated to it (the supervisor moves into a leaf, `supervisor`, and makes the jobs'
groups beside it), else the v1 hierarchies `memory` and `pids` (with `cpu` and `cpuacct` when
mounted) where it may make groups under its own (a parent `taiat-<pid>` in each), else none.
`--sandbox cgroup` insists on a cgroup; `auto` takes one where it can; `none` never does."""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path

from taiat.errors import ConfigurationError
from taiat.sandbox.cgroups import JobGroup, Limits, parse_own_cgroups, read, write

log = logging.getLogger(__name__)

MODES = ("auto", "cgroup", "none")
#: The v1 controllers a job's group is made in; the first two are needed, the others are
#: taken where mounted.
V1_NEEDED = ("memory", "pids")
V1_WANTED = ("cpu", "cpuacct")
#: A file each v1 controller's groups hold (the root group may not), to know the hierarchy
#: is that controller's.
_V1_MARK = {
    "memory": "memory.limit_in_bytes",
    "pids": "pids.max",
    "cpu": "cpu.cfs_quota_us",
    "cpuacct": "cpuacct.usage",
}
#: The v2 controllers enabled for the jobs' groups; memory and pids are needed.
V2_CONTROLLERS = ("memory", "pids", "cpu")
#: The numbers of this process's v2 groups (`job-<pid>-<n>`), whatever sandbox makes them.
_NUMBERS = itertools.count(1)
#: Whether this process made a sandbox: until it has, a group named by its pid is another's,
#: whose process had the same pid and is gone.
_made_here = False
#: v1: the most memory an emptied group may still have charged to it (bytes) and serve a next
#: job. A job's processes leave some (kernel objects, the charge cached for each CPU: under
#: 1 MiB on 2 CPUs), which goes into the next job's peak; a job that wrote or read files leaves
#: their page cache (and tmpfs files their pages, until deleted), which would go into the next
#: job's peak and take up room under its limit: such a group is removed, and a new one made.
#: Each CPU a job ran on may hold a batch of charge in reserve (64 pages), on top of it.
REUSE_MAX_BYTES = (4 << 20) + (os.cpu_count() or 1) * (256 << 10)


class Sandbox:
    """No sandbox: the jobs run as they always have (their memory sampled from user space,
    their process group the boundary)."""

    kind = "none"

    def __init__(self, why: str = "") -> None:
        #: Why there is no cgroup (for the start-up log line).
        self.why = why

    def new_group(self, limits: Limits) -> JobGroup | None:
        """A fresh group for one job with its limits written, or None (no sandbox)."""
        return None

    def discard(self, group: JobGroup) -> None:
        """Remove a job's group once its processes are gone (later, if some are still
        being torn down)."""

    def release(self, group: JobGroup) -> None:
        """Kill what is left in a group whose job has ended (or that has no job: a child
        forked ahead let go), without waiting, and discard it (OSError as the kernel says)."""
        group.kill_all(wait=0)
        self.discard(group)

    def close(self) -> None:
        """Remove what is left of the groups (the supervisor is stopping)."""

    def describe(self) -> str:
        return f"none ({self.why})" if self.why else "none"


class CgroupSandbox(Sandbox):
    """Jobs' groups made in `parents` (by controller: the directory the groups go in)."""

    def __init__(self, version: int, parents: dict[str, str], made: list[str]) -> None:
        super().__init__()
        self.version = version
        self.kind = f"cgroup{version}"
        self.parents = parents
        #: Directories made at the start, removed at the end (v1: the `taiat-<pid>` parents).
        self.made = made
        global _made_here
        _made_here = True
        # One count for every sandbox of the process: v2 groups are named by the process.
        self._numbers = _NUMBERS if version == 2 else itertools.count(1)
        self._prefix = f"job-{os.getpid()}-" if version == 2 else "job-"
        #: Groups whose processes were still being torn down when their job ended.
        self.leftover: list[JobGroup] = []
        #: v1: emptied groups, each for a next job (one made and removed per job costs more
        #: than the job's fork), unless its last job left more than `REUSE_MAX_BYTES` charged
        #: to it. v2 makes a group per job: its memory.peak cannot be reset on every kernel.
        self.free: list[JobGroup] = []
        #: Groups to be removed that the kernel did not let go of at once.
        self.unremoved: list[JobGroup] = []

    def new_group(self, limits: Limits) -> JobGroup:
        if self.leftover:
            self.leftover = [g for g in self.leftover if not self._settle(g)]
        while self.free:
            group = self.free.pop()
            if group.memory_now() > REUSE_MAX_BYTES:  # another job's files: not in this one's peak
                self._remove(group)
                continue
            try:
                group.begin(limits)
            except OSError:  # a limit lower than what the last job left charged: a new group
                self._remove(group)
                continue
            return group
        name = f"{self._prefix}{next(self._numbers)}"
        group = JobGroup(self.version, {c: f"{p}/{name}" for c, p in self.parents.items()})
        try:
            group.create(limits)
        except OSError:
            group.remove()
            raise
        return group

    def _remove(self, group: JobGroup) -> None:
        """Remove a group that is not to serve again; one the kernel will not let go yet is
        tried again at the end (`close`)."""
        if not group.remove():
            self.unremoved.append(group)

    def discard(self, group: JobGroup) -> None:
        if not self._settle(group):
            self.leftover.append(group)

    def _settle(self, group: JobGroup) -> bool:
        """Keep an empty v1 group for the next job, or remove an empty v2 group; False while
        processes are still in it."""
        if self.version == 1:
            if not group.emptied and group.pids():
                return False
            self.free.append(group)
            return True
        return group.remove()

    def close(self) -> None:
        for group in (*self.leftover, *self.free, *self.unremoved):
            group.kill_all()
            group.remove()
        self.leftover.clear()
        self.free.clear()
        self.unremoved.clear()
        for folder in reversed(self.made):
            try:
                os.rmdir(folder)
            except OSError:
                pass

    def describe(self) -> str:
        where = ", ".join(f"{c} in {p}" for c, p in self.parents.items())
        return f"{self.kind} (a group per job: {where})"


def detect(mode: str, root: Path = Path("/sys/fs/cgroup")) -> Sandbox:
    """The sandbox `mode` asks for on this host; ConfigurationError when it is `cgroup` and
    none can be had (the reason in words)."""
    if mode not in MODES:
        raise ConfigurationError(f"--sandbox must be auto, cgroup or none, got {mode!r}")
    if mode == "none":
        return Sandbox("--sandbox none")
    own = parse_own_cgroups(read("/proc/self/cgroup"))
    found = _cgroup2(root, own)
    if isinstance(found, str):
        why2 = found
        found = _cgroup1(root, own)
        if isinstance(found, str):
            why = f"cgroup v2: {why2}; cgroup v1: {found}"
            if mode == "cgroup":
                raise ConfigurationError(
                    f"--sandbox cgroup: no cgroup can be managed here ({why}); run the "
                    "supervisor as root, or under systemd with Delegate=yes, or use "
                    "--sandbox auto or none"
                )
            return Sandbox(why)
    return found


def _cgroup2(root: Path, own: dict[str, str]) -> CgroupSandbox | str:
    """The v2 sandbox in the supervisor's delegated cgroup, or why there is none."""
    if not (root / "cgroup.controllers").exists() or "" not in own:
        return "not mounted at " + str(root)
    here = root / own[""].lstrip("/")
    if here.name == "supervisor":  # moved into its leaf before (a restart in place)
        here = here.parent
    available = set(read(str(here / "cgroup.controllers")).split())
    missing = [c for c in ("memory", "pids") if c not in available]
    if missing:
        return f"{', '.join(missing)} not delegated to {here}"
    if not os.access(here, os.W_OK):
        return f"{here} is not writable (Delegate=yes in the unit)"
    leaf = here / "supervisor"
    try:
        leaf.mkdir(exist_ok=True)
        # The supervisor goes into the leaf (it has no child yet): a cgroup with processes
        # of its own cannot hand controllers to its children. Only its own process moves;
        # another process sharing its cgroup is not the supervisor's to move.
        write(str(leaf / "cgroup.procs"), str(os.getpid()))
    except OSError as exc:
        return f"cannot make the supervisor's leaf in {here}: {exc.strerror or exc}"
    try:
        enabled = " ".join(f"+{c}" for c in V2_CONTROLLERS if c in available)
        write(str(here / "cgroup.subtree_control"), enabled)
    except OSError as exc:
        others = read(str(here / "cgroup.procs")).split()
        try:  # back where it was, and no leaf left behind
            write(str(here / "cgroup.procs"), str(os.getpid()))
            leaf.rmdir()
        except OSError:
            pass
        if others:
            return (
                f"other processes share {here} (pids {', '.join(others[:5])}): give the "
                "supervisor a cgroup of its own (under systemd, a service with Delegate=yes)"
            )
        return f"cannot enable {enabled} in {here}: {exc.strerror or exc}"
    _prune_v2(here)
    return CgroupSandbox(2, {c: str(here) for c in V2_CONTROLLERS if c in available}, [])


def _cgroup1(root: Path, own: dict[str, str]) -> CgroupSandbox | str:
    """The v1 sandbox under the supervisor's own groups, or why there is none."""
    parents: dict[str, str] = {}
    made: list[str] = []
    for controller in (*V1_NEEDED, *V1_WANTED):
        mount = root / controller
        if controller not in own or not (mount / "cgroup.procs").exists():
            if controller in V1_NEEDED:
                _undo(made)
                return f"no {controller} hierarchy at {mount}"
            continue
        _prune(mount / own[controller].lstrip("/"))
        parent = mount / own[controller].lstrip("/") / f"taiat-{os.getpid()}"
        real = os.path.realpath(parent)
        if real in {os.path.realpath(p) for p in parents.values()}:  # "cpu,cpuacct" as one
            parents[controller] = str(parent)
            continue
        try:
            parent.mkdir()
        except OSError as exc:
            if controller in V1_NEEDED:
                _undo(made)
                return f"cannot make {parent}: {exc.strerror or exc}"
            continue
        made.append(str(parent))
        if not (parent / _V1_MARK[controller]).exists():  # another controller mounted there
            if controller in V1_NEEDED:
                _undo(made)
                return f"no {controller} controller at {mount}"
            continue
        parents[controller] = str(parent)
    return CgroupSandbox(1, parents, made)


def _prune(folder: Path) -> None:
    """End and remove the groups that supervisors which died without cleaning up (SIGKILL, a
    crash) left in `folder` (v1): `taiat-<pid>` whose process is gone, with the jobs' groups
    in it and any process still in them (the escaped processes of a lost job)."""
    for parent in _of_the_dead(folder, "taiat-"):
        try:
            groups = [g for g in parent.iterdir() if g.is_dir()]
        except OSError:
            continue
        for group in groups:
            _end(JobGroup(1, {"": str(group)}))
        try:
            parent.rmdir()
        except OSError:
            continue  # another supervisor at it, or a process the kernel has not let go


def _prune_v2(here: Path) -> None:
    """End and remove the jobs' groups (`job-<pid>-<n>`) that supervisors which died without
    cleaning up left beside the leaf (a restart in the same cgroup)."""
    for group in _of_the_dead(here, "job-"):
        _end(JobGroup(2, {"memory": str(group)}))


def _of_the_dead(folder: Path, prefix: str) -> list[Path]:
    """The groups in `folder` named `<prefix><pid>...` whose supervisor's process is gone: a
    pid no process has, or this process's own before it made a sandbox (a process gone that
    had the same pid)."""
    try:
        entries = list(folder.glob(prefix + "*"))
    except OSError:
        return []
    dead = []
    for entry in entries:
        number = entry.name.removeprefix(prefix).split("-", 1)[0]
        if not number.isdigit():
            continue
        ours = int(number) == os.getpid()
        if (ours and not _made_here) or (not ours and not _alive(int(number))):
            dead.append(entry)
    return dead


def _end(group: JobGroup) -> None:
    group.kill_all()
    if not group.remove():
        log.warning("could not remove %s, left by a supervisor that is gone", group.dirs)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _undo(made: list[str]) -> None:
    for folder in reversed(made):
        try:
            os.rmdir(folder)
        except OSError:
            pass
