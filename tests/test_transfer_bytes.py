"""Byte counts of in-kernel transfers (sendfile, splice, copy_file_range):
what the kernel moved, never the "up to" length the caller asked for
(coreutils' cat asks copy_file_range for 2^62 bytes to copy 3)."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

pytestmark = pytest.mark.capture

HUGE = 1 << 62


def _files(roar, doc) -> tuple[dict, dict]:
    return ({e["path"]: e for e in doc["inputs"]}, {e["path"]: e for e in doc["outputs"]})


def _py(roar, code: str):
    (roar.cwd / "job.py").write_text(textwrap.dedent(code))
    _, doc = roar.run(sys.executable, "job.py")
    return doc


def _check(roar, doc, src: str, dst: str, size: int) -> None:
    ins, outs = _files(roar, doc)
    w = roar.cwd
    assert (w / dst).read_bytes() == (w / src).read_bytes()
    assert outs[str(w / dst)]["bytes_written"] == size, outs
    assert ins[str(w / src)]["bytes_read"] == size, ins
    # the process view carries the same counts (sh opens b, cat writes it)
    files = [f for p in roar.json("trace", doc["id"])["processes"] for f in p["files"]]
    assert sum(f["bytes_written"] for f in files if f["path"] == str(w / dst)) == size
    assert sum(f["bytes_read"] for f in files if f["path"] == str(w / src)) == size
    assert doc["complete"] is True, doc["incomplete_reasons"]


def test_cat_redirect_copy_file_range(roar):
    (roar.cwd / "a").write_bytes(b"hi\n")
    _, doc = roar.run("sh", "-c", "cat a > b")
    _check(roar, doc, "a", "b", 3)


def test_sendfile_with_a_huge_count(roar):
    (roar.cwd / "src").write_bytes(os.urandom(5000))
    doc = _py(roar, f"""
        import os
        i = os.open("src", os.O_RDONLY)
        o = os.open("dst", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        while os.sendfile(o, i, None, {HUGE >> 2}):
            pass
    """)
    _check(roar, doc, "src", "dst", 5000)


def test_splice_with_a_huge_length(roar):
    (roar.cwd / "src").write_bytes(os.urandom(7000))
    doc = _py(roar, f"""
        import os
        i = os.open("src", os.O_RDONLY)
        o = os.open("dst", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        r, w = os.pipe()
        while True:
            n = os.splice(i, w, {HUGE >> 2})
            if not n:
                break
            while n:
                n -= os.splice(r, o, {HUGE >> 2})
    """)
    _check(roar, doc, "src", "dst", 7000)


def test_copy_file_range_with_a_huge_length(roar):
    (roar.cwd / "src").write_bytes(os.urandom(9000))
    doc = _py(roar, f"""
        import os
        i = os.open("src", os.O_RDONLY)
        o = os.open("dst", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        while os.copy_file_range(i, o, {HUGE}):
            pass
    """)
    _check(roar, doc, "src", "dst", 9000)
