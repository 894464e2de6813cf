"""Example agents that need no network, registered by default so the example DAG can run."""

from __future__ import annotations

import random
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


def _summary(numbers: list[float]) -> dict[str, Any]:
    # Here, not at the top: the fork server imports this module, and `statistics` brings
    # `decimal` and `fractions`, which every fork would then copy page tables for.
    import statistics

    return {
        "count": len(numbers),
        "mean": round(statistics.fmean(numbers), 3) if numbers else None,
        "stdev": round(statistics.stdev(numbers), 3) if len(numbers) > 1 else None,
    }


def summarise(**_: Any) -> dict[str, Any]:
    return _summary(_upstream_numbers())


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


# -- agents that declare their inputs and outputs, for query jobs --------------------------
# The planner picks one of them only for data that none of your own agents produces.


def sample(count: int, seed: int) -> list[float]:
    """`count` numbers drawn with `seed`: the `sample` output, returned bare."""
    return generate_numbers(count, seed)["numbers"]


def describe_sample(sample: list[float]) -> dict[str, Any]:
    """The `sample_summary` output."""
    return _summary(sample)


def bin_sample(sample: list[float], bins: int) -> dict[str, Any]:
    """The `sample_histogram` output."""
    if not sample:
        return {"bins": []}
    low, high = min(sample), max(sample)
    width = (high - low) / bins or 1.0
    counts = [0] * bins
    for value in sample:
        counts[min(int((value - low) / width), bins - 1)] += 1
    return {"low": low, "width": round(width, 3), "bins": counts}


def report_sample(
    sample_summary: dict[str, Any], sample_histogram: dict[str, Any]
) -> dict[str, Any]:
    """The `sample_report` output, keyed by its name as an agent with outputs may return it."""
    summary, bins = sample_summary, sample_histogram["bins"]
    text = f"{summary['count']} numbers, mean {summary['mean']}, stdev {summary['stdev']}"
    return {"sample_report": f"{text}; histogram {bins}"}


def _declared(function: Callable[..., Any], inputs: list[str], output: str) -> dict[str, Any]:
    return {"function": function, "inputs": inputs, "outputs": [output]}


#: Agent name -> function, or a declaration for the query planner; TAIAT_AGENT_CONFIG entries
#: of the same name take precedence.
AGENTS: dict[str, Any] = {
    "example_generate": generate_numbers,
    "example_summarise": summarise,
    "example_histogram": histogram,
    "example_report": report,
    "example_sample": _declared(sample, ["count", "seed"], "sample"),
    "example_describe": _declared(describe_sample, ["sample"], "sample_summary"),
    "example_bins": _declared(bin_sample, ["sample", "bins"], "sample_histogram"),
    "example_write_report": _declared(
        report_sample, ["sample_summary", "sample_histogram"], "sample_report"
    ),
}
