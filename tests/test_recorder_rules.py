"""Rules of the recorder (roar/record/recorder.py) checked on the records it
stores: synthetic event streams over real files, a real store and the real
hasher; no probes. Versions (v1 in, v2 out), renames over an input, O_TMPFILE
outputs, the exit code and status of a run, and what makes a run incomplete."""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import O_WRONLY_CREAT_TRUNC, ROOT, hash_of

from roar.capture import events as E
from roar.record.ids import new_run_id
from roar.record.model import AT_EMPTY_PATH, O_DIRECTORY, O_RDWR, O_TMPFILE
from roar.record.recorder import RunRecorder
from roar.record.store import Store

AT_FDCWD_U64 = (-100) & (2**64 - 1)


class Run:
    """A recorder over a real store; events get monotonic timestamps taken when
    they are fed, so they order correctly against the files' real times."""

    def __init__(self, store: Store, cwd, root_fds=None):
        self.store = store
        self.run = {"id": new_run_id(), "cwd": str(cwd), "command": ["train"], "git": None,
                    "status": "running"}
        store.put_run(self.run)
        self.rec = RunRecorder(store, self.run, ROOT, root_fds or {})

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

    def finish(self, status=0, interrupted=False, lost=0) -> tuple[dict, list[dict]]:
        if status is not None and ROOT in self.rec.model.live:  # it exited in its cgroup
            self.ev(E.EV_EXIT, a0=status >> 8, flags=E.EVF_EXITED)
        done = self.rec.finish(status, interrupted, lost)
        return self.store.get_run(done["id"]), self.store.run_files(done["id"])


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "home") as st:
        yield st


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


# -- exit codes and status ------------------------------------------------------------


@pytest.mark.parametrize("status,code,sig,state", [
    (0, 0, None, "finished"),
    (3 << 8, 3, None, "finished"),
    (signal.SIGKILL, 128 + 9, 9, "interrupted"),
    (signal.SIGTERM, 128 + 15, 15, "interrupted"),
    (signal.SIGSEGV, 128 + 11, 11, "finished"),  # a crash, not somebody stopping it
])
def test_exit_status_from_waitpid(store, tmp_path, status, code, sig, state):
    doc, _ = Run(store, tmp_path).finish(status)
    assert (doc["exit_code"], doc.get("signal"), doc["status"]) == (code, sig, state)
    assert doc["complete"] is (state == "finished")


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
