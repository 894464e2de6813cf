"""Queues and routing with real supervisors, on PostgreSQL and SQLite: two supervisors with
different `--queues` (or `TAIAT_QUEUES`) and different agents (`TAIAT_AGENT_CONFIG`) each run
only the jobs they may; a job whose agent no live supervisor has waits, and `taiat jobs show`
and `taiat queues list` say why; a paused queue starts nothing until resumed, while its
running jobs finish."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Supervisor, wait_until
from support import finished
from test_operator_cli import ok, taiat

from taiat import JobManager, JobStatus


def _start(url: str, where: Path, agents: dict[str, str], *args: str, **env: str) -> Supervisor:
    where.mkdir()
    config = {"TAIAT_AGENT_CONFIG": json.dumps(agents), **env}
    return Supervisor(url, where, *args, env=config)


def _running(sup: Supervisor) -> bool:
    return sup.status().get("state") == "running"


def _job(manager: JobManager, name: str, agent: str, queue: str = "default", **parameters):  # type: ignore[no-untyped-def]
    payload = {"agent_name": agent, "parameters": parameters}
    return manager.create_job("agent", name, payload=payload, queue=queue)


@pytest.fixture
def fleet(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Supervisor `gpu` serves queue gpu with agent render; `web` serves the queues default and
    cpu (through TAIAT_QUEUES) with the agents browse and sleep."""
    gpu = _start(database_url, tmp_path / "gpu", {"render": "agents:plain"}, "--queues", "gpu")
    web = _start(
        database_url,
        tmp_path / "web",
        {"browse": "agents:plain", "sleep": "agents:sleep"},
        TAIAT_QUEUES="default,cpu",
    )
    try:
        for sup in (gpu, web):
            wait_until(lambda s=sup: _running(s), 30, "the supervisor to start", watch=sup)
        yield gpu, web
    finally:
        gpu.stop()
        web.stop()


def _ran_on(manager: JobManager, job_id: str, sup: Supervisor) -> None:
    done = wait_until(lambda: finished(manager, job_id), 30, f"job {job_id}", watch=sup)
    assert done.status is JobStatus.COMPLETED, done
    assert done.worker_id is not None and done.worker_id.split(":")[1] == str(sup.pid)


def test_each_job_runs_only_where_its_queue_and_agent_are_served(
    manager: JobManager, fleet, database_url: str
) -> None:
    gpu, web = fleet
    render = _job(manager, "render", "render", "gpu")
    browse = _job(manager, "browse", "browse")
    render_default = _job(manager, "render-default", "render")  # gpu does not serve default
    browse_gpu = _job(manager, "browse-gpu", "browse", "gpu")  # web does not serve gpu
    ghost = _job(manager, "ghost", "ghost", "cpu")  # nobody has agent ghost
    _ran_on(manager, render.id, gpu)
    _ran_on(manager, browse.id, web)
    after = _job(manager, "after", "browse", "cpu")  # claimed after the waiting ones were seen
    _ran_on(manager, after.id, web)
    for job, agent in ((render_default, "render"), (browse_gpu, "browse"), (ghost, "ghost")):
        waiting = manager.get_job(job.id)
        assert waiting is not None and waiting.status is JobStatus.PENDING
        assert f"no live supervisor serves agent {agent}" in ok(
            "jobs", "show", job.id, url=database_url
        )
        shown = json.loads(ok("jobs", "show", job.id, "--json", url=database_url))
        assert shown["waiting_for"] == f"no live supervisor serves agent {agent}"
        assert shown["job"]["queue"] == job.queue
    assert "waiting" not in ok("jobs", "show", render.id, url=database_url)
    queues = {q["name"]: q for q in json.loads(ok("queues", "list", "--json", url=database_url))}
    assert queues["gpu"]["notes"] == ["no live supervisor serves agent browse"]
    assert queues["default"]["notes"] == ["no live supervisor serves agent render"]
    assert queues["cpu"]["notes"] == ["no live supervisor serves agent ghost"]
    assert queues["gpu"]["supervisors"] == [
        f for f in queues["gpu"]["supervisors"] if str(gpu.pid) in f
    ]
    assert len(queues["gpu"]["supervisors"]) == 1
    assert (
        len(queues["cpu"]["supervisors"]) == 1 and str(web.pid) in queues["cpu"]["supervisors"][0]
    )
    assert queues["default"]["ready"] == 1 and queues["gpu"]["ready"] == 1
    table = ok("queues", "list", url=database_url)
    assert "no live supervisor serves agent ghost" in table
    # The registrations name the queues and agents served.
    workers = {w["pid"]: w for w in manager.port.list_workers()}
    assert workers[gpu.pid]["queues"] == ["gpu"]
    assert "render" in workers[gpu.pid]["agents"] and "browse" not in workers[gpu.pid]["agents"]
    assert workers[web.pid]["queues"] == ["default", "cpu"]
    assert {"browse", "sleep"} <= set(workers[web.pid]["agents"])
    assert "render" not in workers[web.pid]["agents"]
    assert gpu.settled_counters()["failed"] == 0 and web.settled_counters()["failed"] == 0
    # The metrics and the status file count the jobs by queue.
    wanted = [
        'taiat_jobs{queue="gpu",status="ready"} 1',
        'taiat_jobs{queue="default",status="ready"} 1',
        'taiat_jobs{queue="cpu",status="ready"} 1',
    ]

    def counted() -> str | None:
        text = web.metrics_file.read_text() if web.metrics_file.exists() else ""
        return text if all(line in text.splitlines() for line in wanted) else None

    text = wait_until(counted, 30, "taiat_jobs by queue", watch=web)
    assert 'taiat_jobs{status="ready"} 3' in text.splitlines()
    status = wait_until(lambda: (gpu.status().get("queues") or {}).get("cpu"), 30, "queues")
    assert status == {"pending": 0, "ready": 1, "scheduled": 0, "running": 0}
    assert gpu.status()["queues_served"] == ["gpu"] and web.status()["queues_served"] == [
        "default",
        "cpu",
    ]


def test_a_paused_queue_starts_nothing_until_resumed_and_its_running_jobs_finish(
    manager: JobManager, fleet, database_url: str, tmp_path: Path
) -> None:
    _, web = fleet
    pid_file = tmp_path / "long.pid"
    long = _job(manager, "long", "sleep", "cpu", seconds=1.5, pid_file=str(pid_file))
    wait_until(lambda: pid_file.exists(), 30, "the long job to start", watch=web)
    assert "queue cpu paused" in ok("queues", "pause", "cpu", url=database_url)
    held = _job(manager, "held", "browse", "cpu")
    done = wait_until(lambda: finished(manager, long.id), 30, "the running job", watch=web)
    assert done.status is JobStatus.COMPLETED
    # A job of another queue created after the held one runs: the supervisor was claiming.
    other = _job(manager, "other", "browse")
    _ran_on(manager, other.id, web)
    assert manager.get_job(held.id).status is JobStatus.PENDING  # type: ignore[union-attr]
    [cpu] = [
        q
        for q in json.loads(ok("queues", "list", "--json", url=database_url))
        if q["name"] == "cpu"
    ]
    assert cpu["paused"] is True and cpu["ready"] == 1
    assert "paused" in ok("queues", "list", url=database_url)
    assert "queue cpu resumed" in ok("queues", "resume", "cpu", url=database_url)
    _ran_on(manager, held.id, web)


def test_queue_commands_refuse_bad_names_and_change_nothing(
    manager: JobManager, database_url: str
) -> None:
    for command in (["queues", "pause", "no way"], ["queues", "resume", "x" * 65]):
        result = taiat(*command, url=database_url)
        assert result.returncode == 64, result
        assert "invalid queue name" in result.stderr
    result = taiat(
        "jobs", "create", "--type", "agent", "--name", "n", "--queue", "a/b", url=database_url
    )
    assert result.returncode == 64 and "invalid queue name 'a/b'" in result.stderr
    assert manager.list_jobs() == [] and manager.list_queues() == []
    job = ok("jobs", "create", "--type", "agent", "--name", "n", "--queue", "q1", url=database_url)
    listed = json.loads(ok("jobs", "list", "--queue", "q1", "--json", url=database_url))
    assert [j["id"] for j in listed] == [job.strip()]
    assert json.loads(ok("jobs", "list", "--queue", "q2", "--json", url=database_url)) == []


def test_a_bad_queues_setting_is_refused(database_url: str, tmp_path: Path) -> None:
    for args, env in ((("--queues", "a,,b"), {}), ((), {"TAIAT_QUEUES": "gpu,bad name"})):
        where = tmp_path / f"s{len(env)}"
        sup = _start(database_url, where, {}, *args, **env)
        try:
            assert sup.wait(30) == 78
            assert "invalid queue name" in sup.log()
        finally:
            sup.stop()
