"""The words an ending is recorded in: a signal by its number, name and meaning; a lost
supervisor by the host and pid its worker id carries."""

from __future__ import annotations

import signal

from taiat.forking.posix import signal_words
from taiat.store.leases import describe, new_worker_id


def test_signal_words() -> None:
    assert signal_words(signal.SIGSEGV) == "signal 11 (SIGSEGV): segmentation fault"
    assert signal_words(signal.SIGKILL) == "signal 9 (SIGKILL)"
    assert signal_words(200) == "signal 200"


def test_worker_ids_carry_host_and_pid() -> None:
    worker_id = new_worker_id("db-host.example", 4242, "abcd")
    assert describe(worker_id) == "(db-host.example, 4242)"
    assert describe(None) == "(unknown host, unknown pid)"
