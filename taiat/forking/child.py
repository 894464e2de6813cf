"""What runs in a job's forked child: its cgroup joined (in a sandbox), its own process group,
default signals, death with the supervisor, the executor, and the result sent back over the
pipe as one framed JSON message.

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
from taiat.forking import posix, stacks, wire
from taiat.forking.job_user import JobUser, become
from taiat.jobs import Job
from taiat.sandbox import cgroups

TRACEBACK_LINES = 12


def run(
    job: Job | bytes,
    executors: Sequence[JobExecutor],
    result_fd: int,
    supervisor_pid: int,
    max_result_bytes: int,
    after_fork: Any = None,
    dependency_results: dict[str, Any] | None = None,
    output_fds: Sequence[int] = (),
    catalogue: dict[str, Any] | None = None,
    job_user: JobUser | None = None,
    stack_fd: int = -1,
    cgroup_procs: Sequence[str] = (),
    independent: bool = False,
) -> NoReturn:
    """The child's whole life. Exit code 0 once the result message is sent.

    `job` is a Job, or a job and its dependency results as `wire.seal` sealed them (as the fork
    server receives them and leaves them for the child to open). The child never opens the
    database: the supervisor read the dependency results in the claim's own transaction.
    `after_fork` lets go of what the child inherited from a supervisor that forked it.
    `output_fds`, the write ends of the pipes the supervisor reads the job's stdout and stderr
    from, become descriptors 1 and 2, which everything the job starts inherits. `catalogue`,
    for a query job: the live fleet's agents its claim read, to plan it with. With `job_user`,
    the child becomes that user (`taiat.forking.job_user`) before it opens the job.
    `stack_fd`, if given, is where the child dumps its stack when the supervisor asks
    (`stacks.listen`). `cgroup_procs`, in a sandbox: the `cgroup.procs` files of the job's
    cgroup, which the child joins before anything of the job runs (and before it becomes the
    job user, which could not write them). `independent`: the child became independent of
    its parent already (`posix.become_independent`), as one forked ahead does while it waits.
    """
    code = 70  # EX_SOFTWARE: something in this very function went wrong
    try:
        if cgroup_procs:
            cgroups.join(cgroup_procs)
        if output_fds:
            _write_output_to(output_fds)
        if not independent:
            posix.become_independent(supervisor_pid)
        if stack_fd >= 0:
            stacks.listen(stack_fd)
        if after_fork is not None:
            after_fork()
        if job_user is not None:
            kept = (result_fd, stack_fd) if stack_fd >= 0 else (result_fd,)
            become(job_user, supervisor_pid, keep=kept)
        if isinstance(job, bytes):
            job, dependency_results, catalogue = wire.unseal_claim(job)
        context.set_current(context.JobContext(job, dependency_results or {}, catalogue))
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
        _flush(sys.stdout)
        _flush(sys.stderr)
        os._exit(code)


def _flush(stream: Any) -> None:
    """Flush what is left of a stream; whatever goes wrong (the supervisor gone, and the pipe
    with it), the child still leaves through `os._exit`."""
    try:
        stream.flush()
    except BaseException:  # noqa: BLE001 - nothing more to be done for it
        pass


def _write_output_to(fds: Sequence[int]) -> None:
    """Make `fds` (two pipes' write ends) the process's stdout and stderr: its descriptors 1 and
    2, and `sys.stdout` and `sys.stderr`, line-buffered so that what a job prints reaches the
    supervisor as it goes (and is not lost in a buffer when the job is killed)."""
    for fd, target in zip(fds, (1, 2), strict=True):
        if fd != target:
            os.dup2(fd, target)
            os.close(fd)
    sys.stdout = _line_buffered(sys.stdout, 1)
    sys.stderr = _line_buffered(sys.stderr, 2)


def _line_buffered(stream: Any, fd: int) -> Any:
    """`stream` itself, line-buffered, if it writes to descriptor `fd` (the fork server's are,
    from its start: its children need not pay for it); else (a program that forks jobs itself
    may have put something else there) a new stream on `fd`."""
    try:
        if stream.fileno() == fd:
            if not stream.line_buffering:
                stream.reconfigure(line_buffering=True)
            return stream
    except (AttributeError, OSError, ValueError):
        pass
    return open(fd, "w", buffering=1, errors="backslashreplace", closefd=False)


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
