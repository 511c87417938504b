"""Agent auditing: policies (unit), and real sessions of a scripted agent
(tests/audit_agent.py) under `roar run --audit` with alert and kill rules."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from roar.record import audit

AGENT = Path(__file__).with_name("audit_agent.py")


# -- policies (no privileges) ---------------------------------------------------


def test_globs_follow_homes_names_and_workspace():
    m = audit.PathMatcher(["~/.ssh/**", "**/.env", "*.pem", "conf/*.yml"], ["/home/a", "/h2"],
                          "/ws")
    assert m.match("/home/a/.ssh/id_rsa") and m.match("/h2/.ssh/keys/deep")
    assert not m.match("/home/b/.ssh/id_rsa")
    assert m.match("/srv/app/.env") and m.match("/.env") and not m.match("/srv/app/.envrc")
    assert m.match("/x/y/cert.pem") and not m.match("/x/pem")
    assert m.match("/ws/conf/a.yml") and not m.match("/ws/conf/sub/a.yml")


def test_connect_entries():
    loop = audit.Endpoint.parse("127.0.0.0/8:*")
    assert loop.match({"family": "inet", "address": "127.0.0.1", "port": 80})
    assert not loop.match({"family": "inet", "address": "10.0.0.1", "port": 80})
    https = audit.Endpoint.parse("0.0.0.0/0:443")
    assert https.match({"family": "inet", "address": "1.2.3.4", "port": 443})
    assert not https.match({"family": "inet", "address": "1.2.3.4", "port": 80})
    v6 = audit.Endpoint.parse("[::1]:8000-8100")
    assert v6.match({"family": "inet6", "address": "::1", "port": 8080})
    assert not v6.match({"family": "inet6", "address": "::1", "port": 9000})
    mapped = audit.Endpoint.parse("10.0.0.0/8")
    assert mapped.match({"family": "inet6", "address": "::ffff:10.1.2.3", "port": 1})
    with pytest.raises(audit.PolicyError):
        audit.Endpoint.parse("example.com:80")


def test_policy_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "p.toml"
    for text, needle in [('[[rule]]\nkind = "nope"\n', "kind must be one of"),
                         ('[[rule]]\nkind = "exec"\naction = "alert"\n', "needs match"),
                         ('[[rule]]\nkind = "exec"\nmatch = ["x"]\naction = "boom"\n',
                          "alert or kill"),
                         ("workspace = 3\n", "workspace must be a path"),
                         ("wat = 1\n", "unknown key"), ("[[rule]\n", "not valid TOML")]:
        bad.write_text(text)
        with pytest.raises(audit.PolicyError, match=needle):
            audit.load_policy(str(bad), "/ws", ["/h"])
    with pytest.raises(audit.PolicyError, match="cannot read"):
        audit.load_policy(str(tmp_path / "missing.toml"), "/ws", ["/h"])


def test_rules_fire_on_what_they_name(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text('workspace = "ws"\n'
                 '[[rule]]\nkind = "write_outside"\nallow = ["/tmp/**"]\n'
                 '[[rule]]\nkind = "connect"\nallow = ["127.0.0.0/8:*", "[::1]"]\n'
                 '[[rule]]\nname = "no-curl"\nkind = "exec"\nmatch = ["curl", "*/wget"]\n'
                 'action = "kill"\n')
    pol = audit.load_policy(str(p), "/elsewhere", ["/h"])
    assert pol.workspace == str(tmp_path / "ws") and pol.workspace_given
    wo, conn, ex = pol.rules
    assert audit._fires(wo, "/etc/passwd") and not audit._fires(wo, "/tmp/x")
    assert audit._fires(conn, {"family": "inet", "address": "8.8.8.8", "port": 53})
    assert not audit._fires(conn, {"family": "inet6", "address": "::1", "port": 53})
    assert ex.name == "no-curl" and ex.action == "kill"
    assert audit._fires(ex, ("/usr/bin/curl", "curl")) and audit._fires(ex, ("/bin/wget", "x"))
    assert not audit._fires(ex, ("/usr/bin/git", "git"))
    assert pol.in_workspace(str(tmp_path / "ws" / "a")) and not pol.in_workspace("/wsx")


def test_run_with_a_bad_policy_is_refused_before_it_starts(cli):
    marker = cli.cwd / "started"
    (cli.cwd / "p.toml").write_text('[[rule]]\nkind = "nope"\n')
    p = cli("run", "--policy", "p.toml", "--", "touch", str(marker), check=False)
    from conftest import one_line_error

    assert "kind must be one of" in one_line_error(p) and not marker.exists()


# -- real sessions ---------------------------------------------------------------


def _git_workspace(root: Path) -> Path:
    ws = root / "ws"
    ws.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    (ws / "tracked.txt").write_text("version one\n")
    (ws / ".gitignore").write_text("*.txt\n!tracked.txt\nready\n")
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "init"]):
        subprocess.run(["git", *cmd], cwd=ws, check=True, env=env, capture_output=True)
    return ws


def _agent_setup(tmp_path: Path) -> tuple[Path, Path, Path, dict]:
    ws = _git_workspace(tmp_path)
    home = tmp_path / "agent-home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("-----BEGIN FAKE KEY-----\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    return ws, home, outside, {"HOME": str(home)}


POLICY = """
[[rule]]
name = "ssh-keys"
kind = "secret_read"
match = ["~/.ssh/**"]
action = "{secret_action}"

[[rule]]
name = "stay-in-workspace"
kind = "write_outside"
action = "alert"

[[rule]]
name = "loopback-only"
kind = "connect"
allow = ["10.0.0.0/8:*"]
action = "alert"

[[rule]]
name = "no-git"
kind = "exec"
match = ["git"]
action = "alert"
"""


def _policy(tmp_path: Path, secret_action: str = "alert") -> Path:
    p = tmp_path / "policy.toml"
    p.write_text(POLICY.format(secret_action=secret_action))
    return p


@pytest.mark.capture
def test_audited_run_reports_what_the_agent_did(roar, tmp_path):
    ws, home, outside, env = _agent_setup(tmp_path)
    policy = _policy(tmp_path)
    p = roar("run", "--policy", policy, "--", sys.executable, AGENT, ws, outside, "2",
             cwd=ws, env=roar.env(**env), check=False)
    assert p.returncode == 0, p.stderr
    run_id = roar.json("log", "-n", "1")[0]["id"]
    rep = roar.json("audit", run_id)
    assert rep["kind"] == "run" and rep["workspace"] == str(ws)
    argvs = [c["argv"] for c in rep["commands"]]
    assert ["git", "status", "--short"] in argvs
    assert any(a[:2] == ["sh", "-c"] and "step 1" in a[2] for a in argvs)
    assert sum(1 for a in argvs if a[1:2] == ["-c"] and "py_1.txt" in a[2]) == 1
    git = next(c for c in rep["commands"] if c["argv"][:1] == ["git"])
    assert git["exe_hash"] and git["exit"] == 0 and git["exe"].endswith("/git")
    secret = str(home / ".ssh" / "id_rsa")
    assert rep["secret_reads"] == [secret]
    assert any(r["path"] == secret and r["hash"] for r in rep["reads"])
    for i in range(2):
        assert str(outside / f"out_{i}.txt") in rep["outside_workspace"]
        assert str(ws / f"daemon_{i}.txt") in rep["created"]  # by the daemonized helper
    writes = {w["path"]: w for w in rep["writes"]}
    assert writes[str(ws / "step_1.txt")]["after"] and writes[str(ws / "step_1.txt")]["before"] \
        is None
    assert any(n["family"] == "inet" and n["address"] == "127.0.0.1" and n["port"]
               for n in rep["network"])
    rules = {(a["rule"], a["kind"]) for a in rep["alerts"]}
    assert rules == {("ssh-keys", "secret_read"), ("stay-in-workspace", "write_outside"),
                     ("loopback-only", "connect"), ("no-git", "exec")}
    assert sum(1 for a in rep["alerts"] if a["rule"] == "no-git") == 2
    assert rep["git"]["before"]["commit"] == rep["git"]["after"]["commit"]
    # the alerts are on the run as `roar show` gives it, and in the jsonl export
    assert roar.json("show", run_id)["alerts"] == rep["alerts"]
    assert "alert    " in roar("show", run_id).stdout
    lines = [json.loads(x) for x in roar("export", run_id, "--format", "jsonl").stdout.splitlines()]
    assert {x["type"] for x in lines} >= {"session", "exec", "file", "connect", "alert"}
    assert sum(1 for x in lines if x["type"] == "alert") == len(rep["alerts"])


@pytest.mark.capture
def test_before_hash_of_an_overwritten_file(roar, tmp_path):
    ws, home, outside, env = _agent_setup(tmp_path)
    (outside / "keep.txt").write_text("old content\n")
    script = (f"import time\nopen({str(ws / 'tracked.txt')!r}, 'w').write('version two')\n"
              f"f = open({str(outside / 'keep.txt')!r}, 'r+')\ntime.sleep(0.3)\n"
              "f.seek(0, 2); f.write('more'); f.close()\n")
    roar("run", "--audit", "--", sys.executable, "-c", script, cwd=ws, env=roar.env(**env))
    rep = roar.json("audit", roar.json("log", "-n", "1")[0]["id"])
    from conftest import xxh128

    w = {x["path"]: x for x in rep["writes"]}
    tracked = w[str(ws / "tracked.txt")]  # truncated at open: HEAD's blob is the pre-image
    assert tracked["before_status"] == "HEAD's version (git)"
    assert tracked["after"] == xxh128(ws / "tracked.txt") != tracked["before"]
    keep = w[str(outside / "keep.txt")]
    (tmp_path / "old").write_text("old content\n")
    assert keep["before"] == xxh128(tmp_path / "old") and keep["after"] == xxh128(
        outside / "keep.txt")


@pytest.mark.capture
def test_kill_rule_ends_the_session_and_says_why(roar, tmp_path):
    ws, home, outside, env = _agent_setup(tmp_path)
    policy = _policy(tmp_path, secret_action="kill")
    t0 = time.monotonic()
    p = roar("run", "--policy", policy, "--", sys.executable, AGENT, ws, outside, "3",
             cwd=ws, env=roar.env(**env), check=False)
    assert time.monotonic() - t0 < 60
    assert p.returncode == 128 + 9 and "killed by policy: ssh-keys" in p.stderr
    run_id = roar.json("log", "-n", "1")[0]["id"]
    doc = roar.json("show", run_id)
    assert "killed by policy: ssh-keys" in doc["incomplete_reasons"]
    rep = roar.json("audit", run_id)
    assert rep["killed_by"] == "ssh-keys" and rep["kill"]["killed_ms"] < 1000
    # decided in userspace: what the agent did within those milliseconds (its
    # next write) may have happened, nothing later did
    assert not (ws / "daemon_0.txt").exists() and not (ws / "step_1.txt").exists()
    print(f"kill: decided {rep['kill']['decided_ms']} ms, session killed "
          f"{rep['kill']['killed_ms']} ms after the violating open")


def _wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _attach(roar, pid: int, *args) -> tuple[subprocess.Popen, str]:
    """roar attach PID in the background; returns it and the run id it printed."""
    p = subprocess.Popen([sys.executable, "-m", "roar", "attach", str(pid), "--json", *args],
                         env=roar.env(), cwd=roar.cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line, p.stderr.read()
    first = json.loads(line)
    assert first["event"] == "attached" and first["pid"] == pid
    return p, first["run"]


@pytest.mark.capture
def test_attach_mid_way_reports_exactly_what_followed(roar, tmp_path):
    ws, home, outside, env = _agent_setup(tmp_path)
    gate = tmp_path / "go"
    agent = subprocess.Popen([sys.executable, AGENT, ws, outside, "2", gate], cwd=ws,
                             env={**os.environ, **env})
    try:
        _wait_for(ws / "ready")  # iteration 0 is done, before the attach
        att, run_id = _attach(roar, agent.pid, "--policy", _policy(tmp_path), "--name", "agent")
        gate.touch()
        assert agent.wait(60) == 0
        out, err = att.communicate(timeout=60)
    finally:
        agent.kill()
    assert att.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["event"] == "ended"
    rep = roar.json("audit", run_id)
    assert rep["kind"] == "attached" and rep["membership"] == "unknown"
    assert not rep["complete"] and any("before the attach" in r
                                       for r in rep["incomplete_reasons"])
    argvs = [" ".join(c["argv"]) for c in rep["commands"]]
    # iteration 1, all of it; iteration 0, none of it
    assert any("step 1" in a for a in argvs) and not any("step 0" in a for a in argvs)
    assert any("py_1.txt" in a for a in argvs) and not any("py_0.txt" in a for a in argvs)
    assert sum(1 for a in argvs if a == "git status --short") == 1
    root = next(c for c in rep["commands"] if c["pid"] == agent.pid)
    assert root["attached"] and root["exe_hash"] and root["exit"] == 0
    written = {w["path"] for w in rep["writes"]}
    assert {str(ws / "step_1.txt"), str(ws / "py_1.txt"), str(ws / "daemon_1.txt"),
            str(outside / "out_1.txt")} <= written
    assert not {str(ws / "step_0.txt"), str(outside / "out_0.txt")} & written
    assert rep["outside_workspace"] == [str(outside / "out_1.txt")]
    assert rep["secret_reads"] == [str(home / ".ssh" / "id_rsa")]
    assert any(n["address"] == "127.0.0.1" and n["port"] for n in rep["network"])
    kinds = [a["kind"] for a in rep["alerts"]]
    assert sorted(set(kinds)) == ["connect", "exec", "secret_read", "write_outside"]
    assert kinds.count("exec") == 1  # git, once: iteration 0's git was before the attach


@pytest.mark.capture
def test_detach_gives_the_tree_back(roar, tmp_path):
    ws, home, outside, env = _agent_setup(tmp_path)
    sleeper = subprocess.Popen(["sh", "-c", "sleep 30 & wait"], cwd=ws)
    try:
        before = Path(f"/proc/{sleeper.pid}/cgroup").read_text()
        att, run_id = _attach(roar, sleeper.pid)
        assert Path(f"/proc/{sleeper.pid}/cgroup").read_text() != before
        roar("detach", run_id[:10])
        out, err = att.communicate(timeout=60)
        assert att.returncode == 0, err
        assert Path(f"/proc/{sleeper.pid}/cgroup").read_text() == before
        assert sleeper.poll() is None  # untouched: still running
    finally:
        sleeper.kill()
    doc = roar.json("show", run_id)
    assert any("detached" in r for r in doc["incomplete_reasons"])


def test_a_slow_stream_reader_never_stalls_capture(tmp_path):
    """The writer blocks on a full pipe nobody reads: events past the bound
    are counted as skipped (put never waits) and the stream says how many."""
    fifo = tmp_path / "live" / "run.jsonl"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    st = audit.EventStream(fifo)
    total = audit.STREAM_MAX * 3
    t0 = time.monotonic()
    for i in range(total):
        st.put({"type": "exec", "i": i})
    put_s = time.monotonic() - t0
    assert st.skipped > 0
    os.set_blocking(r, True)
    chunks = []
    import threading

    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(r, 1 << 16),
                                                                b"")))
    reader.start()
    st.close({"type": "end"})
    reader.join(30)
    os.close(r)
    lines = [json.loads(x) for x in b"".join(chunks).decode().splitlines()]
    kept = [x for x in lines if x["type"] == "exec"]
    skipped = sum(x["count"] for x in lines if x["type"] == "skipped")
    assert skipped == st.skipped and len(kept) + skipped == total
    assert [x["i"] for x in kept] == sorted(x["i"] for x in kept) and lines[-1]["type"] == "end"
    assert put_s < 5  # no put waited for the writer


@pytest.mark.capture
def test_watch_streams_a_live_session(roar, tmp_path):
    ws, home, outside, env = _agent_setup(tmp_path)
    gate = tmp_path / "go"
    run = subprocess.Popen([sys.executable, "-m", "roar", "run", "--policy", _policy(tmp_path),
                            "--", sys.executable, AGENT, ws, outside, "2", gate], cwd=ws,
                           env=roar.env(**env), stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(ws / "ready")
        run_id = roar.json("log", "-n", "1")[0]["id"]
        watch = subprocess.Popen([sys.executable, "-m", "roar", "watch", run_id[:12], "--json"],
                                 env=roar.env(), cwd=roar.cwd, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        time.sleep(1)
        gate.touch()
        out, err = watch.communicate(timeout=120)
        assert run.wait(120) == 0
    finally:
        run.kill()
    assert watch.returncode == 0, err
    evs = [json.loads(x) for x in out.splitlines()]
    assert evs[-1] == {"type": "end", "run": run_id}
    assert all(e["run"] == run_id for e in evs)
    types = {e["type"] for e in evs}
    assert {"exec", "file", "connect", "alert"} <= types
    assert any(e["type"] == "exec" and "step 1" in " ".join(e["argv"]) for e in evs)
    assert any(e["type"] == "file" and e["op"] == "written" and e["path"] == str(ws / "py_1.txt")
               for e in evs)
    assert any(e["type"] == "alert" and e["rule"] == "ssh-keys" for e in evs)
    assert all({"pid", "ts"} <= e.keys() for e in evs if e["type"] != "end")


@pytest.mark.capture
def test_verify_finds_a_record_edited_or_deleted_in_the_store(roar, tmp_path):
    (roar.cwd / "in.txt").write_text("data\n")
    ids = []
    for i in range(4):
        roar("run", "--", "sh", "-c", f"cat in.txt > out{i}.txt")
        ids.append(roar.json("log", "-n", "1")[0]["id"])
    assert roar.json("verify") == {"ok": True, "checked": 4, "problems": []}
    chain_file = roar.sock.parent / "state" / "chain" / "0"
    assert chain_file.stat().st_mode & 0o077 == 0 and chain_file.stat().st_uid == 0
    from roar.record.store import Store

    with Store(roar.home) as store:  # the traced user rewrites history in their store
        doc = store.get_run(ids[1])
        doc["command"] = ["sh", "-c", "echo innocent"]
        store.put_run(doc)
        files = store.run_files(ids[2])
        files[0]["hash"] = "0" * 32
        store.index_files(ids[2], files)
        store.write(lambda txn: txn.delete(ids[3].encode(), db=store.dbs["runs"]))
    p = roar("verify", "--json", check=False)
    assert p.returncode == 1
    doc = json.loads(p.stdout)
    assert not doc["ok"] and doc["checked"] == 4
    assert {(x["run"], x["problem"].split(" (")[0]) for x in doc["problems"]} == {
        (ids[1], "edited after it was stored"), (ids[2], "edited after it was stored"),
        (ids[3], "missing from the store")}


ASK = """
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(json.dumps({"op": "attach", "pid": int(sys.argv[2]), "run_id": "X1",
                      "home": "/tmp"}).encode() + b"\\n")
head = s.recv(5, socket.MSG_WAITALL)
kind, n = struct.unpack("<cI", head)
print(s.recv(n, socket.MSG_WAITALL).decode())
"""


@pytest.mark.capture
def test_only_the_owner_may_attach(other_user):
    """Another user asking roard to attach to root's process is refused, by
    the credentials of its socket (SO_PEERCRED), and the process stays put."""
    import tempfile

    from conftest import start_roard, stop_roard

    base = Path(tempfile.mkdtemp(prefix="roar-attach-", dir="/tmp"))
    os.chmod(base, 0o755)
    proc, sock = start_roard(base)
    victim = subprocess.Popen(["sleep", "30"])
    try:
        before = Path(f"/proc/{victim.pid}/cgroup").read_text()
        p = subprocess.run(["setpriv", f"--reuid={other_user.pw_uid}",
                            f"--regid={other_user.pw_gid}", "--clear-groups",
                            "/usr/bin/python3", "-c", ASK, str(sock), str(victim.pid)],
                           capture_output=True, text=True, timeout=60, cwd="/")
        reply = json.loads(p.stdout)
        assert reply["ok"] is False and "not yours" in reply["error"], p.stderr
        assert Path(f"/proc/{victim.pid}/cgroup").read_text() == before
    finally:
        victim.kill()
        stop_roard(proc, sock)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.capture
def test_kill_rule_stops_an_attached_session(roar, tmp_path):
    ws, home, outside, env = _agent_setup(tmp_path)
    gate = tmp_path / "go"
    agent = subprocess.Popen([sys.executable, AGENT, ws, outside, "3", gate], cwd=ws,
                             env={**os.environ, **env})
    try:
        _wait_for(ws / "ready")
        att, run_id = _attach(roar, agent.pid, "--policy", _policy(tmp_path, "kill"))
        gate.touch()
        assert agent.wait(60) == -9  # SIGKILL, through the run cgroup
        out, err = att.communicate(timeout=60)
    finally:
        agent.kill()
    assert att.returncode == 0, err
    rep = roar.json("audit", run_id)
    assert rep["killed_by"] == "ssh-keys" and rep["kill"]["killed_ms"] < 1000
    assert "killed by policy: ssh-keys" in rep["incomplete_reasons"]
    assert not (ws / "daemon_1.txt").exists() and not (ws / "step_2.txt").exists()
