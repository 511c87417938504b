"""Content hashing: xxh3-128 in a background thread pool, behind a stat cache.

A file whose (dev, ino, size, mtime_ns, ctime_ns) was hashed before is not
read again. Each file is re-stat'ed after hashing; content that changed
while it was read is hashed again, and after a few tries is reported as
unverified rather than given a hash it may not have.
"""

from __future__ import annotations

import _queue  # queue.py's SimpleQueue and Empty, without queue.py (heapq...)
import mmap
import os
import stat
import sys
import threading
import time

import xxhash

from roar.capture.values import SlotsValue
from roar.record.store import stat_key

CHUNK = 1 << 20
PROGRESS_EVERY = 256 * CHUNK  # bytes between progress reports of a long hash
RETRIES = 3
PREIMAGE_TTL_NS = 5 * 10**9  # Hasher.submit_input
# model_lookup reads the stat cache in one transaction for up to this long (s)
READER_S = 0.05

OK, VANISHED, UNREADABLE, SPECIAL, UNVERIFIED = "ok", "vanished", "unreadable", "special", \
    "unverified"


class HashResult(SlotsValue):
    """What hashing one path gave: a status (OK...), and the hash and size if OK.
    (A plain class: dataclasses cost `roar run` ~13 ms to import.)"""

    __slots__ = ("status", "hash", "size", "started_ns", "finished_ns", "ctime_ns", "born_ns",
                 "cached", "error")

    def __init__(self, status: str, hash: str | None = None, size: int | None = None,
                 started_ns: int = 0, finished_ns: int = 0, ctime_ns: int | None = None,
                 born_ns: int | None = None, cached: bool = False, error: str | None = None):
        self.status = status
        self.hash = hash
        self.size = size
        self.started_ns = started_ns  # CLOCK_MONOTONIC, the clock of kernel event timestamps
        self.finished_ns = finished_ns
        self.ctime_ns = ctime_ns  # of the version hashed (wall clock)
        self.born_ns = born_ns  # creation time, when asked for and recorded
        self.cached = cached
        self.error = error


_AT_FDCWD = -100


def birth_ns(path: str | None, fd: int = _AT_FDCWD) -> int | None:
    """When the file (at path, or open as fd) was created, wall clock ns, where
    the filesystem records it; None when it does not or the file is gone."""
    # (here, not at the module's import: the test session imports this module
    # before it builds roar/capture/_sys.c, whose absence syscalls would keep)
    from roar.capture import syscalls

    if fd != _AT_FDCWD:
        return syscalls.birth_ns(fd, b"", syscalls.AT_EMPTY_PATH)
    return syscalls.birth_ns(fd, os.fsencode(path), 0)


def _open_long(path: str) -> int:
    """Open a path longer than PATH_MAX one directory at a time."""
    parts = [p for p in path.split("/") if p]
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return os.open(parts[-1], os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
                       dir_fd=fd)
    finally:
        os.close(fd)


_EUID = os.geteuid()
_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _open_noatime(path: str, st: os.stat_result | None) -> int:
    """Open to hash, leaving the file's access time alone where the kernel
    lets us (O_NOATIME: our own files, or root's): hashing is not a read by
    anyone, and the pre-image hold (roar/record/preimage.py) reads access
    times to tell a file nobody read since a run started."""
    if _EUID == 0 or (st is not None and st.st_uid == _EUID) or st is None:
        try:
            return os.open(path, _READ | os.O_NOATIME)
        except PermissionError:  # not the owner (EPERM)
            pass
    return os.open(path, _READ)


_read_hash = None
_read_hash_bound = False


def compiled_read_hash():
    """The compiled read-and-hash (roar/record/_readhash.c: no GIL held, a few
    µs per small file), bound to the xxhash package's own xxh3 at the first
    hash (not at import: a checkout's tests import this module before they
    build the extensions); None where it is not built or finds no xxh3 (the
    Python loop below then)."""
    global _read_hash, _read_hash_bound
    if not _read_hash_bound:
        try:
            from roar.record import _readhash
        except ImportError:
            _readhash = None
        lib = getattr(sys.modules.get("xxhash._xxhash"), "__file__", None) or ""
        if _readhash is not None and _readhash.bind(lib):
            _read_hash = _readhash.read_hash
        _read_hash_bound = True
    return _read_hash


_local = threading.local()


def _buffer() -> tuple[mmap.mmap, memoryview]:
    """This thread's read buffer, made once: page-aligned, since xxh3 over a
    bytearray's (page + 16) data runs at a third of its speed on this kind of
    machine (1 GiB: 0.55 s vs 0.16 s). A new 1 MiB mapping per file cost a
    small file's hash more than the rest of it (~25 of ~45 µs of CPU: the
    mapping, its first page's fault, the unmapping)."""
    try:
        return _local.buf
    except AttributeError:
        buf = mmap.mmap(-1, CHUNK)
        _local.buf = buf, memoryview(buf)
        return _local.buf


def _read_loop(fd: int, size: int, progress=None) -> str:
    """The file's xxh3-128 hexdigest, read from its start in Python: where
    the compiled one is missing, and for long files with a progress report."""
    buf, view = _buffer()
    h = xxhash.xxh3_128()
    os.lseek(fd, 0, os.SEEK_SET)
    done = 0
    while True:
        n = os.readv(fd, [buf])
        if not n:
            break
        h.update(view[:n])
        done += n
        if progress is not None and not done % PROGRESS_EVERY:
            progress(done, size)
    return h.hexdigest()


def hash_path(path: str, lookup=None, birth: bool = False,
              progress=None) -> tuple[HashResult, bytes | None]:
    """Hash one file now. Returns the result and its stat-cache key (if new).
    With birth, also note when the file was created (it may be gone later);
    progress(bytes_done, size) is called now and then while a file is read."""
    started = time.monotonic_ns()
    missed = None  # the stat-cache key looked up in vain already
    if lookup is not None and len(path) < 4000:
        # unchanged content seen before: one stat, no open, no read
        try:
            st = os.stat(path)
        except OSError:
            st = None
        if st is not None and stat.S_ISREG(st.st_mode):
            missed = stat_key(st)
            known = lookup(missed)
            if known:
                born = birth_ns(path) if birth else None
                return HashResult(OK, known, st.st_size, started, time.monotonic_ns(),
                                  st.st_ctime_ns, born, cached=True), None
    try:
        if len(path) < 4000:
            fd = _open_noatime(path, st if lookup is not None else None)
        else:
            fd = _open_long(path)
    except FileNotFoundError:
        return HashResult(VANISHED, started_ns=started, finished_ns=time.monotonic_ns()), None
    except PermissionError as e:
        return HashResult(UNREADABLE, started_ns=started, finished_ns=time.monotonic_ns(),
                          error=e.strerror), None
    except OSError as e:
        return HashResult(UNREADABLE, started_ns=started, finished_ns=time.monotonic_ns(),
                          error=e.strerror), None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return HashResult(SPECIAL, started_ns=started, finished_ns=time.monotonic_ns()), None
        key = stat_key(st)
        born = birth_ns(None, fd) if birth else None
        if lookup is not None and key != missed:  # changed since the stat above
            known = lookup(key)
            if known:
                return HashResult(OK, known, st.st_size, started, time.monotonic_ns(),
                                  st.st_ctime_ns, born, cached=True), None
        for _ in range(RETRIES):
            read_hash = _read_hash if _read_hash_bound else compiled_read_hash()
            if read_hash is not None and (progress is None or st.st_size < PROGRESS_EVERY):
                digest = read_hash(fd)[0]
            else:
                digest = _read_loop(fd, st.st_size, progress)
            after = os.fstat(fd)
            if stat_key(after) == key:
                return HashResult(OK, digest, st.st_size, started,
                                  time.monotonic_ns(), st.st_ctime_ns, born), key
            st, key = after, stat_key(after)
        return HashResult(UNVERIFIED, None, st.st_size, started, time.monotonic_ns(),
                          error="content kept changing while it was hashed"), None
    except OSError as e:
        return HashResult(UNREADABLE, started_ns=started, finished_ns=time.monotonic_ns(),
                          error=e.strerror), None
    finally:
        os.close(fd)


class HashJob:
    """A path queued for hashing; `result()` waits for it."""

    __slots__ = ("path", "birth", "value", "hasher", "claimed")

    def __init__(self, path: str, hasher: Hasher, birth: bool = False):
        self.path = path
        self.birth = birth
        self.value: HashResult | None = None
        self.hasher = hasher
        self.claimed = False  # a thread is hashing it (a worker, or hurry())

    def done(self) -> bool:
        return self.value is not None

    def result(self, timeout: float | None = None) -> HashResult | None:
        """The result; None if it is not ready within timeout seconds."""
        if self.value is None:
            self.hasher._wait(self, timeout)
        return self.value


class Hasher:
    """Worker threads hashing queued paths off the caller's thread, sharing one
    stat cache. Jobs are plain objects (no futures): queuing one costs little,
    which matters at tens of thousands of small files per run."""

    def __init__(self, store=None, workers: int = 2):
        self.store = store
        self.queue: _queue.SimpleQueue = _queue.SimpleQueue()
        self.new_entries: list[tuple[bytes, str]] = []
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._waiting = 0
        self._claim_lock = threading.Lock()
        self._memo: dict[bytes, str] = {}
        # path -> (the version the pre-image hold took before an O_RDWR open,
        # when): what a first read through that open read (submit_input)
        self.preimages: dict[str, tuple[HashResult, int]] = {}
        self.failure: str | None = None  # the store's cache could not be read (damaged)
        self._reader = None  # model_lookup's read transaction, and when it began
        self._reader_at = 0.0
        self._workers = threading.local()  # each worker's _reader (_worker_lookup)
        # started with the first job: a run that hashes nothing (most short ones,
        # whose reads are all in the stat cache) starts no thread for it
        self._n_workers = workers
        self._threads: list[threading.Thread] = []
        self._stopped = False

    def _lookup(self, key: bytes) -> str | None:
        h = self._memo.get(key)
        store = self.store
        if h is None and store is not None:
            try:
                h = store.cached_hash_key(key)
            except Exception as e:  # noqa: BLE001 - lmdb.Error on a damaged store, or worse
                # random bytes in data.mdb surface only when LMDB reads them (a
                # MDB_BAD_TXN or MDB_CORRUPTED here): hash without the cache, and
                # say so on the run rather than let the worker die
                self.store = None
                self.failure = self.failure or f"{type(e).__name__}: {e}"
        return h

    def _worker_lookup(self, key: bytes) -> str | None:
        """_lookup for a worker thread: as model_lookup, in a read transaction
        of the thread's own, which _loop ends before the thread waits for more
        jobs (an idle reader would hold back LMDB's reuse of freed pages). One
        per lookup was ~6 % of a run hashing 20,000 new outputs."""
        return self._lookup_in(self._workers, key)

    def _end_worker_reader(self) -> None:
        txn = getattr(self._workers, "_reader", None)
        if txn is not None:
            self._workers._reader = None
            txn.abort()

    def model_lookup(self, key: bytes) -> str | None:
        """_lookup for the model's thread, which asks on every input's first
        read (roar/record/_cmodel.c): the store is read in one transaction
        kept for up to READER_S seconds, not one per lookup. Its snapshot is
        at most that old: an entry newer than it is a miss, and the file is
        hashed (by the workers, as without it)."""
        return self._lookup_in(self, key)

    def _lookup_in(self, holder, key: bytes) -> str | None:
        """The memo, then the stat cache through holder's read transaction
        (holder._reader, begun at holder._reader_at; renewed after READER_S):
        the Hasher itself for the model's thread, a worker's thread-local."""
        h = self._memo.get(key)
        store = self.store
        if h is not None or store is None:
            return h
        try:
            now = time.monotonic()
            txn = getattr(holder, "_reader", None)
            if txn is None or now - holder._reader_at > READER_S:
                if txn is not None:
                    holder._reader = None
                    txn.abort()
                holder._reader = txn = store._begin(db=store.dbs["statcache"])
                holder._reader_at = now
            raw = txn.get(key)
        except Exception as e:  # noqa: BLE001 - a damaged store: as _lookup, hash without it
            self.store = None
            self.failure = self.failure or f"{type(e).__name__}: {e}"
            return None
        return None if raw is None else bytes(raw).decode()

    def model_reader(self):
        """The get of a new read transaction of the stat cache (the one before
        it ended), for the compiled model, which does model_lookup's work
        itself (roar/record/_cmodel.c stat_cache_get) and asks for a new one
        every READER_S seconds; None when there is no store to read (the
        model then asks model_lookup)."""
        store = self.store
        if self._reader is not None:
            self._reader.abort()
            self._reader = None
        if store is None:
            return None
        try:
            self._reader = store._begin(db=store.dbs["statcache"])
        except Exception:  # noqa: BLE001 - model_lookup tries again and says what failed
            return None
        self._reader_at = time.monotonic()
        return self._reader.get

    def _run(self, path: str, birth: bool = False, lookup=None) -> HashResult:
        result, key = hash_path(path, lookup or self._lookup, birth)
        if key is not None and result.hash:
            with self._lock:
                self._memo[key] = result.hash
                self.new_entries.append((key, result.hash))
        return result

    def _loop(self) -> None:
        while True:
            try:
                job = self.queue.get_nowait()
            except _queue.Empty:
                self._end_worker_reader()  # no snapshot held while idle
                job = self.queue.get()
            if job is None:
                self._end_worker_reader()
                return
            if self._claim(job):
                self._do(job, self._worker_lookup)

    def _claim(self, job: HashJob) -> bool:
        with self._claim_lock:
            if job.claimed:
                return False
            job.claimed = True
            return True

    def _do(self, job: HashJob, lookup=None) -> None:
        try:
            job.value = self._run(job.path, job.birth, lookup)
        except Exception as e:  # noqa: BLE001 - no job may wait forever; named on the run
            self.failure = self.failure or f"{type(e).__name__}: {e}"
            job.value = HashResult(UNREADABLE, error=f"the hasher failed: {e}")
        if self._waiting:
            with self._done:
                self._done.notify_all()

    def hurry(self, job: HashJob) -> HashResult | None:
        """The job's result now: hashed in the calling thread unless a worker
        has started it already (then waited for). For the pre-image hold
        (roar/record/preimage.py), whose held syscall must not wait for the
        jobs queued before this one."""
        if self._claim(job):
            self._do(job)
        return job.result()

    def _wait(self, job: HashJob, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._done:
            self._waiting += 1
            while job.value is None:
                left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                if left <= 0:
                    break
                self._done.wait(left)
            self._waiting -= 1

    def submit(self, path: str, birth: bool = False) -> HashJob:
        job = HashJob(path, self, birth)
        if not self._threads and not self._stopped:
            self._start()
        if not self._threads and self._n_workers:  # no thread could be had: hashed here
            self.hurry(job)
            return job
        self.queue.put(job)
        return job

    def _start(self) -> None:
        """The workers, at the first job. Where the job's pids.max (roar's
        threads count in it) refuses even the first, there are none, and
        submit hashes in its caller's thread: slower, never wrong."""
        with self._claim_lock:
            if self._threads or self._stopped:
                return
            threads = []
            for i in range(self._n_workers):
                t = threading.Thread(target=self._loop, name=f"roar-hash-{i}", daemon=True)
                try:
                    t.start()
                except RuntimeError:  # "can't start new thread"
                    break
                threads.append(t)
            self._threads = threads

    def submit_input(self, path: str, birth: bool = False) -> HashJob:
        """submit, for the model's first read of a path: the version the
        pre-image hold took just before an O_RDWR open of it, when there is one
        taken in the last PREIMAGE_TTL_NS (the model follows the run by far less;
        an older one may predate a change by someone else: hashed now, as
        without the hold)."""
        pre = self.preimages.pop(path, None) if self.preimages else None
        if pre is not None and time.monotonic_ns() - pre[1] <= PREIMAGE_TTL_NS:
            job = HashJob(path, self, birth)
            job.claimed, job.value = True, pre[0]
            return job
        return self.submit(path, birth)

    def preimage(self, where: str, path: str) -> HashResult:
        """Hash the file at `where` now, in the calling thread (the pre-image
        hold, before an open that may read it and then write it): a first read
        of `path` the model sees soon after gets this version (submit_input)."""
        result = self._run(where)
        if result.status == OK:
            self.preimages[path] = (result, time.monotonic_ns())
        return result

    def hash_now(self, path: str) -> HashResult:
        return self._run(path)

    def take_new_entries(self) -> list[tuple[bytes, str]]:
        with self._lock:
            out, self.new_entries = self.new_entries, []
        return out

    def shutdown(self, wait: bool = True) -> None:
        """Stop the workers; without wait, a hash in progress is abandoned
        (its file is recorded as pending and hashed by a background job)."""
        with self._claim_lock:
            self._stopped = True
            threads = self._threads
        for _ in threads:
            self.queue.put(None)
        if self._reader is not None:  # (the model's thread has ended)
            self._reader.abort()
            self._reader = None
        if wait:
            for t in threads:
                t.join()
