"""A private, throwaway PostgreSQL server for the shared-store tests and the
cluster bench: initdb into a temporary directory, pg_ctl on a Unix socket (and
optionally a TCP address), as the `postgres` user when run as root (the server
refuses root). Stopped and removed afterwards. No mock: the OS's PostgreSQL."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path


class PgUnavailable(Exception):
    """No PostgreSQL server binaries on this machine (scripts/setup.sh installs them)."""


def pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise PgUnavailable("no PostgreSQL server (initdb) found: run scripts/setup.sh")


def _free_port() -> int:
    """A port number no one listens on now (it also names the Unix socket)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One PostgreSQL cluster in its own directory; url() names a database."""

    def __init__(self, listen: str = "", port: int | None = None):
        self.bindir = pg_bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="roar-pg-"))
        self.data = self.dir / "data"
        self.sock = self.dir  # the socket file is <dir>/.s.PGSQL.<port>
        self.listen, self.port = listen, port or _free_port()
        self.user = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam("postgres")
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        os.chmod(self.dir, 0o755)
        self._pg("initdb", "-D", str(self.data), "-U", "roar", "--auth=trust", "-E", "UTF8",
                 "--no-sync")

    def allow(self, cidr: str) -> None:
        """Let clients from cidr in (trust: a throwaway test cluster); before start()."""
        with open(self.data / "pg_hba.conf", "a") as f:
            f.write(f"host all all {cidr} trust\n")

    def _pg(self, prog: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / prog), *args]
        if self.user is not None:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and p.returncode != 0:
            raise RuntimeError(f"{prog} failed: {p.stdout}{p.stderr}")
        return p

    def start(self) -> None:
        opts = (f"-k {self.sock} -p {self.port} -c listen_addresses='{self.listen}' "
                f"-c max_connections=200 -c shared_buffers=128MB")
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t", "60",
                 "-o", opts, "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash, not a shutdown); children follow."""
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while self.pid() and time.monotonic() < deadline:
                time.sleep(0.1)

    def pid(self) -> int | None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, IndexError):
            return None

    def url(self, db: str = "postgres", host: str | None = None) -> str:
        if host:
            return f"postgresql://roar@{host}:{self.port}/{db}"
        return f"postgresql://roar@/{db}?host={self.sock}&port={self.port}"

    def create_db(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
