"""The shared store's PostgreSQL schema: created and migrated by roar, one
version table, a newer schema refused. Connections are made here.

Tables: runs (one row per run: its document, file and process records as
jsonb, the host that pushed it and that host's clock offset), reads and
writes (edge tables: content hash -> run, with the paths; indexed both ways,
so lineage walks cost what their answer costs), nodes (each host's last push
and how many of its runs were still waiting in its outbox then)."""

from __future__ import annotations

import psycopg

from roar.record.store import StoreError
from roar.shared.config import redact

SCHEMA_VERSION = 1
# Taken by every connection that checks or migrates the schema, so twenty
# nodes starting at once do not race each other's CREATE TABLE.
_MIGRATION_LOCK = 0x726F6172  # "roar"

MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE runs (
             id text COLLATE "C" PRIMARY KEY,
             host text NOT NULL,
             started_at text,
             status text,
             group_id text COLLATE "C",
             clock_offset_s double precision NOT NULL DEFAULT 0,
             doc jsonb NOT NULL,
             files jsonb NOT NULL,
             procs jsonb NOT NULL,
             pushed_at timestamptz NOT NULL DEFAULT now(),
             pushes integer NOT NULL DEFAULT 1)""",
        "CREATE INDEX runs_group ON runs (group_id) WHERE group_id IS NOT NULL",
        "CREATE INDEX runs_host ON runs (host)",
        """CREATE TABLE reads (hash bytea NOT NULL, run_id text COLLATE "C" NOT NULL,
             paths text[] NOT NULL, PRIMARY KEY (hash, run_id))""",
        "CREATE INDEX reads_run ON reads (run_id)",
        """CREATE TABLE writes (hash bytea NOT NULL, run_id text COLLATE "C" NOT NULL,
             paths text[] NOT NULL, PRIMARY KEY (hash, run_id))""",
        "CREATE INDEX writes_run ON writes (run_id)",
        """CREATE TABLE nodes (host text PRIMARY KEY, pending integer NOT NULL,
             last_push timestamptz NOT NULL, clock_offset_s double precision)""",
    ],
}


class SharedError(StoreError):
    """The shared store cannot be used; the message says why in one line."""


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def connect(url: str, timeout: float = 5.0) -> psycopg.Connection:
    """A connection to the shared store, its schema created or migrated.
    Autocommit: every write is an explicit conn.transaction() block."""
    try:
        conn = psycopg.connect(url, connect_timeout=max(1, int(timeout)),
                               application_name="roar", autocommit=True)
    except psycopg.Error as e:
        raise SharedError(f"cannot reach the shared store {redact(url)}: "
                          f"{_first_line(e)}") from None
    try:
        migrate(conn, url)
    except BaseException:
        conn.close()
        raise
    return conn


def migrate(conn: psycopg.Connection, url: str = "") -> int:
    """Bring the schema to SCHEMA_VERSION; refuse a newer one. Returns the
    version found before."""
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS roar_schema (version integer NOT NULL)")
            found = conn.execute("SELECT max(version) FROM roar_schema").fetchone()[0] or 0
            if found > SCHEMA_VERSION:
                raise SharedError(
                    f"the shared store {redact(url) or ''} has schema {found}, newer than this "
                    f"roar understands ({SCHEMA_VERSION}): upgrade roar")
            for version in range(found + 1, SCHEMA_VERSION + 1):
                for stmt in MIGRATIONS[version]:
                    conn.execute(stmt)
                conn.execute("INSERT INTO roar_schema (version) VALUES (%s)", (version,))
    except psycopg.Error as e:
        raise SharedError(f"the shared store {redact(url)}: {_first_line(e)}") from None
    return found
