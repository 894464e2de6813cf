"""The fleet's agent catalogue on PostgreSQL and SQLite: each supervisor's agents in its
registration, only the live ones counted, the claim of a query job reading it, and a query
planned with agents this host lacks but a live peer has, each planned job in its agent's
queue."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from query_helpers import CHAIN, query
from sqlalchemy import select, text, update
from support import drop_routines

from taiat import JobManager, JobStatus, context
from taiat.agents.executors import Expansion, QueryExecutor
from taiat.errors import FinalFailure
from taiat.store import db, schema

CLEAN = {"clean": CHAIN["clean"]}
FAR = {
    "total": {"inputs": ["table"], "outputs": ["total", "count"], "queue": "big.cpu"},
    "describe": {"inputs": ["total", "count", "title"], "outputs": ["report"], "queue": None},
}


def register(manager: JobManager, worker_id: str, agents: dict[str, Any], **more: Any) -> None:
    manager.port.register(worker_id, "host-" + worker_id, 1, lease=30.0, agents=agents, **more)


def silence(manager: JobManager, worker_id: str) -> None:
    """Make a supervisor's heartbeat an hour old: dead by its lease."""
    with manager.engine.begin() as conn:
        conn.execute(
            update(schema.workers)
            .where(schema.workers.c.id == worker_id)
            .values(heartbeat_at=datetime(2000, 1, 1))
        )


def here_catalogue() -> dict[str, Any]:
    return {"clean": {"inputs": ["raw"], "outputs": ["table"], "queue": None}}


def test_registrations_publish_agents_and_only_live_supervisors_count(
    manager: JobManager,
) -> None:
    register(manager, "a", {"render": {"inputs": ["scene"], "outputs": ["frames"], "queue": "gpu"}})
    register(manager, "b", {"render": {"inputs": ["scene"], "outputs": ["frames"], "queue": "gpu"}})
    register(manager, "c", {"browse": {"inputs": ["url"], "outputs": ["page"], "queue": None}})
    register(manager, "gone", {"ghost": {"inputs": [], "outputs": ["boo"], "queue": None}})
    silence(manager, "gone")
    workers = {w["id"]: w for w in manager.port.list_workers()}
    assert workers["gone"]["agents"] == {"ghost": {"inputs": [], "outputs": ["boo"], "queue": None}}
    assert manager.list_agents() == [
        {"name": "browse", "inputs": ["url"], "outputs": ["page"], "queue": None,
         "supervisors": ["c"]},
        {"name": "render", "inputs": ["scene"], "outputs": ["frames"], "queue": "gpu",
         "supervisors": ["a", "b"]},
    ]  # fmt: skip
    assert set(manager.port.live_catalogue()) == {"browse", "render"}
    # A supervisor that registered no lease of its own is judged by the one given.
    manager.port.register("old", "host-old", 1, agents={"ghost": {}})
    silence(manager, "old")
    assert "ghost" not in manager.port.live_catalogue()
    ghost = [a for a in manager.list_agents(lease=10**10) if a["name"] == "ghost"]
    assert ghost == [{"name": "ghost", "inputs": [], "outputs": [], "queue": None,
                      "supervisors": ["old"]}]  # fmt: skip


def test_a_custom_executors_agent_never_hides_a_declared_one(manager: JobManager) -> None:
    register(manager, "a", {"render": {"inputs": ["scene"], "outputs": ["frames"], "queue": None}})
    register(manager, "b", {"render": {"inputs": [], "outputs": [], "queue": None}})
    [render] = manager.list_agents()
    assert render["inputs"] == ["scene"] and render["supervisors"] == ["a", "b"]


def test_the_claim_of_a_query_reads_the_live_catalogue(manager: JobManager) -> None:
    register(manager, "here", here_catalogue())
    register(manager, "far", FAR)
    register(manager, "gone", {"ghost": {"inputs": [], "outputs": ["boo"], "queue": None}})
    silence(manager, "gone")
    manager.create_job("agent", "plain", payload={"agent_name": "clean"})
    assert manager.port.claim("here", 1).catalogue is None  # no query: nothing read
    manager.create_job("query", "q", payload=query("report", raw=[1], title="t"))
    claimed = manager.port.claim("here", 1)
    assert [job.job_type.value for job in claimed.jobs] == ["query"]
    assert claimed.catalogue == {**here_catalogue(), **FAR}


def _plan_here(manager: JobManager) -> tuple[Any, Any]:
    """Claim the query as supervisor `here` (which has only `clean`) and plan it as its child
    does, with what the claim read."""
    claimed = manager.port.claim("here", 1)
    [job] = claimed.jobs
    context.set_current(context.JobContext(job, {}, claimed.catalogue))
    try:
        return job, QueryExecutor(CLEAN).execute(job)
    finally:
        context.set_current(None)


def test_a_query_is_planned_with_agents_only_a_live_peer_has(manager: JobManager) -> None:
    register(manager, "here", here_catalogue())
    register(manager, "far", FAR)
    created = manager.create_job("query", "q", payload=query("report", raw=[3, -1], title="t"))
    job, planned = _plan_here(manager)
    assert isinstance(planned, Expansion)
    assert [step.agent for step in planned.plan.steps] == ["clean", "total", "describe"]
    ids = manager.port.expand(job.id, job.claim_seq, planned.plan.to_json())
    assert ids is not None and len(ids) == 3
    with manager.engine.connect() as conn:
        rows = conn.execute(
            select(schema.jobs.c.name, schema.jobs.c.queue).where(schema.jobs.c.id.in_(ids))
        ).all()
    # Each agent's job in the queue it declares, else in the query's.
    assert dict(rows) == {"q/clean": "default", "q/total": "big.cpu", "q/describe": "default"}
    assert manager.get_job(created.id).status is JobStatus.PENDING  # waits for its plan


def test_a_planned_job_takes_the_querys_queue_when_its_agent_declares_none(
    manager: JobManager,
) -> None:
    register(manager, "here", here_catalogue())
    register(manager, "far", FAR)
    created = manager.create_job("query", "q", payload=query("report", raw=[3], title="t"))
    with manager.engine.begin() as conn:  # as `create_job(..., queue=...)` will put it
        conn.execute(
            update(schema.jobs).where(schema.jobs.c.id == created.id).values(queue="reports")
        )
    job, planned = _plan_here(manager)
    ids = manager.port.expand(job.id, job.claim_seq, planned.plan.to_json())
    with manager.engine.connect() as conn:
        rows = conn.execute(
            select(schema.jobs.c.name, schema.jobs.c.queue).where(schema.jobs.c.id.in_(ids))
        ).all()
    assert dict(rows) == {"q/clean": "reports", "q/total": "big.cpu", "q/describe": "reports"}


def test_a_dead_peers_agents_are_not_planned_with(manager: JobManager) -> None:
    register(manager, "here", here_catalogue())
    register(manager, "far", FAR)
    silence(manager, "far")
    manager.create_job("query", "q", payload=query("report", raw=[3], title="t"))
    with pytest.raises(FinalFailure, match="no agent produces the goal output 'report'"):
        _plan_here(manager)


def test_version_3_is_upgraded_with_the_catalogue_and_queue_columns(database_url: str) -> None:
    engine = db.engine_from_url(database_url)
    with engine.begin() as conn:  # as version 3 had them
        drop_routines(conn)
        for table, column in [
            ("taiat_workers", "agents"),
            ("taiat_workers", "queues"),
            ("taiat_jobs", "queue"),
        ]:
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        conn.execute(schema.schema_version.delete())
        conn.execute(schema.schema_version.insert().values(version=3))
    assert schema.initialise(engine) == (3, schema.SCHEMA_VERSION)
    manager = JobManager(engine)
    register(manager, "a", {"x": {"inputs": [], "outputs": ["y"], "queue": None}})
    job = manager.create_job("agent", "j", payload={"agent_name": "x"})
    assert [a["name"] for a in manager.list_agents()] == ["x"]
    with engine.connect() as conn:
        queue = conn.execute(select(schema.jobs.c.queue).where(schema.jobs.c.id == job.id))
        assert queue.scalar() == "default"
    engine.dispose()


def test_a_supervisor_registers_its_agents_and_those_its_executors_serve(
    database_url: str, manager: JobManager
) -> None:
    from taiat.worker import TaiatWorker

    class Renderer:
        agents = ("render", "clean")

        def can_execute(self, job: Any) -> bool:
            return job.payload.get("agent_name") == "render"

        def execute(self, job: Any) -> Any:
            return "rendered"

    worker = TaiatWorker(
        database_url=database_url,
        agent_registry=CLEAN,
        burst=True,
        poll_interval=0.05,
        agent_config='{"shout": {"function": "query_helpers:clean", "inputs": ["raw"], '
        '"outputs": ["loud"], "queue": "voice"}}',
    )
    worker.add_executor(Renderer())
    seen: dict[str, Any] = {}
    worker.observers.append(lambda job, ending: seen.update(manager.port.list_workers()[0]))
    manager.create_job("agent", "r", payload={"agent_name": "render"})
    try:
        worker.run()
    finally:
        worker.manager.engine.dispose()
    agents = seen["agents"]
    assert agents["clean"] == {"inputs": ["raw"], "outputs": ["table"], "queue": None}
    assert agents["shout"] == {"inputs": ["raw"], "outputs": ["loud"], "queue": "voice"}
    assert agents["render"] == {"inputs": [], "outputs": [], "queue": None}
    assert "example_generate" in agents  # the example agents too


def test_an_executor_with_bad_agents_is_refused(database_url: str) -> None:
    from taiat.errors import ConfigurationError
    from taiat.worker import TaiatWorker

    class Bad:
        agents = 42

        def can_execute(self, job: Any) -> bool:
            return False

        def execute(self, job: Any) -> Any:
            return None

    worker = TaiatWorker(database_url=database_url)
    try:
        with pytest.raises(ConfigurationError, match="`agents` must be a collection"):
            worker.add_executor(Bad())
    finally:
        worker.manager.engine.dispose()
