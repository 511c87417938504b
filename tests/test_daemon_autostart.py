"""`roar run` as root with no roard answering starts one (roar/daemon.py,
start_for_run) instead of loading the probes for that run alone: concurrent
runs start one between them, later runs use it, and it exits once it has been
without runs for ROARD_IDLE_EXIT seconds, leaving nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from conftest import REPO, one_line_error, roar_cmd, stop_roard, xxh128

pytestmark = pytest.mark.capture


def _env(tmp_path, **extra) -> dict:
    return {**os.environ, "ROAR_SOCKET": str(tmp_path / "roard.sock"),
            "ROAR_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO), **extra}


def _pid(err: str) -> int | None:
    marker = "roar: started roard (pid "
    for line in err.splitlines():
        if line.startswith(marker):
            return int(line[len(marker):].split(",")[0])
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_run_starts_one_roard_later_runs_use_it_and_it_exits_when_idle(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    data = work / "data.txt"
    data.write_text("rows\n" * 100)
    env = _env(tmp_path, ROAR_START_ROARD="1", ROARD_IDLE_EXIT="4")
    sock = tmp_path / "roard.sock"
    pids: set[int] = set()
    try:
        clients = [subprocess.Popen(roar_cmd("run", "--", "cat", "data.txt"), cwd=work, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                   for _ in range(2)]
        errs = [c.communicate(timeout=300)[1] for c in clients]
        assert [c.returncode for c in clients] == [0, 0], errs
        started = [p for p in map(_pid, errs) if p is not None]
        pids.update(started)
        assert len(started) == 1, errs  # the second run waited for the first one's roard
        later = subprocess.run(roar_cmd("run", "--", "cat", "data.txt"), cwd=work, env=env,
                               capture_output=True, text=True, timeout=120)
        assert later.returncode == 0 and _pid(later.stderr) is None, later.stderr
        log = json.loads(subprocess.run(roar_cmd("log", "--json"), env=env, capture_output=True,
                                        text=True, check=True).stdout)
        assert len(log) == 3
        for entry in log:
            doc = json.loads(subprocess.run(roar_cmd("show", entry["id"], "--json"), env=env,
                                            capture_output=True, text=True, check=True).stdout)
            assert doc["mode"] == "daemon" and doc["complete"], doc["incomplete_reasons"]
            assert [(f["path"], f["hash"]) for f in doc["inputs"]] == [(str(data),
                                                                        xxh128(data))]
        deadline = time.monotonic() + 30
        while _alive(started[0]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(started[0]), "the roard it started did not exit when idle"
        assert not sock.exists()
        assert "ROARD_IDLE_EXIT" in (tmp_path / "roard.log").read_text()
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, 15)
        stop_roard(None, sock)  # its run cgroups, if any were left


def test_own_socket_or_zero_means_embedded_and_a_bad_value_is_one_line(tmp_path,
                                                                       monkeypatch):
    """A ROAR_SOCKET of one's own names a roard one runs oneself: no start
    there unless ROAR_START_ROARD=1. A value roar does not know is refused."""
    if os.geteuid() != 0:
        pytest.skip("only root starts roard")
    env = _env(tmp_path, ROAR_START_ROARD="maybe")
    p = subprocess.run(roar_cmd("run", "--", "true"), env=env, capture_output=True, text=True,
                       timeout=60)
    assert "ROAR_START_ROARD='maybe'" in one_line_error(p)
    from roar.cli import run as cli_run

    monkeypatch.setenv("ROAR_SOCKET", str(tmp_path / "roard.sock"))
    for value in ("0", "auto"):
        monkeypatch.setenv("ROAR_START_ROARD", value)
        assert cli_run._start_roard() is None
    assert not (tmp_path / "roard.sock").exists()
