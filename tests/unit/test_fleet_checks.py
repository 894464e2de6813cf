"""The fleet test's checks on attempts: how many ran at once, and how many started in any one
second (tests/support.py); and the names of the simulated hosts (tests/fleet_hosts.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from fleet_hosts import IFNAMSIZ, names
from support import max_overlap, max_starts_in_window

T0 = datetime(2026, 1, 1, 12, 0, 0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def spans(*pairs: tuple[float, float]) -> list[tuple[datetime, datetime]]:
    return [(at(start), at(end)) for start, end in pairs]


def test_no_interval_means_none_at_once() -> None:
    assert max_overlap([]) == 0
    assert max_starts_in_window([]) == 0


def test_overlap_counts_the_intervals_open_together() -> None:
    assert max_overlap(spans((0, 1))) == 1
    assert max_overlap(spans((0, 2), (1, 3))) == 2
    assert max_overlap(spans((0, 10), (1, 2), (3, 4), (5, 6))) == 2
    assert max_overlap(spans((0, 10), (1, 9), (2, 8), (3, 4), (5, 6))) == 4


def test_one_ending_as_another_starts_is_not_an_overlap() -> None:
    assert max_overlap(spans((0, 1), (1, 2), (2, 3))) == 1
    # Given in any order.
    assert max_overlap(spans((2, 3), (0, 1), (1, 2))) == 1


def test_intervals_of_no_length_count_at_their_moment() -> None:
    assert max_overlap(spans((1, 1))) == 1
    assert max_overlap(spans((0, 2), (1, 1), (1, 1))) == 3


def test_an_interval_ending_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="before it starts"):
        max_overlap(spans((2, 1)))


def test_starts_are_counted_in_any_one_second_window_not_only_whole_seconds() -> None:
    # 5 in [0.5, 1.5): no whole second holds more than 3 of them.
    starts = [at(s) for s in (0.5, 0.7, 0.9, 1.1, 1.3, 2.6)]
    assert max_starts_in_window(starts) == 5
    assert max_starts_in_window(reversed(starts)) == 5


def test_a_start_one_window_after_another_falls_in_the_next_window() -> None:
    assert max_starts_in_window([at(0), at(1), at(2)]) == 1
    assert max_starts_in_window([at(0), at(0.999), at(1.998)]) == 2


def test_starts_at_one_moment_all_count() -> None:
    assert max_starts_in_window([at(3)] * 11) == 11


def test_the_window_can_be_longer() -> None:
    starts = [at(s) for s in range(10)]
    assert max_starts_in_window(starts, timedelta(seconds=60)) == 10
    assert max_starts_in_window(starts, timedelta(seconds=2.5)) == 3


def test_the_hosts_names_are_unique_per_run_and_short_enough_for_a_link() -> None:
    highest_pid = 4194304  # the kernel's pid_max at most
    made = [names(pid, i) for pid in (1, 77, highest_pid) for i in (1, 2, 3)]
    for name in made:
        assert len(name["host_end"]) <= IFNAMSIZ and len(name["namespace_end"]) <= IFNAMSIZ
    every = [value for name in made for value in name.values()]
    assert len(every) == len(set(every))
