"""Real databases for the tests: a fresh PostgreSQL schema or SQLite file per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from taiat import JobManager
from taiat.store import db, schema
from taiat.store.state_machine import RetryPolicy

if TYPE_CHECKING:
    from private_postgres import PrivateCluster

#: `private_pg`, a PostgreSQL cluster of a test's own, for every tier.
pytest_plugins = ["private_postgres"]

PG_ADMIN_URL = os.environ.get("TAIAT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_reachable() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.OperationalError as exc:
        return str(exc).strip()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A database of our own for this test run, dropped at the end; its URL."""
    problem = _pg_reachable()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI and is not reachable: {problem}")
        pytest.skip(f"PostgreSQL not reachable: {problem}")
    name = f"taiat_test_{os.getpid()}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _pg_schema_url(pg_database: str) -> Iterator[str]:
    schema_name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema_name)))
    try:
        yield f"{pg_database}?options={quote(f'-csearch_path={schema_name}')}"
    finally:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema_name)))


@pytest.fixture
def pg_url(pg_database: str) -> Iterator[str]:
    """An empty PostgreSQL schema of this test's own."""
    yield from _pg_schema_url(pg_database)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'taiat.db'}"


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_url(request: pytest.FixtureRequest) -> str:
    """An empty database, PostgreSQL then SQLite."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return request.getfixturevalue("sqlite_url")


def initialised(url: str) -> str:
    engine = db.engine_from_url(url)
    schema.initialise(engine)
    engine.dispose()
    return url


@pytest.fixture
def database_url(empty_url: str) -> str:
    """An initialised database, PostgreSQL then SQLite."""
    return initialised(empty_url)


@pytest.fixture
def pg_database_url(pg_url: str) -> str:
    """An initialised PostgreSQL schema of this test's own."""
    return initialised(pg_url)


@pytest.fixture
def private_pg_url(private_pg: PrivateCluster) -> str:
    """An initialised database on a PostgreSQL cluster of this test's own, which the test may
    stop, restart or pause."""
    return initialised(private_pg.url)


@pytest.fixture
def pg_manager(pg_database_url: str) -> Iterator[JobManager]:
    """A JobManager on an initialised PostgreSQL schema of this test's own."""
    jm = JobManager(pg_database_url)
    yield jm
    jm.engine.dispose()


@pytest.fixture
def manager(database_url: str) -> Iterator[JobManager]:
    """A JobManager on an initialised database whose retries wait no time at all."""
    jm = JobManager(database_url, retry_policy=fast_retries())
    yield jm
    jm.engine.dispose()


def fast_retries() -> RetryPolicy:
    return RetryPolicy(base_delay=0.0, max_delay=0.0)
