"""The pre-image hold (docs/preimage.md): a file the run read and then changes
within microseconds (`sort -o f f`, open(f, "w") after reading f, an atomic
save over an input) keeps its first version's hash.

The run's content-changing syscalls wait in the kernel (roar/capture/seccomp.py)
until this supervisor, a thread of `roar run`, answered CONTINUE. Before it
does, it decides whether the file about to change can be the pre-image of one
of the run's inputs whose hash has not been taken yet, and if so hashes it
first (the model's own hash job for that input, run now in this thread):

1. Nothing there, or not a regular file, or a file the run itself emptied
   before (its dev/inode): not a pre-image. Answered at once.
2. The event model already knows the path: an input whose hash is done, or a
   path the run wrote first, is not one; an input whose hash is queued or
   running is (hashed, then answered).
3. Otherwise the run's read of it may still be on its way to the model (the
   kernel emitted it microseconds ago): a barrier (the session delivers a
   marker after every record committed before the hold) lets the model catch
   up, and the question is asked again in the model's thread. Still unknown:
   never read by the run, not a pre-image.

Nothing is ever denied: every held syscall continues, whatever fails here
(counted on self.problems).
"""

from __future__ import annotations

import os
import posixpath
import select
import stat
import threading
import time

from roar.capture import seccomp as sc
from roar.capture.syscalls import hold_next, read_mem

AT_FDCWD = -100
PATH_MAX = 4096
# how long a held syscall waits for the model to catch up with the run before
# it continues anyway (the input is then recorded unverified, as without a hold)
BARRIER_WAIT = 10.0

_normalize = birth_ns = None  # roar.record's, imported with the first Supervisor
# file times come from a coarse clock (a jiffy or two behind): times this close
# to the run's start count as during the run
SLACK_NS = 20_000_000
DAY_NS = 86400 * 10**9
UNKNOWN = object()  # the model has not seen the path (yet)
NO = None           # not a pre-image of a pending input


def read_string(pid: int, addr: int) -> str | None:
    """A NUL-terminated path from the held task's memory, page by page (a
    path may end just before an unmapped page). None when unreadable."""
    out = b""
    while len(out) < PATH_MAX:
        n = min(4096 - (addr % 4096), PATH_MAX - len(out))
        chunk = read_mem(pid, addr, n)
        if not chunk:
            return None
        nul = chunk.find(b"\0")
        if nul >= 0:
            return os.fsdecode(out + chunk[:nul])
        out += chunk
        addr += len(chunk)
    return None


def _read_u64(pid: int, addr: int) -> int | None:
    raw = read_mem(pid, addr, 8)
    if raw is None or len(raw) != 8:
        return None
    return int.from_bytes(raw, "little")


def _int(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


# what a held syscall does to each file it names (READS_WRITES: an O_RDWR open,
# which may read the file, then change it through the same fd; LINKS: a new name
# for it, which changes its inode's ctime: an input whose hash is not done would
# then be recorded "changed after the run opened it", though its content is not)
OPENS, READS_WRITES, EMPTIES, REMOVES, LINKS = ("opens", "reads-writes", "empties", "removes",
                                               "links")


def _open_effect(flags: int) -> str:
    if flags & sc.O_TRUNC:
        return EMPTIES
    return READS_WRITES if flags & 3 == sc.O_RDWR else OPENS


def targets(n: sc.Notification) -> list[tuple[int, str | None, int, str]]:
    """(dirfd, path, fd, effect) of each file a held syscall changes; path is
    None for an fd (ftruncate), an unreadable path is skipped."""
    a, nr, pid = n.args, n.nr, n.pid
    named: list[tuple[int, int, str]] = []
    if nr in (sc.OPEN, sc.OPENAT):
        dirfd, ptr, flags = (AT_FDCWD, a[0], a[1]) if nr == sc.OPEN else (_int(a[0]), a[1], a[2])
        named.append((dirfd, ptr, _open_effect(flags)))
    elif nr == sc.OPENAT2:
        flags = _read_u64(pid, a[2])  # struct open_how starts with its flags
        if flags is None or flags & sc.WRITE_FLAGS:
            named.append((_int(a[0]), a[1], _open_effect(flags or 0)))
    elif nr in (sc.CREAT, sc.TRUNCATE):
        named.append((AT_FDCWD, a[0], EMPTIES))
    elif nr == sc.FTRUNCATE:
        return [(AT_FDCWD, None, _int(a[0]), EMPTIES)]
    elif nr == sc.RENAME:
        named += [(AT_FDCWD, a[0], REMOVES), (AT_FDCWD, a[1], REMOVES)]
    elif nr in (sc.RENAMEAT, sc.RENAMEAT2):
        named += [(_int(a[0]), a[1], REMOVES), (_int(a[2]), a[3], REMOVES)]
    elif nr == sc.UNLINK:
        named.append((AT_FDCWD, a[0], REMOVES))
    elif nr == sc.UNLINKAT:
        named.append((_int(a[0]), a[1], REMOVES))
    elif nr == sc.LINK:  # link(2) does not follow a symlink
        named.append((AT_FDCWD, a[0], LINKS))
    elif nr == sc.LINKAT:
        named.append((_int(a[0]), a[1], OPENS if a[4] & sc.AT_SYMLINK_FOLLOW else LINKS))
    out = []
    for dirfd, ptr, effect in named:
        path = read_string(pid, ptr)
        if path:
            out.append((dirfd, path, -1, effect))
    return out


def creates(n: sc.Notification) -> bool:
    """Whether a held syscall opens its file with O_CREAT (creat(2) does)."""
    a, nr = n.args, n.nr
    if nr == sc.CREAT:
        return True
    if nr == sc.OPEN:
        return bool(a[1] & sc.O_CREAT)
    if nr == sc.OPENAT:
        return bool(a[2] & sc.O_CREAT)
    if nr == sc.OPENAT2:
        flags = _read_u64(n.pid, a[2])
        return bool(flags and flags & sc.O_CREAT)
    return False


def proc_path(tid: int, dirfd: int, path: str | None, fd: int) -> str:
    """The file as the held task would reach it, through its /proc links (its
    root, cwd and fds: right in its own mount namespace too)."""
    if path is None:
        return f"/proc/{tid}/fd/{fd}"
    if path.startswith("/"):
        return f"/proc/{tid}/root{path}"
    if dirfd == AT_FDCWD:
        return f"/proc/{tid}/cwd/{path}"
    return f"/proc/{tid}/fd/{dirfd}/{path}"


def verdict(model, path: str | None):
    """NO, UNKNOWN, or the hash job of the pending input this path is."""
    if path is None:
        return UNKNOWN
    s = model.paths.get(path)
    if s is None:
        return UNKNOWN
    if s.first is None:  # only opened for writing so far: a read may be on its way
        return UNKNOWN
    if s.first != "read" or s.modified_ts is not None:
        return NO
    job = s.early_hash
    if job is None or job.done():
        return NO
    return job


def pending_below(model, path: str | None) -> list:
    """The hash jobs of the pending inputs below a directory the model knows
    (a rename of the directory takes them all away). In the model's thread."""
    if path is None or path not in model.dirs:
        return []
    prefix = path.rstrip("/") + "/"
    jobs = (verdict(model, p) for p in list(model.paths) if p.startswith(prefix))
    return [j for j in jobs if j is not NO and j is not UNKNOWN]


class Supervisor:
    """Answers the run's held syscalls (one thread). barrier(callback) -> bool
    asks the session to call callback() in the model's thread once every record
    committed before the call has been fed to the model; False when it cannot
    (the run is ending)."""

    def __init__(self, listener: int, model, hasher, barrier, start_wall_ns: int,
                 released_wall_ns: int):
        global _normalize, birth_ns
        from roar.record.hasher import birth_ns
        from roar.record.paths import _normalize  # the model's own path rules

        self.start_wall_ns = start_wall_ns  # when the run started (wall clock)
        # the wall clock read just before the workload's release: file times never
        # run ahead of it, so a file born at or before it is not the run's
        self.released_wall_ns = released_wall_ns
        self._noatime: dict[int, bool] = {}  # st_dev -> mounted noatime
        self.unread = 0  # held syscalls answered by the access-time rule
        self.listener = listener
        self.model = model
        self.hasher = hasher
        self.barrier = barrier
        self.settled: set[tuple[int, int]] = set()  # (dev, ino) the run emptied itself
        self.held = 0          # syscalls held
        self.hashed = 0        # pre-images hashed before their syscall continued
        self.barriers = 0      # held syscalls that waited for the model to catch up
        self.late = 0          # barriers not answered in BARRIER_WAIT
        self.preimaged = 0     # O_RDWR opens of files the run had not read: hashed first
        self.held_ns = 0       # total time syscalls were held here
        self.max_ns = 0
        self.at_once = 0       # of held: naming no existing regular file, answered in C
        self.problems: dict[str, int] = {}
        # model path -> CLOCK_MONOTONIC ns by which a held O_CREAT open of the run
        # found a regular file there (its first such open): the open did not make
        # it (RunRecorder._created_by_run, for a file born within a clock tick of
        # the release, where its birth time cannot tell)
        self.existed: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="roar-preimage", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def stats(self) -> dict:
        return {"held": self.held, "at_once": self.at_once, "hashed": self.hashed,
                "barriers": self.barriers, "unread": self.unread, "late": self.late,
                "preimaged": self.preimaged, "existed": len(self.existed),
                "held_ns": self.held_ns, "max_ns": self.max_ns,
                "problems": dict(self.problems)}

    def _problem(self, what: str) -> None:
        self.problems[what] = self.problems.get(what, 0) + 1

    def _loop(self) -> None:
        buf = sc.new_buffer()
        poll = select.poll()
        poll.register(self.listener, select.POLLIN)
        while not self._stop.is_set():
            try:
                n = self._next(poll, buf)
            except _NoTaskLeft:
                return
            if n is None:
                continue
            t0 = time.monotonic_ns()
            try:
                self._handle(n)
            except Exception as e:  # noqa: BLE001 - the syscall continues whatever happened
                self._problem(f"{type(e).__name__}: {e}")
            finally:
                try:
                    sc.let_continue(self.listener, n.id, buf)
                except OSError as e:
                    self._problem(f"send: {e.strerror}")
                dt = time.monotonic_ns() - t0
                self.held += 1
                self.held_ns += dt
                self.max_ns = max(self.max_ns, dt)

    def _next(self, poll, buf) -> sc.Notification | None:
        """The next held syscall this supervisor must look at, or None after a
        while without one. Compiled (syscalls.hold_next): the ones naming no
        existing regular file (a new file's write-open: most of them), and links
        of files nobody read since the run started (_unread_since_start's
        access-time rule, there), are answered there, without this thread, and
        counted here; _handle would find nothing to keep for them. Raises
        _NoTaskLeft when no task of the run is left under the filter."""
        if hold_next is not None:
            try:
                got, k, ns, most, gone = hold_next(self.listener, 200,
                                                   self.start_wall_ns - SLACK_NS)
            except OSError as e:
                self._problem(f"receive: {e.strerror}")
                time.sleep(0.01)
                return None
            if k:
                self.held += k
                self.at_once += k
                self.held_ns += ns
                self.max_ns = max(self.max_ns, most)
            if gone:
                raise _NoTaskLeft
            return None if got is None else sc.Notification.of(*got)
        try:
            ready = poll.poll(200)
        except InterruptedError:
            return None
        if not ready:
            return None
        events = ready[0][1]
        if not events & select.POLLIN:
            if events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                raise _NoTaskLeft
            return None
        try:
            return sc.receive(self.listener, buf)
        except OSError as e:
            self._problem(f"receive: {e.strerror}")
            time.sleep(0.01)
            return None

    def _handle(self, n: sc.Notification) -> None:
        creating = creates(n)
        for dirfd, path, fd, effect in targets(n):
            where = proc_path(n.pid, dirfd, path, fd)
            try:
                st = os.lstat(where) if effect in (REMOVES, LINKS) else os.stat(where)
            except OSError:
                continue  # nothing there (a new file): nothing to keep
            seen_ns = time.monotonic_ns()  # the file was there by now
            if stat.S_ISDIR(st.st_mode) and effect == REMOVES:  # a directory renamed
                for job in self._below_after_barrier(n.pid, dirfd, path, fd):
                    self.hasher.hurry(job)
                    self.hashed += 1
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            mpath = self.model_path(n.pid, dirfd, path, fd)
            if creating and mpath is not None:
                self.existed.setdefault(mpath, seen_ns)
            key = (st.st_dev, st.st_ino)
            if key in self.settled:
                continue
            job = verdict(self.model, mpath)
            if job is UNKNOWN and not self._unread_since_start(where, st):
                job = self._in_model_thread(verdict, n.pid, dirfd, path, fd)
            elif job is UNKNOWN:
                self.unread += 1
            if job is UNKNOWN and effect == READS_WRITES and mpath is not None \
                    and not self._born_in_run(where):
                # not read by the run so far, but this open may read it and then
                # write it: its version now is what such a read reads first
                self.hasher.preimage(where, mpath)
                self.preimaged += 1
            elif job is not NO and job is not UNKNOWN:
                self.hasher.hurry(job)
                self.hashed += 1
            if effect == EMPTIES:  # its content is the run's from now on
                self.settled.add(key)

    def _unread_since_start(self, where: str, st: os.stat_result) -> bool:
        """Whether nobody can have read the file since the run started, so the
        model need not catch up: its access time is older than the run and a
        read would have moved it (the kernel's relatime rule: atime not after
        mtime or ctime, or a day old; strictatime always), on a mount without
        noatime; or it was born after the run started (the run's own new
        file). Wrong only where a filesystem keeps atime in its own way; the
        input is then recorded unverified, as without the hold, never wrong."""
        start = self.start_wall_ns - SLACK_NS
        a = st.st_atime_ns
        if a < start and (a <= st.st_mtime_ns or a <= st.st_ctime_ns
                          or time.time_ns() - a >= DAY_NS):
            noatime = self._noatime.get(st.st_dev)
            if noatime is None:
                try:
                    noatime = bool(os.statvfs(where).f_flag & os.ST_NOATIME)
                except OSError:
                    noatime = True
                self._noatime[st.st_dev] = noatime
            if not noatime:
                return True
        return self._born_in_run(where)

    def _born_in_run(self, where: str) -> bool:
        """Whether the file was created after the workload's release (the run's
        own). No slack: a file born just before a fast start (the warm launcher
        starts a run ~10 ms after the shell's previous command wrote it) is not
        the run's, and its truncation must wait for its first version. One the
        run made within a clock tick of its release may look older (file times
        come from a coarse clock): it then waits for a barrier, never more."""
        born = birth_ns(where)
        return born is not None and born > self.released_wall_ns

    def _below_after_barrier(self, tid: int, dirfd: int, path: str | None, fd: int) -> list:
        return self._in_model_thread(pending_below, tid, dirfd, path, fd) or []

    def _in_model_thread(self, question, tid: int, dirfd: int, path: str | None, fd: int):
        """question(model, path) asked in the model's thread once it has caught up
        with the held syscall; NO when it cannot be (the run ends) or is late."""
        done = threading.Event()
        box: list = []

        def ask() -> None:  # in the model's thread, caught up with the hold
            try:
                box.append(question(self.model, self.model_path(tid, dirfd, path, fd)))
            finally:
                done.set()

        self.barriers += 1
        if not self.barrier(ask):
            return NO
        if not done.wait(BARRIER_WAIT):
            self.late += 1
            return NO
        return box[0] if box else NO

    def model_path(self, tid: int, dirfd: int, path: str | None, fd: int) -> str | None:
        """The path as the event model names it: resolved against the model's
        own cwd and fd table for the process when it knows it, else against
        the task's /proc links."""
        live = self.model.live
        p = live.get(tid)
        if p is None:
            p = live.get(_tgid(tid))
        if path is not None and path.startswith("/"):
            return _normalize(path)
        base = None
        if p is not None:
            if path is None or dirfd != AT_FDCWD:
                entry = p.fds.get(fd if path is None else dirfd)
                base = entry.file.path if entry is not None else None
            else:
                base = p.cwd
        if base is None:
            link = proc_path(tid, dirfd, None, fd if path is None else dirfd) \
                if path is None or dirfd != AT_FDCWD else f"/proc/{tid}/cwd"
            try:
                base = os.readlink(link)
            except OSError:
                return None
        if path is None:
            return base
        return _normalize(posixpath.join(base, path))


class _NoTaskLeft(Exception):
    """The listener has no task of the run left under its filter."""


def _tgid(tid: int) -> int:
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return tid
