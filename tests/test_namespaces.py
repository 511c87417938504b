"""`roar run` inside a container's own pid and mount namespaces, and inside a
chroot, traced by the host's roard (roar/capture/namespaces.py): the workload
is found by the pid its caller sees, its paths are its own, hashed as it saw
them (also when roard rebuilds a run whose client was killed), and the run
records the namespaces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PY, REPO, xxh128

pytestmark = pytest.mark.capture


def _doc(home: Path, run_id: str | None = None) -> dict:
    from roar.record.store import Store

    with Store(home, readonly=True) as s:
        run_id = run_id or next(s.iter_runs())["id"]
        return s.get_run(run_id)


def test_run_inside_own_pid_and_mount_namespace(roar):
    (roar.cwd / "input").write_text("data seen from the namespace\n")
    p = subprocess.run(["unshare", "--pid", "--mount", "--fork", "--mount-proc",
                        PY, "-m", "roar", "run", "--", "sh", "-c",
                        "cat input > output; echo $$ > nspid"],
                       cwd=roar.cwd, env=roar.env(), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    nspid = int((roar.cwd / "nspid").read_text())
    last = roar.json("log", "-n", "1")[0]
    run = roar.json("show", last["id"])
    assert run["status"] == "finished" and run["complete"], run["incomplete_reasons"]
    assert [(i["path"], i["hash"]) for i in run["inputs"]] == [
        (str(roar.cwd / "input"), xxh128(roar.cwd / "input"))]
    assert {o["path"]: o["hash"] for o in run["outputs"]} == {
        str(roar.cwd / name): xxh128(roar.cwd / name) for name in ("output", "nspid")}
    ns = run["namespaces"]
    assert ns["container"] and ns["pid"] != os.stat("/proc/self/ns/pid").st_ino
    assert ns["mnt"] != os.stat("/proc/self/ns/mnt").st_ino
    assert ns["host_pid"] != nspid  # the host's pid, found from the namespace's
    procs = roar.json("trace", last["id"])
    text = json.dumps(procs)
    assert '"cat"' in text and '"sh"' in text  # the root process and its child, traced


def test_a_pid_from_another_namespace_is_not_taken_as_a_host_pid(roar):
    """A caller in a pid namespace names a process that is not its child: roard
    refuses instead of tracing whatever host process has that number."""
    script = ("import json, os, socket, sys\n"
              "s = socket.socket(socket.AF_UNIX); s.connect(os.environ['ROAR_SOCKET'])\n"
              "s.sendall(json.dumps({'op': 'trace', 'pid': 1, 'run_id': 'X1',\n"
              "                      'home': '/tmp', 'root_fds': {}}).encode() + b'\\n')\n"
              "sys.stdout.write(s.recv(4096)[5:].decode())\n")
    p = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", PY, "-c", script],
                       env=roar.env(), capture_output=True, text=True, timeout=60)
    reply = json.loads(p.stdout)
    assert not reply["ok"] and "not a child of the caller" in reply["error"]


def _chroot_script(root: Path, sock_dir: Path, inner: str) -> str:
    """A shell script: a private mount namespace, a root with the host's system
    and this checkout bound in (nothing else of the host's files), then `inner`
    chrooted there."""
    wanted = ["/usr", "/etc", "/root", "/dev", str(REPO), sys.prefix, sys.base_prefix,
              str(sock_dir)]
    binds: list[str] = []
    for b in sorted(set(wanted), key=len):  # parents first; a path already inside one is skipped
        if not any(b == p or b.startswith(p.rstrip("/") + "/") for p in binds):
            binds.append(b)
    lines = ["set -e", "mount --make-rprivate /"]
    for d in ("bin", "lib", "lib64", "sbin"):
        host = Path("/") / d
        if host.is_symlink():
            lines.append(f"[ -e {root}/{d} ] || ln -s {os.readlink(host)} {root}/{d}")
        elif host.is_dir():
            binds.append(str(host))
    for b in binds:
        lines.append(f"mkdir -p {root}{b} && mount --rbind {b} {root}{b}")
    lines.append(f"mkdir -p {root}/proc && mount -t proc proc {root}/proc")
    lines.append(f"exec chroot {root} sh -c 'cd /job && exec {inner}'")
    return "\n".join(lines)


@pytest.fixture
def chroot(roar, tmp_path):
    root = tmp_path / "root"
    (root / "job").mkdir(parents=True)
    (root / "job" / "input").write_text("only inside the chroot\n")
    (root / "tmp").mkdir()
    assert not Path("/job").exists()  # the host has no such path: hashing there fails
    env = roar.env(ROAR_HOME="/home-roar", PYTHONPATH=str(REPO))
    return root, env


def test_run_inside_a_chroot(roar, chroot):
    root, env = chroot
    inner = f"{PY} -m roar run -- sh -c \"cat input > output\""
    p = subprocess.run(["unshare", "--mount", "sh", "-c",
                        _chroot_script(root, roar.sock.parent, inner)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    doc = _doc(root / "home-roar")
    assert doc["status"] == "finished" and doc["complete"], doc.get("incomplete_reasons")
    assert doc["namespaces"]["container"] and doc["namespaces"]["root"] == str(root)
    from roar.record.store import Store

    with Store(root / "home-roar", readonly=True) as s:
        files = {f["path"]: f for f in s.run_files(doc["id"]) if f["kind"] == "data"}
    assert files["/job/input"]["hash"] == xxh128(root / "job" / "input")
    assert files["/job/output"]["hash"] == xxh128(root / "job" / "output")


def test_a_killed_client_in_a_chroot_is_rebuilt_in_its_view(roar, chroot):
    """roard rebuilds the run from its spool inside the workload's mount
    namespace and root, so its files are hashed as the workload saw them."""
    root, env = chroot
    inner = f"{PY} -m roar run -- sh -c \"cat input > output; echo > ready; sleep 60\""
    client = subprocess.Popen(["unshare", "--mount", "sh", "-c",
                               _chroot_script(root, roar.sock.parent, inner)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (root / "job" / "ready").exists():
        assert client.poll() is None, client.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(client.pid, signal.SIGKILL)  # unshare and sh exec'd: this is roar run
    client.wait()
    deadline = time.monotonic() + 60
    while _doc(root / "home-roar")["status"] == "running":
        assert time.monotonic() < deadline, "roard never rebuilt the run"
        time.sleep(0.2)
    doc = _doc(root / "home-roar")
    assert doc["status"] == "interrupted"
    from roar.record.store import Store

    with Store(root / "home-roar", readonly=True) as s:
        files = {f["path"]: f for f in s.run_files(doc["id"]) if f["kind"] == "data"}
    assert files["/job/input"]["hash"] == xxh128(root / "job" / "input")
    assert files["/job/output"]["hash"] == xxh128(root / "job" / "output")


def test_embedded_mode_in_a_pid_namespace_is_refused_in_one_line(cli):
    """Without a reachable roard, a root `roar run` in its own pid namespace
    would load the probes itself, whose records carry host pids: it refuses."""
    from conftest import one_line_error

    marker = cli.cwd / "ran"
    p = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", PY, "-m", "roar", "run",
                        "--", "touch", str(marker)], cwd=cli.cwd, env=cli.env(),
                       capture_output=True, text=True, timeout=120)
    assert "pid namespace of its own" in one_line_error(p)
    assert not marker.exists()
