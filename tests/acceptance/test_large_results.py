"""A large result, allowed by a raised --max-result-bytes, goes to the database without holding
the supervisor's loop: its heartbeat, its timeouts and its status file stay on time while the
result crosses, and its memory does not grow with the result."""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from conftest import wait_until
from support import agent_job, finished

from taiat import JobManager
from taiat.jobs import JobStatus

MB = 48
LEASE = 5.0


def test_a_large_result_keeps_the_loop_on_time_and_its_memory_small(
    database_url: str, supervisor: Any, tmp_path: Path
) -> None:
    manager = JobManager(database_url)
    sup = supervisor("--max-result-bytes", str(100 << 20), "--lease", str(LEASE))
    warm = manager.create_job(**agent_job("warm", "plain"))  # the claim and write paths loaded
    wait_until(lambda: finished(manager, warm.id), 30, "a first small job", watch=sup)
    process = psutil.Process(sup.pid)
    before = process.memory_info().rss

    large = manager.create_job(**agent_job("large", "huge", megabytes=MB))
    short = manager.create_job(
        **{**agent_job("short", "sleep", seconds=120), "timeout_seconds": 2, "max_retries": 0}
    )
    seen: dict[str, float] = {"peak_rss": before, "heartbeat_age": 0.0, "status_age": 0.0}

    def sample() -> bool:
        seen["peak_rss"] = max(seen["peak_rss"], process.memory_info().rss)
        ages = [w["heartbeat_age"] for w in manager.port.list_workers()]
        assert ages, "the supervisor's row is gone"
        seen["heartbeat_age"] = max(seen["heartbeat_age"], *ages)
        updated = sup.status().get("updated_at")
        if updated:
            age = (datetime.now(UTC) - datetime.fromisoformat(updated)).total_seconds()
            seen["status_age"] = max(seen["status_age"], age)
        return bool(finished(manager, large.id) and finished(manager, short.id))

    wait_until(sample, 120, "the large result stored and the short job timed out", watch=sup)

    # The loop never stalled: the heartbeat (every lease / 3) and the status file (every 2 s)
    # stayed well within the lease, so no peer could have taken these jobs back.
    assert seen["heartbeat_age"] < LEASE, seen
    assert seen["status_age"] < LEASE, seen
    # The supervisor held the result a read at a time, never whole.
    assert seen["peak_rss"] - before < (MB << 20) // 4, seen

    done = manager.get_job(large.id)
    assert done is not None and done.status == JobStatus.COMPLETED
    assert done.result == "x" * (MB << 20)
    timed_out = manager.get_job(short.id)
    assert timed_out is not None and timed_out.status == JobStatus.FAILED
    assert "timed out after 2 s" in (timed_out.error_message or "")
    (attempt,) = manager.get_attempts(short.id)
    assert attempt.outcome == "timed_out"
    assert attempt.wall_seconds is not None and attempt.wall_seconds < 2 + LEASE
    # Logged once the supervisor hears from the process that stored it: a moment after the
    # database shows it.
    wait_until(lambda: "its large result is stored" in sup.log(), 30, "the log line", watch=sup)
    manager.engine.dispose()


def test_a_stop_waits_for_a_large_result_being_stored(
    database_url: str, supervisor: Any, tmp_path: Path
) -> None:
    manager = JobManager(database_url)
    sup = supervisor("--max-result-bytes", str(100 << 20))
    large = manager.create_job(**agent_job("large", "huge", megabytes=MB))
    # Its child has ended and been reaped: its result is now being stored on the side.
    wait_until(lambda: "(large) completed:" in sup.log(), 60, "the large result in", watch=sup)
    sup.signal(signal.SIGTERM)
    assert sup.wait(120) == 0
    done = manager.get_job(large.id)
    assert done is not None and done.status == JobStatus.COMPLETED
    assert done.result == "x" * (MB << 20)
    assert "its large result is stored" in sup.log()  # the supervisor has ended: all said
    manager.engine.dispose()
