"""The hash indexes as content-addressed file sets (roar/record/store.py): a run
that reads what an earlier run read adds O(1) index rows, one changed file
adds about a chunk, and readers_of / writers_of stay exact against the plain
(hash, run) -> paths reference, schema 1's rows included."""

from __future__ import annotations

import random

import lmdb
import pytest

from roar.record import store as S
from roar.record.ids import new_run_id
from roar.record.store import Store, index_entries


def _h(*parts) -> str:
    import xxhash

    return xxhash.xxh3_128("/".join(map(str, parts)).encode()).hexdigest()


def _files(n: int, version=lambda i: 0, role: str = "input", base: str = "/data/ds") -> list:
    return [{"path": f"{base}/{i // 100:03d}/f{i:05d}.bin", "role": role, "kind": "data",
             "hash": _h(base, i, version(i)), "size": 1, "status": "ok"} for i in range(n)]


def _index_rows(st: Store) -> int:
    with st.env.begin() as txn:
        return sum(txn.stat(st.dbs[db])["entries"] for db in S.INDEX_DBS)


def _finish(st: Store, files: list, rid: str | None = None) -> str:
    rid = rid or new_run_id()
    st.finish_run({"id": rid, "status": "finished", "command": ["x"]}, files, [])
    return rid


def _reference(runs: dict[str, list]) -> dict[str, dict[str, list]]:
    """(index -> hash -> [(run, paths)]) as schema 1 stored it: one row per
    (hash, run), paths in byte order."""
    ref: dict[str, dict[str, dict[str, set]]] = {"hash_read": {}, "hash_written": {}}
    for rid, files in runs.items():
        for db, key, path in index_entries(rid.encode(), files):
            ref[db].setdefault(key[:16].hex(), {}).setdefault(rid, set()).add(path)
    return {db: {h: [(r, [p.decode("utf-8", "surrogateescape") for p in sorted(ps)])
                     for r, ps in sorted(by.items())] for h, by in d.items()}
            for db, d in ref.items()}


def _check(st: Store, runs: dict[str, list], extra_hashes=()) -> None:
    ref = _reference(runs)
    for db, lookup in (("hash_read", st.readers_of_many), ("hash_written", st.writers_of_many)):
        hashes = set(ref[db]) | set(extra_hashes)
        got = lookup(hashes)
        for h in hashes:
            assert got[h] == ref[db].get(h, []), (db, h)


def test_a_repeat_run_adds_constant_index_rows(tmp_path):
    with Store(tmp_path) as st:
        files = _files(2000)
        first = _finish(st, files)
        before = _index_rows(st)
        assert before > 2000  # one row per file, the first time
        second = _finish(st, files)
        assert _index_rows(st) - before == 2  # set -> run, run -> sets
        third = _finish(st, files + _files(3, role="output", base="/out"))
        assert _index_rows(st) - before <= 2 + 2 + 3 + 2  # + its new (one-chunk) output set
        some = files[1234]["hash"]
        assert st.readers_of(some) == [(r, [files[1234]["path"]]) for r in (first, second, third)]
        _check(st, {first: files, second: files,
                    third: files + _files(3, role="output", base="/out")})


def test_one_changed_file_adds_about_a_chunk(tmp_path):
    with Store(tmp_path) as st:
        old = _files(5000)
        new = _files(5000, version=lambda i: int(i == 2500))
        r1 = _finish(st, old)
        before = _index_rows(st)
        r2 = _finish(st, new)
        added = _index_rows(st) - before
        chunks = 5000 // S.CHUNK_AVG
        assert added < 8 * S.CHUNK_AVG + 3 * chunks, added  # not one row per file (5000)
        assert st.readers_of(old[2500]["hash"]) == [(r1, [old[2500]["path"]])]
        assert st.readers_of(new[2500]["hash"]) == [(r2, [new[2500]["path"]])]
        assert [r for r, _ in st.readers_of(old[17]["hash"])] == [r1, r2]
        _check(st, {r1: old, r2: new})


def test_same_content_under_many_paths(tmp_path):
    with Store(tmp_path) as st:
        h = _h("same")
        files = [{"path": f"/d/{c}/{i}", "role": "input", "kind": "data", "hash": h}
                 for c in "abcdefgh" for i in range(300)]  # spread over many chunks
        files.append({"path": "/d/\udcff\udcfe-odd", "role": "input", "kind": "data", "hash": h})
        rid = _finish(st, files)
        (got,) = st.readers_of(h)
        assert got[0] == rid and len(got[1]) == len(files)
        _check(st, {rid: files})


def test_late_hashes_replace_the_runs_sets(tmp_path):
    """index_files (late hashes filled in): the run leaves its former sets."""
    with Store(tmp_path) as st:
        files = _files(400)
        pending = [dict(f, hash=None, status="pending") if i % 7 == 0 else f
                   for i, f in enumerate(files)]
        other = _finish(st, pending)
        rid = _finish(st, pending)
        _check(st, {other: pending, rid: pending})
        st.index_files(rid, files)
        _check(st, {other: pending, rid: files})
        # a hash dropped from a run's records (here: replaced by another) leaves it
        changed = [dict(f, hash=_h("x", i)) if i == 3 else f for i, f in enumerate(files)]
        st.index_files(rid, changed)
        _check(st, {other: pending, rid: changed}, extra_hashes=[files[3]["hash"]])
        st.index_files(rid, [])
        _check(st, {other: pending, rid: []}, extra_hashes=[f["hash"] for f in files])


def _put_schema1(st: Store, rid: str, files: list) -> None:
    """Rows as a schema-1 roar stored them: content hash + run id -> paths."""
    def fn(txn):
        txn.put(rid.encode(), S.encode_doc(files), db=st.dbs["run_files"])
        txn.put(rid.encode(), S.encode_doc({"id": rid, "status": "finished"}),
                db=st.dbs["runs"])
        rows: dict = {}
        for db, key, path in index_entries(rid.encode(), files):
            rows.setdefault((db, key), []).append(path)
        for (db, key), paths in sorted(rows.items()):
            txn.put(key, b"\0".join(sorted(paths)), db=st.dbs[db])
        txn.put(b"schema", b"1", db=st.dbs["meta"])

    st.write(fn)


def test_a_schema_1_store_keeps_every_answer(tmp_path):
    files = _files(300) + _files(20, role="output", base="/out")
    old_rid = new_run_id()
    with Store(tmp_path) as st:
        _put_schema1(st, old_rid, files)
    with Store(tmp_path, readonly=True) as st:
        assert st.meta_get("schema") == b"1"
        _check(st, {old_rid: files})
    with Store(tmp_path) as st:  # a writer: marked as schema 2, nothing rewritten
        assert st.meta_get("schema") == str(S.SCHEMA_VERSION).encode()
        new_rid = _finish(st, files[:150])
        _check(st, {old_rid: files, new_rid: files[:150]})
        assert st.resolve_hash(files[0]["hash"][:12]) == files[0]["hash"]
        # late hashes on the old run: its new rows are file sets, its old rows stay
        st.index_files(old_rid, files)
        _check(st, {old_rid: files, new_rid: files[:150]})


def test_random_runs_match_the_reference(tmp_path):
    """Runs drawn from a pool of paths and versions (shared, changed, renamed,
    read and written, same content under two paths), late-hash replacements
    and schema-1 rows mixed in: every answer equals the plain reference."""
    rnd = random.Random(14)
    pool = [f"/p/{rnd.choice('abc')}/{i:04d}" for i in range(1500)]
    runs: dict[str, list] = {}
    with Store(tmp_path) as st:
        for n in range(40):
            picked = rnd.sample(pool, rnd.choice([1, 5, 300, 900, 1400]))
            files = []
            for p in picked:
                role = "output" if rnd.random() < 0.2 else "input"
                v = rnd.choice([0, 0, 0, 1, 2])
                h = _h(p, v) if rnd.random() > 0.05 else _h("dup", v)
                files.append({"path": p, "role": role, "kind": "data", "hash": h})
            if n % 3 and runs:  # a repeat of an earlier run, perhaps a little changed
                files = list(rnd.choice(list(runs.values())))
                if n % 2 and files:
                    i = rnd.randrange(len(files))
                    files[i] = dict(files[i], hash=_h("changed", n))
            rid = new_run_id()
            if n % 11 == 5:
                _put_schema1(st, rid, files)
                st.write(lambda txn: txn.put(b"schema", b"2", db=st.dbs["meta"]))
            else:
                _finish(st, files, rid)
            runs[rid] = files
            if n % 7 == 6:  # a late replacement of some run's records
                victim = rnd.choice(list(runs))
                runs[victim] = [f for f in runs[victim] if rnd.random() < 0.9]
                st.index_files(victim, runs[victim])
        _check(st, runs, extra_hashes=[_h(p, v) for p in pool[:50] for v in range(3)])


def test_an_older_roar_is_kept_out(tmp_path):
    """A store with file sets is schema 2: a schema-1 roar refuses it (the guard
    it has), rather than misreading chunk ids as run ids."""
    with Store(tmp_path) as st:
        _finish(st, _files(10))
    env = lmdb.open(str(tmp_path / "store"), max_dbs=32)
    with env.begin(db=env.open_db(b"meta")) as txn:
        assert int(txn.get(b"schema")) == 2 > 1
    env.close()


@pytest.mark.parametrize("n", [0, 1])
def test_runs_without_hashes_add_no_index_rows(tmp_path, n):
    with Store(tmp_path) as st:
        before = _index_rows(st)
        _finish(st, [{"path": "/x", "role": "env", "kind": "env", "hash": None}] * n)
        assert _index_rows(st) == before

