"""The recorder on synthetic event streams over real files: file records built
ahead of the end (while a run goes on) must be exactly those built at the end."""

from __future__ import annotations

import json
import os
import time

import pytest
from conftest import O_WRONLY_CREAT_TRUNC

from roar.capture import events as E
from roar.record.ids import new_run_id
from roar.record.recorder import RunRecorder
from roar.record.store import Store

ROOT, CHILD, CHILD2 = 100, 200, 300


def _stream(d: str) -> list[E.Event]:
    evs: list[E.Event] = []
    ts = [time.monotonic_ns()]  # after the files were made: their hashes verify

    def ev(type_, tgid=ROOT, fd=-1, ret=0, a0=0, a1=0, a2=0, path=None, flags=0, argv=None):
        ts[0] += 10
        evs.append(E.Event(ts[0], 1, tgid, tgid, type_, flags, fd, ret, a0, a1, a2, path=path,
                           argv=argv))

    def read_file(path, fd=3, tgid=ROOT, nbytes=100):
        ev(E.EV_OPEN, tgid=tgid, fd=fd, ret=-100, path=path)
        ev(E.EV_CLOSE, tgid=tgid, fd=fd, ret=1, a0=nbytes, a2=1 << 32)

    read_file(f"{d}/a")                       # settled early; a second process reads it later
    read_file(f"{d}/b")                       # settled early; rewritten later
    read_file(f"{d}/d")                       # settled, never touched again
    read_file("/usr/lib/x86_64-linux-gnu/libfoo.so.1")  # environment
    read_file("/proc/self/status")            # pseudo
    ev(E.EV_OPEN, fd=4, ret=-100, a0=O_WRONLY_CREAT_TRUNC, path=f"{d}/b")
    ev(E.EV_WRITE, fd=4, a0=7)
    ev(E.EV_CLOSE, fd=4, a1=7)
    ev(E.EV_FORK, tgid=ROOT, ret=CHILD)
    read_file(f"{d}/a", tgid=CHILD, nbytes=50)
    # processes that exit while the run goes on: their records are built ahead;
    # CHILD's exit status changes afterwards (its parent reaps it: rebuilt)
    ev(E.EV_EXIT, tgid=CHILD, a0=0, flags=E.EVF_EXITED)
    ev(E.EV_FORK, tgid=ROOT, ret=CHILD2)
    ev(E.EV_EXEC, tgid=CHILD2, fd=-100, path="/bin/tool", argv=["tool", "--token=ghp_" + "x" * 36])
    ev(E.EV_EXEC_RET, tgid=CHILD2)
    read_file(f"{d}/d", tgid=CHILD2, nbytes=10)
    read_file("/usr/lib/x86_64-linux-gnu/libfoo.so.1", tgid=CHILD2)
    ev(E.EV_EXIT, tgid=CHILD2, a0=1, flags=E.EVF_EXITED)
    ev(E.EV_REAP, tgid=ROOT, ret=CHILD, a0=3 << 8)
    ev(E.EV_OPEN, fd=5, ret=-100, a0=O_WRONLY_CREAT_TRUNC, path=f"{d}/out")
    ev(E.EV_WRITE, fd=5, a0=3)
    ev(E.EV_CLOSE, fd=5, a1=3)
    read_file(f"{d}/e")                       # seen after the last look-ahead
    return evs


def _data_stream(tmp_path, name: str = "data") -> tuple:
    """A directory of four 100-byte files (a, b, d, e) and _stream over it."""
    d = tmp_path / name
    d.mkdir()
    for f in "abde":
        (d / f).write_bytes(os.urandom(100))
    return d, _stream(str(d))


def _new_recorder(store: Store, cwd: str, command: list[str], compiled: bool = True):
    """A running run's document, stored, and its RunRecorder."""
    run = {"id": new_run_id(), "cwd": cwd, "command": command, "git": None,
           "status": "running"}
    store.put_run(run)
    return RunRecorder(store, run, ROOT, {}, start_ns=0, compiled=compiled)


def _settle(rec) -> None:
    """Let the early hashes running finish: their paths become settled."""
    for s in rec.model.paths.values():
        if s.early_hash is not None:
            s.early_hash.result()


def _prebuilt(store: Store, tmp_path, stream: tuple | None = None):
    """A recorder fed stream's (directory, events), by default _data_stream's run,
    settled and looked ahead once; its directory (skipped without the compiled
    model's ledger)."""
    d, evs = stream or _data_stream(tmp_path)
    rec = _new_recorder(store, str(d), ["train"])
    if rec._ledger is None:
        pytest.skip("the compiled model is not built")
    for e in evs:
        rec.model.feed(e)
    _settle(rec)
    rec.prebuild()
    return rec, d


def _record(store: Store, d: str, evs: list[E.Event], look_ahead: bool,
            compiled: bool = True, fast: list | None = None,
            looks: set[int] | None = None) -> tuple:
    rec = _new_recorder(store, d, ["train"], compiled)
    if fast is not None and rec._settled_input is not None:  # count what C built
        build, build_many = rec._settled_input, rec._settled_inputs
        rec._settled_input = lambda *a: fast.append(build(*a)) or fast[-1]

        def many(model, batch, *a):
            n, rest = build_many(model, batch, *a)
            left = {p for p, _ in rest}
            fast.extend((rec._built[p][1][0],) for p, _ in batch if p not in left)
            return n, rest

        rec._settled_inputs = many
        entries = rec._proc_files_built

        def taken(pfs, i, *a):  # a process's entries taken as built ahead, in C
            end = entries(pfs, i, *a)
            fast.extend(("entry", pf.path) for pf in pfs[i:end])
            return end

        rec._proc_files_built = taken
        whole = rec._proc_record_built

        def whole_taken(p, *a):  # a process's record in one pass in C: its entries
            a, by_py = list(a), set()  # but those one(pf) made (recorder.py's)
            if len(a) > 8:
                one = a[8]

                def one_seen(pf):
                    by_py.add(id(pf))
                    return one(pf)

                a[8] = one_seen
            got = whole(p, *a)
            if got is not None:
                fast.extend(("entry", pf.path) for pf in p.files.values()
                            if id(pf) not in by_py)
            return got

        rec._proc_record_built = whole_taken
    for i, e in enumerate(evs):
        rec.model.feed(e)
        if look_ahead and i < len(evs) - 2 and (looks is None or i in looks):
            _settle(rec)  # let hashes finish: paths become settled
            rec.prebuild()
    # "proc KEY BUILT_WITH NOW": the exit code a process record was built ahead with
    built = set(rec._built) | {f"proc {p.key} {rec._proc_built[id(p)][0]} {p.exit_code}"
                               for p in rec.model.procs if id(p) in rec._proc_built}
    _settle(rec)  # settled at the end: what was not built ahead is built then (in C)
    done = rec.finish(0, False, 0)
    rid = done["id"].encode()
    raw = []
    for db in ("run_files", "run_procs"):
        with store._begin(db=store.dbs[db]) as txn:
            raw.append(bytes(txn.get(rid)))
    hashes = [f["hash"] for f in store.run_files(done["id"]) if f.get("hash")]
    for lookup in (store.readers_of_many, store.writers_of_many):  # what the indexes say
        raw.append(sorted((h, tuple(paths)) for h, rows in lookup(hashes).items()
                          for r, paths in rows if r == done["id"]))
    with store._begin(db=store.dbs["run_sets"]) as txn:  # the file sets the run is in
        raw.append(bytes(txn.get(rid, b"")))
    # what the end's pass over the file records gave the run document (tally)
    raw.append({k: done[k] for k in ("counts", "installed", "packages", "reasons", "complete")})
    stored = store.run_files(done["id"])
    # the records the end hands on (made when asked for, from the ledger) are the stored ones
    assert rec.files == stored and rec.written == [
        f["path"] for f in stored if f["role"] in ("output", "temporary")]
    return stored, raw, built


def test_records_built_ahead_equal_records_built_at_the_end(tmp_path):
    d, evs = _data_stream(tmp_path)
    with Store(tmp_path / "home") as store:
        files_end, raw_end, built_end = _record(store, str(d), evs, look_ahead=False)
        files_ahead, raw_ahead, built = _record(store, str(d), evs, look_ahead=True)
    assert built_end == set()
    assert {f"{d}/a", f"{d}/b", f"{d}/d", "/proc/self/status"} <= built
    assert f"{d}/e" not in built
    # both children's process records were built ahead; CHILD's again at the end
    # (reaped with status 3 after that): the stored bytes say 3
    procs = sorted(tuple(b.split()[2:]) for b in built if b.startswith("proc "))
    assert procs == [("0", "3"), ("1", "1")]
    assert b'"pid":200,' in raw_ahead[1] and b'"exit_code":3,' in raw_ahead[1]
    assert files_ahead == files_end
    # file records and process records byte for byte, and the same hash index rows
    assert raw_ahead == raw_end
    from roar.record import codes

    assert codes.compiled_encode is not None  # the compiled encoder wrote them: the json
    for raw in raw_end[:2]:                   # module's bytes
        assert raw == json.dumps(codes.decode(raw), separators=(",", ":")).encode()
    assert len(raw_end[2]) == 3 and len(raw_end[3]) == 1  # inputs a, d, e; output b (the
    # synthetic "out" is not on disk: no hash, no row)
    by_path = {(f["path"], f["role"]): f for f in files_ahead}
    assert len(by_path[(f"{d}/a", "input")]["processes"]) == 2  # rebuilt: a second reader
    assert by_path[(f"{d}/b", "output")]["hash"]                 # rebuilt: rewritten
    assert by_path[(f"{d}/d", "input")]["hash"]


def test_chain_digest_of_the_records_in_memory_equals_the_stored_ones(tmp_path):
    """`roar run` chains a run from the records it just stored, not read back:
    the digest must be the one `roar verify` computes from the store later,
    odd names (not UTF-8, newlines) and redacted arguments included."""
    from roar.record import chain

    d, evs = _data_stream(tmp_path, "da\udcfft\na")
    with Store(tmp_path / "home") as store:
        rec = _new_recorder(store, str(d), ["train", "--token", "s3cret"])
        for e in evs:
            rec.model.feed(e)
        done = rec.finish(0, False, 0)
        assert any("\udcff" in f["path"] for f in rec.files) and rec.procs
        assert rec.stored == store.raw_records(done["id"])
        assert (chain.run_digest(store, done["id"], rec.files, rec.procs, rec.stored)
                == chain.run_digest(store, done["id"]))


def test_the_consumer_freezes_what_it_built_ahead_and_nothing_else(tmp_path):
    """roar run's consumer (cli/run.py _feed) builds records ahead whenever it has
    caught up, then takes what is held out of the cyclic collector's sight
    (gc.freeze): it stays until the process exits, and the collector walked it
    again at every collection. A look that built nothing freezes nothing (garbage
    cycles of that moment would stay uncollected)."""
    import gc

    from test_compiled_model import raw_record

    from roar.cli.run import _feed

    d, evs = _data_stream(tmp_path)

    class Session:  # the records of a run as a session hands them over
        def __init__(self, items):
            self.items = items

        def records(self, sink=None):
            yield from self.items

    with Store(tmp_path / "home") as store:
        rec = _new_recorder(store, str(d), ["train"])
        gc.unfreeze()
        try:
            _feed(Session([None]), rec, rec)  # nothing seen yet: nothing built
            assert gc.get_freeze_count() == 0
            _feed(Session([raw_record(e.ts, e.tgid, e.type, e.flags, e.fd, e.ret, e.a0, e.a1,
                                      e.a2, path=e.path) for e in evs[:6]]), rec, rec)
            _settle(rec)
            _feed(Session([None]), rec, rec)
            assert rec._built and gc.get_freeze_count() > 0
        finally:
            gc.unfreeze()


@pytest.mark.parametrize("look_ahead", [True, False])
def test_records_of_settled_inputs_built_in_c_are_the_recorders(tmp_path, look_ahead):
    """The records of settled read-only inputs are built in C from the compiled
    model's state (_cmodel.c settled_input); recorder.py's own build is the
    reference: the stored file and process records and the index rows must be
    the same bytes, for inputs read by one process or two, read past their size
    (bytes bounded by it), environment, pseudo and rewritten files beside them;
    built ahead, or at the end (paths the look-ahead did not reach)."""
    d = tmp_path / "data"
    d.mkdir()
    for name in "abdefg":
        (d / name).write_bytes(os.urandom(100))
    evs = _stream(str(d))
    ts = evs[-1].ts
    for path, tgid, nbytes in [("g", ROOT, 5000), ("f", ROOT, 5000), ("f", CHILD, 0),
                               ("f", CHILD, 70)]:
        ts += 10  # g, f: read past their size; f: opened without a read, read in part
        evs.append(E.Event(ts, 1, tgid, tgid, E.EV_OPEN, 0, 6, -100, 0, 0, 0,
                           path=f"{d}/{path}"))
        evs.append(E.Event(ts + 5, 1, tgid, tgid, E.EV_CLOSE, 0, 6, 1 if nbytes else 0,
                           nbytes, 0, 1 << 32 if nbytes else 0))
    with Store(tmp_path / "home") as store:
        fast: list = []
        files_c, raw_c, built_c = _record(store, str(d), evs, look_ahead=look_ahead, fast=fast)
        files_py, raw_py, built_py = _record(store, str(d), evs, look_ahead=look_ahead,
                                             compiled=False)
    assert built_c == built_py
    entries = [r[1] for r in fast if r is not None and r[0] == "entry"]
    fast = [r for r in fast if r is None or r[0] != "entry"]
    assert [r[0]["path"] for r in fast if r is not None] and all(
        r is None or r[0]["role"] == "input" for r in fast)
    # the exited processes' entries of files built ahead were taken in C (d by
    # CHILD2; the files of a process record built at the end too)
    assert f"{d}/d" in entries
    assert raw_c == raw_py and files_c == files_py
    f = next(x for x in files_c if x["path"] == f"{d}/f")
    assert f["bytes_read"] == 100 and len(f["processes"]) == 2
    assert any(r is not None and r[0]["path"] == f"{d}/g" and r[0]["bytes_read"] == 100
               for r in fast)  # built in C, and kept to the end


def test_a_settled_input_built_in_c_reads_as_the_tuple_it_stands_for(tmp_path):
    """settled_inputs stores a settled input as a _cmodel.c Built (its fields and
    JSON, no record dict or rows) where it can: it reads as the tuple
    (None, [record], [JSON], rows) settled_input gives for the same state (len,
    items, slices, iteration, comparison), made once; a name that is not ASCII
    is stored as the tuple itself. The stored bytes: the differential tests."""
    from roar.record import _cmodel

    d = tmp_path / "data"
    d.mkdir()
    names = ["a", "b", "caf\u00e9", "d"]
    for name in names:
        (d / name).write_bytes(os.urandom(100))
    evs: list[E.Event] = []
    ts = time.monotonic_ns()
    for i, name in enumerate(names):
        evs.append(E.Event(ts + 20 * i, 1, ROOT, ROOT, E.EV_OPEN, 0, 3, -100, 0, 0, 0,
                           path=f"{d}/{name}"))
        evs.append(E.Event(ts + 20 * i + 10, 1, ROOT, ROOT, E.EV_CLOSE, 0, 3, 1, 100, 0,
                           1 << 32))
    with Store(tmp_path / "home") as store:
        rec, _ = _prebuilt(store, tmp_path, (d, evs))
        for name in names:
            path = f"{d}/{name}"
            v = rec._built[path]
            s = rec.model.paths[path]
            want = _cmodel.settled_input(s, rec.model.by_path.get(path, []), rec.kinds[path],
                                         rec.wall_offset, rec._rid)
            rec_, raw, sig, _, rows = want
            assert sig is None and rows and rows[0][2] == path.encode()
            expect = (None, [rec_], [raw], rows)
            if name.isascii():
                assert type(v).__name__ == "Built"
                assert len(v) == 4 and v[1:] == expect[1:] and v[0] is None
                assert tuple(v) == expect and v == expect and list(v) == list(expect)
                assert v[1] is v[1]  # made once, kept
                a, b, c, e = v
                assert (a, b, c, e) == expect
            else:
                assert type(v) is tuple and v == expect
        assert rec._built_size(f"{d}/a") == 100


def _random_stream(d: str, rng) -> list[E.Event]:
    """Processes forking, reading, rewriting and creating the files of d (and an
    environment and a pseudo file), exiting and reaped, in a random order: the
    stream the C builders and recorder.py are compared on."""
    evs: list[E.Event] = []
    ts = [time.monotonic_ns()]
    names = sorted(os.listdir(d))
    live, fds, nxt = [ROOT], {ROOT: set()}, [ROOT + 1]

    def ev(type_, tgid, fd=-1, ret=0, a0=0, a1=0, a2=0, path=None, flags=0, argv=None):
        ts[0] += rng.randrange(1, 50)
        evs.append(E.Event(ts[0], 1, tgid, tgid, type_, flags, fd, ret, a0, a1, a2, path=path,
                           argv=argv))

    for _ in range(rng.randrange(20, 60)):
        p = rng.choice(live)
        free = [fd for fd in range(3, 12) if fd not in fds[p]]
        what = rng.random()
        if what < 0.55 and free:  # a read: opened, read (past the size, in part, not at all)
            fd = rng.choice(free)
            path = rng.choice([f"{d}/{rng.choice(names)}"] * 6 + [
                "/usr/lib/x86_64-linux-gnu/libfoo.so.1", "/proc/self/status"])
            ev(E.EV_OPEN, p, fd=fd, ret=-100, path=path)
            nbytes = rng.choice([0, 1, 50, 100, 5000])
            unknown = E.EVF_BYTES_UNKNOWN if rng.random() < 0.1 else 0
            mapped = E.FD_MAP_READ if rng.random() < 0.1 else 0
            ev(E.EV_CLOSE, p, fd=fd, ret=(E.FD_READ if nbytes else 0) | mapped, a0=nbytes,
               a2=(rng.randrange(1, 4) << 32) if nbytes else 0, flags=unknown)
        elif what < 0.65 and free:  # a rewrite of an input, or a new output
            fd = rng.choice(free)
            path = f"{d}/{rng.choice(names + ['out1', 'out2'])}"
            ev(E.EV_OPEN, p, fd=fd, ret=-100, a0=O_WRONLY_CREAT_TRUNC, path=path)
            ev(E.EV_WRITE, p, fd=fd, a0=7)
            ev(E.EV_CLOSE, p, fd=fd, ret=E.FD_WRITE, a1=7, a2=1)
        elif what < 0.8 and len(live) < 5:
            child = nxt[0]
            nxt[0] += 1
            ev(E.EV_FORK, p, ret=child)
            live.append(child)
            fds[child] = set()
            if rng.random() < 0.5:
                ev(E.EV_EXEC, child, fd=-100, path="/bin/tool", argv=["tool", str(child)])
                ev(E.EV_EXEC_RET, child)
        elif p != ROOT:
            ev(E.EV_EXIT, p, a0=rng.randrange(3), flags=E.EVF_EXITED)
            live.remove(p)
            if rng.random() < 0.7:
                ev(E.EV_REAP, ROOT, ret=p, a0=rng.randrange(3) << 8)
    return evs


@pytest.mark.parametrize("seed", range(8))
def test_random_streams_stored_the_same_with_and_without_c(tmp_path, seed, monkeypatch):
    """Every C path of the recorder (settled inputs and their readers' entries,
    what is gathered and tallied at the end, running processes' records built in
    part) against recorder.py's, on random streams over real files: the same
    stored bytes, index rows and file sets, with the look-ahead at random points
    or not at all."""
    import random

    from roar.record import recorder as R

    if seed % 2:  # every running process's record built ahead in part
        monkeypatch.setattr(R, "PARTIAL_MIN", 1)
        monkeypatch.setattr(R, "PARTIAL_PATIENCE", seed % 3)
        monkeypatch.setattr(R, "PARTIAL_STEP", 1)
    monkeypatch.setattr(R, "LEDGER_SORT_LEAST", seed % 3)  # the ledger's order merged at looks
    rng = random.Random(seed)
    d = tmp_path / "data"
    d.mkdir()
    for i in range(8):
        (d / f"f{i}").write_bytes(os.urandom(rng.choice([0, 1, 100, 300])))
    evs = _random_stream(str(d), rng)
    look_ahead = seed % 4 != 3
    looks = {i for i in range(len(evs)) if rng.random() < 0.3}
    with Store(tmp_path / "home") as store:
        fast: list = []
        files_c, raw_c, built_c = _record(store, str(d), evs, look_ahead, fast=fast,
                                          looks=looks)
        files_py, raw_py, built_py = _record(store, str(d), evs, look_ahead, compiled=False,
                                             looks=looks)
    assert built_c == built_py
    assert raw_c == raw_py and files_c == files_py
    assert any(r is not None and r[0] != "entry" for r in fast)  # some were built in C


@pytest.mark.parametrize("seed", range(3))
def test_odd_names_stored_in_the_same_order_with_and_without_c(tmp_path, seed, monkeypatch):
    """The end takes the settled inputs built in C from its ledger (_cmodel.c
    ledger_sorted, ledger_join) and merges them with the rest in Python's path
    order: names that are not ASCII (UTF-8, bytes that are not, whose order as
    bytes is not their order as str), a name that begins another, names around
    the NUL the rows put after a path, give the bytes recorder.py stores (the
    ledger's order kept at the looks, merged with what each adds, or not)."""
    import random

    from roar.record import recorder as R

    monkeypatch.setattr(R, "LEDGER_SORT_LEAST", [1, 1024, 2][seed % 3])

    rng = random.Random(seed)
    d = tmp_path / "data"
    d.mkdir()
    names = ["a", "a.b", "a b", "ab", "é", "\u00ff", "z", "\udcff", "\udc80x", "\u4e2d",
             "A", "a\x01", "~"]
    for name in names:
        with open(os.path.join(os.fsencode(str(d)), os.fsencode(name)), "wb") as f:
            f.write(os.urandom(rng.choice([0, 1, 100])))
    evs = _random_stream(str(d), rng)
    looks = {i for i in range(len(evs)) if rng.random() < 0.3}
    with Store(tmp_path / "home") as store:
        files_c, raw_c, built_c = _record(store, str(d), evs, True, looks=looks)
        files_py, raw_py, built_py = _record(store, str(d), evs, True, compiled=False,
                                             looks=looks)
    assert built_c == built_py
    assert raw_c == raw_py and files_c == files_py
    assert [f["path"] for f in files_c] == sorted(f["path"] for f in files_c)


def test_entries_built_ahead_are_taken_in_c_as_recorder_py_takes_them():
    """_cmodel.c proc_files_built stops at the first entry recorder.py must look
    at itself (not a ProcFile, its path not classified or changed since built, its
    entry not built) and gives each path the size its records give: the last
    record's size that is not None (recorder._built_size), or a dict's."""
    from roar.record import _cmodel
    from roar.record.runmodel import new_model

    model, _ = new_model(ROOT, "/w", ["train"], {}, 0)
    pfs = []
    for path in ("/w/a", "/w/b", "/w/c", "/w/d"):
        model.feed(E.Event(1, 1, ROOT, ROOT, E.EV_OPEN, 0, 3, -100, 0, 0, 0, path=path))
        model.feed(E.Event(2, 1, ROOT, ROOT, E.EV_CLOSE, 0, 3, 1, 100, 0, 1 << 32))
        pfs.append(model.procs[0].files[path])
    kinds = {"/w/a": "data", "/w/b": "data", "/w/c": "data"}
    clean = {"/w/a", "/w/b", "/w/c", "/w/d"}
    pf_built = {id(pf): (None, {"path": pf.path}, pf.path.encode()) for pf in pfs[:3]}
    built = {"/w/a": (None, [{"size": 5}, {"size": None}], [], []),
             "/w/b": (None, [{"size": None}], [], [])}
    files, parts, used = [], [], []
    # /w/c is not built: its size is None; /w/d is not classified: recorder.py's
    assert _cmodel.proc_files_built(pfs, 0, kinds, clean, pf_built, built, True, files, parts,
                                    used) == 3
    assert used == [("/w/a", 5), ("/w/b", None), ("/w/c", None)]
    assert parts == [b"/w/a", b"/w/b", b"/w/c"] and files[0] == {"path": "/w/a"}
    clean.discard("/w/b")  # changed since built
    assert _cmodel.proc_files_built(pfs, 0, kinds, clean, pf_built, {"/w/a": 7}, False, [], [],
                                    used := []) == 1 and used == [("/w/a", 7)]
    del pf_built[id(pfs[0])]  # no entry built
    assert _cmodel.proc_files_built(pfs, 0, kinds, clean, pf_built, {}, False, [], [], []) == 0
    assert _cmodel.proc_files_built([None, *pfs], 0, kinds, clean, pf_built, {}, False, [], [],
                                    []) == 0
    assert _cmodel.sizes_same((("/w/a", 5), ("/w/b", None)), {"/w/a": 5})
    assert not _cmodel.sizes_same((("/w/a", 5),), {"/w/a": 6})
    assert not _cmodel.sizes_same((("/w/a", 5),), {})


def _spawn_loop(n: int, d: str) -> list[E.Event]:
    """A shell forking n children that exec a tool, each reading ld.so.cache and
    a library (as every process of a spawn loop does) and, every third one, a
    data file; some exit with a signal, some are reaped, one has a new argv."""
    evs: list[E.Event] = []
    ts = [time.monotonic_ns()]

    def ev(type_, tgid=ROOT, fd=-1, ret=0, a0=0, a1=0, a2=0, path=None, flags=0, argv=None):
        ts[0] += 10
        evs.append(E.Event(ts[0], 1, tgid, tgid, type_, flags, fd, ret, a0, a1, a2, path=path,
                           argv=argv))

    for i in range(n):
        child = 1000 + i
        ev(E.EV_FORK, ret=child)
        argv = ["tool", "--n", str(i % 2)] if i != 5 else ["tool", "--token=ghp_" + "x" * 36]
        ev(E.EV_EXEC, tgid=child, fd=-100, path="/bin/tool", argv=argv)
        ev(E.EV_EXEC_RET, tgid=child)
        for path, nbytes in (("/etc/ld.so.cache", 0), ("/lib/x86_64-linux-gnu/libc.so.6", 832)):
            ev(E.EV_OPEN, tgid=child, fd=3, ret=-100, path=path)
            ev(E.EV_CLOSE, tgid=child, fd=3, ret=1 | 4, a0=nbytes, a2=(1 if nbytes else 0) << 32)
        if i % 3 == 0:
            ev(E.EV_OPEN, tgid=child, fd=3, ret=-100, path=f"{d}/in{i % 2}")
            ev(E.EV_CLOSE, tgid=child, fd=3, ret=1, a0=10 + i % 4, a2=1 << 32)
        if i % 7 == 6:
            ev(E.EV_EXIT, tgid=child, a1=9, flags=E.EVF_SIGNALED)
        else:
            ev(E.EV_EXIT, tgid=child, a0=i % 2, flags=E.EVF_EXITED)
        if i % 4 == 0:
            ev(E.EV_REAP, ret=child, a0=(i % 2) << 8)
    return evs


def test_process_records_built_in_c_are_the_recorders(tmp_path):
    """_cmodel.c proc_record_built gives recorder._proc_record's document, JSON and
    sizes used for each process of a spawn loop whose entries are built ahead or
    remembered, changes nothing, and answers None for what recorder.py must
    build (an argv not redacted yet, an entry not remembered)."""
    d = tmp_path / "data"
    d.mkdir()
    for name in ("in0", "in1"):
        (d / name).write_bytes(os.urandom(64))
    evs = _spawn_loop(40, str(d))
    with Store(tmp_path / "home") as store:
        rec = _new_recorder(store, str(d), ["sh"])
        whole = rec._proc_record_built
        assert whole is not None
        for i, e in enumerate(evs):
            rec.model.feed(e)
            if i % 9 == 8:
                rec.prebuild()
        rec.prebuild()
        taken = 0
        for size_src in ((rec._built, True), ({}, False),
                         ({f"{d}/in0": 64, "/etc/ld.so.cache": 5}, False)):
            sizes, from_built = size_src
            size_of = (rec._built_size if from_built else sizes.get)
            for p in rec.model.procs:
                state = (dict(rec._entries), dict(rec._argvs), dict(rec.kinds))
                got = whole(p, rec.kinds, rec._clean, rec._pf_built, sizes, from_built,
                            rec._entries, rec._argvs)
                assert state == (rec._entries, rec._argvs, rec.kinds)  # changed nothing
                rec._proc_record_built = None
                try:
                    want = rec._proc_record(p, rec._git_root, rec._tracked, size_of, size_src)
                finally:
                    rec._proc_record_built = whole
                if got is not None:
                    taken += 1
                    assert got == want
                    assert got[1] == codes_encode(got[0])
                # with one(pf) making what C does not take: always the reference's
                for used in (True, False):
                    got = whole(p, rec.kinds, rec._clean, rec._pf_built, sizes, from_built,
                                rec._entries, rec._argvs, used,
                                lambda pf, s=size_of: rec._proc_entry(pf, rec._git_root,
                                                                      rec._tracked, s))
                    assert got == (want if used else (*want[:2], ()))
        assert taken > 2 * 40
        # an argv never redacted, an entry never remembered: recorder.py's
        p = rec.model.procs[-1]
        assert whole(p, rec.kinds, rec._clean, rec._pf_built, {}, False, rec._entries, {}) is None
        assert whole(p, rec.kinds, rec._clean, {}, {}, False, {}, rec._argvs) is None
        # ... unless one(pf) makes it; an argv never redacted is None before any entry
        calls = []

        def one(pf):
            calls.append(pf.path)
            return rec._proc_entry(pf, rec._git_root, rec._tracked, {}.get)

        rec._proc_record_built = None
        try:
            want = rec._proc_record(p, rec._git_root, rec._tracked, {}.get, ({}, False))
        finally:
            rec._proc_record_built = whole
        assert whole(p, rec.kinds, rec._clean, {}, {}, False, {}, rec._argvs, True,
                     one) == want
        assert calls == list(p.files)
        calls.clear()
        assert whole(p, rec.kinds, rec._clean, {}, {}, False, {}, {}, True, one) is None
        assert calls == []
        with pytest.raises(TypeError):
            whole(p, rec.kinds, rec._clean, {}, {}, False, {}, rec._argvs, True, lambda pf: 1)


def codes_encode(doc) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def test_the_ends_pass_over_file_records_in_c_is_tallys():
    """The end of a run tallies its file records (inputs not hashed, sizes,
    counts, environment outputs and reads) in one pass in C (_cmodel.c
    tally_records) and makes the hash indexes' rows in C (index_rows):
    recorder.tally and store.index_rows are the reference, on generated
    records and index entries; what C does not take it answers None."""
    import random

    from roar.record import chain
    from roar.record import recorder as R
    from roar.record import store as S
    from roar.record.runmodel import index_rows, tally_records

    rnd = random.Random(14)
    roles = ["input", "output", "env", "log", "internal", "temporary", "ipc", "pseudo", R.ENV]
    kinds = ["data", "code", "env", "pseudo", "remote", "other"]
    statuses = ["ok", "special", "pending", "unverified", "vanished", None, "okay"]
    for n in [0, 1, 2, 5, 50, 400]:
        for _ in range(20):
            files = [{"path": rnd.choice(["", f"/d/{rnd.randrange(n + 1)}"]) if rnd.random() < 0.05
                      else f"/d/{rnd.randrange(n + 1)}", "role": rnd.choice(roles),
                      "kind": rnd.choice(kinds), "status": rnd.choice(statuses),
                      "size": rnd.choice([None, 0, 7, 2**40, rnd.randrange(10**6)])}
                     for _ in range(n)]
            for f in files:
                if rnd.random() < 0.1:
                    del f["size"]
            want = R.tally(files)
            assert tally_records(files, R.LISTED, R.HASHED) == want
            assert R._tally_c(files) == want
            # the paths the end of `roar run` hands the chain and the links
            assert sorted(want[6]) == chain.pending_paths(files)
            assert want[7] == [f["path"] for f in files
                               if f.get("role") in ("output", "temporary") and f.get("path")]
            entries = [(rnd.choice(S.INDEXES), os.urandom(16) + b"R" * 26 if rnd.random() < 0.7
                        else b"\1" * 16 + b"R" * 26, f"/d/{rnd.randrange(n + 1)}".encode())
                       for _ in range(n)]
            entries += entries[: n // 3]  # a path and hash twice: one row
            assert index_rows(entries, S.INDEXES, S.HASH_LEN) == S.index_rows(entries)
    # not C's: the reference does it (and raises what it raises)
    odd = [{"path": "/a", "role": "input", "kind": "data", "status": "ok"}, ["not a dict"]]
    assert tally_records(odd, R.LISTED, R.HASHED) is None
    assert tally_records([{"path": "/a", "kind": "data"}], R.LISTED, R.HASHED) is None
    with pytest.raises(KeyError):
        R._tally_c([{"path": "/a", "kind": "data"}])
    assert index_rows([("hash_read", "not bytes", b"/a")], S.INDEXES, S.HASH_LEN) is None
    assert index_rows([("sets", b"k" * 42, b"/a")], S.INDEXES, S.HASH_LEN) is None
    for n in range(5):  # the stored list of records encoded one by one, joined once
        enc = [f'{{"n":{i}}}'.encode() for i in range(n)]
        kept = list(enc)
        assert S._join(enc) == b"[" + b",".join(enc) + b"]" and enc == kept


def test_written_or_created_paths_in_c_are_the_filters(tmp_path):
    """The end looks for created files and outputs among the paths written or
    opened with O_CREAT only, listed in C (_cmodel.c written_or_created): the
    paths, in the model's order, that recorder.py's filter gives."""
    from roar.record.runmodel import written_or_created

    d = tmp_path / "data"
    d.mkdir()
    for name in "abdefg":
        (d / name).write_bytes(os.urandom(100))
    with Store(tmp_path / "home") as store:
        rec = _new_recorder(store, str(d), ["train"])
        evs = _stream(str(d))
        ts = evs[-1].ts  # created (O_CREAT) and closed without a write: an empty output
        evs.append(E.Event(ts + 10, 1, ROOT, ROOT, E.EV_OPEN, 0, 7, -100, os.O_RDWR | os.O_CREAT,
                           0, 0, path=f"{d}/empty"))
        evs.append(E.Event(ts + 20, 1, ROOT, ROOT, E.EV_CLOSE, 0, 7, 0, 0, 0, 0))
        for e in evs:
            rec.model.feed(e)
        want = [p for p, s in rec.model.paths.items() if s.written or s.create_ts is not None]
        assert any(not rec.model.paths[p].written for p in want)
        assert want and len(want) < len(rec.model.paths)
        assert written_or_created(rec.model.paths) == want
        assert written_or_created({"/x": object()}) is None
        rec.finish(0, False, 0)


def test_wall_offset_keeps_the_tightest_bracketed_read(monkeypatch):
    """A preemption between the clock reads must not shift the run's wall
    times: the read whose monotonic bracket is tightest wins (differential
    tests here flaked under load when two bare reads were split by ms). A fake
    clock: every read takes 100 ns; the first wall read is followed by 6 ms
    off the CPU."""
    from roar.record import recorder

    wall_base = 1_700_000_000_000_000_000
    clock = {"t": 0, "walls": 0}

    def monotonic_ns():
        clock["t"] += 100
        return clock["t"]

    def time_ns():
        clock["t"] += 100
        now = clock["t"] + wall_base
        clock["walls"] += 1
        if clock["walls"] == 1:
            clock["t"] += 6_000_000  # preempted right after the read
        return now

    monkeypatch.setattr(recorder.time, "monotonic_ns", monotonic_ns)
    monkeypatch.setattr(recorder.time, "time_ns", time_ns)
    assert abs(recorder.wall_offset() - wall_base) <= 100


def test_the_ledger_refuses_a_join_after_an_entry_added_since_its_sort(tmp_path):
    """_cmodel.c's Ledger: ledger_join writes the entries ledger_sorted put in
    order (pointers into the entries, which an add may move). An entry added
    after the sort makes the join refuse (RuntimeError) until sorted again,
    instead of joining a stale order or moved memory."""
    from roar.record.recorder import HASHED, LISTED
    from roar.record.runmodel import ledger_join, ledger_sorted

    with Store(tmp_path / "home") as store:
        rec, d = _prebuilt(store, tmp_path)
        assert len(rec._ledger) > 0
        path = f"{d}/d"
        assert path in rec._clean

        def join():
            rest = ledger_sorted(rec._ledger, rec.model.paths)
            return rest, [[rec._built[p][2][0]] if p in rec._built else [b"{}"] for p in rest]

        state = [0, {}, 0, 0, [], [], [], []]
        rest, rest_json = join()
        rest_paths = list(rest)
        # the path built again, into the ledger, after the sort
        rec._settled_inputs(rec.model, [(path, 0)], rec.kinds, rec.stdio, rec.wall_offset,
                            rec._rid, {}, rec._pf_built, set(), None, rec._ledger)
        with pytest.raises(RuntimeError, match="ledger_sorted first"):
            ledger_join(rec._ledger, rest_paths, rest_json, state, ([], []), LISTED, HASHED)
        rest, rest_json = join()
        body = ledger_join(rec._ledger, list(rest), rest_json, [0, {}, 0, 0, [], [], [], []],
                           ([], []), LISTED, HASHED)
        assert path.encode() in body
        rec.hasher.shutdown(wait=True)


def _long_process(d: str, n: int, rng, killed: bool) -> tuple[list[E.Event], set[int]]:
    """ROOT reading d's files f0..f{n-1} one by one (a data loader's one process),
    a child doing some of it too; meanwhile files it read are read again, rewritten,
    renamed or unlinked, more are read after the last look, and ROOT exits last
    (killed, or not). Returns the events and the looks (indexes after which the
    consumer caught up)."""
    evs: list[E.Event] = []
    ts = [time.monotonic_ns()]

    def ev(type_, tgid=ROOT, fd=-1, ret=0, a0=0, a1=0, a2=0, path=None, path2=None, flags=0,
           argv=None):
        ts[0] += 10
        evs.append(E.Event(ts[0], 1, tgid, tgid, type_, flags, fd, ret, a0, a1, a2, path=path,
                           path2=path2, argv=argv))

    def read(i, tgid=ROOT, nbytes=100):
        ev(E.EV_OPEN, tgid=tgid, fd=3, ret=-100, path=f"{d}/f{i}")
        ev(E.EV_CLOSE, tgid=tgid, fd=3, ret=E.FD_READ, a0=nbytes, a2=1 << 32)

    ev(E.EV_FORK, ret=CHILD)
    last = int(n * 0.8)  # read after the last look
    for i in range(n):
        read(i)
        if i % 3 == 0:
            read(i, tgid=CHILD, nbytes=50)
        if i > 10 and rng.random() < 0.15:  # something done to a file read earlier
            j = rng.randrange(i)
            what = rng.choice(["again", "rewrite", "rename", "unlink", "env", "stdout"])
            if what == "again":
                read(j, nbytes=rng.choice([1, 100, 5000]))
            elif what == "rewrite":
                ev(E.EV_OPEN, fd=4, ret=-100, a0=O_WRONLY_CREAT_TRUNC, path=f"{d}/f{j}")
                ev(E.EV_WRITE, fd=4, a0=7)
                ev(E.EV_CLOSE, fd=4, ret=E.FD_WRITE, a1=7, a2=1)
            elif what == "rename":
                ev(E.EV_RENAME, fd=-100, a0=(-100) & (2**64 - 1), path=f"{d}/f{j}",
                   path2=f"{d}/f{j}.moved")
            elif what == "unlink":
                ev(E.EV_UNLINK, fd=-100, path=f"{d}/f{j}")
            elif what == "env":
                ev(E.EV_OPEN, fd=4, ret=-100, path="/usr/lib/x86_64-linux-gnu/libfoo.so.1")
                ev(E.EV_CLOSE, fd=4, ret=E.FD_READ, a0=10, a2=1 << 32)
            else:
                ev(E.EV_OPEN, fd=5, ret=-100, a0=O_WRONLY_CREAT_TRUNC, path=f"{d}/out")
                ev(E.EV_WRITE, fd=5, a0=3)
                ev(E.EV_CLOSE, fd=5, ret=E.FD_WRITE, a1=3, a2=1)
        if i == last:
            cut = len(evs)
    ev(E.EV_EXIT, tgid=CHILD, a0=0, flags=E.EVF_EXITED)
    ev(E.EV_REAP, ret=CHILD)
    if killed:
        ev(E.EV_EXIT, a1=9, flags=E.EVF_SIGNALED)
    else:
        ev(E.EV_EXIT, a0=0, flags=E.EVF_EXITED)
    looks = {i for i in range(cut) if rng.random() < 0.15}
    return evs, looks


@pytest.mark.parametrize("seed", range(10))
def test_a_running_processs_record_built_in_part_equals_one_built_at_the_end(
        tmp_path, seed, monkeypatch):
    """A running process's record built ahead in part (_cmodel.c Partial: runs of
    its entries built ahead, spliced at the end) is stored as the record built at
    the end by recorder.py: when it reads more files after the look-ahead took its
    entries, reads one of them again, rewrites, renames or unlinks one, and exits
    last, killed or not."""
    import random

    from roar.record import recorder as R
    from roar.record.runmodel import Partial

    rng = random.Random(seed)
    monkeypatch.setattr(R, "PARTIAL_MIN", rng.choice([1, 4, 16]))
    monkeypatch.setattr(R, "PARTIAL_PATIENCE", rng.choice([0, 1, 3]))
    monkeypatch.setattr(R, "PARTIAL_STEP", rng.choice([1, 3]))
    made: list = []

    def partial(p):
        made.append(Partial(p))
        return made[-1]

    monkeypatch.setattr(R, "Partial", partial)
    d = tmp_path / "data"
    d.mkdir()
    n = rng.choice([40, 80])
    for i in range(n):
        (d / f"f{i}").write_bytes(os.urandom(rng.choice([0, 1, 100, 300])))
    evs, looks = _long_process(str(d), n, rng, killed=seed % 2 == 0)
    with Store(tmp_path / "home") as store:
        files_c, raw_c, built_c = _record(store, str(d), evs, True, looks=looks)
        states = [pt.state for pt in made]
        files_py, raw_py, built_py = _record(store, str(d), evs, True, compiled=False,
                                             looks=looks)
    assert built_c == built_py
    assert raw_c == raw_py and files_c == files_py
    assert any(kept for _, _, _, kept in states)  # entries were spliced from a partial
    assert any(spoiled for _, _, spoiled, _ in states)  # ... and runs of them spoiled


def test_ledger_entries_count_until_spoiled_and_keep_their_order_ahead(tmp_path):
    """_cmodel.c's Ledger at the end counts the entries not spoiled (recorder.py
    spoils a path's entry when it leaves the clean set or its built tuple is
    replaced; an entry built again kills the one before), in path order kept at
    each look (ledger_sort), and gives their sizes (ledger_size) for the process
    records; with clean and built it checks each entry it counts against them."""
    from roar.record.runmodel import (
        ledger_size,
        ledger_sort,
        ledger_sorted,
        ledger_spoil,
        settled_inputs,
    )

    with Store(tmp_path / "home") as store:
        rec, d = _prebuilt(store, tmp_path)
        ledger, paths = rec._ledger, rec.model.paths
        counted = [p for p in paths if p not in ledger_sorted(ledger, paths)]
        assert len(counted) == len(ledger) >= 2 and f"{d}/d" in counted
        for p in counted:
            assert ledger_size(ledger, p) == rec._built_size(p) is not None
        assert ledger_size(ledger, "/nowhere") is None
        ledger_sorted(ledger, paths, rec._clean, rec._built)  # the check passes
        rec._clean.discard(f"{d}/d")  # not clean, not spoiled: the check says so
        with pytest.raises(RuntimeError, match="not clean"):
            ledger_sorted(ledger, paths, rec._clean, rec._built)
        ledger_spoil(ledger, [f"{d}/d"])
        assert f"{d}/d" in ledger_sorted(ledger, paths, rec._clean, rec._built)
        assert ledger_size(ledger, f"{d}/d") is None
        # built again into the ledger: the new entry counts, the one before not
        rec._clean.add(f"{d}/d")
        settled_inputs(rec.model, [(f"{d}/d", 0)], rec.kinds, rec.stdio, rec.wall_offset,
                       rec._rid, rec._built, rec._pf_built, rec._clean, None, ledger)
        ledger_sort(ledger)
        rest = ledger_sorted(ledger, paths, rec._clean, rec._built)
        assert f"{d}/d" not in rest and ledger_size(ledger, f"{d}/d") == 100
        rec.hasher.shutdown(wait=True)


@pytest.mark.parametrize("changed", [True, False])
def test_a_process_record_built_ahead_is_rebuilt_when_a_file_it_read_changes_size(
        tmp_path, changed):
    """An exited process's record built ahead from clean paths is taken at the end
    without checking its sizes only when none of its paths was made unclean since:
    a file it read past its size, then rewritten by another process (its size at
    the end another), makes it built again, as recorder.py does."""
    d = tmp_path / "data"
    d.mkdir()
    x = d / "x"

    def events():
        evs, ts = [], [time.monotonic_ns()]

        def ev(type_, tgid=ROOT, fd=-1, ret=0, a0=0, a1=0, a2=0, path=None, flags=0):
            ts[0] += 10
            evs.append(E.Event(ts[0], 1, tgid, tgid, type_, flags, fd, ret, a0, a1, a2,
                               path=path))

        ev(E.EV_FORK, ret=CHILD)
        ev(E.EV_OPEN, tgid=CHILD, fd=3, ret=-100, path=str(x))
        ev(E.EV_CLOSE, tgid=CHILD, fd=3, ret=E.FD_READ, a0=5000, a2=1 << 32)
        ev(E.EV_EXIT, tgid=CHILD, a0=0, flags=E.EVF_EXITED)
        ev(E.EV_REAP, ret=CHILD)
        look = len(evs)
        if changed:
            ev(E.EV_OPEN, fd=4, ret=-100, a0=O_WRONLY_CREAT_TRUNC, path=str(x))
            ev(E.EV_WRITE, fd=4, a0=7)
            ev(E.EV_CLOSE, fd=4, ret=E.FD_WRITE, a1=7, a2=1)
        return evs, look

    procs = []
    evs, look = events()
    for compiled in (True, False):
        x.write_bytes(b"x" * 100)
        with Store(tmp_path / f"home{compiled}") as store:
            rec = _new_recorder(store, str(d), ["sh"], compiled)
            for i, e in enumerate(evs):
                rec.model.feed(e)
                if i == look - 1:
                    _settle(rec)
                    rec.prebuild()
                    assert not compiled or rec._proc_built  # the child's, built ahead
            if changed:
                x.write_bytes(b"1234567")
            done = rec.finish(0, False, 0)
            procs.append(store.run_procs(done["id"]))
    assert procs[0] == procs[1]
    child = next(p for p in procs[0] if p["pid"] == CHILD)
    assert child["files"][0]["bytes_read"] == (7 if changed else 100)


@pytest.mark.parametrize("made", ["before", "after"])
def test_shared_memory_there_before_the_release_is_an_input(tmp_path, made):
    """/dev/shm: a file made just before the workload's release (a dataset staged
    there by the previous command, ~10 ms before a warm launcher's run starts)
    and mapped by the run is an input; one made after it is the run's own (IPC).
    The 20 ms slack of the birth-time check alone called the first the run's."""
    path = f"/dev/shm/roar-test-{new_run_id()}"
    try:
        with Store(tmp_path / "home") as store:
            rec = _new_recorder(store, "/", ["train"])
            if made == "after":
                rec.released_wall_ns = time.time_ns()
                time.sleep(0.01)  # file times tick with the kernel's coarse clock
            with open(path, "wb") as f:
                f.write(b"staged in RAM\n" * 100)
            if made == "before":
                rec.released_wall_ns = time.time_ns()  # released right after it was made
            ts = time.monotonic_ns()
            for i, (type_, fd, ret) in enumerate(((E.EV_OPEN, 3, -100),
                                                  (E.EV_CLOSE, 3, E.FD_MAP_READ))):
                rec.model.feed(E.Event(ts + i, 1, ROOT, ROOT, type_, 0, fd, ret, 0, 0, 0,
                                       path=path if type_ == E.EV_OPEN else None))
            done = rec.finish(0, False, 0)
            roles = {f["path"]: f["role"] for f in store.run_files(done["id"])}
        assert roles.get(path) == ("input" if made == "before" else "ipc"), roles
    finally:
        if os.path.exists(path):
            os.unlink(path)
