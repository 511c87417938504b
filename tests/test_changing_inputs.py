"""Inputs that change under the run: deleted, recreated or replaced right after
they were read; FIFOs, sockets and device files."""

from __future__ import annotations

import os
import shutil

import pytest
from conftest import (
    PY,
    xxh128,
)


@pytest.mark.capture
def test_input_deleted_right_after_reading_is_vanished_or_rightly_hashed(roar):
    """Inputs deleted microseconds after their read may be gone before they are
    hashed: each is still listed, with its true hash or as vanished, never a wrong one."""
    w = roar.cwd
    n = 20
    expected = {}
    for i in range(n):
        (w / f"v{i}").write_text(f"version {i} of a file about to vanish\n")
        expected[str(w / f"v{i}")] = xxh128(w / f"v{i}")
    _, doc = roar.run(PY, "-c", f"import os\nfor i in range({n}):\n"
                                "    open(f'v{i}').read()\n    os.unlink(f'v{i}')\n")
    got = {i["path"]: i for i in doc["inputs"]}
    assert sorted(got) == sorted(expected)
    for path, e in got.items():
        assert (e["status"], e["hash"]) in (("ok", expected[path]), ("vanished", None)), e
    vanished = sum(1 for e in got.values() if e["status"] == "vanished")
    print(f"\n[vanish] {vanished} of {n} inputs vanished before they were hashed")
    if vanished:
        assert doc["complete"] is False
        assert f"{vanished} input(s) without a verified content hash" in doc[
            "incomplete_reasons"]


@pytest.mark.capture
def test_input_deleted_and_recreated_keeps_its_first_version(roar):
    w = roar.cwd
    (w / "data.txt").write_text("first version\n")
    v1 = xxh128(w / "data.txt")
    _, doc = roar.run(PY, "-c", "import os, time\nopen('data.txt').read()\ntime.sleep(0.3)\n"
                                "os.unlink('data.txt')\nopen('data.txt', 'w').write('new')\n")
    assert [(o["path"], o["hash"]) for o in doc["outputs"]] == [
        (str(w / "data.txt"), xxh128(w / "data.txt"))]
    assert [(i["path"], i["hash"]) for i in doc["inputs"]] == [(str(w / "data.txt"), v1)]


@pytest.mark.capture
@pytest.mark.parametrize("swap", ["rename", "symlink"])
def test_input_replaced_right_after_reading_never_gets_the_new_hash(roar, swap):
    """A busy run (40,000 events first) keeps roar's consumer behind, as a data loader
    would: the input is replaced long before its open event is handled and hashed."""
    w = roar.cwd
    (w / "a.txt").write_text("what the run read\n")
    (w / "b.txt").write_text("what replaced it\n")
    busy = "import os\nfor _ in range(20000):\n    os.close(os.open('/dev/null', 0))\n"
    if swap == "rename":
        shutil.copy(w / "a.txt", w / "data")
        code = busy + "open('data').read()\nos.replace('b.txt', 'data')\n"
    else:
        os.symlink("a.txt", w / "data")
        code = busy + ("open('data').read()\nos.symlink('b.txt', 'tmp')\n"
                       "os.replace('tmp', 'data')\n")
    read, replaced = xxh128(w / "a.txt"), xxh128(w / "b.txt")
    _, doc = roar.run(PY, "-c", code)
    [inp] = [i for i in doc["inputs"] if i["path"] == str(w / "data")]
    assert inp["hash"] != replaced, "the input got the hash of the file that replaced it"
    assert (inp["status"], inp["hash"]) in (("ok", read), ("unverified", None))


@pytest.mark.capture
def test_fifo_socket_and_dev_files_are_not_hashed_and_do_not_hang(roar):
    """A FIFO fed from outside the run is an input without a hash (special), and
    hashing it neither blocks nor steals its data; a Unix socket is a connect, not a
    file; /dev files are pseudo files, never inputs or outputs."""
    import threading

    w = roar.cwd
    os.mkfifo(w / "fifo")

    def feed():
        with open(w / "fifo", "w") as f:
            f.write("through the fifo\n")

    threading.Thread(target=feed, daemon=True).start()
    code = ("import socket\n"
            "print(open('fifo').read().strip())\n"
            "srv = socket.socket(socket.AF_UNIX); srv.bind('sock'); srv.listen(1)\n"
            "c = socket.socket(socket.AF_UNIX); c.connect('sock'); c.send(b'x')\n"
            "open('/dev/urandom', 'rb').read(16); open('/dev/zero', 'rb').read(16)\n"
            "open('/dev/null', 'w').write('x')\n")
    p, doc = roar.run(PY, "-c", code, timeout=60)
    assert p.stdout.strip() == "through the fifo"
    assert [(i["path"], i["hash"], i["status"]) for i in doc["inputs"]] == [
        (str(w / "fifo"), None, "special")]
    assert doc["outputs"] == []
    assert {"family": "unix", "address": str(w / "sock")}.items() <= doc["connects"][0].items()
    pseudo = {f["path"]: f["kind"] for p in roar.json("trace", doc["id"], "--all")["processes"]
              for f in p["files"] if f["path"].startswith("/dev/")}
    assert pseudo.get("/dev/urandom") == "pseudo" and pseudo.get("/dev/zero") == "pseudo"
    assert doc["complete"] is True, doc["incomplete_reasons"]
