"""A job's stdout and stderr, read from their pipes as they come: the last bytes of each kept,
what came before counted and dropped, and, when asked, each line handed on to be logged. The
supervisor holds no more than the tail and one read of each stream, whatever a job writes.

The child puts the pipes' write ends in place of its descriptors 1 and 2 (`child.run`), so
everything below it that writes there, grandchildren too, writes into them. The pipes are read
as the result pipe is: when the supervisor's loop sees them ready, a bounded amount a turn.
When the job's process has been reaped, what is left in them is read (a bounded amount: a
process that outlives the job may still hold a write end, and write on) and they are closed.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from taiat.forking import posix
from taiat.jobs import AttemptOutput

#: One read.
_READ = 1 << 16
#: Bytes read of one stream in one turn of the supervisor's loop: a job that writes without a
#: pause holds up a turn no longer than that takes.
PER_TURN = 1 << 20
#: Bytes read of one stream once the job's process has ended, before it is closed: all the job
#: wrote is in the pipe by then (at most its size); the rest is what a process that outlived it
#: wrote meanwhile, which must not hold up the attempt's end.
AT_END = 1 << 20
#: A line longer than this is forwarded in pieces.
MAX_LINE = 16 << 10

#: Called with the stream's name ("stdout" or "stderr") and a line of it (without its end).
Forward = Callable[[str, str], None]


class Tail:
    """The last `limit` bytes of a stream, and how many came before them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        #: Every byte written so far.
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if len(chunk) >= self.limit:
            self.data[:] = chunk[len(chunk) - self.limit :]
            return
        self.data += chunk
        excess = len(self.data) - self.limit
        if excess > 0:
            del self.data[:excess]

    def kept(self) -> tuple[bytes, int]:
        """The bytes kept and how many were dropped before them. Once some were dropped, the
        kept bytes begin at a character, not in the middle of one (UTF-8's continuation bytes
        that the cut left at the front are dropped too)."""
        data = bytes(self.data)
        dropped = self.total - len(data)
        if dropped:
            start = 0
            while start < min(3, len(data)) and 0x80 <= data[start] < 0xC0:
                start += 1
            data, dropped = data[start:], dropped + start
        return data, dropped


class _Stream:
    """One stream's pipe, its tail, and the line being forwarded."""

    def __init__(self, name: str, fd: int, limit: int, forward: Forward | None) -> None:
        self.name = name
        self.fd = fd
        self.tail = Tail(limit)
        self._forward = forward
        self._line = bytearray()

    def read(self, budget: int) -> None:
        """Read what the pipe holds, `budget` bytes at most; never blocks. Closes the pipe at
        its end."""
        got = 0
        while self.fd >= 0 and got < budget:
            chunk = posix.read_ready(self.fd, _READ)
            if chunk is None:
                return
            if not chunk:
                self.close()
                return
            got += len(chunk)
            self.tail.add(chunk)
            if self._forward is not None:
                self._lines(chunk)

    def _lines(self, chunk: bytes) -> None:
        """Forward each whole line; keep the last, unfinished one (less than `MAX_LINE`)."""
        *lines, rest = (bytes(self._line) + chunk).split(b"\n")
        for line in lines:
            self._send(line)
        while len(rest) >= MAX_LINE:
            self._send(rest[:MAX_LINE])
            rest = rest[MAX_LINE:]
        self._line = bytearray(rest)

    def _send(self, line: bytes) -> None:
        """Forward a line, in pieces of `MAX_LINE` bytes if it is longer."""
        assert self._forward is not None
        while len(line) > MAX_LINE:
            self._forward(self.name, line[:MAX_LINE].decode("utf-8", "replace"))
            line = line[MAX_LINE:]
        self._forward(self.name, line.decode("utf-8", "replace").rstrip("\r"))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self._line and self._forward is not None:
            line, self._line = bytes(self._line), bytearray()
            self._send(line)


class JobOutput:
    """A job's stdout and stderr, captured: `open` makes the pipes and gives the write ends for
    the child; the supervisor reads each read end when it is ready (`read`), and `finish`es
    them once the job's process has been reaped."""

    def __init__(self, limit: int, forward: Forward | None = None) -> None:
        self.limit = limit
        self.forward = forward
        self._streams: list[_Stream] = []
        #: The bytes written in all when last saved while the job ran (see `changed`).
        self.saved = 0

    def open(self) -> tuple[int, int]:
        """Make the two pipes (afresh, if a launch that failed made some before); their write
        ends, for the child's stdout and stderr (the caller closes its copies once the child
        has them)."""
        self.close()
        self._streams = []
        made: list[int] = []
        try:
            for name in ("stdout", "stderr"):
                read_end, write_end = os.pipe()
                made += [read_end, write_end]
                os.set_blocking(read_end, False)
                self._streams.append(_Stream(name, read_end, self.limit, self.forward))
        except BaseException:
            for fd in made:
                os.close(fd)
            self._streams.clear()
            raise
        return made[1], made[3]

    def fds(self) -> list[int]:
        """The read ends still open."""
        return [s.fd for s in self._streams if s.fd >= 0]

    def read(self, fd: int) -> None:
        """Read the stream of read end `fd` (ready), `PER_TURN` bytes at most."""
        for stream in self._streams:
            if stream.fd == fd:
                stream.read(PER_TURN)

    def finish(self) -> None:
        """The job's process has ended: read what is left (`AT_END` bytes of each at most),
        and close the pipes."""
        for stream in self._streams:
            stream.read(AT_END)
            stream.close()

    def close(self) -> None:
        for stream in self._streams:
            stream.close()

    @property
    def written(self) -> int:
        """Bytes written so far, to both streams."""
        return sum(s.tail.total for s in self._streams)

    @property
    def changed(self) -> bool:
        """Whether more was written since `saved`."""
        return self.written != self.saved

    def snapshot(self, job_id: str, attempt: int, *, final: bool) -> AttemptOutput | None:
        """The output so far, as the store keeps it; None when nothing was written."""
        if not self.written:
            return None
        tails = {s.name: s.tail.kept() for s in self._streams}
        stdout, stdout_dropped = tails.get("stdout", (b"", 0))
        stderr, stderr_dropped = tails.get("stderr", (b"", 0))
        return AttemptOutput(
            job_id=job_id,
            attempt=attempt,
            stdout_tail=stdout,
            stdout_dropped_bytes=stdout_dropped,
            stderr_tail=stderr,
            stderr_dropped_bytes=stderr_dropped,
            final=final,
        )
