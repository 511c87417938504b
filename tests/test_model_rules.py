"""One test per rule of the process model (roar/record/model.py), on synthetic
event streams: fd tables (inheritance, dup flags, close-on-exec, close_range),
working directories through renames, file versions, renames over a target,
O_TMPFILE + linkat, truncation, exits and reaps, fd aliases, endpoints.
Each test fails when its rule is broken; tests/test_model.py has the first set."""

from __future__ import annotations

import os
import socket
import struct

import pytest
from conftest import O_WRONLY_CREAT_TRUNC, ROOT, Stream

from roar.capture import events as E
from roar.record.model import (
    AT_EMPTY_PATH,
    CLONE_FILES,
    CLOSE_RANGE_CLOEXEC,
    FD_MAP_READ,
    FD_MAP_WRITE,
    O_CLOEXEC,
    O_CREAT,
    O_DIRECTORY,
    O_PATH,
    O_RDWR,
    O_TMPFILE,
    RunModel,
    decode_sockaddr,
)

AT_FDCWD_U64 = (-100) & (2**64 - 1)  # a dirfd as the kernel hands it over in a0


def rename(s: Stream, old: str, new: str, tgid: int = ROOT):
    return s.ev(E.EV_RENAME, tgid=tgid, fd=-100, a0=AT_FDCWD_U64, path=old, path2=new)


def exec_(s: Stream, tgid: int, exe: str = "/bin/true", ret: int = 0):
    s.ev(E.EV_EXEC, tgid=tgid, fd=-100, path=exe, argv=[exe])
    s.ev(E.EV_EXEC_RET, tgid=tgid, ret=ret)


# -- fd tables ---------------------------------------------------------------------------


def test_fork_inherits_each_fds_close_on_exec_flag():
    s = Stream()
    s.open("/d/keep", 3)
    s.open("/d/drop", 4, flags=O_CLOEXEC)
    s.fork(200)
    child = s.m.live[200]
    assert (child.fds[3].cloexec, child.fds[4].cloexec) == (False, True)
    exec_(s, 200)
    assert set(child.fds) == {3}
    assert set(s.m.root.fds) == {3, 4}  # the parent did not exec


def test_child_fd_table_is_a_copy_unless_clone_files():
    s = Stream()
    s.open("/d/a", 3)
    s.fork(200)                           # a copy: the child's close is its own
    s.fork(300, clone_flags=CLONE_FILES)  # one table shared with the parent
    s.close(3, tgid=200)
    assert 3 in s.m.root.fds and 3 in s.m.live[300].fds
    s.close(3, tgid=300)
    assert 3 not in s.m.root.fds
    s.open("/d/b", 5, tgid=300)
    assert s.m.root.fds[5].file.path == "/d/b"


def test_dup_shares_the_open_file_and_takes_its_own_cloexec_flag():
    s = Stream()
    s.open("/d/a", 3, flags=O_CLOEXEC)
    s.ev(E.EV_DUP, fd=3, ret=7, a0=0)  # dup2: the new fd never has FD_CLOEXEC
    s.ev(E.EV_DUP, fd=3, ret=8, a0=1)  # dup3(O_CLOEXEC) / F_DUPFD_CLOEXEC
    fds = s.m.root.fds
    assert fds[7].file is fds[3].file and fds[8].file is fds[3].file
    assert (fds[3].cloexec, fds[7].cloexec, fds[8].cloexec) == (True, False, True)
    exec_(s, ROOT)
    assert set(s.m.root.fds) == {7}


def test_dup_onto_itself_changes_nothing():
    s = Stream()
    s.open("/d/a", 3, flags=O_CLOEXEC)
    s.ev(E.EV_DUP, fd=3, ret=3, a0=0)  # dup2(3, 3) returns 3 and leaves its flags
    assert s.m.root.fds[3].cloexec is True


def test_dup_of_an_unknown_fd_forgets_what_the_target_named():
    s = Stream()
    s.open("/d/a", 4)
    s.ev(E.EV_DUP, fd=9, ret=4)  # fd 9 names nothing the run opened (a pipe, a socket)
    assert 4 not in s.m.root.fds
    s.read(4)
    assert not s.m.paths["/d/a"].read


def test_fcntl_setfd_sets_and_clears_close_on_exec():
    s = Stream()
    s.open("/d/a", 3)
    s.open("/d/b", 4, flags=O_CLOEXEC)
    s.ev(E.EV_FDFLAGS, fd=3, a0=1)
    s.ev(E.EV_FDFLAGS, fd=4, a0=0)
    assert (s.m.root.fds[3].cloexec, s.m.root.fds[4].cloexec) == (True, False)
    exec_(s, ROOT)
    assert set(s.m.root.fds) == {4}


def test_close_range_bounds_are_inclusive_and_cloexec_only_marks():
    s = Stream()
    for fd in (3, 4, 5, 6):
        s.open(f"/d/{fd}", fd)
    s.ev(E.EV_CLOSE_RANGE, fd=4, a0=5, a1=CLOSE_RANGE_CLOEXEC)
    assert [fd for fd, e in sorted(s.m.root.fds.items()) if e.cloexec] == [4, 5]
    s.ev(E.EV_CLOSE_RANGE, fd=4, a0=5, a1=0)
    assert set(s.m.root.fds) == {3, 6}


def test_failed_exec_keeps_fds_marked_close_on_exec():
    s = Stream()
    s.open("/d/a", 3, flags=O_CLOEXEC)
    exec_(s, ROOT, "/nope", ret=-2)
    assert 3 in s.m.root.fds and s.m.root.execs == 0
    exec_(s, ROOT, "/bin/cat")
    assert 3 not in s.m.root.fds and s.m.root.execs == 1


def test_thread_creation_shares_the_process_and_makes_no_new_one():
    s = Stream()
    s.fork(101, thread=True)
    s.open("/d/a", 3, tgid=ROOT)
    assert [p.pid for p in s.m.procs] == [ROOT] and s.m.root.threads == 2


# -- working directories -------------------------------------------------------------


def test_cwd_follows_a_rename_of_its_directory():
    s = Stream()
    s.ev(E.EV_CHDIR, path="/w/run")
    s.fork(200)
    s.ev(E.EV_CHDIR, tgid=200, path="/w/run/sub")
    rename(s, "/w/run", "/w/done")
    assert s.m.root.cwd == "/w/done" and s.m.live[200].cwd == "/w/done/sub"
    s.open("x.csv", 3)
    assert "/w/done/x.csv" in s.m.paths and "/w/run/x.csv" not in s.m.paths


def test_cwd_beside_a_renamed_directory_is_left_alone():
    s = Stream()
    s.ev(E.EV_CHDIR, path="/w/run2")
    rename(s, "/w/run", "/w/done")  # /w/run2 is not below /w/run
    assert s.m.root.cwd == "/w/run2"


def test_relative_chdir_and_unknown_fchdir():
    s = Stream(cwd="/w")
    s.ev(E.EV_CHDIR, path="data/../models")
    assert s.m.root.cwd == "/w/models"
    s.ev(E.EV_FCHDIR, fd=42)  # an fd the model never saw open
    assert s.m.root.cwd is None and "fchdir to an unknown directory" in s.m.problems
    s.open("rel", 3)
    assert "relative path with unknown base directory" in s.m.problems


def test_open_relative_to_an_unknown_dirfd_is_a_problem_not_a_guess():
    s = Stream()
    s.open("x", 3, dirfd=17)
    assert not s.m.paths and s.m.problems == {"relative path with unknown base directory": 1}


def test_truncated_path_is_reported():
    s = Stream()
    s.ev(E.EV_OPEN, fd=3, ret=-100, flags=E.EVF_TRUNCATED, path="/d/" + "x" * 50)
    assert "path longer than PATH_MAX" in s.m.problems


# -- versions ------------------------------------------------------------------------


def test_read_then_rewrite_keeps_the_first_read_and_when_it_changed():
    s = Stream()
    s.open("/d/w.bin", 3)
    s.read(3)
    s.close(3)
    read_ts = s.ts
    s.open("/d/w.bin", 4, flags=O_WRONLY_CREAT_TRUNC)
    st = s.m.paths["/d/w.bin"]
    assert st.first == "read" and st.read and st.written
    assert st.modified_ts is not None and st.modified_ts > read_ts
    assert st.create_ts is None  # it existed before: the run did not make it
    assert s.hashed == ["/d/w.bin"]  # v1 hashed at the read-open, before the rewrite


def test_open_for_writing_without_truncation_is_no_access_yet():
    """sort -o f f: f is opened O_WRONLY|O_CREAT (kept as stdout), then read, then
    truncated through stdout and written: the read came first, v1 is an input."""
    s = Stream()
    s.open("/d/words", 3, flags=0o1 | O_CREAT)
    assert s.m.paths["/d/words"].first is None and s.hashed == []
    s.ev(E.EV_DUP, fd=3, ret=1)
    s.open("/d/words", 4)
    s.read(4)
    s.ev(E.EV_FTRUNCATE, fd=1, a0=0)
    s.ev(E.EV_WRITE, fd=1, a0=2)
    st = s.m.paths["/d/words"]
    assert st.first == "read" and st.read and st.written and s.hashed == ["/d/words"]


def test_opened_for_writing_then_written_then_read_back_is_not_an_input():
    s = Stream()
    s.open("/d/log", 3, flags=0o1 | O_CREAT | 0o2000)  # O_APPEND
    s.write(3)
    s.open("/d/log", 4)
    s.read(4)
    assert s.m.paths["/d/log"].first == "write" and s.hashed == []


def test_o_creat_on_a_new_path_notes_its_birth_and_not_on_a_read_path():
    s = Stream()
    s.open("/d/new", 3, flags=O_CREAT | O_RDWR)
    assert s.m.paths["/d/new"].create_ts is not None
    s.open("/d/old", 4)
    s.open("/d/old", 5, flags=O_CREAT | O_RDWR)
    assert s.m.paths["/d/old"].create_ts is None


def test_o_path_and_directory_opens_are_no_file_access():
    s = Stream()
    s.open("/d", 3, flags=O_DIRECTORY)
    s.open("/d/f", 4, flags=O_PATH)
    assert s.m.paths == {} and s.hashed == []
    assert s.m.root.fds[3].file.path == "/d"


def test_read_only_mapping_is_read_not_written():
    s = Stream()
    s.open("/d/w.safetensors", 3)
    s.ev(E.EV_MMAP, fd=3, a0=FD_MAP_READ)
    st = s.m.paths["/d/w.safetensors"]
    assert st.read and not st.written and st.modified_ts is None


def test_unlink_then_create_is_live_again():
    s = Stream()
    s.open("/d/f", 3, flags=O_WRONLY_CREAT_TRUNC)
    s.ev(E.EV_UNLINK, fd=-100, path="/d/f")
    assert s.m.paths["/d/f"].deleted
    s.open("/d/f", 4, flags=O_CREAT | O_RDWR)
    assert not s.m.paths["/d/f"].deleted


def test_close_summary_keeps_byte_counts_and_says_when_they_are_inexact():
    s = Stream()
    s.open("/d/a", 3)
    s.ev(E.EV_CLOSE, fd=3, ret=1, a0=10, a1=0, a2=(2 << 32) | 0, flags=E.EVF_BYTES_UNKNOWN)
    pf = s.m.root.files["/d/a"]
    assert (pf.bytes_read, pf.read_calls, pf.write_calls, pf.bytes_exact) == (10, 2, 0, False)


# -- renames, links, truncation -----------------------------------------------------------


def test_rename_over_an_input_replaces_it_and_keeps_the_input():
    s = Stream()
    s.open("/d/cfg", 3)
    s.read(3)
    s.close(3)
    s.open("/d/cfg.tmp", 4, flags=O_WRONLY_CREAT_TRUNC)
    s.write(4)
    rename(s, "/d/cfg.tmp", "/d/cfg")
    cfg, tmp = s.m.paths["/d/cfg"], s.m.paths["/d/cfg.tmp"]
    assert cfg.first == "read" and cfg.read and cfg.written and not cfg.deleted
    assert cfg.modified_ts is not None and cfg.renamed_from == ["/d/cfg.tmp"]
    assert tmp.deleted and not tmp.written


def test_rename_over_an_output_marks_the_replaced_file_changed():
    s = Stream()
    s.open("/d/old-out", 3, flags=O_WRONLY_CREAT_TRUNC)
    s.write(3)
    s.open("/d/seen", 4)  # read, never written: the rename replaces it
    s.read(4)
    rename(s, "/d/old-out", "/d/seen")
    seen = s.m.paths["/d/seen"]
    assert seen.written and not seen.deleted and seen.modified_ts is not None


def test_rename_of_a_file_read_but_never_written_moves_no_write():
    s = Stream()
    s.open("/d/in", 3)
    s.read(3)
    rename(s, "/d/in", "/d/moved")
    assert not s.m.paths["/d/moved"].written and s.m.paths["/d/moved"].renamed_from == []
    assert s.m.paths["/d/in"].deleted and s.m.paths["/d/in"].modified_ts is not None


def test_rename_and_link_dirfds_are_ints_whatever_their_upper_half():
    """coreutils' mv and ln hand renameat2/linkat AT_FDCWD zero-extended
    (0xffffff9c in a0): the kernel reads an int, so does the model: the new
    name is relative to the cwd, not to an unknown fd."""
    s = Stream(cwd="/w")
    s.open("a.tmp", 3, O_WRONLY_CREAT_TRUNC)
    s.write(3)
    s.close(3)
    s.ev(E.EV_RENAME, fd=-100, a0=0xFFFFFF9C, a1=1, path="a.tmp", path2="a.out")
    s.ev(E.EV_LINK, fd=-100, a0=0xFFFFFF9C, path="a.out", path2="b.out")
    assert s.m.problems == {}
    assert s.m.paths["/w/a.out"].written and s.m.paths["/w/b.out"].written
    assert "/w/a.tmp" not in s.m.paths or not s.m.paths["/w/a.tmp"].written


@pytest.mark.parametrize("opened_first", [False, True])
def test_a_file_from_before_the_run_moved_then_read_is_an_input(opened_first):
    """mv raw.csv moved.csv; cat moved.csv: the content read was there before the
    run (the run only renamed it), so moved.csv is an input, hashed at its read,
    whether or not the run had opened raw.csv before moving it."""
    s = Stream()
    if opened_first:
        s.open("/d/raw.csv", 3)
        s.close(3)
    rename(s, "/d/raw.csv", "/d/moved.csv")
    s.open("/d/moved.csv", 4)
    s.read(4)
    moved = s.m.paths["/d/moved.csv"]
    assert moved.first == "read" and not moved.written and moved.modified_ts is None
    assert moved.early_hash is not None  # hashed at the read-open, before any change


def test_rename_with_an_unknown_side_changes_nothing():
    s = Stream()
    s.open("/d/a", 3, flags=O_WRONLY_CREAT_TRUNC)
    s.write(3)
    s.ev(E.EV_RENAME, fd=-100, a0=AT_FDCWD_U64, path="/d/a", path2=None, flags=E.EVF_FAULT)
    assert not s.m.paths["/d/a"].deleted


def test_o_tmpfile_is_nothing_until_linked_then_an_output_under_its_name():
    s = Stream()
    s.open("/d", 3, flags=O_TMPFILE | O_DIRECTORY | O_RDWR)
    s.write(3)
    assert s.m.paths == {}  # an unnamed file: no path, no output
    s.ev(E.EV_LINK, fd=3, a0=AT_FDCWD_U64, a1=AT_EMPTY_PATH, path="", path2="/d/final")
    final = s.m.paths["/d/final"]
    assert final.written and not final.deleted and s.m.root.files["/d/final"].written
    assert s.m.root.fds[3].file.path == "/d/final"  # later writes go to the name
    s.close(3, wbytes=5)
    assert s.m.root.files["/d/final"].bytes_written == 5


def test_o_tmpfile_linked_through_proc_self_fd():
    s = Stream()
    s.open("/d", 4, flags=O_TMPFILE | O_DIRECTORY | O_RDWR)
    s.write(4)
    s.ev(E.EV_LINK, fd=-100, a0=AT_FDCWD_U64, a1=0x400, path="/proc/self/fd/4",
         path2="/d/linked")  # AT_SYMLINK_FOLLOW
    assert s.m.paths["/d/linked"].written and "/proc/self/fd/4" not in s.m.paths


def test_o_tmpfile_never_linked_leaves_no_trace():
    s = Stream()
    s.open("/d", 3, flags=O_TMPFILE | O_DIRECTORY | O_RDWR)
    s.write(3)
    s.close(3)
    assert s.m.paths == {} and s.m.root.files == {}


def test_hard_link_of_a_written_file_is_written_too():
    s = Stream()
    s.open("/d/a", 3, flags=O_WRONLY_CREAT_TRUNC)
    s.write(3)
    s.ev(E.EV_LINK, fd=-100, a0=AT_FDCWD_U64, path="/d/a", path2="/d/b")
    s.open("/d/in", 4)
    s.read(4)
    s.ev(E.EV_LINK, fd=-100, a0=AT_FDCWD_U64, path="/d/in", path2="/d/in-link")
    assert s.m.paths["/d/b"].written and not s.m.paths["/d/in-link"].written
    assert not s.m.paths["/d/a"].deleted


def test_truncate_by_path_and_ftruncate_by_fd_are_writes():
    s = Stream()
    s.open("/d/a", 3)
    s.read(3)
    s.ev(E.EV_TRUNCATE, a0=0, path="/d/a")
    s.open("/d/b", 4, flags=O_RDWR)
    s.ev(E.EV_FTRUNCATE, fd=4, a0=0)
    for p in ("/d/a", "/d/b"):
        st = s.m.paths[p]
        assert st.written and st.modified_ts is not None and s.m.root.files[p].written
    assert s.m.paths["/d/a"].first == "read" and s.m.paths["/d/b"].first == "read"


def test_ftruncate_of_an_unknown_fd_is_ignored():
    s = Stream()
    s.ev(E.EV_FTRUNCATE, fd=9, a0=0)
    assert s.m.paths == {}


# -- exits and reaps -----------------------------------------------------------------


@pytest.mark.parametrize("status,code,sig", [
    (3 << 8, 3, None),      # exit(3)
    (0, 0, None),
    (9, None, 9),           # killed by SIGKILL
    (15 | 0x80, None, 15),  # SIGTERM with a core dump
])
def test_reap_status_is_the_authoritative_exit(status, code, sig):
    s = Stream()
    s.fork(300)
    s.ev(E.EV_EXIT, tgid=300, a0=99, a1=0, flags=E.EVF_EXITED)  # what exit_group said
    s.ev(E.EV_REAP, ret=300, a0=status)
    p = next(p for p in s.m.procs if p.pid == 300)
    assert (p.exit_code, p.signal) == (code, sig)


def test_reap_applies_to_the_latest_process_with_that_pid():
    s = Stream()
    s.fork(300)
    s.ev(E.EV_EXIT, tgid=300, a0=1, flags=E.EVF_EXITED)
    s.fork(300)
    s.ev(E.EV_EXIT, tgid=300, a0=2, flags=E.EVF_EXITED)
    s.ev(E.EV_REAP, ret=300, a0=5 << 8)
    first, second = (p for p in s.m.procs if p.pid == 300)
    assert (first.exit_code, second.exit_code) == (1, 5)


def test_exit_with_both_flags_is_an_exit_code_and_drops_the_fd_table():
    s = Stream()
    s.fork(300)
    s.open("/d/a", 3, tgid=300)
    p = s.m.live[300]
    s.ev(E.EV_EXIT, tgid=300, a0=4, a1=6, flags=E.EVF_EXITED | E.EVF_SIGNALED)
    assert (p.exit_code, p.signal) == (4, None) and p.fds == {} and 300 not in s.m.live
    assert p.end_ts == s.ts


def test_pid_reused_without_an_exit_is_a_problem():
    s = Stream()
    s.fork(300)
    s.fork(300)
    assert s.m.problems == {"process exit not seen before its pid was reused": 1}
    assert [p.end_ts is not None for p in s.m.procs if p.pid == 300] == [True, False]


def test_exec_with_a_truncated_argv_is_flagged_on_its_process():
    s = Stream()
    s.ev(E.EV_EXEC, fd=-100, path="/bin/x", argv=["x", "a"], flags=E.EVF_TRUNCATED)
    s.ev(E.EV_EXEC_RET, ret=0)
    assert s.m.root.argv_incomplete and s.m.root.exe == "/bin/x" and not s.m.problems


# -- fd aliases --------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["/dev/stdin", "/dev/fd/0", "/proc/self/fd/0",
                                   "/proc/thread-self/fd/0", f"/proc/{ROOT}/fd/0"])
def test_fd_alias_names_the_file_behind_the_fd(alias):
    s = Stream(fds={0: "/data/in.csv"})
    s.open(alias, 3)
    s.read(3)
    assert s.m.paths["/data/in.csv"].read and alias not in s.m.paths
    assert s.hashed == ["/data/in.csv"]


def test_fd_alias_of_another_process_and_of_stdout():
    s = Stream(fds={1: "/logs/out.txt"})
    s.fork(200)
    s.open("/d/x", 5, tgid=200)
    s.open("/proc/200/fd/5", 3)
    s.open("/dev/stdout", 4, flags=O_WRONLY_CREAT_TRUNC)
    assert "/d/x" in s.m.paths and "/proc/200/fd/5" not in s.m.paths
    assert s.m.paths["/logs/out.txt"].written


def test_fd_alias_of_an_unknown_fd_stays_what_it_says():
    s = Stream()
    s.open("/dev/fd/9", 3)
    s.open("/proc/4242/fd/1", 4)  # a process outside the run
    assert {"/dev/fd/9", "/proc/4242/fd/1"} <= set(s.m.paths)


# -- endpoints ---------------------------------------------------------------------------


def _in6(addr: str, port: int) -> bytes:
    return (struct.pack("<H", socket.AF_INET6) + struct.pack(">H", port) + b"\0" * 4
            + socket.inet_pton(socket.AF_INET6, addr) + b"\0" * 4)


def test_ipv6_endpoint_is_decoded():
    assert decode_sockaddr(_in6("2001:db8::7", 8443)) == {
        "family": "inet6", "address": "2001:db8::7", "port": 8443}
    assert decode_sockaddr(_in6("::1", 22))["address"] == "::1"
    assert decode_sockaddr(_in6("::1", 22)[:20]) is None  # too short for the address


def test_ipv4_and_unix_endpoints_and_short_records():
    raw4 = struct.pack("<H", socket.AF_INET) + struct.pack(">H", 5432) + bytes([127, 0, 0, 1])
    assert decode_sockaddr(raw4) == {"family": "inet", "address": "127.0.0.1", "port": 5432}
    assert decode_sockaddr(raw4[:7]) is None and decode_sockaddr(b"\x02") is None
    unix = struct.pack("<H", socket.AF_UNIX)
    assert decode_sockaddr(unix + b"/run/x.sock\0junk")["address"] == "/run/x.sock"
    assert decode_sockaddr(unix + b"\0abstract\0")["address"] == "@abstract"
    assert decode_sockaddr(struct.pack("<H", 99) + b"\0" * 20) is None


def test_connect_to_a_relative_unix_socket_resolves_against_cwd():
    s = Stream(cwd="/w")
    ev = E.Event(s.ts + 1, 1, ROOT, ROOT, E.EV_CONNECT, 0, 5, 0, 0, 0, 0,
                 raw=struct.pack("<H", socket.AF_UNIX) + b"sock/db\0")
    s.m.feed(ev)
    s.m.feed(E.Event(s.ts + 2, 1, ROOT, ROOT, E.EV_CONNECT, 0, 6, 0, 0, 0, 0, raw=_in6("::1", 1)))
    assert s.m.connects == [
        {"family": "unix", "address": "/w/sock/db", "port": None, "process": s.m.root.key},
        {"family": "inet6", "address": "::1", "port": 1, "process": s.m.root.key}]


# -- paths -------------------------------------------------------------------------------


def test_dotdot_steps_out_of_where_a_symlink_really_points(tmp_path):
    real = tmp_path / "real" / "deep"
    real.mkdir(parents=True)
    os.symlink(real, tmp_path / "link")
    s = Stream(cwd=str(tmp_path))
    s.open("link/../x", 3)
    s.open(str(tmp_path / "a/./b//c"), 4)
    s.open(str(tmp_path / "a/..b"), 5)  # a name starting with two dots: no step up
    assert {str(tmp_path / "real" / "x"), str(tmp_path / "a/b/c"),
            str(tmp_path / "a/..b")} <= set(s.m.paths)


# -- rules the mutation run found unpinned (docs/testing.md, "Mutation testing") ----------


def _typed(m) -> None:
    """The model's flags are bools and its times ints or None (what the recorder's
    record cache and the compiled model's differential checks compare)."""
    for st in m.paths.values():
        for flag in ("read", "written", "deleted"):
            assert type(getattr(st, flag)) is bool, (st.path, flag, getattr(st, flag))
        for t in (st.modified_ts, st.create_ts, st.early_ts):
            assert t is None or type(t) is int, st
    for p in m.procs:
        for pf in p.files.values():
            for flag in ("read", "written", "mapped", "bytes_exact"):
                assert type(getattr(pf, flag)) is bool, (pf.path, flag)


def test_a_problem_counts_every_time_it_happens():
    s = Stream()
    s.open("x", 3, dirfd=9)
    s.open("y", 4, dirfd=9)
    s.ev(E.EV_FCHDIR, fd=12)
    assert s.m.problems == {"relative path with unknown base directory": 2,
                            "fchdir to an unknown directory": 1}


def test_dev_stderr_names_fd_2():
    s = Stream(fds={2: "/logs/err.txt"})
    s.open("/dev/stderr", 3, flags=O_WRONLY_CREAT_TRUNC)
    assert s.m.paths["/logs/err.txt"].written and "/dev/stderr" not in s.m.paths


def test_a_write_only_mapping_is_a_write_not_a_read():
    s = Stream()
    s.open("/d/out.bin", 3, flags=O_RDWR)
    ev = s.ev(E.EV_MMAP, fd=3, a0=FD_MAP_WRITE)
    st, pf = s.m.paths["/d/out.bin"], s.m.root.files["/d/out.bin"]
    assert st.written and not st.read and st.modified_ts == ev.ts
    assert pf.written is True and pf.mapped and not pf.read and pf.mode == "wm"
    _typed(s.m)


def test_a_read_mapping_as_the_first_access_makes_an_input_hashed_then():
    s = Stream()
    s.open("/d/w.safetensors", 3, flags=0o1)  # O_WRONLY, not truncated: no access yet
    assert s.m.paths["/d/w.safetensors"].first is None and s.hashed == []
    ev = s.ev(E.EV_MMAP, fd=3, a0=FD_MAP_READ | FD_MAP_WRITE)
    st, pf = s.m.paths["/d/w.safetensors"], s.m.root.files["/d/w.safetensors"]
    assert st.first == "read" and st.read and st.written
    assert s.hashed == ["/d/w.safetensors"] and st.early_ts == ev.ts
    assert pf.read is True and pf.written is True and pf.mode == "rwm"
    assert st.modified_ts == ev.ts
    _typed(s.m)


def test_a_directory_renamed_over_one_replaces_everything_the_run_knew_below_it():
    # rename(2) replaces only an empty directory: what the run knew below the target
    # was removed by something else (or its unlink was lost); it is gone now
    s = Stream()
    s.open("/d/out/old-in", 3)
    s.read(3)
    early = s.open("/d/out/old-out", 4, flags=O_WRONLY_CREAT_TRUNC)
    s.open("/d/tmp/new", 5, flags=O_WRONLY_CREAT_TRUNC)
    s.write(5)
    s.m.touched.clear()
    ev = rename(s, "/d/tmp", "/d/out")
    old_in, old_out = s.m.paths["/d/out/old-in"], s.m.paths["/d/out/old-out"]
    assert old_in.deleted and old_in.modified_ts == ev.ts
    assert old_out.deleted and old_out.modified_ts == early.ts  # changed first back then
    assert {"/d/out/old-in", "/d/out/old-out", "/d/out/new", "/d/tmp/new"} <= s.m.touched
    new = s.m.paths["/d/out/new"]
    assert new.written and not new.deleted and new.renamed_from == ["/d/tmp/new"]
    assert new.modified_ts == ev.ts
    assert s.m.paths["/d/out"].modified_ts == ev.ts and s.m.paths["/d/out"].deleted is False
    _typed(s.m)


@pytest.mark.parametrize("who", ["thread-self", str(ROOT)])
def test_o_tmpfile_linked_through_proc_thread_self_or_own_pid(who):
    s = Stream()
    s.open("/d", 4, flags=O_TMPFILE | O_DIRECTORY | O_RDWR)
    s.write(4)
    s.ev(E.EV_LINK, fd=-100, a0=AT_FDCWD_U64, a1=0x400, path=f"/proc/{who}/fd/4",
         path2="/d/linked")
    assert s.m.paths["/d/linked"].written and s.m.root.fds[4].file.path == "/d/linked"
    assert f"/proc/{who}/fd/4" not in s.m.paths


def test_o_tmpfile_linked_relative_to_cwd_or_to_a_directory_fd():
    s = Stream(cwd="/w")
    s.open("/d", 3, flags=O_TMPFILE | O_DIRECTORY | O_RDWR)
    s.open("/out", 5, flags=O_DIRECTORY)
    s.open("/d", 6, flags=O_TMPFILE | O_DIRECTORY | O_RDWR)
    a = s.ev(E.EV_LINK, fd=3, a0=AT_FDCWD_U64, a1=AT_EMPTY_PATH, path="", path2="a.bin")
    b = s.ev(E.EV_LINK, fd=6, a0=5, a1=AT_EMPTY_PATH, path="", path2="b.bin")
    for path, ev in (("/w/a.bin", a), ("/out/b.bin", b)):
        st = s.m.paths[path]
        assert st.written and st.deleted is False and st.modified_ts == ev.ts, path
    assert s.m.root.fds[6].file.path == "/out/b.bin" and not s.m.problems
    _typed(s.m)


def test_hard_link_between_relative_names_by_cwd_and_by_directory_fd():
    s = Stream(cwd="/w")
    s.open("out.bin", 3, flags=O_WRONLY_CREAT_TRUNC)
    s.write(3)
    s.open("/w", 4, flags=O_DIRECTORY)
    s.open("/pub", 5, flags=O_DIRECTORY)
    gone = s.ev(E.EV_UNLINK, fd=-100, path="/w/copy.bin")  # deleted before: live again
    s.ev(E.EV_LINK, fd=-100, a0=AT_FDCWD_U64, path="out.bin", path2="copy.bin")
    b = s.ev(E.EV_LINK, fd=4, a0=5, path="out.bin", path2="out.bin")
    for path, ts in (("/w/copy.bin", gone.ts), ("/pub/out.bin", b.ts)):
        st = s.m.paths[path]  # first changed by the unlink, and by the link
        assert st.written and st.deleted is False and st.modified_ts == ts, path
    assert not s.m.problems
    _typed(s.m)


def test_hard_link_whose_source_cannot_be_resolved_names_nothing():
    s = Stream()
    s.ev(E.EV_LINK, fd=9, a0=AT_FDCWD_U64, path="gone", path2="/d/new")
    assert s.m.paths == {}
    assert s.m.problems == {"relative path with unknown base directory": 1}


def test_unlink_relative_to_cwd_or_a_directory_fd_is_a_change_at_that_time():
    s = Stream(cwd="/w")
    s.open("a", 3)
    s.read(3)
    s.open("/d", 4, flags=O_DIRECTORY)
    s.open("/d/b", 5)
    s.read(5)
    ua = s.ev(E.EV_UNLINK, fd=-100, path="a")
    ub = s.ev(E.EV_UNLINK, fd=4, path="b")
    for path, ev in (("/w/a", ua), ("/d/b", ub)):
        st = s.m.paths[path]
        assert st.deleted is True and st.modified_ts == ev.ts and st.first == "read"
    _typed(s.m)


def test_rmdir_marks_what_the_run_knew_below_it_gone():
    s = Stream()
    s.open("/d/sub/in", 3)  # read; removed by something outside the run
    s.read(3)
    s.open("/d/subx", 4)    # beside it, a name with the same prefix
    s.read(4)
    s.m.touched.clear()
    s.ev(E.EV_UNLINK, fd=-100, path="/d/sub", a0=0x200)  # AT_REMOVEDIR
    assert s.m.paths["/d/sub/in"].deleted and "/d/sub/in" in s.m.touched
    assert not s.m.paths["/d/subx"].deleted


def test_connect_keeps_absolute_and_abstract_unix_addresses_as_they_are():
    s = Stream(cwd="/w")
    for raw in (b"/run/db.sock\0", b"\0hidden\0", b""):
        s.m.feed(E.Event(s.ts + 1, 1, ROOT, ROOT, E.EV_CONNECT, 0, 5, 0, 0, 0, 0,
                         raw=struct.pack("<H", socket.AF_UNIX) + raw))
    assert [c["address"] for c in s.m.connects] == ["/run/db.sock", "@hidden", ""]


def test_endpoint_decoding_of_full_size_records_high_ports_and_padding():
    raw4 = (struct.pack("<H", socket.AF_INET) + struct.pack(">H", 50000)
            + bytes([10, 1, 2, 3]) + b"\0" * 8)  # sizeof(struct sockaddr_in) == 16
    assert decode_sockaddr(raw4) == {"family": "inet", "address": "10.1.2.3", "port": 50000}
    raw6 = _in6("fe80::1", 65535)
    assert decode_sockaddr(raw6)["port"] == 65535
    # the kernel accepts a sockaddr_in6 without its scope id (24 bytes)
    assert decode_sockaddr(raw6[:24]) == {"family": "inet6", "address": "fe80::1",
                                          "port": 65535}
    unix = struct.pack("<H", socket.AF_UNIX)
    # a name ends at its first NUL; what follows in the captured buffer is padding
    assert decode_sockaddr(unix + b"/run/x.sock\0\0junk")["address"] == "/run/x.sock"
    assert decode_sockaddr(unix + b"\0abstract\0\0\0")["address"] == "@abstract"
    assert decode_sockaddr(unix) == {"family": "unix", "address": "", "port": None}


# -- TLS plaintext: HTTP exchanges per process and SSL session ---------------------------


def _tls(s: Stream, type_, tgid, ssl, raw=b"", call=0, body_in=0, body_out=0):
    ev = E.Event(s.ts + 1, 1, tgid, tgid, type_, 0, -1, body_out, ssl, call, body_in,
                 raw=raw)
    s.ts += 10
    s.m.feed(ev)
    return ev


def test_tls_exchanges_become_remote_objects_of_the_process_that_made_them():
    s = Stream()
    s.fork(200)
    req = b"GET /bkt/data.bin HTTP/1.1\r\nHost: h\r\n\r\n"
    resp = b"HTTP/1.1 200 OK\r\nETag: \"e1\"\r\nContent-Length: 300\r\n\r\n"
    _tls(s, E.EV_TLS_WRITE, 200, ssl=7, raw=req, call=len(req))
    _tls(s, E.EV_TLS_READ, 200, ssl=7, raw=resp, call=len(resp) + 100)
    _tls(s, E.EV_TLS_FREE, 200, ssl=7, body_in=200)
    (rec,), telemetry = s.m.remote.objects()
    assert (rec["url"], rec["role"], rec["version"], rec["size"]) == (
        "https://h/bkt/data.bin", "input", "etag:e1", 300)
    assert rec["bytes_read"] == 300 and rec["processes"] == [s.m.live[200].key]
    assert telemetry == [] and not s.m.problems


def test_tls_bytes_after_the_session_is_freed_belong_to_no_exchange():
    s = Stream()
    req = b"PUT /bkt/out.bin HTTP/1.1\r\nHost: h\r\nContent-Length: 40\r\n\r\n"
    _tls(s, E.EV_TLS_WRITE, ROOT, ssl=3, raw=req, call=len(req) + 10, body_out=0)
    _tls(s, E.EV_TLS_FREE, ROOT, ssl=3, body_out=30)
    # the same SSL* reused for a new session: its response pairs with no request
    _tls(s, E.EV_TLS_READ, ROOT, ssl=3, raw=b"HTTP/1.1 200 OK\r\n\r\n", call=19)
    assert s.m.remote.exchanges[0].body_out == 40 and s.m.remote.exchanges[0].status is None
    assert s.m.remote.unparsed == 1 and s.m.remote.objects() == ([], [])


@pytest.mark.parametrize("type_", ["EV_TLS_WRITE", "EV_TLS_READ", "EV_TLS_FREE"])
def test_tls_traffic_of_a_process_never_seen_starting_is_kept_and_said(type_):
    s = Stream()
    _tls(s, getattr(E, type_), 4242, ssl=1, raw=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert 4242 in s.m.live
    assert s.m.problems == {"process seen without its start": 1}


def test_early_hashes_ask_for_the_birth_time_only_for_a_read_open_that_may_create():
    calls = []

    def submit(path, birth=False):
        calls.append((path, birth))
        return None

    m = RunModel(ROOT, "/w", ["x"], {0: "/data/stdin.csv"}, 0, submit)
    s = Stream()
    s.m = m
    s.open("/d/maybe-new", 3, flags=O_CREAT | O_RDWR)  # may be made by the run: birth
    s.open("/d/old", 4)
    rd = s.read(0)  # an inherited fd: the read is the first access
    assert calls == [("/d/maybe-new", True), ("/d/old", False), ("/data/stdin.csv", False)]
    st = m.paths["/data/stdin.csv"]
    assert st.first == "read" and st.read and st.early_ts == rd.ts


def test_writes_and_closes_of_fds_that_name_no_file_are_ignored():
    s = Stream()
    s.write(9)                       # a pipe or socket the run never opened by name
    s.close(9, rbytes=5, wbytes=5)
    s.ev(E.EV_DUP, fd=9, ret=5)      # dup of an unknown fd onto a free one
    s.ev(E.EV_EXIT, tgid=4242, a0=1, flags=E.EVF_EXITED)  # a process never seen
    assert s.m.paths == {} and s.m.root.files == {} and 5 not in s.m.root.fds
    s.open("/d", 3, flags=O_TMPFILE | O_DIRECTORY | O_RDWR)
    s.write(3)
    s.close(3, wbytes=10)            # an unnamed file closed: no record, fd gone
    assert s.m.root.files == {} and 3 not in s.m.root.fds


def test_a_write_to_an_fd_opened_without_truncation_is_the_change():
    s = Stream()
    s.open("/d/log", 3, flags=0o1)  # O_WRONLY, appends later
    w = s.write(3)
    st = s.m.paths["/d/log"]
    assert st.written and st.first == "write" and st.modified_ts == w.ts


def test_close_summaries_of_several_opens_add_up():
    s = Stream()
    for _ in range(2):
        s.open("/d/a", 3, flags=O_RDWR)
        s.ev(E.EV_CLOSE, fd=3, ret=1, a0=10, a1=4, a2=(2 << 32) | 3)
    pf = s.m.root.files["/d/a"]
    assert (pf.bytes_read, pf.bytes_written, pf.read_calls, pf.write_calls) == (20, 8, 4, 6)
    assert pf.bytes_exact is True


def test_exec_resolves_a_relative_program_and_counts_every_exec():
    s = Stream(cwd="/w")
    exec_(s, ROOT, "./train.sh")
    assert s.m.root.exe == "/w/train.sh" and s.m.root.argv_incomplete is False
    exec_(s, ROOT, "/usr/bin/python3")
    assert s.m.root.execs == 2
    s.fork(200)
    assert s.m.live[200].exe == "/usr/bin/python3"  # a fork runs its parent's program


def test_an_exit_without_a_status_sets_neither_code_nor_signal():
    s = Stream()
    s.fork(200)
    s.ev(E.EV_EXIT, tgid=200, a0=3, a1=9, flags=0)
    p = next(p for p in s.m.procs if p.pid == 200)
    assert (p.exit_code, p.signal) == (None, None) and p.end_ts == s.ts


def test_renames_between_relative_names_by_cwd_and_by_directory_fd():
    s = Stream(cwd="/w")
    s.open("a.tmp", 3, flags=O_WRONLY_CREAT_TRUNC)
    s.write(3)
    s.open("/out", 4, flags=O_DIRECTORY)
    s.open("/w/b.tmp", 5, flags=O_WRONLY_CREAT_TRUNC)
    s.write(5)
    s.ev(E.EV_RENAME, fd=-100, a0=AT_FDCWD_U64, path="a.tmp", path2="a.bin")
    mv = s.ev(E.EV_RENAME, fd=-100, a0=4, path="b.tmp", path2="b.bin")
    assert s.m.paths["/w/a.bin"].written and s.m.paths["/w/a.tmp"].deleted
    b = s.m.paths["/out/b.bin"]
    assert b.written and b.modified_ts == mv.ts and b.renamed_from == ["/w/b.tmp"]
    assert not s.m.problems


def test_a_rename_whose_source_cannot_be_resolved_changes_nothing():
    s = Stream()
    s.open("/d/b", 3)
    s.read(3)
    s.ev(E.EV_RENAME, fd=9, a0=AT_FDCWD_U64, path="a", path2="/d/b")
    assert not s.m.paths["/d/b"].deleted and s.m.paths["/d/b"].modified_ts is None
    assert s.m.problems == {"relative path with unknown base directory": 1}


def test_a_directory_opened_as_a_file_moves_with_its_contents():
    # fsync of a directory: open(dir, O_RDONLY) without O_DIRECTORY makes it a path too
    s = Stream()
    s.open("/d/a", 3)
    s.open("/d/a/f", 4, flags=O_WRONLY_CREAT_TRUNC)
    s.write(4)
    s.m.touched.clear()
    rename(s, "/d/a", "/d/b")
    assert s.m.paths["/d/a"].deleted and s.m.paths["/d/a/f"].deleted
    assert s.m.paths["/d/b/f"].written and not s.m.paths["/d/b"].deleted
    assert {"/d/a", "/d/a/f", "/d/b", "/d/b/f"} <= s.m.touched


def test_truncate_of_a_relative_path_resolves_against_cwd():
    s = Stream(cwd="/w")
    t = s.ev(E.EV_TRUNCATE, a0=0, path="data.bin")
    st = s.m.paths["/w/data.bin"]
    assert st.written and st.modified_ts == t.ts and s.m.root.files["/w/data.bin"].written


def test_tls_body_bytes_are_credited_to_the_exchange_of_the_last_head():
    s = Stream()
    get = b"GET /bkt/a HTTP/1.1\r\nHost: h\r\n\r\n"
    ok = b"HTTP/1.1 200 OK\r\nETag: \"e\"\r\n\r\n"
    put = b"PUT /bkt/b HTTP/1.1\r\nHost: h\r\n\r\n"
    _tls(s, E.EV_TLS_WRITE, ROOT, ssl=5, raw=get, call=len(get))
    _tls(s, E.EV_TLS_READ, ROOT, ssl=5, raw=ok, call=len(ok) + 10)
    # the next head's event carries the body bytes read and written since the last one
    _tls(s, E.EV_TLS_WRITE, ROOT, ssl=5, raw=put, call=len(put), body_in=90)
    _tls(s, E.EV_TLS_READ, ROOT, ssl=5, raw=ok, call=len(ok), body_out=25)
    first, second = s.m.remote.exchanges
    assert (first.body_in, first.body_out) == (100, 0)
    assert (second.body_in, second.body_out) == (0, 25) and second.status == 200


def test_the_run_record_counts_events_and_says_io_uring_as_a_bool():
    s = Stream()
    assert s.m.io_uring is False and s.m.events == 0  # stored as is on the run
    s.open("/d/a", 3)
    s.read(3)
    s.ev(E.EV_IOURING)
    assert s.m.io_uring is True and s.m.events == 3


def test_start_times_of_the_root_children_and_processes_seen_late():
    m = RunModel(ROOT, "/w", ["x"], {0: "/data/in.csv"}, 12345)
    assert m.root.start_ts == 12345
    s = Stream(fds={0: "/data/in.csv"})
    f = s.fork(200)
    late = _tls(s, E.EV_TLS_FREE, 4242, ssl=1)
    assert s.m.live[200].start_ts == f.ts and s.m.live[4242].start_ts == late.ts
    exec_(s, ROOT, "/bin/cat")
    assert s.m.root.fds[0].file.path == "/data/in.csv"  # inherited fds survive exec


def test_a_path_the_probe_could_not_read_is_a_problem_whatever_it_holds():
    s = Stream()
    s.ev(E.EV_OPEN, fd=3, ret=-100, a0=0, path="/d/garbage", flags=E.EVF_FAULT)
    assert s.m.paths == {} and s.m.problems == {"path could not be read from process memory": 1}


def test_a_process_with_no_known_cwd_still_opens_absolute_paths():
    s = Stream()
    s.open("/d/x", 3, tgid=4242)  # never seen starting: no cwd
    assert "/d/x" in s.m.paths and s.m.problems == {"process seen without its start": 1}


def test_a_rename_of_a_grandparent_directory_moves_everything_below_it():
    s = Stream()
    s.open("/a/b/c/f", 3, flags=O_WRONLY_CREAT_TRUNC)
    s.write(3)
    s.open("/a/b/c/g", 4, flags=O_WRONLY_CREAT_TRUNC)
    s.write(4)
    rename(s, "/a", "/z")
    assert s.m.paths["/z/b/c/f"].written and s.m.paths["/z/b/c/g"].written
    assert s.m.paths["/a/b/c/f"].deleted


def test_a_close_summary_alone_marks_its_path_touched():
    s = Stream()
    s.open("/d/a", 3)
    s.m.touched.clear()
    s.ev(E.EV_CLOSE, fd=3, ret=0, a0=10)
    assert "/d/a" in s.m.touched and s.m.root.files["/d/a"].bytes_read == 10


def test_an_o_tmpfile_fd_keeps_its_own_close_on_exec_flag():
    s = Stream()
    s.open("/d", 3, flags=O_TMPFILE | O_DIRECTORY | O_RDWR)
    s.open("/d", 4, flags=O_TMPFILE | O_DIRECTORY | O_RDWR | O_CLOEXEC)
    assert (s.m.root.fds[3].cloexec, s.m.root.fds[4].cloexec) == (False, True)
    exec_(s, ROOT)
    assert set(s.m.root.fds) == {3}


def test_a_truncating_open_of_a_name_made_again_is_a_live_output_of_its_process():
    s = Stream()
    s.open("/d/f", 3, flags=O_WRONLY_CREAT_TRUNC)
    s.ev(E.EV_UNLINK, fd=-100, path="/d/f")
    s.open("/d/f", 4, flags=O_RDWR | 0o1000)  # O_TRUNC, no O_CREAT: made again outside
    assert s.m.paths["/d/f"].deleted is False
    s.ev(E.EV_UNLINK, fd=-100, path="/d/f")
    s.open("/d/f", 5, flags=O_CREAT | O_RDWR)
    assert s.m.paths["/d/f"].deleted is False
    s2 = Stream()
    s2.open("/d/new", 3, flags=O_WRONLY_CREAT_TRUNC)  # never written: still an output
    assert s2.m.root.files["/d/new"].written is True
    _typed(s.m)


def test_dotdot_resolution_steps_out_of_every_symlinked_part(tmp_path):
    (tmp_path / "real" / "deep").mkdir(parents=True)
    (tmp_path / "other" / "x").mkdir(parents=True)
    os.symlink(tmp_path / "real" / "deep", tmp_path / "link")
    os.symlink(tmp_path / "other" / "x", tmp_path / "real" / "l2")
    s = Stream()
    # like the kernel: link/.. is real, real/l2/.. is other (a symlink after the first ..)
    s.open(f"{tmp_path}/link/../l2/../f", 3)
    s.open("/../etc/hostname", 4)               # above the root is the root
    assert {f"{tmp_path}/other/f", "/etc/hostname"} <= set(s.m.paths)
