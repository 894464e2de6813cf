"""The fork server: a small process that forks the jobs' children for the supervisor.

Fork costs in proportion to the size of the process that forks: one that has loaded psycopg and
SQLAlchemy (about 55 MB) forks, exits and is reaped three to four times slower than a fresh
interpreter that has loaded only the job's side of the package. So the supervisor starts this
server once, from a fresh interpreter, hands it the executors, and for each job sends it the job
and the write end of the result pipe, without waiting: the launch's handle stands for the
child until the server says its pid. The server forks the child, says its pid (or why it could
not fork), reaps it with `wait4`, and reports the exit status and resource use, every message
naming the launch. Pids go over a socket of their own, which the supervisor reads but does not
wait on: a job's start does not wake it, only its end does. Everything else stays in the
supervisor: it reads the result pipe, watches deadlines and memory, and kills by process group
(the child leads its own group), exactly as for a child it forked itself.

The server dies with the supervisor (PR_SET_PDEATHSIG, and end of file on its socket), and its
children die with it. Signals meant for the supervisor (Ctrl-C, SIGTERM) are the supervisor's to
act on: the server ignores them, and holds back every other signal but SIGCHLD, so that only
SIGKILL ends it. It is a child subreaper: what an ended job leaves behind comes to it, and it
kills it (in a sandbox it only reaps it: the supervisor kills and counts it through the job's
cgroup). When it dies, its children die with it and come to the supervisor (a subreaper too,
as a daemon), which reaps them: `ServerEnd` then says how the server ended, and the supervisor
judges who is to blame (`JobProcess`).

This module is the supervisor's side, and the framing of the messages both sides send; the
server's own loop is `taiat.forking.server_loop`. It must stay light: the server imports it,
and only what a job needs.
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from taiat.errors import ForkServerError
from taiat.forking import posix, wire
from taiat.forking.job_user import JobUser
from taiat.jobs import Job

if TYPE_CHECKING:  # the server has no use for it, and every fork would copy its pages
    import subprocess

log = logging.getLogger(__name__)

_CHUNK = 1 << 16
#: How long the server may take to start and import the executors' modules.
START_TIMEOUT = 60.0
#: How long the server may take to fork one child.
LAUNCH_TIMEOUT = 10.0
#: How long the server may take to end once its socket has closed.
EXIT_TIMEOUT = 2.0
#: How long a child forked ahead may take to take in its job before it is given up, and the
#: job forked afresh (seconds): it reads at once, unless something holds it.
HAND_OVER_TIMEOUT = 2.0


@dataclass(frozen=True)
class ServerEnd:
    """How a fork server ended: its pid, its exit status as `Popen.returncode` says it
    (negative: the signal that killed it), whether the supervisor ended it, and why it was
    given up."""

    pid: int
    returncode: int | None
    by_supervisor: bool
    why: str
    #: Found stopped (SIGSTOP, which nothing can hold back): the supervisor killed it, as if
    #: whoever stopped it had killed it (see `ForkServer.end_if_stopped`).
    stopped: bool = False

    @property
    def killed(self) -> bool:
        """Killed by a signal that the supervisor did not send (a job's, or anyone's), or
        stopped by one."""
        if self.stopped:
            return True
        return self.returncode is not None and self.returncode < 0 and not self.by_supervisor


@dataclass(frozen=True)
class Exit:
    """How a child ended, as `wait4` told its parent. `status` is -1 when it is not known;
    `error` says why when the child never started; `server_end` says how its fork server ended
    when the child outlived it (reaped by the supervisor, a subreaper, or lost)."""

    status: int
    user_seconds: float = 0.0
    system_seconds: float = 0.0
    peak_rss_bytes: int = 0
    error: str | None = None
    server_end: ServerEnd | None = None


LOST = Exit(-1)


# -- framing: a 4-byte length, then a pickle; a file descriptor rides with the first bytes ------


# -- the supervisor's side -----------------------------------------------------------------


class ForkServer:
    """The supervisor's handle on its fork server: launch children, learn how they ended."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        sock: socket.socket,
        pid_sock: socket.socket | None = None,
    ) -> None:
        self.process = process
        self.sock = sock
        #: Where the server tells the pids of the children it forks, apart from `sock`, which
        #: the supervisor waits on: a fork does not wake it. Read whenever `sock` is read, and
        #: when a pid is asked for. (None: the pids come on `sock`.)
        self.pid_sock = pid_sock
        self.pid = process.pid
        self.gone = False
        #: How it ended, once it has.
        self.end: ServerEnd | None = None
        self._buffer = bytearray()
        self._pid_buffer = bytearray()
        self._exits: dict[int, Exit] = {}  # by launch handle
        self._replies: dict[int, tuple[str, Any]] = {}
        #: Launches by token: the child's pid once the server has said it, or why it failed.
        self._pids: dict[int, int] = {}
        self._failed: dict[int, str] = {}
        self._token = 0
        #: Children forked ahead, waiting for a job (see `wait`): their pids by id, once told
        #: (those the server could not fork, or found gone, are dropped).
        self.waiting_pids: dict[int, int] = {}
        #: The supervisor's end of each one's socket, which its job is sent through.
        self._waiting_socks: dict[int, socket.socket] = {}
        self._waiting_id = 0

    @classmethod
    def start(
        cls, executors: Sequence[Any], *, hold: bool = False, job_user: JobUser | None = None
    ) -> ForkServer:
        """Start a server that runs jobs with `executors`; ForkServerError if it cannot (an
        executor that does not pickle by reference, a module the server cannot import). With
        `hold`, each child waits to run its job until the server has told its pid: a job that
        kills the server is then always known to have started (the way of a job run alone).
        With `job_user`, each child becomes that user before it runs its job; the server stays
        the supervisor's user, out of the jobs' reach."""
        try:
            blob = pickle.dumps(list(executors), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - any object may refuse to be pickled
            raise ForkServerError(f"the executors cannot be sent to it: {exc}") from None
        import subprocess  # the supervisor's side only: see above

        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as exc:  # no descriptor to be had
            raise ForkServerError(f"it could not be started: {exc}") from None
        try:
            our_pids, their_pids = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as exc:
            ours.close()
            theirs.close()
            raise ForkServerError(f"it could not be started: {exc}") from None
        for sock in (ours, our_pids):
            sock.settimeout(None)  # whatever socket.setdefaulttimeout says: `poll` never waits
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = (
            "import sys; sys.path.insert(0, sys.argv[3]); import taiat.forking.server_loop as f; "
        )
        code += "f.serve(int(sys.argv[1]), int(sys.argv[2]))"
        fds = [theirs.fileno(), their_pids.fileno()]
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", code, *map(str, fds), root],
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:  # no process to be had (a job's fork bomb), or no descriptor
            ours.close()
            our_pids.close()
            raise ForkServerError(f"it could not be started: {exc}") from None
        finally:
            theirs.close()
            their_pids.close()
        server = cls(process, ours, our_pids)
        try:
            wire.send_message(ours, (os.getpid(), list(sys.path), blob, hold, job_user))
            kind, detail = server._reply(0, START_TIMEOUT)
        except OSError as exc:  # it exited before it read a word
            server.close()
            raise ForkServerError(f"it did not start: {exc}") from None
        except ForkServerError:
            server.close()
            raise
        if kind != "ready":
            server.close()
            raise ForkServerError(str(detail))
        return server

    def fileno(self) -> int:
        return self.sock.fileno()

    def launch(
        self,
        job: Job,
        result_fd: int,
        max_result_bytes: int,
        dependency_results: dict[str, Any] | None = None,
        output_fds: Sequence[int] = (),
        *,
        catalogue: dict[str, Any] | None = None,
        stack_fd: int = -1,
        cgroup: Sequence[str] = (),
        waiting: int = 0,
    ) -> int:
        """Ask for a child for `job` writing its result to `result_fd`, its stdout and
        stderr to `output_fds` if given, and its stack dumps to `stack_fd` if given (the caller
        keeps and closes its own copies); returns
        the launch's handle at once, without waiting for the fork: `pid` and `reap` take it.
        `cgroup`: the `cgroup.procs` files the child joins first (see `taiat.sandbox`).
        `waiting`: the child forked ahead to run it (see `wait`), if any: the job is forked
        afresh should that child be gone. ForkServerError if the server has gone."""
        self._token += 1
        token = self._token
        # Sealed: only the child opens it. Opened in the server, it would be written into
        # pages that the next fork must copy.
        sealed = wire.seal(job, dependency_results, catalogue)
        fds = [result_fd, *output_fds, *([stack_fd] if stack_fd >= 0 else [])]
        if waiting and self._hand_over(waiting, (sealed, max_result_bytes), fds):
            # The child has its job: the server, told, adopts it and says its pid.
            self._send(("run", token, None, max_result_bytes, tuple(cgroup), waiting))
        else:
            self._send(("run", token, sealed, max_result_bytes, tuple(cgroup), 0), fds)
        return token

    def _hand_over(self, waiting: int, job: tuple[bytes, int], fds: Sequence[int]) -> bool:
        """Send a job straight to child `waiting`, forked ahead for it (the server need not
        wake for it to start); False when it cannot have it (gone, or stopped by a signal:
        killed), and the server is to fork the job afresh."""
        sock = self._waiting_socks.pop(waiting, None)
        pid = self.waiting_pids.pop(waiting, None)
        if sock is None:
            return False
        try:
            if pid and posix.is_stopped(pid):  # it would hold its job
                posix.killpg(pid, signal.SIGKILL)
                raise ProcessLookupError(pid)
            sock.settimeout(HAND_OVER_TIMEOUT)
            wire.send_message(sock, job, fds)
            return True
        except OSError as exc:  # gone, or holding up its job (stopped): the server kills it
            log.info("the child forked ahead (pid %s) cannot take its job: %s", pid, exc)
            self._send(("retire", waiting, "kill"))
            return False
        finally:
            sock.close()

    def wait(self, cgroup: Sequence[str] = ()) -> int:
        """Ask for a child forked ahead, that joins `cgroup` (its `cgroup.procs` files) and
        waits for a job (`launch(..., waiting=...)`); returns its id at once. It runs one job
        only, and dies with the server. ForkServerError if the server has gone."""
        self._waiting_id += 1
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)  # OSError: none
        try:
            self._send(("wait", self._waiting_id, tuple(cgroup)), [theirs.fileno()])
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._waiting_socks[self._waiting_id] = ours
        return self._waiting_id

    def retire(self, waiting: int) -> None:
        """Let a child forked ahead go, without a job: at the end of its socket, it leaves."""
        self.waiting_pids.pop(waiting, None)
        sock = self._waiting_socks.pop(waiting, None)
        if sock is not None:
            sock.close()
        self._send(("retire", waiting, None))

    def _send(self, message: tuple[Any, ...], fds: Sequence[int] = ()) -> None:
        """Send a message, and `fds` with it; ForkServerError if the server has gone, or is
        given up because it cannot be reached."""
        if self.gone:
            raise ForkServerError(f"the fork server (pid {self.pid}) is gone")
        try:
            # A job larger than the socket holds waits for the server to read it: a server
            # that never will (stopped, before the supervisor saw it) must not hold the loop.
            self.sock.settimeout(LAUNCH_TIMEOUT)
            try:
                wire.send_message(self.sock, message, fds)
            finally:
                self.sock.settimeout(None)
        except OSError as exc:
            if self.end_if_stopped():
                raise ForkServerError(f"the fork server (pid {self.pid}) was stopped") from None
            self._lose(f"cannot reach it: {exc}")

    def child_pid(self, handle: int, *, wait: bool = False) -> int | None:
        """The pid of launch `handle`'s child; 0 when it never started (the fork failed, or the
        server has gone). Without `wait` this never blocks, and says None while the server has
        not told it yet."""
        if not self._told(handle):
            self._read_pids()
        if wait:
            deadline = time.monotonic() + LAUNCH_TIMEOUT
            try:
                while not self._told(handle):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self._lose(f"no answer in {LAUNCH_TIMEOUT:g} s")
                    if self.end_if_stopped():  # it never will answer: not the launch's doing
                        break
                    self._read(min(left, 0.1))
            except ForkServerError:
                pass
        if handle in self._pids:
            return self._pids[handle]
        return 0 if self._told(handle) else None

    def _told(self, handle: int) -> bool:
        """Whether the server has said how launch `handle` went (or can say no more)."""
        return handle in self._pids or handle in self._failed or self.gone

    def poll(self) -> None:
        """Take in whatever the server has said; never blocks. When it has gone, `gone` says
        so and its children end as LOST."""
        try:
            self._read(0.0)
        except ForkServerError:
            pass

    def reap(self, handle: int) -> Exit | None:
        """How launch `handle`'s child ended, once the server has reaped it; None while it
        runs (or is still being forked)."""
        pid = self._pids.get(handle)
        if pid is None:
            if handle in self._failed:
                return Exit(-1, error=self._failed.pop(handle))
            # It died with the server, if it ever started, before it was told.
            return Exit(-1, server_end=self.end) if self.gone else None
        ending = self._exits.pop(handle, None)
        if ending is None and self.gone:
            ending = self._reap_orphan(pid)
        if ending is not None:
            del self._pids[handle]
        return ending

    def _reap_orphan(self, pid: int) -> Exit | None:
        """How a child that outlived the server ended. Re-parented to the supervisor when it is
        a subreaper, it is the supervisor's to reap; else it is gone untold once its pid is."""
        try:
            found, status, usage = os.wait4(pid, os.WNOHANG)
        except ChildProcessError:
            return None if posix.pid_exists(pid) else Exit(-1, server_end=self.end)
        if found == 0:
            return None
        usage_figures = (usage.ru_utime, usage.ru_stime, usage.ru_maxrss * 1024)
        return Exit(status, *usage_figures, server_end=self.end)

    def end_if_stopped(self) -> bool:
        """Kill the server if it is stopped, and say so. A stopped server (a job's
        `os.kill(os.getppid(), signal.SIGSTOP)`: SIGSTOP cannot be held back) forks nothing and
        reaps nothing: every job of its supervisor would wait for it forever. It is ended as
        one killed by whoever stopped it (`ServerEnd.stopped`): its children die with it, and
        the supervisor judges who is to blame, as for a killed server. (A server stopped with
        its supervisor, as a process group or a cgroup is, is continued with it, and never
        seen stopped.)"""
        if self.gone or not posix.is_stopped(self.pid):
            return False
        self.poll()  # what it said before it stopped: children started, and ended
        if self.gone:
            return False
        self.gone = True
        self.process.kill()
        self.process.wait()
        self.end = ServerEnd(self.pid, self.process.returncode, False, "it was stopped", True)
        self._read_pids()
        return True

    @property
    def alive(self) -> bool:
        """Whether its process has not been reaped yet (it may have exited unseen)."""
        return self.process.returncode is None

    def close(self) -> None:
        """Stop the server (its remaining children are killed) and wait for it."""
        import subprocess  # loaded already by `start`

        self.gone = True
        self.sock.close()
        if self.pid_sock is not None:
            self.pid_sock.close()
        for waiting in self._waiting_socks.values():
            waiting.close()
        self._waiting_socks.clear()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.end is None:
            self.end = ServerEnd(self.pid, self.process.returncode, True, "closed")

    def _reply(self, token: int, timeout: float) -> tuple[str, Any]:
        deadline = time.monotonic() + timeout
        while token not in self._replies:
            left = deadline - time.monotonic()
            if left <= 0:
                self._lose(f"no answer in {timeout:g} s")
            self._read(left)
        return self._replies.pop(token)

    def _read(self, timeout: float) -> None:
        if self.gone:
            return
        sockets = [self.sock] if self.pid_sock is None else [self.sock, self.pid_sock]
        if timeout > 0 and not select.select(sockets, [], [], timeout)[0]:
            return
        try:
            chunk = self.sock.recv(_CHUNK, socket.MSG_DONTWAIT)
        except BlockingIOError:
            chunk = None  # nothing said yet
        except ConnectionResetError:
            chunk = b""  # it exited before it read all it was sent (a job sent straight to
            # a child forked ahead may kill it before it is told of the job)
        except OSError as exc:
            self._lose(f"cannot read from it: {exc}")
        if chunk == b"":
            self._lose("it exited", exiting=True)
        if chunk:
            self._take(self._buffer, chunk)
        # After `sock`: the server tells a child's pid before its end, so an end read now has
        # its pid waiting here.
        self._read_pids()

    def _read_pids(self) -> None:
        """Take in the pids the server has told; never blocks, never loses the server (its
        end shows on `sock`)."""
        if self.pid_sock is None:
            return
        while True:
            try:
                chunk = self.pid_sock.recv(_CHUNK, socket.MSG_DONTWAIT)
            except OSError:  # nothing told yet, or the server has gone
                return
            self._take(self._pid_buffer, chunk)
            if len(chunk) < _CHUNK:
                return  # all there was

    def _take(self, buffer: bytearray, chunk: bytes) -> None:
        """Add `chunk` to `buffer` and act on each whole message in it."""
        buffer += chunk
        while len(buffer) >= wire.FRAME.size:
            (size,) = wire.FRAME.unpack_from(buffer)
            if len(buffer) < wire.FRAME.size + size:
                break
            message = pickle.loads(buffer[wire.FRAME.size : wire.FRAME.size + size])
            del buffer[: wire.FRAME.size + size]
            if message[0] == "exited":
                self._exits[message[1]] = Exit(*message[2:])
            elif message[0] == "started":
                self._pids[message[1]] = message[2]
            elif message[0] == "waiting":  # a child forked ahead (pid 0: none, or gone)
                if message[2] and message[1] in self._waiting_socks:  # not given a job yet
                    self.waiting_pids[message[1]] = message[2]
                else:
                    self.waiting_pids.pop(message[1], None)
            elif message[0] == "failed" and message[1]:
                self._failed[message[1]] = f"the fork server could not start it: {message[2]}"
            else:
                kind, token, detail = message
                self._replies[token] = (kind, detail)

    def _lose(self, why: str, *, exiting: bool = False) -> NoReturn:
        """Give the server up: kill it, so that it forks nothing more that was asked of it (its
        children die with it), and say why. When it is `exiting` (its socket closed), it is
        waited for first: it closes its files before it ends, and only once it has ended are
        its children re-parented, and is it known who ended it."""
        import subprocess  # loaded already by `start`

        self.gone = True
        if exiting:
            try:
                self.process.wait(EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        by_supervisor = self.process.poll() is None
        if by_supervisor:
            self.process.kill()
            self.process.wait()
        if self.end is None:
            self.end = ServerEnd(self.pid, self.process.returncode, by_supervisor, why)
        self._read_pids()  # what it told before it went: those children did start
        if not by_supervisor and self.process.returncode is not None:
            why += f" ({_status_words(self.process.returncode)})"
        raise ForkServerError(f"the fork server (pid {self.pid}) is gone: {why}")


def _status_words(returncode: int) -> str:
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return f"exit code {returncode}"
