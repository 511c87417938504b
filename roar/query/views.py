"""Read-back views of the store: the documents `roar show`, `roar log` and
`roar trace` print (their --json shapes), and reference resolution: the one
place a run id, content hash or path given by a user is turned into what it
names (resolve, content_ref)."""

from __future__ import annotations

import os
import re

from roar.record.classify import CODE, DATA, ENV, explain, rules_from_docs, venv_root
from roar.record.codes import Reason, messages, reason
from roar.record.hasher import OK, hash_path
from roar.record.ids import boot_id
from roar.record.remote import REMOTE, ident_key, is_url, normalize_ref, url_key
from roar.record.store import RefError, Store, StoreError

SHOWN = (DATA, CODE, REMOTE)  # kinds listed as a run's inputs and outputs


def remote_entry(f: dict) -> dict:
    """A remote object as `roar show --json` lists it among inputs/outputs."""
    return {k: f.get(k) for k in SHOW_REMOTE_FIELDS}


def effective_status(run: dict) -> str:
    """A run still marked running whose recording process is gone on this boot
    was interrupted (roar itself was killed)."""
    if run.get("status") != "running":
        return run.get("status")
    pid = run.get("client_pid")
    if pid and run.get("boot_id") == boot_id():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "interrupted"
        except PermissionError:
            pass
    return "running"


# The fields each view shows, by the names of roar.record.records' fields: the
# views below build their documents from them and roar/query/schemas.py their
# JSON Schemas (docs/schemas/), with each field's type taken from the records.
LOG_FIELDS = ("id", "name", "command", "status", "started_at", "exit_code", "complete",
              "counts")
SHOW_FIELDS = ("id", "name", "status", "command", "cwd", "user", "host", "boot_id", "kernel",
               "started_at", "ended_at", "exit_code", "signal", "git", "env", "packages",
               "installed", "gpus", "inputs", "outputs", "env_outputs", "logs", "processes",
               "complete", "incomplete_reasons",
               "lost_events", "io_uring", "connects", "remote", "mode", "counts", "request",
               "dataset_mismatch", "hash_progress", "dataset_check", "links", "reproduces",
               "group", "cgroup", "namespaces", "alerts")
SHOW_FILE_FIELDS = ("path", "hash", "size", "kind", "status")  # + bytes_read | bytes_written
SHOW_LOG_FIELDS = ("path", "bytes_written")
SHOW_REMOTE_FIELDS = ("kind", "path", "url", "method", "version", "size", "hash", "hash_source",
                      "endpoint", "ranges", "status")
SHOW_PROCESS_FIELDS = ("pid", "ppid", "argv", "exit_code", "signal")
TRACE_PROCESS_FIELDS = ("key", "pid", "ppid", "parent", "argv", "exe", "exit_code", "signal",
                        "threads", "files")


def log_entry(run: dict) -> dict:
    doc = {k: run.get(k) for k in LOG_FIELDS}
    doc["status"] = effective_status(run)
    return doc


def _public_git(git: dict | None) -> dict | None:
    if git is None:
        return None
    return {k: git.get(k) for k in ("commit", "branch", "remote", "dirty", "patch", "root",
                                    "untracked", "detached")}


def run_view(store: Store, run_id: str) -> dict:
    run = store.get_run(run_id)
    if run is None:
        raise RefError(f"no run '{run_id}'")
    files = store.run_files(run_id)
    procs = store.run_procs(run_id)

    def entry(f, bytes_key):
        if f["kind"] == REMOTE:
            return remote_entry(f)
        return {"path": f["path"], "hash": f.get("hash"), "size": f.get("size"),
                "kind": f["kind"], bytes_key: f.get(bytes_key, 0), "status": f.get("status")}

    status = effective_status(run)
    return {
        "id": run["id"], "name": run.get("name"), "status": status,
        "command": run.get("command"), "cwd": run.get("cwd"), "user": run.get("user"),
        "host": run.get("host"), "boot_id": run.get("boot_id"), "kernel": run.get("kernel"),
        "started_at": run.get("started_at"), "ended_at": run.get("ended_at"),
        "exit_code": run.get("exit_code"), "signal": run.get("signal"),
        "git": _public_git(run.get("git")), "env": run.get("env", {}),
        "packages": run.get("packages", {}), "installed": run.get("installed") or {},
        "gpus": run.get("gpus"),
        "inputs": [entry(f, "bytes_read") for f in files
                   if f["role"] == "input" and f["kind"] in SHOWN],
        "outputs": [entry(f, "bytes_written") for f in files
                    if f["role"] == "output" and f["kind"] in SHOWN],
        # what it wrote in environment locations (installs, builds, byte code)
        "env_outputs": [entry(f, "bytes_written") for f in files
                        if f["role"] == "output" and f["kind"] == ENV],
        "logs": [{k: f.get(k) for k in SHOW_LOG_FIELDS} for f in files if f["role"] == "log"],
        "processes": [{k: p.get(k) for k in SHOW_PROCESS_FIELDS} for p in procs],
        "complete": bool(run.get("complete")) and status == "finished",
        "incomplete_reasons": run.get("incomplete_reasons")
        or (messages([reason(Reason.NOT_FINISHED)]) if status == "interrupted" else []),
        "lost_events": run.get("lost_events"), "io_uring": run.get("io_uring"),
        "connects": run.get("connects", []), "remote": run.get("remote"),
        "mode": run.get("mode"),
        "counts": run.get("counts"), "request": run.get("request"),
        "dataset_mismatch": run.get("dataset_mismatch"),
        "hash_progress": run.get("hash_progress"),
        "dataset_check": run.get("dataset_check"),
        "links": run.get("links") or [], "reproduces": run.get("reproduces"),
        "group": run.get("group"), "cgroup": run.get("cgroup"),
        "namespaces": run.get("namespaces"),
        # an audited session's policy alerts (roar audit RUN has the whole report)
        "alerts": (run.get("audit") or {}).get("alerts") or [],
    }


def env_groups(files: list[dict]) -> list[dict]:
    """Environment outputs as the user thinks of them: per virtualenv or
    site-packages directory a pip install wrote into (with the distributions
    whose .dist-info it wrote), else per reason and common directory (byte
    code under src/, a library built into /opt/x/lib). Each: {root, why,
    files, size, packages}; every file is in exactly one group."""
    from roar.record.context import installed

    groups: dict[tuple[str, str], list[dict]] = {}
    loose: dict[str, list[dict]] = {}
    for f in files:
        p = f["path"]
        root = venv_root(p)
        if root:
            groups.setdefault((root, "a virtualenv"), []).append(f)
            continue
        site = _SITE_DIR.match(p)
        if site:
            groups.setdefault((site.group(1), "installed Python packages"), []).append(f)
            continue
        loose.setdefault(explain(p)[1], []).append(f)
    for why, fs in loose.items():
        groups[(os.path.commonpath([os.path.dirname(f["path"]) for f in fs]), why)] = fs
    out = []
    for (root, why), fs in sorted(groups.items()):
        out.append({"root": root, "why": why, "files": len(fs),
                    "size": sum(f.get("size") or 0 for f in fs),
                    "packages": installed(f["path"] for f in fs)})
    return out


_SITE_DIR = re.compile(r"^(.*/(?:site|dist)-packages)/")


def explain_run(store: Store, run_id: str) -> dict:
    """Why each file of a run got its kind and role (`roar show RUN --explain`):
    the rule that classified it (the run's own user rules, then the built-in
    ones), and what the run did with it."""
    run = store.get_run(run_id)
    if run is None:
        raise RefError(f"no run '{run_id}'")
    rules = rules_from_docs(run.get("classify_rules"))
    git_root = (run.get("git") or {}).get("root")
    out = []
    for f in store.run_files(run_id):
        if f.get("kind") == "remote":
            continue
        kind, why = explain(f["path"], git_root, None, rules)
        if f["kind"] == CODE and kind == DATA:  # tracked by git when it ran
            why = f"tracked by git in the work tree {git_root} when the run was recorded"
        elif kind != f["kind"]:
            why = f"recorded as {f['kind']}; the rules now say {kind}: {why}"
        out.append({"path": f["path"], "kind": f["kind"], "role": f["role"], "why": why,
                    "role_why": ROLE_WHY.get(f["role"], "")})
    return {"run": run_id, "rules": run.get("classify_rules") or [], "files": out}


ROLE_WHY = {
    "input": "read before the run wrote it: hashed at its first read-open",
    "output": "written by the run and left behind: hashed at the end",
    "internal": "read back after the run itself wrote it",
    "temporary": "written, then deleted by the run",
    "log": "the run's stdout or stderr, a file the caller redirected: bytes counted, no hash",
    "ipc": "shared memory the run made for itself and mapped: never an input or output",
    "env": "read from the environment: summarised as package versions",
    "pseudo": "no content of its own (/proc, /sys, /dev, or an ignore rule)",
}


def explain_path(store: Store, path: str) -> dict:
    """Why a path is classified as it is now (`roar show PATH --explain`): the
    rules of this store and of the work tree the path is in."""
    from roar.record import context
    from roar.record.classify import RulesError, load_rules

    path = os.path.abspath(path)
    git_root = context.git_root(os.path.dirname(path))
    tracked = context.tracked_files(git_root) if git_root else None
    try:
        rules = load_rules(store.home, git_root)
    except RulesError as e:
        raise RefError(str(e)) from None
    kind, why = explain(path, git_root, tracked, rules)
    return {"path": path, "kind": kind, "why": why, "git_root": git_root,
            "rules": [r.to_doc() for r in rules]}


def artifact_view(store: Store, hash_hex: str, path: str | None = None) -> dict:
    writers = store.writers_of(hash_hex)
    readers = store.readers_of(hash_hex)
    paths = sorted({p for _, ps in writers + readers for p in ps})
    return {"hash": hash_hex, "path": path, "paths": paths,
            "produced_by": [_run_ref(store, r, ps) for r, ps in writers],
            "read_by": [_run_ref(store, r, ps) for r, ps in readers]}


def _run_ref(store: Store, run_id: str, paths: list[str]) -> dict:
    run = store.get_run(run_id) or {}
    return {"run": run_id, "name": run.get("name"), "command": run.get("command"),
            "started_at": run.get("started_at"), "paths": paths}


def remote_view(store: Store, url: str) -> dict:
    """Which runs read and wrote which versions of a remote object (the JSON
    of `roar show s3://...`): {url, versions: [{version, ident, written_by,
    read_by}]}, versions in the order runs first touched them."""
    key = url_key(url)
    versions: dict[str, dict] = {}
    for role, rows in (("written_by", store.writers_of(key)), ("read_by", store.readers_of(key))):
        for run_id, names in rows:
            for v in names:
                entry = versions.setdefault(v, {"version": v or None,
                                                "ident": ident_key(url, v or None),
                                                "written_by": [], "read_by": []})
                if run_id not in entry[role]:
                    entry[role].append(run_id)
    found = sorted(versions.values(),
                   key=lambda e: min(e["written_by"] + e["read_by"]))
    return {"kind": "remote", "url": url, "versions": found}


def resolve_remote(store: Store, ref: str) -> tuple[str, str]:
    """('remote', url) named by a URL the store has records of."""
    url = normalize_ref(ref)
    if not remote_view(store, url)["versions"]:
        raise RefError(f"{url} was never read or written by a recorded run")
    return "remote", url


def remote_target(store: Store, url: str) -> str:
    """The lineage key of a remote object's newest version: the one the newest
    writing run wrote, else the one the newest reader read (its url@version
    key, or the url's own key when no version was seen)."""
    view = remote_view(store, url)
    def newest(e, role):
        return max(e[role]) if e[role] else ""
    written = [e for e in view["versions"] if e["written_by"]]
    pick = max(written or view["versions"],
               key=lambda e: newest(e, "written_by" if written else "read_by"))
    return pick["ident"] or url_key(url)


def resolve(store: Store, ref: str, progress=None) -> tuple[str, str]:
    """('run', id) or ('artifact', hash) for a run id/prefix, hash/prefix or
    path; a URL (s3://, gs://, https://) names its newest recorded version.
    progress(path, bytes_done, size): told now and then while a big file is hashed."""
    if is_url(ref):
        _, url = resolve_remote(store, ref)
        return "artifact", remote_target(store, url)
    if os.path.isdir(ref):
        raise RefError(f"{ref} is a directory: give a file, a content hash or a run id (to ask "
                       f"which of its files fed a target: roar inputs TARGET --contains-dir "
                       f"{ref})")
    if os.path.exists(ref):
        h = _hash_now(store, ref, progress)
        if not store.writers_of(h) and not store.readers_of(h):
            raise RefError(f"{ref} (content {h[:16]}) was never read or written by a "
                           f"recorded run")
        return "artifact", h
    try:
        return "run", store.resolve_run(ref)
    except RefError as run_err:
        h = store.resolve_hash(ref)
        if h:
            return "artifact", h
        if "ambiguous" in str(run_err):
            raise
        raise RefError(f"'{ref}' is not a run id, a recorded content hash or an existing "
                       f"path") from None


def _hash_now(store: Store, path: str, progress=None) -> str:
    res = query_hash(store, path, progress)
    if res.status != OK:
        raise RefError(f"cannot hash {path}: {res.error or res.status}")
    return res.hash


def query_hash(store, path: str, progress=None, remember: list | None = None):
    """Hash a file for a query through this node's stat cache, and remember
    what had to be read (the next query of the unchanged file reads none of
    it): at once, or into `remember` for the caller to keep in one go
    (remember_hashes). progress(path, bytes_done, size) as in resolve()."""
    told = (lambda done, size: progress(path, done, size)) if progress else None
    res, key = hash_path(path, store.cached_hash_key, progress=told)
    if key is not None and res.status == OK and res.hash:
        if remember is None:
            remember_hashes(store, [(key, res.hash)])
        else:
            remember.append((key, res.hash))
    return res


def remember_hashes(store, items: list[tuple[bytes, str]]) -> None:
    """Keep hashes a query computed in this node's stat cache (a shared store's
    queries use the local one). Only a saving: a store that cannot take the
    write (a full disk) leaves the query's answer as it is."""
    local = getattr(store, "local", store)
    if local is None or not items:
        return
    try:
        local.cache_hashes(items)
    except StoreError:
        pass  # the answer stands; the next query hashes again


def content_ref(store: Store, ref: str, progress=None) -> tuple[str, str | None]:
    """(hash, path or None) for a --contains argument: an existing file (hashed
    now) or a content hash (full, or a prefix the store knows); a URL gives
    (None, the object's name): any version of it counts."""
    if os.path.isdir(ref):
        raise RefError(f"{ref} is a directory: use --contains-dir")
    if os.path.exists(ref):
        return _hash_now(store, ref, progress), os.path.abspath(ref)
    if is_url(ref):
        return None, normalize_ref(ref)
    r = ref.strip().lower()
    if len(r) == 32 and all(c in "0123456789abcdef" for c in r):
        return r, None
    h = store.resolve_hash(r)
    if h:
        return h, None
    raise RefError(f"'{ref}' is neither an existing file nor a recorded content hash")


def trace_view(store: Store, run_id: str, all_files: bool = False) -> dict:
    run = store.get_run(run_id)
    procs = store.run_procs(run_id)
    out = []
    for p in procs:
        files = [f for f in p["files"] if all_files or f["kind"] in (DATA, CODE)]
        out.append({**{k: p.get(k) for k in TRACE_PROCESS_FIELDS},
                    "threads": p.get("threads", 1), "files": files})
    return {"run": run_id, "name": run.get("name"), "complete": run.get("complete"),
            "processes": out}
