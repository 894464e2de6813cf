"""Whether a supervisor is alive: by its heartbeat and its own lease, and, for one in the same
place (boot and PID namespace) as the observer, by whether its process still exists. The
supervisor judges its peers with `is_dead` before it takes their jobs back; the commands show
`alive`."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from taiat.forking import posix
from taiat.store.port import live


@dataclass(frozen=True)
class Place:
    """Where a supervisor's pid means something: the boot of the kernel it runs on and its PID
    namespace. Two supervisors in one place can tell whether the other's process is gone; a
    host name alone cannot say so (containers may share one and each have their own pids)."""

    boot_id: str | None
    pid_namespace: str | None

    @classmethod
    def here(cls) -> Place:
        return cls(_read(_BOOT_ID), _pid_namespace())

    def registration(self) -> dict[str, str | None]:
        """What a supervisor registers of its place (see `taiat.store.leases.register`)."""
        return {"boot_id": self.boot_id, "pid_namespace": self.pid_namespace}

    def holds(self, row: Mapping[Any, Any]) -> bool:
        """Whether the supervisor of `row` is in this place, for sure."""
        return (
            self.boot_id is not None
            and self.pid_namespace is not None
            and row.get("boot_id") == self.boot_id
            and row.get("pid_namespace") == self.pid_namespace
        )


_BOOT_ID = "/proc/sys/kernel/random/boot_id"
_NOWHERE = Place(None, None)


def _read(path: str) -> str | None:
    try:
        with open(path) as file:
            return file.read().strip() or None
    except OSError:
        return None


def _pid_namespace() -> str | None:
    """The PID namespace of this process, as `pid:[inode]`."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def is_dead(
    row: Mapping[Any, Any],
    now: datetime,
    lease: float,
    place: Place = _NOWHERE,
    watched: float = math.inf,
) -> bool:
    """Whether the supervisor of a `taiat_workers` row is dead, in the eyes of one that has
    watched the database without a break for `watched` seconds and is at `place`.

    Its heartbeat is older than its own lease (`lease`, the observer's, for rows from before
    leases were registered), counting only the time the observer has watched: a supervisor
    that was itself cut off from the database, or stalled, cannot tell others' silence over
    that time from its own. Or it is in the same place, and its process is gone."""
    own_lease = row.get("lease_seconds") or lease
    silent = min((now - row["heartbeat_at"]).total_seconds(), watched)
    if silent > own_lease:
        return True
    return place.holds(row) and not posix.pid_exists(row["pid"])


def alive(entry: Mapping[str, Any], lease: float) -> bool:
    """Whether a supervisor `list_workers` found is alive by its own lease (`lease` for one
    that registered none)."""
    return live(entry["heartbeat_age"], entry["lease_seconds"], lease)
