"""The view of a distributed job: `roar show group:G` and `roar log --group G`.

group_view() is pure over run documents and their file records, so any store
(this node's LMDB, a shared one) can answer with the same shape; local_group()
feeds it from the local store.
"""

from __future__ import annotations

from collections.abc import Callable

from roar.record.classify import CODE, DATA
from roar.record.store import RefError, Store

PREFIX = "group:"


def group_view(group_id: str, runs: list[dict],
               files_of: Callable[[str], list[dict]]) -> dict:
    """The job `group_id` from the documents of its runs.

    runs: run documents whose `group.id` is group_id (any order; their `status`
    as the caller wants it judged, e.g. views.effective_status applied).
    files_of(run_id): that run's file records (role, kind, path, hash).

    Returns {group, source, ranks: [{rank, host, run, local_rank, status,
    complete}], nodes, inputs, outputs, complete, missing, world_size}:
    - ranks: every run, by rank then start time (rank None when unknown);
    - inputs / outputs: the union of the runs' data and code inputs / outputs,
      one entry per (path, hash): {path, hash, runs};
    - complete: the world size is known, every rank 0..world_size-1 has a run
      and the latest run of each rank finished with a complete capture; without
      a known world size: every run finished complete;
    - missing: the ranks 0..world_size-1 with no run at all.
    """
    ordered = sorted(runs, key=lambda r: (_rank(r) is None, _rank(r) or 0,
                                          r.get("started_at") or "", r["id"]))
    ranks, latest = [], {}
    for run in ordered:
        g = run.get("group") or {}
        ok = run.get("status") == "finished" and bool(run.get("complete"))
        ranks.append({"rank": g.get("rank"), "host": run.get("host"), "run": run["id"],
                      "local_rank": g.get("local_rank"), "status": run.get("status"),
                      "complete": ok})
        if g.get("rank") is not None:
            latest[g["rank"]] = ok  # ordered by start time within a rank
    sizes = {(r.get("group") or {}).get("world_size") for r in ordered} - {None}
    world = max(sizes) if sizes else None
    source = next(((r.get("group") or {}).get("source") for r in reversed(ordered)), None)
    if world is not None:
        missing = [r for r in range(world) if r not in latest]
        complete = not missing and all(latest[r] for r in range(world))
    else:
        missing = []
        complete = bool(ranks) and all(r["complete"] for r in ranks)
    inputs: dict[tuple, list[str]] = {}
    outputs: dict[tuple, list[str]] = {}
    for run in ordered:
        for f in files_of(run["id"]):
            if f.get("kind") not in (DATA, CODE):
                continue
            into = {"input": inputs, "output": outputs}.get(f.get("role"))
            if into is not None:
                seen = into.setdefault((f["path"], f.get("hash")), [])
                if run["id"] not in seen:
                    seen.append(run["id"])
    return {"group": group_id, "source": source, "ranks": ranks,
            "nodes": sorted({r["host"] for r in ranks if r["host"]}),
            "inputs": [{"path": p, "hash": h, "runs": rs}
                       for (p, h), rs in sorted(inputs.items(), key=_key)],
            "outputs": [{"path": p, "hash": h, "runs": rs}
                        for (p, h), rs in sorted(outputs.items(), key=_key)],
            "complete": complete, "missing": missing, "world_size": world}


def _rank(run: dict):
    return (run.get("group") or {}).get("rank")


def _key(item):
    (path, h), _ = item
    return (path, h or "")


def local_group(store: Store, group_id: str) -> dict:
    """group_view() of a job from this node's store; RefError when no run of
    the store belongs to it."""
    from roar.query.views import effective_status

    runs = []
    for run_id in store.group_runs(group_id):
        run = store.get_run(run_id)
        if run is not None:
            runs.append({**run, "status": effective_status(run)})
    if not runs:
        raise RefError(f"no run of group '{group_id}' in this store")
    return group_view(group_id, runs, store.run_files)
