"""The run context: git state, environment (secrets redacted), host, GPUs and
the Python packages of the interpreters a run used."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from roar.record import ids

SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL|AUTH|^AWS_", re.I)
SECRET_VALUE = re.compile(
    r"^(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,}|hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_\-]{16,}"
    r"|xox[abpr]-[A-Za-z0-9\-]{10,}|(?:AKIA|ASIA)[A-Z0-9]{16}|glpat-[A-Za-z0-9_\-]{20})$"
)


class GitError(Exception):
    """The working tree is not in a state a run may start from."""


GIT = ("git", "-c", "core.hooksPath=/dev/null")  # the user's hooks never run for roar


def git(cwd: str, *args: str, input: bytes | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    """One git command, the way roar runs git everywhere (recording, lineage,
    reproduce): output captured as bytes, hooks off; raises OSError when git
    cannot be started and subprocess.TimeoutExpired past timeout."""
    return subprocess.run([*GIT, *args], cwd=cwd, input=input, capture_output=True,
                          stdin=None if input is not None else subprocess.DEVNULL,
                          timeout=timeout, check=False)


def _git_many(cwd: str, *commands: tuple[str, ...],
              errors: list | None = None) -> list[str | None]:
    """Several read-only git commands started at once (each costs a process
    start; `roar run` waits for them before the workload starts). `errors`,
    when given, gets git's message for each command that failed (None where it
    did not, or where git is not installed)."""
    procs = []
    for args in commands:
        try:
            procs.append(subprocess.Popen([*GIT, *args], cwd=cwd, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE if errors is not None
                                          else subprocess.DEVNULL, stdin=subprocess.DEVNULL))
        except OSError:
            procs.append(None)
    out: list[str | None] = []
    for p in procs:
        if p is None:
            out.append(None)
            if errors is not None:
                errors.append(None)
            continue
        try:
            data, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            data, err = None, b"git did not answer within 60 s"
        if errors is not None:
            errors.append(None if p.returncode == 0 and data is not None else
                          " ".join((err or b"").decode(errors="replace").split())
                          or f"git {' '.join(p.args[1:])} exited {p.returncode}")
        out.append(data.decode(errors="surrogateescape")
                   if data is not None and p.returncode == 0 else None)
    return out


def _git(cwd: str, *args: str) -> str | None:
    """One read-only git command's output; None if it failed."""
    return _git_many(cwd, args)[0]


def git_root(cwd: str) -> str | None:
    top = _git(cwd, "rev-parse", "--show-toplevel")
    return top.strip() if top else None


def git_state(cwd: str, allow_dirty: bool, hash_file=None) -> dict | None:
    """Commit, branch, remote and dirtiness of the repo around cwd (None outside git).

    Raises GitError listing the changes when the tree is dirty and allow_dirty
    is false: a run must be reproducible from its commit. A git failure other
    than "not a repository" (dubious ownership, a broken index...) is refused
    with git's own reason too: the dirty-tree check must not be skipped
    silently; allow_dirty runs without git state then."""
    # porcelain status paths are relative to the top level whatever the cwd
    errors: list = []
    top, commit, branch, remote, status = _git_many(
        cwd, ("rev-parse", "--show-toplevel"), ("rev-parse", "--verify", "-q", "HEAD"),
        ("symbolic-ref", "--short", "-q", "HEAD"), ("remote", "get-url", "origin"),
        ("status", "--porcelain=v1", "-z", "--untracked-files=all"), errors=errors)
    # HEAD, the branch and the remote may rightly be missing; the top level
    # and the status may not, inside a repository
    failed = errors[0] if not top else errors[4] if status is None else None
    if failed and not (not top and "not a git repository" in failed):
        if allow_dirty:
            return None
        raise GitError(f"git failed in {cwd}: {failed} (fix it, or pass --allow-dirty or "
                       f"--no-git to run without git state)")
    if not top:
        return None
    root = top.strip()
    commit = commit.strip() if commit else None
    branch = branch.strip() if branch else None
    remote = remote.strip() if remote else None
    status = status or ""
    entries = [e for e in status.split("\0") if e]
    changes, untracked = [], []
    skip_next = False
    for e in entries:
        if skip_next:  # rename source path follows a rename entry
            skip_next = False
            continue
        code, path = e[:2], e[3:]
        if code[0] in "RC":
            skip_next = True
        (untracked if code == "??" else changes).append(path)
    dirty = bool(changes or untracked)
    if dirty and not allow_dirty:
        listing = "\n".join([f"  modified: {p}" for p in changes[:20]]
                            + [f"  untracked: {p}" for p in untracked[:20]])
        more = len(changes) + len(untracked) - min(len(changes), 20) - min(len(untracked), 20)
        if more > 0:
            listing += f"\n  ... and {more} more"
        head = "has no commits yet" if commit is None else "has uncommitted changes"
        raise GitError(f"the git work tree at {root} {head}; commit them or pass "
                       f"--allow-dirty (the patch is then stored with the run):\n{listing}")
    patch = None
    untracked_hashes = None
    if dirty:
        patch = _git(root, "diff", "--binary", "HEAD") if commit else None
        untracked_hashes = {}
        for p in untracked:
            untracked_hashes[p] = hash_file(os.path.join(root, p)) if hash_file else None
    return {"root": root, "commit": commit, "branch": branch, "remote": remote,
            "dirty": dirty, "patch": patch, "untracked": untracked_hashes,
            "detached": commit is not None and branch is None}


def tracked_files(root: str) -> set[str]:
    out = _git(root, "ls-files", "-z")
    return set(out.split("\0")) - {""} if out else set()


def store_key(store) -> bytes:
    """The per-store key of keyed hashes of secrets (created once)."""
    key = store.meta_get("redaction_key")
    if key is None:
        key = os.urandom(32)
        store.meta_put("redaction_key", key)
    return key


def is_secret(name: str, value: str) -> bool:
    return bool(SECRET_NAME.search(name) or SECRET_VALUE.match(value))


def redact(value: str, key: bytes) -> dict:
    import hashlib
    import hmac

    return {"redacted": "hmac-sha256:" + hmac.new(key, value.encode(errors="surrogateescape"),
                                                   hashlib.sha256).hexdigest()}


# the password of a URL's userinfo (postgres://user:PASSWORD@host/db); the rest of
# the URL stays readable
URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*):([^/\s@]+)@")


def _url_passwords(value: str, key: bytes) -> str:
    return URL_PASSWORD.sub(lambda m: f"{m[1]}:{redact(m[2], key)['redacted']}@", value)


def environment(env: dict[str, str], key: bytes) -> dict:
    return {k: (redact(v, key) if is_secret(k, v) else _url_passwords(v, key))
            for k, v in sorted(env.items())}


def redact_argv(argv: list[str], key: bytes) -> list:
    """argv with secrets replaced: token-looking values, the value of a secret-named
    option (--token=X and --token X) and the passwords of URLs."""
    out = []
    secret_option = False  # the previous argument was --token, --password, ...
    for a in argv:
        was_option, secret_option = secret_option, False
        if a.startswith("-"):
            name, eq, value = a.partition("=")
            if eq and value and is_secret(name, value):
                out.append(f"{name}={redact(value, key)['redacted']}")
                continue
            secret_option = not eq and a.startswith("--") and bool(SECRET_NAME.search(a))
        elif was_option or SECRET_VALUE.match(a):
            out.append(redact(a, key)["redacted"])
            continue
        out.append(_url_passwords(a, key))
    return out


def host() -> dict:
    u = os.uname()
    return {"host": ids.hostname(), "boot_id": ids.boot_id(), "kernel": u.release,
            "machine": u.machine, "os": _os_release()}


def _os_release() -> str | None:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return None


def gpus() -> list[dict] | None:
    import shutil

    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=index,name,uuid,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    rows = []
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 5:
            keys = ("index", "name", "uuid", "memory", "driver")
            rows.append(dict(zip(keys, parts, strict=True)))
    return rows


_SITE = re.compile(r"^(.*/(?:site|dist)-packages)/([^/]+)")
_DIST = re.compile(r"^(.+?)-([^-]+)\.(?:dist-info|egg-info)$")


def _top_names(site: str, dist_dir: str) -> set[str]:
    """Top-level import names a distribution installs (top_level.txt, else RECORD)."""
    base = os.path.join(site, dist_dir)
    try:
        with open(os.path.join(base, "top_level.txt")) as f:
            return {line.strip() for line in f if line.strip()}
    except OSError:
        pass
    names = set()
    try:
        with open(os.path.join(base, "RECORD")) as f:
            for line in f:
                first = line.split(",", 1)[0].split("/", 1)[0]
                if first and not first.endswith((".dist-info", ".data")) and first != "..":
                    names.add(first[:-3] if first.endswith(".py") else first)
    except OSError:
        pass
    return names


def packages(paths) -> dict[str, str]:
    """Name -> version of the distributions the run actually imported from.

    Site-packages directories and the top-level names used in them come from
    the files the run opened, so only what the traced interpreters loaded is
    reported, not everything installed beside it."""
    used: dict[str, set[str]] = {}
    for p in paths:
        m = _SITE.match(p)
        if m:
            top = m.group(2)
            if top.endswith((".py", ".so")):
                top = top.split(".", 1)[0]
            used.setdefault(m.group(1), set()).add(top)
    found: dict[str, str] = {}
    for site, tops in sorted(used.items()):
        try:
            names = os.listdir(site)
        except OSError:
            continue
        for n in names:
            m = _DIST.match(n)
            if not m:
                continue
            # only what was imported counts: importlib.metadata scans every
            # dist-info (entry points), which says nothing about use
            if tops & _top_names(site, n):
                found.setdefault(m.group(1).replace("_", "-").lower(), m.group(2))
    return dict(sorted(found.items()))
