"""The user jobs run as (`--job-user`): looked up once, when the supervisor starts, and
become by each job's child before it runs the job's code.

A child that is another user cannot signal the supervisor or its fork server, nor ptrace them,
nor read their files (as far as those files' modes keep it out). So before the drop it lets go
of every descriptor it inherited but its result pipe and its stdout and stderr: a database
connection or an open SQLite file of the supervisor's would otherwise be the job's to use. The
result, and the output, still reach the supervisor over those pipes, which are descriptors, not
paths; a large result is spooled by the supervisor as it reads the pipe, into a file of its
own (`taiat.forking.spool`): the child never opens a file of the supervisor's.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import NoReturn

from taiat.config import forget_settings
from taiat.errors import ConfigurationError
from taiat.forking import posix

#: EX_OSERR: the child could not become the job user, and ran nothing.
EXIT_NO_DROP = 71


@dataclass(frozen=True)
class JobUser:
    """A user jobs run as, with what the child needs to become it without reading
    /etc/passwd or /etc/group again (they are looked up once, by the supervisor)."""

    name: str
    uid: int
    gid: int
    #: Its supplementary groups, as initgroups(3) would set them.
    groups: tuple[int, ...]
    home: str

    def __str__(self) -> str:
        return f"{self.name} (uid {self.uid}, gid {self.gid})"


def resolve(name: str, where: str = "--job-user (or TAIAT_JOB_USER)") -> JobUser:
    """The user `name`, checked: it exists, is not root, and this process may become it.
    ConfigurationError naming the user and why not."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ConfigurationError(
            f"{where}: jobs cannot run as user {name!r}: no such user on this host "
            "(create it, e.g. `useradd --system --no-create-home taiat-jobs`)"
        ) from None
    if entry.pw_uid == 0:
        raise ConfigurationError(
            f"{where}: jobs cannot run as user {name!r}: it is root (uid 0), which keeps "
            "nothing from them; name an unprivileged user"
        )
    if os.geteuid() != 0:
        raise ConfigurationError(
            f"{where}: jobs cannot run as user {name!r}: the supervisor runs as "
            f"{_user_name(os.geteuid())} (uid {os.geteuid()}), and only root can switch "
            "users; start the supervisor as root, or leave --job-user unset"
        )
    try:
        groups = tuple(os.getgrouplist(name, entry.pw_gid))
    except OSError as exc:
        raise ConfigurationError(
            f"{where}: the groups of user {name!r} cannot be read: {exc}"
        ) from None
    return JobUser(name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir or "/")


def can_read(user: JobUser, folder: str) -> bool:
    """Whether `user` can list `folder` and open what is in it, by the mode bits of the
    folder and of each folder above it (access control lists are not looked at)."""
    path = os.path.abspath(folder)
    parts = [path]
    while (parent := os.path.dirname(parts[-1])) != parts[-1]:
        parts.append(parent)
    for index, part in enumerate(parts):
        try:
            found = os.stat(part)
        except OSError:
            return False
        need = stat.S_IXOTH | (stat.S_IROTH if index == 0 else 0)
        if not _allows(found, user, need):
            return False
    return True


def unreadable(user: JobUser, folders: Iterable[str]) -> list[str]:
    """The folders of `folders` that exist and that `user` cannot read."""
    return [f for f in folders if f and os.path.isdir(f) and not can_read(user, f)]


def check_import_path(user: JobUser, folders: Iterable[str]) -> None:
    """ConfigurationError unless `user` can read each folder agents are imported from
    (`--path`): a job's own imports would fail in its child."""
    for folder in unreadable(user, folders):
        raise ConfigurationError(
            f"jobs run as user {user.name!r} (--job-user), who cannot read {folder}, a folder "
            "agents are imported from (--path, TAIAT_PATH, else the working directory): a job "
            "could not import from it; open it and the folders above it to the user, or move "
            "the agents"
        )


def _allows(found: os.stat_result, user: JobUser, other_bits: int) -> bool:
    """Whether the mode `found` grants `user` the permissions `other_bits` (given as the
    bits for others), by the class the user falls in: owner, group, or others."""
    if found.st_uid == user.uid:
        bits = other_bits << 6
    elif found.st_gid == user.gid or found.st_gid in user.groups:
        bits = other_bits << 3
    else:
        bits = other_bits
    return found.st_mode & bits == bits


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def describe(user: JobUser) -> str:
    """The user and its groups in words, for the start-up log."""
    groups = ", ".join(_group_name(g) for g in user.groups)
    return f"{user} with groups {groups or 'none'}"


# -- in the job's child ---------------------------------------------------------------------


def become(user: JobUser, parent_pid: int, keep: Collection[int]) -> None:
    """In a job's child, before the job's code: let go of every inherited descriptor but 1
    and 2 (its stdout and stderr pipes) and `keep`, become `user` and its groups for good,
    and die with `parent_pid` again (the kernel forgets PR_SET_PDEATHSIG when the user
    changes); and forget the supervisor's settings (`TAIAT_*`, its database URL among them).
    Leaves through `os._exit`, running nothing, if the change cannot be made whole."""
    _let_go_of_descriptors({1, 2, *keep})
    try:
        os.setgroups(list(user.groups))
        os.setgid(user.gid)
        os.setuid(user.uid)
    except (OSError, ValueError) as exc:  # ValueError: more groups than the kernel takes
        _give_up(f"cannot become user {user}: {exc}")
    _check_for_good(user)
    posix.die_with_parent()
    if os.getppid() != parent_pid:  # it died before the line above: so do we
        os._exit(1)
    forget_settings()
    os.environ["HOME"] = user.home
    os.environ["USER"] = user.name
    os.environ["LOGNAME"] = user.name
    # The supervisor's working directory may be closed to the job user: then its home, or /.
    if not os.access(".", os.X_OK):
        for folder in (user.home, "/"):
            try:
                os.chdir(folder)
                break
            except OSError:
                continue


def _let_go_of_descriptors(keep: set[int]) -> None:
    """Put /dev/null in place of every open descriptor not in `keep`, stdin among them: what
    they were (the supervisor's database connections and files, its terminal) is out of the
    job's reach, and the numbers stay taken, so that an object inherited from the parent that
    closes its number later closes nothing of the job's. A terminal is never kept (a job could
    push input into it, TIOCSTI, as if typed by the supervisor's user)."""
    try:
        numbers = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError as exc:
        _give_up(f"cannot list its descriptors: {exc}")
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    for number in numbers:
        if number == null or (number in keep and not os.isatty(number)):
            continue
        try:
            os.fstat(number)
        except OSError:
            continue  # the listing's own descriptor, closed since
        os.dup2(null, number, inheritable=number <= 2)
    os.close(null)


def _check_for_good(user: JobUser) -> None:
    """Leave unless every uid and gid is the user's, no capability is left, and root cannot be
    had back."""
    if os.getresuid() != (user.uid,) * 3 or os.getresgid() != (user.gid,) * 3:
        _give_up(f"still not user {user} after the switch: {os.getresuid()}, {os.getresgid()}")
    left = _capabilities()
    if left:
        _give_up(f"kept capabilities after becoming user {user}: {left}")
    try:
        os.setuid(0)
    except PermissionError:
        return
    _give_up(f"could become root again after becoming user {user}")


def _capabilities() -> str:
    """The capability sets of this process that are not empty, as /proc says them (nothing
    where /proc does not say)."""
    try:
        fd = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        text = os.read(fd, 1 << 16)
    except OSError:
        return ""
    finally:
        os.close(fd)
    left = []
    for name in (b"CapPrm", b"CapEff", b"CapAmb"):
        start = text.find(b"\n" + name + b":")
        if start >= 0:
            value = text[start + len(name) + 2 :].split(b"\n", 1)[0].strip()
            if value.strip(b"0"):
                left.append(f"{name.decode()} {value.decode()}")
    return ", ".join(left)


def _give_up(why: str) -> NoReturn:
    try:
        os.write(2, f"taiat: the job's child {why}; the job did not run\n".encode())
    finally:
        os._exit(EXIT_NO_DROP)
