"""Claims with fleet-wide limits: the claim's p50 with 20 limit keys in use and 100k waiting
jobs, against the p50 of the same claims with no limit set, in the same database and run.

The jobs are spread over 20 explicit keys in turn; 10 jobs are claimed first and kept
running, one of each of 10 keys. Then the claims are timed (each claim of one job put back at
once, as in `scale`): with no limit set (the one-statement claim), then with a cap of 1 on
each of the 20 keys (half of them full, so the claim passes over their jobs), then with a
rate as well on each key (one that never binds, to time its bookkeeping).
"""

from __future__ import annotations

from typing import Any

from bench.common import DATABASES, NOOP, fresh_database, manager, percentile
from bench.scale import analyse, claim_latency

KEYS = [f"customer:{n}" for n in range(20)]
JOBS = 100_000
BATCH = 20_000
CLAIMS = 300


def fill(url: str, count: int) -> None:
    jobs = manager(url)
    try:
        made = 0
        while made < count:
            size = min(BATCH, count - made)
            jobs.create_jobs(
                [{**NOOP, "limit_keys": [KEYS[(made + n) % len(KEYS)]]} for n in range(size)]
            )
            made += size
    finally:
        jobs.engine.dispose()


def claim_p50_ms(url: str, samples: int) -> tuple[float, float]:
    """The p50 and p99 in ms of `samples` claims of one job, each put back at once."""
    latencies = claim_latency(url, samples)
    return percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000


def case(kind: str, count: int, samples: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with fresh_database(kind) as url:
        fill(url, count)
        jobs = manager(url)
        try:
            # Held running for the whole run: 10 of the keys are full once capped at 1.
            jobs.claim_jobs("bench-holder", len(KEYS) // 2)
            analyse(url)
            base, base_p99 = claim_p50_ms(url, samples)
            for label, rate in (("caps", None), ("caps and rates", "1000000/s")):
                for key in KEYS:
                    jobs.set_limit(key, concurrency=1, rate=rate)
                p50, p99 = claim_p50_ms(url, samples)
                rows.append(
                    {
                        "database": DATABASES[kind],
                        "waiting_jobs": count,
                        "limit_keys": len(KEYS),
                        "limits": label,
                        "claim_p50_ms_no_limits": round(base, 2),
                        "claim_p99_ms_no_limits": round(base_p99, 2),
                        "claim_p50_ms_with_limits": round(p50, 2),
                        "claim_p99_ms_with_limits": round(p99, 2),
                        "p50_ratio": round(p50 / base, 2),
                    }
                )
        finally:
            jobs.engine.dispose()
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    count, samples = (10_000, 100) if quick else (JOBS, CLAIMS)
    rows: list[dict[str, Any]] = []
    for kind in DATABASES:
        rows += case(kind, count, samples)
    return rows
