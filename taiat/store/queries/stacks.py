"""The statements behind `taiat jobs stack`: an operator asks for a running job's stack (a
request counted on its row, announced by NOTIFY), its supervisor finds the requests for its
jobs and answers each with the stack its child dumped. Part of the query module; see its
docstring."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import RowMapping, bindparam, func, select, update
from sqlalchemy.engine import Connection

from taiat.store.queries import RUNNING, notify
from taiat.store.schema import jobs, utcnow


def ask_stack(conn: Connection, job_id: str) -> int | None:
    """Count a request for a running job's stack, and wake its supervisor; the request's
    number, or None when the job is not running."""
    stmt = (
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status == RUNNING)
        .values(stack_requests=func.coalesce(jobs.c.stack_requests, 0) + 1)
        .returning(jobs.c.stack_requests)
    )
    request = conn.execute(stmt).scalar()
    if request is not None:
        notify(conn, f"stack:{job_id}")
    return request


def stack_answer(conn: Connection, job_id: str) -> RowMapping | None:
    """A job's status and its last answered request for its stack, with the answer."""
    stmt = select(jobs.c.status, jobs.c.stack_answered, jobs.c.stack, jobs.c.stack_at).where(
        jobs.c.id == job_id
    )
    return conn.execute(stmt).mappings().first()


def stack_requests(conn: Connection, claims: Mapping[str, int]) -> dict[str, int]:
    """Of the jobs (id -> claim_seq) still running under those claims, those whose stack was
    asked for and not answered yet: the latest request of each."""
    if not claims:
        return {}
    stmt = select(jobs.c.id, jobs.c.claim_seq, jobs.c.stack_requests).where(
        jobs.c.id.in_(list(claims)),
        jobs.c.status == RUNNING,
        jobs.c.stack_requests > func.coalesce(jobs.c.stack_answered, 0),
    )
    return {
        row.id: row.stack_requests
        for row in conn.execute(stmt)
        if claims.get(row.id) == row.claim_seq
    }


_ANSWER = (
    update(jobs)
    .where(jobs.c.id == bindparam("the_job"), jobs.c.claim_seq == bindparam("the_claim"))
    .values(stack_answered=bindparam("request"), stack=bindparam("dump"), stack_at=utcnow())
)


def answer_stacks(conn: Connection, answers: Sequence[Mapping[str, Any]]) -> None:
    """Store answers (`the_job`, `the_claim`: its claim_seq, `request`, `dump`: the stack, or
    None when none came) on the jobs still under those claims."""
    if answers:
        conn.execute(_ANSWER, list(answers))
