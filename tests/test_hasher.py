"""Hashing: xxh3-128, stat cache, special files, change detection."""

from __future__ import annotations

import os

import xxhash

from roar.record.hasher import OK, SPECIAL, VANISHED, Hasher, hash_path
from roar.record.store import Store


def test_hash_matches_xxh3_128(tmp_path):
    f = tmp_path / "a.bin"
    data = os.urandom(3 << 20)
    f.write_bytes(data)
    res, key = hash_path(str(f))
    assert res.status == OK and res.hash == xxhash.xxh3_128(data).hexdigest()
    assert key is not None and res.size == len(data)


def test_stat_cache_avoids_rereading(tmp_path):
    st = Store(tmp_path / "home")
    f = tmp_path / "big"
    f.write_bytes(b"x" * 1000)
    h = Hasher(st)
    first = h.hash_now(str(f))
    st.cache_hashes(h.take_new_entries())
    h2 = Hasher(st)
    second = h2.hash_now(str(f))
    assert second.cached and second.hash == first.hash
    f.write_bytes(b"y" * 1000)  # same size, new mtime/ctime: must be re-read
    third = h2.hash_now(str(f))
    assert not third.cached and third.hash != first.hash
    h.shutdown()
    h2.shutdown()


def test_fifo_is_special_and_does_not_block(tmp_path):
    p = tmp_path / "fifo"
    os.mkfifo(p)
    res, _ = hash_path(str(p))
    assert res.status == SPECIAL and res.hash is None


def test_vanished(tmp_path):
    res, _ = hash_path(str(tmp_path / "gone"))
    assert res.status == VANISHED


def test_unreadable_for_the_caller(tmp_path):
    if os.geteuid() == 0:
        import pytest

        pytest.skip("root reads everything")
    f = tmp_path / "secret"
    f.write_text("s")
    f.chmod(0)
    res, _ = hash_path(str(f))
    assert res.status == "unreadable"


def test_pending_hashes_are_filled_in_later(tmp_path):
    """A record whose hash was still running at the run's end is completed by
    the background filler; a file changed after the bound becomes unverified."""
    import time as _t

    from roar.record.ids import new_run_id
    from roar.record.pending import fill

    st = Store(tmp_path / "home")
    big, changed = tmp_path / "big.bin", tmp_path / "changed.bin"
    big.write_bytes(os.urandom(1 << 20))
    changed.write_bytes(b"v1")
    bound = _t.time_ns()
    _t.sleep(0.05)
    changed.write_bytes(b"v2")  # changed after the run read it
    rid = new_run_id()
    files = [
        {"path": str(big), "role": "input", "kind": "data", "status": "pending", "hash": None,
         "pending_bound_ns": bound},
        {"path": str(changed), "role": "input", "kind": "data", "status": "pending",
         "hash": None, "pending_bound_ns": bound},
    ]
    st.finish_run({"id": rid, "status": "finished", "complete": False,
                   "incomplete_reasons": ["2 content hash(es) still being computed "
                                          "(filled in by a background job)"]}, files, [])
    assert fill(st, rid) == 2
    got = {f["path"]: f for f in st.run_files(rid)}
    assert got[str(big)]["hash"] == xxhash.xxh3_128(big.read_bytes()).hexdigest()
    assert got[str(changed)]["status"] == "unverified" and got[str(changed)]["hash"] is None
    run = st.get_run(rid)
    assert not run["complete"] and "hashed after the run" in run["incomplete_reasons"][0]
    assert st.readers_of(got[str(big)]["hash"])[0][0] == rid


def test_long_hash_reports_progress(tmp_path, monkeypatch):
    from roar.record import hasher

    monkeypatch.setattr(hasher, "PROGRESS_EVERY", hasher.CHUNK)
    f = tmp_path / "three_mib"
    f.write_bytes(os.urandom(3 * hasher.CHUNK))
    seen = []
    res, _ = hash_path(str(f), progress=lambda done, size: seen.append((done, size)))
    assert res.status == OK
    assert seen == [(n * hasher.CHUNK, 3 * hasher.CHUNK) for n in (1, 2, 3)]
