"""Helpers shared by the test tiers: run actions at the same moment, poll with a deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
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
