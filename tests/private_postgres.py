"""A PostgreSQL cluster of a test's own, for tests that stop, restart or pause the server:
initdb and pg_ctl in a temporary folder, on a free port, never the shared server.

The server refuses to run as root, so under root the cluster belongs to the `postgres` user and
its commands run through `runuser`; otherwise it is the current user's."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import psycopg
import pytest

_OWNER = "postgres"


def _bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    return versions[-1] if versions else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateCluster:
    """One cluster: `start`, `stop`, `restart`, `pause` (SIGSTOP the postmaster and its
    backends) and `resume`; `url` is its `postgres` database over TCP with trust auth.

    It listens on 127.0.0.1 and on the addresses in `listen` (which must be the machine's),
    and lets in with trust auth the clients of the networks in `trust` (CIDRs) besides."""

    def __init__(
        self, bin_dir: Path, listen: Sequence[str] = (), trust: Sequence[str] = ()
    ) -> None:
        self.bin_dir = bin_dir
        self.listen = ["127.0.0.1", *listen]
        self.folder = Path(tempfile.mkdtemp(prefix="taiat-pg-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.folder, _OWNER)
            self._as_owner = ["runuser", "-u", _OWNER, "--"]
        self.user = _OWNER if self._as_owner else _current_user()
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "--no-sync")
        if trust:
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.writelines(f"host all all {network} trust\n" for network in trust)
        self.url = self.url_at("127.0.0.1")

    def url_at(self, address: str) -> str:
        """The URL of its `postgres` database at one of the addresses it listens on."""
        return f"postgresql://{self.user}@{address}:{self.port}/postgres"

    def _run(self, program: str, *args: str, timeout: float = 120) -> None:
        command = [*self._as_owner, str(self.bin_dir / program), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip()}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses={','.join(self.listen)} "
            "-c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        log = self.folder / "server.log"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(log), "-o", options, "-w", "start")
        self.wait_ready()

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except RuntimeError:
            pass  # not running
        shutil.rmtree(self.folder, ignore_errors=True)


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


@pytest.fixture
def private_pg() -> Iterator[PrivateCluster]:
    """A started private cluster, destroyed after the test."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("initdb and pg_ctl are required under CI and were not found")
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed")
    cluster = PrivateCluster(bin_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
