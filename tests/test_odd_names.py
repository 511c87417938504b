"""File names that hold newlines and bytes that are not UTF-8: captured, shown,
and written as valid JSON."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import (
    PY,
    REPO,
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


@pytest.mark.capture
def test_text_output_and_exports_of_non_utf8_names(roar, tmp_path):
    """The text views and every export of a run whose files' names are not
    UTF-8: exit 0, the names written back as their own bytes (as ls does)."""
    src, dst, run_id = odd_run(roar)
    name_in, name_out = os.path.basename(src), os.path.basename(dst)
    for args, names in [(("show", run_id), (name_in, name_out)), (("show", dst), (name_out,)),
                        (("inputs", dst), (name_in,)), (("outputs", src), (name_out,)),
                        (("trace", run_id), (name_in, name_out)),
                        (("diff", run_id, run_id), ()),
                        (("export", dst, "--format", "dot"), (name_out.split(b"\n")[1],)),
                        (("export", dst, "--format", "openlineage"), ()),
                        (("export", dst, "--format", "prov"), ()),
                        (("inputs", dst, "--contains", src), ())]:
        p = raw(roar, *args)
        assert p.returncode == 0 and b"Traceback" not in p.stderr, (args, p.stderr)
        for n in names:
            assert n in p.stdout, (args, n, p.stdout)
    out = tmp_path / "g.dot"
    p = raw(roar, "export", dst, "--format", "dot", "-o", out)
    assert p.returncode == 0, p.stderr
    assert name_out.split(b"\n")[1] in out.read_bytes()
    p = raw(roar, "run", "--", b"no-such-program\xff")  # the traced child's own message
    assert p.returncode == 127 and p.stderr.strip().splitlines()[0] == (
        b"roar: no-such-program\xff: command not found"), p.stderr


NOT_UTF8 = b"\xff\xfe"
# every command and every argument or value option of it that names something
# (a run, a path, a hash, a request, a URL) given bytes that are not UTF-8
SWEEP = [
    ["show", NOT_UTF8], ["show", "--json", NOT_UTF8], ["trace", NOT_UTF8],
    ["inputs", NOT_UTF8], ["inputs", "RUN", "--contains", NOT_UTF8],
    ["inputs", "RUN", "--contains-dir", NOT_UTF8], ["outputs", NOT_UTF8],
    ["diff", NOT_UTF8, "RUN"], ["diff", "RUN", NOT_UTF8],
    ["export", NOT_UTF8, "--format", "prov"],
    ["export", "RUN", "--format", "openlineage", "--namespace", NOT_UTF8,
     "-o", b"/nonexistent/" + NOT_UTF8],
    ["reproduce", NOT_UTF8], ["links", NOT_UTF8], ["links", "RUN", "--log", NOT_UTF8],
    ["audit", NOT_UTF8], ["watch", NOT_UTF8], ["detach", NOT_UTF8],
    ["log", "--link", NOT_UTF8], ["log", "--group", NOT_UTF8],
    ["show", b"group:" + NOT_UTF8], ["show", b"s3://bucket/" + NOT_UTF8],
    ["request", "show", NOT_UTF8], ["request", "approve", NOT_UTF8],
    ["request", "deny", NOT_UTF8, "--reason", NOT_UTF8], ["request", "list", "--status", NOT_UTF8],
    ["request", "wait", NOT_UTF8, "--timeout", "1"],
    ["run", "--name", NOT_UTF8, "--", "/nonexistent/" + NOT_UTF8.decode("latin-1")],
    ["run", "--", b"no-such-program" + NOT_UTF8],
]


def test_arguments_that_are_not_utf8_fail_in_one_line_or_answer(tmp_path):
    """Bytes that are not UTF-8 as any command's argument (`roar show $'\\xff'`):
    an answer (exit 0) or one `roar: ...` line and a non-zero exit; never a
    traceback."""
    from conftest import History

    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "ROAR_HOME": str(tmp_path / "home"),
           "ROAR_SOCKET": str(tmp_path / "no.sock"), "PYTHONPATH": str(REPO)}
    rid = History(tmp_path / "home").run(["python", "train.py"], reads=[("/d/in", b"x")],
                                          writes=[("/d/out", b"y")])
    bad = []
    for args in SWEEP:
        argv = [rid.encode() if a == "RUN" else a if isinstance(a, bytes) else a.encode("latin-1")
                for a in args]
        p = subprocess.run([os.fsencode(PY), b"-m", b"roar", *argv], cwd=work, env=env,
                           capture_output=True, timeout=120)
        err = p.stderr.decode("utf-8", "replace")
        lines = [x for x in err.splitlines() if x.strip()]
        # roar's one line, or click's usage error for an option it checks itself
        # (--log must name an existing file): Usage, Try ..., Error: ...
        if "Traceback" in err or (p.returncode != 0 and not (
                (len(lines) == 1 and lines[0].startswith("roar: "))
                or (lines[0].startswith("Usage: ") and lines[-1].startswith("Error: ")))):
            bad.append((args, p.returncode, err.strip().splitlines()[-1:]))
    assert not bad, bad
