"""A full disk under ROAR_HOME: a run that cannot be stored is refused at start
with one line, or never claimed complete at its end."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    Roar,
    one_line_error,
)


@pytest.fixture
def tiny_fs(tmp_path):
    """A 2 MiB tmpfs (ROAR_HOME goes there); unmounted afterwards."""
    where = tmp_path / "tiny"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "roar-test", str(where)],
                   check=True)
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def fill(where: Path) -> None:
    """Use up every free byte of the filesystem at where."""
    subprocess.run(["dd", "if=/dev/zero", f"of={where / 'filler'}", "bs=4k"],
                   capture_output=True)
    assert os.statvfs(where).f_bavail == 0


FILL_AND_EXIT = "dd if=/dev/zero of={} bs=4k 2>/dev/null; exit 0"


@pytest.mark.capture
def test_full_disk_at_start_refuses_with_one_line(roar, tiny_fs):
    r = Roar(tiny_fs / "home", roar.sock, roar.cwd)
    r.run("true")  # the store exists, with its redaction key
    fill(tiny_fs)
    marker = roar.cwd / "started"
    p = r("run", "--", "touch", marker, check=False)
    assert not marker.exists(), "the workload ran although its run cannot be stored"
    line = one_line_error(p)
    assert "space" in line and str(tiny_fs / "home") in line


@pytest.mark.capture
def test_full_disk_at_end_never_claims_the_run_complete(roar, tiny_fs):
    """The workload fills the disk under ROAR_HOME: the run cannot be stored at its
    end. It is never shown complete (the record written at start reads as
    interrupted), and once space is freed the store works again."""
    r = Roar(tiny_fs / "home", roar.sock, roar.cwd)
    r.run("true")
    p = r("run", "--", "sh", "-c", FILL_AND_EXIT.format(tiny_fs / "filler"), check=False)
    assert p.returncode != 0, "roar claimed success though the run could not be stored"
    runs = r.json("log")
    assert len(runs) == 2
    assert runs[0]["status"] != "finished" and runs[0]["complete"] is not True
    (tiny_fs / "filler").unlink()
    _, doc = r.run("true")
    assert doc["status"] == "finished" and doc["complete"] is True
    assert len(r.json("log")) == 3
    first = r.json("show", runs[0]["id"])
    assert first["status"] == "interrupted" and first["complete"] is False


@pytest.mark.capture
def test_full_disk_at_end_fails_with_one_line(roar, tiny_fs):
    r = Roar(tiny_fs / "home", roar.sock, roar.cwd)
    r.run("true")
    p = r("run", "--", "sh", "-c", FILL_AND_EXIT.format(tiny_fs / "filler"), check=False)
    line = one_line_error(p)
    assert "space" in line


@pytest.mark.capture
def test_full_disk_at_end_the_rebuilt_run_says_so(roar, tiny_fs):
    """The client could not store the run: it tells roard why, and roard's
    rebuild (tried again until the store takes it) says that, not that roar run
    was killed."""
    r = Roar(tiny_fs / "home", roar.sock, roar.cwd)
    r.run("true")
    p = r("run", "--", "sh", "-c", FILL_AND_EXIT.format(tiny_fs / "filler"), check=False)
    assert p.returncode != 0
    failed = r.json("log")[0]["id"]
    (tiny_fs / "filler").unlink()
    deadline = time.monotonic() + 60
    while (doc := r.json("show", failed))["status"] == "running" or not any(
            "could not store the run" in x for x in doc["incomplete_reasons"]):
        assert time.monotonic() < deadline, doc["incomplete_reasons"]
        time.sleep(0.5)
    assert doc["status"] == "interrupted" and doc["complete"] is False
    why = next(x for x in doc["incomplete_reasons"] if "could not store the run" in x)
    assert "disk space" in why and "rebuilt by roard" in why, why
    assert not any("killed" in x for x in doc["incomplete_reasons"]), doc["incomplete_reasons"]
