"""Helpers shared by the test tiers: run actions at the same moment, poll with a deadline,
leave a process no file descriptor to open; agent jobs, the acceptance tests' agents for a
supervisor run in the test's own process, and a job of every field for the pure pieces."""

from __future__ import annotations

import errno
import importlib
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from taiat.jobs import Job, JobStatus, JobType

if TYPE_CHECKING:
    from taiat import JobManager

#: The acceptance tests' folder: its `agents` module holds agents that misbehave in every way a
#: job can; the daemons those tests start import it through PYTHONPATH.
ACCEPTANCE = Path(__file__).resolve().parent / "acceptance"


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


def agent_job(name: str, agent: str, **parameters: Any) -> dict[str, Any]:
    """The spec of an agent job, for `create_job(**...)` or `create_jobs([...])`."""
    return {
        "job_type": "agent",
        "name": name,
        "payload": {"agent_name": agent, "parameters": parameters},
    }


def finished(manager: JobManager, job_id: str) -> Job | None:
    """The job once it has finished, else None (to poll on)."""
    job = manager.get_job(job_id)
    return job if job is not None and job.status.finished else None


def acceptance_agents() -> ModuleType:
    """The acceptance tests' `agents` module, for a supervisor run in the test's own process.
    Its folder joins `sys.path`, which that supervisor hands on to its fork server: the jobs'
    executors are found there as they are here."""
    if str(ACCEPTANCE) not in sys.path:
        sys.path.append(str(ACCEPTANCE))
    return importlib.import_module("agents")


def sample_job(**changes: Any) -> Job:
    """A running query job with every kind of field set (the `changes` replace them)."""
    fields = {
        "id": "j1",
        "job_type": JobType.QUERY,
        "name": "n",
        "status": JobStatus.RUNNING,
        "payload": {"query": "q", "nested": [1, 2.5, None, True, {"x": "é"}]},
        "dependencies": ["a", "b"],
        "created_at": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        "started_at": datetime(2026, 1, 2, 3, 4, 6, 1),  # naive UTC, as the database gives it
        "timeout_seconds": 2.5,
        "claim_seq": 7,
        **changes,
    }
    return Job(**fields)  # type: ignore[arg-type]


def check_metrics(text: str) -> None:
    """`promtool check metrics` accepts `text` with no complaint at all. promtool is required
    under CI (`.ci/run` installs Debian's prometheus); elsewhere the check is skipped."""
    import pytest

    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is required under CI (Debian package prometheus)")
        pytest.skip("promtool not installed (Debian package prometheus)")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == ""


# -- checks on when jobs ran -----------------------------------------------------------------


def max_overlap(intervals: Iterable[tuple[datetime, datetime]]) -> int:
    """The most intervals open at any one moment. An interval is [start, end): one that ends
    at the moment another starts does not overlap it; one of no length is open at its moment."""
    # At one moment: ends of intervals that began before it, then starts, then ends of
    # intervals of no length.
    events: list[tuple[datetime, int, int]] = []
    for start, end in intervals:
        if end < start:
            raise ValueError(f"an interval ends ({end}) before it starts ({start})")
        events += [(start, 1, 1), (end, 2 if end == start else 0, -1)]
    events.sort(key=lambda event: event[:2])
    most = running = 0
    for _, _, change in events:
        running += change
        most = max(most, running)
    return most


def max_starts_in_window(
    starts: Iterable[datetime], window: timedelta = timedelta(seconds=1)
) -> int:
    """The most starts in any window of `window` length, [t, t + window): a start exactly
    `window` after another falls in the next window."""
    times = sorted(starts)
    most = first = 0
    for last, moment in enumerate(times):
        while times[first] <= moment - window:
            first += 1
        most = max(most, last - first + 1)
    return most


def drop_routines(conn: Any) -> None:
    """Drop what version 5 added to a database (its functions on PostgreSQL, its trigger on
    SQLite), as a test that makes an older version's database from a new one needs."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("DROP FUNCTION taiat_claim_limited")
        conn.exec_driver_sql("DROP FUNCTION taiat_has_key")
    else:
        conn.exec_driver_sql("DROP TRIGGER taiat_limit_starts_counted")
