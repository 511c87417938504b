"""roar/capture/jsonc.py: json.dumps / json.loads without importing json, the
same bytes, values and errors as the json module for what roar asks of it."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from test_records import _json_values

from roar.capture import jsonc

KWARGS = ({}, {"separators": (",", ":")}, {"sort_keys": True, "separators": (",", ":")},
          {"ensure_ascii": False}, {"sort_keys": True, "separators": (",", ":"),
                                    "ensure_ascii": True, "default": str})


def _same_value(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same_value(a[k], b[k]) for k in a)
    return a == b


def _outcome(fn, *args, **kw):
    try:
        return "ok", fn(*args, **kw)
    except Exception as e:  # noqa: BLE001 - the error itself is what is compared
        return type(e), str(e)


def test_dumps_and_loads_agree_with_json_on_random_documents():
    from hypothesis import given, settings

    @settings(max_examples=500, deadline=None)
    @given(_json_values())
    def same(obj):
        for kw in KWARGS:
            got, want = _outcome(jsonc.dumps, obj, **kw), _outcome(json.dumps, obj, **kw)
            assert got == want
            if got[0] == "ok":
                text = got[1]
                assert _same_value(jsonc.loads(text), json.loads(text))
                assert _same_value(jsonc.loads(text.encode("utf-8", "surrogatepass")),
                                   json.loads(text.encode("utf-8", "surrogatepass")))

    same()


@pytest.mark.parametrize("obj", [
    "plain", "é\udcff\n", 1, -0.0, 1e300, float("nan"), float("inf"), None, True, 2**70,
    {"b": 1, "a": [1, 2.5, {"c": None}]}, {1: "int key", None: "null key", 2.5: "float key"},
    {"s": {1, 2}}, {"b": b"bytes"}, [object()], {(1, 2): 3},
])
def test_dumps_edges(obj):
    for kw in KWARGS:
        assert _outcome(jsonc.dumps, obj, **kw) == _outcome(json.dumps, obj, **kw)


def test_circular_documents_raise_as_json_does():
    loop: list = []
    loop.append(loop)
    assert _outcome(jsonc.dumps, loop) == _outcome(json.dumps, loop)
    assert _outcome(jsonc.dumps, loop)[0] is ValueError


@pytest.mark.parametrize("text", [
    "", " ", "{}", " {} ", "\n[1, 2]\r\n\t", "[1,]", "{\"a\": 1} x", "{\"a\" 1}", "NaN",
    "-Infinity", "[Infinity]", "1e400", "\"\\ud800\"", "\"a\nb\"", "\ufeff{}", "[" * 100000,
    "01", "-", "\"\\x\"", "{\"a\": 1, \"a\": 2}", "  12  ", "true false", "nul",
])
def test_loads_edges(text):
    for s in (text, text.encode("utf-8", "surrogatepass")):
        got, want = _outcome(jsonc.loads, s), _outcome(json.loads, s)
        assert got[0] == want[0]
        if got[0] == "ok":
            assert _same_value(got[1], want[1])
        else:
            assert got[1] == want[1]


@pytest.mark.parametrize("raw", [
    b"\xef\xbb\xbf{\"a\": 1}", "{\"a\": 1}".encode("utf-16"), "[1]".encode("utf-32-le"),
    b"[\"\xff\"]", bytearray(b"[1, 2]"), memoryview(b"[1]"),
])
def test_loads_bytes_as_json_does(raw):
    got, want = _outcome(jsonc.loads, raw), _outcome(json.loads, raw)
    assert got[0] == want[0] and (got[0] != "ok" or _same_value(got[1], want[1]))


def test_dump_and_load_through_a_file(tmp_path):
    doc = {"key": "k", "at": 1.5, "gpus": [{"name": "é"}]}
    with open(tmp_path / "f.json", "w") as f:
        jsonc.dump(doc, f)
    assert (tmp_path / "f.json").read_text() == json.dumps(doc)
    with open(tmp_path / "f.json") as f:
        assert jsonc.load(f) == doc


def test_roar_run_imports_no_json_package(tmp_path):
    """The modules `roar run` imports on its way to the workload use jsonc."""
    code = ("import sys\n"
            "import roar.cli.run as r\n"
            "for m in r.PRELOAD: __import__(m)\n"
            "import roar.capture.events\n"
            "print(sorted(m for m in sys.modules if m == 'json' or m.startswith('json.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
