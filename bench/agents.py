"""Agents for the benchmarks: as cheap as a job can be."""

from __future__ import annotations

import time


def noop() -> None:
    return None


def stamp() -> float:
    """The wall-clock time at which the job's code began, for enqueue-to-start latency."""
    return time.time()


def big(megabytes: int = 200) -> str:
    """A result of `megabytes` MiB of JSON text (and two quotes)."""
    return "x" * (megabytes << 20)


def heavy_import() -> None:
    """Imports the heavy agents module (`bench.heavy_agents`) in the job's own process, as an
    agent that imports its libraries in its body does: every job pays for the import."""
    import bench.heavy_agents  # noqa: F401
