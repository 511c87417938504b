"""Lineage: the upstream and downstream graphs of runs and file versions, built
on demand from the store's content-hash indexes, and the answers of
`roar inputs` (with membership), `roar outputs` and `roar diff`.

A file version is its content hash. A run reads versions and writes versions,
so a run that reads v1 of a path and rewrites it as v2 is no cycle. The walk
starts at the target and follows only the hash indexes (readers_of /
writers_of) and the file records of the runs it meets: its cost grows with
the answer, not with the store.
"""

from __future__ import annotations

import os
import posixpath
import subprocess
from dataclasses import dataclass, field

import xxhash

from roar.query.views import (  # noqa: F401 - content_ref: API
    content_ref,
    effective_status,
    query_hash,
    remember_hashes,
)
from roar.record.classify import CODE, CODE_SUFFIXES, DATA, ENV
from roar.record.context import git
from roar.record.hasher import OK, SPECIAL
from roar.record.remote import REMOTE
from roar.record.store import RefError, Store

EMPTY_HASH = xxhash.xxh3_128(b"").hexdigest()


# -- runs as the walk sees them ------------------------------------------------


@dataclass(slots=True)
class RunInfo:
    """A run's record and the file records lineage needs: data and code inputs
    and outputs (with or without a hash)."""

    id: str
    record: dict
    inputs: list[dict]
    outputs: list[dict]
    # outputs in environment locations (an install, a build, byte code): listed by
    # `roar outputs`, never walked (reads of environment files carry no hash)
    env_outputs: list[dict] = field(default_factory=list)
    exe: str | None = None  # the first process's executable, loaded by diff only
    key: str | None = None  # step_key(), computed once

    @property
    def started(self) -> str:
        return self.record.get("started_at") or ""

    @property
    def ended(self) -> str | None:
        return self.record.get("ended_at")

    def problems(self, known: set[str] | frozenset = frozenset()) -> list[str]:
        """Why what this run read or wrote may be incomplete (empty when it is not).
        known: remote versions (url@version keys) whose content another run's
        record gives."""
        rec = self.record
        status = effective_status(rec)
        out = []
        if status == "running":
            out.append("still running")
        elif status == "interrupted":
            out.append("interrupted")
        if status != "running" and not rec.get("complete"):
            out += rec.get("incomplete_reasons") or ["capture marked incomplete"]
        for f in self.inputs:
            if not f.get("hash") and f.get("status") != SPECIAL and f.get("ident") not in known:
                out.append(f"input {f['path']} has no verified content hash "
                           f"({f.get('status') or 'unhashed'})")
        for f in self.outputs:
            if not f.get("hash") and f.get("status") != SPECIAL and f.get("ident") not in known:
                out.append(f"output {f['path']} has no verified content hash "
                           f"({f.get('status') or 'unhashed'})")
        return list(dict.fromkeys(out))

    def rel(self, path: str) -> str:
        """path relative to the run's git root (else its cwd), so that runs from
        two clones of one repository compare."""
        git = self.record.get("git") or {}
        for base in (git.get("root"), self.record.get("cwd")):
            if base and path.startswith(base.rstrip("/") + "/"):
                return path[len(base.rstrip("/")) + 1:]
        return path


class RunCache:
    """Run records and their lineage file records, each loaded once per query."""

    def __init__(self, store: Store):
        self.store = store
        self._runs: dict[str, RunInfo | None] = {}

    def get(self, run_id: str) -> RunInfo | None:
        if run_id in self._runs:
            return self._runs[run_id]
        rec = self.store.get_run(run_id)
        info = None
        if rec is not None:
            ins, outs, env_outs = [], [], []
            for f in self.store.run_files(run_id):
                if f.get("kind") == ENV and f.get("role") == "output":
                    env_outs.append(f)
                if f.get("kind") not in (DATA, CODE, REMOTE):
                    continue
                if f.get("role") == "input":
                    ins.append(f)
                elif f.get("role") == "output":
                    outs.append(f)
            info = RunInfo(run_id, rec, ins, outs, env_outs)
        self._runs[run_id] = info
        return info


class Graph:
    """What a walk found: nodes ('run', id) and ('ver', hash) with their
    attributes, edges (u, v) with the paths. It reads like a networkx.DiGraph
    (nodes(data=...), nodes[n], edges[u, v], successors, predecessors, in_edges,
    out_edges, graph) without importing NetworkX (~250 ms) on every query;
    to_networkx() gives the real one (the Python API's graph())."""

    def __init__(self, nodes: dict, edges: dict, **graph):
        self._nodes = nodes
        self._edges = {e: {"paths": paths} for e, paths in edges.items()}
        self._succ: dict = {n: [] for n in nodes}
        self._pred: dict = {n: [] for n in nodes}
        for u, v in self._edges:
            for n in (u, v):
                if n not in self._nodes:
                    self._nodes[n] = {}
                    self._succ[n], self._pred[n] = [], []
            self._succ[u].append(v)
            self._pred[v].append(u)
        self.graph = graph
        self.nodes = _NodeView(self._nodes)
        self.edges = self._edges

    def __contains__(self, n) -> bool:
        return n in self._nodes

    def __iter__(self):
        return iter(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def successors(self, n):
        return iter(self._succ[n])

    def predecessors(self, n):
        return iter(self._pred[n])

    def out_edges(self, n) -> list[tuple]:
        return [(n, v) for v in self._succ[n]]

    def in_edges(self, n) -> list[tuple]:
        return [(u, n) for u in self._pred[n]]

    def to_networkx(self):
        import networkx as nx

        g = nx.DiGraph()
        g.add_nodes_from(self._nodes.items())
        g.add_edges_from((u, v, dict(a)) for (u, v), a in self._edges.items())
        return g


class _NodeView:
    def __init__(self, nodes: dict):
        self._nodes = nodes

    def __call__(self, data=False):
        if data is True:
            return iter(self._nodes.items())
        if data:
            return ((n, a.get(data)) for n, a in self._nodes.items())
        return iter(self._nodes)

    def __iter__(self):
        return iter(self._nodes)

    def __getitem__(self, n) -> dict:
        return self._nodes[n]

    def __len__(self) -> int:
        return len(self._nodes)


def _run_node(run_id: str) -> tuple[str, str]:
    return ("run", run_id)


def _ver_node(h: str) -> tuple[str, str]:
    return ("ver", h)


def _version_keys(f: dict) -> list[tuple[str, dict]]:
    """The version nodes a file record links through, with their attributes:
    its content hash; a remote object also its url@version identity (so the
    run that uploaded a version links to the runs that downloaded it even
    when the content hash is unknown)."""
    keys = []
    base = {"size": f.get("size"), "kind": f.get("kind")}
    if f.get("hash"):
        keys.append((f["hash"], base))
    if f.get("kind") == REMOTE and f.get("ident"):
        keys.append((f["ident"], {**base, "url": f["url"], "version": f.get("version"),
                                  "ident": True, "content": f.get("hash")}))
    return keys


def _same_content_link(size: int | None, paths_a, paths_b) -> bool:
    """Whether two accesses of one content hash may be the same file. Empty
    content is written everywhere (markers, locks): it links only by path."""
    return size != 0 or bool(set(paths_a) & set(paths_b))


def _walk(store: Store, target: tuple[str, str], runs: RunCache, up: bool) -> Graph:
    """Breadth-first from target, one depth level at a time (each level's index
    lookups in one transaction). Up: a run's inputs, then the runs that wrote
    them. Down: a run's outputs, then the runs that read them."""
    lookup = store.writers_of_many if up else store.readers_of_many
    linked: dict[str, list[tuple[str, list[str]]]] = {}
    nodes: dict[tuple[str, str], dict] = {}
    edges: dict[tuple, list[str]] = {}

    def edge(u, v, paths) -> None:
        known = edges.get((u, v))
        if known is None:
            edges[(u, v)] = list(paths)
        elif not set(paths) <= set(known):
            edges[(u, v)] = sorted(set(known) | set(paths))

    def own_edge(rid: str, vn, paths) -> None:  # the run's own read (up) or write (down)
        edge(vn, _run_node(rid), paths) if up else edge(_run_node(rid), vn, paths)

    def link_edge(oid: str, vn, paths) -> None:  # the linked run's write (up) or read (down)
        edge(_run_node(oid), vn, paths) if up else edge(vn, _run_node(oid), paths)

    def plausible(run: RunInfo, other: RunInfo) -> bool:
        """Could other have written what run read (up) / read what run wrote (down)?"""
        if up:
            return not (run.ended and other.started > run.ended)
        return not (other.ended and other.ended < run.started)

    level: list[str] = []
    kind, key = target
    if kind == "run":
        nodes[_run_node(key)] = {"depth": 0}
        level.append(key)
    else:
        vn = _ver_node(key)
        nodes[vn] = {"depth": 0, "size": None, "kind": None}
        for oid, paths in lookup([key])[key]:
            if runs.get(oid) is None:
                continue
            if _run_node(oid) not in nodes:
                nodes[_run_node(oid)] = {"depth": 0}
                level.append(oid)
            link_edge(oid, vn, paths)

    depth = 0
    while level:
        pending: list[tuple[RunInfo, dict, str]] = []
        for rid in level:
            info = runs.get(rid)
            for f in info.inputs if up else info.outputs:
                for h, attrs in _version_keys(f):
                    vn = _ver_node(h)
                    if vn not in nodes:
                        nodes[vn] = {"depth": depth + 1, **attrs}
                    own_edge(rid, vn, [f["path"]])
                    pending.append((info, f, h))
        linked.update(lookup({h for _, _, h in pending} - linked.keys()))
        level = []
        for info, f, h in pending:
            vn = _ver_node(h)
            for oid, paths in linked[h]:
                if oid == info.id:
                    continue
                other = runs.get(oid)
                if other is None or not plausible(info, other):
                    continue
                if not _same_content_link(f.get("size"), paths, [f["path"]]):
                    continue
                if _run_node(oid) not in nodes:
                    nodes[_run_node(oid)] = {"depth": depth + 1}
                    level.append(oid)
                link_edge(oid, vn, paths)
                attrs = nodes[vn]
                if attrs.get("ident") and not attrs.get("content") and not attrs.get("learned"):
                    # the content of a remote version, from the other side's record
                    for g in other.outputs if up else other.inputs:
                        if g.get("ident") == h and g.get("hash"):
                            attrs["learned"] = g["hash"]
                            break
        depth += 1

    return Graph(nodes, edges, runs=runs)


def upstream(store: Store, target: tuple[str, str], runs: RunCache | None = None) -> Graph:
    """Everything that fed target (('run', id) or ('artifact', hash)).

    Nodes: ('run', id) with depth; ('ver', hash) with depth, size, kind.
    Edges: version -> run (read), run -> version (write), each with the paths.
    A run is depth 0 when it is the target or wrote the target; the versions
    it read are depth 1, their producers depth 1, and so on. A producer must
    have started before its reader ended (a later run writing identical
    content did not feed it)."""
    return _walk(store, target, runs or RunCache(store), up=True)


def downstream(store: Store, target: tuple[str, str], runs: RunCache | None = None
               ) -> Graph:
    """Everything derived from target: the runs that read it, what they wrote,
    the runs that read that, and so on. Depths mirror upstream(): the runs that
    read the target artifact (or the target run) are depth 0, what they wrote
    depth 1. A reader must have ended after the writer started."""
    return _walk(store, target, runs or RunCache(store), up=False)


def _runs_of(g: Graph) -> list[tuple[RunInfo, int]]:
    runs: RunCache = g.graph["runs"]
    out = [(runs.get(n[1]), d) for n, d in g.nodes(data="depth") if n[0] == "run"]
    return sorted(out, key=lambda x: (x[1], x[0].started, x[0].id))


def _completeness(g: Graph, target: tuple[str, str], upstream_side: bool
                  ) -> tuple[bool, list[str]]:
    reasons = []
    if upstream_side and target[0] == "artifact" and not any(
            True for _ in g.predecessors(_ver_node(target[1]))):
        reasons.append("no recorded run wrote this content: what it was made from is unknown")
    known = {n[1] for n, a in g.nodes(data=True) if a.get("content") or a.get("learned")}
    for info, _ in _runs_of(g):
        for p in info.problems(known):
            reasons.append(f"run {info.id[:10]} ({step_key(info)}): {p}")
    return not reasons, reasons


# -- target summary ------------------------------------------------------------------


def target_view(store: Store, target: tuple[str, str], runs: RunCache | None = None) -> dict:
    runs = runs or RunCache(store)
    kind, key = target
    if kind == "run":
        info = runs.get(key)
        if info is None:
            raise RefError(f"no run '{key}'")
        return {"kind": "run", "id": key, "name": info.record.get("name"),
                "command": info.record.get("command"), "step": step_key(info),
                "started_at": info.started, "status": effective_status(info.record)}
    writers = store.writers_of(key)
    readers = store.readers_of(key)
    paths = sorted({p for _, ps in writers + readers for p in ps})
    return {"kind": "artifact", "hash": key, "paths": paths,
            "produced_by": [r for r, _ in writers]}


# -- inputs ----------------------------------------------------------------------------


def inputs(store: Store, target: tuple[str, str]) -> dict:
    """Every input version that fed target, through every upstream run, with the
    datasets they form. The JSON of `roar inputs --json`."""
    runs = RunCache(store)
    g = upstream(store, target, runs)
    complete, reasons = _completeness(g, target, True)
    entries = []
    for n, attrs in g.nodes(data=True):
        if n[0] != "ver" or not any(True for _ in g.successors(n)):
            continue  # the target itself, unless some upstream run read it too
        if attrs.get("ident") and attrs.get("content"):
            continue  # a remote object listed once, under its content hash
        h = attrs.get("learned") if attrs.get("ident") else n[1]
        reads = sorted((g.nodes[r]["depth"], r[1], p) for r in g.successors(n)
                       for p in g.edges[n, r]["paths"])
        producers = sorted(g.predecessors(n), key=lambda r: r[1])
        extra = {"url": attrs["url"], "version": attrs.get("version")} if attrs.get(
            "ident") else {}
        entries.append({
            **extra,
            "path": reads[0][2], "hash": h, "size": attrs.get("size"),
            "produced_by": producers[0][1] if producers else None,
            "depth": attrs["depth"], "kind": attrs.get("kind"),
            "paths": sorted({p for _, _, p in reads}),
            "producers": [r[1] for r in producers],
            "read_by": sorted({r for _, r, _ in reads}), "dataset": None,
        })
    # inputs that have no verified hash are inputs all the same: listed, never dropped
    for info, depth in _runs_of(g):
        for f in info.inputs:
            if not f.get("hash") and not f.get("ident"):
                entries.append({"path": f["path"], "hash": None, "size": f.get("size"),
                                "produced_by": None, "depth": depth + 1, "kind": f.get("kind"),
                                "paths": [f["path"]], "producers": [], "read_by": [info.id],
                                "dataset": None, "status": f.get("status")})
    entries.sort(key=lambda e: (e["depth"], e["kind"] != DATA, e["path"]))
    sets = datasets(g)
    by_member = {}
    for ds in sets:
        for m in ds["members"]:
            by_member.setdefault((m["hash"], m["abs"]), ds["path"])
    for e in entries:
        for p in e["paths"]:
            if (e["hash"], p) in by_member:
                e["dataset"] = by_member[(e["hash"], p)]
                break
    for ds in sets:
        for m in ds["members"]:
            del m["abs"]
    return {"target": target_view(store, target, runs), "complete": complete,
            "reasons": reasons, "runs": [_run_summary(i, d) for i, d in _runs_of(g)],
            "inputs": entries, "datasets": sets}


def _run_summary(info: RunInfo, depth: int) -> dict:
    return {"id": info.id, "name": info.record.get("name"), "step": step_key(info),
            "command": info.record.get("command"), "depth": depth,
            "started_at": info.started, "status": effective_status(info.record),
            "complete": not info.problems()}


def dataset_roots(info: RunInfo) -> dict[str, str]:
    """Data input path -> the dataset directory it belongs to, for one run.

    A dataset is a directory the command line names that holds inputs it read
    (`preprocess.py data/raw`), else the parent directory of two or more data
    inputs. The working directory, its ancestors and the git root never are."""
    rec = info.record
    cwd = rec.get("cwd") or "/"
    git_root = (rec.get("git") or {}).get("root")
    never = {"/", git_root}
    d = cwd
    while True:
        never.add(d)
        if d == "/":
            break
        d = posixpath.dirname(d)
    named = set()
    for a in rec.get("command") or []:
        if not isinstance(a, str):
            continue
        if a.startswith("-") and "=" in a:
            a = a.split("=", 1)[1]
        if a and not a.startswith("-"):
            p = posixpath.normpath(posixpath.join(cwd, a))
            if p not in never:
                named.add(p)
    data = [f for f in info.inputs if f.get("kind") == DATA]
    roots: dict[str, str] = {}
    by_parent: dict[str, list[str]] = {}
    for f in data:
        path = f["path"]
        inside = [n for n in named if path.startswith(n + "/")]
        if inside:
            roots[path] = max(inside, key=len)
        else:
            by_parent.setdefault(posixpath.dirname(path), []).append(path)
    for parent, paths in by_parent.items():
        if len(paths) >= 2 and parent not in never:
            for p in paths:
                roots[p] = parent
    # remote objects: two or more keys under one prefix (s3://bkt/data/...) form a dataset
    by_prefix: dict[str, list[str]] = {}
    for f in info.inputs:
        if f.get("kind") == REMOTE:
            url = f.get("url") or f["path"]
            prefix = url.split("?", 1)[0].rpartition("/")[0]
            if "://" in prefix and not prefix.endswith(":/") and prefix.count("/") >= 3:
                by_prefix.setdefault(prefix, []).append(f["path"])
    for prefix, paths in by_prefix.items():
        if len(set(paths)) >= 2:
            for p in paths:
                roots[p] = prefix
    return roots


def dataset_version(pairs) -> str:
    """A hash over sorted (relative path, content hash) pairs."""
    h = xxhash.xxh3_128()
    for rel, ch in sorted(pairs):
        h.update(f"{rel}\0{ch}\n".encode(errors="surrogateescape"))
    return h.hexdigest()


def datasets(g: Graph) -> list[dict]:
    """The datasets read in an upstream graph, one per (directory, version)."""
    found: dict[tuple[str, str | None], dict] = {}
    for info, depth in _runs_of(g):
        roots = dataset_roots(info)
        groups: dict[str, list[dict]] = {}
        for f in info.inputs:
            if f["path"] in roots:
                groups.setdefault(roots[f["path"]], []).append(f)
        for root, files in groups.items():
            members = sorted(({"path": f["path"][len(root) + 1:], "hash": f.get("hash"),
                               "size": f.get("size"), "abs": f["path"],
                               **({"version": f.get("version")} if f.get("kind") == REMOTE
                                  else {})} for f in files),
                             key=lambda m: m["path"])
            # a remote object without a content hash is known by its version
            ids = [(m["path"], m["hash"] or (m.get("version") and f"v:{m['version']}"))
                   for m in members]
            complete = all(i for _, i in ids)
            version = dataset_version(ids) if complete else None
            ds = found.get((root, version))
            if ds is None:
                producers, made = set(), 0
                for m in members:
                    if m["hash"] and _ver_node(m["hash"]) in g:
                        writers = {r[1] for r in g.predecessors(_ver_node(m["hash"]))}
                        producers |= writers
                        made += bool(writers)
                ds = found[(root, version)] = {
                    "path": root, "version": version, "count": len(members),
                    "size": sum(m["size"] or 0 for m in members), "depth": depth + 1,
                    "read_by": [], "produced_by": sorted(producers), "produced": made,
                    "complete": complete,
                    "members": members}
            ds["read_by"].append(info.id)
            ds["depth"] = min(ds["depth"], depth + 1)
    return sorted(found.values(), key=lambda d: (d["depth"], d["path"]))


# -- membership ------------------------------------------------------------------------


def _membership(g: Graph, h: str | None, complete: bool, path: str | None = None
                ) -> dict:
    evidence = []
    # by content; a remote object (h None, path its URL) by name, any version
    vns = ([_ver_node(h)] + [n for n in g if n[0] == "ver" and g.nodes[n].get("learned") == h]
           if h else [n for n in g if n[0] == "ver" and g.nodes[n].get("url") == path])
    for vn in vns:
        if vn not in g:
            continue
        for r in g.successors(vn):
            for p in g.edges[vn, r]["paths"]:
                e = {"run": r[1], "path": p, "depth": g.nodes[r]["depth"] + 1}
                if not h:
                    e["version"] = g.nodes[vn].get("version")
                evidence.append(e)
    evidence.sort(key=lambda e: (e["depth"], e["run"], e["path"]))
    answer = "yes" if evidence else ("no" if complete else "unknown")
    out = {"answer": answer, "hash": h, "evidence": evidence}
    if path is not None and not evidence:
        # the same path read with other content: worth saying next to a "no"
        out["other_versions"] = sorted(
            ({"run": r[1], "path": path, "hash": n[1]}
             for n in g.nodes if n[0] == "ver"
             for r in g.successors(n) if path in g.edges[n, r]["paths"]),
            key=lambda e: (e["run"], e["hash"]))
    return out


def contains(store: Store, target: tuple[str, str], h: str, path: str | None = None) -> dict:
    """Was content h read anywhere upstream of target? yes / no / unknown.
    The JSON of `roar inputs --contains X --json`."""
    runs = RunCache(store)
    g = upstream(store, target, runs)
    complete, reasons = _completeness(g, target, True)
    out = _membership(g, h, complete, path)
    out["path"] = path
    out["target"] = target_view(store, target, runs)
    out["reasons"] = reasons if out["answer"] == "unknown" else []
    return out


def contains_dir(store: Store, target: tuple[str, str], directory: str,
                 progress=None) -> dict:
    """Which files of directory (by their content now) reached target; the
    hashes computed are kept in this node's stat cache. progress(path,
    bytes_done, size) is told of each file and, now and then, of a big one."""
    if not os.path.isdir(directory):
        raise RefError(f"{directory} is not a directory")
    runs = RunCache(store)
    g = upstream(store, target, runs)
    complete, reasons = _completeness(g, target, True)
    files = []
    computed: list[tuple[bytes, str]] = []
    for base, dirs, names in os.walk(directory):
        dirs.sort()
        for name in sorted(names):
            p = os.path.join(base, name)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            rel = os.path.relpath(p, directory)
            if progress is not None:
                progress(p, 0, None)
            res = query_hash(store, p, progress, computed)
            if res.status != OK:
                files.append({"path": rel, "hash": None, "answer": "unknown", "evidence": [],
                              "error": res.error or res.status})
                continue
            m = _membership(g, res.hash, complete, os.path.abspath(p))
            files.append({"path": rel, **m})
    remember_hashes(store, computed)
    answers = {f["answer"] for f in files}
    answer = "yes" if "yes" in answers else ("unknown" if "unknown" in answers else "no")
    return {"answer": answer, "dir": os.path.abspath(directory),
            "target": target_view(store, target, runs),
            "reached": sum(f["answer"] == "yes" for f in files), "total": len(files),
            "files": files, "reasons": reasons if "unknown" in answers else []}


# -- outputs ---------------------------------------------------------------------------


def outputs(store: Store, target: tuple[str, str]) -> dict:
    """Everything derived from target, transitively. The JSON of `roar outputs --json`."""
    runs = RunCache(store)
    g = downstream(store, target, runs)
    complete, reasons = _completeness(g, target, False)
    entries = []
    for n, attrs in g.nodes(data=True):
        if n[0] != "ver" or (target[0] == "artifact" and n[1] == target[1]):
            continue
        if attrs.get("ident") and attrs.get("content"):
            continue  # a remote object listed once, under its content hash
        extra = {"url": attrs["url"], "version": attrs.get("version")} if attrs.get(
            "ident") else {}
        for r in sorted(g.predecessors(n), key=lambda r: r[1]):
            paths = g.edges[r, n]["paths"]
            entries.append({**extra, "path": paths[0],
                            "hash": None if attrs.get("ident") else n[1], "run": r[1],
                            "depth": attrs["depth"], "kind": attrs.get("kind"),
                            "size": attrs.get("size"), "paths": paths})
    for info, depth in _runs_of(g):
        for f in info.outputs:
            if not f.get("hash") and not f.get("ident"):
                entries.append({"path": f["path"], "hash": None, "run": info.id,
                                "depth": depth + 1, "kind": f.get("kind"),
                                "size": f.get("size"), "paths": [f["path"]],
                                "status": f.get("status")})
    entries.sort(key=lambda e: (e["depth"], e["path"], e["run"]))
    env_entries = [{"path": f["path"], "hash": f.get("hash"), "run": info.id,
                    "depth": depth + 1, "kind": ENV, "size": f.get("size"),
                    "paths": [f["path"]], "status": f.get("status")}
                   for info, depth in _runs_of(g) for f in info.env_outputs]
    env_entries.sort(key=lambda e: (e["depth"], e["path"], e["run"]))
    return {"target": target_view(store, target, runs), "complete": complete,
            "reasons": reasons, "runs": [_run_summary(i, d) for i, d in _runs_of(g)],
            "outputs": entries, "env_outputs": env_entries}


# -- diff ------------------------------------------------------------------------------

# Order of the human output: what most likely changed the result first.
PRIORITY = {"data": 0, "args": 1, "step_added": 2, "step_removed": 2, "code": 3,
            "command": 4, "exit": 5, "packages": 7, "env": 8}
DERIVED_DATA_PRIORITY = 6  # an intermediate that changed because something upstream did
NOISE_PRIORITY = 9
ENV_NOISE = {"_", "PWD", "OLDPWD", "SHLVL", "TERM", "COLORTERM", "LS_COLORS", "PS1", "PS2",
             "PROMPT_COMMAND", "DISPLAY", "WINDOWID", "HISTFILE", "HISTSIZE", "HISTCONTROL",
             "LINES", "COLUMNS", "MAIL", "STY", "WINDOW", "SHELL_SESSION_ID", "INVOCATION_ID",
             "JOURNAL_STREAM", "MANPATH", "LESSOPEN", "LESSCLOSE", "PYTEST_CURRENT_TEST"}
ENV_NOISE_PREFIXES = ("XDG_", "SSH_", "TMUX", "TERM_", "VSCODE_", "GPG_", "DBUS_",
                      "KITTY_", "ITERM_", "WT_")
_PROGRAM_VERSION = str.maketrans("", "", "0123456789.")


def env_noise(name: str) -> bool:
    return name in ENV_NOISE or name.startswith(ENV_NOISE_PREFIXES)


def _script_index(info: RunInfo) -> int | None:
    """Index in argv of the script the program ran (`python3 -u train.py`)."""
    argv = info.record.get("command") or []
    cwd = info.record.get("cwd") or "/"
    code = {f["path"] for f in info.inputs if f.get("kind") == CODE}
    for i, a in enumerate(argv[1:], 1):
        if a == "-c":  # inline code: no script
            return None
        if not isinstance(a, str) or a.startswith("-"):
            if a == "-m" and i + 1 < len(argv):
                return i + 1
            continue
        p = posixpath.normpath(posixpath.join(cwd, a))
        if p in code:
            return i
        if a.endswith(CODE_SUFFIXES):
            return i
    return None


def step_key(info: RunInfo) -> str:
    """What a step is, for aligning two DAGs: its script (relative to the repo),
    `-m module`, or else the program name without its version."""
    if info.key is None:
        info.key = _step_key(info)
    return info.key


def _step_key(info: RunInfo) -> str:
    argv = info.record.get("command") or []
    if not argv:
        return "?"
    i = _script_index(info)
    if i is not None:
        if argv[i - 1] == "-m":
            return f"-m {argv[i]}"
        cwd = info.record.get("cwd") or "/"
        return info.rel(posixpath.normpath(posixpath.join(cwd, argv[i])))
    prog = posixpath.basename(str(argv[0]))
    return prog.translate(_PROGRAM_VERSION) or prog


def parse_args(tokens: list) -> dict:
    """Options (`--lr 0.1`, `--lr=0.1`, flags) and positionals (#1, #2, ...)."""
    out: dict = {}
    pos = 0

    def is_opt(t):
        if not isinstance(t, str) or len(t) < 2 or not t.startswith("-"):
            return False
        try:
            float(t)
            return False
        except ValueError:
            return True

    def put(k, v):
        if k in out:
            out[k] = (out[k] if isinstance(out[k], list) else [out[k]]) + [v]
        else:
            out[k] = v

    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t == "--":
            for rest in tokens[i + 1:]:
                pos += 1
                put(f"#{pos}", rest)
            break
        if is_opt(t):
            if "=" in t:
                k, v = t.split("=", 1)
                put(k, v)
            elif i + 1 < len(tokens) and not is_opt(tokens[i + 1]):
                put(t, tokens[i + 1])
                i += 1
            else:
                put(t, True)
        else:
            pos += 1
            put(f"#{pos}", t)
        i += 1
    return out


def _align(a: list[tuple[RunInfo, int]], b: list[tuple[RunInfo, int]]):
    """Pairs of steps (by step key, then the same run, then equal depth, then
    order), and the steps left on each side."""
    pairs, left_a, left_b = [], [], []
    keys = list(dict.fromkeys([step_key(i) for i, _ in a] + [step_key(i) for i, _ in b]))
    for key in keys:
        sa = [x for x in a if step_key(x[0]) == key]
        sb = [x for x in b if step_key(x[0]) == key]
        for match in (lambda x, y: x[0].id == y[0].id, lambda x, y: x[1] == y[1],
                      lambda x, y: True):
            for x in list(sa):
                y = next((y for y in sb if match(x, y)), None)
                if y is not None:
                    pairs.append((key, x, y))
                    sa.remove(x)
                    sb.remove(y)
        left_a += [(key, x) for x in sa]
        left_b += [(key, y) for y in sb]
    return pairs, left_a, left_b


def _arg_names(info: RunInfo) -> dict[str, str]:
    """Path (relative, as RunInfo.rel) -> the argument that names it (`--data`, `#1`)."""
    argv = info.record.get("command") or []
    cwd = info.record.get("cwd") or "/"
    out: dict[str, str] = {}
    for k, v in parse_args(argv[(_script_index(info) or 0) + 1:]).items():
        for x in v if isinstance(v, list) else [v]:
            if isinstance(x, str) and x:
                out.setdefault(info.rel(posixpath.normpath(posixpath.join(cwd, x))), k)
    return out


def _pair_paths(ma: dict, mb: dict, names_a: dict, names_b: dict, one_to_one: bool
                ) -> list[tuple[str | None, str | None]]:
    """Which path of a compares with which of b: the same path; else a path of a
    gone and one of b new with the same content (renamed), or named by the same
    argument; else (one_to_one) the single one left on each side."""
    common = set(ma) & set(mb)
    gone, new = sorted(set(ma) - common), sorted(set(mb) - common)
    pairs: list[tuple[str | None, str | None]] = [(p, p) for p in sorted(common)]

    def take(match):
        for n in list(new):
            g = next((g for g in gone if match(g, n)), None)
            if g is not None:
                pairs.append((g, n))
                gone.remove(g)
                new.remove(n)

    take(lambda g, n: ma[g] is not None and ma[g] == mb[n])
    take(lambda g, n: g in names_a and names_a[g] == names_b.get(n))
    if one_to_one and len(gone) == 1 and len(new) == 1:
        take(lambda g, n: True)
    return pairs + [(g, None) for g in gone] + [(None, n) for n in new]


def _git_numstat(roots: list[str], ca: str, cb: str, files: list[str]) -> dict | None:
    """{path: '+added -deleted'} of files that differ between two commits, from the
    first recorded repository that knows both; None when none does."""
    for root in dict.fromkeys(r for r in roots if r and os.path.isdir(r)):
        try:
            p = git(root, "diff", "--numstat", "--no-renames", ca, cb, "--", *files)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if p.returncode != 0:
            continue
        out = {}
        for line in p.stdout.decode(errors="surrogateescape").splitlines():
            parts = line.split("\t", 2)
            if len(parts) == 3:
                added, deleted, path = parts
                out[path] = "binary" if added == "-" else f"+{added} -{deleted}"
        return out
    return None


def _compare(key: str, ra: RunInfo, rb: RunInfo, ga: Graph, gb: Graph,
             depth: int) -> list[dict]:
    changes = []

    def change(kind, k, a, b, **extra):
        changes.append({"kind": kind, "step": key, "key": k, "a": a, "b": b, "a_run": ra.id,
                        "b_run": rb.id, "depth": depth, **extra})

    # data: input versions by path, files of one dataset summarised as the dataset
    def data_view(info: RunInfo, g: Graph):
        roots = dataset_roots(info)
        files, sets = {}, {}
        for f in info.inputs:
            if f.get("kind") != DATA:
                continue
            if f["path"] in roots:
                root = roots[f["path"]]
                sets.setdefault(info.rel(root), {})[f["path"][len(root) + 1:]] = f.get("hash")
            else:
                files[info.rel(f["path"])] = f.get("hash")
        derived = {h for h in files.values() if h and _ver_node(h) in g
                   and any(True for _ in g.predecessors(_ver_node(h)))}
        return files, sets, derived

    fa, sa, da = data_view(ra, ga)
    fb, sb, db = data_view(rb, gb)
    names_a, names_b = _arg_names(ra), _arg_names(rb)
    for pa, pb in _pair_paths(fa, fb, names_a, names_b, one_to_one=False):
        ha, hb = fa.get(pa), fb.get(pb)
        if pa and pb and ha == hb:
            continue  # same content (perhaps under a new name): the data did not change
        extra = {"renamed_from": pa} if pa and pb and pa != pb else {}
        if (pa and ha is None) or (pb and hb is None):
            extra["unverified"] = True
        change("data", pb or pa, ha, hb, derived=bool({ha, hb} & (da | db)), **extra)
    for pa, pb in _pair_paths(sa, sb, names_a, names_b, one_to_one=True):
        ma, mb = sa.get(pa, {}), sb.get(pb, {})
        if pa and pb and ma == mb:
            continue
        va = dataset_version(ma.items()) if ma and all(ma.values()) else None
        vb = dataset_version(mb.items()) if mb and all(mb.values()) else None
        extra = {"renamed_from": pa} if pa and pb and pa != pb else {}
        change("data", pb or pa, va, vb, dataset=True,
               added=sorted(set(mb) - set(ma)), removed=sorted(set(ma) - set(mb)),
               changed=sorted(p for p in set(ma) & set(mb) if ma[p] != mb[p]),
               count_a=len(ma), count_b=len(mb), derived=False, **extra)
    # remote objects: by name, their versions
    rem_a = {f["url"]: f.get("version") or f.get("hash") for f in ra.inputs
             if f.get("kind") == REMOTE}
    rem_b = {f["url"]: f.get("version") or f.get("hash") for f in rb.inputs
             if f.get("kind") == REMOTE}
    for url in sorted(set(rem_a) | set(rem_b)):
        if rem_a.get(url) != rem_b.get(url):
            change("data", url, rem_a.get(url), rem_b.get(url), remote=True, derived=False)

    # args
    argv_a, argv_b = ra.record.get("command") or [], rb.record.get("command") or []
    ia, ib = _script_index(ra), _script_index(rb)
    args_a = parse_args(argv_a[(ia or 0) + 1:])
    args_b = parse_args(argv_b[(ib or 0) + 1:])
    for k in sorted(set(args_a) | set(args_b), key=lambda k: (not k.startswith("#"), k)):
        if args_a.get(k) != args_b.get(k):
            change("args", k, args_a.get(k), args_b.get(k))

    # code: the commit, and the code files the runs read that differ
    git_a, git_b = ra.record.get("git") or {}, rb.record.get("git") or {}
    if git_a.get("commit") != git_b.get("commit"):
        change("code", "commit", git_a.get("commit"), git_b.get("commit"))
    if bool(git_a.get("dirty")) != bool(git_b.get("dirty")) or (
            git_a.get("patch") != git_b.get("patch")):
        change("code", "dirty", bool(git_a.get("dirty")), bool(git_b.get("dirty")))
    code_a = {ra.rel(f["path"]): f.get("hash") for f in ra.inputs if f.get("kind") == CODE}
    code_b = {rb.rel(f["path"]): f.get("hash") for f in rb.inputs if f.get("kind") == CODE}
    lines = None
    if git_a.get("commit") and git_b.get("commit") and git_a["commit"] != git_b["commit"]:
        lines = _git_numstat([git_a.get("root"), git_b.get("root")], git_a["commit"],
                             git_b["commit"], sorted(set(code_a) | set(code_b)))
    for p in sorted(set(code_a) | set(code_b)):
        ha, hb = code_a.get(p), code_b.get(p)
        if ha and hb and ha == hb:
            continue
        if ha is None and hb is None and (lines is None or p not in lines):
            continue
        extra = {"lines": lines[p]} if lines and p in lines else {}
        change("code", p, ha, hb, **extra)

    # command and interpreter
    if argv_a[:1] != argv_b[:1]:
        change("command", "program", argv_a[0] if argv_a else None,
               argv_b[0] if argv_b else None)
    if ia is not None and ib is not None and argv_a[ia] != argv_b[ib]:
        change("command", "script", argv_a[ia], argv_b[ib])
    if ra.exe and rb.exe and ra.exe != rb.exe:
        change("command", "interpreter", ra.exe, rb.exe)

    # exit status
    for k in ("exit_code", "signal"):
        if ra.record.get(k) != rb.record.get(k):
            change("exit", k, ra.record.get(k), rb.record.get(k))
    st_a, st_b = effective_status(ra.record), effective_status(rb.record)
    if st_a != st_b:
        change("exit", "status", st_a, st_b)

    # packages and environment
    pa, pb = ra.record.get("packages") or {}, rb.record.get("packages") or {}
    for k in sorted(set(pa) | set(pb)):
        if pa.get(k) != pb.get(k):
            change("packages", k, pa.get(k), pb.get(k))
    ea, eb = ra.record.get("env") or {}, rb.record.get("env") or {}
    for k in sorted(set(ea) | set(eb)):
        if ea.get(k) != eb.get(k):  # redacted values compare by their keyed hash
            change("env", k, ea.get(k), eb.get(k), noise=env_noise(k),
                   redacted=isinstance(ea.get(k), dict) or isinstance(eb.get(k), dict))
    return changes


def _load_exe(store: Store, info: RunInfo) -> None:
    if info.exe is None:
        procs = store.run_procs(info.id)
        keys = {p["key"] for p in procs}
        first = next((p for p in procs if p.get("parent") not in keys), None)
        info.exe = (first or {}).get("exe") or ""


def _priority(c: dict) -> tuple:
    if c["kind"] == "data" and c.get("derived"):
        p = DERIVED_DATA_PRIORITY
    elif c["kind"] == "env" and c.get("noise"):
        p = NOISE_PRIORITY
    else:
        p = PRIORITY[c["kind"]]
    return (p, -c["depth"], c["step"], str(c["key"]))


def diff(store: Store, a: tuple[str, str], b: tuple[str, str]) -> dict:
    """What changed between the upstream DAGs of a and b. The JSON of `roar diff --json`."""
    runs = RunCache(store)
    ga, gb = upstream(store, a, runs), upstream(store, b, runs)
    for g in (ga, gb):
        for info, _ in _runs_of(g):
            _load_exe(store, info)
    steps_a, steps_b = _runs_of(ga), _runs_of(gb)
    pairs, left_a, left_b = _align(steps_a, steps_b)
    changes, steps = [], []
    for key, (ra, da), (rb, db) in pairs:
        steps.append({"step": key, "a": ra.id, "b": rb.id, "depth_a": da, "depth_b": db})
        if ra.id != rb.id:
            changes += _compare(key, ra, rb, ga, gb, max(da, db))
    for key, (ra, da) in left_a:
        steps.append({"step": key, "a": ra.id, "b": None, "depth_a": da, "depth_b": None})
        changes.append({"kind": "step_removed", "step": key, "key": key, "a": ra.id, "b": None,
                        "a_run": ra.id, "b_run": None, "depth": da,
                        "command": ra.record.get("command")})
    for key, (rb, db) in left_b:
        steps.append({"step": key, "a": None, "b": rb.id, "depth_a": None, "depth_b": db})
        changes.append({"kind": "step_added", "step": key, "key": key, "a": None, "b": rb.id,
                        "a_run": None, "b_run": rb.id, "depth": db,
                        "command": rb.record.get("command")})
    changes.sort(key=_priority)
    ca, reasons_a = _completeness(ga, a, True)
    cb, reasons_b = _completeness(gb, b, True)
    return {"a": {**target_view(store, a, runs), "complete": ca, "reasons": reasons_a},
            "b": {**target_view(store, b, runs), "complete": cb, "reasons": reasons_b},
            "steps": steps, "changes": changes}
