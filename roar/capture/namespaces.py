"""Callers in containers: which host process a caller's pid names, the
namespace identity of a workload, and entering its view of the filesystem.

roard runs on the host; `roar run` may run in its own pid and mount namespace
(a container, `unshare --pid --mount`) or a chroot. The pid it sends is its own
namespace's. The kernel translates the caller's SO_PEERCRED pid into roard's
namespace, and a process's /proc/<pid>/status NSpid line lists its pid in
every namespace from roard's down to its own: the workload is the caller's
child whose innermost pid is the one it sent.
"""

from __future__ import annotations

import os

CLONE_NEWNS = 0x00020000
PROC_PID_INIT_INO = 0xEFFFFFFC  # the initial pid namespace's fixed inode (linux/proc_ns.h)


def ns_pid(host_pid: int) -> int:
    """The pid a process has in its own (innermost) pid namespace."""
    with open(f"/proc/{host_pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    return host_pid  # kernels before 4.1 have no NSpid: no nested view to translate


def in_child_pid_namespace() -> bool:
    """Whether this process sees pids other than the kernel's global ones
    (its pid namespace is not the initial one)."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino != PROC_PID_INIT_INO
    except OSError:
        return False  # no /proc (a bare chroot): nothing to tell; the pids then match


def children(pid: int) -> list[int]:
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            continue
    return out


def _ns(pid: int | str, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def resolve_pid(peer_pid: int, pid: int) -> int:
    """The host pid of the process the caller (host pid peer_pid) calls `pid`:
    one of its children, found by its innermost pid; else, for a caller in
    roard's own pid namespace, pid itself. LookupError when neither."""
    for child in children(peer_pid):
        try:
            if ns_pid(child) == pid:
                return child
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    try:
        same = _ns(peer_pid, "pid") == _ns("self", "pid")
    except FileNotFoundError:
        same = False
    if same:
        return pid
    raise LookupError(f"process {pid} of the caller's pid namespace is not a child of the "
                      f"caller: it cannot be found from the host")


def identity(host_pid: int) -> dict:
    """The namespaces and root a workload sees its files through (`namespaces`
    on the run record): inodes of its mount and pid namespaces, its root as
    roard sees it, its host pid, and whether any of them is not roard's own."""
    mnt, pidns = _ns(host_pid, "mnt"), _ns(host_pid, "pid")
    try:
        root = os.readlink(f"/proc/{host_pid}/root")
    except OSError:
        root = None
    container = (mnt != _ns("self", "mnt") or pidns != _ns("self", "pid")
                 or root not in ("/", None))
    return {"mnt": mnt, "pid": pidns, "root": root, "host_pid": host_pid,
            "container": container}


def open_view(host_pid: int) -> tuple[int, int]:
    """Handles on a workload's mount namespace and root, taken while it lives:
    (mount namespace fd, root directory fd)."""
    mnt = os.open(f"/proc/{host_pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        root = os.open(f"/proc/{host_pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        os.close(mnt)
        raise
    return mnt, root


def enter_view(view: tuple[int, int]) -> None:
    """Make this (single-threaded, root) process see the filesystem as the
    workload did: its mount namespace, then its root (a chroot's directory)."""
    import ctypes  # here: ~3 ms of every `roar run` start otherwise

    mnt, root = view
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(mnt, CLONE_NEWNS) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns into the workload's mount namespace: {os.strerror(e)}")
    os.fchdir(root)
    os.chroot(".")
    os.chdir("/")


def close_view(view: tuple[int, int] | None) -> None:
    if view is not None:
        for fd in view:
            os.close(fd)
