"""Queries across nodes: SharedStore answers the read calls that lineage,
views and groups make of a local Store (runs, file and process records, the
content-hash indexes, prefixes, job groups) from the shared PostgreSQL store,
so `roar log/show/trace/inputs/outputs/diff` work unchanged over every node's
runs. Each call is one indexed query (a lineage walk asks for one depth level
of hashes at a time), so a query costs what its answer costs.

Also owns what makes cross-node membership trustworthy: times corrected by
each node's measured clock offset (a skewed node must not make a real link
look impossible), and `unknown` instead of `no` while runs that may matter are
not in the shared store yet (qualify)."""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Iterator
from pathlib import Path

from roar.record.store import RefError, Store, StoreError, default_home
from roar.shared.config import shared_url

SKEW_TOLERANCE_S = 1.0  # offsets below this are measurement noise, not skew
PAGE = 200


def query_store(local: bool = False):
    """The store queries read: the shared store when one is configured (and
    not `local`), else this node's LMDB store."""
    home = default_home()
    url = None if local else shared_url(home)
    if not url:
        return Store(readonly=True)
    return SharedStore(url, home)


def _shift(iso: str | None, seconds: float) -> str | None:
    """An ISO 8601 UTC time (as ids.now_iso writes it) moved by seconds."""
    if not iso:
        return iso
    try:
        base = calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S"))
        frac = float("0" + iso[19:].rstrip("Z")) if len(iso) > 20 else 0.0
    except ValueError:
        return iso
    t = base + frac + seconds
    ms = int(round((t - int(t)) * 1000)) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(t))) + f".{ms:03d}Z"


class SharedStore:
    """The shared store, read through the local Store's query interface."""

    def __init__(self, url: str, home: Path | None = None):
        from roar.shared.db import connect

        self.url = url
        self.home = home or default_home()
        self.conn = connect(url)
        self._local: Store | None | bool = False  # False: not opened yet
        self._docs: dict[str, dict | None] = {}
        self.seen: set[str] = set()  # runs this query loaded: what qualify() checks

    def close(self) -> None:
        self.conn.close()
        if self._local:
            self._local.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _q(self, sql: str, params=()):
        import psycopg

        try:
            return self.conn.execute(sql, params).fetchall()
        except psycopg.Error as e:
            from roar.shared.config import redact

            line = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise StoreError(f"the shared store {redact(self.url)}: {line}") from None

    @property
    def local(self) -> Store | None:
        """This node's own store, when it has one (stat cache, outbox)."""
        if self._local is False:
            try:
                self._local = Store(self.home, readonly=True)
            except StoreError:
                self._local = None
        return self._local

    # -- runs -------------------------------------------------------------------

    def _fix(self, doc: dict, offset: float) -> dict:
        if abs(offset) >= SKEW_TOLERANCE_S:
            doc["clock"] = {"offset_s": round(offset, 3), "started_at_node": doc.get("started_at"),
                            "ended_at_node": doc.get("ended_at")}
            doc["started_at"] = _shift(doc.get("started_at"), -offset)
            doc["ended_at"] = _shift(doc.get("ended_at"), -offset)
        return doc

    def get_run(self, run_id: str) -> dict | None:
        if run_id not in self._docs:
            rows = self._q("SELECT doc, clock_offset_s FROM runs WHERE id = %s", (run_id,))
            self._docs[run_id] = self._fix(rows[0][0], rows[0][1]) if rows else None
            self.seen.add(run_id)
        doc = self._docs[run_id]
        return None if doc is None else json.loads(json.dumps(doc))

    def run_files(self, run_id: str) -> list[dict]:
        rows = self._q("SELECT files FROM runs WHERE id = %s", (run_id,))
        return rows[0][0] if rows else []

    def run_procs(self, run_id: str) -> list[dict]:
        rows = self._q("SELECT procs FROM runs WHERE id = %s", (run_id,))
        return rows[0][0] if rows else []

    def run(self, run_id: str):
        """The typed run record, as Store.run."""
        from roar.record.records import Run

        doc = self.get_run(run_id)
        return None if doc is None else Run.from_doc(doc)

    def files(self, run_id: str):
        from roar.record.records import FileVersion

        return [FileVersion.from_doc(f) for f in self.run_files(run_id)]

    def processes(self, run_id: str):
        from roar.record.records import Process

        return [Process.from_doc(p) for p in self.run_procs(run_id)]

    def iter_runs(self, newest_first: bool = True) -> Iterator[dict]:
        order, cmp = ("DESC", "<") if newest_first else ("ASC", ">")
        last = None
        while True:
            if last is None:
                rows = self._q(f"SELECT id, doc, clock_offset_s FROM runs ORDER BY id {order} "
                               f"LIMIT {PAGE}")
            else:
                rows = self._q(f"SELECT id, doc, clock_offset_s FROM runs WHERE id {cmp} %s "
                               f"ORDER BY id {order} LIMIT {PAGE}", (last,))
            for _rid, doc, offset in rows:
                yield self._fix(doc, offset)
            if len(rows) < PAGE:
                return
            last = rows[-1][0]

    def resolve_run(self, prefix: str) -> str:
        p = prefix.strip().upper()
        if not p:
            raise RefError("empty run reference")
        like = p.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        found = [r[0] for r in self._q("SELECT id FROM runs WHERE id LIKE %s ORDER BY id LIMIT 2",
                                       (like,))]
        if not found:
            raise RefError(f"no run matches '{prefix}'")
        if len(found) > 1:
            raise RefError(f"run prefix '{prefix}' is ambiguous: give more characters")
        return found[0]

    def group_runs(self, group_id: str) -> list[str]:
        """Ids of the runs of a job group, oldest first (every node's)."""
        return [r[0] for r in self._q("SELECT id FROM runs WHERE group_id = %s ORDER BY id",
                                      (group_id,))]

    # -- content hash indexes ------------------------------------------------------

    def _by_hashes(self, table: str, hashes) -> dict[str, list[tuple[str, list[str]]]]:
        keys = sorted(set(hashes))
        out: dict[str, list[tuple[str, list[str]]]] = {h: [] for h in keys}
        if not keys:
            return out
        rows = self._q(f"SELECT hash, run_id, paths FROM {table} WHERE hash = ANY(%s) "
                       f"ORDER BY hash, run_id", ([bytes.fromhex(h) for h in keys],))
        for h, rid, paths in rows:
            out[bytes(h).hex()].append((rid, list(paths)))
        return out

    def readers_of(self, hash_hex: str) -> list[tuple[str, list[str]]]:
        return self._by_hashes("reads", [hash_hex])[hash_hex]

    def writers_of(self, hash_hex: str) -> list[tuple[str, list[str]]]:
        return self._by_hashes("writes", [hash_hex])[hash_hex]

    def readers_of_many(self, hashes) -> dict[str, list[tuple[str, list[str]]]]:
        return self._by_hashes("reads", hashes)

    def writers_of_many(self, hashes) -> dict[str, list[tuple[str, list[str]]]]:
        return self._by_hashes("writes", hashes)

    def resolve_hash(self, prefix: str) -> str | None:
        p = prefix.strip().lower()
        if len(p) < 4 or any(c not in "0123456789abcdef" for c in p):
            return None
        even = p[: len(p) // 2 * 2]
        lo = bytes.fromhex(even)
        n = int.from_bytes(lo, "big") + 1
        hi = n.to_bytes(len(lo), "big") if n < 1 << (8 * len(lo)) else None
        found: set[str] = set()
        for table in ("reads", "writes"):
            sql = f"SELECT DISTINCT hash FROM {table} WHERE hash >= %s"
            params: tuple = (lo,)
            if hi is not None:
                sql += " AND hash < %s"
                params = (lo, hi)
            for (h,) in self._q(sql + " ORDER BY hash LIMIT 32", params):
                if bytes(h).hex().startswith(p):
                    found.add(bytes(h).hex())
        if len(found) > 1:
            raise RefError(f"hash prefix '{prefix}' is ambiguous: give more characters")
        return found.pop() if found else None

    def cached_hash_key(self, key: bytes) -> str | None:
        return self.local.cached_hash_key(key) if self.local else None

    # -- what is not in the shared store yet ------------------------------------------

    def unsynced_reasons(self) -> list[str]:
        """Why runs that may matter to this query may be missing: this node's
        outbox not empty, another node's last reported outbox not empty, a job
        group of a run the query met with ranks missing."""
        from roar.record.ids import hostname

        reasons = []
        if self.local is not None:
            from roar.shared.outbox import pending

            n = pending(self.local)
            if n:
                reasons.append(f"{n} run(s) of this node are not in the shared store yet "
                               f"(roar sync pushes them)")
        for host, n, at in self._q("SELECT host, pending, last_push FROM nodes "
                                   "WHERE pending > 0 AND host <> %s ORDER BY host",
                                   (hostname(),)):
            reasons.append(f"node {host} had {n} run(s) not yet pushed at its last push "
                           f"({at:%Y-%m-%d %H:%M:%S} UTC)")
        groups: dict[str, int] = {}
        for rid in sorted(self.seen):
            g = (self._docs.get(rid) or {}).get("group") or {}
            if isinstance(g, dict) and g.get("id") and g.get("world_size"):
                groups[g["id"]] = max(groups.get(g["id"], 0), int(g["world_size"]))
        for gid, world in sorted(groups.items()):
            rows = self._q("SELECT DISTINCT (doc->'group'->>'rank')::int FROM runs "
                           "WHERE group_id = %s AND doc->'group'->>'rank' IS NOT NULL", (gid,))
            have = {r[0] for r in rows}
            missing = [r for r in range(world) if r not in have]
            if missing:
                reasons.append(f"job group {gid}: rank(s) {', '.join(map(str, missing))} of "
                               f"{world} not in the shared store")
        return reasons


def qualify(store, doc: dict) -> dict:
    """A lineage answer from the shared store, made honest about what is not
    there yet: `no` becomes `unknown` and `complete` false, with the reasons.
    Answers from a local store are returned unchanged."""
    if not isinstance(store, SharedStore):
        return doc
    reasons = store.unsynced_reasons()
    if not reasons:
        return doc
    if "answer" in doc:  # membership: only a "no" can be false
        if doc["answer"] == "no":
            doc["answer"] = "unknown"
        for f in doc.get("files") or []:
            if f.get("answer") == "no":
                f["answer"] = "unknown"
        if doc["answer"] == "yes" and not any(f["answer"] == "unknown"
                                              for f in doc.get("files") or []):
            return doc
    else:
        doc["complete"] = False
    doc["reasons"] = list(doc.get("reasons") or []) + reasons
    return doc
