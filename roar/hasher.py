"""Content hashing: xxh3-128 in a background thread pool, behind a stat cache.

A file whose (dev, ino, size, mtime_ns, ctime_ns) was hashed before is not
read again. Each file is re-stat'ed after hashing; content that changed
while it was read is hashed again, and after a few tries is reported as
unverified rather than given a hash it may not have.
"""

from __future__ import annotations

import os
import queue
import stat
import threading
import time
from dataclasses import dataclass

import xxhash

from .store import stat_key

CHUNK = 1 << 20
RETRIES = 3

OK, VANISHED, UNREADABLE, SPECIAL, UNVERIFIED = "ok", "vanished", "unreadable", "special", \
    "unverified"


@dataclass(slots=True)
class HashResult:
    status: str
    hash: str | None = None
    size: int | None = None
    started_ns: int = 0   # CLOCK_MONOTONIC, the clock of kernel event timestamps
    finished_ns: int = 0
    cached: bool = False
    error: str | None = None


def hash_path(path: str, lookup=None) -> tuple[HashResult, bytes | None]:
    """Hash one file now. Returns the result and its stat-cache key (if new)."""
    started = time.monotonic_ns()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
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
        if lookup is not None:
            known = lookup(key)
            if known:
                return HashResult(OK, known, st.st_size, started, time.monotonic_ns(),
                                  cached=True), None
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        for _ in range(RETRIES):
            h = xxhash.xxh3_128()
            os.lseek(fd, 0, os.SEEK_SET)
            while True:
                n = os.readv(fd, [buf])
                if not n:
                    break
                h.update(view[:n])
            after = os.fstat(fd)
            if stat_key(after) == key:
                return HashResult(OK, h.hexdigest(), st.st_size, started,
                                  time.monotonic_ns()), key
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

    __slots__ = ("path", "value", "hasher")

    def __init__(self, path: str, hasher: "Hasher"):
        self.path = path
        self.value: HashResult | None = None
        self.hasher = hasher

    def done(self) -> bool:
        return self.value is not None

    def result(self) -> HashResult:
        if self.value is None:
            self.hasher._wait(self)
        return self.value


class Hasher:
    """Worker threads hashing queued paths off the caller's thread, sharing one
    stat cache. Jobs are plain objects (no futures): queuing one costs little,
    which matters at tens of thousands of small files per run."""

    def __init__(self, store=None, workers: int = 2):
        self.store = store
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.new_entries: list[tuple[bytes, str]] = []
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._waiting = 0
        self._memo: dict[bytes, str] = {}
        self._threads = [threading.Thread(target=self._loop, name=f"roar-hash-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    def _lookup(self, key: bytes) -> str | None:
        h = self._memo.get(key)
        if h is None and self.store is not None:
            h = self.store.cached_hash_key(key)
        return h

    def _run(self, path: str) -> HashResult:
        result, key = hash_path(path, self._lookup)
        if key is not None and result.hash:
            with self._lock:
                self._memo[key] = result.hash
                self.new_entries.append((key, result.hash))
        return result

    def _loop(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            job.value = self._run(job.path)
            if self._waiting:
                with self._done:
                    self._done.notify_all()

    def _wait(self, job: HashJob) -> None:
        with self._done:
            self._waiting += 1
            while job.value is None:
                self._done.wait(0.5)
            self._waiting -= 1

    def submit(self, path: str) -> HashJob:
        job = HashJob(path, self)
        self.queue.put(job)
        return job

    def hash_now(self, path: str) -> HashResult:
        return self._run(path)

    def take_new_entries(self) -> list[tuple[bytes, str]]:
        with self._lock:
            out, self.new_entries = self.new_entries, []
        return out

    def shutdown(self) -> None:
        for _ in self._threads:
            self.queue.put(None)
        for t in self._threads:
            t.join()
