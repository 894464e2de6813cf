"""Query jobs run by the real supervisor: the plan's independent branches at the same time on
two slots, a failed agent failing the query, and a query engine plug-in."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import AGENT_CONFIG, ROOT, pid_alive, wait_until
from query_agents import AGENTS
from support import finished

from taiat import JobManager, JobStatus

CONFIG = {"TAIAT_AGENT_CONFIG": json.dumps({**AGENT_CONFIG, **AGENTS})}


def query(goal: str, **inputs: object) -> dict:
    return {"query": f"make {goal}", "inferred_goal_output": goal, "inputs": inputs}


def steps(manager: JobManager, job_id: str) -> dict[str, str]:
    return {step["agent"]: step["job_id"] for step in manager.get_job(job_id).payload["plan"]}


def test_independent_branches_run_at_the_same_time_on_two_slots(
    manager: JobManager, supervisor, tmp_path: Path
) -> None:
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    # Two agents produce left_part: the query chooses one.
    payload = {**query("joined", meeting=str(meeting)), "producers": {"left_part": "left"}}
    job = manager.create_job("query", "both sides", payload=payload)
    sup = supervisor("--max-concurrent-jobs", "2", env=CONFIG)
    done = wait_until(lambda: finished(manager, job.id), 60, "the query", watch=sup)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert done.result == ["left", "right"]
    plan = steps(manager, job.id)
    assert set(plan) == {"left", "right", "join"}
    [left], [right] = manager.get_attempts(plan["left"]), manager.get_attempts(plan["right"])
    # Their run intervals overlap: each started before the other ended.
    assert left.started_at < right.ended_at and right.started_at < left.ended_at
    assert left.pid != right.pid
    [join] = manager.get_attempts(plan["join"])
    assert join.started_at >= max(left.ended_at, right.ended_at)


def test_a_failed_agent_fails_the_query_and_stops_its_running_sibling(
    manager: JobManager, supervisor, tmp_path: Path
) -> None:
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    (meeting / "right-sleeps").write_text("yes")
    payload = {
        **query("joined", meeting=str(meeting)),
        "producers": {"left_part": "fail_once_right_runs"},
    }
    job = manager.create_job("query", "breaks", payload=payload, max_retries=0)
    sup = supervisor("--max-concurrent-jobs", "2", env=CONFIG)
    done = wait_until(lambda: finished(manager, job.id), 60, "the query", watch=sup)
    plan = steps(manager, job.id)
    assert done.status is JobStatus.FAILED
    assert done.error_message.startswith(
        f"agent fail_once_right_runs (job {plan['fail_once_right_runs']}) failed: "
        "ValueError: left branch broke"
    )
    right_pid = int((meeting / "right").read_text())
    wait_until(lambda: not pid_alive(right_pid), 10, "the sibling to be killed", watch=sup)
    assert manager.get_job(plan["right"]).status is JobStatus.CANCELLED
    assert manager.get_job(plan["join"]).status is JobStatus.CANCELLED
    wait_until(lambda: manager.get_attempts(plan["right"]), 10, "the sibling's attempt", watch=sup)
    assert sup.settled_counters()["failed"] == 1  # the stopped sibling is not a failure


def test_a_taiat_shaped_engine_runs_the_whole_query_in_the_child(
    manager: JobManager, supervisor
) -> None:
    env = {**CONFIG, "TAIAT_QUERY_ENGINE": "query_agents:TaiatShapedEngine"}
    job = manager.create_job("query", "engine", payload=query("answer", numbers=[1, 2]))
    sup = supervisor("--burst", env=env)
    assert sup.wait(60) == 0
    done = manager.get_job(job.id)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert done.result == "make answer: {'numbers': [1, 2]}"
    assert "plan" not in done.payload


@pytest.mark.timeout(300)
def test_the_example_usage_runs_in_an_empty_directory(tmp_path: Path) -> None:
    unset = ("TAIAT_DATABASE_URL", "TAIAT_AGENT_CONFIG", "TAIAT_QUERY_ENGINE")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "taiat.example_usage", "--run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "(query for sample_report; planned as:)" in out
    assert "    example_describe: sample from example_sample -> sample_summary\n" in out
    assert re.search(r'^completed query sample report: "50 numbers, mean [\d.]+', out, re.M), out
    for agent in ("example_sample", "example_describe", "example_bins", "example_write_report"):
        assert re.search(rf"^    completed {agent} ", out, re.M), out
    assert (tmp_path / "taiat.db").is_file()
