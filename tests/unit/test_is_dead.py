"""Who is dead: a supervisor's row judged by its own lease, over the time the observer
watched, and by its pid only where that pid means something."""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta

from taiat.supervisor import liveness

NOW = datetime(2026, 1, 1, 12, 0, 0)


def _gone_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _row(age: float, lease: float | None = 30.0, **more: object) -> dict:
    row = {"heartbeat_at": NOW - timedelta(seconds=age), "lease_seconds": lease, "pid": 1}
    return {"boot_id": None, "pid_namespace": None, **row, **more}


def test_own_lease_else_the_observers() -> None:
    assert not liveness.is_dead(_row(20), NOW, lease=3)
    assert liveness.is_dead(_row(40), NOW, lease=600)
    assert liveness.is_dead(_row(20, lease=None), NOW, lease=10)
    assert not liveness.is_dead(_row(20, lease=None), NOW, lease=30)


def test_silence_counts_only_while_the_observer_watched() -> None:
    assert liveness.is_dead(_row(40), NOW, lease=30, watched=31)
    assert not liveness.is_dead(_row(40), NOW, lease=30, watched=10)


def test_a_gone_pid_means_dead_only_in_the_same_boot_and_namespace() -> None:
    here = liveness.Place("boot", "pid:[7]")
    row = _row(0, pid=_gone_pid(), boot_id="boot", pid_namespace="pid:[7]")
    assert liveness.is_dead(row, NOW, 30, here)
    assert not liveness.is_dead(row, NOW, 30, liveness.Place("another boot", "pid:[7]"))
    assert not liveness.is_dead(row, NOW, 30, liveness.Place("boot", "pid:[8]"))
    assert not liveness.is_dead({**row, "boot_id": None}, NOW, 30, here)
    assert not liveness.is_dead(row, NOW, 30, liveness.Place(None, None))
    assert not liveness.is_dead(row, NOW, 30)


def test_here_is_read_from_the_kernel() -> None:
    here = liveness.Place.here()
    assert here.boot_id and here.pid_namespace and here.pid_namespace.startswith("pid:[")
