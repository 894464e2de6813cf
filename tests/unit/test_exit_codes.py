"""The exit codes: what each error exits with, and the tables of docs/supervisor.md and
docs/cli.md, which name the codes of `taiat.cli.exits`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from taiat.cli import exits
from taiat.cli.common import exit_code_for
from taiat.errors import (
    ConfigurationError,
    DatabaseNotInitialised,
    DatabaseRefused,
    DatabaseUnavailable,
    InvalidDatabaseURL,
    TaiatError,
)
from taiat.operator.cli import exit_code_for as taiat_exit_code_for

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (DatabaseRefused('role "x" does not exist'), exits.EXIT_CONFIG),
        (DatabaseUnavailable("connection refused"), exits.EXIT_DB_UNAVAILABLE),
        (InvalidDatabaseURL("unsupported database URL scheme 'mysql'"), exits.EXIT_CONFIG),
        (ConfigurationError("bad"), exits.EXIT_CONFIG),
        (DatabaseNotInitialised(), exits.EXIT_DB_SCHEMA),
        (TaiatError("other"), exits.EXIT_FAILURE),
    ],
)
def test_each_error_exits_with_its_code(error: TaiatError, code: int) -> None:
    assert exit_code_for(error) == code
    assert taiat_exit_code_for(error) == code


def test_a_refused_database_is_still_an_outage_to_a_running_supervisor() -> None:
    # The supervisor waits out a DatabaseUnavailable; only a start exits 78 for it.
    assert issubclass(DatabaseRefused, DatabaseUnavailable)
    assert issubclass(DatabaseRefused, ConfigurationError)


def _codes(page: str) -> dict[int, str]:
    """The first two columns of the exit code table of a docs page: code -> second column."""
    text = (DOCS / page).read_text()
    rows = re.findall(r"^\| (\d+) \| ((?:[^|\\]|\\.)+) \|", text, flags=re.MULTILINE)
    return {int(code): second.strip() for code, second in rows}


def test_the_supervisor_page_names_the_codes_as_exits_does() -> None:
    table = _codes("supervisor.md")
    assert {getattr(exits, name.strip("`")) for name in table.values()} == set(table)
    assert all(getattr(exits, name.strip("`")) == code for code, name in table.items())
    assert set(table) == {0, 64, 65, 69, 78}


def test_the_cli_page_lists_every_code_the_taiat_command_uses() -> None:
    table = _codes("cli.md")
    assert set(table) <= {v for k, v in vars(exits).items() if k.startswith("EXIT_")}
    assert {0, 1, 64, 65, 66, 69, 75, 78} <= set(table)
    assert "database or role that does not exist" in table[78]
