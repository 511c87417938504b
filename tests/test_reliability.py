"""Reliability and security (issue 4): faults, load, special and bad input, secrets,
store permissions, no network.

What other files already prove is not repeated here: socket permissions, protocol
fuzzing, foreign-process refusal, single instance and daemon kill -9 (test_daemon),
kill -9 of the store writer and corrupt stores (test_store, test_cli), SIGTERM
forwarding, concurrent pairs and exit codes (test_capture), 1,000 children
(test_capture_stress). Measured event rates are printed (run with -s to see them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import REPO, Roar, one_line_error, xxh128

PY = sys.executable


# -- helpers -----------------------------------------------------------------------


def roar_cmd(*args) -> list[str]:
    return [PY, "-m", "roar", *map(str, args)]


def last_run(roar) -> dict:
    last = roar.json("log", "-n", "1")[0]
    return roar.json("show", last["id"])


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"roar run exited {proc.returncode} early: {err}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def start(roar, *cmd, name=None) -> subprocess.Popen:
    extra = ["--name", name] if name else []
    return subprocess.Popen(roar_cmd("run", *extra, "--", *cmd), cwd=roar.cwd, env=roar.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err.decode(errors="replace")




def duration_s(doc: dict) -> float:
    def t(s):
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

    return t(doc["ended_at"]) - t(doc["started_at"])


def alive(pid: int) -> bool:
    """A process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def cgroup_of(pid: int) -> Path:
    """The cgroup v2 directory a live process is in."""
    from roar.capture.cgroups import cgroup2_mount

    with open(f"/proc/{pid}/cgroup") as f:
        rel = next(line[3:].strip() for line in f if line.startswith("0::"))
    return cgroup2_mount() / rel.lstrip("/")


# == faults: signals to roar run ========================================================

SLEEPER = "import time; open('ready', 'w').close(); time.sleep(60)"


@pytest.mark.capture
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=["SIGINT", "SIGHUP"])
def test_signal_to_roar_is_forwarded_and_run_stored_interrupted(roar, sig):
    proc = start(roar, PY, "-c", SLEEPER)
    wait_for(roar.cwd / "ready", proc)
    t0 = time.monotonic()
    proc.send_signal(sig)
    code, err = finish(proc, 30)
    assert time.monotonic() - t0 < 10, "the workload did not get the signal"
    assert code == 128 + sig, err
    doc = last_run(roar)
    assert doc["status"] == "interrupted" and doc["signal"] == sig
    assert doc["exit_code"] == 128 + sig and doc["complete"] is False
    assert "run was interrupted" in doc["incomplete_reasons"]


@pytest.mark.capture
def test_workload_handling_sigint_keeps_its_own_exit_status(roar):
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGINT, lambda *a: sys.exit(3))\n"
            "open('ready', 'w').close()\n"
            "time.sleep(60)\n")
    proc = start(roar, PY, "-c", code)
    wait_for(roar.cwd / "ready", proc)
    proc.send_signal(signal.SIGINT)
    rc, err = finish(proc, 30)
    assert rc == 3, err
    doc = last_run(roar)
    assert doc["status"] == "interrupted" and doc["exit_code"] == 3 and doc["signal"] is None
    assert doc["complete"] is False


@pytest.mark.capture
def test_sigkill_of_client_ends_the_whole_workload_and_its_cgroup(roar):
    """Policy (README, roard): when the `roar run` client disappears, roard ends its
    workload at once, children included, and removes the run cgroup; the record
    written as running at start reads as interrupted at once. (test_daemon checks
    the record roard then rebuilds from its spool.)"""
    w = roar.cwd
    code = ("import os, subprocess, time\n"
            "child = subprocess.Popen(['sleep', '120'])\n"
            "open('pids', 'w').write(f'{os.getpid()} {child.pid}')\n"
            "time.sleep(120)\n")
    proc = start(roar, PY, "-c", code)
    wait_for(w / "pids", proc)
    time.sleep(0.3)
    pids = [int(x) for x in (w / "pids").read_text().split()]
    assert len(pids) == 2 and all(alive(p) for p in pids)
    cg = cgroup_of(pids[0])
    run_id = roar.json("log", "-n", "1")[0]["id"]
    assert cg.name.endswith(run_id), cg
    proc.kill()
    proc.wait()
    assert roar.json("log", "-n", "1")[0]["status"] == "interrupted"
    deadline = time.monotonic() + 30
    while any(alive(p) for p in pids) or cg.exists():
        assert time.monotonic() < deadline, (
            f"left behind: processes {[p for p in pids if alive(p)]}, cgroup {cg.exists()}")
        time.sleep(0.1)


@pytest.mark.capture
def test_signal_to_roar_reaches_the_workloads_children(roar):
    """The issue asks for forwarding to the workload's process group, as a terminal's
    Ctrl-C would: a child of the first process gets the SIGINT too."""
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import signal, time\\n"
            "signal.signal(signal.SIGINT, lambda *a: (open(\"child-got-int\", \"w\").close(), "
            "exit(0)))\\nopen(\"ready\", \"w\").close()\\ntime.sleep(4)'])\n"
            "try:\n    child.wait()\n"
            "except KeyboardInterrupt:\n    child.wait()\n")
    proc = start(roar, PY, "-c", code)
    wait_for(roar.cwd / "ready", proc)
    proc.send_signal(signal.SIGINT)
    rc, err = finish(proc, 30)
    assert (roar.cwd / "child-got-int").exists(), "the workload's child never got the SIGINT"
    doc = last_run(roar)
    assert doc["status"] == "interrupted"


@pytest.mark.capture
def test_sigkill_of_embedded_client_leaves_nothing_behind(tmp_path):
    """Embedded mode (root, no daemon): the probes live in `roar run` itself. When it
    is killed outright the workload must not be left running untraced in a stale
    run cgroup."""
    work = tmp_path / "work"
    work.mkdir()
    r = Roar(tmp_path / "home", None, work)
    code = ("import os, time\n"
            "open('pid', 'w').write(str(os.getpid()))\n"
            "time.sleep(120)\n")
    proc = start(r, PY, "-c", code)
    cg = None
    try:
        wait_for(work / "pid", proc, timeout=120)
        time.sleep(0.2)
        pid = int((work / "pid").read_text())
        cg = cgroup_of(pid)
        assert cg.name == r.json("log", "-n", "1")[0]["id"], cg
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 5  # roard needs well under a second
        while (alive(pid) or cg.exists()) and time.monotonic() < deadline:
            time.sleep(0.1)
        left_pid, left_cg = alive(pid), cg.exists()
    finally:
        from roar.capture.cgroups import kill_all, remove

        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if cg is not None and cg.exists():
            kill_all(cg)
            remove(cg)
    assert not left_pid and not left_cg, f"process alive: {left_pid}, cgroup left: {left_cg}"
    assert r.json("log", "-n", "1")[0]["status"] == "interrupted"


# == faults: a full disk under ROAR_HOME =================================================


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


# == load: event storms ===================================================================

STORM_C = r"""
/* storm close N: close(-1) N times (N close events, no paths, no files)
 * storm open PATH RATE SECS: open+close PATH at RATE per second for SECS;
 * both print how many calls they made and how long that took */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    double t0 = now();
    long done = 0;
    if (argc == 3 && !strcmp(argv[1], "close")) {
        long n = atol(argv[2]);
        for (; done < n; done++)
            close(-1);
    } else if (argc == 5 && !strcmp(argv[1], "open")) {
        double rate = atof(argv[3]), secs = atof(argv[4]);
        for (;;) {
            double t = now() - t0;
            if (t >= secs)
                break;
            long due = (long)(t * rate);
            if (done >= due) {
                usleep(100);
                continue;
            }
            for (; done < due; done++)
                close(open(argv[2], O_RDONLY));
        }
    } else {
        fprintf(stderr, "usage: storm close N | storm open PATH RATE SECS\n");
        return 2;
    }
    printf("%ld %.6f\n", done, now() - t0);
    return 0;
}
"""


@pytest.fixture(scope="module")
def storm(tmp_path_factory):
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the load generator")
    d = tmp_path_factory.mktemp("storm")
    (d / "storm.c").write_text(STORM_C)
    subprocess.run(["gcc", "-O2", "-o", str(d / "storm"), str(d / "storm.c")], check=True)
    return str(d / "storm")


def report(what: str, doc: dict, produced_s: float | None = None) -> None:
    n = doc["counts"]["events"]
    line = (f"\n[rate] {what}: {n} events, lost {doc['lost_events']}, "
            f"{n / duration_s(doc):,.0f} events/s over the whole run ({duration_s(doc):.1f}s)")
    if produced_s:
        line += f", {n / produced_s:,.0f} events/s while the workload made them"
    print(line)


def assert_exact_accounting(doc: dict, expected: int) -> None:
    """Every event arrived, or the run says how many did not: exactly."""
    events, lost = doc["counts"]["events"], doc["lost_events"]
    assert events + lost == expected, (events, lost, expected)
    if lost:
        assert doc["complete"] is False
        assert any(f"{lost} kernel events lost" in r for r in doc["incomplete_reasons"])
    else:
        assert doc["complete"] is True, doc["incomplete_reasons"]


@pytest.mark.capture
def test_million_event_run_is_complete_or_counts_exactly_what_it_lost(roar, storm):
    _, base = roar.run(storm, "close", "0")
    p, doc = roar.run(storm, "close", "1000000", timeout=300)
    n, secs = p.stdout.split()
    assert int(n) == 1_000_000
    assert_exact_accounting(doc, base["counts"]["events"] + 1_000_000)
    report("1,000,000 close() calls", doc, float(secs))


@pytest.mark.capture
def test_six_thousand_short_lived_children_all_recorded(roar):
    _, doc = roar.run("sh", "-c", "for i in $(seq 6000); do /bin/true; done", timeout=300)
    if doc["lost_events"]:
        assert doc["complete"] is False
        return
    trues = [p for p in doc["processes"] if p["argv"] == ["/bin/true"]]
    assert len(trues) == 6000 and all(p["exit_code"] == 0 for p in trues)
    assert len(doc["processes"]) == 6002  # sh, seq and the 6,000
    assert doc["complete"] is True, doc["incomplete_reasons"]
    report("6,000 children", doc)


@pytest.mark.capture
def test_open_storm_of_two_processes(roar, storm):
    """Two processes each aiming at 50,000 open+close per second for 2 s."""
    w = roar.cwd
    (w / "f").write_text("x")
    script = f"{storm} open f {{rate}} 2 > a & {storm} open f {{rate}} 2 > b; wait"
    _, base = roar.run("sh", "-c", script.format(rate=0))
    _, doc = roar.run("sh", "-c", script.format(rate=50000), timeout=300)
    made = [(w / n).read_text().split() for n in ("a", "b")]
    opens = sum(int(m[0]) for m in made)
    assert opens > 50_000, made
    assert_exact_accounting(doc, base["counts"]["events"] + 2 * opens)
    print(f"\n[rate] open storm: {opens / 2:,.0f} opens/s by 2 processes")
    report("open storm", doc, max(float(m[1]) for m in made))
    assert {i["path"] for i in doc["inputs"]} == set()  # opened, never read


def _daemon_request(sock: Path, req: dict):
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(sock))
    s.sendall(json.dumps(req).encode() + b"\n")
    return s, s.makefile("rb", buffering=1 << 20)


@pytest.mark.capture
def test_roard_delivers_a_backlog_at_full_speed(roard, tmp_path, storm):
    """The raw protocol, read as fast as possible: how quickly roard hands a run's
    records to its client once the workload has ended."""
    from roar.capture import protocol
    from roar.record.ids import new_run_id

    n = 200_000
    work = subprocess.Popen(["sh", "-c", f"read go; exec {storm} close {n}"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    s, f = _daemon_request(roard, {"op": "trace", "pid": work.pid, "run_id": new_run_id(),
                                   "home": str(tmp_path / "home"), "root_fds": {}})
    try:
        kind, reply = protocol.read_frame(f)
        assert json.loads(reply)["ok"], reply
        work.communicate(b"go\n", timeout=60)
        s.sendall(b'{"op": "root_exited", "linger": 0}\n')
        t0 = time.monotonic()
        events = 0
        while True:
            kind, payload = protocol.read_frame(f)
            if kind != protocol.EVENT:
                break
            events += 1
        elapsed = time.monotonic() - t0
        end = json.loads(payload)
        s.sendall(b'{"op": "stored"}\n')
    finally:
        f.close()
        s.close()
    assert events + end["lost"] >= n
    print(f"\n[rate] roard delivered {events} records in {elapsed:.2f}s "
          f"({events / elapsed:,.0f}/s) after the workload ended")
    assert elapsed < 3, f"{events} records took {elapsed:.1f}s"


@pytest.mark.capture
def test_ring_buffer_overflow_is_counted_exactly(roard, tmp_path, storm):
    """3,000,000 close events as fast as one core makes them outrun roard's drain and
    overflow the 64 MiB ring buffer: what arrives plus what roard reports lost is
    exactly what the workload emitted. (Read over the raw protocol while the run is
    active, so roard's delivery speed after a run ends does not matter here.)"""
    import threading

    from roar.capture import protocol
    from roar.record.ids import new_run_id

    def burst(n: int) -> tuple[int, int, float]:
        work = subprocess.Popen(["sh", "-c", f"read go; exec {storm} close {n}"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        s, f = _daemon_request(roard, {"op": "trace", "pid": work.pid, "run_id": new_run_id(),
                                       "home": str(tmp_path / "home"), "root_fds": {}})
        got = {"events": 0, "last": time.monotonic(), "end": None}

        def read():
            while True:
                kind, payload = protocol.read_frame(f)
                if kind != protocol.EVENT:
                    got["end"] = json.loads(payload)
                    return
                got["events"] += 1
                got["last"] = time.monotonic()

        try:
            assert json.loads(protocol.read_frame(f)[1])["ok"]
            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            out, _ = work.communicate(b"go\n", timeout=120)
            deadline = time.monotonic() + 300
            while time.monotonic() - got["last"] < 0.5:  # until the backlog is in
                assert time.monotonic() < deadline
                time.sleep(0.1)
            s.sendall(b'{"op": "root_exited", "linger": 0}\n')
            reader.join(120)
            s.sendall(b'{"op": "stored"}\n')
        finally:
            f.close()
            s.close()
        return got["events"], got["end"]["lost"], float(out.split()[1])

    base, base_lost, _ = burst(0)
    assert base_lost == 0
    n = 3_000_000
    events, lost, secs = burst(n)
    print(f"\n[rate] {n:,} close() calls in {secs:.2f}s ({n / secs:,.0f}/s): "
          f"{events:,} delivered, {lost:,} lost")
    assert events + lost == base + n
    if lost == 0:
        pytest.skip("this machine drained a 3,000,000-event burst without loss")


def test_lost_events_make_the_run_incomplete(tmp_path):
    """What roard reports lost is stored on the run: incomplete, with the count."""
    from roar.record.ids import new_run_id
    from roar.record.recorder import RunRecorder
    from roar.record.store import Store

    with Store(tmp_path / "home") as st:
        rid = new_run_id()
        run = {"id": rid, "status": "running", "command": ["x"], "cwd": str(tmp_path),
               "git": None}
        st.put_run(run)
        RunRecorder(st, run, os.getpid(), {}).finish(0, False, 1234)
        stored = st.get_run(rid)
    assert stored["lost_events"] == 1234 and stored["complete"] is False
    assert stored["incomplete_reasons"][0] == "1234 kernel events lost (ring buffer full)"


@pytest.mark.capture
def test_eight_concurrent_runs_are_kept_apart(roar):
    """Eight runs active at once (a barrier makes sure), each reading and writing its
    own files with a child process: each run holds exactly its own."""
    w = roar.cwd
    n = 8
    for i in range(n):
        (w / f"in{i}").write_text(f"input of run {i}\n")
    code = ("import os, subprocess, sys, time\n"
            "i, n = sys.argv[1], int(sys.argv[2])\n"
            "data = open(f'in{i}').read()\n"
            "open(f'ready{i}', 'w').write(i)\n"
            "deadline = time.monotonic() + 120\n"
            "while not all(os.path.exists(f'ready{k}') for k in range(n)):\n"
            "    assert time.monotonic() < deadline\n"
            "    time.sleep(0.02)\n"
            "with open(f'mid{i}', 'w') as out:\n"
            "    subprocess.run(['cat', f'in{i}'], stdout=out, check=True)\n"
            "open(f'out{i}', 'w').write(data.upper())\n")
    procs = [start(roar, PY, "-c", code, str(i), str(n), name=f"r{i}") for i in range(n)]
    for pr in procs:
        rc, err = finish(pr, 180)
        assert rc == 0, err
    runs = {e["name"]: e["id"] for e in roar.json("log", "-n", str(n))}
    assert sorted(runs) == [f"r{i}" for i in range(n)]
    spans = []
    for i in range(n):
        doc = roar.json("show", runs[f"r{i}"])
        assert {(x["path"], x["hash"]) for x in doc["inputs"]} == {
            (str(w / f"in{i}"), xxh128(w / f"in{i}"))}
        assert {(x["path"], x["hash"]) for x in doc["outputs"]} == {
            (str(w / f"{k}{i}"), xxh128(w / f"{k}{i}")) for k in ("ready", "mid", "out")}
        argvs = [p["argv"] for p in doc["processes"]]
        assert len(argvs) == 2 and ["cat", f"in{i}"] in argvs, argvs
        assert doc["complete"] is True, doc["incomplete_reasons"]
        spans.append((doc["started_at"], doc["ended_at"]))
    assert max(a for a, _ in spans) < min(b for _, b in spans), "the runs did not overlap"


# == special inputs =======================================================================

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


@pytest.mark.capture
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


def test_json_output_is_valid_utf8_for_non_utf8_names(roar):
    src, dst, run_id = odd_run(roar)
    for args in (("show", run_id), ("trace", run_id), ("show", dst)):
        out = raw(roar, *args, "--json").stdout
        out.decode("utf-8")  # strict: what jq or any JSON parser needs
        strings = set(_strings(json.loads(out)))
        assert os.fsdecode(src) in strings or os.fsdecode(dst) in strings


@pytest.mark.capture
def test_input_deleted_right_after_reading_is_vanished_or_rightly_hashed(roar):
    """Inputs deleted microseconds after their read may be gone before they are
    hashed: each is still listed, with its true hash or as vanished, never a wrong one."""
    w = roar.cwd
    n = 20
    expected = {}
    for i in range(n):
        (w / f"v{i}").write_text(f"version {i} of a file about to vanish\n")
        expected[str(w / f"v{i}")] = xxh128(w / f"v{i}")
    _, doc = roar.run(PY, "-c", f"import os\nfor i in range({n}):\n"
                                "    open(f'v{i}').read()\n    os.unlink(f'v{i}')\n")
    got = {i["path"]: i for i in doc["inputs"]}
    assert sorted(got) == sorted(expected)
    for path, e in got.items():
        assert (e["status"], e["hash"]) in (("ok", expected[path]), ("vanished", None)), e
    vanished = sum(1 for e in got.values() if e["status"] == "vanished")
    print(f"\n[vanish] {vanished} of {n} inputs vanished before they were hashed")
    if vanished:
        assert doc["complete"] is False
        assert f"{vanished} input(s) without a verified content hash" in doc[
            "incomplete_reasons"]


@pytest.mark.capture
def test_input_deleted_and_recreated_keeps_its_first_version(roar):
    w = roar.cwd
    (w / "data.txt").write_text("first version\n")
    v1 = xxh128(w / "data.txt")
    _, doc = roar.run(PY, "-c", "import os, time\nopen('data.txt').read()\ntime.sleep(0.3)\n"
                                "os.unlink('data.txt')\nopen('data.txt', 'w').write('new')\n")
    assert [(o["path"], o["hash"]) for o in doc["outputs"]] == [
        (str(w / "data.txt"), xxh128(w / "data.txt"))]
    assert [(i["path"], i["hash"]) for i in doc["inputs"]] == [(str(w / "data.txt"), v1)]


@pytest.mark.capture
@pytest.mark.parametrize("swap", ["rename", "symlink"])
def test_input_replaced_right_after_reading_never_gets_the_new_hash(roar, swap):
    """A busy run (40,000 events first) keeps roar's consumer behind, as a data loader
    would: the input is replaced long before its open event is handled and hashed."""
    w = roar.cwd
    (w / "a.txt").write_text("what the run read\n")
    (w / "b.txt").write_text("what replaced it\n")
    busy = "import os\nfor _ in range(20000):\n    os.close(os.open('/dev/null', 0))\n"
    if swap == "rename":
        shutil.copy(w / "a.txt", w / "data")
        code = busy + "open('data').read()\nos.replace('b.txt', 'data')\n"
    else:
        os.symlink("a.txt", w / "data")
        code = busy + ("open('data').read()\nos.symlink('b.txt', 'tmp')\n"
                       "os.replace('tmp', 'data')\n")
    read, replaced = xxh128(w / "a.txt"), xxh128(w / "b.txt")
    _, doc = roar.run(PY, "-c", code)
    [inp] = [i for i in doc["inputs"] if i["path"] == str(w / "data")]
    assert inp["hash"] != replaced, "the input got the hash of the file that replaced it"
    assert (inp["status"], inp["hash"]) in (("ok", read), ("unverified", None))


@pytest.mark.capture
def test_fifo_socket_and_dev_files_are_not_hashed_and_do_not_hang(roar):
    """A FIFO fed from outside the run is an input without a hash (special), and
    hashing it neither blocks nor steals its data; a Unix socket is a connect, not a
    file; /dev files are pseudo files, never inputs or outputs."""
    import threading

    w = roar.cwd
    os.mkfifo(w / "fifo")

    def feed():
        with open(w / "fifo", "w") as f:
            f.write("through the fifo\n")

    threading.Thread(target=feed, daemon=True).start()
    code = ("import socket\n"
            "print(open('fifo').read().strip())\n"
            "srv = socket.socket(socket.AF_UNIX); srv.bind('sock'); srv.listen(1)\n"
            "c = socket.socket(socket.AF_UNIX); c.connect('sock'); c.send(b'x')\n"
            "open('/dev/urandom', 'rb').read(16); open('/dev/zero', 'rb').read(16)\n"
            "open('/dev/null', 'w').write('x')\n")
    p, doc = roar.run(PY, "-c", code, timeout=60)
    assert p.stdout.strip() == "through the fifo"
    assert [(i["path"], i["hash"], i["status"]) for i in doc["inputs"]] == [
        (str(w / "fifo"), None, "special")]
    assert doc["outputs"] == []
    assert {"family": "unix", "address": str(w / "sock")}.items() <= doc["connects"][0].items()
    pseudo = {f["path"]: f["kind"] for p in roar.json("trace", doc["id"], "--all")["processes"]
              for f in p["files"] if f["path"].startswith("/dev/")}
    assert pseudo.get("/dev/urandom") == "pseudo" and pseudo.get("/dev/zero") == "pseudo"
    assert doc["complete"] is True, doc["incomplete_reasons"]


def _pending_filler(run_id: str) -> int | None:
    """The pid of the background job hashing a run's pending files, if running."""
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"roar.record.pending" in argv and run_id.encode() in argv:
            return int(pid)
    return None


def _zeros_hash(size: int) -> str:
    import xxhash

    h = xxhash.xxh3_128()
    zeros = bytes(1 << 24)
    for _ in range(size // len(zeros)):
        h.update(zeros)
    return h.hexdigest()


@pytest.mark.capture
def test_huge_input_hash_does_not_hold_up_the_end_of_the_run(roar):
    """A 20 GiB (sparse) input read in part: the end of `roar run` waits for its hash
    at most ROAR_HASH_WAIT seconds (default 5; 2 here) and the record says pending."""
    big = roar.cwd / "big"
    with open(big, "wb") as f:
        f.truncate(20 << 30)
    bound = 2.0
    t0 = time.monotonic()
    p = roar("run", "--", "sh", "-c", "head -c 1M big > /dev/null",
             env=roar.env(ROAR_HASH_WAIT=str(bound), ROAR_TIMING="1"))
    wall = time.monotonic() - t0
    run_id = roar.json("log", "-n", "1")[0]["id"]
    filler = _pending_filler(run_id)
    if filler is not None:  # hashing 20 GiB is not this test's business
        os.kill(filler, signal.SIGKILL)
    waited = float(next(line.split()[-1].rstrip("s") for line in p.stderr.splitlines()
                        if "waits for hashes" in line))
    print(f"\n[huge] the end of roar run waited {waited:.2f}s for the hash of a 20 GiB "
          f"input (bound {bound:g}s); roar run took {wall:.1f}s in all")
    assert waited < bound + 0.5
    doc = roar.json("show", run_id)
    [inp] = doc["inputs"]
    assert inp["path"] == str(big) and inp["status"] == "pending" and inp["hash"] is None
    assert doc["complete"] is False
    assert any("still being computed" in r for r in doc["incomplete_reasons"])


@pytest.mark.capture
@pytest.mark.parametrize("changed", [False, True], ids=["unchanged", "changed-after-run"])
def test_pending_hash_is_filled_in_later_or_unverified(roar, changed):
    """The background job fills a pending hash in, unless the file changed after the
    run used it: then the input is unverified, never given the new content's hash."""
    big = roar.cwd / "big"
    size = 1 << 30
    with open(big, "wb") as f:
        f.truncate(size)
    roar("run", "--", "sh", "-c", "head -c 1M big > /dev/null",
         env=roar.env(ROAR_HASH_WAIT="0"))
    if changed:
        with open(big, "r+b") as f:
            f.write(b"changed")
    run_id = roar.json("log", "-n", "1")[0]["id"]
    expected = _zeros_hash(size)
    deadline = time.monotonic() + 120
    while True:
        doc = roar.json("show", run_id)
        [inp] = doc["inputs"]
        if inp["status"] != "pending":
            break
        assert time.monotonic() < deadline, "the pending hash was never filled in"
        time.sleep(0.5)
    print(f"\n[pending] {'changed' if changed else 'unchanged'}: {inp['status']}")
    if changed:
        assert (inp["status"], inp["hash"]) in (("unverified", None), ("ok", expected)), inp
        assert doc["complete"] is (inp["status"] == "ok")
    else:
        assert (inp["status"], inp["hash"]) == ("ok", expected)
        assert doc["complete"] is True, doc["incomplete_reasons"]


# == bad input ============================================================================




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


def git(cwd, *args):
    subprocess.run(["git", "-c", "user.email=t@e", "-c", "user.name=t", *args], cwd=cwd,
                   check=True, capture_output=True)


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
    assert p.returncode == 2 and "Traceback" not in p.stderr and not marker.exists()
    first = p.stderr.splitlines()[0]
    assert first.startswith("roar: ") and "has no commits yet" in first and "--allow-dirty" in first
    assert "untracked: train.py" in p.stderr
    p = roar("run", "--allow-dirty", "--", PY, "train.py")
    doc = last_run(roar)
    assert doc["git"]["commit"] is None and doc["git"]["dirty"] is True
    assert doc["git"]["untracked"] == {"train.py": xxh128(w / "train.py")}


# == a daemon of our own: stop with a run active, other users ===========================


def start_roard(base: Path) -> tuple[subprocess.Popen, Path]:
    from roar.capture.session import daemon_status

    sock = base / "roard.sock"
    env = {**os.environ, "ROAR_SOCKET": str(sock), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([PY, "-m", "roar.daemon"], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(base / "roard.log", "wb"), start_new_session=True)
    deadline = time.monotonic() + 120
    while (daemon_status(sock) or {}).get("pid") != proc.pid:
        assert proc.poll() is None, (base / "roard.log").read_text()
        assert time.monotonic() < deadline, "roard did not start"
        time.sleep(0.1)
    return proc, sock


def stop_roard(proc: subprocess.Popen, sock: Path) -> None:
    """Stop a daemon of ours, whatever state it is in, and remove what it left."""
    from roar.capture.cgroups import cgroup2_mount, kill_all, remove
    from roar.daemon import cgroup_prefix

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    base = cgroup2_mount() / "roar"
    for d in base.glob(cgroup_prefix(sock) + "*") if base.is_dir() else []:
        kill_all(d)
        remove(d)


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


@pytest.fixture(scope="module")
def public_roard():
    """A daemon on a socket other users can reach."""
    base = Path(tempfile.mkdtemp(prefix="roard-pub-", dir="/tmp"))
    os.chmod(base, 0o755)
    proc, sock = start_roard(base)
    yield sock
    stop_roard(proc, sock)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def user_home(other_user):
    home = Path(tempfile.mkdtemp(prefix="roar-user-", dir="/tmp"))
    os.chmod(home, 0o755)
    os.chown(home, other_user.pw_uid, other_user.pw_gid)
    yield home
    shutil.rmtree(home, ignore_errors=True)


def user_roar(user, python, sock: Path, home: Path, *args, wait=True):
    exe, path = python
    argv = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
            exe, "-m", "roar", *map(str, args)]
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": path, "HOME": str(home),
           "ROAR_SOCKET": str(sock), "ROAR_HOME": str(home / ".roar")}
    if not wait:
        return subprocess.Popen(argv, cwd=home, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    return subprocess.run(argv, cwd=home, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.capture
def test_hash_never_uses_root_rights(public_roard, foreign_python, other_user, user_home):
    """An unprivileged user's input is swapped for a symlink to a root-only file before
    roar hashes it: roar hashes as the user, so the root-only content's hash never
    reaches the record (the input is unreadable or unverified instead)."""
    secret = user_home / "root-only"
    secret.write_text("only root may read this\n")
    os.chmod(secret, 0o600)
    mine = user_home / "mine.txt"
    mine.write_text("the user's data\n")
    os.chown(mine, other_user.pw_uid, other_user.pw_gid)
    code = ("import os\nfor _ in range(20000):\n    os.close(os.open('/dev/null', 0))\n"
            "open('mine.txt').read()\nos.symlink('root-only', 'tmp')\n"
            "os.replace('tmp', 'mine.txt')\n")
    p = user_roar(other_user, foreign_python, public_roard, user_home, "run", "--",
                  foreign_python[0], "-c", code)
    assert p.returncode == 0, p.stderr
    run = json.loads(user_roar(other_user, foreign_python, public_roard, user_home, "log",
                               "-n", "1", "--json").stdout)[0]
    doc = json.loads(user_roar(other_user, foreign_python, public_roard, user_home, "show",
                               run["id"], "--json").stdout)
    [inp] = [i for i in doc["inputs"] if i["path"] == str(mine)]
    assert inp["hash"] != xxh128(secret), "root's rights hashed a file the user cannot read"
    assert doc["user"] != "root"


@pytest.mark.capture
def test_killed_unprivileged_client_is_rebuilt_as_its_user(public_roard, foreign_python,
                                                          other_user, user_home):
    """roard rebuilds the run of a killed client with the client's credentials: the
    record lands in the user's store, which stays owned by the user."""
    data = user_home / "in.txt"
    data.write_text("the user's input\n")
    os.chown(data, other_user.pw_uid, other_user.pw_gid)
    client = user_roar(other_user, foreign_python, public_roard, user_home, "run", "--", "sh",
                       "-c", "cat in.txt > out.txt; sleep 60", wait=False)
    try:
        deadline = time.monotonic() + 60
        while not (user_home / "out.txt").exists() or not (user_home / "out.txt").stat().st_size:
            assert client.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        client.kill()  # setpriv execs python: this is the client itself
        client.wait()
    deadline = time.monotonic() + 60
    while True:
        runs = json.loads(user_roar(other_user, foreign_python, public_roard, user_home, "log",
                                    "--json").stdout)
        if runs and runs[0]["complete"] is not None:
            break
        assert time.monotonic() < deadline, runs
        time.sleep(0.2)
    doc = json.loads(user_roar(other_user, foreign_python, public_roard, user_home, "show",
                               runs[0]["id"], "--json").stdout)
    assert doc["status"] == "interrupted" and doc["user"] != "root"
    assert [(i["path"], i["hash"]) for i in doc["inputs"]] == [(str(data), xxh128(data))]
    for d, _, files in os.walk(user_home / ".roar"):
        for name in [".", *files]:
            assert os.stat(os.path.join(d, name)).st_uid == other_user.pw_uid, (d, name)


# == security =============================================================================

SECRETS = {
    "env": "hf_abcdefghijklmnopqrstuvwxyz12",
    "env_value": "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "arg": "sk-abcdefghijklmnopqrstuvwxyz",
    "arg_value": "ghp_zyxwvutsrqponmlkjihgfedcba9876543210",
    "arg_split": "hf_zyxwvutsrqponmlkjihgfedcba98",
}


def secrets_found(home: Path) -> dict[str, list[str]]:
    """Which secrets occur anywhere in the files under home (bytes, any file)."""
    found: dict[str, list[str]] = {}
    for d, _, files in os.walk(home):
        for name in files:
            data = Path(d, name).read_bytes()
            for what, secret in SECRETS.items():
                if secret.encode() in data:
                    found.setdefault(what, []).append(name)
    return found


@pytest.mark.capture
def test_secrets_never_reach_the_store(roar):
    env = roar.env(HF_TOKEN=SECRETS["env"], INNOCENT_NAME=SECRETS["env_value"])
    args = [f"--api-key={SECRETS['arg']}", SECRETS["arg_value"], "--token", SECRETS["arg_split"]]
    p = roar("run", "--", "sh", "-c", 'echo "$@" | wc -c > n; ' + PY + ' -c "pass" "$@"', "sh",
             *args, env=env)
    assert p.returncode == 0
    doc = last_run(roar)
    assert doc["env"]["HF_TOKEN"]["redacted"].startswith("hmac-sha256:")
    assert doc["env"]["INNOCENT_NAME"]["redacted"].startswith("hmac-sha256:")
    shown = json.dumps([doc, roar.json("trace", doc["id"], "--all")])
    leaked = {what for what, s in SECRETS.items() if s in shown}
    assert not leaked, f"shown by roar show/trace: {leaked}"
    assert secrets_found(roar.home) == {}


@pytest.mark.capture
def test_roard_keeps_no_spool_of_a_stored_run(roar, roard):
    """roard spools a run's raw records (argv included) only until the client has
    stored the run, in a directory only root can read."""
    from roar.daemon import cgroup_prefix

    _, doc = roar.run("true")
    spool = roard.parent / "spool"
    assert spool.stat().st_mode & 0o077 == 0
    assert not (spool / f"{cgroup_prefix(roard)}{doc['id']}.spool").exists()


def as_other(user, python, *args, home: Path) -> subprocess.CompletedProcess:
    """The CLI as another OS user, on the store at home."""
    exe, path = python
    return subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                           "--clear-groups", exe, "-m", "roar", *map(str, args)], cwd="/",
                          capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": path, "ROAR_HOME": str(home),
                               "PATH": os.environ["PATH"]})


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


@pytest.mark.capture
def test_roar_works_without_any_network(roar):
    """In a network namespace with no interface up, `roar run`, `log` and `show` work:
    roar needs no network. strace shows roar itself opens no IP socket."""
    if not shutil.which("unshare"):
        pytest.skip("unshare is not installed")
    (roar.cwd / "in.txt").write_text("offline\n")
    netns = ["unshare", "--net", "--"]
    p = subprocess.run([*netns, *roar_cmd("run", "--", "cp", "in.txt", "out.txt")],
                       cwd=roar.cwd, env=roar.env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    log = subprocess.run([*netns, *roar_cmd("log", "--json")], cwd=roar.cwd, env=roar.env(),
                         capture_output=True, text=True, timeout=60)
    run_id = json.loads(log.stdout)[0]["id"]
    show = subprocess.run([*netns, *roar_cmd("show", run_id, "--json")], cwd=roar.cwd,
                          env=roar.env(), capture_output=True, text=True, timeout=60)
    doc = json.loads(show.stdout)
    assert doc["complete"] is True and [o["path"] for o in doc["outputs"]] == [
        str(roar.cwd / "out.txt")]
    if not shutil.which("strace"):
        return
    trace = roar.cwd.parent / "strace.out"
    p = subprocess.run(["strace", "-f", "-qq", "-e", "trace=socket,connect", "-o", str(trace),
                        *roar_cmd("run", "--", "true")], cwd=roar.cwd, env=roar.env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    calls = trace.read_text()
    assert "socket(AF_UNIX" in calls  # what roar does use: roard's socket
    assert "AF_INET" not in calls, [c for c in calls.splitlines() if "AF_INET" in c]



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
    assert p.returncode == 2 and "has no commits yet" in p.stderr
    assert "Traceback" not in p.stderr
    assert not marker.exists()
    assert roar.json("log") == []
    deadline = time.monotonic() + 10
    while set(os.listdir(spool)) != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(os.listdir(spool)) == before
    prefix = cgroup_prefix(roard)
    assert [d for d in os.listdir(cgroup2_mount() / PARENT) if d.startswith(prefix)] == []
