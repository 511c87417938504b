"""The typed records roar stores and answers with: Run, FileVersion, Process
(with its ProcessFile entries), Link, and the answers of the lineage queries
(Artifact, Upstream, Derived, Membership, Change); with the codes of
roar/record/codes.py (RunStatus, Role, Reason and its messages, the one
encoder/decoder), re-exported here.

A field of the record is added here, once: the store, the views (`roar show`,
`roar log`, `roar trace` --json), the Python API (`roar.open`) and the JSON
Schemas under docs/schemas/ all read these definitions.

Every record keeps the keys it does not know in `extra`, so a document
written by a newer roar (or a field another feature adds) survives a
decode/encode round trip unchanged. Stores written before this module existed
decode too: missing fields take their defaults, reasons stored as sentences
are read back as codes (codes.from_sentence).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field

from roar.record.codes import (  # noqa: F401 - the codes are part of the records' API
    MESSAGES,
    Reason,
    Role,
    RunStatus,
    decode,
    encode,
    from_sentence,
    message,
    messages,
    reason,
    to_json,
)

# `typing` is imported by the schema functions only (a few ms that the query
# commands need not pay); annotations are strings (from __future__ annotations)
Any = "Any"


# -- the records -----------------------------------------------------------------------


class _Record:
    """Decoding from and encoding to a document, for the dataclasses below:
    fields in declaration order, then the keys kept in `extra`."""

    extra: dict

    @classmethod
    def from_doc(cls, doc: dict):
        names = _field_names(cls)
        known = {k: v for k, v in doc.items() if k in names}
        extra = {k: v for k, v in doc.items() if k not in names}
        obj = cls(**known)
        obj.extra = extra
        obj._decoded()
        return obj

    def _decoded(self) -> None:
        """Turn decoded strings into their types (enums, nested records)."""

    def to_doc(self) -> dict:
        doc = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            doc[f.name] = _plain(getattr(self, f.name))
        doc.update(self.extra)
        return doc


def _field_names(cls) -> frozenset:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls)) - {"extra"}
    return names


_NAMES: dict[type, frozenset] = {}


def _plain(v):
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, _Record):
        return v.to_doc()
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _enum(cls, v):
    if v is None or isinstance(v, cls):
        return v
    try:
        return cls(v)
    except ValueError:
        return v  # a value a newer roar wrote: kept as it is


@dataclass
class FileVersion(_Record):
    """One version of one path as a run used it: (path, content hash), the
    role it played, its kind (data, code, env, pseudo) and the bytes moved."""

    path: str
    role: Role | str
    kind: str  # roar.record.classify: data | code | env | pseudo
    hash: str | None = None  # xxh3-128 hex; None: not hashed (env, pseudo, unverified)
    size: int | None = None
    mode: str | None = None  # "r", "w" or "rw"
    status: str | None = None  # hash status: ok, special, vanished, pending, unverified, ...
    error: str | None = None
    bytes_read: int | None = None  # None: unknown (a call the probes could not size)
    bytes_written: int | None = None
    processes: list[str] = field(default_factory=list)  # Process.key of each user
    extra: dict = field(default_factory=dict)

    def _decoded(self) -> None:
        self.role = _enum(Role, self.role)

    @property
    def bytes(self) -> int | None:
        """Bytes the run moved through this version: read for an input,
        written otherwise."""
        return self.bytes_read if self.role == Role.INPUT else self.bytes_written


@dataclass
class RemoteObject(_Record):
    """One version of a remote object as a run used it (roar/record/remote.py):
    its name (`url`: s3://, gs:// or the URL without credentials), the method,
    the version the server named, and a content hash where the record shows
    one (`hash_source` says how: downloaded-file, uploaded-file)."""

    path: str  # = url: remote objects sit beside files in a run's records
    role: Role | str
    kind: str  # "remote"
    url: str
    method: str | None = None
    version: str | None = None  # "s3:<version id>", "etag:<etag>", "gcs:<generation>", ...
    size: int | None = None
    hash: str | None = None
    hash_source: str | None = None
    endpoint: str | None = None  # scheme://host[:port] the request went to
    store: str | None = None  # s3 | gcs | azure | huggingface | http
    ranges: list[str] = field(default_factory=list)
    status: str | None = None  # ok | multipart
    processes: list[str] = field(default_factory=list)
    bytes_read: int | None = None
    bytes_written: int | None = None
    ident: str | None = None  # index key of url@version
    url_key: str | None = None  # index key of url
    extra: dict = field(default_factory=dict)

    def _decoded(self) -> None:
        self.role = _enum(Role, self.role)


@dataclass
class ProcessFile(_Record):
    """What one process did with one path."""

    path: str
    kind: str
    mode: str | None = None
    bytes_read: int | None = None
    bytes_written: int | None = None
    read_calls: int | None = None
    write_calls: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Process(_Record):
    """One process of a run; `key` is its identity across pid reuse."""

    key: str
    pid: int
    ppid: int | None = None
    parent: str | None = None  # the parent's key
    argv: list[Any] = field(default_factory=list)  # secrets stored as {"redacted": ...}
    exe: str | None = None
    cwd: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    threads: int = 1
    execs: int | None = None
    argv_incomplete: bool | None = None
    files: list[ProcessFile] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def _decoded(self) -> None:
        self.files = [f if isinstance(f, ProcessFile) else ProcessFile.from_doc(f)
                      for f in self.files]


@dataclass
class Link(_Record):
    """A run's link to an experiment tracker (W&B, MLflow, TensorBoard,
    Hugging Face...), found in what it wrote or printed."""

    tracker: str
    id: str | None = None
    url: str | None = None
    project: str | None = None
    path: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Run(_Record):
    """One `roar run`: the command, where and by whom it ran, how it ended and
    whether its capture is complete (and if not, why)."""

    id: str  # ULID-like: time-ordered, unique across hosts
    status: RunStatus | str = RunStatus.RUNNING
    name: str | None = None
    command: list[Any] = field(default_factory=list)
    command_redacted: list[Any] | None = None
    cwd: str | None = None
    user: str | None = None
    uid: int | None = None
    host: str | None = None
    boot_id: str | None = None
    kernel: str | None = None
    machine: str | None = None
    os: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    git: dict | None = None
    env: dict = field(default_factory=dict)
    mode: str | None = None  # daemon | embedded
    complete: bool | None = None
    reasons: list[dict] = field(default_factory=list)  # {"code": Reason, **params}
    lost_events: int | None = None
    io_uring: bool | None = None
    connects: list[Any] = field(default_factory=list)
    remote: dict | None = None  # {objects, telemetry, uninspected} (record/remote.py)
    packages: dict = field(default_factory=dict)  # name -> version, imported by the run
    installed: dict = field(default_factory=dict)  # name -> version, installed by the run
    counts: dict | None = None
    gpus: list[dict] | None = None
    request: str | None = None
    dataset_mismatch: bool | None = None
    dataset_check: list[dict] | None = None
    links: list[Link] = field(default_factory=list)
    reproduces: str | None = None
    group: dict | None = None  # the distributed job (roar/record/groups.py)
    cgroup: dict | None = None  # where the run cgroup was made (capture/cgroups.Placement)
    namespaces: dict | None = None  # the workload's mount/pid namespaces and root
    # the user's classification rules in force (roar/record/classify.py Rule.to_doc)
    classify_rules: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_doc(cls, doc: dict) -> Run:
        doc = dict(doc)
        sentences = doc.pop("incomplete_reasons", None)
        run = super().from_doc(doc)
        if not run.reasons and sentences:  # stored before reasons had codes
            run.reasons = [from_sentence(s) for s in sentences]
        return run

    def _decoded(self) -> None:
        self.status = _enum(RunStatus, self.status)
        self.links = [x if isinstance(x, Link) else Link.from_doc(x) for x in self.links or []]
        self.env = self.env or {}
        self.packages = self.packages or {}
        self.installed = self.installed or {}
        self.classify_rules = self.classify_rules or []
        self.connects = self.connects or []
        self.reasons = self.reasons or []

    @property
    def incomplete_reasons(self) -> list[str]:
        return messages(self.reasons)

    def to_doc(self) -> dict:
        doc = super().to_doc()
        # the sentences, beside the codes: what `roar show --json` has always
        # printed, and what an older roar reading this store shows
        doc["incomplete_reasons"] = self.incomplete_reasons
        return doc


# -- JSON Schema, from the types -----------------------------------------------------------


def _hints(cls) -> dict:
    import typing

    return typing.get_type_hints(cls, {**globals(), "Any": typing.Any})


def json_schema(tp) -> dict:
    """The JSON Schema of a type used in the records above."""
    import types
    import typing

    if isinstance(tp, str):
        tp = eval(tp, {**globals(), "Any": typing.Any})  # noqa: S307 - our own annotations
    Any = typing.Any  # noqa: N806
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        opts = [json_schema(a) for a in typing.get_args(tp)]
        return {"anyOf": opts}
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return {"type": "array", "items": json_schema(item)}
    if tp is Any:
        return {}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"type": "string", "enum": [m.value for m in tp]}
    if isinstance(tp, type) and issubclass(tp, _Record):
        return {"$ref": f"#/$defs/{tp.__name__}"}
    simple = {str: "string", int: "integer", bool: "boolean", float: "number",
              dict: "object", type(None): "null", list: "array"}
    return {"type": simple[tp]}


def record_schema(cls) -> dict:
    """The schema of a record's document: every field, and additional keys
    allowed (documents keep keys a newer roar adds)."""
    hints = _hints(cls)
    props = {f.name: json_schema(hints[f.name]) for f in dataclasses.fields(cls)
             if f.name != "extra"}
    required = [f.name for f in dataclasses.fields(cls) if f.name != "extra"
                and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if cls is Run:
        props["incomplete_reasons"] = {"type": "array", "items": {"type": "string"}}
    return {"type": "object", "properties": props, "required": required}


RECORDS = (Run, FileVersion, RemoteObject, Process, ProcessFile, Link)  # stored records (schemas)


def defs() -> dict:
    return {cls.__name__: record_schema(cls) for cls in RECORDS}


def view_schema(title: str, cls, names: list[str], overrides: dict | None = None,
                required: bool = True) -> dict:
    """The schema of a view that shows some of a record's fields (e.g. `roar
    log --json` shows eight of Run's): each field's schema comes from the type."""
    hints = _hints(cls)
    props = {n: json_schema(hints[n]) for n in names if n in hints}
    props.update(overrides or {})
    out = {"title": title, "type": "object", "properties": props}
    if required:
        out["required"] = list(props)
    return out


# -- answers of the lineage queries (the Python API's return types) ------------------------


@dataclass
class Artifact(_Record):
    """A content hash as the store knows it: the paths it was seen under and
    the runs that wrote and read it (`roar show HASH|PATH`)."""

    hash: str
    paths: list[str] = field(default_factory=list)
    produced_by: list[str] = field(default_factory=list)  # run ids
    read_by: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


@dataclass
class Upstream(_Record):
    """An input version that fed a target, through any number of runs
    (`roar inputs`): depth 1 is read by the target run itself."""

    path: str
    hash: str | None
    depth: int
    kind: str | None = None
    size: int | None = None
    produced_by: str | None = None  # the run that wrote it, when recorded
    paths: list[str] = field(default_factory=list)
    read_by: list[str] = field(default_factory=list)
    dataset: str | None = None  # the dataset directory it belongs to
    status: str | None = None  # hash status, when it has no verified hash
    url: str | None = None  # a remote object's name (path is the same) and
    version: str | None = None  # its version, when listed by url@version
    extra: dict = field(default_factory=dict)


@dataclass
class Derived(_Record):
    """A version derived from a target (`roar outputs`): written by `run`."""

    path: str
    hash: str | None
    run: str
    depth: int
    kind: str | None = None
    size: int | None = None
    paths: list[str] = field(default_factory=list)
    status: str | None = None
    url: str | None = None  # a remote object's name and version (roar/record/remote.py)
    version: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Membership(_Record):
    """Was this content read upstream of a target? yes / no / unknown; unknown
    (never no) when the capture upstream is incomplete, with its reasons."""

    answer: str
    hash: str
    path: str | None = None
    evidence: list[dict] = field(default_factory=list)  # {run, path, depth}
    reasons: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


@dataclass
class Change(_Record):
    """One difference between two runs' upstream DAGs (`roar diff`)."""

    kind: str  # data, args, code, command, exit, packages, env, step_added, step_removed
    key: Any
    step: str
    a: Any = None
    b: Any = None
    extra: dict = field(default_factory=dict)
