"""A store is used only where it is its user's alone, and a damaged one is
refused with one line before anything runs: a directory another user made
(or may write), LMDB files of the wrong owner or mode, an empty, truncated or
overwritten data.mdb (which LMDB would map: SIGBUS, or a silent new store)."""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, one_line_error, xxh128

from roar.record.store import Store, StoreError


def _fill(home, n=400):
    """A store with a few hundred pages of data."""
    with Store(home) as s:
        s.write(lambda txn: [txn.put(b"k%05d" % i, os.urandom(900), db=s.dbs["statcache"])
                             for i in range(n)])
    return home / "store" / "data.mdb"


def _roar(home, *args, cwd):
    env = {**os.environ, "ROAR_HOME": str(home), "PYTHONPATH": str(REPO),
           "ROAR_SOCKET": str(home.parent / "no-daemon.sock")}
    return subprocess.run([sys.executable, "-m", "roar", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _refused_everywhere(home, tmp_path, words):
    """run (before its command), log and show all refuse with one line."""
    marker = tmp_path / "ran"
    for args in (["run", "--", "touch", str(marker)], ["log"], ["show", "x"]):
        p = _roar(home, *args, cwd=tmp_path)
        assert p.returncode not in (-7, 135), p  # never SIGBUS
        line = one_line_error(p)
        assert any(w in line for w in words), line
    assert not marker.exists()  # the workload never ran


def test_store_directory_made_by_another_user_is_refused(tmp_path, other_user):
    """User B makes the directory (mode 0777) where A's store will go: A's roar
    refuses it and writes nothing there."""
    home = tmp_path / "shared"
    home.mkdir()  # as B would have made it (B cannot reach pytest's tmp_path)
    os.chown(home, other_user.pw_uid, other_user.pw_gid)
    os.chmod(home, 0o777)
    p = _roar(home, "run", "--", "true", cwd=tmp_path)
    assert "belongs to another user" in one_line_error(p)
    assert os.listdir(home) == []


def test_group_or_world_writable_store_directory_is_refused(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    os.chmod(home, 0o777)
    with pytest.raises(StoreError, match="may be written by other users"):
        Store(home)
    assert os.listdir(home) == []
    os.chmod(home, 0o700)
    _fill(home, 1)
    os.chmod(home / "store", 0o775)
    with pytest.raises(StoreError, match="may be written by other users"):
        Store(home, readonly=True)


def test_store_files_are_private_and_foreign_or_writable_files_refused(tmp_path, other_user):
    home = tmp_path / "h"
    data = _fill(home, 1)
    for f in ("data.mdb", "lock.mdb"):
        assert (home / "store" / f).stat().st_mode & 0o777 == 0o600
    assert home.stat().st_mode & 0o777 == 0o700
    os.chmod(data, 0o644)  # as an older roar left it: made private, still usable
    Store(home, readonly=True).close()
    assert data.stat().st_mode & 0o777 == 0o600
    os.chmod(data, 0o666)
    with pytest.raises(StoreError, match="may be written by other users"):
        Store(home, readonly=True)
    os.chmod(data, 0o600)
    os.chown(data, other_user.pw_uid, other_user.pw_gid)
    with pytest.raises(StoreError, match="belongs to another user"):
        Store(home, readonly=True)


def test_team_store_is_group_shared(tmp_path):
    from roar.requests.training import init_store

    home = tmp_path / "team"
    init_store(home, group="root")
    assert (home / "store").stat().st_mode & 0o7777 == 0o3770
    assert (home / "store" / "data.mdb").stat().st_mode & 0o777 == 0o660
    with Store(home) as s:  # a team store is not refused for its group write bits
        s.write(lambda txn: txn.put(b"x", b"y", db=s.dbs["meta"]))
    assert (home / "store" / "data.mdb").stat().st_mode & 0o777 == 0o660


def test_zero_length_data_file_is_refused_not_replaced(tmp_path):
    home = tmp_path / "h"
    data = _fill(home)
    data.write_bytes(b"")
    _refused_everywhere(home, tmp_path, ["is empty"])
    assert data.stat().st_size == 0  # not silently made a new store


def test_truncated_data_file_is_refused_before_mapping(tmp_path):
    home = tmp_path / "h"
    data = _fill(home)
    size = data.stat().st_size
    with open(data, "r+b") as f:
        f.truncate(size // 2)
    _refused_everywhere(home, tmp_path, ["truncated"])
    with open(data, "r+b") as f:
        f.truncate(100)
    _refused_everywhere(home, tmp_path, ["truncated"])


def test_data_file_that_is_not_lmdb_is_refused(tmp_path):
    home = tmp_path / "h"
    data = _fill(home)
    with open(data, "r+b") as f:
        f.write(os.urandom(4096 * 2))  # both header pages overwritten
    _refused_everywhere(home, tmp_path, ["not an LMDB file", "corrupt header"])


def _damage_pages_holding(data: Path, needle: bytes) -> int:
    """Random bytes over the page header of every leaf page whose first key is
    as long as needle and that holds it (the stat cache's: a reused page of
    another tree may hold stale bytes); returns how many."""
    raw, ps = data.read_bytes(), 4096
    pages, i = set(), raw.find(needle)
    while i >= 0:
        pg = i // ps
        flags, lower = struct.unpack_from("<HH", raw, pg * ps + 10)
        first = struct.unpack_from("<H", raw, pg * ps + 16)[0] if lower > 16 else 0
        if flags & 0x02 and first and struct.unpack_from(
                "<H", raw, pg * ps + first + 6)[0] == len(needle):  # P_LEAF, mn_ksize
            pages.add(pg)
        i = raw.find(needle, i + 1)
    rng = random.Random(13)
    with open(data, "r+b") as f:
        for pg in pages:
            f.seek(pg * ps)
            f.write(bytes(rng.randrange(256) for _ in range(16)))
    return len(pages)


@pytest.mark.capture
def test_random_bytes_in_the_stat_cache_never_leave_hashes_pending(roar):
    """Random bytes inside data.mdb (its header intact) are found only when LMDB
    reads the damaged page: here the stat cache, read by the hasher. The hasher
    thread used to die with MDB_BAD_TXN and the run's files stayed `pending`
    for good; now each file is hashed without the cache, the run is incomplete
    with the reason, and roar run says so in one line."""
    from roar.record.store import stat_key

    w = roar.cwd
    roar.run("sh", "-c", "echo 1 > f1")
    assert _damage_pages_holding(roar.home / "store" / "data.mdb",
                                 stat_key(os.stat(w / "f1"))) >= 1
    p = roar("run", "--", "sh", "-c", "cat f1 > out.txt", check=False)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr and "Exception in thread" not in p.stderr, p.stderr
    said = [line for line in p.stderr.splitlines() if "could not be read while hashing" in line]
    assert len(said) == 2, p.stderr  # the one line, and the run's summary naming it
    doc = roar.json("show", roar.json("log", "-n", "1")[0]["id"])
    files = {Path(f["path"]).name: f for f in doc["inputs"] + doc["outputs"]}
    assert files["f1"]["hash"] == files["out.txt"]["hash"] == xxh128(w / "f1")
    assert files["out.txt"]["status"] == "ok"
    assert doc["complete"] is False
    assert any("store could not be read while hashing" in r for r in doc["incomplete_reasons"])


@pytest.mark.capture
def test_random_bytes_in_the_runs_are_one_line_not_a_traceback(roar):
    """A damaged page of the runs themselves (header intact, so not refused at
    open): log and show end with one line, no traceback."""
    _, doc = roar.run("true")
    assert _damage_pages_holding(roar.home / "store" / "data.mdb", doc["id"].encode()) >= 1
    for args in (["log"], ["show", doc["id"]]):
        p = roar(*args, check=False)
        assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
        assert "damaged" in one_line_error(p)


def test_programs_started_after_the_store_opened_inherit_no_fd_on_it(tmp_path):
    """LMDB opens data.mdb read-write without close-on-exec; the store marks
    its fds so: a workload or git started by roar gets none of them."""
    import subprocess

    from roar.record.store import Store

    with Store(tmp_path / "home"):
        out = subprocess.run(["sh", "-c", "ls -l /proc/$$/fd"], close_fds=False,
                             capture_output=True, text=True).stdout
    assert "data.mdb" not in out and "lock.mdb" not in out, out
