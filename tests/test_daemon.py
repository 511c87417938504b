"""roard: credentials, protocol robustness, single instance, clean restart.

Runs its own daemon on a socket under /tmp that another OS user can reach."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import (
    REPO,
    daemon_reply,
    daemon_request,
    spawn_roard,
    stored_interrupted,
    workload_pid,
    xxh128,
)

pytestmark = pytest.mark.capture


@pytest.fixture(scope="module")
def public_daemon():
    base = Path(tempfile.mkdtemp(prefix="roard-", dir="/tmp"))
    os.chmod(base, 0o755)
    proc, sock, env = spawn_roard(base)
    yield sock, proc, env
    proc.terminate()
    proc.wait(60)
    shutil.rmtree(base, ignore_errors=True)


def test_socket_is_world_connectable(public_daemon):
    sock, _, _ = public_daemon
    assert sock.stat().st_mode & 0o777 == 0o666


def test_status(public_daemon):
    sock, proc, _ = public_daemon
    st = daemon_reply(daemon_request(sock, b'{"op": "status"}\n'))
    assert st["pid"] == proc.pid


@pytest.mark.parametrize("payload", [
    b"not json\n", b"{}\n", b'{"op": 3}\n', b'{"op": "nope"}\n', b"[1,2]\n",
    b'{"op": "trace"}\n', b'{"op": "trace", "pid": -1, "run_id": "x"}\n',
    b'{"op": "trace", "pid": 1, "run_id": "../../etc"}\n', b'{"op": "trace", "pid": 99999999, '
    b'"run_id": "A"}\n', b"\xff\xfe\x00garbage", b'{"op": "status"', b"",
    b"x" * (200 << 10), b'{"op": "trace", "pid": 1, "run_id": "' + b"A" * 100 + b'"}\n',
    b'{"op": "trace", "into": true, "run_id": "A"}\n',
    b'{"op": "trace", "into": true, "parent": true, "run_id": "A", "home": "/tmp"}\n',
    # a cgroup made for a pid that never comes (the connection ends): removed
    b'{"op": "trace", "into": true, "parent": 1, "run_id": "I1", "home": "/tmp"}\n',
    b'{"op": "trace", "into": true, "parent": 1, "run_id": "I2", "home": "/tmp"}\n'
    b'{"op": "status"}\n',
], ids=lambda p: repr(p[:24]))
def test_malformed_requests_never_crash_it(public_daemon, payload):
    sock, proc, _ = public_daemon
    daemon_request(sock, payload)
    assert proc.poll() is None
    assert daemon_reply(daemon_request(sock, b'{"op": "status"}\n'))["pid"] == proc.pid
    from roar.capture.cgroups import cgroup2_mount, cgroup_of

    made = cgroup2_mount() / cgroup_of(1).lstrip("/") / "roar"
    deadline = time.monotonic() + 10
    while made.is_dir() and [d for d in os.listdir(made) if d.endswith(("I1", "I2"))]:
        assert time.monotonic() < deadline, os.listdir(made)  # a cgroup made for nothing
        time.sleep(0.05)


def test_a_user_cannot_trace_someone_elses_process(public_daemon, foreign_python,
                                                   other_user):
    sock, _, _ = public_daemon
    exe, path = foreign_python
    victim = subprocess.Popen(["sleep", "30"])  # owned by root
    code = (f"import socket,json; s=socket.socket(socket.AF_UNIX); s.connect({str(sock)!r}); "
            f"s.sendall(json.dumps({{'op':'trace','pid':{victim.pid},'run_id':'X1'}}).encode()"
            f"+b'\\n'); print(s.recv(4096)[5:].decode())")
    p = subprocess.run(["setpriv", f"--reuid={other_user.pw_uid}", f"--regid={other_user.pw_gid}",
                        "--clear-groups", exe, "-c", code], capture_output=True, text=True,
                       timeout=30, env={"PYTHONPATH": path})
    victim.kill()
    victim.wait()
    reply = json.loads(p.stdout)
    assert reply["ok"] is False and "not yours" in reply["error"]


INTO_AS_USER = r"""
import ctypes, errno, json, os, socket, struct, sys, time
def reply(s):
    return json.loads(s.recv(65536)[5:].decode())
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
parent = os.getpid() if sys.argv[2] == "self" else int(sys.argv[2])
s.sendall(json.dumps({"op": "trace", "into": True, "parent": parent,
                      "run_id": "U1", "home": sys.argv[3]}).encode() + b"\n")
first = reply(s)
out = {"first": first}
if first.get("ok") and isinstance(first.get("into"), str):
    # the kernel's rule the fallback stands on: a user may not clone into a cgroup
    # roard (root) made for it below a cgroup that is not delegated to the user
    fd = os.open(first["into"], os.O_RDONLY | os.O_DIRECTORY)
    args = ctypes.create_string_buffer(struct.pack("11Q", 0x200000000, 0, 0, 0, 17, 0, 0, 0,
                                                   0, 0, fd))
    libc = ctypes.CDLL(None, use_errno=True)
    pid = libc.syscall(435, args, ctypes.sizeof(args) - 1)  # clone3
    if pid == 0:
        os._exit(0)
    out["clone3"] = errno.errorcode.get(ctypes.get_errno(), "none") if pid < 0 else "cloned"
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    s.sendall(json.dumps({"op": "pid", "pid": child}).encode() + b"\n")
    out["final"] = reply(s)
    out["child_cgroup"] = open(f"/proc/{child}/cgroup").read()
    s.sendall(b'{"op": "abort"}\n')
    os.kill(child, 9)
print(json.dumps(out))
"""


def test_two_step_start_refuses_a_users_foreign_parent_and_falls_back_to_a_move(
        public_daemon, foreign_python, other_user):
    """The two-step start (`into`: roard makes the run cgroup, the launcher
    clones the workload into it, the pid follows), as an unprivileged user: a
    parent that is not theirs is refused; with their own, the kernel refuses
    their clone into roard's cgroup, they fork, and roard moves the child as
    before (entered: moved)."""
    sock, _, _ = public_daemon
    exe, path = foreign_python

    def as_user(parent: str) -> dict:
        home = Path(tempfile.mkdtemp(prefix="roar-user-", dir="/tmp"))
        os.chown(home, other_user.pw_uid, other_user.pw_gid)
        try:
            p = subprocess.run(["setpriv", f"--reuid={other_user.pw_uid}",
                                f"--regid={other_user.pw_gid}", "--clear-groups", exe, "-c",
                                INTO_AS_USER, str(sock), parent, str(home)],
                               capture_output=True, text=True, timeout=60,
                               env={"PYTHONPATH": path}, cwd="/")
        finally:
            shutil.rmtree(home, ignore_errors=True)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    root_proc = subprocess.Popen(["sleep", "30"])
    try:
        theirs = as_user(str(root_proc.pid))
    finally:
        root_proc.kill()
        root_proc.wait()
    assert theirs["first"]["ok"] is False and "not yours" in theirs["first"]["error"]
    own = as_user("self")
    assert own["first"]["ok"] is True and own["first"]["into"], own
    assert own["clone3"] in ("EACCES", "EPERM"), own
    final = own["final"]
    assert final["ok"] is True and final["placement"]["entered"] == "moved", final
    assert f"0::{final['placement']['path']}" in own["child_cgroup"].splitlines()


def test_unprivileged_user_traces_own_run_into_own_store(public_daemon, foreign_python,
                                                         other_user):
    sock, _, _ = public_daemon
    exe, path = foreign_python
    home = Path(tempfile.mkdtemp(prefix="roar-user-", dir="/tmp"))
    os.chown(home, other_user.pw_uid, other_user.pw_gid)
    (home / "in.txt").write_text("user data\n")
    os.chown(home / "in.txt", other_user.pw_uid, other_user.pw_gid)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": path, "HOME": str(home),
           "ROAR_SOCKET": str(sock), "ROAR_HOME": str(home / ".roar")}

    def as_user(*args):
        return subprocess.run(["setpriv", f"--reuid={other_user.pw_uid}",
                               f"--regid={other_user.pw_gid}", "--clear-groups", exe, "-m",
                               "roar", *args], cwd=home, env=env, capture_output=True,
                              text=True, timeout=120)

    try:
        p = as_user("run", "--", "sh", "-c", "cat in.txt > out.txt")
        assert p.returncode == 0, p.stderr
        run = json.loads(as_user("log", "-n", "1", "--json").stdout)[0]
        doc = json.loads(as_user("show", run["id"], "--json").stdout)
        assert doc["user"] != "root" and doc["mode"] == "daemon" and doc["complete"]
        assert {(i["path"], i["hash"]) for i in doc["inputs"]} == {
            (str(home / "in.txt"), xxh128(home / "in.txt"))}
        assert [o["path"] for o in doc["outputs"]] == [str(home / "out.txt")]
        store = home / ".roar" / "store" / "data.mdb"
        assert store.stat().st_uid == other_user.pw_uid  # the user's own store
        assert (home / ".roar").stat().st_mode & 0o077 == 0
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_second_instance_refused(public_daemon):
    sock, _, env = public_daemon
    p = subprocess.run([sys.executable, "-m", "roar.daemon"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 1 and "already running" in p.stderr


def test_restart_after_kill9_cleans_stale_state(tmp_path):
    base = Path(tempfile.mkdtemp(prefix="roard-", dir="/tmp"))
    sock = base / "roard.sock"
    env = {**os.environ, "ROAR_SOCKET": str(sock), "PYTHONPATH": str(REPO)}

    def start():
        proc = subprocess.Popen([sys.executable, "-m", "roar.daemon"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                if daemon_reply(daemon_request(sock, b'{"op":"status"}\n', 2))["pid"] == proc.pid:
                    return proc
            except (OSError, ValueError):
                pass
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)

    first = start()
    # a run in progress when the daemon dies
    work = tmp_path / "w"
    work.mkdir()
    client = subprocess.Popen([sys.executable, "-m", "roar", "run", "--", "sleep", "60"],
                              cwd=work, env={**env, "ROAR_HOME": str(tmp_path / "h")},
                              stderr=subprocess.PIPE)
    time.sleep(3)
    first.kill()
    first.wait()
    assert sock.exists()  # stale socket left behind
    second = start()
    try:
        assert client.wait(60) != 0  # its workload was ended, the client told
        from roar.capture.cgroups import cgroup2_mount
        from roar.daemon import cgroup_prefix

        left = [d for d in (cgroup2_mount() / "roar").iterdir()
                if d.name.startswith(cgroup_prefix(sock))]
        assert left == []
        out = subprocess.run([sys.executable, "-m", "roar", "log", "--json"], cwd=work,
                             env={**env, "ROAR_HOME": str(tmp_path / "h")},
                             capture_output=True, text=True)
        runs = json.loads(out.stdout)
        assert runs and runs[0]["status"] == "interrupted"
    finally:
        second.terminate()
        second.wait(60)
        shutil.rmtree(base, ignore_errors=True)


def _gone_or_zombie(pid: int) -> bool:
    """Ended: its orphaned zombie may wait for init to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_killed_client_run_is_rebuilt_from_the_spool(roar):
    """SIGKILL of `roar run`: roard ends the workload (the documented policy),
    leaves nothing running, and stores the run from its spool, interrupted."""
    w = roar.cwd
    (w / "in.txt").write_text("spooled\n")
    client = subprocess.Popen([sys.executable, "-m", "roar", "run", "--", "sh", "-c",
                               "cat in.txt > out.txt; echo $$ > pid; sleep 60"],
                              cwd=w, env=roar.env(), stderr=subprocess.PIPE)
    workload = workload_pid(w / "pid", client)
    client.kill()
    client.wait()
    runs = stored_interrupted(roar)
    assert _gone_or_zombie(workload)
    doc = roar.json("show", runs[0]["id"])
    assert [(i["path"], i["hash"]) for i in doc["inputs"]] == [
        (str(w / "in.txt"), xxh128(w / "in.txt"))]
    assert sorted((o["path"], o["hash"]) for o in doc["outputs"]) == [
        (str(w / "out.txt"), xxh128(w / "out.txt")), (str(w / "pid"), xxh128(w / "pid"))]
    assert any("rebuilt by roard" in r for r in doc["incomplete_reasons"])
    # roard ended the workload with SIGTERM (SIGKILL only 2 s later): what its
    # parent would have collected, though the dying tasks dequeue a SIGKILL
    assert doc["complete"] is False and doc["signal"] == signal.SIGTERM


def test_client_refuses_a_roard_of_another_record_layout(tmp_path):
    """A roard left running across an upgrade writes records of its own layout:
    `roar run` refuses it in one line before its command starts, instead of
    misreading them. (The other roard is a stand-in answering as one would.)"""
    import socket
    import threading

    from roar.capture import protocol

    sock_path = tmp_path / "other-roard.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(1)
    asked = []

    def answer():
        conn, _ = server.accept()
        with conn, conn.makefile("rb") as f:
            req = json.loads(f.readline())  # requests are JSON lines, answers frames
            asked.append(req["op"])
            conn.sendall(protocol.encode_json({
                "ok": True, "cgroup": 1, "path": "/sys/fs/cgroup/unified/x", "placement": {},
                "procs": None, "pid": req["pid"], "namespaces": None, "layout": "0badc0de"}))
            f.read()  # the client's abort, then its hang-up

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "ROAR_SOCKET": str(sock_path), "ROAR_HOME": str(tmp_path / "home"),
           "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "roar", "run", "--", "touch", "ran"], cwd=work,
                       env=env, capture_output=True, text=True, timeout=60)
    t.join(10)
    server.close()
    assert asked == ["trace"]
    assert p.returncode == 125, p.stderr
    assert "Traceback" not in p.stderr
    assert "roard runs another version of roar (record layout 0badc0de" in p.stderr
    assert not (work / "ran").exists()


def _wakeups(pid: int) -> int:
    """How often pid's threads have slept and been woken, all together."""
    n = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:  # a thread that just ended
            continue
        n += int(status.split("voluntary_ctxt_switches:")[1].split()[0])
    return n


def test_roard_sleeps_while_a_run_is_quiet(roar):
    """roard's poller sleeps on the ring buffer's fd (woken by the kernel
    side's batches) and an eventfd (woken by a barrier or a run's end), with
    a timeout of IDLE_POLL_S for the records of a quiet moment: a run that
    emits nothing wakes roard tens of times a second, not the ~220 of its old
    5 ms poll."""
    from roar.capture.session import daemon_status

    pid = daemon_status(roar.sock)["pid"]
    w = roar.cwd
    client = subprocess.Popen([sys.executable, "-m", "roar", "run", "--", "sh", "-c",
                               "echo $$ > pid; sleep 3"], cwd=w,
                              env=roar.env(), stderr=subprocess.PIPE, text=True)
    workload_pid(w / "pid", client)
    time.sleep(0.3)
    before, t0 = _wakeups(pid), time.monotonic()
    time.sleep(1.5)
    rate = (_wakeups(pid) - before) / (time.monotonic() - t0)
    _, err = client.communicate(timeout=60)
    assert client.returncode == 0, err
    assert rate < 100, f"roard woke {rate:.0f} times a second during a quiet run"
