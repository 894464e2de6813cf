"""Claiming ahead: jobs claimed before a slot is free for them, so that a slot that frees is
filled at once, and the database is written for many jobs in one transaction.

When jobs are short, the supervisor, not the fork, sets the pace: each finished job costs a
transaction, and a slot stays empty while it is written. Holding claimed jobs lets the
supervisor start the next job the moment one ends, and write the endings that gather meanwhile
together: while jobs are very short, up to `HELD_WORK` seconds of them per slot (at most
`MAX_PER_SLOT`), and the endings wait to be written (at most `WRITE_DELAY`) while enough jobs are
held to keep every slot busy. A transaction's cost is mostly fixed, so writing ten endings
together costs little more than writing one.

It pays only while jobs are short, and a held job is one no other supervisor can run, so jobs
are claimed ahead only while the jobs lately run were short (under `SHORT`), at most two per
slot unless they were much shorter, and a job held longer than `MAX_WAIT` is given back; after
that, no job is claimed ahead until one has ended again.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from taiat.jobs import Job, JobType

#: Jobs are claimed ahead while the typical job lately run took less than this (seconds).
SHORT = 0.05
#: Seconds of typical jobs held per slot, when that is more than one job. Twice `WRITE_DELAY`
#: and more: the endings of a whole delay, and the transaction that writes them, must not
#: empty the slots (with 2 slots, 20 ms wrote 2 endings a transaction where 50 ms wrote 9).
#: A transaction costs the supervisor some 1.5 ms of CPU, and each ending in it 0.1 ms more:
#: 100 ms held, with endings waiting up to 50 ms, wrote twice as many endings a transaction as
#: 50 ms and 25 ms did (on 2 busy cores, 3 to 7 where it was 2 to 3), for 0.4 ms of the
#: supervisor's CPU less per job.
HELD_WORK = 0.1
#: The most jobs held per slot.
MAX_PER_SLOT = 16
#: A job held longer than this (seconds) is given back for anyone to claim.
MAX_WAIT = 0.5
#: The longest an ending waits to be written while jobs are held (seconds).
WRITE_DELAY = 0.05
#: Weight of the newest job's wall time in the typical one.
_WEIGHT = 0.2


@dataclass(frozen=True)
class Held:
    """A job claimed ahead, with the dependency results to send with it."""

    job: Job
    dependency_results: dict[str, Any] | None
    since: float
    #: For a query job, the live fleet's catalogue its claim read, to plan it with.
    catalogue: dict[str, Any] | None = None


class ClaimAhead:
    """The jobs claimed ahead of free slots, first claimed first started."""

    def __init__(
        self, slots: int, enabled: bool = True, short: float = SHORT, max_wait: float = MAX_WAIT
    ) -> None:
        self.slots = slots
        self.enabled = enabled
        self.short = short
        self.max_wait = max_wait
        self.held: deque[Held] = deque()
        #: The typical wall time of the jobs lately run; None until one has ended.
        self.typical: float | None = None

    def __len__(self) -> int:
        return len(self.held)

    @property
    def depth(self) -> int:
        """How many jobs to hold beyond the free slots now."""
        typical = self.typical
        if not self.enabled or typical is None or typical >= self.short:
            return 0
        per_slot = min(MAX_PER_SLOT, int(HELD_WORK / typical)) if typical > 0 else MAX_PER_SLOT
        return self.slots * max(per_slot, 1)

    def may_wait(self, oldest_ending: float | None, now: float) -> bool:
        """Whether writing endings and claiming may wait: enough jobs are held to keep every slot
        busy, and no ending (the oldest came at `oldest_ending`) has waited too long."""
        if len(self.held) <= self.slots:
            return False
        return oldest_ending is None or now - oldest_ending < WRITE_DELAY

    def wanted(self, running: int) -> int:
        """How many jobs to claim, with `running` jobs in the slots."""
        return max(self.slots + self.depth - running - len(self.held), 0)

    def observe(self, wall_seconds: float) -> None:
        """A job ended after `wall_seconds`."""
        if self.typical is None:
            self.typical = wall_seconds
        else:
            self.typical += _WEIGHT * (wall_seconds - self.typical)

    def put(
        self,
        jobs: list[Job],
        results: dict[str, dict[str, Any]],
        catalogue: dict[str, Any] | None = None,
    ) -> None:
        now = time.monotonic()
        self.held.extend(
            Held(
                job, results.get(job.id), now, catalogue if job.job_type is JobType.QUERY else None
            )
            for job in jobs
        )

    def take(self, count: int) -> list[Held]:
        """Up to `count` held jobs, to start now."""
        return [self.held.popleft() for _ in range(min(count, len(self.held)))]

    def expired(self, now: float) -> list[Job]:
        """Take out the jobs held too long (the oldest are first in line). The slots are busier
        than the jobs lately run said: hold none again until a job has ended."""
        old: list[Job] = []
        while self.held and now - self.held[0].since >= self.max_wait:
            old.append(self.held.popleft().job)
        if old:
            self.typical = None
        return old

    def drop(self, job_ids: set[str]) -> list[Job]:
        """Take out the held jobs among `job_ids` (their claims are no longer current)."""
        dropped = [held.job for held in self.held if held.job.id in job_ids]
        self.held = deque(held for held in self.held if held.job.id not in job_ids)
        return dropped

    def release(self) -> list[Job]:
        """Take out every held job (the supervisor stops claiming)."""
        jobs = [held.job for held in self.held]
        self.held.clear()
        return jobs

    @property
    def next_expiry(self) -> float | None:
        return self.held[0].since + self.max_wait if self.held else None
