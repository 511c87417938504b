"""The shared store on a real PostgreSQL server (tests/pgserver.py): the
outbox and `roar sync`, idempotent pushes, PostgreSQL down while runs go on,
the schema version, and queries across nodes from a node with no store of its
own. Nodes are separate ROAR_HOMEs with their own host ids; the synthetic runs
are stored as finish_run stores them (History), the capture test at the end
runs a real three-node pipeline under the probes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from conftest import REPO, History, hash_of, one_line_error

from roar.record.store import Store
from roar.shared import outbox
from roar.shared.backend import SharedStore, qualify
from roar.shared.db import SCHEMA_VERSION, connect

RAW = b"raw rows\n" * 10
FEATURES = b"features v1"
MODEL = b"model v1"
UNRELATED = b"never read by anyone"


@pytest.fixture(scope="session")
def pg():
    """A private PostgreSQL cluster for the session (CI must have one)."""
    from pgserver import PgServer, PgUnavailable

    try:
        server = PgServer()
    except (PgUnavailable, KeyError) as e:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is needed in CI: {e}")
        pytest.skip(f"no PostgreSQL server here: {e}")
    server.start()
    yield server
    server.close()


@pytest.fixture
def shared(pg):
    """A fresh database of the session's server; its URL."""
    if not pg.pid():
        pg.start()  # a test that stopped it failed before starting it again
    return pg.create_db("t_" + uuid.uuid4().hex[:12])


class Node:
    """One simulated node: its own ROAR_HOME, host id and synthetic runs."""

    def __init__(self, base: Path, host: str, url: str):
        self.home, self.host, self.url = base / host, host, url
        self.hist: History | None = None

    def run(self, command, group=None, **kw) -> str:
        if self.hist is None:
            self.hist = History(self.home)
        rid = self.hist.run(command, **kw)
        self.hist.store.update_run(rid, lambda d: d.update(host=self.host, group=group))
        return rid

    def close(self) -> None:
        if self.hist is not None:
            self.hist.store.close()
            self.hist = None

    def env(self, **extra) -> dict:
        env = {**os.environ, "ROAR_HOME": str(self.home), "ROAR_HOST_ID": self.host,
               "ROAR_SHARED": self.url, "PYTHONPATH": str(REPO),
               "ROAR_SHARED_RETRY_S": "5"}  # background pushers end soon after the test
        env.update(extra)
        return env

    def roar(self, *args, check=True, **extra):
        p = subprocess.run([sys.executable, "-m", "roar", *args], env=self.env(**extra),
                           capture_output=True, text=True, timeout=120, cwd=self.home.parent)
        if check and p.returncode != 0:
            raise AssertionError(f"roar {args} on {self.host}: {p.returncode}\n{p.stderr}")
        return p

    def json(self, *args, **kw):
        return json.loads(self.roar(*args, "--json", **kw).stdout)

    def sync(self, check=True) -> dict:
        self.close()  # another process writes the outbox: let go of the store
        p = self.roar("sync", "--json", check=check)
        return json.loads(p.stdout)


def _group(gid, rank, world):
    return {"id": gid, "source": "torchelastic", "rank": rank, "local_rank": 0,
            "world_size": world}


def _pipeline(a: Node, b: Node, c: Node) -> dict:
    """prepare on A -> train as a 2-rank job on B and C -> evaluate on C."""
    ids = {"prep": a.run(["python3", "prep.py"], reads=[("/w/raw.csv", RAW)],
                         writes=[("/w/features.bin", FEATURES)])}
    ids["train0"] = b.run(["python3", "train.py"], reads=[("/w/features.bin", FEATURES)],
                          writes=[("/w/model.pt", MODEL)], group=_group("job7", 0, 2))
    ids["train1"] = c.run(["python3", "train.py"], reads=[("/w/features.bin", FEATURES)],
                          group=_group("job7", 1, 2))
    ids["eval"] = c.run(["python3", "eval.py"], reads=[("/w/model.pt", MODEL)],
                        writes=[("/w/metrics.json", b"acc 0.9")])
    return ids


def _rows(url: str) -> dict:
    with psycopg.connect(url) as conn:
        return {rid: pushes for rid, pushes in conn.execute("SELECT id, pushes FROM runs")}


def test_three_nodes_sync_then_query_from_an_empty_fourth(tmp_path, shared):
    a, b, c, d = (Node(tmp_path, h, shared) for h in ("node-a", "node-b", "node-c", "node-d"))
    ids = _pipeline(a, b, c)
    for n in (a, b, c):
        res = n.sync()
        assert res["pending"] == 0 and res["failed"] == 0 and res["last_error"] is None
    assert a.sync()["pushed"] == 0  # nothing new
    assert set(_rows(shared)) == set(ids.values())

    # D has no store at all: every answer comes from the shared store
    yes = d.json("inputs", hash_of(MODEL), "--contains", hash_of(RAW))
    assert yes["answer"] == "yes"
    assert [(e["run"], e["path"]) for e in yes["evidence"]] == [(ids["prep"], "/w/raw.csv")]
    no = d.json("inputs", hash_of(MODEL), "--contains", hash_of(UNRELATED))
    assert no["answer"] == "no"
    ins = d.json("inputs", hash_of(MODEL))
    assert {r["id"] for r in ins["runs"]} == {ids["train0"], ids["prep"]}
    assert ins["complete"]
    outs = d.json("outputs", hash_of(RAW))
    assert {(o["path"], o["run"]) for o in outs["outputs"]} == {
        ("/w/features.bin", ids["prep"]), ("/w/model.pt", ids["train0"]),
        ("/w/metrics.json", ids["eval"])}
    group = d.json("show", "group:job7")
    assert group["group"] == "job7" and group["complete"] and group["missing"] == []
    assert [(r["rank"], r["host"], r["run"]) for r in group["ranks"]] == [
        (0, "node-b", ids["train0"]), (1, "node-c", ids["train1"])]
    assert group["nodes"] == ["node-b", "node-c"]
    assert {e["path"] for e in group["inputs"]} == {"/w/features.bin"}
    assert [e["path"] for e in group["outputs"]] == ["/w/model.pt"]
    logged = d.json("log", "-n", "10")
    assert {e["id"] for e in logged} == set(ids.values())
    shown = d.json("show", ids["eval"][:12])
    assert shown["host"] == "node-c"
    assert d.json("trace", ids["prep"])["run"] == ids["prep"]
    assert d.json("diff", ids["train0"], ids["train1"])["a"]["id"] == ids["train0"]
    import roar

    with roar.open(d.home, shared=shared) as api:  # the Python API over the shared store
        assert {r.id for r in api.runs()} == set(ids.values())
        assert api.inputs(hash_of(MODEL), contains=hash_of(RAW)).answer == "yes"
    # --local: this node's store only (D has none)
    one_line_error(d.roar("log", "--local", check=False))
    assert a.json("log", "--local")[0]["id"] == ids["prep"]


def test_postgres_down_while_runs_go_on_then_nothing_lost_nothing_doubled(tmp_path, pg,
                                                                            shared):
    a, b, c = (Node(tmp_path, h, shared) for h in ("node-a", "node-b", "node-c"))
    ids = _pipeline(a, b, c)
    assert a.sync()["pushed"] == 1
    pg.stop()
    try:
        more = [b.run(["python3", "train.py", "--lr", str(i)],
                      reads=[("/w/features.bin", FEATURES)],
                      writes=[(f"/w/model-{i}.pt", b"m%d" % i)]) for i in range(3)]
        for n in (b, c):
            p = n.roar("sync", "--json", check=False)
            assert p.returncode == 1
            res = json.loads(p.stdout)
            assert res["pushed"] == 0 and res["pending"] > 0 and res["failed"] > 0
            assert "cannot reach the shared store" in res["last_error"]
        assert b.sync(check=False)["pending"] == 4
    finally:
        pg.start()
    for n in (a, b, c):
        assert n.sync()["pending"] == 0
    rows = _rows(shared)
    assert set(rows) == set(ids.values()) | set(more)
    assert set(rows.values()) == {1}
    # a duplicate push (the whole store queued again) stores each run once
    p = b.roar("sync", "--all", "--json")
    assert json.loads(p.stdout)["pushed"] == 4  # train0 and the three made while down
    rows = _rows(shared)
    assert len(rows) == 4 + 3 and rows[ids["train0"]] == 2
    with psycopg.connect(shared) as conn:
        n_edges = conn.execute("SELECT count(*) FROM writes WHERE run_id = %s",
                               (ids["train0"],)).fetchone()[0]
    assert n_edges == 1


def test_unsynced_runs_make_no_unknown(tmp_path, shared):
    a, b, c, d = (Node(tmp_path, h, shared) for h in ("node-a", "node-b", "node-c", "node-d"))
    _pipeline(a, b, c)
    a.sync()
    b.sync()
    # C (rank 1 of job7, and eval) has not pushed: the group is missing a rank
    no = d.json("inputs", hash_of(MODEL), "--contains", hash_of(UNRELATED))
    assert no["answer"] == "unknown"
    assert any("job7: rank(s) 1 of 2" in r for r in no["reasons"])
    c.sync()
    assert d.json("inputs", hash_of(MODEL), "--contains", hash_of(UNRELATED))["answer"] == "no"
    # this node's own outbox not empty: unknown until it is pushed
    d.run(["python3", "x.py"], writes=[("/w/other.bin", b"other")])
    d.close()
    doc = d.json("inputs", hash_of(MODEL), "--contains", hash_of(UNRELATED))
    assert doc["answer"] == "unknown"
    assert any("1 run(s) of this node" in r for r in doc["reasons"])
    assert d.json("inputs", hash_of(MODEL))["complete"] is False
    d.sync()
    assert d.json("inputs", hash_of(MODEL), "--contains", hash_of(UNRELATED))["answer"] == "no"


def test_another_nodes_reported_backlog_makes_no_unknown(tmp_path, shared):
    a, d = Node(tmp_path, "node-a", shared), Node(tmp_path, "node-d", shared)
    a.run(["python3", "prep.py"], reads=[("/w/raw.csv", RAW)],
          writes=[("/w/features.bin", FEATURES)])
    a.sync()
    with psycopg.connect(shared) as conn:  # as node-b would report a backlog it could not push
        conn.execute("INSERT INTO nodes VALUES ('node-b', 3, now(), 0)")
    doc = d.json("inputs", hash_of(FEATURES), "--contains", hash_of(UNRELATED))
    assert doc["answer"] == "unknown"
    assert any("node node-b had 3 run(s)" in r for r in doc["reasons"])


def test_skewed_clock_is_corrected_so_links_hold(tmp_path, shared, monkeypatch):
    """Node B's clock is an hour behind: its training run (after A's prep, in
    truth) carries times before prep started. The push measures B's offset
    against the database's clock and queries correct for it."""
    a, b = Node(tmp_path, "node-a", shared), Node(tmp_path, "node-b", shared)
    import time as real_time

    now_ms = int(real_time.time() * 1000)
    prep = a.run(["python3", "prep.py"], reads=[("/w/raw.csv", RAW)],
                 writes=[("/w/features.bin", FEATURES)], at=now_ms - 120_000)
    train = b.run(["python3", "train.py"], reads=[("/w/features.bin", FEATURES)],
                  writes=[("/w/model.pt", MODEL)], at=now_ms - 3_600_000)
    a.sync()
    b.close()
    monkeypatch.setenv("ROAR_HOST_ID", "node-b")
    wall = real_time.time
    monkeypatch.setattr(outbox.time, "time", lambda: wall() - 3600)
    with Store(b.home) as store:
        assert outbox.push(store, shared)["pushed"] == 1
    monkeypatch.undo()
    with SharedStore(shared, tmp_path / "none") as s:
        doc = s.get_run(train)
        assert abs(doc["clock"]["offset_s"] + 3600) < 5
        from roar.query import lineage

        res = qualify(s, lineage.contains(s, ("artifact", hash_of(MODEL)), hash_of(RAW)))
        assert res["answer"] == "yes" and res["evidence"][0]["run"] == prep
    # without the correction the walk would have dropped the link: B's run "ended"
    # before A's started
    assert b.hist is None


def test_schema_version_newer_is_refused_in_one_line(tmp_path, shared):
    connect(shared).close()
    with psycopg.connect(shared) as conn:
        assert conn.execute("SELECT max(version) FROM roar_schema").fetchone()[0] == \
            SCHEMA_VERSION
        conn.execute("INSERT INTO roar_schema VALUES (%s)", (SCHEMA_VERSION + 1,))
    a = Node(tmp_path, "node-a", shared)
    a.run(["true"])
    a.close()
    line = one_line_error(a.roar("log", check=False))
    assert "newer than this roar understands" in line
    res = json.loads(a.roar("sync", "--json", check=False).stdout)
    assert "newer than this roar understands" in res["last_error"] and res["pending"] == 1


def test_sync_without_a_shared_store_says_how_to_configure(tmp_path):
    n = Node(tmp_path, "node-a", "")
    line = one_line_error(n.roar("sync", check=False))
    assert "ROAR_SHARED" in line


def test_config_file_names_the_shared_store(tmp_path, shared):
    a = Node(tmp_path, "node-a", shared)
    a.run(["python3", "prep.py"], writes=[("/w/features.bin", FEATURES)])
    a.close()
    (a.home / "config.toml").write_text(f'shared = "{shared}"\n')
    env = {k: v for k, v in a.env().items() if k != "ROAR_SHARED"}
    p = subprocess.run([sys.executable, "-m", "roar", "sync", "--json"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert json.loads(p.stdout)["pushed"] == 1, p.stderr
    (a.home / "config.toml").write_text("shared = [1]\n")
    p = subprocess.run([sys.executable, "-m", "roar", "sync"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert "config.toml" in one_line_error(p)


# -- a real pipeline under the probes, on three nodes ----------------------------------

PREP = """import sys
open("features.bin", "w").write(open("raw.csv").read().upper())
"""
TRAIN = """import os
f = open("features.bin").read()
if os.environ["RANK"] == "0":
    open("model.pt", "w").write("model of " + f)
"""
EVAL = """open("metrics.json", "w").write(str(len(open("model.pt").read())))
"""


@pytest.mark.capture
def test_captured_pipeline_across_three_nodes(roard, tmp_path, pg, shared):
    """prep on A, a 2-rank training job on B and C, eval on C: each node its own
    store and host id, the files shared (as on a cluster filesystem). Runs are
    pushed by the background pusher roar run starts; `roar sync` reports
    nothing left; D, with no store, answers across nodes. Then PostgreSQL is
    stopped while runs go on, restarted, synced: nothing lost, nothing doubled."""
    work = tmp_path / "work"
    work.mkdir()
    for name, text in (("prep.py", PREP), ("train.py", TRAIN), ("eval.py", EVAL)):
        (work / name).write_text(text)
    (work / "raw.csv").write_text("a,b\n1,2\n")
    nodes = {h: Node(tmp_path, h, shared) for h in ("node-a", "node-b", "node-c", "node-d")}

    def run(host, *cmd, **env):
        p = subprocess.run([sys.executable, "-m", "roar", "run", *cmd],
                           env=nodes[host].env(ROAR_SOCKET=str(roard), **env), cwd=work,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        return nodes[host].json("log", "--local", "-n", "1")[0]["id"]

    prep = run("node-a", "python3", "prep.py")
    job = {"TORCHELASTIC_RUN_ID": "job9", "WORLD_SIZE": "2"}
    train0 = run("node-b", "python3", "train.py", RANK="0", **job)
    train1 = run("node-c", "python3", "train.py", RANK="1", **job)
    ev = run("node-c", "python3", "eval.py")
    ids = {prep, train0, train1, ev}
    for h in ("node-a", "node-b", "node-c"):
        res = nodes[h].sync()
        assert res["pending"] == 0 and res["last_error"] is None
    assert set(_rows(shared)) == ids

    d = nodes["node-d"]
    raw_hash = hash_of((work / "raw.csv").read_bytes())
    model = str(work / "model.pt")
    doc = d.json("inputs", model, "--contains", str(work / "raw.csv"))
    assert doc["answer"] == "yes", doc
    assert {e["run"] for e in doc["evidence"]} == {prep}
    (tmp_path / "other.csv").write_text("never read\n")
    assert d.json("inputs", model, "--contains", str(tmp_path / "other.csv"))["answer"] == "no"
    outs = d.json("outputs", raw_hash)
    assert {o["run"] for o in outs["outputs"]} >= {prep, train0, ev}
    group = d.json("show", "group:job9")
    assert group["complete"] and group["nodes"] == ["node-b", "node-c"]
    assert [(r["rank"], r["run"]) for r in group["ranks"]] == [(0, train0), (1, train1)]

    pg.stop()
    try:
        later = {run("node-a", "python3", "prep.py"), run("node-c", "python3", "eval.py")}
        p = nodes["node-a"].roar("sync", "--json", check=False)
        assert p.returncode == 1 and json.loads(p.stdout)["pending"] == 1
    finally:
        pg.start()
    for h in ("node-a", "node-c"):
        assert nodes[h].sync()["pending"] == 0
    rows = _rows(shared)
    assert set(rows) == ids | later
    assert all(n >= 1 for n in rows.values())
