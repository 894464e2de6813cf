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
`os.fork()`. With more than one thread it forks with `os.fork()`.
"""

from __future__ import annotations

import ctypes
import os
import sys
import traceback
from collections.abc import Callable
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
        os.register_at_fork = self._noted

    def _noted(
        self,
        *,
        before: Hook | None = None,
        after_in_child: Hook | None = None,
        after_in_parent: Hook | None = None,
    ) -> None:
        """`os.register_at_fork`, noting the hooks so as to run them on a quick fork too."""
        hooks = {"before": before, "after_in_child": after_in_child}
        hooks["after_in_parent"] = after_in_parent
        self._register(**{when: hook for when, hook in hooks.items() if hook is not None})
        for when, hook in hooks.items():
            if hook is not None:
                getattr(self, when).append(hook)

    def quick(self) -> bool:
        """Whether a fork now may skip the interpreter's hooks: this process has one thread."""
        try:
            return len(os.listdir("/proc/self/task")) == 1
        except OSError:
            return False

    def fork(self) -> int:
        """`os.fork()`: the child's pid in the parent, 0 in the child; OSError if it fails."""
        if not self.quick():
            return os.fork()
        _run(reversed(self.before))  # as os.fork does: last registered, first called
        pid = self._fork()
        if pid == 0:
            if self._random is not None:
                self._random.seed()
            _run(self.after_in_child)
            return 0
        _run(self.after_in_parent)
        if pid < 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number))
        return pid


def _run(hooks: Any) -> None:
    for hook in hooks:
        try:
            hook()
        except Exception:  # noqa: BLE001 - as os.fork does: a failing hook is reported, no more
            traceback.print_exc()
