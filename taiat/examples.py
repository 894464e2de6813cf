"""Example agents that need no network, registered by default so the example DAG can run."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from typing import Any

from taiat.context import current_job


def generate_numbers(count: int = 100, seed: int = 7) -> dict[str, Any]:
    rng = random.Random(seed)
    return {"numbers": [round(rng.gauss(50, 15), 2) for _ in range(count)]}


def _upstream_numbers() -> list[float]:
    numbers: list[float] = []
    for result in current_job().dependency_results.values():
        if isinstance(result, dict):
            numbers.extend(result.get("numbers", []))
    return numbers


def summarise(**_: Any) -> dict[str, Any]:
    numbers = _upstream_numbers()
    return {
        "count": len(numbers),
        "mean": round(statistics.fmean(numbers), 3) if numbers else None,
        "stdev": round(statistics.stdev(numbers), 3) if len(numbers) > 1 else None,
    }


def histogram(bins: int = 5, **_: Any) -> dict[str, Any]:
    numbers = _upstream_numbers()
    if not numbers:
        return {"bins": []}
    low, high = min(numbers), max(numbers)
    width = (high - low) / bins or 1.0
    counts = [0] * bins
    for value in numbers:
        counts[min(int((value - low) / width), bins - 1)] += 1
    return {"low": low, "width": round(width, 3), "bins": counts}


def report(**_: Any) -> dict[str, Any]:
    parts = {}
    for job_id, result in current_job().dependency_results.items():
        parts[job_id] = result
    return {"report": parts, "sections": len(parts)}


#: Agent name -> function; TAIAT_AGENT_CONFIG entries of the same name take precedence.
AGENTS: dict[str, Callable[..., Any]] = {
    "example_generate": generate_numbers,
    "example_summarise": summarise,
    "example_histogram": histogram,
    "example_report": report,
}
