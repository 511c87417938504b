"""Membership (`roar inputs --contains / --contains-dir`, roar/query/lineage.py):
every path to yes / no / unknown, for one file and for a directory. "no" only
when the whole upstream capture is complete; never a false "no"."""

from __future__ import annotations

import os

import pytest
from conftest import History, hash_of

from roar.query import lineage

RAW = [("/w/raw/a.csv", b"row a\n"), ("/w/raw/b.csv", b"row b\n")]
FEAT, MODEL = b"features", b"model"


@pytest.fixture
def hist(tmp_path):
    h = History(tmp_path / "home")
    yield h
    h.store.close()


def pipeline(h: History, **flaw) -> tuple[str, str]:
    """prep (reads RAW) -> train; flaw (History.run keywords) applies to prep."""
    pre = h.run(["python3", "prep.py"], reads=RAW, writes=[("/w/feat", FEAT)], **flaw)
    train = h.run(["python3", "train.py"], reads=[("/w/feat", FEAT)],
                  writes=[("/w/model.pt", MODEL)])
    return pre, train


TARGET = ("artifact", hash_of(MODEL))


# -- one file -----------------------------------------------------------------------------


def test_file_yes_with_evidence_at_each_depth(hist):
    pre, train = pipeline(hist)
    doc = lineage.contains(hist.store, TARGET, hash_of(RAW[0][1]), RAW[0][0])
    assert doc["answer"] == "yes" and doc["reasons"] == []
    assert doc["evidence"] == [{"run": pre, "path": RAW[0][0], "depth": 2}]
    doc = lineage.contains(hist.store, TARGET, hash_of(FEAT))
    assert doc["evidence"] == [{"run": train, "path": "/w/feat", "depth": 1}]


def test_file_yes_even_when_capture_is_incomplete(hist):
    pipeline(hist, complete=False, reasons=["5 kernel events lost"])
    doc = lineage.contains(hist.store, TARGET, hash_of(RAW[1][1]))
    assert doc["answer"] == "yes" and doc["reasons"] == []


def test_file_no_when_complete_with_the_other_versions_of_its_path(hist):
    pre, _ = pipeline(hist)
    doc = lineage.contains(hist.store, TARGET, hash_of(b"row a, edited\n"), RAW[0][0])
    assert doc["answer"] == "no" and doc["evidence"] == [] and doc["reasons"] == []
    assert doc["other_versions"] == [{"run": pre, "path": RAW[0][0], "hash": hash_of(RAW[0][1])}]


def test_output_downstream_of_the_target_is_not_in_it(hist):
    pipeline(hist)
    hist.run(["python3", "eval.py"], reads=[("/w/model.pt", MODEL), ("/w/test.csv", b"t")],
             writes=[("/w/metrics", b"m")])
    assert lineage.contains(hist.store, TARGET, hash_of(b"t"))["answer"] == "no"


@pytest.mark.parametrize("flaw,why", [
    ({"complete": False, "reasons": ["5 kernel events lost"]}, "5 kernel events lost"),
    ({"status": "interrupted", "complete": False, "reasons": ["run was interrupted"]},
     "interrupted"),
    ({"status": "running", "complete": None}, "still running"),
    ({"unverified": ["/w/raw/c.csv"]}, "input /w/raw/c.csv has no verified content hash"),
    ({"complete": False, "reasons": []}, "capture marked incomplete"),
])
def test_file_unknown_when_any_upstream_run_is_incomplete(hist, flaw, why):
    pre, _ = pipeline(hist, **flaw)
    doc = lineage.contains(hist.store, TARGET, hash_of(b"never read"))
    assert doc["answer"] == "unknown" and doc["evidence"] == []
    assert any(r.startswith(f"run {pre[:10]}") and why in r for r in doc["reasons"]), \
        doc["reasons"]


def test_file_unknown_when_no_run_wrote_the_target(hist):
    pipeline(hist)
    doc = lineage.contains(hist.store, ("artifact", hash_of(b"made elsewhere")),
                           hash_of(RAW[0][1]))
    assert doc["answer"] == "unknown"
    assert doc["reasons"] == ["no recorded run wrote this content: what it was made from "
                              "is unknown"]


def test_file_membership_of_a_run_target(hist):
    pre, train = pipeline(hist)
    run = ("run", train)
    assert lineage.contains(hist.store, run, hash_of(RAW[0][1]))["answer"] == "yes"
    assert lineage.contains(hist.store, run, hash_of(b"other"))["answer"] == "no"


# -- a directory ----------------------------------------------------------------------------


def _dir(tmp_path, files: dict[str, bytes]):
    d = tmp_path / "check"
    for name, content in files.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(content)
    return d


def test_dir_yes_when_any_file_reached(hist, tmp_path):
    pipeline(hist)
    d = _dir(tmp_path, {"a.csv": RAW[0][1], "sub/new.csv": b"new"})
    doc = lineage.contains_dir(hist.store, TARGET, str(d))
    assert (doc["answer"], doc["reached"], doc["total"]) == ("yes", 1, 2)
    assert {f["path"]: f["answer"] for f in doc["files"]} == {"a.csv": "yes",
                                                             "sub/new.csv": "no"}


def test_dir_no_when_complete_and_nothing_reached(hist, tmp_path):
    pipeline(hist)
    d = _dir(tmp_path, {"x": b"x", "y": b"y"})
    doc = lineage.contains_dir(hist.store, TARGET, str(d))
    assert (doc["answer"], doc["reached"], doc["total"], doc["reasons"]) == ("no", 0, 2, [])


def test_dir_empty_is_no(hist, tmp_path):
    pipeline(hist)
    (tmp_path / "empty").mkdir()
    doc = lineage.contains_dir(hist.store, TARGET, str(tmp_path / "empty"))
    assert (doc["answer"], doc["total"]) == ("no", 0)


def test_dir_unknown_when_upstream_is_incomplete(hist, tmp_path):
    pipeline(hist, complete=False, reasons=["2 kernel events lost"])
    d = _dir(tmp_path, {"x": b"x"})
    doc = lineage.contains_dir(hist.store, TARGET, str(d))
    assert doc["answer"] == "unknown" and doc["files"][0]["answer"] == "unknown"
    assert doc["reasons"] and "2 kernel events lost" in doc["reasons"][0]


def test_dir_yes_wins_over_unknown(hist, tmp_path):
    pipeline(hist, complete=False, reasons=["2 kernel events lost"])
    d = _dir(tmp_path, {"a.csv": RAW[0][1], "x": b"x"})
    doc = lineage.contains_dir(hist.store, TARGET, str(d))
    assert doc["answer"] == "yes"
    assert {f["path"]: f["answer"] for f in doc["files"]} == {"a.csv": "yes", "x": "unknown"}
    assert doc["reasons"]  # why x is unknown


def test_dir_unknown_when_a_file_cannot_be_hashed(hist, tmp_path, monkeypatch):
    """A file the hasher cannot read is unknown, never no, even when the upstream
    capture is complete. (Tests run as root, who reads everything: the hasher's
    answer for an unreadable file is put in its place.)"""
    from roar.query import views
    from roar.record.hasher import UNREADABLE, HashResult

    pipeline(hist)
    d = _dir(tmp_path, {"x": b"x", "y": b"y"})
    real = views.hash_path  # queries hash through views.query_hash

    def unreadable_x(path, lookup=None, *a, **kw):
        if path.endswith("/x"):
            return HashResult(UNREADABLE, error="Permission denied"), None
        return real(path, lookup, *a, **kw)

    monkeypatch.setattr(views, "hash_path", unreadable_x)
    doc = lineage.contains_dir(hist.store, TARGET, str(d))
    assert doc["answer"] == "unknown" and doc["reasons"] == []
    assert {f["path"]: (f["answer"], f.get("error")) for f in doc["files"]} == {
        "x": ("unknown", "Permission denied"), "y": ("no", None)}
    assert doc["files"][0] == {"path": "x", "hash": None, "answer": "unknown", "evidence": [],
                               "error": "Permission denied"}


def test_dir_skips_symlinks_and_special_files(hist, tmp_path):
    pipeline(hist)
    d = _dir(tmp_path, {"a.csv": RAW[0][1]})
    os.symlink(d / "a.csv", d / "link.csv")
    os.mkfifo(d / "fifo")
    doc = lineage.contains_dir(hist.store, TARGET, str(d))
    assert [f["path"] for f in doc["files"]] == ["a.csv"]


def test_dir_that_is_not_a_directory_is_refused(hist, tmp_path):
    from roar.record.store import RefError

    pipeline(hist)
    with pytest.raises(RefError, match="is not a directory"):
        lineage.contains_dir(hist.store, TARGET, str(tmp_path / "nope"))


# -- whole documents (pinned by the mutation run, docs/testing.md) ----------------------


def test_dir_document_field_by_field(hist, tmp_path):
    """Every file in order (symlinks and special files left out wherever they
    sort), each told to progress before it is hashed; the hashes computed are
    kept in the stat cache for the next query."""
    from roar.record.store import stat_key

    pre, _ = pipeline(hist)
    d = _dir(tmp_path, {"a.csv": RAW[0][1], "sub/new.csv": b"new"})
    os.symlink(d / "a.csv", d / "0-link.csv")  # sorts first: skipped, not the end
    seen = []
    doc = lineage.contains_dir(hist.store, TARGET, str(d),
                               progress=lambda p, done, size: seen.append((p, done, size)))
    assert doc == {
        "answer": "yes", "dir": str(d), "target": lineage.target_view(hist.store, TARGET),
        "reached": 1, "total": 2, "reasons": [],
        "files": [{"path": "a.csv", "answer": "yes", "hash": hash_of(RAW[0][1]),
                   "evidence": [{"run": pre, "path": RAW[0][0], "depth": 2}]},
                  {"path": "sub/new.csv", "answer": "no", "hash": hash_of(b"new"),
                   "evidence": [], "other_versions": []}]}
    assert seen == [(str(d / "a.csv"), 0, None), (str(d / "sub" / "new.csv"), 0, None)]
    for name, content in (("a.csv", RAW[0][1]), ("sub/new.csv", b"new")):
        assert hist.store.cached_hash_key(stat_key(os.stat(d / name))) == hash_of(content)


def test_dir_of_a_target_nobody_wrote_is_unknown_never_no(hist, tmp_path):
    pipeline(hist)
    d = _dir(tmp_path, {"x": b"x"})
    doc = lineage.contains_dir(hist.store, ("artifact", hash_of(RAW[0][1])), str(d))
    assert doc["answer"] == "unknown" and doc["files"][0]["answer"] == "unknown"
    assert doc["reasons"] == [
        "no recorded run wrote this content: what it was made from is unknown"]
