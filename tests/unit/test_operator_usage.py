"""The `taiat` command's own help per command, and a command line that matches no usage told
in words: which option is missing, unknown, without its value or out of place."""

from __future__ import annotations

import pytest

from taiat.operator import cli, usage

DOC = cli.__doc__ or ""


def test_a_commands_help_is_its_usage_and_its_options() -> None:
    text = usage.help_for(DOC, ["jobs", "create", "--help"])
    assert text is not None and text.startswith("Usage:\n  taiat jobs create --type TYPE")
    assert "  taiat jobs create --file FILE" in text
    for option in ("--name NAME", "--depends-on ID", "--run-at TIME", "--file FILE", "-h --help"):
        assert f"\n  {option}" in text
    assert "taiat jobs list" not in text and "--status S" not in text and "--lease" not in text
    assert "ID is a job's id" in text
    graph = usage.help_for(DOC, ["graph", "abcdef12", "-h"])
    assert graph is not None and "-o FILE --output FILE" in graph and "--name" not in graph
    jobs = usage.help_for(DOC, ["jobs", "--help"])
    assert jobs is not None and "taiat jobs list" in jobs and "taiat graph" not in jobs
    assert usage.help_for(DOC, ["--help"]) is None  # the whole help, from docopt
    assert usage.help_for(DOC, ["jobs", "create", "--name", "x"]) is None


@pytest.mark.parametrize(
    ("words", "said"),
    [
        (["jobs", "create", "--type", "agent"], "jobs create: --name is required"),
        (["jobs", "create"], "jobs create: --type and --name are required"),
        (["jobs", "create", "--type"], "jobs create: --type needs a value (TYPE)"),
        (["cleanup"], "cleanup: --days is required"),
        (["graph"], "graph: a job ID is required"),
        (["wait", "--timeout", "3"], "wait: a job ID is required"),
        (["jobs", "show", "a", "b"], "jobs show: unexpected argument 'b'"),
        (["jobs", "list", "--name", "a", "--name", "b"], "jobs list: --name is given twice"),
        (
            ["jobs", "create", "--file", "f", "--name", "x"],
            "jobs create: --file cannot be used with --name",
        ),
        (
            ["jobs", "list", "--colour"],
            "jobs list: unknown option --colour: see `taiat jobs list --help`",
        ),
        (
            ["top", "--days", "3"],
            "top: --days is not an option of `taiat top`: see `taiat top --help`",
        ),
        (["jobs", "frobnicate"], None),
        (["frobnicate"], None),
    ],
)
def test_what_is_wrong_with_a_command_line(words: list[str], said: str | None) -> None:
    assert usage.problem(DOC, words) == said


def test_repeatable_options_and_arguments_are_no_problem() -> None:
    words = ["jobs", "create", "--type", "a", "--name", "x", "--depends-on", "a", "--depends-on"]
    assert usage.problem(DOC, [*words, "b"]) is None
    assert usage.problem(DOC, ["wait", "a", "b", "c"]) is None
    assert usage.command_of(DOC, ["jobs", "frobnicate"]) == "jobs"
