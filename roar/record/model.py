"""The process model: rebuilds processes, fd tables, working directories and
per-path file history of one run from its kernel event stream alone.

Only the run's first process is seeded from outside the stream (its cwd,
argv and inherited fds, read before it starts). Everything else - children,
threads, dup'ed and inherited fds, chdir, renames - follows from events, so
short-lived processes are never looked up in /proc after the fact.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field

from roar.capture import events as E
from roar.capture.events import (  # defined once, in bpf/roar_event.h
    CLOSE_RANGE_CLOEXEC,
    FD_MAP_READ,
    FD_MAP_WRITE,
    FD_NAMED,
    FD_READ,
)
from roar.record.classify import needs_hash
from roar.record.paths import _FD_ALIAS, _normalize, decode_sockaddr
from roar.record.remote import RemoteLog

O_ACCMODE = 0o3
O_WRONLY = 0o1
O_RDWR = 0o2
O_TRUNC = 0o1000
O_DIRECTORY = 0o200000
O_CLOEXEC = 0o2000000
O_PATH = 0o10000000
O_CREAT = 0o100
O_TMPFILE = 0o20000000  # with O_DIRECTORY: an unnamed file in that directory
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_REMOVEDIR = 0x200
CLONE_FILES = 0x400


@dataclass(slots=True)
class OpenFile:
    """An open file description; shared by dup'ed and inherited fds."""

    path: str | None
    flags: int
    tmpfile_dir: str | None = None  # O_TMPFILE: unnamed until linked into place
    tmpfile_written: bool = False


@dataclass(slots=True)
class FdEntry:
    file: OpenFile
    cloexec: bool


@dataclass(slots=True)
class ProcFile:
    """What one process did with one path."""

    path: str
    read: bool = False
    written: bool = False
    mapped: bool = False
    bytes_read: int = 0
    bytes_written: int = 0
    read_calls: int = 0
    write_calls: int = 0
    bytes_exact: bool = True

    @property
    def mode(self) -> str:
        return ("r" if self.read else "") + ("w" if self.written else "") + (
            "m" if self.mapped else "")


@dataclass(slots=True)
class Proc:
    pid: int
    key: str
    parent: str | None
    ppid: int | None
    argv: list[str]
    exe: str | None
    cwd: str | None
    fds: dict[int, FdEntry]
    start_ts: int
    end_ts: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    threads: int = 1
    execs: int = 0
    argv_incomplete: bool = False
    files: dict[str, ProcFile] = field(default_factory=dict)
    pending_exec: tuple | None = None


@dataclass(slots=True)
class PathState:
    """The run's history of one path."""

    path: str
    first: str | None  # "read" | "write": the run's first access decides input vs
    # internal; None while the path was only opened for writing, not yet written
    read: bool = False
    written: bool = False
    deleted: bool = False
    modified_ts: int | None = None  # first time the run changed its content or name
    create_ts: int | None = None    # first open with O_CREAT: the run may have made it
    early_hash: object = None       # job hashing the version seen at the first read-open
    early_ts: int | None = None
    renamed_from: list[str] = field(default_factory=list)  # earlier names of what it holds


class RunModel:
    """Consumes one run's decoded events in order; queried at the end."""

    def __init__(self, root_pid: int, cwd: str, argv: list[str], root_fds: dict[int, str],
                 start_ts: int, submit_hash=None):
        self.submit_hash = submit_hash
        self.procs: list[Proc] = []
        self.live: dict[int, Proc] = {}
        self.paths: dict[str, PathState] = {}
        # per path, what each process did with it (in the order they first did)
        self.by_path: dict[str, list[tuple[Proc, ProcFile]]] = {}
        self.new_paths: list[str] = []  # paths seen since the recorder last looked
        # every directory above a path in self.paths: a rename or rmdir of a path
        # that is not one of them has nothing below it to move (no scan of all paths)
        self.dirs: set[str] = set()
        # paths whose state (or a process's use of them) may have changed since
        # the recorder last looked: every change goes through _state, _pfile or
        # _touch
        self.touched: set[str] = set()
        self.connects: list[dict] = []
        self.remote = RemoteLog()  # HTTP exchanges seen in TLS plaintext
        self.problems: dict[str, int] = {}
        self.io_uring = False
        # (process key, fd) of each fd on a named regular file used for I/O without
        # the run seeing its open (received over SCM_RIGHTS, pidfd_getfd,
        # open_by_handle_at...): reads and writes no path can be given for
        self.untraced_fds: set[tuple[str, int]] = set()
        # (process key, fd) closed by an exec (close-on-exec): the kernel keeps no
        # close for them, so their accesses are summed at the process's exit
        self.exec_closed: set[tuple[str, int]] = set()
        self.events = 0
        fds = {fd: FdEntry(OpenFile(p, 0), False) for fd, p in root_fds.items()}
        self.root = self._new_proc(root_pid, None, argv, cwd, fds, start_ts)

    # -- bookkeeping ------------------------------------------------------------

    def _new_proc(self, pid, parent: Proc | None, argv, cwd, fds, ts) -> Proc:
        old = self.live.pop(pid, None)
        if old is not None:  # pid reused while we never saw the old one exit
            old.end_ts = old.end_ts or ts
            self.problem("process exit not seen before its pid was reused")
        p = Proc(pid=pid, key=f"{pid}@{ts}", parent=parent.key if parent else None,
                 ppid=parent.pid if parent else None, argv=list(argv), exe=None, cwd=cwd,
                 fds=fds, start_ts=ts)
        self.procs.append(p)
        self.live[pid] = p
        return p

    def problem(self, what: str) -> None:
        self.problems[what] = self.problems.get(what, 0) + 1

    def _proc(self, ev: E.Event) -> Proc:
        p = self.live.get(ev.tgid)
        if p is None:
            # A process we never saw start: its fork event was lost or it
            # joined the cgroup from outside. Keep its activity, say so.
            self.problem("process seen without its start")
            p = self._new_proc(ev.tgid, None, [], None, {}, ev.ts)
        return p

    def _resolve(self, p: Proc, dirfd: int, path: str | None, flags: int) -> str | None:
        if path is None or flags & E.EVF_FAULT:
            self.problem("path could not be read from process memory")
            return None
        if flags & E.EVF_TRUNCATED:
            self.problem("path longer than PATH_MAX")
        if path.startswith("/"):
            return _normalize(path)
        if dirfd == AT_FDCWD:
            base = p.cwd
        else:
            entry = p.fds.get(dirfd)
            base = entry.file.path if entry else None
        if base is None:
            self.problem("relative path with unknown base directory")
            return None
        if not path:
            return base  # AT_EMPTY_PATH style: the dirfd itself
        return _normalize(posixpath.join(base, path))

    def _state(self, path: str, first: str | None) -> PathState:
        self.touched.add(path)
        s = self.paths.get(path)
        if s is None:
            s = self.paths[path] = PathState(path=path, first=first)
            self.new_paths.append(path)
            d = path.rpartition("/")[0]  # paths are absolute and normalized
            while d and d not in self.dirs:
                self.dirs.add(d)
                d = d.rpartition("/")[0]
        elif s.first is None:  # only opened for writing so far: this is its first access
            s.first = first
        return s

    def _pfile(self, p: Proc, path: str) -> ProcFile:
        self.touched.add(path)
        pf = p.files.get(path)
        if pf is None:
            pf = p.files[path] = ProcFile(path)
            self.by_path.setdefault(path, []).append((p, pf))
        return pf

    def _modified(self, path: str, ts: int, first: str = "write") -> PathState:
        s = self._state(path, first)
        if s.modified_ts is None:
            s.modified_ts = ts
        return s

    def _hash_early(self, s: PathState, ts: int, created: bool = False) -> None:
        """Hash a file that may become an input before anyone can change it.
        For an O_CREAT open also note when the file was born: the run may have
        made it, and the file may be gone by the end."""
        if (s.early_hash is None and s.modified_ts is None and s.first == "read"
                and self.submit_hash is not None and needs_hash(s.path)):
            s.early_hash = (self.submit_hash(s.path, True) if created
                            else self.submit_hash(s.path))
            s.early_ts = ts

    # -- events ------------------------------------------------------------------

    def feed(self, ev: E.Event) -> None:
        self.events += 1
        handler = _HANDLERS.get(ev.type)
        if handler is not None:
            handler(self, ev)

    def _fd_alias(self, p: Proc, path: str) -> str | None:
        """The file behind /dev/stdin, /dev/fd/N or /proc/<pid>/fd/N: opening
        one of these reopens what that fd names, which is what was read."""
        m = _FD_ALIAS.match(path)
        if not m:
            return None
        std, who, fd = m.group("std"), m.group("pid"), m.group("fd") or m.group("fd2")
        owner = p
        if who not in (None, "self", "thread-self"):
            owner = self.live.get(int(who))
            if owner is None:
                return None
        num = {"stdin": 0, "stdout": 1, "stderr": 2}[std] if std else int(fd)
        entry = owner.fds.get(num)
        if entry is None:
            return None
        if entry.file.tmpfile_dir is not None:
            return None
        return entry.file.path

    def on_open(self, ev: E.Event) -> None:
        p = self._proc(ev)
        path = self._resolve(p, ev.ret, ev.path, ev.flags)
        flags = ev.a0
        if path is not None and path.startswith(("/dev/", "/proc/")):
            path = self._fd_alias(p, path) or path
        if flags & O_TMPFILE:
            p.fds[ev.fd] = FdEntry(OpenFile(None, flags, tmpfile_dir=path),
                                   bool(flags & O_CLOEXEC))
            return
        p.fds[ev.fd] = FdEntry(OpenFile(path, flags), bool(flags & O_CLOEXEC))
        if path is None or flags & (O_PATH | O_DIRECTORY):
            return
        is_new = path not in self.paths
        acc = flags & O_ACCMODE
        if acc in (O_WRONLY, O_RDWR) and flags & O_TRUNC:
            # emptied (or created) by the run: an output even if never written
            s = self._modified(path, ev.ts)
            s.written = True
            s.deleted = False
            self._pfile(p, path).written = True
        elif acc != O_WRONLY:
            s = self._state(path, "read")
            if not s.deleted:
                self._hash_early(s, ev.ts, bool(flags & O_CREAT))
        else:
            # opened for writing, not truncated: nothing read or changed yet (sort -o
            # opens its output before it reads the same file as input)
            s = self._state(path, None)
        if flags & O_CREAT and s.create_ts is None and is_new:
            # only a first access can make the file the run's own: a path the run
            # read before keeps that version as an input, whatever happens later
            s.create_ts = ev.ts
        if flags & O_CREAT:
            s.deleted = False

    def _fd_path(self, p: Proc, fd: int) -> str | None:
        entry = p.fds.get(fd)
        return entry.file.path if entry else None

    def _untraced(self, p: Proc, fd: int, bits: int) -> None:
        """I/O (bits: the kernel's access bits) on an fd the run never saw
        opened: lost if the kernel says it names a regular file with a name."""
        if bits & FD_NAMED and fd not in p.fds and (p.key, fd) not in self.exec_closed:
            self.untraced_fds.add((p.key, fd))

    def still_running(self) -> int:
        """Processes whose exit the run never saw: at the end of a run, ones
        that left its cgroup (their exit, and what they did after, was outside)."""
        return len(self.live)

    def on_read(self, ev: E.Event) -> None:
        p = self._proc(ev)
        path = self._fd_path(p, ev.fd)
        if path is None:
            self._untraced(p, ev.fd, ev.a0)
            return  # a pipe, socket or other fd that names no file we opened
        self._pfile(p, path).read = True
        s = self._state(path, "read")
        s.read = True
        self._hash_early(s, ev.ts)

    def on_write(self, ev: E.Event) -> None:
        p = self._proc(ev)
        entry = p.fds.get(ev.fd)
        if entry is not None and entry.file.tmpfile_dir is not None:
            entry.file.tmpfile_written = True
            return
        path = entry.file.path if entry else None
        if path is None:
            self._untraced(p, ev.fd, ev.a0)
            return
        self._pfile(p, path).written = True
        s = self._modified(path, ev.ts)
        s.written = True
        s.deleted = False

    def on_mmap(self, ev: E.Event) -> None:
        p = self._proc(ev)
        path = self._fd_path(p, ev.fd)
        if path is None:
            self._untraced(p, ev.fd, ev.a0)
            return
        self._mapped(p, path, ev.a0, ev)

    def _mapped(self, p: Proc, path: str, bits: int, ev: E.Event) -> None:
        pf = self._pfile(p, path)
        pf.mapped = True
        if bits & FD_MAP_READ:
            pf.read = True
            s = self._state(path, "read")
            s.read = True
            self._hash_early(s, ev.ts)
        if bits & FD_MAP_WRITE:
            pf.written = True
            s = self._modified(path, ev.ts)
            s.written = True

    def on_close(self, ev: E.Event) -> None:
        """An fd's summary: at its close, or flushed by an exec (EVF_EXEC_FLUSH:
        the fd stays, unless the exec's result closes it as close-on-exec)."""
        p = self._proc(ev)
        keep = ev.flags & E.EVF_EXEC_FLUSH
        entry = p.fds.get(ev.fd)
        if entry is None or entry.file.path is None:
            self._untraced(p, ev.fd, ev.ret)
            if not keep:
                p.fds.pop(ev.fd, None)
            return
        if ev.ret & FD_READ:  # reads are reported here, not one event each
            self.on_read(ev)
        if ev.ret & FD_MAP_READ:  # read-only mappings of fds < FLUSH_MAX: only here
            self._mapped(p, entry.file.path, FD_MAP_READ, ev)
        if not keep:
            del p.fds[ev.fd]
        if ev.a0 or ev.a1 or ev.a2:
            pf = self._pfile(p, entry.file.path)
            pf.bytes_read += ev.a0
            pf.bytes_written += ev.a1
            pf.read_calls += ev.a2 >> 32
            pf.write_calls += ev.a2 & 0xFFFFFFFF
            if ev.flags & E.EVF_BYTES_UNKNOWN:
                pf.bytes_exact = False

    def on_close_range(self, ev: E.Event) -> None:
        p = self._proc(ev)
        first, last = ev.fd & 0xFFFFFFFF, ev.a0 & 0xFFFFFFFF
        for fd in [fd for fd in p.fds if first <= fd <= last]:
            if ev.a1 & CLOSE_RANGE_CLOEXEC:
                p.fds[fd].cloexec = True
            else:
                del p.fds[fd]

    def on_dup(self, ev: E.Event) -> None:
        p = self._proc(ev)
        old = p.fds.get(ev.fd)
        new = int(ev.ret)
        if old is None:
            p.fds.pop(new, None)
        elif new != ev.fd:
            p.fds[new] = FdEntry(old.file, bool(ev.a0))

    def on_fdflags(self, ev: E.Event) -> None:
        entry = self._proc(ev).fds.get(ev.fd)
        if entry is not None:
            entry.cloexec = bool(ev.a0)

    def on_fork(self, ev: E.Event) -> None:
        parent = self._proc(ev)
        if ev.a0:  # a thread: same process, same fd table
            parent.threads += 1
            return
        if ev.a1 & CLONE_FILES:
            fds = parent.fds
        else:
            fds = {fd: FdEntry(e.file, e.cloexec) for fd, e in parent.fds.items()}
        child = self._new_proc(int(ev.ret), parent, parent.argv, parent.cwd, fds, ev.ts)
        child.exe = parent.exe

    def on_exec(self, ev: E.Event) -> None:
        p = self._proc(ev)
        # A long argv is kept in part and flagged on its process: it loses no
        # file access, so the run stays complete.
        p.pending_exec = (self._resolve(p, ev.fd, ev.path, ev.flags & ~E.EVF_TRUNCATED),
                          ev.argv or [], ev.flags)

    def on_exec_ret(self, ev: E.Event) -> None:
        p = self._proc(ev)
        pending, p.pending_exec = p.pending_exec, None
        if ev.ret != 0 or pending is None:
            return
        p.exe, p.argv = pending[0], pending[1]
        p.argv_incomplete = bool(pending[2] & (E.EVF_TRUNCATED | E.EVF_FAULT))
        p.execs += 1
        # execve first gives a process that shared its table (CLONE_FILES) a copy of
        # its own, then closes the close-on-exec fds in it: the others keep theirs.
        # Which are closed: the kernel's word where it gave it (EVF_FDS_OPEN: its
        # own table, close-on-exec set by ioctl too), else the flags seen
        words = (ev.a0, ev.a1, ev.a2) if ev.flags & E.EVF_FDS_OPEN else None

        def closes(fd: int, e: FdEntry) -> bool:
            if words is not None and 0 <= fd < E.EXEC_FDS_KNOWN:
                return not (words[fd // 64] >> (fd % 64)) & 1
            return e.cloexec

        closed = {fd for fd, e in p.fds.items() if closes(fd, e)}
        self.exec_closed.update((p.key, fd) for fd in closed)
        p.fds = {fd: FdEntry(e.file, False) for fd, e in p.fds.items() if fd not in closed}

    def on_exit(self, ev: E.Event) -> None:
        p = self.live.pop(ev.tgid, None)
        if p is None:
            return
        p.end_ts = ev.ts
        if ev.flags & E.EVF_SIGNALED and not ev.flags & E.EVF_EXITED:
            p.signal = int(ev.a1)
        elif ev.flags & E.EVF_EXITED:
            p.exit_code = int(ev.a0)
        if p.fds is not None:
            p.fds = {}

    def on_reap(self, ev: E.Event) -> None:
        """A parent collected a child's status: the authoritative exit."""
        pid, status = int(ev.ret), int(ev.a0)
        for child in reversed(self.procs):
            if child.pid == pid:
                if os.WIFSIGNALED(status):
                    child.signal, child.exit_code = os.WTERMSIG(status), None
                elif os.WIFEXITED(status):
                    child.exit_code, child.signal = os.WEXITSTATUS(status), None
                return

    def _moved_to(self, dest: str, ours: bool, replaced: list[str], ts: int) -> PathState:
        """The state of a rename's destination. A name the run knew (replaced)
        had its content replaced now; a new name holding content the run did
        not write (a file that was there before the run, moved) is no write of
        the run: reading it later reads that content, an input."""
        if ours or dest in replaced:
            return self._modified(dest, ts)
        return self._state(dest, None)

    def _move(self, old: str, new: str, ts: int) -> None:
        """A rename: everything the run wrote under old now lives under new,
        and whatever was at new (a file, or a whole tree) is replaced."""
        replaced = self._at_or_below(new)
        for path in replaced:
            self.touched.add(path)
            gone = self.paths[path]
            if gone.modified_ts is None:  # its content changed now, even if the run
                gone.modified_ts = ts     # never knew the file that replaced it
            gone.deleted = True
        moved = self._at_or_below(old)
        d = self._moved_to(new, any(self.paths[q].written for q in moved), replaced, ts)
        d.deleted = False
        prefix = old + "/"
        for path in moved:
            self.touched.add(path)
            src = self.paths[path]
            dest = new + path[len(old):]
            d = self._moved_to(dest, src.written, replaced, ts)
            if src.written:
                d.written = True
                src.written = False
                d.renamed_from.extend([path, *src.renamed_from])
            d.deleted = False
            src.deleted = True
            if src.modified_ts is None:
                src.modified_ts = ts
        for proc in self.live.values():
            for entry in proc.fds.values():
                fp = entry.file.path
                if fp and (fp == old or fp.startswith(prefix)):
                    entry.file.path = new + fp[len(old):]
            if proc.cwd and (proc.cwd == old or proc.cwd.startswith(prefix)):
                proc.cwd = new + proc.cwd[len(old):]

    def _at_or_below(self, path: str) -> list[str]:
        """path itself if known, and the known paths below it (a directory)."""
        out = [path] if path in self.paths else []
        if path in self.dirs:
            below = path + "/"
            out += [q for q in self.paths if q.startswith(below)]
        return out

    def on_rename(self, ev: E.Event) -> None:
        p = self._proc(ev)
        old = self._resolve(p, ev.fd, ev.path, ev.flags)
        new = self._resolve(p, ev.dirfd2, ev.path2, ev.flags)
        if old is None or new is None:
            return
        self._move(old, new, ev.ts)

    def _tmpfile_source(self, p: Proc, ev: E.Event) -> OpenFile | None:
        """linkat(fd, "", ..., AT_EMPTY_PATH) or linkat of /proc/self/fd/N:
        an O_TMPFILE file getting its name."""
        entry = None
        if not ev.path and ev.a1 & AT_EMPTY_PATH:
            entry = p.fds.get(ev.fd)
        elif ev.path:
            m = _FD_ALIAS.match(ev.path)
            if m and m.group("fd2") and m.group("pid") in ("self", "thread-self", str(p.pid)):
                entry = p.fds.get(int(m.group("fd2")))
        if entry is not None and entry.file.tmpfile_dir is not None:
            return entry.file
        return None

    def on_link(self, ev: E.Event) -> None:
        p = self._proc(ev)
        newdirfd = ev.dirfd2
        tmp = self._tmpfile_source(p, ev)
        if tmp is not None:
            new = self._resolve(p, newdirfd, ev.path2, ev.flags)
            if new is not None:
                d = self._modified(new, ev.ts)
                d.written = True
                d.deleted = False
                self._pfile(p, new).written = True
                tmp.path, tmp.tmpfile_dir = new, None  # later writes go to the name
            return
        old = self._resolve(p, ev.fd, ev.path, ev.flags)
        new = self._resolve(p, newdirfd, ev.path2, ev.flags)
        if old is None or new is None:
            return
        d = self._modified(new, ev.ts)
        d.deleted = False
        src = self.paths.get(old)
        if src is not None and src.written:
            d.written = True

    def on_unlink(self, ev: E.Event) -> None:
        p = self._proc(ev)
        path = self._resolve(p, ev.fd, ev.path, ev.flags)
        if path is None:
            return
        prefix = path + "/"
        s = self._modified(path, ev.ts)
        s.deleted = True
        if ev.a0 & AT_REMOVEDIR and path in self.dirs:
            for q, st in self.paths.items():
                if q.startswith(prefix):
                    self.touched.add(q)
                    st.deleted = True

    def on_truncate(self, ev: E.Event) -> None:
        p = self._proc(ev)
        path = self._resolve(p, AT_FDCWD, ev.path, ev.flags)
        if path is None:
            return
        self._pfile(p, path).written = True
        s = self._modified(path, ev.ts)
        s.written = True

    def on_ftruncate(self, ev: E.Event) -> None:
        p = self._proc(ev)
        path = self._fd_path(p, ev.fd)
        if path is None:
            return
        self._pfile(p, path).written = True
        s = self._modified(path, ev.ts)
        s.written = True

    def on_chdir(self, ev: E.Event) -> None:
        p = self._proc(ev)
        path = self._resolve(p, AT_FDCWD, ev.path, ev.flags)
        p.cwd = path

    def on_fchdir(self, ev: E.Event) -> None:
        p = self._proc(ev)
        path = self._fd_path(p, ev.fd)
        if path is None:
            self.problem("fchdir to an unknown directory")
        p.cwd = path

    def on_connect(self, ev: E.Event) -> None:
        p = self._proc(ev)
        endpoint = decode_sockaddr(ev.raw)
        if endpoint is not None:
            addr = endpoint["address"]
            if endpoint["family"] == "unix" and addr and not addr.startswith(("/", "@")):
                if p.cwd:
                    endpoint["address"] = _normalize(posixpath.join(p.cwd, addr))
            endpoint["process"] = p.key
            self.connects.append(endpoint)

    def on_tls_write(self, ev: E.Event) -> None:
        p = self._proc(ev)
        self.remote.request(ev.tgid, p.key, ev.a0, ev.raw, ev.a1, ev.a2, ev.ret, ev.ts,
                            "http" if ev.a0 & E.HTTP_SOCKET_KEY else "https")

    def on_tls_read(self, ev: E.Event) -> None:
        self._proc(ev)
        self.remote.response(ev.tgid, ev.a0, ev.raw, ev.a1, ev.a2, ev.ret)

    def on_tls_free(self, ev: E.Event) -> None:
        self._proc(ev)
        self.remote.freed(ev.tgid, ev.a0, ev.a2, ev.ret)

    def on_iouring(self, ev: E.Event) -> None:
        self._proc(ev)
        self.io_uring = True


_HANDLERS = {
    E.EV_OPEN: RunModel.on_open,
    E.EV_READ: RunModel.on_read,
    E.EV_WRITE: RunModel.on_write,
    E.EV_MMAP: RunModel.on_mmap,
    E.EV_CLOSE: RunModel.on_close,
    E.EV_CLOSE_RANGE: RunModel.on_close_range,
    E.EV_DUP: RunModel.on_dup,
    E.EV_FDFLAGS: RunModel.on_fdflags,
    E.EV_FORK: RunModel.on_fork,
    E.EV_EXEC: RunModel.on_exec,
    E.EV_EXEC_RET: RunModel.on_exec_ret,
    E.EV_EXIT: RunModel.on_exit,
    E.EV_RENAME: RunModel.on_rename,
    E.EV_LINK: RunModel.on_link,
    E.EV_UNLINK: RunModel.on_unlink,
    E.EV_TRUNCATE: RunModel.on_truncate,
    E.EV_FTRUNCATE: RunModel.on_ftruncate,
    E.EV_CHDIR: RunModel.on_chdir,
    E.EV_FCHDIR: RunModel.on_fchdir,
    E.EV_CONNECT: RunModel.on_connect,
    E.EV_IOURING: RunModel.on_iouring,
    E.EV_REAP: RunModel.on_reap,
    E.EV_TLS_WRITE: RunModel.on_tls_write,
    E.EV_TLS_READ: RunModel.on_tls_read,
    E.EV_TLS_FREE: RunModel.on_tls_free,
}
