"""Simulated hosts for the fleet test: each a network namespace joined to this one by a veth
pair, with a host name of its own; a private PostgreSQL cluster listening on the host ends of
the links; links that can be cut and restored. And the checks the fleet test makes on what the
attempts recorded (how many ran at once, how many started in any one second), pure functions
with unit tests of their own (tests/unit/test_fleet_checks.py).

Everything is named after this process's pid (namespaces `taiat-<pid>-hN`, veths `tf<pid>hN` on
the host end and `tf<pid>nN` in the namespace, at most 15 characters), in a /24 of
198.18.0.0/15 (set aside for network tests, RFC 2544) that no interface or route of the machine
uses: tests running at the same time on the machine do not meet. `Hosts.close` takes it all
down again, and a new `Hosts` first removes what a killed run of an earlier pid left.

It needs root: `require_root` says whether to run, fail or skip."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from taiat.forking.posix import pid_exists

#: Where the links' addresses come from: 198.18.0.0/15, one /24 per run.
_POOL = ipaddress.ip_network("198.18.0.0/15")
_PREFIX = "taiat-"


def require_root() -> None:
    """Skip unless under CI (`CI=true`); under CI, fail unless root and the tools are there."""
    if os.environ.get("CI") != "true":
        pytest.skip("needs root for network namespaces (runs under CI=true)")
    if os.geteuid() != 0:
        pytest.fail("the fleet test needs root for network namespaces, and CI=true is set")
    missing = [tool for tool in ("ip", "unshare") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the fleet test needs {' and '.join(missing)} under CI (iproute2, util-linux)")


def _ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class Host:
    """One simulated host: its namespace, its link's two ends and their addresses."""

    index: int
    name: str
    namespace: str
    host_end: str
    namespace_end: str
    #: The address of the host end, in the root namespace: where the host reaches the server.
    server_address: str
    #: The address of the namespace end: the host's own.
    address: str

    def wrap(self) -> list[str]:
        """The command prefix that runs a program in this host's namespace under its name (a
        UTS namespace of its own; the program is exec'd, so its pid is the prefix's)."""
        set_name = (
            "import os, socket, sys; socket.sethostname(sys.argv[1]); "
            "os.execvp(sys.argv[2], sys.argv[2:])"
        )
        return [
            "ip", "netns", "exec", self.namespace,
            "unshare", "--uts", "--",
            sys.executable, "-c", set_name, self.name,
        ]  # fmt: skip


class Hosts:
    """`count` simulated hosts, set up at once; `close` (also on a failed setup) removes them."""

    def __init__(self, count: int, host_names: Sequence[str] | None = None) -> None:
        self.pid = os.getpid()
        self.hosts: list[Host] = []
        _remove_leftovers()
        self.subnet = _free_subnet()
        addresses = list(self.subnet.hosts())
        try:
            for i in range(1, count + 1):
                host = Host(
                    index=i,
                    name=host_names[i - 1] if host_names else f"host{i}",
                    **names(self.pid, i),
                    # A /30 each: .4i+1 on the host end, .4i+2 in the namespace.
                    server_address=str(addresses[4 * i]),
                    address=str(addresses[4 * i + 1]),
                )
                self.hosts.append(host)
                self._make(host)
        except BaseException:
            self.close()
            raise

    def _make(self, host: Host) -> None:
        _ip("netns", "add", host.namespace)
        _ip("link", "add", host.host_end, "type", "veth", "peer", "name", host.namespace_end)
        _ip("link", "set", host.namespace_end, "netns", host.namespace)
        _ip("addr", "add", f"{host.server_address}/30", "dev", host.host_end)
        _ip("link", "set", host.host_end, "up")
        inside = ["netns", "exec", host.namespace, "ip"]
        _ip(*inside, "addr", "add", f"{host.address}/30", "dev", host.namespace_end)
        _ip(*inside, "link", "set", host.namespace_end, "up")
        _ip(*inside, "link", "set", "lo", "up")

    def __iter__(self):  # noqa: ANN204 - an iterator of Host
        return iter(self.hosts)

    def __getitem__(self, index: int) -> Host:
        return self.hosts[index]

    @property
    def server_addresses(self) -> list[str]:
        return [host.server_address for host in self.hosts]

    def cut(self, host: Host) -> None:
        """Take the host's link down: nothing passes either way until `restore`."""
        _ip("link", "set", host.host_end, "down")

    def restore(self, host: Host) -> None:
        _ip("link", "set", host.host_end, "up")

    def reaches(self, host: Host, port: int) -> bool:
        """Whether a connection from the host to `port` on its server address gets through."""
        probe = (
            "import socket, sys\n"
            "try:\n"
            f"    socket.create_connection(({host.server_address!r}, {port}), timeout=1).close()\n"
            "except OSError:\n"
            "    sys.exit(1)\n"
        )
        command = ["ip", "netns", "exec", host.namespace, sys.executable, "-c", probe]
        return subprocess.run(command, capture_output=True, timeout=30).returncode == 0

    def close(self) -> None:
        """Remove every namespace and link of ours (the processes in them must be gone)."""
        for host in self.hosts:
            _ip("link", "del", host.host_end, check=False)
            _ip("netns", "del", host.namespace, check=False)
        self.hosts = []


#: The longest name a network interface may have (IFNAMSIZ less its NUL).
IFNAMSIZ = 15


def names(pid: int, index: int) -> dict[str, str]:
    """The names of host `index`'s namespace and link ends, in a run of process `pid`."""
    return {
        "namespace": f"{_PREFIX}{pid}-h{index}",
        "host_end": f"tf{pid}h{index}",
        "namespace_end": f"tf{pid}n{index}",
    }


def namespaces() -> list[str]:
    """The network namespaces of the machine, by name."""
    return [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]


def ours(pid: int) -> list[str]:
    """The namespaces and links of the machine named after `pid`."""
    links = re.findall(rf"^\d+: (tf{pid}[hn]\d+)[@:]", _ip("-o", "link"), re.MULTILINE)
    return [n for n in namespaces() if n.startswith(f"{_PREFIX}{pid}-")] + links


def _remove_leftovers() -> None:
    """Namespaces and links of ours whose process is gone (a run killed before its cleanup)."""
    for name in namespaces():
        found = re.fullmatch(rf"{_PREFIX}(\d+)-h\d+", name)
        if found and not pid_exists(int(found.group(1))):
            _ip("netns", "del", name, check=False)
    for found in re.finditer(r"^\d+: (tf(\d+)h\d+)[@:]", _ip("-o", "link"), re.MULTILINE):
        if not pid_exists(int(found.group(2))):
            _ip("link", "del", found.group(1), check=False)

    return True


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of the pool that no address or route of the machine touches, chosen by pid."""
    used = [
        ipaddress.ip_network(word, strict=False)
        for word in re.findall(
            r"\b\d+\.\d+\.\d+\.\d+(?:/\d+)?\b", _ip("-4", "addr") + _ip("-4", "route")
        )
    ]
    subnets = list(_POOL.subnets(new_prefix=24))
    start = os.getpid() % len(subnets)
    for candidate in subnets[start:] + subnets[:start]:
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise RuntimeError(f"no free /24 in {_POOL} for the simulated hosts")


# -- checks on attempts ---------------------------------------------------------------------
