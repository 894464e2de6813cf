"""A job named by the first characters of its id, on PostgreSQL and SQLite: the one job whose
id begins so, active or finished; several are an error that lists them. The lookup reads a
range of the primary key, and stays right on a database that sorts text in a language's
order."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import event, text

from taiat import JobManager, JobStatus
from taiat.errors import AmbiguousJobId, JobNotFound
from taiat.operator.lookups import MIN_PREFIX, resolve_id
from taiat.store import schema
from taiat.store.queries import operator as operator_queries


def agent(job_id: str, name: str) -> dict[str, Any]:
    return {"id": job_id, "job_type": "agent", "name": name}


def test_a_unique_beginning_names_its_job(manager: JobManager) -> None:
    manager.create_jobs(
        [
            agent("abcdef-1", "one"),
            agent("abcdef-2", "two"),
            agent("abcdefgh", "three"),
            agent("abc", "short"),
            agent("zz9zz9-x", "nine"),
        ]
    )
    manager.cancel_job("abcdef-2")  # finished: found in history
    manager.retry_job("abcdef-2")  # active again, and in history: one job still
    manager.cancel_job("zz9zz9-x")
    assert resolve_id(manager, "abcdefg") == "abcdefgh"
    assert resolve_id(manager, "abcdef-2") == "abcdef-2"
    assert resolve_id(manager, "zz9zz9") == "zz9zz9-x"  # finished only
    assert resolve_id(manager, "abc") == "abc"  # a whole id, however short
    with pytest.raises(AmbiguousJobId) as ambiguous:
        resolve_id(manager, "abcdef")
    assert str(ambiguous.value) == (
        "ambiguous job id abcdef: it begins the ids of abcdef-1 (one, pending), abcdef-2 "
        "(two, pending), abcdefgh (three, pending); give more of the id"
    )
    with pytest.raises(AmbiguousJobId, match="abcdef-1 .*abcdef-2 "):
        resolve_id(manager, "abcdef-")
    with pytest.raises(JobNotFound, match="no job has id abcd .a shortened id needs at least 6"):
        resolve_id(manager, "abcd")
    with pytest.raises(JobNotFound, match="^no job has id abcdef-3$"):
        resolve_id(manager, "abcdef-3")
    assert resolve_id(manager, "abcdef-3", missing_ok=True) == "abcdef-3"
    assert MIN_PREFIX == 6


def test_uuid_prefixes_of_every_length(manager: JobManager) -> None:
    jobs = manager.create_jobs([{"job_type": "agent", "name": f"j{i}"} for i in range(50)])
    for job in jobs:
        for length in (6, 8, 9, 13, 36):
            wanted = job.id[:length]
            if sum(j.id.startswith(wanted) for j in jobs) == 1:
                assert resolve_id(manager, wanted) == job.id


def _plans(manager: JobManager, prefix: str) -> list[str]:
    """The database's plan for each statement the lookup of `prefix` runs."""
    seen: list[tuple[str, Any]] = []

    def remember(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(manager.engine, "before_cursor_execute", remember)
    try:
        with manager.engine.begin() as conn:
            operator_queries.job_ids_from(conn, prefix, 11)
    finally:
        event.remove(manager.engine, "before_cursor_execute", remember)
    lookups = [(s, p) for s, p in seen if "taiat_job" in s]
    assert len(lookups) == 2, seen
    with manager.engine.begin() as conn:
        explain = "EXPLAIN" if conn.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN"
        return [
            "\n".join(str(row[-1]) for row in conn.exec_driver_sql(f"{explain} {s}", p))
            for s, p in lookups
        ]


def test_the_lookup_reads_a_range_of_the_primary_key(manager: JobManager) -> None:
    jobs = manager.create_jobs([{"job_type": "agent", "name": f"j{i}"} for i in range(5000)])
    for job in jobs[:500]:
        manager.cancel_job(job.id)
    with manager.engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    active, finished = _plans(manager, jobs[600].id[:8])
    if manager.engine.dialect.name == "postgresql":
        assert "taiat_jobs_pkey" in active and "Seq Scan" not in active, active
        assert "ix_taiat_job_history_job" in finished and "Seq Scan" not in finished, finished
    else:
        assert "USING COVERING INDEX sqlite_autoindex_taiat_jobs_1 (id>? AND id<?)" in active
        assert "USING COVERING INDEX ix_taiat_job_history_job (job_id>? AND job_id<?)" in finished


@pytest.fixture
def icu_manager(pg_database: str) -> Iterator[JobManager]:
    """A JobManager on a PostgreSQL database of its own that sorts text as American English
    does (ICU): '9' before ':' no longer, punctuation weighed last."""
    name = f"taiat_icu_{uuid.uuid4().hex[:8]}"
    create = "CREATE DATABASE {} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(sql.SQL(create).format(sql.Identifier(name)))
    jm = JobManager(f"{pg_database.rsplit('/', 1)[0]}/{name}")
    try:
        schema.initialise(jm.engine)
        yield jm
    finally:
        jm.engine.dispose()
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_a_database_in_a_languages_order_is_searched_whole(icu_manager: JobManager) -> None:
    # In en-US order 'efa3fe29-1' sorts after 'efa3fe2:', the end of a code point range.
    with icu_manager.engine.begin() as conn:
        assert not conn.execute(text("SELECT 'efa3fe29-1' < 'efa3fe2:'")).scalar_one()
    icu_manager.create_jobs([agent("efa3fe29-1", "one"), agent("Efa3fe29-2", "two")])
    assert resolve_id(icu_manager, "efa3fe29") == "efa3fe29-1"
    icu_manager.cancel_job("efa3fe29-1")
    assert resolve_id(icu_manager, "efa3fe") == "efa3fe29-1"
    assert icu_manager.get_job("efa3fe29-1").status is JobStatus.CANCELLED
