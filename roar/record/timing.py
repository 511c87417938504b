"""Phase timings of a run, printed to stderr when ROAR_TIMING is set (for
profiling roar itself; scripts/bench reads them)."""

from __future__ import annotations

import os
import sys
import time

ENABLED = bool(os.environ.get("ROAR_TIMING"))
_last = time.monotonic()


def mark(phase: str) -> None:
    """Report the time since the previous mark as `phase`."""
    global _last
    now = time.monotonic()
    if ENABLED:
        print(f"roar-timing: {phase} {now - _last:.3f}s", file=sys.stderr)
    _last = now


def cpu() -> None:
    """Report the CPU time roar's own process used (all its threads, not the
    workload's processes), once, just before `roar run` exits."""
    if ENABLED:
        import resource

        ru = resource.getrusage(resource.RUSAGE_SELF)
        print(f"roar-cpu: {ru.ru_utime + ru.ru_stime:.3f}s (user {ru.ru_utime:.3f}s, system "
              f"{ru.ru_stime:.3f}s, {ru.ru_minflt} page faults, peak RSS "
              f"{ru.ru_maxrss >> 10} MiB)", file=sys.stderr)
