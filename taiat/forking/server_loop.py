"""The fork server's own process: the loop that forks the jobs' children as the supervisor asks,
tells their pids, reaps them, and ends with the supervisor. `taiat.forking.server` starts it and is
the supervisor's handle on it; the framing of their messages is that module's.

Children can also be forked ahead, while the supervisor has a slot free, to wait for a job
(`Waiting`): a waiting child has joined its cgroup and done all it can before its job is known,
so that the job, once claimed, starts without waiting for a fork. The supervisor sends it its
job itself, over a socket of their own, and then tells the server, which adopts it as the job's
child (or, should the child not be there, forks the job afresh). It runs one job and is never
reused; the supervisor asks for another in its place.

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
from collections.abc import Callable, Sequence
from functools import partial
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
    waiting = Waiting()
    # Jobs in cgroups: what they leave is the supervisor's to count and kill, through the
    # job's group (`JobGroup.kill_all`), which a kill from here first would race.
    sandboxed = False
    control = sock.fileno()
    inherited = (control, pid_fd, wake_read, wake_write)

    def forget_server() -> None:
        """In a child: close what it holds of the server's (every waiting child's socket too)."""
        for number in (*inherited, *waiting.fds()):
            os.close(number)

    def run_job(
        sealed: bytes,
        max_result_bytes: int,
        fds: Sequence[int],
        cgroup: Sequence[str],
        independent: bool = False,
    ) -> NoReturn:
        """In a child: run the job (`cgroup`: the group it joins first, if not in it yet;
        `independent`: see `child.run`)."""
        child.run(
            sealed,
            executors,
            fds[0],
            server_pid,
            max_result_bytes,
            output_fds=fds[1:3] if len(fds) >= 3 else (),
            stack_fd=fds[-1] if len(fds) in (2, 4) else -1,
            job_user=job_user,
            cgroup_procs=cgroup,
            independent=independent,
        )

    def fork(then: Callable[[], NoReturn]) -> int:
        """Fork a child that leads its own process group and does `then`; its pid. OSError
        if it cannot."""
        # What is alive now is the server's: frozen, the collector leaves it alone in the
        # child, whose pages then stay shared instead of being copied on the collector's writes.
        gc.freeze()
        pid = forker.fork()
        if pid == 0:
            forget_server()
            then()
        try:  # from here too, so that a kill that comes before the child's own setpgrp works
            os.setpgid(pid, pid)
        except OSError:
            pass
        return pid

    while True:
        readable = select.select([control, wake_read], [], [])[0]
        if wake_read in readable:
            while True:
                try:
                    if not os.read(wake_read, 4096):
                        break
                except BlockingIOError:
                    break
        _reap(sock, pid_sock, children, waiting, kill_leftovers=not sandboxed)
        if control not in readable:
            continue
        message = wire.receive_message(sock)
        if message is None:
            _shut_down(children, waiting)
        (kind, token, *details), fds = message
        if kind == "wait":  # fork a child ahead, to wait for a job on the socket that came
            cgroup = tuple(details[0])
            sandboxed = sandboxed or bool(cgroup)
            waiting.fork(token, cgroup, fds[0], fork, run_job, pid_sock)
            continue
        if kind == "retire":  # a waiting child no longer wanted: it leaves at its socket's end
            waiting.forget(token, kill=details[0] == "kill")
            continue
        sealed, max_result_bytes, cgroup, waiting_id = details
        sandboxed = sandboxed or bool(cgroup)
        if waiting_id:  # the supervisor sent the job to this waiting child itself
            adopted = waiting.adopt(waiting_id)
            if isinstance(adopted, int):
                children[adopted] = token
                wire.send_message(pid_sock, ("started", token, adopted))
                continue
            if isinstance(adopted, tuple):  # it ended before it was adopted
                pid, status, report = adopted
                wire.send_message(pid_sock, ("started", token, pid))
                wire.send_message(sock, ("exited", token, status, *report))
                continue
            # Never forked: the job is in the socket it would have read it from.
            message = None
            if adopted is not None:
                message = wire.receive_message(adopted)
                adopted.close()
            if message is None:
                wire.send_message(sock, ("failed", token, "its job did not come"))
                continue
            (sealed, max_result_bytes), fds = message
        # The result pipe; the stdout and stderr pipes, if any; the stack dumps' pipe, if any.
        if len(fds) not in (1, 2, 3, 4):
            for number in fds:
                os.close(number)
            wire.send_message(sock, ("failed", token, "no result pipe came with the job"))
            continue
        held = os.pipe() if hold else None
        try:
            pid = fork(partial(_run_fresh, held, run_job, sealed, max_result_bytes, fds, cgroup))
        except OSError as exc:
            for number in (*fds, *(held or ())):
                os.close(number)
            wire.send_message(sock, ("failed", token, f"cannot fork: {exc}"))
            continue
        for number in fds:
            os.close(number)
        children[pid] = token
        wire.send_message(pid_sock, ("started", token, pid))
        if held is not None:
            os.close(held[0])
            os.write(held[1], b"\0")
            os.close(held[1])


RunJob = Callable[[bytes, int, Sequence[int], Sequence[str], bool], NoReturn]


class Waiting:
    """The children forked ahead that wait for a job, by the id the supervisor gave each.
    Each reads its job from a socket whose other end the supervisor holds: the server keeps
    no end of it, unless the child could not be forked (the supervisor, which may send the job
    there all the same, then has it forked afresh from it)."""

    def __init__(self) -> None:
        self._ids: dict[int, int] = {}  # pid -> id, while it waits
        self._pids: dict[int, int] = {}  # id -> pid
        #: Those reaped before they were adopted: their pid, exit status and figures.
        self._ended: dict[int, tuple[int, int, tuple[float, float, int]]] = {}
        #: The sockets of those that could not be forked.
        self._unforked: dict[int, socket.socket] = {}

    def __contains__(self, pid: int) -> bool:
        return pid in self._ids

    def fds(self) -> list[int]:
        """The sockets the server holds (which no child of the server may keep)."""
        return [sock.fileno() for sock in self._unforked.values()]

    def fork(
        self,
        waiting_id: int,
        cgroup: tuple[str, ...],
        job_fd: int,
        fork: Callable[[Callable[[], NoReturn]], int],
        run_job: RunJob,
        pid_sock: socket.socket,
    ) -> None:
        """Fork a child that joins `cgroup` and waits for its job on socket `job_fd`; tell its
        pid (0: none could be forked; the job will be, when it comes)."""
        theirs = socket.socket(fileno=job_fd)
        try:
            pid = fork(partial(_wait_for_job, theirs, cgroup, run_job, os.getpid()))
        except OSError:
            self._unforked[waiting_id] = theirs
            wire.send_message(pid_sock, ("waiting", waiting_id, 0))
            return
        theirs.close()
        self._ids[pid] = waiting_id
        self._pids[waiting_id] = pid
        wire.send_message(pid_sock, ("waiting", waiting_id, pid))

    def adopt(
        self, waiting_id: int
    ) -> int | tuple[int, int, tuple[float, float, int]] | socket.socket | None:
        """The waiting child the supervisor sent a job to: its pid while it runs; its pid, exit
        status and figures if it has ended already; or, if it was never forked, the socket the
        job is in (None: no such child was asked for)."""
        pid = self._pids.pop(waiting_id, None)
        if pid is not None:
            del self._ids[pid]
            return pid
        ended = self._ended.pop(waiting_id, None)
        if ended is not None:
            return ended
        return self._unforked.pop(waiting_id, None)

    def forget(self, waiting_id: int, kill: bool = False) -> None:
        """A waiting child the supervisor let go (it leaves at the end of its socket), or could
        not give its job to (`kill`: it is killed, should it be there still)."""
        pid = self._pids.pop(waiting_id, None)
        if pid is not None:
            del self._ids[pid]
            if kill:
                _kill(pid)
        self._ended.pop(waiting_id, None)
        unforked = self._unforked.pop(waiting_id, None)
        if unforked is not None:
            unforked.close()

    def gone(self, pid: int, status: int, report: tuple[float, float, int]) -> int:
        """A waiting child has been reaped: kept for the job the supervisor may have sent it
        just before; its id."""
        waiting_id = self._ids.pop(pid)
        del self._pids[waiting_id]
        self._ended[waiting_id] = (pid, status, report)
        return waiting_id

    def kill_all(self) -> list[int]:
        """SIGKILL every waiting child; their pids."""
        pids = list(self._ids)
        for pid in pids:
            _kill(pid)
        return pids


def _run_fresh(
    held: tuple[int, int] | None,
    run_job: RunJob,
    sealed: bytes,
    max_result_bytes: int,
    fds: Sequence[int],
    cgroup: Sequence[str],
) -> NoReturn:
    """A child forked for a job that came: wait to be told to go if `held`, then run it."""
    if held is not None:
        _wait_until_told(*held)
    run_job(sealed, max_result_bytes, fds, cgroup, False)


def _wait_for_job(
    sock: socket.socket, cgroup: tuple[str, ...], run_job: RunJob, server_pid: int
) -> NoReturn:
    """A waiting child's life: join the job's cgroup now (a move into a cgroup can take
    milliseconds), become independent of the server (its own process group, default signals,
    death with the server), then wait for the job on `sock`, and run it; at the end of its
    socket (the supervisor let it go, or is gone), leave. Should the join fail, the job tries
    it again, and fails as a job forked afresh would, saying why."""
    try:
        if cgroup:
            cgroups.join(cgroup)
        cgroup = ()
    except OSError:
        pass
    posix.become_independent(server_pid)  # gone already: it goes too
    message = wire.receive_message(sock)
    if message is None:
        os._exit(0)
    (sealed, max_result_bytes), fds = message
    sock.close()
    run_job(sealed, max_result_bytes, fds, cgroup, True)


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


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


def _reap(
    sock: socket.socket,
    pid_sock: socket.socket,
    children: dict[int, int],
    waiting: Waiting,
    kill_leftovers: bool = True,
) -> None:
    """Reap what has ended and report the jobs' children (and waiting children gone before
    their job came); then kill every other child (not `kill_leftovers`: only those outside the
    jobs' cgroups, which the supervisor kills whole): the server forks only jobs and waiting
    children, so any other child is what an ended job left behind, come to the server, a
    subreaper, when the job's process ended."""
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
        report = (usage.ru_utime, usage.ru_stime, usage.ru_maxrss * 1024)
        if token is None:
            if pid in waiting:
                wire.send_message(pid_sock, ("waiting", waiting.gone(pid, status, report), 0))
            continue  # else left behind by a job, and killed
        wire.send_message(sock, ("exited", token, status, *report))
    if reaped:
        _kill_leftovers(children, waiting, in_groups_too=kill_leftovers)


def _kill_leftovers(
    children: dict[int, int], waiting: Waiting, in_groups_too: bool = True
) -> list[int]:
    """SIGKILL the server's children that are neither running jobs nor waiting for one;
    returns their pids. (Once they are reaped, what they left comes here in turn, and goes
    the same way.) Not `in_groups_too`: those still in a job's cgroup are left to the
    supervisor, which kills and counts them with the group; one that left its group (a job as
    root may) is killed here."""
    found = posix.children_of_this_process()
    leftovers = [pid for pid in found if pid not in children and pid not in waiting]
    for pid in leftovers:
        if in_groups_too or not cgroups.in_job_group(pid):
            posix.kill_tree(pid)
    return leftovers


def _shut_down(children: dict[int, int], waiting: Waiting) -> NoReturn:
    """The supervisor has gone: so do the children, by process group, and those waiting."""
    for pid in children:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    for pid in (*children, *waiting.kill_all()):
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    children.clear()
    # And what the jobs left behind, which comes here as each process above it ends.
    for _ in range(1000):
        leftovers = _kill_leftovers(children, Waiting())
        if not leftovers:
            break
        for pid in leftovers:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    os._exit(0)
