"""Signals to `roar run` (SIGINT, SIGHUP, SIGKILL of the client, embedded or
through roard): forwarded to the workload and its children, the run stored
interrupted, nothing left running."""

from __future__ import annotations

import signal
import time

import pytest
from conftest import (
    PY,
    Roar,
    alive,
    cgroup_of,
    finish,
    last_run,
    start,
    wait_for,
)

SLEEPER = "import time; open('ready', 'w').close(); time.sleep(60)"


@pytest.mark.capture
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=["SIGINT", "SIGHUP"])
def test_signal_to_roar_is_forwarded_and_run_stored_interrupted(roar, sig):
    proc = start(roar, PY, "-c", SLEEPER)
    wait_for(roar.cwd / "ready", proc)
    t0 = time.monotonic()
    proc.send_signal(sig)
    code, err = finish(proc, 30)
    assert time.monotonic() - t0 < 10, "the workload did not get the signal"
    assert code == 128 + sig, err
    doc = last_run(roar)
    assert doc["status"] == "interrupted" and doc["signal"] == sig
    assert doc["exit_code"] == 128 + sig and doc["complete"] is False
    assert "run was interrupted" in doc["incomplete_reasons"]


@pytest.mark.capture
def test_workload_handling_sigint_keeps_its_own_exit_status(roar):
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGINT, lambda *a: sys.exit(3))\n"
            "open('ready', 'w').close()\n"
            "time.sleep(60)\n")
    proc = start(roar, PY, "-c", code)
    wait_for(roar.cwd / "ready", proc)
    proc.send_signal(signal.SIGINT)
    rc, err = finish(proc, 30)
    assert rc == 3, err
    doc = last_run(roar)
    assert doc["status"] == "interrupted" and doc["exit_code"] == 3 and doc["signal"] is None
    assert doc["complete"] is False


@pytest.mark.capture
def test_sigkill_of_client_ends_the_whole_workload_and_its_cgroup(roar):
    """Policy (README, roard): when the `roar run` client disappears, roard ends its
    workload at once, children included, and removes the run cgroup; the record
    written as running at start reads as interrupted at once. (test_daemon checks
    the record roard then rebuilds from its spool.)"""
    w = roar.cwd
    code = ("import os, subprocess, time\n"
            "child = subprocess.Popen(['sleep', '120'])\n"
            "open('pids', 'w').write(f'{os.getpid()} {child.pid}')\n"
            "time.sleep(120)\n")
    proc = start(roar, PY, "-c", code)
    wait_for(w / "pids", proc)
    time.sleep(0.3)
    pids = [int(x) for x in (w / "pids").read_text().split()]
    assert len(pids) == 2 and all(alive(p) for p in pids)
    cg = cgroup_of(pids[0])
    run_id = roar.json("log", "-n", "1")[0]["id"]
    assert cg.name.endswith(run_id), cg
    proc.kill()
    proc.wait()
    assert roar.json("log", "-n", "1")[0]["status"] == "interrupted"
    deadline = time.monotonic() + 30
    while any(alive(p) for p in pids) or cg.exists():
        assert time.monotonic() < deadline, (
            f"left behind: processes {[p for p in pids if alive(p)]}, cgroup {cg.exists()}")
        time.sleep(0.1)


@pytest.mark.capture
def test_signal_to_roar_reaches_the_workloads_children(roar):
    """The issue asks for forwarding to the workload's process group, as a terminal's
    Ctrl-C would: a child of the first process gets the SIGINT too."""
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import signal, time\\n"
            "signal.signal(signal.SIGINT, lambda *a: (open(\"child-got-int\", \"w\").close(), "
            "exit(0)))\\nopen(\"ready\", \"w\").close()\\ntime.sleep(4)'])\n"
            "try:\n    child.wait()\n"
            "except KeyboardInterrupt:\n    child.wait()\n")
    proc = start(roar, PY, "-c", code)
    wait_for(roar.cwd / "ready", proc)
    proc.send_signal(signal.SIGINT)
    rc, err = finish(proc, 30)
    assert (roar.cwd / "child-got-int").exists(), "the workload's child never got the SIGINT"
    doc = last_run(roar)
    assert doc["status"] == "interrupted"


@pytest.mark.capture
def test_sigkill_of_embedded_client_leaves_nothing_behind(tmp_path):
    """Embedded mode (root, no daemon): the probes live in `roar run` itself. When it
    is killed outright the workload must not be left running untraced in a stale
    run cgroup."""
    work = tmp_path / "work"
    work.mkdir()
    r = Roar(tmp_path / "home", None, work)
    code = ("import os, time\n"
            "open('pid', 'w').write(str(os.getpid()))\n"
            "time.sleep(120)\n")
    proc = start(r, PY, "-c", code)
    cg = None
    try:
        wait_for(work / "pid", proc, timeout=120)
        time.sleep(0.2)
        pid = int((work / "pid").read_text())
        cg = cgroup_of(pid)
        assert cg.name == r.json("log", "-n", "1")[0]["id"], cg
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 5  # roard needs well under a second
        while (alive(pid) or cg.exists()) and time.monotonic() < deadline:
            time.sleep(0.1)
        left_pid, left_cg = alive(pid), cg.exists()
    finally:
        from roar.capture.cgroups import kill_all, remove

        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if cg is not None and cg.exists():
            kill_all(cg)
            remove(cg)
    assert not left_pid and not left_cg, f"process alive: {left_pid}, cgroup left: {left_cg}"
    assert r.json("log", "-n", "1")[0]["status"] == "interrupted"


TICKER = ("import os, time\n"
          "open('pid', 'w').write(str(os.getpid()))\n"
          "fd = os.open('tick', os.O_WRONLY | os.O_CREAT)\n"
          "while True:\n"
          "    os.pwrite(fd, b'%.6f\\n' % time.time(), 0)\n"
          "    time.sleep(0.002)\n")


@pytest.mark.capture
def test_sigkill_of_embedded_client_stops_the_workload_at_once(tmp_path):
    """Embedded mode: the workload's last write comes well under a second after
    `roar run` is SIGKILLed (it ran on untraced for 3.6-4.3 s while the dying
    client released the probes; the watchdog now shares them)."""
    work = tmp_path / "work"
    work.mkdir()
    r = Roar(tmp_path / "home", None, work)
    proc = start(r, PY, "-c", TICKER)
    cg = None
    try:
        wait_for(work / "tick", proc, timeout=120)
        time.sleep(0.5)
        pid = int((work / "pid").read_text())
        cg = cgroup_of(pid)
        killed = time.time()
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        last = float((work / "tick").read_text().split()[0])
    finally:
        from roar.capture.cgroups import kill_all, remove

        if cg is not None and cg.exists():
            kill_all(cg)
            remove(cg)
    assert last - killed < 1.0, f"the workload wrote {last - killed:.2f} s after the SIGKILL"
