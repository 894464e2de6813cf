"""Where a job is: its child's Python stack, dumped on a signal, read by the supervisor.

The child registers `faulthandler` on `SIGNAL` (`listen`) to write every thread's stack to the
write end of a pipe of its own, which the supervisor passed with the launch beside the result
and output pipes. The dump is written by a C signal handler, so it comes even from a job stuck
in a call that never returns to Python (a `time.sleep`, a blocking read), and the job runs on
afterwards. The supervisor reads it (`StackReader`) before it kills a job that timed out or was
cancelled, and when an operator asks (`taiat jobs stack`); `innermost` takes the frame the job's
main thread was in from it.

`SIGNAL` is SIGURG, whose default action is to ignore it: a signal that comes before the child
has registered, or after it has replaced itself with another program, does it no harm.
"""

from __future__ import annotations

import faulthandler
import os
import re
import signal

from taiat.forking import posix

#: The signal a job's child dumps its stack on.
SIGNAL = signal.SIGURG
#: Bytes of a dump kept: faulthandler writes at most 100 frames a thread.
MAX_DUMP = 256 << 10
#: How long the supervisor waits for a dump before it kills a job (seconds).
WAIT = 0.5
#: A dump that has stopped growing for this long (seconds) is taken as whole.
QUIET = 0.05

_FRAME = re.compile(r'^\s*File "(?P<file>.*)", line (?P<line>\S+) in (?P<function>.*)$')


def listen(fd: int) -> None:
    """In the job's child: dump every thread's stack to `fd` on `SIGNAL`, and go on."""
    faulthandler.register(SIGNAL, file=fd, all_threads=True, chain=False)


def open_pipe() -> tuple[int, int]:
    """The pipe for a child's dumps: (read end, write end), both non-blocking, so that neither
    a supervisor that does not read nor a job that fills it can hold the child in its signal
    handler (a dump that does not fit is cut short)."""
    read_end, write_end = os.pipe()
    for fd in (read_end, write_end):
        os.set_blocking(fd, False)
    return read_end, write_end


def innermost(dump: str) -> str | None:
    """The frame the job's main thread was in, as a traceback says it (`File "agents.py",
    line 12, in wait_for_api`); None when the dump has none. faulthandler lists the threads
    newest first, so the main thread, the oldest, comes last."""
    blocks: list[list[str]] = []
    for line in dump.splitlines():
        if not line.startswith(" "):
            if line.strip():
                blocks.append([])  # a thread's header: "Current thread 0x... (most recent ...):"
            continue
        if blocks:
            blocks[-1].append(line)
    for block in reversed(blocks):
        for line in block:
            found = _FRAME.match(line)
            if found is not None:
                where = found.group("file"), found.group("line"), found.group("function")
                return 'File "{}", line {}, in {}'.format(*where)
        if block:  # "<no Python frame>", or only "..." left of a cut dump
            return None
    return None


def whole(dump: str) -> bool:
    """Whether a dump has reached its end: its last line is the outermost frame of a main
    thread (a module's body), which faulthandler writes last."""
    if not dump.endswith("\n"):
        return False
    last = dump.rstrip("\n").rsplit("\n", 1)[-1]
    return last.endswith(" in <module>")


class StackReader:
    """The supervisor's end of a child's dump pipe: ask for a dump, read it as it comes, and
    tell when it is in (whole, stopped growing, or out of time)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._dump = bytearray()
        #: When the dump asked for is to be given up on (monotonic seconds); None: not asked.
        self.until: float | None = None
        self._last_read: float | None = None

    @property
    def asked(self) -> bool:
        return self.until is not None

    def ask(self, pid: int, now: float, wait: float = WAIT) -> bool:
        """Signal `pid` to dump its stack, dropping what an earlier dump left in the pipe;
        False when it could not be signalled (it has gone)."""
        self.read(now)
        self._dump.clear()
        self._last_read = None
        try:
            os.kill(pid, SIGNAL)
        except OSError:
            self.until = None
            return False
        self.until = now + wait
        return True

    def read(self, now: float) -> None:
        """Take what the pipe holds; never blocks."""
        while self.fd >= 0:
            chunk = posix.read_ready(self.fd, 1 << 16)
            if chunk is None:
                return
            if not chunk:
                self.close()
                return
            if self.until is not None and len(self._dump) < MAX_DUMP:
                self._dump += chunk[: MAX_DUMP - len(self._dump)]
                self._last_read = now

    def next_timer(self) -> float | None:
        """When to look again at a dump asked for."""
        if self.until is None:
            return None
        if self._last_read is not None:
            return min(self.until, self._last_read + QUIET)
        return self.until

    def done(self, now: float) -> bool:
        """Whether the dump asked for is in, or its time is up."""
        if self.until is None:
            return False
        if now >= self.until or self.fd < 0:
            return True
        if self._last_read is None:
            return False
        return whole(self.text) or now >= self._last_read + QUIET

    @property
    def text(self) -> str:
        return self._dump.decode("utf-8", "backslashreplace")

    def take(self) -> str | None:
        """The dump asked for (None if none came), and no dump asked for any more."""
        self.until = None
        self._last_read = None
        text = self.text.strip("\n")
        self._dump.clear()
        return text or None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
