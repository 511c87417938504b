"""Reproduction of an artifact or a run from its record.

plan() lists the upstream runs in the order they must run, each with the commit
(and stored dirty patch) of its code, its working directory relative to the
repository, its command, its recorded environment (redacted secrets flagged),
its interpreter and package versions (drift against what that interpreter has
installed now), and the input versions it needs: made by an earlier step, in
git at the commit, present here (found by content hash under any path the
store knows for it, whose content still matches), or missing.

execute() checks the code out in a separate git worktree (the user's checkout,
branch and index are never touched), puts the input versions in place, runs
each step under `roar run` itself, and compares every rebuilt output hash with
the recorded one.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from roar.query import lineage
from roar.query.views import effective_status
from roar.record.classify import is_environment
from roar.record.context import git, redact
from roar.record.hasher import OK, hash_path
from roar.record.ids import boot_id, now_iso
from roar.record.remote import REMOTE
from roar.record.store import Store

REDACTED = "hmac-sha256:"
# who reproduces, not who recorded: taken from the current environment
IDENTITY_ENV = ("HOME", "USER", "LOGNAME", "MAIL")
ROAR_ENV = ("ROAR_HOME", "ROAR_SOCKET")
PYTHON_EXE = re.compile(r"^(?:python|pypy)[\d.]*$")
# sources of an input version, in the plan
FROM_STEP, FROM_GIT, FROM_PATCH, LOCAL, IN_PLACE, ELSEWHERE, MISSING, EMPTY, UNVERIFIED = (
    "step", "git", "patch", "local", "in_place", "elsewhere", "missing", "empty", "unverified")
REMOTE_SOURCE = "remote"  # an object the step fetches again itself (S3, GCS, HTTP)
# what a plan does with a step
RUN, REUSE, SKIP = "run", "reuse", "skip"


class ReproduceError(Exception):
    """Reproduction cannot go on; the message says why, in one line."""


# -- finding content here ------------------------------------------------------------------


class Locator:
    """Finds content by hash under any path the store knows for it (read or
    written by any run), keeping only files whose content still matches. New
    hashes go to the store's stat cache, so a second look costs a stat."""

    def __init__(self, store: Store):
        self.store = store
        self._paths: dict[str, list[str]] = {}
        self._found: dict[str, str | None] = {}
        self._cached: list[tuple[bytes, str]] = []

    def prefetch(self, hashes) -> None:
        todo = sorted({h for h in hashes if h and h not in self._paths})
        if not todo:
            return
        written = self.store.writers_of_many(todo)
        read = self.store.readers_of_many(todo)
        for h in todo:
            self._paths[h] = list(dict.fromkeys(
                p for _, ps in written[h] + read[h] for p in ps))

    def matches(self, path: str, h: str, size: int | None = None) -> bool:
        """Whether the file at path holds content h now."""
        try:
            if not os.path.isfile(path) or (size is not None and os.path.getsize(path) != size):
                return False
        except OSError:
            return False
        res, key = hash_path(path, self.store.cached_hash_key)
        if key is not None and res.hash:
            self._cached.append((key, res.hash))
        return res.status == OK and res.hash == h

    def find(self, h: str, size: int | None = None) -> str | None:
        """A path here whose content is h, or None."""
        if h in self._found:
            return self._found[h]
        self.prefetch([h])
        found = next((p for p in self._paths[h] if self.matches(p, h, size)), None)
        self._found[h] = found
        return found

    def flush(self) -> None:
        if self._cached:
            self.store.cache_hashes(self._cached)
            self._cached = []


def _hash_now(path: str) -> str | None:
    res, _ = hash_path(path)
    return res.hash if res.status == OK else None


# -- git -------------------------------------------------------------------------------------


def _git(cwd: str, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return git(cwd, *args, input=input, timeout=600)  # checkouts of big trees take a while


def _has_commit(repo: str, commit: str) -> bool:
    return os.path.isdir(repo) and _git(repo, "cat-file", "-e",
                                        f"{commit}^{{commit}}").returncode == 0


def _toplevel(path: str) -> str | None:
    if not os.path.isdir(path):
        return None
    p = _git(path, "rev-parse", "--show-toplevel")
    return p.stdout.decode().strip() if p.returncode == 0 else None


def find_repo(root: str | None, commit: str, hint: str | None = None) -> str | None:
    """A local repository that has commit: the one given (--repo), the one the
    run was recorded in, or the one around the current directory."""
    for cand in (hint, root, os.getcwd()):
        top = _toplevel(cand) if cand else None
        if top and _has_commit(top, commit):
            return top
    return None


def _blob_hashes(repo: str, commit: str, rels: list[str]) -> dict[str, str | None]:
    """xxh3-128 of each path's blob at commit (None where it has none), read in
    one `git cat-file --batch`."""
    import xxhash

    rels = sorted(set(rels))
    if not rels:
        return {}
    specs = "".join(f"{commit}:{r}\n" for r in rels).encode(errors="surrogateescape")
    out = _git(repo, "cat-file", "--batch", input=specs).stdout
    result: dict[str, str | None] = {}
    pos = 0
    for r in rels:
        nl = out.find(b"\n", pos)
        if nl < 0:
            result[r] = None
            continue
        header = out[pos:nl].split()
        pos = nl + 1
        if len(header) != 3 or header[1] != b"blob":
            result[r] = None
            continue
        size = int(header[2])
        result[r] = xxhash.xxh3_128(out[pos:pos + size]).hexdigest()
        pos += size + 1
    return result


def _patch_paths(patch: str | None) -> set[str]:
    """Paths a `git diff` patch changes."""
    out = set()
    for line in (patch or "").splitlines():
        if line.startswith("diff --git "):
            parts = line[len("diff --git "):].split(" b/", 1)
            if len(parts) == 2:
                out.add(parts[0].removeprefix("a/").strip('"'))
                out.add(parts[1].strip('"'))
    return out


# -- choosing the runs ------------------------------------------------------------------------


def _producers(g: lineage.Graph, runs: lineage.RunCache, h: str,
               reader: lineage.RunInfo | None) -> list[lineage.RunInfo]:
    vn = ("ver", h)
    if vn not in g:
        return []
    out = []
    for n in g.predecessors(vn):
        info = runs.get(n[1])
        if info is None or (reader is not None and info.id == reader.id):
            continue
        if reader is not None and reader.ended and info.started > reader.ended:
            continue
        out.append(info)
    return out


def _best(cands: list[lineage.RunInfo], reader: lineage.RunInfo | None) -> lineage.RunInfo:
    """The recipe to follow when several runs made one content: an original
    run (not itself a reproduction) that succeeded, the latest that started
    before the reader did."""
    def rank(i: lineage.RunInfo):
        rec = i.record
        ok = effective_status(rec) == "finished" and rec.get("exit_code") == 0
        before = reader is None or i.started <= reader.started
        return (not rec.get("reproduces"), ok, before, i.started, i.id)

    return max(cands, key=rank)


def _steps_in_order(chosen: dict[str, lineage.RunInfo], edges: set[tuple[str, str]]
                    ) -> list[str]:
    """Producers before their readers, ties by start time (Kahn's algorithm
    with a heap); runs that fed each other fall back to time order."""
    def key(rid: str) -> tuple[str, str]:
        return (chosen[rid].started, rid)

    after: dict[str, list[str]] = {r: [] for r in chosen}
    waiting = dict.fromkeys(chosen, 0)
    for p, r in edges:
        after[p].append(r)
        waiting[r] += 1
    ready = [key(r) for r, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, rid = heapq.heappop(ready)
        order.append(rid)
        for r in after[rid]:
            waiting[r] -= 1
            if waiting[r] == 0:
                heapq.heappush(ready, key(r))
    if len(order) < len(chosen):
        return sorted(chosen, key=key)
    return order


def _select(g: lineage.Graph, runs: lineage.RunCache, target: tuple[str, str]):
    """(final run ids, {(reader, hash): producer}, run ids in the order to run)."""
    if target[0] == "run":
        final = [runs.get(target[1])]
    else:
        writers = _producers(g, runs, target[1], None)
        if not writers:
            raise ReproduceError(f"no recorded run wrote content {target[1][:16]}: there is "
                                 f"no recipe to reproduce it from")
        final = [_best(writers, None)]
    chosen: dict[str, lineage.RunInfo] = {}
    made_by: dict[tuple[str, str], str] = {}
    queue = list(final)
    while queue:
        info = queue.pop()
        if info.id in chosen:
            continue
        chosen[info.id] = info
        for f in info.inputs:
            h = f.get("hash")
            if not h or h == lineage.EMPTY_HASH:
                continue
            cands = _producers(g, runs, h, info)
            if cands:
                p = _best(cands, info)
                made_by[(info.id, h)] = p.id
                queue.append(p)
    order = _steps_in_order(chosen, {(p, r) for (r, _), p in made_by.items()})
    return [i.id for i in final], made_by, [chosen[r] for r in order]


# -- interpreter and packages ------------------------------------------------------------------


_INSTALLED = (
    "import json, sys\n"
    "try:\n"
    "    import importlib.metadata as m\n"
    "except ImportError:\n"
    "    m = None\n"
    "out = {}\n"
    "for n in json.loads(sys.argv[1]):\n"
    "    try:\n"
    "        out[n] = m.version(n) if m else None\n"
    "    except Exception:\n"
    "        out[n] = None\n"
    "print(json.dumps({'python': sys.version.split()[0], 'packages': out}))\n")


def _interpreter(store: Store, run_id: str, env: dict) -> str | None:
    """The interpreter of a run: its first Python process as its command named it
    (a virtualenv's `python` is a link to the base interpreter: run through the
    link it still sees the virtualenv), else its first process."""
    procs = store.run_procs(run_id)
    keys = {p["key"] for p in procs}
    ordered = sorted(procs, key=lambda p: p.get("parent") in keys)
    path = env.get("PATH") if isinstance(env.get("PATH"), str) else None
    for p in ordered:
        argv0 = (p.get("argv") or [None])[0]
        if isinstance(argv0, str) and PYTHON_EXE.match(os.path.basename(argv0)):
            if "/" in argv0:
                return os.path.normpath(os.path.join(p.get("cwd") or "/", argv0))
            found = shutil.which(argv0, path=path)
            if found:
                return found
        if p.get("exe") and PYTHON_EXE.match(os.path.basename(p["exe"])):
            return p["exe"]
    return ordered[0].get("exe") if ordered else None


def installed_versions(exe: str, names: list[str], env: dict) -> dict:
    """{'python': version, 'packages': {name: version or None}} as the
    interpreter exe sees them now (importlib.metadata), or {'error': why}."""
    try:
        p = subprocess.run([exe, "-c", _INSTALLED, json.dumps(sorted(names))], env=env,
                           cwd="/", capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": str(e)}
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["failed"])[-1]}
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": "unexpected output"}


def _plain_env(env: dict) -> dict[str, str]:
    return {k: v for k, v in env.items() if isinstance(v, str)}


# -- the plan ------------------------------------------------------------------------------


def _inside(path: str, root: str | None) -> str | None:
    """path relative to root, or None when it is not inside root."""
    if root and path.startswith(root.rstrip("/") + "/"):
        return path[len(root.rstrip("/")) + 1:]
    return None


def plan(store: Store, target: tuple[str, str], from_scratch: bool = False,
         repo: str | None = None, check_packages: bool = True) -> dict:
    """The recipe that rebuilds target: the JSON of `roar reproduce REF --json`."""
    runs = lineage.RunCache(store)
    g = lineage.upstream(store, target, runs)
    final, made_by, order = _select(g, runs, target)
    index = {info.id: i for i, info in enumerate(order, 1)}
    loc = Locator(store)
    loc.prefetch(f.get("hash") for info in order for f in info.inputs + info.outputs)
    drift_cache: dict[tuple, dict] = {}
    steps = []
    for info in order:
        steps.append(_step(store, info, index, made_by, final, loc, repo, drift_cache,
                           check_packages))
    _decide(steps, from_scratch, loc)
    loc.flush()
    doc = {"target": lineage.target_view(store, target, runs), "from_scratch": from_scratch,
           "steps": steps}
    doc["secrets"] = secrets(store, steps)
    doc["blockers"], doc["warnings"] = _problems(steps)
    for x in doc["secrets"]:
        if x["needed"] and x["matches"] is False:
            doc["warnings"].append(f"{x['name']} is set here, but not to the recorded value "
                                   f"(its keyed hash differs)")
    doc["missing"] = [{**i, "step": s["index"]} for s in steps if s["action"] == RUN
                      for i in s["inputs"] if i["source"] in (MISSING, ELSEWHERE)]
    doc["drift"] = [{**d, "step": s["index"]} for s in steps for d in s["drift"]]
    doc["runnable"] = not doc["blockers"] and not any(
        not x["supplied"] for x in doc["secrets"] if x["needed"])
    return doc


def _step(store, info: lineage.RunInfo, index, made_by, final, loc: Locator, repo_hint,
          drift_cache, check_packages) -> dict:
    rec = info.record
    git = rec.get("git") or None
    root = (git or {}).get("root")
    commit = (git or {}).get("commit")
    source = find_repo(root, commit, repo_hint) if commit else None
    cwd = rec.get("cwd") or ""
    cwd_rel = _inside(cwd, root) if root else None
    if root and cwd.rstrip("/") == root.rstrip("/"):
        cwd_rel = "."
    patch = (git or {}).get("patch")
    patched = _patch_paths(patch)
    in_git: dict[str, str | None] = {}
    if source:
        in_git = _blob_hashes(source, commit, [r for f in info.inputs
                                               if (r := _inside(f["path"], root))])
    inputs = []
    for f in sorted(info.inputs, key=lambda f: f["path"]):
        h, rel = f.get("hash"), _inside(f["path"], root)
        e = {"path": rel or f["path"], "abs": f["path"], "inside": rel is not None, "hash": h,
             "size": f.get("size"), "kind": f.get("kind"), "source": None, "step": None,
             "local": None}
        if f.get("kind") == REMOTE:  # fetched by the step again, from where it was
            e.update(source=REMOTE_SOURCE, inside=False, url=f.get("url") or f["path"],
                     version=f.get("version"))
        elif not h:
            e["source"] = UNVERIFIED
        elif h == lineage.EMPTY_HASH:
            e["source"] = EMPTY
        elif (info.id, h) in made_by:
            e["source"], e["step"] = FROM_STEP, index[made_by[(info.id, h)]]
        elif rel is not None and in_git.get(rel) == h:
            e["source"] = FROM_GIT
        elif rel is not None and rel in patched:
            e["source"] = FROM_PATCH
        elif rel is not None:
            e["local"] = loc.find(h, f.get("size"))
            e["source"] = LOCAL if e["local"] else MISSING
        elif loc.matches(f["path"], h, f.get("size")):
            e["source"], e["local"] = IN_PLACE, f["path"]
        else:
            e["local"] = loc.find(h, f.get("size"))
            e["source"] = ELSEWHERE if e["local"] else MISSING
        inputs.append(e)
    outputs = []
    for f in sorted(info.outputs, key=lambda f: f["path"]):
        rel = _inside(f["path"], root)
        outputs.append({"path": rel or f["path"], "abs": f["path"], "inside": rel is not None,
                        "hash": f.get("hash"), "size": f.get("size"), "kind": f.get("kind"),
                        "needed_by": sorted(index[r] for (r, h), p in made_by.items()
                                            if p == info.id and h == f.get("hash"))})
    argv = rec.get("command") or []
    env = rec.get("env") or {}
    exe = _interpreter(store, info.id, env)
    packages = rec.get("packages") or {}
    interp = {"path": exe, "present": bool(exe and os.path.exists(exe)), "version": None}
    drift: list[dict] = []
    if check_packages and exe and interp["present"] and PYTHON_EXE.match(os.path.basename(exe)):
        pyenv = _plain_env(env)
        key = (exe, pyenv.get("PYTHONPATH"), pyenv.get("PYTHONHOME"), tuple(sorted(packages)))
        if key not in drift_cache:
            drift_cache[key] = installed_versions(exe, list(packages), pyenv)
        got = drift_cache[key]
        interp["version"] = got.get("python")
        interp["error"] = got.get("error")
        for name, version in sorted(packages.items()):
            if "packages" in got and got["packages"].get(name) != version:
                drift.append({"package": name, "recorded": version,
                              "installed": got["packages"].get(name)})
    return {
        "index": index[info.id], "run": info.id, "name": rec.get("name"),
        "step": lineage.step_key(info), "final": info.id in final, "action": None,
        "status": effective_status(rec), "exit_code": rec.get("exit_code"),
        "complete": not info.problems(), "problems": info.problems(),
        "repo": {"root": root, "remote": (git or {}).get("remote"), "source": source},
        "commit": commit, "branch": (git or {}).get("branch"),
        "dirty": bool((git or {}).get("dirty")), "patch": bool(patch),
        "no_git": git is None, "cwd": cwd_rel if cwd_rel is not None else cwd,
        "command": argv,
        "redacted_args": [i for i, a in enumerate(argv) if isinstance(a, str) and REDACTED in a],
        "env": env, "redacted": sorted(k for k, v in env.items() if isinstance(v, dict)),
        "interpreter": interp, "packages": packages, "drift": drift,
        "inputs": inputs, "outputs": outputs,
    }


def _decide(steps: list[dict], from_scratch: bool, loc: Locator) -> None:
    """Which steps run, which are reused (what later running steps need from them
    is here already, by content) and which are not needed at all."""
    by_index = {s["index"]: s for s in steps}
    needs: dict[int, set[tuple[str, str | None]]] = {}
    for s in reversed(steps):
        if s["final"] or from_scratch:
            action = RUN
        elif not needs.get(s["index"]):
            action = SKIP
        elif all(loc.matches(where, h) if where else loc.find(h)
                 for h, where in needs[s["index"]]):
            action = REUSE
        else:
            action = RUN
        s["action"] = action
        if action == RUN:
            for i in s["inputs"]:
                if i["source"] == FROM_STEP:
                    needs.setdefault(i["step"], set()).add(
                        (i["hash"], None if i["inside"] else i["abs"]))
    for s in steps:
        for i in s["inputs"]:
            if s["action"] == RUN and i["source"] == FROM_STEP \
                    and by_index[i["step"]]["action"] == REUSE:
                i["local"] = loc.find(i["hash"]) if i["inside"] else i["abs"]


def secrets(store: Store, steps: list[dict]) -> list[dict]:
    """The redacted environment values the steps that run need: whether the
    current environment supplies each, and whether it is the recorded value
    (compared by the store's keyed hash)."""
    key = store.meta_get("redaction_key")
    out: dict[str, dict] = {}
    for s in steps:
        for name in s["redacted"]:
            e = out.setdefault(name, {"name": name, "steps": [], "needed": False,
                                      "supplied": name in os.environ, "matches": None})
            e["steps"].append(s["index"])
            e["needed"] = e["needed"] or s["action"] == RUN
            if e["supplied"] and key is not None:
                e["matches"] = redact(os.environ[name], key)["redacted"] == \
                    s["env"][name].get("redacted")
    return sorted(out.values(), key=lambda e: e["name"])


def _problems(steps: list[dict]) -> tuple[list[str], list[str]]:
    blockers, warnings = [], []
    for s in steps:
        at = f"step {s['index']} ({s['step']})"
        for p in s["problems"]:
            warnings.append(f"{at}: capture incomplete: {p}")
        if s["action"] != RUN:
            continue
        if s["no_git"]:
            blockers.append(f"{at}: run {s['run'][:10]} was not recorded in a git work tree, "
                            f"so its code cannot be checked out")
        elif not s["commit"]:
            blockers.append(f"{at}: its repository {s['repo']['root']} had no commit")
        elif not s["repo"]["source"]:
            where = s["repo"]["remote"] or s["repo"]["root"]
            blockers.append(f"{at}: commit {s['commit'][:12]} is in no local repository: "
                            f"give --repo PATH (a clone of {where})")
        for i in s["redacted_args"]:
            blockers.append(f"{at}: argument {i} was a secret, stored redacted: it cannot be "
                            f"run again")
        for i in s["inputs"]:
            if i["source"] == MISSING:
                blockers.append(f"{at}: input {i['path']} (content {i['hash'][:16]}) is "
                                f"missing: no file here has that content")
            elif i["source"] == ELSEWHERE:
                blockers.append(f"{at}: input {i['abs']} is read by that path: its content is "
                                f"at {i['local']}; put it back there")
            elif i["source"] == UNVERIFIED:
                warnings.append(f"{at}: input {i['path']} has no recorded content hash; "
                                f"the file as it is now will be used")
        remote = [i for i in s["inputs"] if i["source"] == REMOTE_SOURCE]
        if remote:
            warnings.append(f"{at}: fetches {len(remote)} remote object(s) again (e.g. "
                            f"{remote[0]['url']} version {remote[0]['version'] or 'unknown'}): "
                            f"the server may now hold other versions; the new run's record "
                            f"shows which it got")
        for o in s["outputs"]:
            if not o["inside"]:
                warnings.append(f"{at}: writes {o['abs']}, outside the repository: running "
                                f"it rewrites that file in place")
        if s["interpreter"]["path"] and not s["interpreter"]["present"]:
            warnings.append(f"{at}: the recorded interpreter {s['interpreter']['path']} is "
                            f"not here")
        elif s["interpreter"].get("error"):
            warnings.append(f"{at}: cannot list the packages of {s['interpreter']['path']}: "
                            f"{s['interpreter']['error']}")
        for d in s["drift"]:
            warnings.append(f"{at}: package {d['package']} recorded {d['recorded']}, "
                            f"installed {d['installed'] or 'none'}")
    return blockers, warnings


def requirements(doc: dict) -> str:
    """A requirements file pinned to the recorded package versions of the plan's
    steps. A package recorded at several versions is pinned at the one the
    last step used; the others are noted."""
    seen: dict[str, list[tuple[int, str]]] = {}
    for s in doc["steps"]:
        for name, version in s["packages"].items():
            seen.setdefault(name, []).append((s["index"], version))
    t = doc["target"]
    what = f"run {t['id']}" if t["kind"] == "run" else f"content {t['hash']}"
    lines = [f"# pinned by `roar reproduce --emit-requirements` from the recorded package "
             f"versions of {what}"]
    for name in sorted(seen):
        versions = seen[name]
        pin = versions[-1][1]
        others = sorted({v for _, v in versions if v != pin})
        note = f"  # other steps used {', '.join(others)}" if others else ""
        lines.append(f"{name}=={pin}{note}")
    return "\n".join(lines) + "\n"


# -- execution ----------------------------------------------------------------------------


def _roar_command() -> list[str]:
    """The roar CLI as a subprocess, importing roar and its dependencies from
    where this process does, whatever PYTHONPATH the recorded environment holds."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    paths = [here] + [p for p in sys.path if p]
    code = (f"import sys; sys.path[:0] = {paths!r}; sys.argv[0] = 'roar'; "
            f"from roar.cli.main import main; main()")
    return [sys.executable, "-I", "-c", code]


def _relocator(root: str, tree: str, careful: bool):
    """A function rewriting paths under the recorded repository root into the
    work tree. Environment paths (a virtualenv inside the repository) stay.
    careful (the root holds the user's home): only paths the work tree has move."""
    pat = re.compile(re.escape(root.rstrip("/")) + r"(?=/|:|$)([^:]*)")

    def sub(m: re.Match) -> str:
        rest = m.group(1)
        if is_environment(m.group(0)):
            return m.group(0)
        first = rest.lstrip("/").split("/", 1)[0]
        if careful and first and not os.path.lexists(os.path.join(tree, first)):
            return m.group(0)
        return tree + rest

    return lambda value: pat.sub(sub, value) if isinstance(value, str) else value


def step_env(s: dict, store: Store, cwd: str, relocate) -> dict[str, str]:
    """The recorded environment of a step, for running it again: secrets from
    the current environment, identity and session variables (HOME, USER,
    terminal, ssh...) from the current one, ROAR_HOME/ROAR_SOCKET of this
    store and daemon, PWD the new working directory, repository paths moved."""
    env = {}
    for k, v in s["env"].items():
        if isinstance(v, dict):
            if k in os.environ:
                env[k] = os.environ[k]
        elif k not in IDENTITY_ENV and k not in ROAR_ENV and not lineage.env_noise(k):
            env[k] = relocate(v)
    for k, v in os.environ.items():
        if k in IDENTITY_ENV or (lineage.env_noise(k) and k in s["env"]):
            env[k] = v
    env["ROAR_HOME"] = str(store.home)
    if "ROAR_SOCKET" in os.environ:
        env["ROAR_SOCKET"] = os.environ["ROAR_SOCKET"]
    env["PWD"] = cwd
    return env


class _Trees:
    """The git worktrees of one reproduction, one per source repository, each
    at the commit (and patch) of the step about to run."""

    def __init__(self, base: str):
        self.base = base
        self.trees: dict[str, dict] = {}

    def checkout(self, store: Store, s: dict) -> str:
        src, commit = s["repo"]["source"], s["commit"]
        patch = ((store.get_run(s["run"]) or {}).get("git") or {}).get("patch") if s["patch"] \
            else None
        want = (commit, hashlib.sha256(patch.encode("utf-8", "surrogateescape")).hexdigest()
                if patch else None)
        t = self.trees.get(src)
        if t is None:
            name = os.path.basename(src.rstrip("/")) or "repo"
            path = os.path.join(self.base, name)
            n = 1
            while os.path.lexists(path) or any(x["path"] == path for x in self.trees.values()):
                n += 1
                path = os.path.join(self.base, f"{name}-{n}")
            p = _git(src, "worktree", "add", "--detach", "--quiet", path, commit)
            if p.returncode != 0:
                raise ReproduceError(f"git worktree add {path} failed: "
                                     f"{p.stderr.decode(errors='replace').strip()}")
            t = self.trees[src] = {"path": path, "src": src, "state": (commit, None)}
        if t["state"] != want:
            if t["state"] != (commit, None):
                p = _git(t["path"], "checkout", "--detach", "--force", "--quiet", commit)
                if p.returncode != 0:
                    raise ReproduceError(f"git checkout {commit[:12]} failed in {t['path']}: "
                                         f"{p.stderr.decode(errors='replace').strip()}")
            if patch:
                p = _git(t["path"], "apply", "--binary", "--whitespace=nowarn",
                         input=patch.encode(errors="surrogateescape"))
                if p.returncode != 0:
                    raise ReproduceError(f"the stored patch of run {s['run'][:10]} does not "
                                         f"apply to {commit[:12]}: "
                                         f"{p.stderr.decode(errors='replace').strip()}")
            t["state"] = want
        return t["path"]

    def path_of(self, s: dict) -> str | None:
        t = self.trees.get(s["repo"]["source"])
        return t["path"] if t else None

    def remove(self) -> None:
        for t in self.trees.values():
            _git(t["src"], "worktree", "remove", "--force", t["path"])
            _git(t["src"], "worktree", "prune")


def _place(src: str, dest: str) -> None:
    """Copy a version into the work tree (a copy, never a link: a step that
    rewrites its input must not change the user's file)."""
    if os.path.lexists(dest):
        if os.path.isdir(dest) and not os.path.islink(dest):
            raise ReproduceError(f"{dest} is a directory in the work tree, a file is needed")
        os.unlink(dest)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.copy2(src, dest)


def _materialize(s: dict, tree: str, steps: dict[int, dict], rebuilt: dict[int, dict],
                 loc: Locator) -> None:
    """Put every input version a step reads at its recorded place in the work
    tree. Inputs outside the repository are read in place."""
    at = f"step {s['index']} ({s['step']})"
    for i in s["inputs"]:
        if not i["inside"]:
            continue
        dest = os.path.join(tree, i["path"])
        h, src = i["hash"], None
        if i["source"] == FROM_STEP:
            p = steps[i["step"]]
            if p["action"] == RUN:
                made = next(o for o in p["outputs"] if o["hash"] == h)
                src = rebuilt[p["index"]][made["abs"]]
                if not os.path.isfile(src):
                    raise ReproduceError(f"{at} reads {i['path']}, which step {p['index']} "
                                         f"({p['step']}) did not make this time")
                if os.path.abspath(src) == os.path.abspath(dest):
                    continue
            else:
                src = i["local"] or loc.find(h, i["size"])
        elif i["source"] in (FROM_GIT, FROM_PATCH):
            if _hash_now(dest) == h:
                continue
            src = loc.find(h, i["size"])
        elif i["source"] == LOCAL:
            src = i["local"] if loc.matches(i["local"], h, i["size"]) else loc.find(h)
        elif i["source"] == EMPTY:
            if not os.path.exists(dest):
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                open(dest, "wb").close()
            continue
        elif i["source"] == UNVERIFIED:
            if os.path.exists(dest):
                continue
            src = i["abs"] if os.path.isfile(i["abs"]) else None
        if src is None:
            raise ReproduceError(f"{at}: no file here holds {i['path']} (content "
                                 f"{(h or '?')[:16]}) any more")
        if h and os.path.isfile(dest) and _hash_now(dest) == h:
            continue
        _place(src, dest)


def _run_of(store: Store, cwd: str, since: str) -> str | None:
    """The run `roar run` recorded for a step: the one started since `since` in
    the step's working directory (inside this reproduction's own work tree)."""
    store.env.set_mapsize(0)  # another process may have grown the map
    for rec in itertools.islice(store.iter_runs(), 500):
        started = rec.get("started_at") or ""
        if started < since:
            break
        if rec.get("cwd") == cwd and rec.get("boot_id") == boot_id():
            return rec["id"]
    return None


def _compare(store: Store, s: dict, new_id: str, tree: str) -> tuple[list[dict], list[str]]:
    """Each recorded output of a step against what the reproduction wrote."""
    new = {}
    root = ((store.get_run(new_id) or {}).get("git") or {}).get("root") or tree
    for f in store.run_files(new_id):
        if f.get("role") == "output" and f.get("kind") in ("data", "code"):
            new[_inside(f["path"], root) or f["path"]] = f
    out = []
    for o in s["outputs"]:
        got = new.pop(o["path"], None)
        rebuilt = got.get("hash") if got else None
        where = os.path.join(tree, o["path"]) if o["inside"] else o["abs"]
        if got is not None and rebuilt is None:
            # a big output may still be hashed in the background: hash it here
            rebuilt = _hash_now(where)
        if got is None:
            # not written again: still counts when the file holds the recorded content
            if o["hash"] and _hash_now(where) == o["hash"]:
                rebuilt = o["hash"]
        if not o["hash"]:
            status = "unverified"
        elif rebuilt == o["hash"]:
            status = "identical"
        elif got is None and rebuilt is None:
            status = "missing"
        else:
            status = "differs"
        out.append({"path": o["path"], "recorded": o["hash"], "rebuilt": rebuilt,
                    "status": status})
    return out, sorted(new)


def _pair_diff(store: Store, orig: str, new: str) -> dict:
    """roar diff of the original run and its reproduction, kept to that pair."""
    doc = lineage.diff(store, ("run", orig), ("run", new))
    doc["changes"] = [c for c in doc["changes"] if c.get("a_run") == orig
                      and c.get("b_run") == new]
    doc["steps"] = [st for st in doc["steps"] if st["a"] == orig and st["b"] == new]
    return doc


def _causes(diff: dict) -> list[dict]:
    """Changes that could explain a different output (not exit status, not noise)."""
    return [c for c in diff["changes"] if c["kind"] not in ("exit",)
            and not (c["kind"] == "env" and c.get("noise"))]


def check_runnable(doc: dict) -> None:
    """Raise ReproduceError (one line) when the plan cannot be run here."""
    if doc["blockers"]:
        more = f" (and {len(doc['blockers']) - 1} more: roar reproduce lists them)" \
            if len(doc["blockers"]) > 1 else ""
        raise ReproduceError(f"cannot reproduce: {doc['blockers'][0]}{more}")
    missing = [x["name"] for x in doc["secrets"] if x["needed"] and not x["supplied"]]
    if missing:
        steps = sorted({i for x in doc["secrets"] if x["name"] in missing for i in x["steps"]})
        raise ReproduceError(
            f"step(s) {', '.join(map(str, steps))} need {', '.join(missing)}, recorded only "
            f"as a keyed hash: set {'it' if len(missing) == 1 else 'them'} in your "
            f"environment and run again")


def execute(store: Store, doc: dict, workdir: str | None = None, keep: bool = False,
            stdout=None, echo=lambda msg: None) -> dict:
    """Run a plan: each step that must run, in order, in a git worktree under
    `roar run`; then compare every rebuilt output with the recorded one. The
    JSON of `roar reproduce REF --run --json` (under "result"). echo(msg) is
    told each step as it starts (the CLI prints it)."""
    check_runnable(doc)
    sources = {s["repo"]["source"] for s in doc["steps"] if s["action"] == RUN}
    if workdir:
        base = os.path.realpath(workdir)
        for src in sources:
            if (base + "/").startswith(os.path.realpath(src) + "/"):
                raise ReproduceError(f"--workdir {workdir} is inside the repository {src}: "
                                     f"give a directory outside it")
        os.makedirs(base, exist_ok=True)
        keep = True
    else:
        base = os.path.realpath(tempfile.mkdtemp(prefix="roar-reproduce-"))
    trees = _Trees(base)
    loc = Locator(store)
    steps = {s["index"]: s for s in doc["steps"]}
    rebuilt: dict[int, dict[str, str]] = {}
    results, failed = [], None
    running = [s for s in doc["steps"] if s["action"] == RUN]
    try:
        for s in doc["steps"]:
            if s["action"] != RUN:
                results.append({"index": s["index"], "step": s["step"], "run": s["run"],
                                "action": s["action"]})
                continue
            tree = trees.checkout(store, s)
            _materialize(s, tree, steps, rebuilt, loc)
            root = s["repo"]["root"]
            home = os.path.realpath(os.path.expanduser("~"))
            careful = (home + "/").startswith(root.rstrip("/") + "/")
            relocate = _relocator(root, tree, careful)
            cwd = os.path.normpath(os.path.join(tree, s["cwd"]))
            argv = [relocate(a) for a in s["command"]]
            env = step_env(s, store, cwd, relocate)
            n = running.index(s) + 1
            echo(f"reproduce step {s['index']} ({n} of {len(running)} to run): "
                 f"{s['step']}: {' '.join(argv)}")
            since = now_iso()
            cmd = _roar_command() + ["run", "--allow-dirty"]
            if s["name"]:
                cmd += ["--name", s["name"]]
            proc = subprocess.Popen(cmd + ["--", *argv], cwd=cwd, env=env, stdout=stdout)
            try:
                code = proc.wait()
            except KeyboardInterrupt:
                proc.wait()
                raise
            new_id = _run_of(store, cwd, since)
            rebuilt[s["index"]] = {o["abs"]: os.path.join(tree, o["path"]) if o["inside"]
                                   else o["abs"] for o in s["outputs"]}
            r = {"index": s["index"], "step": s["step"], "run": s["run"], "action": RUN,
                 "reproduction": new_id, "exit_code": code, "recorded_exit_code": s["exit_code"],
                 "outputs": [], "extra": []}
            results.append(r)
            if new_id is None:
                failed = {"index": s["index"], "message": f"roar run exited {code} without "
                                                          f"recording a run"}
                break
            store.mark_reproduces(new_id, s["run"])
            rec = store.get_run(new_id)
            r["outputs"], r["extra"] = _compare(store, s, new_id, tree)
            r["exit_code"] = rec.get("exit_code")
            if r["exit_code"] != s["exit_code"]:
                failed = {"index": s["index"], "message": f"exit {r['exit_code']}, recorded "
                                                          f"{s['exit_code']}"}
                break
    finally:
        loc.flush()
        if not keep:
            trees.remove()
            shutil.rmtree(base, ignore_errors=True)
    differences = [{"index": r["index"], "step": r["step"], **o} for r in results
                   for o in r.get("outputs", []) if o["status"] in ("differs", "missing")]
    for r in results:
        if r["action"] == RUN:
            r["identical"] = not [o for o in r["outputs"] if o["status"] in ("differs",
                                                                            "missing")]
    first = next((r for r in results if r["action"] == RUN and r.get("reproduction")
                  and (not r["identical"] or (failed and failed["index"] == r["index"]))),
                 None)
    diff = None
    first_doc = None
    if first is not None:
        diff = _pair_diff(store, first["run"], first["reproduction"])
        causes = _causes(diff)
        first_doc = {"index": first["index"], "step": first["step"], "run": first["run"],
                     "reproduction": first["reproduction"],
                     "nondeterministic": not causes and not failed}
    return {"identical": failed is None and not differences, "failed": failed,
            "steps": results, "differences": differences, "first_divergent": first_doc,
            "diff": diff, "workdir": base if keep else None}

