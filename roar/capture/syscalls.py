"""The system calls roar needs that the os module does not wrap: installing
the pre-image hold's seccomp filter (roar/capture/seccomp.py), reading a held
task's memory (roar/record/preimage.py) and a file's creation time
(roar/record/hasher.py).

They are compiled (roar/capture/_sys.c): importing ctypes and opening libc
through it was ~3 ms of every `roar run`'s start. Where the module is not
built (a checkout without `pip install -e .`), the same calls go through
ctypes, loaded at the first call.
"""

from __future__ import annotations

import os

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
SYS_SECCOMP = 317  # x86_64
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1 << 2  # no forced Speculative Store Bypass mitigation (_sys.c)
PR_SET_NO_NEW_PRIVS = 38
STATX_BTIME = 0x800

_ct = None  # (ctypes, libc, _IoVec, _Statx, _SockFprog), at the first ctypes call


def _ctypes():
    global _ct
    if _ct is None:
        import ctypes

        class _IoVec(ctypes.Structure):
            _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

        class _Timestamp(ctypes.Structure):
            _fields_ = [("sec", ctypes.c_int64), ("nsec", ctypes.c_uint32),
                        ("pad", ctypes.c_int32)]

        class _Statx(ctypes.Structure):  # struct statx (UAPI), up to the timestamps
            _fields_ = [("mask", ctypes.c_uint32), ("blksize", ctypes.c_uint32),
                        ("attributes", ctypes.c_uint64), ("nlink", ctypes.c_uint32),
                        ("uid", ctypes.c_uint32), ("gid", ctypes.c_uint32),
                        ("mode", ctypes.c_uint16), ("pad1", ctypes.c_uint16),
                        ("ino", ctypes.c_uint64), ("size", ctypes.c_uint64),
                        ("blocks", ctypes.c_uint64), ("attributes_mask", ctypes.c_uint64),
                        ("atime", _Timestamp), ("btime", _Timestamp), ("ctime", _Timestamp),
                        ("mtime", _Timestamp),
                        ("spare", ctypes.c_uint64 * 32)]  # the kernel fills 256 bytes

        class _SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        libc.process_vm_readv.restype = ctypes.c_ssize_t
        libc.process_vm_readv.argtypes = [ctypes.c_int, ctypes.POINTER(_IoVec), ctypes.c_ulong,
                                          ctypes.POINTER(_IoVec), ctypes.c_ulong,
                                          ctypes.c_ulong]
        _ct = (ctypes, libc, _IoVec, _Statx, _SockFprog)
    return _ct


def ctypes_seccomp_install(prog: bytes, no_new_privs: bool) -> int:
    ctypes, libc, _, _, _SockFprog = _ctypes()
    if no_new_privs and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = _SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
    fd = libc.syscall(SYS_SECCOMP, SECCOMP_SET_MODE_FILTER,
                      SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_SPEC_ALLOW,
                      ctypes.byref(fprog))
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return fd


def ctypes_read_mem(pid: int, addr: int, n: int) -> bytes | None:
    ctypes, libc, _IoVec, _, _ = _ctypes()
    buf = ctypes.create_string_buffer(n)
    local = _IoVec(ctypes.cast(buf, ctypes.c_void_p), n)
    remote = _IoVec(addr, n)
    got = libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    return buf.raw[:got] if got > 0 else None


def ctypes_birth_ns(dirfd: int, path: bytes, flags: int) -> int | None:
    ctypes, libc, _, _Statx, _ = _ctypes()
    statx = getattr(libc, "statx", None)
    sx = _Statx()
    if statx is None or statx(dirfd, path, flags, STATX_BTIME, ctypes.byref(sx)) != 0:
        return None
    if not sx.mask & STATX_BTIME:
        return None
    return sx.btime.sec * 1_000_000_000 + sx.btime.nsec


try:
    from roar.capture._sys import birth_ns, hold_next, read_mem, seccomp_install
    COMPILED = True
except ImportError:  # not built: the same calls through ctypes
    seccomp_install, read_mem, birth_ns = ctypes_seccomp_install, ctypes_read_mem, ctypes_birth_ns
    hold_next = None  # the supervisor then takes every held syscall itself
    COMPILED = False

