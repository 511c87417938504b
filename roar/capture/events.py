"""Decoding of the kernel's event records, derived from bpf/roar_event.h.

The header is the single definition of the record layout and its constants;
this module parses it once at import so the two sides cannot drift apart.
"""

from __future__ import annotations

import os
import re
import struct
import zlib

from roar.capture.values import SlotsValue

# str paths (`roar run` imports no pathlib); BPF_DIR and HEADER are Paths, made when asked for
_PKG = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
BPF_DIR_NAME = os.path.join(_PKG, "bpf")
if not os.path.isdir(BPF_DIR_NAME):  # source checkout: bpf/ sits beside the package
    BPF_DIR_NAME = os.path.join(os.path.dirname(_PKG), "bpf")
HEADER_NAME = os.path.join(BPF_DIR_NAME, "roar_event.h")


def __getattr__(name: str):
    if name in ("BPF_DIR", "HEADER"):
        from pathlib import Path

        return Path(BPF_DIR_NAME if name == "BPF_DIR" else HEADER_NAME)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_CTYPES = {"u16": "H", "s16": "h", "u32": "I", "s32": "i", "u64": "Q", "s64": "q"}


def struct_fields(text: str, struct_name: str) -> tuple[list[str], str]:
    """The field names of a struct in the header, and its struct-module format."""
    body = re.search(rf"struct {struct_name}\s*\{{(.*?)\}};", text, re.S)
    if not body:
        raise RuntimeError(f"{HEADER_NAME}: struct {struct_name} not found")
    fields, fmt = [], "<"
    for ctype, name in re.findall(r"^\s*(\w+)\s+(\w+);", body.group(1), re.M):
        if ctype not in _CTYPES:
            raise RuntimeError(f"{HEADER_NAME}: unsupported field type {ctype} {name}")
        fields.append(name)
        fmt += _CTYPES[ctype]
    return fields, fmt


def _parse_header(text: str) -> tuple[dict[str, int], list[str], str]:
    consts = {
        name: int(value, 0)
        for name, value in re.findall(r"^#define\s+(\w+)\s+(-?(?:0x)?[0-9a-fA-F]+)\b", text, re.M)
    }
    return (consts, *struct_fields(text, "roar_event"))


with open(HEADER_NAME) as _f:
    _TEXT = _f.read()
CONSTS, FIELDS, FORMAT = _parse_header(_TEXT)
PROC_STATE_FIELDS = struct_fields(_TEXT, "proc_state")[0]  # the procs map's value
HEADER_STRUCT = struct.Struct(FORMAT)
HEADER_SIZE = HEADER_STRUCT.size
PATH_MAX = CONSTS["ROAR_PATH_MAX"]
TAG_LEVELS = CONSTS["ROAR_TAG_LEVELS"]  # run cgroups can be traced at levels 1..TAG_LEVELS-1
CGROUP_OFFSET = struct.calcsize(FORMAT[: 1 + FIELDS.index("cgroup")])

EVENT_NAMES = {v: k[3:].lower() for k, v in CONSTS.items() if k.startswith("EV_")}
# what roard's records mean: the record's fields and every constant of the header.
# roard says it on each run; a client of another roar refuses it rather than
# misread its records (a roard left running across an upgrade)
LAYOUT = f"{zlib.crc32(repr((FORMAT, FIELDS, sorted(CONSTS.items()))).encode()):08x}"

# Event types and flags, by name, with the header's values (a reader greps
# for EV_OPEN and finds it here). A name the header adds must be added here:
# the check below refuses to start with one missing.
EV_OPEN = CONSTS["EV_OPEN"]
EV_READ = CONSTS["EV_READ"]
EV_WRITE = CONSTS["EV_WRITE"]
EV_MMAP = CONSTS["EV_MMAP"]
EV_CLOSE = CONSTS["EV_CLOSE"]
EV_DUP = CONSTS["EV_DUP"]
EV_FORK = CONSTS["EV_FORK"]
EV_EXEC = CONSTS["EV_EXEC"]
EV_EXEC_RET = CONSTS["EV_EXEC_RET"]
EV_EXIT = CONSTS["EV_EXIT"]
EV_RENAME = CONSTS["EV_RENAME"]
EV_LINK = CONSTS["EV_LINK"]
EV_UNLINK = CONSTS["EV_UNLINK"]
EV_TRUNCATE = CONSTS["EV_TRUNCATE"]
EV_FTRUNCATE = CONSTS["EV_FTRUNCATE"]
EV_CHDIR = CONSTS["EV_CHDIR"]
EV_FCHDIR = CONSTS["EV_FCHDIR"]
EV_CONNECT = CONSTS["EV_CONNECT"]
EV_IOURING = CONSTS["EV_IOURING"]
EV_CLOSE_RANGE = CONSTS["EV_CLOSE_RANGE"]
EV_FDFLAGS = CONSTS["EV_FDFLAGS"]
EV_REAP = CONSTS["EV_REAP"]
HTTP_SOCKET_KEY = CONSTS["HTTP_SOCKET_KEY"]  # an EV_TLS_* a0 with this bit: a plain TCP socket
EV_TLS_WRITE = CONSTS["EV_TLS_WRITE"]
EV_TLS_READ = CONSTS["EV_TLS_READ"]
EV_TLS_FREE = CONSTS["EV_TLS_FREE"]

EVF_TRUNCATED = CONSTS["EVF_TRUNCATED"]
EVF_FAULT = CONSTS["EVF_FAULT"]
EVF_EXITED = CONSTS["EVF_EXITED"]
EVF_SIGNALED = CONSTS["EVF_SIGNALED"]
EVF_BYTES_UNKNOWN = CONSTS["EVF_BYTES_UNKNOWN"]
EVF_ARGV_PACKED = CONSTS["EVF_ARGV_PACKED"]
EVF_EXEC_FLUSH = CONSTS["EVF_EXEC_FLUSH"]
EVF_FDS_OPEN = CONSTS["EVF_FDS_OPEN"]
EXEC_FDS_KNOWN = CONSTS["EXEC_FDS_KNOWN"]

# Access bits of an open file (EV_MMAP's a0, EV_CLOSE's ret)
FD_READ = CONSTS["FD_READ"]
FD_WRITE = CONSTS["FD_WRITE"]
FD_MAP_READ = CONSTS["FD_MAP_READ"]
FD_MAP_WRITE = CONSTS["FD_MAP_WRITE"]
FD_NAMED = CONSTS["FD_NAMED"]  # the fd names a regular file with a name

CLOSE_RANGE_CLOEXEC = CONSTS["CLOSE_RANGE_CLOEXEC"]  # EV_CLOSE_RANGE's a1: mark, do not close

GEN_TAGS = CONSTS["GEN_TAGS"]  # the generation userspace bumps after tagging (bpf/tagging.h)
GEN_PROCS = CONSTS["GEN_PROCS"]
GEN_MOVES = CONSTS["GEN_MOVES"]  # bumped by every new task and cgroup move (bpf/tagging.h)

SHARED_PREFIXES = ("EV_", "EVF_", "FD_", "CLOSE_RANGE_", "GEN_")  # the names both sides read
_MISSING = {k for k in CONSTS if k.startswith(SHARED_PREFIXES)} - globals().keys()
if _MISSING:
    raise RuntimeError(f"{HEADER_NAME}: {', '.join(sorted(_MISSING))} not named in {__file__}")


class Event(SlotsValue):
    """One decoded ring-buffer record (struct roar_event, bpf/roar_event.h).
    (A plain class: dataclasses cost `roar run` ~13 ms to import.)"""

    __slots__ = ("ts", "cgroup", "tgid", "tid", "type", "flags", "fd", "ret", "a0", "a1", "a2",
                 "path", "path2", "argv", "raw")

    def __init__(self, ts: int, cgroup: int, tgid: int, tid: int, type: int, flags: int,
                 fd: int, ret: int, a0: int, a1: int, a2: int, path: str | None = None,
                 path2: str | None = None, argv: list[str] | None = None, raw: bytes = b""):
        self.ts = ts
        self.cgroup = cgroup
        self.tgid = tgid
        self.tid = tid
        self.type = type
        self.flags = flags
        self.fd = fd
        self.ret = ret
        self.a0 = a0
        self.a1 = a1
        self.a2 = a2
        self.path = path
        self.path2 = path2
        self.argv = argv
        self.raw = raw

    @property
    def name(self) -> str:
        return EVENT_NAMES.get(self.type, f"unknown{self.type}")

    @property
    def dirfd2(self) -> int:
        """The second dirfd of a rename or link (in a0): an int to the kernel,
        whatever the upper half of its register held. coreutils' mv and ln pass
        AT_FDCWD zero-extended (0xffffff9c), Python sign-extended."""
        return ((self.a0 & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000


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
    if t == EV_EXEC:
        ev.path = _cstr(data[:len1]) if len1 else None
        at = len1 if ev.flags & EVF_ARGV_PACKED else PATH_MAX
        blob = data[at : at + len2]
        parts = blob.split(b"\0")
        if parts and parts[-1] == b"":
            parts.pop()
        ev.argv = [os.fsdecode(p) for p in parts]
    elif t in (EV_CONNECT, EV_TLS_WRITE, EV_TLS_READ):
        ev.raw = bytes(data[:len1])
    elif len1 or len2:
        ev.path = _cstr(data[:len1]) if len1 else None
        if len2:
            ev.path2 = _cstr(data[PATH_MAX : PATH_MAX + len2])
    return ev


def cgroup_of(buf: bytes) -> int:
    """The run cgroup of a raw record, without decoding the rest."""
    return struct.unpack_from("<Q", buf, CGROUP_OFFSET)[0]


def program_text(bpf_dir: str | os.PathLike | None = None) -> str:
    """bpf/roar.bpf.c with its local includes inlined: BCC generates tracepoint
    argument structs only for programs in the main file. (bpf_dir: another copy
    of bpf/, e.g. an earlier revision's, for an A/B benchmark.)"""
    seen: set[str] = set()

    def inline(path: str) -> str:
        out = []
        with open(path) as f:
            for line in f:
                m = re.match(r'#include "(.+)"', line)
                if m:
                    inc = os.path.join(os.path.dirname(path), m.group(1))
                    if inc not in seen:
                        seen.add(inc)
                        out.append(inline(inc))
                    continue
                out.append(line)
        return "".join(out)

    return inline(os.path.join(bpf_dir or BPF_DIR_NAME, "roar.bpf.c"))


# -- kept event streams (ROAR_KEEP_EVENTS) ------------------------------------
#
# A run's raw records, as the model got them, with what the model is seeded
# with: a bug report, the model benchmark (scripts/bench_model.py) and the
# differential tests of the compiled model replay them. One JSON line (the
# seed), then each record as a little-endian u32 length and its bytes.

STREAM_MAGIC = b"roar-events 1 "


def write_stream(f, seed: dict, records) -> None:
    import json

    f.write(STREAM_MAGIC + json.dumps(seed).encode() + b"\n")
    f.flush()  # a client killed later still leaves a stream with its seed
    for raw in records:
        f.write(struct.pack("<I", len(raw)) + raw)


def read_stream(path) -> tuple[dict, list[bytes]] | None:
    """(seed, raw records) of a kept stream; the seed has root_pid, cwd, argv,
    root_fds (fd -> path) and start_ns. A stream whose client was killed may
    end in part of a record, which is left out, or hold nothing at all
    (killed before its seed was written): None."""
    import json

    with open(path, "rb") as f:
        data = f.read()
    if not data:
        return None
    if not data.startswith(STREAM_MAGIC) or b"\n" not in data:
        raise ValueError(f"{path}: not a kept roar event stream")
    nl = data.index(b"\n")
    seed = json.loads(data[len(STREAM_MAGIC):nl])
    seed["root_fds"] = {int(k): v for k, v in seed["root_fds"].items()}
    out, pos, n = [], nl + 1, len(data)
    while pos + 4 <= n:
        size = struct.unpack_from("<I", data, pos)[0]
        if pos + 4 + size > n:
            break  # the client was killed while writing this record
        out.append(data[pos + 4:pos + 4 + size])
        pos += 4 + size
    return seed, out
