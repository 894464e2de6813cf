"""faulthandler's dump read for where a job's main thread was."""

from __future__ import annotations

import os
import signal
import time

from taiat.forking import stacks

TWO_THREADS = """\
Thread 0x00007f438dbee6c0 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 324 in wait
  File "/usr/lib/python3.11/threading.py", line 1002 in _bootstrap

Current thread 0x00007f438ea2fb80 (most recent call first):
  File "/srv/agents.py", line 12 in wait_for_api
  File "/srv/agents.py", line 30 in run_agent
  File "<string>", line 1 in <module>
"""


def test_the_innermost_frame_of_the_main_thread_which_comes_last() -> None:
    where = stacks.innermost(TWO_THREADS)
    assert where == 'File "/srv/agents.py", line 12, in wait_for_api'


def test_the_main_thread_need_not_be_the_current_one() -> None:
    dump = TWO_THREADS.replace("Current thread", "Thread").replace(
        "Thread 0x00007f438dbee6c0", "Current thread 0x00007f438dbee6c0"
    )
    assert stacks.innermost(dump) == 'File "/srv/agents.py", line 12, in wait_for_api'


def test_a_single_thread_dump_and_odd_file_names() -> None:
    dump = 'Stack (most recent call first):\n  File "/tmp/a, b".py", line ??? in <lambda>\n'
    assert stacks.innermost(dump) == 'File "/tmp/a, b".py", line ???, in <lambda>'


def test_no_frame_in_the_main_thread_is_no_place() -> None:
    dump = "Current thread 0x00007f (most recent call first):\n  <no Python frame>\n"
    assert stacks.innermost(dump) is None
    assert stacks.innermost("") is None
    assert stacks.innermost("garbage a job wrote\n") is None


def test_a_dump_is_whole_once_the_main_thread_reached_its_module() -> None:
    assert stacks.whole(TWO_THREADS)
    assert not stacks.whole(TWO_THREADS.rsplit("\n", 2)[0] + "\n")
    assert not stacks.whole(TWO_THREADS.rstrip("\n"))


def test_a_forked_child_dumps_its_stack_and_runs_on() -> None:
    read_end, write_end = stacks.open_pipe()
    pid = os.fork()
    if pid == 0:  # the child: waits in a function of its own, then exits 0
        try:
            stacks.listen(write_end)
            os.write(write_end, b"ready\n")

            def sleeping_here() -> None:
                time.sleep(2)

            sleeping_here()
        finally:
            os._exit(0)
    os.close(write_end)
    reader = stacks.StackReader(read_end)
    try:
        deadline = time.monotonic() + 10
        while b"ready" not in _peek(read_end) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reader.ask(pid, time.monotonic(), wait=5)
        while not reader.done(time.monotonic()):
            time.sleep(0.01)
            reader.read(time.monotonic())
        dump = reader.take()
        assert dump is not None
        where = stacks.innermost(dump)
        assert where is not None and where.endswith("in sleeping_here"), dump
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0  # it ran on, and ended as it would have
    finally:
        reader.close()
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _peek(fd: int) -> bytes:
    try:
        return os.read(fd, 64)
    except BlockingIOError:
        return b""
