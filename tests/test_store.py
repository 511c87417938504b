"""The LMDB store: records, indexes, prefixes, schema guard, map growth."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from roar.record import store as S
from roar.record.ids import new_run_id
from roar.record.store import RefError, Store, StoreError


def _run(rid, **kw):
    return {"id": rid, "status": "finished", "command": ["x"], **kw}


def test_finish_run_indexes_inputs_and_outputs(tmp_path):
    st = Store(tmp_path)
    rid = new_run_id()
    h_in, h_out = "aa" * 16, "bb" * 16
    files = [{"path": "/d/in", "role": "input", "hash": h_in, "kind": "data"},
             {"path": "/d/out", "role": "output", "hash": h_out, "kind": "data"},
             {"path": "/usr/lib/x.so", "role": "env", "hash": None, "kind": "env"}]
    st.finish_run(_run(rid), files, [{"pid": 1}])
    assert st.readers_of(h_in) == [(rid, ["/d/in"])]
    assert st.writers_of(h_out) == [(rid, ["/d/out"])]
    assert st.writers_of(h_in) == []
    assert st.run_files(rid) == files and st.run_procs(rid) == [{"pid": 1}]
    assert st.resolve_hash("bbbb") == h_out and st.resolve_hash("cccc") is None


def test_run_prefixes_and_order(tmp_path):
    st = Store(tmp_path)
    ids = [new_run_id(now_ms=1_700_000_000_000 + i) for i in range(3)]
    for rid in ids:
        st.put_run(_run(rid))
    assert [r["id"] for r in st.iter_runs()] == ids[::-1]
    assert st.resolve_run(ids[1].lower()) == ids[1]
    with pytest.raises(RefError, match="ambiguous"):
        st.resolve_run(ids[0][:6])
    with pytest.raises(RefError, match="no run"):
        st.resolve_run("ZZZZ")


def test_newer_schema_is_refused(tmp_path):
    st = Store(tmp_path)
    st.meta_put("schema", str(S.SCHEMA_VERSION + 1).encode())
    st.close()
    with pytest.raises(StoreError, match="newer than this roar"):
        Store(tmp_path)


def test_corrupt_store_is_refused_with_one_line(tmp_path):
    (tmp_path / "store").mkdir(parents=True)
    (tmp_path / "store" / "data.mdb").write_bytes(os.urandom(8192))
    with pytest.raises(StoreError, match="cannot open the roar store"):
        Store(tmp_path)


def test_map_grows_instead_of_failing(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "INITIAL_MAP_SIZE", 1 << 20)
    st = Store(tmp_path)
    big = [{"path": f"/d/{i}" + "x" * 200, "role": "env", "kind": "env"} for i in range(20000)]
    st.finish_run(_run(new_run_id()), big, [])
    assert st.env.info()["map_size"] > 1 << 20


def test_missing_store_readonly(tmp_path):
    with pytest.raises(StoreError, match="no roar store"):
        Store(tmp_path / "nothing", readonly=True)


def test_store_directory_is_private(tmp_path):
    Store(tmp_path / "h")
    assert (tmp_path / "h").stat().st_mode & 0o077 == 0


def test_kill9_mid_write_keeps_committed_runs(tmp_path):
    """LMDB's guarantee: a writer killed mid-transaction loses only that txn."""
    code = f"""
import os, sys
sys.path.insert(0, {str(S.__file__.rsplit('/roar/', 1)[0])!r})
from roar.record.store import Store
st = Store({str(tmp_path)!r})
st.put_run({{"id": "A" * 26, "status": "finished"}})
txn = st.env.begin(write=True)
for i in range(50000):
    txn.put(b"%d" % i, b"x" * 100, db=st.dbs["runs"])
os.kill(os.getpid(), 9)
"""
    p = subprocess.run([sys.executable, "-c", code])
    assert p.returncode == -9
    st = Store(tmp_path)
    assert [r["id"] for r in st.iter_runs()] == ["A" * 26]
