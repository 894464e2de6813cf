"""The pool's connections to PostgreSQL: one that sat idle, or on which the server said
something meanwhile (its end, at a restart), is pinged before it is used again, and replaced
when the ping fails; one used a moment ago, with nothing waiting on it, is not
(`db.ping_after_idle`: a ping is a round trip, as long as `create_job`'s whole work)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from private_postgres import PrivateCluster
from sqlalchemy import event
from support import poll

from taiat import JobManager
from taiat.store import db


@pytest.fixture
def pinged(private_pg_url: str) -> Iterator[tuple[JobManager, list[str]]]:
    """A manager on a private cluster, and the pings its pool sends."""
    manager = JobManager(private_pg_url)
    pings: list[str] = []
    ping = manager.engine.dialect.do_ping

    def counted(dbapi: object) -> bool:
        pings.append("ping")
        return ping(dbapi)

    manager.engine.dialect.do_ping = counted  # type: ignore[method-assign]
    yield manager, pings
    manager.engine.dispose()


def test_a_connection_used_a_moment_ago_is_not_pinged(
    pinged: tuple[JobManager, list[str]],
) -> None:
    manager, pings = pinged
    for n in range(20):
        manager.create_job("agent", f"j{n}", payload={"agent_name": "noop"})
    assert pings == []


def test_a_connection_the_server_ended_is_pinged_and_replaced_at_once(
    pinged: tuple[JobManager, list[str]], private_pg: PrivateCluster
) -> None:
    """A restart right after a call: the server's goodbye, waiting on the pooled connection,
    has it pinged and replaced, and the next call works as if nothing happened."""
    manager, pings = pinged
    first = manager.create_job("agent", "before", payload={"agent_name": "noop"})
    connected: list[object] = []
    event.listen(manager.engine, "connect", lambda dbapi, _record: connected.append(dbapi))
    private_pg.restart()
    after = manager.create_job("agent", "after", payload={"agent_name": "noop"})
    assert pings == ["ping"]
    assert len(connected) == 1  # the dead one replaced by a new one, without an error
    assert {job.name for job in manager.list_jobs()} >= {first.name, after.name}


def test_an_idle_connection_is_pinged(pinged: tuple[JobManager, list[str]]) -> None:
    manager, pings = pinged
    manager.create_job("agent", "before", payload={"agent_name": "noop"})
    used = time.monotonic()
    poll(lambda: time.monotonic() - used >= db.PING_AFTER_IDLE, 10, "the idle time")
    manager.create_job("agent", "after", payload={"agent_name": "noop"})
    assert pings == ["ping"]
