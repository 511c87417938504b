"""The kernel side's per-(process, fd) counters never outlive what they count:
a pid that is reused, or an fd number that is closed and opened again, starts
from nothing (bpf/fdstate.h: the process epoch, a new state at open, the forget at close).

Otherwise the new file's first read would look like a repeat of the old one:
no event for it, and its bytes added to the old file's."""

from __future__ import annotations

import sys
import textwrap

import pytest
from conftest import tagged_child

pytestmark = pytest.mark.capture

HIGH_FD = 300  # above FLUSH_MAX: never flushed at exit, so stale state would stay behind


def _run(roar, code: str):
    (roar.cwd / "job.py").write_text(textwrap.dedent(code))
    _, doc = roar.run(sys.executable, "job.py")
    assert doc["complete"] is True, doc["incomplete_reasons"]
    return doc, {e["path"]: e for e in doc["inputs"]}


def test_a_reused_pid_does_not_inherit_the_dead_processs_fd_counters(roar):
    w = roar.cwd
    (w / "a").write_bytes(b"a" * 5000)
    (w / "b").write_bytes(b"b" * 7000)
    doc, ins = _run(roar, f"""
        import os

        def read_all(fd):
            while os.read(fd, 1024):
                pass

        # P and Q run on one CPU, the parent on another where there is one: the
        # kernel side's per-CPU resolution of P must not be taken for Q's
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) > 1:
            os.sched_setaffinity(0, cpus[1:])

        # P reads a through fd {HIGH_FD} and exits without closing it
        p = os.fork()
        if p == 0:
            os.sched_setaffinity(0, cpus[:1])
            fd = os.open("a", os.O_RDONLY)
            os.dup2(fd, {HIGH_FD})
            read_all({HIGH_FD})
            os._exit(0)
        os.waitpid(p, 0)
        fd = os.open("b", os.O_RDONLY)
        os.dup2(fd, {HIGH_FD})
        os.close(fd)
        # Q gets P's pid (ns_last_pid, retried while other forks take it) and
        # reads b through the same fd number, inherited
        for attempt in range(200):
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(p - 1))
            q = os.fork()
            if q == 0:
                if os.getpid() != p:
                    os._exit(3)
                os.sched_setaffinity(0, cpus[:1])
                read_all({HIGH_FD})
                os.close({HIGH_FD})
                os._exit(0)
            _, status = os.waitpid(q, 0)
            if os.waitstatus_to_exitcode(status) == 0:
                open("reused", "w").write(str(attempt))
                break
    """)
    assert (w / "reused").exists(), "no fork got the dead process's pid back"
    assert str(w / "a") in ins
    assert ins[str(w / "b")]["bytes_read"] == 7000, ins  # not 12000 (a's counters), not unseen
    procs = roar.json("trace", doc["id"])["processes"]
    reader = [f for p in procs for f in p["files"] if f["path"] == str(w / "b")
              and f.get("bytes_read")]
    assert [f["bytes_read"] for f in reader] == [7000], reader


def test_an_fd_closed_and_opened_again_starts_from_nothing(roar):
    w = roar.cwd
    (w / "a").write_bytes(b"a" * 3000)
    (w / "b").write_bytes(b"b" * 9000)
    (w / "c").write_bytes(b"c" * 4000)
    (w / "d").write_bytes(b"d" * 4000)
    _, ins = _run(roar, f"""
        import os

        def read_all(fd):
            while os.read(fd, 1000):
                pass

        for name in ("a", "b"):  # the same high fd number, closed in between
            fd = os.open(name, os.O_RDONLY)
            os.dup2(fd, {HIGH_FD})
            os.close(fd)
            read_all({HIGH_FD})
            os.close({HIGH_FD})
        fd = os.open("c", os.O_RDONLY)  # a low fd number, reused by the next open
        read_all(fd)
        os.close(fd)
        again = os.open("d", os.O_RDONLY)
        assert again == fd
        os.read(again, 100)
        os.close(again)
    """)
    assert ins[str(w / "b")]["bytes_read"] == 9000, ins
    assert ins[str(w / "c")]["bytes_read"] == 4000, ins
    assert ins[str(w / "a")]["bytes_read"] == 3000, ins
    assert ins[str(w / "d")]["bytes_read"] == 100, ins  # not c's 4000 + 100


def test_a_closed_fd_number_taken_by_no_open_starts_from_nothing(roar):
    """A close below FLUSH_MAX leaves the fd's state marked closed for the next
    open to rewrite in place (bpf/fdstate.h EPOCH_CLOSED). The number can also
    come back without an open (a pipe, dup2 of another file) or be used after
    its close (EBADF): each must read as no state of this process life."""
    w = roar.cwd
    for name, size in (("e", 2500), ("f", 3500), ("g", 6000), ("h", 800)):
        (w / name).write_bytes(name.encode() * size)
    _, ins = _run(roar, """
        import os

        def read_all(fd):
            while os.read(fd, 1000):
                pass

        g = os.open("g", os.O_RDONLY)
        fd = os.open("e", os.O_RDONLY)
        read_all(fd)
        os.close(fd)
        r, wr = os.pipe()                 # the pipe's read end takes e's number
        assert r == fd, (r, fd)
        os.write(wr, b"x" * 5000)
        os.close(wr)
        read_all(r)
        os.close(r)
        f = os.open("f", os.O_RDONLY)
        assert f == fd
        os.read(f, 500)
        os.close(f)
        os.dup2(g, fd)                    # f's number, now g's file
        read_all(fd)
        os.close(fd)
        os.close(g)
        try:                              # a read of the closed number
            os.read(fd, 10)
        except OSError:
            pass
        h = os.open("h", os.O_RDONLY)
        assert h == g                     # g's closed number, opened again
        os.read(h, 300)
        os.close(h)
    """)
    assert ins[str(w / "e")]["bytes_read"] == 2500, ins
    assert ins[str(w / "f")]["bytes_read"] == 500, ins
    assert ins[str(w / "g")]["bytes_read"] == 6000, ins
    assert ins[str(w / "h")]["bytes_read"] == 300, ins
    assert set(ins) >= {str(w / n) for n in "efgh"}


def test_opened_files_whose_state_the_open_made(roar):
    """An open makes its fd's state (bpf/files.h open_exit), so the first read
    needs no fd_kind: a file read only after an exec, through the fd it
    inherited; one unlinked before its first read (no name by then); one opened
    and never used, closed or left open at an exec and at the exit: each as
    before, and the run complete (no fd taken for one whose open was never seen)."""
    w = roar.cwd
    (w / "a").write_bytes(b"a" * 3000)
    (w / "b").write_bytes(b"b" * 5000)
    (w / "c").write_bytes(b"c" * 700)
    (w / "idle").write_bytes(b"i" * 100)
    (w / "idle2").write_bytes(b"j" * 100)
    (w / "reader.py").write_text(textwrap.dedent("""
        import os, sys
        fd = int(sys.argv[1])
        while os.read(fd, 1000):
            pass
    """))
    doc, ins = _run(roar, """
        import os, subprocess, sys

        idle = os.open("idle", os.O_RDONLY)   # never used, open across the exec and at exit
        os.set_inheritable(idle, True)
        shut = os.open("idle2", os.O_RDONLY)  # never used, closed
        os.close(shut)
        gone = os.open("c", os.O_RDONLY)      # unlinked, then read
        os.rename("c", "c.kept")
        os.unlink("c.kept")
        assert len(os.read(gone, 1000)) == 700
        os.close(gone)
        pid = os.fork()
        if pid == 0:
            fd = os.open("b", os.O_RDONLY)   # opened here, read only after the exec
            os.set_inheritable(fd, True)
            os.execv(sys.executable, [sys.executable, "reader.py", str(fd)])
        os.waitpid(pid, 0)
        fd = os.open("a", os.O_RDONLY)
        subprocess.run([sys.executable, "reader.py", str(fd)], pass_fds=(fd,), check=True)
        os._exit(0)
    """)
    assert ins[str(w / "b")]["bytes_read"] == 5000, ins
    assert ins[str(w / "a")]["bytes_read"] == 3000, ins
    assert str(w / "idle") not in ins and str(w / "idle2") not in ins, ins
    assert doc["complete"] is True


STASH_CHILD = """
import os, sys, threading
print("ready", flush=True)
sys.stdin.readline()                       # placed in the run cgroup, tagged
fd = os.open(sys.argv[1], os.O_RDONLY)
def work():  # a dup: stashed at its enter (an open is not, where its exit reads the registers)
    os.close(os.dup(fd))
threads = [threading.Thread(target=work) for _ in range(64)]
for t in threads:
    t.start()
for t in threads:
    t.join()
os.close(os.dup(fd))  # the main thread's own entry
print("done", flush=True)
sys.stdin.readline()
"""


def test_each_threads_syscall_stash_goes_with_the_thread(tmp_path, monkeypatch):
    """bpf/stash.h keeps one entry per thread (taken entries are marked, not
    deleted): each thread's exit deletes its entry, and detaching the probes
    empties the map (threads that end while nothing is attached cannot), so
    the map (16,384 entries) never fills with dead threads' entries."""
    monkeypatch.setenv("ROAR_TLS_PROBES", "0")  # no uprobes: the syscalls' programs only
    with tagged_child(STASH_CHILD, str(tmp_path), name="stash") as (probes, child):
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline() == "done\n"
        table = probes.bpf["pending_args"]
        assert sorted(k.value for k in table.keys()) == [child.pid]  # 64 threads gone
        probes.detach()
        assert list(table.keys()) == []
