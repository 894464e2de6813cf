"""How many jobs the supervisor claims ahead of its free slots, and for how long it holds them."""

from __future__ import annotations

from datetime import datetime

from taiat.jobs import Job, JobStatus, JobType
from taiat.supervisor.claim_ahead import WRITE_DELAY, ClaimAhead


def job(job_id: str) -> Job:
    now = datetime(2026, 1, 1)
    return Job(
        id=job_id,
        job_type=JobType.AGENT,
        name=job_id,
        status=JobStatus.RUNNING,
        created_at=now,
        updated_at=now,
        claim_seq=1,
    )


def test_nothing_is_held_until_short_jobs_have_been_seen() -> None:
    ahead = ClaimAhead(slots=2, short=0.05)
    assert ahead.wanted(running=0) == 2 and ahead.depth == 0
    ahead.observe(0.2)
    assert ahead.depth == 0  # long jobs: claim only for free slots
    for _ in range(20):
        ahead.observe(0.04)
    assert ahead.typical is not None and ahead.typical < 0.05
    assert ahead.depth == 4  # short, but not so short that one slot's 100 ms holds three
    assert ahead.wanted(running=2) == 4  # both slots busy: two ahead for each
    ahead.put([job("a")], {"a": {"dep": 1}})
    assert ahead.wanted(running=2) == 3


def test_the_shorter_the_jobs_the_more_are_held_up_to_a_bound() -> None:
    for typical, per_slot in [(0.04, 2), (0.03, 3), (0.02, 5), (0.01, 10), (0.005, 16), (0.0, 16)]:
        ahead = ClaimAhead(slots=2)
        ahead.observe(typical)
        assert ahead.depth == 2 * per_slot, typical


def test_endings_wait_to_be_written_only_while_every_slot_has_a_job_held() -> None:
    ahead = ClaimAhead(slots=2)
    ahead.observe(0.001)
    ahead.put([job("a"), job("b")], {})
    assert not ahead.may_wait(None, 10.0)  # two held for two slots: write and claim now
    ahead.put([job("c")], {})
    assert ahead.may_wait(None, 10.0)
    assert ahead.may_wait(10.0 - WRITE_DELAY / 2, 10.0)
    assert not ahead.may_wait(10.0 - WRITE_DELAY, 10.0)  # an ending has waited long enough


def test_claiming_ahead_can_be_off() -> None:
    ahead = ClaimAhead(slots=3, enabled=False)
    ahead.observe(0.001)
    assert ahead.depth == 0 and ahead.wanted(running=1) == 2


def test_held_jobs_start_first_claimed_first_and_carry_their_results() -> None:
    ahead = ClaimAhead(slots=2)
    ahead.put([job("a"), job("b"), job("c")], {"b": {"x": 1}})
    first, second = ahead.take(2)
    assert (first.job.id, second.job.id) == ("a", "b")
    assert first.dependency_results is None and second.dependency_results == {"x": 1}
    assert [held.job.id for held in ahead.take(5)] == ["c"]
    assert ahead.take(1) == []


def test_jobs_held_too_long_are_taken_out_and_holding_stops_until_a_job_ends() -> None:
    ahead = ClaimAhead(slots=1, max_wait=0.5)
    ahead.observe(0.04)
    ahead.put([job("a"), job("b")], {})
    since = ahead.held[0].since
    assert ahead.next_expiry == since + 0.5
    assert ahead.expired(since + 0.4) == []
    assert [j.id for j in ahead.expired(since + 0.5)] == ["a", "b"]
    assert ahead.depth == 0 and ahead.typical is None and ahead.next_expiry is None
    ahead.observe(0.04)
    assert ahead.depth == 2


def test_dropping_and_releasing() -> None:
    ahead = ClaimAhead(slots=2)
    ahead.put([job("a"), job("b"), job("c")], {})
    assert [j.id for j in ahead.drop({"b", "zz"})] == ["b"]
    assert [held.job.id for held in ahead.held] == ["a", "c"]
    assert [j.id for j in ahead.release()] == ["a", "c"]
    assert len(ahead) == 0
