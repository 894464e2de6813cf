"""`--job-user`: the user looked up and checked at start, which folders it can read, and the
switch a job's child makes (in a forked child: it needs root, so under CI=true only)."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import pytest

from taiat.errors import ConfigurationError
from taiat.forking.job_user import (
    EXIT_NO_DROP,
    JobUser,
    become,
    can_read,
    check_import_path,
    resolve,
    unreadable,
)


def test_a_user_that_does_not_exist_is_refused_with_its_name() -> None:
    with pytest.raises(ConfigurationError, match="'no-such-user-taiat': no such user"):
        resolve("no-such-user-taiat")


def test_root_is_refused_as_a_job_user() -> None:
    with pytest.raises(ConfigurationError, match="'root': it is root"):
        resolve("root")


def test_a_supervisor_that_is_not_root_cannot_switch_users() -> None:
    if os.geteuid() == 0:
        if os.environ.get("CI") != "true":
            pytest.skip("run as root: a child that gives up root would say it (runs under CI=true)")
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # as nobody, as a supervisor started as nobody would be
            os.close(read_end)
            code = 1
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                resolve("nobody")
            except ConfigurationError as exc:
                os.write(write_end, str(exc).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as reader:
            message = reader.read().decode()
        os.waitpid(pid, 0)
    else:
        with pytest.raises(ConfigurationError) as caught:
            resolve("nobody")
        message = str(caught.value)
    assert "jobs cannot run as user" in message
    assert "only root can switch users" in message


def test_nobody_is_resolved_with_its_groups_and_home() -> None:
    if os.geteuid() != 0:
        pytest.skip("only root may become another user")
    entry = pwd.getpwnam("nobody")
    user = resolve("nobody")
    assert (user.name, user.uid, user.gid) == ("nobody", entry.pw_uid, entry.pw_gid)
    assert user.gid in user.groups
    assert user.home == entry.pw_dir


def _owner_of(path: Path) -> JobUser:
    found = path.stat()
    return JobUser("owner", found.st_uid, found.st_gid, (found.st_gid,), "/")


STRANGER = JobUser("stranger", 2_000_000_001, 2_000_000_001, (2_000_000_001,), "/")


def test_a_folder_is_readable_by_its_modes_and_those_above_it(tmp_path: Path) -> None:
    owner = _owner_of(tmp_path)
    open_folder = tmp_path / "open"
    open_folder.mkdir(mode=0o755)
    open_folder.chmod(0o755)
    shut = tmp_path / "shut"
    shut.mkdir()
    shut.chmod(0o300)  # may enter, may not list
    inner = shut / "inner"
    inner.mkdir()

    assert can_read(owner, str(open_folder))
    assert not can_read(owner, str(shut))
    assert can_read(owner, str(inner))  # only the folder itself needs to be listed
    # pytest's tmp folders are closed to others (0700) somewhere above.
    tmp_path.chmod(0o700)
    assert not can_read(STRANGER, str(open_folder))
    assert can_read(STRANGER, "/")
    assert not can_read(STRANGER, str(tmp_path / "missing"))


def test_the_import_path_is_checked_folder_by_folder(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    folders = ["/", str(tmp_path), str(tmp_path / "missing"), ""]
    assert unreadable(STRANGER, folders) == [str(tmp_path)]  # one that is missing is not ours
    with pytest.raises(ConfigurationError, match=f"cannot read {tmp_path}, a folder agents"):
        check_import_path(STRANGER, folders)
    check_import_path(STRANGER, ["/"])


def _need_root() -> None:
    if os.environ.get("CI") != "true":
        pytest.skip("switching users needs root (runs under CI=true)")
    if os.geteuid() != 0:
        pytest.fail("switching users needs root, and CI=true is set")


def _in_a_child(user: JobUser, cwd: Path) -> tuple[int, dict]:
    """Fork a child that opens a file, moves to `cwd`, becomes `user`, and says what it then
    sees; its exit status and what it said."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            held = os.open(__file__, os.O_RDONLY)
            os.chdir(cwd)
            os.environ["TAIAT_DATABASE_URL"] = "postgresql://taiat:secret@db/taiat"
            become(user, os.getppid(), keep=(write_end,))
            seen = {
                "ids": [os.getresuid(), os.getresgid()],
                "groups": sorted(os.getgroups()),
                "held_is_null": os.path.samestat(os.fstat(held), os.stat(os.devnull)),
                "cwd": os.getcwd(),
                "url": os.environ.get("TAIAT_DATABASE_URL"),
                "home": os.environ.get("HOME"),
            }
            os.write(write_end, json.dumps(seen).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        said = reader.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), json.loads(said or b"{}")


def test_a_child_becomes_the_user_for_good_with_nothing_of_the_supervisors(
    tmp_path: Path,
) -> None:
    _need_root()
    user = resolve("nobody")
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    code, seen = _in_a_child(user, closed)
    assert code == 0, seen
    assert seen["ids"] == [[user.uid] * 3, [user.gid] * 3]
    assert seen["groups"] == sorted(set(user.groups))
    assert seen["held_is_null"]  # the file it had open is out of its reach
    assert seen["url"] is None  # the supervisor's settings are forgotten
    assert seen["home"] == user.home
    # A working directory the user may not enter: its home, or /.
    assert seen["cwd"] in (user.home, "/")


def test_a_child_that_cannot_switch_runs_nothing(tmp_path: Path) -> None:
    _need_root()
    nobody = resolve("nobody")
    too_many_groups = JobUser("nobody", nobody.uid, nobody.gid, tuple(range(70_000)), "/")
    code, seen = _in_a_child(too_many_groups, tmp_path)
    assert code == EXIT_NO_DROP
    assert seen == {}
