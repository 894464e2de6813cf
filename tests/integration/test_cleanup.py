"""Old history goes in batches, a transaction each; a supervisor deletes one batch a turn of
its loop, so that a purge of millions holds up none of its heartbeats."""

from __future__ import annotations

import threading

import pytest
from support import poll

from taiat import JobManager
from taiat.config import SupervisorConfig
from taiat.store.port import SupervisorPort
from taiat.supervisor import daemon


def _finish(manager: JobManager, count: int) -> None:
    for i in range(count):
        manager.create_job("agent", f"old {i}")
        [claimed] = manager.claim_jobs("w", 1)
        manager.complete_job(claimed.id, claimed.claim_seq)


def test_a_supervisor_purges_old_history_a_batch_a_turn(
    manager: JobManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    _finish(manager, 7)
    monkeypatch.setattr(daemon, "CLEANUP_BATCH", 3)
    batches: list[int] = []
    one_batch = SupervisorPort.delete_history_before

    def counted(self: SupervisorPort, days: float, batch_size: int) -> int:
        batches.append(deleted := one_batch(self, days, batch_size))
        return deleted

    monkeypatch.setattr(SupervisorPort, "delete_history_before", counted)
    config = SupervisorConfig(
        history_retention_days=0, poll_interval=0.1, fork_server=False, listen=False
    )
    running = daemon.Supervisor(config, manager=manager)
    thread = threading.Thread(target=running.run)
    thread.start()
    try:
        poll(lambda: len(batches) >= 3, 30, "three batches")
    finally:
        running.stop()
        thread.join(30)
    assert batches[:3] == [3, 3, 1]  # one full batch after another, then the rest
    assert manager.get_job_history(limit=None) == []
