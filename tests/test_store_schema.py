"""The store's schema marker (roar/record/store.py): written when missing,
refused when newer or unreadable, and a one-line error either way."""

from __future__ import annotations

import pytest

from roar.record import store as S
from roar.record.ids import new_run_id
from roar.record.store import Store, StoreError


def _marker(home) -> bytes | None:
    with Store(home) as st:
        return st.meta_get("schema")


def test_a_new_store_is_marked_with_this_schema(tmp_path):
    assert _marker(tmp_path) == str(S.SCHEMA_VERSION).encode()


def test_a_missing_marker_is_written_and_the_runs_stay(tmp_path):
    rid = new_run_id()
    with Store(tmp_path) as st:
        st.put_run({"id": rid, "status": "finished", "command": ["x"]})
        st.write(lambda txn: txn.delete(b"schema", db=st.dbs["meta"]))
        assert st.meta_get("schema") is None
    with Store(tmp_path) as st:
        assert st.meta_get("schema") == str(S.SCHEMA_VERSION).encode()
        assert st.get_run(rid)["id"] == rid


@pytest.mark.parametrize("marker", [b"1.5", b"", b"one", b"\xff"])
def test_a_corrupt_marker_is_refused(tmp_path, marker):
    with Store(tmp_path) as st:
        st.meta_put("schema", marker)
    with pytest.raises(StoreError, match=r"is corrupt \(bad schema marker\)") as e:
        Store(tmp_path)
    assert "\n" not in str(e.value) and str(tmp_path / "store") in str(e.value)


def test_a_newer_marker_is_refused_naming_both_versions(tmp_path):
    with Store(tmp_path) as st:
        st.meta_put("schema", str(S.SCHEMA_VERSION + 1).encode())
    with pytest.raises(StoreError) as e:
        Store(tmp_path)
    msg = str(e.value)
    assert f"has schema {S.SCHEMA_VERSION + 1}, newer than this roar understands " \
           f"({S.SCHEMA_VERSION}): upgrade roar" in msg


@pytest.mark.parametrize("older", [0, S.SCHEMA_VERSION - 1, S.SCHEMA_VERSION])
def test_this_or_an_older_marker_opens(tmp_path, older):
    with Store(tmp_path) as st:
        st.meta_put("schema", str(older).encode())
    with Store(tmp_path, readonly=True) as st:
        assert st.meta_get("schema") == str(older).encode()  # a reader rewrites nothing
    with Store(tmp_path) as st:
        # a writer may add rows an older roar would misread (schema 2's file sets):
        # the marker now keeps that roar out
        assert st.meta_get("schema") == str(S.SCHEMA_VERSION).encode()
