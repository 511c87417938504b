"""The compiled `roar` launcher (roar/cli/launcher.c) and the warm recorder
(roar/cli/warm.py): real runs through the launcher binary with the session's
roard, the same records as the Python path, its exit codes and signals, and
every case it hands to Python (docs/launcher.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    TERMINAL_SIGNALS,
    Warm,
    last_run,
    started_with,
    stored_interrupted,
    workload_pid,
    xxh128,
)

from roar.cli import warm

pytestmark = pytest.mark.capture


@pytest.fixture
def launch(roar, launcher_bin):
    w = Warm(roar, launcher_bin)
    (launcher_bin / "py.log").unlink(missing_ok=True)
    yield w
    w.stop()


def _files(doc: dict, role: str) -> list[tuple[str, str]]:
    return sorted((f["path"], f["hash"]) for f in doc[role])


SCENARIO = ("cat a.txt b.txt > out.txt; sh -c 'wc -c < a.txt' > count.txt; "
            "tr a-z A-Z < b.txt | sort > upper.txt; exit 3")


def _scenario(w: Path) -> None:
    for p in ("out.txt", "count.txt", "upper.txt"):
        (w / p).unlink(missing_ok=True)
    (w / "a.txt").write_text("alpha\n")
    (w / "b.txt").write_text("beta\ngamma\n")


def test_warm_run_records_what_the_python_path_records(launch, roar):
    w = roar.cwd
    launch.start_server()
    _scenario(w)
    p = launch("run", "--", "sh", "-c", SCENARIO)
    assert p.returncode == 3, p.stderr
    assert launch.py_runs() == []  # served warm
    warm_doc = last_run(roar)
    _scenario(w)
    py, py_doc = roar.run("sh", "-c", SCENARIO, check=False, env=launch.env())
    assert py.returncode == 3
    assert _files(warm_doc, "inputs") == _files(py_doc, "inputs")
    assert (str(w / "a.txt"), xxh128(w / "a.txt")) in _files(warm_doc, "inputs")
    assert _files(warm_doc, "outputs") == _files(py_doc, "outputs")
    assert len(_files(warm_doc, "outputs")) == 3
    for k in ("exit_code", "status", "complete", "command", "cwd", "user", "signal"):
        assert warm_doc[k] == py_doc[k], k
    assert warm_doc["counts"]["processes"] == py_doc["counts"]["processes"]
    assert warm_doc["env"] == py_doc["env"]
    assert p.stderr.splitlines()[-1].startswith(f"roar: run {warm_doc['id']} finished, exit 3")


STATE = r"""
import json, os
st = {k: v.strip() for k, _, v in (line.partition(":") for line in open("/proc/self/status"))
      if k in ("Seccomp", "Seccomp_filters", "NoNewPrivs", "SigBlk", "SigIgn", "CapEff",
               "CapBnd", "CapAmb", "Cpus_allowed_list", "Mems_allowed_list")}
fds = {}
for fd in sorted(os.listdir("/proc/self/fd"), key=int):
    try:
        t = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # the listing's own
        continue
    fds[fd] = t.partition(":[")[0]
st["fds"] = fds
st["limits"] = open("/proc/self/limits").read()
f = open("/proc/self/stat").read().rpartition(")")[2].split()
st["nice"], st["policy"] = f[16], f[38]
st["umask"] = os.umask(0)
st["timerslack"] = open("/proc/self/timerslack_ns").read()
st["personality"] = open("/proc/self/personality").read()
print(json.dumps(st))
"""


@pytest.mark.parametrize("ignored,blocked", [
    ((), ()),
    (TERMINAL_SIGNALS, ()),
    ((), (signal.SIGUSR1, signal.SIGTERM)),
], ids=["plain", "nohup-background", "blocked"])
def test_the_workload_inherits_the_same_state_on_both_paths(launch, roar, ignored, blocked):
    """The launcher forks the workload, `python -m roar run` forks it from
    Python: its first process starts with the same signal mask and ignored
    signals, one pre-image filter (the same program: test_preimage's cache
    test), the same privileges, CPUs, rlimits, nice value, scheduling policy,
    umask, timer slack, personality and open fds on both. The signals roar
    was started with ignored or blocked stay so, as bare: `nohup roar run`'s
    workload is not ended by a hangup on either path."""
    import json

    as_started = dict(default=set(TERMINAL_SIGNALS) - set(ignored), ignored=ignored,
                      blocked=blocked)
    launch.start_server()
    p = launch("run", "--", sys.executable, "-c", STATE, preexec_fn=started_with(**as_started))
    assert p.returncode == 0, p.stderr
    assert launch.py_runs() == []  # served warm
    py = subprocess.run([sys.executable, "-m", "roar", "run", "--", sys.executable, "-c", STATE],
                        cwd=roar.cwd, env=launch.env(), capture_output=True, text=True,
                        timeout=120, preexec_fn=started_with(**as_started))
    assert py.returncode == 0, py.stderr
    bare = subprocess.run([sys.executable, "-c", STATE], cwd=roar.cwd, capture_output=True,
                          text=True, timeout=120, preexec_fn=started_with(**as_started))
    warm_st, py_st, bare_st = (json.loads(r.stdout) for r in (p, py, bare))
    assert warm_st["Seccomp"] == "2" and warm_st["Seccomp_filters"] == "1", warm_st
    assert warm_st == py_st
    for k in ("SigIgn", "SigBlk"):
        assert warm_st[k] == bare_st[k], k
    ign, blk = int(warm_st["SigIgn"], 16), int(warm_st["SigBlk"], 16)
    for sig in TERMINAL_SIGNALS:
        assert bool(ign >> (sig - 1) & 1) == (sig in ignored), (sig, warm_st["SigIgn"])
    assert all(blk >> (sig - 1) & 1 for sig in blocked), warm_st["SigBlk"]


WAITER = ("import os, time\n"
          "open('ready', 'w').close()\n"
          "while not os.path.exists('go'):\n"
          "    time.sleep(0.05)\n")


@pytest.mark.parametrize("warm_path", [True, False], ids=["launcher", "python"])
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGINT], ids=["SIGHUP", "SIGINT"])
def test_a_signal_roar_was_started_ignoring_is_ignored(launch, roar, warm_path, sig):
    """`nohup roar run ... &`: a hangup (or an interrupt) sent to roar is
    ignored by roar as by the workload, which was started ignoring it as
    bare: the run goes on and is stored finished and complete, not
    interrupted, on the launcher's path and on Python's."""
    w = roar.cwd
    if warm_path:
        launch.start_server()
        cmd = [str(launch.bin / "roar"), "run", "--", sys.executable, "-c", WAITER]
    else:
        cmd = [sys.executable, "-m", "roar", "run", "--", sys.executable, "-c", WAITER]
    client = subprocess.Popen(cmd, cwd=w, env=launch.env(), stderr=subprocess.PIPE, text=True,
                              preexec_fn=started_with(ignored=TERMINAL_SIGNALS))
    try:
        deadline = time.monotonic() + 60
        while not (w / "ready").exists():
            assert client.poll() is None, client.communicate()
            assert time.monotonic() < deadline, "the workload never started"
            time.sleep(0.05)
        client.send_signal(sig)
        time.sleep(1.0)
        assert client.poll() is None, client.communicate()  # roar and its workload run on
        (w / "go").touch()
        _, err = client.communicate(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode == 0, err
    doc = last_run(roar)
    assert doc["status"] == "finished" and doc["signal"] is None, doc
    assert doc["complete"] is True, doc.get("incomplete_reasons")
    if warm_path:
        assert launch.py_runs() == []


def test_warm_exit_codes_and_messages(launch, roar):
    launch.start_server()
    assert launch("run", "--", "true").returncode == 0
    assert launch("run", "--", "sh", "-c", "kill -9 $$").returncode == 137
    assert last_run(roar)["signal"] == 9
    for cmd in (["no-such-command-x"], ["./nope"]):
        warm_p = launch("run", "--", *cmd)
        py_p = roar("run", "--", *cmd, check=False)
        assert (warm_p.returncode, warm_p.stderr) == (py_p.returncode, py_p.stderr)
        assert warm_p.returncode == 127
    assert launch.py_runs() == []


def test_warm_term_is_forwarded_and_the_run_stored_interrupted(launch, roar):
    launch.start_server()
    w = roar.cwd
    client = subprocess.Popen([str(launch.bin / "roar"), "run", "--", "sh", "-c",
                               "echo $$ > pid; sleep 30 & wait"], cwd=w, env=launch.env(),
                              stderr=subprocess.PIPE, text=True)
    workload_pid(w / "pid", client)
    client.send_signal(signal.SIGTERM)
    _, err = client.communicate(timeout=60)
    assert client.returncode == 128 + signal.SIGTERM, err
    doc = last_run(roar)
    assert doc["status"] == "interrupted" and doc["signal"] == signal.SIGTERM
    assert launch.py_runs() == []


def test_warm_launcher_killed_mid_run_loses_nothing(launch, roar):
    launch.start_server()
    w = roar.cwd
    (w / "in.txt").write_text("spooled\n")
    client = subprocess.Popen([str(launch.bin / "roar"), "run", "--", "sh", "-c",
                               "cat in.txt > out.txt; echo $$ > pid; sleep 60"],
                              cwd=w, env=launch.env(), stderr=subprocess.PIPE)
    workload_pid(w / "pid", client)
    client.kill()
    client.wait()
    runs = stored_interrupted(roar)
    doc = roar.json("show", runs[0]["id"])
    assert [(i["path"], i["hash"]) for i in doc["inputs"]] == [
        (str(w / "in.txt"), xxh128(w / "in.txt"))]
    assert (str(w / "out.txt"), xxh128(w / "out.txt")) in _files(doc, "outputs")
    assert launch.py_runs() == []


def test_fallbacks_hand_the_same_argv_to_python(launch, roar):
    pid = launch.start_server()
    # unknown option: exactly as Python says it
    p = launch("run", "--bogus", "--", "true")
    q = roar("run", "--bogus", "--", "true", check=False)
    assert (p.returncode, p.stdout, p.stderr) == (q.returncode, q.stdout, q.stderr)
    assert p.returncode == 125  # roar run's own usage errors
    assert launch("--help").stdout == roar("--help").stdout
    assert launch.py_runs() == ["run --bogus -- true", "--help"]
    # ROAR_WARM=0 and a nested run: Python's path, and no server started
    assert launch("run", "--", "true", env=launch.env(ROAR_WARM="0")).returncode == 0
    assert launch("run", "--", "true", env=launch.env(ROAR_RUN_ID="X")).returncode == 0
    assert launch.py_runs()[2:] == ["run -- true", "run -- true"]
    assert launch.server() == pid


@pytest.mark.parametrize("locale", ["set", "none"])
def test_no_server_python_starts_one_for_next_time(launch, roar, locale):
    """locale "none": no LANG/LC_* at all (cron, a batch job's bare environment),
    where the interpreter adds LC_CTYPE=C.UTF-8 to its os.environ (PEP 538): the
    server it starts must still be the one the launcher's environment names."""
    env = launch.env()
    if locale == "none":
        env = {k: v for k, v in env.items()
               if k not in ("LANG", "LANGUAGE") and not k.startswith("LC_")}
    assert launch.server(env) is None
    p = subprocess.run(f"{launch.bin / 'roar'} run -- true | cat", shell=True, cwd=roar.cwd,
                       env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr  # the server started holds no pipe of the run's
    assert launch.py_runs() == ["run -- true"]
    deadline = time.monotonic() + 30
    while launch.server(env) is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    p = subprocess.run(f"{launch.bin / 'roar'} run -- echo hi | cat", shell=True,
                       cwd=roar.cwd, env=env, capture_output=True, text=True,
                       timeout=30)
    assert p.stdout == "hi\n" and launch.py_runs() == ["run -- true"]


def test_a_stale_server_refuses_and_exits(launch, roar):
    pid = launch.start_server()
    mod = Path(warm.__file__)
    st = mod.stat()
    try:
        os.utime(mod, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert launch("run", "--", "true").returncode == 0
    finally:
        os.utime(mod, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert launch.py_runs() == ["run -- true"]
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and _state(pid) != "Z":
        assert time.monotonic() < deadline, "the stale server did not exit"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "X"


def test_idle_exit(launch):
    env = launch.env(ROAR_WARM_IDLE="1")
    pid = launch.start_server(env)  # (a connection counts as a request: not asked again)
    deadline = time.monotonic() + 10
    while _state(pid) not in ("X", "Z"):
        assert time.monotonic() < deadline, "the idle server did not exit"
        time.sleep(0.1)
    assert not warm.listening(warm.key(str(launch.bin), launch.key_env(env)))


PEER = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1].encode().replace(b"@", b"\0", 1))
try:
    s.send(b"roarw1\0" + sys.argv[2].encode() + b"\0")
    s.settimeout(10)
    print("read", repr(s.recv(100)))
except (ConnectionResetError, BrokenPipeError):
    print("closed")
"""

SQUAT = r"""
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.bind(sys.argv[1].encode().replace(b"@", b"\0", 1))
s.listen(8)
print("bound", flush=True)
time.sleep(60)
"""


def test_another_uid_can_neither_use_nor_break_it(launch, roar, other_user):
    env = launch.env()
    k = warm.key(str(launch.bin), launch.key_env(env))
    name = warm.address(k).replace(b"\0", b"@", 1).decode()
    user = ["setpriv", f"--reuid={other_user.pw_uid}", f"--regid={other_user.pw_gid}",
            "--clear-groups", sys.executable, "-c"]
    # a squatter on our name: our runs take Python's path and still work
    squat = subprocess.Popen([*user, SQUAT, name], stdout=subprocess.PIPE, text=True, cwd="/")
    try:
        assert squat.stdout.readline() == "bound\n"
        p = launch("run", "--", "true")
        assert p.returncode == 0, p.stderr
        assert launch.py_runs() == ["run -- true"]
    finally:
        squat.kill()
        squat.wait()
    pid = launch.start_server()
    p = subprocess.run([*user, PEER, name, k], capture_output=True, text=True, timeout=30,
                       cwd="/")
    assert p.stdout.strip() in ("closed", "read b''"), p.stderr  # nothing read or sent
    assert launch.server() == pid
    assert launch("run", "--", "true").returncode == 0



def test_recorder_killed_mid_run_the_launcher_waits_for_its_command(launch, roar):
    """The recorder's child dies: the launcher says so in one line, still waits
    for its workload and exits with its code; roard keeps the run from its spool."""
    server = launch.start_server()
    w = roar.cwd
    client = subprocess.Popen([str(launch.bin / "roar"), "run", "--", "sh", "-c",
                               "echo $$ > pid; while [ ! -e go ]; do sleep 0.05; done; exit 5"],
                              cwd=w, env=launch.env(), stderr=subprocess.PIPE, text=True)
    workload_pid(w / "pid", client)
    deadline = time.monotonic() + 10
    while len(children := [  # (a probe's child ends at once; not yet reaped)
            int(c) for c in Path(f"/proc/{server}/task/{server}/children").read_text().split()
            if _state(int(c)) not in ("Z", "X")]) != 1:
        assert time.monotonic() < deadline, children
        time.sleep(0.05)
    os.kill(children[0], signal.SIGKILL)
    time.sleep(0.5)
    (w / "go").touch()
    _, err = client.communicate(timeout=60)
    assert client.returncode in (5, 128 + signal.SIGTERM), err  # roard may end it first
    assert "the warm recorder ended before the run was stored" in err
    deadline = time.monotonic() + 60
    while not (runs := roar.json("log")) or runs[0]["complete"] is None:
        assert time.monotonic() < deadline, runs
        time.sleep(0.2)
    assert runs[0]["status"] == "interrupted"
