"""Progress of a batch of jobs: jobs done of the total, the rate, the failures. On a terminal a
bar that redraws in place; elsewhere (a log, a pipe, journald) plain lines. Used by
`taiat-supervisor --burst` and by `taiat wait ID...`.

The supervisor is single-threaded by design (it forks), so the bar has no refresh thread: it
is redrawn when something changes.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from taiat.errors import TaiatError
from taiat.jobs import Job, Outcome

log = logging.getLogger(__name__)

#: Off a terminal, the supervisor logs its progress at most this often (seconds).
LOG_EVERY = 5.0
#: How often the supervisor asks the database how many jobs are left (seconds).
_COUNT_EVERY = 1.0
#: Endings that are neither done nor failed: the job goes back to pending, or has moved on.
_NOT_A_RUN = frozenset({Outcome.STOPPED, Outcome.SUPERSEDED, Outcome.CANCELLED})


def summary(
    done: int, total: int, failed: int, elapsed: float, before: int = 0, cancelled: int = 0
) -> str:
    """'12 of 40 jobs done, 2 failed, 3.1 jobs/s', the rate of those done after `before`; the
    cancelled ones, if any, after the failed ones ('2 failed, 1 cancelled')."""
    rate = (done - before) / elapsed if elapsed > 0 else 0.0
    ended = f"{failed} failed" + (f", {cancelled} cancelled" if cancelled else "")
    return f"{done} of {total} jobs done, {ended}, {rate:.1f} jobs/s"


class ProgressDisplay:
    """Shows (done, total, failed, cancelled) as a bar on `stream` if it is a terminal, else as
    lines through `plain`, at most every `every` seconds (0: on every change)."""

    def __init__(
        self,
        what: str,
        *,
        stream: TextIO | None = None,
        plain: Callable[[str], None] | None = None,
        every: float = LOG_EVERY,
    ) -> None:
        self.what = what
        self.stream = stream or sys.stderr
        self.plain = plain or (lambda line: print(line, file=self.stream, flush=True))
        self.every = every
        self.started = time.monotonic()
        self.state = (0, 0, 0, 0)
        #: Done at the first update: the rate counts only what finished while we watched.
        self._baseline: int | None = None
        self._said: tuple[int, int, int, int] | None = None
        self._said_at = 0.0
        self._bar: Progress | None = None
        if self.stream.isatty():
            console = Console(file=self.stream, stderr=self.stream is sys.stderr)
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TextColumn("{task.fields[failed]}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[note]}"),
                console=console,
                auto_refresh=False,
                transient=False,
            )
            self._task = self._bar.add_task(what, total=None, rate="", failed="", note="")
            self._bar.start()

    @property
    def on_terminal(self) -> bool:
        return self._bar is not None

    @property
    def console(self) -> Console | None:
        return None if self._bar is None else self._bar.console

    def update(self, done: int, total: int, failed: int, cancelled: int = 0) -> None:
        self.state = (done, total, failed, cancelled)
        if self._baseline is None:
            self._baseline = done
        elapsed = time.monotonic() - self.started
        if self._bar is not None:
            rate = (done - self._baseline) / elapsed if elapsed > 0 else 0.0
            self._bar.update(
                self._task,
                completed=done,
                total=max(total, done),
                rate=f"{rate:.1f} jobs/s",
                failed=(f"[red]{failed} failed[/red]" if failed else "0 failed")
                + (f", [magenta]{cancelled} cancelled[/magenta]" if cancelled else ""),
            )
            self._bar.refresh()
            return
        now = time.monotonic()
        if self.state != self._said and now - self._said_at >= self.every:
            self._say()

    def _say(self, note: str = "") -> None:
        self._said, self._said_at = self.state, time.monotonic()
        done, total, failed, cancelled = self.state
        elapsed = time.monotonic() - self.started
        said = summary(done, total, failed, elapsed, self._baseline or 0, cancelled)
        line = f"{self.what}: {said}"
        self.plain(f"{line}; {note}" if note else line)

    def close(self, note: str = "") -> None:
        """The last state shown, with `note` after it (what was left undone, say)."""
        if self._bar is not None:
            if note:
                self._bar.update(self._task, note=note)
                self._bar.refresh()
            self._bar.stop()
            self._bar = None
        elif self.state != self._said or note:
            self._say(note)


@contextmanager
def logs_above(display: ProgressDisplay) -> Iterator[None]:
    """While the bar is up, log lines are printed above it instead of through it."""
    console = display.console
    if console is None:
        yield
        return
    moved: list[tuple[logging.StreamHandler[Any], Any]] = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is display.stream:
            moved.append((handler, handler.setStream(_Above(console))))
    try:
        yield
    finally:
        for handler, stream in moved:
            handler.setStream(stream)


class _Above:
    """A file-like object whose lines the console prints above its live display."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def write(self, text: str) -> int:
        if text.strip():
            self.console.print(text.rstrip("\n"), markup=False, highlight=False)
        return len(text)

    def flush(self) -> None:
        pass


# -- the supervisor in burst mode ----------------------------------------------------------


class BurstProgress:
    """Watches a burst supervisor's endings: done here, of done plus what the database still
    holds (pending or running, on any supervisor)."""

    def __init__(
        self,
        unfinished: Callable[[], int],
        display: ProgressDisplay,
        healthy: Callable[[], bool] = lambda: True,
    ) -> None:
        """`unfinished` counts the jobs the database still holds, pending or running."""
        self.unfinished = unfinished
        self.display = display
        self.healthy = healthy
        self.done = 0
        self.failed = 0
        self.left = self._count() or 0
        self._counted_at = time.monotonic()
        display.update(0, self.left, 0)

    def _count(self) -> int | None:
        if not self.healthy():  # the supervisor is riding out an outage: do not add to it
            return None
        try:
            return self.unfinished()
        except TaiatError:  # progress must never stop the supervisor
            return None

    def job_ended(self, job: Job, ending: Any) -> None:
        if getattr(ending, "ok", False):
            self.done += 1
        elif getattr(ending, "cause", None) not in _NOT_A_RUN:
            self.done += 1
            self.failed += 1
        now = time.monotonic()
        if now - self._counted_at >= _COUNT_EVERY:
            counted = self._count()
            self._counted_at = now
            if counted is not None:
                self.left = counted
        else:
            self.left = max(self.left - 1, 0)
        self.display.update(self.done, self.done + self.left, self.failed)


def left_waiting(backlog: Any) -> str:
    """What a burst left for later (a `taiat.store.port.Backlog`), in a few words: '3 jobs
    left waiting until 2030-01-31 09:00:00 UTC or later'; nothing for None."""
    if backlog is None:
        return ""
    jobs = backlog.later + backlog.blocked
    first = backlog.later_from
    when = "later" if first is None else f"{first:%Y-%m-%d %H:%M:%S} UTC or later"
    return f"{jobs} job{'' if jobs == 1 else 's'} left waiting until {when}"


def run_burst(supervisor: Any) -> int:
    """Run a burst supervisor with its progress shown on standard error."""
    display = ProgressDisplay("burst", plain=lambda line: log.info("%s", line))
    watcher = BurstProgress(
        supervisor.port.unfinished_count, display, lambda: supervisor.recorder.ok
    )
    supervisor.observers.append(watcher.job_ended)
    with logs_above(display):
        try:
            return supervisor.run()
        finally:
            watcher.left = 0
            display.update(watcher.done, watcher.done, watcher.failed)
            display.close(left_waiting(getattr(supervisor, "left_for_later", None)))
