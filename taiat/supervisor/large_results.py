"""Large results, kept off the supervisor's loop.

A result whose message is over `wire.LARGE_MESSAGE` bytes (1 MiB) goes from the child's pipe
into an unlinked temporary file as it arrives (`taiat.forking.spool.Spool`): the supervisor
holds one read of it at a time, whatever its size. It is checked and stored by a short-lived process
forked from the supervisor for it (`Storer`), which parses the JSON (the child is not trusted to
have sent valid JSON) and records the job's success, attempt and all, in one transaction under
the same claim check as the supervisor's own writes (`id`, `claim_seq`, status running).
Meanwhile the supervisor goes on heartbeating, timing out, reaping and publishing; it learns the
outcome from a short message on a pipe: stored, stale (the claim is no longer current), refused
(the words become the job's failed ending) or an outage (the result waits in its file, and is
tried again after the recorder's backoff).

Small results (the hot path) take the old way: parsed in the supervisor and written with the
next claim in one transaction.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from taiat.errors import DatabaseUnavailable, InvalidJob, TransientConflict
from taiat.forking import posix
from taiat.forking.spool import Spool
from taiat.store.port import Completion, SupervisorPort
from taiat.store.validation import as_is, clean_json

log = logging.getLogger(__name__)

#: How much of a refusal's words the helper sends back.
_WORDS = 2000
#: A helper that ends without a word, or in a conflict, is tried this many times before the
#: job fails.
_TRIES = 3
#: After a helper could not be forked (no process or descriptor to be had: a job's fork bomb
#: under the user's process limit), the next one is tried this long after (seconds), doubling
#: up to `_MAX_WAIT`.
_FIRST_WAIT = 0.5
_MAX_WAIT = 10.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stored:
    """How a helper's write of one result ended: `outcome` is "done", "stale", "refused" (with
    the reason in `words`) or "outage"."""

    item: Any
    outcome: str
    words: str = ""


class Storer:
    """Stores spooled results one at a time, each by a process of its own."""

    def __init__(self, port: SupervisorPort) -> None:
        self.port = port
        #: (item, completion, spool) waiting, the first one being stored while `fd` >= 0.
        self.queue: deque[tuple[Any, Completion, Spool]] = deque()
        self.fd = -1
        self._pid = 0
        self._reply = bytearray()
        self._tries = 0
        #: Helpers that had closed their pipe but not yet ended when last looked at.
        self._unreaped: list[int] = []
        #: When the next helper may be forked, after one could not be (monotonic seconds).
        self.not_before: float | None = None
        self._wait = _FIRST_WAIT

    @property
    def busy(self) -> bool:
        return self.fd >= 0

    @property
    def pids(self) -> set[int]:
        """The helpers' processes not reaped yet: children of the supervisor that are no
        job's leftovers."""
        return {*self._unreaped, *([self._pid] if self.busy else [])}

    def add(self, item: Any, completion: Completion, spool: Spool) -> None:
        """Store `completion`, whose result is `spool`'s JSON text; `item` comes back with
        the outcome."""
        self.queue.append((item, completion, spool))

    def start(self) -> None:
        """Fork the helper for the first waiting result, unless one runs already. One that
        cannot be forked now is tried again a moment later: the result waits in its file."""
        if self.busy or not self.queue:
            return
        if self.not_before is not None and time.monotonic() < self.not_before:
            return
        _item, completion, spool = self.queue[0]
        supervisor = os.getpid()
        try:
            read_fd, write_fd = os.pipe()
        except OSError as exc:
            self._cannot_fork(exc)
            return
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            self._cannot_fork(exc)
            return
        if pid == 0:  # pragma: no cover - the helper leaves through os._exit
            os.close(read_fd)
            _helper(self.port, completion, spool, write_fd, supervisor)
        self.not_before = None
        self._wait = _FIRST_WAIT
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self.fd, self._pid = read_fd, pid
        self._reply.clear()

    def _cannot_fork(self, exc: OSError) -> None:
        log.warning(
            "cannot fork the process that stores a large result (%s); trying again in %g s",
            exc,
            self._wait,
        )
        self.not_before = time.monotonic() + self._wait
        self._wait = min(self._wait * 2, _MAX_WAIT)

    def poll(self) -> Stored | None:
        """Read the helper's reply; the outcome once it has ended (never blocks)."""
        if self._unreaped:
            self._unreaped = [pid for pid in self._unreaped if not _reaped(pid)]
        if not self.busy:
            return None
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except BlockingIOError:
                return None
            if not chunk:
                break
            self._reply += chunk
        os.close(self.fd)
        self.fd = -1
        if not _reaped(self._pid):
            self._unreaped.append(self._pid)
        try:
            reply = json.loads(self._reply)
            outcome, words = str(reply["outcome"]), str(reply.get("words", ""))
        except (ValueError, KeyError, TypeError):
            outcome, words = "again", "the process storing it ended without a word"
        if outcome == "again":  # it may go through next time; not forever
            self._tries += 1
            if self._tries < _TRIES:
                return None  # tried again at the next start()
            outcome, words = "refused", f"its result could not be stored: {words}"
        self._tries = 0
        item, _completion, spool = self.queue.popleft()
        if outcome == "outage":
            self.queue.appendleft((item, _completion, spool))
        else:
            spool.close()
        return Stored(item, outcome, words)

    def items(self) -> list[Any]:
        return [item for item, _completion, _spool in self.queue]


def _reaped(pid: int) -> bool:
    """Reap the helper if it has ended (it closes its pipe a moment before it does)."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:
        return True  # reaped by someone else


def _helper(
    port: SupervisorPort, completion: Completion, spool: Spool, reply_fd: int, supervisor: int
) -> None:
    """The helper's whole life: parse the result, record the success, say how it went."""
    reply: dict[str, str] = {"outcome": "refused", "words": "the process storing it failed"}
    try:
        posix.become_independent(supervisor)
        port.after_fork()
        port.unbound()  # its one write takes as long as it takes
        reply = _store(port, completion, spool.read)
    except BaseException as exc:  # noqa: BLE001 - the helper never unwinds into the supervisor
        words = f"its result could not be stored: {type(exc).__name__}: {exc}"
        reply = {"outcome": "refused", "words": words[:_WORDS]}
    finally:
        try:
            # Words that quote the result may hold what no database takes as text.
            words = reply.get("words", "").encode("utf-8", "backslashreplace").decode()
            os.write(reply_fd, json.dumps({**reply, "words": words}).encode())
        finally:
            os._exit(0)


def _store(port: SupervisorPort, completion: Completion, read: Callable[[], bytes]) -> dict:
    data = read()
    result: Any = as_is(data)  # stored as it is, once checked
    if result is None:  # the slow path, which says what is wrong
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):
            return {"outcome": "refused", "words": "the child sent a malformed result"}
        try:
            result = clean_json(value, "it")
        except InvalidJob as exc:  # as a small result's would be (`recorder.storable`)
            words = f"its result could not be stored: {exc}"
            return {"outcome": "refused", "words": words[:_WORDS]}
    stored = Completion(
        completion.job_id, completion.claim_seq, result, completion.attempt, completion.in_plan
    )
    try:
        done, _ = port.settle([stored], "", 0)
    except DatabaseUnavailable as exc:
        return {"outcome": "outage", "words": str(exc)[:_WORDS]}
    except TransientConflict as exc:  # conflicts outlasted the port's own retries
        return {"outcome": "again", "words": str(exc)[:_WORDS]}
    except Exception as exc:  # noqa: BLE001 - refused for good: the words say why
        return {"outcome": "refused", "words": f"its result could not be stored: {exc}"[:_WORDS]}
    return {"outcome": "done" if completion.job_id in done else "stale"}
