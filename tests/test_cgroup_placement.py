"""A traced workload stays inside its job's cgroup (roar/capture/cgroups.py):
real cgroups, as root. A "job" is a cgroup v2 directory (plus a cgroup v1
pids cgroup: on this kind of machine the v1 hierarchies own the controllers,
so v2 limits cannot be set; the v2 device program, placement and cgroup.kill
can). `roar run` is started inside the job as a job manager would."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from conftest import PY, Warm, xxh128

pytestmark = pytest.mark.capture

V1_PIDS = Path("/sys/fs/cgroup/pids")
V1_MEMORY = Path("/sys/fs/cgroup/memory")


def _own_v1(hierarchy: Path) -> Path | None:
    """This process's cgroup in a v1 hierarchy (the job is made below it, so
    whatever limits the test itself runs under still apply)."""
    if not (hierarchy / "cgroup.procs").exists():
        return None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if hierarchy.name in ctrls.split(","):
            return hierarchy / path.lstrip("/")
    return None


def _kill_listed(procs: Path) -> None:
    """SIGKILL every process a cgroup.procs file lists."""
    for pid in procs.read_text().split():
        try:
            os.kill(int(pid), 9)
        except ProcessLookupError:
            pass


class Job:
    """A job cgroup (v2, and v1 pids when mounted); everything in it is killed
    and removed afterwards."""

    def __init__(self):
        from roar.capture.cgroups import cgroup2_mount

        self.name = f"roartest-job-{uuid.uuid4().hex[:8]}"
        self.v2 = cgroup2_mount() / self.name
        self.v2.mkdir()
        self.v1 = V1_PIDS / self.name if (V1_PIDS / "cgroup.procs").exists() else None
        if self.v1 is not None:
            self.v1.mkdir()
        own = _own_v1(V1_MEMORY)
        self.mem = own / self.name if own is not None else None
        if self.mem is not None:
            self.mem.mkdir()

    @property
    def cgroup(self) -> str:
        return "/" + self.name

    def enter(self) -> None:
        """preexec_fn: the child joins the job (as scancel's victims would be)."""
        for d in (self.v2, self.v1, self.mem):
            if d is not None:
                with open(d / "cgroup.procs", "w") as f:
                    f.write("0")

    def left_behind(self) -> list[str]:
        return sorted(str(p.relative_to(self.v2)) for p in self.v2.iterdir() if p.is_dir())

    def _kill_all(self) -> None:
        if (self.v2 / "cgroup.kill").exists():
            (self.v2 / "cgroup.kill").write_text("1")
            return
        for procs in self.v2.rglob("cgroup.procs"):  # before 5.14: each process by pid
            _kill_listed(procs)

    def remove(self) -> None:
        if self.v2.exists():
            self._kill_all()
            deadline = time.monotonic() + 10
            while (self.v2 / "cgroup.procs").read_text().strip() or any(
                    p.is_dir() for p in self.v2.iterdir()):
                if not (self.v2 / "cgroup.kill").exists():
                    self._kill_all()  # what was forked meanwhile
                for sub in sorted((p for p in self.v2.rglob("*") if p.is_dir()),
                                  key=lambda p: -len(p.parts)):
                    try:
                        sub.rmdir()
                    except OSError:
                        pass
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            self.v2.rmdir()
        for v1 in (self.v1, self.mem):
            if v1 is None or not v1.exists():
                continue
            _kill_listed(v1 / "cgroup.procs")
            deadline = time.monotonic() + 10
            while (v1 / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
                time.sleep(0.05)
            v1.rmdir()


@pytest.fixture
def job():
    j = Job()
    yield j
    j.remove()


def in_job(roar, job, *args, check=True, env=None, **kw):
    p = subprocess.run([PY, "-m", "roar", *map(str, args)], cwd=roar.cwd, env=env or roar.env(),
                       capture_output=True, text=True, timeout=300, preexec_fn=job.enter, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"roar {args} exited {p.returncode}: {p.stderr}")
    return p


def _last(roar) -> dict:
    last = roar.json("log", "-n", "1")[0]
    return roar.json("show", last["id"]), roar.store_doc(last["id"])


@pytest.fixture
def store_doc(roar):
    """The raw run document (the `cgroup` placement record lives there)."""
    from roar.record.store import Store

    def get(run_id):
        with Store(roar.home, readonly=True) as s:
            return s.get_run(run_id)

    roar.store_doc = get
    return get


def test_workload_stays_inside_the_job(roar, job, store_doc):
    out = roar.cwd / "cg.txt"
    p = in_job(roar, job, "run", "--", "sh", "-c", f"cat /proc/self/cgroup > {out}")
    assert "warning" not in p.stderr
    lines = dict(line.split(":", 2)[::2] for line in out.read_text().splitlines())
    assert lines["0"].startswith(job.cgroup + "/roar/"), lines["0"]  # v2: below the job
    if job.v1 is not None:
        pids_line = next(v for k, v in (line.split(":", 2)[1:] for line in
                                        out.read_text().splitlines()) if k == "pids")
        assert pids_line == job.cgroup  # v1 memberships untouched
    run, doc = _last(roar)
    assert run["status"] == "finished" and run["complete"]
    assert [o["path"] for o in run["outputs"]] == [str(out)]  # traced
    assert doc["cgroup"]["caller"] == job.cgroup and doc["cgroup"]["below_caller"]
    assert doc["cgroup"]["path"] == lines["0"] and doc["cgroup"]["note"] is None
    assert job.left_behind() == []  # its run cgroup and the roar/ directory are gone


@pytest.mark.skipif(not (V1_PIDS / "cgroup.procs").exists(), reason="no cgroup v1 pids")
def test_the_jobs_pids_limit_still_applies(roar, job):
    (job.v1 / "pids.max").write_text("40")
    # the workload waits until roar run's own threads (counted in the job too) are up
    script = ("import os, time\n"
              "time.sleep(1.5)\n"
              "ok = fail = 0\n"
              "for _ in range(80):\n"
              "    try:\n"
              "        if os.fork() == 0:\n"
              "            time.sleep(3); os._exit(0)\n"
              "        ok += 1\n"
              "    except BlockingIOError:\n"
              "        fail += 1\n"
              "open('forks', 'w').write(f'{ok} {fail}')\n")
    in_job(roar, job, "run", "--linger", "10", "--", PY, "-c", script)
    ok, fail = map(int, (roar.cwd / "forks").read_text().split())
    assert fail > 0 and ok < 40, (ok, fail)  # the job's limit, counted with roar run's own
    assert int((job.v1 / "pids.events").read_text().split()[1]) > 0  # max events


@pytest.mark.skipif(_own_v1(V1_MEMORY) is None, reason="no cgroup v1 memory controller")
def test_the_jobs_memory_limit_still_applies(roar, job):
    """The job's memory limit (v1 here) OOM-kills a traced workload that
    outgrows it; the run records the kill."""
    (job.mem / "memory.limit_in_bytes").write_text(str(400 << 20))
    p = in_job(roar, job, "run", "--", PY, "-c", "x = b'1' * (1 << 30)", check=False)
    assert p.returncode == 137, p.stderr  # SIGKILL by the job's OOM killer
    oom = dict(line.split() for line in (job.mem / "memory.oom_control").read_text()
               .splitlines())
    assert int(oom.get("oom_kill", 0)) >= 1
    run = roar.json("show", roar.json("log", "-n", "1")[0]["id"])
    assert run["signal"] == 9


DEVICE_DENY = r"""
#include <uapi/linux/bpf.h>
int deny_dev_zero(struct bpf_cgroup_dev_ctx *ctx)
{
    if ((ctx->access_type & 0xFFFF) == BPF_DEVCG_DEV_CHAR && ctx->major == 1 && ctx->minor == 5)
        return 0;
    return 1;
}
"""


def test_the_jobs_device_program_still_applies(roar, job):
    """A cgroup v2 device program on the job (how v2 restricts GPUs) denies
    /dev/zero: the traced workload is denied too."""
    from roar.capture.probes import import_bcc

    bcc = import_bcc()
    b = bcc.BPF(text=DEVICE_DENY.encode())
    fn = b.load_func(b"deny_dev_zero", bcc.BPF.CGROUP_DEVICE)
    fd = os.open(job.v2, os.O_RDONLY)
    try:
        b.attach_func(fn, fd, bcc.BPFAttachType.CGROUP_DEVICE)
        probe = "head -c1 /dev/zero >/dev/null 2>&1 && echo open || echo denied"
        p = in_job(roar, job, "run", "--", "sh", "-c", f"({probe}) > dev.txt")
        assert p.returncode == 0
        assert (roar.cwd / "dev.txt").read_text().strip() == "denied"
        subprocess.run(["sh", "-c", f"({probe}) > outside.txt"], cwd=roar.cwd, check=True)
        assert (roar.cwd / "outside.txt").read_text().strip() == "open"
    finally:
        try:
            b.detach_func(fn, fd, bcc.BPFAttachType.CGROUP_DEVICE)
        finally:
            os.close(fd)
            b.cleanup()


def test_cgroup_kill_of_the_job_ends_the_run_interrupted(roar, job, store_doc):
    ready = roar.cwd / "ready"
    client = subprocess.Popen([PY, "-m", "roar", "run", "--", "sh", "-c",
                               f"echo x > {ready}; exec sleep 120"], cwd=roar.cwd,
                              env=roar.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              preexec_fn=job.enter)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert client.poll() is None, client.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert job.left_behind() == ["roar"]
    (job.v2 / "cgroup.kill").write_text("1")
    assert client.wait(30) == -9  # roar run was in the job too
    deadline = time.monotonic() + 60
    while True:  # roard rebuilds the run from its spool, in the background
        runs = roar.json("log")
        doc = store_doc(runs[0]["id"]) if runs else None
        if doc and doc["status"] != "running":
            break
        assert time.monotonic() < deadline, "the run was never stored"
        time.sleep(0.2)
    run = roar.json("show", runs[0]["id"])
    assert run["status"] == "interrupted" and run["signal"] == 9
    assert any("cgroup.kill" in r and job.cgroup in r for r in run["incomplete_reasons"]), run
    assert str(ready) in [o["path"] for o in run["outputs"]]
    deadline = time.monotonic() + 10
    while job.left_behind() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.left_behind() == []  # nothing of roar's in the job
    spool = roar.sock.parent / "spool"
    assert not [f for f in os.listdir(spool) if run["id"] in f]


def test_a_job_that_cannot_take_a_child_is_said_so(roar, job, store_doc):
    """cgroup.max.descendants=0: no cgroup can be made below the job; the run
    goes below the job's parent, is traced, and the record, stderr and
    roar doctor say what that means."""
    (job.v2 / "cgroup.max.descendants").write_text("0")
    out = roar.cwd / "cg.txt"
    p = in_job(roar, job, "run", "--", "sh", "-c", f"cat /proc/self/cgroup > {out}")
    assert "roar: warning: the run cgroup could not be made below the caller's cgroup " \
           f"{job.cgroup} (cgroup.max.descendants" in p.stderr
    run, doc = _last(roar)
    assert run["complete"] and [o["path"] for o in run["outputs"]] == [str(out)]
    cg = doc["cgroup"]
    assert cg["caller"] == job.cgroup and cg["parent"] == "/" and not cg["below_caller"]
    assert "cgroup.kill of " + job.cgroup in cg["note"]
    doctor = in_job(roar, job, "doctor", check=False).stdout
    assert f"cannot get a cgroup below {job.cgroup} (cgroup.max.descendants" in doctor
    assert f"run {run['id']}: the run cgroup could not be made" in doctor


def _launched_in_job(roar, launcher_bin, job, out: Path):
    """`roar run` through the compiled launcher (served warm), started in the job."""
    w = Warm(roar, launcher_bin)
    (w.bin / "py.log").unlink(missing_ok=True)
    try:
        # a recorder serves one cgroup (warmkey): the first run in the job is
        # Python's, which starts one there for the next
        deadline = time.monotonic() + 60
        while True:
            before = len(w.py_runs())
            assert w("run", "--", "true", preexec_fn=job.enter).returncode == 0
            if len(w.py_runs()) == before:
                break
            assert time.monotonic() < deadline, "no warm recorder in the job"
            time.sleep(0.2)
        p = w("run", "--", "sh", "-c", f"cat /proc/self/cgroup > {out}",
              preexec_fn=job.enter)
        assert p.returncode == 0, p.stderr
        assert len(w.py_runs()) == before, "not served warm"
    finally:
        w.stop()
        # launcher_bin is the session's: the next test that reads py.log reads its own
        (w.bin / "py.log").unlink(missing_ok=True)
    return p


def test_the_launcher_clones_the_workload_into_its_run_cgroup(roar, job, store_doc,
                                                                launcher_bin):
    """Through the launcher, roard makes the run cgroup first and the workload
    is born in it (clone3 CLONE_INTO_CGROUP): no migration, whose RCU grace
    period every run waited for. Its first process is in the run cgroup below
    the job, and traced from its first syscall on."""
    out = roar.cwd / "cg.txt"
    _launched_in_job(roar, launcher_bin, job, out)
    run, doc = _last(roar)
    cg = doc["cgroup"]
    assert cg["entered"] == "clone" and cg["below_caller"] and cg["caller"] == job.cgroup
    assert f"0::{cg['path']}" in out.read_text().splitlines()
    assert cg["path"].startswith(job.cgroup + "/roar/")
    assert run["complete"] and [(o["path"], o["hash"]) for o in run["outputs"]] == \
        [(str(out), xxh128(out))]
    assert job.left_behind() == []


def test_the_launcher_falls_back_to_a_move_where_no_cgroup_is_made_below_the_job(
        roar, job, store_doc, launcher_bin):
    """cgroup.max.descendants=0 through the launcher: roard cannot make the run
    cgroup below the job, the launcher forks as before, and roard places and
    moves the workload as for `python -m roar run` (below the job's parent,
    said so)."""
    (job.v2 / "cgroup.max.descendants").write_text("0")
    out = roar.cwd / "cg.txt"
    p = _launched_in_job(roar, launcher_bin, job, out)
    assert "could not be made below the caller's cgroup" in p.stderr
    run, doc = _last(roar)
    cg = doc["cgroup"]
    assert cg["entered"] == "moved" and cg["parent"] == "/" and not cg["below_caller"]
    assert f"0::{cg['path']}" in out.read_text().splitlines()
    assert run["complete"] and [(o["path"], o["hash"]) for o in run["outputs"]] == \
        [(str(out), xxh128(out))]


def test_doctor_says_where_runs_go(roar, job):
    doctor = in_job(roar, job, "doctor", check=False).stdout
    assert f"run cgroups go below the caller's own cgroup (here {job.cgroup})" in doctor


def test_no_leftover_roar_directory_when_runs_overlap(roar, job):
    """Two runs in one job share <job>/roar; the last one out removes it."""
    a = subprocess.Popen([PY, "-m", "roar", "run", "--", "sleep", "1"], cwd=roar.cwd,
                         env=roar.env(), stderr=subprocess.PIPE, preexec_fn=job.enter)
    in_job(roar, job, "run", "--", "true")
    assert a.wait(60) == 0
    assert job.left_behind() == []


def test_embedded_run_killed_with_its_job_leaves_nothing(cli, job):
    """Without roard (root: embedded probes), the job's cgroup.kill ends roar run
    and its workload; roar run's watchdog, moved out of the job for this, ends
    and removes the run cgroup, and the run reads as interrupted."""
    ready = cli.cwd / "ready"
    client = subprocess.Popen([PY, "-m", "roar", "run", "--", "sh", "-c",
                               f"echo x > {ready}; exec sleep 120"], cwd=cli.cwd,
                              env=cli.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              preexec_fn=job.enter)
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert client.poll() is None, client.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (job.v2 / "cgroup.kill").write_text("1")
    assert client.wait(30) == -9
    deadline = time.monotonic() + 30
    while job.left_behind() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.left_behind() == []
    assert cli.json("log")[0]["status"] == "interrupted"


@pytest.mark.skipif(not (V1_PIDS / "cgroup.procs").exists(), reason="no cgroup v1 pids")
def test_a_job_at_its_pids_limit_gets_one_line_not_a_traceback(roar, job):
    """roar run's own threads count in the job's pids.max: roar run and its
    held command fit in 3, its threads do not. The command is ended and the
    user gets one line."""
    from conftest import one_line_error

    (job.v1 / "pids.max").write_text("3")
    p = in_job(roar, job, "run", "--", "sleep", "1", check=False)
    assert "pids.max" in one_line_error(p)
    assert roar.json("log")[0]["status"] == "interrupted"


def _fillers(run_id: str) -> list[int]:
    """pids of the jobs hashing a run's pending files (roar/cli/fill.py)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"roar.cli.fill" in argv and run_id.encode() in argv:
            out.append(int(pid))
    return out


@pytest.mark.capture
def test_pending_hashes_are_finished_after_the_batch_job_is_killed(roar, job):
    """A run inside a batch job leaves a hash pending (a 4 GiB input,
    ROAR_HASH_WAIT=0); the scheduler then kills everything in the job
    (cgroup.kill). roard started the hashing job as the caller, outside the
    job: it survives, and the record is completed with the right hash."""
    import xxhash

    big = roar.cwd / "big"
    size = 4 << 30
    with open(big, "wb") as f:
        f.truncate(size)
    in_job(roar, job, "run", "--", "sh", "-c", "head -c 1M big > /dev/null",
           env=roar.env(ROAR_HASH_WAIT="0"))
    run_id = roar.json("log", "-n", "1")[0]["id"]
    deadline = time.monotonic() + 30
    while not (fillers := _fillers(run_id)):
        assert time.monotonic() < deadline, "no pending-hash job was started"
        time.sleep(0.02)
    [filler] = fillers
    assert str(filler) not in (job.v2 / "cgroup.procs").read_text().split()
    (job.v2 / "cgroup.kill").write_text("1")  # the scheduler ends the job
    deadline = time.monotonic() + 180
    while True:
        [inp] = roar.json("show", run_id)["inputs"]
        if inp["status"] != "pending":
            break
        assert time.monotonic() < deadline, "the pending hash was never filled in"
        time.sleep(0.5)
    h = xxhash.xxh3_128()
    zeros = bytes(1 << 24)
    for _ in range(size // len(zeros)):
        h.update(zeros)
    assert (inp["status"], inp["hash"]) == ("ok", h.hexdigest())
    assert roar.json("show", run_id)["complete"] is True


V1_FREEZER = Path("/sys/fs/cgroup/freezer")


def test_a_run_cgroup_still_being_killed_gets_longer_than_one_left_running(job):
    """roard's killed_with_job (why a client vanished): a process left running
    in the run cgroup ends the wait after `wait`; processes with a SIGKILL
    pending (being ended with their job, slowly on a loaded machine) are
    waited for up to `dying_wait`. A process frozen by the v1 freezer keeps
    its SIGKILL pending until thawed: the slow death, made deterministic."""
    from roar.daemon import _being_killed, killed_with_job

    if not (V1_FREEZER / "cgroup.procs").exists():
        pytest.skip("no cgroup v1 freezer on this machine")
    run_cg = job.v2 / "run"
    run_cg.mkdir()
    frz = V1_FREEZER / job.name
    frz.mkdir()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        for d in (run_cg, frz):
            (d / "cgroup.procs").write_text(str(sleeper.pid))
        assert not _being_killed(sleeper.pid) and not _being_killed(os.getpid())
        t0 = time.monotonic()
        assert killed_with_job(run_cg, None, wait=0.3, dying_wait=10) is None
        assert 0.3 <= time.monotonic() - t0 < 3  # left running: no long wait
        (frz / "freezer.state").write_text("FROZEN")
        deadline = time.monotonic() + 10
        while (frz / "freezer.state").read_text().strip() != "FROZEN":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        sleeper.kill()
        assert _being_killed(sleeper.pid)  # pending: frozen tasks cannot act on it yet

        def thaw():
            time.sleep(1.0)
            (frz / "freezer.state").write_text("THAWED")

        import threading

        threading.Thread(target=thaw, daemon=True).start()
        t0 = time.monotonic()
        # the caller's cgroup is not the run's parent here: no note, but the wait
        # lasted until the cgroup emptied (after the thaw), past `wait`
        assert killed_with_job(run_cg, type("P", (), {"parent": "/a", "caller": "/b"}),
                               wait=0.3, dying_wait=10) is None
        assert time.monotonic() - t0 >= 0.9
        assert sleeper.wait(10) == -9
    finally:
        (frz / "freezer.state").write_text("THAWED")
        sleeper.kill()
        sleeper.wait()
        frz.rmdir()
