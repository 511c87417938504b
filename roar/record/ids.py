"""Identifiers: time-ordered, globally unique run ids (ULID form) and the
host identity every record carries, so stores from many nodes can merge."""

from __future__ import annotations

import _socket  # not socket: its Python half is ~3 ms of `roar run`'s start
import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_run_id(now_ms: int | None = None) -> str:
    """26 characters: 48 bits of milliseconds then 80 random bits."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    out = []
    for _ in range(26):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


def now_iso() -> str:
    """UTC wall time, milliseconds, ISO 8601 with a Z."""
    ns = time.time_ns()
    secs, ms = divmod(ns // 1_000_000, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ms:03d}Z"


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def hostname() -> str:
    """This node's host id: ROAR_HOST_ID when set (nodes whose hostnames repeat,
    e.g. containers, or simulated nodes), else the hostname."""
    return os.environ.get("ROAR_HOST_ID") or _socket.gethostname()
