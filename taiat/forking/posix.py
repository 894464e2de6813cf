"""What the job's processes need of the operating system: a process that leads its own group
and dies with its parent, process-group kills, pid checks, orphans adopted and killed, and
signals in words."""

from __future__ import annotations

import _signal
import ctypes
import errno
import functools
import os
import resource
import signal
from typing import Any

# prctl(2) options.
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36

# Plain numbers, for `_signal`'s functions: those of `signal` turn every answer into an enum,
# which in a job's fresh child is mostly page faults.
_RESET_SIGNALS = tuple(
    int(signum)
    for signum in (
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGHUP,
        signal.SIGCHLD,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGPIPE,
        signal.SIGQUIT,
    )
)
_SIG_DFL = int(signal.SIG_DFL)


def become_independent(supervisor_pid: int) -> None:
    """Its own process group, default signals, death with the supervisor, no core files."""
    os.setpgrp()  # its own process group, so a kill reaches everything it starts
    _signal.set_wakeup_fd(-1)
    for signum in _RESET_SIGNALS:
        _signal.signal(signum, _SIG_DFL)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
    # Die with the supervisor, even by SIGKILL; and if it is gone already, go now.
    die_with_parent()
    if os.getppid() != supervisor_pid:
        os._exit(1)
    # What the job starts stays below it, even a process that double-forks into a session of
    # its own: such orphans come to this process, not to init, so their memory counts as the
    # job's, and when the job ends they come to its parent, which kills them.
    become_subreaper()
    # No core files from crashing jobs filling the disk.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def die_with_parent() -> None:
    """Be killed (SIGKILL) when the parent process dies, whatever kills it."""
    _prctl()(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def become_subreaper() -> None:
    """Adopt the orphaned descendants of this process (PR_SET_CHILD_SUBREAPER): they come to it
    rather than to init, and it is theirs to reap."""
    _prctl()(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def children_of_this_process() -> list[int]:
    """The pids of this process's children, zombies included, from /proc (an empty list where
    the kernel does not say)."""
    pids: list[int] = []
    try:
        threads = os.listdir("/proc/self/task")
    except OSError:
        return pids
    for thread in threads:
        try:
            fd = os.open(f"/proc/self/task/{thread}/children", os.O_RDONLY)
        except OSError:
            continue
        try:
            data = b""
            while chunk := os.read(fd, 65536):
                data += chunk
        except OSError:
            pass
        finally:
            os.close(fd)
        pids += map(int, data.split())
    return pids


def kill_tree(pid: int) -> None:
    """SIGKILL a process left behind, and the process group it leads, if it leads one (one
    that called setsid does)."""
    for target in (-pid, pid):
        try:
            os.kill(target, signal.SIGKILL)
        except OSError:
            pass


def prepare_to_fork() -> None:
    """Look up now, in the process that forks, what every child would look up again."""
    _prctl()


@functools.cache
def _prctl() -> Any:
    """libc's prctl, looked up once in the process that forks, not again in every child."""
    return ctypes.CDLL(None, use_errno=True).prctl


def signal_words(signum: int) -> str:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
    detail = {
        signal.SIGSEGV: ": segmentation fault",
        signal.SIGBUS: ": bus error",
        signal.SIGFPE: ": floating-point exception",
        signal.SIGABRT: ": aborted",
        signal.SIGILL: ": illegal instruction",
    }.get(signal.Signals(signum), "")
    return f"signal {signum} ({name}){detail}"


def killpg(pgid: int, signum: int) -> None:
    """Signal a whole process group; one that is gone already is no error."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass
    except PermissionError as exc:  # a pid reused by someone else's process: leave it be
        if exc.errno != errno.EPERM:
            raise


def is_stopped(pid: int) -> bool:
    """Whether process `pid` is stopped by a signal (not by a debugger that traces it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b") ")[2][:1] == b"T"
    except OSError:
        return False


def pid_exists(pid: int) -> bool:
    """Whether a process with this pid exists (zombies included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_ready(fd: int, size: int) -> bytes | None:
    """Up to `size` bytes of what the non-blocking pipe `fd` holds now: None when it holds
    nothing yet, b"" at its end (or when it cannot be read any more)."""
    try:
        return os.read(fd, size)
    except BlockingIOError:
        return None
    except OSError:
        return b""
