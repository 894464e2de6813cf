"""The statements about supervisors: their rows and heartbeats, the jobs they run, and
whether a claim is still the running one. Part of the query module; see its docstring."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from sqlalchemy import RowMapping, delete, insert, select, update
from sqlalchemy.engine import Connection

from taiat.queries import RUNNING
from taiat.schema import jobs, utcnow, workers


def current_claims(conn: Connection, claims: Mapping[str, int]) -> set[str]:
    """Those of the jobs (id -> claim_seq) whose claim is still the running one."""
    if not claims:
        return set()
    stmt = select(jobs.c.id, jobs.c.claim_seq).where(
        jobs.c.id.in_(list(claims)), jobs.c.status == RUNNING
    )
    return {row.id for row in conn.execute(stmt) if claims.get(row.id) == row.claim_seq}


def register_worker(conn: Connection, worker_id: str, host: str, pid: int) -> None:
    conn.execute(insert(workers).values(id=worker_id, host=host, pid=pid))


def heartbeat(conn: Connection, worker_id: str) -> bool:
    stmt = update(workers).where(workers.c.id == worker_id).values(heartbeat_at=utcnow())
    return conn.execute(stmt).rowcount == 1


def unregister_worker(conn: Connection, worker_id: str) -> None:
    conn.execute(delete(workers).where(workers.c.id == worker_id))


def list_workers(conn: Connection) -> list[RowMapping]:
    stmt = select(workers, utcnow().label("now")).order_by(workers.c.started_at)
    return list(conn.execute(stmt).mappings())


def orphaned_jobs(conn: Connection, live_worker_ids: Collection[str]) -> list[RowMapping]:
    """Running jobs whose supervisor is not among the live ones (dead, or its row is gone)."""
    stmt = select(jobs).where(jobs.c.status == RUNNING)
    if live_worker_ids:
        stmt = stmt.where(
            (jobs.c.worker_id.is_(None)) | jobs.c.worker_id.not_in(list(live_worker_ids))
        )
    return list(conn.execute(stmt.order_by(jobs.c.id)).mappings())


def delete_workers(conn: Connection, worker_ids: Collection[str]) -> None:
    if worker_ids:
        conn.execute(delete(workers).where(workers.c.id.in_(list(worker_ids))))


def running_for_workers(conn: Connection, worker_ids: Iterable[str]) -> list[RowMapping]:
    stmt = select(jobs).where(jobs.c.status == RUNNING, jobs.c.worker_id.in_(list(worker_ids)))
    return list(conn.execute(stmt).mappings())
