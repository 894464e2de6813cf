"""The fork server's own process: the loop that forks the jobs' children as the supervisor asks,
tells their pids, reaps them, and ends with the supervisor. `taiat.forking.server` starts it and is
the supervisor's handle on it; the framing of their messages is that module's.

Like every module the server imports, this one must stay light: each fork copies the page tables
of all the server has loaded.
"""

from __future__ import annotations

import gc
import os
import pickle
import select
import signal
import socket
import sys
from typing import NoReturn

from taiat.forking import child, posix, wire
from taiat.forking.fast_fork import QuickFork
from taiat.sandbox import cgroups


def serve(fd: int, pid_fd: int) -> NoReturn:
    """The server's whole life, in a fresh interpreter, talking over socket `fd`, and telling
    the pids of the children it forks over socket `pid_fd`."""
    sock = socket.socket(fileno=fd)
    pid_sock = socket.socket(fileno=pid_fd)
    first = wire.receive_message(sock)
    if first is None:
        os._exit(0)
    (supervisor_pid, sys_path, blob, hold, job_user), _ = first
    _follow(supervisor_pid)
    # What a job leaves behind comes here when the job's process ends (its own orphans come
    # to it while it runs): the server kills it (see `_reap`).
    posix.become_subreaper()
    sys.path[:] = sys_path
    # Its jobs' children write their output through these, into their pipes: line by line.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)  # None without a stdout at all
        if reconfigure is not None:
            reconfigure(line_buffering=True)
    forker = QuickFork()  # before the executors' modules register their fork hooks
    try:
        executors = pickle.loads(blob)
    except Exception as exc:  # noqa: BLE001 - the supervisor forks itself instead, and says why
        why = f"it cannot load the executors: {type(exc).__name__}: {exc}"
        wire.send_message(sock, ("error", 0, why))
        os._exit(0)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    server_pid = os.getpid()
    wire.send_message(sock, ("ready", 0, server_pid))
    children: dict[int, int] = {}  # pid -> the launch's token
    # Jobs in cgroups: what they leave is the supervisor's to count and kill, through the
    # job's group (`JobGroup.kill_all`), which a kill from here first would race.
    sandboxed = False
    control = sock.fileno()
    inherited = (control, pid_fd, wake_read, wake_write)

    def forget_server() -> None:
        for number in inherited:
            os.close(number)

    while True:
        readable = select.select([control, wake_read], [], [])[0]
        if wake_read in readable:
            while True:
                try:
                    if not os.read(wake_read, 4096):
                        break
                except BlockingIOError:
                    break
        _reap(sock, children, kill_leftovers=not sandboxed)
        if control not in readable:
            continue
        message = wire.receive_message(sock)
        if message is None:
            _shut_down(children)
        (_, token, sealed, max_result_bytes, cgroup), fds = message
        sandboxed = sandboxed or bool(cgroup)
        # The result pipe; the stdout and stderr pipes, if any; the stack dumps' pipe, if any.
        if len(fds) not in (1, 2, 3, 4):
            for number in fds:
                os.close(number)
            wire.send_message(sock, ("failed", token, "no result pipe came with the job"))
            continue
        # What is alive now is the server's: frozen, the collector leaves it alone in the child,
        # whose pages then stay shared instead of being copied on the collector's writes.
        gc.freeze()
        held = os.pipe() if hold else None
        try:
            pid = forker.fork()
        except OSError as exc:
            for number in (*fds, *(held or ())):
                os.close(number)
            wire.send_message(sock, ("failed", token, f"cannot fork: {exc}"))
            continue
        if pid == 0:
            if held is not None:
                _wait_until_told(*held)
            child.run(
                sealed,
                executors,
                fds[0],
                server_pid,
                max_result_bytes,
                forget_server,
                output_fds=fds[1:3] if len(fds) >= 3 else (),
                stack_fd=fds[-1] if len(fds) in (2, 4) else -1,
                job_user=job_user,
                cgroup_procs=cgroup,
            )
        for number in fds:
            os.close(number)
        try:  # from here too, so that a kill that comes before the child's own setpgrp works
            os.setpgid(pid, pid)
        except OSError:
            pass
        children[pid] = token
        wire.send_message(pid_sock, ("started", token, pid))
        if held is not None:
            os.close(held[0])
            os.write(held[1], b"\0")
            os.close(held[1])


def _wait_until_told(read_end: int, write_end: int) -> None:
    """In a held child: wait for the server to say that it has told the child's pid; leave if
    the server is gone first (the job never ran)."""
    os.close(write_end)
    if not os.read(read_end, 1):
        os._exit(1)
    os.close(read_end)


def _follow(supervisor_pid: int) -> None:
    """Die with the supervisor; leave its signals to it."""
    posix.die_with_parent()
    if os.getppid() != supervisor_pid:
        os._exit(1)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_IGN)
    # Every other signal that would end it is held back, so that a job that signals its parent
    # (`os.kill(os.getppid(), signal.SIGUSR1)`) does not end it: only SIGKILL can. SIGCHLD
    # wakes its loop. A job's child unblocks them all (`posix.become_independent`).
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals() - {signal.SIGCHLD})


def _reap(sock: socket.socket, children: dict[int, int], kill_leftovers: bool = True) -> None:
    """Reap what has ended and report the jobs' children; then kill every other child (not
    `kill_leftovers`: only those outside the jobs' cgroups, which the supervisor kills whole):
    the server forks only jobs, so any other child is what an ended job left behind, come to
    the server, a subreaper, when the job's process ended."""
    reaped = False
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        reaped = True
        token = children.pop(pid, None)
        if token is None:
            continue  # left behind by a job, and killed
        report = (usage.ru_utime, usage.ru_stime, usage.ru_maxrss * 1024)
        wire.send_message(sock, ("exited", token, status, *report))
    if reaped:
        _kill_leftovers(children, in_groups_too=kill_leftovers)


def _kill_leftovers(children: dict[int, int], in_groups_too: bool = True) -> list[int]:
    """SIGKILL the server's children that are not running jobs; returns their pids. (Once
    they are reaped, what they left comes here in turn, and goes the same way.) Not
    `in_groups_too`: those still in a job's cgroup are left to the supervisor, which kills and
    counts them with the group; one that left its group (a job as root may) is killed here."""
    leftovers = [pid for pid in posix.children_of_this_process() if pid not in children]
    for pid in leftovers:
        if in_groups_too or not cgroups.in_job_group(pid):
            posix.kill_tree(pid)
    return leftovers


def _shut_down(children: dict[int, int]) -> NoReturn:
    """The supervisor has gone: so do the children, by process group."""
    for pid in children:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    for pid in children:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    children.clear()
    # And what the jobs left behind, which comes here as each process above it ends.
    for _ in range(1000):
        leftovers = _kill_leftovers(children)
        if not leftovers:
            break
        for pid in leftovers:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    os._exit(0)
