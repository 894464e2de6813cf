"""Jobs given back unstarted spend no rate, on both databases: a supervisor that gives claimed
jobs back to pending (no memory for them, held too long, stopping) takes their starts back out
of the buckets their claim counted them in, in the same transaction; jobs that did start still
count."""

from __future__ import annotations

import math
import threading
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update
from support import acceptance_agents, agent_job, finished, poll

from taiat import JobManager, JobStatus
from taiat.config import MemoryReserve, MiB
from taiat.forking.job_process import Ending
from taiat.jobs import Attempt, Job, Outcome
from taiat.store import queries, schema
from taiat.supervisor.admission import Admission, Memory
from taiat.supervisor.daemon import Supervisor, SupervisorConfig
from taiat.supervisor.recorder import Record, Recorder

#: The width of a bucket of a rate of N/min, in seconds (`schema.STARTS_BUCKETS` to a window).
MINUTE_BUCKET = 60 / schema.STARTS_BUCKETS


def starts(manager: JobManager, key: str) -> dict[int, int]:
    """The starts counted for `key`, by bucket."""
    s = schema.limit_starts.c
    with manager.transaction() as conn:
        rows = conn.execute(select(s.bucket, s.starts).where(s.key == key)).all()
    return {row.bucket: row.starts for row in rows}


def give_back(manager: JobManager, jobs: list[Job]) -> Recorder:
    """Give `jobs` back as the supervisor does: through its recorder, written by `settle`."""
    recorder = Recorder(manager.port, lambda: None)
    for job in jobs:
        recorder.give_back(job, "no memory for it on this host now")
    recorder.settle("w", 0)
    assert not recorder.pending
    return recorder


def names(jobs: list[Job]) -> list[str]:
    return sorted(job.name for job in jobs)


def test_jobs_given_back_unstarted_leave_their_rate_unspent(manager: JobManager) -> None:
    manager.set_limit("agent:a", rate="2/min")
    manager.create_jobs([agent_job(f"j{i}", "a") | {"priority": 9 - i} for i in range(4)])
    first = manager.claim_jobs("w", 4)
    assert names(first) == ["j0", "j1"]
    assert manager.claim_jobs("w", 4) == []
    assert sum(starts(manager, "agent:a").values()) == 2

    give_back(manager, first)
    assert all(manager.get_job(job.id).status is JobStatus.PENDING for job in first)
    assert sum(starts(manager, "agent:a").values()) == 0
    # The room is back: the supervisor's own next claim (with its writes) takes them again.
    again = Recorder(manager.port, lambda: None).settle("w", 4).jobs
    assert names(again) == ["j0", "j1"]
    assert manager.claim_jobs("w", 4) == []


def test_jobs_that_started_still_count(manager: JobManager) -> None:
    manager.set_limit("agent:a", rate="2/min")
    manager.create_jobs([agent_job(f"j{i}", "a") for i in range(4)])
    done, stopped = manager.claim_jobs("w", 4)
    assert manager.complete_job(done.id, done.claim_seq, {"ok": 1})
    # Cut short by a stopping supervisor after it started: back to pending, its start spent.
    recorder = Recorder(manager.port, lambda: None)
    ending = Ending(False, None, "the supervisor stopped", Outcome.STOPPED, None, 15, 1, 0, 0, 0)
    attempt = Attempt(job_id=stopped.id, attempt=1, outcome="stopped", worker_id="w")
    recorder.add(Record(stopped, ending, attempt))
    recorder.settle("w", 0)
    assert manager.get_job(stopped.id).status is JobStatus.PENDING
    assert sum(starts(manager, "agent:a").values()) == 2
    assert manager.claim_jobs("w", 4) == []


def test_each_rate_limited_key_of_the_job_gets_its_start_back(manager: JobManager) -> None:
    manager.set_limit("agent:a", rate="1/min")
    manager.set_limit("queue:default", rate="5/min")
    manager.set_limit("api", concurrency=3, rate="1/h")
    manager.set_limit("capped", concurrency=3)
    manager.set_limit("unused", rate="1/min")
    spec = agent_job("x", "a") | {"limit_keys": ["api", "capped"], "priority": 5}
    manager.create_jobs([spec, agent_job("other", "b")])
    claimed = manager.claim_jobs("w", 1)
    assert names(claimed) == ["x"]
    rated = ("agent:a", "queue:default", "api")
    assert [sum(starts(manager, key).values()) for key in rated] == [1, 1, 1]
    give_back(manager, claimed)
    assert [sum(starts(manager, key).values()) for key in rated] == [0, 0, 0]
    assert starts(manager, "capped") == starts(manager, "unused") == {}
    assert names(manager.claim_jobs("w", 2)) == ["other", "x"]


def test_the_start_is_taken_from_the_bucket_of_the_claims_stamp(manager: JobManager) -> None:
    """From the bucket the claim counted it in, not the current one; never below zero; and
    from none when its bucket was pruned."""
    manager.set_limit("agent:a", rate="10/min")
    manager.create_jobs([agent_job(f"j{i}", "a") for i in range(3)])
    one, two, three = manager.claim_jobs("w", 3)
    # As if claimed in the middle of a bucket half a minute ago, where 2 starts were counted.
    with manager.transaction() as conn:
        now = queries.db_now(conn)
    epoch = (now - datetime(1970, 1, 1)).total_seconds()
    then = math.floor((epoch - 30) / MINUTE_BUCKET)
    stamp = datetime(1970, 1, 1) + timedelta(seconds=(then + 0.5) * MINUTE_BUCKET)
    j, s = schema.jobs.c, schema.limit_starts
    with manager.transaction() as conn:
        conn.execute(update(schema.jobs).where(j.id == one.id).values(started_at=stamp))
        conn.execute(delete(s))
        rows = [(then - 1, 1), (then, 2), (then + 1, 1)]
        conn.execute(
            insert(s),
            [{"key": "agent:a", "width": MINUTE_BUCKET, "bucket": b, "starts": n} for b, n in rows],
        )
    give_back(manager, [one])
    assert starts(manager, "agent:a") == {then - 1: 1, then: 1, then + 1: 1}

    # A bucket already at zero stays at zero.
    with manager.transaction() as conn:
        conn.execute(update(s).values(starts=0))
        conn.execute(update(schema.jobs).where(j.id == two.id).values(started_at=stamp))
    give_back(manager, [two])
    assert starts(manager, "agent:a") == {then - 1: 0, then: 0, then + 1: 0}

    # A bucket pruned (out of every window): nothing to take back, the job goes back all the same.
    with manager.transaction() as conn:
        conn.execute(delete(s))
    give_back(manager, [three])
    assert manager.get_job(three.id).status is JobStatus.PENDING
    assert starts(manager, "agent:a") == {}


def test_a_stale_give_back_changes_nothing(manager: JobManager) -> None:
    manager.set_limit("agent:a", rate="2/min")
    manager.create_jobs([agent_job(f"j{i}", "a") for i in range(2)])
    cancelled, taken_back = manager.claim_jobs("w", 2)
    assert manager.cancel_job(cancelled.id)
    # Taken back by another supervisor (claimed anew since): this claim of it is stale.
    assert manager.port.requeue(taken_back.id, taken_back.claim_seq)
    manager.set_limit("agent:a", rate="3/min")
    (again,) = manager.claim_jobs("w2", 2)
    assert again.id == taken_back.id and again.claim_seq == taken_back.claim_seq + 1
    before = starts(manager, "agent:a")
    assert sum(before.values()) == 3
    assert not manager.port.give_back(cancelled.id, cancelled.claim_seq)
    give_back(manager, [taken_back])
    assert starts(manager, "agent:a") == before
    assert manager.get_job(again.id).status is JobStatus.RUNNING


def test_claims_and_give_backs_at_once_take_back_every_start_once(database_url: str) -> None:
    """Supervisors claiming and giving back at once, each job with two rate-limited keys: no
    error, and once all is given back, no start is left counted."""
    manager = JobManager(database_url)
    manager.set_limit("agent:a", rate="1000/min")
    manager.set_limit("api", rate="1000/min")
    manager.create_jobs([agent_job(f"j{i}", "a") | {"limit_keys": ["api"]} for i in range(6)])
    errors: list[BaseException] = []
    rounds: list[int] = []

    def work(index: int) -> None:
        own = JobManager(database_url)
        try:
            recorder = Recorder(own.port, lambda: None)
            for _ in range(20):
                for job in recorder.settle(f"w{index}", 2).jobs:
                    recorder.give_back(job, "held too long for a free slot")
                    rounds.append(1)
            recorder.settle(f"w{index}", 0)
            assert not recorder.pending
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            own.engine.dispose()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads), "a claimer is stuck (a deadlock?)"
    assert not errors, errors
    assert rounds  # something was claimed and given back
    assert manager.count_jobs() == {"pending": 6}
    for key in ("agent:a", "api"):
        counted = starts(manager, key)
        assert counted and sum(counted.values()) == 0, (key, counted)
    manager.engine.dispose()


def test_a_supervisor_giving_back_a_job_for_want_of_memory_spends_no_rate(
    database_url: str,
) -> None:
    """The real supervisor, in this process, with room for one job of the agent at a time by
    its recent peaks: of two claimed together, one is given back; each job starts once, and
    only those starts are counted."""
    manager = JobManager(database_url)
    manager.set_limit("agent:plain", rate="3/min")
    jobs = manager.create_jobs([agent_job(f"p{i}", "plain", value=i) for i in range(2)])
    config = SupervisorConfig(
        database_url=database_url,
        max_concurrent_jobs=2,
        poll_interval=0.1,
        check_interval=0.1,
        claim_ahead=False,
    )
    sup = Supervisor(config, agent_registry={"plain": acceptance_agents().plain})

    def memory(reserve: MemoryReserve, committed: int) -> Memory:
        return Memory(1 << 40, 150 * MiB, 0, committed)

    sup.admission = Admission(config.memory_reserve, memory)
    for n in range(20):  # the agent's recent peaks: 100 MiB
        sup.admission.peaks.add("plain", f"seed{n}", 1, datetime(2000, 1, 1), 100 * MiB)
    given_back: list[str] = []
    give = sup.recorder.give_back

    def counted(job: Job, why: str) -> None:
        given_back.append(why)
        give(job, why)

    sup.recorder.give_back = counted  # type: ignore[method-assign]
    runner = threading.Thread(target=sup.run)
    runner.start()
    try:
        for job in jobs:
            done = poll(lambda j=job: finished(manager, j.id), 30, f"job {job.name}")
            assert done.status is JobStatus.COMPLETED, done.error_message
    finally:
        sup.stop()
        sup.stop()
        runner.join(30)
        sup.manager.engine.dispose()
    assert not runner.is_alive()
    assert given_back and set(given_back) == {"no memory for it on this host now"}
    for job in jobs:
        assert [a.outcome for a in manager.get_attempts(job.id)] == ["completed"]
    assert sum(starts(manager, "agent:plain").values()) == 2
    manager.engine.dispose()
