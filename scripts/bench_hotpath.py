#!/usr/bin/env python3
"""What a traced read/write costs in the kernel, A/B between two versions of bpf/.

    sudo .venv/bin/python scripts/bench_hotpath.py [--old main] [--reps 7] [--count 400000]
    sudo .venv/bin/python scripts/bench_hotpath.py --profile 'CMD' [--old main] [--reps 5]

The hot path of the kernel side is the program on sys_enter_read/write of a
traced process: after the first access of an fd, each call only adds to that
fd's counters. This loads the whole kernel side twice, at git revision --old
(default main) and as the work tree has it now, and times `dd bs=4k` from
/dev/zero to /dev/null (one read and one write per 4 KiB: the syscall-heaviest
shape) with only those two programs attached (or the raw sys_enter program that
stands for the read/write family where bpf/ has one), in these modes:

  detached        nothing attached
  old / new       dd runs inside a tagged run cgroup: every call is traced
  old-untagged /  dd runs outside it while the run cgroup is tagged: what every
  new-untagged    other process on the host pays

Modes are interleaved per repetition; medians of dd's wall time and of its CPU
time (user + system: free of the waiting a loaded machine adds to wall time),
with ratios to `detached`, are printed, with the kernel's own account of the time spent inside
the two programs (kernel.bpf_stats_enabled: run_time_ns / run_cnt, free of
scheduling noise, without the tracepoint's entry cost).

--profile CMD: every program of both versions attached, `sh -c CMD` run in the
tagged cgroup (ring buffer drained between runs, untimed); per program: calls
and kernel time per run, ns per call, old vs new. Where a per-event cost is.

Needs root and BCC.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from roar.capture import features  # noqa: E402
from roar.capture.cgroups import cgroup2_mount  # noqa: E402
from roar.capture.events import CONSTS, program_text  # noqa: E402
from roar.capture.probes import RAW_PROGRAMS, import_bcc  # noqa: E402

PROGRAMS = (b"tracepoint__syscalls__sys_enter_read", b"tracepoint__syscalls__sys_enter_write")
STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
INFO_LEN = 256
RUN_TIME_NS, RUN_CNT = 192, 200  # offsets in struct bpf_prog_info (uapi/linux/bpf.h)


def bpf_dir_at(rev: str, into: Path) -> Path:
    """bpf/ as it is at git revision rev, extracted under into."""
    blob = subprocess.run(["git", "archive", rev, "bpf"], cwd=REPO, check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as t:
        t.extractall(into, filter="data")
    return into / "bpf"


def run_stats(bcc, b) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of the loaded programs, summed."""
    st = prog_stats(bcc, b).values()
    return sum(t for t, _ in st), sum(c for _, c in st)


def load(bcc, text: str, pages: int = 16, names=PROGRAMS):
    """Compile a kernel side and load the named programs (None: all of them)."""
    class _BPF(bcc.BPF):
        def _trace_autoload(self):  # attached per mode below, not at load
            pass

    b = _BPF(text=text.encode(), cflags=[f"-DRINGBUF_PAGES={pages}", *features.compile_flags(),
                                         "-Wno-macro-redefined", "-Wno-unused-value"])
    funcs = [bcc.lib.bpf_function_name(b.module, i)
             for i in range(bcc.lib.bpf_num_functions(b.module))]
    raw = [n for n in funcs if n in RAW_PROGRAMS]  # loaded as roar.capture.probes does
    replaced = set().union(*(RAW_PROGRAMS[n] for n in raw))
    if names is None:
        names = [n for n in funcs if n.startswith(b"tracepoint__")]
    names = [n for n in names if n not in replaced] + raw
    for name in names:
        b.load_func(name, bcc.BPF.RAW_TRACEPOINT if name in raw else bcc.BPF.TRACEPOINT)
    b.hot_names = list(names)
    return b


def attach(b) -> None:
    for name in b.hot_names:
        if name in RAW_PROGRAMS:
            b.attach_raw_tracepoint(tp=name[len(b"raw_tracepoint__"):], fn_name=name)
        else:
            b.attach_tracepoint(tp=_tp(name), fn_name=name)


def detach(b) -> None:
    for name in b.hot_names:
        if name in RAW_PROGRAMS:
            b.detach_raw_tracepoint(tp=name[len(b"raw_tracepoint__"):])
        else:
            b.detach_tracepoint(_tp(name))


def _tp(name: bytes) -> bytes:
    return name[len(b"tracepoint__"):].replace(b"__", b":")


def prog_stats(bcc, b) -> dict[bytes, tuple[int, int]]:
    """name -> (run_time_ns, run_cnt) of each loaded program."""
    lib = bcc.libbcc.lib
    lib.bpf_obj_get_info.argtypes = [ctypes.c_int, ctypes.c_void_p,
                                     ctypes.POINTER(ctypes.c_uint32)]
    out = {}
    for name in b.hot_names:
        buf = ctypes.create_string_buffer(INFO_LEN)
        n = ctypes.c_uint32(INFO_LEN)
        if lib.bpf_obj_get_info(b.funcs[name].fd, buf, ctypes.byref(n)) != 0:
            raise OSError("BPF_OBJ_GET_INFO_BY_FD failed")
        raw = buf.raw
        out[name] = (int.from_bytes(raw[RUN_TIME_NS:RUN_TIME_NS + 8], "little"),
                     int.from_bytes(raw[RUN_CNT:RUN_CNT + 8], "little"))
    return out


def tag(b, cgroup_id: int, level: int) -> None:
    """What Probes.tag does for a run cgroup (no root process to seed: dd joins
    it by itself, so its process epoch is 0 in both versions)."""
    t = b[b"tagged"]
    t[t.Key(cgroup_id)] = t.Leaf(1)
    m = b[b"tag_levels"]
    m[m.Key(0)] = m.Leaf(1 << level)
    if _has_map(b, b"generations"):
        g = b[b"generations"]
        key = g.Key(CONSTS["GEN_TAGS"])
        g[key] = g.Leaf(g[key].value + 1)


def _has_map(b, name: bytes) -> bool:
    try:
        b[name]
    except KeyError:
        return False
    return True


def timed(count: int, where: Path | None) -> float:
    cmd = ["dd", "if=/dev/zero", "of=/dev/null", "bs=4k", f"count={count}"]
    return timed_cmd(cmd, where)


CPU: list[float] = []  # CPU seconds (user + system) of each timed command, in order


def timed_cmd(cmd: list[str], where: Path | None) -> float:
    """Wall seconds of cmd; its CPU seconds are appended to CPU. On a loaded
    machine wall time mostly measures waiting for a CPU; the CPU time a
    command used (its system time holds the tracepoints' cost) does not."""
    def enter():
        (where / "cgroup.procs").write_text("0")

    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   preexec_fn=enter if where else None)
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    return wall


def profile(args, bcc, loaded, run) -> None:
    """--profile: per-program kernel time of a workload, old vs new."""
    cmd = ["sh", "-c", args.profile]
    for b in loaded.values():
        b[b"events"].open_ring_buffer(lambda ctx, data, size: 0)
    times: dict[str, list[float]] = {m: [] for m in ("detached", "old", "new")}
    cpus: dict[str, list[float]] = {m: [] for m in ("detached", "old", "new")}
    spent: dict[str, dict[bytes, list[int]]] = {"old": {}, "new": {}}
    if args.untagged:
        run = None  # outside the tagged cgroup: what every other process pays
    timed_cmd(cmd, run)  # warm-up: page cache
    for rep in range(args.reps):
        for mode in (("detached", "old", "new") if rep % 2 == 0 else ("new", "old", "detached")):
            b = loaded.get(mode)
            if b is None:
                times[mode].append(timed_cmd(cmd, run))
                cpus[mode].append(CPU[-1])
                continue
            attach(b)
            try:
                before = prog_stats(bcc, b)
                times[mode].append(timed_cmd(cmd, run))
                cpus[mode].append(CPU[-1])
                after = prog_stats(bcc, b)
            finally:
                detach(b)
                b.ring_buffer_consume()
            for name, (t, c) in after.items():
                acc = spent[mode].setdefault(name, [0, 0])
                acc[0] += t - before[name][0]
                acc[1] += c - before[name][1]
    base = statistics.median(times["detached"])
    where = "outside the tagged run cgroup" if args.untagged else "in a tagged run cgroup"
    print(f"sh -c {args.profile!r} {where}, every program attached, "
          f"{args.reps} interleaved reps; old = {args.old}, new = work tree; "
          f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    cbase = statistics.median(cpus["detached"])
    for mode in ("detached", "old", "new"):
        med, cmed = statistics.median(times[mode]), statistics.median(cpus[mode])
        total = sum(t for t, _ in spent.get(mode, {}).values()) / args.reps / 1e6
        inside = f"{total:8.1f} ms/run inside the programs" if mode != "detached" else ""
        print(f"  {mode:<9} {med:7.3f} s  {med / base:5.2f}x  cpu {cmed:7.3f} s "
              f"{cmed / cbase:5.2f}x  {inside}")
    print(f"  {'program':<44} {'calls/run':>10} {'old ns/call':>12} {'new ns/call':>12} "
          f"{'old ms/run':>11} {'new ms/run':>11}")
    # the programs of either side (one side may have a program the other has not)
    both = set(spent["new"]) | set(spent["old"])
    names = sorted(both, key=lambda n: -max(spent[m].get(n, (0, 0))[0] for m in ("old", "new")))
    for name in names:
        (to, co), (tn, cn) = spent["old"].get(name, (0, 0)), spent["new"].get(name, (0, 0))
        if not (co or cn):
            continue
        print(f"  {name.split(b'tracepoint__', 1)[1].decode():<44} {max(cn, co) / args.reps:10.0f} "
              f"{to / co if co else 0:12.1f} {tn / cn if cn else 0:12.1f} "
              f"{to / args.reps / 1e6:11.2f} {tn / args.reps / 1e6:11.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="main", help="git revision of the A side (main)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--count", type=int, default=400_000, help="4 KiB blocks per dd")
    ap.add_argument("--profile", metavar="CMD", help="per-program costs of sh -c CMD instead")
    ap.add_argument("--untagged", action="store_true",
                    help="--profile: run CMD outside the tagged cgroup (the floor)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_hotpath: must run as root")
    bcc = import_bcc()
    tmp = Path(tempfile.mkdtemp(prefix="roar-hotpath-"))
    if args.profile:
        loaded = {"old": load(bcc, program_text(bpf_dir_at(args.old, tmp)), 16384, None),
                  "new": load(bcc, program_text(), 16384, None)}
    else:
        loaded = {"old": load(bcc, program_text(bpf_dir_at(args.old, tmp))),
                  "new": load(bcc, program_text())}
    top = cgroup2_mount() / f"roar-bench-hotpath-{time.time_ns()}"
    run = top / "run"
    run.mkdir(parents=True)
    level = len(run.relative_to(cgroup2_mount()).parts)
    for b in loaded.values():
        tag(b, os.stat(run).st_ino, level)
    modes = ["detached", "old", "new", "old-untagged", "new-untagged"]
    times: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    inside: dict[str, tuple[int, int]] = {}
    stats_before = STATS.read_text().strip()
    STATS.write_text("1")
    try:
        if args.profile:
            profile(args, bcc, loaded, run)
            return
        timed(args.count, run)  # warm-up
        for rep in range(args.reps):
            order = modes if rep % 2 == 0 else modes[::-1]
            for mode in order:
                b = loaded.get(mode.split("-")[0])
                where = run if mode in ("old", "new") else None
                if b is not None:
                    attach(b)
                try:
                    before = run_stats(bcc, b) if b is not None else (0, 0)
                    times[mode].append(timed(args.count, where))
                    cpu[mode].append(CPU[-1])
                    if b is not None:
                        after = run_stats(bcc, b)
                        t, c = inside.get(mode, (0, 0))
                        inside[mode] = (t + after[0] - before[0], c + after[1] - before[1])
                finally:
                    if b is not None:
                        detach(b)
    finally:
        STATS.write_text(stats_before)
        for b in loaded.values():
            b.cleanup()
        run.rmdir()
        top.rmdir()
        shutil.rmtree(tmp, ignore_errors=True)
    rev = subprocess.run(["git", "rev-parse", "--short", args.old], cwd=REPO,
                         capture_output=True, text=True).stdout.strip()
    base = statistics.median(times["detached"])
    cbase = statistics.median(cpu["detached"])
    print(f"dd bs=4k count={args.count} (/dev/zero -> /dev/null), {args.reps} interleaved reps, "
          f"medians; old = {args.old} ({rev}), new = work tree; "
          f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"  {'mode':<13} {'wall s':>7} {'ratio':>6} {'cpu s':>7} {'ratio':>6} {'+cpu':>12}  "
          f"inside the programs")
    for mode in modes:
        med, cmed = statistics.median(times[mode]), statistics.median(cpu[mode])
        per = (cmed - cbase) / (2 * args.count) * 1e9
        t, c = inside.get(mode, (0, 0))
        prog = f"{t / c:6.1f} ns/call" if c else ""
        print(f"  {mode:<13} {med:7.3f} {med / base:5.2f}x {cmed:7.3f} {cmed / cbase:5.2f}x "
              f"{per:+6.0f} ns/call  {prog}")


if __name__ == "__main__":
    main()
