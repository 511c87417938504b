#!/usr/bin/env python3
"""Benchmark of the lineage queries on a synthetic store.

Builds a store of RUNS runs with about EDGES hash-index edges (reads and
writes) through Store.finish_run, many runs per write transaction, then times
`inputs`, `outputs`, `--contains` and `diff` on a deep artifact, in process
and through the CLI (which adds the interpreter start).

Shape: PIPELINES independent pipelines, each a chain of steps; step k reads
all outputs of step k-1 (step 0 reads its pipeline's raw dataset plus one
vocabulary file shared by every pipeline) and writes FANOUT outputs. The deep
artifact is an output of the last step of pipeline 0, its upstream the whole
chain. `outputs` runs on a raw file of that chain (downstream = the chain)
and, as the worst case, on the shared vocabulary file (downstream = every run
in the store).

    python3 scripts/bench_queries.py [--runs 10000] [--edges 1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import xxhash

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from roar.query import lineage
from roar.record.ids import new_run_id
from roar.record.store import INDEX_DBS, Store

BATCH = 200  # runs per write transaction


def _h(*parts) -> str:
    return xxhash.xxh3_128("/".join(map(str, parts)).encode()).hexdigest()


def _file(path: str, role: str, h: str, kind: str = "data") -> dict:
    return {"path": path, "kind": kind, "role": role, "hash": h, "size": 4096,
            "status": "ok", "bytes_read": 4096 if role == "input" else 0,
            "bytes_written": 4096 if role == "output" else 0, "processes": ["p1"]}


def _run(rid: str, p: int, k: int, t0: float, fanout: int) -> dict:
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0 + k * 60 + p))
    return {"id": rid, "name": None, "status": "finished",
            "command": ["python3", f"step{k % 10}.py", f"/data/p{p}/s{k - 1}", f"/data/p{p}/s{k}",
                        "--lr", str(0.1 * (1 + p % 3)), "--fanout", str(fanout)],
            "cwd": f"/work/p{p}", "user": "bench", "host": "node", "boot_id": "b",
            "started_at": started + ".000Z", "ended_at": started + ".500Z", "exit_code": 0,
            "signal": None,
            "git": {"root": f"/work/p{p}", "commit": _h("commit", p % 2)[:40], "branch": "main",
                    "remote": None, "dirty": False, "patch": None, "untracked": None},
            "env": {"HOME": "/root", "SEED": str(p % 5), "PWD": f"/work/p{p}",
                    "API_TOKEN": {"redacted": "hmac-sha256:" + _h("tok", p % 2)}},
            "packages": {"torch": "2.3.0" if p % 2 else "2.4.0", "numpy": "1.26.4"},
            "complete": True, "incomplete_reasons": [], "lost_events": 0,
            "counts": {"inputs": fanout, "outputs": fanout, "processes": 1, "events": 0}}


def build(home: Path, runs: int, edges: int) -> dict:
    fanout = max(1, edges // runs // 2)  # reads + writes per run = 2 * fanout
    length = max(2, round(runs ** 0.5))
    pipelines = max(1, runs // length)
    store = Store(home)
    store.env.set_mapsize(16 << 30)
    t0 = time.time() - 10 * 86400
    made = n_edges = 0
    shared = _h("vocab")
    t = time.perf_counter()
    pending: list[tuple[dict, list, list]] = []

    def flush():
        # finish_run writes through Store.write; run many of them in one transaction
        with store.env.begin(write=True) as txn:
            store.write = lambda fn: fn(txn)
            try:
                for run, files, procs in pending:
                    store.finish_run(run, files, procs)
            finally:
                del store.write
        pending.clear()

    ids: dict[tuple[int, int], str] = {}
    for k in range(length):
        for p in range(pipelines):
            if made >= runs:
                break
            rid = new_run_id(int((t0 + k * 60 + p) * 1000))
            ids[(p, k)] = rid
            if k == 0:
                ins = [_file(f"/data/p{p}/raw/part-{i:04d}.bin", "input", _h("raw", p, i))
                       for i in range(fanout - 1)]
                ins.append(_file("/data/shared/vocab.txt", "input", shared))
            else:
                ins = [_file(f"/data/p{p}/s{k - 1}/out-{i:04d}.bin", "input", _h(p, k - 1, i))
                       for i in range(fanout)]
            ins.append(_file(f"/work/p{p}/step{k % 10}.py", "input", _h("code", p % 2, k % 10),
                             "code"))
            outs = [_file(f"/data/p{p}/s{k}/out-{i:04d}.bin", "output", _h(p, k, i))
                    for i in range(fanout)]
            n_edges += len(ins) + len(outs)
            pending.append((_run(rid, p, k, t0, fanout), ins + outs,
                            [{"key": "p1", "pid": 1, "ppid": 0, "parent": None,
                              "argv": ["python3"], "exe": "/usr/bin/python3.11", "files": []}]))
            made += 1
            if len(pending) >= BATCH:
                flush()
    if pending:
        flush()
    build_s = time.perf_counter() - t
    with store.env.begin() as txn:  # rows in the indexes (file sets: fewer than edges)
        index_rows = sum(txn.stat(store.dbs[db])["entries"] for db in INDEX_DBS)
    store.close()
    last = length - 1
    while (0, last) not in ids:
        last -= 1
    return {"runs": made, "edges": n_edges, "index_rows": index_rows, "build_s": build_s,
            "length": length,
            "pipelines": pipelines, "fanout": fanout,
            "deep": _h(0, last, 0), "deep_b": _h(1, last, 0), "raw": _h("raw", 0, 0),
            "member": _h("raw", 0, 1), "absent": _h("never", "read"), "shared": shared}


def _time(fn, repeat: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--edges", type=int, default=1_000_000)
    ap.add_argument("--keep", help="build the store in this directory and keep it")
    args = ap.parse_args()

    home = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="roar-bench-"))
    try:
        info = build(home, args.runs, args.edges)
        size = (home / "store" / "data.mdb").stat().st_size
        print(f"store: {info['runs']} runs, {info['edges']} edges ({info['pipelines']} pipelines "
              f"x {info['length']} steps, {info['fanout']} reads + {info['fanout']} writes per "
              f"run; {info['index_rows']} index rows), {size / 2**20:.0f} MiB, built in "
              f"{info['build_s']:.1f}s")
        store = Store(home, readonly=True)
        art = ("artifact", info["deep"])
        queries = [
            ("inputs (deep artifact)", lambda: lineage.inputs(store, art),
             lambda d: f"{len(d['inputs'])} inputs, {len(d['runs'])} runs"),
            ("inputs --contains (yes)",
             lambda: lineage.contains(store, art, info["member"]),
             lambda d: d["answer"]),
            ("inputs --contains (no)",
             lambda: lineage.contains(store, art, info["absent"]),
             lambda d: d["answer"]),
            ("outputs (root of the chain)",
             lambda: lineage.outputs(store, ("artifact", info["raw"])),
             lambda d: f"{len(d['outputs'])} outputs, {len(d['runs'])} runs"),
            ("diff (two deep artifacts)",
             lambda: lineage.diff(store, art, ("artifact", info["deep_b"])),
             lambda d: f"{len(d['changes'])} changes, {len(d['steps'])} steps"),
            ("outputs (file read by every run: worst case)",
             lambda: lineage.outputs(store, ("artifact", info["shared"])),
             lambda d: f"{len(d['outputs'])} outputs, {len(d['runs'])} runs"),
        ]
        print(f"{'query':<46} {'seconds':>8}  result")
        for name, fn, summary in queries:
            secs, doc = _time(fn, repeat=1 if "worst" in name else 3)
            print(f"{name:<46} {secs:8.3f}  {summary(doc)}")
        store.close()

        env = {**os.environ, "ROAR_HOME": str(home),
               "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        cli = [sys.executable, "-m", "roar"]
        for name, argv in [("cli: roar inputs --json", ["inputs", info["deep"], "--json"]),
                           ("cli: roar inputs --contains", ["inputs", info["deep"],
                                                            "--contains", info["member"]]),
                           ("cli: roar outputs --json", ["outputs", info["raw"], "--json"]),
                           ("cli: roar diff --json", ["diff", info["deep"], info["deep_b"],
                                                      "--json"]),
                           ("cli: roar --help (interpreter + import)", ["--help"])]:
            secs, _ = _time(lambda a=argv: subprocess.run(cli + a, env=env, capture_output=True,
                                                          check=True), repeat=3)
            print(f"{name:<46} {secs:8.3f}")
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
