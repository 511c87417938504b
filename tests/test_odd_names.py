"""File names that hold newlines and bytes that are not UTF-8: captured, shown,
and written as valid JSON."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import (
    PY,
    xxh128,
)

ODD_IN, ODD_OUT = b"in\nput \xff.txt", b"out\n\xfe\xe9.txt"
ODD_CODE = ("data = open(b'in\\nput \\xff.txt', 'rb').read()\n"
            "open(b'out\\n\\xfe\\xe9.txt', 'wb').write(data[::-1])\n")


def raw(roar, *args) -> subprocess.CompletedProcess:
    """The CLI with bytes in and bytes out (arguments and output need not be UTF-8)."""
    argv = [a if isinstance(a, bytes) else os.fsencode(str(a)) for a in args]
    return subprocess.run([os.fsencode(PY), b"-m", b"roar", *argv], cwd=roar.cwd,
                          env=roar.env(), capture_output=True, timeout=120)


def odd_run(roar) -> tuple[bytes, bytes, str]:
    """A run reading and writing files whose names hold a newline and non-UTF-8 bytes."""
    w = os.fsencode(roar.cwd)
    src, dst = os.path.join(w, ODD_IN), os.path.join(w, ODD_OUT)
    with open(src, "wb") as f:
        f.write(b"odd name\n")
    p = raw(roar, "run", "--", PY, "-c", ODD_CODE)
    assert p.returncode == 0, p.stderr
    run_id = json.loads(raw(roar, "log", "-n", "1", "--json").stdout)[0]["id"]
    return src, dst, run_id


@pytest.mark.capture
def test_names_with_newlines_and_non_utf8_bytes_are_captured(roar):
    src, dst, run_id = odd_run(roar)

    def doc(*args) -> dict:  # as roar wrote it: paths with surrogate escapes round-trip
        p = raw(roar, *args)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout.decode("utf-8", "surrogateescape"))

    run = doc("show", run_id, "--json")
    assert [(os.fsencode(i["path"]), i["hash"]) for i in run["inputs"]] == [
        (src, xxh128(src))]
    assert [(os.fsencode(o["path"]), o["hash"]) for o in run["outputs"]] == [
        (dst, xxh128(dst))]
    assert run["complete"] is True, run["incomplete_reasons"]
    art = doc("show", dst, "--json")  # a path argument that is not UTF-8
    assert [r["run"] for r in art["produced_by"]] == [run_id]
    files = {os.fsencode(f["path"]) for p in doc("trace", run_id, "--json")["processes"]
             for f in p["files"]}
    assert {src, dst} <= files


def _strings(obj):
    """Every string value in a JSON document."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


@pytest.mark.capture
def test_json_output_is_valid_utf8_for_non_utf8_names(roar):
    src, dst, run_id = odd_run(roar)
    for args in (("show", run_id), ("trace", run_id), ("show", dst)):
        out = raw(roar, *args, "--json").stdout
        out.decode("utf-8")  # strict: what jq or any JSON parser needs
        strings = set(_strings(json.loads(out)))
        assert os.fsdecode(src) in strings or os.fsdecode(dst) in strings
