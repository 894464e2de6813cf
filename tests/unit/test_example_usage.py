"""The example's usage text, as docopt and a reader see it."""

from __future__ import annotations

from taiat.example_usage import USAGE


def test_the_options_block_holds_only_options_and_the_query_is_told_below() -> None:
    options, after = USAGE.split("Options:\n", 1)[1].split("\n\n", 1)
    lines = options.splitlines()
    assert all(line.startswith("  -") for line in lines), lines
    assert [line.split()[0] for line in lines] == ["--database-url", "--run", "-h"]
    assert after.startswith('The query job asks for "sample_report"')
