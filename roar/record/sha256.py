"""SHA-256 and HMAC-SHA256 of what `roar run` hashes with them (its redacted
secrets, its tamper-evident chain digest), without loading OpenSSL for small
inputs: importing hashlib loads libcrypto (~4 ms of every run's start), while
the interpreter's own SHA-256 costs nothing to import and is as fast on a few
kilobytes. OpenSSL's (~6x faster on large inputs) is used from LARGE bytes up.
The digests are SHA-256's whichever implementation computes them."""

from __future__ import annotations

try:
    from _sha256 import sha256 as _builtin  # CPython 3.10, 3.11
except ImportError:
    try:
        from _sha2 import sha256 as _builtin  # CPython 3.12+
    except ImportError:  # an interpreter built without it
        from hashlib import sha256 as _builtin

LARGE = 1 << 20  # bytes from which OpenSSL's start-up cost is paid back
BLOCK = 64  # SHA-256's block size: HMAC pads its key to it
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def sha256(data: bytes = b""):
    """A SHA-256 hash object (hashlib's interface) holding data."""
    if len(data) >= LARGE:
        import hashlib

        return hashlib.sha256(data)
    return _builtin(data)


def hmac_sha256(key: bytes, msg: bytes) -> str:
    """hmac.new(key, msg, hashlib.sha256).hexdigest() (RFC 2104), for a key
    and message of a few bytes (a secret)."""
    if len(key) > BLOCK:
        key = _builtin(key).digest()
    key = key.ljust(BLOCK, b"\0")
    inner = _builtin(key.translate(_IPAD))
    inner.update(msg)
    outer = _builtin(key.translate(_OPAD))
    outer.update(inner.digest())
    return outer.hexdigest()
