"""The roard socket protocol: newline-terminated JSON requests from the
client; the daemon answers with frames: 1 type byte, 4-byte little-endian
length, payload. Type E carries one raw kernel record, J one JSON message,
B a barrier (8-byte little-endian number): every record the kernel committed
before the client asked for that barrier came before it (the pre-image hold,
roar/record/preimage.py).
"""

from __future__ import annotations

import os
import struct

from roar.capture import jsonc

FRAME = struct.Struct("<cI")
MAX_REQUEST = 64 << 10
MAX_FRAME = 1 << 20
MAX_DEPTH = 4  # requests are flat objects; root_fds is the one nested map
EVENT, JSON, BARRIER = b"E", b"J", b"B"


class ProtocolError(Exception):
    pass


# `roar run` imports no pathlib (with what it pulls, ~5 ms of every run's start on
# a small machine): its modules keep paths as str, and make a Path where one is asked for.
DEFAULT_SOCKET_NAME = "/run/roar/roard.sock"  # the system roard's


def __getattr__(name: str):
    if name == "DEFAULT_SOCKET":  # a Path, as before
        from pathlib import Path

        return Path(DEFAULT_SOCKET_NAME)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def socket_name() -> str:
    return os.environ.get("ROAR_SOCKET", DEFAULT_SOCKET_NAME)


def socket_path():
    """socket_name() as a Path."""
    from pathlib import Path

    return Path(socket_name())


def encode_json(obj) -> bytes:
    payload = jsonc.dumps(obj, separators=(",", ":")).encode()
    return FRAME.pack(JSON, len(payload)) + payload


def encode_events(records) -> bytes:
    return b"".join(FRAME.pack(EVENT, len(r)) + r for r in records)


def encode_barrier(n: int) -> bytes:
    return FRAME.pack(BARRIER, 8) + n.to_bytes(8, "little")


def read_frame(f) -> tuple[bytes, bytes] | None:
    """(type, payload) from a binary file object; None at end of stream."""
    head = f.read(FRAME.size)
    if not head:
        return None
    if len(head) < FRAME.size:
        raise ProtocolError("truncated frame header")
    kind, n = FRAME.unpack(head)
    if n > MAX_FRAME:
        raise ProtocolError(f"frame of {n} bytes is too large")
    payload = f.read(n)
    if len(payload) < n:
        raise ProtocolError("truncated frame")
    return kind, payload


# `roar run`'s sockets are the C module's (_socket): the socket module's Python
# half (its enums, selectors) is ~3-5 ms of every run's start, for none of
# what the client uses. These two are socket.send_fds/recv_fds for them.


def send_fds(sock, data: bytes, fds: list[int]) -> int:
    """data with fds (SCM_RIGHTS) in one sendmsg, as socket.send_fds."""
    import _socket

    return sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                  struct.pack(f"{len(fds)}i", *fds))])


def recv_fds(sock, bufsize: int, maxfds: int) -> tuple[bytes, list[int]]:
    """(data, fds) of one recvmsg, as socket.recv_fds."""
    import _socket

    msg, ancdata, _flags, _addr = sock.recvmsg(bufsize, _socket.CMSG_LEN(maxfds * 4))
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            n = len(data) // 4
            fds.extend(struct.unpack(f"{n}i", data[:4 * n]))
    return msg, fds


class SessionError(Exception):
    """A capture session (embedded probes or roard's) cannot start or go on."""


class NoDaemon(Exception):
    """Nothing answers on roard's socket."""


def ask(request: dict, path: str | os.PathLike | None = None,
        timeout: float | None = None) -> dict:
    """One request to roard and its one JSON answer: the small client every
    one-shot op uses (status, training-request review). NoDaemon when nothing
    listens; ProtocolError when roard hangs up without an answer."""
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path or socket_name()))
        except OSError as e:
            raise NoDaemon(f"roard is not reachable: {e.strerror}") from None
        sock.sendall(jsonc.dumps(request).encode() + b"\n")
        frame = read_frame(sock.makefile("rb"))
    finally:
        sock.close()
    if frame is None or frame[0] != JSON:
        raise ProtocolError("roard closed the connection without an answer")
    return jsonc.loads(frame[1])


def parse_request(line: bytes) -> dict:
    if len(line) > MAX_REQUEST:
        raise ProtocolError("request too large")
    try:
        req = jsonc.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("request is not JSON") from None
    except RecursionError:  # a deeply nested request: refused, not a traceback
        raise ProtocolError("request is nested too deeply") from None
    if _depth(req) > MAX_DEPTH:
        raise ProtocolError("request is nested too deeply")
    if not isinstance(req, dict) or not isinstance(req.get("op"), str):
        raise ProtocolError("request has no op")
    return req


def _depth(obj) -> int:
    """How deeply lists and objects nest in a decoded request (iterative: the
    check itself must not recurse)."""
    deepest, todo = 0, [(obj, 1)]
    while todo:
        o, d = todo.pop()
        if isinstance(o, dict):
            o = list(o.values())
        if isinstance(o, list):
            deepest = max(deepest, d)
            if d > MAX_DEPTH:
                return d
            todo.extend((x, d + 1) for x in o)
    return deepest
