"""The stat cache behind the hasher (roar/record/hasher.py, store.stat_key): a
cached hash is used only for the very same file state. Each field of the key
(device, inode, size, mtime, ctime) alone must make a different key, and a
changed file is read again even when its size and mtime were put back."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import xxhash

from roar.record.hasher import OK, UNREADABLE, UNVERIFIED, Hasher, hash_path
from roar.record.store import Store, stat_key

BASE = dict(st_dev=2049, st_ino=1234567, st_size=4096, st_mtime_ns=1_700_000_000_123_456_789,
            st_ctime_ns=1_700_000_000_223_456_789)


@pytest.mark.parametrize("field", sorted(BASE))
def test_every_key_field_changes_the_key(field):
    other = {**BASE, field: BASE[field] + 1}
    assert stat_key(SimpleNamespace(**other)) != stat_key(SimpleNamespace(**BASE))


def test_the_key_ignores_what_does_not_identify_content():
    a = SimpleNamespace(**BASE, st_atime_ns=1, st_mode=0o100644, st_uid=0)
    b = SimpleNamespace(**BASE, st_atime_ns=2, st_mode=0o100600, st_uid=1000)
    assert stat_key(a) == stat_key(b)


def _cache_of(tmp_path, f) -> tuple[Store, str]:
    st = Store(tmp_path / "home")
    h = Hasher(st)
    first = h.hash_now(str(f))
    st.cache_hashes(h.take_new_entries())
    h.shutdown()
    return st, first.hash


def test_rewrite_with_size_and_mtime_put_back_is_read_again(tmp_path):
    f = tmp_path / "data.bin"
    f.write_bytes(b"a" * 100)
    st, first = _cache_of(tmp_path, f)
    before = os.stat(f)
    f.write_bytes(b"b" * 100)
    os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns))  # only ctime tells
    res, _ = hash_path(str(f), st.cached_hash_key)
    assert not res.cached and res.hash == xxhash.xxh3_128(b"b" * 100).hexdigest() != first
    st.close()


def test_a_different_file_in_the_same_place_is_read_again(tmp_path):
    f = tmp_path / "data.bin"
    f.write_bytes(b"a" * 100)
    st, first = _cache_of(tmp_path, f)
    new = tmp_path / "new.bin"
    new.write_bytes(b"c" * 100)
    os.replace(new, f)  # another inode
    res, _ = hash_path(str(f), st.cached_hash_key)
    assert not res.cached and res.hash == xxhash.xxh3_128(b"c" * 100).hexdigest()
    st.close()


def test_an_unchanged_file_is_served_from_the_cache(tmp_path):
    f = tmp_path / "data.bin"
    f.write_bytes(b"a" * 100)
    st, first = _cache_of(tmp_path, f)
    res, key = hash_path(str(f), st.cached_hash_key)
    assert res.cached and res.hash == first and res.status == OK and key is None
    assert res.size == 100 and res.ctime_ns == os.stat(f).st_ctime_ns
    # a lookup that knows nothing reads the file and hands back its key
    res, key = hash_path(str(f), lambda k: None)
    assert not res.cached and key == stat_key(os.stat(f))
    st.close()


def test_a_cache_hit_is_trusted_as_is(tmp_path):
    """What the cache says is what is recorded: the key is the only guard."""
    f = tmp_path / "data.bin"
    f.write_bytes(b"a")
    key = stat_key(os.stat(f))
    res, _ = hash_path(str(f), {key: "f" * 32}.get)
    assert res.cached and res.hash == "f" * 32


def test_hasher_memo_and_new_entries(tmp_path):
    f = tmp_path / "data.bin"
    f.write_bytes(b"xyz")
    h = Hasher(None, workers=1)
    one = h.submit(str(f)).result()
    two = h.hash_now(str(f))
    assert not one.cached and two.cached and one.hash == two.hash
    assert h.take_new_entries() == [(stat_key(os.stat(f)), one.hash)]
    assert h.take_new_entries() == []
    h.shutdown()


def test_directory_is_unreadable_not_special(tmp_path):
    res, key = hash_path(str(tmp_path))
    assert res.status in (UNREADABLE, "special") and res.hash is None and key is None


def test_content_that_keeps_changing_is_unverified(tmp_path, monkeypatch):
    f = tmp_path / "busy"
    f.write_bytes(b"x" * 10)
    real = os.fstat
    calls = {"n": 0}

    def moving_fstat(fd):  # every look after a read sees a new size
        calls["n"] += 1
        st = real(fd)
        return SimpleNamespace(st_mode=st.st_mode, st_dev=st.st_dev, st_ino=st.st_ino,
                               st_size=st.st_size + calls["n"], st_mtime_ns=st.st_mtime_ns,
                               st_ctime_ns=st.st_ctime_ns)

    monkeypatch.setattr(os, "fstat", moving_fstat)
    res, key = hash_path(str(f))
    assert res.status == UNVERIFIED and res.hash is None and key is None
