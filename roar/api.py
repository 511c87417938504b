"""roar's Python API: `roar.open()` and the questions the CLI answers, as
typed records (roar.record.records) instead of printed text.

    import roar

    with roar.open() as r:
        for run in r.runs(limit=5):
            print(run.id, run.status, run.command)

Each method is the library call behind one command (`roar log`, `show`,
`inputs`, `outputs`, `diff`, `trace`); graph() is the lineage walk as a
networkx.DiGraph, for GraphML export or walks of one's own. Reading only: the
store is opened read-only and nothing here prints.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from roar.query import views
from roar.record.records import (
    Artifact,
    Change,
    Derived,
    FileVersion,
    Membership,
    Process,
    Run,
    RunStatus,
    Upstream,
)
from roar.record.store import RefError, Store

__all__ = ["Roar", "open"]


class Roar:
    """A roar store opened for questions: the node's own store, or with
    `shared` (a postgresql:// URL) the shared store of every node (roar/shared)."""

    def __init__(self, home: str | Path | None = None, shared: str | None = None):
        if shared:
            from roar.shared.backend import SharedStore

            self.store = SharedStore(shared, Path(home) if home is not None else None)
        else:
            self.store = Store(home, readonly=True)
        self.shared = shared

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Roar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- runs ---------------------------------------------------------------------------

    def _run(self, doc: dict) -> Run:
        run = Run.from_doc(doc)
        status = views.effective_status(doc)  # a "running" run whose roar is gone
        if status != run.status:
            run.status = RunStatus(status)
        return run

    def runs(self, limit: int | None = None) -> list[Run]:
        """The runs, newest first (`roar log`)."""
        return [self._run(d) for d in itertools.islice(self.store.iter_runs(), limit)]

    def run(self, ref: str) -> Run:
        """One run, by id or unique id prefix."""
        return self._run(self.store.get_run(self.store.resolve_run(ref)))

    def files(self, run: str | Run) -> list[FileVersion]:
        """Every file record of a run: inputs, outputs, environment, ..."""
        return self.store.files(self._run_id(run))

    def show(self, ref: str) -> Run | Artifact:
        """What a reference names (`roar show`): a run id (or prefix), a content
        hash (or prefix) or a path, hashed now."""
        kind, key = views.resolve(self.store, ref)
        if kind == "run":
            return self.run(key)
        doc = views.artifact_view(self.store, key)
        return Artifact(hash=key, paths=doc["paths"],
                        produced_by=[r["run"] for r in doc["produced_by"]],
                        read_by=[r["run"] for r in doc["read_by"]])

    def trace(self, run: str | Run) -> list[Process]:
        """The run's process tree: each process with what it did to each file."""
        return self.store.processes(self._run_id(run))

    # -- lineage ------------------------------------------------------------------------

    def inputs(self, ref: str, contains: str | None = None
               ) -> list[Upstream] | Membership:
        """Every input version that fed ref, through every upstream run; with
        contains (a file or a content hash): was it read upstream?"""
        from roar.query import lineage

        target = views.resolve(self.store, ref)
        if contains is not None:
            h, path = views.content_ref(self.store, contains)
            from roar.shared.backend import qualify  # unknown while runs are unsynced

            return Membership.from_doc(qualify(self.store,
                                               lineage.contains(self.store, target, h, path)))
        return [Upstream.from_doc(e) for e in lineage.inputs(self.store, target)["inputs"]]

    def outputs(self, ref: str) -> list[Derived]:
        """Every version derived from ref, transitively (`roar outputs`)."""
        from roar.query import lineage

        doc = lineage.outputs(self.store, views.resolve(self.store, ref))
        return [Derived.from_doc(e) for e in doc["outputs"]]

    def diff(self, a: str, b: str) -> list[Change]:
        """What changed between a and b across their upstream DAGs (`roar diff`)."""
        from roar.query import lineage

        doc = lineage.diff(self.store, views.resolve(self.store, a),
                           views.resolve(self.store, b))
        return [Change.from_doc(c) for c in doc["changes"]]

    def graph(self, ref: str):
        """The runs and file versions upstream and downstream of ref as a
        networkx.DiGraph. Nodes "run:ID" (kind="run", command, status, ...)
        and "file:HASH" (kind="file", path, size, file_kind); edges file ->
        run (read) and run -> file (wrote), with the paths. Attribute values
        are strings and numbers only, so nx.write_graphml() takes it as is."""
        import networkx as nx

        from roar.query import lineage

        target = views.resolve(self.store, ref)
        runs = lineage.RunCache(self.store)
        g = nx.DiGraph()
        for walk in (lineage.upstream(self.store, target, runs),
                     lineage.downstream(self.store, target, runs)):
            for n, attrs in walk.nodes(data=True):
                name = _node_name(n)
                if name in g:
                    continue
                if n[0] == "run":
                    info = runs.get(n[1])
                    rec = info.record if info else {}
                    g.add_node(name, **_scalars(
                        kind="run", id=n[1], name=rec.get("name"),
                        command=" ".join(map(str, rec.get("command") or [])),
                        status=views.effective_status(rec) if rec else None,
                        started_at=rec.get("started_at"), exit_code=rec.get("exit_code"),
                        complete=bool(rec.get("complete"))))
                else:
                    paths = sorted({p for e in walk.in_edges(n) + walk.out_edges(n)
                                    for p in walk.edges[e]["paths"]})
                    g.add_node(name, **_scalars(kind="file", hash=n[1],
                                                path=paths[0] if paths else None,
                                                size=attrs.get("size"),
                                                file_kind=attrs.get("kind")))
            for (u, v), attrs in walk.edges.items():
                g.add_edge(_node_name(u), _node_name(v),
                           relation="read" if u[0] == "ver" else "wrote",
                           paths="\n".join(attrs["paths"]))
        return g

    def _run_id(self, run: str | Run) -> str:
        if isinstance(run, Run):
            return run.id
        return self.store.resolve_run(run)


def _node_name(n: tuple[str, str]) -> str:
    return f"run:{n[1]}" if n[0] == "run" else f"file:{n[1]}"


def _scalars(**attrs) -> dict:
    return {k: v for k, v in attrs.items() if v is not None}


def open(home: str | Path | None = None, shared: str | None = None) -> Roar:  # noqa: A001
    """The roar store at `home` (default: $ROAR_HOME, else ~/.roar), read-only."""
    return Roar(home, shared)


RefError = RefError  # what a reference that names nothing raises
