"""The outbox: runs waiting to be pushed to the shared store, and the push.

The store marks a run in its `outbox` sub-database in the same LMDB
transaction as any change of the run (start, end, late hashes, links), so
the queue survives roar, roard or the node dying and PostgreSQL or the
network being away: the run is pushed when a push next succeeds. A push
upserts the run (by its ULID) and replaces its edge rows in one PostgreSQL
transaction, then drops the outbox entry only if the run did not change
meanwhile; a run pushed twice is stored once.

After each run `roar run` starts a detached pusher (kick); it retries with
backoff for a while when the shared store cannot be reached. `roar sync`
pushes in the foreground."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import sys
import time

from roar.capture import jsonc
from roar.record.store import Store, index_entries

BATCH = 64  # runs per PostgreSQL transaction
STATUS_KEY = "shared_push"
RETRY_FOR_S = 900.0  # how long a background pusher keeps retrying an unreachable store
_LOW_SURROGATE = r"\\udc([89a-f][0-9a-f])"  # compiled where first used


def pending(store: Store) -> int:
    """How many runs wait in this store's outbox."""
    with store._begin(db=store.dbs["outbox"]) as txn:
        return txn.stat(store.dbs["outbox"])["entries"]


def requeue_all(store: Store) -> int:
    """Queue every run of the store for the next push; returns how many."""
    stamp = struct.pack(">Q", time.time_ns())
    db = store.dbs["outbox"]

    def fn(txn):
        n = 0
        for key in txn.cursor(db=store.dbs["runs"]).iternext(values=False):
            txn.put(bytes(key), stamp, db=db)
            n += 1
        return n

    return store.write(fn)


def _entries(store: Store, limit: int) -> list[tuple[str, bytes]]:
    out = []
    with store._begin(db=store.dbs["outbox"]) as txn:
        for key, stamp in txn.cursor():
            out.append((bytes(key).decode(), bytes(stamp)))
            if len(out) >= limit:
                break
    return out


def enqueued_ns(stamp: bytes) -> int:
    return struct.unpack(">Q", stamp)[0]


def _json(obj) -> str:
    """JSON text PostgreSQL's jsonb takes: undecodable path bytes (surrogate
    escapes, which jsonb refuses) are written as \\xNN text."""
    text = jsonc.dumps(obj, separators=(",", ":"), ensure_ascii=True)
    return re.sub(_LOW_SURROGATE, r"\\\\x\1", text) if "\\udc" in text else text


def _text(s: str) -> str:
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _edges(run_id: str, files: list[dict]) -> dict[str, list[tuple[bytes, str, list[str]]]]:
    """reads / writes rows of a run: (hash bytes, run id, paths)."""
    grouped: dict[tuple[str, bytes], list[str]] = {}
    for db, key, path in index_entries(run_id.encode(), files):
        grouped.setdefault((db, key[:16]), []).append(_text(os.fsdecode(path)))
    out: dict[str, list] = {"reads": [], "writes": []}
    for (db, h), paths in grouped.items():
        out["reads" if db == "hash_read" else "writes"].append((h, run_id, sorted(set(paths))))
    return out


def _clock_offset(conn) -> float:
    """This node's clock minus the database's, in seconds (round trip halved)."""
    t0 = time.time()
    db_now = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()[0]
    t1 = time.time()
    return (t0 + t1) / 2 - db_now


def _push_batch(conn, store: Store, batch: list[tuple[str, bytes]], host: str,
                offset: float) -> list[tuple[str, bytes]]:
    """Push a batch in one transaction; returns the entries it covered."""
    done = []
    edges: dict[str, list] = {"reads": [], "writes": []}
    with conn.transaction():
        for run_id, stamp in batch:
            doc = store.get_run(run_id)
            done.append((run_id, stamp))
            if doc is None:  # nothing to push (never happens unless the store was edited)
                continue
            files = store.run_files(run_id)
            procs = store.run_procs(run_id)
            group = doc.get("group") or {}
            conn.execute(
                """INSERT INTO runs (id, host, started_at, status, group_id, clock_offset_s,
                                     doc, files, procs)
                   VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::jsonb)
                   ON CONFLICT (id) DO UPDATE SET host = EXCLUDED.host,
                     started_at = EXCLUDED.started_at, status = EXCLUDED.status,
                     group_id = EXCLUDED.group_id, clock_offset_s = EXCLUDED.clock_offset_s,
                     doc = EXCLUDED.doc, files = EXCLUDED.files, procs = EXCLUDED.procs,
                     pushed_at = now(), pushes = runs.pushes + 1""",
                (run_id, doc.get("host") or host, doc.get("started_at"), doc.get("status"),
                 group.get("id") if isinstance(group, dict) else None, offset,
                 _json(doc), _json(files), _json(procs)))
            conn.execute("DELETE FROM reads WHERE run_id = %s", (run_id,))
            conn.execute("DELETE FROM writes WHERE run_id = %s", (run_id,))
            for table, rows in _edges(run_id, files).items():
                edges[table] += rows
        for table, rows in edges.items():
            if rows:
                with conn.cursor().copy(f"COPY {table} (hash, run_id, paths) FROM STDIN") as cp:
                    for row in rows:
                        cp.write_row(row)
    return done


def _drop(store: Store, done: list[tuple[str, bytes]]) -> None:
    """Drop pushed entries, unless the run changed since (its stamp moved)."""
    db = store.dbs["outbox"]

    def fn(txn):
        for run_id, stamp in done:
            key = run_id.encode()
            if txn.get(key, db=db) == stamp:
                txn.delete(key, db=db)

    store.write(fn)


def push(store: Store, url: str, limit: int | None = None) -> dict:
    """Push the outbox now: {pushed, pending, failed, last_error}. A run whose
    push fails stays in the outbox (it is retried at the next push)."""
    import psycopg

    from roar.record.ids import hostname
    from roar.shared.db import SharedError, connect

    host = hostname()
    pushed = failed = 0
    last_error = None
    try:
        conn = connect(url)
    except SharedError as e:
        left = pending(store)
        return _status(store, 0, left, left, str(e))
    skip: set[str] = set()
    try:
        offset = _clock_offset(conn)
        while limit is None or pushed < limit:
            batch = [e for e in _entries(store, BATCH + len(skip)) if e[0] not in skip][:BATCH]
            if not batch:
                break
            try:
                done = _push_batch(conn, store, batch, host, offset)
            except psycopg.OperationalError:
                raise
            except psycopg.Error:
                # one bad run must not hold the others back: push them one by one
                done = []
                for entry in batch:
                    try:
                        done += _push_batch(conn, store, [entry], host, offset)
                    except psycopg.OperationalError:
                        raise
                    except psycopg.Error as e:
                        skip.add(entry[0])
                        failed += 1
                        last_error = f"run {entry[0]}: {_first_line(e)}"
            _drop(store, done)
            pushed += len(done)
        left = pending(store)
        with conn.transaction():
            conn.execute(
                """INSERT INTO nodes (host, pending, last_push, clock_offset_s)
                   VALUES (%s, %s, now(), %s)
                   ON CONFLICT (host) DO UPDATE SET pending = EXCLUDED.pending,
                     last_push = now(), clock_offset_s = EXCLUDED.clock_offset_s""",
                (host, left, offset))
    except psycopg.Error as e:  # the connection went away mid-push: the rest waits
        left = pending(store)
        return _status(store, pushed, left, max(failed, 1),
                       f"the shared store went away during the push: {_first_line(e)}")
    finally:
        conn.close()
    return _status(store, pushed, left, failed, last_error)


def _first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _status(store: Store, pushed: int, left: int, failed: int, error: str | None) -> dict:
    doc = {"pushed": pushed, "pending": left, "failed": failed, "last_error": error}
    store.meta_put(STATUS_KEY, jsonc.dumps({**doc, "at": time.time()}).encode())
    return doc


def last_status(store: Store) -> dict | None:
    raw = store.meta_get(STATUS_KEY)
    return jsonc.loads(raw) if raw else None


# -- the background pusher ----------------------------------------------------------


def kick(home: str | os.PathLike) -> str | None:
    """Start a detached pusher when a shared store is configured (it outlives
    `roar run`, which never waits on the network). Returns a message for the
    user when it could not be started, else None."""
    from roar.shared.config import ConfigError, shared_url

    try:
        if not shared_url(home):
            return None
    except ConfigError as e:
        return f"shared store: {e}"
    env = {**os.environ, "ROAR_HOME": str(home),
           "PYTHONPATH": os.pathsep.join(p for p in (_import_root(),
                                                     os.environ.get("PYTHONPATH")) if p)}
    import subprocess  # here: most stores push nowhere

    try:
        subprocess.Popen([sys.executable, "-m", "roar.shared.outbox"], env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as e:
        return f"could not start the push to the shared store: {e} (roar sync pushes it)"
    return None


def _import_root() -> str:
    """The directory roar is imported from (the pusher's PYTHONPATH)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))


def push_lock(home: str | os.PathLike, wait: bool):
    """One pusher per store at a time. Yields False when not waiting and
    another pusher holds it (that one loops until the outbox is empty).
    (contextlib is imported here: `roar run` imports this module, not it.)"""
    import contextlib

    return contextlib.contextmanager(_push_lock)(home, wait)


def _push_lock(home: str | os.PathLike, wait: bool):
    with open(os.path.join(home, "outbox.lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


def background(home: str | os.PathLike, url: str, retry_for: float = RETRY_FOR_S) -> None:
    """Push until the outbox is empty; an unreachable store is retried with
    backoff for retry_for seconds (the lock is not held while waiting)."""
    deadline = time.monotonic() + retry_for
    delay = 1.0
    with Store(home) as store:
        while True:
            with push_lock(home, wait=False) as mine:
                if not mine:
                    return
                res = push(store, url)
            if res["pending"] == 0:
                return
            if res["pushed"] == 0:  # unreachable, or only failing runs: back off
                if time.monotonic() + delay > deadline:
                    return
                time.sleep(delay)
                delay = min(delay * 2, 60.0)
            else:
                delay = 1.0


def main() -> None:
    from roar.record.store import default_home
    from roar.shared.config import ConfigError, shared_url

    home = default_home()
    try:
        url = shared_url(home)
    except ConfigError:
        return
    if url:
        background(home, url, float(os.environ.get("ROAR_SHARED_RETRY_S", RETRY_FOR_S)))


if __name__ == "__main__":
    main()
