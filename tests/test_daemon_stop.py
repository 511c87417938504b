"""roard stopped while a run is active: the run is interrupted and stored, its
workload and cgroup gone."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import (
    PY,
    Roar,
    alive,
    cgroup_of,
    finish,
    last_run,
    start,
    start_roard,
    stop_roard,
    wait_for,
)


@pytest.mark.capture
def test_daemon_stop_with_a_run_active_interrupts_it(tmp_path):
    base = Path(tempfile.mkdtemp(prefix="roard-stop-", dir="/tmp"))
    proc, sock = start_roard(base)
    client = None
    try:
        work = tmp_path / "work"
        work.mkdir()
        r = Roar(tmp_path / "home", sock, work)
        client = start(r, PY, "-c", "import os, time\nopen('pid', 'w').write(str(os.getpid()))"
                                    "\ntime.sleep(120)\n")
        wait_for(work / "pid", client)
        time.sleep(0.2)
        workload = int((work / "pid").read_text())
        cg = cgroup_of(workload)
        proc.terminate()
        try:
            proc.wait(8)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("roard did not stop within 8 s of SIGTERM")
        rc, err = finish(client, 20)
        assert rc != 0 and "Traceback" not in err, err
        assert not alive(workload) and not cg.exists()
        doc = last_run(r)
        assert doc["status"] == "interrupted" and doc["complete"] is False
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait()
        stop_roard(proc, sock)
        shutil.rmtree(base, ignore_errors=True)


def test_the_probes_are_detached_all_at_once():
    """Closing a tracepoint's perf event waits for RCU grace periods: one after
    another, roard's ~80 took 3-7 s to detach (its stop, its idle detach), so
    Probes.detach runs them at once. Each job here waits for all the others:
    it only completes when they all run together; an error is raised after
    every job has run."""
    import threading

    from roar.capture.probes import _all_at_once

    n = 40
    barrier = threading.Barrier(n, timeout=30)
    done = []

    def job(i):
        barrier.wait()
        done.append(i)
        if i == 7:
            raise OSError("detach failed")

    with pytest.raises(OSError, match="detach failed"):
        _all_at_once([(job, (i,)) for i in range(n)])
    assert sorted(done) == list(range(n))


def test_the_tls_library_list_is_asked_again_only_when_the_linker_cache_changes(
        tmp_path, monkeypatch):
    """Each attach after an idle detach wants the host's libssl list: `ldconfig
    -p` (a fork of roard) runs once, and again only when the dynamic linker's
    cache file changes; a listed library that is gone is not probed."""
    import os

    from roar.capture import probes

    lib = tmp_path / "libssl.so.3"
    lib.write_bytes(b"")
    cache = tmp_path / "ld.so.cache"
    cache.write_bytes(b"1")
    asked = []

    class Out:
        def read(self):
            return f"\tlibssl.so.3 (libc6,x86-64) => {lib}\n"

    def popen(cmd):
        asked.append(cmd)
        return Out()

    monkeypatch.setattr(probes, "LD_CACHE", str(cache))
    monkeypatch.setattr(probes, "_tls_seen", None)
    monkeypatch.setattr(os, "popen", popen)
    assert probes.tls_libraries() == [str(lib)]
    assert probes.tls_libraries() == [str(lib)]
    assert len(asked) == 1
    cache.write_bytes(b"22")  # ldconfig rewrote it
    assert probes.tls_libraries() == [str(lib)]
    assert len(asked) == 2
    lib.unlink()
    assert probes.tls_libraries() == []
    assert len(asked) == 2


def test_roard_failing_to_start_says_why_in_one_line(tmp_path):
    """roard failing in serve() before its ring-buffer poller started (here: the
    store's code cannot be imported, as with an interpreter outside roar's venv)
    says that error, not the clean-up's (joining the poller it never started
    raised "cannot join thread before it is started" over it)."""
    sock = tmp_path / "roard.sock"
    code = ("import sys, roar.daemon as d\n"
            "def boom():\n"
            "    raise ModuleNotFoundError(\"No module named 'lmdb'\")\n"
            "d._warm_up_store_code = boom\n"
            "d.main([])\n")
    p = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "ROAR_SOCKET": str(sock),
                            "ROAR_HOME": str(tmp_path / "home")})
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr and "cannot join" not in p.stderr, p.stderr
    assert p.stderr.splitlines()[-1] == "roard: No module named 'lmdb'", p.stderr
    assert not sock.exists()
