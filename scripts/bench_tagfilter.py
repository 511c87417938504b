#!/usr/bin/env python3
"""What the run-cgroup filter costs an UNTAGGED process, A/B in one run.

    sudo .venv/bin/python scripts/bench_tagfilter.py [--reps 7] [--count 400000]

Run cgroups now sit below each caller's own cgroup, at any level, so the
first check of every program (tagged_cgroup in bpf/tagging.h) looks up a mask of
the levels in use and one ancestor id per level set, where it used to look up
one ancestor id at a fixed level. This times an untagged `dd` of 4 KiB reads
from /dev/zero (the syscall-heaviest shape, one read per 4 KiB) while one
program on sys_enter_read runs each filter and returns:

  detached      no program attached
  empty         a program that returns at once (the tracepoint's own cost)
  fixed-level   the old filter: bpf_get_current_ancestor_cgroup_id(2) + hash lookup
  mask-0        the new filter (bpf/tagging.h), no level in use (the mask lookup alone)
  mask-1        the new filter, one level in use
  mask-3        the new filter, three levels in use (runs from three cgroup depths)

Modes are interleaved per repetition; medians and ratios to `detached` are
printed, and the kernel's own account of the time spent inside each program
(kernel.bpf_stats_enabled, run_time_ns / run_cnt: free of scheduling noise,
but without the tracepoint's entry cost). Needs root and BCC.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from roar.capture.cgroups import cgroup2_mount  # noqa: E402
from roar.capture.probes import import_bcc  # noqa: E402

PROGRAMS = {
    "empty": "return 0;",
    "fixed-level": """
    u64 cg = bpf_get_current_ancestor_cgroup_id(2);
    if (cg == 0 || !tagged.lookup(&cg))
        return 0;
    hits.increment(0);
    return 0;""",
    "mask": """
    if (!tagged_cgroup())
        return 0;
    hits.increment(0);
    return 0;""",
}


def program(body: str) -> bytes:
    # inlined, as probes.program_text does: BCC rewrites map use in the main file only
    maps = (REPO / "bpf" / "tagging.h").read_text().replace(
        '#include "roar_event.h"', (REPO / "bpf" / "roar_event.h").read_text())
    return ("#include <uapi/linux/ptrace.h>\n" + maps + "\n"
            "BPF_ARRAY(hits, u64, 1);\n"
            f"TRACEPOINT_PROBE(syscalls, sys_enter_read) {{ {body} }}\n").encode()


STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
INFO_LEN = 256
RUN_TIME_NS, RUN_CNT = 192, 200  # offsets in struct bpf_prog_info (uapi/linux/bpf.h)


def run_stats(bcc, b) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of a loaded program: the kernel's own count of
    the time spent in it (kernel.bpf_stats_enabled), free of scheduling noise."""
    fd = b.funcs[b"tracepoint__syscalls__sys_enter_read"].fd
    buf = ctypes.create_string_buffer(INFO_LEN)
    n = ctypes.c_uint32(INFO_LEN)
    bcc.libbcc.lib.bpf_obj_get_info.argtypes = [ctypes.c_int, ctypes.c_void_p,
                                                ctypes.POINTER(ctypes.c_uint32)]
    if bcc.libbcc.lib.bpf_obj_get_info(fd, buf, ctypes.byref(n)) != 0:
        raise OSError("BPF_OBJ_GET_INFO_BY_FD failed")
    raw = buf.raw
    return (int.from_bytes(raw[RUN_TIME_NS:RUN_TIME_NS + 8], "little"),
            int.from_bytes(raw[RUN_CNT:RUN_CNT + 8], "little"))


def timed(count: int, where: Path) -> float:
    def enter():
        (where / "cgroup.procs").write_text("0")

    t = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", "of=/dev/null", "bs=4k", f"count={count}"],
                   check=True, stderr=subprocess.DEVNULL, preexec_fn=enter)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--count", type=int, default=400_000, help="4 KiB reads per dd")
    args = ap.parse_args()
    bcc = import_bcc()
    cflags = [f"-I{REPO}/bpf", "-DRINGBUF_PAGES=16", "-Wno-macro-redefined"]

    class _BPF(bcc.BPF):
        def _trace_autoload(self):  # attached per mode below, not at load
            pass

    loaded = {}
    for name, body in PROGRAMS.items():
        b = _BPF(text=program(body), cflags=cflags)
        b.load_func(b"tracepoint__syscalls__sys_enter_read", bcc.BPF.TRACEPOINT)
        loaded[name] = b
    mask_bpf = loaded["mask"]
    modes = ["detached", "empty", "fixed-level", "mask-0", "mask-1", "mask-3"]
    times: dict[str, list[float]] = {m: [] for m in modes}
    # dd runs three levels down, as a service's or a job's processes do: the
    # ancestor lookups then find real cgroups (none of them tagged)
    top = cgroup2_mount() / f"roar-bench-tagfilter-{time.time_ns()}"
    where = top / "a" / "b"
    where.mkdir(parents=True)
    stats_before = STATS.read_text().strip()
    STATS.write_text("1")
    inside: dict[str, tuple[int, int]] = {}
    try:
        run_modes(args, loaded, mask_bpf, modes, times, where, bcc, inside)
    finally:
        STATS.write_text(stats_before)
        for d in (where, where.parent, top):
            d.rmdir()
    report(args, modes, times, inside)
    for b in loaded.values():
        b.cleanup()


def run_modes(args, loaded, mask_bpf, modes, times, where, bcc, inside) -> None:
    timed(args.count, where)  # warm-up
    for _ in range(args.reps):
        for mode in modes:
            b = None
            if mode != "detached":
                b = loaded[mode.split("-")[0] if mode.startswith("mask") else mode]
                if mode.startswith("mask"):
                    levels = {"mask-0": 0, "mask-1": 1 << 2,
                              "mask-3": (1 << 2) | (1 << 5) | (1 << 7)}[mode]
                    t = mask_bpf["tag_levels"]
                    t[t.Key(0)] = t.Leaf(levels)
                b.attach_tracepoint(tp=b"syscalls:sys_enter_read",
                                    fn_name=b"tracepoint__syscalls__sys_enter_read")
            try:
                before = run_stats(bcc, b) if b is not None else (0, 0)
                times[mode].append(timed(args.count, where))
                if b is not None:
                    after = run_stats(bcc, b)
                    t, c = inside.get(mode, (0, 0))
                    inside[mode] = (t + after[0] - before[0], c + after[1] - before[1])
            finally:
                if b is not None:
                    b.detach_tracepoint(b"syscalls:sys_enter_read")


def report(args, modes, times, inside) -> None:
    base = statistics.median(times["detached"])
    print(f"untagged dd, {args.count} x 4 KiB reads from /dev/zero, {args.reps} interleaved "
          f"reps (medians)")
    for mode in modes:
        med = statistics.median(times[mode])
        per = (med - base) / args.count * 1e9
        t, c = inside.get(mode, (0, 0))
        prog = f"{t / c:6.1f} ns/call in the program" if c else ""
        print(f"  {mode:<12} {med:7.3f} s  {med / base:5.2f}x  {per:+6.0f} ns/read  {prog}")


if __name__ == "__main__":
    main()
