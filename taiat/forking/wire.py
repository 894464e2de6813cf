"""Every byte format between the processes of a job.

- **The result:** what a job's child sends the supervisor over its pipe, one message: an 8-byte
  big-endian length (`HEADER`), then that many bytes of UTF-8 JSON, an object: {"ok": true,
  "result": ...}, {"ok": true, "plan": {...}}, or {"ok": false, "error": "...", "traceback":
  ..., "final": bool}. The child writes it (`encode_message`); the supervisor judges it
  (`read_message`), for job code can write anything to the pipe it inherited.
- **The sealed job:** a job and its dependency results as the fork server passes them on,
  unopened, to the job's child (`seal`, `unseal`).
- **The fork server's frames:** a 4-byte length, then a pickle, with any file descriptors (up
  to `MAX_FDS`: a job's result pipe, then its stdout's and its stderr's, then its stack
  dumps') riding on the first bytes (`send_message`, `receive_message`).
"""

from __future__ import annotations

import json
import marshal
import pickle
import socket
import struct
from collections.abc import Sequence
from typing import Any

import orjson

from taiat.errors import InvalidJob
from taiat.jobs import Job
from taiat.store.validation import as_is, json_text

# -- the result ----------------------------------------------------------------------------

#: A message is an 8-byte big-endian length, then that many bytes of UTF-8 JSON.
HEADER = struct.Struct(">Q")
#: A message over this many bytes is a success's result and nothing else: it begins with
#: RESULT_PREFIX and ends with RESULT_SUFFIX, and the supervisor keeps its middle, the result's
#: JSON text, in a file as it arrives (`taiat.supervisor.large_results`). Errors are cut to
#: fit below it.
LARGE_MESSAGE = 1 << 20
#: What every success's message begins and ends with, around its result's JSON text.
RESULT_PREFIX = b'{"ok": true, "result": '
RESULT_SUFFIX = b"}"
#: Characters of an error message, and of its traceback, kept when the message would be large.
_ERROR_CHARS = 64 << 10


def error_message(message: str, trace: str | None = None) -> dict[str, Any]:
    """A failure's message."""
    return {"ok": False, "error": message, "traceback": trace}


#: Results orjson writes as the json module does, when their text holds no null (see
#: `_result_body`): the exact types, not their subclasses.
_ORJSON_TYPES = (float, int, str, bool)
_NO_RESULT = RESULT_PREFIX + b"null" + RESULT_SUFFIX


def encode_message(message: dict[str, Any], max_bytes: int) -> bytes:
    """The child's message, framed: one that cannot be JSON, or is over `max_bytes`, becomes a
    failure that says so; one over LARGE_MESSAGE that is not a result is made to fit."""
    body = _result_body(message)
    if body is None:
        try:
            # Its text is made valid by the supervisor, which trusts none of it anyway.
            body = json_text(message, "result", refuse_nul=False).encode()
        except InvalidJob as exc:
            body = json.dumps(error_message(str(exc))).encode()
    if len(body) > max_bytes:
        over = error_message(f"result of {len(body)} bytes is over the limit of {max_bytes} bytes")
        body = json.dumps(over).encode()
    elif len(body) > LARGE_MESSAGE and not body.startswith(RESULT_PREFIX):
        body = json.dumps(_small(message, len(body))).encode()
    return HEADER.pack(len(body)) + body


def _result_body(message: dict[str, Any]) -> bytes | None:
    """A success's message whose result is None or a plain number, string or truth value,
    written without the json module: in a job's freshly forked child, its encoder copies some
    20 to 30 more pages of memory than orjson's one call, or none at all. None for every
    other message, which the json module writes, or refuses, as it always has. (orjson writes
    a number that is not finite as null, where the json module refuses it: a text with a
    null in it is left to the json module too. Its containers are left to it as well: orjson
    would write some values inside them, an Enum member or a UUID, that the json module
    refuses.)"""
    if len(message) != 2 or message.get("ok") is not True or "result" not in message:
        return None
    result = message["result"]
    if result is None:
        return _NO_RESULT
    if type(result) not in _ORJSON_TYPES:
        return None
    try:
        text = orjson.dumps(result)
    except TypeError:  # orjson.JSONEncodeError is one: a lone surrogate, a 65-bit integer
        return None
    if b"null" in text:
        return None
    return RESULT_PREFIX + text + RESULT_SUFFIX


def _small(message: dict[str, Any], size: int) -> dict[str, Any]:
    """A message other than a result, made to fit below LARGE_MESSAGE: an error's text cut,
    a plan refused."""
    if message.get("ok"):
        return error_message(
            f"a plan of {size} bytes is over the {LARGE_MESSAGE} bytes a plan may take"
        )
    return {
        **message,
        "error": _cut(message.get("error")),
        "traceback": _cut(message.get("traceback")),
    }


def _cut(text: Any) -> Any:
    if not isinstance(text, str) or len(text) <= _ERROR_CHARS:
        return text
    return f"{text[:_ERROR_CHARS]}... ({len(text) - _ERROR_CHARS} more characters cut)"


def read_message(body: bytes) -> dict[str, Any]:
    """The child's message, judged rather than trusted: job code can write anything to the
    pipe it inherited. `child` sends an object, {"ok": true, "result": ...} or {"ok": true,
    "plan": {...}}, or {"ok": false, "error": "...", "traceback": "..." or null, "final":
    bool}; whatever else arrives is a failure that says what was wrong with it. The message
    returned always has that shape.

    A success's result, the common case, is checked as JSON text and kept as that text
    (`JsonText`), to be stored as it is; one that needs a closer look takes the slow path."""
    if body.startswith(RESULT_PREFIX) and body.endswith(RESULT_SUFFIX):
        text = as_is(memoryview(body)[len(RESULT_PREFIX) : -len(RESULT_SUFFIX)].tobytes())
        if text is not None:
            return {"ok": True, "result": text, "plan": None}
    try:
        message = json.loads(body)
    except RecursionError:
        return _malformed("it is nested too deep to be read")
    except ValueError as exc:  # UnicodeDecodeError too
        return _malformed(f"it is not JSON: {exc}")
    if not isinstance(message, dict):
        return _malformed(f"it is a JSON {_json_kind(message)}, not an object")
    ok = message.get("ok")
    if ok is True:
        plan = message.get("plan")
        if plan is not None and not isinstance(plan, dict):
            return _malformed(f"its plan is a JSON {_json_kind(plan)}, not an object")
        return {"ok": True, "result": message.get("result"), "plan": plan}
    if ok is not False:
        return _malformed('its "ok" is neither true nor false')
    error, trace = message.get("error"), message.get("traceback")
    return {
        "ok": False,
        "error": error if isinstance(error, str) else "the job failed; its error is not text",
        "traceback": trace if isinstance(trace, str) else None,
        "final": message.get("final") is True,
    }


def _malformed(why: str) -> dict[str, Any]:
    return {"ok": False, "error": f"the child sent a malformed result: {why}", "traceback": None}


def _json_kind(value: Any) -> str:
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")


# -- the sealed job ------------------------------------------------------------------------


def seal(
    job: Job, dependency_results: dict[str, Any] | None, catalogue: dict[str, Any] | None = None
) -> bytes:
    """The job and its dependency results (and, for a query job, the catalogue to plan it
    with), as the fork server passes them on unopened to the job's child. By `marshal`, whose
    reading costs a fresh child the fewest page copies, when every value is JSON and every time
    naive or UTC (as they are when the job came from the database); else by `pickle`."""
    what: tuple[Any, ...] = (dependency_results,)
    if catalogue is not None:
        what = (dependency_results, catalogue)
    try:
        return b"m" + marshal.dumps((job.to_plain(), *what))
    except ValueError:  # a value marshal cannot carry
        return b"p" + pickle.dumps((job, *what), protocol=pickle.HIGHEST_PROTOCOL)


def unseal(sealed: bytes) -> tuple[Job, dict[str, Any] | None]:
    """The job and its dependency results, of what `seal` sealed."""
    job, dependency_results, _ = unseal_claim(sealed)
    return job, dependency_results


def unseal_claim(sealed: bytes) -> tuple[Job, dict[str, Any] | None, dict[str, Any] | None]:
    """What `seal` sealed: the job, its dependency results and the catalogue (None if none
    was sealed)."""
    body = memoryview(sealed)[1:]
    if sealed[:1] == b"m":
        plain, *rest = marshal.loads(body)
        job = Job.from_plain(plain)
    else:
        job, *rest = pickle.loads(body)
    return job, rest[0], rest[1] if len(rest) > 1 else None


# -- the fork server's frames --------------------------------------------------------------

FRAME = struct.Struct(">I")
#: The most descriptors one frame carries: a job's result pipe, its stdout's and its stderr's.
MAX_FDS = 4


def send_message(sock: socket.socket, message: Any, fds: Sequence[int] = ()) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    data = FRAME.pack(len(body)) + body
    sent = socket.send_fds(sock, [data], list(fds)) if fds else sock.send(data)
    if sent < len(data):
        sock.sendall(data[sent:])


def _read_exactly(sock: socket.socket, size: int, buffer: bytearray) -> bool:
    while len(buffer) < size:
        chunk = sock.recv(size - len(buffer))
        if not chunk:
            return False
        buffer += chunk
    return True


def receive_message(sock: socket.socket) -> tuple[Any, list[int]] | None:
    """One whole message and the descriptors sent with it (blocking); None at end of file, or
    when the other side has gone."""
    try:
        return _receive_frame(sock)
    except ConnectionError:
        return None


def _receive_frame(sock: socket.socket) -> tuple[Any, list[int]] | None:
    head, fds, _, _ = socket.recv_fds(sock, FRAME.size, MAX_FDS)
    if not head:
        return None
    buffer = bytearray(head)
    if not _read_exactly(sock, FRAME.size, buffer):
        return None
    (size,) = FRAME.unpack(buffer)
    body = bytearray()
    if not _read_exactly(sock, size, body):
        return None
    return pickle.loads(body), fds
