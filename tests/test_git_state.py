"""The git state of the work tree: no repository, a detached HEAD, a repository
without commits (refused, leaving nothing behind)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from conftest import (
    PY,
    git,
    last_run,
    xxh128,
)


@pytest.mark.capture
def test_non_git_cwd_runs_without_git_state(roar):
    _, doc = roar.run("true")
    assert doc["git"] is None and doc["complete"] is True


@pytest.mark.capture
def test_detached_head_is_recorded(roar):
    w = roar.cwd
    git(w, "init", "-q", "-b", "main")
    (w / "train.py").write_text("print('hi')\n")
    git(w, "add", ".")
    git(w, "commit", "-qm", "one")
    git(w, "checkout", "-q", "--detach")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=w, capture_output=True,
                          text=True).stdout.strip()
    _, doc = roar.run(PY, "train.py")
    assert doc["git"]["commit"] == head and doc["git"]["branch"] is None
    assert doc["git"]["detached"] is True and doc["git"]["dirty"] is False
    assert [i["path"] for i in doc["inputs"]] == [str(w / "train.py")]


@pytest.mark.capture
def test_repo_without_commits_is_refused_naming_the_file(roar):
    w = roar.cwd
    git(w, "init", "-q", "-b", "main")
    (w / "train.py").write_text("print('hi')\n")
    marker = w / "started"
    p = roar("run", "--", "touch", marker, check=False)
    assert p.returncode == 125 and "Traceback" not in p.stderr and not marker.exists()
    first = p.stderr.splitlines()[0]
    assert first.startswith("roar: ") and "has no commits yet" in first and "--allow-dirty" in first
    assert "untracked: train.py" in p.stderr
    p = roar("run", "--allow-dirty", "--", PY, "train.py")
    doc = last_run(roar)
    assert doc["git"]["commit"] is None and doc["git"]["dirty"] is True
    assert doc["git"]["untracked"] == {"train.py": xxh128(w / "train.py")}


@pytest.mark.capture
def test_refused_run_leaves_nothing_behind(roar, roard):
    """roard starts tagging the held workload while roar run makes its checks; a
    run refused then (dirty work tree) never runs its command, and neither a run,
    a spool nor a cgroup is left."""
    from roar.capture.cgroups import PARENT, cgroup2_mount
    from roar.daemon import cgroup_prefix

    subprocess.run(["git", "init", "-q"], cwd=roar.cwd, check=True)
    (roar.cwd / "train.py").write_text("print('hi')\n")  # untracked: the tree is dirty
    spool = roard.parent / "spool"
    before = set(os.listdir(spool))
    marker = roar.cwd / "ran"
    p = roar("run", "--", "touch", str(marker), check=False)
    assert p.returncode == 125 and "has no commits yet" in p.stderr
    assert "Traceback" not in p.stderr
    assert not marker.exists()
    assert roar.json("log") == []
    deadline = time.monotonic() + 10
    while set(os.listdir(spool)) != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(os.listdir(spool)) == before
    prefix = cgroup_prefix(roard)
    assert [d for d in os.listdir(cgroup2_mount() / PARENT) if d.startswith(prefix)] == []


def test_git_is_asked_only_where_it_could_find_a_repository(tmp_path, monkeypatch):
    """Outside any repository a run skips git's processes; a .git (directory or
    worktree file) in the cwd or above, a bare repository, or git's environment
    naming one, and git is asked as before."""
    from roar.record.context import _maybe_in_repo

    for k in ("GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR"):
        monkeypatch.delenv(k, raising=False)
    plain = tmp_path / "plain" / "deep"
    plain.mkdir(parents=True)
    assert not _maybe_in_repo(str(plain))
    (tmp_path / "plain" / ".git").write_text("gitdir: /elsewhere\n")  # a worktree's
    assert _maybe_in_repo(str(plain))
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    assert _maybe_in_repo(str(bare))
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv("GIT_DIR", str(bare))
    assert _maybe_in_repo(str(other))
