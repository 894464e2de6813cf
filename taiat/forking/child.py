"""What runs in a job's forked child: its own process group, default signals, death with the
supervisor, the executor, and the result sent back over the pipe as one framed JSON message.

The child never returns into the supervisor's code: it always leaves through `os._exit`.
"""

from __future__ import annotations

import _signal
import ctypes
import functools
import json
import marshal
import os
import pickle
import resource
import signal
import struct
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from taiat import context
from taiat.agents.executors import Expansion, JobExecutor
from taiat.errors import FinalFailure, InvalidJob, JobFailed
from taiat.jobs import Job
from taiat.store.validation import json_text

#: A message is an 8-byte big-endian length, then that many bytes of UTF-8 JSON.
HEADER = struct.Struct(">Q")
#: A message over this many bytes is a success's result and nothing else: it begins with
#: RESULT_PREFIX and ends with RESULT_SUFFIX, and the supervisor keeps its middle, the result's
#: JSON text, in a file as it arrives (`taiat.supervisor.large_results`). Errors are cut to
#: fit below it.
LARGE_MESSAGE = 1 << 20
RESULT_PREFIX = b'{"ok": true, "result": '
RESULT_SUFFIX = b"}"
#: Characters of an error message, and of its traceback, kept when the message would be large.
_ERROR_CHARS = 64 << 10
TRACEBACK_LINES = 12
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36

# Plain numbers, for `_signal`'s functions: those of `signal` turn every answer into an enum,
# which in a job's fresh child is mostly page faults.
_RESET_SIGNALS = tuple(
    int(signum)
    for signum in (
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGHUP,
        signal.SIGCHLD,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGPIPE,
        signal.SIGQUIT,
    )
)
_SIG_DFL = int(signal.SIG_DFL)


def run(
    job: Job | bytes,
    executors: Sequence[JobExecutor],
    result_fd: int,
    supervisor_pid: int,
    max_result_bytes: int,
    engine: Any,
    after_fork: Any = None,
    dependency_results: dict[str, Any] | None = None,
) -> NoReturn:
    """The child's whole life. Exit code 0 once the result message is sent.

    `job` is a Job, or a job and its dependency results as `seal` sealed them (as the fork
    server receives them and leaves them for the child to open). `engine` (an Engine or a URL)
    serves `current_job()` reads; `dependency_results`, when the supervisor read them already,
    spare the child that.
    """
    code = 70  # EX_SOFTWARE: something in this very function went wrong
    try:
        become_independent(supervisor_pid)
        if after_fork is not None:
            after_fork()
        if isinstance(job, bytes):
            job, dependency_results = unseal(job)
        context.set_current(context.JobContext(job, engine, dependency_results))
        message = _execute(job, executors)
        _send(result_fd, _encode(message, max_result_bytes))
        code = 0
    except SystemExit as exc:
        # sys.exit() inside the job: 0 or None is success without a result.
        exit_code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exit_code == 0:
            _send(result_fd, _encode({"ok": True, "result": None}, max_result_bytes))
        else:
            _send(result_fd, _encode(_error(f"job called sys.exit({exc.code!r})"), 1 << 20))
        code = exit_code
    except BaseException:  # noqa: BLE001 - the child must never unwind into the supervisor
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def seal(job: Job, dependency_results: dict[str, Any] | None) -> bytes:
    """The job and its dependency results, as the fork server passes them on unopened to the
    job's child. By `marshal`, whose reading costs a fresh child the fewest page copies, when
    every value is JSON and every time naive or UTC (as they are when the job came from the
    database); else by `pickle`."""
    try:
        return b"m" + marshal.dumps((job.to_plain(), dependency_results))
    except ValueError:  # a value marshal cannot carry
        return b"p" + pickle.dumps((job, dependency_results), protocol=pickle.HIGHEST_PROTOCOL)


def unseal(sealed: bytes) -> tuple[Job, dict[str, Any] | None]:
    """What `seal` sealed."""
    body = memoryview(sealed)[1:]
    if sealed[:1] == b"m":
        plain, dependency_results = marshal.loads(body)
        return Job.from_plain(plain), dependency_results
    return pickle.loads(body)  # type: ignore[no-any-return]


def become_independent(supervisor_pid: int) -> None:
    """Its own process group, default signals, death with the supervisor, no core files."""
    os.setpgrp()  # its own process group, so a kill reaches everything it starts
    _signal.set_wakeup_fd(-1)
    for signum in _RESET_SIGNALS:
        _signal.signal(signum, _SIG_DFL)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
    # Die with the supervisor, even by SIGKILL; and if it is gone already, go now.
    die_with_parent()
    if os.getppid() != supervisor_pid:
        os._exit(1)
    # What the job starts stays below it, even a process that double-forks into a session of
    # its own: such orphans come to this process, not to init, so their memory counts as the
    # job's, and when the job ends they come to its parent, which kills them.
    become_subreaper()
    # No core files from crashing jobs filling the disk.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def die_with_parent() -> None:
    """Be killed (SIGKILL) when the parent process dies, whatever kills it."""
    _prctl()(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def become_subreaper() -> None:
    """Adopt the orphaned descendants of this process (PR_SET_CHILD_SUBREAPER): they come to it
    rather than to init, and it is theirs to reap."""
    _prctl()(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def children_of_this_process() -> list[int]:
    """The pids of this process's children, zombies included, from /proc (an empty list where
    the kernel does not say)."""
    pids: list[int] = []
    try:
        threads = os.listdir("/proc/self/task")
    except OSError:
        return pids
    for thread in threads:
        try:
            fd = os.open(f"/proc/self/task/{thread}/children", os.O_RDONLY)
        except OSError:
            continue
        try:
            data = b""
            while chunk := os.read(fd, 65536):
                data += chunk
        except OSError:
            pass
        finally:
            os.close(fd)
        pids += map(int, data.split())
    return pids


def kill_tree(pid: int) -> None:
    """SIGKILL a process left behind, and the process group it leads, if it leads one (one
    that called setsid does)."""
    for target in (-pid, pid):
        try:
            os.kill(target, signal.SIGKILL)
        except OSError:
            pass


def prepare_to_fork() -> None:
    """Look up now, in the process that forks, what every child would look up again."""
    _prctl()


@functools.cache
def _prctl() -> Any:
    """libc's prctl, looked up once in the process that forks, not again in every child."""
    return ctypes.CDLL(None, use_errno=True).prctl


def _execute(job: Job, executors: Sequence[JobExecutor]) -> dict[str, Any]:
    executor = next((e for e in executors if e.can_execute(job)), None)
    if executor is None:
        return _error(f"no executor can run {job.job_type.value} job {job.name}")
    try:
        result = executor.execute(job)
    except FinalFailure as exc:
        return {**_error(str(exc)), "final": True}
    except JobFailed as exc:
        return _error(str(exc))
    except Exception as exc:  # noqa: BLE001 - any failure of the job's code is its result
        lines = traceback.format_exception(exc)
        tail = "".join(lines).rstrip().splitlines()[-TRACEBACK_LINES:]
        return _error(f"{type(exc).__name__}: {exc}", "\n".join(tail))
    if isinstance(result, Expansion):
        return {"ok": True, "plan": result.plan.to_json()}
    if isinstance(result, dict) and result.get("success") is False:
        return _error(str(result.get("error") or "the executor reported failure"))
    return {"ok": True, "result": result}


def _error(message: str, trace: str | None = None) -> dict[str, Any]:
    return {"ok": False, "error": message, "traceback": trace}


def _encode(message: dict[str, Any], max_bytes: int) -> bytes:
    try:
        # Its text is made valid by the supervisor, which trusts none of it anyway.
        body = json_text(message, "result", refuse_nul=False).encode()
    except InvalidJob as exc:
        body = json.dumps(_error(str(exc))).encode()
    if len(body) > max_bytes:
        over = _error(f"result of {len(body)} bytes is over the limit of {max_bytes} bytes")
        body = json.dumps(over).encode()
    elif len(body) > LARGE_MESSAGE and not body.startswith(RESULT_PREFIX):
        body = json.dumps(_small(message, len(body))).encode()
    return HEADER.pack(len(body)) + body


def _small(message: dict[str, Any], size: int) -> dict[str, Any]:
    """A message other than a result, made to fit below LARGE_MESSAGE: an error's text cut,
    a plan refused."""
    if message.get("ok"):
        return _error(f"a plan of {size} bytes is over the {LARGE_MESSAGE} bytes a plan may take")
    return {
        **message,
        "error": _cut(message.get("error")),
        "traceback": _cut(message.get("traceback")),
    }


def _cut(text: Any) -> Any:
    if not isinstance(text, str) or len(text) <= _ERROR_CHARS:
        return text
    return f"{text[:_ERROR_CHARS]}... ({len(text) - _ERROR_CHARS} more characters cut)"


def _send(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.close(fd)
