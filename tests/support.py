"""Helpers shared by the test tiers: run actions at the same moment, poll with a deadline,
leave a process no file descriptor to open."""

from __future__ import annotations

import errno
import os
import resource
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def race(*actions: Callable[[], Any], timeout: float = 60.0) -> list[Any]:
    """Run the actions in threads released together; their results, or the first error."""
    barrier = threading.Barrier(len(actions))
    results: list[Any] = [None] * len(actions)
    errors: list[BaseException] = []

    def run(index: int, action: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[index] = action()
        except BaseException as exc:  # noqa: BLE001 - handed to the test below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=pair) for pair in enumerate(actions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        if thread.is_alive():
            raise AssertionError(f"an action was still running after {timeout} s")
    if errors:
        raise errors[0]
    return results


def poll(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """`predicate()` once it is true, polling with a growing delay; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


@contextmanager
def no_free_descriptor() -> Iterator[None]:
    """No file descriptor to be had in this process, as no process is to be had for a fork
    under the user's process limit that a job's fork bomb has reached: every descriptor below
    a lowered limit is taken until the end of the block."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    taken: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 16, hard))
    try:
        while True:
            try:
                taken.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as exc:
                assert exc.errno == errno.EMFILE
                break
        yield
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
