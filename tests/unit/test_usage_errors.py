"""A command line docopt refuses is told in one line that names the word at fault, not in
docopt's internals (`found unmatched (duplicate?) arguments [Option(None, '--bogus', 0, True)]`)."""

from __future__ import annotations

import pytest

from taiat.cli.common import parse, usage_error
from taiat.cli.exits import EXIT_USAGE
from taiat.cli.init_command import INIT_USAGE
from taiat.cli.supervisor_command import SUPERVISOR_USAGE

SEE = "; see `taiat-supervisor --help`"


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["--bogus"], "unknown option --bogus"),
        (
            ["--max-concurent-jobs", "4"],
            "unknown option --max-concurent-jobs (did you mean --max-concurrent-jobs?)",
        ),
        (["--burst", "--databse-url=sqlite:///x.db"], "unknown option --databse-url"),
        (["-x"], "unknown option -x"),
        (["--lease"], "option --lease needs a value"),
        (["--memory-l"], "option --memory-limit needs a value"),  # a prefix, as docopt takes
        (
            ["--memory"],
            "option --memory is ambiguous: it could be --memory-limit, --memory-reserve",
        ),
        (["--no"], "option --no is ambiguous: it could be --no-listen, --no-fork-server,"),
        (["--lease=3", "--lease", "4"], "option --lease is given more than once"),
        (["--status", "--burst", "--status"], "option --status is given more than once"),
        (["burst"], "unexpected argument 'burst'"),
        (["postgresql://u:S3cretPW@h/db"], "unexpected argument 'postgresql://u:***@h/db'"),
    ],
)
def test_a_refused_command_line_is_named_in_one_line(words: list[str], message: str) -> None:
    said = usage_error(SUPERVISOR_USAGE, words)

    assert said.startswith(message) and said.endswith(SEE)
    assert "\n" not in said and "Option(" not in said and "S3cretPW" not in said


def test_a_repeatable_option_may_be_repeated_but_not_misspelt() -> None:
    assert parse(SUPERVISOR_USAGE, ["--path", "a", "--path", "b"])["--path"] == ["a", "b"]
    said = usage_error(SUPERVISOR_USAGE, ["--path", "a", "--path", "b", "--pth", "c"])
    assert said == f"unknown option --pth (did you mean --path?){SEE}"


def test_parse_prints_the_line_and_exits_with_the_usage_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(SUPERVISOR_USAGE, ["--max-concurent-jobs", "4"])

    assert exited.value.code == EXIT_USAGE
    assert capsys.readouterr().err == (
        f"error: unknown option --max-concurent-jobs (did you mean --max-concurrent-jobs?){SEE}\n"
    )


def test_the_init_command_names_itself_as_it_is_run() -> None:
    assert usage_error(INIT_USAGE, ["--bogus"]) == (
        "unknown option --bogus; see `python -m taiat.init_worker --help`"
    )
