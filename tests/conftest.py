"""Shared fixtures. Capture tests need root and BCC; they share one roard
(started once per session on a private socket) and each gets its own
ROAR_HOME, so they never touch a real store or a real daemon."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _capture_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "capture tests need root"
    try:
        from roar.capture.probes import import_bcc

        import_bcc()
    except Exception as e:  # any reason BCC cannot load is a reason to skip
        return f"BCC unavailable: {e}"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _capture_unavailable()
    if reason:
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if "capture" in item.keywords:
                item.add_marker(skip)


def spawn_roard(d: Path) -> tuple[subprocess.Popen, Path, dict]:
    """Start a roard whose socket (and log, spool) live in directory d; return
    once its socket exists: (process, socket path, environment for clients)."""
    sock = d / "roard.sock"
    env = {**os.environ, "ROAR_SOCKET": str(sock), "PYTHONPATH": str(REPO)}
    log = open(d / "roard.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "roar.daemon"], env=env, stdout=log,
                            stderr=log, start_new_session=True)
    deadline = time.monotonic() + 120
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"roard did not start: {(d / 'roard.log').read_text()}")
        time.sleep(0.1)
    return proc, sock, env


@pytest.fixture(scope="session")
def roard(tmp_path_factory):
    """A daemon on a private socket for the whole session; yields its socket."""
    proc, sock, _ = spawn_roard(tmp_path_factory.mktemp("roard"))
    yield sock
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


class Roar:
    """Runs the roar CLI as a user would, with a private store and daemon."""

    def __init__(self, home: Path, sock: Path | None, cwd: Path):
        self.home, self.sock, self.cwd = home, sock, cwd

    def env(self, **extra) -> dict:
        env = {**os.environ, "ROAR_HOME": str(self.home), "PYTHONPATH": str(REPO)}
        env["ROAR_SOCKET"] = str(self.sock) if self.sock else str(self.home / "no-daemon.sock")
        env.update(extra)
        return env

    def __call__(self, *args, check=True, input=None, timeout=300, cwd=None, env=None):
        p = subprocess.run([sys.executable, "-m", "roar", *map(str, args)],
                           cwd=cwd or self.cwd, env=env or self.env(), capture_output=True,
                           text=True, input=input, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"roar {' '.join(map(str, args))} exited {p.returncode}\n"
                                 f"stdout: {p.stdout}\nstderr: {p.stderr}")
        return p

    def json(self, *args, **kw):
        return json.loads(self(*args, "--json", **kw).stdout)

    def run(self, *cmd, check=True, **kw):
        """roar run -- cmd...; returns (completed process, run document)."""
        p = self("run", "--", *cmd, check=False, **kw)
        if check and p.returncode != 0:
            raise AssertionError(f"roar run {cmd} exited {p.returncode}\n{p.stderr}")
        last = self.json("log", "-n", "1")[0]
        return p, self.json("show", last["id"])


@pytest.fixture
def cli(tmp_path):
    """The CLI with a private store and no daemon (for what must fail, or work,
    before any tracing starts)."""
    work = tmp_path / "work"
    work.mkdir()
    return Roar(tmp_path / "home", None, work)


def one_line_error(p) -> str:
    """A user error as roar must report it: non-zero exit, one `roar: ...` line,
    no traceback. Returns the line."""
    err = p.stderr if isinstance(p.stderr, str) else p.stderr.decode(errors="replace")
    assert p.returncode != 0
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("roar: "), err
    return lines[0]


@pytest.fixture
def roar(roard, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    return Roar(tmp_path / "home", roard, work)


def xxh128(path) -> str:
    import xxhash

    with open(path, "rb") as f:
        return xxhash.xxh3_128(f.read()).hexdigest()


@pytest.fixture(scope="session")
def foreign_python(tmp_path_factory):
    """(python, PYTHONPATH) that another OS user can run roar with.

    The test interpreter and venv may live under /root (mode 0700); copy roar,
    bpf/ and roar's dependencies into a world-readable directory and use the
    system python3, which the compiled dependencies were built for when it is
    the same version."""
    import importlib
    import shutil

    exe = "/usr/bin/python3"
    ver = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2])"],
                         capture_output=True, text=True)
    if ver.returncode != 0 or ver.stdout.strip() != str(sys.version_info[:2]):
        pytest.skip("no system python3 of the test interpreter's version for another user")
    base = Path(tempfile.mkdtemp(prefix="roar-foreign-", dir="/tmp"))
    os.chmod(base, 0o755)
    shutil.copytree(REPO / "roar", base / "roar", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "bpf", base / "bpf")
    for name in ("click", "lmdb", "xxhash", "networkx"):
        mod = importlib.import_module(name)
        src = Path(mod.__file__).parent
        shutil.copytree(src, base / src.name, ignore=shutil.ignore_patterns("__pycache__"))
    for d, _, files in os.walk(base):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    yield exe, str(base)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def other_user():
    """A throwaway unprivileged OS user (created and removed by the test)."""
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("needs root and useradd")
    name = f"roart{os.getpid() % 100000}"
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True,
                   capture_output=True)
    import pwd

    yield pwd.getpwnam(name)
    subprocess.run(["userdel", name], capture_output=True)
