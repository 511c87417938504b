"""What every CLI command prints the same way: one-line errors, JSON documents."""

from __future__ import annotations

import sys

# `roar run` refused or failed before its command started (as env, timeout, nice)
RUN_REFUSED = 125


def fail(msg: str, code: int = 2):
    """A user error: one line on stderr, a non-zero exit, no traceback."""
    sys.stdout.flush()
    print(f"roar: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def print_json(obj) -> None:
    # ASCII-only: paths with bytes that are not UTF-8 (kept as surrogate
    # escapes) still make valid JSON, as \udcXX escapes
    import json  # here: `roar run` prints no JSON (roar/capture/jsonc.py)

    print(json.dumps(obj, indent=2, ensure_ascii=True, default=str))


class HashProgress:
    """What long hashing is at, on one line of stderr that rewrites itself: a
    query hashing a big file or a directory, waiting hashes being finished.
    Made only for a terminal (hash_progress()); at most ten updates a second."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.files = 0
        self.shown = False
        self._path = None
        self._last = 0.0

    def __call__(self, path: str, done: int, size: int | None) -> None:
        import time

        if path != self._path:
            self._path = path
            self.files += 1
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        where = path if len(path) <= 50 else "..." + path[-47:]
        count = f"{self.files} files, " if self.files > 1 else ""
        pct = f" {100 * done // size}% of {human_size(size)}" if size else ""
        self.stream.write(f"\r\x1b[Kroar: hashing ({count}now {where}){pct}")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def hash_progress() -> HashProgress | None:
    """A progress line for long hashing when stderr is a terminal, else None."""
    return HashProgress() if sys.stderr.isatty() else None


class query_progress:  # noqa: N801 - used as the function it was (`with query_progress(...)`)
    """hash_progress() for a query's block: its line is gone when the block
    ends, and one of `errors` raised in it is the command's one-line error.
    (A class, not a contextlib.contextmanager: `roar run` imports this module,
    and contextlib is ~1 ms of its start.)"""

    def __init__(self, *errors: type[Exception]):
        self.errors = errors
        self.progress = None

    def __enter__(self) -> HashProgress | None:
        self.progress = hash_progress()
        return self.progress

    def __exit__(self, kind, e, tb) -> bool:
        if kind is None:
            if self.progress:
                self.progress.clear()
        elif issubclass(kind, self.errors):
            if self.progress:
                self.progress.clear()
            fail(str(e))
        return False


def human_size(n) -> str:
    """A byte count as people read it: 512B, 3.4K, 12.0G (- when unknown)."""
    if n is None:
        return "-"
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)
