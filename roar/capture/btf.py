"""Offsets of the few kernel struct fields the kernel side reads, taken from the
running kernel's own BTF (/sys/kernel/btf/vmlinux). BCC compiles against the
installed kernel headers, which need not match the running kernel (headers of
6.1 under a 6.18 kernel): a field read through them would land anywhere.
With the offsets from BTF the probes read the right bytes on any kernel; without
BTF the reads are compiled out (bpf/untraced.h says what is lost then)."""

from __future__ import annotations

import struct
from functools import lru_cache

VMLINUX = "/sys/kernel/btf/vmlinux"

# -D name -> (struct, field): what bpf/untraced.h reads, one hop at a time
FIELDS = {
    "OFF_TASK_FILES": ("task_struct", "files"),
    "OFF_FILES_FDT": ("files_struct", "fdt"),
    "OFF_FDT_MAX_FDS": ("fdtable", "max_fds"),
    "OFF_FDT_FD": ("fdtable", "fd"),
    "OFF_FDT_OPEN_FDS": ("fdtable", "open_fds"),  # bpf/process.h: the fds an exec left open
    "OFF_FILE_INODE": ("file", "f_inode"),
    "OFF_FILE_PATH": ("file", "f_path"),
    "OFF_PATH_DENTRY": ("path", "dentry"),
    "OFF_INODE_MODE": ("inode", "i_mode"),
    "OFF_INODE_NLINK": ("inode", "__i_nlink"),
    "OFF_DENTRY_NAME": ("dentry", "d_name"),
    "OFF_QSTR_NAME": ("qstr", "name"),
}

_STRUCT, _UNION = 4, 5
# bytes that follow a type record, per kind: (fixed, per member)
_EXTRA = {1: (4, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 13: (0, 8), 14: (4, 0),
          15: (0, 12), 17: (4, 0), 19: (0, 12)}


def _parse(data: bytes) -> tuple[dict[str, int], dict[int, list[tuple[str, int, int]]]]:
    """Struct names -> type id, and type id -> members (name, type id, bit offset),
    for structs and unions."""
    magic, _ver, _flags, hdr_len, type_off, type_len, str_off, _str_len = struct.unpack_from(
        "<HBBIIIII", data)
    if magic != 0xEB9F:
        raise ValueError("not BTF")
    strings = hdr_len + str_off

    def name(off: int) -> str:
        end = data.index(b"\0", strings + off)
        return data[strings + off:end].decode()

    names: dict[str, int] = {}
    members: dict[int, list[tuple[str, int, int]]] = {}
    pos, end, tid = hdr_len + type_off, hdr_len + type_off + type_len, 0
    while pos < end:
        tid += 1
        name_off, info, _size = struct.unpack_from("<III", data, pos)
        pos += 12
        kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
        fixed, each = _EXTRA.get(kind, (0, 0))
        if kind in (_STRUCT, _UNION):
            rows = []
            for i in range(vlen):
                m_name, m_type, m_off = struct.unpack_from("<III", data, pos + 12 * i)
                rows.append((name(m_name) if m_name else "", m_type,
                             m_off & 0xFFFFFF if kflag else m_off))
            members[tid] = rows
            if kind == _STRUCT and name_off and vlen:
                names.setdefault(name(name_off), tid)
        pos += fixed + each * vlen
    return names, members


def _offset(members, tid: int, field: str) -> int | None:
    for m_name, m_type, bits in members.get(tid, ()):
        if m_name == field:
            return bits // 8
        if not m_name and m_type in members:  # an anonymous struct or union
            inner = _offset(members, m_type, field)
            if inner is not None:
                return bits // 8 + inner
    return None


# what bpf/tagging.h reads on kernels whose tracepoints cannot call
# bpf_get_current_ancestor_cgroup_id (5.10: struct cgroup still has ancestor_ids[])
CGROUP_FIELDS = {
    "OFF_TASK_CGROUPS": ("task_struct", "cgroups"),
    "OFF_CSS_SET_DFL_CGRP": ("css_set", "dfl_cgrp"),
    "OFF_CGROUP_LEVEL": ("cgroup", "level"),
    "OFF_CGROUP_ANCESTOR_IDS": ("cgroup", "ancestor_ids"),
}


# what bpf/process.h reads at a process's exit: the wait status its parent will
# collect (wait_task_zombie's: the group's exit code, or the leader's own)
EXIT_FIELDS = {
    "OFF_TASK_SIGNAL": ("task_struct", "signal"),
    "OFF_TASK_GROUP_LEADER": ("task_struct", "group_leader"),
    "OFF_TASK_EXIT_CODE": ("task_struct", "exit_code"),
    "OFF_SIGNAL_FLAGS": ("signal_struct", "flags"),
    "OFF_SIGNAL_GROUP_EXIT_CODE": ("signal_struct", "group_exit_code"),
}

# what bpf/files.h's raw sys_enter program reads (x86_64): the task's thread_info
# status (TS_COMPAT: a 32-bit syscall) and the user registers holding the arguments
RAW_SYSCALL_FIELDS = {
    "OFF_TASK_THREAD_INFO": ("task_struct", "thread_info"),
    "OFF_THREAD_INFO_STATUS": ("thread_info", "status"),
    "OFF_REGS_DI": ("pt_regs", "di"),
    "OFF_REGS_SI": ("pt_regs", "si"),
    "OFF_REGS_DX": ("pt_regs", "dx"),
}

# The saved user registers an open's exit reads its arguments from (bpf/files.h
# open_exit, OPEN_FROM_REGS): x86_64's syscall arguments 1-4.
OPEN_REGS_FIELDS = {
    "OFF_REGS_R10": ("pt_regs", "r10"),
    "OFF_REGS_DX": ("pt_regs", "dx"),
    "OFF_REGS_SI": ("pt_regs", "si"),
    "OFF_REGS_DI": ("pt_regs", "di"),
}


def _offsets(path: str, fields: dict) -> dict[str, int] | None:
    try:
        with open(path, "rb") as f:
            names, members = _parse(f.read())
    except (OSError, ValueError, struct.error):
        return None
    out = {}
    for define, (struct_name, field) in fields.items():
        tid = names.get(struct_name)
        off = _offset(members, tid, field) if tid is not None else None
        if off is None:
            return None
        out[define] = off
    return out


@lru_cache(maxsize=1)
def offsets(path: str = VMLINUX) -> dict[str, int] | None:
    """FIELDS' offsets in the running kernel; None when BTF is missing or
    lacks one of them."""
    return _offsets(path, FIELDS)


@lru_cache(maxsize=1)
def cgroup_offsets(path: str = VMLINUX) -> dict[str, int] | None:
    """CGROUP_FIELDS' offsets in the running kernel (None on kernels without
    ancestor_ids[], 6.1 and later, where the helper is there anyway)."""
    return _offsets(path, CGROUP_FIELDS)


@lru_cache(maxsize=1)
def raw_syscall_offsets(path: str = VMLINUX) -> dict[str, int] | None:
    """RAW_SYSCALL_FIELDS' offsets in the running kernel (None without BTF, or
    where the kernel has no such fields: not x86_64)."""
    return _offsets(path, RAW_SYSCALL_FIELDS)


@lru_cache(maxsize=1)
def open_regs_offsets(path: str = VMLINUX) -> dict[str, int] | None:
    """OPEN_REGS_FIELDS' offsets in the running kernel (None without BTF, or
    where the kernel has no such fields: not x86_64)."""
    return _offsets(path, OPEN_REGS_FIELDS)


@lru_cache(maxsize=1)
def exit_offsets(path: str = VMLINUX) -> dict[str, int] | None:
    """EXIT_FIELDS' offsets in the running kernel; None without BTF."""
    return _offsets(path, EXIT_FIELDS)


def exit_flags() -> list[str]:
    """-DEXIT_FROM_TASK=1 and its offsets: bpf/process.h reads a process's exit
    status from the kernel at its exit; without them (=0) from exit_group/exit,
    fatal signals and its parent's wait4/waitid, as before."""
    found = exit_offsets()
    if found is None:
        return ["-DEXIT_FROM_TASK=0"]
    return ["-DEXIT_FROM_TASK=1", *(f"-D{k}={v}" for k, v in sorted(found.items()))]


def compile_flags() -> list[str]:
    found = offsets()
    if found is None:
        return ["-DROAR_FD_KIND=0"]
    return ["-DROAR_FD_KIND=1", *(f"-D{k}={v}" for k, v in sorted(found.items()))]
