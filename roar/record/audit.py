"""Audit of an agent session while it is recorded: the policy (workspace and
rules), what each event means for it (commands, secret reads, writes outside
the workspace, connects), the alerts it raises, the session-wide kill, the
pre-images of files the session overwrites and the content hashes of the
executables it runs.

The tracker sees every decoded event twice: before the process model has
taken it (to name the file behind an fd that the event closes, or a path
relative to the working directory the event may change) and after (the
model's resolved view). It decides in the recording client's event loop,
so a `kill` rule ends the session a few milliseconds after the violating
syscall (the figure is stored on the alert). What it keeps goes onto the
run document as `audit`; roar/query/audit.py builds the report from it.
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from roar.capture import events as E
from roar.capture.events import FD_MAP_WRITE, FD_WRITE
from roar.record import context
from roar.record.model import (
    AT_FDCWD,
    O_ACCMODE,
    O_CREAT,
    O_DIRECTORY,
    O_PATH,
    O_RDWR,
    O_TRUNC,
    O_WRONLY,
    RunModel,
)

KINDS = ("secret_read", "write_outside", "connect", "exec")
ACTIONS = ("alert", "kill")
# Read by an agent, these are secrets whatever the policy says: the report
# lists such reads even when no rule alerts on them.
DEFAULT_SECRETS = ("~/.ssh/**", "~/.aws/**", "~/.netrc", "~/.git-credentials",
                   "~/.docker/config.json", "~/.kube/config", "~/.config/gcloud/**",
                   "~/.gnupg/**", "~/.pgpass", "**/.env", "id_rsa*", "id_ed25519*",
                   "id_ecdsa*")
# Writes here are no file content (devices, kernel interfaces): never
# "outside the workspace".
PSEUDO_PREFIXES = ("/dev/", "/proc/", "/sys/")
STREAM_MAX = 10_000  # events waiting for the stream writer; beyond, they are skipped


class PolicyError(Exception):
    """A policy file that cannot be used; the message says where and why."""


def _glob_regex(pattern: str) -> re.Pattern:
    """`**` spans directories, `*` and `?` stay within one name."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z")


@dataclass
class PathMatcher:
    """Globs over absolute paths. `~` is each home the session may use; a
    pattern without a slash matches a file name anywhere, `*/name` that name
    in any directory; another relative one is taken from the workspace."""

    patterns: list[str]
    homes: list[str]
    workspace: str
    _names: list[re.Pattern] = field(default_factory=list)
    _paths: list[re.Pattern] = field(default_factory=list)

    def __post_init__(self):
        for p in self.patterns:
            if "/" not in p:
                self._names.append(_glob_regex(p))
                continue
            if p.startswith("~/") or p == "~":
                full = [h.rstrip("/") + p[1:] for h in self.homes]
            elif p.startswith(("/", "**")):
                full = [p]
            elif p.startswith("*/"):  # "*/wget": that name in any directory
                full = ["**" + p[1:]]
            else:
                full = [posixpath.join(self.workspace, p)]
            self._paths.extend(_glob_regex(f) for f in full)

    def match(self, path: str) -> bool:
        if self._names:
            name = path.rpartition("/")[2]
            if any(r.match(name) for r in self._names):
                return True
        return any(r.match(path) for r in self._paths)


@dataclass
class Endpoint:
    """One "CIDR:port" entry of a connect rule (port `*`, N or N-M)."""

    net: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    ports: tuple[int, int] | None
    unix: re.Pattern | None = None

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        t = text.strip()
        if t.startswith(("/", "@")):
            return cls(None, None, _glob_regex(t))
        host, port = t, None
        if t.startswith("["):  # [v6]:port
            host, _, rest = t[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else None
        elif t.count(":") == 1:
            host, port = t.split(":")
        try:
            net = None if host in ("*", "") else ipaddress.ip_network(host, strict=False)
        except ValueError:
            raise PolicyError(f"connect entry {text!r}: not an address or CIDR "
                              f"(use e.g. 10.0.0.0/8:443, [::1]:8080, *:22)") from None
        ports = None
        if port not in (None, "*", ""):
            lo, _, hi = port.partition("-")
            try:
                ports = (int(lo), int(hi or lo))
            except ValueError:
                raise PolicyError(f"connect entry {text!r}: bad port {port!r}") from None
        return cls(net, ports)

    def match(self, ep: dict) -> bool:
        if ep.get("family") == "unix":
            return bool(self.unix and self.unix.match(ep.get("address") or ""))
        if self.unix is not None:
            return False
        if self.ports and not (self.ports[0] <= (ep.get("port") or 0) <= self.ports[1]):
            return False
        if self.net is None:
            return True
        try:
            addr = ipaddress.ip_address(ep["address"])
        except (ValueError, KeyError):
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        return addr.version == self.net.version and addr in self.net


@dataclass
class Rule:
    name: str
    kind: str
    action: str
    match: list[str]
    allow: list[str]
    _match: object = None
    _allow: object = None

    def doc(self) -> dict:
        return {"name": self.name, "kind": self.kind, "action": self.action,
                "match": self.match, "allow": self.allow}


@dataclass
class Policy:
    workspace: str
    rules: list[Rule]
    source: str | None = None
    homes: list[str] = field(default_factory=list)
    workspace_given: bool = False  # named by the policy file (else: git tree or cwd)
    secrets: PathMatcher | None = None

    def doc(self) -> dict:
        return {"source": self.source, "workspace": self.workspace,
                "rules": [r.doc() for r in self.rules]}

    def in_workspace(self, path: str) -> bool:
        w = self.workspace.rstrip("/") or "/"
        return w == "/" or path == w or path.startswith(w + "/")


def homes_of(pid: int | None = None) -> list[str]:
    """The home directories `~` stands for: this process's HOME, the user's
    passwd entry and, for an attached process, its own HOME."""
    out = [os.environ.get("HOME") or "", os.path.expanduser("~")]
    if pid is not None:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                for item in f.read().split(b"\0"):
                    if item.startswith(b"HOME="):
                        out.append(os.fsdecode(item[5:]))
        except OSError:
            pass
    return list(dict.fromkeys(h.rstrip("/") for h in out if h.startswith("/")))


def load_policy(path: str | None, workspace: str, homes: list[str]) -> Policy:
    """The policy in a TOML file (docs/audit.md), or the default one (no
    rules: everything is reported, nothing alerts). workspace: used when the
    file names none (the git work tree or the working directory)."""
    data: dict = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise PolicyError(f"cannot read policy {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise PolicyError(f"policy {path} is not valid TOML: {e}") from None
    ws = data.get("workspace", workspace)
    if not isinstance(ws, str) or not ws:
        raise PolicyError(f"policy {path}: workspace must be a path")
    ws = os.path.expanduser(ws)
    if not ws.startswith("/"):
        base = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
        ws = os.path.join(base, ws)
    ws = posixpath.normpath(ws)
    unknown = set(data) - {"workspace", "rule", "secrets"}
    if unknown:
        raise PolicyError(f"policy {path}: unknown key(s) {', '.join(sorted(unknown))}")
    rules = []
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        raise PolicyError(f"policy {path}: rules are [[rule]] tables")
    for i, r in enumerate(raw_rules, 1):
        rules.append(_rule(r, i, path, ws, homes))
    extra = data.get("secrets", [])
    secret_globs = list(DEFAULT_SECRETS) + list(extra) + [
        g for r in rules if r.kind == "secret_read" for g in r.match]
    return Policy(ws, rules, source=os.path.abspath(path) if path else None, homes=homes,
                  workspace_given="workspace" in data,
                  secrets=PathMatcher(secret_globs, homes, ws))


def _rule(r, i: int, path: str | None, ws: str, homes: list[str]) -> Rule:
    where = f"policy {path}, rule {i}"
    if not isinstance(r, dict):
        raise PolicyError(f"{where}: not a table")
    unknown = set(r) - {"name", "kind", "action", "match", "allow"}
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    kind = r.get("kind")
    if kind not in KINDS:
        raise PolicyError(f"{where}: kind must be one of {', '.join(KINDS)}")
    action = r.get("action", "alert")
    if action not in ACTIONS:
        raise PolicyError(f"{where}: action must be alert or kill")
    lists = {}
    for key in ("match", "allow"):
        v = r.get(key, [])
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise PolicyError(f"{where}: {key} must be a list of strings")
        lists[key] = v
    if kind in ("secret_read", "exec") and not lists["match"]:
        raise PolicyError(f"{where}: a {kind} rule needs match = [...]")
    rule = Rule(str(r.get("name") or f"{kind}#{i}"), kind, action, lists["match"],
                lists["allow"])
    if kind == "connect":
        rule._match = [Endpoint.parse(x) for x in lists["match"]]
        rule._allow = [Endpoint.parse(x) for x in lists["allow"]]
    else:
        rule._match = PathMatcher(lists["match"], homes, ws)
        rule._allow = PathMatcher(lists["allow"], homes, ws)
    return rule


def _fires(rule: Rule, subject) -> bool:
    if rule.kind == "connect":
        if rule._match and not any(e.match(subject) for e in rule._match):
            return False
        return not any(e.match(subject) for e in rule._allow)
    if rule.kind == "exec":
        exe, argv0 = subject
        return ((rule._match.match(exe or "") or bool(argv0) and rule._match.match(argv0))
                and not rule._allow.match(exe or ""))
    if rule.kind == "write_outside":
        return ((not rule.match or rule._match.match(subject))
                and not rule._allow.match(subject))
    return rule._match.match(subject) and not rule._allow.match(subject)


class EventStream:
    """The session's live events as JSON lines in a file under ROAR_HOME
    (`roar watch` tails it). The model's thread only appends to a bounded
    queue; a writer thread does the I/O, so a slow disk or reader never
    stalls capture: past STREAM_MAX waiting events, events are counted as
    skipped and the stream says so. The stored record stays complete."""

    def __init__(self, path: Path):
        import json

        self._dumps = json.JSONEncoder(separators=(",", ":")).encode
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.f = open(path, "w", buffering=1 << 16)
        self.queue: deque[dict] = deque()
        self.skipped = 0
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._write, name="roar-stream", daemon=True)
        self._thread.start()

    def put(self, ev: dict) -> None:
        if len(self.queue) >= STREAM_MAX:
            self.skipped += 1
            return
        self.queue.append(ev)
        self._wake.set()

    def _write(self) -> None:
        reported = 0
        while True:
            self._wake.wait(0.2)
            self._wake.clear()
            while self.queue:
                if self.skipped != reported:
                    self.f.write(self._dumps({"type": "skipped", "count":
                                              self.skipped - reported}) + "\n")
                    reported = self.skipped
                self.f.write(self._dumps(self.queue.popleft()) + "\n")
            if self.skipped != reported:
                self.f.write(self._dumps({"type": "skipped",
                                          "count": self.skipped - reported}) + "\n")
                reported = self.skipped
            self.f.flush()
            if self._closed and not self.queue:
                return

    def close(self, last: dict | None = None) -> None:
        if last is not None:
            self.queue.append(last)
        self._closed = True
        self._wake.set()
        self._thread.join()
        self.f.close()


def stream_path(home: Path, run_id: str) -> Path:
    return home / "live" / f"{run_id}.jsonl"


class AuditTracker:
    """What one audited session did, as it happens."""

    def __init__(self, recorder, policy: Policy, kill=None, stream: EventStream | None = None,
                 kind: str = "run"):
        self.recorder = recorder
        self.model: RunModel = recorder.model
        self.policy = policy
        self.kill = kill  # callable(): ends the whole session (the run cgroup)
        self.stream = stream
        self.kind = kind
        self.run_id = recorder.run["id"]
        self.wall_offset = recorder.wall_offset
        self.alerts: list[dict] = []
        self.killed_by: str | None = None
        self.kill_decided_ns: int | None = None
        self.kill_event_ns: int | None = None
        self.secret_reads: dict[str, None] = {}
        self.outside: dict[str, None] = {}
        self.renamed: list[dict] = []
        self.exe_jobs: dict[str, object] = {}
        self.before: dict[str, object] = {}  # path -> hash job of its pre-image, or a status
        self._n_connects = 0
        self.attached: list[dict] = []  # roar attach: the processes taken over
        self._rules = {k: [r for r in policy.rules if r.kind == k] for k in KINDS}
        self._key: bytes | None = None  # the store's redaction key, read at first use

    def _argv(self, argv: list[str]) -> list:
        """argv as the session shows and stores it: secrets redacted, as in the
        run's process records (alerts and the live stream carry commands too)."""
        if self._key is None:
            self._key = context.store_key(self.recorder.store)
        return context.redact_argv(argv, self._key)

    def adopted(self, snap: dict) -> None:
        """A process that was running when roar attached (its snapshot)."""
        snap = {**snap, "argv": self._argv(snap["argv"] or [])}
        self.attached.append({"pid": snap["pid"], "ppid": snap["ppid"], "argv": snap["argv"],
                              "exe": snap["exe"], "cwd": snap["cwd"]})
        exe = snap["exe"]
        if exe and exe not in self.exe_jobs:
            self.exe_jobs[exe] = self.recorder.hasher.submit(exe)
        if self.stream is not None:
            self.stream.put({"type": "attached", "run": self.run_id, "pid": snap["pid"],
                             "ts": _iso(time.time_ns()), "argv": snap["argv"], "exe": exe})

    # -- the event loop ---------------------------------------------------------

    def feed_raw(self, raw: bytes) -> None:
        ev = E.decode(raw)
        pre = self._before(ev)
        self.model.feed(ev)
        self._after(ev, pre)

    def _fd_path(self, ev) -> str | None:
        p = self.model.live.get(ev.tgid)
        entry = p.fds.get(ev.fd) if p is not None else None
        return entry.file.path if entry is not None else None

    def _peek(self, ev, dirfd: int, path: str | None) -> str | None:
        """A path as the model will resolve it, without its side effects."""
        if path is None or ev.flags & E.EVF_FAULT:
            return None
        if path.startswith("/"):
            return posixpath.normpath(path)
        p = self.model.live.get(ev.tgid)
        if p is None:
            return None
        if dirfd == AT_FDCWD:
            base = p.cwd
        else:
            entry = p.fds.get(dirfd)
            base = entry.file.path if entry else None
        return posixpath.normpath(posixpath.join(base, path)) if base else None

    def _before(self, ev):
        t = ev.type
        if t == E.EV_OPEN:
            return ev.path is not None and self._peek(ev, ev.ret, ev.path) not in self.model.paths
        if t in (E.EV_WRITE, E.EV_FTRUNCATE):
            return self._fd_path(ev)
        if t == E.EV_CLOSE:
            return self._fd_path(ev) if ev.ret & FD_WRITE else None
        if t == E.EV_MMAP:
            return self._fd_path(ev) if ev.a0 & FD_MAP_WRITE else None
        if t in (E.EV_RENAME, E.EV_LINK):
            return self._peek(ev, ev.fd, ev.path), self._peek(ev, ev.dirfd2, ev.path2)
        if t == E.EV_UNLINK:
            return self._peek(ev, ev.fd, ev.path)
        if t == E.EV_TRUNCATE:
            return self._peek(ev, AT_FDCWD, ev.path)
        return None

    def _after(self, ev, pre) -> None:
        t = ev.type
        if t == E.EV_OPEN:
            self._on_open(ev, new=bool(pre))
        elif t in (E.EV_WRITE, E.EV_CLOSE, E.EV_MMAP, E.EV_FTRUNCATE, E.EV_TRUNCATE):
            if pre:
                self._wrote(ev, pre, "written")
        elif t == E.EV_EXEC_RET:
            if ev.ret == 0:
                self._on_exec(ev)
        elif t == E.EV_CONNECT:
            while self._n_connects < len(self.model.connects):
                self._on_connect(ev, self.model.connects[self._n_connects])
                self._n_connects += 1
        elif t == E.EV_RENAME:
            old, new = pre
            if old and new:
                self.renamed.append({"from": old, "to": new})
                self._emit(ev, "file", path=new, op="renamed", **{"from": old})
                self._outside(ev, old, "renamed away")
                self._outside(ev, new, "renamed to")
        elif t == E.EV_LINK:
            if pre[1]:
                self._wrote(ev, pre[1], "linked")
        elif t == E.EV_UNLINK:
            if pre:
                self._emit(ev, "file", path=pre, op="deleted")
                self._outside(ev, pre, "deleted")

    def _on_open(self, ev, new: bool) -> None:
        p = self.model.live.get(ev.tgid)
        entry = p.fds.get(ev.fd) if p is not None else None
        path = entry.file.path if entry is not None else None
        flags = ev.a0
        if path is None or flags & (O_PATH | O_DIRECTORY):
            return
        acc = flags & O_ACCMODE
        if acc != O_WRONLY:
            self._emit(ev, "file", path=path, op="read")
            if self.policy.secrets.match(path) and path not in self.secret_reads:
                self.secret_reads[path] = None
                for rule in self._rules["secret_read"]:
                    if _fires(rule, path):
                        self._alert(ev, rule, f"read {path}")
        if acc in (O_WRONLY, O_RDWR):
            if path not in self.before:
                s = self.model.paths.get(path)
                if s is not None and s.early_hash is not None:
                    # read first: the version it read is what was there
                    self.before[path] = (s.early_hash, s.early_ts)
                elif flags & O_TRUNC:
                    self.before[path] = "truncated at open"
                elif not new and s is not None and s.modified_ts is not None:
                    self.before[path] = "changed by the session before"
                elif not path.startswith(PSEUDO_PREFIXES):
                    self.before[path] = (self.recorder.hasher.submit(path), ev.ts)
            if flags & (O_TRUNC | O_CREAT) or acc == O_WRONLY:
                self._wrote(ev, path, "opened for writing")

    def _wrote(self, ev, path: str, what: str) -> None:
        self._emit(ev, "file", path=path, op="written")
        self._outside(ev, path, what)

    def _outside(self, ev, path: str, what: str) -> None:
        if (path in self.outside or path.startswith(PSEUDO_PREFIXES)
                or self.policy.in_workspace(path)):
            return
        self.outside[path] = None
        for rule in self._rules["write_outside"]:
            if _fires(rule, path):
                self._alert(ev, rule, f"{what} {path} (outside {self.policy.workspace})")

    def _on_exec(self, ev) -> None:
        p = self.model.live.get(ev.tgid)
        if p is None:
            return
        exe = p.exe
        if exe and exe not in self.exe_jobs:
            self.exe_jobs[exe] = self.recorder.hasher.submit(exe)
        argv = self._argv(p.argv)
        self._emit(ev, "exec", argv=argv, exe=exe)
        argv0 = p.argv[0] if p.argv else None
        for rule in self._rules["exec"]:
            if _fires(rule, (exe, argv0)):
                self._alert(ev, rule, f"exec {exe} {' '.join(map(str, argv[:8]))}".rstrip())

    def _on_connect(self, ev, ep: dict) -> None:
        self._emit(ev, "connect", family=ep.get("family"), address=ep.get("address"),
                   port=ep.get("port"))
        for rule in self._rules["connect"]:
            if ep.get("family") == "unix" and not any(e.unix for e in rule._match):
                continue  # local IPC (journald, nscd) is not network, unless named
            if _fires(rule, ep):
                where = (ep["address"] if ep.get("port") is None
                         else f"{ep['address']}:{ep['port']}")
                self._alert(ev, rule, f"connect {where}")

    # -- alerts and the kill --------------------------------------------------------

    def _alert(self, ev, rule: Rule, detail: str) -> None:
        now = time.monotonic_ns()
        alert = {"rule": rule.name, "kind": rule.kind, "action": rule.action,
                 "detail": detail, "pid": ev.tgid,
                 "ts": _iso(ev.ts + self.wall_offset), "ts_ns": ev.ts + self.wall_offset,
                 "decided_ms": round((now - ev.ts) / 1e6, 3)}
        self.alerts.append(alert)
        self._emit(ev, "alert", **{k: alert[k] for k in ("rule", "kind", "action", "detail")})
        if rule.action == "kill" and self.killed_by is None:
            self.killed_by = rule.name
            self.kill_event_ns = ev.ts
            if self.kill is not None:
                self.kill()
            self.kill_decided_ns = time.monotonic_ns()

    def _emit(self, ev, type_: str, **fields) -> None:
        if self.stream is not None:
            self.stream.put({"type": type_, "run": self.run_id, "pid": ev.tgid,
                             "ts": _iso(ev.ts + self.wall_offset), **fields})

    # -- the end --------------------------------------------------------------------

    def _changed_before(self, path: str, res) -> bool:
        s = self.model.paths.get(path)
        return bool(s and s.modified_ts is not None and res.finished_ns > s.modified_ts)

    def _from_git(self, before: dict) -> None:
        """Pre-images userspace could not hash (truncated at open, rewritten at
        once) of files tracked by git, when the work tree held HEAD's version
        at the start: that version is HEAD's blob."""
        git = self.recorder.run.get("git")
        if not git or not git.get("commit"):
            return
        root = git["root"].rstrip("/") + "/"
        dirty = _changed_paths(git.get("patch")) | set(git.get("untracked") or {})
        wanted = {p[len(root):]: p for p, b in before.items()
                  if b["hash"] is None and p.startswith(root) and b["status"] != "vanished"}
        wanted = {rel: p for rel, p in wanted.items() if rel not in dirty}
        if not wanted:
            return
        import subprocess

        import xxhash

        names = list(wanted)
        proc = subprocess.run(["git", "-C", git["root"], "cat-file", "--batch"],
                              input="".join(f"{git['commit']}:{n}\n" for n in names).encode(),
                              capture_output=True)
        out, pos = proc.stdout, 0
        for rel in names:
            nl = out.find(b"\n", pos)
            if nl < 0:
                break
            head = out[pos:nl].split()
            pos = nl + 1
            if len(head) != 3 or head[1] != b"blob":
                continue  # "missing": not tracked at HEAD
            size = int(head[2])
            digest = xxhash.xxh3_128(out[pos:pos + size]).hexdigest()
            pos += size + 1
            before[wanted[rel]] = {"hash": digest, "status": "HEAD's version (git)"}

    def finish(self, killed_at_ns: int | None = None) -> dict:
        """The audit document stored on the run (before the recorder's own end,
        which stops the hasher)."""
        rec = self.recorder
        git_after = None
        git = rec.run.get("git")
        if git:
            from roar.record import context

            try:
                after = context.git_state(git["root"], allow_dirty=True)
            except context.GitError:
                after = None
            if after:
                git_after = {"commit": after["commit"], "branch": after["branch"],
                             "dirty": after["dirty"],
                             "untracked": sorted(after["untracked"] or {})}
        exe_hashes = {}
        for exe, job in self.exe_jobs.items():
            res = rec._result(job)
            exe_hashes[exe] = res.hash if res is not None else None
        before = {}
        for path, item in self.before.items():
            if isinstance(item, str):
                before[path] = {"hash": None, "status": item}
                continue
            job, opened = item
            res = rec._result(job)
            if res is None:
                before[path] = {"hash": None, "status": "not hashed in time"}
            elif res.hash and (self._changed_before(path, res)
                               or res.ctime_ns is not None
                               and res.ctime_ns > opened + self.wall_offset):
                # the session wrote it before userspace could hash it: that
                # would be the new version, not the pre-image
                before[path] = {"hash": None, "status": "changed before it could be hashed"}
            elif res.hash:
                before[path] = {"hash": res.hash, "status": "ok"}
            else:
                # vanished: nothing was there before the session made it
                before[path] = {"hash": None, "status": res.status}
        self._from_git(before)
        created, deleted = [], []
        for path, s in self.model.paths.items():
            if path.startswith(PSEUDO_PREFIXES):
                continue
            made = s.create_ts is not None and rec._created_by_run(s, rec._result(s.early_hash))
            if made and not s.deleted:
                created.append(path)
            elif s.deleted and not made and not s.renamed_from and (
                    s.first == "read" or path in self.before):
                deleted.append(path)
        doc = {"kind": self.kind, "policy": self.policy.doc(), "alerts": self.alerts,
               "attached": self.attached,
               "secret_reads": list(self.secret_reads), "outside_workspace": list(self.outside),
               "renamed": self.renamed, "created": sorted(created), "deleted": sorted(deleted),
               "before": before, "exe_hashes": exe_hashes, "killed_by": self.killed_by,
               "git_after": git_after,
               "stream_skipped": self.stream.skipped if self.stream else 0}
        if self.killed_by is not None:
            doc["kill"] = {"rule": self.killed_by,
                           "decided_ms": round((self.kill_decided_ns - self.kill_event_ns)
                                               / 1e6, 3)}
            if killed_at_ns:
                doc["kill"]["killed_ms"] = round((killed_at_ns - self.kill_event_ns) / 1e6, 3)
        return doc


def _changed_paths(patch: str | None) -> set[str]:
    """Paths a stored `git diff HEAD` patch touches."""
    out = set()
    for line in (patch or "").splitlines():
        if line.startswith("diff --git a/"):
            a, _, b = line[len("diff --git a/"):].partition(" b/")
            out.update((a, b))
    return out


def _iso(wall_ns: int) -> str:
    t = time.gmtime(wall_ns // 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{wall_ns % 1_000_000_000 // 1000:06d}Z"
