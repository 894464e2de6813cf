"""A job's stdout and stderr as the supervisor reads them: only the last bytes kept, what came
before counted; lines handed on whole (long ones in pieces); the end of a job not held up by a
process that still holds a pipe; and the two settings that govern it."""

from __future__ import annotations

import os

import pytest

from taiat.cli.common import parse
from taiat.cli.supervisor_command import SUPERVISOR_USAGE, supervisor_config
from taiat.config import SupervisorConfig
from taiat.errors import ConfigurationError
from taiat.forking import output
from taiat.forking.output import JobOutput, Tail


def test_a_tail_keeps_the_last_bytes_and_counts_the_rest() -> None:
    tail = Tail(8)
    tail.add(b"abc")
    assert tail.kept() == (b"abc", 0)
    tail.add(b"defghij")
    assert tail.kept() == (b"cdefghij", 2)
    tail.add(b"0123456789ABCDEF")  # more than it keeps, in one go
    assert tail.kept() == (b"89ABCDEF", 26 - 8)
    assert tail.total == 26


def test_a_tail_begins_at_a_character_once_it_was_cut() -> None:
    tail = Tail(4)
    tail.add("aé€".encode())  # 1 + 2 + 3 bytes: the last 4 begin inside "é"
    assert tail.kept() == ("€".encode(), 3)
    assert Tail(0).kept() == (b"", 0)
    nothing = Tail(0)
    nothing.add(b"all dropped")
    assert nothing.kept() == (b"", 11)


def _captured(limit: int = 64, forward=None) -> tuple[JobOutput, int, int]:
    captured = JobOutput(limit, forward)
    out, err = captured.open()
    return captured, out, err


def _drain(captured: JobOutput) -> None:
    for fd in captured.fds():
        captured.read(fd)


def test_both_streams_are_kept_apart_with_what_was_dropped() -> None:
    captured, out, err = _captured(limit=10)
    try:
        os.write(out, b"0123456789abcdef")
        os.write(err, b"warning\n")
        _drain(captured)
        assert captured.changed and captured.written == 24
        os.close(out)
        os.close(err)
        captured.finish()
        assert captured.fds() == []
        snapshot = captured.snapshot("job", 3, final=True)
    finally:
        captured.close()
    assert snapshot is not None and snapshot.attempt == 3 and snapshot.final
    assert (snapshot.stdout_tail, snapshot.stdout_dropped_bytes) == (b"6789abcdef", 6)
    assert (snapshot.stderr_tail, snapshot.stderr_dropped_bytes) == (b"warning\n", 0)


def test_nothing_written_is_no_output() -> None:
    captured, out, err = _captured()
    os.close(out)
    os.close(err)
    captured.finish()
    assert captured.snapshot("job", 1, final=True) is None and not captured.changed


def test_lines_are_forwarded_whole_and_long_ones_in_pieces(monkeypatch) -> None:
    monkeypatch.setattr(output, "MAX_LINE", 8)
    lines: list[tuple[str, str]] = []
    captured, out, err = _captured(forward=lambda stream, line: lines.append((stream, line)))
    try:
        os.write(out, b"one\ntw")
        os.write(err, b"caf\xc3")
        _drain(captured)
        assert lines == [("stdout", "one")]  # "tw" waits for the rest of its line
        os.write(out, b"o\r\n\nthree is long\nend")
        os.write(err, b"\xa9\n")
        _drain(captured)
        os.close(out)
        os.close(err)
        captured.finish()  # the last, unfinished line goes too
    finally:
        captured.close()
    assert [line for stream, line in lines if stream == "stdout"] == [
        "one",
        "two",
        "",
        "three is",
        " long",
        "end",
    ]
    assert [line for stream, line in lines if stream == "stderr"] == ["café"]


def test_a_pipe_still_held_open_does_not_hold_up_the_end(monkeypatch) -> None:
    """A process left behind by the job keeps a write end, and writes on: the end reads what
    is there, a bounded amount, and closes the pipes without waiting for their end."""
    monkeypatch.setattr(output, "AT_END", 1 << 16)
    captured, out, err = _captured(limit=16)
    try:
        os.set_blocking(out, False)
        os.write(out, b"y" * (1 << 16))  # a full pipe, as a writer that never stops leaves it
        captured.finish()
        assert captured.fds() == []
        snapshot = captured.snapshot("job", 1, final=True)
        assert snapshot is not None and snapshot.stdout_dropped_bytes == (1 << 16) - 16
        with pytest.raises(BrokenPipeError):  # the writer is told, and may go
            os.write(out, b"more")
    finally:
        os.close(out)
        os.close(err)
        captured.close()


def test_a_turn_reads_a_bounded_amount_of_a_stream(monkeypatch) -> None:
    monkeypatch.setattr(output, "PER_TURN", 1 << 16)
    captured, out, err = _captured(limit=4)
    try:
        os.set_blocking(out, False)
        written = 0
        while written < 3 << 16:
            try:
                written += os.write(out, b"z" * (1 << 16))
            except BlockingIOError:
                _drain(captured)  # room for more
        before = captured.written
        _drain(captured)
        assert 0 < captured.written - before <= 1 << 16
    finally:
        os.close(out)
        os.close(err)
        captured.close()


def _config(*argv: str, env: dict[str, str] | None = None, monkeypatch=None) -> SupervisorConfig:
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    config, _ = supervisor_config(parse(SUPERVISOR_USAGE, list(argv)))
    return config


def test_the_output_settings_from_the_command_line_and_the_environment(monkeypatch) -> None:
    for name in ("TAIAT_LOG_TAIL_BYTES", "TAIAT_FORWARD_OUTPUT"):
        monkeypatch.delenv(name, raising=False)
    default = _config()
    assert default.log_tail_bytes == 65536 and not default.forward_output
    given = _config("--log-tail-bytes", "1024", "--forward-output")
    assert given.log_tail_bytes == 1024 and given.forward_output
    by_variable = _config(
        env={"TAIAT_LOG_TAIL_BYTES": "0", "TAIAT_FORWARD_OUTPUT": "1"}, monkeypatch=monkeypatch
    )
    assert by_variable.log_tail_bytes == 0 and by_variable.forward_output
    assert _config("--log-tail-bytes", "2048").log_tail_bytes == 2048  # the option wins
    assert _config("--log-tail-bytes", "64K").log_tail_bytes == 65536  # a size with a unit


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("-1", "must be a number of bytes or a size with a unit"),
        ("1.5", "must be a whole number of bytes"),
        ("lots", "must be a number of bytes or a size with a unit"),
        (str(2 << 30), "must be at most 1073741824"),
    ],
)
def test_a_bad_tail_size_is_refused_in_words(raw: str, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words) as caught:
        _config("--log-tail-bytes", raw)
    assert "--log-tail-bytes (or TAIAT_LOG_TAIL_BYTES)" in str(caught.value)
    with pytest.raises(ConfigurationError, match="log_tail_bytes"):
        SupervisorConfig(log_tail_bytes=-1)


def test_pipes_made_again_for_a_second_launch_replace_the_first() -> None:
    """A launch that failed (its fork server lost) is made again, with new pipes: nothing of
    the first counts."""
    captured, out, err = _captured()
    os.write(out, b"never a job's\n")
    _drain(captured)
    captured.close()  # as the failed launch leaves them
    for fd in (out, err):
        os.close(fd)
    out, err = captured.open()
    try:
        assert len(captured.fds()) == 2
        os.write(out, b"second launch\n")
        os.close(out)
        os.close(err)
        captured.finish()
    finally:
        captured.close()
    snapshot = captured.snapshot("job", 1, final=True)
    assert snapshot is not None and snapshot.stdout_tail == b"second launch\n"
    assert captured.written == len(b"second launch\n")
