"""Forking without the interpreter's after-fork hooks, while they have nothing to do.

`os.fork()` runs, in every child, the hooks the standard library registered with
`os.register_at_fork`: `threading` rebuilds its bookkeeping of threads, `logging` its locks,
`random` reseeds itself. In a process with one thread no lock can be held by another thread at
the fork, and the thread's identity does not change, so of all that only the reseed does
anything. It is not free: run in a fresh child, that Python code costs a few hundred
microseconds of copy-on-write faults, as much as the fork itself.

So the fork server forks through libc while it has one thread (a thread could hold a lock the
hooks exist to reset), reseeds `random`, and runs itself the hooks registered after it began,
by the modules that loading the executors imported: a job sees every hook it would see under
`os.fork()`. Signals are blocked across the fork, so that none is left due in the child. With
more than one thread it forks with `os.fork()`.
"""

from __future__ import annotations

import _signal
import ctypes
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import Any

Hook = Callable[[], Any]


class QuickFork:
    """Forks like `os.fork()`; create it before the modules whose hooks it must run are
    imported, and only in a process that forks in one place (the fork server)."""

    def __init__(self) -> None:
        self.before: list[Hook] = []
        self.after_in_parent: list[Hook] = []
        self.after_in_child: list[Hook] = []
        #: `random`'s hook, registered before this began, is the one that does something.
        self._random = sys.modules.get("random")
        self._fork = ctypes.PyDLL(None, use_errno=True).fork  # the GIL stays held across it
        self._register = os.register_at_fork
        os.register_at_fork = self._noted  # type: ignore[assignment] # passes all through

    def _noted(self, *args: Any, **hooks: Hook) -> None:
        """`os.register_at_fork`, which checks the arguments; the hooks are noted so as to run
        them on a quick fork too."""
        self._register(*args, **hooks)
        for when in ("before", "after_in_parent", "after_in_child"):
            if when in hooks:
                getattr(self, when).append(hooks[when])

    def quick(self) -> bool:
        """Whether a fork now may skip the interpreter's hooks: this process has one thread,
        and `threading` knows of no other (not even one that has ended unseen by it)."""
        threading = sys.modules.get("threading")
        if threading is not None and threading.active_count() != 1:
            return False
        try:
            return len(os.listdir("/proc/self/task")) == 1
        except OSError:
            return False

    def fork(self) -> int:
        """`os.fork()`: the child's pid in the parent, 0 in the child; OSError if it fails.
        (Decided before the `before` hooks run: one that starts a thread is not supported.)"""
        if not self.quick():
            return os.fork()
        sys.audit("os.fork")
        _run(reversed(self.before))  # as os.fork does: last registered, first called
        # No signal arrives during the fork: one would leave its Python handler due in the
        # child too, which os.fork clears and a plain fork cannot.
        mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, _ALL_SIGNALS)
        pid = self._fork()
        number = ctypes.get_errno()
        _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)
        if pid == 0:
            if self._random is not None:
                self._random.seed()
            _run(self.after_in_child)
            return 0
        _run(self.after_in_parent)
        if pid < 0:
            raise OSError(number, os.strerror(number))
        return pid


_ALL_SIGNALS = _signal.valid_signals()


def _run(hooks: Iterable[Hook]) -> None:
    """Call each hook as os.fork does: from a copy of the list (a hook may register more),
    reporting what one raises and going on."""
    for hook in list(hooks):
        try:
            hook()
        except BaseException:  # noqa: BLE001 - reported, as os.fork reports it, no more
            print(f"Exception ignored in fork hook {hook!r}:", file=sys.stderr)
            traceback.print_exc()
