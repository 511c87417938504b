"""Training requests: a run filed before it starts (datasets pinned by content,
compute, budget, rationale), reviewed by a policy or a person, gated at
`roar run --request`, and resolved with the run's outputs, cost and a check
of the dataset versions it actually read.

Requests live in the store's `requests` sub-database, keyed by a ULID; the
content of a directory dataset filed by a request (relative path -> content
hash) is kept once per version under `dataset:<version hash>`. The policy is
TOML: `$ROAR_HOME/policy.toml` for the store, optionally tightened (never
loosened) by `<git root>/.roar/policy.toml` of the repo a request or run
comes from. Reviewer identity is the OS user: via roard's SO_PEERCRED when a
daemon runs, the process's own uid otherwise.
"""

from __future__ import annotations

import fnmatch
import glob
import grp
import itertools
import json
import os
import pwd
import shlex
import stat
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import lmdb

from roar.capture import protocol
from roar.query.views import effective_status
from roar.record import context
from roar.record.hasher import OK, hash_path
from roar.record.ids import hostname, new_run_id, now_iso
from roar.record.store import Store, StoreError
from roar.requests.policyfiles import POLICY_FILE, REPO_POLICY

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

STATUSES = ("pending", "approved", "denied", "running", "resolved")
MANIFEST_PREFIX = "dataset:"
MAX_TEXT = 4096


class RequestError(Exception):
    """A request cannot be filed, reviewed or used; the message says why."""


class WaitTimeout(Exception):
    pass


# -- policy --------------------------------------------------------------------

NUMBER = (int, float)
SCHEMA = {
    "cost": {"currency": str, "default_gpu_type": str, "rates": dict},
    "auto_approve": {"max_cost": NUMBER, "max_gpus": int, "max_hours": NUMBER},
    "review": {"users": list, "groups": list, "approvals": int},
    "datasets": {"allowed": list, "review": list},
    "runs": {"require_request": ("never", "above_gpus", "always"), "above_gpus": int},
    "budget": {"warn_at": NUMBER, "on_exceed": ("warn", "stop")},
    "duplicates": {"action": ("ignore", "warn", "refuse")},
}
STORE_ONLY = ("cost", "review")  # a repo policy may tighten, never name reviewers or prices

POLICY_TEMPLATE = """\
# roar training-request policy for this store (see docs/requests.md).
# A repo may add .roar/policy.toml to tighten it; it can never loosen it.

[cost]
currency = "USD"
default_gpu_type = "a100"
[cost.rates]            # price of one GPU-hour, per GPU type
a100 = 2.50
h100 = 4.00

[auto_approve]          # requests within every limit are approved at once;
max_cost = 20.0         # without this section every request waits for review
max_gpus = 1
max_hours = 8

[review]
users = []              # OS user names who may approve or deny
groups = []             # OS groups whose members may approve or deny
approvals = 1           # distinct approvals a request needs

[datasets]
# allowed = ["/data/*"]     # requests for other paths are refused at filing
review = []                 # requests touching these always wait for a person

[runs]
require_request = "never"   # "never" | "always" | "above_gpus"
above_gpus = 0              # with "above_gpus": runs seeing more GPUs need a request

[budget]
warn_at = 0.8               # warn when this fraction of the GPU-hours is used
on_exceed = "stop"          # "stop" (SIGTERM the run) or "warn"

[duplicates]
action = "warn"             # near-duplicate requests: "ignore" | "warn" | "refuse"
"""

STRICTNESS = {"require_request": SCHEMA["runs"]["require_request"],
              "on_exceed": SCHEMA["budget"]["on_exceed"],
              "duplicates": SCHEMA["duplicates"]["action"]}


@dataclass
class Policy:
    sources: list[str] = field(default_factory=list)
    currency: str = "USD"
    default_gpu_type: str | None = None
    rates: dict[str, float] = field(default_factory=dict)
    auto_approve: dict[str, float] | None = None  # None: nothing is approved by policy
    reviewer_users: list[str] = field(default_factory=list)
    reviewer_groups: list[str] = field(default_factory=list)
    approvals: int = 1
    datasets_allowed: list[list[str]] = field(default_factory=list)  # every list must match
    datasets_review: list[str] = field(default_factory=list)
    require_request: str = "never"
    above_gpus: int = 0
    warn_at: float = 0.8
    on_exceed: str = "stop"
    duplicates: str = "warn"


def _read_policy_file(path: Path) -> dict | None:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return None
    except tomllib.TOMLDecodeError as e:
        raise RequestError(f"policy {path}: {e}") from None
    except OSError as e:
        raise RequestError(f"policy {path}: cannot read it: {e.strerror}") from None
    for section, body in data.items():
        if section not in SCHEMA:
            raise RequestError(f"policy {path}: unknown section [{section}] "
                               f"(known: {', '.join(SCHEMA)})")
        if not isinstance(body, dict):
            raise RequestError(f"policy {path}: {section} must be a [section]")
        for key, value in body.items():
            want = SCHEMA[section].get(key)
            if want is None:
                raise RequestError(f"policy {path}: unknown key {section}.{key}")
            if isinstance(want, tuple) and all(isinstance(w, str) for w in want):
                if value not in want:
                    raise RequestError(f"policy {path}: {section}.{key} must be one of "
                                       f"{', '.join(want)}")
            elif not isinstance(value, want) or isinstance(value, bool):
                raise RequestError(f"policy {path}: {section}.{key} has the wrong type")
            if want is list and not all(isinstance(v, str) for v in value):
                raise RequestError(f"policy {path}: {section}.{key} must be a list of strings")
    for gpu, rate in data.get("cost", {}).get("rates", {}).items():
        if not isinstance(rate, NUMBER) or isinstance(rate, bool) or rate < 0:
            raise RequestError(f"policy {path}: cost.rates.{gpu} must be a number >= 0")
    return data


def _patterns(values: list[str], base: Path) -> list[str]:
    return [v if os.path.isabs(v) else str(base / v) for v in values]


def load_policy(home: Path, repo_root: str | None = None) -> Policy:
    """The store's policy, tightened by the repo's when there is one."""
    policy = Policy()
    store_path = Path(home) / POLICY_FILE
    data = _read_policy_file(store_path)
    if data is not None:
        policy.sources.append(str(store_path))
        cost = data.get("cost", {})
        policy.currency = cost.get("currency", policy.currency)
        policy.default_gpu_type = cost.get("default_gpu_type")
        policy.rates = {k: float(v) for k, v in cost.get("rates", {}).items()}
        if "auto_approve" in data:
            policy.auto_approve = dict(data["auto_approve"])
        review = data.get("review", {})
        policy.reviewer_users = list(review.get("users", []))
        policy.reviewer_groups = list(review.get("groups", []))
        policy.approvals = max(1, review.get("approvals", 1))
        _apply(policy, data, store_path.parent, tighten=False)
    if repo_root:
        repo_path = Path(repo_root) / REPO_POLICY
        repo = _read_policy_file(repo_path)
        if repo is not None:
            for section in STORE_ONLY:
                if section in repo:
                    raise RequestError(f"policy {repo_path}: [{section}] may only be set in the "
                                       f"store policy ({store_path})")
            policy.sources.append(str(repo_path))
            _apply(policy, repo, Path(repo_root), tighten=True)
    return policy


def _stricter(kind: str, a: str, b: str) -> str:
    order = STRICTNESS[kind]
    return max(a, b, key=order.index)


def _apply(policy: Policy, data: dict, base: Path, tighten: bool) -> None:
    """Apply one policy file's limits. The store's are taken as written; a
    repo's are merged so that the stricter of each wins: it can only tighten."""
    limits = data.get("auto_approve")
    if limits is not None and policy.auto_approve is not None:
        for key, value in limits.items():
            old = policy.auto_approve.get(key)
            policy.auto_approve[key] = value if old is None else min(old, value)
    ds = data.get("datasets", {})
    if "allowed" in ds:
        policy.datasets_allowed.append(_patterns(ds["allowed"], base))
    policy.datasets_review += _patterns(ds.get("review", []), base)

    def merge(kind: str, old, new):
        if new is None:
            return old
        return _stricter(kind, old, new) if tighten else new

    runs = data.get("runs", {})
    before = policy.require_request
    policy.require_request = merge("require_request", before, runs.get("require_request"))
    if runs.get("require_request") == "above_gpus":
        n = runs.get("above_gpus", 0)
        policy.above_gpus = min(policy.above_gpus, n) if tighten and before == "above_gpus" \
            else n
    budget = data.get("budget", {})
    if "warn_at" in budget:
        warn_at = float(budget["warn_at"])
        policy.warn_at = min(policy.warn_at, warn_at) if tighten else warn_at
    policy.on_exceed = merge("on_exceed", policy.on_exceed, budget.get("on_exceed"))
    policy.duplicates = merge("duplicates", policy.duplicates,
                              data.get("duplicates", {}).get("action"))


def _matches(path: str, patterns: list[str]) -> bool:
    for pat in patterns:
        pat = pat.rstrip("/") or "/"
        if fnmatch.fnmatchcase(path, pat) or path.startswith(pat + "/"):
            return True
    return False


def reviewers_text(policy: Policy) -> str:
    who = [*policy.reviewer_users, *(f"group {g}" for g in policy.reviewer_groups)]
    return ", ".join(who) if who else "nobody (no [review] users or groups in the policy)"


def user_identity(uid: int) -> tuple[str, set[str]]:
    """The OS user name of uid and the names of its groups (group database)."""
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return str(uid), set()
    names = set()
    for gid in os.getgrouplist(pw.pw_name, pw.pw_gid):
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            pass
    return pw.pw_name, names


def visible_gpus() -> int:
    """GPUs a run started now could use: CUDA_VISIBLE_DEVICES when set, else
    the NVIDIA device nodes."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        env = env.strip()
        if env in ("", "-1", "NoDevFiles"):
            return 0
        return len([d for d in env.split(",") if d.strip()])
    return len(glob.glob("/dev/nvidia[0-9]*"))


# -- datasets ----------------------------------------------------------------------


@dataclass
class DatasetVersion:
    path: str
    hash: str
    files: dict[str, str] | None  # relative path -> content hash; None for a single file


def dataset_version(path: str, store: Store | None = None) -> DatasetVersion:
    """Pin a dataset by content: a file's own hash, or for a directory the
    dataset version `roar inputs` reports too (lineage.dataset_version)."""
    path = os.path.abspath(path)
    lookup = store.cached_hash_key if store is not None else None
    fresh: list[tuple[bytes, str]] = []

    def content(p: str) -> str:
        res, key = hash_path(p, lookup)
        if res.status != OK:
            why = f" ({res.error})" if res.error else ""
            raise RequestError(f"cannot pin dataset {path}: {p} is {res.status}{why}")
        if key:
            fresh.append((key, res.hash))
        return res.hash

    if os.path.isdir(path):
        files: dict[str, str] | None = {}

        def fail(err: OSError):
            raise RequestError(f"cannot pin dataset {path}: {err.filename}: {err.strerror}")

        for root, dirs, names in os.walk(path, onerror=fail):
            dirs.sort()
            for name in sorted(names):
                full = os.path.join(root, name)
                try:
                    regular = stat.S_ISREG(os.stat(full).st_mode)
                except OSError:
                    regular = False  # a dangling link or a special file holds no data
                if regular:
                    files[os.path.relpath(full, path)] = content(full)
        if not files:
            raise RequestError(f"dataset {path} holds no files")
        from roar.query.lineage import dataset_version as version_of  # lineage: only when filing

        version = version_of(files.items())
    elif os.path.exists(path):
        files, version = None, content(path)
    else:
        raise RequestError(f"dataset {path} does not exist")
    if store is not None and fresh:
        store.cache_hashes(fresh)
    return DatasetVersion(path, version, files)


def check_datasets(datasets: list[dict], manifests: dict[str, dict[str, str]],
                   files: list[dict], complete: bool) -> tuple[list[dict], bool]:
    """Compare the inputs a run read with the dataset versions filed.

    Per dataset: `match` (everything read under its path is the filed
    content, or the filed content was read from another path), `changed`
    (some file read under it differs from the filed version), `not_read`
    (nothing of it was read: the run used some other data), `unknown` (a
    read file has no verified hash, or the run is incomplete and read
    nothing of it). Returns the checks and whether any is a mismatch."""
    inputs = [f for f in files if f.get("role") == "input"]
    read_hashes = {f["hash"] for f in inputs if f.get("hash")}
    checks = []
    for ds in datasets:
        manifest = manifests.get(ds["hash"])
        root = ds["path"].rstrip("/")
        if manifest is None:
            under = [(f, ds["hash"]) for f in inputs if f["path"] == root]
            filed = {ds["hash"]}
        else:
            under = [(f, manifest.get(f["path"][len(root) + 1:])) for f in inputs
                     if f["path"].startswith(root + "/")]
            filed = set(manifest.values())
        changed = [{"path": f["path"], "hash": f["hash"], "filed_hash": want}
                   for f, want in under if f.get("hash") and f["hash"] != want]
        unverified = [f["path"] for f, _ in under if not f.get("hash")]
        if changed:
            status = "changed"
        elif unverified:
            status = "unknown"
        elif under or filed & read_hashes:
            status = "match"
        else:
            status = "not_read" if complete else "unknown"
        checks.append({"path": ds["path"], "hash": ds["hash"], "status": status,
                       "files_read": len(under), "changed": changed[:20],
                       "changed_count": len(changed)})
    return checks, any(c["status"] in ("changed", "not_read") for c in checks)


def _manifests(store: Store, datasets: list[dict]) -> dict[str, dict[str, str]]:
    out = {}
    for ds in datasets:
        doc = store.get_doc("requests", MANIFEST_PREFIX + ds["hash"])
        if doc is not None:
            out[ds["hash"]] = doc["files"]
    return out


# -- the request documents -----------------------------------------------------------

PUBLIC_KEYS = ("id", "status", "requester", "datasets", "gpus", "gpu_type", "hours",
               "estimated_cost", "rationale", "reviews", "run", "cost", "outputs",
               "dataset_mismatch")
EXTRA_KEYS = ("created_at", "currency", "command", "commit", "approvals_needed", "gpu_hours",
              "duration_hours", "dataset_check", "duplicates")


def public(doc: dict) -> dict:
    """The --json shape of a request."""
    out = {k: doc.get(k) for k in PUBLIC_KEYS}
    out["datasets"] = [{"path": d["path"], "hash": d["hash"]} for d in doc["datasets"]]
    out.update({k: doc.get(k) for k in EXTRA_KEYS})
    return out


def iter_requests(store: Store):
    for key, doc in store.iter_docs("requests"):
        if not key.startswith(MANIFEST_PREFIX):
            yield doc


def find(store: Store, ref: str) -> dict:
    """The request with this id or unique id prefix."""
    p = ref.strip().upper()
    if not p:
        raise RequestError("empty request id")
    doc = store.get_doc("requests", p)
    if doc is not None:
        return doc
    found = [d for d in iter_requests(store) if d["id"].startswith(p)]
    if not found:
        raise RequestError(f"no training request '{ref}' in {store.home}")
    if len(found) > 1:
        raise RequestError(f"request prefix '{ref}' is ambiguous: give more characters")
    return found[0]


def _update(store: Store, request_id: str, change) -> dict:
    """Read-modify-write one request in a single write transaction, so two
    reviewers (or a reviewer and a run) never overwrite each other."""
    db = store.dbs["requests"]
    key = request_id.encode()

    def fn(txn):
        doc = json.loads(bytes(txn.get(key, db=db)))
        change(doc)
        txn.put(key, json.dumps(doc, separators=(",", ":")).encode(), db=db)
        return doc

    return store.write(fn)


def estimate_cost(policy: Policy, gpus: int, gpu_type: str | None,
                  hours: float) -> tuple[str | None, float | None, float | None]:
    """(gpu type, rate per GPU-hour, estimated cost); cost None when no rate is known."""
    if gpus == 0:
        return gpu_type, 0.0, 0.0
    gpu_type = gpu_type or policy.default_gpu_type
    if not policy.rates:
        return gpu_type, None, None
    if gpu_type is None:
        raise RequestError(f"give --gpu-type (one of: {', '.join(sorted(policy.rates))})")
    if gpu_type not in policy.rates:
        raise RequestError(f"no rate for GPU type '{gpu_type}' in the policy (known: "
                           f"{', '.join(sorted(policy.rates))})")
    rate = policy.rates[gpu_type]
    return gpu_type, rate, round(gpus * hours * rate, 4)


def auto_approval(policy: Policy, doc: dict) -> list[str]:
    """Why the policy cannot approve this request by itself (empty: it can)."""
    limits = policy.auto_approve
    if limits is None:
        return ["the policy has no [auto_approve] limits"]
    why = []
    cost = doc["estimated_cost"]
    if "max_cost" in limits:
        if cost is None:
            why.append("its cost is unknown (no rate in the policy)")
        elif cost > limits["max_cost"]:
            why.append(f"cost {cost:g} {doc['currency']} > {limits['max_cost']:g}")
    if "max_gpus" in limits and doc["gpus"] > limits["max_gpus"]:
        why.append(f"{doc['gpus']} GPUs > {limits['max_gpus']}")
    if "max_hours" in limits and doc["hours"] > limits["max_hours"]:
        why.append(f"{doc['hours']:g} h > {limits['max_hours']:g}")
    for ds in doc["datasets"]:
        if _matches(ds["path"], policy.datasets_review) or \
                _matches(os.path.realpath(ds["path"]), policy.datasets_review):
            why.append(f"dataset {ds['path']} always needs review")
    return why


def _dup_key(datasets: list[dict], commit: str | None, command: list[str] | None):
    return (tuple(sorted(d["hash"] for d in datasets)), commit,
            tuple(command) if command else None)


def find_duplicates(store: Store, datasets: list[dict], manifests: dict[str, dict[str, str]],
                    commit: str | None, command: list[str] | None) -> list[dict]:
    """Earlier requests and recorded runs with the same dataset versions, commit
    and command."""
    key = _dup_key(datasets, commit, command)
    out = [{"kind": "request", "id": d["id"], "status": d["status"],
            "requester": d["requester"], "created_at": d["created_at"]}
           for d in iter_requests(store)
           if _dup_key(d["datasets"], d.get("commit"), d.get("command")) == key]
    if not command:
        return out
    candidates: set[str] | None = None
    for ds in datasets:
        hashes = set(manifests[ds["hash"]].values()) if ds["hash"] in manifests else {ds["hash"]}
        readers = {rid for rows in store.readers_of_many(hashes).values() for rid, _ in rows}
        candidates = readers if candidates is None else candidates & readers
    for rid in sorted(candidates or ()):
        run = store.get_run(rid) or {}
        if run.get("command") != list(command) or (run.get("git") or {}).get("commit") != commit:
            continue
        checks, mismatch = check_datasets(datasets, manifests, store.run_files(rid), True)
        if not mismatch and all(c["status"] == "match" for c in checks):
            out.append({"kind": "run", "id": rid, "status": run.get("status"),
                        "requester": run.get("user"), "created_at": run.get("started_at")})
    return out


def create(store: Store, datasets: list[str], gpus: int, hours: float, rationale: str,
           gpu_type: str | None = None, command: list[str] | None = None,
           cwd: str | None = None) -> tuple[dict, list[str]]:
    """File a request; returns it and the warnings to show (near-duplicates)."""
    cwd = cwd or os.getcwd()
    if gpus < 0:
        raise RequestError("--gpus must be 0 or more")
    if not hours > 0:
        raise RequestError("--hours must be more than 0")
    if not rationale.strip():
        raise RequestError("--rationale must say why this run is needed")
    if len(rationale) > MAX_TEXT:
        raise RequestError(f"--rationale is longer than {MAX_TEXT} characters")
    if not datasets:
        raise RequestError("give at least one --dataset")
    git = context.git_state(cwd, allow_dirty=True)
    policy = load_policy(store.home, git["root"] if git else None)
    gpu_type, rate, cost = estimate_cost(policy, gpus, gpu_type, hours)
    for path in datasets:
        full = os.path.abspath(os.path.join(cwd, path))
        for allowed in policy.datasets_allowed:
            # a link inside an allowed directory must not lead out of it
            if not (_matches(full, allowed) and _matches(os.path.realpath(full), allowed)):
                raise RequestError(f"dataset {full} is not allowed by the policy "
                                   f"({', '.join(policy.sources)})")
    versions = [dataset_version(os.path.join(cwd, p), store) for p in datasets]
    filed = [{"path": v.path, "hash": v.hash, "files": None if v.files is None else len(v.files)}
             for v in versions]
    manifests = {v.hash: v.files for v in versions if v.files is not None}
    commit = git["commit"] if git else None
    uid = os.getuid()
    name, _ = user_identity(uid)
    doc = {
        "id": new_run_id(), "status": "pending", "requester": name, "requester_uid": uid,
        "host": hostname(), "created_at": now_iso(), "datasets": filed, "gpus": gpus,
        "gpu_type": gpu_type, "hours": hours, "rate": rate, "currency": policy.currency,
        "estimated_cost": cost, "rationale": rationale, "command": command or None,
        "cwd": cwd, "commit": commit, "dirty": bool(git and git["dirty"]),
        "approvals_needed": policy.approvals, "reviews": [],
        "run": None, "cost": None, "gpu_hours": None, "duration_hours": None, "outputs": [],
        "dataset_mismatch": False, "dataset_check": None, "duplicates": [],
        "policy": policy.sources,
    }
    warnings = []
    if policy.duplicates != "ignore":
        dups = find_duplicates(store, filed, manifests, commit, command)
        if dups:
            named = "; ".join(f"{d['kind']} {d['id']} ({d['status']}, {d['requester']}, "
                              f"{(d['created_at'] or '')[:19]})" for d in dups[:5])
            line = (f"near-duplicate of {named}: same dataset versions, commit and command")
            if policy.duplicates == "refuse":
                raise RequestError(f"refused by policy: {line}")
            warnings.append(line)
        doc["duplicates"] = dups
    not_auto = auto_approval(policy, doc)
    if not not_auto:
        doc["status"] = "approved"
        doc["reviews"].append({"by": "policy", "decision": "approved", "at": doc["created_at"],
                               "via": "policy", "comment": "within the auto-approve limits"})
    else:
        doc["waiting_because"] = not_auto

    def fn(txn):
        for h, files in manifests.items():
            key = (MANIFEST_PREFIX + h).encode()
            if txn.get(key, db=store.dbs["requests"]) is None:
                txn.put(key, json.dumps({"files": files}).encode(), db=store.dbs["requests"])
        txn.put(doc["id"].encode(), json.dumps(doc, separators=(",", ":")).encode(),
                db=store.dbs["requests"])

    store.write(fn)
    return doc, warnings


# -- review --------------------------------------------------------------------------


def review(store: Store, ref: str, decision: str, text: str | None, uid: int,
           via: str) -> dict:
    """Approve or deny as OS user `uid`, checked against the store's policy."""
    if decision not in ("approve", "deny"):
        raise RequestError(f"unknown decision '{decision}'")
    if text and len(text) > MAX_TEXT:
        raise RequestError(f"the comment is longer than {MAX_TEXT} characters")
    if decision == "deny" and not (text or "").strip():
        raise RequestError("a denial needs --reason")
    policy = load_policy(store.home)
    name, groups = user_identity(uid)
    doc = find(store, ref)
    if uid == doc["requester_uid"] or name == doc["requester"]:
        raise RequestError(f"{name} filed request {doc['id']}: a requester can never review "
                           f"their own request")
    if name not in policy.reviewer_users and not groups & set(policy.reviewer_groups):
        raise RequestError(f"{name} may not review requests in {store.home} (reviewers: "
                           f"{reviewers_text(policy)}; set in {store.home / POLICY_FILE})")

    def change(doc):
        status = doc["status"]
        if decision == "approve" and status != "pending":
            raise RequestError(f"request {doc['id']} is {status}, not pending")
        if decision == "deny" and status not in ("pending", "approved"):
            raise RequestError(f"request {doc['id']} is {status}: it can no longer be denied")
        if decision == "approve" and any(r["by"] == name and r["decision"] == "approved"
                                         for r in doc["reviews"]):
            raise RequestError(f"{name} already approved request {doc['id']}")
        verdict = {"approve": "approved", "deny": "denied"}[decision]
        doc["reviews"].append({"by": name, "decision": verdict, "at": now_iso(),
                               "via": via, "comment": text or None})
        if decision == "deny":
            doc["status"] = "denied"
        else:
            people = {r["by"] for r in doc["reviews"]
                      if r["decision"] == "approved" and r["via"] != "policy"}
            if len(people) >= max(doc.get("approvals_needed", 1), policy.approvals):
                doc["status"] = "approved"
                doc.pop("waiting_because", None)

    return _update(store, doc["id"], change)


def review_via_daemon(home: Path, ref: str, decision: str, text: str | None) -> dict | None:
    """Ask roard to record the review under the caller's uid, as the kernel
    tells it (SO_PEERCRED). None when no daemon answers or it predates reviews."""
    try:
        reply = protocol.ask({"op": "review", "home": str(Path(home).absolute()), "id": ref,
                              "decision": decision, "text": text})
    except protocol.NoDaemon:
        return None
    except protocol.ProtocolError as e:
        raise RequestError(str(e)) from None
    if reply.get("ok"):
        return reply["request"]
    if "unknown op" in reply.get("error", ""):
        return None
    raise RequestError(reply.get("error", "roard refused the review"))


def daemon_review(req: dict, peer_uid: int, timeout: float = 60.0) -> dict:
    """roard's `review` op. The review is written by a forked child that has
    dropped to the caller's uid and groups: roard never opens a store path a
    client named with root's rights."""
    from roar.capture.privileges import run_as

    home, ref, decision, text = req.get("home"), req.get("id"), req.get("decision"), \
        req.get("text")
    if not (isinstance(home, str) and os.path.isabs(home) and isinstance(ref, str)
            and decision in ("approve", "deny") and (text is None or isinstance(text, str))):
        return {"ok": False, "error": "review needs an absolute home, an id, a decision "
                                      "(approve|deny) and an optional text"}

    def write_review(_):
        try:
            with Store(home, readonly=True) as store:
                return {"ok": True, "request": review(store, ref, decision, text, peer_uid,
                                                      "roard")}
        except (RequestError, StoreError) as e:
            return {"ok": False, "error": str(e)}

    return run_as(peer_uid, write_review, timeout=timeout)


def wait(store: Store, ref: str, until: str = "decided", timeout: float | None = None,
         interval: float = 1.0) -> dict:
    """Block until the request is decided (approved or denied) or resolved."""
    done = {"decided": ("approved", "denied", "running", "resolved"),
            "resolved": ("denied", "resolved")}[until]
    deadline = None if timeout is None else time.monotonic() + timeout
    request_id = find(store, ref)["id"]
    while True:
        try:
            doc = store.get_doc("requests", request_id)
        except lmdb.MapResizedError:  # a writer grew the map during a long wait
            store.env.set_mapsize(0)
            continue
        if doc["status"] in done:
            return doc
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeout(f"request {request_id} is still {doc['status']} after "
                              f"{timeout:g}s")
        time.sleep(interval if deadline is None else
                   max(0.0, min(interval, deadline - time.monotonic())))


# -- store setup -----------------------------------------------------------------------


def init_store(home: Path, group: str | None = None) -> list[str]:
    """Create the store and a starter policy; with a group, make it a team
    store its members can all write (setgid + sticky directories, group-rw
    LMDB files), while the policy stays writable by its owner only."""
    done = []
    home = Path(home)
    Store(home).close()
    policy = home / POLICY_FILE
    if not policy.exists():
        policy.write_text(POLICY_TEMPLATE)
        os.chmod(policy, 0o644)
        done.append(f"wrote a starter policy to {policy}")
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise RequestError(f"no group '{group}'") from None
        try:
            for d in (home, home / "store"):
                os.chown(d, -1, gid)
                os.chmod(d, 0o3770)
            for f in (home / "store").iterdir():
                os.chown(f, -1, gid)
                os.chmod(f, 0o660)
            os.chown(policy, -1, gid)
        except PermissionError as e:
            raise RequestError(f"cannot share {e.filename} with group {group}: permission "
                               f"denied (run as its owner or root)") from None
        done.append(f"{home} is now a team store for group {group}")
    return done


# -- the gate `roar run --request` passes through ------------------------------------


def _hours_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    a = datetime.fromisoformat(start.replace("Z", "+00:00"))
    b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    return max(0.0, (b - a).total_seconds() / 3600)


class Gate:
    """One approved request's hold on one run: budget while it runs,
    resolution after. It prints nothing: what the user should read (approval,
    warnings, budget, resolution) is queued in `messages`, and `roar run`
    prints them (take_messages) as they come."""

    def __init__(self, store: Store, doc: dict, policy: Policy, retry_of: str | None = None):
        self.store = store
        self.messages: list[str] = []
        self.id = doc["id"]
        self.retry_of = retry_of  # a run of this request that roar lost (killed mid-run)
        self.gpus = doc["gpus"]
        self.hours = doc["hours"]
        self.warn_at = policy.warn_at
        self.on_exceed = policy.on_exceed
        self.claimed = False
        self.warned = False
        self.exceeded = False
        self.stopped: str | None = None

    def budget(self) -> str:
        if self.gpus:
            return f"{self.gpus * self.hours:.4g} GPU-hours"
        return f"{self.hours:.4g} hours"

    def _used(self, elapsed: float) -> float:
        """Fraction of the approved budget used (GPU-hours = gpus x elapsed hours)."""
        return (elapsed / 3600) / self.hours

    def _claim(self) -> str | None:
        """Mark the request running, once the workload has started; a second
        run racing for the same request loses here."""
        recent = itertools.islice(self.store.iter_runs(), 50)
        run_id = next((r["id"] for r in recent if r.get("status") == "running"
                       and self.id.startswith((r.get("request") or "-").upper())), None)

        def change(doc):
            retry = doc["status"] == "running" and doc.get("run") == self.retry_of
            if doc["status"] != "approved" and not (self.retry_of and retry):
                raise RequestError(f"request {self.id} became {doc['status']} before the run "
                                   f"started")
            doc["status"] = "running"
            doc["run"] = run_id

        try:
            _update(self.store, self.id, change)
        except RequestError as e:
            return str(e)
        return None

    def check(self, elapsed: float) -> str:
        if not self.claimed:
            self.claimed = True
            lost = self._claim()
            if lost:
                self.stopped = f"stopped: {lost}"
                self.messages.append(self.stopped)
                return "stop"
        if self.stopped:
            return "stop"
        used = self._used(elapsed)
        if not self.warned and used >= self.warn_at:
            self.warned = True
            self.messages.append(f"request {self.id}: {used:.0%} of the approved "
                                 f"{self.budget()} used after {elapsed:.0f}s")
        if used > 1:
            if self.on_exceed == "stop":
                self.stopped = (f"stopped: the approved budget of request {self.id} "
                                f"({self.budget()}) was used up after {elapsed:.0f}s")
                self.messages.append(self.stopped)
                return "stop"
            if not self.exceeded:
                self.exceeded = True
                self.messages.append(f"request {self.id}: the approved {self.budget()} are "
                                     f"used up; the run goes on (policy: budget.on_exceed = "
                                     f"\"warn\")")
            return "warn"
        return "warn" if self.warned else "ok"

    def resolve(self, store: Store, run: dict, files: list[dict]) -> dict:
        """Close the request with the run: outputs, duration, cost and the
        dataset check; mark the run with the request and any mismatch."""
        current = store.get_doc("requests", self.id)
        checks, mismatch = check_datasets(current["datasets"], _manifests(store,
                                          current["datasets"]), files, bool(run.get("complete")))
        hours = _hours_between(run.get("started_at"), run.get("ended_at"))
        outputs = [{"path": f["path"], "hash": f["hash"]} for f in files
                   if f.get("role") == "output" and f.get("kind") in ("data", "code")
                   and f.get("hash")]

        def change(doc):
            gpu_hours = None if hours is None else round(doc["gpus"] * hours, 6)
            doc.update({
                "status": "resolved", "run": run["id"], "duration_hours": hours,
                "gpu_hours": gpu_hours, "outputs": outputs, "dataset_check": checks,
                "dataset_mismatch": mismatch, "resolved_at": now_iso(),
                "cost": None if gpu_hours is None or doc.get("rate") is None
                else round(gpu_hours * doc["rate"], 4),
                "run_status": run.get("status"),
            })

        doc = _update(store, self.id, change)
        # only these fields: the caller's copy of the run is stale (links and
        # late hashes were stored after it was read)
        store.mark_request(run["id"], self.id, mismatch, checks)
        cost = "" if doc["cost"] is None else f", cost {doc['cost']:.2f} {doc['currency']}"
        self.messages.append(f"request {self.id} resolved by run {run['id']}: "
                             f"{doc['gpu_hours'] or 0:.4g} GPU-hours{cost}")
        for c in checks:
            if c["status"] in ("changed", "not_read"):
                what = (f"{c['changed_count']} file(s) read differ from the filed version"
                        if c["status"] == "changed" else "nothing of it was read")
                self.messages.append(f"DATASET MISMATCH: {c['path']}: {what}")
        return doc

    def take_messages(self) -> list[str]:
        """The messages queued since the last call (oldest first)."""
        out, self.messages = self.messages, []
        return out


def gate_run(store: Store, request_id: str | None, argv: list[str], git: dict | None,
             user: str) -> Gate | None:
    """Decide whether `roar run` may start; raises RequestError to refuse."""
    policy = load_policy(store.home, git["root"] if git else None)
    if request_id is None:
        if policy.require_request == "always":
            raise RequestError(f"this store's policy requires a training request for every run: "
                               f"file one with `roar request create` and pass --request ID "
                               f"({', '.join(policy.sources)})")
        if policy.require_request == "above_gpus" and visible_gpus() > policy.above_gpus:
            raise RequestError(f"this run can use {visible_gpus()} GPUs and the policy requires "
                               f"a training request above {policy.above_gpus}: file one with "
                               f"`roar request create` and pass --request ID")
        return None
    doc = find(store, request_id)
    rid, status = doc["id"], doc["status"]
    if status == "pending":
        raise RequestError(f"request {rid} is pending review (reviewers: "
                           f"{reviewers_text(policy)}); `roar request wait {rid}` blocks until "
                           f"it is decided")
    if status == "denied":
        last = next((r for r in reversed(doc["reviews"]) if r["decision"] == "denied"), {})
        raise RequestError(f"request {rid} was denied by {last.get('by')}: "
                           f"{last.get('comment')}")
    retry_of = None
    messages = []
    if status == "running":
        earlier = store.get_run(doc["run"]) if doc.get("run") else None
        if earlier is None or effective_status(earlier) != "interrupted":
            raise RequestError(f"request {rid} is in use by run {doc.get('run')}, still running")
        retry_of = doc["run"]
        messages.append(f"request {rid}: its run {retry_of} was cut off (roar itself was "
                        f"stopped); this run takes its place")
    if status == "resolved":
        raise RequestError(f"request {rid} was already used by run {doc.get('run')}; file a "
                           f"new request for another run")
    if doc.get("command") and list(doc["command"]) != list(argv):
        messages.append(f"warning: request {rid} was filed for `{shlex.join(doc['command'])}`, "
                        f"this run is `{shlex.join(argv)}`")
    commit = (git or {}).get("commit")
    if doc.get("commit") and commit and commit != doc["commit"]:
        messages.append(f"warning: request {rid} was filed at commit {doc['commit'][:12]}, "
                        f"this run is at {commit[:12]}")
    seen = visible_gpus()
    if seen > doc["gpus"]:
        messages.append(f"warning: this run can use {seen} GPUs; request {rid} approved "
                        f"{doc['gpus']}")
    gate = Gate(store, doc, policy, retry_of)
    gate.messages = [*messages, f"request {rid} approved: budget {gate.budget()}"]
    return gate
