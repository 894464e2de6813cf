"""Queues in the store, on PostgreSQL and SQLite: a job's queue (checked, kept through its
history and a retry, inherited by a query's planned agent jobs), its agent's name, the claim
that takes only the queues and agents a supervisor serves and no paused queue, and the
upgrade of a version-3 database."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, insert, inspect, select, text

from taiat import JobManager
from taiat.errors import InvalidJob
from taiat.query_plans import Plan, Step
from taiat.store import db, schema

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
    assert schema.initialise(engine) == (3, 4)
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
    assert schema.initialise(engine) == (4, 4)
    engine.dispose()
