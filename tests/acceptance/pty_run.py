"""Run a program on a pseudo-terminal, as an operator would, and read what it draws."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Sequence

_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|\x1b[=>]")


def plain(text: str) -> str:
    """Terminal output without its escape sequences."""
    return _ESCAPES.sub("", text)


class PtyProcess:
    """A subprocess whose standard input, output and error are one pseudo-terminal."""

    def __init__(
        self, command: Sequence[str], env: dict[str, str], rows: int = 40, columns: int = 160
    ) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.process = subprocess.Popen(
            list(command),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**env, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": str(rows)},
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.raw = b""
        self.closed = False

    @property
    def text(self) -> str:
        return plain(self.raw.decode(errors="replace"))

    def _read(self, timeout: float) -> bool:
        """Read what arrives within `timeout`; whether anything did."""
        if self.closed:
            return False
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the program has gone and the terminal with it
            chunk = b""
        self.closed = not chunk
        self.raw += chunk
        return bool(chunk)

    def read_until(self, predicate: Callable[[str], bool], timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while not predicate(self.text):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s; the screen:\n{self.text}")
            self._read(0.1)
            if self.closed and not predicate(self.text):
                raise AssertionError(f"the program ended; its screen:\n{self.text}")
        return self.text

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout} s; screen:\n{self.text}")
            self._read(0.05)
        while self._read(0.2):
            pass
        return self.process.returncode

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        os.close(self.master)
