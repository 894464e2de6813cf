"""How `taiat jobs logs` and `jobs show` put a run's output in words: each run under a line
that says how it ended (or that it runs, and as of when), each stream under a line that says
how much of it there is; and, following a run, only what is new each time, a character split
between two looks shown whole."""

from __future__ import annotations

import io
from datetime import datetime

from support import sample_job

from taiat.jobs import Attempt, AttemptOutput, JobStatus
from taiat.operator import logs
from taiat.operator.lookups import Run

WHEN = datetime(2026, 12, 7, 14, 2, 10)


def _output(stdout: bytes = b"", dropped: int = 0, stderr: bytes = b"", final: bool = True):
    return AttemptOutput("j1", 2, stdout, dropped, stderr, 0, WHEN, final)


def _ended(outcome: str = "completed", **figures: object) -> Attempt:
    return Attempt("j1", 2, outcome=outcome, ended_at=WHEN, **figures)  # type: ignore[arg-type]


def test_an_ended_run_says_how_it_ended_and_how_much_each_stream_holds() -> None:
    job = sample_job(status=JobStatus.FAILED, claim_seq=2)
    run = Run(2, _ended("failed", exit_code=1), _output(b"x" * 6 + b"tail\n", 1000, b"warn"))
    assert logs.run_text(job, run) == (
        "== attempt 2: failed, exit code 1, ended 2026-12-07 14:02:10 UTC ==\n"
        "--- stdout: the last 11 of 1011 bytes (1000 dropped) ---\n"
        "xxxxxxtail\n"
        "--- stderr: 4 bytes ---\n"
        "warn\n"
    )
    silent = Run(2, _ended("crashed", exit_signal=9), None)
    assert logs.run_text(job, silent) == (
        "== attempt 2: crashed, signal 9, ended 2026-12-07 14:02:10 UTC ==\n"
        "(nothing written to stdout or stderr)\n"
    )


def test_a_running_run_and_one_whose_end_came_without_its_output() -> None:
    running = sample_job(status=JobStatus.RUNNING, claim_seq=2)
    live = _output(b"so far\n", final=False)
    assert logs.heading(running, Run(2, None, live)) == (
        "== attempt 2: running, output as of 2026-12-07 14:02:10 UTC =="
    )
    lost = Run(2, _ended("lost"), live)
    assert logs.heading(running, lost) == (
        "== attempt 2: lost, ended 2026-12-07 14:02:10 UTC, output as of 2026-12-07 14:02:10 "
        "UTC, before its end =="
    )


def test_show_keeps_the_last_lines_and_says_where_the_rest_is() -> None:
    job = sample_job(status=JobStatus.COMPLETED, claim_seq=2)
    lines = b"".join(f"line {n}\n".encode() for n in range(1, 31))
    text = logs.run_text(job, Run(2, _ended(), _output(lines)), max_lines=3)
    assert (
        "[27 lines before these: taiat jobs logs j1 --attempt 2]\nline 28\nline 29\nline 30\n"
        in (text)
    )
    assert "line 27\n" not in text


def test_following_prints_only_what_is_new_and_says_what_was_dropped() -> None:
    job = sample_job(status=JobStatus.RUNNING, claim_seq=2)
    out = io.StringIO()
    printer = logs._Printer(out)
    printer.begin(job, Run(2, None, None))
    euro = "€".encode()
    printer.show(_output(b"one\n" + euro[:1], final=False))
    printer.show(_output(b"one\n" + euro + b"\n", final=False))  # the character, whole
    printer.show(_output(b"one\n" + euro + b"\n", stderr=b"oops\n", final=False))
    printer.show(_output(b"ten\n", 20, b"oops\n", final=False))  # 12 bytes gone unseen
    printer.end(_ended())
    assert out.getvalue() == (
        "== attempt 2: running ==\n"
        "--- stdout ---\n"
        "one\n€\n"
        "--- stderr ---\n"
        "oops\n"
        "--- stdout ---\n"
        "[12 bytes dropped]\n"
        "ten\n"
        "== attempt 2 ended: completed, ended 2026-12-07 14:02:10 UTC ==\n"
    )
