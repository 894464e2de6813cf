"""The example's usage text, as docopt and a reader see it."""

from __future__ import annotations

from taiat.example_usage import RESULT_WIDTH, USAGE, shortened


def test_the_options_block_holds_only_options_and_the_query_is_told_below() -> None:
    options, after = USAGE.split("Options:\n", 1)[1].split("\n\n", 1)
    lines = options.splitlines()
    assert all(line.startswith("  -") for line in lines), lines
    assert [line.split()[0] for line in lines] == ["--database-url", "--run", "-h"]
    assert after.startswith('The query job asks for "sample_report"')


def test_a_result_too_long_for_its_line_is_cut_with_an_ellipsis() -> None:
    assert shortened("x" * RESULT_WIDTH) == "x" * RESULT_WIDTH  # it fits: whole
    cut = shortened('{"numbers": [' + "12.34, " * 40 + "5.6]}")
    assert len(cut) == RESULT_WIDTH and cut.endswith("…") and cut.startswith('{"numbers": [12.34')
