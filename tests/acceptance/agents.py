"""Agents that misbehave in every way a job can, for the supervisor's acceptance tests."""

from __future__ import annotations

import ctypes
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import taiat
from taiat.sandbox.cgroups import parse_own_cgroups


def plain(value: object = None) -> dict:
    return {"value": value, "pid": os.getpid()}


def busy(seconds: float = 0.3) -> dict:
    end = time.process_time() + seconds
    count = 0
    while time.process_time() < end:
        count += 1
    return {"loops": count}


def segfault() -> None:
    ctypes.string_at(0)


def exit_hard(code: int = 3) -> None:
    os._exit(code)


def exit_soft(code: int = 2) -> None:
    sys.exit(code)


def explode(message: str = "kaboom") -> None:
    raise ValueError(message)


def sleep(seconds: float = 60.0, pid_file: str | None = None) -> dict:
    if pid_file:
        Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)
    return {"slept": seconds}


def stubborn(seconds: float = 60.0, pid_file: str | None = None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sleep(seconds, pid_file)


def hog(megabytes: int = 400) -> None:
    block = bytearray(megabytes << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    signal.pause()  # hold it until the supervisor kills us


def allocate(megabytes: int = 200, seconds: float = 0.3) -> int:
    """Take `megabytes` MiB, touched, hold them `seconds`, and end: a job's peak memory."""
    block = bytearray(megabytes << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(seconds)
    return len(block) >> 20


def orphan_maker(pid_file: str) -> dict:
    child = subprocess.Popen(["sleep", "300"], start_new_session=False)
    Path(pid_file).write_text(str(child.pid))
    return {"grandchild": child.pid}


def write_file(path: str, megabytes: int = 300, keep: bool = False) -> int:
    """Write `megabytes` MiB to `path` and read them back (page cache charged to the job's
    memory cgroup), then delete the file unless `keep`; the bytes read."""
    block = b"\x01" * (1 << 20)
    with open(path, "wb") as out:
        for _ in range(megabytes):
            out.write(block)
    read = 0
    with open(path, "rb") as back:
        while chunk := back.read(1 << 20):
            read += len(chunk)
    if not keep:
        os.unlink(path)
    return read


def unserialisable() -> object:
    return {"when": object()}


def huge(megabytes: int = 100) -> str:
    return "x" * (megabytes << 20)


def whoami() -> dict:
    job = taiat.current_job()
    return {
        "id": job.id,
        "name": job.name,
        "attempt": job.attempt,
        "payload": job.payload,
        "dependency_results": job.dependency_results,
    }


def flaky(marker: str) -> str:
    """Fails on the first attempt, succeeds on the next."""
    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise RuntimeError("first attempt fails")
    return "second attempt works"


def append(path: str, seconds: float = 0.0) -> str:
    """Append this job's id to a file (one write, O_APPEND: lines never interleave)."""
    if seconds:
        time.sleep(seconds)
    job_id = taiat.current_job().id
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{job_id}\n".encode())
    finally:
        os.close(fd)
    return job_id


def parent_pid() -> int:
    """The pid of the process that forked this job's child."""
    return os.getppid()


def where() -> dict:
    """The job's process, its parent, and its cgroup's memory limit (None outside a cgroup)."""
    limit = None
    for controller, path in parse_own_cgroups(Path("/proc/self/cgroup").read_text()).items():
        folder = Path("/sys/fs/cgroup", "memory" if controller else "", path.lstrip("/"))
        for name in ("memory.limit_in_bytes", "memory.max"):
            if controller in ("memory", "") and (folder / name).is_file():
                limit = (folder / name).read_text().strip()
    return {"pid": os.getpid(), "ppid": os.getppid(), "memory_limit": limit}


def db_stack_loaded() -> dict:
    """The job's dependency results, and whether reading them loaded the database stack."""
    results = taiat.current_job().dependency_results
    return {"results": results, "sqlalchemy": "sqlalchemy" in sys.modules}


def random_draw() -> float:
    """A draw from `random`'s shared generator: every job's child must have its own seed."""
    import random

    return random.random()


def threads() -> dict:
    """Start a thread and join it, and log from both: the child's threads and locks work."""
    import logging
    import threading

    log = logging.getLogger("threads")
    seen: list[int] = []

    def work() -> None:
        log.warning("from the thread")
        seen.append(threading.get_ident())

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(10)
    log.warning("from the main thread")
    main = threading.main_thread()
    return {
        "joined": len(seen) == 1 and not worker.is_alive(),
        "main_is_current": threading.current_thread() is main,
        "main_ident": main.ident == threading.get_ident(),
        "threads": threading.active_count(),
    }


class _HeldFlush:
    """A stdout whose flush waits for a file: a child that has sent its result but not exited."""

    def __init__(self, stream: object, marker: Path) -> None:
        self.stream = stream
        self.marker = marker

    def write(self, text: str) -> int:
        return self.stream.write(text)  # type: ignore[attr-defined, no-any-return]

    def flush(self) -> None:
        deadline = time.monotonic() + 60
        while not self.marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.stream.flush()  # type: ignore[attr-defined]


def linger(marker: str, pid_file: str) -> dict:
    """Return a result at once, then hold the child's exit until `marker` exists."""
    Path(pid_file).write_text(str(os.getpid()))
    sys.stdout = _HeldFlush(sys.stdout, Path(marker))
    return {"lingered": True}


def deep(levels: int = 985) -> list:
    """A result nested `levels` deep: deeper than the encoders on its way to the store go."""
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


def undecodable(where: str = "result") -> dict:
    """A file name as `os.listdir` gives one whose bytes are not UTF-8 (a lone surrogate), and
    a NUL: in the result (as a value and as a key), or in the error it raises."""
    name = os.fsdecode(b"report-\xff.txt")
    if where == "error":
        raise ValueError("bad file name " + name)
    return {"files": [name, "nul\x00byte"], name: {"nested": [name]}}


def pipe_writer(body: str) -> None:
    """Write `body` to the result pipe in the child's own framing, as job code can, and leave
    before the child sends its real result."""
    import struct

    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        try:
            is_pipe = os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
            flags = Path(f"/proc/self/fdinfo/{fd}").read_text().split("flags:")[1].split()[0]
        except (OSError, IndexError):
            continue
        if fd > 2 and is_pipe and int(flags, 8) & os.O_ACCMODE == os.O_WRONLY:
            data = body.encode()
            os.write(fd, struct.pack(">Q", len(data)) + data)
    os._exit(0)


def escape(
    pid_file: str, megabytes: int = 0, seconds: float = 0.0, memory_first: bool = False
) -> dict:
    """Leave a process behind in a session of its own (fork, setsid, fork: a daemon's double
    fork) that tells its pid, then holds `megabytes`; return once it has told its pid, after
    `seconds` more. `memory_first`: it takes its memory before it tells its pid, so that the
    job ends only once that memory is held, however slow the machine."""

    def hold() -> bytearray:
        block = bytearray(megabytes << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        return block

    escaped = _daemon(pid_file, before=hold) if memory_first else _daemon(pid_file, after=hold)
    time.sleep(seconds)
    return {"escaped": escaped}


def _daemon(pid_file: str, before: Any = None, after: Any = None) -> int:
    """Leave a process behind (fork, setsid, fork) that calls `before`, writes its pid to
    `pid_file`, calls `after` and sleeps, holding what both returned; its pid, once
    written."""
    middle = os.fork()
    if middle == 0:
        os.setsid()
        if os.fork() == 0:
            taken = before() if before is not None else None  # kept while it sleeps
            Path(pid_file + ".tmp").write_text(str(os.getpid()))
            os.rename(pid_file + ".tmp", pid_file)
            held = after() if after is not None else None  # kept too
            time.sleep(300)
            del taken, held
        os._exit(0)
    os.waitpid(middle, 0)
    deadline = time.monotonic() + 30
    while not Path(pid_file).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return int(Path(pid_file).read_text())


def leave_behind(pid_file: str, count: int = 2, seconds: float = 0.0, zombies: int = 0) -> dict:
    """Leave `count` processes behind, each in a session of its own (a daemon's double fork),
    and return once each has told its pid in `pid_file` (one a line), after `seconds` more.
    First, `zombies` children that exit at once, left unreaped (zombies) once they have."""
    for _ in range(zombies):
        zombie = os.fork()
        if zombie == 0:
            os._exit(0)
        os.waitid(os.P_PID, zombie, os.WEXITED | os.WNOWAIT)
    for _ in range(count):
        middle = os.fork()
        if middle == 0:
            os.setsid()
            if os.fork() == 0:
                with open(pid_file, "a") as pids:
                    pids.write(f"{os.getpid()}\n")
                time.sleep(300)
            os._exit(0)
        os.waitpid(middle, 0)
    told: list[str] = []
    deadline = time.monotonic() + 30
    while len(told) < count and time.monotonic() < deadline:
        time.sleep(0.01)
        told = Path(pid_file).read_text().split() if Path(pid_file).exists() else []
    time.sleep(seconds)
    return {"left": [int(pid) for pid in told]}


def kill_parent(wait_for: str | None = None, signum: int = signal.SIGKILL) -> int:
    """Signal the process that forked this job's (its fork server) with `signum`, once the file
    `wait_for` exists; then wait a moment for what comes of it."""
    deadline = time.monotonic() + 30
    while wait_for and not Path(wait_for).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(os.getppid(), signum)
    time.sleep(30 if signum in (signal.SIGKILL, signal.SIGSTOP) else 0.5)
    return signum


def chatty(text: str = "hello", fail_once: str | None = None) -> str:
    """Write to stdout and to stderr, and have a grandchild (a shell) write to both, each line
    naming the attempt; with `fail_once`, a file that does not exist yet, fail this attempt
    (the first) after writing."""
    attempt = taiat.current_job().attempt
    print(f"{text} on stdout, attempt {attempt}")
    print(f"{text} on stderr, attempt {attempt}", file=sys.stderr)
    script = f'echo "{text} from a grandchild, attempt {attempt}"; echo "{text} grandchild err" >&2'
    subprocess.run(["sh", "-c", script], check=True)
    if fail_once and not Path(fail_once).exists():
        Path(fail_once).write_text("failed once")
        raise RuntimeError("first attempt fails")
    return text


def flood(megabytes: int = 100) -> int:
    """Write `megabytes` MiB of 64-byte lines to stdout, then one last line."""
    block = (b"x" * 63 + b"\n") * (1 << 14)  # 1 MiB
    for _ in range(megabytes):
        os.write(1, block)
    print("the last line")
    return megabytes


def print_and_wait(marker: str, text: str = "before the marker") -> str:
    """Print `text`, wait for the file `marker`, then print once more and end."""
    print(text)
    deadline = time.monotonic() + 60
    while not Path(marker).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    print("after the marker")
    return text


def print_and_hang(text: str = "last words") -> None:
    """Print a line, then sleep until killed (its timeout)."""
    print(text)
    time.sleep(300)


def try_the_supervisor(supervisor_pid: int, status_file: str = "") -> dict:
    """Who the job runs as, and what it meets when it signals its supervisor and its parent,
    takes root back, or reads the status file: the errno of each refusal, or 0."""

    def attempt(action: object) -> int:
        try:
            action()  # type: ignore[operator]
        except OSError as exc:
            return exc.errno or -1
        return 0

    def read_status() -> None:
        with open(status_file, "rb") as file:
            file.read(1)

    return {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "groups": os.getgroups(),
        "home": os.environ.get("HOME"),
        "user": os.environ.get("USER"),
        "logname": os.environ.get("LOGNAME"),
        "cwd_usable": os.access(os.getcwd(), os.X_OK),
        "probe_supervisor": attempt(lambda: os.kill(supervisor_pid, 0)),
        "sigterm_supervisor": attempt(lambda: os.kill(supervisor_pid, signal.SIGTERM)),
        "probe_parent": attempt(lambda: os.kill(os.getppid(), 0)),
        "become_root": attempt(lambda: os.setuid(0)),
        "read_status": attempt(read_status) if status_file else None,
        "open_files": _open_files_and_sockets(),
        "stdin_is_null": os.path.samestat(os.fstat(0), os.stat(os.devnull)),
        "settings": sorted(n for n in os.environ if n.startswith("TAIAT_")),
    }


def _open_files_and_sockets() -> list[int]:
    """The descriptors above 2 open on a file or a socket (not a pipe, nor /dev/null)."""
    found = []
    for number in range(3, 1024):
        try:
            mode = os.fstat(number).st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode) or stat.S_ISSOCK(mode):
            found.append(number)
    return found


def stuck(seconds: float = 60.0, pid_file: str | None = None) -> None:
    """Waits in a function of its own, as an agent waits on an API that never answers."""
    wait_for_api(seconds, pid_file)


def wait_for_api(seconds: float, pid_file: str | None) -> None:
    if pid_file:
        Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)  # where it hangs


def gobble(megabytes: int = 2048) -> int:
    """Allocate `megabytes` as fast as it can: one allocation, every page written at once."""
    block = b"\x01" * (megabytes << 20)
    return len(block)


def fork_bomb(seconds: float = 60.0) -> None:
    """Every process forks as fast as it can, for `seconds` (what a cap must stop)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.fork()
        except OSError:
            time.sleep(0.01)
    os._exit(0)


def lift_limits() -> dict:
    """What a job meets when it tries to lift its cgroup's memory limit or to leave its group
    for its supervisor's: the errno of each refusal, or 0 (and who it runs as)."""
    own = parse_own_cgroups(Path("/proc/self/cgroup").read_text())
    if "memory" in own:  # v1
        group = Path("/sys/fs/cgroup/memory") / own["memory"].lstrip("/")
        limit, supervisors = group / "memory.limit_in_bytes", group.parent.parent
    else:
        group = Path("/sys/fs/cgroup") / own[""].lstrip("/")
        limit, supervisors = group / "memory.max", group.parent / "supervisor"

    def attempt(path: Path, value: str) -> int:
        try:
            path.write_text(value)
        except OSError as exc:
            return exc.errno or -1
        return 0

    return {
        "uid": os.getuid(),
        "group": str(group),
        "lift": attempt(limit, "-1" if "memory" in own else "max"),
        "leave": attempt(supervisors / "cgroup.procs", str(os.getpid())),
    }


def leave_group(pid_file: str) -> dict:
    """Leave a process behind (a double fork and setsid) that moves itself out of the job's
    cgroups into its supervisor's (as root may, v1), tells its pid, and sleeps."""

    def leave() -> None:
        own = parse_own_cgroups(Path("/proc/self/cgroup").read_text())
        for controller, path in own.items():
            if controller and "/taiat-" in path:
                group = Path("/sys/fs/cgroup") / controller / path.lstrip("/")
                (group.parent.parent / "cgroup.procs").write_text("0")

    left = _daemon(pid_file, before=leave)
    return {"left": left, "cgroup": Path(f"/proc/{left}/cgroup").read_text()}
