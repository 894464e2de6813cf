"""Queues in the store, on PostgreSQL and SQLite: a job's queue (checked, kept through its
history and a retry, inherited by a query's planned agent jobs), its agent's name, the claim
that takes only the queues and agents a supervisor serves and no paused queue, and the
upgrade of a version-3 database."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, insert, inspect, select, text
from support import drop_routines

from taiat import JobManager
from taiat.errors import InvalidJob
from taiat.jobs import JobStatus
from taiat.query_plans import Plan, Step
from taiat.store import db, queries, schema

GOAL = {"inferred_goal_output": "out"}


def test_a_job_is_in_the_default_queue_unless_given_one(manager: JobManager) -> None:
    plain = manager.create_job("agent", "plain", payload={"agent_name": "a"})
    gpu = manager.create_job("agent", "gpu", payload={"agent_name": "a"}, queue="gpu")
    assert (plain.queue, gpu.queue) == ("default", "gpu")
    assert manager.get_job(gpu.id).queue == "gpu"  # type: ignore[union-attr]
    [batch] = manager.create_jobs(
        [{"job_type": "query", "name": "q", "payload": GOAL, "queue": "llm.v2-x"}]
    )
    assert batch.queue == "llm.v2-x"


@pytest.mark.parametrize("bad", ["", "a b", "x" * 65, "é", "a/b", None, 3, "queue\n"])
def test_a_bad_queue_name_is_refused_naming_it_and_nothing_is_written(
    manager: JobManager, bad: object
) -> None:
    with pytest.raises(InvalidJob, match="invalid queue name") as caught:
        manager.create_job("agent", "bad", queue=bad)  # type: ignore[arg-type]
    assert repr(bad)[:20] in str(caught.value)
    with pytest.raises(InvalidJob, match="invalid queue name"):
        manager.create_jobs(
            [{"job_type": "agent", "name": "ok"}, {"job_type": "agent", "name": "b", "queue": bad}]
        )
    assert manager.list_jobs() == []


def test_the_longest_queue_name_is_taken(manager: JobManager) -> None:
    assert manager.create_job("agent", "long", queue="q" * 64).queue == "q" * 64


def test_an_agent_jobs_agent_is_recorded_from_its_payload(manager: JobManager) -> None:
    agent = manager.create_job("agent", "a", payload={"agent_name": "render"})
    query = manager.create_job("query", "q", payload=GOAL)
    with manager.transaction() as conn:
        found = dict(conn.execute(select(schema.jobs.c.id, schema.jobs.c.agent)).all())
    assert found == {agent.id: "render", query.id: None}


def test_the_queue_is_kept_in_history_and_by_a_retry(manager: JobManager) -> None:
    job = manager.create_job("agent", "a", payload={"agent_name": "x"}, queue="gpu")
    manager.cancel_job(job.id)
    assert manager.get_job(job.id).queue == "gpu"  # type: ignore[union-attr]
    with manager.transaction() as conn:
        row = conn.execute(select(schema.history.c.queue, schema.history.c.agent)).one()
    assert tuple(row) == ("gpu", "x")
    again = manager.retry_job(job.id)
    assert again.queue == "gpu"
    with manager.transaction() as conn:
        agent = conn.execute(select(schema.jobs.c.agent)).scalar_one()
    assert agent == "x"


def test_jobs_are_listed_by_queue(manager: JobManager) -> None:
    a = manager.create_job("agent", "a", queue="one")
    b = manager.create_job("agent", "b", queue="two")
    manager.cancel_job(b.id)
    assert [j.id for j in manager.list_jobs(queue="one")] == [a.id]
    assert [j.id for j in manager.list_jobs(queue="two")] == [b.id]
    assert [j.id for j in manager.get_ready_jobs(queue="one")] == [a.id]
    assert manager.get_ready_jobs(queue="two") == []
    with pytest.raises(InvalidJob, match="invalid queue name"):
        manager.list_jobs(queue="no good")


def test_a_querys_planned_agent_jobs_inherit_its_queue(manager: JobManager) -> None:
    query = manager.create_job("query", "q", payload=GOAL, queue="research")
    [claimed] = manager.claim_jobs("w", 1)
    plan = Plan("out", (Step("make", {}, ("out",)),)).to_json()
    [agent_id] = manager.expand_query(query.id, claimed.claim_seq, plan)  # type: ignore[misc]
    agent = manager.get_job(agent_id)
    assert agent is not None and agent.queue == "research"
    with manager.transaction() as conn:
        name = conn.execute(
            select(schema.jobs.c.agent).where(schema.jobs.c.id == agent_id)
        ).scalar_one()
    assert name == "make"


def _as_version_3(engine) -> None:  # type: ignore[no-untyped-def]
    """Make a database of this release look as version 3 left it."""
    with engine.begin() as conn:
        drop_routines(conn)
        conn.execute(text(f"DROP TABLE {schema.queues.name}"))
        for table, names in (
            (schema.jobs, ("queue", "agent")),
            (schema.history, ("queue", "agent")),
            (schema.workers, ("queues", "agents")),
        ):
            for name in names:
                conn.execute(text(f"ALTER TABLE {table.name} DROP COLUMN {name}"))
        conn.execute(delete(schema.schema_version))
        conn.execute(insert(schema.schema_version).values(version=3))


def test_a_version_3_database_is_upgraded_with_its_jobs_in_the_default_queue(
    database_url: str,
) -> None:
    engine = db.engine_from_url(database_url)
    _as_version_3(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO taiat_jobs (id, job_type, name, payload, dependencies) VALUES "
                """('old-a', 'agent', 'old', '{"agent_name": "render"}', '[]'), """
                """('old-q', 'query', 'oldq', '{"inferred_goal_output": "o"}', '[]')"""
            )
        )
    assert schema.initialise(engine) == (3, schema.SCHEMA_VERSION)
    with engine.connect() as conn:
        assert inspect(conn).has_table(schema.queues.name)
        rows = conn.execute(
            select(schema.jobs.c.id, schema.jobs.c.queue, schema.jobs.c.agent).order_by(
                schema.jobs.c.id
            )
        ).all()
    assert [tuple(r) for r in rows] == [("old-a", "default", "render"), ("old-q", "default", None)]
    manager = JobManager(engine)
    assert manager.get_job("old-a").queue == "default"  # type: ignore[union-attr]
    assert {j.id for j in manager.claim_jobs("w", 5)} == {"old-a", "old-q"}
    assert schema.initialise(engine) == (schema.SCHEMA_VERSION, schema.SCHEMA_VERSION)
    engine.dispose()


# -- the claim ------------------------------------------------------------------------------


def _agent(manager: JobManager, name: str, agent: str, queue: str = "default") -> str:
    return manager.create_job("agent", name, payload={"agent_name": agent}, queue=queue).id


def _claimed(manager: JobManager, queues=None, agents=None) -> set[str]:  # type: ignore[no-untyped-def]
    port = manager.port
    port.serve(queues, agents)
    try:
        return {job.name for job in port.claim("w", 100).jobs}
    finally:
        port.serve()


def test_a_claim_takes_only_the_queues_served(manager: JobManager) -> None:
    _agent(manager, "gpu", "a", "gpu")
    _agent(manager, "cpu", "a", "cpu")
    _agent(manager, "plain", "a")
    assert _claimed(manager, queues=["gpu", "default"]) == {"gpu", "plain"}
    assert _claimed(manager) == {"cpu"}


def test_a_claim_takes_only_the_agents_it_has_and_every_query(manager: JobManager) -> None:
    _agent(manager, "r", "render")
    _agent(manager, "b", "browse")
    manager.create_job("query", "q", payload=GOAL)
    assert _claimed(manager, agents=["render"]) == {"r", "q"}
    assert _claimed(manager, agents=[]) == set()
    assert _claimed(manager, agents=None) == {"b"}


def test_a_paused_queue_is_not_claimed_until_resumed(manager: JobManager) -> None:
    _agent(manager, "held", "a", "slow")
    _agent(manager, "free", "a")
    manager.pause_queue("slow")
    manager.pause_queue("slow")  # again: still paused, no error
    assert _claimed(manager) == {"free"}
    assert [q.paused for q in manager.list_queues() if q.name == "slow"] == [True]
    assert manager.resume_queue("slow") is True
    assert manager.resume_queue("slow") is False
    assert _claimed(manager) == {"held"}


def test_pausing_a_bad_queue_name_is_refused(manager: JobManager) -> None:
    for bad in ("", "no way", "x" * 65):
        with pytest.raises(InvalidJob, match="invalid queue name"):
            manager.pause_queue(bad)
        with pytest.raises(InvalidJob, match="invalid queue name"):
            manager.resume_queue(bad)
    assert manager.list_queues() == []


def test_the_claim_of_every_shape_is_an_index_scan_of_ready_jobs(manager: JobManager) -> None:
    manager.create_jobs(
        [{"job_type": "agent", "name": f"r{i}", "payload": {"agent_name": "a"}} for i in range(50)]
    )
    with manager.transaction() as conn:
        for queues in (None, ["a", "b"]):
            for agents in (None, ["x", "y"], []):
                plan = queries.explain_claim(conn, queues=queues, agents=agents)
                assert "Seq Scan on taiat_jobs" not in plan, plan
                assert "SCAN taiat_jobs\n" not in plan + "\n", plan


def test_queues_are_listed_with_their_jobs_and_the_supervisors_serving_them(
    manager: JobManager,
) -> None:
    _agent(manager, "r1", "render", "gpu")
    _agent(manager, "r2", "render", "gpu")
    _agent(manager, "b", "browse", "gpu")
    _agent(manager, "d", "a")
    manager.create_job("agent", "later", payload={"agent_name": "a"}, run_at=_future())
    _claimed(manager, queues=["default"])  # d and later's queue: d runs
    port = manager.port
    port.register("s1:1:x", "s1", 1, lease=30.0, queues=["gpu"], agents={"render": {}})
    port.register("s2:2:y", "s2", 2, lease=30.0, queues=None, agents={"a": {}})
    found = {q.name: q for q in manager.list_queues()}
    assert set(found) == {"gpu", "default"}
    gpu, default = found["gpu"], found["default"]
    assert (gpu.ready, gpu.pending, gpu.running) == (3, 0, 0)
    assert (default.ready, default.pending, default.running) == (0, 1, 1)
    assert set(gpu.supervisors) == {"s1:1:x", "s2:2:y"}
    assert default.supervisors == ("s2:2:y",)
    assert gpu.unserved_agents == ("browse",)
    browse = next(j for j in manager.list_jobs() if j.name == "b")
    render = next(j for j in manager.list_jobs() if j.name == "r1")
    assert manager.unserved_agent(browse) == "browse"
    assert manager.unserved_agent(render) is None
    port.unregister("s1:1:x")
    assert manager.unserved_agent(render) == "render"


def _future():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) + timedelta(hours=1)


# -- custom executors ------------------------------------------------------------------------


def known_agent() -> dict:
    return {"ran": "known"}


class DeclaringExecutor:
    """Runs agent `declared`, and says so."""

    agents = ("declared",)

    def can_execute(self, job) -> bool:  # type: ignore[no-untyped-def]
        return job.payload.get("agent_name") == "declared"

    def execute(self, job) -> dict:  # type: ignore[no-untyped-def]
        return {"ran": "declared"}


class SilentExecutor:
    """Declares no agent names: the supervisor then serves every one."""

    def can_execute(self, job) -> bool:  # type: ignore[no-untyped-def]
        return False

    def execute(self, job) -> None:  # type: ignore[no-untyped-def]
        return None


def test_a_custom_executor_declares_the_agents_it_serves(database_url: str) -> None:
    import threading

    from support import poll

    from taiat.worker import TaiatWorker

    worker = TaiatWorker(
        database_url=database_url,
        agent_registry={"known": known_agent},
        poll_interval=0.1,
        queues=("default",),
    )
    worker.add_executor(DeclaringExecutor())
    assert worker.served_agents() is not None
    assert {"known", "declared"} <= worker.served_agents()  # type: ignore[operator]
    manager = JobManager(database_url)
    stranger = _agent(manager, "stranger", "nobody-has-it")
    declared = _agent(manager, "declared", "declared")
    known = _agent(manager, "known", "known")
    runner = threading.Thread(target=worker.run)
    runner.start()
    try:
        for job_id in (declared, known):
            poll(lambda j=job_id: manager.get_job(j).status.finished, 60, job_id)  # type: ignore[union-attr]
        last = _agent(manager, "last", "known")  # claimed after the stranger was passed over
        poll(lambda: manager.get_job(last).status.finished, 60, "last")  # type: ignore[union-attr]
        assert manager.get_job(stranger).status is JobStatus.PENDING  # type: ignore[union-attr]
        assert manager.unserved_agent(manager.get_job(stranger)) == "nobody-has-it"  # type: ignore[arg-type]
    finally:
        worker.stop()
        runner.join(60)
    assert manager.get_job(declared).result == {"ran": "declared"}  # type: ignore[union-attr]
    assert manager.get_job(known).result == {"ran": "known"}  # type: ignore[union-attr]
    silent = TaiatWorker(database_url=database_url, agent_registry={"known": known_agent})
    silent.add_executor(SilentExecutor())
    assert silent.served_agents() is None
    for engine in (manager.engine, worker.manager.engine, silent.manager.engine):
        engine.dispose()
