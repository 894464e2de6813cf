"""Fleet-wide limits by key, on both databases: caps and rates never exceeded by claimers at
once, priority order kept, room freed by whatever ends a job, and bad input refused."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from query_helpers import CHAIN, query, run_burst
from sqlalchemy import delete, func, insert, select, text
from support import drop_routines, max_overlap, poll

from taiat import JobManager, JobStatus
from taiat.errors import InvalidJob, InvalidLimit
from taiat.store import db, schema
from taiat.store.validation import limit_keys


def agent(name: str, agent_name: str = "a", **extra: Any) -> dict[str, Any]:
    return {"job_type": "agent", "name": name, "payload": {"agent_name": agent_name}, **extra}


def running(manager: JobManager, key: str) -> int:
    return next(limit["running"] for limit in manager.list_limits() if limit["key"] == key)


def history_spans(manager: JobManager, prefix: str = "") -> list[tuple[Any, Any]]:
    """When each completed job whose name begins with `prefix` started and ended."""
    h = schema.history.c
    with manager.transaction() as conn:
        rows = conn.execute(
            select(h.name, h.started_at, h.completed_at).where(h.status == "completed")
        )
        return [(row.started_at, row.completed_at) for row in rows if row.name.startswith(prefix)]


def drain(url: str, workers: int, batch: int) -> None:
    """`workers` threads, each with its own manager, claim up to `batch` jobs at a time and
    complete them until nothing is left unfinished."""
    errors: list[BaseException] = []

    def work(index: int) -> None:
        manager = JobManager(url)
        try:
            while manager.pending_count() or manager.count_jobs().get("running"):
                for job in manager.claim_jobs(f"w{index}", batch):
                    manager.complete_job(job.id, job.claim_seq, {"by": index})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            manager.engine.dispose()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors


def test_a_job_has_its_queue_agent_and_explicit_keys(manager: JobManager) -> None:
    job = manager.create_job("agent", "x", payload={"agent_name": "render"}, limit_keys=["k:1"])
    goal = {"inferred_goal_output": "g"}
    query = manager.create_jobs([{"job_type": "query", "name": "q", "payload": goal}])
    with manager.transaction() as conn:
        row = conn.execute(select(schema.jobs).where(schema.jobs.c.id == job.id)).one()
        assert (row.queue, row.agent, row.limit_keys) == ("default", "render", ["k:1"])
        q = conn.execute(select(schema.jobs).where(schema.jobs.c.id == query[0].id)).one()
        assert (q.queue, q.agent, q.limit_keys) == ("default", None, [])
    assert limit_keys("default", "render", ["k:1"]) == ["queue:default", "agent:render", "k:1"]
    assert limit_keys("gpu", None, []) == ["queue:gpu"]


def test_concurrent_claimers_never_exceed_a_cap(database_url: str) -> None:
    manager = JobManager(database_url)
    manager.set_limit("shared", concurrency=2)
    manager.create_jobs([agent(f"j{i}", limit_keys=["shared"]) for i in range(40)])
    manager.create_jobs([agent(f"free{i}", "b") for i in range(10)])
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        watcher = JobManager(database_url)
        while not stop.is_set():
            seen.append(running(watcher, "shared"))
        watcher.engine.dispose()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        drain(database_url, workers=4, batch=3)
    finally:
        stop.set()
        watcher.join(30)
    assert manager.count_jobs().get("completed") == 50
    assert seen and max(seen) <= 2
    spans = history_spans(manager, "j")
    assert len(spans) == 40 and max_overlap(spans) <= 2
    manager.engine.dispose()


def test_a_rate_is_never_exceeded_in_any_window(database_url: str) -> None:
    manager = JobManager(database_url)
    manager.set_limit("api", rate="4/s")
    manager.create_jobs([agent(f"j{i}", limit_keys=["api"]) for i in range(10)])
    drain(database_url, workers=3, batch=4)
    starts = sorted(start for start, _ in history_spans(manager))
    assert len(starts) == 10
    # Any window of one second holds at most 4 starts: the 5th after any start is 1 s later.
    assert all(
        later - first > timedelta(seconds=1)
        for first, later in zip(starts, starts[4:], strict=False)
    )
    manager.engine.dispose()


def test_waiting_jobs_start_in_priority_order_as_room_frees(manager: JobManager) -> None:
    manager.set_limit("agent:a", concurrency=1)
    for priority in (1, 5, 3, 9, 7):
        manager.create_job("agent", f"p{priority}", payload={"agent_name": "a"}, priority=priority)
    order = []
    while True:
        claimed = manager.claim_jobs("w", 4)
        if not claimed:
            break
        assert len(claimed) == 1
        assert manager.claim_jobs("w2", 4) == []
        order.append(claimed[0].name)
        manager.complete_job(claimed[0].id, claimed[0].claim_seq)
    assert order == ["p9", "p7", "p5", "p3", "p1"]


def test_jobs_without_a_limited_key_are_claimed_past_waiting_ones(manager: JobManager) -> None:
    manager.set_limit("queue:default", concurrency=10)
    manager.set_limit("slow", concurrency=0)
    manager.create_jobs([agent(f"held{i}", limit_keys=["slow"], priority=5) for i in range(5)])
    free = manager.create_job("agent", "free", payload={"agent_name": "a"})
    assert [job.id for job in manager.claim_jobs("w", 4)] == [free.id]
    assert {limit["key"]: limit["waiting"] for limit in manager.list_limits()} == {
        "queue:default": 5,
        "slow": 5,
    }


def test_lowering_a_limit_stops_only_new_starts(manager: JobManager) -> None:
    manager.set_limit("k", concurrency=3)
    manager.create_jobs([agent(f"j{i}", limit_keys=["k"]) for i in range(6)])
    first = manager.claim_jobs("w", 6)
    assert len(first) == 3
    manager.set_limit("k", concurrency=1)
    assert manager.claim_jobs("w", 6) == []
    assert all(manager.get_job(job.id).status is JobStatus.RUNNING for job in first)
    manager.complete_job(first[0].id, first[0].claim_seq)
    manager.complete_job(first[1].id, first[1].claim_seq)
    assert manager.claim_jobs("w", 6) == []  # 1 running, cap 1
    manager.complete_job(first[2].id, first[2].claim_seq)
    assert len(manager.claim_jobs("w", 6)) == 1


def test_cancel_fail_and_finish_free_room_at_once(manager: JobManager) -> None:
    manager.set_limit("k", concurrency=1)
    manager.create_jobs([agent(f"j{i}", limit_keys=["k"], max_retries=0) for i in range(4)])
    (job,) = manager.claim_jobs("w", 4)
    assert manager.cancel_job(job.id)
    (job,) = manager.claim_jobs("w", 4)
    manager.fail_job(job.id, job.claim_seq, "boom")
    (job,) = manager.claim_jobs("w", 4)
    manager.complete_job(job.id, job.claim_seq)
    (job,) = manager.claim_jobs("w", 4)
    assert running(manager, "k") == 1


def test_recovering_a_dead_supervisors_jobs_frees_room(manager: JobManager) -> None:
    manager.set_limit("agent:a", concurrency=1)
    manager.create_jobs([agent("first"), agent("second")])
    manager.port.register("dead", "elsewhere", 1)
    (job,) = manager.claim_jobs("dead", 2)
    assert manager.claim_jobs("alive", 2) == []
    taken = manager.port.recover("alive", lambda row, now: row["id"] == "dead")
    assert taken == [job.id]
    assert len(manager.claim_jobs("alive", 2)) == 1


def test_retrying_keeps_the_keys(manager: JobManager) -> None:
    job = manager.create_job("agent", "x", payload={"agent_name": "a"}, limit_keys=["k"])
    assert manager.cancel_job(job.id)
    manager.retry_job(job.id)
    with manager.transaction() as conn:
        row = conn.execute(select(schema.jobs).where(schema.jobs.c.id == job.id)).one()
    assert (row.queue, row.agent, row.limit_keys) == ("default", "a", ["k"])
    manager.set_limit("k", concurrency=0)
    assert manager.claim_jobs("w", 1) == []


def test_a_limit_on_an_unused_key_is_allowed_and_listed(manager: JobManager) -> None:
    manager.set_limit("nobody:uses/this", concurrency=4, rate="/h")
    assert manager.list_limits() == [
        {"key": "nobody:uses/this", "concurrency": 4, "rate": "1/h", "running": 0, "waiting": 0}
    ]
    assert manager.clear_limit("nobody:uses/this") is True
    assert manager.clear_limit("nobody:uses/this") is False
    assert manager.list_limits() == []


@pytest.mark.parametrize(
    ("key", "concurrency", "rate", "named"),
    [
        ("k", None, "0/min", "'0/min'"),
        ("k", None, "5/fortnight", "'5/fortnight'"),
        ("k", -1, None, "-1"),
        ("k", 1, "ten/s", "'ten/s'"),
        ("bad key", 1, None, "'bad key'"),
        ("x" * 129, 1, None, "x"),
        ("k", None, None, "'k'"),
    ],
)
def test_bad_limits_are_refused_and_change_nothing(
    manager: JobManager, key: str, concurrency: Any, rate: Any, named: str
) -> None:
    manager.set_limit("k", concurrency=2, rate="3/s")
    with pytest.raises(InvalidLimit, match=named):
        manager.set_limit(key, concurrency=concurrency, rate=rate)
    assert manager.list_limits()[0] | {"running": 0, "waiting": 0} == {
        "key": "k",
        "concurrency": 2,
        "rate": "3/s",
        "running": 0,
        "waiting": 0,
    }
    assert len(manager.list_limits()) == 1


@pytest.mark.parametrize("keys", [["bad key"], [""], ["x" * 129], "k", [3], ["é"]])
def test_bad_keys_on_jobs_are_refused_and_nothing_is_created(
    manager: JobManager, keys: Any
) -> None:
    with pytest.raises(InvalidJob, match="limit"):
        manager.create_job("agent", "x", payload={"agent_name": "a"}, limit_keys=keys)
    with pytest.raises(InvalidJob, match="limit"):
        manager.create_jobs([agent("ok"), agent("bad", limit_keys=keys)])
    with manager.transaction() as conn:
        assert conn.execute(select(func.count()).select_from(schema.jobs)).scalar() == 0


def test_clearing_a_limit_lets_waiting_jobs_start(manager: JobManager) -> None:
    manager.set_limit("k", concurrency=0)
    manager.create_jobs([agent(f"j{i}", limit_keys=["k"]) for i in range(3)])
    assert manager.claim_jobs("w", 3) == []
    manager.clear_limit("k")
    assert len(poll(lambda: manager.claim_jobs("w", 3), what="a claim")) == 3


def test_a_version_3_database_is_upgraded_to_hold_keys_and_limits(empty_url: str) -> None:
    engine = db.engine_from_url(empty_url)
    schema.initialise(engine)
    job = JobManager(engine).create_job("agent", "old", payload={"agent_name": "a"})
    with engine.begin() as conn:  # as version 3 had it
        drop_routines(conn)
        for table in ("taiat_jobs", "taiat_job_history"):
            for column in ("queue", "agent", "limit_keys"):
                conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        schema.limit_starts.drop(conn)
        schema.limits.drop(conn)
        conn.execute(delete(schema.schema_version))
        conn.execute(insert(schema.schema_version).values(version=3))
    assert schema.initialise(engine) == (3, schema.SCHEMA_VERSION)
    manager = JobManager(engine)
    manager.set_limit("queue:default", concurrency=1)
    assert [claimed.id for claimed in manager.claim_jobs("w", 2)] == [job.id]
    assert manager.list_limits()[0]["running"] == 1
    engine.dispose()


def test_a_version_4_database_is_upgraded_keeping_the_starts_in_each_window(
    empty_url: str,
) -> None:
    engine = db.engine_from_url(empty_url)
    schema.initialise(engine)
    manager = JobManager(engine)
    manager.set_limit("k", rate="1/h")
    manager.set_limit("free", rate="1/s")
    started = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=1)
    with engine.begin() as conn:  # as version 4 had it: a row a start
        drop_routines(conn)
        schema.limit_starts.drop(conn)
        conn.execute(
            text(
                "CREATE TABLE taiat_limit_starts (key VARCHAR, started_at TIMESTAMP, job_id "
                "VARCHAR, claim_seq INTEGER, PRIMARY KEY (key, started_at, job_id, claim_seq))"
            )
        )
        for key in ("k", "free"):
            conn.execute(
                text("INSERT INTO taiat_limit_starts VALUES (:key, :at, 'old', 1)"),
                {"key": key, "at": started},
            )
        conn.execute(delete(schema.schema_version))
        conn.execute(insert(schema.schema_version).values(version=4))
    assert schema.initialise(engine) == (4, schema.SCHEMA_VERSION)
    manager = JobManager(engine)
    manager.create_jobs([agent("held", limit_keys=["k"]), agent("free", limit_keys=["free"])])
    # The start of a minute ago still fills k's hour; free's second has long passed.
    assert [job.name for job in manager.claim_jobs("w", 2)] == ["free"]
    engine.dispose()


def test_the_supervisors_count_of_jobs_waiting_on_each_limited_key(manager: JobManager) -> None:
    assert manager.port.waiting_on_limits() == {}
    manager.set_limit("agent:a", concurrency=1)
    manager.set_limit("unused", rate="5/min")
    manager.create_jobs([agent(f"j{i}") for i in range(3)] + [agent("other", "b")])
    manager.claim_jobs("w", 4)
    assert manager.port.waiting_on_limits() == {"agent:a": 2, "unused": 0}
    assert manager.port.waiting_on_limits(most=1) == {"agent:a": 2}


def test_a_querys_planned_jobs_inherit_its_explicit_keys(
    database_url: str, manager: JobManager
) -> None:
    manager.set_limit("customer:42", concurrency=1)
    job = manager.create_job(
        "query", "q", payload=query("total", raw=[3, -1, 2]), limit_keys=["customer:42"]
    )
    run_burst(database_url, CHAIN)
    done = manager.get_job(job.id)
    assert done.status is JobStatus.COMPLETED, done.error_message
    h = schema.history.c
    with manager.transaction() as conn:
        rows = conn.execute(select(h.agent, h.limit_keys).where(h.agent.is_not(None))).all()
    assert sorted(rows) == [("clean", ["customer:42"]), ("total", ["customer:42"])]
    assert max_overlap(history_spans(manager, "q/")) == 1
