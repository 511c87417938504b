"""The JSON Schemas of every `--json` document, published in docs/schemas/.

Built, not written by hand: a view's fields are the names it lists in
roar/query/views.py (LOG_FIELDS, SHOW_FIELDS, ...) and each field's schema
comes from its type in roar/record/records.py; the lineage answers (inputs,
outputs, diff) are described with the records they carry (Upstream, Derived,
Change). scripts/schemas.py rewrites docs/schemas/ (write_all) and
tests/test_schemas.py checks the files are current and that real command
output validates against them.
"""

from __future__ import annotations

import json
from pathlib import Path

from roar.query import views
from roar.record import records as R

DRAFT = "https://json-schema.org/draft/2020-12/schema"
BASE = "https://roar.dev/schemas/"  # an identifier, not a location
DOCS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def _strict(schema: dict) -> dict:
    """A view prints exactly its fields: a new key must be listed (and so
    published) before it is printed."""
    return {**schema, "additionalProperties": False}


def _array(item: dict) -> dict:
    return {"type": "array", "items": item}


def _nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


def _file_entry(bytes_key: str) -> dict:
    s = R.view_schema("file", R.FileVersion, [*views.SHOW_FILE_FIELDS, bytes_key])
    s.pop("title")
    return _strict(s)


def _remote_entry() -> dict:
    s = R.view_schema("remote object", R.RemoteObject, list(views.SHOW_REMOTE_FIELDS),
                      {"kind": {"const": "remote"}})
    s.pop("title")
    return _strict(s)


def _show_remote() -> dict:
    version = {"type": "object", "required": ["version", "ident", "written_by", "read_by"],
               "properties": {"version": _nullable({"type": "string"}),
                              "ident": _nullable({"type": "string"}),
                              "written_by": _array({"type": "string"}),
                              "read_by": _array({"type": "string"})}}
    return _strict({"title": "roar show URL --json", "type": "object",
                    "required": ["kind", "url", "versions"],
                    "properties": {"kind": {"const": "remote"}, "url": {"type": "string"},
                                   "versions": _array(_strict(version))}})


def _show_run() -> dict:
    procs = R.view_schema("process", R.Process, list(views.SHOW_PROCESS_FIELDS))
    procs.pop("title")
    s = R.view_schema("roar show RUN --json", R.Run, list(views.SHOW_FIELDS), {
        "status": R.json_schema(R.RunStatus),
        "inputs": _array({"anyOf": [_file_entry("bytes_read"), _remote_entry()]}),
        "outputs": _array({"anyOf": [_file_entry("bytes_written"), _remote_entry()]}),
        "env_outputs": _array(_file_entry("bytes_written")),
        "logs": _array(_strict(R.view_schema("log", R.FileVersion,
                                             list(views.SHOW_LOG_FIELDS)))),
        "processes": _array(_strict(procs)),
        "incomplete_reasons": _array({"type": "string"}),
        "hash_progress": _nullable({"type": "object"}),
        "links": _array({"$ref": "#/$defs/Link"}),
        "alerts": _array({"type": "object", "required": ["rule", "kind", "action", "detail",
                                                           "ts"]}),
    })
    return _strict(s)


def _run_ref() -> dict:
    return {"type": "object", "required": ["run", "paths"],
            "properties": {"run": {"type": "string"}, "paths": _array({"type": "string"})}}


def _show_artifact() -> dict:
    return _strict({
        "title": "roar show PATH|HASH --json", "type": "object",
        "required": ["hash", "path", "paths", "produced_by", "read_by"],
        "properties": {"hash": {"type": "string"}, "path": _nullable({"type": "string"}),
                       "paths": _array({"type": "string"}),
                       "produced_by": _array(_run_ref()), "read_by": _array(_run_ref())}})


def _log() -> dict:
    entry = R.view_schema("run", R.Run, list(views.LOG_FIELDS),
                          {"status": R.json_schema(R.RunStatus)})
    entry.pop("title")
    return {"title": "roar log --json", **_array(_strict(entry))}


def _trace() -> dict:
    proc = R.view_schema("process", R.Process, list(views.TRACE_PROCESS_FIELDS),
                         {"files": _array({"$ref": "#/$defs/ProcessFile"})})
    proc.pop("title")
    return _strict({
        "title": "roar trace RUN --json", "type": "object",
        "required": ["run", "name", "complete", "processes"],
        "properties": {"run": {"type": "string"}, "name": _nullable({"type": "string"}),
                       "complete": _nullable({"type": "boolean"}),
                       "processes": _array(_strict(proc))}})


def _target() -> dict:
    return {"type": "object", "required": ["kind"],
            "properties": {"kind": {"enum": ["run", "artifact"]}}}


def _lineage(title: str, key: str, item: str, *more: str) -> dict:
    return {"title": title, "type": "object",
            "required": ["target", "complete", "reasons", "runs", key, *more],
            "properties": {"target": _target(), "complete": {"type": "boolean"},
                           "reasons": _array({"type": "string"}),
                           "runs": _array({"type": "object", "required": ["id", "depth"]}),
                           **{k: _array({"$ref": f"#/$defs/{item}"}) for k in (key, *more)}}}


def _contains() -> dict:
    s = R.view_schema("roar inputs REF --contains X --json", R.Membership,
                      ["answer", "hash", "path", "evidence", "reasons"],
                      {"answer": {"enum": ["yes", "no", "unknown"]}, "target": _target()})
    return s


def _diff() -> dict:
    side = {"type": "object", "required": ["kind", "complete", "reasons"]}
    return {"title": "roar diff A B --json", "type": "object",
            "required": ["a", "b", "steps", "changes"],
            "properties": {"a": side, "b": side, "steps": _array({"type": "object"}),
                           "changes": _array({"$ref": "#/$defs/Change"})}}


def schemas() -> dict[str, dict]:
    """{file name: schema} of docs/schemas/."""
    docs = {
        "show-run": _show_run(), "show-artifact": _show_artifact(),
        "show-remote": _show_remote(), "log": _log(),
        "trace": _trace(), "inputs": _lineage("roar inputs REF --json", "inputs", "Upstream"),
        "inputs-contains": _contains(), "outputs": _lineage("roar outputs REF --json",
                                                            "outputs", "Derived", "env_outputs"),
        "diff": _diff(), "records": {"title": "roar's stored records"},
    }
    defs = {cls.__name__: R.record_schema(cls)
            for cls in (*R.RECORDS, R.Upstream, R.Derived, R.Change)}
    return {f"{name}.schema.json": {"$schema": DRAFT, "$id": f"{BASE}{name}.schema.json",
                                    **doc, "$defs": defs}
            for name, doc in docs.items()}


def text(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def write_all(directory: Path = DOCS) -> list[Path]:
    """Write every schema under directory; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for name, schema in schemas().items():
        (directory / name).write_text(text(schema))
        out.append(directory / name)
    return out
