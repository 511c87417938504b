"""Kernel feature probes: what roar's kernel side needs, asked of the running
kernel itself (a map created, a program verified, a tracepoint looked up)
rather than inferred from its version number, since distribution kernels
backport and compile out features independently of `uname -r`.

Owns the list of features roar requires and the one-line reason and fix for
each one that is missing; `roar doctor` prints them, roard and embedded
`roar run` refuse to start with them (tracing nothing would look like success).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

from roar.capture.events import program_text

# bpf(2) commands, map/program types and helper ids from include/uapi/linux/bpf.h
# (stable kernel ABI numbers).
BPF_MAP_CREATE = 0
BPF_PROG_LOAD = 5
BPF_MAP_TYPE_RINGBUF = 27
BPF_PROG_TYPE_TRACEPOINT = 5
BPF_FUNC_get_current_ancestor_cgroup_id = 123
BPF_FUNC_get_current_task_btf = 158
BPF_FUNC_task_pt_regs = 175
_SYS_BPF = {"x86_64": 321, "aarch64": 280}
_ATTR_SIZE = 128  # >= sizeof(union bpf_attr) of the fields used; the tail stays zero

TRACING_ROOTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
# The oldest kernel whose vm-tests smoke suite passes (Debian 11's 5.10, through the
# fallbacks compile_flags() picks there; Debian 12's 6.1 and 13's 6.12 without them;
# docs/vm-tests.md). A kernel whose tracepoints lack the ancestor-cgroup helper needs
# BTF to be traced (HELPER_KERNEL: the oldest tested that has the helper).
MIN_KERNEL = "5.10"
HELPER_KERNEL = "6.1"
TESTED_KERNELS = ("6.18 (CI VM, full suite); stock Debian 5.10, 6.1 and 6.12 (vm-tests "
                  "smoke suite), see docs/vm-tests.md")


@dataclass(frozen=True)
class Feature:
    """One thing the kernel must offer. ok is None when it could not be probed
    (e.g. not root); required=False marks what roar can use but does not need."""

    name: str
    ok: bool | None
    detail: str
    fix: str = ""
    required: bool = True
    available: bool = True  # False: ok only through a fallback (see detail)

    def line(self) -> str:
        """The one line a user sees for a missing feature: reason, then fix."""
        return f"{self.name}: {self.detail}" + (f" -> {self.fix}" if self.fix else "")


class FeatureError(Exception):
    """The running kernel lacks something roar needs; the message is one line."""


# -- bpf(2) --------------------------------------------------------------------------------

def _bpf(cmd: int, attr: ctypes.Array) -> tuple[int, int]:
    """Call bpf(2); returns (result, errno)."""
    nr = _SYS_BPF.get(platform.machine())
    if nr is None:
        return -1, errno.ENOSYS
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ret = libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr, ctypes.c_uint(_ATTR_SIZE))
    return ret, ctypes.get_errno()


def _unprobeable(err: int) -> str | None:
    if err == errno.EPERM:
        return "cannot probe without root (bpf() refused: EPERM)"
    if err == errno.ENOSYS:
        return f"cannot probe: no bpf() syscall number for {platform.machine()}"
    return None


def probe_ringbuf() -> Feature:
    """A BPF_MAP_TYPE_RINGBUF map can be created (Linux 5.8+): every record
    reaches userspace through one."""
    attr = (ctypes.c_uint32 * (_ATTR_SIZE // 4))()
    attr[0] = BPF_MAP_TYPE_RINGBUF
    attr[3] = os.sysconf("SC_PAGE_SIZE")  # max_entries: the buffer size, a page multiple
    fd, err = _bpf(BPF_MAP_CREATE, attr)
    if fd >= 0:
        os.close(fd)
        return Feature("ring buffer", True, "BPF ring buffer maps can be created")
    why = _unprobeable(err)
    if why:
        return Feature("ring buffer", None, why)
    return Feature("ring buffer", False,
                   f"this kernel cannot create a BPF ring buffer ({errno.errorcode.get(err, err)});"
                   " roar delivers every record through one",
                   f"use Linux {MIN_KERNEL} or newer (ring buffers arrived in 5.8)")


def _load_tracepoint_prog(program: list[int]) -> tuple[int, int, str]:
    """Ask the verifier about a tracepoint program (struct bpf_insn words):
    (0 if it loads else -1, errno, the verifier's log)."""
    insns = (ctypes.c_uint64 * len(program))(*program)
    license = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(4096)
    attr = (ctypes.c_uint32 * (_ATTR_SIZE // 4))()
    attr[0] = BPF_PROG_TYPE_TRACEPOINT
    attr[1] = len(insns)
    ptr = ctypes.cast(insns, ctypes.c_void_p).value
    attr[2], attr[3] = ptr & 0xFFFFFFFF, ptr >> 32
    lic = ctypes.cast(license, ctypes.c_void_p).value
    attr[4], attr[5] = lic & 0xFFFFFFFF, lic >> 32
    attr[6] = 1  # log_level
    attr[7] = len(log)
    lp = ctypes.cast(log, ctypes.c_void_p).value
    attr[8], attr[9] = lp & 0xFFFFFFFF, lp >> 32
    fd, err = _bpf(BPF_PROG_LOAD, attr)
    if fd >= 0:
        os.close(fd)
        return 0, 0, ""
    return -1, err, log.value.decode(errors="replace")


def probe_task_pt_regs() -> bool:
    """Whether a tracepoint program may call bpf_task_pt_regs on
    bpf_get_current_task_btf() (Linux 5.15, with BTF): an open's exit then
    reads its arguments from the saved user registers and its enter needs no
    program (bpf/files.h, OPEN_FROM_REGS). False where it cannot be asked."""
    fd, _, _ = _load_tracepoint_prog([
        0x85 | (BPF_FUNC_get_current_task_btf << 32),  # r0 = current task (BTF)
        0xBF | (1 << 8) | (0 << 12),                   # r1 = r0
        0x85 | (BPF_FUNC_task_pt_regs << 32),          # r0 = its user registers
        0xB7,                                          # r0 = 0
        0x95,                                          # exit
    ])
    return fd == 0


def probe_ancestor_cgroup_helper() -> Feature:
    """A tracepoint program calling bpf_get_current_ancestor_cgroup_id passes
    the verifier: it is how every program tells a run's processes (and their
    child cgroups) from the rest of the host. Where it does not (5.10), roar
    reads the same ids from struct cgroup instead (see detail)."""
    fd, err, log = _load_tracepoint_prog([
        0xB7 | (1 << 8) | (1 << 32),  # r1 = 1 (ancestor level)
        0x85 | (BPF_FUNC_get_current_ancestor_cgroup_id << 32),  # call helper
        0xB7,  # r0 = 0
        0x95,  # exit
    ])
    name = "cgroup helper"
    if fd >= 0:
        return Feature(name, True, "bpf_get_current_ancestor_cgroup_id is usable in tracepoints")
    why = _unprobeable(err)
    if why:
        return Feature(name, None, why)
    # the verifier's last line is its statistics ("processed N insns ..."): the
    # reason is the line before it
    verifier = [line for line in log.strip().splitlines()
                if line.strip() and not line.startswith("processed ")]
    reason = verifier[-1] if verifier else errno.errorcode.get(err, str(err))
    what = ("tracepoint programs cannot call bpf_get_current_ancestor_cgroup_id "
            f"(verifier: {reason})")
    from roar.capture import btf

    if btf.cgroup_offsets() is None:
        return Feature(name, False, what + " and BTF gives no struct cgroup ancestor_ids[] "
                       "to read instead", f"use Linux {HELPER_KERNEL} or newer, or a kernel "
                       "built with CONFIG_DEBUG_INFO_BTF=y",
                       available=False)
    # not fatal: bpf/tagging.h reads the same ids from the task's cgroup
    # (HAVE_ANCESTOR_CGROUP_HELPER=0, at BTF offsets: ancestor_ids[], 5.10-6.0)
    return Feature(name, True, what + "; roar reads the cgroup ancestor ids from the "
                   "kernel's struct cgroup instead (BTF offsets)", available=False)


# -- tracepoints ---------------------------------------------------------------------------

_TP = re.compile(r"TRACEPOINT_PROBE\(\s*(\w+)\s*,\s*(\w+)\s*\)")
_TP_MACRO = re.compile(r"#define\s+(\w+)\((\w+)[^)]*\)[^\n]*\\\n\s*"
                       r"TRACEPOINT_PROBE\(\s*(\w+)\s*,\s*(\w+)##\2\s*\)")


def required_tracepoints(text: str | None = None) -> list[tuple[str, str]]:
    """Every (category, event) the kernel side attaches, read from the bpf/
    sources: direct TRACEPOINT_PROBE(...) uses and macros that build the
    event name from their first argument (READ_PROBE(read, ...))."""
    if text is None:
        text = program_text()
    found = {(c, e) for c, e in _TP.findall(text)}
    for macro, _arg, cat, prefix in _TP_MACRO.findall(text):
        for name in re.findall(rf"^\s*{macro}\(\s*(\w+)\s*,", text, re.M):
            found.add((cat, prefix + name))
    return sorted(found)


def tracing_root() -> Path | None:
    """The tracefs mount that holds events/, or None when there is none this
    user can read (tracefs is mode 0700: only root sees in)."""
    for root in TRACING_ROOTS:
        try:
            if Path(root, "events").is_dir():
                return Path(root)
        except PermissionError:
            continue
    return None


def tracepoint_fields(category: str, event: str) -> set[str]:
    """The argument names a tracepoint offers (its tracefs format file);
    empty when it cannot be read."""
    root = tracing_root()
    try:
        text = (root / "events" / category / event / "format").read_text() if root else ""
    except OSError:
        return set()
    return set(re.findall(r"field:[^;]*?(\w+)(?:\[[^\]]*\])?;", text))


def compile_flags() -> list[str]:
    """-D flags for bpf/ that depend on what this kernel offers: the fields its
    tracepoints carry (they differ between versions; BCC fails on a missing one),
    what its verifier accepts (bpf_get_current_ancestor_cgroup_id in tracepoints)
    and the struct offsets read from its BTF."""
    from roar.capture import btf

    group_dead = "group_dead" in tracepoint_fields("sched", "sched_process_exit")
    helper = probe_ancestor_cgroup_helper().available
    flags = [f"-DEXIT_HAS_GROUP_DEAD={int(group_dead)}",
             f"-DHAVE_ANCESTOR_CGROUP_HELPER={int(helper)}",
             *btf.compile_flags(), *btf.exit_flags()]
    if not helper:
        flags += [f"-D{k}={v}" for k, v in sorted((btf.cgroup_offsets() or {}).items())]
    return flags + raw_rw_flags() + open_regs_flags()


def open_regs_flags() -> list[str]:
    """-DOPEN_FROM_REGS=1 and the registers' BTF offsets where an open's
    arguments can be read at its exit from the saved user registers (x86_64,
    BTF, bpf_task_pt_regs: 5.15+): no program on the open family's enter, for
    any process on the host, and no stash of its arguments (bpf/files.h).
    Else nothing, and the enters stash them as before (5.10; ROAR_OPEN_STASH=1
    asks for that anywhere: the A/B bench and the differential test)."""
    if os.environ.get("ROAR_OPEN_STASH", "0") == "1" or platform.machine() != "x86_64":
        return []
    from roar.capture import btf

    found = btf.open_regs_offsets()
    if found is None or not probe_task_pt_regs():
        return []
    return ["-DOPEN_FROM_REGS=1", *(f"-D{k}={v}" for k, v in sorted(found.items()))]


def raw_rw_flags() -> list[str]:
    """-DROAR_RAW_RW=1 and its BTF offsets where the read/write family can go
    through one raw sys_enter program (bpf/files.h: x86_64, with the offsets of
    thread_info.status and pt_regs from BTF); else nothing, and the syscalls:*
    programs carry them. Opt-in for now (ROAR_RAW_SYSCALLS=1): alone it halves
    what the read/write family costs untagged processes, but with the whole
    kernel side attached the floor did not measurably drop, and every other
    syscall on the host then runs the raw program too (docs/bench.md, "The
    untagged floor"). Whether the kernel loads and attaches the raw program is
    found out there (roar.capture.probes falls back to the tracepoints)."""
    if os.environ.get("ROAR_RAW_SYSCALLS", "0") != "1" or platform.machine() != "x86_64":
        return []
    from roar.capture import btf

    found = btf.raw_syscall_offsets()
    if found is None:
        return []
    return ["-DROAR_RAW_RW=1", *(f"-D{k}={v}" for k, v in sorted(found.items()))]


def probe_tracepoints(text: str | None = None) -> list[Feature]:
    """One Feature per missing tracepoint (or one for a whole missing category,
    e.g. syscalls:* on a kernel without CONFIG_FTRACE_SYSCALLS)."""
    wanted = required_tracepoints(text)
    root = tracing_root()
    if root is None:
        if os.geteuid() != 0:
            return [Feature("tracepoints", None, "tracefs is not mounted or not readable by "
                            "this user: cannot check", "run roar doctor as root")]
        return [Feature("tracepoints", False, "tracefs is not mounted",
                        "mount -t tracefs tracefs /sys/kernel/tracing")]
    missing = [(c, e) for c, e in wanted if not (root / "events" / c / e).is_dir()]
    out: list[Feature] = []
    by_cat: dict[str, list[str]] = {}
    for c, e in missing:
        by_cat.setdefault(c, []).append(e)
    for cat, events in sorted(by_cat.items()):
        total = sum(1 for c, _ in wanted if c == cat)
        if len(events) == total:
            fix = ("a kernel built with CONFIG_FTRACE_SYSCALLS=y" if cat == "syscalls"
                   else f"a kernel with the {cat}:* tracepoints")
            out.append(Feature(f"tracepoints {cat}", False,
                               f"none of the {total} {cat}:* tracepoints roar attaches exist",
                               fix))
            continue
        for e in events:
            out.append(Feature(f"tracepoint {cat}:{e}", False,
                               f"{root}/events/{cat}/{e} does not exist (roar attaches it)",
                               f"use Linux {MIN_KERNEL} or newer"))
    if not out:
        out.append(Feature("tracepoints", True, f"all {len(wanted)} tracepoints roar attaches "
                           f"exist under {root}"))
    return out


# -- cgroups -------------------------------------------------------------------------------

def cgroup_mode() -> tuple[str, Path | None]:
    """('unified' | 'hybrid' | 'legacy' | 'none', the cgroup2 mount point)."""
    v2: list[str] = []
    v1 = False
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype = right.split(" ", 1)[0]
            if fstype == "cgroup2":
                v2.append(left.split()[4])
            elif fstype == "cgroup":
                v1 = True
    if not v2:
        return ("legacy" if v1 else "none"), None
    v2.sort(key=lambda m: (m != "/sys/fs/cgroup", m))
    return ("hybrid" if v1 else "unified"), Path(v2[0])


def probe_cgroup2() -> Feature:
    """A cgroup v2 hierarchy roar can make run cgroups in. No controller is
    needed: roar uses only cgroup.procs, cgroup.events and the cgroup id."""
    mode, mount = cgroup_mode()
    if mount is None:
        what = ("the system booted with cgroup v1 only (legacy hierarchy)" if mode == "legacy"
                else "no cgroup hierarchy is mounted")
        return Feature("cgroup v2", False,
                       f"{what}: roar tags a run by its cgroup v2 id and every task would sit "
                       "in the v2 root",
                       "boot with systemd.unified_cgroup_hierarchy=1 (or, without systemd, "
                       "mount -t cgroup2 none /sys/fs/cgroup)")
    controllers = ""
    try:
        controllers = (mount / "cgroup.controllers").read_text().strip()
    except OSError:
        pass
    detail = f"{mode} hierarchy, cgroup2 at {mount} (controllers: {controllers or 'none'})"
    if os.geteuid() == 0 and not os.access(mount, os.W_OK):
        return Feature("cgroup v2", False, f"{detail} is read-only: roar cannot create run "
                       "cgroups", "run roard on the host, or mount the cgroup2 hierarchy "
                       "read-write")
    return Feature("cgroup v2", True, detail)


# -- optional extras (reported, not required) ------------------------------------------------

def probe_extras() -> list[Feature]:
    """Hooks stock kernels may offer beyond the tracepoint floor (see
    docs/vm-tests.md): reported by roar doctor, never required."""
    out = []
    root = tracing_root()
    kprobes = root is not None and (root / "kprobe_events").exists()
    out.append(Feature("kprobes", kprobes, "kprobe_events present" if kprobes else
                       "absent (CONFIG_KPROBE_EVENTS off; roar does not need them)"
                       if root is not None or os.geteuid() == 0 else
                       "cannot check without root (tracefs unreadable); roar does not need them",
                       required=False))
    from roar.capture import btf

    found = btf.offsets() is not None
    out.append(Feature("btf", found, f"{btf.VMLINUX} gives the struct offsets roar reads: "
                       "I/O through fds whose open was not seen is flagged, and an exec "
                       "says which fds it left open" if found
                       else f"{btf.VMLINUX} absent or unreadable: I/O through fds received "
                       "from other processes (SCM_RIGHTS) is not flagged, and after an exec "
                       "an fd made inheritable by ioctl (os.set_inheritable, subprocess's "
                       "pass_fds) is taken for closed",
                       fix="" if found else "a kernel built with CONFIG_DEBUG_INFO_BTF",
                       required=False))
    raw = bool(raw_rw_flags())
    out.append(Feature("raw syscall tracepoint", raw,
                       "the read/write family through one raw sys_enter program (cheaper "
                       "per call for every process on the host) if the kernel loads it"
                       if raw else "read/write family through syscalls:* tracepoints "
                       "(the raw sys_enter program is opt-in: ROAR_RAW_SYSCALLS=1, x86_64, BTF)",
                       required=False))
    regs = bool(open_regs_flags())
    out.append(Feature("open args", regs,
                       "an open's exit reads its arguments from the saved user registers "
                       "(bpf_task_pt_regs): no program on the open family's enter"
                       if regs else "the open family's enter programs stash its arguments "
                       "(needs x86_64, BTF and bpf_task_pt_regs in tracepoints: Linux 5.15)",
                       required=False))
    try:
        lsms = Path("/sys/kernel/security/lsm").read_text().strip()
    except OSError:
        lsms = ""
    out.append(Feature("bpf lsm", "bpf" in lsms.split(","),
                       f"active LSMs: {lsms or 'unknown (securityfs not readable)'}",
                       required=False))
    return out


# -- all together ----------------------------------------------------------------------------

def probe_all(text: str | None = None) -> list[Feature]:
    """Every required feature, then the optional extras."""
    return [probe_ringbuf(), probe_ancestor_cgroup_helper(), *probe_tracepoints(text),
            probe_cgroup2(), *probe_extras()]


def missing(features: list[Feature]) -> list[Feature]:
    return [f for f in features if f.required and f.ok is False]


def require(text: str | None = None) -> None:
    """Raise FeatureError (one line) if the kernel lacks anything roar needs.
    Run by roard and embedded sessions before compiling the probes: a kernel
    without these would load nothing, or load probes that never fire."""
    gone = missing([probe_ringbuf(), probe_ancestor_cgroup_helper(),
                    *probe_tracepoints(text), probe_cgroup2()])
    if gone:
        first = gone[0].line()
        more = f" (and {len(gone) - 1} more: run roar doctor)" if len(gone) > 1 else ""
        raise FeatureError(f"this kernel cannot run roar: {first}{more}")
