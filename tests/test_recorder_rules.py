"""Rules of the recorder (roar/record/recorder.py) checked on the records it
stores: synthetic event streams over real files, a real store and the real
hasher; no probes. Versions (v1 in, v2 out), renames over an input, O_TMPFILE
outputs, the exit code and status of a run, and what makes a run incomplete."""

from __future__ import annotations

import gc
import os
import signal
import socket
import struct
import time

import pytest
from conftest import O_WRONLY_CREAT_TRUNC, ROOT, hash_of

from roar.capture import events as E
from roar.record.hasher import birth_ns
from roar.record.ids import new_run_id
from roar.record.model import AT_EMPTY_PATH, O_DIRECTORY, O_RDWR, O_TMPFILE
from roar.record.recorder import RunRecorder
from roar.record.store import Store, stat_key

AT_FDCWD_U64 = (-100) & (2**64 - 1)


class Run:
    """A recorder over a real store; events get monotonic timestamps taken when
    they are fed, so they order correctly against the files' real times.
    `ahead` (the `ahead` fixture runs every test both ways): records of settled
    paths are built while the run goes on (RunRecorder.prebuild, as roard does
    when the model is idle), at each settle and before the end."""

    ahead = False

    def __init__(self, store: Store, cwd, root_fds=None, workers: int = 2, git_root=None,
                 rules=None):
        self.store = store
        self.run = {"id": new_run_id(), "cwd": str(cwd), "command": ["train"],
                    "git": {"root": str(git_root)} if git_root else None,
                    "status": "running", **({"classify_rules": rules} if rules else {})}
        store.put_run(self.run)
        self.rec = RunRecorder(store, self.run, ROOT, root_fds or {}, workers=workers)

    def ev(self, type_, tgid=ROOT, fd=-1, ret=0, a0=0, a1=0, a2=0, flags=0, path=None,
           path2=None):
        self.rec.model.feed(E.Event(time.monotonic_ns(), 1, tgid, tgid, type_, flags, fd, ret,
                                    a0, a1, a2, path=str(path) if path is not None else None,
                                    path2=str(path2) if path2 is not None else None))

    def read(self, path, fd=3):
        self.ev(E.EV_OPEN, fd=fd, ret=-100, path=path)
        self.ev(E.EV_CLOSE, fd=fd, ret=1, a0=10, a2=1 << 32)

    def write(self, path, fd=4, flags=O_WRONLY_CREAT_TRUNC):
        self.ev(E.EV_OPEN, fd=fd, ret=-100, a0=flags, path=path)
        self.ev(E.EV_WRITE, fd=fd, a0=1)
        self.ev(E.EV_CLOSE, fd=fd, ret=2, a1=5, a2=1)

    def settle(self, path) -> None:
        """Wait for the hash of what the run saw at its first read of path."""
        self.rec.model.paths[str(path)].early_hash.result()
        if self.ahead:
            self.rec.prebuild()

    def finish(self, status=0, interrupted=False, lost=0) -> tuple[dict, list[dict]]:
        if status is not None and ROOT in self.rec.model.live:  # it exited in its cgroup
            self.ev(E.EV_EXIT, a0=status >> 8, flags=E.EVF_EXITED)
        if self.ahead:
            self.rec.prebuild()
        done = self.rec.finish(status, interrupted, lost)
        return self.store.get_run(done["id"]), self.store.run_files(done["id"])


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "home") as st:
        yield st


@pytest.fixture(autouse=True, params=[False, True], ids=["at-end", "built-ahead"])
def ahead(request, monkeypatch):
    """Every rule holds whether a path's records are built at the end or ahead."""
    monkeypatch.setattr(Run, "ahead", request.param)
    return request.param


def by_role(files: list[dict], role: str) -> list[tuple]:
    return sorted((f["path"], f["hash"], f["status"]) for f in files if f["role"] == role)


# -- versions on the stored records -----------------------------------------------------


def test_read_then_rewrite_stores_v1_as_input_and_v2_as_output(store, tmp_path):
    f = tmp_path / "state.bin"
    f.write_bytes(b"version 1")
    r = Run(store, tmp_path)
    r.read(f)
    r.settle(f)
    f.write_bytes(b"version 2, longer")
    r.write(f)
    doc, files = r.finish()
    assert by_role(files, "input") == [(str(f), hash_of(b"version 1"), "ok")]
    assert by_role(files, "output") == [(str(f), hash_of(b"version 2, longer"), "ok")]
    assert doc["complete"] is True and doc["counts"]["inputs"] == 1


def test_sort_o_in_place_stores_v1_as_input_and_v2_as_output(store, tmp_path):
    """sort -o words words opens its output (O_WRONLY|O_CREAT, no truncation) before
    it reads the same file: the read is still the run's first access."""
    f = tmp_path / "words"
    f.write_bytes(b"pear\napple\n")
    time.sleep(0.05)  # born well before the run's O_CREAT open (recorder.CREATE_SLACK_NS)
    r = Run(store, tmp_path)
    r.ev(E.EV_OPEN, fd=3, ret=-100, a0=0o1 | 0o100 | 0o2000000, path=f)
    r.ev(E.EV_DUP, fd=3, ret=1)
    r.read(f, fd=4)
    r.settle(f)
    f.write_bytes(b"apple\npear\n")
    r.ev(E.EV_FTRUNCATE, fd=1, a0=0)
    r.ev(E.EV_WRITE, fd=1, a0=2)
    _, files = r.finish()
    assert by_role(files, "input") == [(str(f), hash_of(b"pear\napple\n"), "ok")]
    assert by_role(files, "output") == [(str(f), hash_of(b"apple\npear\n"), "ok")]


def _released_around_birth(r: Run, path, before_tick: bool = False) -> None:
    """The release's two clock readings put around the file's birth time: the
    coarse clock file times come from read just after it was born (before_tick)
    or just before, the wall clock just after (a file made within the tick of
    the release, before it or after it: its time alone cannot tell)."""
    born = birth_ns(str(path))
    assert born is not None, "this filesystem records no birth times"
    r.rec.released_coarse_ns = born + 1 if before_tick else born - 1_000_000
    r.rec.released_wall_ns = born + 1_000_000


@pytest.mark.parametrize("when", ["in-tick", "before-tick"])
def test_a_file_made_at_once_by_the_run_is_an_output(store, tmp_path, when):
    """`roar run -- touch made`: touch's O_CREAT open runs ~1 ms after the
    release, so the file's birth time (the kernel's coarse clock, a tick
    behind) is at or before the wall clock read just before the release. Born
    within that tick and opened O_CREAT with nothing saying it was there
    before: the run made it, an output though nothing was written. Born before
    the tick began: it was there before the run, and opened without a write it
    is no output."""
    made = tmp_path / "made"
    made.touch()
    r = Run(store, tmp_path)
    _released_around_birth(r, made, before_tick=when == "before-tick")
    r.ev(E.EV_OPEN, fd=3, ret=-100, a0=0o1 | 0o100 | 0o400 | 0o4000, path=made)
    r.ev(E.EV_CLOSE, fd=3, ret=2)
    _, files = r.finish()
    assert by_role(files, "output") == ([(str(made), hash_of(b""), "ok")]
                                        if when == "in-tick" else []), files


@pytest.mark.parametrize("evidence", ["held-open", "early-hash"])
def test_a_file_staged_in_the_release_tick_and_opened_o_creat_is_an_input(store, tmp_path,
                                                                         evidence):
    """A file the previous command wrote within the tick before the release is
    born as late as one the run makes at once. What tells them apart: the run's
    held O_CREAT open found it there first (the pre-image supervisor's
    Supervisor.existed, here an empty file opened for writing, then read), or
    the early hash of its O_RDONLY|O_CREAT open read content the run had not
    written. Either way what the run read there is an input."""
    f = tmp_path / "staged"
    f.write_bytes(b"" if evidence == "held-open" else b"staged data\n")
    r = Run(store, tmp_path)
    _released_around_birth(r, f)
    if evidence == "held-open":
        r.rec.existed_at_open[str(f)] = time.monotonic_ns()  # found there, then continued
        r.ev(E.EV_OPEN, fd=3, ret=-100, a0=0o1 | 0o100, path=f)
        r.ev(E.EV_CLOSE, fd=3, ret=2)
        r.read(f, fd=4)
    else:
        r.ev(E.EV_OPEN, fd=3, ret=-100, a0=0o100, path=f)
        r.ev(E.EV_CLOSE, fd=3, ret=1, a0=12, a2=1 << 32)
    r.settle(f)
    _, files = r.finish()
    assert by_role(files, "input") == [(str(f), hash_of(f.read_bytes()), "ok")], files


def test_input_rewritten_before_its_hash_is_unverified_never_v2(store, tmp_path):
    f = tmp_path / "state.bin"
    f.write_bytes(b"version 1")
    r = Run(store, tmp_path)
    r.ev(E.EV_OPEN, fd=3, ret=-100, path=f)
    job = r.rec.model.paths[str(f)].early_hash
    job.result()
    # the run rewrote it at a time before the hash finished: that hash may be v2's
    r.rec.model.paths[str(f)].modified_ts = job.result().finished_ns - 1
    r.rec.model.paths[str(f)].read = True
    doc, files = r.finish()
    [inp] = [x for x in files if x["role"] == "input"]
    assert inp["hash"] is None and inp["status"] == "unverified"
    assert doc["complete"] is False
    assert "1 input(s) without a verified content hash" in doc["incomplete_reasons"]


def test_input_changed_by_someone_else_after_the_open_is_unverified(store, tmp_path):
    f = tmp_path / "shared.csv"
    f.write_bytes(b"a")
    r = Run(store, tmp_path)
    r.ev(E.EV_OPEN, fd=3, ret=-100, path=f)
    s = r.rec.model.paths[str(f)]
    s.early_hash.result()
    s.early_ts -= 10_000_000_000  # the open happened well before the file's last change
    r.ev(E.EV_CLOSE, fd=3, ret=1, a0=1, a2=1 << 32)
    _, files = r.finish()
    [inp] = [x for x in files if x["role"] == "input"]
    assert (inp["hash"], inp["status"]) == (None, "unverified")
    assert "changed after the run opened it" in inp["error"]


def test_atomic_save_over_an_input_keeps_v1_in_and_the_new_file_out(store, tmp_path):
    cfg, tmp = tmp_path / "config.json", tmp_path / "config.json.tmp"
    cfg.write_bytes(b'{"epoch": 1}')
    r = Run(store, tmp_path)
    r.read(cfg)
    r.settle(cfg)
    tmp.write_bytes(b'{"epoch": 2}')
    r.write(tmp)
    os.replace(tmp, cfg)
    r.ev(E.EV_RENAME, fd=-100, a0=AT_FDCWD_U64, path=tmp, path2=cfg)
    _, files = r.finish()
    assert by_role(files, "input") == [(str(cfg), hash_of(b'{"epoch": 1}'), "ok")]
    assert by_role(files, "output") == [(str(cfg), hash_of(b'{"epoch": 2}'), "ok")]
    [out] = [x for x in files if x["role"] == "output"]
    assert out["bytes_written"] == 5  # written under the temporary name


def test_o_tmpfile_linked_into_place_is_an_output(store, tmp_path):
    final = tmp_path / "model.pt"
    r = Run(store, tmp_path)
    r.ev(E.EV_OPEN, fd=3, ret=-100, a0=O_TMPFILE | O_DIRECTORY | O_RDWR, path=tmp_path)
    r.ev(E.EV_WRITE, fd=3, a0=1)
    final.write_bytes(b"weights")
    r.ev(E.EV_LINK, fd=3, a0=AT_FDCWD_U64, a1=AT_EMPTY_PATH, path="", path2=final)
    _, files = r.finish()
    assert by_role(files, "output") == [(str(final), hash_of(b"weights"), "ok")]
    assert by_role(files, "input") == []


def test_written_then_deleted_is_temporary_and_read_back_is_internal(store, tmp_path):
    scratch, own = tmp_path / "scratch", tmp_path / "own"
    r = Run(store, tmp_path)
    r.write(scratch)
    r.ev(E.EV_UNLINK, fd=-100, path=scratch)
    own.write_bytes(b"mine")
    r.write(own)
    r.read(own, fd=5)
    _, files = r.finish()
    roles = sorted((f["path"], f["role"]) for f in files)
    assert roles == [(str(own), "output"), (str(scratch), "temporary")]


def test_truncate_of_an_input_makes_it_an_output_too(store, tmp_path):
    f = tmp_path / "log.csv"
    f.write_bytes(b"old rows")
    r = Run(store, tmp_path)
    r.read(f)
    r.settle(f)
    f.write_bytes(b"")
    r.ev(E.EV_TRUNCATE, a0=0, path=f)
    _, files = r.finish()
    assert by_role(files, "input") == [(str(f), hash_of(b"old rows"), "ok")]
    assert by_role(files, "output") == [(str(f), hash_of(b""), "ok")]


def test_environment_and_pseudo_files_are_listed_unhashed(store, tmp_path):
    r = Run(store, tmp_path)
    r.read("/usr/lib/x86_64-linux-gnu/libc.so.6")
    r.read("/proc/self/status", fd=5)
    doc, files = r.finish()
    assert sorted((f["path"], f["role"], f["hash"]) for f in files) == [
        ("/proc/self/status", "pseudo", None),
        ("/usr/lib/x86_64-linux-gnu/libc.so.6", "env", None)]
    assert doc["counts"]["inputs"] == 0


def test_stderr_file_of_the_run_is_its_log_not_an_output(store, tmp_path):
    log = tmp_path / "run.log"
    log.write_bytes(b"")
    r = Run(store, tmp_path, root_fds={2: str(log)})
    r.ev(E.EV_WRITE, fd=2, a0=1)
    _, files = r.finish()
    assert [(f["path"], f["role"], f["hash"]) for f in files] == [(str(log), "log", None)]
    # stdout too (`train > out.log`); any other inherited fd's file is an output
    out, other = tmp_path / "out.log", tmp_path / "fd3.txt"
    r = Run(store, tmp_path, root_fds={1: str(out), 3: str(other)})
    r.ev(E.EV_WRITE, fd=1, a0=1)
    r.ev(E.EV_WRITE, fd=3, a0=1)
    _, files = r.finish()
    assert sorted((f["path"], f["role"]) for f in files) == [(str(other), "output"),
                                                             (str(out), "log")]


# -- exit codes and status ------------------------------------------------------------


@pytest.mark.parametrize("status,code,sig,state", [
    (0, 0, None, "finished"),
    (3 << 8, 3, None, "finished"),
    (signal.SIGKILL, 128 + 9, 9, "interrupted"),
    (signal.SIGTERM, 128 + 15, 15, "interrupted"),
    (signal.SIGSEGV, 128 + 11, 11, "finished"),  # a crash, not somebody stopping it
])
def test_exit_status_from_waitpid(store, tmp_path, status, code, sig, state):
    r = Run(store, tmp_path)
    r.ev(E.EV_EXIT, a0=77, flags=E.EVF_EXITED)  # what the kernel said: waitpid's word wins
    done = r.rec.finish(status, False, 0)
    doc = store.get_run(done["id"])
    assert (doc["exit_code"], doc.get("signal"), doc["status"]) == (code, sig, state)
    assert doc["complete"] is (state == "finished")
    [root] = store.run_procs(doc["id"])  # the root process says the same
    assert (root["exit_code"], root["signal"]) == ((None, sig) if sig else (code, None))


def test_exit_code_of_a_run_rebuilt_without_waitpid_comes_from_the_kernel(store, tmp_path):
    r = Run(store, tmp_path)
    r.ev(E.EV_EXIT, a1=6, flags=E.EVF_SIGNALED)
    doc, _ = r.finish(None)
    assert (doc["exit_code"], doc["signal"]) == (128 + 6, 6)
    r = Run(store, tmp_path)
    r.ev(E.EV_EXIT, a0=7, flags=E.EVF_EXITED)
    doc, _ = r.finish(None)
    assert (doc["exit_code"], doc.get("signal")) == (7, None)


def test_interrupted_run_is_incomplete_with_its_reason(store, tmp_path):
    doc, _ = Run(store, tmp_path).finish(0, interrupted=True)
    assert doc["status"] == "interrupted" and doc["complete"] is False
    assert doc["incomplete_reasons"] == ["run was interrupted"]


def test_io_on_fds_whose_open_was_never_seen_makes_the_run_incomplete(store, tmp_path):
    """Reads and writes on an fd the run never saw opened count when the kernel
    says it names a regular file with a name (FD_NAMED), once per fd; pipes and
    sockets (no FD_NAMED) and fds the run knows do not."""
    r = Run(store, tmp_path, root_fds={5: str(tmp_path / "inherited.txt")})
    r.ev(E.EV_CLOSE, fd=7, ret=E.FD_READ | E.FD_NAMED, a0=10)  # received, read
    r.ev(E.EV_WRITE, fd=9, a0=E.FD_WRITE | E.FD_NAMED)  # received, written...
    r.ev(E.EV_CLOSE, fd=9, ret=E.FD_WRITE | E.FD_NAMED, a1=3)  # ...and closed: one fd
    r.ev(E.EV_CLOSE, fd=8, ret=E.FD_READ, a0=10)  # a pipe or socket
    r.ev(E.EV_CLOSE, fd=5, ret=E.FD_READ | E.FD_NAMED, a0=10)  # inherited, known
    doc, _ = r.finish(0)
    assert doc["complete"] is False
    assert [x for x in doc["reasons"] if x["code"] == "untraced_fd"] == [
        {"code": "untraced_fd", "n": 2}]


def test_a_close_on_exec_fd_closed_by_an_exec_is_not_untraced(store, tmp_path):
    """exec closes close-on-exec fds without a close call: the kernel sums their
    accesses at the process's exit, after the model dropped them at the exec
    (bash's script fd 255 in a pyenv shim). They were opened in sight: no
    untraced_fd. An fd the process never had still is one."""
    from roar.record.model import O_CLOEXEC

    script = tmp_path / "shim.sh"
    script.write_text("exec python3\n")
    r = Run(store, tmp_path)
    r.ev(E.EV_OPEN, fd=255, ret=-100, a0=O_CLOEXEC, path=script)
    r.ev(E.EV_EXEC, fd=-100, path="/usr/bin/true")
    r.ev(E.EV_EXEC_RET, ret=0)
    r.ev(E.EV_CLOSE, fd=255, ret=E.FD_READ | E.FD_NAMED, a0=12)  # the exit's flush
    doc, _ = r.finish(0)
    assert not [x for x in doc["reasons"] if x["code"] == "untraced_fd"], doc["reasons"]
    r = Run(store, tmp_path)
    r.ev(E.EV_EXEC, fd=-100, path="/usr/bin/true")
    r.ev(E.EV_EXEC_RET, ret=0)
    r.ev(E.EV_CLOSE, fd=254, ret=E.FD_READ | E.FD_NAMED, a0=12)
    doc, _ = r.finish(0)
    assert {"code": "untraced_fd", "n": 1} in doc["reasons"]


def test_a_process_whose_exit_was_never_seen_left_the_run(store, tmp_path):
    """A process of the run that never exits in its cgroup moved out of it:
    LEFT_RUN. With events lost, its exit may simply be lost: not said."""
    r = Run(store, tmp_path)
    r.ev(E.EV_FORK, ret=ROOT + 1)
    doc, _ = r.finish(0)
    assert doc["complete"] is False
    assert {"code": "left_run", "n": 1} in doc["reasons"]
    r = Run(store, tmp_path)
    r.ev(E.EV_FORK, ret=ROOT + 1)
    r.ev(E.EV_EXIT, tgid=ROOT + 1, flags=E.EVF_EXITED)
    doc, _ = r.finish(0)
    assert doc["complete"] is True, doc["reasons"]
    r = Run(store, tmp_path)
    r.ev(E.EV_FORK, ret=ROOT + 1)
    doc, _ = r.finish(0, lost=3)
    assert "left_run" not in {x["code"] for x in doc["reasons"]}


def test_lost_events_problems_and_io_uring_make_a_run_incomplete(store, tmp_path):
    r = Run(store, tmp_path)
    r.ev(E.EV_READ, tgid=999, fd=3)  # a process never seen starting
    r.ev(E.EV_IOURING)
    doc, _ = r.finish(0, lost=12)
    assert doc["complete"] is False and doc["lost_events"] == 12 and doc["io_uring"] is True
    assert doc["incomplete_reasons"] == [
        "12 kernel events lost (ring buffer full)", "process seen without its start (1x)",
        "io_uring used: file I/O submitted through it is not traced"]


# -- every field of the stored records (pinned by the mutation run, docs/testing.md) ----

CHILD = ROOT + 1


def _rec(path, kind, role, mode, procs, read=0, written=0, hash=None, size=None, status=None,
         **error) -> dict:
    """A stored file record; `error` is present only when a hash was attempted."""
    return {"path": str(path), "kind": kind, "role": role, "mode": mode, "hash": hash,
            "size": size, "status": status, "bytes_read": read, "bytes_written": written,
            "processes": procs, **error}


def test_stored_file_and_process_records_field_by_field(store, tmp_path):
    """One run of two processes over an input, an output, a temporary file, a
    pseudo file, the run's log and a file whose byte counts are unknown: every
    field of every stored file and process record."""
    data, out, scratch = tmp_path / "data.csv", tmp_path / "out.bin", tmp_path / "scratch"
    other, log = tmp_path / "other.csv", tmp_path / "run.log"
    data.write_bytes(b"a,b\n1,2\n")
    other.write_bytes(b"x")
    log.write_bytes(b"")
    r = Run(store, tmp_path, root_fds={1: str(log), 2: str(log)})
    r.ev(E.EV_FORK, ret=CHILD)
    # the input: 100 bytes asked for in 3 calls, the file holds 8
    r.ev(E.EV_OPEN, fd=3, ret=-100, path=data)
    r.ev(E.EV_CLOSE, fd=3, ret=E.FD_READ, a0=100, a2=3 << 32)
    r.settle(data)
    # the output: 5 bytes in 2 calls by the first process, 3 in 1 by the second
    r.ev(E.EV_OPEN, fd=4, ret=-100, a0=O_WRONLY_CREAT_TRUNC, path=out)
    r.ev(E.EV_WRITE, fd=4, a0=1)
    r.ev(E.EV_CLOSE, fd=4, ret=2, a1=5, a2=2)
    r.ev(E.EV_OPEN, tgid=CHILD, fd=4, ret=-100, a0=0o1 | 0o2000, path=out)  # O_APPEND
    r.ev(E.EV_WRITE, tgid=CHILD, fd=4, a0=1)
    r.ev(E.EV_CLOSE, tgid=CHILD, fd=4, ret=2, a1=3, a2=1)
    out.write_bytes(b"12345678")
    r.write(scratch, fd=5)
    r.ev(E.EV_UNLINK, fd=-100, path=scratch)
    # a pseudo file read by both: 10 + 7 bytes, never bounded; one opened, never read
    r.read("/proc/self/status", fd=6)
    r.ev(E.EV_OPEN, tgid=CHILD, fd=6, ret=-100, path="/proc/self/status")
    r.ev(E.EV_CLOSE, tgid=CHILD, fd=6, ret=1, a0=7, a2=1 << 32)
    r.ev(E.EV_OPEN, fd=7, ret=-100, path="/proc/self/maps")
    r.ev(E.EV_CLOSE, fd=7)
    r.ev(E.EV_OPEN, fd=7, ret=-100, a0=0o1, path="/proc/self/comm")  # written, not read
    r.ev(E.EV_WRITE, fd=7, a0=1)
    r.ev(E.EV_CLOSE, fd=7, ret=2, a1=4, a2=1)
    # read by both, the second's byte counts unknown: the file's counts are unknown
    r.read(other, fd=8)
    r.ev(E.EV_OPEN, tgid=CHILD, fd=8, ret=-100, path=other)
    r.ev(E.EV_CLOSE, tgid=CHILD, fd=8, ret=1, a0=1, a2=1 << 32, flags=E.EVF_BYTES_UNKNOWN)
    r.settle(other)
    r.ev(E.EV_WRITE, fd=2, a0=1)
    r.ev(E.EV_EXIT, tgid=CHILD, flags=E.EVF_EXITED)
    doc, files = r.finish()
    root, child = (p["key"] for p in sorted(store.run_procs(doc["id"]), key=lambda p: p["pid"]))
    both = sorted([root, child])
    assert gc.isenabled()  # off while the records are made, and on again
    # what the run hashed is in the stat cache for the next run
    assert store.cached_hash_key(stat_key(os.stat(data))) == hash_of(b"a,b\n1,2\n")
    assert store.cached_hash_key(stat_key(os.stat(out))) == hash_of(b"12345678")
    assert files == [
        _rec("/proc/self/comm", "pseudo", "pseudo", "w", [root], written=4),
        _rec("/proc/self/status", "pseudo", "pseudo", "r", both, read=17),
        _rec(data, "data", "input", "r", [root], read=8, hash=hash_of(b"a,b\n1,2\n"), size=8,
             status="ok", error=None),
        _rec(other, "data", "input", "r", both, read=None, written=None, hash=hash_of(b"x"),
             size=1, status="ok", error=None),
        _rec(out, "data", "output", "w", both, written=8, hash=hash_of(b"12345678"), size=8,
             status="ok", error=None),
        _rec(log, "data", "log", "w", [root]),
        _rec(scratch, "data", "temporary", "w", [root], written=5),
    ]
    procs = {p["pid"]: p for p in store.run_procs(doc["id"])}

    def pf(path, mode, read=0, written=0, rc=0, wc=0, kind="data"):
        return {"path": str(path), "kind": kind, "mode": mode, "bytes_read": read,
                "bytes_written": written, "read_calls": rc, "write_calls": wc}

    assert procs[ROOT] == {
        "key": root, "pid": ROOT, "ppid": None, "parent": None, "argv": ["train"],
        "exe": None, "cwd": str(tmp_path), "exit_code": 0, "signal": None, "threads": 1,
        "execs": 0, "argv_incomplete": False,
        "files": [pf(data, "r", read=8, rc=3), pf(out, "w", written=5, wc=2),
                  pf(scratch, "w", written=5, wc=1),
                  pf("/proc/self/status", "r", read=10, rc=1, kind="pseudo"),
                  pf("/proc/self/comm", "w", written=4, wc=1, kind="pseudo"),
                  pf(other, "r", read=1, rc=1), pf(log, "w")]}
    assert procs[CHILD]["parent"] == root and procs[CHILD]["files"] == [
        pf(out, "w", written=3, wc=1), pf("/proc/self/status", "r", read=7, rc=1, kind="pseudo"),
        pf(other, "r", read=None, written=None, rc=1)]
    assert doc["counts"] == {"inputs": 2, "outputs": 1, "env_outputs": 0, "processes": 2,
                             "events": doc["counts"]["events"]}
    assert doc["complete"] is True and doc["ended_at"][:4] == time.strftime("%Y")


def test_an_output_that_cannot_be_read_at_the_end_says_why(store, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    r = Run(store, tmp_path)
    r.write(d / "out.bin")
    d.rmdir()
    d.write_bytes(b"a file where the directory was")
    _, files = r.finish()
    [out] = files
    assert (out["role"], out["hash"], out["status"], out["error"]) == (
        "output", None, "unreadable", "Not a directory")


def _reap_filler(run_id: str) -> None:
    """Wait for the background filler of run_id this process started, and reap it."""
    from conftest import children_running

    for pid in children_running(b"roar.cli.fill", run_id.encode()):
        os.waitpid(pid, 0)


@pytest.mark.parametrize("ahead", [True], indirect=True)  # it builds ahead itself; once
def test_hashes_not_done_by_the_end_are_pending_and_filled_later(store, tmp_path):
    """A hasher that never gets to them (no workers): the input's and the output's
    records say pending, with the time after which a change voids the late
    hash; the run is incomplete for it, and the background filler completes it."""
    data, out = tmp_path / "data.csv", tmp_path / "out.bin"
    data.write_bytes(b"v1")
    r = Run(store, tmp_path, workers=0)
    r.ev(E.EV_OPEN, fd=3, ret=-100, path=data)
    r.ev(E.EV_CLOSE, fd=3, ret=1, a0=2, a2=1 << 32)
    for _ in range(10):  # its hash never finishes: looked at again and again, never built
        r.rec.prebuild()
    r.write(out)
    out.write_bytes(b"out")
    s = r.rec.model.paths[str(data)]
    before = time.time_ns()
    doc, files = r.finish()
    after = time.time_ns()
    recs = {f["role"]: f for f in files}
    assert {k: v for k, v in recs["input"].items() if k != "pending_bound_ns"} == _rec(
        data, "data", "input", "r", recs["input"]["processes"], read=2, status="pending")
    assert recs["input"]["pending_bound_ns"] == s.early_ts + r.rec.wall_offset
    assert recs["output"]["status"] == "pending" and recs["output"]["hash"] is None
    assert before <= recs["output"]["pending_bound_ns"] <= after
    assert {"code": "hash_pending", "n": 2} in doc["reasons"] and doc["complete"] is False
    deadline = time.monotonic() + 120
    while not store.get_run(doc["id"])["complete"]:  # the filler's last step
        assert time.monotonic() < deadline, "the background fill never happened"
        time.sleep(0.1)
    _reap_filler(doc["id"])
    filled = {f["role"]: (f["status"], f["hash"]) for f in store.run_files(doc["id"])}
    assert filled == {"input": ("ok", hash_of(b"v1")), "output": ("ok", hash_of(b"out"))}


def test_data_where_no_early_hash_is_taken_is_hashed_at_the_end(store, tmp_path):
    """A file under an environment location (site-packages) is never hashed at
    its first read; a user rule that makes it data makes it an input, hashed at
    the end. If the run also wrote it, that hash may be of its own bytes:
    unverified."""
    data = tmp_path / "site-packages" / "data.csv"
    data.parent.mkdir()
    data.write_bytes(b"rows")
    rules = [{"kind": "data", "pattern": str(data), "source": "/etc/roar.toml"}]
    r = Run(store, tmp_path, rules=rules)
    r.read(data)
    assert r.rec.model.paths[str(data)].early_hash is None
    _, files = r.finish()
    assert files == [_rec(data, "data", "input", "r", files[0]["processes"], read=4,
                          hash=hash_of(b"rows"), size=4, status="ok", error=None)]
    r = Run(store, tmp_path, rules=rules)
    r.read(data)
    r.write(data, flags=0o1)  # O_WRONLY, no O_CREAT
    _, files = r.finish()
    [inp] = [f for f in files if f["role"] == "input"]
    assert (inp["hash"], inp["size"], inp["status"], inp["error"], inp["bytes_read"]) == (
        None, None, "unverified", "changed by the run before it was hashed", 10)


def test_unverified_inputs_keep_their_size_and_say_why(store, tmp_path):
    f = tmp_path / "state.bin"
    f.write_bytes(b"version 1")
    r = Run(store, tmp_path)
    r.ev(E.EV_OPEN, fd=3, ret=-100, path=f)
    s = r.rec.model.paths[str(f)]
    s.modified_ts = s.early_hash.result().finished_ns - 1  # rewritten before the hash ended
    s.read = True
    _, files = r.finish()
    [inp] = [x for x in files if x["role"] == "input"]
    assert (inp["size"], inp["error"]) == (
        9, "overwritten by the run before its first version was hashed")
    r = Run(store, tmp_path)
    r.ev(E.EV_OPEN, fd=3, ret=-100, path=f)
    s = r.rec.model.paths[str(f)]
    s.early_hash.result()
    s.early_ts -= 10_000_000_000
    r.ev(E.EV_CLOSE, fd=3, ret=1, a0=1, a2=1 << 32)
    _, files = r.finish()
    [inp] = [x for x in files if x["role"] == "input"]
    assert (inp["size"], inp["error"]) == (
        9, "changed after the run opened it, before it was hashed")


def test_a_file_the_run_created_and_then_read_is_not_an_input(store, tmp_path):
    """Born at the run's O_CREAT open (within the clock slack), read, never written
    through an fd: the run made it (a lock file, a cache it filled by other
    means): an output, not an input."""
    lock = tmp_path / "made.lock"
    r = Run(store, tmp_path)
    lock.write_bytes(b"pid 100")  # made by the open below, before the coarse clock ticked
    r.ev(E.EV_OPEN, fd=3, ret=-100, a0=0o2 | 0o100, path=lock)  # O_RDWR|O_CREAT
    r.ev(E.EV_CLOSE, fd=3, ret=E.FD_READ, a0=7, a2=1 << 32)
    _, files = r.finish()
    assert [(f["role"], f["hash"]) for f in files] == [("output", hash_of(b"pid 100"))]


def test_a_journal_made_read_written_and_deleted_before_any_look_is_temporary(store, tmp_path):
    """O_CREAT, read, written and unlinked before the hasher could look (sqlite's
    -journal): the run's own scratch file, never an input."""
    j = tmp_path / "db-journal"
    r = Run(store, tmp_path)
    r.ev(E.EV_OPEN, fd=3, ret=-100, a0=0o2 | 0o100, path=j)
    r.ev(E.EV_CLOSE, fd=3, ret=E.FD_READ, a0=5, a2=1 << 32)  # read first
    r.write(j, fd=4, flags=0o1)
    r.ev(E.EV_UNLINK, fd=-100, path=j)
    _, files = r.finish()
    assert [(f["path"], f["role"]) for f in files] == [(str(j), "temporary")]


def test_git_tracked_files_are_code_whenever_their_records_are_built(store, tmp_path):
    from conftest import git

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.py").write_text("print(1)\n")
    (repo / "vocab.txt").write_text("a b\n")  # code only because git tracks it
    (repo / "notes.txt").write_text("n\n")
    git(repo, "init", "-q")
    git(repo, "add", "train.py", "vocab.txt")
    git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "c")
    r = Run(store, repo, git_root=repo)
    r.read(repo / "train.py")
    r.settle(repo / "train.py")
    r.read(repo / "notes.txt", fd=4)
    r.settle(repo / "notes.txt")
    r.read(repo / "vocab.txt", fd=5)
    r.settle(repo / "vocab.txt")
    _, files = r.finish()
    assert sorted((f["path"], f["kind"], f["role"]) for f in files) == [
        (str(repo / "notes.txt"), "data", "input"), (str(repo / "train.py"), "code", "input"),
        (str(repo / "vocab.txt"), "code", "input")]


def test_user_classification_rules_decide_whenever_records_are_built(store, tmp_path):
    weights = tmp_path / "cache" / "w.bin"
    weights.parent.mkdir()
    weights.write_bytes(b"w")
    rules = [{"kind": "env", "pattern": str(tmp_path / "cache"), "source": "/etc/roar.toml"}]
    r = Run(store, tmp_path, rules=rules)
    r.read(weights)
    r.settle(weights)
    _, files = r.finish()
    assert [(f["kind"], f["role"], f["hash"]) for f in files] == [("env", "env", None)]


@pytest.fixture
def shm():
    """Names in /dev/shm for one test, removed after it."""
    import uuid

    tag = uuid.uuid4().hex[:12]
    made: list[str] = []

    def name(n: str) -> str:
        made.append(f"/dev/shm/{n}-{tag}")
        return made[-1]

    yield name
    for p in made:
        if os.path.lexists(p):
            os.unlink(p)


def _mapped(r: Run, path: str, fd: int, how: int, flags: int = 0o2) -> None:
    r.ev(E.EV_OPEN, fd=fd, ret=-100, a0=flags, path=path)
    r.ev(E.EV_MMAP, fd=fd, a0=how)
    r.ev(E.EV_CLOSE, fd=fd)


def test_shared_memory_the_run_made_for_itself_is_ipc(store, tmp_path, shm):
    """/dev/shm segments the run's processes mapped, which were not there before
    it (made at its O_CREAT open, born during it, gone before anyone looked, a
    named semaphore): ipc, never an input or output. One there before the run,
    or only read and written with read(2)/write(2), is a file like any other."""
    rw = E.FD_MAP_READ | E.FD_MAP_WRITE
    old, touched, reopened = shm("old"), shm("touched"), shm("reopened")
    for p in (old, touched, reopened):
        with open(p, "wb") as f:
            f.write(b"before")
    time.sleep(0.05)  # born well before the run (recorder.CREATE_SLACK_NS)
    r = Run(store, tmp_path)
    os.utime(touched)  # changed (ctime) during the run: their birth times decide
    os.utime(reopened)
    made, born, gone, sem, staged = (shm("made"), shm("born"), shm("gone"), shm("sem.x"),
                                     shm("staged"))
    with open(made, "wb") as f:
        f.write(b"segment")
    _mapped(r, made, 3, rw, flags=0o2 | 0o100)  # made by this O_CREAT open
    with open(born, "wb") as f:
        f.write(b"by a worker")
    _mapped(r, born, 4, E.FD_MAP_READ)
    _mapped(r, gone, 5, rw)  # never on disk when looked at
    _mapped(r, sem, 6, E.FD_MAP_WRITE)
    _mapped(r, old, 7, E.FD_MAP_READ)
    r.settle(old)
    _mapped(r, touched, 8, E.FD_MAP_READ)
    r.settle(touched)
    # the birth time its O_CREAT open's hash saw decides, though it is gone by the end
    _mapped(r, reopened, 10, E.FD_MAP_READ, flags=0o2 | 0o100)
    r.settle(reopened)
    os.unlink(reopened)
    r.ev(E.EV_UNLINK, fd=-100, path=reopened)
    r.write(staged, fd=9)
    with open(staged, "wb") as f:
        f.write(b"staged")
    _, files = r.finish()
    got = {f["path"]: (f["role"], f["mode"], f["hash"]) for f in files}
    assert got == {made: ("ipc", "rw", None), born: ("ipc", "r", None),
                   gone: ("ipc", "rw", None), sem: ("ipc", "w", None),
                   old: ("input", "r", hash_of(b"before")),
                   touched: ("input", "r", hash_of(b"before")),
                   reopened: ("input", "r", hash_of(b"before")),
                   staged: ("output", "w", hash_of(b"staged"))}
    [ipc] = [f for f in files if f["path"] == made]
    assert ipc == _rec(made, "data", "ipc", "rw", ipc["processes"])


def test_a_file_saved_under_a_temporary_name_sums_both_names(store, tmp_path):
    """Written directly, then replaced by a temporary file another process wrote
    (an atomic save): the output's bytes and processes are both names'; bytes
    unknown under either name are unknown."""
    for exact in (True, False):
        cfg, tmp = tmp_path / "config.json", tmp_path / "config.json.tmp"
        r = Run(store, tmp_path)
        r.ev(E.EV_FORK, ret=CHILD)
        r.write(cfg)  # 5 bytes
        r.ev(E.EV_OPEN, tgid=CHILD, fd=3, ret=-100, a0=O_WRONLY_CREAT_TRUNC, path=tmp)
        r.ev(E.EV_WRITE, tgid=CHILD, fd=3, a0=1)
        r.ev(E.EV_CLOSE, tgid=CHILD, fd=3, ret=2, a1=7, a2=1,
             flags=0 if exact else E.EVF_BYTES_UNKNOWN)
        tmp.write_bytes(b"new cfg")
        os.replace(tmp, cfg)
        r.ev(E.EV_RENAME, tgid=CHILD, fd=-100, a0=AT_FDCWD_U64, path=tmp, path2=cfg)
        r.ev(E.EV_EXIT, tgid=CHILD, flags=E.EVF_EXITED)
        doc, files = r.finish()
        keys = sorted(p["key"] for p in store.run_procs(doc["id"]))
        [out] = [f for f in files if f["role"] == "output"]
        assert (out["path"], out["hash"]) == (str(cfg), hash_of(b"new cfg"))
        assert (out["bytes_written"], out["processes"]) == (12 if exact else None, keys)


def test_notes_of_the_session_are_reasons_of_the_run(store, tmp_path):
    """Notes (sentences or coded reasons) come first, after lost events."""
    from roar.record.codes import Reason, reason

    r = Run(store, tmp_path)
    r.ev(E.EV_EXIT, a0=0, flags=E.EVF_EXITED)
    coded = reason(Reason.UNINSPECTED_NET, address="10.0.0.1", port=443)
    doc = r.rec.finish(0, False, 2, notes=["the client went away", coded])
    assert doc["complete"] is False
    assert doc["reasons"][0] == {"code": "lost_events", "n": 2}
    assert doc["reasons"][1:] == [{"code": "note", "text": "the client went away"}, coded]


def test_what_the_stored_run_document_says(store, tmp_path):
    """The client's pid is not kept; the network peers the run connected to are;
    an attached session's processes that go on after it did not leave the run."""
    r = Run(store, tmp_path)
    r.run["client_pid"] = 4242
    r.run["mode"] = "attached"
    r.ev(E.EV_FORK, ret=CHILD)  # never exits in sight: it goes on after the session
    r.rec.model.feed(E.Event(time.monotonic_ns(), 1, ROOT, ROOT, E.EV_CONNECT, 0, 5, 0, 0, 0,
                             0, raw=struct.pack("<H", socket.AF_UNIX) + b"/run/db.sock\0"))
    doc, _ = r.finish()
    assert "client_pid" not in doc and "client_pid" not in store.get_run(doc["id"])
    assert doc["connects"] == [{"family": "unix", "address": "/run/db.sock", "port": None,
                                "process": r.rec.model.root.key}]
    assert doc["complete"] is True, doc["reasons"]
    # a network peer whose traffic could not be read: what came from it is unknown
    r = Run(store, tmp_path)
    peer = struct.pack("<H", socket.AF_INET) + struct.pack(">H", 443) + bytes([10, 0, 0, 1])
    r.rec.model.feed(E.Event(time.monotonic_ns(), 1, ROOT, ROOT, E.EV_CONNECT, 0, 5, 0, 0, 0,
                             0, raw=peer + b"\0" * 8))
    doc, _ = r.finish()
    assert doc["reasons"] == [{"code": "uninspected_net", "address": "10.0.0.1", "port": 443}]
    assert doc["remote"] == {"objects": 0, "telemetry": [], "uninspected": [
        {"address": "10.0.0.1", "port": 443, "process": r.rec.model.root.key}]}


def test_packages_used_and_installed(store, tmp_path):
    """Packages: the distributions the run imported from (read in site-packages),
    less what it installed itself (pip reads back what it writes); installed: the
    distributions whose .dist-info it wrote into."""
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    (site / "bar").mkdir(parents=True)
    (site / "bar" / "__init__.py").write_text("")
    (site / "bar-2.0.dist-info").mkdir()
    (site / "bar-2.0.dist-info" / "top_level.txt").write_text("bar\n")
    r = Run(store, tmp_path)
    r.read(site / "bar" / "__init__.py")
    (site / "foo").mkdir()
    (site / "foo-1.0.dist-info").mkdir()
    (site / "foo" / "__init__.py").write_text("")
    (site / "foo-1.0.dist-info" / "RECORD").write_text("foo/__init__.py,,\n")
    r.write(site / "foo" / "__init__.py", fd=4)
    r.write(site / "foo-1.0.dist-info" / "RECORD", fd=5)
    r.read(site / "foo" / "__init__.py", fd=6)
    doc, files = r.finish()
    assert doc["packages"] == {"bar": "2.0"} and doc["installed"] == {"foo": "1.0"}
    assert doc["counts"]["env_outputs"] == 2 and doc["counts"]["outputs"] == 0


def test_an_input_unchanged_since_its_hash_was_cached_is_not_read_again(store, tmp_path):
    """The store's stat cache (device, inode, size, mtime, ctime -> hash) is
    what the recorder's hasher asks first: a cached entry is taken as is."""
    f = tmp_path / "big.bin"
    f.write_bytes(b"contents")
    store.cache_hashes([(stat_key(os.stat(f)), "c" * 32)])  # as an earlier run left it
    r = Run(store, tmp_path)
    r.read(f)
    r.settle(f)
    _, files = r.finish()
    assert [(x["role"], x["hash"], x["status"]) for x in files] == [("input", "c" * 32, "ok")]


@pytest.mark.parametrize("written", [False, True])
def test_an_o_creat_file_gone_before_any_look_and_never_deleted_by_the_run(store, tmp_path,
                                                                           written):
    """Opened with O_CREAT and read first, then gone before the hasher looked, with
    no birth time to say who made it: unless the run both wrote and deleted it
    (a journal), what it read was there before it: an input, unverified, kept."""
    f = tmp_path / "lock"
    r = Run(store, tmp_path)
    r.ev(E.EV_OPEN, fd=3, ret=-100, a0=0o2 | 0o100, path=f)  # never on disk when looked at
    r.ev(E.EV_CLOSE, fd=3, ret=E.FD_READ, a0=5, a2=1 << 32)
    if written:
        r.write(f, fd=4, flags=0o1)
    else:
        r.ev(E.EV_UNLINK, fd=-100, path=f)
    _, files = r.finish()
    roles = sorted((x["role"], x["status"]) for x in files)
    assert roles == ([("input", "vanished"), ("output", "vanished")] if written
                     else [("input", "vanished")])


def test_an_input_opened_with_o_creat_and_replaced_later_stays_an_input(store, tmp_path):
    """Whether the run made a file is decided by its birth time when the run's
    O_CREAT open hashed it, not by whatever file has that name at the end."""
    f = tmp_path / "config.json"
    f.write_bytes(b"old")
    time.sleep(0.05)  # born well before the run
    r = Run(store, tmp_path)
    r.ev(E.EV_OPEN, fd=3, ret=-100, a0=0o2 | 0o100, path=f)  # O_RDWR|O_CREAT, exists
    r.ev(E.EV_CLOSE, fd=3, ret=E.FD_READ, a0=3, a2=1 << 32)
    r.settle(f)
    new = tmp_path / "config.json.new"
    new.write_bytes(b"new")
    os.replace(new, f)  # replaced by someone else: a newborn file under the name
    _, files = r.finish()
    assert [(x["role"], x["hash"]) for x in files] == [("input", hash_of(b"old"))]
