"""`--job-user`: the user looked up and checked at start, and which folders it can read."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from taiat.errors import ConfigurationError
from taiat.forking.job_user import JobUser, can_read, check_import_path, resolve, unreadable


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
