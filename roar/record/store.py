"""The LMDB store: runs, their processes and file records, the content-hash
indexes (hash -> runs that read / wrote it) and the stat cache.

One writer at a time (LMDB's own lock), readers never block it. Keys are
fixed-width and ordered where order matters: run ids sort by time, hash
index keys are 16 hash bytes followed by what holds the content.

The hash indexes point to content-addressed file sets, not to runs (schema 2),
so that a run reading the same 20,000 files as an earlier one adds a row, not
20,000. A run's index rows for one index (what it read, what it wrote: (hash,
path) pairs) are sorted by path and cut into chunks where a row's own hash says
so (about CHUNK_AVG rows each, so one changed file changes one chunk, not the
cut of the others). A chunk's id is the hash of its rows, a set's the hash of its
chunk ids (a one-chunk set is its chunk). Only content never stored before adds
rows:
    hash_read / hash_written   content hash + chunk id -> paths (once per chunk)
    sets                       chunk id -> b""; set id -> its chunk ids
    chunk_sets                 chunk id + set id -> b"" (sets of two chunks or more)
    set_runs                   set id + run id -> b"" (one per run and index)
    run_sets                   run id -> its set ids (to replace them: index_files)
Schema 1's rows (content hash + run id -> paths, in the same hash indexes) are
still read: a store written by an older roar keeps every answer, and is never
rewritten.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import time
from collections.abc import Iterator

import lmdb

from roar.capture import jsonc
from roar.record import storecheck
from roar.record.codes import Reason, decode, encode, from_sentence, messages

SCHEMA_VERSION = 2  # 2: hash indexes point to file sets; schema 1's rows are read too
RUN_ID_LEN = 26
HASH_LEN = 16  # xxh3-128 digest bytes
SET_LEN = 16  # chunk and set ids: xxh3-128 digests
CHUNK_AVG = 128  # rows per chunk on average (a cut after a row whose hash is 0 mod this)
CHUNK_MAX = 1024  # and a cut after this many rows whatever they are
INITIAL_MAP_SIZE = 64 << 20
MIN_FREE_SPACE = 256 << 10  # below this a run is refused before it starts
DBS = ("meta", "runs", "run_files", "run_procs", "hash_read", "hash_written", "statcache",
       "requests", "groups", "outbox", "sets", "chunk_sets", "set_runs", "run_sets")
INDEX_DBS = ("hash_read", "hash_written", "sets", "chunk_sets", "set_runs", "run_sets")


class StoreError(Exception):
    """A store problem the user must fix; the message says what and how."""


class RefError(Exception):
    """A reference (run id, hash, path) that names nothing, or more than one thing."""


def default_home():
    """The store's home (ROAR_HOME, else ~/.roar), a Path."""
    from pathlib import Path

    return Path(default_home_dir())


def default_home_dir() -> str:
    """default_home() as a str: `roar run` imports no pathlib (with what it
    pulls, ~5 ms of every run's start on a small machine)."""
    env = os.environ.get("ROAR_HOME")
    if env:
        return pure_path(os.path.expanduser(env))
    return pure_path(os.path.join(os.path.expanduser("~"), ".roar"))


def pure_path(p: str) -> str:
    """str(Path(p)) without pathlib: repeated and trailing slashes and "."
    parts dropped ("//" kept in front, as POSIX allows), ".." kept."""
    lead = "/" if p.startswith("/") else ""
    if p.startswith("//") and not p.startswith("///"):
        lead = "//"
    return lead + "/".join(x for x in p.split("/") if x and x != ".") or "."


_MISSING = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)  # pathlib's "no such path"


def _stat(p: str) -> os.stat_result | None:
    """os.stat(p), or None when there is no such path (pathlib's rule: other
    errors raised)."""
    try:
        return os.stat(p)
    except OSError as e:
        if e.errno in _MISSING:
            return None
        raise
    except ValueError:
        return None


def _exists(p: str) -> bool:
    """Path.exists()."""
    return _stat(p) is not None


def _is_dir(p: str) -> bool:
    """Path.is_dir()."""
    st = _stat(p)
    return st is not None and stat.S_ISDIR(st.st_mode)


def encode_doc(obj) -> bytes:
    """A document as the store encodes it (roar.record.records.encode). Parts
    encoded one by one join into the same bytes as their list (_join)."""
    return encode(obj)


def _join(encoded: list[bytes]) -> bytes:
    """The JSON list of documents encoded one by one (b"[" + b",".join(encoded)
    + b"]", every byte copied once; a part may hold several documents joined with
    commas, as recorder.py gathers them)."""
    if not encoded:
        return b"[]"
    parts = [b","] * (2 * len(encoded) + 1)  # [, e0 , e1 ... ]: every byte copied once
    parts[1::2] = encoded
    parts[0], parts[-1] = b"[", b"]"
    return b"".join(parts)


_loads = decode


def index_entries(rid: bytes, files: list[dict]) -> list[tuple[str, bytes, bytes]]:
    """The hash-index entries of a run's file records, one per hashed input or
    output: (index, content hash + run id, path); the store keeps them as file
    sets (see the module's docstring), the shared store as they are. Index values are paths,
    NUL-separated when several hold the same content (paths never hold NUL);
    paths are str with surrogate escapes for undecodable bytes (os.fsdecode)."""
    out = []
    for f in files:
        h = f.get("hash")
        role = f.get("role")
        if role not in ("input", "output"):
            continue
        db = "hash_read" if role == "input" else "hash_written"
        if h:
            out.append((db, bytes.fromhex(h) + rid, f["path"].encode("utf-8", "surrogateescape")))
        if f.get("kind") == "remote":  # record/remote.py: by url@version, and by url
            if f.get("ident"):
                out.append((db, bytes.fromhex(f["ident"]) + rid, f["url"].encode()))
            out.append((db, bytes.fromhex(f["url_key"]) + rid,
                        (f.get("version") or "").encode()))
    return out


INDEXES = ("hash_read", "hash_written")


def index_rows(entries: list[tuple[str, bytes, bytes]]) -> tuple[list[bytes], list[bytes]]:
    """The rows of the hash indexes (hash_read, hash_written) for index
    entries, each sorted and once: path, NUL, content hash (paths never hold
    NUL; the hash is the last HASH_LEN bytes): rows sort by path, and hash as
    they are. (_cmodel.c index_rows makes the same, for `roar run`.)"""
    rows: dict[str, set[bytes]] = {db: set() for db in INDEXES}
    for db, key, path in entries:
        rows[db].add(path + b"\0" + key[:HASH_LEN])
    return sorted(rows["hash_read"]), sorted(rows["hash_written"])


def _replace_reasons(doc: dict, drop: set[Reason], add: list[dict]) -> None:
    """Take the reasons with codes in `drop` off a run document, add `add`,
    and set `complete` from what is left."""
    reasons = doc.get("reasons")
    if reasons is None:  # stored by a roar without codes
        reasons = [from_sentence(s) for s in doc.get("incomplete_reasons") or []]
    reasons = [r for r in reasons if Reason(r["code"]) not in drop] + add
    doc["reasons"] = reasons
    doc["incomplete_reasons"] = messages(reasons)
    doc["complete"] = not reasons


def _no_inheritance(store_dir: str) -> None:
    """Mark this process's fds on the store close-on-exec: LMDB opens
    data.mdb read-write without it, so every program started afterwards
    (`roar run`'s workload, git) would inherit a writable fd to the store
    (and the run would record it among the workload's inherited files)."""
    prefix = os.path.realpath(store_dir) + "/"
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in names:
        try:
            fd = int(name)
            if os.readlink(f"/proc/self/fd/{fd}").startswith(prefix) and os.get_inheritable(fd):
                os.set_inheritable(fd, False)
        except (OSError, ValueError):
            continue


def _decode_paths(raw) -> list[str]:
    raw = bytes(raw)
    if raw.startswith(b'["'):  # stores written before paths were stored raw
        return jsonc.loads(raw)
    return [os.fsdecode(p) for p in raw.split(b"\0")]


def _paths_in_order(paths: list[str]) -> list[str]:
    """Paths once each, in the order of their bytes (the order they are stored in)."""
    if len(paths) == 1:
        return paths
    return sorted(set(paths), key=lambda p: p.encode("utf-8", "surrogateescape"))


class _SetRuns:
    """The runs holding a chunk (through the sets it is part of), within one
    read transaction, each looked up once."""

    def __init__(self, txn, dbs: dict):
        self.set_runs = txn.cursor(db=dbs["set_runs"])
        self.chunk_sets = txn.cursor(db=dbs["chunk_sets"])
        self.memo: dict[bytes, list[str]] = {}

    @staticmethod
    def _scan(cur, prefix: bytes) -> list[bytes]:
        out = []
        if cur.set_range(prefix):
            for key in cur.iternext(values=False):
                key = bytes(key)
                if not key.startswith(prefix):
                    break
                out.append(key[len(prefix):])
        return out

    def runs_of_chunk(self, cid: bytes) -> list[str]:
        got = self.memo.get(cid)
        if got is None:
            # the chunk as a set of its own, and every set it is part of
            rids = self._scan(self.set_runs, cid)
            for sid in self._scan(self.chunk_sets, cid):
                rids += self._scan(self.set_runs, sid)
            got = self.memo[cid] = [r.decode() for r in rids]
        return got


def _cuts(rows: list[bytes]) -> list[int] | None:
    """_put_set's cuts, [i + 1 for each row i whose xxh3_64_intdigest is 0 mod
    CHUNK_AVG], in C (roar/record/_readhash.c cuts: no Python call per row of
    a 20,000-file set), bound to the xxhash package's own xxh3 as the hasher's
    read_hash is (hasher.compiled_read_hash); None where it is not built (the
    caller's loop then)."""
    try:
        from roar.record import _readhash
    except ImportError:
        return None
    import sys

    lib = getattr(sys.modules.get("xxhash._xxhash"), "__file__", None) or ""
    cuts = getattr(_readhash, "cuts", None)
    return cuts(rows, CHUNK_AVG) if cuts is not None and _readhash.bind(lib) else None


def stat_key(st: os.stat_result) -> bytes:
    return struct.pack(">QQQqq", st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Store:
    """A roar store under `home` (the ROAR_HOME directory)."""

    def __init__(self, home: str | os.PathLike | None = None, readonly: bool = False):
        # str: a Path only where one is asked for (home, path)
        self.home_dir = pure_path(os.fspath(home)) if home is not None else default_home_dir()
        self.store_dir = ("store" if self.home_dir == "." else  # str(Path(home) / "store")
                          self.home_dir + ("store" if self.home_dir.endswith("/") else "/store"))
        self._home = self._path = None
        self.readonly = readonly
        try:
            if _exists(self.home_dir) and not _is_dir(self.home_dir):
                raise StoreError(f"the roar store's home {self.home_dir} is not a directory "
                                 f"(set ROAR_HOME to a directory you own)")
            exists = _exists(os.path.join(self.store_dir, "data.mdb"))
        except PermissionError:
            raise StoreError(f"cannot open the roar store at {self.home_dir}: permission denied "
                             f"(it is someone else's; set ROAR_HOME to your own)") from None
        except OSError as e:
            raise StoreError(f"cannot open the roar store at {self.home_dir}: {e.strerror or e} "
                             f"(set ROAR_HOME to a directory you own)") from None
        if readonly and not exists:
            raise StoreError(f"no roar store at {self.home_dir} (nothing recorded yet; "
                             f"set ROAR_HOME?)")
        try:
            team = storecheck.check_dirs(self.home_dir, self.store_dir)
            if not readonly:
                os.makedirs(self.home_dir, mode=0o700, exist_ok=True)
                try:
                    os.mkdir(self.store_dir, mode=0o700)
                except FileExistsError:
                    if not _is_dir(self.store_dir):
                        raise
                team = storecheck.check_dirs(self.home_dir, self.store_dir)  # lost a race
            storecheck.check_files(self.store_dir, team)
            storecheck.check_data_file(os.path.join(self.store_dir, "data.mdb"))
        except storecheck.UnsafeStore as e:
            raise StoreError(f"cannot open the roar store at {self.home_dir}: {e}") from None
        except OSError as e:  # ROAR_HOME a file, under /proc, on a full or read-only disk
            raise StoreError(f"cannot open the roar store at {self.store_dir}: "
                             f"{e.strerror or e} (set ROAR_HOME to a directory you own)") from e
        try:
            size = max(INITIAL_MAP_SIZE,
                       _file_size(os.path.join(self.store_dir, "data.mdb")) * 2)
            self.env = lmdb.open(self.store_dir, map_size=size, max_dbs=len(DBS) + 4,
                                 subdir=True, readonly=False, create=not readonly,
                                 lock=True, max_readers=512, mode=0o660 if team else 0o600)
            self.dbs = {name: self.env.open_db(name.encode()) for name in DBS}
        except lmdb.Error as e:
            raise StoreError(f"cannot open the roar store at {self.store_dir}: {e} "
                             f"(move it aside or set ROAR_HOME to another directory)") from e
        except PermissionError as e:
            raise StoreError(f"cannot open the roar store at {self.store_dir}: permission denied "
                             f"(set ROAR_HOME to a directory you own)") from e
        except OSError as e:  # ROAR_HOME a file, under /proc, on a full or read-only disk
            raise StoreError(f"cannot open the roar store at {self.store_dir}: "
                             f"{e.strerror or e} (set ROAR_HOME to a directory you own)") from e
        _no_inheritance(self.store_dir)
        self._check_schema()

    @property
    def home(self):
        """The store's home (ROAR_HOME), a Path."""
        if self._home is None:
            from pathlib import Path

            self._home = Path(self.home_dir)
        return self._home

    @property
    def path(self):
        """The LMDB directory (home/store), a Path."""
        if self._path is None:
            from pathlib import Path

            self._path = Path(self.store_dir)
        return self._path

    def close(self) -> None:
        self.env.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- plumbing -----------------------------------------------------------

    def _check_schema(self) -> None:
        with self._begin(db=self.dbs["meta"]) as txn:
            raw = txn.get(b"schema")
        if raw is None:
            self.write(lambda txn: txn.put(b"schema", str(SCHEMA_VERSION).encode(),
                                           db=self.dbs["meta"]))
            return
        try:
            found = int(raw)
        except ValueError:
            raise StoreError(f"roar store at {self.store_dir} is corrupt "
                             f"(bad schema marker)") from None
        if found > SCHEMA_VERSION:
            raise StoreError(f"roar store at {self.store_dir} has schema {found}, newer than this "
                             f"roar understands ({SCHEMA_VERSION}): upgrade roar")
        if found < SCHEMA_VERSION and not self.readonly:
            # schema 1's rows stay as they are and are read as they are; the marker
            # keeps an older roar (which would misread the file-set rows) out
            self.write(lambda txn: txn.put(b"schema", str(SCHEMA_VERSION).encode(),
                                           db=self.dbs["meta"]))

    def _free(self) -> int:
        st = os.statvfs(self.store_dir)  # what shutil.disk_usage reports as free
        return st.f_bavail * st.f_frsize

    def free_space_note(self) -> str:
        try:
            free = self._free()
        except OSError:
            return "disk space left unknown"
        return f"{free // 1024} KiB of disk space left there"

    def check_space(self, needed: int = MIN_FREE_SPACE) -> None:
        """Refuse to start a run that could not be stored."""
        try:
            free = self._free()
        except OSError:
            return
        if free < needed:
            raise StoreError(f"not enough disk space for the roar store at {self.store_dir}: "
                             f"{free // 1024} KiB left (free some space or set ROAR_HOME "
                             f"elsewhere)")

    def _begin(self, **kw):
        """A read transaction; adopts a map another process grew meanwhile."""
        try:
            return self.env.begin(**kw)
        except lmdb.MapResizedError:
            self.env.set_mapsize(0)
            return self.env.begin(**kw)

    def update_run(self, run_id: str, fn) -> dict | None:
        """Read-modify-write of a run document in one write transaction, so
        concurrent updates (links, request resolution, late hashes) never
        overwrite each other. fn(doc) changes doc in place. The typed updates
        below are built on it; nothing writes a whole run document after it
        was started (a stale copy written back loses what others stored)."""
        key = run_id.encode()
        return self.write(lambda txn: self._update_in(txn, key, fn))

    def _update_in(self, txn, key: bytes, fn) -> dict | None:
        raw = txn.get(key, db=self.dbs["runs"])
        if raw is None:
            return None
        doc = _loads(raw)
        fn(doc)
        txn.put(key, encode_doc(doc), db=self.dbs["runs"])
        self._outbox(txn, key)
        return doc

    # -- typed updates of a stored run --------------------------------------------

    def set_links(self, run_id: str, links: list[dict]) -> None:
        """The run's tracker links (roar.query.links)."""
        self.update_run(run_id, lambda run: run.__setitem__("links", links))

    def mark_request(self, run_id: str, request_id: str, mismatch: bool | None,
                     checks: list[dict] | None) -> None:
        """The training request a run resolved, and its dataset check."""
        self.update_run(run_id, lambda run: run.update(
            request=request_id, dataset_mismatch=mismatch, dataset_check=checks))

    def mark_reproduces(self, run_id: str, of: str) -> None:
        """The run is a reproduction of run `of` (roar reproduce --run)."""
        self.update_run(run_id, lambda run: run.__setitem__("reproduces", of))

    def set_hash_progress(self, run_id: str, progress: dict | None) -> None:
        """Progress of a late hash (roar show), or None once it is done."""
        def fn(run):
            if progress is None:
                run.pop("hash_progress", None)
            else:
                run["hash_progress"] = progress

        self.update_run(run_id, fn)

    def replace_reasons(self, run_id: str, drop: set[Reason], add: list[dict]) -> None:
        """Take the reasons with codes in `drop` off the run, add `add`, and
        set `complete` from what is left."""
        self.update_run(run_id, lambda doc: _replace_reasons(doc, drop, add))

    def write(self, fn):
        """Run fn(txn) in one write transaction; grow the map instead of failing.
        A disk that cannot take the write is one clear StoreError."""
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
                try:
                    self.env.set_mapsize(self.env.info()["map_size"] * 2)
                except lmdb.Error as e:
                    raise StoreError(f"cannot grow the roar store at {self.store_dir}: {e}") from e
            except lmdb.MapResizedError:  # another process grew it: adopt its size
                self.env.set_mapsize(0)
            except lmdb.Error as e:
                raise StoreError(f"cannot write the roar store at {self.store_dir}: {e} "
                                 f"({self.free_space_note()})") from e

    def _get(self, db: str, key: bytes):
        with self._begin(db=self.dbs[db]) as txn:
            raw = txn.get(key)
        return None if raw is None else _loads(raw)

    # -- runs -----------------------------------------------------------------

    def _outbox(self, txn, rid: bytes) -> None:
        """Queue the run for the shared store (roar.shared.outbox) in the same
        transaction as its change: a change is never stored without it."""
        txn.put(rid, struct.pack(">Q", time.time_ns()), db=self.dbs["outbox"])

    def put_run(self, run: dict) -> None:
        def fn(txn):
            txn.put(run["id"].encode(), encode_doc(run), db=self.dbs["runs"])
            self._index_group(txn, run)
            self._outbox(txn, run["id"].encode())

        self.write(fn)

    def _index_group(self, txn, run: dict) -> None:
        """groups: job group id, NUL, run id -> nothing (roar/record/groups.py)."""
        group = run.get("group")
        if group and group.get("id"):
            txn.put(group["id"].encode("utf-8", "surrogateescape") + b"\0" + run["id"].encode(),
                    b"", db=self.dbs["groups"])

    def group_runs(self, group_id: str) -> list[str]:
        """Ids of the runs of a job group, oldest first."""
        prefix = group_id.encode("utf-8", "surrogateescape") + b"\0"
        out = []
        with self._begin(db=self.dbs["groups"]) as txn:
            cur = txn.cursor()
            if cur.set_range(prefix):
                for key in cur.iternext(values=False):
                    key = bytes(key)
                    if not key.startswith(prefix):
                        break
                    out.append(key[len(prefix):].decode())
        return out

    def finish_run(self, run: dict, files: list[dict], procs: list[dict],
                   encoded_files: list[bytes] | None = None,
                   encoded_procs: list[bytes] | None = None,
                   index: list[tuple[str, bytes, bytes]] | None = None,
                   rows: tuple[list[bytes], list[bytes]] | None = None,
                   meanwhile=None,
                   cache: list[tuple[bytes, str]] | None = None) -> tuple[bytes, bytes]:
        """Store a finished run with its file records, processes and hash indexes.
        encoded_*: the same records already encoded one by one (encode_doc), or
        (encoded_files) the list's bytes themselves;
        index: their index_entries; rows: index_rows(index), when the caller
        made them; meanwhile(files_raw, procs_raw): called with the bytes to be
        stored before they are written; cache: stat-cache entries (cache_hashes')
        written in the same transaction (one sync at the end of a run, not two).
        Returns the file and process records' bytes as stored (raw_records)."""
        rid = run["id"].encode()
        files_raw = (encode_doc(files) if encoded_files is None else encoded_files
                     if encoded_files.__class__ is bytes else _join(encoded_files))
        procs_raw = encode_doc(procs) if encoded_procs is None else _join(encoded_procs)
        if meanwhile is not None:
            meanwhile(files_raw, procs_raw)

        def fn(txn):
            # merged over the stored document: a field another writer stored
            # while the run went on is kept
            stored = txn.get(rid, db=self.dbs["runs"])
            doc = run if stored is None else {**_loads(stored), **run}
            if "client_pid" not in run:  # the recorder's end took it off
                doc.pop("client_pid", None)
            txn.put(rid, encode_doc(doc), db=self.dbs["runs"])
            self._index_group(txn, run)
            self._outbox(txn, rid)
            txn.put(rid, procs_raw, db=self.dbs["run_procs"])
            self._put_files(txn, rid, files, files_raw, index, rows)
            if cache:
                self._put_cache(txn, cache)

        self.write(fn)
        return files_raw, procs_raw

    def fill_files(self, run_id: str, files: list[dict], drop: set[Reason],
                   add: list[dict]) -> None:
        """Late hashes filled in (roar/record/pending.py): index_files, the
        hash progress taken off the run and replace_reasons, in one write
        transaction, so that no reader sees the filled-in records with the
        run still saying its hashes are being computed."""
        rid = run_id.encode()

        def doc_fn(doc):
            doc.pop("hash_progress", None)
            _replace_reasons(doc, drop, add)

        def fn(txn):
            self._put_files(txn, rid, files)
            self._outbox(txn, rid)
            self._update_in(txn, rid, doc_fn)

        self.write(fn)

    def index_files(self, run_id: str, files: list[dict]) -> None:
        """Replace a run's file records (e.g. late hashes filled in) and index
        the new hashes; the run document is left alone (see update_run)."""
        rid = run_id.encode()

        def fn(txn):
            self._put_files(txn, rid, files)
            self._outbox(txn, rid)

        self.write(fn)

    def _put_files(self, txn, rid: bytes, files: list[dict], raw: bytes | None = None,
                   entries: list[tuple[str, bytes, bytes]] | None = None,
                   made: tuple[list[bytes], list[bytes]] | None = None) -> None:
        if raw is None:
            raw = encode_doc(files)
        txn.put(rid, raw, db=self.dbs["run_files"])
        if made is None:
            made = index_rows(index_entries(rid, files) if entries is None else entries)
        rows = dict(zip(INDEXES, made, strict=True))
        set_runs = self.dbs["set_runs"]
        old = txn.get(rid, db=self.dbs["run_sets"])
        if old is not None:  # replaced (late hashes): the run leaves its former sets
            old = bytes(old)
            for i in range(0, len(old), SET_LEN):
                txn.delete(old[i:i + SET_LEN] + rid, db=set_runs)
        ids = [self._put_set(txn, db, r) for db, r in rows.items() if r]
        for sid in ids:
            txn.put(sid + rid, b"", db=set_runs)
        if ids:
            txn.put(rid, b"".join(ids), db=self.dbs["run_sets"])
        elif old is not None:
            txn.delete(rid, db=self.dbs["run_sets"])

    def _put_set(self, txn, db: str, rows: list[bytes]) -> bytes:
        """The id of the file set of `rows` (path NUL hash, sorted) in index
        `db`, stored with its chunks and their hash rows unless known."""
        from xxhash import xxh3_64_intdigest, xxh3_128_digest

        cuts = _cuts(rows)
        if cuts is None:
            cuts = [i + 1 for i, row in enumerate(rows) if xxh3_64_intdigest(row) % CHUNK_AVG == 0]
        if not cuts or cuts[-1] != len(rows):
            cuts.append(len(rows))
        sets = self.dbs["sets"]
        tag = db.encode() + b"\0"
        ids = []
        start = 0
        for cut in cuts:
            while start < cut:
                end = min(cut, start + CHUNK_MAX)
                chunk = rows[start:end]
                start = end
                cid = xxh3_128_digest(tag + b"".join(chunk))
                ids.append(cid)
                if txn.get(cid, db=sets) is not None:
                    continue  # stored by an earlier run: nothing to add
                txn.put(cid, b"", db=sets)
                items: dict[bytes, bytes] = {}
                for row in chunk:  # in path order: the same content under several paths
                    k = row[-HASH_LEN:] + cid
                    p = row[:-HASH_LEN - 1]
                    items[k] = items[k] + b"\0" + p if k in items else p
                txn.cursor(db=self.dbs[db]).putmulti(sorted(items.items()))
        if len(ids) == 1:
            return ids[0]
        sid = xxh3_128_digest(b"set\0" + tag + b"".join(ids))
        if txn.get(sid, db=sets) is None:
            txn.put(sid, b"".join(ids), db=sets)
            for cid in sorted(set(ids)):
                txn.put(cid + sid, b"", db=self.dbs["chunk_sets"])
        return sid

    def get_run(self, run_id: str) -> dict | None:
        return self._get("runs", run_id.encode())

    def run_files(self, run_id: str) -> list[dict]:
        return self._get("run_files", run_id.encode()) or []

    def run_procs(self, run_id: str) -> list[dict]:
        return self._get("run_procs", run_id.encode()) or []

    def raw_records(self, run_id: str) -> tuple[bytes, bytes]:
        """A run's file records and process records as the store holds their
        bytes (b"" for none): what the chain's digest covers."""
        key = run_id.encode()
        with self._begin() as txn:
            return tuple(bytes(txn.get(key, b"", db=self.dbs[db]))
                         for db in ("run_files", "run_procs"))

    # typed reads: roar.record.records is imported here, not at the top (its
    # dataclasses cost milliseconds that `roar run` does not need)

    def run(self, run_id: str):
        """The typed run record (records.Run), or None."""
        from roar.record.records import Run

        doc = self.get_run(run_id)
        return None if doc is None else Run.from_doc(doc)

    def files(self, run_id: str) -> list:
        """The typed file records of a run (records.FileVersion)."""
        from roar.record.records import FileVersion

        return [FileVersion.from_doc(f) for f in self.run_files(run_id)]

    def processes(self, run_id: str) -> list:
        """The typed process records of a run (records.Process)."""
        from roar.record.records import Process

        return [Process.from_doc(p) for p in self.run_procs(run_id)]

    def iter_runs(self, newest_first: bool = True) -> Iterator[dict]:
        with self._begin(db=self.dbs["runs"]) as txn:
            cur = txn.cursor()
            it = cur.iterprev() if newest_first else cur.iternext()
            if newest_first and not cur.last():
                return
            for _, raw in it:
                yield _loads(raw)

    def resolve_run(self, prefix: str) -> str:
        """The run id starting with prefix (case-insensitive); RefError otherwise."""
        p = prefix.strip().upper()
        if not p:
            raise RefError("empty run reference")
        found: list[str] = []
        if not p.isascii():  # run ids are ASCII; a name with bytes that are not UTF-8 is no id
            raise RefError(f"no run matches '{prefix}'")
        with self._begin(db=self.dbs["runs"]) as txn:
            cur = txn.cursor()
            if cur.set_range(p.encode()):
                for key in cur.iternext(values=False):
                    k = bytes(key).decode()
                    if not k.startswith(p):
                        break
                    found.append(k)
                    if len(found) > 1:
                        break
        if not found:
            raise RefError(f"no run matches '{prefix}'")
        if len(found) > 1:
            raise RefError(f"run prefix '{prefix}' is ambiguous: give more characters")
        return found[0]

    # -- content hash indexes -----------------------------------------------

    def _by_hashes(self, db: str, hashes) -> dict[str, list[tuple[str, list[str]]]]:
        # one read transaction, one cursor per index walked in key order, for many
        # hashes; a chunk's runs are looked up once per call
        out: dict[str, list[tuple[str, list[str]]]] = {}
        with self._begin() as txn:
            cur = txn.cursor(db=self.dbs[db])
            sets = _SetRuns(txn, self.dbs)
            for hash_hex in sorted(set(hashes)):
                prefix = bytes.fromhex(hash_hex)
                found: dict[str, list[bytes]] = {}
                if cur.set_range(prefix):
                    for key, raw in cur:
                        key = bytes(key)
                        if not key.startswith(prefix):
                            break
                        holder = key[HASH_LEN:]
                        paths = _decode_paths(raw)
                        if len(holder) == SET_LEN:
                            rids = sets.runs_of_chunk(holder)
                        else:  # schema 1: the run itself
                            rids = (holder.decode(),)
                        for rid in rids:
                            found.setdefault(rid, []).extend(paths)
                out[hash_hex] = [(rid, _paths_in_order(paths))
                                 for rid, paths in sorted(found.items())]
        return out

    def readers_of(self, hash_hex: str) -> list[tuple[str, list[str]]]:
        """(run id, paths) of every run that read this content, oldest first."""
        return self._by_hashes("hash_read", [hash_hex])[hash_hex]

    def writers_of(self, hash_hex: str) -> list[tuple[str, list[str]]]:
        """(run id, paths) of every run that wrote this content, oldest first."""
        return self._by_hashes("hash_written", [hash_hex])[hash_hex]

    def readers_of_many(self, hashes) -> dict[str, list[tuple[str, list[str]]]]:
        """readers_of() for many hashes at once: {hash: [(run id, paths)]}."""
        return self._by_hashes("hash_read", hashes)

    def writers_of_many(self, hashes) -> dict[str, list[tuple[str, list[str]]]]:
        """writers_of() for many hashes at once: {hash: [(run id, paths)]}."""
        return self._by_hashes("hash_written", hashes)

    def resolve_hash(self, prefix: str) -> str | None:
        """The full hash known to the store that starts with prefix (hex)."""
        p = prefix.strip().lower()
        if len(p) < 4 or any(c not in "0123456789abcdef" for c in p):
            return None
        found = set()
        lo = bytes.fromhex(p[: len(p) // 2 * 2])
        for db in ("hash_read", "hash_written"):
            with self._begin(db=self.dbs[db]) as txn:
                cur = txn.cursor()
                if not cur.set_range(lo):
                    continue
                for key in cur.iternext(values=False):
                    h = bytes(key)[:HASH_LEN].hex()
                    if not h.startswith(p[: len(p) // 2 * 2]):
                        break
                    if h.startswith(p):
                        found.add(h)
                    if len(found) > 1:
                        break
        if len(found) > 1:
            raise RefError(f"hash prefix '{prefix}' is ambiguous: give more characters")
        return found.pop() if found else None

    # -- stat cache -------------------------------------------------------------

    def cached_hash_key(self, key: bytes) -> str | None:
        """The hash recorded for a stat_key(), if this file state was hashed before."""
        with self._begin(db=self.dbs["statcache"]) as txn:
            raw = txn.get(key)
        return None if raw is None else bytes(raw).decode()

    def cache_hashes(self, items: list[tuple[bytes, str]]) -> None:
        if not items:
            return

        self.write(lambda txn: self._put_cache(txn, items))

    def _put_cache(self, txn, items: list[tuple[bytes, str]]) -> None:
        for key, h in items:
            txn.put(key, h.encode(), db=self.dbs["statcache"])

    # -- generic records (used by features that keep their own documents) ----

    def put_doc(self, db: str, key: str, doc: dict) -> None:
        self.write(lambda txn: txn.put(_key(key), encode_doc(doc), db=self.dbs[db]))

    def get_doc(self, db: str, key: str) -> dict | None:
        return self._get(db, _key(key))

    def iter_docs(self, db: str) -> Iterator[tuple[str, dict]]:
        with self._begin(db=self.dbs[db]) as txn:
            for key, raw in txn.cursor():
                yield bytes(key).decode(), _loads(raw)

    def meta_get(self, key: str) -> bytes | None:
        with self._begin(db=self.dbs["meta"]) as txn:
            raw = txn.get(key.encode())
        return None if raw is None else bytes(raw)

    def meta_put(self, key: str, value: bytes) -> None:
        self.write(lambda txn: txn.put(key.encode(), value, db=self.dbs["meta"]))


def _key(key: str) -> bytes:
    """A document key as stored: a key given by a user may hold bytes that are
    not UTF-8 (as surrogate escapes); it is then no key of the store."""
    return key.encode("utf-8", "surrogateescape")


def _file_size(p: str) -> int:
    try:
        return os.stat(p).st_size
    except OSError:
        return 0
