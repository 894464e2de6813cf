"""The wait before a failed job is tried again: it doubles with each attempt, jittered, up to
its ceiling."""

from __future__ import annotations

from taiat.store.state_machine import RetryPolicy


def test_backoff_is_bounded_by_its_ceiling() -> None:
    policy = RetryPolicy(base_delay=2.0, max_delay=5.0)
    assert all(1.0 <= policy.delay(0) <= 2.0 for _ in range(100))
    assert all(2.5 <= policy.delay(10) <= 5.0 for _ in range(100))


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=10.0)
    for attempt, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0), (50, 10.0)]:
        delays = [policy.delay(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered
