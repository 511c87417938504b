"""The Python API (`import roar; roar.open()`): typed answers equal to the
CLI's, graph() as a networkx.DiGraph that exports to GraphML, the README's
example run as written, and `import roar` staying free for `roar run`."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import networkx as nx
import pytest
from conftest import REPO, History, hash_of

import roar
from roar.record.records import Artifact, Change, Derived, Membership, Process, Run, Upstream
from roar.record.store import RefError

RAW = b"raw rows"
FEATURES = b"features v1"
MODEL = b"model v1"


@pytest.fixture
def pipeline(tmp_path):
    """preprocess -> train twice (lr 0.1 and 0.2): a store made as finish_run makes it."""
    h = History(tmp_path / "home")
    pre = h.run(["python3", "pre.py"], reads=[("/w/raw.csv", RAW)],
                writes=[("/w/features.json", FEATURES)])
    train = h.run(["python3", "train.py", "--lr", "0.1"], reads=[("/w/features.json", FEATURES)],
                  code=[("/w/train.py", b"t")], writes=[("/w/model.pt", MODEL)])
    again = h.run(["python3", "train.py", "--lr", "0.2"], reads=[("/w/features.json", FEATURES)],
                  code=[("/w/train.py", b"t")], writes=[("/w/model.pt", b"model v2")])
    h.store.close()
    return tmp_path / "home", pre, train, again


def test_runs_show_trace_are_typed_records(pipeline):
    home, pre, train, again = pipeline
    with roar.open(home) as r:
        runs = r.runs()
        assert [x.id for x in runs] == [again, train, pre]
        assert all(isinstance(x, Run) for x in runs)
        run = r.run(train[:12])
        assert run.id == train and run.status == "finished" and run.command[1] == "train.py"
        assert r.show(train) == run
        art = r.show(hash_of(MODEL))
        assert isinstance(art, Artifact) and art.produced_by == [train]
        assert art.paths == ["/w/model.pt"]
        [proc] = r.trace(run)
        assert isinstance(proc, Process) and proc.pid == 10
        roles = {(f.path, f.role) for f in r.files(train)}
        assert ("/w/model.pt", "output") in roles
        with pytest.raises(RefError):
            r.run("ZZZZZZZZ")


def test_lineage_answers_match_the_library_documents(pipeline):
    home, pre, train, again = pipeline
    with roar.open(home) as r:
        ups = r.inputs(hash_of(MODEL))
        assert all(isinstance(u, Upstream) for u in ups)
        assert {(u.path, u.depth, u.produced_by) for u in ups if u.kind == "data"} == {
            ("/w/features.json", 1, pre), ("/w/raw.csv", 2, None)}
        yes = r.inputs(hash_of(MODEL), contains=hash_of(RAW))
        assert isinstance(yes, Membership) and yes.answer == "yes"
        assert yes.evidence[0]["run"] == pre
        assert r.inputs(hash_of(MODEL), contains=hash_of(b"other")).answer == "no"
        outs = r.outputs(hash_of(RAW))
        assert all(isinstance(o, Derived) for o in outs)
        assert {(o.path, o.run) for o in outs} >= {("/w/features.json", pre),
                                                   ("/w/model.pt", train)}
        changes = r.diff(train, again)
        assert all(isinstance(c, Change) for c in changes)
        assert ("args", "--lr", "0.1", "0.2") in {(c.kind, c.key, c.a, c.b) for c in changes}


def test_graph_is_a_networkx_digraph_of_runs_and_versions(pipeline, tmp_path):
    home, pre, train, again = pipeline
    with roar.open(home) as r:
        g = r.graph(hash_of(FEATURES))
    assert isinstance(g, nx.DiGraph) and nx.is_directed_acyclic_graph(g)
    feat = f"file:{hash_of(FEATURES)}"
    assert g.nodes[feat]["path"] == "/w/features.json"
    # upstream: pre wrote it from raw.csv; downstream: both trainings read it
    assert list(g.predecessors(feat)) == [f"run:{pre}"]
    assert set(g.successors(feat)) == {f"run:{train}", f"run:{again}"}
    assert g.edges[f"file:{hash_of(RAW)}", f"run:{pre}"]["relation"] == "read"
    assert g.nodes[f"run:{train}"]["command"] == "python3 train.py --lr 0.1"
    out = tmp_path / "lineage.graphml"
    nx.write_graphml(g, out)
    assert set(nx.read_graphml(out).nodes) == set(g.nodes)


def _readme_example() -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md: the Python API example (after <!-- api-example -->) is missing"
    return m.group(1)


def test_readme_example_runs_as_written(pipeline, tmp_path):
    home, pre, train, again = pipeline
    env = {**os.environ, "ROAR_HOME": str(home), "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-c", _readme_example()], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert again in p.stdout
    assert (tmp_path / "lineage.graphml").exists()


def test_import_roar_loads_nothing_of_the_query_side():
    code = ("import sys, roar; heavy = [m for m in ('networkx', 'roar.api', 'roar.query.lineage',"
            " 'click', 'lmdb') if m in sys.modules]; print(heavy)")
    p = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                       capture_output=True, text=True, check=True)
    assert p.stdout.strip() == "[]"
    with pytest.raises(AttributeError):
        roar.no_such_thing  # noqa: B018


def test_queries_do_not_import_networkx(pipeline):
    home, pre, train, again = pipeline
    code = ("import sys, roar; r = roar.open(); r.inputs(r.runs()[0].id); "
            "r.diff(r.runs()[0].id, r.runs()[1].id); print('networkx' in sys.modules)")
    env = {**os.environ, "ROAR_HOME": str(home), "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert p.stdout.strip() == "False", p.stderr
