"""A store is private to its user: modes 0700, another user refused with one
line."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import (
    as_other,
    one_line_error,
)


@pytest.fixture
def private_stores(tmp_path_factory):
    """Two root-owned stores with a run each: one made from nothing, one in a
    ROAR_HOME that already existed with mode 0755."""
    from roar.record.ids import new_run_id
    from roar.record.store import Store

    base = Path(tempfile.mkdtemp(prefix="roar-private-", dir="/tmp"))
    os.chmod(base, 0o755)
    loose = base / "loose"
    loose.mkdir()
    os.chmod(loose, 0o755)
    for home in (base / "home", loose):
        with Store(home) as st:
            st.put_run({"id": new_run_id(), "status": "finished", "command": ["x"]})
    yield base / "home", loose
    shutil.rmtree(base, ignore_errors=True)


def test_store_is_private_to_its_user(private_stores, foreign_python, other_user):
    """ROAR_HOME and its store directory are 0700 (the store directory even when
    ROAR_HOME already existed with looser permissions): another user can read
    neither the store files nor the runs."""
    fresh, loose = private_stores
    assert fresh.stat().st_mode & 0o777 == 0o700
    for home in (fresh, loose):
        assert (home / "store").stat().st_mode & 0o777 == 0o700
        for f in (home / "store").iterdir():
            assert f.stat().st_mode & 0o022 == 0, f  # nobody else may write
        for args in (["log", "--json"], ["show", "0"]):
            p = as_other(other_user, foreign_python, *args, home=home)
            assert p.returncode != 0 and "finished" not in p.stdout, p.stdout
        p = subprocess.run(["setpriv", f"--reuid={other_user.pw_uid}",
                            f"--regid={other_user.pw_gid}", "--clear-groups", "cat",
                            str(home / "store" / "data.mdb")], capture_output=True)
        assert p.returncode != 0 and b"Permission denied" in p.stderr


def test_someone_elses_store_is_refused_with_one_line(private_stores, foreign_python,
                                                      other_user):
    fresh, _ = private_stores
    for args in (["log"], ["show", "0"]):
        line = one_line_error(as_other(other_user, foreign_python, *args, home=fresh))
        assert "permission denied" in line
