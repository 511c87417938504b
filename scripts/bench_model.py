#!/usr/bin/env python3
"""The per-event path of `roar run` alone: a kept event stream (ROAR_KEEP_EVENTS)
replayed through decoding, the process model and the stat-cache lookup, for
each model implementation, interleaved, in one run.

    sudo .venv/bin/python scripts/bench_model.py            # records its own stream
    .venv/bin/python scripts/bench_model.py --stream FILE   # replays a kept one

Without --stream it makes N small files and records `cat` of them under a
private roard (root). Stages, per implementation:

  decode      records -> events, Python's decode (the compiled model decodes inline)
  model       decode + model, no hashing
  statcache   decode + model + the hash jobs of inputs answered from a warm stat
              cache (one stat and one LMDB lookup each), all jobs waited for

Reported: microseconds of CPU (this process, all threads) per event and per
traced file, medians of --reps, and compiled/python ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from roar.capture import events as E  # noqa: E402
from roar.record import model as pymodel  # noqa: E402


def implementations() -> dict:
    """name -> make(seed, hasher) -> a model fed raw records by feed_raw(raw)"""

    class Python(pymodel.RunModel):  # as recorder.py fed it before the compiled one
        def feed_raw(self, raw):
            self.feed(E.decode(raw))

    def python(seed, hasher):
        return Python(seed["root_pid"], seed["cwd"], seed["argv"], seed["root_fds"],
                      seed["start_ns"], hasher.submit if hasher else None)

    impls = {"python": python}
    try:
        from roar.record import _cmodel
    except ImportError as e:
        print(f"bench_model: the compiled model is not built ({e}): python only",
              file=sys.stderr)
        return impls

    def compiled(seed, hasher):
        return _cmodel.RunModel(seed["root_pid"], seed["cwd"], seed["argv"], seed["root_fds"],
                                seed["start_ns"], hasher.submit if hasher else None,
                                hasher.model_lookup if hasher else None)

    impls["compiled"] = compiled
    return impls


def record(n: int, tmp: Path) -> Path:
    """Keep the stream of `cat` over n small files, traced by a private roard."""
    if os.geteuid() != 0:
        raise SystemExit("bench_model: recording a stream needs root (or pass --stream)")
    data = tmp / "small"
    for i in range(n):
        d = data / f"d{i // 1000}"
        if i % 1000 == 0:
            d.mkdir(parents=True)
        (d / f"f{i}").write_bytes(os.urandom(1024 + (i % 3) * 1024))
    env = {**os.environ, "ROAR_SOCKET": str(tmp / "roard.sock"), "ROAR_HOME": str(tmp / "home"),
           "PYTHONPATH": str(REPO)}
    log = open(tmp / "roard.log", "wb")  # noqa: SIM115
    roard = subprocess.Popen([sys.executable, "-m", "roar.daemon"], env=env, stdout=log,
                             stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp / "roard.sock").exists():
            if roard.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("bench_model: roard did not start: "
                                 + (tmp / "roard.log").read_text()[-2000:])
            time.sleep(0.1)
        out = tmp / "cat.events"
        cmd = [sys.executable, "-m", "roar", "run", "--no-git", "--", "sh", "-c",
               "find . -type f -print0 | xargs -0 cat > /dev/null"]
        subprocess.run(cmd, cwd=data, env={**env, "ROAR_KEEP_EVENTS": str(out)}, check=True,
                       capture_output=True)
        return out
    finally:
        roard.terminate()
        roard.wait(60)


def cpu() -> float:
    return time.process_time()


def replay(make, seed: dict, raws: list[bytes], stage: str, store=None) -> float:
    if stage == "decode":  # the Python model's decoding alone (the compiled one's is inline)
        t = cpu()
        for raw in raws:
            E.decode(raw)
        return cpu() - t
    hasher = None
    if stage == "statcache":
        from roar.record.hasher import Hasher

        hasher = Hasher(store, workers=2)
    t = cpu()
    m = make(seed, hasher)
    feed = m.feed_raw
    for raw in raws:
        feed(raw)
    if hasher is not None:
        for s in m.paths.values():
            if s.early_hash is not None:
                s.early_hash.result()
        hasher.shutdown()
        t = cpu() - t
        store.cache_hashes(hasher.take_new_entries())  # (the warm-up run's)
        return t
    return cpu() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stream", help="a kept event stream (ROAR_KEEP_EVENTS); default: record one")
    ap.add_argument("--files", type=int, default=20000, help="files for the recorded stream")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--stages", default="decode,model,statcache")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="roar-bench-model-", dir="/var/tmp"))
    try:
        path = Path(args.stream) if args.stream else record(args.files, tmp)
        kept = E.read_stream(path)
        if kept is None:
            raise SystemExit(f"bench_model: {path}: empty (its run was killed at once)")
        seed, raws = kept
        from roar.record.store import Store

        store = Store(tmp / "home")
        impls = implementations()
        files = sum(1 for r in raws if E.decode(r).type == E.EV_OPEN)
        # warm the stat cache (and the page cache) once
        replay(impls["python"], seed, raws, "statcache", store)
        stages = args.stages.split(",")
        times: dict = {(i, s): [] for i in impls for s in stages}
        for rep in range(args.reps):
            order = list(impls) if rep % 2 == 0 else list(reversed(impls))
            for s in stages:
                for i in order:
                    if s == "decode" and i != "python":
                        times[i, s].append(float("nan"))
                        continue
                    times[i, s].append(replay(impls[i], seed, raws, s, store))
        print(f"{len(raws)} events, {files} opens, {args.reps} reps; "
              f"µs of CPU per event (per open)")
        print(f"{'stage':<10} " + " ".join(f"{i:>20}" for i in impls)
              + ("   python/compiled" if "compiled" in impls else ""))
        for s in stages:
            med = {i: statistics.median(times[i, s]) for i in impls}
            cells = " ".join(f"{med[i] / len(raws) * 1e6:>9.2f} ({med[i] / files * 1e6:>7.2f})"
                             for i in impls)
            ratio = (f"   {med['python'] / med['compiled']:>8.1f}×" if "compiled" in impls
                     else "")
            print(f"{s:<10} {cells}{ratio}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
