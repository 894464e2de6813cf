"""What the command lines share: their docopt (docopt-ng) parsing, errors in words with their
exit codes (`taiat.cli.exits`), and logging."""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
from collections.abc import Sequence

from docopt import DocoptExit, docopt

from taiat.cli.exits import (
    EXIT_CONFIG,
    EXIT_DB_SCHEMA,
    EXIT_DB_UNAVAILABLE,
    EXIT_FAILURE,
    EXIT_USAGE,
)
from taiat.config import from_environment
from taiat.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseRefused,
    DatabaseUnavailable,
    TaiatError,
)
from taiat.store import db


def parse(usage: str, argv: Sequence[str] | None, version: str | None = None) -> dict:
    """docopt, with a bad command line turned into a one-line message and EXIT_USAGE."""
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        return docopt(usage, argv=words, version=version)
    except DocoptExit:
        print(f"error: {usage_error(usage, words)}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


#: An option in a usage text's Options section: its short name, long name and value.
_OPTION_LINE = re.compile(r"^ +(?:(-\w),? +)?(--[\w-]+)(?:[ =]([A-Z]+|<[^>]+>))?", re.M)


def usage_error(usage: str, words: Sequence[str]) -> str:
    """What is wrong with the command line `words` that docopt refused, in one line that names
    the word at fault (docopt's own message shows its internals: `found unmatched (duplicate?)
    arguments [Option(None, '--bogus', 0, True)]`). A value is echoed only where it is the
    fault, its password masked."""
    program = usage.split("Usage:", 1)[1].split()[0]
    see = f"see `{'python -m ' if '.' in program else ''}{program} --help`"
    options: dict[str, bool] = {}  # name -> takes a value
    for short, long, value in _OPTION_LINE.findall(usage.split("Options:", 1)[-1]):
        options[long] = bool(value)
        if short:
            options[short] = bool(value)
    given: list[str] = []
    wanting: str | None = None  # the option whose value comes next
    for word in words:
        if wanting is not None:
            wanting = None
            continue
        if word == "--":
            break
        if not word.startswith("-") or word == "-":
            return f"unexpected argument {db.mask_url(word)!r}; {see}"
        name, equals, _ = word.partition("=") if word.startswith("--") else (word[:2], "", "")
        # docopt takes any unique prefix of a long option.
        found = [o for o in options if o == name] or [
            o for o in options if name.startswith("--") and o.startswith(name)
        ]
        if not found:
            close = difflib.get_close_matches(name, [o for o in options if o[1] == "-"], 1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            return f"unknown option {name}{hint}; {see}"
        if len(found) > 1:
            return f"option {name} is ambiguous: it could be {', '.join(found)}; {see}"
        given.append(found[0])
        if options[found[0]] and not equals:
            wanting = found[0]
    if wanting is not None:
        return f"option {wanting} needs a value; {see}"
    for option in given:
        if given.count(option) > 1 and not re.search(rf"\[{option}\b[^\]\n]*\]\.\.\.", usage):
            return f"option {option} is given more than once; {see}"
    return f"these options do not go together: {' '.join(dict.fromkeys(given))}; {see}"


def exit_code_for(error: TaiatError) -> int:
    if isinstance(error, DatabaseRefused):  # reached, but no such database or role: a setting
        return EXIT_CONFIG
    if isinstance(error, DatabaseUnavailable):
        return EXIT_DB_UNAVAILABLE
    if isinstance(error, DatabaseError):
        return EXIT_DB_SCHEMA
    if isinstance(error, ConfigurationError):
        return EXIT_CONFIG
    return EXIT_FAILURE


def fail(error: TaiatError) -> int:
    print(f"error: {db.mask_url(str(error))}", file=sys.stderr)
    return exit_code_for(error)


def import_path(given: Sequence[str] | None = None) -> list[str]:
    """The folders that agent modules and query engines are imported from before any other,
    absolute: the `--path` options `given`, else `TAIAT_PATH` (folders separated by colons),
    else the working directory (as `python -m` and `rq worker` do). ConfigurationError for a
    folder that does not exist."""
    where = "--path"
    folders = [folder for folder in given or () if folder]
    if not folders:
        where = "TAIAT_PATH"
        folders = [f for f in (from_environment("TAIAT_PATH") or "").split(os.pathsep) if f]
    if not folders:
        return [os.getcwd()]
    for folder in folders:
        if not os.path.isdir(folder):
            raise ConfigurationError(f"{where}: {folder} is not a directory")
    return [os.path.abspath(folder) for folder in folders]


def put_first_on_path(folders: Sequence[str]) -> None:
    """Put `folders` first on this process's import path, in their order. The fork server
    takes the supervisor's import path when it starts, and every job's process inherits it."""
    sys.path[:] = [*folders, *(entry for entry in sys.path if entry not in folders)]


def quiet_log_level() -> str:
    """The log level of the commands that only say what they did (`init`, `taiat`):
    TAIAT_LOG_LEVEL, else WARNING."""
    return (from_environment("TAIAT_LOG_LEVEL") or "WARNING").upper()


def setup_logging(level: str) -> None:
    # journald stamps each line itself.
    stamp = "" if from_environment("JOURNAL_STREAM") else "%(asctime)s "
    logging.basicConfig(
        level=level, format=f"{stamp}%(levelname)s %(name)s: %(message)s", force=True
    )
