"""How the `taiat` command shows things: tables sized to the terminal, statuses in colour,
durations and sizes in words, and the same records as JSON for scripts."""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from taiat.jobs import Attempt, Job, JobHistoryEntry

#: Each status's colour, in tables, trees and graph pictures alike.
STATUS_STYLES = {
    "pending": "yellow",
    "running": "cyan",
    "completed": "green",
    "failed": "red",
    "cancelled": "magenta",
}

#: Between two columns of a table: padding and the (blank) rule.
_GAP = 3
#: A last column is never squeezed below this.
_NARROWEST = 8

#: Off a terminal, lines are as long as their content: ids and errors stay whole for grep.
_UNLIMITED_WIDTH = 10_000


def console(file: TextIO | None = None) -> Console:
    """A console on `file` (stdout): the terminal's width on a terminal; off one, `COLUMNS`
    if set, else unlimited, and no colour."""
    out = file or sys.stdout
    if out.isatty():
        return Console(file=out)
    columns = os.environ.get("COLUMNS", "")
    width = int(columns) if columns.isdigit() else _UNLIMITED_WIDTH
    return Console(file=out, width=width, no_color=True, highlight=False, soft_wrap=False)


def status_text(status: Any) -> Text:
    value = getattr(status, "value", status)
    return Text(str(value), style=STATUS_STYLES.get(str(value), ""))


def duration(seconds: float | None) -> str:
    """'850 ms', '12.3 s', '4 m 05 s', '2 h 03 m', '3 d 04 h'; '-' for None."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} m {whole % 60:02d} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60:02d} m"
    return f"{whole // 86400} d {whole % 86400 // 3600:02d} h"


def size(count: float | None) -> str:
    """Bytes in binary units: '512 B', '12.0 MiB'; '-' for None."""
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def when(moment: datetime | None) -> str:
    """A naive UTC time from the database, to the second."""
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}"


def first_line(text: str | None, limit: int | None = None) -> str:
    """The first line of `text`, whole (a table cuts it to the terminal's width; off a
    terminal lines stay whole), or cut to `limit` characters with "…"."""
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if limit is None or len(line) <= limit else line[: limit - 1] + "…"


def tries(job: Job) -> int:
    """How many of its allowed attempts the job has used: the failed ones it was retried after,
    and the one it is running or ended with. A job that never ran has used none (a cancelled
    one that never started, a pending one); a query waiting on its plan is in its attempt."""
    if job.status.value in ("running", "completed", "failed"):
        ran = True
    elif job.status.value == "cancelled":
        ran = job.started_at is not None
    else:
        ran = "plan" in job.payload
    return job.retry_count + int(ran)


def tries_text(job: Job) -> str:
    """The TRY column: attempts used of those allowed, `0/4` for a job that never ran."""
    return f"{tries(job)}/{job.max_retries + 1}"


def runs(job: Job | JobHistoryEntry, attempts: Iterable[Attempt]) -> list[Attempt]:
    """Those of the job's `attempts` made up to the state `job` shows: a history entry of a job
    retried since does not take the attempts made after it (attempts are numbered by claim)."""
    return [attempt for attempt in attempts if attempt.attempt <= job.claim_seq]


def took(
    job: Job | JobHistoryEntry, attempts: Iterable[Attempt] = (), now: datetime | None = None
) -> float | None:
    """How long the job ran, as `taiat history` and `taiat graph` both show it: the wall time
    of its `attempts` (see `runs`), as the supervisor measured each child, plus, while it is
    running, the time since its claim until `now` (the database's clock). Without any attempt
    recorded, the time from its claim to its end; None when it never started."""
    done = runs(job, attempts)
    seconds = sum(attempt.wall_seconds or 0.0 for attempt in done)
    if job.status.value == "running" and job.started_at is not None and now is not None:
        return seconds + max((now - job.started_at).total_seconds(), 0.0)
    if done:
        return seconds
    if job.started_at is None or job.completed_at is None:
        return None
    return max((job.completed_at - job.started_at).total_seconds(), 0.0)


def table(
    *columns: str,
    rows: Iterable[Sequence[Any]] = (),
    title: str | None = None,
    wrap: bool = False,
    width: int | None = None,
) -> Table:
    """A plain table: a header line, no borders. Every column but the last is as wide as its
    widest cell; the last takes what is left of `width` (the terminal's), cut short with "…"
    (or wrapped, if `wrap`)."""
    cells = [[cell if isinstance(cell, Text) else Text(str(cell)) for cell in row] for row in rows]
    grid = Table(
        title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title_justify="left"
    )
    used = 0
    for index, name in enumerate(columns):
        if index == len(columns) - 1:
            room = None if width is None else max(width - used, _NARROWEST)
            grid.add_column(
                name, no_wrap=not wrap, overflow="fold" if wrap else "ellipsis", max_width=room
            )
        else:
            widest = max([len(name), *(row[index].cell_len for row in cells)])
            grid.add_column(name, no_wrap=True, min_width=widest)
            used += widest + _GAP
    for row in cells:
        grid.add_row(*row)
    return grid


def show(out: Console, *renderables: Any) -> None:
    """Print; off a terminal without the padding that ends each line of a table."""
    if out.is_terminal:
        for renderable in renderables:
            out.print(renderable)
        return
    with out.capture() as captured:
        for renderable in renderables:
            out.print(renderable)
    lines = [line.rstrip() for line in captured.get().splitlines()]
    out.file.write("\n".join(lines) + "\n")
    out.file.flush()


def print_rows(
    out: Console, columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None
) -> None:
    show(out, table(*columns, rows=rows, title=title, width=out.width))


# -- JSON ----------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):  # a job's output: text, its bytes that are not UTF-8 as U+FFFD
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return value


def print_json(value: Any, file: TextIO | None = None) -> None:
    """`value` as indented JSON: dataclasses as objects, times in ISO 8601 (naive UTC)."""
    out = file or sys.stdout
    out.write(json.dumps(_plain(value), indent=2, sort_keys=False) + "\n")


def job_record(job: Job) -> dict[str, Any]:
    return _plain(job)


def attempt_record(attempt: Attempt) -> dict[str, Any]:
    """An attempt as JSON, with its output's tails as text."""
    return _plain(attempt)


def record(value: Any) -> Any:
    """Any record as JSON: dataclasses as objects, times in ISO 8601, bytes as text."""
    return _plain(value)
