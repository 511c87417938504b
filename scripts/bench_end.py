#!/usr/bin/env python3
"""The records and the end of `roar run` alone: a kept event stream
(ROAR_KEEP_EVENTS) replayed through the whole recorder in this process, the
model, the records built while the run goes on (prebuild), RunRecorder.finish
(file records, process records, storing) and the chain digest, with the CPU
of each phase per traced file.

    .venv/bin/python scripts/bench_end.py --stream FILE [--reps 5] [--profile N]

Every rep stores a new run in one store (the first, untimed, warms its stat
cache), so the timed reps are what a run reading the same files as an earlier
one costs. --profile N prints cProfile's N costliest functions of one more rep.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from roar.capture import events as E  # noqa: E402
from roar.record import chain  # noqa: E402
from roar.record.ids import new_run_id, now_iso  # noqa: E402
from roar.record.recorder import RunRecorder  # noqa: E402
from roar.record.store import Store  # noqa: E402

PHASES = ("model", "prebuild", "file records", "process records", "store", "chain digest")


def one_run(store: Store, seed: dict, raws: list[bytes], prebuild_every: int) -> dict:
    """CPU seconds per phase of one replayed run."""
    run = {"id": new_run_id(), "name": None, "status": "running", "command": seed["argv"],
           "cwd": seed["cwd"], "started_at": now_iso(), "git": None, "env": {},
           "mode": "replay", "complete": None, "classify_rules": []}
    store.put_run(run)
    t = {}
    c = time.process_time()
    rec = RunRecorder(store, run, seed["root_pid"], seed["root_fds"], start_ns=seed["start_ns"])
    feed, pre = rec.feed_raw, 0.0
    for i, raw in enumerate(raws):
        feed(raw)
        if prebuild_every and i % prebuild_every == prebuild_every - 1:
            p = time.process_time()
            rec.prebuild()
            gc.freeze()  # as roar/cli/run.py's consumer does after each look
            pre += time.process_time() - p
    if prebuild_every:  # caught up at the end of the stream: what the consumer does
        p = time.process_time()
        while rec._todo or rec.model.new_paths:
            n = len(rec._todo) + len(rec.model.new_paths)
            rec.prebuild()
            gc.freeze()
            if len(rec._todo) >= n:
                break
        pre += time.process_time() - p
    t["model"] = time.process_time() - c - pre
    t["prebuild"] = pre
    marks = {}
    import roar.record.recorder as R

    def mark(phase):
        marks[phase] = time.process_time()

    R.mark, old = mark, R.mark
    try:
        c = time.process_time()
        rec.finish(0, False, 0)
    finally:
        R.mark = old
    t["file records"] = marks["finish: file records (waits for hashes)"] - c
    t["process records"] = marks["finish: process records"] - marks[
        "finish: file records (waits for hashes)"]
    t["store"] = marks["finish: store"] - marks["finish: process records"]
    c = time.process_time()
    # as roar run asks for it (roar/cli/run.py): the records only when a hash is pending
    chain.run_digest(store, run["id"], rec.files if rec.pending_paths else None, rec.procs,
                     rec.stored, rec.pending_paths, rec.digests)
    t["chain digest"] = time.process_time() - c
    gc.unfreeze()  # the next run starts as `roar run` does, from nothing frozen and
    gc.collect()   # no garbage of this one left for its collections to walk
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stream", required=True, help="a kept event stream (ROAR_KEEP_EVENTS)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--prebuild-every", type=int, default=2000,
                    help="records between the consumer's catch-ups (0: never, all at the end)")
    ap.add_argument("--profile", type=int, default=0, metavar="N")
    args = ap.parse_args()
    kept = E.read_stream(Path(args.stream))
    if kept is None:
        raise SystemExit(f"bench_end: {args.stream}: empty")
    seed, raws = kept
    opens = sum(1 for r in raws if E.decode(r).type == E.EV_OPEN)
    tmp = Path(tempfile.mkdtemp(prefix="roar-bench-end-", dir="/var/tmp"))
    try:
        store = Store(tmp / "home")
        one_run(store, seed, raws, args.prebuild_every)  # warms the stat cache
        files = len([f for f in store.run_files(next(store.iter_runs())["id"])
                     if f["role"] == "input"])
        procs = sum(1 for r in raws if E.decode(r).type == E.EV_EXEC_RET) or 1
        times = [one_run(store, seed, raws, args.prebuild_every) for _ in range(args.reps)]
        # per input; a stream with none (a spawn loop) is counted per exec'd process
        per, unit = (files, "input") if files else (procs, "exec")
        print(f"{len(raws)} events, {opens} opens, {files} inputs, {procs} execs; "
              f"{args.reps} reps, median CPU µs per {unit}")
        total = 0.0
        for ph in PHASES:
            med = statistics.median(t[ph] for t in times)
            total += med
            print(f"  {ph:<16} {med / per * 1e6:8.2f}")
        print(f"  {'total':<16} {total / per * 1e6:8.2f}")
        if args.profile:
            pr = cProfile.Profile()
            pr.enable()
            one_run(store, seed, raws, args.prebuild_every)
            pr.disable()
            pstats.Stats(pr).sort_stats("tottime").print_stats(args.profile)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
