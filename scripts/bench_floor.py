#!/usr/bin/env python3
"""What an *untagged* process pays per syscall while roar's probes are attached
(the floor), by kind of hook: A/B, interleaved.

    sudo .venv/bin/python scripts/bench_floor.py [--reps 7] [--count 400000] [--bs 4k]
        [--only a,b] [--old REV] [--input FILE | --cmd CMD] [--stats]

Times `dd if=/dev/zero of=/dev/null bs=4k` (one read and one write per block;
--bs 1: syscalls and little else) outside any run cgroup while one run cgroup
is tagged elsewhere, with each of these attached (interleaved per repetition;
medians and first quartiles of dd's CPU time, user + system, which holds the
hooks' cost and not the waiting of a loaded machine):

  none            nothing attached
  tp-unused       an empty syscalls:sys_enter_acct program (a syscall nobody
                  calls): the slow syscall entry/exit every task then takes
  tp-exit-unused  the same on syscalls:sys_exit_acct
  tp-rw           empty syscalls:sys_enter_read + sys_enter_write programs
  chk-mask / chk-pid / chk-cgid / chk-full
                  programs on those two doing parts of roar's tag check
                  (traced_task() in bpf/tagging.h) and returning
  raw-empty       an empty raw tracepoint program on sys_enter
  raw-switch      raw sys_enter: switch on the syscall nr, the tag check for
                  the read/write family, return
  roar-rw         roar's kernel side (the work tree's), only its read/write
                  family programs attached (the raw sys_enter program where
                  bpf/ compiles one, as roar.capture.probes loads it)
  roar-rw+exit    those and every sys_exit_* program
  roar-noexit     every program but the sys_exit_* ones
  roar-all        every program (what roard holds while a run is traced)
  raw-pair        no syscalls:* event at all: one raw sys_enter and one raw
                  sys_exit program, each taking the syscall number (sys_exit's
                  from the registers), a switch over the numbers roar's
                  syscalls:* programs trace, and the tag check: the untagged
                  floor of a kernel side that dispatches on the number (the
                  next design step of docs/bench.md), without its work
  old-rw/old-all  the same for the kernel side at git revision --old

A repetition during which another process had eBPF tracepoints attached
(another roard, a capture test) is thrown away: then every syscall already
takes the slow path and `none` is no baseline. Prints ns per syscall above
`none` for each mode.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from roar.capture import features  # noqa: E402
from roar.capture.cgroups import cgroup2_mount  # noqa: E402
from roar.capture.events import CONSTS, program_text  # noqa: E402
from roar.capture.probes import RAW_PROGRAMS, import_bcc  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_hotpath import bpf_dir_at  # noqa: E402 - bpf/ of another revision, as it does

# appended to roar's kernel side (its maps and traced_task()); attached by hand
SMALL = r"""
int tp_empty(void *ctx) { return 0; }

int chk_mask(void *ctx)  /* the first test of traced_task(): is any run tagged? */
{
    int zero = 0;
    u64 *m = tag_levels.lookup(&zero);
    if (!m || !*m)
        return 0;
    return 1;
}

int chk_cgid(void *ctx) { return bpf_get_current_cgroup_id() == 1; }

int chk_pid(void *ctx) { return bpf_get_current_pid_tgid() == 1; }

/* roar's tag check, as its programs ask it (traced_task(), then the task's run) */
static __always_inline int in_a_run(void)
{
    struct task_seen *me = traced_task();
    return me && me->run;
}

int chk_full(void *ctx) { return in_a_run(); }  /* what roar's read/write programs do */

int raw_empty(struct bpf_raw_tracepoint_args *ctx) { return 0; }

int raw_switch(struct bpf_raw_tracepoint_args *ctx)
{
    switch (ctx->args[1]) {
    case 0: case 1: case 17: case 18: case 19: case 20: case 295: case 296: case 327: case 328:
        break;
    default:
        return 0;
    }
    return in_a_run();
}
"""


def raw_pair_text(text: str) -> str:
    """raw_pair_enter/raw_pair_exit (the raw-pair mode) for the syscalls that
    roar's kernel side (text) has syscalls:* programs on, by x86_64 number."""
    from bcc import syscall

    by_name = {v.decode(): k for k, v in syscall.syscalls.items()}

    def cases(side: str) -> str:
        names = set(re.findall(rf"TRACEPOINT_PROBE\(syscalls,\s*sys_{side}_(\w+)\)", text))
        return " ".join(f"case {by_name[n]}:" for n in sorted(names) if n in by_name)

    check = """
        break;
    default:
        return 0;
    }
    return in_a_run();
}
"""
    return (f"""
int raw_pair_enter(struct bpf_raw_tracepoint_args *ctx)
{{
    switch (ctx->args[1]) {{
    {cases("enter")}""" + check + f"""
int raw_pair_exit(struct bpf_raw_tracepoint_args *ctx)
{{
    struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
    long nr = -1;
    bpf_probe_read_kernel(&nr, sizeof(nr), &regs->orig_ax);
    switch (nr) {{
    {cases("exit")}""" + check)


LIB: list = []  # libbcc, once loaded
STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
INFO_LEN = 256
RUN_TIME_NS, RUN_CNT = 192, 200  # offsets in struct bpf_prog_info (uapi/linux/bpf.h)
RW = ("read", "pread64", "readv", "preadv", "preadv2",
      "write", "pwrite64", "writev", "pwritev", "pwritev2")
MODES = ("none", "tp-unused", "tp-rw", "chk-mask", "chk-pid", "chk-cgid", "chk-full",
         "raw-empty", "raw-switch", "roar-rw", "roar-all", "roar-noexit", "roar-rw+exit",
         "tp-exit-unused", "raw-pair")


class Hooks:
    """A set of (kind, event, function) to attach and detach as one."""

    def __init__(self, b, hooks):
        self.b, self.hooks = b, hooks
        self.time_ns = self.calls = 0  # inside the programs (kernel.bpf_stats_enabled)

    def stats(self) -> tuple[int, int]:
        t = c = 0
        for fn in {fn for _k, _e, fn in self.hooks}:
            buf = ctypes.create_string_buffer(INFO_LEN)
            n = ctypes.c_uint32(INFO_LEN)
            if LIB[0].bpf_obj_get_info(self.b.funcs[fn].fd, buf, ctypes.byref(n)):
                raise OSError("BPF_OBJ_GET_INFO_BY_FD failed")
            t += int.from_bytes(buf.raw[RUN_TIME_NS:RUN_TIME_NS + 8], "little")
            c += int.from_bytes(buf.raw[RUN_CNT:RUN_CNT + 8], "little")
        return t, c

    def attach(self):
        for kind, ev, fn in self.hooks:
            if kind == "raw":
                self.b.attach_raw_tracepoint(tp=ev, fn_name=fn)
            else:
                self.b.attach_tracepoint(tp=ev, fn_name=fn)

    def detach(self):
        for kind, ev, _fn in self.hooks:
            if kind == "raw":
                self.b.detach_raw_tracepoint(tp=ev)
            else:
                self.b.detach_tracepoint(ev)


def loaded(bcc, text: str):
    class _BPF(bcc.BPF):
        def _trace_autoload(self):
            pass

    return _BPF(text=text.encode(), cflags=[*features.compile_flags(), "-DRINGBUF_PAGES=16",
                                            "-Wno-macro-redefined", "-Wno-unused-value"])


def roar_hooks(bcc, b) -> list:
    """The programs roar.capture.probes would attach: a raw tracepoint program
    in place of the syscalls:* programs it stands for."""
    out, replaced = [], set()
    names = [bcc.lib.bpf_function_name(b.module, i)
             for i in range(bcc.lib.bpf_num_functions(b.module))]
    for name in names:
        if name in RAW_PROGRAMS:
            b.load_func(name, bcc.BPF.RAW_TRACEPOINT)
            out.append(("raw", name[len(b"raw_tracepoint__"):], name))
            replaced |= RAW_PROGRAMS[name]
    for name in names:
        if name.startswith(b"tracepoint__") and name not in replaced:
            b.load_func(name, bcc.BPF.TRACEPOINT)
            out.append(("tp", name[len(b"tracepoint__"):].replace(b"__", b":"), name))
    return out


def tag_elsewhere(b, cgroup_id: int, level: int) -> None:
    """A run cgroup is tagged (dd is not in it): the floor while another run is traced."""
    t = b[b"tagged"]
    t[t.Key(cgroup_id)] = t.Leaf(1)
    m = b[b"tag_levels"]
    m[m.Key(0)] = m.Leaf(1 << level)
    g = b[b"generations"]
    key = g.Key(CONSTS["GEN_TAGS"])
    g[key] = g.Leaf(g[key].value + 1)


CMD: list[str] = []  # --cmd, when given
WALL: list[float] = []  # wall seconds of each dd, in order


def dd_cpu(count: int, src: str = "/dev/zero", bs: str = "4k") -> float:
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    cmd = ["sh", "-c", CMD[0]] if CMD else ["dd", f"if={src}", "of=/dev/null", f"bs={bs}",
                                            f"count={count}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    WALL.append(time.perf_counter() - t0)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime


def foreign_tracers() -> list[int]:
    """Other processes holding eBPF programs attached through perf events (another
    roard, an embedded roar run, a test): while one exists, every syscall already
    takes the slow path and `none` is no baseline (as scripts/bench's check)."""
    found = []
    for d in glob.glob("/proc/[0-9]*"):
        pid = int(d.rsplit("/", 1)[1])
        if pid == os.getpid():
            continue
        prog = perf = False
        try:
            for fd in os.scandir(f"{d}/fd"):
                try:
                    link = os.readlink(fd.path)
                except OSError:
                    continue
                prog = prog or link == "anon_inode:bpf-prog"
                perf = perf or link == "anon_inode:[perf_event]"
        except OSError:
            continue
        if prog and perf:
            found.append(pid)
    return found


def quartile(xs: list[float]) -> float:
    """The first quartile: on a busy machine, noise only ever adds time."""
    return statistics.quantiles(xs, n=4)[0] if len(xs) > 1 else xs[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--count", type=int, default=400_000, help="4 KiB blocks per dd")
    ap.add_argument("--only", help="comma-separated modes (none is always run)")
    ap.add_argument("--old", metavar="REV",
                    help="also roar's kernel side at git revision REV (old-rw, old-all)")
    ap.add_argument("--max-dropped", type=int, default=120,
                    help="stop early after after this many repetitions spoilt by other tracers")
    ap.add_argument("--cmd", help="time `sh -c CMD` instead of dd (ns/syscall then "
                    "assumes --count syscalls)")
    ap.add_argument("--bs", default="4k", help="dd's block size (1: syscalls and little else)")
    ap.add_argument("--stats", action="store_true",
                    help="kernel.bpf_stats_enabled on: also the time inside the programs "
                         "(the accounting adds its own cost to every mode's dd)")
    ap.add_argument("--input", default="/dev/zero",
                    help="what dd reads (a file in the page cache: --count 4 KiB blocks of it)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_floor: must run as root")
    if args.cmd:
        CMD.append(args.cmd)
    if args.old:
        modes_all = [*MODES, "old-rw", "old-all"]
    else:
        modes_all = list(MODES)
    modes = modes_all if not args.only else ["none", *[m for m in args.only.split(",")
                                                         if m != "none"]]
    bcc = import_bcc()
    lib = bcc.libbcc.lib
    lib.bpf_obj_get_info.argtypes = [ctypes.c_int, ctypes.c_void_p,
                                     ctypes.POINTER(ctypes.c_uint32)]
    LIB.append(lib)
    top = cgroup2_mount() / f"roar-bench-floor-{time.time_ns()}"
    run = top / "run"
    run.mkdir(parents=True)
    level = len(run.relative_to(cgroup2_mount()).parts)
    b = old = None
    stats_before = STATS.read_text().strip()
    if args.stats:
        STATS.write_text("1")
    try:
        text = program_text()
        b = loaded(bcc, text + SMALL + raw_pair_text(text))
        tag_elsewhere(b, os.stat(run).st_ino, level)
        hooks = roar_hooks(bcc, b)
        if args.old:
            tmp = Path(tempfile.mkdtemp(prefix="roar-floor-"))
            try:
                old = loaded(bcc, program_text(bpf_dir_at(args.old, tmp)))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            tag_elsewhere(old, os.stat(run).st_ino, level)
            old_hooks = roar_hooks(bcc, old)
        for fn in ("tp_empty", "chk_mask", "chk_cgid", "chk_pid", "chk_full"):
            b.load_func(fn.encode(), bcc.BPF.TRACEPOINT)
        for fn in ("raw_empty", "raw_switch", "raw_pair_enter", "raw_pair_exit"):
            b.load_func(fn.encode(), bcc.BPF.RAW_TRACEPOINT)

        def rw(fn: str) -> Hooks:
            return Hooks(b, [("tp", f"syscalls:sys_enter_{n}".encode(), fn.encode())
                             for n in ("read", "write")])

        sets = {
            "tp-unused": Hooks(b, [("tp", b"syscalls:sys_enter_acct", b"tp_empty")]),
            "tp-rw": rw("tp_empty"),
            "chk-mask": rw("chk_mask"),
            "chk-pid": rw("chk_pid"),
            "chk-cgid": rw("chk_cgid"),
            "chk-full": rw("chk_full"),
            "raw-empty": Hooks(b, [("raw", b"sys_enter", b"raw_empty")]),
            "raw-switch": Hooks(b, [("raw", b"sys_enter", b"raw_switch")]),
            "roar-rw": Hooks(b, [h for h in hooks if h[0] == "raw"
                                 or h[1].decode().split(":sys_enter_")[-1] in RW]),
            "roar-all": Hooks(b, hooks),
            "roar-noexit": Hooks(b, [h for h in hooks if b"sys_exit_" not in h[1]]),
            "roar-rw+exit": Hooks(b, [h for h in hooks if h[0] == "raw" or b"sys_exit_" in h[1]
                                      or h[1].decode().split(":sys_enter_")[-1] in RW]),
            "tp-exit-unused": Hooks(b, [("tp", b"syscalls:sys_exit_acct", b"tp_empty")]),
            "raw-pair": Hooks(b, [("raw", b"sys_enter", b"raw_pair_enter"),
                                  ("raw", b"sys_exit", b"raw_pair_exit")]),
        }
        if old is not None:
            sets["old-rw"] = Hooks(old, [h for h in old_hooks if h[0] == "raw"
                                         or h[1].decode().split(":sys_enter_")[-1] in RW])
            sets["old-all"] = Hooks(old, old_hooks)
        dropped = 0
        cpu: dict[str, list[float]] = {m: [] for m in modes}
        wall: dict[str, list[float]] = {m: [] for m in modes}
        dd_cpu(args.count, args.input, args.bs)  # warm-up
        rep = 0
        while rep < args.reps:
            # a repetition runs every mode; one during which another process had
            # probes attached is thrown away (after a wait: tests come and go)
            if foreign_tracers():
                dropped += 1
                if dropped > args.max_dropped:
                    print(f"bench_floor: other processes keep eBPF tracepoints attached "
                          f"({foreign_tracers()}); stopping after {rep} clean reps",
                          file=sys.stderr)
                    break
                time.sleep(2)
                continue
            got: dict[str, tuple[float, float, int, int]] = {}
            for mode in (modes if rep % 2 == 0 else modes[::-1]):
                h = sets.get(mode)
                if h:
                    h.attach()
                try:
                    t0, c0 = h.stats() if h and args.stats else (0, 0)
                    c = dd_cpu(args.count, args.input, args.bs)
                    t1, c1 = h.stats() if h and args.stats else (0, 0)
                    got[mode] = (c, WALL[-1], t1 - t0, c1 - c0)
                finally:
                    if h:
                        h.detach()
            if foreign_tracers():
                dropped += 1
                continue
            for mode, (c, w, t, n) in got.items():
                cpu[mode].append(c)
                wall[mode].append(w)
                if mode in sets:
                    sets[mode].time_ns += t
                    sets[mode].calls += n
            rep += 1
    finally:
        STATS.write_text(stats_before)
        for x in (b, old):
            if x is not None:
                x.cleanup()
        run.rmdir()
        top.rmdir()
    if not cpu["none"]:
        sys.exit("bench_floor: no clean repetition")
    base = statistics.median(cpu["none"])
    wbase = statistics.median(wall["none"])
    calls = args.count if args.cmd else 2 * args.count
    what = (f"sh -c {args.cmd!r} (--count {args.count} syscalls)" if args.cmd else
            f"dd bs={args.bs} count={args.count} ({args.input} -> /dev/null)")
    print(f"untagged {what}, {args.reps} "
          f"interleaved reps, median CPU s; load {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs; kernel {os.uname().release}; {dropped} reps dropped "
          "(other tracers attached)")
    for mode in modes:
        med = statistics.median(cpu[mode])
        lo = quartile(cpu[mode])
        print(f"  {mode:<11} {med:7.3f} s  {med / base:5.2f}x  "
              f"{(med - base) / calls * 1e9:+6.0f} ns/syscall  (q1 {lo:.3f} s: "
              f"{(lo - quartile(cpu['none'])) / calls * 1e9:+5.0f} ns)  "
              f"wall {statistics.median(wall[mode]) / wbase:5.2f}x"
              + (f"  inside {h.time_ns / h.calls:5.1f} ns/call" if (h := sets.get(mode))
                 and h.calls else ""))


if __name__ == "__main__":
    main()
