"""Lineage queries: roar inputs (with membership), roar outputs, roar diff.

Unit tests build stores directly (fast, no privileges); the capture tests run
a real preprocess -> train -> evaluate pipeline under the probes and ask the
questions a user would."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import networkx as nx
import pytest
from conftest import REPO, History, Roar, git, hash_of, one_line_error, xxh128

from roar.query import lineage
from roar.record.store import RefError, Store

RAW = [(f"/w/data/raw/shard-{i}.csv", f"row {i}\n".encode()) for i in range(3)]
FEATURES = b"features v1"
MODEL = b"model v1"


@pytest.fixture
def hist(tmp_path):
    h = History(tmp_path / "home")
    yield h
    h.store.close()


def _pipeline(h: History, raw=RAW, lr="0.1", env=None, features=FEATURES, model=MODEL,
              model_path="/w/out/model.pt"):
    """preprocess (reads a dataset) -> train -> evaluate; returns the run ids."""
    pre = h.run(["python3", "preprocess.py", "data/raw", "out/features.json"], reads=raw,
                code=[("/w/preprocess.py", b"pre")],
                writes=[("/w/out/features.json", features)])
    train = h.run(["python3", "train.py", "out/features.json", model_path, "--lr", lr],
                  reads=[("/w/out/features.json", features)], code=[("/w/train.py", b"train")],
                  writes=[(model_path, model)], env=env)
    ev = h.run(["python3", "evaluate.py", model_path],
               reads=[(model_path, model), ("/w/out/features.json", features)],
               code=[("/w/evaluate.py", b"eval")], writes=[("/w/out/metrics.json", b"m1")])
    return pre, train, ev


# -- inputs ---------------------------------------------------------------------------


def test_inputs_walks_every_upstream_run_by_content(hist):
    pre, train, _ = _pipeline(hist)
    doc = lineage.inputs(hist.store, ("artifact", hash_of(MODEL)))
    assert doc["complete"] and doc["reasons"] == []
    assert doc["target"]["produced_by"] == [train]
    by_path = {e["path"]: e for e in doc["inputs"]}
    feat = by_path["/w/out/features.json"]
    assert (feat["hash"], feat["produced_by"], feat["depth"]) == (hash_of(FEATURES), pre, 1)
    for path, content in RAW:
        e = by_path[path]
        assert (e["hash"], e["produced_by"], e["depth"]) == (hash_of(content), None, 2)
        assert e["dataset"] == "/w/data/raw"
    assert by_path["/w/train.py"]["kind"] == "code"
    assert "/w/evaluate.py" not in by_path  # downstream of the model, not upstream
    assert [r["id"] for r in doc["runs"]] == [train, pre]
    for e in doc["inputs"]:
        assert {"path", "hash", "size", "produced_by", "depth"} <= e.keys()


def test_dataset_version_is_over_the_pairs_actually_read(hist):
    _pipeline(hist)
    doc = lineage.inputs(hist.store, ("artifact", hash_of(MODEL)))
    [ds] = doc["datasets"]
    assert ds["path"] == "/w/data/raw" and ds["count"] == 3 and ds["depth"] == 2
    assert ds["produced"] == 0 and ds["produced_by"] == []
    assert ds["version"] == lineage.dataset_version(
        (Path(p).name, hash_of(c)) for p, c in RAW)
    assert [m["path"] for m in ds["members"]] == ["shard-0.csv", "shard-1.csv", "shard-2.csv"]
    # a subset read is another version of the dataset
    other = lineage.dataset_version((Path(p).name, hash_of(c)) for p, c in RAW[:2])
    assert other != ds["version"]


def test_parent_directory_of_two_inputs_is_a_dataset_the_cwd_never(hist):
    rid = hist.run(["python3", "t.py"], reads=[("/w/a.csv", b"a"), ("/w/b.csv", b"b"),
                                               ("/d/x/1", b"1"), ("/d/x/2", b"2"),
                                               ("/d/y/1", b"3")])
    roots = lineage.dataset_roots(lineage.RunCache(hist.store).get(rid))
    assert roots == {"/d/x/1": "/d/x", "/d/x/2": "/d/x"}


def test_read_then_rewrite_is_two_versions_not_a_cycle(hist):
    v1, v2, v3 = b"state 1", b"state 2", b"state 3"
    a = hist.run(["python3", "step.py"], reads=[("/w/state", v1)], writes=[("/w/state", v2)])
    b = hist.run(["python3", "step.py"], reads=[("/w/state", v2)], writes=[("/w/state", v3)])
    g = lineage.upstream(hist.store, ("artifact", hash_of(v3)))
    assert nx.is_directed_acyclic_graph(g.to_networkx())
    doc = lineage.inputs(hist.store, ("artifact", hash_of(v3)))
    assert [(e["hash"], e["produced_by"], e["depth"]) for e in doc["inputs"]
            if e["kind"] == "data"] == [(hash_of(v2), a, 1), (hash_of(v1), None, 2)]
    assert {r["id"] for r in doc["runs"]} == {a, b}


def test_identical_outputs_link_every_producer_but_not_later_ones(hist):
    src = [("/w/in.csv", b"input")]
    first = hist.run(["python3", "make.py"], reads=src, writes=[("/w/a.bin", b"same")])
    second = hist.run(["python3", "make.py"], reads=src, writes=[("/w/b.bin", b"same")])
    user = hist.run(["python3", "use.py"], reads=[("/w/a.bin", b"same")],
                    writes=[("/w/out", b"out")])
    late = hist.run(["python3", "again.py"], writes=[("/w/c.bin", b"same")])
    doc = lineage.inputs(hist.store, ("run", user))
    [e] = [e for e in doc["inputs"] if e["hash"] == hash_of(b"same")]
    assert e["producers"] == sorted([first, second]) and e["produced_by"] == first
    assert late not in {r["id"] for r in doc["runs"]}
    # as a target, content written by several runs links to all of them
    t = lineage.inputs(hist.store, ("artifact", hash_of(b"same")))["target"]
    assert t["produced_by"] == [first, second, late]


def test_empty_content_links_only_by_path(hist):
    hist.run(["touch", "/w/elsewhere"], writes=[("/w/elsewhere", b"")])
    marker = hist.run(["touch", "/w/done"], writes=[("/w/done", b"")])
    user = hist.run(["python3", "use.py"], reads=[("/w/done", b"")], writes=[("/w/o", b"o")])
    doc = lineage.inputs(hist.store, ("run", user))
    assert {r["id"] for r in doc["runs"]} == {user, marker}


def test_walk_loads_only_the_upstream_part(hist, monkeypatch):
    for i in range(50):
        hist.run(["python3", "other.py"], reads=[(f"/o/{i}", b"x%d" % i)],
                 writes=[(f"/o/out{i}", b"y%d" % i)])
    _pipeline(hist)
    loaded = []
    real = hist.store.get_run
    monkeypatch.setattr(hist.store, "get_run", lambda rid: loaded.append(rid) or real(rid))
    lineage.inputs(hist.store, ("artifact", hash_of(MODEL)))
    assert len(set(loaded)) == 2


# -- membership ---------------------------------------------------------------------------


def test_contains_yes_with_evidence_and_no(hist):
    pre, _, _ = _pipeline(hist)
    target = ("artifact", hash_of(MODEL))
    yes = lineage.contains(hist.store, target, hash_of(RAW[1][1]))
    assert yes["answer"] == "yes" and yes["reasons"] == []
    assert yes["evidence"] == [{"run": pre, "path": RAW[1][0], "depth": 2}]
    no = lineage.contains(hist.store, target, hash_of(b"never read"))
    assert no["answer"] == "no" and no["evidence"] == [] and no["reasons"] == []
    # metrics are downstream of the model: not in its training data
    assert lineage.contains(hist.store, target, hash_of(b"m1"))["answer"] == "no"


@pytest.mark.parametrize("flaw", ["incomplete", "interrupted", "unverified", "running"])
def test_contains_is_unknown_when_upstream_capture_is_incomplete(hist, flaw):
    kw = {"incomplete": {"complete": False, "reasons": ["3 kernel events lost"]},
          "interrupted": {"status": "interrupted", "complete": False,
                          "reasons": ["run was interrupted"]},
          "unverified": {"unverified": ["/w/data/raw/late.csv"]},
          "running": {"status": "running", "complete": None}}[flaw]
    pre = hist.run(["python3", "preprocess.py", "data/raw"], reads=RAW,
                   writes=[("/w/out/features.json", FEATURES)], **kw)
    hist.run(["python3", "train.py"], reads=[("/w/out/features.json", FEATURES)],
             writes=[("/w/out/model.pt", MODEL)])
    target = ("artifact", hash_of(MODEL))
    doc = lineage.contains(hist.store, target, hash_of(b"never read"))
    assert doc["answer"] == "unknown"
    assert doc["reasons"] and all(pre[:10] in r for r in doc["reasons"])
    # what was seen is still a yes
    assert lineage.contains(hist.store, target, hash_of(RAW[0][1]))["answer"] == "yes"
    doc = lineage.inputs(hist.store, target)
    assert doc["complete"] is False
    if flaw == "unverified":  # listed all the same, never dropped
        [e] = [e for e in doc["inputs"] if e["hash"] is None]
        assert (e["path"], e["status"], e["depth"]) == ("/w/data/raw/late.csv", "unverified", 2)


def test_contains_on_content_no_run_wrote_is_unknown(hist):
    _pipeline(hist)
    doc = lineage.contains(hist.store, ("artifact", hash_of(RAW[0][1])), hash_of(b"anything"))
    assert doc["answer"] == "unknown" and "no recorded run wrote" in doc["reasons"][0]


def test_contains_dir_reports_each_file(hist, tmp_path):
    _pipeline(hist)
    d = tmp_path / "raw"
    d.mkdir()
    (d / "shard-0.csv").write_bytes(RAW[0][1])
    (d / "shard-1.csv").write_bytes(b"edited since")
    (d / "sub").mkdir()
    (d / "sub" / "copy.csv").write_bytes(RAW[2][1])
    doc = lineage.contains_dir(hist.store, ("artifact", hash_of(MODEL)), str(d))
    answers = {f["path"]: f["answer"] for f in doc["files"]}
    assert answers == {"shard-0.csv": "yes", "shard-1.csv": "no", "sub/copy.csv": "yes"}
    assert (doc["answer"], doc["reached"], doc["total"]) == ("yes", 2, 3)


def test_content_ref_accepts_files_hashes_and_prefixes(hist, tmp_path):
    _pipeline(hist)
    f = tmp_path / "x"
    f.write_bytes(FEATURES)
    assert lineage.content_ref(hist.store, str(f)) == (hash_of(FEATURES), str(f))
    assert lineage.content_ref(hist.store, hash_of(b"unknown"))[0] == hash_of(b"unknown")
    assert lineage.content_ref(hist.store, hash_of(FEATURES)[:10])[0] == hash_of(FEATURES)
    with pytest.raises(RefError, match="neither an existing file"):
        lineage.content_ref(hist.store, "no/such/file")
    with pytest.raises(RefError, match="--contains-dir"):
        lineage.content_ref(hist.store, str(tmp_path))


# -- outputs ------------------------------------------------------------------------------


def test_outputs_is_transitive(hist):
    pre, train, ev = _pipeline(hist)
    hist.run(["python3", "unrelated.py"], reads=[("/w/other", b"other")],
             writes=[("/w/o2", b"o2")])
    doc = lineage.outputs(hist.store, ("artifact", hash_of(RAW[0][1])))
    assert doc["complete"]
    got = {(e["path"], e["run"], e["depth"]) for e in doc["outputs"]}
    assert got == {("/w/out/features.json", pre, 1), ("/w/out/model.pt", train, 2),
                   ("/w/out/metrics.json", ev, 2)}  # evaluate read the features too
    for e in doc["outputs"]:
        assert {"path", "hash", "run", "depth"} <= e.keys()
    # from a run: what it wrote and everything downstream of that
    assert {e["run"] for e in lineage.outputs(hist.store, ("run", train))["outputs"]} == {
        train, ev}


def test_outputs_ignores_earlier_readers_of_identical_content(hist):
    early = hist.run(["python3", "old.py"], reads=[("/w/x", b"same")], writes=[("/w/e", b"e")])
    src = hist.run(["python3", "make.py"], reads=[("/w/users.csv", b"pii")],
                   writes=[("/w/x", b"same")])
    later = hist.run(["python3", "use.py"], reads=[("/w/x", b"same")], writes=[("/w/l", b"l")])
    doc = lineage.outputs(hist.store, ("artifact", hash_of(b"pii")))
    assert {e["run"] for e in doc["outputs"]} == {src, later}
    assert early not in {r["id"] for r in doc["runs"]}


def test_outputs_incomplete_downstream_is_said(hist):
    hist.run(["python3", "make.py"], reads=[("/w/users.csv", b"pii")],
             writes=[("/w/x", b"x")], complete=False, reasons=["io_uring used"])
    doc = lineage.outputs(hist.store, ("artifact", hash_of(b"pii")))
    assert doc["complete"] is False and "io_uring used" in doc["reasons"][0]


# -- diff -----------------------------------------------------------------------------


def _kinds(doc):
    return [(c["kind"], c["step"], c["key"]) for c in doc["changes"]]


def test_diff_same_upstream_has_no_changes(hist):
    _pipeline(hist)
    doc = lineage.diff(hist.store, ("artifact", hash_of(MODEL)), ("artifact", hash_of(MODEL)))
    assert doc["changes"] == [] and all(s["a"] == s["b"] for s in doc["steps"])


def test_diff_retrain_reports_args_and_env_before_noise(hist):
    pre, a, _ = _pipeline(hist, env={"HOME": "/root", "PWD": "/w", "TOKEN": {
        "redacted": "hmac-sha256:" + "1" * 64}, "SAME_SECRET": {"redacted": "hmac-sha256:2"}})
    b = hist.run(["python3", "train.py", "out/features.json", "/w/out/model2.pt", "--lr", "0.2"],
                 reads=[("/w/out/features.json", FEATURES)], code=[("/w/train.py", b"train")],
                 writes=[("/w/out/model2.pt", b"model v2")], packages={"numpy": "2.0.0"},
                 env={"HOME": "/root", "PWD": "/tmp", "SEED": "7", "TOKEN": {
                     "redacted": "hmac-sha256:" + "3" * 64},
                      "SAME_SECRET": {"redacted": "hmac-sha256:2"}},
                 exe="/usr/bin/python3.12", exit_code=1)
    doc = lineage.diff(hist.store, ("artifact", hash_of(MODEL)), ("artifact", hash_of(b"model v2")))
    kinds = _kinds(doc)
    assert ("args", "train.py", "--lr") in kinds and ("args", "train.py", "#2") in kinds
    lr = next(c for c in doc["changes"] if c["key"] == "--lr")
    assert (lr["a"], lr["b"], lr["a_run"], lr["b_run"]) == ("0.1", "0.2", a, b)
    assert ("env", "train.py", "SEED") in kinds and ("env", "train.py", "TOKEN") in kinds
    assert ("env", "train.py", "SAME_SECRET") not in kinds  # redacted, same keyed hash
    assert ("packages", "train.py", "numpy") in kinds
    assert ("command", "train.py", "interpreter") in kinds
    assert ("exit", "train.py", "exit_code") in kinds
    order = [k for k, _, _ in kinds]
    assert order.index("args") < order.index("packages") < order.index("env")
    assert kinds[-1] == ("env", "train.py", "PWD")  # shell noise last
    assert not any(k == "data" for k in order)  # same features: no data change
    assert {(s["a"], s["b"]) for s in doc["steps"]} >= {(pre, pre), (a, b)}


def test_diff_upstream_data_change_leads(hist):
    _pipeline(hist)
    raw2 = [RAW[0], (RAW[1][0], b"row 1 edited"), RAW[2], ("/w/data/raw/shard-3.csv", b"new")]
    _pipeline(hist, raw=raw2, features=b"features v2", model=b"model v2")
    doc = lineage.diff(hist.store, ("artifact", hash_of(MODEL)), ("artifact", hash_of(b"model v2")))
    first = doc["changes"][0]
    assert (first["kind"], first["step"], first["key"]) == ("data", "preprocess.py", "data/raw")
    assert first["dataset"] and first["changed"] == ["shard-1.csv"]
    assert first["added"] == ["shard-3.csv"] and first["removed"] == []
    feat = next(c for c in doc["changes"] if c["key"] == "out/features.json")
    assert feat["derived"] and feat["step"] == "train.py"
    assert doc["changes"].index(first) < doc["changes"].index(feat)


def test_diff_steps_added_and_removed(hist):
    _pipeline(hist)
    extra = hist.run(["python3", "augment.py"], reads=[("/w/extra", b"e")],
                     writes=[("/w/aug.json", b"aug")])
    t = hist.run(["python3", "train.py", "out/features.json", "/w/out/m3.pt"],
                 reads=[("/w/out/features.json", FEATURES), ("/w/aug.json", b"aug")],
                 code=[("/w/train.py", b"train")], writes=[("/w/out/m3.pt", b"m3")])
    doc = lineage.diff(hist.store, ("artifact", hash_of(MODEL)), ("run", t))
    added = [c for c in doc["changes"] if c["kind"] == "step_added"]
    assert added == [{"kind": "step_added", "step": "augment.py", "key": "augment.py",
                      "a": None, "b": extra, "a_run": None, "b_run": extra, "depth": 1,
                      "command": ["python3", "augment.py"]}]
    back = lineage.diff(hist.store, ("run", t), ("artifact", hash_of(MODEL)))
    assert [c["a"] for c in back["changes"] if c["kind"] == "step_removed"] == [extra]


def test_diff_code_without_a_repository_compares_recorded_hashes(hist):
    git1 = {"root": "/nonexistent/repo", "commit": "a" * 40, "dirty": False}
    git2 = {"root": "/nonexistent/repo", "commit": "b" * 40, "dirty": False}
    a = hist.run(["python3", "train.py"], code=[("/nonexistent/repo/train.py", b"v1"),
                                                ("/nonexistent/repo/util.py", b"u")],
                 git=git1, cwd="/nonexistent/repo", writes=[("/o/a", b"a")])
    b = hist.run(["python3", "train.py"], code=[("/nonexistent/repo/train.py", b"v2"),
                                                ("/nonexistent/repo/util.py", b"u")],
                 git=git2, cwd="/nonexistent/repo", writes=[("/o/b", b"b")])
    doc = lineage.diff(hist.store, ("run", a), ("run", b))
    code = [(c["key"], c["a"], c["b"]) for c in doc["changes"] if c["kind"] == "code"]
    assert code == [("commit", "a" * 40, "b" * 40), ("train.py", hash_of(b"v1"), hash_of(b"v2"))]


def test_diff_code_uses_git_between_recorded_commits(hist, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "train.py").write_text("a = 1\n")
    (repo / "util.py").write_text("x\n")
    (repo / "unused.py").write_text("u\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "one")
    c1 = git(repo, "rev-parse", "HEAD")
    v1 = (repo / "train.py").read_bytes()
    (repo / "train.py").write_text("a = 2\nb = 3\n")
    (repo / "unused.py").write_text("changed, never read\n")
    git(repo, "commit", "-qam", "two")
    c2 = git(repo, "rev-parse", "HEAD")
    v2 = (repo / "train.py").read_bytes()
    r = str(repo)
    a = hist.run(["python3", "train.py"], cwd=r, git={"root": r, "commit": c1, "dirty": False},
                 code=[(f"{r}/train.py", v1), (f"{r}/util.py", b"x\n")],
                 writes=[("/o/a", b"a")])
    b = hist.run(["python3", "train.py"], cwd=r, git={"root": r, "commit": c2, "dirty": False},
                 code=[(f"{r}/train.py", v2), (f"{r}/util.py", b"x\n")],
                 writes=[("/o/b", b"b")])
    doc = lineage.diff(hist.store, ("run", a), ("run", b))
    code = {c["key"]: c for c in doc["changes"] if c["kind"] == "code"}
    assert set(code) == {"commit", "train.py"}  # unused.py changed but was not read
    assert code["train.py"]["lines"] == "+2 -1"


def test_step_key_and_args():
    def info(argv, inputs=()):
        return lineage.RunInfo("R", {"command": argv, "cwd": "/w", "git": {"root": "/w"}},
                               [{"path": p, "kind": "code"} for p in inputs], [])

    assert lineage.step_key(info(["python3", "-u", "src/train.py", "--lr", "1"])) == \
        "src/train.py"
    assert lineage.step_key(info(["python3.11", "-m", "pkg.train"])) == "-m pkg.train"
    assert lineage.step_key(info(["/usr/bin/python3.12", "-c", "print(1)"])) == "python"
    assert lineage.step_key(info(["./prep", "x"])) == "prep"
    assert lineage.step_key(info(["python3", "run"], ["/w/run"])) == "run"
    assert lineage.parse_args(["a", "--lr", "0.1", "--flag", "--x=1", "-n", "-5", "--tag", "p",
                               "--tag", "q", "--", "--z"]) == {
        "#1": "a", "--lr": "0.1", "--flag": True, "--x": "1", "-n": "-5", "--tag": ["p", "q"],
        "#2": "--z"}


# -- CLI: shapes and errors (no capture) -------------------------------------------------




def test_cli_json_shapes(cli):
    h = History(cli.home)
    pre, train, _ = _pipeline(h)
    for i in range(40):  # enough runs that a one-character prefix is ambiguous
        h.run(["true"], writes=[(f"/o/{i}", b"%d" % i)])
    h.store.close()
    model = hash_of(MODEL)
    doc = cli.json("inputs", model)
    assert {"target", "complete", "inputs", "datasets"} <= doc.keys()
    doc = cli.json("inputs", model, "--contains", hash_of(RAW[0][1]))
    assert {"answer", "hash", "evidence", "reasons"} <= doc.keys() and doc["answer"] == "yes"
    doc = cli.json("outputs", hash_of(RAW[0][1]))
    assert {"target", "complete", "outputs"} <= doc.keys()
    doc = cli.json("diff", pre, train)
    assert {"a", "b", "changes"} <= doc.keys()
    for c in doc["changes"]:
        assert {"kind", "step", "key", "a", "b"} <= c.keys()
    for args in (["inputs", model], ["inputs", model, "--files"], ["outputs", model],
                 ["diff", pre, train], ["inputs", model, "--contains", hash_of(b"none")]):
        p = cli(*args)
        assert p.stdout and not p.stderr

    assert "is not a run id" in one_line_error(cli("inputs", "nothing-here", check=False))
    assert "ambiguous" in one_line_error(cli("outputs", pre[0], check=False))
    assert "is not a run id" in one_line_error(cli("diff", pre, "zzzz", check=False))
    assert "neither an existing file" in one_line_error(
        cli("inputs", model, "--contains", "no/such", check=False))
    assert "not both" in one_line_error(
        cli("inputs", model, "--contains", "x", "--contains-dir", "y", check=False))
    assert "is a directory" in one_line_error(cli("outputs", cli.cwd, check=False))
    assert "not a directory" in one_line_error(
        cli("inputs", model, "--contains-dir", "no/such", check=False))


def test_cli_without_store_is_one_line(cli):
    assert "no roar store" in one_line_error(cli("inputs", "x", check=False))


# -- capture: a real pipeline -----------------------------------------------------------


def _capture(roar: Roar, *args, env=None):
    _, doc = roar.run(sys.executable, *args, env=env)
    return doc


@pytest.fixture(scope="module")
def pipeline(roard, tmp_path_factory):
    """make_data -> preprocess -> train -> evaluate; a retrain with another --lr and
    an env var; shard-1 edited, then preprocess + train again."""
    base = tmp_path_factory.mktemp("lineage")
    work = base / "repo"
    work.mkdir()
    roar = Roar(base / "home", roard, work)
    for name in ("make_data.py", "preprocess.py", "train.py", "evaluate.py"):
        shutil.copy(REPO / "examples" / "pipeline" / name, work / name)
    (work / ".gitignore").write_text("data/\nout/\nmodels/\n__pycache__/\n")
    git(work, "init", "-q")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "pipeline")
    ids = {}
    ids["make"] = _capture(roar, "make_data.py", "data/raw", "--shards", "4", "--rows", "20")["id"]
    ids["pre"] = _capture(roar, "preprocess.py", "data/raw", "out/features.json")["id"]
    ids["train"] = _capture(roar, "train.py", "out/features.json", "out/model.json",
                            "--lr", "0.1", "--epochs", "3")["id"]
    ids["eval"] = _capture(roar, "evaluate.py", "out/model.json", "out/features.json",
                           "out/metrics.json")["id"]
    ids["retrain"] = _capture(roar, "train.py", "out/features.json", "out/model2.json",
                              "--lr", "0.5", "--epochs", "3",
                              env=roar.env(LINEAGE_NOTE="retrain"))["id"]
    shard1 = work / "data" / "raw" / "shard-01.csv"
    ids["shard1_v1"] = xxh128(shard1)
    shard1.write_text(shard1.read_text().replace("1", "7"))
    ids["pre2"] = _capture(roar, "preprocess.py", "data/raw", "out/features3.json")["id"]
    ids["train3"] = _capture(roar, "train.py", "out/features3.json", "out/model3.json",
                             "--lr", "0.1", "--epochs", "3")["id"]
    return roar, ids


@pytest.mark.capture
def test_captured_inputs_and_datasets(pipeline):
    roar, ids = pipeline
    doc = roar.json("inputs", "out/model.json")
    assert doc["complete"], doc["reasons"]
    assert doc["target"]["produced_by"] == [ids["train"]]
    by_path = {Path(e["path"]).relative_to(roar.cwd).as_posix(): e for e in doc["inputs"]}
    feat = by_path["out/features.json"]
    assert (feat["produced_by"], feat["depth"]) == (ids["pre"], 1)
    assert feat["hash"] == xxh128(roar.cwd / "out" / "features.json")
    for i in range(4):
        e = by_path[f"data/raw/shard-{i:02d}.csv"]
        assert (e["produced_by"], e["depth"]) == (ids["make"], 2)
    assert by_path["train.py"]["kind"] == "code" and by_path["train.py"]["depth"] == 1
    [ds] = doc["datasets"]
    assert ds["path"] == str(roar.cwd / "data" / "raw") and ds["count"] == 4
    assert ds["produced_by"] == [ids["make"]]
    assert {r["id"] for r in doc["runs"]} == {ids["train"], ids["pre"], ids["make"]}
    assert "shard-00.csv" in roar("inputs", "out/model.json", "--files").stdout


@pytest.mark.capture
def test_captured_membership(pipeline):
    roar, ids = pipeline
    doc = roar.json("inputs", "out/model.json", "--contains", "data/raw/shard-00.csv")
    assert doc["answer"] == "yes"
    assert doc["evidence"][0]["run"] == ids["pre"] and doc["evidence"][0]["depth"] == 2
    # shard-01 was edited after model.json was trained: this content never reached it
    doc = roar.json("inputs", "out/model.json", "--contains", "data/raw/shard-01.csv")
    assert doc["answer"] == "no" and doc["other_versions"][0]["hash"] == ids["shard1_v1"]
    assert roar.json("inputs", "out/model3.json", "--contains",
                     "data/raw/shard-01.csv")["answer"] == "yes"
    [ds] = roar.json("inputs", "out/model3.json")["datasets"]
    assert (ds["produced"], ds["count"], ds["produced_by"]) == (3, 4, [ids["make"]])
    assert roar.json("inputs", "out/model.json", "--contains",
                     ids["shard1_v1"])["answer"] == "yes"
    fresh = roar.cwd / "unrelated.csv"
    fresh.write_text("never read by anything\n")
    assert roar.json("inputs", "out/model.json", "--contains", fresh)["answer"] == "no"
    doc = roar.json("inputs", "out/model.json", "--contains-dir", "data/raw")
    assert {f["path"]: f["answer"] for f in doc["files"]} == {
        "shard-00.csv": "yes", "shard-01.csv": "no", "shard-02.csv": "yes",
        "shard-03.csv": "yes"}
    p = roar("inputs", "out/model.json", "--contains", "data/raw/shard-00.csv")
    assert p.stdout.startswith("yes")


@pytest.mark.capture
def test_captured_unknown_when_an_upstream_run_is_incomplete(pipeline, tmp_path):
    roar, ids = pipeline
    home = tmp_path / "home"
    shutil.copytree(roar.home, home)
    st = Store(home)
    rec = st.get_run(ids["pre"])
    rec["complete"] = False
    rec["incomplete_reasons"] = ["12 kernel events lost (ring buffer full)"]
    st.put_run(rec)
    st.close()
    env = roar.env(ROAR_HOME=str(home))
    fresh = roar.cwd / "never-read.csv"
    fresh.write_text("not in any run\n")
    doc = json.loads(roar("inputs", "out/model.json", "--contains", fresh, "--json",
                          env=env).stdout)
    assert doc["answer"] == "unknown"
    assert any(ids["pre"][:10] in r and "events lost" in r for r in doc["reasons"])
    doc = json.loads(roar("inputs", "out/model.json", "--contains", "data/raw/shard-00.csv",
                          "--json", env=env).stdout)
    assert doc["answer"] == "yes"
    assert json.loads(roar("inputs", "out/model.json", "--json", env=env).stdout)[
        "complete"] is False
    out = roar("inputs", "out/model.json", "--contains", fresh, env=env).stdout
    assert out.startswith("unknown") and "events lost" in out


@pytest.mark.capture
def test_captured_outputs(pipeline):
    roar, ids = pipeline
    doc = roar.json("outputs", "data/raw/shard-00.csv")
    assert doc["complete"], doc["reasons"]
    got = {(Path(e["path"]).relative_to(roar.cwd).as_posix(), e["run"]) for e in doc["outputs"]}
    assert got >= {("out/features.json", ids["pre"]), ("out/model.json", ids["train"]),
                   ("out/metrics.json", ids["eval"]), ("out/model2.json", ids["retrain"]),
                   ("out/features3.json", ids["pre2"]), ("out/model3.json", ids["train3"])}
    depth = {Path(e["path"]).name: e["depth"] for e in doc["outputs"]}
    assert (depth["features.json"], depth["model.json"], depth["metrics.json"]) == (1, 2, 2)
    # the edited shard's old content reached the first pipeline only
    doc = roar.json("outputs", ids["shard1_v1"])
    assert {e["run"] for e in doc["outputs"]} >= {ids["pre"], ids["train"]}
    assert ids["pre2"] not in {e["run"] for e in doc["outputs"]}


@pytest.mark.capture
def test_captured_diff_retrain(pipeline):
    roar, ids = pipeline
    doc = roar.json("diff", "out/model.json", "out/model2.json")
    kinds = [(c["kind"], c["key"]) for c in doc["changes"]]
    lr = next(c for c in doc["changes"] if c["key"] == "--lr")
    assert (lr["kind"], lr["step"], lr["a"], lr["b"]) == ("args", "train.py", "0.1", "0.5")
    note = next(c for c in doc["changes"] if c["key"] == "LINEAGE_NOTE")
    assert (note["kind"], note["a"], note["b"]) == ("env", None, "retrain")
    assert kinds.index(("args", "--lr")) < kinds.index(("env", "LINEAGE_NOTE"))
    assert not [c for c in doc["changes"] if c["kind"] in ("data", "code", "step_added",
                                                             "step_removed")]
    shared = {s["a"] for s in doc["steps"] if s["a"] == s["b"]}
    assert shared == {ids["pre"], ids["make"]}
    out = roar("diff", "out/model.json", "out/model2.json").stdout
    assert out.index("--lr") < out.index("LINEAGE_NOTE")


@pytest.mark.capture
def test_captured_diff_upstream_data(pipeline):
    roar, ids = pipeline
    doc = roar.json("diff", "out/model.json", "out/model3.json")
    first = doc["changes"][0]
    assert (first["kind"], first["step"], first["key"]) == ("data", "preprocess.py", "data/raw")
    assert first["changed"] == ["shard-01.csv"] and first["a_run"] == ids["pre"]
    assert first["b_run"] == ids["pre2"]
    assert not [c for c in doc["changes"] if c["kind"] == "args" and c["key"] == "--lr"]
    assert roar("diff", "out/model.json", "out/model3.json").stdout.count("\n") > 3


@pytest.mark.capture
def test_captured_identity_survives_rename_and_copy(pipeline):
    roar, ids = pipeline
    before = roar.json("inputs", "out/model.json")
    (roar.cwd / "models").mkdir(exist_ok=True)
    shutil.copy(roar.cwd / "out" / "model.json", roar.cwd / "models" / "copy.json")
    shutil.copy(roar.cwd / "out" / "model2.json", roar.cwd / "models" / "tmp.json")
    (roar.cwd / "models" / "tmp.json").rename(roar.cwd / "models" / "final.json")
    after = roar.json("inputs", "models/copy.json")
    assert after["inputs"] == before["inputs"] and after["datasets"] == before["datasets"]
    assert after["target"]["produced_by"] == [ids["train"]]
    assert roar.json("diff", "out/model.json", "models/copy.json")["changes"] == []
    doc = roar.json("diff", "models/copy.json", "models/final.json")
    assert ("args", "--lr") in [(c["kind"], c["key"]) for c in doc["changes"]]
    assert roar.json("inputs", "models/final.json", "--contains",
                     "data/raw/shard-00.csv")["answer"] == "yes"


@pytest.mark.capture
def test_captured_bad_refs_are_one_line(pipeline):
    roar, ids = pipeline
    assert "is not a run id" in one_line_error(roar("inputs", "no-such-model.pt",
                                                     check=False))
    assert "ambiguous" in one_line_error(roar("outputs", ids["make"][:2], check=False))
    (roar.cwd / "stranger.bin").write_bytes(b"never recorded")
    assert "never read or written" in one_line_error(roar("diff", "out/model.json",
                                                           "stranger.bin", check=False))


# -- whole documents (pinned by the mutation run, docs/testing.md) ----------------------


def _summary(h: History, rid: str, depth: int) -> dict:
    run = h.store.get_run(rid)
    return {"id": rid, "name": None, "step": lineage.step_key(lineage.RunCache(h.store).get(rid)),
            "command": run["command"], "depth": depth, "started_at": run["started_at"],
            "status": "finished", "complete": True}


def _remote_out(url: str, version: str, content: bytes | None = None) -> dict:
    """An uploaded object's record (record/remote.py): by url@version, and by content
    when the upload's body was seen whole."""
    from roar.record.remote import ident_key, url_key

    return {"path": url, "kind": "remote", "role": "output", "url": url, "version": version,
            "ident": ident_key(url, version), "url_key": url_key(url),
            "hash": hash_of(content) if content else None,
            "size": len(content) if content else None, "status": "ok" if content else None,
            "bytes_read": 0, "bytes_written": 3, "processes": ["k1"]}


def test_outputs_document_field_by_field(hist):
    """`roar outputs --json` of a raw shard: every run below it with its depth,
    every hashed output (sorted by depth, path, run), outputs without a hash
    (with their status) and environment outputs, and nothing of the target."""
    pre, train, ev = _pipeline(hist)
    site = "/w/venv/lib/python3.11/site-packages/pkg/__init__.py"
    inst = hist.run(["pip", "install", "."], reads=[("/w/out/metrics.json", b"m1")], files=[
        {"path": "/w/out/report.html", "kind": "data", "role": "output", "hash": None,
         "size": 4, "status": "vanished", "bytes_read": 0, "bytes_written": 4,
         "processes": ["k1"]},
        {"path": site, "kind": "env", "role": "output", "hash": hash_of(b"pkg"), "size": 3,
         "status": "ok", "bytes_read": 0, "bytes_written": 3, "processes": ["k1"]},
        _remote_out("s3://b/report", "s3:v1", b"rep"), _remote_out("s3://b/blob", "s3:v2")])
    shard = hash_of(RAW[0][1])
    doc = lineage.outputs(hist.store, ("artifact", shard))

    def out(path, content, run, depth):
        return {"path": path, "hash": hash_of(content), "run": run, "depth": depth,
                "kind": "data", "size": len(content), "paths": [path]}

    assert doc == {
        "target": {"kind": "artifact", "hash": shard, "paths": [RAW[0][0]], "produced_by": []},
        "complete": False,  # what a run below wrote is not known for sure
        "reasons": [f"run {inst[:10]} (pip): output /w/out/report.html has no verified "
                    "content hash (vanished)",
                    f"run {inst[:10]} (pip): output s3://b/blob has no verified content "
                    "hash (unhashed)"],
        "runs": [_summary(hist, pre, 0), _summary(hist, train, 1), _summary(hist, ev, 1),
                 {**_summary(hist, inst, 2), "complete": False}],
        "outputs": [out("/w/out/features.json", FEATURES, pre, 1),
                    out("/w/out/metrics.json", b"m1", ev, 2),
                    out("/w/out/model.pt", MODEL, train, 2),
                    {"path": "/w/out/report.html", "hash": None, "run": inst, "depth": 3,
                     "kind": "data", "size": 4, "paths": ["/w/out/report.html"],
                     "status": "vanished"},
                    # an upload: by url and version when its content is unknown, else
                    # once, by content
                    {"url": "s3://b/blob", "version": "s3:v2", "path": "s3://b/blob",
                     "hash": None, "run": inst, "depth": 3, "kind": "remote", "size": None,
                     "paths": ["s3://b/blob"]},
                    {"path": "s3://b/report", "hash": hash_of(b"rep"), "run": inst, "depth": 3,
                     "kind": "remote", "size": 3, "paths": ["s3://b/report"]}],
        "env_outputs": [{"path": site, "hash": hash_of(b"pkg"), "run": inst, "depth": 3,
                         "kind": "env", "size": 3, "paths": [site], "status": "ok"}]}
    # from a run: what it and everything after it wrote, its own outputs included
    doc = lineage.outputs(hist.store, ("run", train))
    assert [(e["path"], e["run"], e["depth"]) for e in doc["outputs"]] == [
        ("/w/out/model.pt", train, 1), ("/w/out/metrics.json", ev, 2),
        ("/w/out/report.html", inst, 3), ("s3://b/blob", inst, 3), ("s3://b/report", inst, 3)]


def test_diff_code_lines_across_renames_binaries_and_other_roots(hist, tmp_path):
    """Line counts come from `git diff --numstat --no-renames A B -- files` in the
    first recorded root that is a repository knowing both commits: a renamed file
    is a deletion and an addition, a binary file says so, the work tree's own
    uncommitted changes (an edit, a deletion) play no part."""
    repo, plain = tmp_path / "repo", tmp_path / "plain"
    repo.mkdir()
    plain.mkdir()  # a directory, not a repository: skipped
    git(repo, "init", "-q")
    (repo / "train.py").write_text("a = 1\n")
    (repo / "util.py").write_text("x\ny\n")
    (repo / "ext.so").write_bytes(b"\0ELF 1")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "one")
    c1 = git(repo, "rev-parse", "HEAD")
    files1 = {p: (repo / p).read_bytes() for p in ("train.py", "util.py", "ext.so")}
    (repo / "train.py").write_text("a = 2\n")
    git(repo, "mv", "util.py", "helpers.py")
    (repo / "ext.so").write_bytes(b"\0ELF 2")
    git(repo, "commit", "-qam", "two")
    c2 = git(repo, "rev-parse", "HEAD")
    files2 = {p: (repo / p).read_bytes() for p in ("train.py", "helpers.py", "ext.so")}
    (repo / "train.py").write_text("a = 3\nb = 4\n")  # not committed
    (repo / "ext.so").unlink()  # not committed either
    r = str(repo)

    def run(commit, files, root):
        return hist.run(["python3", "train.py"], cwd=r,
                        git={"commit": commit, "dirty": False, **({"root": root} if root else {})},
                        code=[(f"{r}/{p}", c) for p, c in files.items()],
                        writes=[(f"/o/{commit}", commit.encode())])

    a, b = run(c1, files1, None), run(c1, files1, str(plain))
    c, d = run(c2, files2, r), run(c2, files2, str(plain))
    for first in (a, b):  # a's record names no root, b's no repository: c's is used
        doc = lineage.diff(hist.store, ("run", first), ("run", c))
        lines = {ch["key"]: ch.get("lines") for ch in doc["changes"] if ch["kind"] == "code"}
        assert lines == {"commit": None, "train.py": "+1 -1", "util.py": "+0 -2",
                         "helpers.py": "+2 -0", "ext.so": "binary"}
    doc = lineage.diff(hist.store, ("run", a), ("run", d))  # no repository knows them
    lines = {ch["key"]: ch.get("lines") for ch in doc["changes"] if ch["kind"] == "code"}
    assert lines == {"commit": None, "train.py": None, "util.py": None, "helpers.py": None,
                     "ext.so": None}


def test_diff_pairs_data_files_named_by_the_same_argument(hist):
    """Two runs of one script over other files: each file is compared with the one
    the same argument named (an option, a position, each value of a repeated
    option), paths taken relative to the run's directory then the repository."""
    git = {"root": "/w", "commit": "c1", "dirty": False}

    def run(argv, files):
        return hist.run(argv, cwd="/w/sub", git=git, code=[("/w/sub/train.py", b"t")],
                        reads=files, writes=[(f"/o/{files[0][1].decode()}", b"o")])

    a = run(["python3", "train.py", "--fast", "--data", "../data/v1.csv", "--shard", "s1a",
             "--shard", "s2a", "cfg/a.yml"],
            [("/w/data/v1.csv", b"1"), ("/w/sub/s1a", b"x1"), ("/w/sub/s2a", b"x2"),
             ("/w/sub/cfg/a.yml", b"A")])
    b = run(["python3", "-u", "train.py", "--fast", "--data", "../zdata/v2.csv", "--shard",
             "s1b", "--shard", "s2b", "cfg/b.yml"],
            [("/w/zdata/v2.csv", b"2"), ("/w/sub/s1b", b"y1"), ("/w/sub/s2b", b"y2"),
             ("/w/sub/cfg/b.yml", b"B")])
    doc = lineage.diff(hist.store, ("run", a), ("run", b))
    data = sorted((c["key"], c.get("renamed_from")) for c in doc["changes"]
                  if c["kind"] == "data")
    assert data == [("sub/cfg/b.yml", "sub/cfg/a.yml"), ("sub/s1b", "sub/s1a"),
                    ("sub/s2b", "sub/s2a"), ("zdata/v2.csv", "data/v1.csv")]


def test_diff_data_changes_field_by_field(hist):
    """Every data change between two runs of a step, in order: a dataset renamed
    (one left on each side) with the members added, removed and changed; an input
    that was unverified; a new and a gone file; a file renamed with its content
    unchanged (no change); the arguments; a derived input (made upstream) last."""
    git = {"root": "/w", "commit": "c1", "dirty": False}
    up = hist.run(["python3", "make.py"], writes=[("/w/labels.csv", b"L1")],
                  code=[("/w/make.py", b"m")])
    raw_a = [("s0.csv", b"r0"), ("s1.csv", b"r1"), ("s2.csv", b"r2")]
    raw_b = [("s0.csv", b"r0"), ("s1.csv", b"r1 changed"), ("s3.csv", b"r3")]
    a = hist.run(["python3", "prep.py", "--lr", "0.1"], git=git,
                 reads=[(f"/w/data/raw/{n}", c) for n, c in raw_a]
                 + [("/w/labels.csv", b"L1"), ("/w/old_name.csv", b"same"), ("/w/gone.csv", b"G")],
                 unverified=["/w/flaky.csv"], code=[("/w/prep.py", b"p")],
                 writes=[("/o/a", b"a")])
    b = hist.run(["python3", "prep.py", "--lr", "0.2"], git=git,
                 reads=[(f"/w/data/raw2/{n}", c) for n, c in raw_b]
                 + [("/w/labels.csv", b"L2"), ("/w/new_name.csv", b"same"), ("/w/fresh.csv", b"F"),
                    ("/w/flaky.csv", b"ok now")],
                 code=[("/w/prep.py", b"p")], writes=[("/o/b", b"b")])
    doc = lineage.diff(hist.store, ("run", a), ("run", b))
    same = {"step": "prep.py", "a_run": a, "b_run": b, "depth": 0}

    def version(pairs):
        return lineage.dataset_version((n, hash_of(c)) for n, c in pairs)

    assert doc["changes"] == [
        {"kind": "data", **same, "key": "data/raw2", "a": version(raw_a), "b": version(raw_b),
         "dataset": True, "added": ["s3.csv"], "removed": ["s2.csv"], "changed": ["s1.csv"],
         "count_a": 3, "count_b": 3, "derived": False, "renamed_from": "data/raw"},
        {"kind": "data", **same, "key": "flaky.csv", "a": None, "b": hash_of(b"ok now"),
         "derived": False, "unverified": True},
        {"kind": "data", **same, "key": "fresh.csv", "a": None, "b": hash_of(b"F"),
         "derived": False},
        {"kind": "data", **same, "key": "gone.csv", "a": hash_of(b"G"), "b": None,
         "derived": False},
        {"kind": "args", **same, "key": "--lr", "a": "0.1", "b": "0.2"},
        {"kind": "step_removed", "step": "make.py", "key": "make.py", "a": up, "b": None,
         "a_run": up, "b_run": None, "depth": 1, "command": ["python3", "make.py"]},
        {"kind": "data", **same, "key": "labels.csv", "a": hash_of(b"L1"), "b": hash_of(b"L2"),
         "derived": True}]
    assert doc["steps"] == [
        {"step": "prep.py", "a": a, "b": b, "depth_a": 0, "depth_b": 0},
        {"step": "make.py", "a": up, "b": None, "depth_a": 1, "depth_b": None}]
    assert (doc["a"]["complete"], doc["b"]["complete"]) == (False, True)
    assert doc["a"]["reasons"] == [f"run {a[:10]} (prep.py): input /w/flaky.csv has no "
                                   "verified content hash (unverified)"]


def test_inputs_document_field_by_field(hist):
    """`roar inputs --json` of the model: every input upstream, sorted by depth and
    path, with who made it and who read it; the raw dataset with its version,
    size, members, and the one member a run produced; every run with its depth."""
    fetch = hist.run(["python3", "fetch.py"], writes=[RAW[2]], code=[("/w/fetch.py", b"f")])
    pre, train, _ = _pipeline(hist)
    doc = lineage.inputs(hist.store, ("artifact", hash_of(MODEL)))

    def inp(path, content, depth, read_by, producer=None, kind="data", dataset=None):
        return {"path": path, "hash": hash_of(content), "size": len(content),
                "produced_by": producer, "depth": depth, "kind": kind, "paths": [path],
                "producers": [producer] if producer else [], "read_by": [read_by],
                "dataset": dataset}

    raw = "/w/data/raw"
    assert doc["target"] == {"kind": "artifact", "hash": hash_of(MODEL),
                             "paths": ["/w/out/model.pt"], "produced_by": [train]}
    assert (doc["complete"], doc["reasons"]) == (True, [])
    assert doc["inputs"] == [
        inp("/w/out/features.json", FEATURES, 1, train, producer=pre),
        inp("/w/train.py", b"train", 1, train, kind="code"),
        inp(RAW[0][0], RAW[0][1], 2, pre, dataset=raw),
        inp(RAW[1][0], RAW[1][1], 2, pre, dataset=raw),
        inp(RAW[2][0], RAW[2][1], 2, pre, producer=fetch, dataset=raw),
        inp("/w/preprocess.py", b"pre", 2, pre, kind="code"),
        inp("/w/fetch.py", b"f", 3, fetch, kind="code")]
    assert doc["datasets"] == [{
        "path": raw, "version": lineage.dataset_version(
            (Path(p).name, hash_of(c)) for p, c in RAW),
        "count": 3, "size": sum(len(c) for _, c in RAW), "depth": 2, "read_by": [pre],
        "produced_by": [fetch], "produced": 1, "complete": True,
        "members": [{"path": Path(p).name, "hash": hash_of(c), "size": len(c)}
                    for p, c in RAW]}]
    assert doc["runs"] == [_summary(hist, train, 0), _summary(hist, pre, 1),
                           _summary(hist, fetch, 2)]


def _remote_in(url: str, version: str | None, content: bytes | None = None) -> dict:
    from roar.record.remote import ident_key, url_key

    return {"path": url, "kind": "remote", "role": "input", "url": url, "version": version,
            "ident": ident_key(url, version), "url_key": url_key(url),
            "hash": hash_of(content) if content else None, "size": 3,
            "status": "ok" if content else None, "bytes_read": 3, "bytes_written": 0,
            "processes": ["k1"]}


def test_diff_of_everything_but_local_data_field_by_field(hist):
    """Two runs of one step: remote inputs (by version, else by content), the work
    tree made dirty, a code file, program, script and interpreter, exit code and
    status, packages added / removed / changed, environment variables (noise and
    redacted ones said so), each in its order."""
    from roar.record.context import redact

    tok_a, tok_b = redact("t1", b"k" * 32), redact("t2", b"k" * 32)
    a = hist.run(["python3", "train.py", "--lr", "1"],
                 git={"root": "/w", "commit": "c1", "dirty": False},
                 code=[("/w/train.py", b"t1")], exe="/usr/bin/python3.11",
                 env={"HOME": "/root", "LR_SCHED": "cos", "TERM": "xterm", "GONE": "1",
                      "API_TOKEN": tok_a},
                 packages={"numpy": "1.26.4", "torch": "2.1"}, writes=[("/o/a", b"a")],
                 files=[_remote_in("s3://b/data.csv", "s3:v1"),
                        _remote_in("https://h/x.bin", None, b"xv1")])
    b = hist.run(["python3.12", "./train.py", "--lr", "1"],
                 git={"root": "/w", "commit": "c1", "dirty": True, "patch": "p"},
                 code=[("/w/train.py", b"t2")], exe="/usr/bin/python3.12",
                 env={"HOME": "/root", "LR_SCHED": "lin", "TERM": "vt100", "NEW": "2",
                      "API_TOKEN": tok_b},
                 packages={"numpy": "2.0", "pandas": "2.2"}, exit_code=3, status="failed",
                 writes=[("/o/b", b"b")], files=[_remote_in("s3://b/data.csv", "s3:v2"),
                                                 _remote_in("https://h/x.bin", None, b"xv2")])
    doc = lineage.diff(hist.store, ("run", a), ("run", b))
    same = {"step": "train.py", "a_run": a, "b_run": b, "depth": 0}

    def ch(kind, key, va, vb, **extra):
        return {"kind": kind, **same, "key": key, "a": va, "b": vb, **extra}

    def env(key, va, vb, noise=False, redacted=False):
        return ch("env", key, va, vb, noise=noise, redacted=redacted)

    assert doc["changes"] == [
        ch("data", "https://h/x.bin", hash_of(b"xv1"), hash_of(b"xv2"), remote=True,
           derived=False),
        ch("data", "s3://b/data.csv", "s3:v1", "s3:v2", remote=True, derived=False),
        ch("code", "dirty", False, True),
        ch("code", "train.py", hash_of(b"t1"), hash_of(b"t2")),
        ch("command", "interpreter", "/usr/bin/python3.11", "/usr/bin/python3.12"),
        ch("command", "program", "python3", "python3.12"),
        ch("command", "script", "train.py", "./train.py"),
        ch("exit", "exit_code", 0, 3),
        ch("exit", "status", "finished", "failed"),
        ch("packages", "numpy", "1.26.4", "2.0"),
        ch("packages", "pandas", None, "2.2"),
        ch("packages", "torch", "2.1", None),
        env("API_TOKEN", tok_a, tok_b, redacted=True),
        env("GONE", "1", None), env("LR_SCHED", "cos", "lin"), env("NEW", None, "2"),
        env("TERM", "xterm", "vt100", noise=True)]


def test_diff_pairs_steps_by_the_same_run_then_depth_then_order(hist):
    """A step that ran more than once on each side pairs with the same run where
    both sides share it, else with the run at its depth, else in order."""
    shared = hist.run(["python3", "clean.py"], reads=[("/w/raw", b"r")],
                      writes=[("/w/c1", b"c1")], code=[("/w/clean.py", b"c")])
    mine = hist.run(["python3", "clean.py"], reads=[("/w/raw2", b"r2")],
                    writes=[("/w/c2", b"c2")], code=[("/w/clean.py", b"c")])
    theirs = hist.run(["python3", "clean.py"], reads=[("/w/raw3", b"r3")],
                      writes=[("/w/c3", b"c3")], code=[("/w/clean.py", b"c")])
    a = hist.run(["python3", "join.py"], reads=[("/w/c1", b"c1"), ("/w/c2", b"c2")],
                 writes=[("/w/j1", b"j1")], code=[("/w/join.py", b"j")])
    b = hist.run(["python3", "join.py"], reads=[("/w/c3", b"c3"), ("/w/c1", b"c1")],
                 writes=[("/w/j2", b"j2")], code=[("/w/join.py", b"j")])
    doc = lineage.diff(hist.store, ("run", a), ("run", b))
    assert [(s["step"], s["a"], s["b"]) for s in doc["steps"]] == [
        ("join.py", a, b), ("clean.py", shared, shared), ("clean.py", mine, theirs)]


def test_a_run_target_and_what_makes_a_run_incomplete(hist):
    """A run as a target: its own summary; its problems: interrupted, each input
    without a verified hash (a special file such as /dev/zero needs none)."""
    special = {"path": "/dev/zero", "kind": "data", "role": "input", "hash": None,
               "size": None, "status": "special", "bytes_read": 1, "bytes_written": 0,
               "processes": ["k1"]}
    a = hist.run(["python3", "t.py"], status="interrupted", writes=[("/o/x", b"x")],
                 unverified=["/w/u"], files=[special])
    run = hist.store.get_run(a)
    assert lineage.target_view(hist.store, ("run", a)) == {
        "kind": "run", "id": a, "name": None, "command": ["python3", "t.py"], "step": "t.py",
        "started_at": run["started_at"], "status": "interrupted"}
    assert lineage.RunCache(hist.store).get(a).problems() == [
        "interrupted", "input /w/u has no verified content hash (unverified)"]
    # paths relative to the run's directory, whatever it ends with
    info = lineage.RunInfo("R", {"cwd": "/data/runX", "git": None}, [], [])
    assert (info.rel("/data/runX/a.csv"), info.rel("/data/run/a.csv")) == (
        "a.csv", "/data/run/a.csv")


def test_diff_without_a_script_dirty_trees_and_a_target_nobody_wrote(hist):
    """`python3 -c CODE ARGS`: no script, even if an argument looks like one; the
    arguments start after the program. Two trees dirty with the same patch are no
    change. A target nobody wrote is incomplete with that reason, on either side."""
    info = lineage.RunInfo("R", {"command": ["python3", "-c", "import x", "tool.py"],
                                 "cwd": "/w", "git": None}, [], [])
    assert lineage.step_key(info) == "python"
    git = {"root": "/w", "commit": "c1", "dirty": True, "patch": "p1"}
    a = hist.run(["tool", "--x", "1"], git=git, reads=[("/w/in", b"i")],
                 writes=[("/w/o1", b"o1")])
    b = hist.run(["tool", "--x", "2"], git=dict(git), reads=[("/w/in", b"i")],
                 writes=[("/w/o2", b"o2")])
    doc = lineage.diff(hist.store, ("run", a), ("run", b))
    assert [(c["kind"], c["key"], c["a"], c["b"]) for c in doc["changes"]] == [
        ("args", "--x", "1", "2")]
    doc = lineage.diff(hist.store, ("run", a), ("artifact", hash_of(b"i")))
    assert doc["b"]["complete"] is False and doc["b"]["reasons"] == [
        "no recorded run wrote this content: what it was made from is unknown"]


def test_inputs_unverified_and_remote_field_by_field(hist):
    """Inputs without a hash are listed with their status; a downloaded object by
    url and version, its content learned from the run that uploaded that version
    (which is then upstream, and it is no gap); one nobody uploaded is a gap."""
    up = hist.run(["python3", "upload.py"], reads=[("/w/wts", b"wts")],
                  files=[_remote_out("s3://b/w.bin", "s3:v3", b"wts")])
    t = hist.run(["python3", "train.py"], reads=[("/w/feat", b"f")], unverified=["/w/u.csv"],
                 files=[_remote_in("s3://b/w.bin", "s3:v3"),
                        _remote_in("s3://b/other.bin", "s3:v9")], writes=[("/w/m", b"m")])
    doc = lineage.inputs(hist.store, ("artifact", hash_of(b"m")))
    base = {"produced_by": None, "depth": 1, "producers": [], "read_by": [t], "dataset": None}

    def remote(url, version, **kw):
        return {"url": url, "version": version, "path": url, "hash": None, "size": 3,
                "kind": "remote", "paths": [url], **base, **kw}

    assert doc["inputs"] == [
        {"path": "/w/feat", "hash": hash_of(b"f"), "size": 1, "kind": "data",
         "paths": ["/w/feat"], **base},
        {"path": "/w/u.csv", "hash": None, "size": 3, "kind": "data", "paths": ["/w/u.csv"],
         **base, "status": "unverified"},
        remote("s3://b/other.bin", "s3:v9"),
        remote("s3://b/w.bin", "s3:v3", hash=hash_of(b"wts"), produced_by=up, producers=[up]),
        {"path": "/w/wts", "hash": hash_of(b"wts"), "size": 3, "kind": "data",
         "paths": ["/w/wts"], **base, "depth": 2, "read_by": [up]}]
    assert doc["complete"] is False and doc["reasons"] == [
        f"run {t[:10]} (train.py): input /w/u.csv has no verified content hash (unverified)",
        f"run {t[:10]} (train.py): input s3://b/other.bin has no verified content hash "
        "(unhashed)"]


def test_dataset_roots_named_with_equals_nested_and_remote_prefixes(hist):
    """A directory named by `--opt=DIR` (deepest one wins) holds a dataset even for
    one file; `--opt=` values with '=' keep them; the filesystem root, the cwd and
    its ancestors never are; two remote objects under one prefix (query strings
    aside) are a dataset, one is not, nor is a bucket's root."""
    rid = hist.run(["python3", "t.py", "--data=/d/set", "--deep=/d/set/sub", "--kv=a=/x",
                    "/"], cwd="/w/run",
                   reads=[("/d/set/one.csv", b"1"), ("/d/set/sub/two.csv", b"2"),
                          ("/x/3", b"3"), ("/w/4", b"4"), ("/w/5", b"5")],
                   files=[_remote_in("s3://b/p/k0?versionId=1", "s3:v1"),
                          _remote_in("s3://b/p/k1", "s3:v1"),
                          _remote_in("s3://b/solo/k", "s3:v1"),
                          _remote_in("s3://b/top0", "s3:v1"), _remote_in("s3://b/top1", "s3:v1")])
    roots = lineage.dataset_roots(lineage.RunCache(hist.store).get(rid))
    assert roots == {"/d/set/one.csv": "/d/set", "/d/set/sub/two.csv": "/d/set/sub",
                     "s3://b/p/k0?versionId=1": "s3://b/p", "s3://b/p/k1": "s3://b/p"}


def test_named_runs_and_signals(hist):
    """A run's name is in its target view and its summary; a run killed by a
    signal differs from one that exited in its exit code and signal."""
    a = hist.run(["python3", "t.py"], name="baseline", reads=[("/w/i", b"i")],
                 writes=[("/w/o1", b"o1")])
    b = hist.run(["python3", "t.py"], reads=[("/w/i", b"i")], writes=[("/w/o2", b"o2")],
                 exit_code=137, signal=9, status="interrupted")
    assert lineage.target_view(hist.store, ("run", a))["name"] == "baseline"
    assert [r["name"] for r in lineage.outputs(hist.store, ("run", a))["runs"]] == ["baseline"]
    doc = lineage.diff(hist.store, ("run", a), ("run", b))
    assert [(c["key"], c["a"], c["b"]) for c in doc["changes"] if c["kind"] == "exit"] == [
        ("exit_code", 0, 137), ("signal", None, 9), ("status", "finished", "interrupted")]
