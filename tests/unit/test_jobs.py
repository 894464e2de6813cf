"""A `Job` in its other forms: as plain values (how it travels by marshal) and back, and built
from a database row, whole or partial."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from support import sample_job

from taiat.jobs import Job, JobStatus, JobType


def test_plain_values_keep_every_field() -> None:
    job = sample_job(run_at=datetime(2027, 5, 6, tzinfo=UTC), worker_id="w", retry_count=2)
    plain = job.to_plain()
    assert all(type(v) in (str, int, float, list, dict, type(None)) for v in plain)
    assert Job.from_plain(plain) == job
    with pytest.raises(ValueError):
        Job.from_plain(plain[:-1])


def test_a_job_from_a_whole_row_is_the_job_its_fields_make() -> None:
    """A whole row skips the frozen `__init__`; a partial one gets the fields' defaults."""
    job = sample_job(payload={"k": 1}, dependencies=["a"], worker_id="w", claim_seq=3)
    row = {**vars(job), "job_type": "query", "status": "running", "not_a_field": 1}
    built = Job.from_row(row)
    assert built == job and vars(built) == vars(job)
    assert built.job_type is JobType.QUERY and built.status is JobStatus.RUNNING
    with pytest.raises(AttributeError):
        built.name = "changed"  # type: ignore[misc]
    partial = Job.from_row({"id": "p", "job_type": "query", "name": "n", "status": "pending"})
    assert partial == Job("p", JobType.QUERY, "n", JobStatus.PENDING)
    assert partial.payload == {} and partial.claim_seq == 0
    with pytest.raises(ValueError, match="is not a valid JobStatus"):
        Job.from_row({**row, "status": "bogus"})
