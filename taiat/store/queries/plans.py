"""The statements about query jobs run as a plan of agent jobs. Part of the query module; see
its docstring."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import RowMapping, select, update
from sqlalchemy.engine import Connection

from taiat.jobs import JobType
from taiat.store.queries import PENDING, RUNNING
from taiat.store.schema import jobs, utcnow


def wait_on_plan(
    conn: Connection, job_id: str, claim_seq: int, payload: Mapping[str, Any], waits_for: int
) -> bool:
    """Put this claim of a running query job back to pending, waiting for `waits_for` of its
    plan's jobs, its payload now holding the plan; no retry spent. False when stale."""
    stmt = (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status == RUNNING, jobs.c.claim_seq == claim_seq)
        .values(
            status=PENDING,
            payload=dict(payload),
            unmet_dependencies=waits_for,
            worker_id=None,
            updated_at=utcnow(),
        )
    )
    return conn.execute(stmt).rowcount == 1


def lock_jobs(conn: Connection, job_ids: Collection[str]) -> list[RowMapping]:
    """Those of the jobs still active, locked, in id order (the order every lock is taken in)."""
    if not job_ids:
        return []
    stmt = select(jobs).where(jobs.c.id.in_(list(job_ids))).order_by(jobs.c.id).with_for_update()
    return list(conn.execute(stmt).mappings())


def lock_queries_of(conn: Connection, job_ids: Collection[str]) -> list[str]:
    """Lock the active query jobs whose plans the agent jobs `job_ids` belong to, in id order;
    their ids. The agents' payloads are read without a lock: their `query_job` never changes."""
    if not job_ids:
        return []
    agent = jobs.alias("agent")
    owners = select(agent.c.payload["query_job"].as_string()).where(
        agent.c.id.in_(list(job_ids)), agent.c.job_type == JobType.AGENT.value
    )
    stmt = select(jobs.c.id).where(jobs.c.id.in_(owners)).order_by(jobs.c.id).with_for_update()
    return list(conn.execute(stmt).scalars())
