"""Export of a target's upstream DAG to the lineage ecosystem: OpenLineage run
events, W3C PROV-JSON, and a Graphviz picture (DOT, or SVG through `dot`).

Everything is read from the upstream graph of roar.query.lineage, so an export shows
exactly what `roar inputs` shows: runs, and the file versions (content
hashes) they read and wrote.
"""

from __future__ import annotations

import json
import posixpath
import re
import shutil
import subprocess
import uuid
from importlib import metadata

from roar.query import lineage
from roar.query.views import effective_status
from roar.record import context
from roar.record.classify import CODE, DATA
from roar.record.ids import _CROCKFORD
from roar.record.store import Store

FORMATS = ("openlineage", "prov", "dot", "svg", "jsonl")
HASH_ALGORITHM = "xxh3-128"


class ExportError(Exception):
    """An export that cannot be made here; the message says why and what to do."""


def roar_version() -> str:
    try:
        return metadata.version("roar")
    except metadata.PackageNotFoundError:
        return "unknown"


# roar has no public schema host: its URIs are URNs (valid URIs, as the specs ask)
PRODUCER = f"urn:roar:{roar_version()}"
OL_EVENT_SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
OL_FACETS = {  # the standard facets roar fills, at the schema versions it follows
    "version": "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json"
               "#/$defs/DatasetVersionDatasetFacet",
    "jobType": "https://openlineage.io/spec/facets/2-0-4/JobTypeJobFacet.json"
               "#/$defs/JobTypeJobFacet",
    "sourceCodeLocation": "https://openlineage.io/spec/facets/1-1-0/"
                          "SourceCodeLocationJobFacet.json#/$defs/SourceCodeLocationJobFacet",
    "processing_engine": "https://openlineage.io/spec/facets/1-1-1/"
                         "ProcessingEngineRunFacet.json#/$defs/ProcessingEngineRunFacet",
}
CONTENT_HASH_FACET = "roar_contentHash"
CONTENT_HASH_SCHEMA_URL = "urn:roar:openlineage:ContentHashDatasetFacet:1-0-0"
RUN_FACET = "roar_run"
RUN_SCHEMA_URL = "urn:roar:openlineage:RoarRunFacet:1-0-0"
# the custom dataset facet's schema (docs/reproduce.md shows it too)
CONTENT_HASH_FACET_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["_producer", "_schemaURL", "algorithm", "hash"],
    "properties": {
        "_producer": {"type": "string", "format": "uri"},
        "_schemaURL": {"type": "string", "format": "uri"},
        "algorithm": {"type": "string", "enum": [HASH_ALGORITHM]},
        "hash": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "size": {"type": ["integer", "null"], "minimum": 0},
    },
    "additionalProperties": False,
}


def _upstream(store: Store, target: tuple[str, str]):
    runs = lineage.RunCache(store)
    g = lineage.upstream(store, target, runs)
    order = sorted((runs.get(n[1]) for n in g if n[0] == "run"),
                   key=lambda i: (i.started, i.id))
    return g, order


def _redacted(store: Store):
    """What an export may show of a record's command and git remote: redacted
    again with the store's key (runs stored before a redaction rule existed keep
    their secrets out of exports too; redacting twice changes nothing)."""
    key = store.meta_get("redaction_key") or b""

    def command(rec: dict) -> list:
        argv = rec.get("command") or []
        return context.redact_argv(argv, key) if all(isinstance(a, str) for a in argv) \
            else argv

    def remote(git: dict) -> str | None:
        return context.url_without_credentials(git["remote"]) if git.get("remote") else None

    return command, remote


def run_uuid(run_id: str) -> str:
    """The run id (a ULID: 128 bits) written as a UUID, as OpenLineage wants."""
    value = 0
    for c in run_id.upper():
        value = value * 32 + _CROCKFORD.index(c)
    return str(uuid.UUID(int=value & ((1 << 128) - 1)))


# -- OpenLineage -------------------------------------------------------------------------


def _facet(schema_url: str, **fields) -> dict:
    return {"_producer": PRODUCER, "_schemaURL": schema_url, **fields}


def _job_name(info: lineage.RunInfo) -> str:
    step = lineage.step_key(info).removeprefix("-m ")
    root = (info.record.get("git") or {}).get("root")
    return f"{posixpath.basename(root)}/{step}" if root else step


def _dataset(f: dict, host: str) -> dict:
    facets = {}
    if f.get("hash"):
        facets["version"] = _facet(OL_FACETS["version"], datasetVersion=f["hash"])
        facets[CONTENT_HASH_FACET] = _facet(CONTENT_HASH_SCHEMA_URL, algorithm=HASH_ALGORITHM,
                                            hash=f["hash"], size=f.get("size"))
    return {"namespace": f"file://{host}", "name": f["path"], "facets": facets}


def openlineage_events(store: Store, target: tuple[str, str], namespace: str = "roar"
                       ) -> list[dict]:
    """OpenLineage RunEvents of every run upstream of target, oldest first: a
    START, then COMPLETE / FAIL / ABORT once the run ended. Datasets are files
    (namespace file://HOST, name the absolute path) with their content hash as
    the dataset version and in a roar_contentHash facet."""
    _, order = _upstream(store, target)
    command, remote = _redacted(store)
    events = []
    for info in order:
        rec = info.record
        host = rec.get("host") or "localhost"
        git = rec.get("git") or {}
        job_facets = {"jobType": _facet(OL_FACETS["jobType"], processingType="BATCH",
                                        integration="ROAR", jobType="COMMAND")}
        if git.get("commit"):
            url = remote(git) or f"file://{git.get('root')}"
            loc = {"type": "git", "url": url, "version": git["commit"]}
            if git.get("remote"):
                loc["repoUrl"] = remote(git)
            cwd = info.rel(rec.get("cwd") or "")
            if cwd and cwd != rec.get("cwd"):
                loc["path"] = cwd
            if git.get("branch"):
                loc["branch"] = git["branch"]
            job_facets["sourceCodeLocation"] = _facet(OL_FACETS["sourceCodeLocation"], **loc)
        code = [{"path": f["path"], "hash": f.get("hash")} for f in info.inputs
                if f.get("kind") != DATA]
        status = effective_status(rec)
        run = {"runId": run_uuid(info.id), "facets": {
            "processing_engine": _facet(OL_FACETS["processing_engine"], version=roar_version(),
                                        name="roar"),
            RUN_FACET: _facet(RUN_SCHEMA_URL, roarRunId=info.id, name=rec.get("name"),
                              command=command(rec), cwd=rec.get("cwd"),
                              user=rec.get("user"), host=host, status=status,
                              exitCode=rec.get("exit_code"), complete=not info.problems(),
                              incompleteReasons=info.problems(), gitCommit=git.get("commit"),
                              gitDirty=bool(git.get("dirty")),
                              packages=rec.get("packages") or {}, code=code),
        }}
        job = {"namespace": namespace, "name": _job_name(info), "facets": job_facets}
        inputs = [_dataset(f, host) for f in info.inputs if f.get("kind") == DATA]
        outputs = [_dataset(f, host) for f in info.outputs if f.get("kind") == DATA]
        base = {"producer": PRODUCER, "schemaURL": OL_EVENT_SCHEMA, "run": run, "job": job}
        events.append({"eventType": "START", "eventTime": info.started, **base,
                       "inputs": inputs, "outputs": []})
        if status == "running":
            continue
        end = {"finished": "COMPLETE" if rec.get("exit_code") == 0 else "FAIL",
               "interrupted": "ABORT"}.get(status, "FAIL")
        events.append({"eventType": end, "eventTime": info.ended or info.started, **base,
                       "inputs": inputs, "outputs": outputs})
    return events


# -- W3C PROV-JSON -------------------------------------------------------------------------


PROV_PREFIXES = {"roar": "urn:roar:ns#", "run": "urn:roar:run:",
                 "content": f"urn:roar:{HASH_ALGORITHM}:", "user": "urn:roar:user:"}
_QNAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _qname(value: str) -> dict:
    return {"$": value, "type": "prov:QUALIFIED_NAME"}


def prov_document(store: Store, target: tuple[str, str]) -> dict:
    """W3C PROV-JSON of the upstream DAG: entities are file versions (one per
    content hash, with every path it had), activities are runs, agents are the
    users who ran them; used / wasGeneratedBy / wasAssociatedWith link them."""
    g, order = _upstream(store, target)
    command, _ = _redacted(store)
    doc: dict = {"prefix": dict(PROV_PREFIXES), "entity": {}, "activity": {}, "agent": {},
                 "used": {}, "wasGeneratedBy": {}, "wasAssociatedWith": {}}
    for n, attrs in g.nodes(data=True):
        if n[0] != "ver":
            continue
        paths = sorted({p for e in list(g.in_edges(n)) + list(g.out_edges(n))
                        for p in g.edges[e]["paths"]})
        ent = {"prov:type": _qname("roar:FileVersion"), "roar:hash": n[1]}
        if paths:
            ent["prov:label"] = paths[0]
            ent["roar:path"] = paths if len(paths) > 1 else paths[0]
        if attrs.get("size") is not None:
            ent["roar:size"] = attrs["size"]
        if attrs.get("kind"):
            ent["roar:kind"] = attrs["kind"]
        doc["entity"][f"content:{n[1]}"] = ent
    count = 0

    def rel(kind: str, body: dict) -> None:
        nonlocal count
        count += 1
        doc[kind][f"_:{kind[0]}{count}"] = body

    for info in order:
        rec = info.record
        act = f"run:{info.id}"
        a = {"prov:label": lineage.step_key(info), "prov:startTime": info.started,
             "roar:command": " ".join(map(str, command(rec))),
             "roar:status": effective_status(rec), "roar:complete": not info.problems()}
        if info.ended:
            a["prov:endTime"] = info.ended
        if rec.get("exit_code") is not None:
            a["roar:exitCode"] = rec["exit_code"]
        if (rec.get("git") or {}).get("commit"):
            a["roar:commit"] = rec["git"]["commit"]
        doc["activity"][act] = a
        user, host = rec.get("user") or "unknown", rec.get("host") or "unknown"
        agent = "user:" + _QNAME_UNSAFE.sub("_", f"{user}@{host}")
        doc["agent"].setdefault(agent, {"prov:type": _qname("prov:Person"), "roar:user": user,
                                        "roar:host": host})
        rel("wasAssociatedWith", {"prov:activity": act, "prov:agent": agent})
        rn = ("run", info.id)
        for v in g.predecessors(rn):
            rel("used", {"prov:activity": act, "prov:entity": f"content:{v[1]}"})
        for v in g.successors(rn):
            rel("wasGeneratedBy", {"prov:entity": f"content:{v[1]}", "prov:activity": act})
    return {k: v for k, v in doc.items() if v}


# -- Graphviz -------------------------------------------------------------------------------


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def dot(store: Store, target: tuple[str, str]) -> str:
    """The upstream DAG in Graphviz DOT: runs as boxes, file versions as notes,
    the files of one dataset folded into one node."""
    g, order = _upstream(store, target)
    lines = ["digraph roar {", "  rankdir=LR;",
             '  node [fontname="Helvetica", fontsize=10];',
             '  edge [color="#555555", arrowsize=0.7];']
    # the files of a dataset (lineage.dataset_roots) become one node per version
    folded: dict[str, str] = {}  # content hash -> dataset node
    members: dict[str, list[tuple[str, str]]] = {}
    for info in order:
        groups: dict[str, list[dict]] = {}
        roots = lineage.dataset_roots(info)
        for f in info.inputs:
            if f["path"] in roots:
                groups.setdefault(roots[f["path"]], []).append(f)
        for root, files in groups.items():
            if not all(f.get("hash") for f in files):
                continue
            pairs = [(f["path"][len(root) + 1:], f["hash"]) for f in files]
            node = f"ds:{root}:{lineage.dataset_version(pairs)}"
            members[node] = pairs
            for f in files:
                folded.setdefault(f["hash"], node)
    tn = ("run", target[1]) if target[0] == "run" else ("ver", target[1])
    nodes, edges = set(), set()
    for info in order:
        label = "\\n".join(_esc(x) for x in (lineage.step_key(info), info.id[:10],
                                               info.record.get("name")) if x)
        status = effective_status(info.record)
        color = "#dde8f8" if status == "finished" and info.record.get("exit_code") == 0 \
            else "#f8dddd"
        bold = ", penwidth=2" if tn == ("run", info.id) else ""
        lines.append(f'  "run:{info.id}" [shape=box, style="rounded,filled", '
                     f'fillcolor="{color}", label="{label}"{bold}];')
    for n, attrs in g.nodes(data=True):
        if n[0] != "ver":
            continue
        node = folded.get(n[1]) if n != tn else None
        if node is None:
            node = f"ver:{n[1]}"
            paths = sorted({p for e in list(g.in_edges(n)) + list(g.out_edges(n))
                            for p in g.edges[e]["paths"]})
            name = paths[0] if paths else n[1]
            short = order[0].rel(name) if order else name
            style = 'color="#888888", fontcolor="#555555"' if attrs.get("kind") == CODE \
                else 'style="filled", fillcolor="#fff4cc"'
            bold = ", penwidth=2" if n == tn else ""
            lines.append(f'  "{node}" [shape=note, {style}, '
                         f'label="{_esc(short)}\\n{n[1][:12]}"{bold}];')
        elif node not in nodes:
            root = node[3:].rsplit(":", 1)[0]
            short = order[0].rel(root) if order else root
            version = node.rsplit(":", 1)[1]
            lines.append(f'  "{node}" [shape=folder, style="filled", fillcolor="#fff4cc", '
                         f'label="{_esc(short)}/\\n{len(members[node])} files\\n'
                         f'{version[:12]}"];')
        nodes.add(node)
        for r in g.predecessors(n):
            edges.add((f"run:{r[1]}", node))
        for r in g.successors(n):
            edges.add((node, f"run:{r[1]}"))
    for u, v in sorted(edges):
        lines.append(f'  "{_esc(u)}" -> "{_esc(v)}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def svg(dot_text: str) -> str:
    """Render DOT with Graphviz's `dot -Tsvg`."""
    exe = shutil.which("dot")
    if exe is None:
        raise ExportError("SVG needs Graphviz, and `dot` is not on PATH: install graphviz "
                          "(apt-get install graphviz), or use --format dot")
    p = subprocess.run([exe, "-Tsvg"], input=dot_text, capture_output=True, text=True,
                       errors="surrogateescape", timeout=300, check=False)
    if p.returncode != 0:
        raise ExportError(f"dot -Tsvg failed: {p.stderr.strip().splitlines()[-1:]}")
    return p.stdout


def export(store: Store, target: tuple[str, str], fmt: str, namespace: str = "roar") -> str:
    """The text of an export: OpenLineage as JSON lines (one event a line), PROV
    as one JSON document, DOT or SVG."""
    if fmt == "jsonl":  # a session's events and alerts, for a SIEM (roar/query/audit.py)
        if target[0] != "run":
            raise ExportError("--format jsonl exports a session's events: give a run")
        from roar.query.audit import events

        return "".join(json.dumps(e, separators=(",", ":"), ensure_ascii=True) + "\n"
                       for e in events(store, target[1]))
    if fmt == "openlineage":
        return "".join(json.dumps(e, separators=(",", ":")) + "\n"
                       for e in openlineage_events(store, target, namespace))
    if fmt == "prov":
        return json.dumps(prov_document(store, target), indent=2) + "\n"
    if fmt == "dot":
        return dot(store, target)
    if fmt == "svg":
        return svg(dot(store, target))
    raise ExportError(f"unknown format '{fmt}': one of {', '.join(FORMATS)}")

