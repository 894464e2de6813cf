"""A job sealed for its child, with its dependencies' results: by marshal when that keeps every
value exactly, else by pickle; it opens to the same job and results."""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction
from zoneinfo import ZoneInfo

from support import sample_job

from taiat.forking import wire
from taiat.jobs import JobStatus, JobType


def test_a_sealed_job_opens_to_the_same_job_and_results() -> None:
    job = sample_job()
    results = {"a": {"answer": 42}, "b": [None, "x"]}
    sealed = wire.seal(job, results)
    assert sealed[:1] == b"m"  # JSON values travel by marshal
    opened, opened_results = wire.unseal(sealed)
    assert (opened, opened_results) == (job, results)
    assert opened.job_type is JobType.QUERY and opened.status is JobStatus.RUNNING
    assert opened.created_at.tzinfo is UTC and opened.started_at.tzinfo is None
    assert opened.attempt == job.attempt and wire.unseal(wire.seal(job, None))[1] is None


def test_a_value_marshal_cannot_carry_is_sealed_by_pickle() -> None:
    job = sample_job(result=Fraction(1, 3))
    sealed = wire.seal(job, {"a": {1, 2}})
    assert sealed[:1] == b"p"
    assert wire.unseal(sealed) == (job, {"a": {1, 2}})


def test_what_marshal_would_not_keep_exactly_goes_by_pickle() -> None:
    zoned = sample_job(created_at=datetime(2026, 1, 2, 3, 4, tzinfo=ZoneInfo("Europe/Paris")))
    odd_result = sample_job(result={"when": datetime(2026, 1, 2), "status": JobStatus.FAILED})
    for job in (zoned, odd_result):
        sealed = wire.seal(job, None)
        assert sealed[:1] == b"p"
        assert wire.unseal(sealed) == (job, None)
    assert wire.unseal(wire.seal(zoned, None))[0].created_at.tzinfo == ZoneInfo("Europe/Paris")
    status = wire.unseal(wire.seal(odd_result, None))[0].result["status"]
    assert status is JobStatus.FAILED
