"""Path and address helpers of the process model, shared by model.py (the
oracle) and the compiled model (_cmodel.c), which imports only this module of
the two: a run's start does not pay for the Python model's classes."""

from __future__ import annotations

import _socket  # the C half: the Python one is ~3 ms of `roar run`'s start
import os
import posixpath
import re
import struct

_FD_ALIAS = re.compile(r"^/dev/(?:(?P<std>stdin|stdout|stderr)|fd/(?P<fd>\d+))$"
                       r"|^/proc/(?P<pid>self|thread-self|\d+)/fd/(?P<fd2>\d+)$")


def _normalize(path: str) -> str:
    """Like the kernel: a `..` steps out of where the path really is, so the
    part before it is resolved through symlinks; everything else stays as
    written (a symlinked data path keeps the name the user used)."""
    if "/.." not in path:
        return posixpath.normpath(path)
    head, sep, tail = path.rpartition("/..")
    if tail and not tail.startswith("/"):
        return posixpath.normpath(path)  # a name like "/..foo", not a step up
    return posixpath.normpath(posixpath.join(os.path.realpath(head or "/"), ".." + tail))


def decode_sockaddr(raw: bytes) -> dict | None:
    """A connect() target as {family, address, port} (UAPI sockaddr layouts)."""
    if len(raw) < 2:
        return None
    family = struct.unpack_from("<H", raw)[0]
    if family == _socket.AF_INET and len(raw) >= 8:
        port = struct.unpack_from(">H", raw, 2)[0]
        return {"family": "inet", "address": _socket.inet_ntop(_socket.AF_INET, raw[4:8]),
                "port": port}
    if family == _socket.AF_INET6 and len(raw) >= 24:
        port = struct.unpack_from(">H", raw, 2)[0]
        return {"family": "inet6", "address": _socket.inet_ntop(_socket.AF_INET6, raw[8:24]),
                "port": port}
    if family == _socket.AF_UNIX:
        body = raw[2:]
        if body[:1] == b"\0":
            name = "@" + os.fsdecode(body[1:].split(b"\0", 1)[0])
        else:
            name = os.fsdecode(body.split(b"\0", 1)[0])
        return {"family": "unix", "address": name, "port": None}
    return None
