"""The audit report of a session (`roar audit RUN`) and its events as JSON
lines (`roar export --format jsonl`), read back from the stored records: the
run document with its `audit` part (roar/record/audit.py), its processes
and its file records."""

from __future__ import annotations

import json
import time
from pathlib import Path

from roar.query.views import _public_git, effective_status
from roar.record.classify import PSEUDO
from roar.record.store import RefError, Store

WRITTEN_ROLES = ("output", "temporary", "log")


def report(store: Store, run_id: str) -> dict:
    """The session report; its JSON shape is documented in docs/audit.md."""
    run = store.get_run(run_id)
    if run is None:
        raise RefError(f"no run '{run_id}'")
    files = store.run_files(run_id)
    procs = store.run_procs(run_id)
    a = run.get("audit") or {}
    exe_hashes = a.get("exe_hashes") or {}
    before = a.get("before") or {}
    secrets = set(a.get("secret_reads") or [])
    kind = a.get("kind") or ("attached" if run.get("mode") == "attached" else "run")
    status = effective_status(run)

    attached = {p["pid"] for p in a.get("attached") or ()}
    commands = []
    for p in procs:
        # a command is what a process ran: every exec, and the session's first
        # (or, attached, already running) processes; a plain fork is not one
        adopted = p["pid"] in attached and not p.get("execs") and p["key"].endswith(
            procs[0]["key"].partition("@")[2])
        if p.get("execs") or p.get("parent") is None or adopted:
            commands.append({"pid": p["pid"], "ppid": p.get("ppid"), "argv": p.get("argv"),
                             "exe": p.get("exe"), "exe_hash": exe_hashes.get(p.get("exe")),
                             "exit": p.get("exit_code"), "signal": p.get("signal"),
                             "attached": adopted or (p.get("parent") is None and bool(attached))})
    reads, writes = [], []
    for f in files:
        role, path = f.get("role"), f["path"]
        if role == "input" or (path in secrets and "r" in (f.get("mode") or "")):
            reads.append({"path": path, "hash": f.get("hash"), "kind": f["kind"],
                          "status": f.get("status")})
        if role in WRITTEN_ROLES or (f["kind"] != PSEUDO and role == f["kind"]
                                     and "w" in (f.get("mode") or "")):
            b = before.get(path) or {}
            writes.append({"path": path, "before": b.get("hash"),
                           "before_status": b.get("status", "new or not captured"),
                           "after": f.get("hash"), "role": role, "kind": f["kind"]})
    seen, network = set(), []
    for c in run.get("connects") or []:
        key = (c.get("family"), c.get("address"), c.get("port"))
        if key not in seen:
            seen.add(key)
            network.append({"family": c.get("family"), "address": c.get("address"),
                            "port": c.get("port")})
    complete = bool(run.get("complete")) and status == "finished"
    return {
        "run": run["id"], "name": run.get("name"), "kind": kind, "status": status,
        "complete": complete,
        # what it did before roar attached is not known: membership answers unknown
        "membership": "unknown" if kind == "attached" or not complete else "complete",
        "incomplete_reasons": run.get("incomplete_reasons") or [],
        "started_at": run.get("started_at"), "ended_at": run.get("ended_at"),
        "exit_code": run.get("exit_code"), "user": run.get("user"), "host": run.get("host"),
        "workspace": (a.get("policy") or {}).get("workspace"),
        "policy": a.get("policy"),
        "commands": commands, "reads": reads, "writes": writes,
        "created": a.get("created") or [], "deleted": a.get("deleted") or [],
        "renamed": a.get("renamed") or [],
        "outside_workspace": a.get("outside_workspace") or [],
        "secret_reads": a.get("secret_reads") or [], "network": network,
        "alerts": a.get("alerts") or [], "killed_by": a.get("killed_by"),
        "kill": a.get("kill"),
        "git": {"before": _public_git(run.get("git")), "after": a.get("git_after")},
        "audited": bool(a),
    }


def events(store: Store, run_id: str) -> list[dict]:
    """The session's events, one dict per line of `export --format jsonl`,
    in time order where the record keeps a time (processes, alerts), then
    files and connects: exec, file read / written / deleted / renamed, connect,
    alert."""
    rep = report(store, run_id)
    procs = {p["pid"]: p for p in store.run_procs(run_id)}
    rid = rep["run"]
    out = [{"type": "session", "run": rid, "kind": rep["kind"], "status": rep["status"],
            "started_at": rep["started_at"], "ended_at": rep["ended_at"],
            "user": rep["user"], "host": rep["host"], "complete": rep["complete"]}]
    for c in rep["commands"]:
        p = procs.get(c["pid"], {})
        out.append({"type": "exec", "run": rid, "pid": c["pid"], "ppid": c["ppid"],
                    "argv": c["argv"], "exe": c["exe"], "exe_hash": c["exe_hash"],
                    "exit": c["exit"], "signal": c["signal"], "key": p.get("key")})
    for r in rep["reads"]:
        out.append({"type": "file", "op": "read", "run": rid, **r})
    for w in rep["writes"]:
        out.append({"type": "file", "op": "written", "run": rid, **w})
    for path in rep["deleted"]:
        out.append({"type": "file", "op": "deleted", "run": rid, "path": path})
    for r in rep["renamed"]:
        out.append({"type": "file", "op": "renamed", "run": rid, "path": r["to"],
                    "from": r["from"]})
    for n in rep["network"]:
        out.append({"type": "connect", "run": rid, **n})
    for al in rep["alerts"]:
        out.append({"type": "alert", "run": rid, **al})
    return out


def live_streams(home: Path, run_id: str | None = None, wait: float = 2.0) -> list[Path]:
    """The event streams of live audited sessions (one run's, or all);
    a run that just started gets `wait` seconds to open its stream."""
    from roar.record.audit import stream_path

    if run_id is None:
        d = home / "live"
        return sorted(d.glob("*.jsonl")) if d.is_dir() else []
    path = stream_path(home, run_id)
    deadline = time.monotonic() + wait
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return [path] if path.exists() else []


def follow(paths: list[Path], poll: float = 0.05):
    """The events of live streams as they are written, until each has ended."""
    files = {}
    for p in paths:
        try:
            files[p] = open(p)
        except FileNotFoundError:  # ended between listing and opening
            continue
    partial = dict.fromkeys(files, "")
    while files:
        idle = True
        for p, f in list(files.items()):
            line = f.readline()
            if not line:
                continue
            idle = False
            if not line.endswith("\n"):  # the writer is mid-line
                partial[p] += line
                continue
            ev = json.loads(partial[p] + line)
            partial[p] = ""
            yield ev
            if ev.get("type") == "end":
                f.close()
                del files[p]
        if idle:
            for p in [p for p in files if not p.exists()]:
                files.pop(p).close()  # its writer is gone without an end (killed)
            time.sleep(poll)
