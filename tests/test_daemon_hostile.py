"""roard under attack by a local user: it keeps serving everyone when it
runs out of fds (a flood of connections) or is sent a deeply nested request.

Each test runs its own roard on a socket under /tmp that another OS user can
reach, with its limits set small through the environment."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import spawn_roard

pytestmark = pytest.mark.capture



class Daemon:
    def __init__(self, **env):
        self.base = Path(tempfile.mkdtemp(prefix="roard-", dir="/tmp"))
        os.chmod(self.base, 0o755)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update({k: str(v) for k, v in env.items()})
        try:
            self.proc, self.sock, self.env = spawn_roard(self.base)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def status(self, timeout=10.0) -> dict:
        return _reply(_request(self.sock, b'{"op":"status"}\n', timeout))

    def log(self) -> str:
        return (self.base / "roard.log").read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def daemon_with():
    made = []

    def make(**env):
        d = Daemon(**env)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


def _request(sock, payload: bytes, timeout=10.0) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(sock))
    chunks = []
    try:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        s.close()
    return b"".join(chunks)


def _reply(raw: bytes) -> dict:
    return json.loads(raw[5:])


def _as_user(user, foreign_python, args, **kw):
    exe, path = foreign_python
    return subprocess.Popen(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                             "--clear-groups", exe, *args],
                            env={"PYTHONPATH": path, "PATH": os.environ["PATH"]},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd="/tmp", **kw)


def _roar_run(d: Daemon, work: Path, *cmd, timeout=120):
    env = {**d.env, "ROAR_HOME": str(work / "home")}
    return subprocess.run([sys.executable, "-m", "roar", "run", "--", *cmd], cwd=work,
                          env=env, capture_output=True, text=True, timeout=timeout)


def _last_run(d: Daemon, work: Path) -> dict:
    env = {**d.env, "ROAR_HOME": str(work / "home")}

    def roar(*a):
        p = subprocess.run([sys.executable, "-m", "roar", *a, "--json"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    return roar("show", roar("log", "-n", "1")[0]["id"])


def test_accept_loop_survives_running_out_of_fds(daemon_with):
    """EMFILE on accept (here: a low fd limit) is waited out, never the end."""
    d = daemon_with()
    limit = len(os.listdir(f"/proc/{d.proc.pid}/fd")) + 30
    subprocess.run(["prlimit", f"--pid={d.proc.pid}", f"--nofile={limit}:{limit}"],
                   check=True)
    held = []
    for _ in range(150):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(2)
        try:
            s.connect(str(d.sock))
        except OSError:
            s.close()
            continue
        held.append(s)
    time.sleep(1.5)
    assert d.proc.poll() is None
    for s in held:
        s.close()
    deadline = time.monotonic() + 20
    while True:
        try:
            if d.status(2)["pid"] == d.proc.pid:
                break
        except (OSError, ValueError):
            pass
        assert time.monotonic() < deadline and d.proc.poll() is None
        time.sleep(0.2)
    assert "accept failed" in d.log() and "Traceback" not in d.log()


def test_deeply_nested_request_is_refused_cleanly(daemon_with):
    d = daemon_with()
    deep = b'{"op":"status","x":' + b"[" * 20000 + b"]" * 20000 + b"}\n"
    assert "nested too deeply" in _reply(_request(d.sock, deep))["error"]
    assert d.status()["pid"] == d.proc.pid
    assert "Traceback" not in d.log()
