"""The JSON Schemas under docs/schemas/: current with the records and views
they are built from, and met by the real output of every `--json` command
(on a store built directly, and on runs recorded under the probes)."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, History, Roar, hash_of

jsonschema = pytest.importorskip("jsonschema")

from roar.query import schemas  # noqa: E402

DOCS = REPO / "docs" / "schemas"


def _validate(name: str, doc) -> None:
    schema = json.loads((DOCS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(doc)


def test_published_schemas_are_current():
    built = schemas.schemas()
    on_disk = {p.name for p in DOCS.glob("*.schema.json")}
    assert on_disk == set(built), "run scripts/schemas.py"
    for name, schema in built.items():
        assert (DOCS / name).read_text() == schemas.text(schema), \
            f"docs/schemas/{name} is stale: run scripts/schemas.py"


def test_a_view_key_not_in_the_schema_fails_validation():
    doc = {"id": "01J", "name": None, "command": ["x"], "status": "finished",
           "started_at": "t", "exit_code": 0, "complete": True, "counts": {}}
    _validate("log", [doc])
    with pytest.raises(jsonschema.ValidationError):
        _validate("log", [{**doc, "unlisted": 1}])
    with pytest.raises(jsonschema.ValidationError):
        _validate("log", [{**doc, "status": "done"}])


@pytest.fixture
def store_cli(tmp_path):
    h = History(tmp_path / "home")
    pre = h.run(["python3", "pre.py"], reads=[("/w/raw.csv", b"raw")],
                writes=[("/w/features.json", b"f1")], reasons=["2 kernel events lost "
                                                              "(ring buffer full)"],
                complete=False)
    train = h.run(["python3", "train.py", "--lr", "0.1"], reads=[("/w/features.json", b"f1")],
                  code=[("/w/train.py", b"t")], writes=[("/w/model.pt", b"m1")])
    again = h.run(["python3", "train.py", "--lr", "0.2"], reads=[("/w/features.json", b"f1")],
                  code=[("/w/train.py", b"t")], writes=[("/w/model.pt", b"m2")])
    h.store.close()
    work = tmp_path / "work"
    work.mkdir()
    return Roar(tmp_path / "home", None, work), pre, train, again


def _check_all(r: Roar, run: str, other: str, artifact: str, upstream: str) -> None:
    """Every --json command on one store, validated."""
    _validate("log", r.json("log"))
    _validate("show-run", r.json("show", run))
    _validate("show-artifact", r.json("show", artifact))
    _validate("trace", r.json("trace", run))
    _validate("trace", r.json("trace", run, "--all"))
    _validate("inputs", r.json("inputs", artifact))
    _validate("inputs", r.json("inputs", run))
    _validate("inputs-contains", r.json("inputs", artifact, "--contains", upstream))
    _validate("outputs", r.json("outputs", upstream))
    _validate("outputs", r.json("outputs", run))
    _validate("diff", r.json("diff", other, run))


def test_command_output_meets_the_schemas(store_cli):
    r, pre, train, again = store_cli
    _check_all(r, train, again, hash_of(b"m1"), hash_of(b"raw"))
    _validate("show-run", r.json("show", pre))  # an incomplete run


@pytest.mark.capture
def test_recorded_runs_meet_the_schemas(roar):
    (roar.cwd / "in.csv").write_text("a,b\n1,2\n")
    _, first = roar.run("sh", "-c", "cat in.csv > mid.csv; sh -c 'cat mid.csv' > out.csv")
    _, second = roar.run("sh", "-c", "cat in.csv in.csv > mid.csv")
    _check_all(roar, first["id"], second["id"], str(roar.cwd / "out.csv"),
               str(roar.cwd / "in.csv"))
