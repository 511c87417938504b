"""Decoding of the kernel's event records, derived from bpf/roar_event.h.

The header is the single definition of the record layout and its constants;
this module parses it once at import so the two sides cannot drift apart.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"
if not BPF_DIR.is_dir():  # source checkout: bpf/ sits beside the package
    BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"
HEADER = BPF_DIR / "roar_event.h"

_CTYPES = {"u16": "H", "s16": "h", "u32": "I", "s32": "i", "u64": "Q", "s64": "q"}


def _parse_header(text: str) -> tuple[dict[str, int], list[str], str]:
    consts = {
        name: int(value, 0)
        for name, value in re.findall(r"^#define\s+(\w+)\s+(-?(?:0x)?[0-9a-fA-F]+)\b", text, re.M)
    }
    body = re.search(r"struct roar_event\s*\{(.*?)\};", text, re.S)
    if not body:
        raise RuntimeError(f"{HEADER}: struct roar_event not found")
    fields, fmt = [], "<"
    for ctype, name in re.findall(r"^\s*(\w+)\s+(\w+);", body.group(1), re.M):
        if ctype not in _CTYPES:
            raise RuntimeError(f"{HEADER}: unsupported field type {ctype} {name}")
        fields.append(name)
        fmt += _CTYPES[ctype]
    return consts, fields, fmt


CONSTS, FIELDS, FORMAT = _parse_header(HEADER.read_text())
HEADER_STRUCT = struct.Struct(FORMAT)
HEADER_SIZE = HEADER_STRUCT.size
PATH_MAX = CONSTS["ROAR_PATH_MAX"]
TAG_LEVELS = CONSTS["ROAR_TAG_LEVELS"]  # run cgroups can be traced at levels 1..TAG_LEVELS-1
CGROUP_OFFSET = struct.calcsize(FORMAT[: 1 + FIELDS.index("cgroup")])

EVENT_NAMES = {v: k[3:].lower() for k, v in CONSTS.items() if k.startswith("EV_")}
globals().update({k: v for k, v in CONSTS.items() if k.startswith(("EV_", "EVF_"))})


@dataclass(slots=True)
class Event:
    ts: int
    cgroup: int
    tgid: int
    tid: int
    type: int
    flags: int
    fd: int
    ret: int
    a0: int
    a1: int
    a2: int
    path: str | None = None
    path2: str | None = None
    argv: list[str] | None = None
    raw: bytes = b""

    @property
    def name(self) -> str:
        return EVENT_NAMES.get(self.type, f"unknown{self.type}")


def _cstr(data: bytes) -> str:
    end = data.find(b"\0")
    return os.fsdecode(data if end < 0 else data[:end])


def decode(buf: bytes) -> Event:
    """Decode one record (header plus its variable part)."""
    h = HEADER_STRUCT.unpack_from(buf)
    ev = Event(*h[:11])
    len1, len2 = h[11], h[12]
    data = buf[HEADER_SIZE:]
    t = ev.type
    if t == EV_EXEC:  # noqa: F821 - defined from the header above
        ev.path = _cstr(data[:len1]) if len1 else None
        blob = data[PATH_MAX : PATH_MAX + len2]
        parts = blob.split(b"\0")
        if parts and parts[-1] == b"":
            parts.pop()
        ev.argv = [os.fsdecode(p) for p in parts]
    elif t in (EV_CONNECT, EV_TLS_WRITE, EV_TLS_READ):  # noqa: F821
        ev.raw = bytes(data[:len1])
    elif len1 or len2:
        ev.path = _cstr(data[:len1]) if len1 else None
        if len2:
            ev.path2 = _cstr(data[PATH_MAX : PATH_MAX + len2])
    return ev


def cgroup_of(buf: bytes) -> int:
    """The run cgroup of a raw record, without decoding the rest."""
    return struct.unpack_from("<Q", buf, CGROUP_OFFSET)[0]
