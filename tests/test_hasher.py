"""Hashing: xxh3-128, stat cache, special files, change detection."""

from __future__ import annotations

import os

import xxhash

from roar.hasher import OK, SPECIAL, VANISHED, Hasher, hash_path
from roar.store import Store


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
