"""Bytes kept in an unlinked temporary file as they arrive: a large result on its way from a
job's pipe to the database (see `taiat.supervisor.large_results`), which the supervisor never
holds whole."""

from __future__ import annotations

import os
import tempfile


class Spool:
    """Bytes kept in an unlinked temporary file as they arrive."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="taiat-result-")
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._file.fileno(), view)
            view = view[written:]
        self.size += len(data)

    def last_byte(self) -> bytes:
        return os.pread(self._file.fileno(), 1, self.size - 1) if self.size else b""

    def truncate(self, size: int) -> None:
        os.ftruncate(self._file.fileno(), size)
        self.size = size

    def read(self) -> bytes:
        """The whole content (by offset: a forked process shares the file's position)."""
        parts = []
        offset = 0
        while offset < self.size:
            part = os.pread(self._file.fileno(), min(self.size - offset, 1 << 24), offset)
            if not part:
                break
            parts.append(part)
            offset += len(part)
        return b"".join(parts)

    def close(self) -> None:
        self._file.close()

    def __repr__(self) -> str:
        return f"<result of {self.size} bytes in a file>"
