#!/usr/bin/env python3
"""What the pre-image hold costs (docs/preimage.md), A/B in one run.

    sudo .venv/bin/python scripts/bench_preimage.py [--reps 3] [--files 2000]

Each workload runs bare (no roar), under `roar run` with the hold
(ROAR_PREIMAGE=1, the default) and without it (ROAR_PREIMAGE=0), modes
interleaved per repetition, against a private roard started here. The
workloads time their own loop of file operations, so the figures are per
syscall as the workload sees it, free of roar's start and end:

  new        open(O_WRONLY|O_CREAT|O_TRUNC) + write + close of files that do
             not exist: held, answered on the first look (nothing to keep)
  overwrite  the same over files that exist and the run never read: held,
             and a barrier (the model catches up) before the answer, once
             per file
  rewrite    read a file, then open it "w" and write: held, its first
             version hashed before the truncation goes on
  untar      `tar xf` of --files small files into an empty directory, then
             again over them (GNU tar unlinks each existing file first):
             the write-heavy shape, whole-command wall time

Printed: medians per mode, the hold's cost over `ROAR_PREIMAGE=0` per held
syscall, and the supervisor's own account (held syscalls, barriers, hashes,
mean and max time a syscall was held), from ROAR_TIMING's roar-preimage line.
Needs root (a private roard) and BCC.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable

LOOP = r'''
import os, sys, time
kind, d, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
names = [os.path.join(d, f"f{i}") for i in range(n)]
t = time.perf_counter()
for p in names:
    if kind == "rewrite":
        with open(p, "rb") as f:
            old = f.read()
        with open(p, "wb") as f:
            f.write(old + b"x")
    else:
        with open(p, "wb") as f:
            f.write(b"0123456789" * 10)
print("PER_OP_US %.3f" % ((time.perf_counter() - t) / n * 1e6))
'''


def prepare(kind: str, d: Path, n: int) -> None:
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    if kind in ("overwrite", "rewrite"):
        for i in range(n):
            (d / f"f{i}").write_bytes(b"before the run %d\n" % i)


def spawn_roard(d: Path) -> tuple[subprocess.Popen, dict]:
    sock = d / "roard.sock"
    env = {**os.environ, "ROAR_SOCKET": str(sock), "PYTHONPATH": str(REPO),
           "ROAR_HOME": str(d / "home")}
    log = open(d / "roard.log", "wb")  # noqa: SIM115 - the daemon's, for its lifetime
    proc = subprocess.Popen([PY, "-m", "roar.daemon"], env=env, stdout=log, stderr=log,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"roard did not start: {(d / 'roard.log').read_text()[-2000:]}")
        time.sleep(0.1)
    return proc, env


def run_once(mode: str, cmd: list[str], env: dict, cwd: Path) -> tuple[float, str, dict]:
    """(wall s, stdout, supervisor stats) of one command in one mode."""
    e = dict(env)
    if mode == "bare":
        full = cmd
    else:
        e["ROAR_PREIMAGE"] = "1" if mode == "hold" else "0"
        e["ROAR_TIMING"] = "1"
        full = [PY, "-m", "roar", "run", "--no-git", "--", *cmd]
    t = time.perf_counter()
    p = subprocess.run(full, env=e, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"{mode} {cmd[:3]} failed ({p.returncode}): {p.stderr[-2000:]}")
    stats = {}
    for line in p.stderr.splitlines():
        if line.startswith("roar-preimage: "):
            stats = json.loads(line.split(" ", 1)[1])
        if "INCOMPLETE" in line and mode != "bare":
            print(f"  note: {line.strip()}", file=sys.stderr)
    return wall, p.stdout, stats


def per_op(out: str) -> float:
    return float(next(ln.split()[1] for ln in out.splitlines() if ln.startswith("PER_OP_US")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--files", type=int, default=2000)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_preimage: needs root (it starts a private roard)")
    base = Path(tempfile.mkdtemp(prefix="roar-bench-preimage-", dir="/var/tmp"))
    roard, env = spawn_roard(base)
    modes = ("bare", "nohold", "hold")
    res: dict = {}
    try:
        work = base / "work"
        work.mkdir()
        src = base / "src"
        src.mkdir()
        for i in range(args.files):
            (src / f"s{i:05d}.txt").write_bytes(b"x" * (64 + i % 512))
        tar = base / "files.tar"
        with tarfile.open(tar, "w") as t:
            t.add(src, arcname="src")
        for rep in range(args.reps):
            for kind in ("new", "overwrite", "rewrite"):
                for mode in modes:
                    d = work / kind
                    prepare(kind, d, args.files)
                    wall, out, st = run_once(mode, [PY, "-c", LOOP, kind, str(d),
                                                    str(args.files)], env, work)
                    res.setdefault((kind, mode), []).append((per_op(out), wall, st))
            for mode in modes:
                d = work / "untar"
                prepare("untar", d, 0)
                first, _, st1 = run_once(mode, ["tar", "xf", str(tar)], env, d)
                again, _, st2 = run_once(mode, ["tar", "xf", str(tar)], env, d)
                res.setdefault(("untar-new", mode), []).append((None, first, st1))
                res.setdefault(("untar-over", mode), []).append((None, again, st2))
            print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr)
    finally:
        roard.terminate()
        try:
            roard.wait(30)
        except subprocess.TimeoutExpired:
            roard.kill()
        shutil.rmtree(base, ignore_errors=True)

    def med(vals):
        return statistics.median(vals) if vals else float("nan")

    print(f"pre-image hold, {args.files} files, {args.reps} reps (medians)")
    print(f"{'workload':<11} {'bare':>9} {'nohold':>9} {'hold':>9} {'hold/nohold':>11}"
          f" {'+us/held':>9}  supervisor (hold)")
    for kind in ("new", "overwrite", "rewrite", "untar-new", "untar-over"):
        cols = {}
        for mode in modes:
            rows = res[(kind, mode)]
            cols[mode] = med([r[0] if r[0] is not None else r[1] for r in rows])
        st = res[(kind, "hold")][-1][2]
        held = st.get("held", 0)
        unit = "us/op" if kind in ("new", "overwrite", "rewrite") else "s"
        extra = cols["hold"] - cols["nohold"]
        per_held = (extra if unit == "us/op" else extra * 1e6 / held) if held else float("nan")
        sup = (f"held {held}, barriers {st.get('barriers', 0)}, hashed {st.get('hashed', 0)}, "
               f"mean {st.get('held_ns', 0) / max(held, 1) / 1e3:.0f} us, "
               f"max {st.get('max_ns', 0) / 1e6:.1f} ms" if st else "-")
        print(f"{kind:<11} {cols['bare']:>9.3f} {cols['nohold']:>9.3f} {cols['hold']:>9.3f} "
              f"{cols['hold'] / cols['nohold']:>11.2f} {per_held:>9.0f}  {sup}  [{unit}]")


if __name__ == "__main__":
    main()
