"""Runs of an unprivileged user through a shared roard: hashes never use root's
rights, a killed client's run is rebuilt into the user's own store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import (
    start_roard,
    stop_roard,
    xxh128,
)


@pytest.fixture(scope="module")
def public_roard():
    """A daemon on a socket other users can reach."""
    base = Path(tempfile.mkdtemp(prefix="roard-pub-", dir="/tmp"))
    os.chmod(base, 0o755)
    proc, sock = start_roard(base)
    yield sock
    stop_roard(proc, sock)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def user_home(other_user):
    home = Path(tempfile.mkdtemp(prefix="roar-user-", dir="/tmp"))
    os.chmod(home, 0o755)
    os.chown(home, other_user.pw_uid, other_user.pw_gid)
    yield home
    shutil.rmtree(home, ignore_errors=True)


def user_roar(user, python, sock: Path, home: Path, *args, wait=True, env_extra=None):
    exe, path = python
    argv = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
            exe, "-m", "roar", *map(str, args)]
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": path, "HOME": str(home),
           "ROAR_SOCKET": str(sock), "ROAR_HOME": str(home / ".roar"), **(env_extra or {})}
    if not wait:
        return subprocess.Popen(argv, cwd=home, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    return subprocess.run(argv, cwd=home, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.capture
def test_hash_never_uses_root_rights(public_roard, foreign_python, other_user, user_home):
    """An unprivileged user's input is swapped for a symlink to a root-only file before
    roar hashes it: roar hashes as the user, so the root-only content's hash never
    reaches the record (the input is unreadable or unverified instead)."""
    secret = user_home / "root-only"
    secret.write_text("only root may read this\n")
    os.chmod(secret, 0o600)
    mine = user_home / "mine.txt"
    mine.write_text("the user's data\n")
    os.chown(mine, other_user.pw_uid, other_user.pw_gid)
    code = ("import os\nfor _ in range(20000):\n    os.close(os.open('/dev/null', 0))\n"
            "open('mine.txt').read()\nos.symlink('root-only', 'tmp')\n"
            "os.replace('tmp', 'mine.txt')\n")
    p = user_roar(other_user, foreign_python, public_roard, user_home, "run", "--",
                  foreign_python[0], "-c", code)
    assert p.returncode == 0, p.stderr
    run = json.loads(user_roar(other_user, foreign_python, public_roard, user_home, "log",
                               "-n", "1", "--json").stdout)[0]
    doc = json.loads(user_roar(other_user, foreign_python, public_roard, user_home, "show",
                               run["id"], "--json").stdout)
    [inp] = [i for i in doc["inputs"] if i["path"] == str(mine)]
    assert inp["hash"] != xxh128(secret), "root's rights hashed a file the user cannot read"
    assert doc["user"] != "root"


@pytest.mark.capture
def test_killed_unprivileged_client_is_rebuilt_as_its_user(public_roard, foreign_python,
                                                          other_user, user_home):
    """roard rebuilds the run of a killed client with the client's credentials: the
    record lands in the user's store, which stays owned by the user."""
    data = user_home / "in.txt"
    data.write_text("the user's input\n")
    os.chown(data, other_user.pw_uid, other_user.pw_gid)
    client = user_roar(other_user, foreign_python, public_roard, user_home, "run", "--", "sh",
                       "-c", "cat in.txt > out.txt; sleep 60", wait=False)
    try:
        deadline = time.monotonic() + 60
        while not (user_home / "out.txt").exists() or not (user_home / "out.txt").stat().st_size:
            assert client.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        client.kill()  # setpriv execs python: this is the client itself
        client.wait()
    deadline = time.monotonic() + 60
    while True:
        runs = json.loads(user_roar(other_user, foreign_python, public_roard, user_home, "log",
                                    "--json").stdout)
        if runs and runs[0]["complete"] is not None:
            break
        assert time.monotonic() < deadline, runs
        time.sleep(0.2)
    doc = json.loads(user_roar(other_user, foreign_python, public_roard, user_home, "show",
                               runs[0]["id"], "--json").stdout)
    assert doc["status"] == "interrupted" and doc["user"] != "root"
    assert [(i["path"], i["hash"]) for i in doc["inputs"]] == [(str(data), xxh128(data))]
    for d, _, files in os.walk(user_home / ".roar"):
        for name in [".", *files]:
            assert os.stat(os.path.join(d, name)).st_uid == other_user.pw_uid, (d, name)


@pytest.mark.capture
def test_doctor_as_a_user_says_what_it_cannot_check(public_roard, foreign_python, other_user,
                                                    user_home):
    """tracefs is root's only (mode 0700): `roar doctor` run by a user says it cannot
    check the tracepoints, with the fix, instead of a traceback."""
    p = user_roar(other_user, foreign_python, public_roard, user_home, "doctor")
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode in (0, 1), p.stderr
    assert "not readable by this user: cannot check  -> run roar doctor as root" in p.stdout
    doc = json.loads(user_roar(other_user, foreign_python, public_roard, user_home, "doctor",
                               "--json").stdout)
    assert {c["check"] for c in doc["checks"]} >= {"kernel", "tracepoints", "daemon"}
