"""`taiat jobs logs ID [--attempt N] [--follow | --json]`: what a job's runs wrote to stdout
and stderr (the tails its supervisor keeps, `--log-tail-bytes` of each), run by run; with
`--follow`, a running attempt's output as it grows, until the attempt ends.

A running attempt's output is read from the database, where its supervisor writes it every 2
seconds while it grows; its end writes the rest with the attempt. So `--follow` polls the
database, as every reader of the job manager can (another host, no access to the supervisor),
and is at most a few seconds behind.
"""

from __future__ import annotations

import codecs
import sys
import time
from typing import TextIO

from taiat.cli.exits import EXIT_OK
from taiat.errors import JobNotFound
from taiat.job_manager import JobManager
from taiat.jobs import Attempt, AttemptOutput, Job, JobStatus
from taiat.operator import lookups, render
from taiat.operator.options import job_id, manager, number
from taiat.store.validation import INTEGER_RANGE

STREAMS = ("stdout", "stderr")
#: Seconds between looks at a followed attempt.
FOLLOW_INTERVAL = 0.5


def logs_command(args: dict) -> int:
    wanted = job_id(args)
    attempt = number(args, "--attempt", int, None, 1, INTEGER_RANGE[1])
    jm = manager(args)
    if args["--follow"]:
        return follow(jm, wanted, attempt, sys.stdout)
    job, runs = lookups.runs(jm, wanted, attempt)
    if job is None:
        raise JobNotFound(f"no job has id {wanted}")
    if attempt is not None and not runs:
        raise JobNotFound(f"job {wanted} has no attempt {attempt}")
    if args["--json"]:
        render.print_json([run_record(job, run) for run in runs])
        return EXIT_OK
    out = sys.stdout
    if not runs:
        out.write(f"job {wanted} ({job.name}) has not run yet\n")
    for run in runs:
        out.write(run_text(job, run))
    return EXIT_OK


def run_record(job: Job, run: lookups.Run) -> dict[str, object]:
    """A run as JSON: its number, how it ended (None while it runs), and its output with the
    tails as text."""
    return {
        "attempt": run.number,
        "outcome": None if run.attempt is None else run.attempt.outcome,
        "running": run.attempt is None and running(job, run.number),
        "output": None if run.output is None else render.record(run.output),
    }


# -- a run's text --------------------------------------------------------------------------


def heading(job: Job, run: lookups.Run) -> str:
    """The line above a run's output: how it ended, or that it runs."""
    attempt = run.attempt
    as_of = ""
    if run.output is not None and not run.output.final and run.output.updated_at is not None:
        as_of = f", output as of {render.when(run.output.updated_at)} UTC"
    if attempt is not None:
        # An end recorded without its output (its supervisor was lost): what was written of it
        # while it ran.
        before = f"{as_of}, before its end" if as_of else ""
        return f"== attempt {run.number}: {ended_words(attempt)}{before} =="
    if running(job, run.number):
        return f"== attempt {run.number}: running{as_of} =="
    return f"== attempt {run.number}: its end is not recorded{as_of} =="


def ended_words(attempt: Attempt) -> str:
    words = str(attempt.outcome or "ended")
    if attempt.exit_signal is not None:
        words += f", signal {attempt.exit_signal}"
    elif attempt.exit_code is not None:
        words += f", exit code {attempt.exit_code}"
    if attempt.ended_at is not None:
        words += f", ended {render.when(attempt.ended_at)} UTC"
    return words


def running(job: Job, number: int) -> bool:
    """Whether run `number` of the job is the one running now."""
    return job.status == JobStatus.RUNNING and job.claim_seq == number


def stream_parts(output: AttemptOutput | None, stream: str) -> tuple[bytes, int]:
    """A stream's kept bytes and the bytes dropped before them."""
    if output is None:
        return b"", 0
    return getattr(output, f"{stream}_tail"), getattr(output, f"{stream}_dropped_bytes")


def stream_heading(stream: str, tail: bytes, dropped: int) -> str:
    """'--- stdout: 12 bytes ---', or, when the start was dropped, '--- stdout: the last
    65536 of 104857600 bytes (104792064 dropped) ---'; '--- stdout: nothing ---'."""
    if not tail and not dropped:
        return f"--- {stream}: nothing ---"
    if not dropped:
        return f"--- {stream}: {len(tail)} bytes ---"
    total = dropped + len(tail)
    return f"--- {stream}: the last {len(tail)} of {total} bytes ({dropped} dropped) ---"


def text_of(data: bytes) -> str:
    """Output as text, ending with a line end: bytes that are not UTF-8 shown as U+FFFD."""
    text = data.decode("utf-8", "replace")
    return text if not text or text.endswith("\n") else text + "\n"


def run_text(job: Job, run: lookups.Run, max_lines: int | None = None) -> str:
    """A run's heading and its output, stream by stream (the last `max_lines` lines of each,
    if given, and how many were left out)."""
    parts = [heading(job, run) + "\n"]
    if run.output is None or run.output.empty:
        parts.append("(nothing written to stdout or stderr)\n")
        return "".join(parts)
    for stream in STREAMS:
        tail, dropped = stream_parts(run.output, stream)
        parts.append(stream_heading(stream, tail, dropped) + "\n")
        text = text_of(tail)
        if max_lines is not None:
            lines = text.splitlines(keepends=True)
            if len(lines) > max_lines:
                left_out = len(lines) - max_lines
                parts.append(f"[{left_out} lines before these: taiat jobs logs {job.id} ")
                parts.append(f"--attempt {run.number}]\n")
                text = "".join(lines[-max_lines:])
        parts.append(text)
    return "".join(parts)


# -- following ------------------------------------------------------------------------------


class _Printer:
    """Prints one attempt's output as it grows: each time, only what is new of each stream,
    under the stream's name whenever the stream changes."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.number: int | None = None
        self.stream: str | None = None
        self.printed = dict.fromkeys(STREAMS, 0)  # bytes of each stream shown, from its start
        self.decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in STREAMS}
        self.at_line_start = True

    def begin(self, job: Job, run: lookups.Run) -> None:
        if self.number == run.number:
            return
        self.number, self.stream = run.number, None
        self.printed = dict.fromkeys(STREAMS, 0)
        for decoder in self.decoders.values():
            decoder.reset()
        self.line(heading(job, run))

    def show(self, output: AttemptOutput | None) -> None:
        for stream in STREAMS:
            tail, dropped = stream_parts(output, stream)
            end = dropped + len(tail)
            if end <= self.printed[stream]:
                continue
            if self.stream != stream:
                self.line(f"--- {stream} ---")
                self.stream = stream
            start = self.printed[stream] - dropped
            if start < 0:
                self.line(f"[{-start} bytes dropped]")
                self.decoders[stream].reset()
                start = 0
            self._write(self.decoders[stream].decode(tail[start:]))
            self.printed[stream] = end

    def end(self, attempt: Attempt) -> None:
        for stream, decoder in self.decoders.items():
            rest = decoder.decode(b"", final=True)
            if rest:
                if self.stream != stream:
                    self.line(f"--- {stream} ---")
                    self.stream = stream
                self._write(rest)
        self.line(f"== attempt {attempt.attempt} ended: {ended_words(attempt)} ==")

    def line(self, text: str) -> None:
        self._write(("" if self.at_line_start else "\n") + text + "\n")

    def _write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()
            self.at_line_start = text.endswith("\n")


def follow(
    jm: JobManager,
    wanted_id: str,
    wanted: int | None,
    out: TextIO,
    interval: float = FOLLOW_INTERVAL,
) -> int:
    """Print the output of attempt `wanted` (else of the running attempt, or, for a job not
    yet running, the next one) as it grows, until that attempt ends. A job that has finished
    shows its last attempt, and the command ends at once."""
    printer = _Printer(out)
    target = wanted
    while True:
        job, runs = lookups.runs(jm, wanted_id)
        if job is None:
            raise JobNotFound(f"no job has id {wanted_id}")
        by_number = {run.number: run for run in runs}
        if target is None:
            if job.status == JobStatus.RUNNING:
                target = job.claim_seq
            elif job.status.finished:
                if not runs:
                    out.write(f"job {wanted_id} ({job.name}) {job.status.value} without a run\n")
                    return EXIT_OK
                target = runs[-1].number
        elif job.status.finished and target not in by_number:
            raise JobNotFound(f"job {wanted_id} has no attempt {target}")
        if target is not None:
            run = by_number.get(target, lookups.Run(target, None, None))
            printer.begin(job, run)
            printer.show(run.output)
            if run.attempt is not None:
                printer.end(run.attempt)
                return EXIT_OK
            if _gone_by(job, target):
                # Given back before it started, or its end was never recorded: no more of it.
                if wanted is not None or job.status.finished:
                    printer.line(f"== attempt {target} is over; its end is not recorded ==")
                    return EXIT_OK
                target = None  # the next attempt, then
        time.sleep(interval)


def _gone_by(job: Job, number: int) -> bool:
    """Whether the job has moved on past run `number` (which has no record of its end)."""
    if job.status.finished:
        return True
    if job.status == JobStatus.RUNNING:
        return job.claim_seq > number
    return job.claim_seq >= number  # pending again after that claim
