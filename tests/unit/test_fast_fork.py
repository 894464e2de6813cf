"""The fork server's fork: through libc while the process has one thread, with `os.fork()`'s
hooks kept; `os.fork()` itself once there is another thread. Each case runs in a fresh
interpreter, whose threads the test decides."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCENARIO = """
import json, os, random, sys, threading
from taiat.forking.fast_fork import QuickFork

forks = []
real_fork = os.fork
def counted_fork():
    forks.append(1)
    return real_fork()
os.fork = counted_fork

forker = QuickFork()
events = []
os.register_at_fork(
    before=lambda: events.append("before"),
    after_in_parent=lambda: events.append("parent"),
    after_in_child=lambda: events.append("child"),
)
def fails():
    raise SystemExit(3)  # reported, and the fork goes on
os.register_at_fork(after_in_child=fails)
if sys.argv[1] == "threaded":
    go = threading.Event()
    helper = threading.Thread(target=go.wait)
    helper.start()
quick = forker.quick()
draws, seen = [], []
for _ in range(2):
    read_end, write_end = os.pipe()
    pid = forker.fork()
    if pid == 0:
        os.write(write_end, json.dumps([random.random(), events]).encode())
        os._exit(0)
    os.close(write_end)
    draw, child_events = json.loads(os.read(read_end, 65536))
    os.close(read_end)
    os.waitpid(pid, 0)
    draws.append(draw)
    seen.append(child_events)
if sys.argv[1] == "threaded":
    go.set()
    helper.join()
print(json.dumps({"quick": quick, "os_forks": len(forks), "draws": draws, "children": seen,
                  "parent": events}))
"""


def scenario(threads: str) -> dict:
    """What the children and the parent saw; and the failing hook reported, once a child."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCENARIO), threads],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stderr.count("SystemExit: 3") == 2, done.stderr
    return json.loads(done.stdout)


def test_one_thread_forks_through_libc_and_keeps_the_hooks() -> None:
    seen = scenario("alone")
    assert seen["quick"] and seen["os_forks"] == 0
    assert seen["draws"][0] != seen["draws"][1]  # each child reseeded
    assert seen["children"] == [["before", "child"], ["before", "parent", "before", "child"]]
    assert seen["parent"] == ["before", "parent", "before", "parent"]


def test_another_thread_means_os_fork() -> None:
    seen = scenario("threaded")
    assert not seen["quick"] and seen["os_forks"] == 2
    assert seen["draws"][0] != seen["draws"][1]
    assert seen["children"] == [["before", "child"], ["before", "parent", "before", "child"]]
