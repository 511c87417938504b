"""I/O the probes cannot see marks the run incomplete (issue 13 item 7): a
process that moves itself out of the run's cgroup, io_uring on a ring set up
outside the run, and a read of a file whose fd came over SCM_RIGHTS. Each is a
real workload under the real probes that really reads an input the run cannot
record; membership of that input then answers `unknown`, never `no`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
from conftest import PY, last_run, roar_cmd, xxh128

pytestmark = pytest.mark.capture

RING_C = Path(__file__).with_name("ring.c")


def membership(roar, target, candidate: Path) -> str:
    return roar.json("inputs", target, "--contains", candidate)["answer"]


def check_flagged(roar, doc: dict, code: str, lost: Path) -> None:
    """The run says complete=false with `code` among its reasons, the input it
    could not see is not claimed as known, and asking about it says unknown."""
    assert str(lost) not in {i["path"] for i in doc["inputs"]}  # it was not seen...
    assert doc["complete"] is False, doc["incomplete_reasons"]
    from roar.record.store import Store

    stored = Store(roar.home, readonly=True).get_run(doc["id"])
    assert code in {r["code"] for r in stored["reasons"]}, stored["reasons"]
    assert membership(roar, doc["id"], lost) == "unknown"  # ...so never answered `no`


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the io_uring workload")
    d = tmp_path_factory.mktemp("ring")
    subprocess.run(["gcc", "-O2", "-o", str(d / "ring"), str(RING_C)], check=True)
    probe = subprocess.run([str(d / "ring"), "hold", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"io_uring is not available here: {probe.stderr.strip()}")
    return str(d / "ring")


def test_io_uring_ring_set_up_outside_the_run(roar, ring):
    """The ring is set up before `roar run` starts (no io_uring_setup inside the
    run); the workload opens and reads its input through it only."""
    src = roar.cwd / "in.txt"
    src.write_text("read through a ring\n")
    out = roar.cwd / "out.txt"
    p = subprocess.run([ring, "hold", *roar_cmd("run", "--", ring, "read", src, out)],
                       cwd=roar.cwd, env=roar.env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert out.read_text() == "read through a ring\n"
    doc = last_run(roar)
    assert [o["path"] for o in doc["outputs"]] == [str(out)]
    assert doc["io_uring"] is True
    check_flagged(roar, doc, "io_uring", src)


def test_fd_received_over_scm_rights(roar):
    """A process outside the run opens the input and hands the workload its fd
    over a unix socket; the workload reads it: no open of it is ever seen."""
    src = roar.cwd / "secret-input.txt"
    src.write_text("handed over\n")
    sock_path = roar.cwd / "fds.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        fd = os.open(src, os.O_RDONLY)
        socket.send_fds(conn, [b"x"], [fd])
        os.close(fd)
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    out = roar.cwd / "out.txt"
    code = ("import os, socket\n"
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect('fds.sock')\n"
            "_, [fd], _, _ = socket.recv_fds(s, 1, 1)\n"
            "data = os.read(fd, 1000)\n"
            "open('out.txt', 'wb').write(data)\n")
    try:
        _, doc = roar.run(PY, "-c", code)
    finally:
        t.join(10)
        server.close()
    assert out.read_text() == "handed over\n"
    assert str(out) in {o["path"] for o in doc["outputs"]}
    check_flagged(roar, doc, "untraced_fd", src)


def test_pipes_sockets_and_inherited_stdio_are_not_untraced_files(roar):
    """Reads and writes on fds no open made that are not regular files (pipes,
    sockets, eventfds, inherited stdio) and on a memfd (a file with no name)
    keep the run complete."""
    src = roar.cwd / "in.txt"
    src.write_text("x\n")
    code = ("import os, socket, sys\n"
            "r, w = os.pipe(); os.write(w, b'p'); os.read(r, 1)\n"
            "a, b = socket.socketpair(); a.send(b's'); b.recv(1)\n"
            "e = os.eventfd(0); os.eventfd_write(e, 1); os.eventfd_read(e)\n"
            "m = os.memfd_create('scratch'); os.write(m, b'm'); os.pread(m, 1, 0)\n"
            "sys.stdout.write(open('in.txt').read()); sys.stdout.flush()\n")
    p, doc = roar.run(PY, "-c", code)
    assert doc["complete"] is True, doc["incomplete_reasons"]
    assert [i["path"] for i in doc["inputs"]] == [str(src)]


@pytest.fixture
def elsewhere():
    """A cgroup outside every run, removed afterwards."""
    from roar.capture.cgroups import cgroup2_mount

    d = cgroup2_mount() / f"roar-test-elsewhere-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    yield d
    for _ in range(100):
        try:
            d.rmdir()
            return
        except OSError:
            import time

            time.sleep(0.1)


def test_process_that_moves_itself_out_of_the_run_cgroup(roar, elsewhere):
    """The workload writes its own pid into another cgroup's cgroup.procs, then
    reads an input and starts cat: nothing after the move is traced."""
    src = roar.cwd / "in.txt"
    src.write_text("after the move\n")
    out = roar.cwd / "copy.txt"
    _, doc = roar.run("sh", "-c", f"echo $$ > {elsewhere}/cgroup.procs && cat in.txt > copy.txt")
    assert out.read_text() == "after the move\n" and xxh128(out) == xxh128(src)
    check_flagged(roar, doc, "left_run", src)
