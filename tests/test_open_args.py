"""The open family's arguments as the kernel side reports them (EV_OPEN: the
directory fd, the flags, the mode, the path), read at the open's exit from
the task's saved user registers (bpf/files.h OPEN_FROM_REGS, where the kernel
offers bpf_task_pt_regs) or stashed at its enter (ROAR_OPEN_STASH=1, and 5.10):
the same records either way, each field as the kernel took it, whatever a
raw syscall left in a register's upper half."""

from __future__ import annotations

import json
import os
import time

from conftest import tagged_child

from roar.capture import events as E
from roar.capture import features

CHILD = r"""
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
sc = libc.syscall
sc.restype = ctypes.c_long
L = ctypes.c_long
d = sys.argv[1]
os.chdir(d)
print("ready", flush=True)
sys.stdin.readline()                       # placed in the run cgroup, tagged
dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
def p(s):
    return ctypes.c_char_p(s.encode())
class How(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]
how = How(os.O_CREAT | os.O_WRONLY, 0o611, 0)
W, C = os.O_WRONLY, os.O_CREAT
calls = [
    ("open", sc(L(2), p(d + "/a"), L(os.O_RDONLY), L(0))),
    ("open creat", sc(L(2), p(d + "/n1"), L(C | W | os.O_EXCL), L(0o640))),
    ("creat", sc(L(85), p(d + "/n2"), L(0o600))),
    ("openat", sc(L(257), L(dfd), p("a"), L(os.O_RDONLY | os.O_CLOEXEC), L(0))),
    # upper halves the kernel ignores (the dfd and flags are ints, the mode a umode_t)
    ("openat upper", sc(L(257), L(dfd | (0x5A5A << 32)), p("n3"), L((C | W) | (0xDEAD << 32)),
                        L(0o604 | (0xBEEF << 32)))),
    # a flag bit the kernel drops (open does not check unknown flags): a negative int
    ("openat high", sc(L(257), L(-100), p("a"), L(os.O_RDONLY | 0x80000000), L(0))),
    ("openat2", sc(L(437), L(dfd), p("n4"), ctypes.byref(how), L(ctypes.sizeof(how)))),
    ("openat missing", sc(L(257), L(dfd), p("missing"), L(0), L(0))),
]
print(json.dumps({"dfd": dfd, "calls": calls}), flush=True)
sys.stdin.readline()
"""


def _opens(tmp_path, stash: bool, monkeypatch) -> tuple[dict, list]:
    """The child's calls and the EV_OPEN records of its process, under real
    probes in this process (one mode each)."""
    monkeypatch.setenv("ROAR_TLS_PROBES", "0")
    monkeypatch.setenv("ROAR_OPEN_STASH", "1" if stash else "0")
    work = tmp_path / ("stash" if stash else "regs")
    work.mkdir()
    (work / "a").write_bytes(b"a")
    raws: list[bytes] = []
    with tagged_child(CHILD, str(work), sink=raws.append, name="openargs") as (probes, child):
        child.stdin.write("go\n")
        child.stdin.flush()
        done = json.loads(child.stdout.readline())
        deadline = time.monotonic() + 10
        evs: list = []
        while time.monotonic() < deadline:
            probes.poll(100)
            evs = [e for e in map(E.decode, raws) if e.type == E.EV_OPEN and e.tgid == child.pid]
            if len(evs) >= len(done["calls"]):  # the dfd's open and every call that opened
                break
    return done, [(e.fd, e.ret, e.a0, e.a1, e.path) for e in evs]


def _int(v: int) -> int:
    """An int register as a u64 field holds it: its low half, widened with its sign."""
    return (((v & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000) & 0xFFFFFFFFFFFFFFFF


def test_the_open_family_reports_each_argument_as_the_kernel_took_it(tmp_path, monkeypatch):
    """Both ways where the kernel offers both (the stash alone on 5.10)."""
    modes = [True] + ([False] if features.open_regs_flags() else [])
    for stash in modes:
        done, evs = _opens(tmp_path, stash, monkeypatch)
        work = str(tmp_path / ("stash" if stash else "regs"))
        fds = dict(done["calls"])
        assert fds["openat missing"] == -1 and all(fd >= 0 for fd in list(fds.values())[:-1])
        dfd, W, C = done["dfd"], os.O_WRONLY, os.O_CREAT
        want = [
            # os.open's (glibc passes no mode without O_CREAT)
            (dfd, -100, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, 0, work),
            (fds["open"], -100, 0, 0, work + "/a"),
            (fds["open creat"], -100, C | W | os.O_EXCL, 0o640, work + "/n1"),
            (fds["creat"], -100, C | W | os.O_TRUNC, 0o600, work + "/n2"),
            (fds["openat"], dfd, os.O_RDONLY | os.O_CLOEXEC, 0, "a"),
            (fds["openat upper"], dfd, C | W, 0o604, "n3"),
            (fds["openat high"], -100, _int(0x80000000), 0, "a"),
            (fds["openat2"], dfd, C | W, 0o611, "n4"),
        ]
        assert evs == want, ("stash" if stash else "regs", evs)
