"""Creating jobs in bulk: what is stored is what was given and what `create_jobs` returned, on
both databases, however many jobs a batch holds (PostgreSQL takes a batch of
`queries.COPY_FROM_ROWS` jobs or more by COPY, in lines of its text format made from the
checked values; a smaller one by INSERT), with text that the format escapes in every column
that takes text."""

from __future__ import annotations

from datetime import datetime

import pytest

from taiat import JobManager, JobStatus
from taiat.store import queries

#: Text that COPY's text format escapes or could mistake: a tab, line ends, backslashes (one
#: before an `N`, as in its NULL, and one at the end), a lone period line, and non-ASCII.
AWKWARD = "a\tb\nc\rd \\N e\\ \\.\n.\n été ✓ \\"


def awkward_batch(count: int) -> list[dict]:
    first = {
        "id": f"first {AWKWARD}",
        "job_type": "agent",
        "name": f"n {AWKWARD}",
        "description": AWKWARD,
        "payload": {"agent_name": f"agent {AWKWARD}", "text": AWKWARD, AWKWARD: [1.5, None]},
        "max_retries": 0,
        "priority": -(2**31),
        "timeout_seconds": 0.25,
        "run_at": datetime(2030, 1, 2, 3, 4, 5, 678901),
        "queue": "q.1-x_y",
        "limit_keys": ["tenant:a/b", "x.y-z"],
    }
    second = {
        "job_type": "agent",
        "name": "second",
        "payload": {"agent_name": "noop"},
        "dependencies": [first["id"]],
    }
    goal = {"inferred_goal_output": "x"}
    plain = [
        {"job_type": "query", "name": f"plain {n}", "payload": {**goal, "n": n}}
        for n in range(count - 2)
    ]
    return [first, second, *plain]


@pytest.mark.parametrize("count", [3, queries.COPY_FROM_ROWS + 1])
def test_what_is_stored_is_what_was_given_and_returned(manager: JobManager, count: int) -> None:
    items = awkward_batch(count)
    created = manager.create_jobs(items)
    assert len(created) == count
    for job, item in zip(created, items, strict=True):
        assert manager.get_job(job.id) == job  # returned as stored
        for key in ("name", "description", "payload", "max_retries", "priority", "queue"):
            if key in item:
                assert getattr(job, key) == item[key], key
        assert job.status is JobStatus.PENDING and job.retry_count == 0 and job.claim_seq == 0
        assert job.created_at == job.updated_at
        assert job.run_at == item.get("run_at", job.created_at)
    first, second = created[:2]
    assert first.id == items[0]["id"] and first.timeout_seconds == 0.25
    assert second.dependencies == [first.id] and second.unmet_dependencies == 1
    assert first.unmet_dependencies == 0 and created[-1].job_type.value == "query"
    assert len({job.id for job in created}) == count
    assert len(manager.list_jobs(limit=count + 1)) == count


def test_the_jobs_take_their_limit_keys_and_agents(manager: JobManager) -> None:
    """What the claim's limits read, stored as given: the explicit limit keys and an agent
    job's agent."""
    count = queries.COPY_FROM_ROWS
    manager.create_jobs(awkward_batch(count))
    with manager.transaction() as conn:
        rows = conn.execute(
            queries.select(queries.jobs.c.name, queries.jobs.c.agent, queries.jobs.c.limit_keys)
        ).all()
    stored = {row.name: (row.agent, row.limit_keys) for row in rows}
    assert stored[f"n {AWKWARD}"] == (f"agent {AWKWARD}", ["tenant:a/b", "x.y-z"])
    assert stored["second"] == ("noop", [])
    assert stored["plain 0"] == (None, [])
