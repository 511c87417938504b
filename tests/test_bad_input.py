"""Bad input refused with one line: a store of a newer schema, ambiguous or
unknown references, a file the user cannot read."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from conftest import (
    as_other,
    one_line_error,
)


def test_newer_schema_store_refuses_before_starting_the_workload(cli):
    from roar.record import store as S

    st = S.Store(cli.home)
    st.meta_put("schema", str(S.SCHEMA_VERSION + 1).encode())
    st.close()
    marker = cli.cwd / "started"
    line = one_line_error(cli("run", "--", "touch", marker, check=False))
    assert "newer than this roar" in line and "upgrade roar" in line
    assert not marker.exists()
    assert "newer than this roar" in one_line_error(cli("log", check=False))


def test_ambiguous_and_unknown_references(cli):
    from roar.record.ids import new_run_id
    from roar.record.store import Store

    a, b = new_run_id(), new_run_id()
    assert a[:4] == b[:4]  # time-ordered: the same leading characters
    with Store(cli.home) as st:
        for rid in (a, b):
            st.put_run({"id": rid, "status": "finished", "command": ["x"], "started_at": "t"})
    for cmd in ("show", "trace", "inputs", "outputs"):
        assert "ambiguous" in one_line_error(cli(cmd, a[:4], check=False))
    assert "ambiguous" in one_line_error(cli("diff", a[:4], b, check=False))
    assert cli.json("show", b[:20].lower())["id"] == b  # a unique prefix, any case
    for cmd in ("inputs", "outputs"):
        assert "is not a run id" in one_line_error(cli(cmd, "ZZZZ", check=False))
    assert "is not a run id" in one_line_error(cli("diff", "ZZZZ", a, check=False))
    assert "is not a run id" in one_line_error(cli("show", "deadbeef", check=False))
    line = one_line_error(cli("show", "/etc/hostname", check=False))
    assert "never read or written by a recorded run" in line


def test_unreadable_file_as_another_user(foreign_python, other_user):
    from roar.record.store import Store

    base = Path(tempfile.mkdtemp(prefix="roar-unreadable-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        secret = base / "root-only"
        secret.write_text("root's data\n")
        os.chmod(secret, 0o600)
        hidden = base / "private"
        hidden.mkdir(mode=0o700)
        (hidden / "f").write_text("x")
        Store(base / "home").close()  # the user's own (empty) store
        for d, _, files in os.walk(base / "home"):
            os.chown(d, other_user.pw_uid, other_user.pw_gid)
            for f in files:
                os.chown(os.path.join(d, f), other_user.pw_uid, other_user.pw_gid)

        line = one_line_error(as_other(other_user, foreign_python, "show", secret,
                                       home=base / "home"))
        assert "cannot hash" in line and "ermission denied" in line
        line = one_line_error(as_other(other_user, foreign_python, "show", hidden / "f",
                                       home=base / "home"))
        assert "is not a run id" in line  # cannot even see that it exists
    finally:
        shutil.rmtree(base, ignore_errors=True)
