"""Reproduction, experiment-tracker links and lineage export.

Unit tests build stores directly (fast, no privileges). The capture tests record
a real three-step pipeline in a git repository (an env var, an argument, a dirty
step whose patch is stored, steps at two commits), reproduce it in a separate
worktree under the real probes, and check that the user's checkout is untouched."""

from __future__ import annotations

import enum
import hashlib
import json
import os
import shutil
import subprocess
import sys
import types
import typing
from importlib import metadata
from pathlib import Path

import pytest
from conftest import History, Roar, git, hash_of, xxh128

from roar.query import export, links, reproduce
from roar.query.reproduce import ReproduceError
from roar.record.context import redact, store_key

# -- unit: the plan ---------------------------------------------------------------------------


@pytest.fixture
def repo_hist(tmp_path):
    """A git repo (code committed, data/ and out/ ignored) and a store of runs in it:
    preprocess (reads data/raw and an input outside the repo) -> train."""
    w = tmp_path / "w"
    (w / "data" / "raw").mkdir(parents=True)
    (w / "out").mkdir()
    (w / "pre.py").write_text("pre")
    (w / "train.py").write_text("train")
    (w / ".gitignore").write_text("data/\nout/\n")
    git(w, "init", "-q")
    git(w, "add", "-A")
    git(w, "commit", "-qm", "code")
    state = {"root": str(w), "commit": git(w, "rev-parse", "HEAD"), "branch": "main",
           "remote": None, "dirty": False, "patch": None, "untracked": None}
    raw = []
    for i in range(3):
        p = w / "data" / "raw" / f"shard-{i}.csv"
        p.write_bytes(b"row %d\n" % i)
        raw.append((str(p), p.read_bytes()))
    ext = tmp_path / "ext" / "lookup.csv"
    ext.parent.mkdir()
    ext.write_bytes(b"lookup table\n")
    (w / "out" / "features.json").write_bytes(b"features v1")
    (w / "out" / "model.pt").write_bytes(b"model v1")
    h = History(tmp_path / "home")
    ids = {}
    ids["pre"] = h.run(["python3", "pre.py", "data/raw", "out/features.json"], cwd=str(w),
                       reads=raw + [(str(ext), ext.read_bytes())],
                       code=[(str(w / "pre.py"), b"pre")],
                       writes=[(str(w / "out" / "features.json"), b"features v1")], git=state,
                       packages={"numpy": "1.26.4"})
    ids["train"] = h.run(["python3", "train.py", "out/features.json", "out/model.pt", "--lr",
                          "0.1"], cwd=str(w), reads=[(str(w / "out" / "features.json"),
                                                      b"features v1")],
                         code=[(str(w / "train.py"), b"train")],
                         writes=[(str(w / "out" / "model.pt"), b"model v1")], git=state,
                         packages={"numpy": "1.26.4", "torch": "2.3.0"})
    h.w, h.ext, h.ids, h.git = w, ext, ids, state
    yield h
    h.store.close()


def _by_path(step):
    return {i["path"]: i for i in step["inputs"]}


def test_plan_lists_steps_in_order_and_where_each_input_comes_from(repo_hist):
    h = repo_hist
    doc = reproduce.plan(h.store, ("artifact", hash_of(b"model v1")), check_packages=False)
    pre, train = doc["steps"]
    assert (pre["run"], train["run"]) == (h.ids["pre"], h.ids["train"])
    assert [s["index"] for s in doc["steps"]] == [1, 2]
    assert train["final"] and not pre["final"]
    # features.json is here with its recorded content: preprocess is reused, not rerun
    assert (pre["action"], train["action"]) == ("reuse", "run")
    ins = _by_path(train)
    assert (ins["out/features.json"]["source"], ins["out/features.json"]["step"]) == ("step", 1)
    assert ins["out/features.json"]["local"] == str(h.w / "out" / "features.json")
    assert ins["train.py"]["source"] == "git"
    assert (train["cwd"], train["commit"], train["patch"]) == (".", h.git["commit"], False)
    assert train["repo"]["source"] == str(h.w)
    assert train["command"][-2:] == ["--lr", "0.1"]
    assert doc["blockers"] == [] and doc["runnable"]
    assert [o["path"] for o in pre["outputs"]] == ["out/features.json"]
    assert pre["outputs"][0]["needed_by"] == [2]


def test_plan_from_scratch_finds_inputs_by_content(repo_hist, tmp_path):
    h = repo_hist
    # shard-0 moved away; a later run read the same content at its new path
    moved = tmp_path / "elsewhere" / "s0.csv"
    moved.parent.mkdir()
    shutil.move(h.w / "data" / "raw" / "shard-0.csv", moved)
    h.run(["cat", str(moved)], reads=[(str(moved), b"row 0\n")])
    (h.w / "data" / "raw" / "shard-1.csv").unlink()  # gone for good
    doc = reproduce.plan(h.store, ("artifact", hash_of(b"model v1")), from_scratch=True,
                         check_packages=False)
    pre = doc["steps"][0]
    assert pre["action"] == "run"
    ins = _by_path(pre)
    assert (ins["data/raw/shard-0.csv"]["source"], ins["data/raw/shard-0.csv"]["local"]) == (
        "local", str(moved))
    assert ins["data/raw/shard-1.csv"]["source"] == "missing"
    assert ins["data/raw/shard-2.csv"]["source"] == "local"
    assert ins["pre.py"]["source"] == "git"
    assert ins[str(h.ext)]["source"] == "in_place"
    assert not doc["runnable"]
    assert [m["path"] for m in doc["missing"]] == ["data/raw/shard-1.csv"]
    assert any("shard-1.csv" in b and "missing" in b for b in doc["blockers"])
    with pytest.raises(ReproduceError, match="shard-1.csv"):
        reproduce.check_runnable(doc)
    # an input outside the repository is used in place: found elsewhere is not enough
    shutil.move(h.ext, tmp_path / "ext" / "moved.csv")
    h.run(["cat", "x"], reads=[(str(tmp_path / "ext" / "moved.csv"), b"lookup table\n")])
    ins = _by_path(reproduce.plan(h.store, ("artifact", hash_of(b"model v1")), from_scratch=True,
                                  check_packages=False)["steps"][0])
    assert ins[str(h.ext)]["source"] == "elsewhere"


def test_plan_of_a_run_and_of_content_nobody_wrote(repo_hist):
    h = repo_hist
    doc = reproduce.plan(h.store, ("run", h.ids["pre"]), check_packages=False)
    assert [s["run"] for s in doc["steps"]] == [h.ids["pre"]]
    assert doc["steps"][0]["action"] == "run"
    with pytest.raises(ReproduceError, match="no recorded run wrote"):
        reproduce.plan(h.store, ("artifact", hash_of(b"row 2\n")), check_packages=False)


def test_plan_without_git_or_commit_is_blocked(tmp_path):
    h = History(tmp_path / "home")
    h.run(["python3", "make.py"], writes=[("/nowhere/out.bin", b"x")])
    doc = reproduce.plan(h.store, ("artifact", hash_of(b"x")), check_packages=False)
    assert any("not recorded in a git work tree" in b for b in doc["blockers"])
    h.run(["python3", "make.py"], writes=[("/nowhere/out2.bin", b"y")],
          git={"root": "/nowhere", "commit": "ab" * 20, "remote": "git@example.com:t/r.git"})
    doc = reproduce.plan(h.store, ("artifact", hash_of(b"y")), check_packages=False)
    assert any("--repo PATH" in b and "git@example.com:t/r.git" in b for b in doc["blockers"])
    h.store.close()


def test_secrets_are_flagged_and_must_be_supplied(repo_hist, monkeypatch):
    h = repo_hist
    key = store_key(h.store)
    h.run(["python3", "train.py", "out/features.json", "out/m2.pt"], cwd=str(h.w),
          reads=[(str(h.w / "out" / "features.json"), b"features v1")],
          code=[(str(h.w / "train.py"), b"train")], writes=[(str(h.w / "out" / "m2.pt"), b"m2")],
          git=h.git, env={"HOME": "/root", "WANDB_API_KEY": redact("s3cret", key),
                          "LR_SCALE": "3"})
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    doc = reproduce.plan(h.store, ("artifact", hash_of(b"m2")), check_packages=False)
    train = doc["steps"][-1]
    assert train["redacted"] == ["WANDB_API_KEY"]
    [sec] = doc["secrets"]
    assert (sec["name"], sec["needed"], sec["supplied"]) == ("WANDB_API_KEY", True, False)
    assert not doc["runnable"] and doc["blockers"] == []
    with pytest.raises(ReproduceError, match="WANDB_API_KEY.*set it in your environment"):
        reproduce.check_runnable(doc)
    monkeypatch.setenv("WANDB_API_KEY", "s3cret")
    doc = reproduce.plan(h.store, ("artifact", hash_of(b"m2")), check_packages=False)
    assert doc["secrets"][0]["matches"] is True and doc["runnable"]
    monkeypatch.setenv("WANDB_API_KEY", "rotated")
    doc = reproduce.plan(h.store, ("artifact", hash_of(b"m2")), check_packages=False)
    assert doc["secrets"][0]["matches"] is False and doc["runnable"]
    assert any("WANDB_API_KEY" in w and "not to the recorded value" in w
               for w in doc["warnings"])
    # the environment a step runs with: recorded, secrets supplied, identity from here
    env = reproduce.step_env(train, h.store, "/x/y", lambda v: v)
    assert (env["LR_SCALE"], env["WANDB_API_KEY"], env["PWD"]) == ("3", "rotated", "/x/y")
    assert env["HOME"] == os.environ["HOME"] and env["ROAR_HOME"] == str(h.store.home)


def test_redacted_argument_blocks(repo_hist):
    h = repo_hist
    h.run(["python3", "push.py", "hmac-sha256:" + "0" * 64],
          writes=[(str(h.w / "out" / "pushed"), b"p")], cwd=str(h.w), git=h.git)
    doc = reproduce.plan(h.store, ("artifact", hash_of(b"p")), check_packages=False)
    assert any("argument 2 was a secret" in b for b in doc["blockers"])


def test_package_drift_and_requirements(repo_hist):
    h = repo_hist
    h.run([sys.executable, "train.py", "out/features.json", "out/m3.pt"], cwd=str(h.w),
          reads=[(str(h.w / "out" / "features.json"), b"features v1")],
          code=[(str(h.w / "train.py"), b"train")], writes=[(str(h.w / "out" / "m3.pt"), b"m3")],
          git=h.git, exe=sys.executable,
          packages={"click": "0.0.1", "surely-not-installed-roar-test": "1.0",
                    "numpy": "1.26.4"})
    doc = reproduce.plan(h.store, ("artifact", hash_of(b"m3")))
    train = doc["steps"][-1]
    assert train["interpreter"]["path"] == sys.executable
    assert train["interpreter"]["version"] == sys.version.split()[0]
    drift = {d["package"]: d for d in train["drift"]}
    assert drift["click"] == {"package": "click", "recorded": "0.0.1",
                              "installed": metadata.version("click")}
    assert drift["surely-not-installed-roar-test"]["installed"] is None
    assert any("package click recorded 0.0.1" in w for w in doc["warnings"])
    text = reproduce.requirements(doc)
    lines = [x for x in text.splitlines() if not x.startswith("#")]
    assert "click==0.0.1" in lines and "surely-not-installed-roar-test==1.0" in lines
    assert any(x.startswith("numpy==1.26.4") for x in lines)


def test_cli_plan_and_errors(repo_hist, tmp_path):
    h = repo_hist
    h.store.close()
    cli = Roar(tmp_path / "home", None, h.w)
    doc = cli.json("reproduce", "out/model.pt", "--no-packages")
    assert [s["step"] for s in doc["steps"]] == ["pre.py", "train.py"]
    out = cli("reproduce", "out/model.pt", "--no-packages").stdout
    assert "[1] pre.py" in out and "[2] train.py" in out and "reuse" in out
    assert "to run it: roar reproduce out/model.pt --run" in out
    req = tmp_path / "req.txt"
    p = cli("reproduce", "out/model.pt", "--no-packages", "--emit-requirements", req)
    assert "torch==2.3.0" in req.read_text() and "pinned" in p.stderr
    for args in (["reproduce", "nothing-here"], ["reproduce", "data/raw"],
                 ["export", "nothing-here", "--format", "dot"], ["links", "ZZZZ"]):
        p = cli(*args, check=False)
        lines = [x for x in p.stderr.splitlines() if x.strip()]
        assert p.returncode != 0 and len(lines) == 1 and lines[0].startswith("roar: "), p.stderr
    (h.w / "data" / "raw" / "shard-1.csv").unlink()
    p = cli("reproduce", "out/model.pt", "--run", "--yes", "--from-scratch", "--no-packages",
            check=False)
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith(
        "roar: cannot reproduce: step 1 (pre.py): input data/raw/shard-1.csv")


# -- unit: tracker links ------------------------------------------------------------------------


WANDB_LINES = (
    "\x1b[34m\x1b[1mwandb\x1b[0m: Tracking run with wandb version 0.17.0\n"
    "wandb: ⭐️ View project at https://wandb.ai/acme/churn\n"
    "wandb: 🚀 View run bold-fire-7 at: https://wandb.ai/acme/churn/runs/a1b2c3d4\n")


def test_scan_text_finds_each_tracker():
    found = links.scan_text(
        WANDB_LINES
        + "🏃 View run gentle-owl-3 at: http://127.0.0.1:5000/#/experiments/1/runs/"
        + "0123456789abcdef0123456789abcdef\n"
        + "CommitInfo(commit_url='https://huggingface.co/acme/churn-model/commit/"
          "9f8e7d6c5b4a', commit_message='Upload model')\n"
        + "Downloading https://huggingface.co/bert-base-uncased/resolve/main/config.json\n"
        + "Model pushed to https://huggingface.co/datasets/acme/churn-eval.\n"
        + "wandb: View run at https://wandb.example.com/team/proj/runs/zz99\n")
    by = {(x["tracker"], x["id"]): x for x in found}
    w = by[("wandb", "a1b2c3d4")]
    assert (w["entity"], w["project"], w["url"]) == (
        "acme", "churn", "https://wandb.ai/acme/churn/runs/a1b2c3d4")
    assert by[("wandb", "zz99")]["url"] == "https://wandb.example.com/team/proj/runs/zz99"
    m = by[("mlflow", "0123456789abcdef0123456789abcdef")]
    assert (m["experiment_id"], m["tracking_uri"]) == ("1", "http://127.0.0.1:5000")
    hf = by[("huggingface", "acme/churn-model")]
    assert (hf["revision"], hf["repo_type"]) == ("9f8e7d6c5b4a", "model")
    ds = by[("huggingface", "acme/churn-eval")]
    assert ds["repo_type"] == "dataset" and ds["url"].endswith("churn-eval")
    assert ("huggingface", "bert-base-uncased/resolve") not in by
    assert not [x for x in found if x["tracker"] == "huggingface" and "bert" in x["id"]]
    assert len(found) == 5
    for x in found:
        assert set(links.KEYS) <= x.keys()


def test_a_log_scanned_from_where_the_run_started_writing(tmp_path):
    """A log appended to by many runs: only the part this run wrote counts."""
    log = tmp_path / "job.log"
    log.write_text("wandb: View run old at: https://wandb.ai/acme/churn/runs/old111\n")
    start = log.stat().st_size
    with open(log, "a") as f:
        f.write(WANDB_LINES)
    found = links.from_records([], logs=[(str(log), start, log.stat().st_size)])
    assert [x["id"] for x in found] == ["a1b2c3d4"]
    assert found[0]["source"] == f"log:{log}"
    assert {x["id"] for x in links.from_records([], logs=[str(log)])} == {"old111", "a1b2c3d4"}


def _tracker_files(base: Path) -> dict[Path, str]:
    """What wandb, mlflow (file store), tensorboard and huggingface_hub's
    upload_large_folder leave in a working directory."""
    run = base / "wandb" / "run-20240611_101530-a1b2c3d4"
    mlrun = base / "mlruns" / "0" / ("0123456789abcdef" * 2)
    return {
        run / "files" / "wandb-metadata.json": json.dumps(
            {"os": "Linux", "python": "3.11.7", "program": "train.py", "host": "gpu-1",
             "git": {"commit": "abc"}, "startedAt": "2024-06-11T10:15:30.1Z"}),
        run / "files" / "output.log": WANDB_LINES,
        run / "files" / "config.yaml": "lr:\n  value: 0.1\n",
        run / "logs" / "debug.log": "2024-06-11 INFO init\n",
        run / "run-a1b2c3d4.wandb": "\x00\x01binary",
        base / "mlruns" / "0" / "meta.yaml": "artifact_location: file:///x/mlruns/0\n"
                                             "experiment_id: '0'\nlifecycle_stage: active\n"
                                             "name: Default\n",
        mlrun / "meta.yaml": "artifact_uri: file:///x/mlruns/0/0123/artifacts\n"
                             "experiment_id: '0'\nrun_id: 0123456789abcdef0123456789abcdef\n"
                             "run_name: gentle-owl-3\nstatus: 3\n",
        mlrun / "metrics" / "loss": "1718100000 0.5 0\n",
        mlrun / "params" / "lr": "0.1",
        base / "tb" / "exp1" / "events.out.tfevents.1718100000.gpu-1.123.0": "\x00tb",
        base / "export" / ".cache" / "huggingface" / "upload" / "model.safetensors.metadata":
            "1718100000\n",
    }


def _tracker_layout(base: Path) -> list[Path]:
    files = _tracker_files(base)
    for p, text in files.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return list(files)


def _check_layout_links(found: list[dict], base: Path) -> None:
    by = {x["tracker"]: x for x in found}
    w = by["wandb"]
    assert (w["id"], w["project"], w["entity"], w["offline"]) == ("a1b2c3d4", "churn", "acme",
                                                                   False)
    assert w["url"] == "https://wandb.ai/acme/churn/runs/a1b2c3d4"
    assert w["path"] == str(base / "wandb" / "run-20240611_101530-a1b2c3d4")
    m = by["mlflow"]
    assert (m["id"], m["experiment"], m["experiment_id"], m["run_name"]) == (
        "0123456789abcdef" * 2, "Default", "0", "gentle-owl-3")
    assert m["tracking_uri"] == "file://" + str(base / "mlruns")
    assert by["tensorboard"]["path"] == str(base / "tb" / "exp1")
    assert by["huggingface"]["path"] == str(base / "export")
    assert len([x for x in found if x["tracker"] == "wandb"]) == 1


def test_links_from_written_files_stored_shown_and_searched(tmp_path):
    base = tmp_path / "work"
    written = _tracker_layout(base)
    found = links.scan_paths(str(p) for p in written)
    _check_layout_links(found, base)
    h = History(tmp_path / "home")
    rid = h.run(["python3", "train.py"], writes=[(str(p), p.read_bytes()) for p in written])
    other = h.run(["python3", "eval.py"], writes=[("/o/x", b"x")])
    h.store.close()
    cli = Roar(tmp_path / "home", None, base)
    assert cli.json("show", rid)["links"] == []  # not scanned yet
    got = cli.json("links", rid)
    _check_layout_links(got, base)
    assert cli.json("show", rid)["links"] == got
    log = (base / "stdout.txt")
    log.write_text("Uploaded: https://huggingface.co/acme/churn-model/commit/0a1b2c3d\n")
    got = cli.json("links", rid, "--log", log)
    assert {x["tracker"] for x in got} == {"wandb", "mlflow", "tensorboard", "huggingface"}
    assert any(x.get("revision") == "0a1b2c3d" for x in got)
    assert "link     wandb  https://wandb.ai/acme/churn/runs/a1b2c3d4" in cli("show", rid).stdout
    assert [e["id"] for e in cli.json("log", "--link", "wandb")] == [rid]
    assert [e["id"] for e in cli.json("log", "--link", "churn-model")] == [rid]
    assert cli.json("log", "--link", "comet") == []
    assert {e["id"] for e in cli.json("log")} == {rid, other}
    assert "wandb" in cli("links", rid).stdout


# -- unit: export ---------------------------------------------------------------------------------


def _ol_schema() -> dict:
    """A JSON schema of an OpenLineage RunEvent generated from the attrs classes of
    openlineage-python (it ships no schema file): every class a definition, its
    fields the properties, fields without a default required; base facets need
    _producer and _schemaURL, events producer, schemaURL and eventTime (as the spec)."""
    attr = pytest.importorskip("attr", reason="openlineage-python (and attrs) not installed")
    base = pytest.importorskip("openlineage.client.generated.base",
                               reason="openlineage-python not installed")
    defs: dict = {}

    def schema_of(tp) -> dict:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            subs = [schema_of(a) for a in args if a is not type(None)]
            s = subs[0] if len(subs) == 1 else {"anyOf": subs}
            return {"anyOf": [s, {"type": "null"}]} if type(None) in args else s
        if origin is list:
            return {"type": "array", "items": schema_of(args[0])}
        if origin is dict:
            return {"type": "object", "additionalProperties": schema_of(args[1])}
        simple = {str: "string", bool: "boolean", int: "integer", float: "number"}
        if tp in simple:
            return {"type": simple[tp]}
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return {"enum": [m.value for m in tp]}
        if isinstance(tp, type) and attr.has(tp):
            name = tp.__name__
            if name not in defs:
                defs[name] = {}
                attr.resolve_types(tp, globalns=vars(sys.modules[tp.__module__]))
                props, req = {}, []
                for f in attr.fields(tp):
                    props[f.name] = schema_of(f.type)
                    if f.default is attr.NOTHING:
                        req.append(f.name)
                if issubclass(tp, base.BaseFacet):
                    req += ["_producer", "_schemaURL"]
                if issubclass(tp, base.BaseEvent):
                    req += ["producer", "schemaURL", "eventTime"]
                if name == "Run":
                    props["runId"]["format"] = "uuid"
                defs[name] = {"type": "object", "properties": props, "required": req}
            return {"$ref": f"#/$defs/{name}"}
        return {}

    root = schema_of(base.RunEvent)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **root, "$defs": defs}


def _validate_openlineage(events: list[dict]) -> None:
    pytest.importorskip("openlineage.client", reason="openlineage-python not installed")
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema not installed")
    from openlineage.client import event_v2
    from openlineage.client.generated import (
        dataset_version_dataset,
        job_type_job,
        processing_engine_run,
        source_code_location_job,
    )
    from openlineage.client.serde import Serde

    schema = _ol_schema()
    validator = jsonschema.Draft202012Validator(schema,
                                                format_checker=jsonschema.FormatChecker())
    broken = json.loads(json.dumps(events[0]))
    del broken["run"]["runId"]
    assert list(validator.iter_errors(broken)), "the generated schema must catch a bad event"
    facet_validator = jsonschema.Draft202012Validator(export.CONTENT_HASH_FACET_SCHEMA)
    standard = {"version": dataset_version_dataset.DatasetVersionDatasetFacet,
                "jobType": job_type_job.JobTypeJobFacet,
                "sourceCodeLocation": source_code_location_job.SourceCodeLocationJobFacet,
                "processing_engine": processing_engine_run.ProcessingEngineRunFacet}

    def check_facets(facets: dict) -> None:
        for name, facet in facets.items():
            if name in standard:
                fields = {k: v for k, v in facet.items() if not k.startswith("_")}
                made = Serde.to_dict(standard[name](**fields))
                assert made["_schemaURL"] == facet["_schemaURL"], name
                assert {k: v for k, v in made.items() if k != "_producer"} == \
                    {k: v for k, v in facet.items() if k != "_producer"}, name
            else:
                assert name.startswith("roar_"), name
        if export.CONTENT_HASH_FACET in facets:
            facet_validator.validate(facets[export.CONTENT_HASH_FACET])

    for e in events:
        validator.validate(e)
        # the package's own classes accept it, and write the same top level back
        made = event_v2.RunEvent(
            eventType=event_v2.RunState(e["eventType"]), eventTime=e["eventTime"],
            run=event_v2.Run(runId=e["run"]["runId"]),
            job=event_v2.Job(namespace=e["job"]["namespace"], name=e["job"]["name"]),
            producer=e["producer"],
            inputs=[event_v2.InputDataset(namespace=d["namespace"], name=d["name"])
                    for d in e["inputs"]],
            outputs=[event_v2.OutputDataset(namespace=d["namespace"], name=d["name"])
                     for d in e["outputs"]])
        back = Serde.to_dict(made)
        assert back["schemaURL"] == e["schemaURL"]
        assert back["run"]["runId"] == e["run"]["runId"]
        check_facets(e["run"]["facets"])
        check_facets(e["job"]["facets"])
        for d in e["inputs"] + e["outputs"]:
            check_facets(d["facets"])


def test_export_openlineage_is_valid_and_complete(repo_hist):
    h = repo_hist
    events = export.openlineage_events(h.store, ("artifact", hash_of(b"model v1")))
    assert [(e["eventType"], e["run"]["facets"]["roar_run"]["roarRunId"]) for e in events] == [
        ("START", h.ids["pre"]), ("COMPLETE", h.ids["pre"]), ("START", h.ids["train"]),
        ("COMPLETE", h.ids["train"])]
    _validate_openlineage(events)
    done = events[3]
    assert done["job"]["name"] == "w/train.py"
    assert done["job"]["facets"]["sourceCodeLocation"]["version"] == h.git["commit"]
    [out] = done["outputs"]
    assert out["name"] == str(h.w / "out" / "model.pt")
    assert out["facets"]["version"]["datasetVersion"] == hash_of(b"model v1")
    assert out["facets"]["roar_contentHash"]["hash"] == hash_of(b"model v1")
    assert out["facets"]["roar_contentHash"]["algorithm"] == "xxh3-128"
    assert done["inputs"][0]["facets"]["version"]["datasetVersion"] == hash_of(b"features v1")
    assert len(events[1]["inputs"]) == 4  # three shards and the lookup table
    assert events[0]["run"]["runId"] == events[1]["run"]["runId"] == export.run_uuid(
        h.ids["pre"])


def test_export_prov_validates_with_the_prov_package(repo_hist):
    prov_model = pytest.importorskip("prov.model", reason="the prov package is not installed")
    h = repo_hist
    text = export.export(h.store, ("artifact", hash_of(b"model v1")), "prov")
    doc = prov_model.ProvDocument.deserialize(content=text, format="json")
    recs = doc.get_records()
    kinds: dict[str, int] = {}
    for r in recs:
        kinds[type(r).__name__] = kinds.get(type(r).__name__, 0) + 1
    # entities: 3 shards, lookup, pre.py, features, train.py, model; runs; one user
    assert kinds["ProvEntity"] == 8 and kinds["ProvActivity"] == 2 and kinds["ProvAgent"] == 1
    assert kinds["ProvUsage"] == 7 and kinds["ProvGeneration"] == 2
    assert kinds["ProvAssociation"] == 2
    model = next(r for r in doc.get_records(prov_model.ProvEntity)
                 if str(r.identifier).endswith(hash_of(b"model v1")))
    gen = [r for r in doc.get_records(prov_model.ProvGeneration)
           if str(r.args[0]) == str(model.identifier)]
    assert str(gen[0].args[1]).endswith(h.ids["train"])
    # the round trip keeps everything
    again = prov_model.ProvDocument.deserialize(content=doc.serialize(format="json"),
                                                format="json")
    assert len(again.get_records()) == len(recs)


def test_export_dot_and_svg(repo_hist, tmp_path):
    h = repo_hist
    text = export.dot(h.store, ("artifact", hash_of(b"model v1")))
    assert text.startswith("digraph roar {") and text.rstrip().endswith("}")
    assert f'"run:{h.ids["pre"]}"' in text and f'"run:{h.ids["train"]}"' in text
    assert "3 files" in text  # the shards fold into one dataset node
    assert f'"run:{h.ids["pre"]}" -> "ver:{hash_of(b"features v1")}"' in text
    assert f'"ver:{hash_of(b"features v1")}" -> "run:{h.ids["train"]}"' in text
    h.store.close()
    cli = Roar(tmp_path / "home", None, h.w)
    if shutil.which("dot"):
        out = tmp_path / "dag.svg"
        cli("export", "out/model.pt", "--format", "svg", "-o", out)
        assert "<svg" in out.read_text()
    else:
        p = cli("export", "out/model.pt", "--format", "svg", check=False)
        assert p.returncode == 2
        assert p.stderr.strip() == ("roar: SVG needs Graphviz, and `dot` is not on PATH: "
                                    "install graphviz (apt-get install graphviz), or use "
                                    "--format dot")


# -- capture: a real pipeline, reproduced --------------------------------------------------------


GEN = """import os, random, sys
out, rows = sys.argv[1], int(sys.argv[sys.argv.index("--rows") + 1])
rng = random.Random(int(os.environ["PIPE_SEED"]))
os.makedirs(out, exist_ok=True)
for s in range(2):
    with open(os.path.join(out, f"part-{s}.csv"), "w") as f:
        for i in range(rows):
            f.write(f"{i},{rng.random():.6f}\\n")
"""
PREP = """import json, os, sys
src, dst = sys.argv[1], sys.argv[2]
scale = float(sys.argv[sys.argv.index("--scale") + 1])
rows = []
for name in sorted(os.listdir(src)):
    with open(os.path.join(src, name)) as f:
        rows += [float(line.split(",")[1]) * scale for line in f]
os.makedirs(os.path.dirname(dst), exist_ok=True)
with open(dst, "w") as f:
    json.dump({"x": rows}, f)
"""
TRAIN = """import json, os, sys
assert os.environ["PIPE_API_TOKEN"], "needs the token"
src, dst = sys.argv[1], sys.argv[2]
lr = float(sys.argv[sys.argv.index("--lr") + 1])
epochs = json.load(open("config.json"))["epochs"]
xs = json.load(open(src))["x"]
w = 0.0
for _ in range(epochs):
    w -= lr * sum(w - x for x in xs) / len(xs)
with open(dst, "w") as f:
    json.dump({"w": round(w, 9), "epochs": epochs}, f)
"""
NOISY = """import json, os, sys, time
data = json.load(open(sys.argv[1]))
data["made_at"] = time.time()
data["salt"] = os.urandom(8).hex()
with open(sys.argv[2], "w") as f:
    json.dump(data, f)
"""


def _state(repo: Path) -> dict:
    """What the user sees of a checkout: HEAD, branch, status (ignored files too),
    worktrees, the index, and every file with its size and mtime."""
    files = {}
    for base, dirs, names in os.walk(repo):
        dirs[:] = [d for d in dirs if d != ".git"]
        for n in names:
            p = Path(base) / n
            st = p.lstat()
            files[str(p.relative_to(repo))] = (st.st_size, st.st_mtime_ns)
    return {"head": git(repo, "rev-parse", "HEAD"),
            "branch": git(repo, "symbolic-ref", "-q", "HEAD"),
            "status": git(repo, "status", "--porcelain=v1", "--ignored", "-uall"),
            "worktrees": git(repo, "worktree", "list", "--porcelain"),
            "index": hashlib.sha256((repo / ".git" / "index").read_bytes()).hexdigest(),
            "files": files}


@pytest.fixture(scope="module")
def pipe(roard, tmp_path_factory):
    """gen (PIPE_SEED from the env) at commit A; prep (--scale) at commit B; train
    (--lr, a token, config.json edited but not committed: the patch is stored) at
    B; then config.json reverted. And a non-deterministic branch: noisy -> train."""
    base = tmp_path_factory.mktemp("reproduce")
    work = base / "repo"
    work.mkdir()
    roar = Roar(base / "home", roard, work)
    for name, text in (("gen.py", GEN), ("prep.py", PREP), ("train.py", TRAIN),
                       ("noisy.py", NOISY), ("config.json", '{"epochs": 3}\n'),
                       (".gitignore", "data/\nout/\n__pycache__/\n")):
        (work / name).write_text(text)
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "pipeline")
    ids = {}
    py = sys.executable
    ids["gen"] = roar.run(py, "gen.py", "data/raw", "--rows", "40",
                          env=roar.env(PIPE_SEED="7"))[1]["id"]
    (work / "README.md").write_text("the pipeline\n")
    git(work, "add", "README.md")
    git(work, "commit", "-qm", "readme")
    ids["prep"] = roar.run(py, "prep.py", "data/raw", "out/features.json", "--scale", "3")[1]["id"]
    (work / "config.json").write_text('{"epochs": 4}\n')
    p = roar("run", "--allow-dirty", "--", py, "train.py", "out/features.json",
             "out/model.json", "--lr", "0.1", env=roar.env(PIPE_API_TOKEN="tok-123"))
    assert "finished, exit 0" in p.stderr, p.stderr
    ids["train"] = roar.json("log", "-n", "1")[0]["id"]
    git(work, "checkout", "config.json")
    ids["noisy"] = roar.run(py, "noisy.py", "out/features.json", "out/noisy.json")[1]["id"]
    ids["train2"] = roar.run(py, "train.py", "out/noisy.json", "out/model_noisy.json", "--lr",
                             "0.5", env=roar.env(PIPE_API_TOKEN="tok-123"))[1]["id"]
    ids["model"] = xxh128(work / "out" / "model.json")
    return roar, ids


def _reproduce(roar: Roar, *args, env=None):
    p = roar("reproduce", *args, "--run", "--yes", "--json", check=False,
             env=env or roar.env(PIPE_API_TOKEN="tok-123"))
    assert p.stdout, p.stderr
    return p, json.loads(p.stdout)


@pytest.mark.capture
def test_captured_plan(pipe):
    roar, ids = pipe
    doc = roar.json("reproduce", "out/model.json", env=roar.env(PIPE_API_TOKEN="tok-123"))
    steps = doc["steps"]
    assert [s["run"] for s in steps] == [ids["gen"], ids["prep"], ids["train"]]
    assert [s["action"] for s in steps] == ["skip", "reuse", "run"]
    gen, prep, train = steps
    assert gen["env"]["PIPE_SEED"] == "7" and gen["commit"] != prep["commit"]
    assert train["patch"] and train["dirty"] and not prep["dirty"]
    assert "PIPE_API_TOKEN" in train["redacted"] and "PIPE_API_TOKEN" not in prep["redacted"]
    sec = {x["name"]: x for x in doc["secrets"]}
    assert sec["PIPE_API_TOKEN"]["matches"] is True
    ins = _by_path(train)
    assert ins["config.json"]["source"] == "patch"
    assert ins["train.py"]["source"] == "git"
    assert ins["out/features.json"]["source"] == "step"
    assert {i["source"] for i in prep["inputs"] if i["path"].startswith("data/")} == {"step"}
    assert train["interpreter"]["path"] and train["drift"] == []
    assert doc["runnable"] and doc["blockers"] == []
    out = roar("reproduce", "out/model.json", env=roar.env(PIPE_API_TOKEN="tok-123")).stdout
    assert "stored patch" in out and "PIPE_API_TOKEN (set here)" in out


@pytest.mark.capture
def test_captured_secret_missing_is_one_line(pipe):
    roar, _ = pipe
    env = roar.env()
    env.pop("PIPE_API_TOKEN", None)
    p = roar("reproduce", "out/model.json", "--run", "--yes", check=False, env=env)
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert "PIPE_API_TOKEN" in lines[0] and "set it in your environment" in lines[0]


@pytest.mark.capture
def test_captured_reproduction_is_identical_and_checkout_untouched(pipe):
    roar, ids = pipe
    before = _state(roar.cwd)
    p, doc = _reproduce(roar, "out/model.json")
    res = doc["result"]
    assert p.returncode == 0 and res["identical"], p.stderr
    assert [(r["index"], r["action"]) for r in res["steps"]] == [(1, "skip"), (2, "reuse"),
                                                               (3, "run")]
    [ran] = [r for r in res["steps"] if r["action"] == "run"]
    assert ran["outputs"] == [{"path": "out/model.json", "recorded": ids["model"],
                               "rebuilt": ids["model"], "status": "identical"}]
    new = roar.json("show", ran["reproduction"])
    assert new["reproduces"] == ids["train"]
    assert new["git"]["patch"] == roar.json("show", ids["train"])["git"]["patch"]
    assert new["env"]["PIPE_API_TOKEN"] == roar.json("show", ids["train"])["env"][
        "PIPE_API_TOKEN"]
    assert res["workdir"] is None
    # from scratch: every step rebuilt, at its own commit, from the recorded env
    p, doc = _reproduce(roar, "out/model.json", "--from-scratch")
    res = doc["result"]
    assert p.returncode == 0 and res["identical"], p.stderr
    assert [r["action"] for r in res["steps"]] == ["run", "run", "run"]
    assert all(r["identical"] for r in res["steps"])
    outs = {o["path"]: o for r in res["steps"] for o in r["outputs"]}
    assert set(outs) == {"data/raw/part-0.csv", "data/raw/part-1.csv", "out/features.json",
                         "out/model.json"}
    assert {o["status"] for o in outs.values()} == {"identical"}
    assert _state(roar.cwd) == before
    assert "PIPE_SEED" not in os.environ


@pytest.mark.capture
def test_captured_nondeterministic_step_is_reported(pipe, tmp_path):
    roar, ids = pipe
    before = _state(roar.cwd)
    workdir = tmp_path / "rebuild"
    p, doc = _reproduce(roar, "out/model_noisy.json", "--from-scratch", "--workdir", workdir)
    res = doc["result"]
    assert p.returncode == 1 and not res["identical"]
    # train.py reads only "x" of noisy.json: its model comes out the same
    assert [r["identical"] for r in res["steps"]] == [True, True, False, True]
    first = res["first_divergent"]
    assert (first["index"], first["step"], first["run"]) == (3, "noisy.py", ids["noisy"])
    assert first["nondeterministic"]
    assert [(d["step"], d["path"], d["status"]) for d in res["differences"]] == [
        ("noisy.py", "out/noisy.json", "differs")]
    diff = res["diff"]
    assert (diff["a"]["id"], diff["b"]["id"]) == (ids["noisy"], first["reproduction"])
    assert not [c for c in diff["changes"] if c["kind"] in ("data", "args", "code")]
    # the work tree was kept where asked, with the rebuilt files
    assert res["workdir"] == str(workdir.resolve())
    assert (workdir / "repo" / "out" / "noisy.json").exists()
    assert _state(roar.cwd)["status"] == before["status"]
    git(roar.cwd, "worktree", "remove", "--force", str(workdir / "repo"))
    assert _state(roar.cwd) == before
    out = roar("reproduce", "out/model_noisy.json", "--from-scratch", "--run", "--yes",
               check=False, env=roar.env(PIPE_API_TOKEN="tok-123")).stdout
    assert "DIFFERS" in out and "not deterministic" in out and "first divergent step" in out


@pytest.mark.capture
def test_captured_exports(pipe, tmp_path):
    roar, ids = pipe
    out = tmp_path / "events.jsonl"
    roar("export", "out/model.json", "--format", "openlineage", "-o", out)
    events = [json.loads(line) for line in out.read_text().splitlines()]
    runs = [e["run"]["facets"]["roar_run"]["roarRunId"] for e in events]
    assert {ids["gen"], ids["prep"], ids["train"]} <= set(runs)
    _validate_openlineage(events)
    prov_model = pytest.importorskip("prov.model", reason="the prov package is not installed")
    text = roar("export", ids["train"], "--format", "prov").stdout
    doc = prov_model.ProvDocument.deserialize(content=text, format="json")
    assert doc.get_records(prov_model.ProvActivity)
    dot = roar("export", "out/model.json", "--format", "dot").stdout
    assert f"run:{ids['gen']}" in dot and "digraph" in dot


@pytest.mark.capture
def test_captured_tracker_links(roar):
    """A workload that writes the trackers' real directory layouts and prints a
    Hugging Face push; its stdout saved by the user is scanned with --log."""
    spec = {str(p.relative_to(roar.cwd)): t for p, t in _tracker_files(roar.cwd).items()}
    (roar.cwd / "layout.json").write_text(json.dumps(spec))
    (roar.cwd / "track.py").write_text(
        "import json, os\n"
        "for rel, text in json.load(open('layout.json')).items():\n"
        "    os.makedirs(os.path.dirname(rel), exist_ok=True)\n"
        "    with open(rel, 'w') as f:\n"
        "        f.write(text)\n"
        "print('CommitInfo(commit_url=\"https://huggingface.co/acme/churn-model/commit/"
        "0a1b2c3d\")')\n")
    p, doc = roar.run(sys.executable, "track.py")
    (roar.cwd / "stdout.txt").write_text(p.stdout)
    found = roar.json("links", doc["id"])
    _check_layout_links(found, roar.cwd.resolve())
    found = roar.json("links", doc["id"], "--log", roar.cwd / "stdout.txt")
    assert any(x["tracker"] == "huggingface" and x["id"] == "acme/churn-model" for x in found)
    assert roar.json("show", doc["id"])["links"] == found
    for q in ("wandb", "mlflow", "tensorboard", "huggingface", "a1b2c3d4"):
        assert [e["id"] for e in roar.json("log", "--link", q)] == [doc["id"]], q
    assert roar.json("log", "--link", "neptune") == []


def test_subprocess_roar_command_runs_without_pythonpath(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["ROAR_HOME"] = str(tmp_path / "home")
    p = subprocess.run([*reproduce._roar_command(), "--version"], env=env,
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0 and "version" in p.stdout
