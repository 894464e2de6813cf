"""Supervisors killed at random while 2,000 jobs run, and PostgreSQL restarted mid-run: every
job completes, none is recorded twice, and every job that ran twice is explained."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import Supervisor, wait_until
from private_postgres import PrivateCluster
from support import agent_job

from taiat import JobManager


@pytest.mark.timeout(300)  # beyond the loop's own deadline, which says how far it got
def test_chaos_three_supervisors_killed_at_random(
    pg_database_url: str, pg_manager: JobManager, tmp_path: Path
) -> None:
    manager, pg_url = pg_manager, pg_database_url
    out = tmp_path / "ran.txt"
    jobs = manager.create_jobs(
        [{**agent_job(f"j{i}", "append", path=str(out)), "max_retries": 10} for i in range(2000)]
    )
    ids = {job.id for job in jobs}
    args = ("--lease", "3", "--max-concurrent-jobs", "2", "--poll-interval", "0.5")
    fleet = [Supervisor(pg_url, tmp_path, *args) for _ in range(3)]
    rng = random.Random(7)
    kills = 0
    try:
        deadline = time.monotonic() + 240
        while manager.count_jobs().get("completed", 0) < len(ids):
            assert time.monotonic() < deadline, f"not done: {manager.count_jobs()}"
            time.sleep(rng.uniform(0.5, 1.5))
            if manager.count_jobs().get("completed", 0) >= len(ids):
                break
            victim = fleet.pop(rng.randrange(len(fleet)))
            victim.signal(signal.SIGKILL)
            victim.wait(10)
            victim.stop()
            kills += 1
            fleet.append(Supervisor(pg_url, tmp_path, *args))
    finally:
        for sup in fleet:
            sup.stop()
    assert kills >= 3
    counts = manager.count_jobs()
    assert counts == {"completed": 2000}, counts
    history = manager.get_job_history(limit=None)
    assert Counter(entry.job_id for entry in history).most_common(1)[0][1] == 1
    assert {entry.job_id for entry in history} == ids
    runs = Counter(out.read_text().split())
    assert set(runs) == ids
    twice = {job_id: n for job_id, n in runs.items() if n > 1}
    for job_id, n in twice.items():
        attempts = manager.get_attempts(job_id)
        lost = [a for a in attempts if a.outcome == "lost"]
        # Each extra run is a run whose supervisor died before its result was committed.
        assert len(lost) >= n - 1, (job_id, attempts)
        assert len(attempts) >= n
    print(f"\nchaos: {kills} supervisors killed, {len(twice)} jobs ran twice, all explained")


def test_postgresql_restart_mid_run(
    private_pg: PrivateCluster, private_pg_url: str, tmp_path: Path
) -> None:
    pg_url = private_pg_url
    manager = JobManager(pg_url)
    out = tmp_path / "ran.txt"
    jobs = manager.create_jobs(
        [agent_job(f"j{i}", "append", path=str(out), seconds=0.02) for i in range(300)]
    )
    sup = Supervisor(pg_url, tmp_path, "--max-concurrent-jobs", "2")
    try:
        wait_until(
            lambda: manager.count_jobs().get("completed", 0) >= 30, 60, "progress", watch=sup
        )
        private_pg.restart()
        wait_until(lambda: _completed(manager) == 300, 120, "all jobs after the restart", watch=sup)
        assert sup.process.poll() is None
        assert sup.status()["pid"] == sup.pid
        log = sup.log()
        assert "database unreachable" in log and "database reachable again" in log
        runs = Counter(out.read_text().split())
        assert set(runs) == {job.id for job in jobs}
        assert max(runs.values()) == 1
        history = manager.get_job_history(limit=None)
        assert len(history) == 300 and len({e.job_id for e in history}) == 300
    finally:
        sup.stop()
        manager.engine.dispose()


def _completed(manager: JobManager) -> int:
    try:
        return manager.count_jobs().get("completed", 0)
    except Exception:  # noqa: BLE001 - the server may still be coming back
        return 0
