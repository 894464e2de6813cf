"""Fleet-wide limits as an operator sets and sees them: `taiat limits`, and two real
supervisors that never run more jobs of a capped key at once than its cap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import Supervisor, wait_until
from support import agent_job, finished, max_overlap

from taiat import JobManager, JobStatus

ROOT = Path(__file__).resolve().parents[2]


def taiat(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAIAT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "taiat", *args, "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_two_supervisors_never_run_more_of_a_key_than_its_cap(
    database_url: str, manager: JobManager, tmp_path: Path
) -> None:
    set_cap = taiat("limits", "set", "shared", "2", url=database_url)
    assert set_cap.returncode == 0, set_cap.stderr
    capped = manager.create_jobs(
        [
            {**agent_job(f"capped-{n}", "sleep", seconds=0.4), "limit_keys": ["shared"]}
            for n in range(8)
        ]
    )
    free = manager.create_jobs([agent_job(f"free-{n}", "sleep", seconds=0.4) for n in range(4)])
    sups = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        sups.append(Supervisor(database_url, tmp_path / name, "--max-concurrent-jobs", "3"))
    try:
        listed = wait_until(
            lambda: json.loads(taiat("limits", "list", "--json", url=database_url).stdout),
            10,
            "the limits list",
        )
        [shared] = listed
        assert shared["key"] == "shared" and shared["concurrency"] == 2
        assert shared["running"] <= 2 and shared["running"] + shared["waiting"] <= 8
        for job in capped + free:
            done = wait_until(lambda j=job: finished(manager, j.id), 60, "the jobs", watch=sups[0])
            assert done.status is JobStatus.COMPLETED, done.error_message
        waits = wait_until(
            lambda: sups[0].status().get("waiting_on_limit") == {"shared": 0},
            15,
            "the status file's count of jobs waiting on the limit",
            watch=sups[0],
        )
        assert waits
        metrics = (tmp_path / "a" / "metrics.prom").read_text()
        assert "# TYPE taiat_jobs_waiting_on_limit gauge" in metrics
    finally:
        for sup in sups:
            sup.stop()
    attempts = [a for job in capped for a in manager.get_attempts(job.id)]
    assert len(attempts) == 8 and all(a.outcome == "completed" for a in attempts)
    assert max_overlap([(a.started_at, a.ended_at) for a in attempts]) <= 2
    # The free jobs were not held back by the capped ones: more than 2 ran at once overall.
    everything = attempts + [a for job in free for a in manager.get_attempts(job.id)]
    assert max_overlap([(a.started_at, a.ended_at) for a in everything]) > 2
    listed = json.loads(taiat("limits", "list", "--json", url=database_url).stdout)
    assert listed == [{"key": "shared", "concurrency": 2, "rate": None, "running": 0, "waiting": 0}]


def test_the_limits_commands_set_list_and_clear_and_refuse_bad_input(database_url: str) -> None:
    assert taiat("limits", "list", url=database_url).stdout.strip() == "no limit is set"
    assert taiat("limits", "set", "agent:render", "2", url=database_url).returncode == 0
    assert taiat("limits", "set", "openai", "--rate", "60/min", url=database_url).returncode == 0
    both = taiat("limits", "set", "customer:42", "1", "--rate", "10/s", url=database_url)
    assert both.returncode == 0, both.stderr
    for args, named in [
        (("k", "--rate", "0/min"), "'0/min'"),
        (("k", "--rate", "5/fortnight"), "'5/fortnight'"),
        (("k", "-1"), "-1"),
        (("k", "many"), "'many'"),
        (("bad key!", "1"), "'bad key!'"),
        (("openai", "--rate", "0/s"), "'0/s'"),
    ]:
        refused = taiat("limits", "set", *args, url=database_url)
        assert refused.returncode == 64, (args, refused.stdout, refused.stderr)
        assert named in refused.stderr, refused.stderr
    table = taiat("limits", "list", url=database_url).stdout
    lines = [line.split() for line in table.splitlines()]
    assert lines[0] == ["KEY", "CAP", "RATE", "RUNNING", "WAITING"]
    rows = {line[0]: line[1:] for line in lines[2:]}
    assert rows == {
        "agent:render": ["2", "-", "0", "0"],
        "customer:42": ["1", "10/s", "0", "0"],
        "openai": ["-", "60/min", "0", "0"],
    }
    cleared = taiat("limits", "clear", "openai", url=database_url)
    assert cleared.returncode == 0 and "cleared" in cleared.stdout
    again = taiat("limits", "clear", "openai", url=database_url)
    assert again.returncode == 0 and "no limit on openai" in again.stdout
    keys = [
        row["key"] for row in json.loads(taiat("limits", "list", "--json", url=database_url).stdout)
    ]
    assert keys == ["agent:render", "customer:42"]


def test_raising_or_clearing_a_limit_wakes_an_idle_supervisor_at_once(
    pg_database_url: str, pg_manager: JobManager, tmp_path: Path
) -> None:
    manager = pg_manager
    manager.set_limit("held", concurrency=0)
    first, second = manager.create_jobs(
        [{**agent_job(f"held-{n}", "plain"), "limit_keys": ["held"]} for n in range(2)]
    )
    sup = Supervisor(pg_database_url, tmp_path, "--poll-interval", "60")
    try:
        wait_until(lambda: sup.status().get("state") == "running", 30, "start", watch=sup)
        wait_until(
            lambda: sup.status().get("waiting_on_limit") == {"held": 2},
            15,
            "the jobs counted as waiting on the limit",
            watch=sup,
        )
        # Idle, its next poll a minute away: only the limit's NOTIFY can start the jobs now.
        assert taiat("limits", "set", "held", "1", url=pg_database_url).returncode == 0
        wait_until(lambda: finished(manager, first.id), 10, "the first job", watch=sup)
        assert taiat("limits", "clear", "held", url=pg_database_url).returncode == 0
        wait_until(lambda: finished(manager, second.id), 10, "the second job", watch=sup)
    finally:
        sup.stop()
