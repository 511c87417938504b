"""The kernel half of the pre-image hold (docs/preimage.md): a seccomp filter
that the workload's first process installs on itself just before its exec,
inherited by every process and thread of the run, which hands the run's
content-changing syscalls (write-opens, truncate, rename, unlink; link, which
changes an input's inode, its link count and ctime) to a
supervisor (SECCOMP_RET_USER_NOTIF) and lets every other syscall through in
the filter itself. Only the x86_64 ABI is held; other ABIs pass.

The supervisor (roar/record/preimage.py) answers each held syscall with
SECCOMP_USER_NOTIF_FLAG_CONTINUE: the syscall then runs as if never held.
Nothing is ever denied or emulated.
"""

from __future__ import annotations

import fcntl
import os
import struct

from roar.capture import syscalls

AUDIT_ARCH_X86_64 = 0xC000003E
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1

# struct seccomp_notif {u64 id; u32 pid; u32 flags; struct seccomp_data {int nr;
# u32 arch; u64 ip; u64 args[6]}}, struct seccomp_notif_resp {u64 id; s64 val;
# s32 error; u32 flags}
NOTIF = struct.Struct("=QIIiIQ6Q")
RESP = struct.Struct("=QqiI")
NOTIF_RECV = (3 << 30) | (NOTIF.size << 16) | (0x21 << 8) | 0
NOTIF_SEND = (3 << 30) | (RESP.size << 16) | (0x21 << 8) | 1

# x86_64 syscall numbers held, and the argument holding open flags (None: always)
O_WRONLY, O_RDWR, O_CREAT, O_EXCL, O_TRUNC = 0o1, 0o2, 0o100, 0o200, 0o1000
OPEN, CREAT, OPENAT, OPENAT2 = 2, 85, 257, 437
TRUNCATE, FTRUNCATE = 76, 77
RENAME, RENAMEAT, RENAMEAT2 = 82, 264, 316
UNLINK, UNLINKAT = 87, 263
LINK, LINKAT = 86, 265
AT_REMOVEDIR = 0x200
AT_SYMLINK_FOLLOW = 0x400
HELD = {OPEN: 1, OPENAT: 2, CREAT: None, OPENAT2: None, TRUNCATE: None, FTRUNCATE: None,
        RENAME: None, RENAMEAT: None, RENAMEAT2: None, UNLINK: None, UNLINKAT: None,
        LINK: None, LINKAT: None}
WRITE_FLAGS = O_WRONLY | O_RDWR | O_TRUNC

# classic BPF
_LD_W_ABS, _JEQ_K, _JSET_K, _RET_K, _ALU_AND_K = 0x20, 0x15, 0x45, 0x06, 0x54


def _ins(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def filter_program() -> bytes:
    """The filter: ALLOW unless x86_64 and one of HELD, whose flags (where
    they are an argument) ask for writing or truncation and do not say
    O_CREAT|O_EXCL; unlinkat of a directory (AT_REMOVEDIR) passes. Every
    syscall of the run runs it: a few instructions, in the kernel."""
    prog = [_ins(_LD_W_ABS, 0, 0, 4),                       # arch
            _ins(_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
            _ins(_RET_K, 0, 0, SECCOMP_RET_ALLOW),
            _ins(_LD_W_ABS, 0, 0, 0)]                       # nr
    tail: list[bytes] = []
    # each held nr jumps to its check block, laid out after the dispatch
    dispatch = [(nr, arg) for nr, arg in HELD.items()]
    blocks: list[list[bytes]] = []
    for nr, arg in dispatch:
        if arg is not None:  # flags in args[arg] (low 32 bits, little endian)
            # held: write access or O_TRUNC, unless O_CREAT|O_EXCL (a new file, or
            # EEXIST: nothing that exists changes; mkstemp, tar)
            blocks.append([_ins(_LD_W_ABS, 0, 0, 16 + 8 * arg),
                           _ins(_JSET_K, 0, 3, WRITE_FLAGS),
                           _ins(_ALU_AND_K, 0, 0, O_CREAT | O_EXCL),
                           _ins(_JEQ_K, 1, 0, O_CREAT | O_EXCL),
                           _ins(_RET_K, 0, 0, SECCOMP_RET_USER_NOTIF),
                           _ins(_RET_K, 0, 0, SECCOMP_RET_ALLOW)])
        elif nr == UNLINKAT:
            blocks.append([_ins(_LD_W_ABS, 0, 0, 16 + 8 * 2),
                           _ins(_JSET_K, 0, 1, AT_REMOVEDIR),
                           _ins(_RET_K, 0, 0, SECCOMP_RET_ALLOW),
                           _ins(_RET_K, 0, 0, SECCOMP_RET_USER_NOTIF)])
        else:
            blocks.append([_ins(_RET_K, 0, 0, SECCOMP_RET_USER_NOTIF)])
    n = len(dispatch)
    # dispatch: n JEQs then ALLOW; JEQ i jumps to block i
    offsets, at = [], 0
    for b in blocks:
        offsets.append(at)
        at += len(b)
    for i, (nr, _) in enumerate(dispatch):
        # from instruction i (0-based in dispatch), the next is i+1; blocks start at n+1
        jt = (n - i - 1) + 1 + offsets[i]
        prog.append(_ins(_JEQ_K, jt, 0, nr))
    prog.append(_ins(_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    for b in blocks:
        tail.extend(b)
    return b"".join(prog + tail)


_PROGRAM: bytes | None = None


def install(no_new_privs: bool) -> int:
    """Install the filter on the calling thread (before exec: its children and
    the program it execs inherit it); returns the listener fd. no_new_privs:
    set PR_SET_NO_NEW_PRIVS first, which the kernel requires without
    CAP_SYS_ADMIN (a setuid program run afterwards gains no privilege)."""
    return syscalls.seccomp_install(program(), no_new_privs)


def program() -> bytes:
    """filter_program(), built once per process (`roar run` builds it before
    the fork: the workload's first process only installs it)."""
    global _PROGRAM
    if _PROGRAM is None:
        _PROGRAM = filter_program()
    return _PROGRAM


class Notification:
    __slots__ = ("id", "pid", "nr", "args")

    def __init__(self, raw: bytes):
        nid, self.pid, _flags, self.nr, _arch, _ip, *args = NOTIF.unpack(raw)
        self.id = nid
        self.args = args

    @classmethod
    def of(cls, nid: int, pid: int, nr: int, args) -> Notification:
        """One that syscalls.hold_next returned as (id, pid, nr, args)."""
        n = cls.__new__(cls)
        n.id, n.pid, n.nr, n.args = nid, pid, nr, list(args)
        return n


def receive(listener: int, buf: bytearray) -> Notification | None:
    """One held syscall (blocks until there is one; the GIL is released).
    None when the notification went away (its task was killed) or the
    listener has no filter left (every task of the run exited: ENOENT)."""
    buf[:NOTIF.size] = bytes(NOTIF.size)
    try:
        fcntl.ioctl(listener, NOTIF_RECV, buf, True)
    except OSError as e:
        if e.errno in (4, 2):  # EINTR, ENOENT (the notification's task died)
            return None
        raise
    return Notification(bytes(buf[:NOTIF.size]))


def let_continue(listener: int, nid: int, buf: bytearray) -> bool:
    """Let the held syscall run as if it had never been held. False when its
    task is gone (ENOENT)."""
    RESP.pack_into(buf, 0, nid, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)
    try:
        fcntl.ioctl(listener, NOTIF_SEND, buf, True)
    except OSError as e:
        if e.errno == 2:
            return False
        raise
    return True


def new_buffer() -> bytearray:
    return bytearray(max(NOTIF.size, RESP.size))


def continue_all(listener: int, stop) -> None:
    """Let every held syscall continue until stop (a threading.Event) is set or
    no task is left under the filter: roard does this for a run whose client
    died, so that the workload's syscalls neither wait nor fail while it is
    ended."""
    import select

    buf = new_buffer()
    poll = select.poll()
    poll.register(listener, select.POLLIN)
    while not stop.is_set():
        try:
            ready = poll.poll(100)
        except InterruptedError:
            continue
        if not ready:
            continue
        if not ready[0][1] & select.POLLIN:
            return  # (POLLHUP: no task left under the filter)
        try:
            n = receive(listener, buf)
            if n is not None:
                let_continue(listener, n.id, buf)
        except OSError:
            return


def unavailable() -> str | None:
    """Why the filter cannot be installed here (None: it can), tried in a
    child that exits at once (roar doctor)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            try:
                os.close(install(no_new_privs=os.geteuid() != 0))
                os.write(w, b"")
            except OSError as e:
                os.write(w, (e.strerror or str(e)).encode())
        finally:
            os._exit(0)
    os.close(w)
    why = b""
    while chunk := os.read(r, 4096):
        why += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return why.decode(errors="replace") or None
