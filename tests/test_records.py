"""The typed run records (roar/record/records.py): one encoder/decoder, old
store documents still decode, reasons by code, the store's typed updates, and
a `roar run --request` run that keeps its tracker links."""

from __future__ import annotations

import json

import pytest
from conftest import Roar

from roar.record.records import (
    FileVersion,
    Link,
    Process,
    Reason,
    Role,
    Run,
    RunStatus,
    decode,
    encode,
    message,
    reason,
)
from roar.record.store import Store
from roar.requests import training as requests

POLICY = """
[cost]
default_gpu_type = "a100"
[cost.rates]
a100 = 2.0
[auto_approve]
max_cost = 10
max_gpus = 1
"""

WANDB_DIR = "wandb/run-20240611_101530-a1b2c3d4"


def _run_doc(run_id: str, **kw) -> dict:
    return {"id": run_id, "name": None, "status": "running", "command": ["true"],
            "cwd": "/tmp", "started_at": "2026-01-01T00:00:00Z", "ended_at": None,
            "exit_code": None, "complete": None, "request": None, **kw}


def test_record_round_trip_keeps_unknown_keys():
    doc = {**_run_doc("01J0000000000000000000000A"), "status": "finished",
           "links": [{"tracker": "wandb", "id": "x1", "entity": "acme"}],
           "reasons": [reason(Reason.LOST_EVENTS, n=3)], "cluster_group": "job-7"}
    run = Run.from_doc(doc)
    assert run.status is RunStatus.FINISHED and run.status == "finished"
    assert run.links == [Link("wandb", id="x1", extra={"entity": "acme"})]
    assert run.extra == {"cluster_group": "job-7"}
    assert run.incomplete_reasons == ["3 kernel events lost (ring buffer full)"]
    again = Run.from_doc(decode(encode(run)))
    assert again == run
    out = run.to_doc()
    assert out["cluster_group"] == "job-7" and out["links"][0]["entity"] == "acme"
    assert out["incomplete_reasons"] == ["3 kernel events lost (ring buffer full)"]


def test_documents_of_older_stores_decode():
    # a run stored before reasons had codes: its sentences are read back as codes
    sentences = ["2 kernel events lost (ring buffer full)", "unknown fd 9 (3x)",
                 "1 input(s) without a verified content hash (hashed after the run)",
                 "the daemon went away"]
    old = {"id": "01J0000000000000000000000B", "status": "finished", "command": ["x"],
           "complete": False, "incomplete_reasons": sentences}
    run = Run.from_doc(old)
    assert run.reasons == [{"code": "lost_events", "n": 2},
                           {"code": "model_problem", "what": "unknown fd 9", "n": 3},
                           {"code": "unhashed_late", "n": 1},
                           {"code": "text", "text": "the daemon went away"}]
    assert run.incomplete_reasons == old["incomplete_reasons"]
    f = FileVersion.from_doc({"path": "/d/a.csv", "kind": "data", "role": "input",
                              "hash": "ab" * 16, "size": 4, "bytes_read": 4})
    assert f.role is Role.INPUT and f.bytes == 4 and f.processes == []
    p = Process.from_doc({"key": "k1", "pid": 5, "argv": ["sh"], "files": [
        {"path": "/d/a.csv", "kind": "data", "mode": "r"}]})
    assert p.files[0].path == "/d/a.csv" and p.threads == 1


def test_every_reason_code_has_a_message():
    params = {"n": 2, "what": "unknown fd", "text": "a note", "address": "::1", "port": 443,
              "why": "a cause"}
    for code in Reason:
        assert message(reason(code, **params))


def test_typed_updates_keep_each_others_fields(tmp_path):
    with Store(tmp_path / "home") as store:
        rid = "01J0000000000000000000000C"
        store.put_run(_run_doc(rid, reasons=[reason(Reason.HASH_PENDING, n=1),
                                             reason(Reason.IO_URING)]))
        store.set_links(rid, [{"tracker": "mlflow", "id": "r1"}])
        store.mark_request(rid, "REQ1", False, [])
        store.mark_reproduces(rid, "01J0000000000000000000000D")
        store.set_hash_progress(rid, {"path": "/x", "bytes_done": 1, "bytes": 2})
        store.replace_reasons(rid, {Reason.HASH_PENDING}, [reason(Reason.UNHASHED_LATE, n=1)])
        store.set_hash_progress(rid, None)
        run = store.run(rid)
    assert run.links == [Link("mlflow", id="r1")]
    assert (run.request, run.dataset_mismatch, run.reproduces) == ("REQ1", False,
                                                                   "01J0000000000000000000000D")
    assert [r["code"] for r in run.reasons] == ["io_uring", "unhashed_late"]
    assert run.complete is False and "hash_progress" not in run.extra


def test_request_resolution_keeps_the_runs_links(tmp_path):
    """The gate resolves the request with the run document `roar run` holds,
    read before the links were stored: it must not write that copy back."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "policy.toml").write_text(POLICY)
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "a.csv").write_text("1\n")
    doc = json.loads(Roar(home, None, work)("request", "create", "--json", "--dataset", "data",
                                            "--gpus", 1, "--hours", 1, "--rationale",
                                            "r").stdout)
    assert doc["status"] == "approved"
    rid = "01J0000000000000000000000E"
    with Store(home) as store:
        store.put_run(_run_doc(rid, request=doc["id"]))
        gate = requests.gate_run(store, doc["id"], ["true"], None, "me")
        assert gate.check(1.0) == "ok"  # claims the request for the running run
        run = store.get_run(rid)  # the copy `roar run` holds at the end
        run.update(status="finished", ended_at="2026-01-01T00:00:05Z", complete=True)
        store.finish_run(run, [], [])
        store.update_run(rid, lambda r: r.__setitem__(  # what links.attach_links stores
            "links", [{"tracker": "wandb", "id": "a1b2c3d4"}]))
        gate.resolve(store, run, [])
        stored = store.get_run(rid)
    assert stored["links"] == [{"tracker": "wandb", "id": "a1b2c3d4"}]
    assert stored["request"] == doc["id"] and stored["dataset_mismatch"] is not None


@pytest.mark.capture
def test_request_run_keeps_its_tracker_links(roar):
    roar.home.mkdir(parents=True, exist_ok=True)
    (roar.home / "policy.toml").write_text(POLICY)
    (roar.cwd / "data.csv").write_text("v1\n")
    doc = roar.json("request", "create", "--dataset", "data.csv", "--gpus", 1, "--hours", 1,
                    "--rationale", "r")
    script = (f"mkdir -p {WANDB_DIR}/files && cat data.csv > {WANDB_DIR}/files/output.log")
    roar("run", "--request", doc["id"], "--", "sh", "-c", script)
    run_id = roar.json("request", "show", doc["id"])["run"]
    shown = roar.json("show", run_id)
    assert shown["request"] == doc["id"]
    assert [(x["tracker"], x["id"]) for x in shown["links"]] == [("wandb", "a1b2c3d4")]


# -- the compiled encoder (roar/record/_cmodel.c encode_json) ------------------------------


class _Str(str):
    pass


class _Int(int):
    pass


class _Dict(dict):
    pass


def _json_values():
    from hypothesis import strategies as st

    scalars = (st.none() | st.booleans() | st.integers() | st.integers(-2**80, 2**80)
               | st.floats(allow_nan=True, allow_infinity=True)
               | st.text() | st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7f))
               | st.sampled_from(["\udcff", "a\udcffb", "\U0001f600", "\x7f", "\x00\x1f", "\\\""])
               | st.sampled_from(list(Role) + list(RunStatus)) | st.builds(_Str, st.text())
               | st.builds(_Int, st.integers()))
    return st.recursive(scalars, lambda inner: (
        st.lists(inner, max_size=4) | st.tuples(inner, inner)
        | st.dictionaries(st.text() | st.builds(_Str, st.text()), inner, max_size=4)),
        max_leaves=30)


def test_the_compiled_encoder_writes_the_json_modules_bytes():
    """`roar run` encodes its records with roar/record/_cmodel.c's encode_json
    (codes.encode): for every JSON document it takes (nested dicts, lists,
    tuples, every kind of str and int, floats with NaN and infinities, enums,
    surrogate escapes of undecodable paths) its bytes are the json module's;
    what it leaves to the json module (a dict subclass, a key that is not a
    str, another type, a document nested deeper than 64) it answers None, and
    codes.encode gives the json module's bytes or error."""
    from hypothesis import given, settings

    from roar.record import codes
    from roar.record.runmodel import _cmodel

    assert _cmodel is not None and codes.compiled_encode is _cmodel.encode_json

    def py(obj) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    @settings(max_examples=800, deadline=None)
    @given(_json_values())
    def same(obj):
        assert _cmodel.encode_json(obj) == py(obj)
        assert encode(obj) == py(obj)

    same()
    deep: list = []
    for _ in range(70):
        deep = [deep]
    for obj in ({1: "a"}, {"a": {(1, 2): 3}}, _Dict(a=1), [1, {2.5}], 1.5j, deep, [_Dict()]):
        assert _cmodel.encode_json(obj) is None
    assert encode({1: "a", None: 2}) == py({1: "a", None: 2}) == b'{"1":"a","null":2}'
    assert encode(deep) == py(deep)
    with pytest.raises(TypeError):
        encode({"a": {1, 2}})
    run = Run(id="R1", status=RunStatus.FINISHED, command=["python", "tr\udcffain.py"])
    assert encode(run) == py(run.to_doc())


def test_the_compiled_encoder_on_long_documents_and_int_bounds():
    """encode_json writes into a buffer of its own until a document outgrows it,
    copies plain ASCII runs of a str as they are and writes ints itself: the
    json module's bytes across the buffer's growth (every length around it), for
    a plain head before an escape at every position, and at the int64 bounds."""
    from roar.record.runmodel import _cmodel

    def py(obj) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    for n in range(1000, 1060):
        for doc in ("a" * n, {"p": "b" * n, "n": n}, ["x" * (n - 20), "\x7f" * 3, "é"],
                    ["c" * n + "\n", -n]):
            assert _cmodel.encode_json(doc) == py(doc)
    for head in range(0, 40):
        for esc in ('"', "\\", "\x00", "\x1f", "\x7f", "\x80", "\udcff", "\U0001f600", "\t"):
            s = "p" * head + esc + "q" * 3
            assert _cmodel.encode_json(s) == py(s), (head, esc)
    big = {f"k{i}": "/data/shard/" + "z" * (i % 50) for i in range(3000)}
    assert _cmodel.encode_json(big) == py(big)
    for v in (0, 1, -1, 9, 10, -10, 2**63 - 1, -2**63, 2**63, -2**63 - 1, 10**18, -10**18):
        assert _cmodel.encode_json([v, {"v": v}]) == py([v, {"v": v}])
