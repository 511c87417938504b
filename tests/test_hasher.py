"""Hashing: xxh3-128, stat cache, special files, change detection."""

from __future__ import annotations

import os
import time

import pytest
import xxhash
from conftest import children_running

from roar.record.hasher import OK, SPECIAL, VANISHED, Hasher, hash_path
from roar.record.store import Store, stat_key


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


def _deep(base, depth=21, name="d" * 200) -> tuple[str, int]:
    """A directory deeper than PATH_MAX below base: (its path, an fd open on it)."""
    fd = os.open(base, os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir(name, dir_fd=fd)
        nxt = os.open(name, os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    return str(base) + ("/" + name) * depth, fd


def test_a_path_longer_than_path_max_is_hashed_one_directory_at_a_time(tmp_path):
    deep, fd = _deep(tmp_path)
    data = os.urandom(100_000)
    try:
        w = os.open("data.bin", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(w, data)
        os.close(w)
        os.mkdir("sub", dir_fd=fd)
    finally:
        os.close(fd)
    path = deep + "/data.bin"
    assert len(path) > 4096
    with pytest.raises(OSError):
        os.stat(path)  # too long for one system call
    res, key = hash_path(path, lookup=lambda k: None)
    assert res.status == OK and res.hash == xxhash.xxh3_128(data).hexdigest()
    assert res.size == len(data) and key is not None
    assert hash_path(deep + "/gone.bin")[0].status == VANISHED
    assert hash_path(deep + "/sub")[0].status == SPECIAL  # a directory: no content hash
    assert hash_path(deep + "/data.bin/x")[0].status == "unreadable"  # not a directory


def _pending_run(tmp_path):
    from roar.record.ids import new_run_id

    home = tmp_path / "home"
    f = tmp_path / "late.bin"
    f.write_bytes(os.urandom(1 << 16))
    rid = new_run_id()
    st = Store(home)
    st.finish_run({"id": rid, "status": "finished", "complete": False,
                   "incomplete_reasons": ["1 content hash(es) still being computed "
                                          "(filled in by a background job)"]},
                  [{"path": str(f), "role": "input", "kind": "data", "status": "pending",
                    "hash": None, "pending_bound_ns": time.time_ns() + 10**12}], [])
    return st, home, rid, xxhash.xxh3_128(f.read_bytes()).hexdigest()


def test_the_background_filler_completes_the_run_in_another_process(tmp_path, monkeypatch):
    from roar.record.pending import start_background_fill

    st, home, rid, want = _pending_run(tmp_path)
    monkeypatch.delenv("ROAR_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # a wrong home would be empty, not yours
    assert start_background_fill(home, rid) is None
    deadline = time.monotonic() + 120
    while not st.get_run(rid)["complete"]:  # its last step
        assert time.monotonic() < deadline, "the background fill never happened"
        time.sleep(0.1)
    for pid in children_running(b"roar.cli.fill", rid.encode()):
        os.waitpid(pid, 0)  # ours to reap (mutmut's os.wait() took it for a worker)
    (f,) = st.run_files(rid)
    assert (f["status"], f["hash"]) == ("ok", want)


def test_the_filler_says_why_it_could_not_start(tmp_path, monkeypatch):
    import sys

    from roar.record.pending import start_background_fill

    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    msg = start_background_fill(tmp_path / "home", "r-1")
    assert msg.startswith("could not start the background hashing of run r-1: ")
    assert "No such file" in msg


def test_the_filler_entry_point_fills_the_run_named_on_its_command_line(tmp_path, monkeypatch):
    import sys

    from roar.cli import fill as job  # what start_background_fill runs

    st, home, rid, want = _pending_run(tmp_path)
    st.close()  # the job opens the store itself
    monkeypatch.setenv("ROAR_HOME", str(home))
    monkeypatch.setattr(sys, "argv", ["roar.cli.fill", rid])
    job.main()
    st = Store(home)
    (f,) = st.run_files(rid)
    assert (f["status"], f["hash"]) == ("ok", want) and st.get_run(rid)["complete"]


def test_the_filler_records_each_outcome_and_counts_only_inputs_it_could_not_verify(
        tmp_path, monkeypatch):
    from roar.record import hasher
    from roar.record.ids import new_run_id
    from roar.record.pending import fill
    from roar.record.store import stat_key

    monkeypatch.setattr(hasher, "PROGRESS_EVERY", hasher.CHUNK)
    st = Store(tmp_path / "home")
    big, at_bound, changed = tmp_path / "big.bin", tmp_path / "at-bound", tmp_path / "changed"
    big.write_bytes(os.urandom(2 * hasher.CHUNK))
    at_bound.write_bytes(b"v1")
    changed.write_bytes(b"v22")
    known, no_bound = tmp_path / "known", tmp_path / "no-bound"
    known.write_bytes(b"seen by another run")
    no_bound.write_bytes(b"n")
    st.cache_hashes([(stat_key(os.stat(known)), "f" * 32)])  # hashed before: trusted
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    t = str(tmp_path)

    def pending(path, role="input", **kw):
        return {"path": str(path), "role": role, "kind": "data", "status": "pending",
                "hash": None, **kw}

    bound = os.stat(changed).st_ctime_ns - 1  # changed after the run used it
    files = [
        pending(big, pending_bound_ns=time.time_ns() + 10**12),
        pending(at_bound, pending_bound_ns=os.stat(at_bound).st_ctime_ns),  # not after it
        pending(changed, pending_bound_ns=bound),
        pending(known, pending_bound_ns=time.time_ns() + 10**12),
        pending(no_bound),
        pending(f"{t}/vanished.bin", pending_bound_ns=0),
        pending(f"{t}/big.bin/x"),                       # unreadable: not a directory
        pending(fifo),                                   # special: no content to verify
        pending(f"{t}/out-gone.bin", role="output"),     # outputs are not inputs
        {"path": f"{t}/done.bin", "role": "input", "kind": "data", "status": "ok",
         "hash": "a" * 32, "size": 1},
    ]
    rid = new_run_id()
    st.finish_run({"id": rid, "status": "finished", "complete": False,
                   "incomplete_reasons": ["9 content hash(es) still being computed "
                                          "(filled in by a background job)"]}, files, [])
    progress = []
    real = st.set_hash_progress
    monkeypatch.setattr(st, "set_hash_progress",
                        lambda run_id, p: (progress.append((run_id, p)), real(run_id, p)))

    assert fill(st, rid) == 9
    got = {f["path"]: f for f in st.run_files(rid)}
    row = {p: (f["status"], f["hash"], f.get("size"), f.get("error")) for p, f in got.items()}
    assert row[str(big)] == ("ok", xxhash.xxh3_128(big.read_bytes()).hexdigest(),
                             2 * hasher.CHUNK, None)
    assert row[str(at_bound)] == ("ok", xxhash.xxh3_128(b"v1").hexdigest(), 2, None)
    assert row[str(changed)] == ("unverified", None, 3,
                                 "changed after the run used it, before it could be hashed")
    assert row[str(known)] == ("ok", "f" * 32, 19, None)
    assert row[str(no_bound)] == ("ok", xxhash.xxh3_128(b"n").hexdigest(), 1, None)
    assert row[f"{t}/vanished.bin"] == ("vanished", None, None, None)
    assert row[f"{t}/big.bin/x"] == ("unreadable", None, None, "Not a directory")
    assert row[str(fifo)] == ("special", None, None, None)
    assert row[f"{t}/out-gone.bin"][0] == "vanished"
    assert row[f"{t}/done.bin"] == ("ok", "a" * 32, 1, None)  # not pending: left alone
    assert not any("pending_bound_ns" in f for f in got.values())
    # two inputs changed or vanished, one unreadable: three; not the output, not the fifo
    run = st.get_run(rid)
    assert run["incomplete_reasons"] == [
        "3 input(s) without a verified content hash (hashed after the run)"]
    assert "hash_progress" not in run
    # progress of the long hash: which file of how many, bytes done of its size
    assert (rid, {"path": str(big), "file": 1, "files": 9, "bytes_done": hasher.CHUNK,
                  "bytes": 2 * hasher.CHUNK}) in progress
    assert all(p is not None for _, p in progress)  # cleared with the records (fill_files)
    # what the filler hashed is in the stat cache: the next look is one stat
    res, _ = hash_path(str(big), st.cached_hash_key)
    assert res.cached and res.hash == row[str(big)][1]


def test_the_filler_of_a_run_whose_late_inputs_all_verify_makes_it_complete(tmp_path):
    from roar.record.ids import new_run_id
    from roar.record.pending import fill

    st = Store(tmp_path / "home")
    f = tmp_path / "in.bin"
    f.write_bytes(b"x")
    rid = new_run_id()
    st.finish_run({"id": rid, "status": "finished", "complete": False,
                   "incomplete_reasons": ["1 content hash(es) still being computed "
                                          "(filled in by a background job)"]},
                  [{"path": str(f), "role": "input", "kind": "data", "status": "pending",
                    "hash": None, "pending_bound_ns": time.time_ns() + 10**12}], [])
    seen = []  # after each write transaction: (the input's status, the run's reasons)
    real = st.write

    def write(fn):
        out = real(fn)
        seen.append((st.run_files(rid)[0]["status"], st.get_run(rid)["incomplete_reasons"]))
        return out

    st.write = write
    assert fill(st, rid) == 1 and fill(st, rid) == 0  # nothing left the second time
    run = st.get_run(rid)
    assert run["complete"] and run["incomplete_reasons"] == []
    # the filled-in record and the run's completeness change in one transaction:
    # no reader sees the hash there with the run still waiting for it
    assert [r for status, r in seen if status == "ok"] == [[]] * len(
        [1 for status, _ in seen if status == "ok"]), seen


def test_birth_time_by_path_by_fd_and_through_hash_path(tmp_path):
    from roar.record.hasher import birth_ns

    slack = 20_000_000  # the kernel stamps times from a coarse clock (a tick behind)
    before = time.time_ns()
    f = tmp_path / "born"
    f.write_bytes(b"x")
    after = time.time_ns()
    born = birth_ns(str(f))
    assert born is not None and before - slack <= born <= after  # ext4 records it
    fd = os.open(f, os.O_RDONLY)
    try:
        assert birth_ns(None, fd) == born  # of the open file, not of the cwd
    finally:
        os.close(fd)
    assert birth_ns(str(tmp_path / "gone")) is None
    fresh, _ = hash_path(str(f), birth=True)
    assert fresh.born_ns == born and hash_path(str(f))[0].born_ns is None
    st = Store(tmp_path / "home")
    st.cache_hashes([(stat_key(os.stat(f)), fresh.hash)])
    cached, _ = hash_path(str(f), st.cached_hash_key, birth=True)
    assert cached.cached and cached.born_ns == born


def test_queued_jobs_are_hashed_by_the_workers_with_their_birth_when_asked(tmp_path):
    f = tmp_path / "in.bin"
    f.write_bytes(b"queued")
    h = Hasher(workers=2)
    try:
        plain, born = h.submit(str(f)), h.submit(str(f), birth=True)
        assert plain.result(timeout=60).hash == xxhash.xxh3_128(b"queued").hexdigest()
        assert born.result(timeout=60).born_ns is not None and born.done()
        assert plain.value.born_ns is None
    finally:
        h.shutdown()


def test_waiting_for_a_job_gives_up_after_its_timeout():
    h = Hasher(workers=0)  # nothing will ever hash it
    job = h.submit("/nonexistent")
    start = time.monotonic()
    assert job.result(timeout=0.3) is None and not job.done()
    assert 0.25 <= time.monotonic() - start < 10
    assert job.result(timeout=0) is None


def _window(fn, *args, **kw):
    """fn(*args, **kw) and the CLOCK_MONOTONIC window it ran in."""
    before = time.monotonic_ns()
    out = fn(*args, **kw)
    return out, before, time.monotonic_ns()


def test_every_outcome_says_when_hashing_started_and_finished(tmp_path):
    # the recorder compares finished_ns with the kernel's event times (CLOCK_MONOTONIC)
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    os.mkfifo(tmp_path / "fifo")
    st = Store(tmp_path / "home")
    for path in (str(f), str(tmp_path / "gone"), str(f) + "/x", str(tmp_path / "fifo"),
                 "/proc/sys/vm/drop_caches"):  # ok, vanished, unreadable, special, denied
        (res, _), before, after = _window(hash_path, path)
        assert before <= res.started_ns <= res.finished_ns <= after, path
    (res, _), before, after = _window(hash_path, str(f), st.cached_hash_key)
    st.cache_hashes([(stat_key(os.stat(f)), res.hash)])
    (cached, _), before, after = _window(hash_path, str(f), st.cached_hash_key)
    assert cached.cached and before <= cached.started_ns <= cached.finished_ns <= after
    assert (cached.hash, cached.size, cached.ctime_ns) == (res.hash, 3, os.stat(f).st_ctime_ns)


def test_unreadable_files_say_why():
    res, key = hash_path("/proc/sys/vm/drop_caches")  # EACCES, for root too
    assert (res.status, res.hash, res.error, key) == ("unreadable", None,
                                                      "Permission denied", None)
    res, _ = hash_path("/etc/hostname/x")
    assert (res.status, res.error) == ("unreadable", "Not a directory")


def test_a_file_in_the_stat_cache_is_not_even_opened(tmp_path):
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    f = tmp_path / "huge.bin"
    f.write_bytes(b"x" * 4096)
    key = stat_key(os.stat(f))
    ino = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert ino >= 0
    try:
        assert libc.inotify_add_watch(ino, os.fsencode(f), 0x20) >= 0  # IN_OPEN
        res, new_key = hash_path(str(f), {key: "e" * 32}.get, birth=True)
        assert (res.status, res.hash, res.cached, new_key) == ("ok", "e" * 32, True, None)
        assert res.born_ns is not None and res.ctime_ns == os.stat(f).st_ctime_ns
        with pytest.raises(BlockingIOError):
            os.read(ino, 4096)  # no open event: one stat was all
        hash_path(str(f))  # not cached: opened (the watch works)
        assert os.read(ino, 4096)
    finally:
        os.close(ino)


def test_a_long_path_already_in_the_stat_cache_is_not_read_again(tmp_path):
    deep, fd = _deep(tmp_path)
    try:
        w = os.open("data.bin", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(w, b"12345")
        os.close(w)
        st = os.stat("data.bin", dir_fd=fd)
    finally:
        os.close(fd)
    path = deep + "/data.bin"
    (res, key), before, after = _window(hash_path, path, {stat_key(st): "c" * 32}.get,
                                        birth=True)
    assert (res.status, res.hash, res.size, res.cached, key) == ("ok", "c" * 32, 5, True, None)
    assert res.ctime_ns == st.st_ctime_ns and res.born_ns is not None
    assert before <= res.started_ns <= res.finished_ns <= after


def test_the_hashing_fd_is_close_on_exec_and_non_blocking(tmp_path, monkeypatch):
    # a process started while a file is hashed (roard, roar run) must not inherit it
    from roar.record import hasher

    monkeypatch.setattr(hasher, "PROGRESS_EVERY", hasher.CHUNK)
    f = tmp_path / "two_mib"
    f.write_bytes(b"\0" * (2 * hasher.CHUNK))
    flags = []

    def progress(done, size):
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}") == str(f):
                    info = open(f"/proc/self/fdinfo/{fd}").read()
                    flags.append(int(info.split("flags:")[1].split()[0], 8))
            except OSError:
                pass

    assert hash_path(str(f), progress=progress)[0].status == OK
    assert flags and all(fl & os.O_CLOEXEC and fl & os.O_NONBLOCK for fl in flags)


def test_a_file_of_whole_progress_steps_hashes_without_a_progress_callback(tmp_path,
                                                                          monkeypatch):
    from roar.record import hasher

    monkeypatch.setattr(hasher, "PROGRESS_EVERY", hasher.CHUNK)
    f = tmp_path / "one_mib"
    f.write_bytes(b"\1" * hasher.CHUNK)
    assert hash_path(str(f))[0].hash == xxhash.xxh3_128(f.read_bytes()).hexdigest()


# -- rules pinned by the mutation run (docs/testing.md) -------------------------------


def test_a_read_error_after_the_open_is_unreadable_with_its_reason():
    """/proc/self/mem opens as a regular file and fails at the first read (EIO)."""
    (res, key), before, after = _window(hash_path, "/proc/self/mem")
    assert (res.status, res.hash, res.size, res.error, key) == (
        "unreadable", None, None, "Input/output error", None)
    assert before <= res.started_ns <= res.finished_ns <= after


def test_content_that_keeps_changing_while_hashed_is_unverified(tmp_path, monkeypatch):
    """Each pass that ends with another stat than it began with is done again;
    after RETRIES passes the file is unverified, with its last size and why."""
    from roar.record import hasher

    monkeypatch.setattr(hasher, "PROGRESS_EVERY", hasher.CHUNK)
    f = tmp_path / "growing.log"
    f.write_bytes(b"x" * hasher.CHUNK)
    passes = []

    def append(done, size):  # a writer that appends while each pass reads
        passes.append(size)
        with open(f, "ab") as w:
            w.write(b"y")

    (res, key), before, after = _window(hash_path, str(f), progress=append)
    assert len(passes) == hasher.RETRIES
    assert (res.status, res.hash, res.error, key) == (
        "unverified", None, "content kept changing while it was hashed", None)
    assert res.size == hasher.CHUNK + hasher.RETRIES  # its size when last looked at
    assert before <= res.started_ns <= res.finished_ns <= after


def test_a_fifo_deeper_than_path_max_is_special_and_does_not_block(tmp_path):
    path, fd = _deep(tmp_path)
    try:
        os.mkfifo("fifo", dir_fd=fd)
    finally:
        os.close(fd)
    (res, _), before, after = _window(hash_path, path + "/fifo")
    assert res.status == SPECIAL and after - before < 5e9


def test_a_failure_inside_the_hasher_is_an_unreadable_result_and_named(tmp_path):
    """No job waits forever when hashing raises something other than an OSError
    (a path with a NUL byte: ValueError): its result is unreadable, and the
    hasher's failure names it for the run's reasons; the first failure stays."""
    h = Hasher(workers=1)
    try:
        res = h.submit(str(tmp_path) + "/a\0b").result(timeout=30)
        assert (res.status, res.hash, res.error) == (
            "unreadable", None, "the hasher failed: embedded null byte")
        assert h.failure == "ValueError: embedded null byte"
        h.submit(str(tmp_path) + "/c\0d").result(timeout=30)
        assert h.failure == "ValueError: embedded null byte"
    finally:
        h.shutdown()


def test_a_store_whose_cache_cannot_be_read_is_left_and_named(tmp_path):
    """A damaged (here: closed) store: the file is hashed without the cache, the
    store is not asked again, and the failure is named once."""
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    st = Store(tmp_path / "home")
    st.close()
    h = Hasher(st, workers=1)
    try:
        res = h.submit(str(f)).result(timeout=30)
        assert (res.status, res.hash) == ("ok", xxhash.xxh3_128(b"abc").hexdigest())
        assert h.store is None and h.failure and h.failure.startswith("Error: ")
        first = h.failure
        assert h.model_lookup(b"k" * 40) is None and h.failure == first
    finally:
        h.shutdown()


def test_the_model_threads_lookups_share_one_read_transaction_for_a_while(tmp_path,
                                                                          monkeypatch):
    """model_lookup: memo first, then the store's stat cache read in one
    transaction kept for READER_S seconds: an entry written meanwhile is a
    miss until the transaction is renewed. A damaged store is left and named."""
    from roar.record import hasher

    st = Store(tmp_path / "home")
    st.cache_hashes([(b"k1" * 20, "a" * 32)])
    h = Hasher(st, workers=0)
    try:
        assert h.model_lookup(b"k1" * 20) == "a" * 32
        assert h.model_lookup(b"k0" * 20) is None
        monkeypatch.setattr(hasher, "READER_S", 3600)  # this snapshot stays
        st.cache_hashes([(b"k2" * 20, "b" * 32)])
        assert h.model_lookup(b"k2" * 20) is None
        monkeypatch.setattr(hasher, "READER_S", 0.0)  # renewed at the next lookup
        time.sleep(0.01)
        assert h.model_lookup(b"k2" * 20) == "b" * 32
        h._memo[b"k3" * 20] = "c" * 32  # hashed by this run: no store read at all
        assert h.model_lookup(b"k3" * 20) == "c" * 32
        assert h.failure is None and h.store is st
        h.shutdown()
        assert h._reader is None  # the transaction ends with the hasher
        st.close()
        h.store = st
        assert h.model_lookup(b"k1" * 20) is None
        assert h.store is None and h.failure.startswith("Error: ")
        h.store = None
        assert h.model_lookup(b"k3" * 20) == "c" * 32  # the memo still answers
    finally:
        h.shutdown()


def test_hashing_threads_are_named_daemons(tmp_path):
    """roar-hash-N (py-spy, faulthandler dumps); daemons: a hash abandoned at the
    end of a run (shutdown without wait) never keeps the process alive."""
    import threading

    h = Hasher(workers=2)
    try:
        assert h._threads == []  # started with the first job: most short runs hash nothing
        f = tmp_path / "f"
        f.write_bytes(b"x")
        assert h.submit(str(f)).result(10).status == "ok"
        mine = [t for t in threading.enumerate() if t in h._threads]
        assert sorted(t.name for t in mine) == ["roar-hash-0", "roar-hash-1"]
        assert all(t.daemon for t in mine)
    finally:
        h.shutdown()
    assert not any(t.is_alive() for t in mine)


def test_the_compiled_read_hash_is_bound_and_gives_xxh3_128_for_every_size(tmp_path):
    """roar/record/_readhash.c reads the open file from its start (wherever its
    offset is) and gives xxhash's own xxh3-128 hexdigest; hash_path uses it."""
    from roar.record import _readhash, hasher

    assert hasher.compiled_read_hash() is _readhash.read_hash and _readhash.available()
    for size in (0, 1, 1023, 4096, hasher.CHUNK - 1, hasher.CHUNK, hasher.CHUNK + 1,
                 3 * hasher.CHUNK + 17):
        f = tmp_path / f"f{size}"
        data = os.urandom(size)
        f.write_bytes(data)
        fd = os.open(f, os.O_RDONLY)
        try:
            os.lseek(fd, 0, os.SEEK_END)
            assert _readhash.read_hash(fd) == (xxhash.xxh3_128(data).hexdigest(), size)
        finally:
            os.close(fd)
        assert hash_path(str(f))[0].hash == xxhash.xxh3_128(data).hexdigest()


def test_the_compiled_read_hash_raises_the_read_error():
    from roar.record import _readhash

    fd = os.open("/proc/self/mem", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            _readhash.read_hash(fd)
    finally:
        os.close(fd)
    assert e.value.errno == 5  # EIO
    with pytest.raises(OSError):
        _readhash.read_hash(10**6)  # not an open fd: EBADF


def test_hashing_threads_hash_at_once_with_their_own_buffers(tmp_path):
    """Four threads hashing different files at the same time each get their
    own file's hash (per-thread buffers and states)."""
    import threading

    from roar.record import _readhash

    files = []
    for i in range(4):
        f = tmp_path / f"t{i}"
        data = os.urandom((i + 1) * 700_001)
        f.write_bytes(data)
        files.append((f, xxhash.xxh3_128(data).hexdigest()))
    bad = []

    def work(f, want):
        for _ in range(20):
            fd = os.open(f, os.O_RDONLY)
            try:
                if _readhash.read_hash(fd)[0] != want:
                    bad.append(f)
            finally:
                os.close(fd)

    threads = [threading.Thread(target=work, args=fw) for fw in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []


def test_a_worker_reads_the_stat_cache_in_one_transaction_while_jobs_keep_coming(
        tmp_path, monkeypatch):
    """The hashing threads' lookups share a read transaction per thread for
    READER_S seconds instead of one per lookup, and end it before they wait
    for more work: an idle worker holds no LMDB snapshot."""
    from roar.record import hasher

    monkeypatch.setattr(hasher, "READER_S", 3600)
    st = Store(tmp_path / "home")
    files = []
    for i in range(40):
        f = tmp_path / f"f{i}"
        f.write_bytes(b"%d" % i)
        files.append(f)
    st.cache_hashes([(stat_key(os.stat(f)), f"{i:032x}") for i, f in enumerate(files[:20])])
    begun = []
    real = st._begin

    def counting(**kw):
        begun.append(kw)
        return real(**kw)

    monkeypatch.setattr(st, "_begin", counting)
    h = Hasher(st, workers=1)
    try:
        jobs = [h.submit(str(f)) for f in files]
        results = [j.result(10) for j in jobs]
        assert [r.hash for r in results[:20]] == [f"{i:032x}" for i in range(20)]
        assert all(r.cached for r in results[:20]) and not any(r.cached for r in results[20:])
        assert [r.hash for r in results[20:]] == [
            xxhash.xxh3_128(f.read_bytes()).hexdigest() for f in files[20:]]
        assert 1 <= len(begun) <= 3  # not one per lookup (60 lookups)
        time.sleep(0.3)  # the worker found the queue empty and ended its reader
        assert _reader_slots_in_use(st) == 0
    finally:
        h.shutdown()


def _reader_slots_in_use(st) -> int:
    """Read transactions open on the store's environment (LMDB's reader
    table: one line per slot holding a snapshot)."""
    lines = st.env.readers().strip().splitlines()[1:]  # a header, then one per reader
    return sum(1 for line in lines if line.split()[-1] != "-")


def test_with_no_thread_to_be_had_jobs_are_hashed_in_the_callers_thread(tmp_path, monkeypatch):
    """roar's threads count in the job's pids.max: where the workers cannot be
    started (at the first job), submit hashes in its caller's thread instead
    of queuing a job nobody takes."""
    import threading

    f = tmp_path / "f"
    f.write_bytes(b"data")

    def refuse(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    h = Hasher(workers=2)
    job = h.submit(str(f))
    assert job.done() and job.value.hash == xxhash.xxh3_128(b"data").hexdigest()
    assert h._threads == []
    h.shutdown()
