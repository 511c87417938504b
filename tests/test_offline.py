"""roar needs no network: run, log and show work in a network namespace with
no interface, and roar opens no IP socket."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from conftest import (
    roar_cmd,
)


@pytest.mark.capture
def test_roar_works_without_any_network(roar):
    """In a network namespace with no interface up, `roar run`, `log` and `show` work:
    roar needs no network. strace shows roar itself opens no IP socket."""
    if not shutil.which("unshare"):
        pytest.skip("unshare is not installed")
    (roar.cwd / "in.txt").write_text("offline\n")
    netns = ["unshare", "--net", "--"]
    p = subprocess.run([*netns, *roar_cmd("run", "--", "cp", "in.txt", "out.txt")],
                       cwd=roar.cwd, env=roar.env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    log = subprocess.run([*netns, *roar_cmd("log", "--json")], cwd=roar.cwd, env=roar.env(),
                         capture_output=True, text=True, timeout=60)
    run_id = json.loads(log.stdout)[0]["id"]
    show = subprocess.run([*netns, *roar_cmd("show", run_id, "--json")], cwd=roar.cwd,
                          env=roar.env(), capture_output=True, text=True, timeout=60)
    doc = json.loads(show.stdout)
    assert doc["complete"] is True and [o["path"] for o in doc["outputs"]] == [
        str(roar.cwd / "out.txt")]
    if not shutil.which("strace"):
        return
    trace = roar.cwd.parent / "strace.out"
    p = subprocess.run(["strace", "-f", "-qq", "-e", "trace=socket,connect", "-o", str(trace),
                        *roar_cmd("run", "--", "true")], cwd=roar.cwd, env=roar.env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    calls = trace.read_text()
    assert "socket(AF_UNIX" in calls  # what roar does use: roard's socket
    assert "AF_INET" not in calls, [c for c in calls.splitlines() if "AF_INET" in c]
