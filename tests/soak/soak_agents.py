"""The jobs of the soak run: an innocent one that counts its runs, and poison ones that do what
hostile or careless job code does. None of them is trusted by the supervisor."""

from __future__ import annotations

import ctypes
import os
import signal
import stat
import time

import taiat
from taiat.child import HEADER


def work(path: str, seconds: float = 0.0) -> str:
    """Append this job's id to a file (one O_APPEND write: lines never interleave)."""
    if seconds:
        time.sleep(seconds)
    job_id = taiat.current_job().id
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{job_id}\n".encode())
    finally:
        os.close(fd)
    return job_id


def surrogate_result() -> dict:
    """A file name as `os.listdir` gives it under surrogateescape."""
    return {"file": b"caf\xe9.txt".decode("utf-8", "surrogateescape"), "nul": "a\x00b"}


def surrogate_error() -> None:
    raise ValueError("bad file name " + b"\xff\xfe".decode("utf-8", "surrogateescape"))


def deep_result(depth: int = 985) -> object:
    value: object = []
    for _ in range(depth):
        value = [value]
    return value


def pipe_garbage(body: str = "[1,2,3]") -> None:
    """Write a well-framed message that is not an object to every pipe this process may
    write to (the result pipe among them), then leave without a word."""
    data = body.encode()
    for fd in range(3, 256):
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                os.write(fd, HEADER.pack(len(data)) + data)
        except OSError:
            continue
    os._exit(0)


def segfault() -> None:
    ctypes.string_at(0)


def hang(seconds: float = 600.0) -> None:
    time.sleep(seconds)


def hog(megabytes: int = 400) -> None:
    block = bytearray(megabytes << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(60)


def kill_parent() -> None:
    """SIGKILL the process that forked this job (its fork server)."""
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(5)


def stop_parent() -> None:
    """SIGSTOP the process that forked this job (its fork server): it forks and reaps nothing
    more until someone ends it."""
    os.kill(os.getppid(), signal.SIGSTOP)
    time.sleep(5)


def escape(seconds: float = 30.0) -> str:
    """Leave a grandchild in a session of its own, holding memory, and return at once."""
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            held = bytearray(50 << 20)
            for i in range(0, len(held), 4096):
                held[i] = 1
            time.sleep(seconds)
        os._exit(0)
    os.wait()
    return "escaped"
