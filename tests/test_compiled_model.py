"""The compiled process model (roar/record/_cmodel.c) against the reference
(roar/record/model.py): both fed the same event streams, as raw kernel records
(so both decoders run too), must end in the same state (tests/model_diff.py).

Streams come from two places: every capture test keeps the raw stream of each
run it makes and replays it through both models (the `roar` fixture in
tests/conftest.py), and here, generated streams: every event type, with the
paths, fds, flags and processes chosen so that each rule of the model is hit
(relative and `..` paths, /dev/fd and /proc/PID/fd aliases, O_TMPFILE and
linkat, renames of files and directories, unknown processes and fds, truncated
and unreadable strings, I/O on fds whose open was never seen, connect, TLS and
plain-HTTP heads)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from model_diff import check_stream, first_difference, replay_both

from roar.capture import events as E
from roar.record import model as pymodel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIDS = [100, 101, 102, 103, 104]
FDS = [-100, 0, 1, 3, 4, 5, 7, 1000]
PATHS = ["/w/a", "/w/b", "/w/d/c", "/w/d/e", "/w/d2/c", "a", "d/c", "./d/../b", "../x",
         "/w//d/./c", "", "/dev/fd/3", "/dev/stdin", "/proc/self/fd/4", "/proc/101/fd/3",
         "/proc/thread-self/fd/5", "/dev/null", "/proc/cpuinfo", "/usr/lib/libc.so.6",
         "/w/.venv/lib/python3.11/site-packages/m.py", "/w/x.pyc", "/", "//w/a", "///w/a",
         "/w/d/", "d2", "/w/\udcff", "caf\u00e9", "/w/d/..", "/tmp/..", "/w/d/c/..",
         "/w/pyvenv.cfg", "/w/d/y.pyc", "/dev/shm/b", "/dev", "/w/d/\udcff.pyc"]
FLAGS = [0, 1, 2, 0o1101, 0o1102, 0o101, 0o102, 0o200000, 0o10000000, 0o20200002,
         0o2000000, 0o2001101, 0o100]
EVENT_FLAGS = [0, 0, 0, E.EVF_TRUNCATED, E.EVF_FAULT, E.EVF_EXITED, E.EVF_SIGNALED,
               E.EVF_EXITED | E.EVF_SIGNALED, E.EVF_BYTES_UNKNOWN, E.EVF_ARGV_PACKED,
               E.EVF_ARGV_PACKED | E.EVF_TRUNCATED]
TYPES = sorted(E.EVENT_NAMES)
SOCKADDRS = [struct.pack("<H", 1) + b"sock\0", struct.pack("<H", 1) + b"/run/s\0",
             struct.pack("<H", 1) + b"\0abstract", struct.pack("<H", 2) + b"\x1f\x90"
             + bytes([10, 0, 0, 1]) + bytes(8), b"\x0a\x00" + bytes(26), b"", b"\x01"]
TLS = [b"GET /data/x.bin HTTP/1.1\r\nHost: example.org\r\n\r\n",
       b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", b"garbage"]
ARGVS = [[], ["sh", "-c", "x"], ["python", "t.py"]]


def raw_record(ts, tgid, type_, flags, fd, ret, a0, a1, a2, path=None, path2=None,
               argv=None, raw=None) -> bytes:
    """A record as the kernel side writes it (bpf/roar_event.h)."""
    data = b""
    len1 = len2 = 0
    if raw is not None:
        data, len1 = raw, len(raw)
    else:
        if path is not None:
            p = os.fsencode(path) + b"\0"
            data, len1 = p, len(p)
        second = (b"\0".join(os.fsencode(a) for a in argv) + b"\0" if argv else b"") \
            if type_ == E.EV_EXEC else (os.fsencode(path2) + b"\0" if path2 is not None else b"")
        if second:
            # the argv right after the filename when the record says so (the
            # kernel side's layout), else at PATH_MAX (older records, two paths)
            packed = type_ == E.EV_EXEC and flags & E.EVF_ARGV_PACKED
            data = (data if packed else data.ljust(E.PATH_MAX, b"\0")) + second
            len2 = len(second)
    head = E.HEADER_STRUCT.pack(ts, 1, tgid, tgid, type_, flags, fd, ret, a0, a1, a2, len1, len2)
    return head + data


@st.composite
def streams(draw):
    n = draw(st.integers(1, 80))
    out = []
    ts = 1000
    for _ in range(n):
        ts += draw(st.integers(0, 20))
        t = draw(st.sampled_from(TYPES + [E.EV_OPEN] * 6 + [E.EV_CLOSE] * 3 + [E.EV_FORK] * 2
                                 + [E.EV_READ, E.EV_WRITE, E.EV_RENAME, 99]))
        pid = draw(st.sampled_from(PIDS))
        flags = draw(st.sampled_from(EVENT_FLAGS))
        fd = draw(st.sampled_from(FDS))
        ret = draw(st.sampled_from(FDS + [101, 102, 103, 104, 105, E.FD_NAMED,
                                          E.FD_NAMED | E.FD_READ | E.FD_WRITE]))
        # a rename's or link's dirfd in a0 is an int with any upper half: -100 sign-
        # extended (Python) or zero-extended (coreutils), or a fd with garbage above it
        a0 = draw(st.sampled_from(FLAGS + [(-100) & (2**64 - 1), 0xFFFFFF9C, (7 << 32) | 3,
                                           5, 1 << 40, 0x200, 0x1000,
                                           E.FD_NAMED, E.FD_NAMED | E.FD_MAP_READ,
                                           E.HTTP_SOCKET_KEY | 5]))
        a1 = draw(st.sampled_from([0, 1, 4, 0x400, 0x1000, 9, 1 << 33]))
        a2 = draw(st.sampled_from([0, 3, (2 << 32) | 1]))
        path = draw(st.sampled_from(PATHS + [None]))
        path2 = draw(st.sampled_from(PATHS + [None]))
        kw = {}
        if t == E.EV_EXEC:
            kw["argv"] = draw(st.sampled_from(ARGVS))
        if t == E.EV_CONNECT:
            kw["raw"] = draw(st.sampled_from(SOCKADDRS))
        if t in (E.EV_TLS_WRITE, E.EV_TLS_READ):
            kw["raw"] = draw(st.sampled_from(TLS))
        if t == E.EV_REAP:
            a0 = draw(st.sampled_from([0, 1 << 8, 9, 15, 0x7F, 1 << 40]))
        out.append((ts, pid, t, flags, fd, ret, a0, a1, a2, path, path2, kw))
    return out


SEED = {"root_pid": 100, "cwd": "/w", "argv": ["train"], "root_fds": {0: "/w/in", 1: "/w/out"},
        "start_ns": 500}


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=streams())
def test_generated_streams_same_state(events):
    raws = [raw_record(*e[:-1], **e[-1]) for e in events]
    a, b, (ca, ea), (cb, eb) = replay_both(SEED, raws)
    assert ea == eb
    assert ca == cb
    assert first_difference(a, b) is None, first_difference(a, b)


def test_decoders_agree_on_every_field():
    """feed() with a decoded Event (what the audit tracker does) and feed_raw()
    with the record itself end in the same state."""
    from roar.record import _cmodel

    raws = [raw_record(10 + i, 100, E.EV_OPEN, 0, 3 + i, -100, 0, 0, 0, f"/w/f{i}")
            for i in range(5)]
    raws += [raw_record(40, 100, E.EV_EXEC, E.EVF_TRUNCATED, -100, 0, 0, 0, 0, "/bin/sh",
                        argv=["sh", "-c", "true"]),
             raw_record(41, 100, E.EV_EXEC_RET, 0, 0, 0, 0, 0, 0),
             raw_record(42, 100, E.EV_EXEC, E.EVF_ARGV_PACKED, -100, 0, 0, 0, 0, "/bin/x",
                        argv=["x", "", "-v"]),
             raw_record(43, 100, E.EV_EXEC_RET, 0, 0, 0, 0, 0, 0)]
    x = _cmodel.RunModel(100, "/w", ["t"], {}, 0)
    y = _cmodel.RunModel(100, "/w", ["t"], {}, 0)
    from model_diff import state

    for i, r in enumerate(raws):
        x.feed_raw(r)
        y.feed(E.decode(r))
        if i == len(raws) - 3:
            assert state(x) == state(y)
            assert x.root.argv == ["sh", "-c", "true"] and x.root.argv_incomplete
    assert state(x) == state(y)
    # the argv right after the filename (EVF_ARGV_PACKED), an empty argument kept
    assert (x.root.exe, x.root.argv, x.root.argv_incomplete) == ("/bin/x", ["x", "", "-v"],
                                                                 False)


def test_short_record_is_an_error_in_both():
    from roar.record import _cmodel

    m = _cmodel.RunModel(100, "/w", ["t"], {}, 0)
    with pytest.raises(ValueError):
        m.feed_raw(b"\0" * 10)
    with pytest.raises(struct.error):
        pymodel.RunModel(100, "/w", ["t"], {}, 0).feed(E.decode(b"\0" * 10))


def test_kept_stream_of_a_real_run_is_replayed(tmp_path):
    """A stream written the way `roar run` keeps it (events.write_stream)
    replays through both models (the capture tests do this for every run)."""
    path = tmp_path / "s.events"
    raws = [raw_record(10, 100, E.EV_OPEN, 0, 3, -100, 0, 0, 0, "in.txt"),
            raw_record(11, 100, E.EV_CLOSE, 0, 3, 1, 5, 0, 1 << 32)]
    with open(path, "wb") as f:
        E.write_stream(f, SEED, raws)
    seed, back = E.read_stream(path)
    assert back == raws and seed["root_fds"] == {0: "/w/in", 1: "/w/out"}
    check_stream(path)


def test_kept_stream_of_a_killed_client_is_read_up_to_its_last_whole_record(tmp_path):
    """A SIGKILLed `roar run` may leave its kept stream empty (killed before
    the seed) or ending inside a record: the whole records are replayed, the
    torn one left out; anything else is still refused."""
    path = tmp_path / "s.events"
    raws = [raw_record(10, 100, E.EV_OPEN, 0, 3, -100, 0, 0, 0, "in.txt"),
            raw_record(11, 100, E.EV_CLOSE, 0, 3, 1, 5, 0, 1 << 32)]
    with open(path, "wb") as f:
        E.write_stream(f, SEED, raws)
    whole = path.read_bytes()
    path.write_bytes(whole[:-3])
    assert E.read_stream(path)[1] == raws[:1]
    check_stream(path)
    path.write_bytes(b"")
    assert E.read_stream(path) is None
    check_stream(path)
    path.write_bytes(b"garbage\n")
    with pytest.raises(ValueError):
        E.read_stream(path)


def test_stat_cache_answer_in_the_model_thread_is_the_hashers(tmp_path):
    """An input whose file state the stat cache knows gets its finished job
    from the compiled model's own thread: the same answer the hashing threads
    give (hasher.hash_path with the cache); unknown states go to the threads."""
    from roar.record import _cmodel
    from roar.record.hasher import Hasher, hash_path
    from roar.record.store import Store

    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        (data / f"f{i}").write_bytes(b"x" * (i + 1))
    store = Store(tmp_path / "home")
    warm = Hasher(store)
    for i in range(2):  # f0, f1 cached; f2 not
        warm.hash_now(str(data / f"f{i}"))
    store.cache_hashes(warm.take_new_entries())
    warm.shutdown()

    hasher = Hasher(store)
    m = _cmodel.RunModel(100, str(data), ["t"], {}, 0, hasher.submit, hasher.model_lookup)
    for i in range(3):
        m.feed_raw(raw_record(10 + i, 100, E.EV_OPEN, 0, 3 + i, -100, 0, 0, 0, f"f{i}"))
    assert m.cache_hits == 2
    for i in range(3):
        job = m.paths[str(data / f"f{i}")].early_hash
        res = job.result(10)
        ref, _ = hash_path(str(data / f"f{i}"), store.cached_hash_key)
        assert (res.status, res.hash, res.size, res.ctime_ns, res.cached) == \
            (ref.status, ref.hash, ref.size, ref.ctime_ns, i < 2)
    hasher.shutdown()


def test_stat_cache_read_in_c_is_model_lookups_answer(tmp_path):
    """Given a Hasher's own model_lookup, the compiled model reads the stat
    cache itself (its memo, then one read transaction from model_reader) and
    makes the finished HashJob and HashResult without calling them: every
    field is what the reference path gives (model_lookup called, the classes
    called), and a store that cannot be read still goes through model_lookup,
    which takes it out of use and names it."""
    from roar.record import _cmodel
    from roar.record.hasher import Hasher, HashJob, HashResult, hash_path
    from roar.record.store import Store

    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        (data / f"f{i}").write_bytes(b"y" * (i + 3))
    store = Store(tmp_path / "home")
    warm = Hasher(store)
    for i in range(3):  # f0..f2 in the store's cache; f3 not
        warm.hash_now(str(data / f"f{i}"))
    store.cache_hashes(warm.take_new_entries())
    warm.shutdown()

    def jobs(hasher, lookup):
        m = _cmodel.RunModel(100, str(data), ["t"], {}, 0, hasher.submit_input, lookup)
        for i in range(4):
            m.feed_raw(raw_record(10 + i, 100, E.EV_OPEN, 0, 3 + i, -100, 0, 0, 0, f"f{i}"))
        return m, [m.paths[str(data / f"f{i}")].early_hash for i in range(4)]

    def fields(job, hasher):
        res = job.result(10)
        assert type(job) is HashJob and type(res) is HashResult and job.hasher is hasher
        return ((job.path, job.birth, job.claimed),
                tuple(getattr(res, k) for k in HashResult.__slots__
                      if k not in ("started_ns", "finished_ns")))

    fast, ref = Hasher(store), Hasher(store)
    fast._memo[next(iter(store.env.begin(db=store.dbs["statcache"]).cursor().iternext(
        values=False)))] = "0" * 32  # a memo entry (hashed by this run) wins over the store
    ref._memo.update(fast._memo)
    try:
        m1, got = jobs(fast, fast.model_lookup)
        m2, want = jobs(ref, lambda key: ref.model_lookup(key))
        assert m1.cache_hits == m2.cache_hits == 3
        assert [fields(j, fast) for j in got] == [fields(j, ref) for j in want]
        assert sum(fields(j, fast)[1][1] == "0" * 32 for j in got) == 1
        for job in got[:3]:  # as hasher.py makes them: HashJob(path, hasher), hash_path's result
            res, _ = hash_path(job.path, lambda key: fast._memo.get(key)
                               or store.cached_hash_key(key))
            made = HashJob(job.path, fast)
            made.value = res
            assert fields(job, fast) == fields(made, fast)
    finally:
        fast.shutdown()
        ref.shutdown()
    store.close()  # a store that cannot be read: model_lookup names it, the threads hash
    broken = Hasher(store)
    try:
        m3, got = jobs(broken, broken.model_lookup)
        assert m3.cache_hits == 0 and broken.store is None and broken.failure
        assert all(j.result(10).status == "ok" and not j.result(10).cached for j in got)
    finally:
        broken.shutdown()


def test_runs_use_the_compiled_model():
    """`roar run` models events with the compiled model (unless forced)."""
    code = "from roar.record import runmodel; print(runmodel.COMPILED, runmodel.NOT_BUILT)"
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("ROAR_PYTHON_MODEL", None)
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert p.stdout.split() == ["True", "None"], p.stdout + p.stderr
    p = subprocess.run([sys.executable, "-c", code], env={**env, "ROAR_PYTHON_MODEL": "1"},
                       capture_output=True, text=True)
    assert p.stdout.split() == ["False", "None"], p.stdout + p.stderr


def test_every_attribute_of_the_reference_is_compiled_and_compared():
    """A field or method added to model.py must be added to _cmodel.c and to
    the oracle's state (tests/model_diff.py): this fails until both are."""
    from model_diff import state

    from roar.record import _cmodel

    py = pymodel.RunModel(100, "/w", ["t"], {}, 0)
    c = _cmodel.RunModel(100, "/w", ["t"], {}, 0)
    public = {n for n in dir(py) if not n.startswith("_") and not n.startswith("on_")}
    assert {n for n in public | {"_new_proc"} if not hasattr(c, n)} == set()
    fields = set(vars(py)) if hasattr(py, "__dict__") else set()
    assert fields - set(state(py)) - {"submit_hash"} == set(), "not in model_diff.state"
