"""What wakes the supervisor's loop besides its children's pipes: a self-pipe that signal
handlers (through `signal.set_wakeup_fd`) and `stop()` write to, and named timers.

Signal handlers only count; the loop does the work."""

from __future__ import annotations

import os
import select
import signal
import threading
from typing import Any


class WakeUp:
    """The self-pipe, the stop requests counted so far, and the signal handlers feeding both."""

    def __init__(self) -> None:
        self.fd, self._write_fd = os.pipe()
        for fd in (self.fd, self._write_fd):
            os.set_blocking(fd, False)
        self.stop_requests = 0
        self.last_reason = "stop requested"
        #: SIGHUPs received so far: each asks for the status and metrics files afresh.
        self.hangups = 0
        #: Whether a SIGCHLD came since the loop last looked (`take_child_signal`).
        self._child_signal = False
        #: False when embedded off the main thread: no SIGCHLD wake-ups, stop() only.
        self.signals_installed = False
        self._old_wakeup = -1
        self._old_handlers: dict[int, Any] = {}

    def request_stop(self, reason: str = "stop requested") -> None:
        """Safe from signal handlers and other threads."""
        self.last_reason = reason
        self.stop_requests += 1
        self.poke()

    def poke(self) -> None:
        try:
            os.write(self._write_fd, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the loop will wake anyway

    def clear(self) -> None:
        try:
            while os.read(self.fd, 512):
                pass
        except BlockingIOError:
            pass

    def install_signals(self) -> None:
        """SIGTERM and SIGINT request a stop; SIGHUP is counted (the loop rewrites the status
        and metrics files); SIGCHLD wakes the loop and is noted."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._old_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for signum, handler in (
            (signal.SIGTERM, self._on_stop_signal),
            (signal.SIGINT, self._on_stop_signal),
            (signal.SIGHUP, self._on_hangup),
            (signal.SIGCHLD, self._on_child),
        ):
            self._old_handlers[signum] = signal.signal(signum, handler)
        self.signals_installed = True

    def restore_signals(self) -> None:
        if self.signals_installed:
            for signum, handler in self._old_handlers.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(self._old_wakeup)
            self.signals_installed = False

    def _on_stop_signal(self, signum: int, _frame: Any) -> None:
        # The wake-up fd has the byte already; count the request and name it.
        self.last_reason = signal.Signals(signum).name
        self.stop_requests += 1

    def _on_hangup(self, _signum: int, _frame: Any) -> None:
        self.hangups += 1

    def _on_child(self, _signum: int, _frame: Any) -> None:
        # A handler of its own, for the wake-up fd to hear SIGCHLD at all.
        self._child_signal = True

    def take_child_signal(self) -> bool:
        """Whether a SIGCHLD came since the last call (always True off the main thread, where
        none is heard)."""
        came = self._child_signal or not self.signals_installed
        self._child_signal = False
        return came


class Timers:
    """Named periodic timers on the monotonic clock."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}

    def due(self, name: str, now: float, every: float, *, force: bool = False) -> bool:
        """True (and rescheduled `every` seconds on) when the timer has come, or when forced."""
        if force or now >= self.at.get(name, now):
            self.at[name] = now + every
            return True
        return False

    def next(self, skip: tuple[str, ...] = ()) -> float:
        return min((at for name, at in self.at.items() if name not in skip), default=0.0)


def ready_fds(fds: list[int], timeout: float) -> list[int]:
    """Those of `fds` ready to read (or at end of file), waiting at most `timeout` seconds for
    one: a poll made afresh, with none of a selector's bookkeeping on every turn of the loop."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return [fd for fd, _ in poller.poll(timeout * 1000)]
