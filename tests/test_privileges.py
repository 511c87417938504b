"""Work roard starts for a client runs with the client's credentials
(roar/capture/privileges.py)."""

from __future__ import annotations

import os
import pwd
import time

from roar.capture.privileges import spawn_as


def _status(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.split()
    return out


def test_spawn_as_starts_the_program_as_the_user_in_a_session_of_its_own(other_user):
    proc, why = spawn_as(other_user.pw_uid, ["/bin/sh", "-c", "echo started; exec sleep 30"],
                         {"PATH": "/usr/bin:/bin"})
    assert why is None
    try:
        st = _status(proc.pid)
        assert st["Uid"] == [str(other_user.pw_uid)] * 4
        assert st["Gid"] == [str(other_user.pw_gid)] * 4
        assert "0" not in st["Groups"]  # root's groups are not inherited
        assert os.getsid(proc.pid) == proc.pid != os.getsid(0)
        assert os.readlink(f"/proc/{proc.pid}/cwd") == "/"
    finally:
        proc.kill()
        proc.wait()


def test_spawn_as_reports_a_program_that_never_started():
    proc, why = spawn_as(os.geteuid(), ["/bin/sh", "-c", "exit 3"], {})
    assert proc is None and "exited 3 at start" in why
    proc, why = spawn_as(os.geteuid(), ["/nonexistent/prog"], {})
    assert proc is None and why.startswith("could not start /nonexistent/prog")
    t0 = time.monotonic()
    proc, why = spawn_as(os.geteuid(), ["/bin/sleep", "30"], {}, ready_s=0.5)
    assert proc is None and "did not start in 0.5s" in why
    assert time.monotonic() - t0 < 5  # and it was killed, not waited for


def test_spawn_as_refuses_a_uid_without_a_name():
    uid = 54321
    while True:
        try:
            pwd.getpwuid(uid)
            uid += 1
        except KeyError:
            break
    proc, why = spawn_as(uid, ["/bin/true"], {})
    assert proc is None and why == f"uid {uid} has no user name"
