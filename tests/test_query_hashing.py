"""Hashing done by queries (`roar show FILE`, `roar inputs --contains[-dir]`):
kept in this node's stat cache, so an unchanged file is never read twice; a
progress line on a terminal, nothing extra when stderr is not one."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO, History, hash_of

from roar.record.store import stat_key


def _env(home) -> dict:
    return {**os.environ, "ROAR_HOME": str(home), "PYTHONPATH": str(REPO)}


def _roar(home, *args, **kw):
    return subprocess.run([sys.executable, "-m", "roar", *map(str, args)], env=_env(home),
                          capture_output=True, text=True, timeout=120, **kw)


def test_a_query_keeps_the_hashes_it_computed(tmp_path):
    h = History(tmp_path / "home")
    model, data = tmp_path / "model.bin", tmp_path / "data"
    model.write_bytes(b"weights")
    data.mkdir()
    for name in ("a.csv", "b.csv", "c.csv"):
        (data / name).write_bytes(name.encode() * 10)
    rid = h.run(["python3", "train.py"], reads=[(str(data / "a.csv"), b"a.csv" * 10)],
                writes=[(str(model), b"weights")])
    cached = h.store.cached_hash_key
    assert cached(stat_key(os.stat(model))) is None
    p = _roar(tmp_path / "home", "show", model, "--json")
    assert p.returncode == 0, p.stderr
    assert cached(stat_key(os.stat(model))) == hash_of(b"weights")
    p = _roar(tmp_path / "home", "inputs", rid, "--contains-dir", data, "--json")
    assert p.returncode == 0, p.stderr
    for f in data.iterdir():
        assert cached(stat_key(os.stat(f))) == hash_of(f.read_bytes()), f
    model.write_bytes(b"retrained")  # changed: hashed again, the new state kept
    assert _roar(tmp_path / "home", "show", model).returncode != 0  # never recorded
    assert cached(stat_key(os.stat(model))) == hash_of(b"retrained")


def _on_a_terminal(home, *args) -> tuple[int, str]:
    master, slave = os.openpty()
    p = subprocess.Popen([sys.executable, "-m", "roar", *map(str, args)], env=_env(home),
                         stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return p.wait(60), out.decode(errors="replace")


def test_long_hashing_shows_progress_on_a_terminal_only(tmp_path):
    h = History(tmp_path / "home")
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(600 << 20)  # sparse: two progress reports' worth, read fast
    rc, out = _on_a_terminal(tmp_path / "home", "show", big)
    assert rc == 2
    assert "roar: hashing (now " in out and "% of 600.0M" in out, out
    assert "\x1b[K" in out  # the line is cleared before the answer
    assert "was never read or written by a recorded run" in out
    other = tmp_path / "big2.bin"  # (big.bin's hash is cached now: it would not be read)
    with open(other, "wb") as f:
        f.truncate(600 << 20)
    p = _roar(tmp_path / "home", "show", other)
    assert p.returncode == 2 and "roar: hashing (" not in p.stderr and "\x1b" not in p.stderr
    assert len(p.stderr.splitlines()) == 1, p.stderr
    assert h.store.cached_hash_key(stat_key(os.stat(other))) is not None  # it was hashed
