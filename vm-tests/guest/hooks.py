"""What roar's file hooks would cost on LSM hooks instead of syscall tracepoints,
and whether those hooks see io_uring (issue 16, part 3). Run in a vm-tests guest
(`bash vm-tests/run.sh --measure`, Debian 12 with `lsm=...,bpf`) or by hand as
root on any host with BCC:   python3 vm-tests/guest/hooks.py [-n ITERATIONS] [-r ROUNDS]

One BPF object holds a minimal roar-like program for each hook (what roar does
per call, without the rest of roar): filter on the run's cgroup (a hash lookup
of bpf_get_current_cgroup_id, roar's tagged map), then
  open  a record with the file's name in the ring buffer,
  read  a per-file entry (first access: a record; later ones: add to counters),
  mmap  a record per mapped file (first mapping), like roar's sys_enter_mmap,
  close drop the per-file entry,
attached four ways, one variant at a time, in the same boot:
  tp      the syscall tracepoints roar uses: sys_enter/exit_openat (the enter
          stashes the path pointer, the exit reads the path and emits),
          sys_enter_read, sys_enter_mmap, sys_enter_close (entries keyed by fd)
  kprobe  security_file_open, security_file_permission, security_mmap_file,
          security_file_free (entries keyed by struct file)
  fentry  the same four functions through BPF trampolines
  lsm     the BPF LSM hooks file_open, file_permission, mmap_file,
          file_free_security (only when
          `bpf` is in /sys/kernel/security/lsm, i.e. lsm=...,bpf at boot)
A forked child in a fresh cgroup (the tagged one) runs ITERATIONS of
openat + read(4096) + mmap(PROT_READ) + munmap + close of one file, then the
same count through io_uring (IORING_OP_OPENAT, IORING_OP_READ, IORING_OP_CLOSE).
For each variant and round: the child's CPU time (user+sys, getrusage) per
iteration against rounds with nothing attached, and kernel.bpf_stats_enabled's
run_time_ns / run_cnt of every program; for io_uring, how many opens and reads
each hook saw out of 500 (ITERATIONS if fewer).

Prints a table; the last line is `hooks: done`. Exits 2 when it cannot run
(not root, no BCC, no cgroup v2); a variant this kernel cannot attach (no
kprobes, no trampolines, no BPF LSM) is one `unavailable` line.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import re
import resource
import statistics
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

TEXT = r"""
#include <linux/fs.h>
#include <linux/mm.h>

#define NAME 64
struct rec { u32 kind; u32 pid; u64 key; u64 aux; char name[NAME]; };
struct fstate { u64 calls; u64 bytes; };
struct pend { u64 path; };

BPF_HASH(tagged, u64, u8, 16);
BPF_HASH(stash, u64, struct pend, 1024);
BPF_HASH(files, u64, struct fstate, 65536);
BPF_RINGBUF_OUTPUT(events, 4096);  /* 16 MiB: a round's records, read after it */
BPF_PERCPU_ARRAY(seen, u64, 16);   /* traced calls per (variant, hook) */

#define K_OPEN 0
#define MAP_ANONYMOUS_ 0x20
#define K_READ 1
#define K_MMAP 2

static __always_inline int traced(void)
{
    u64 cg = bpf_get_current_cgroup_id();
    return tagged.lookup(&cg) != 0;
}

static __always_inline void count(int i)
{
    u64 *n = seen.lookup(&i);
    if (n)
        *n += 1;
}

static __always_inline void emit(u32 kind, u64 key, u64 aux, const void *name, int user)
{
    struct rec *r = events.ringbuf_reserve(sizeof(struct rec));
    if (!r)
        return;
    r->kind = kind;
    r->pid = bpf_get_current_pid_tgid() >> 32;
    r->key = key;
    r->aux = aux;
    r->name[0] = 0;
    if (name && user)
        bpf_probe_read_user_str(r->name, NAME, name);
    else if (name)
        bpf_probe_read_kernel_str(r->name, NAME, name);
    events.ringbuf_submit(r, 0);
}

/* the first access of a file emits, later ones add to its counters */
static __always_inline void first_access(u64 key, u64 bytes)
{
    struct fstate *s = files.lookup(&key);
    if (s) {
        __sync_fetch_and_add(&s->bytes, bytes);
        s->calls += 1;
        return;
    }
    struct fstate n = {.calls = 1, .bytes = bytes};
    files.update(&key, &n);
    emit(K_READ, key, bytes, 0, 0);
}

static __always_inline u64 fd_key(s64 fd)
{
    return (bpf_get_current_pid_tgid() & 0xffffffff00000000ULL) | (u32)fd;
}

/* ---- tp: the syscall tracepoints roar uses today ---- */
TRACEPOINT_PROBE(syscalls, sys_enter_openat)
{
    if (!traced())
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    struct pend p = {.path = (u64)args->filename};
    stash.update(&id, &p);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_openat)
{
    if (!traced())
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    struct pend *p = stash.lookup(&id);
    if (!p)
        return 0;
    u64 path = p->path;
    stash.delete(&id);
    if (args->ret < 0)
        return 0;
    count(0);
    u64 key = fd_key(args->ret);
    files.delete(&key);
    emit(K_OPEN, key, 0, (const void *)path, 1);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_read)
{
    if (!traced())
        return 0;
    count(1);
    first_access(fd_key(args->fd), args->count);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_mmap)
{
    if (!traced() || (s64)args->fd < 0 || (args->flags & MAP_ANONYMOUS_))
        return 0;
    count(2);
    emit(K_MMAP, fd_key(args->fd), args->prot, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
    if (!traced())
        return 0;
    count(3);
    u64 key = fd_key(args->fd);
    files.delete(&key);
    return 0;
}

/* ---- the same three on the LSM functions: one body, three ways in ---- */
static __always_inline int on_open(int base, struct file *f)
{
    if (!traced())
        return 0;
    count(base);
    u64 key = (u64)f;
    files.delete(&key);
    struct dentry *d = 0;
    bpf_probe_read_kernel(&d, sizeof(d), &f->f_path.dentry);
    const unsigned char *name = 0;
    if (d)
        bpf_probe_read_kernel(&name, sizeof(name), &d->d_name.name);
    emit(K_OPEN, key, 0, name, 0);
    return 0;
}

static __always_inline int on_permission(int base, struct file *f, int mask)
{
    if (!traced() || !(mask & MAY_READ))
        return 0;
    count(base + 1);
    first_access((u64)f, 0);  /* the hook does not carry the size */
    return 0;
}

static __always_inline int on_mmap(int base, struct file *f, unsigned long prot)
{
    if (!traced() || !f)
        return 0;
    count(base + 2);
    emit(K_MMAP, (u64)f, prot, 0, 0);
    return 0;
}

/* the file's last reference is gone: forget its entry (struct files are reused) */
static __always_inline int on_free(int base, struct file *f)
{
    if (!traced())
        return 0;
    count(base + 3);
    u64 key = (u64)f;
    files.delete(&key);
    return 0;
}

#ifdef WITH_KPROBE
int kprobe__security_file_open(struct pt_regs *ctx, struct file *f) { return on_open(4, f); }
int kprobe__security_file_permission(struct pt_regs *ctx, struct file *f, int mask)
{
    return on_permission(4, f, mask);
}
int kprobe__security_mmap_file(struct pt_regs *ctx, struct file *f, unsigned long prot)
{
    return on_mmap(4, f, prot);
}
int kprobe__security_file_free(struct pt_regs *ctx, struct file *f) { return on_free(4, f); }
#endif

#ifdef WITH_FENTRY
KFUNC_PROBE(security_file_open, struct file *f) { return on_open(8, f); }
KFUNC_PROBE(security_file_permission, struct file *f, int mask)
{
    return on_permission(8, f, mask);
}
KFUNC_PROBE(security_mmap_file, struct file *f, unsigned long prot, unsigned long flags)
{
    return on_mmap(8, f, prot);
}
KFUNC_PROBE(security_file_free, struct file *f) { return on_free(8, f); }
#endif

#ifdef WITH_LSM
LSM_PROBE(file_open, struct file *f) { return on_open(12, f); }
LSM_PROBE(file_permission, struct file *f, int mask) { return on_permission(12, f, mask); }
LSM_PROBE(mmap_file, struct file *f, unsigned long reqprot, unsigned long prot, unsigned long flags)
{
    return on_mmap(12, f, prot);
}
LSM_PROBE(file_free_security, struct file *f) { return on_free(12, f); }
#endif
"""

VARIANTS = ["tp", "kprobe", "fentry", "lsm"]
HOOKS = ["open", "read", "mmap", "close"]
PROGRAMS = {  # variant -> the (BCC function name prefix, what it attaches to) per hook
    "tp": ["syscalls:sys_enter_openat+sys_exit_openat", "syscalls:sys_enter_read",
           "syscalls:sys_enter_mmap", "syscalls:sys_enter_close"],
    "kprobe": ["security_file_open", "security_file_permission", "security_mmap_file",
               "security_file_free"],
    "fentry": ["security_file_open", "security_file_permission", "security_mmap_file",
               "security_file_free"],
    "lsm": ["file_open", "file_permission", "mmap_file", "file_free_security"],
}
SLOT = {"tp": 0, "kprobe": 4, "fentry": 8, "lsm": 12}

# -- io_uring through ctypes (no liburing in the guest) ------------------------------
SYS_IO_URING_SETUP, SYS_IO_URING_ENTER = 425, 426
IORING_OP_OPENAT, IORING_OP_CLOSE, IORING_OP_READ = 18, 19, 22
IORING_OFF_SQ_RING, IORING_OFF_CQ_RING, IORING_OFF_SQES = 0, 0x8000000, 0x10000000
IORING_FEAT_SINGLE_MMAP = 1
AT_FDCWD = -100


class Ring:
    """A 4-entry io_uring, one operation at a time."""

    def __init__(self):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.syscall.restype = ctypes.c_long
        p = ctypes.create_string_buffer(120)
        fd = self.libc.syscall(ctypes.c_long(SYS_IO_URING_SETUP), ctypes.c_long(4), p)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "io_uring_setup: " + os.strerror(ctypes.get_errno()))
        self.fd = fd
        sq_n, cq_n = struct.unpack_from("II", p, 0)
        feat = struct.unpack_from("I", p, 20)[0]
        (self.sq_head, self.sq_tail, self.sq_mask, _, _, _, self.sq_array) = \
            struct.unpack_from("7I", p, 40)
        (self.cq_head, self.cq_tail, self.cq_mask, _, _, self.cqes) = \
            struct.unpack_from("6I", p, 80)
        sq_size = self.sq_array + sq_n * 4
        cq_size = self.cqes + cq_n * 16
        if feat & IORING_FEAT_SINGLE_MMAP:
            sq_size = cq_size = max(sq_size, cq_size)
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        self.sq = mmap.mmap(fd, sq_size, mmap.MAP_SHARED, prot, offset=IORING_OFF_SQ_RING)
        self.cq = self.sq if feat & IORING_FEAT_SINGLE_MMAP else \
            mmap.mmap(fd, cq_size, mmap.MAP_SHARED, prot, offset=IORING_OFF_CQ_RING)
        self.sqes = mmap.mmap(fd, sq_n * 64, mmap.MAP_SHARED, prot, offset=IORING_OFF_SQES)

    def run1(self, op: int, fd: int, addr: int = 0, length: int = 0, off: int = 0,
             op_flags: int = 0) -> int:
        tail = struct.unpack_from("I", self.sq, self.sq_tail)[0]
        mask = struct.unpack_from("I", self.sq, self.sq_mask)[0]
        i = tail & mask
        # struct io_uring_sqe: opcode, flags, ioprio, fd, off, addr, len, op_flags, user_data, ...
        sqe = struct.pack("BBHiQQIIQ", op, 0, 0, fd, off, addr, length, op_flags, 1)
        sqe = sqe.ljust(64, b"\0")
        self.sqes[i * 64:(i + 1) * 64] = sqe
        struct.pack_into("I", self.sq, self.sq_array + 4 * i, i)
        struct.pack_into("I", self.sq, self.sq_tail, tail + 1)
        if self.libc.syscall(ctypes.c_long(SYS_IO_URING_ENTER), ctypes.c_long(self.fd),
                             ctypes.c_long(1), ctypes.c_long(1), ctypes.c_long(1),
                             ctypes.c_void_p(0), ctypes.c_long(0)) < 0:
            raise OSError(ctypes.get_errno(), "io_uring_enter")
        head = struct.unpack_from("I", self.cq, self.cq_head)[0]
        while head == struct.unpack_from("I", self.cq, self.cq_tail)[0]:
            pass
        cmask = struct.unpack_from("I", self.cq, self.cq_mask)[0]
        res = struct.unpack_from("i", self.cq, self.cqes + 16 * (head & cmask) + 8)[0]
        struct.pack_into("I", self.cq, self.cq_head, head + 1)
        return res


# -- the workload (a forked child in the tagged cgroup) ---------------------------------
def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def syscalls_workload(path: str, n: int) -> None:
    for _ in range(n):
        fd = os.open(path, os.O_RDONLY)
        os.read(fd, 4096)
        m = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ)
        m.close()
        os.close(fd)


def uring_workload(path: str, n: int) -> int:
    """n opens and reads of path through io_uring only; returns the bytes read."""
    ring = Ring()
    name = ctypes.create_string_buffer(path.encode())
    buf = ctypes.create_string_buffer(4096)
    total = 0
    for _ in range(n):
        fd = ring.run1(IORING_OP_OPENAT, AT_FDCWD, ctypes.addressof(name), 0, 0, os.O_RDONLY)
        if fd < 0:
            raise OSError(-fd, "IORING_OP_OPENAT: " + os.strerror(-fd))
        got = ring.run1(IORING_OP_READ, fd, ctypes.addressof(buf), 4096, 0)
        if got < 0:
            raise OSError(-got, "IORING_OP_READ: " + os.strerror(-got))
        total += got
        ring.run1(IORING_OP_CLOSE, fd)
    return total


class Child:
    """A forked worker in cgroup `cg`: each command on the pipe runs one workload
    and answers with its CPU seconds (so nothing else runs between the stats reads)."""

    def __init__(self, cg: str, path: str):
        self.cmd_r, self.cmd_w = os.pipe()
        self.res_r, self.res_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.close(self.cmd_w)
                os.close(self.res_r)
                with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                    f.write("0")
                while True:
                    line = os.read(self.cmd_r, 64).decode().split()
                    if not line:
                        os._exit(0)
                    what, n = line[0], int(line[1])
                    t0 = cpu_s()
                    try:
                        if what == "sys":
                            syscalls_workload(path, n)
                        else:
                            uring_workload(path, n)
                        out = f"ok {cpu_s() - t0:.6f}"
                    except OSError as e:
                        out = f"error {e}"
                    os.write(self.res_w, out.encode().ljust(128))
            finally:
                os._exit(1)
        os.close(self.cmd_r)
        os.close(self.res_w)

    def run(self, what: str, n: int) -> float:
        os.write(self.cmd_w, f"{what} {n}".encode())
        answer = os.read(self.res_r, 128).decode().strip()
        if not answer.startswith("ok "):
            raise RuntimeError(answer or "the workload child died")
        return float(answer.split()[1])

    def stop(self) -> None:
        os.close(self.cmd_w)
        os.waitpid(self.pid, 0)


# -- BPF side ------------------------------------------------------------------------
def prog_stats(fd: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of a loaded program (kernel.bpf_stats_enabled=1)."""
    with open(f"/proc/self/fdinfo/{fd}") as f:
        text = f.read()
    ns = re.search(r"^run_time_ns:\s*(\d+)", text, re.M)
    cnt = re.search(r"^run_cnt:\s*(\d+)", text, re.M)
    return (int(ns.group(1)) if ns else 0, int(cnt.group(1)) if cnt else 0)


def lsm_active() -> bool:
    try:
        with open("/sys/kernel/security/lsm") as f:
            return "bpf" in f.read().split(",")
    except OSError:
        return False


class Attached:
    """One variant's programs attached; .fds: hook index -> program fds."""

    def __init__(self, bcc, b, variant: str):
        self.b, self.variant, self.fds, self.detach = b, variant, {}, []
        fnames = [bcc.lib.bpf_function_name(b.module, i).decode()
                  for i in range(bcc.lib.bpf_num_functions(b.module))]
        try:
            if variant == "tp":
                for hook, tps in enumerate(PROGRAMS["tp"]):
                    cat, events = tps.split(":")
                    for ev in events.split("+"):
                        fn = b.load_func(f"tracepoint__{cat}__{ev}", bcc.BPF.TRACEPOINT)
                        b.attach_tracepoint(tp=f"{cat}:{ev}", fn_name=fn.name)
                        self.detach.append(lambda t=f"{cat}:{ev}": b.detach_tracepoint(tp=t))
                        self.fds.setdefault(hook, []).append(fn.fd)
            elif variant == "kprobe":
                for hook, func in enumerate(PROGRAMS["kprobe"]):
                    fn = b.load_func(f"kprobe__{func}", bcc.BPF.KPROBE)
                    b.attach_kprobe(event=func, fn_name=fn.name)
                    self.detach.append(lambda e=func: b.detach_kprobe(event=e))
                    self.fds[hook] = [fn.fd]
            else:
                prefix = "kfunc__" if variant == "fentry" else "lsm__"
                for hook, func in enumerate(PROGRAMS[variant]):
                    # BCC names them kfunc__<func> or kfunc__vmlinux__<func>
                    name = next(n for n in fnames
                                if n.startswith(prefix) and n.endswith("__" + func))
                    if variant == "fentry":
                        b.attach_kfunc(fn_name=name)
                        self.detach.append(lambda n=name: b.detach_kfunc(fn_name=n))
                    else:
                        b.attach_lsm(fn_name=name)
                        self.detach.append(lambda n=name: b.detach_lsm(fn_name=n))
                    self.fds[hook] = [b.funcs[name.encode()].fd]
        except BaseException:
            self.close()
            raise

    def stats(self) -> dict[int, tuple[int, int]]:
        out = {}
        for hook, fds in self.fds.items():
            ns = cnt = 0
            for fd in fds:  # an enter/exit pair: one call is both programs' time
                a, c = prog_stats(fd)
                ns, cnt = ns + a, max(cnt, c)
            out[hook] = (ns, cnt)
        return out

    def close(self) -> None:
        for undo in reversed(self.detach):
            try:
                undo()
            except Exception:  # noqa: BLE001 - detach what can be detached
                pass
        self.detach = []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20000, help="iterations per workload (default 20000)")
    ap.add_argument("-r", type=int, default=5, help="rounds per variant (default 5)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("hooks: must run as root", file=sys.stderr)
        return 2
    from roar.capture.probes import ensure_tracefs, import_bcc

    try:
        bcc = import_bcc()
    except Exception as e:  # noqa: BLE001 - ProbeError: one line
        print(f"hooks: {e}", file=sys.stderr)
        return 2
    ensure_tracefs()
    from roar.capture.cgroups import CgroupError, cgroup2_mount

    try:
        cg_root = str(cgroup2_mount())
    except CgroupError as e:
        print(f"hooks: {e}", file=sys.stderr)
        return 2
    try:
        with open("/sys/kernel/security/lsm") as f:
            lsms = f.read().strip()
    except OSError:
        lsms = "?"
    print(f"hooks: kernel {os.uname().release}, lsm: {lsms}, "
          f"{args.n} iterations x {args.r} rounds", flush=True)

    flags = ["-DWITH_KPROBE", "-DWITH_FENTRY", "-DWITH_LSM", "-Wno-macro-redefined"]
    t0 = time.monotonic()

    class _BPF(bcc.BPF):
        def _trace_autoload(self):  # attached one variant at a time below
            pass

    b = _BPF(text=TEXT, cflags=flags)
    print(f"hooks: compiled in {time.monotonic() - t0:.1f}s", flush=True)
    b["events"].open_ring_buffer(lambda ctx, data, size: 0)  # drained after each round

    cg = os.path.join(cg_root, f"roar-hooks-{os.getpid()}")
    os.mkdir(cg)
    cg_id = os.stat(cg).st_ino
    b["tagged"][ctypes.c_uint64(cg_id)] = ctypes.c_uint8(1)
    data = tempfile.NamedTemporaryFile(prefix="roar-hooks-", dir="/var/tmp", delete=False)
    data.write(os.urandom(8192))
    data.close()
    old_stats = open("/proc/sys/kernel/bpf_stats_enabled").read().strip()
    with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
        f.write("1")
    child = Child(cg, data.name)
    try:
        return measure(bcc, b, child, args)
    finally:
        child.stop()
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write(old_stats)
        os.unlink(data.name)
        os.rmdir(cg)


def seen_counts(b) -> list[int]:
    t = b["seen"]
    return [t.sum(t.Key(i)).value for i in range(16)]


def measure(bcc, b, child: Child, args) -> int:
    n, rounds = args.n, args.r
    cpu: dict[str, list[float]] = {"none": []}
    bpf: dict[str, dict[int, list[tuple[int, int]]]] = {}
    recs: dict[str, list[int]] = {}  # the last round's traced calls per hook
    usable = []
    child.run("sys", 200)  # warm: page cache, Python's mmap module, ring setup code
    for variant in VARIANTS:
        if variant == "lsm" and not lsm_active():
            print("hooks: lsm unavailable: bpf is not in /sys/kernel/security/lsm "
                  "(boot with lsm=...,bpf)", flush=True)
            continue
        try:
            Attached(bcc, b, variant).close()
        except Exception as e:  # noqa: BLE001 - BCC raises bare Exception
            why = (str(e).splitlines() or [repr(e)])[0]
            print(f"hooks: {variant} unavailable: {why[:160]}", flush=True)
            continue
        usable.append(variant)
    # io_uring first (quick): which hooks see opens and reads submitted through a ring
    m = min(n, 500)
    print(f"\nio_uring: {m} x (IORING_OP_OPENAT + IORING_OP_READ + IORING_OP_CLOSE), "
          "traced calls each hook saw (expected: as many opens and reads)", flush=True)
    for variant in usable:
        # the child's own protocol (its read of the next command, the ring's
        # set-up) is counted by a run of 0 operations and taken off
        a = Attached(bcc, b, variant)
        try:
            s0 = seen_counts(b)
            child.run("uring", 0)
            time.sleep(0.2)  # the child is back in its read of the pipe
            s1 = seen_counts(b)
            child.run("uring", m)
            time.sleep(0.2)
            s2 = seen_counts(b)
        finally:
            a.close()
        b.ring_buffer_consume()
        o, r = ((s2[SLOT[variant] + h] - s1[SLOT[variant] + h])
                - (s1[SLOT[variant] + h] - s0[SLOT[variant] + h]) for h in range(2))
        print(f"{variant:8} opens seen {o:5d}  reads seen {r:5d}", flush=True)
    # rounds interleave the variants (and nothing attached) so that the load
    # of the host moves them all alike; each round's raw figures are printed as
    # it ends (a boot that runs out of time still leaves them)
    print("\nrounds (raw): variant CPU-s [bpf ns, run_cnt per hook]", flush=True)
    for i in range(rounds):
        cpu["none"].append(child.run("sys", n))
        raw = [f"none {cpu['none'][-1]:.3f}"]
        for variant in usable:
            a = Attached(bcc, b, variant)
            try:
                before, s0 = a.stats(), seen_counts(b)
                cpu.setdefault(variant, []).append(child.run("sys", n))
                after, s1 = a.stats(), seen_counts(b)
            finally:
                a.close()
            for hook in after:
                bpf.setdefault(variant, {}).setdefault(hook, []).append(
                    (after[hook][0] - before[hook][0], after[hook][1] - before[hook][1]))
            b.ring_buffer_consume()
            recs[variant] = [s1[SLOT[variant] + h] - s0[SLOT[variant] + h] for h in range(4)]
            raw.append(f"{variant} {cpu[variant][-1]:.3f} "
                       f"{[bpf[variant][h][-1] for h in sorted(bpf[variant])]}")
        print(f"round {i + 1}: " + "; ".join(raw), flush=True)

    med = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"\nworkload: {n} x (openat + read 4096 + mmap PROT_READ + munmap + close), "
          f"{rounds} rounds, medians; CPU = the child's user+sys per iteration")
    print(f"{'variant':8} {'CPU us/iter':>11} {'vs none':>8} {'+us/iter':>9} "
          f"{'bpf ns/iter':>11}  per hook: ns/call (calls/iter, traced calls/iter)")
    for variant in ["none", *usable]:
        c = med[variant] / n * 1e6
        line = f"{variant:8} {c:11.2f} {med[variant] / med['none']:8.3f} " \
               f"{c - med['none'] / n * 1e6:9.2f}"
        if variant != "none":
            total = statistics.median(sum(x[i][0] for x in bpf[variant].values())
                                      for i in range(rounds)) / n
            hooks = []
            for hook in sorted(bpf[variant]):
                ns = sum(x[0] for x in bpf[variant][hook])
                cnt = sum(x[1] for x in bpf[variant][hook])
                hooks.append(f"{HOOKS[hook]} {ns / max(cnt, 1):.0f} "
                             f"({cnt / rounds / n:.2f}, {recs[variant][hook] / n:.2f})")
            line += f" {total:11.0f}  " + ", ".join(hooks)
        print(line)
    print("hooks: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
