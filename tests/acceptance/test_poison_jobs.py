"""Poison jobs: everything that comes from a job (its payload's limits, its result, its error
text, the bytes on its result pipe) is untrusted. Whatever it holds ends that job alone, failed
with the reason in words; the jobs claimed with it complete, and a burst supervisor exits 0."""

from __future__ import annotations

from typing import Any

from conftest import Supervisor, wait_until
from support import agent_job

from taiat import JobManager, JobStatus
from taiat.errors import InvalidJob
from taiat.jobs import Job

ESCAPED = "report-\\udcff.txt"  # the file name `agents.undecodable` makes, as stored


def poison(manager: JobManager, name: str, agent: str, **create: Any) -> Job:
    payload = {**agent_job(name, agent)["payload"], **create.pop("payload", {})}
    return manager.create_job("agent", name, payload=payload, max_retries=0, **create)


def innocents(manager: JobManager, count: int = 4) -> list[Job]:
    return [
        manager.create_job(**agent_job(f"innocent {i}", "plain", value=i)) for i in range(count)
    ]


def burst(supervisor: Any) -> Supervisor:
    # Few slots, claimed ahead: every poison job is claimed in a batch with innocent ones.
    return supervisor("--burst", "--max-concurrent-jobs", "2")


def ended(manager: JobManager, sup: Supervisor, jobs: list[Job]) -> dict[str, Job]:
    code = sup.wait(120)
    assert code == 0, f"the supervisor exited {code}:\n{sup.log()}"
    found = {job.id: manager.get_job(job.id) for job in jobs}
    assert all(job.status.finished for job in found.values()), sup.log()
    return found


def test_a_jobs_limits_from_its_payload_cannot_crash_the_supervisor(
    manager: JobManager, supervisor: Any, tmp_path: Any
) -> None:
    huge_int = poison(manager, "10**400 MB", "plain", payload={"memory_limit_mb": 10**400})
    huge_float = poison(manager, "1e308 MB", "plain", payload={"memory_limit_mb": 1e308})
    pid_file = tmp_path / "sleep.pid"
    never = poison(
        manager,
        "no timeout",
        "sleep",
        timeout_seconds=1e12,
        payload={"parameters": {"pid_file": str(pid_file)}},
    )
    try:  # SQLite takes such a name; PostgreSQL refuses it
        unknown = [poison(manager, "surrogate", "no\udcffop")]
    except InvalidJob:
        unknown = []
    others = innocents(manager)
    sup = burst(supervisor)

    def shown_with_its_deadline() -> bool:
        running = {r["job_id"]: r for r in sup.status().get("running", [])}
        return (running.get(never.id) or {}).get("deadline") == "9999-12-31T23:59:59.999+00:00"

    wait_until(shown_with_its_deadline, 60, "the job without timeout shown running", watch=sup)
    manager.cancel_job(never.id)

    found = ended(manager, sup, [huge_int, huge_float, never, *others])
    for job in (huge_int, huge_float, *others):  # a limit beyond any machine's is none
        assert found[job.id].status is JobStatus.COMPLETED
    assert found[never.id].status is JobStatus.CANCELLED
    for job in unknown:  # no supervisor has its agent: left pending, never claimed
        assert manager.get_job(job.id).status is JobStatus.PENDING
        assert manager.get_attempts(job.id) == []


def test_results_and_errors_that_cannot_be_stored_as_they_are_end_their_jobs_alone(
    manager: JobManager, supervisor: Any
) -> None:
    result = poison(manager, "undecodable result", "undecodable")
    error = poison(
        manager, "undecodable error", "undecodable", payload={"parameters": {"where": "error"}}
    )
    deep = [
        poison(manager, f"{levels} deep", "deep", payload={"parameters": {"levels": levels}})
        for levels in (600, 985, 100_000)
    ]
    others = innocents(manager)
    sup = burst(supervisor)

    found = ended(manager, sup, [result, error, *deep, *others])
    for job in others:
        assert found[job.id].status is JobStatus.COMPLETED
    assert found[result.id].status is JobStatus.COMPLETED
    assert found[result.id].result == {
        "files": [ESCAPED, "nul\\0byte"],
        ESCAPED: {"nested": [ESCAPED]},
    }

    # Its failure is recorded, once: not run again and again unrecorded.
    failed = found[error.id]
    assert failed.status is JobStatus.FAILED
    assert failed.error_message.startswith(f"ValueError: bad file name {ESCAPED}\n")
    [attempt] = manager.get_attempts(error.id)
    assert attempt.outcome == "failed" and attempt.error_message == failed.error_message

    for job in deep:  # too deep for the child to send, or for the supervisor to store
        message = found[job.id].error_message
        assert found[job.id].status is JobStatus.FAILED, message
        assert "nested too deep" in message, message
        assert len(manager.get_attempts(job.id)) == 1
    # Counted as they were recorded: a result that could not be stored is a failure.
    counters = sup.settled_counters()
    assert (counters["completed"], counters["failed"]) == (len(others) + 1, 1 + len(deep))


def test_whatever_a_child_writes_on_its_result_pipe_is_judged(
    manager: JobManager, supervisor: Any
) -> None:
    bodies = {
        "[1, 2, 3]": "it is a JSON array, not an object",
        '"hello"': "it is a JSON string, not an object",
        "[" * 100_000: "it is nested too deep to be read",
    }
    writers = [
        (
            poison(
                manager, f"writes {body[:9]}", "pipe_writer", payload={"parameters": {"body": body}}
            ),
            why,
        )
        for body, why in bodies.items()
    ]
    others = innocents(manager)
    sup = burst(supervisor)

    found = ended(manager, sup, [job for job, _ in writers] + others)
    for job in others:
        assert found[job.id].status is JobStatus.COMPLETED
    for job, why in writers:
        assert found[job.id].status is JobStatus.FAILED
        assert found[job.id].error_message == f"the child sent a malformed result: {why}"
        [attempt] = manager.get_attempts(job.id)
        assert attempt.outcome == "failed"
