"""Admission by memory: each agent's recent peak memory, and the agents whose jobs wait while
the host has not that much to spare (`--memory-reserve`).

An agent's estimate is the 95th percentile (nearest rank) of the peak memory of its last 20
attempts, on any host: those that end here are counted as they end, the fleet's are read from
the attempts table every few seconds (the newest only, by the index on `ended_at`). Before a
claim, the room is the host's available memory less the reserve, less what the jobs claimed
here are still expected to grow (each one's estimate less its memory now); an agent whose
estimate exceeds it is held back: its jobs are left out of the claim, pending, for any other
supervisor to take. An agent never seen (no attempt with a peak) and query jobs are admitted as
before. Within one claim, each job taken counts against the room: one that no longer fits is
given back at once, no retry spent.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil

from taiat.config import MemoryReserve, MiB
from taiat.jobs import Job, JobType

log = logging.getLogger(__name__)

#: How many of an agent's latest attempts its estimate is taken over.
PER_AGENT = 20
#: Which percentile of their peaks the estimate is.
QUANTILE = 0.95
#: How often the fleet's attempts are read (seconds).
REFRESH_EVERY = 5.0
#: Attempts read at most at the start (the newest), and at each refresh after: the cost stays
#: bounded however busy the fleet is (about 130 ms and 30 ms on PostgreSQL). An agent found
#: only further back counts as never seen; its own attempts here count all the same.
MOST_READ = 5000
MOST_REFRESHED = 1000
#: An agent held back is admitted again once the room exceeds its estimate by this share of
#: it, and by this many bytes at least.
MARGIN_SHARE = 0.05
MARGIN_LEAST = 16 * MiB
#: Attempts recorded this long after a later one was read (another host's clock, a write held
#: back a moment) are still found.
LATE = timedelta(seconds=10)


def agent_of(job: Job) -> str | None:
    """The agent an agent job runs, as the store records it (its payload's `agent_name`);
    None for a query."""
    if job.job_type is not JobType.AGENT:
        return None
    name = job.payload.get("agent_name")
    return name if isinstance(name, str) else None


def percentile(values: Sequence[int], quantile: float = QUANTILE) -> int:
    """The nearest-rank percentile of `values` (not empty): the least value that at least
    `quantile` of them do not exceed. Of 20 values, the 95th is the second highest: one
    outlier in twenty is ignored; of fewer than 20, it is the highest."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(quantile * len(ordered)))
    return ordered[rank - 1]


@dataclass
class RecentPeaks:
    """The peaks of each agent's latest attempts (at most `per_agent`), each attempt once."""

    per_agent: int = PER_AGENT
    #: agent -> [(ended_at, job_id, attempt, peak bytes)], newest first.
    _peaks: dict[str, list[tuple[datetime, str, int, int]]] = field(default_factory=dict)
    #: The latest `ended_at` read from the database.
    newest: datetime | None = None
    #: Each agent's estimate, kept as its peaks change (claims read it).
    _estimates: dict[str, int] = field(default_factory=dict)

    def add(self, agent: str, job_id: str, attempt: int, ended_at: datetime, peak: int) -> bool:
        """Count one attempt's peak; whether it changed the agent's latest."""
        if peak <= 0:
            return False
        if ended_at.tzinfo is not None:  # the database's times are naive UTC
            ended_at = ended_at.astimezone(UTC).replace(tzinfo=None)
        kept = self._peaks.setdefault(agent, [])
        if any(k[1] == job_id and k[2] == attempt for k in kept):
            return False
        if len(kept) >= self.per_agent and ended_at <= kept[-1][0]:
            return False
        kept.append((ended_at, job_id, attempt, peak))
        kept.sort(key=lambda k: k[0], reverse=True)
        del kept[self.per_agent :]
        self._estimates[agent] = percentile([k[3] for k in kept])
        return True

    def read(self, rows: Iterable[Mapping[Any, Any]]) -> None:
        """Count the rows of `SupervisorPort.recent_peaks`."""
        for row in rows:
            ended = row["ended_at"]
            self.add(row["agent"], row["job_id"], row["attempt"], ended, row["peak_rss_bytes"])
            if self.newest is None or ended > self.newest:
                self.newest = ended

    def since(self) -> datetime | None:
        """From when the next read needs attempts: None at first (the newest of any time)."""
        return None if self.newest is None else self.newest - LATE

    def estimate(self, agent: str | None) -> int | None:
        """The agent's estimate in bytes; None for an agent never seen (or no agent)."""
        return self._estimates.get(agent) if agent is not None else None

    def estimates(self) -> Mapping[str, int]:
        """Every agent's estimate, by name (not to be changed)."""
        return self._estimates


@dataclass(frozen=True)
class Memory:
    """The host's memory as a claim sees it (bytes)."""

    total: int
    available: int
    reserve: int
    #: What the jobs claimed here are expected to grow still.
    committed: int

    @property
    def room(self) -> int:
        """What a new job may take: available, less the reserve, less what is committed."""
        return self.available - self.reserve - self.committed


def host_memory(reserve: MemoryReserve, committed: int) -> Memory:
    """The host's memory now, with `reserve` and `committed`: read before every claim, so from
    the kernel's own two figures where it gives them (`MemTotal` and `MemAvailable` of
    /proc/meminfo, which `psutil.virtual_memory` reads too, with a dozen more a claim does not
    need: a tenth of its cost), else as psutil has them."""
    found = _meminfo()
    if found is None:
        memory = psutil.virtual_memory()
        found = memory.total, memory.available
    total, available = found
    return Memory(total, available, reserve.of(total), committed)


def _meminfo() -> tuple[int, int] | None:
    """(MemTotal, MemAvailable) in bytes from /proc/meminfo; None where it does not say."""
    try:
        fd = os.open("/proc/meminfo", os.O_RDONLY)
    except OSError:
        return None
    try:
        text = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    figures = []
    for name in (b"MemTotal:", b"MemAvailable:"):
        start = text.find(name)
        if start < 0:
            return None
        words = text[start + len(name) : text.find(b"\n", start)].split()
        if len(words) != 2 or words[1] != b"kB" or not words[0].isdigit():
            return None
        figures.append(int(words[0]) * 1024)
    return figures[0], figures[1]


class Admission:
    """Which agents' jobs this supervisor may start now, by memory."""

    def __init__(
        self,
        reserve: MemoryReserve,
        memory: Callable[[MemoryReserve, int], Memory] = host_memory,
    ) -> None:
        self.reserve = reserve
        #: How the host's memory is read (`host_memory`), given the reserve and what is
        #: committed.
        self._read_memory = memory
        self.peaks = RecentPeaks()
        #: The agents held back at the last claim, with their estimates.
        self.held: dict[str, int] = {}
        #: The memory the last claim was judged by; None before the first.
        self.memory: Memory | None = None
        #: Of the held agents, their ready jobs, as last counted (status file).
        self.ready: dict[str, int] = {}

    def ended(self, job: Job, attempt: Any) -> None:
        """A job's attempt ended here: its peak counts at once."""
        agent = agent_of(job)
        if agent is None or attempt is None or attempt.ended_at is None:
            return
        peak = attempt.peak_rss_bytes or 0
        self.peaks.add(agent, job.id, attempt.attempt, attempt.ended_at, peak)

    def committed(self, claimed: Iterable[tuple[Job, int]]) -> int:
        """What the jobs claimed here (each with its memory now) may still grow: each one's
        estimate less what it uses, where its agent has one."""
        total = 0
        for job, rss in claimed:
            estimate = self.peaks.estimate(agent_of(job))
            if estimate is not None:
                total += max(0, estimate - rss)
        return total

    def hold_back(self, committed: int) -> frozenset[str]:
        """Before a claim: the agents whose estimate exceeds the room now. Logs each agent
        held back, and each one admitted again."""
        estimates = self.peaks.estimates()
        if not estimates:
            self.memory = None
            return self._changed({})
        memory = self._read_memory(self.reserve, committed)
        self.memory = memory
        held = {
            agent: estimate
            for agent, estimate in estimates.items()
            if estimate + (_margin(estimate) if agent in self.held else 0) > memory.room
        }
        return self._changed(held)

    def _changed(self, held: dict[str, int]) -> frozenset[str]:
        memory = self.memory
        for agent in sorted(held.keys() - self.held.keys()):
            assert memory is not None
            log.warning(
                "agent %s held back: its jobs lately peaked at %s, more than the %s left "
                "(%s available, less %s kept by --memory-reserve %s, less %s that the jobs "
                "claimed here may still grow)",
                agent,
                mib(held[agent]),
                mib(max(0, memory.room)),
                mib(memory.available),
                mib(memory.reserve),
                self.reserve,
                mib(memory.committed),
            )
        for agent in sorted(self.held.keys() - held.keys()):
            log.info("agent %s admitted again: memory for its jobs is to be had", agent)
        self.ready = {agent: n for agent, n in self.ready.items() if agent in held}
        self.held = held
        return frozenset(held)

    def fit(self, jobs: Sequence[Job]) -> tuple[list[Job], list[Job]]:
        """The jobs a claim took, as (to keep, to give back): in order, each job whose agent
        has an estimate takes it from the room; one that no longer fits is given back."""
        if self.memory is None:
            return list(jobs), []
        room = self.memory.room
        keep: list[Job] = []
        back: list[Job] = []
        for job in jobs:
            estimate = self.peaks.estimate(agent_of(job))
            if estimate is None:
                keep.append(job)
            elif estimate <= room:
                room -= estimate
                keep.append(job)
            else:
                back.append(job)
        return keep, back

    def status(self) -> dict[str, Any] | None:
        """The status file's `waiting_for_memory`: None while no agent is held back."""
        memory = self.memory
        if not self.held or memory is None:
            return None
        return {
            "available_bytes": memory.available,
            "reserve_bytes": memory.reserve,
            "committed_bytes": memory.committed,
            "room_bytes": max(0, memory.room),
            "agents": {
                agent: {"estimate_bytes": estimate, "ready_jobs": self.ready.get(agent)}
                for agent, estimate in sorted(self.held.items())
            },
        }


def _margin(estimate: int) -> int:
    """The room beyond its estimate an agent held back needs to be admitted again: so that it
    does not come and go with each small change of the host's memory."""
    return max(MARGIN_LEAST, int(estimate * MARGIN_SHARE))


def mib(size: int) -> str:
    return f"{size / MiB:.0f} MiB"
