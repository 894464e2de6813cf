"""Enqueue-to-start latency of an idle supervisor: with LISTEN/NOTIFY (with a child forked ahead
for each free slot, as by default, and without), and with polling only; and PgQueuer's idle
worker in the same run, when the peers are set up (`bench.peers`)."""

from __future__ import annotations

import random
import time
from typing import Any

from bench import peers
from bench.common import fresh_database, manager, start_supervisor, stop, summary_ms, wait_for


def measure(
    url: str, samples: int, *args: str, agents: dict[str, str] | None = None
) -> dict[str, float]:
    """Enqueue-to-start latency of `samples` stamp jobs, one at a time, each after a random
    idle while, run by a supervisor with the options `args` and the agents `agents` (see
    `start_supervisor`)."""
    jobs = manager(url)
    sup = start_supervisor(url, "--max-concurrent-jobs", "2", *args, agents=agents)
    try:
        # A first job proves the supervisor is up and serving before anything is timed.
        first = jobs.create_job("agent", "warm-up", payload={"agent_name": "noop"})
        wait_for(lambda: jobs.get_job(first.id).status.finished, 60, "the supervisor to start")
        latencies = []
        rng = random.Random(1)
        for _ in range(samples):
            # Idle again, for a random while: a poll-only supervisor is caught anywhere in its
            # interval, as it would be by a job enqueued at any moment.
            time.sleep(rng.uniform(0.05, 1.05))
            enqueued = time.time()
            job = jobs.create_job("agent", "stamp", payload={"agent_name": "stamp"})
            done = wait_for(lambda j=job: _finished(jobs, j.id), 30, "a job")
            latencies.append(done.result - enqueued)
        return summary_ms(latencies)
    finally:
        stop(sup)
        jobs.engine.dispose()


def _finished(jobs: Any, job_id: str) -> Any:
    job = jobs.get_job(job_id)
    return job if job.status.finished else None


def run(quick: bool = False) -> list[dict[str, Any]]:
    samples = 20 if quick else 100
    rows = []
    with fresh_database("postgresql") as url:
        rows.append(
            {
                "case": "PostgreSQL, LISTEN/NOTIFY (poll 60 s)",
                **measure(url, samples, "--poll-interval", "60"),
            }
        )
        rows.append(
            {
                "case": "PostgreSQL, LISTEN/NOTIFY, each child forked when its job comes",
                **measure(url, samples, "--poll-interval", "60", "--no-waiting-children"),
            }
        )
        rows.append(
            {
                "case": "PostgreSQL, polling only every 1 s",
                **measure(url, samples, "--poll-interval", "1", "--no-listen"),
            }
        )
    theirs = peers.pgqueuer_latency(samples)
    if theirs is not None:
        pgqueuer = summary_ms(theirs)
        rows.append({"case": "PgQueuer, LISTEN/NOTIFY (its own script)", **pgqueuer})
        for key in ("p50_ms", "p99_ms"):
            if key in rows[0] and key in pgqueuer:
                rows[0][f"{key}_to_pgqueuer"] = round(rows[0][key] / pgqueuer[key], 2)
    with fresh_database("sqlite") as url:
        rows.append(
            {"case": "SQLite, polling every 1 s", **measure(url, samples, "--poll-interval", "1")}
        )
    return rows
