"""The process model on synthetic event streams: no kernel, no privileges."""

from __future__ import annotations

from conftest import O_WRONLY_CREAT_TRUNC, ROOT, Stream

from roar.capture import events as E
from roar.record.model import O_CLOEXEC, O_RDWR


def test_relative_open_resolves_against_cwd_and_is_hashed_at_open():
    s = Stream()
    s.open("data/../data/x.csv", 3)
    assert s.hashed == ["/work/data/x.csv"]  # before any read: the pre-image is safe
    s.read(3)
    st = s.m.paths["/work/data/x.csv"]
    assert st.read and st.first == "read" and st.early_hash.result().hash == \
        "h:/work/data/x.csv"


def test_dup_then_read_through_the_duplicate_only():
    s = Stream()
    s.open("/d/a", 3)
    s.ev(E.EV_DUP, fd=3, ret=7)
    s.close(3)
    s.read(7)
    assert s.m.paths["/d/a"].read
    assert s.m.root.files["/d/a"].read


def test_dup2_onto_open_fd_replaces_it():
    s = Stream()
    s.open("/d/a", 3)
    s.open("/d/b", 4)
    s.ev(E.EV_DUP, fd=3, ret=4)
    s.read(4)
    assert s.m.paths["/d/a"].read and not s.m.paths["/d/b"].read


def test_chdir_and_fchdir_change_resolution():
    s = Stream()
    s.ev(E.EV_CHDIR, path="/data")
    s.open("a.csv", 3)
    s.open("/models", 4, flags=0o200000)  # O_DIRECTORY
    s.ev(E.EV_FCHDIR, fd=4)
    s.open("m.pt", 5)
    assert {"/data/a.csv", "/models/m.pt"} <= set(s.m.paths)


def test_openat_relative_to_dirfd():
    s = Stream()
    s.open("/ds", 3, flags=0o200000)
    s.open("shard-1.bin", 4, dirfd=3)
    assert "/ds/shard-1.bin" in s.m.paths


def test_read_then_overwrite_is_input_v1_and_output_v2():
    s = Stream()
    s.open("/d/w.bin", 3)
    s.read(3)
    s.close(3)
    s.open("/d/w.bin", 3, flags=O_WRONLY_CREAT_TRUNC)
    s.write(3)
    st = s.m.paths["/d/w.bin"]
    assert st.first == "read" and st.read and st.written
    assert st.early_hash is not None and st.modified_ts > st.early_ts


def test_write_then_read_back_is_not_an_input():
    s = Stream()
    s.open("/d/tmp", 3, flags=O_WRONLY_CREAT_TRUNC)
    s.write(3)
    s.close(3)
    s.open("/d/tmp", 3)
    s.read(3)
    assert s.m.paths["/d/tmp"].first == "write"
    assert "/d/tmp" not in s.hashed


def test_rename_moves_the_output_to_its_final_name():
    s = Stream()
    s.open("/m/model.pt.tmp", 3, flags=O_WRONLY_CREAT_TRUNC)
    s.write(3)
    s.ev(E.EV_RENAME, fd=-100, a0=(-100) & (2**64 - 1), path="/m/model.pt.tmp",
         path2="/m/model.pt")
    s.write(3)  # still writing through the fd opened under the old name
    assert s.m.paths["/m/model.pt"].written and not s.m.paths["/m/model.pt"].deleted
    assert s.m.paths["/m/model.pt.tmp"].deleted
    assert s.m.root.fds[3].file.path == "/m/model.pt"


def test_directory_rename_moves_everything_below():
    s = Stream()
    s.open("/c/tmp-1/weights.bin", 3, flags=O_WRONLY_CREAT_TRUNC)
    s.write(3)
    s.ev(E.EV_RENAME, fd=-100, a0=(-100) & (2**64 - 1), path="/c/tmp-1", path2="/c/step-1")
    assert s.m.paths["/c/step-1/weights.bin"].written


def test_unlink_after_write_marks_deleted():
    s = Stream()
    s.open("/t/scratch", 3, flags=O_WRONLY_CREAT_TRUNC)
    s.write(3)
    s.ev(E.EV_UNLINK, fd=-100, path="/t/scratch")
    assert s.m.paths["/t/scratch"].deleted


def test_fork_copies_fds_and_cwd_threads_share_the_process():
    s = Stream()
    s.open("/d/shared", 3)
    s.fork(200)
    s.fork(101, thread=True)
    s.read(3, tgid=200)
    assert s.m.live[200].ppid == ROOT and s.m.live[200].cwd == "/work"
    assert s.m.live[200].files["/d/shared"].read
    assert ROOT in s.m.live and s.m.root.threads == 2
    # the child's table is a copy: closing in the child leaves the parent's
    s.close(3, tgid=200)
    assert 3 in s.m.root.fds


def test_exec_replaces_argv_and_closes_cloexec_fds():
    s = Stream()
    s.open("/d/keep", 3)
    s.open("/d/drop", 4, flags=O_CLOEXEC)
    s.fork(200)
    s.ev(E.EV_EXEC, tgid=200, fd=-100, path="/usr/bin/cat", argv=["cat", "x"])
    s.ev(E.EV_EXEC_RET, tgid=200, ret=0)
    child = s.m.live[200]
    assert child.argv == ["cat", "x"] and child.exe == "/usr/bin/cat"
    assert 3 in child.fds and 4 not in child.fds


def test_failed_exec_keeps_the_old_image():
    s = Stream()
    s.ev(E.EV_EXEC, fd=-100, path="/nope", argv=["nope"])
    s.ev(E.EV_EXEC_RET, ret=-2)
    assert s.m.root.argv == ["python3", "train.py"]


def test_pid_reuse_makes_a_new_process_identity():
    s = Stream()
    s.fork(300)
    s.open("/d/one", 3, tgid=300)
    s.ev(E.EV_EXIT, tgid=300, a0=0, flags=E.EVF_EXITED)
    s.fork(300)
    s.read(3, tgid=300)  # the new process never opened fd 3: nothing to attribute
    procs = [p for p in s.m.procs if p.pid == 300]
    assert len(procs) == 2 and procs[0].key != procs[1].key
    assert procs[0].exit_code == 0 and not procs[1].files


def test_exit_code_and_signal():
    s = Stream()
    s.fork(300)
    s.fork(301)
    s.ev(E.EV_EXIT, tgid=300, a0=3, flags=E.EVF_EXITED)
    s.ev(E.EV_EXIT, tgid=301, a1=9, flags=E.EVF_SIGNALED)
    p300, p301 = (next(p for p in s.m.procs if p.pid == n) for n in (300, 301))
    assert p300.exit_code == 3 and p300.signal is None
    assert p301.signal == 9 and p301.exit_code is None


def test_close_range_and_cloexec_variant():
    s = Stream()
    for fd in (3, 4, 5):
        s.open(f"/d/{fd}", fd)
    s.ev(E.EV_CLOSE_RANGE, fd=4, a0=2**32 - 1, a1=4)  # CLOSE_RANGE_CLOEXEC
    assert s.m.root.fds[4].cloexec and s.m.root.fds[5].cloexec
    s.ev(E.EV_CLOSE_RANGE, fd=4, a0=2**32 - 1, a1=0)
    assert set(s.m.root.fds) == {3}


def test_inherited_fd_of_first_process_is_known():
    s = Stream(fds={0: "/data/stdin.csv"})
    s.read(0)
    assert s.m.paths["/data/stdin.csv"].read


def test_unknown_process_and_unreadable_path_are_reported():
    s = Stream()
    s.read(3, tgid=999)
    s.ev(E.EV_OPEN, fd=3, ret=-100, flags=E.EVF_FAULT, path=None)
    assert "process seen without its start" in s.m.problems
    assert "path could not be read from process memory" in s.m.problems


def test_close_adds_byte_counters_to_the_process_file():
    s = Stream()
    s.open("/d/a", 3, flags=O_RDWR)
    s.read(3)
    s.write(3)
    s.close(3, rbytes=4096, wbytes=10)
    pf = s.m.root.files["/d/a"]
    assert (pf.bytes_read, pf.bytes_written, pf.mode) == (4096, 10, "rw")


def test_mmap_shared_writable_is_a_write_and_read_mapping_an_input():
    s = Stream()
    s.open("/d/arr.npy", 3, flags=O_RDWR)
    s.ev(E.EV_MMAP, fd=3, a0=4)
    s.ev(E.EV_MMAP, fd=3, a0=8)
    st = s.m.paths["/d/arr.npy"]
    assert st.read and st.written and s.m.root.files["/d/arr.npy"].mapped


def test_connect_endpoints_decoded():
    import socket
    import struct

    s = Stream()
    raw = struct.pack("<H", socket.AF_INET) + struct.pack(">H", 443) + bytes([10, 0, 0, 7])
    s.ev(E.EV_CONNECT, fd=5).raw = raw
    e = E.Event(s.ts + 1, 1, ROOT, ROOT, E.EV_CONNECT, 0, 5, 0, 0, 0, 0, raw=raw)
    s.m.feed(e)
    assert {"family": "inet", "address": "10.0.0.7", "port": 443,
            "process": s.m.root.key} in s.m.connects


def test_read_reported_by_the_close_summary():
    """For fds below the flush limit the kernel reports reads in the close
    (or exit flush) summary, with the access bits, not as events of their own."""
    s = Stream()
    s.open("/d/a", 3)
    s.ev(E.EV_CLOSE, fd=3, ret=1, a0=2048, a2=(1 << 32))
    st = s.m.paths["/d/a"]
    assert st.read and st.early_hash is not None
    pf = s.m.root.files["/d/a"]
    assert pf.read and pf.bytes_read == 2048 and pf.read_calls == 1
    assert 3 not in s.m.root.fds
    s.open("/d/b", 4)
    s.ev(E.EV_CLOSE, fd=4)  # opened, never read: not an input
    assert not s.m.paths["/d/b"].read


def test_rmdir_marks_only_what_was_below_and_renames_keep_their_trees():
    """Renames and rmdir of plain files touch nothing else (the model does not scan
    every path for them); a directory's own rename or removal still reaches below."""
    from roar.record.model import AT_REMOVEDIR

    s = Stream()
    for name in ("/w/keep/a", "/w/gone/b", "/w/gone/sub/c", "/w/gonex"):
        s.open(name, 3, flags=O_WRONLY_CREAT_TRUNC)
        s.write(3)
        s.close(3)
    s.ev(E.EV_UNLINK, fd=-100, a0=AT_REMOVEDIR, path="/w/gone")
    assert s.m.paths["/w/gone/b"].deleted and s.m.paths["/w/gone/sub/c"].deleted
    assert not s.m.paths["/w/gonex"].deleted and not s.m.paths["/w/keep/a"].deleted
    s.ev(E.EV_RENAME, fd=-100, a0=(-100) & (2**64 - 1), path="/w/keep", path2="/w/kept")
    assert s.m.paths["/w/kept/a"].written and s.m.paths["/w/keep/a"].deleted
    s.ev(E.EV_RENAME, fd=-100, a0=(-100) & (2**64 - 1), path="/w/gonex", path2="/w/gone2")
    assert s.m.paths["/w/gone2"].written and not s.m.paths["/w/kept/a"].deleted
