"""What runs in a job's forked child: its own process group, default signals, death with the
supervisor, the executor, and the result sent back over the pipe as one framed JSON message.

The child never returns into the supervisor's code: it always leaves through `os._exit`.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from taiat import context
from taiat.agents.executors import Expansion, JobExecutor
from taiat.errors import FinalFailure, JobFailed
from taiat.forking import posix, wire
from taiat.jobs import Job

TRACEBACK_LINES = 12


def run(
    job: Job | bytes,
    executors: Sequence[JobExecutor],
    result_fd: int,
    supervisor_pid: int,
    max_result_bytes: int,
    after_fork: Any = None,
    dependency_results: dict[str, Any] | None = None,
) -> NoReturn:
    """The child's whole life. Exit code 0 once the result message is sent.

    `job` is a Job, or a job and its dependency results as `wire.seal` sealed them (as the fork
    server receives them and leaves them for the child to open). The child never opens the
    database: the supervisor read the dependency results in the claim's own transaction.
    `after_fork` lets go of what the child inherited from a supervisor that forked it.
    """
    code = 70  # EX_SOFTWARE: something in this very function went wrong
    try:
        posix.become_independent(supervisor_pid)
        if after_fork is not None:
            after_fork()
        if isinstance(job, bytes):
            job, dependency_results = wire.unseal(job)
        context.set_current(context.JobContext(job, dependency_results or {}))
        message = _execute(job, executors)
        _send(result_fd, wire.encode_message(message, max_result_bytes))
        code = 0
    except SystemExit as exc:
        # sys.exit() inside the job: 0 or None is success without a result.
        exit_code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exit_code == 0:
            _send(result_fd, wire.encode_message({"ok": True, "result": None}, max_result_bytes))
        else:
            _send(
                result_fd,
                wire.encode_message(
                    wire.error_message(f"job called sys.exit({exc.code!r})"), 1 << 20
                ),
            )
        code = exit_code
    except BaseException:  # noqa: BLE001 - the child must never unwind into the supervisor
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _execute(job: Job, executors: Sequence[JobExecutor]) -> dict[str, Any]:
    executor = next((e for e in executors if e.can_execute(job)), None)
    if executor is None:
        return wire.error_message(f"no executor can run {job.job_type.value} job {job.name}")
    try:
        result = executor.execute(job)
    except FinalFailure as exc:
        return {**wire.error_message(str(exc)), "final": True}
    except JobFailed as exc:
        return wire.error_message(str(exc))
    except Exception as exc:  # noqa: BLE001 - any failure of the job's code is its result
        lines = traceback.format_exception(exc)
        tail = "".join(lines).rstrip().splitlines()[-TRACEBACK_LINES:]
        return wire.error_message(f"{type(exc).__name__}: {exc}", "\n".join(tail))
    if isinstance(result, Expansion):
        return {"ok": True, "plan": result.plan.to_json()}
    if isinstance(result, dict) and result.get("success") is False:
        return wire.error_message(str(result.get("error") or "the executor reported failure"))
    return {"ok": True, "result": result}


def _send(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.close(fd)
