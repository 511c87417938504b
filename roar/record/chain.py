"""Tamper evidence: every stored run is appended to a hash chain whose
entries and head are kept by roard, as root, where the traced user cannot
rewrite them (/var/lib/roar/chain/<uid>, or next to a private socket).

An entry is (store, run id, digest of the run's stored records, head), with
head = sha256(previous head, store, run, digest). `roar verify` recomputes
each digest from the store and compares: a record edited or deleted after
it was chained is found. What is digested is the part of a record that is
final when the run is stored - fields filled in later by roar itself
(tracker links, a training request's check, late hashes of files still
pending at the end) are left out, so roar's own updates never read as
tampering. Two versions of the digest:

- version 2 (a run with no hash pending at its end: nothing in its file and
  process records changes after it is stored): the run document's final part
  as canonical JSON, and the SHA-256 of its file records' and process
  records' stored bytes. Any byte of them edited is found, and the digest
  costs one pass of SHA-256 over those bytes, not a canonical JSON encoding
  of 20,000 records.
- version 1 (every entry chained before version 2, and runs with pending
  hashes, whose file records the late hash rewrites): canonical JSON of the
  run document's final part, of every file record's path/role/kind/mode/hash/
  size/status (less the late fields of pending paths) and of every process.

An entry keeps its format (roard checks it, older entries stay as they are):
its digest is version 2's or version 1's, and `roar verify` accepts the one
that matches. Version 2 hashes a prefix of its own before anything else, so
no set of records can give the same digest under both versions by accident.
"""

from __future__ import annotations

import os

from roar.capture import jsonc
from roar.record.sha256 import sha256

DEFAULT_STATE_DIR = "/var/lib/roar"  # a str: roar run imports no pathlib
GENESIS = "0" * 64
# Run document fields roar itself may change after the run is stored.
VOLATILE_RUN = frozenset({"links", "dataset_mismatch", "dataset_check", "hash_progress",
                          "request", "outbox", "synced"})
# ...and those a late hash settles (only when hashes were pending at the end).
PENDING_RUN = frozenset({"complete", "reasons", "incomplete_reasons", "counts"})
FILE_FIELDS = ("path", "role", "kind", "mode", "hash", "size", "status")
PENDING_FILE = frozenset({"hash", "size", "status"})


def _canon(obj) -> bytes:
    return jsonc.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                       default=str).encode()


V2_PREFIX = b"roar chain digest 2\n"


def pending_paths(files: list[dict]) -> list[str]:
    return sorted(f["path"] for f in files if f.get("status") == "pending")


def digest(run: dict, files: list[dict], procs: list[dict], pending: list[str]) -> str:
    """The digest of a stored run's final part (see the module docstring)."""
    skip = VOLATILE_RUN | (PENDING_RUN if pending else frozenset())
    late = set(pending)
    doc = {k: v for k, v in run.items() if k not in skip}
    fl = []
    for f in files:
        rec = {k: f.get(k) for k in FILE_FIELDS}
        if f["path"] in late:
            for k in PENDING_FILE:
                rec.pop(k)
        fl.append(rec)
    fl.sort(key=lambda r: (r["path"], str(r.get("role"))))
    return sha256(_canon(doc) + _canon(fl) + _canon(procs)).hexdigest()


def digest_stored(run: dict, files_raw: bytes, procs_raw: bytes,
                  parts: tuple[bytes, bytes] | None = None) -> str:
    """Version 2 of the digest (see the module docstring): the run document's
    final part, and the stored bytes of its file and process records (parts:
    their SHA-256 digests, when the caller has them: StoredDigests)."""
    doc = {k: v for k, v in run.items() if k not in VOLATILE_RUN}
    h = sha256(V2_PREFIX)
    h.update(sha256(_canon(doc)).digest())
    if parts is None:
        parts = sha256(files_raw).digest(), sha256(procs_raw).digest()
    h.update(parts[0])
    h.update(parts[1])
    return h.hexdigest()


class StoredDigests:
    """The SHA-256 digests of a run's file and process records' stored bytes
    (digest_stored's parts: ~8 MB for 20,000 files), computed in a thread of
    their own while the store writes and syncs those bytes (hashlib hashes
    without the interpreter's lock; the commit waits on the disk)."""

    def __init__(self, files_raw: bytes, procs_raw: bytes):
        self._raws: tuple[bytes, bytes] | None = (files_raw, procs_raw)
        self._parts: tuple[bytes, bytes] | None = None
        # a bare thread, its end a lock: threading.Thread.start waits until the
        # thread runs (a hand-off of the interpreter's lock: up to milliseconds
        # on a busy machine, at the end of every run)
        import _thread

        self._done = _thread.allocate_lock()
        self._done.acquire()
        try:
            _thread.start_new_thread(self._run, ())
        except RuntimeError:  # no thread to be had (pids.max): hashed when asked
            self._done.release()

    def _run(self) -> None:
        try:
            self._hash()
        finally:
            self._done.release()

    def _hash(self) -> None:
        files_raw, procs_raw = self._raws
        self._parts = sha256(files_raw).digest(), sha256(procs_raw).digest()

    def parts(self) -> tuple[bytes, bytes]:
        with self._done:  # the thread's hashes, or none (no thread, or it failed)
            pass
        if self._parts is None:
            self._hash()
        self._raws = None
        return self._parts


def run_digest(store, run_id: str, files: list[dict] | None = None,
               procs: list[dict] | None = None,
               stored: tuple[bytes, bytes] | None = None,
               pending: list[str] | None = None,
               digests: StoredDigests | None = None) -> tuple[str, list[str]] | None:
    """(digest, pending paths) of a run as the store holds it now: version 2
    unless a hash is pending. files, procs: its file and process records as
    just stored (the recorder's), and stored: their bytes in the store, when the
    caller has them (reading 20,000 records back costs ~50 ms); pending:
    pending_paths(files), when the caller has it; digests: the stored bytes'
    digests being computed (StoredDigests of stored). The run document is always
    read (another writer may have added to it)."""
    run = store.get_run(run_id)
    if run is None:
        return None
    if pending is None:
        if files is None:
            files = store.run_files(run_id)
        pending = pending_paths(files)
    if not pending:  # the records' bytes: files not looked at
        if digests is not None and stored is not None:
            return digest_stored(run, *stored, digests.parts()), pending
        files_raw, procs_raw = stored or store.raw_records(run_id)
        return digest_stored(run, files_raw, procs_raw), pending
    if files is None:
        files = store.run_files(run_id)
    if procs is None:
        procs = store.run_procs(run_id)
    return digest(run, files, procs, pending), pending


def _head(prev: str, home: str, run_id: str, dig: str) -> str:
    return sha256(f"{prev}\n{home}\n{run_id}\n{dig}".encode()).hexdigest()


# -- roard's side: the chain files ---------------------------------------------------


def state_dir(sock: os.PathLike, default_sock: os.PathLike):
    """Where roard keeps its root-owned state (a Path): /var/lib/roar for the
    system daemon, beside the socket for a private one (tests), or ROARD_STATE_DIR."""
    from pathlib import Path

    env = os.environ.get("ROARD_STATE_DIR")
    if env:
        return Path(env)
    return Path(DEFAULT_STATE_DIR) if sock == default_sock else Path(sock).parent / "state"


class ChainFile:
    """One user's chain: JSON lines, appended under roard's lock."""

    def __init__(self, base: os.PathLike, uid: int):
        from pathlib import Path

        self.dir = Path(base) / "chain"
        self.path = self.dir / str(uid)

    def entries(self) -> list[dict]:
        try:
            with open(self.path) as f:
                return [jsonc.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def last(self) -> dict | None:
        """The last entry, read from the end of the file: appending costs the
        same after 10,000 runs as after one."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            end = os.fstat(fd).st_size
            size = 4096
            while True:
                start = max(0, end - size)
                tail = os.pread(fd, end - start, start)
                lines = [x for x in tail.split(b"\n") if x.strip()]
                # a whole line: one with a newline before it, or the file's first
                if lines and (start == 0 or len(lines) > 1):
                    return jsonc.loads(lines[-1])
                if start == 0:
                    return None
                size *= 4
        finally:
            os.close(fd)

    def append(self, home: str, run_id: str, dig: str, pending: list[str]) -> dict:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        last = self.last()
        prev = last["head"] if last else GENESIS
        entry = {"seq": last["seq"] + 1 if last else 0, "home": home, "run": run_id,
                 "digest": dig, "pending": pending, "head": _head(prev, home, run_id, dig)}
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, _canon(entry) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        return entry


# -- the client's side ---------------------------------------------------------------


def verify(store, entries: list[dict]) -> dict:
    """{ok, checked, problems: [{run, problem}]} for this store's runs."""
    home = str(store.home.resolve())
    problems = []
    prev = GENESIS
    mine = set()
    for e in entries:
        if e.get("head") != _head(prev, e["home"], e["run"], e["digest"]):
            problems.append({"run": e.get("run"), "problem": "the chain itself is broken here "
                             "(roard's state was edited)"})
        prev = e.get("head", "")
        if e["home"] != home:
            continue
        mine.add(e["run"])
        run = store.get_run(e["run"])
        if run is None:
            problems.append({"run": e["run"], "problem": "missing from the store (deleted)"})
            continue
        pending = e.get("pending") or []
        dig = None
        if not pending:  # version 2, else version 1 (an entry chained before it)
            dig = digest_stored(run, *store.raw_records(e["run"]))
        if dig != e["digest"]:
            dig = digest(run, store.run_files(e["run"]), store.run_procs(e["run"]), pending)
        if dig != e["digest"]:
            problems.append({"run": e["run"], "problem": "edited after it was stored "
                             "(its records no longer match the chain)"})
    for run in store.iter_runs():
        if run["id"] not in mine and run.get("status") not in ("running", None):
            problems.append({"run": run["id"], "problem": "not in the chain (stored without "
                             "roard, or edited into the store)"})
    return {"ok": not problems, "checked": len(mine), "problems": problems}


def _ask(req: dict) -> dict | None:
    """roard's answer to one request; None when no roard answers."""
    from roar.capture.protocol import SessionError
    from roar.capture.session import DaemonSession

    try:
        s = DaemonSession()
    except SessionError:
        return None
    try:
        s.sock.settimeout(30)
        s.request(req)
        return s._reply()
    except (OSError, SessionError, ValueError):
        return None
    finally:
        s.close()


def _local_chain() -> ChainFile | None:
    """Root with no roard running writes the chain roard would keep."""
    if os.geteuid() != 0:
        return None
    from roar.capture.protocol import DEFAULT_SOCKET, socket_path

    return ChainFile(state_dir(socket_path(), DEFAULT_SOCKET), 0)


def chain_request(store, run_id: str, files: list[dict] | None = None,
                  procs: list[dict] | None = None,
                  stored: tuple[bytes, bytes] | None = None,
                  pending: list[str] | None = None,
                  digests: StoredDigests | None = None) -> dict | None:
    """roard's chain op for a run just stored (files, procs, stored, pending,
    digests: as run_digest takes them); None when the run is not in the store."""
    got = run_digest(store, run_id, files, procs, stored, pending, digests)
    if got is None:
        return None
    dig, pending = got
    return {"op": "chain", "home": os.path.realpath(store.home_dir), "run_id": run_id,
            "digest": dig, "pending": pending}


def appended(req: dict, reply: dict | None) -> str | None:
    """Why the chain op req was not done, given roard's reply to it (None: no
    roard answered, and then root writes the chain itself), or None."""
    if reply is None:
        reply = _ask(req)
    if reply is not None:
        return None if reply.get("ok") else reply.get("error", "roard refused")
    local = _local_chain()
    if local is None:
        return "no roard is running to keep the tamper-evident chain"
    local.append(req["home"], req["run_id"], req["digest"], req["pending"])
    return None


def fetch_entries() -> list[dict]:
    """This user's chain, from roard (or read directly by root without roard)."""
    out: list[dict] = []
    offset = 0
    while True:
        reply = _ask({"op": "chain_get", "offset": offset})
        if reply is None:
            local = _local_chain()
            if local is None:
                raise ChainError("roar verify needs roard (it keeps the chain): "
                                 "`roar daemon start` as root")
            return local.entries()
        if not reply.get("ok"):
            raise ChainError(reply.get("error", "roard refused"))
        out.extend(reply["entries"])
        if reply.get("next") is None:
            return out
        offset = reply["next"]


class ChainError(Exception):
    """The chain cannot be read; the message says why."""
