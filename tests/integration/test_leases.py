"""Supervisors' registrations: the schema that holds their leases and places, and the upgrade
that brings a version-1 database to it."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, insert, inspect

from taiat import JobManager
from taiat.store import db, schema
from taiat.supervisor import liveness


def _version_1(url: str) -> None:
    """The tables as version 1 had them: `taiat_workers` without lease, boot or namespace."""
    engine = db.engine_from_url(url)
    old = MetaData()
    Table(
        "taiat_workers",
        old,
        Column("id", String, primary_key=True),
        Column("host", String, nullable=False),
        Column("pid", Integer, nullable=False),
        Column("started_at", DateTime, nullable=False, server_default=schema.utcnow()),
        Column("heartbeat_at", DateTime, nullable=False, server_default=schema.utcnow()),
        Column("info", schema.JsonType),
    )
    # Tables added since version 1 (`taiat_job_output`, version 3) are the upgrades' to make.
    later = {"taiat_workers", schema.output.name}
    others = [t for t in schema.metadata.sorted_tables if t.name not in later]
    with engine.begin() as conn:
        schema.metadata.create_all(conn, tables=others)
        old.create_all(conn)
        conn.execute(insert(schema.schema_version).values(version=1))
        conn.execute(insert(old.tables["taiat_workers"]).values(id="old:1:aaaa", host="old", pid=1))
    engine.dispose()


def test_upgrade_from_version_1_keeps_supervisors_judged_by_the_observers_lease(
    empty_url: str,
) -> None:
    _version_1(empty_url)
    engine = db.engine_from_url(empty_url)
    assert schema.initialise(engine) == (1, schema.SCHEMA_VERSION)
    with engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("taiat_workers")}
    assert {"lease_seconds", "boot_id", "pid_namespace"} <= columns
    manager = JobManager(engine)
    manager.port.register(
        "new:2:bbbb", "new", 2, lease=600.0, **liveness.Place.here().registration()
    )
    rows = {row["id"]: row for row in manager.port.list_workers()}
    assert rows["old:1:aaaa"]["lease_seconds"] is None
    assert rows["new:2:bbbb"]["lease_seconds"] == 600.0
    # A row from before the upgrade has no lease of its own: the observer's decides.
    old, new = rows["old:1:aaaa"], rows["new:2:bbbb"]
    later = old["heartbeat_at"] + timedelta(seconds=60)
    assert liveness.is_dead(old, later, lease=30.0)
    assert not liveness.is_dead(old, later, lease=120.0)
    assert not liveness.is_dead(new, later, lease=30.0)
    engine.dispose()
