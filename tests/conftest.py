"""Shared fixtures. Capture tests need root and BCC; they share one roard
(started once per session on a private socket) and each gets its own
ROAR_HOME, so they never touch a real store or a real daemon."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future
from datetime import datetime, timezone
from pathlib import Path

import pytest
import xxhash
from hypothesis import settings

from roar.capture import events as E
from roar.cli import warm
from roar.record.hasher import HashResult
from roar.record.ids import new_run_id
from roar.record.model import RunModel
from roar.record.store import Store

REPO = Path(__file__).resolve().parent.parent

# scripts/mutation runs pytest --hypothesis-profile=mutation: every mutant of the model
# reruns the property tests, so there they generate fewer examples (a lower bound on
# what they kill); tests/test_model_properties.py asks for its own number otherwise
settings.register_profile("mutation", max_examples=40)


# CI (`.ci/run` sets CI=true): capture tests must run. A reason that would skip
# them stops the session, and a capture test that skips anyway (a missing tool,
# an unavailable kernel feature) fails with its reason: a run that could not
# trace must never pass as green.
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# `roar run` as root with no roard on the system socket starts one: no test may
# start the system's by accident (tests/test_daemon_autostart.py asks for its own)
os.environ["ROAR_START_ROARD"] = "0"
# every ledger entry the end of a run counts is checked against the built records
# (roar/record/recorder.py CHECK_LEDGER), in-process and in the runs the tests start
os.environ["ROAR_CHECK_LEDGER"] = "1"


def _capture_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "capture tests need root"
    try:
        from roar.capture.probes import import_bcc

        import_bcc()
    except Exception as e:  # any reason BCC cannot load is a reason to skip
        return f"BCC unavailable: {e}"
    return None


def _build_compiled_model() -> None:
    """The compiled process model (roar/record/_cmodel.c) is what `roar run`
    uses, the compiled relay (roar/capture/_relay.c) what roard uses, and
    roar/capture/_sys.c the system calls both make without ctypes: build
    them in place when one is missing or older than the sources (a fresh
    checkout, a rebase), as `pip install -e .` does; a failed build stops the
    session. The tests never fall back to the Python model."""
    # each extension against its own sources, as setup.py's `depends` (and so
    # setuptools, which rebuilds only those): not against every source
    headers = [REPO / "bpf" / "roar_event.h", REPO / "bpf" / "roar_event_user.h"]
    exts = (("record", "_cmodel", headers), ("record", "_readhash", []),
            ("capture", "_relay", headers), ("capture", "_sys", []))
    stale = []
    for d, name, deps in exts:
        so = sorted((REPO / "roar" / d).glob(f"{name}.*.so"))
        newest = max([REPO / "roar" / d / f"{name}.c", REPO / "setup.py", *deps],
                     key=lambda f: f.stat().st_mtime)
        if not so:
            stale.append(f"{name} (missing)")
        elif so[0].stat().st_mtime < newest.stat().st_mtime:
            stale.append(f"{so[0].name} (older than {newest.name})")
    if not stale:
        return
    p = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace", "--force"],
                       cwd=REPO, capture_output=True, text=True)
    if p.returncode != 0:
        pytest.exit(f"roar's C extensions (setup.py) do not build (built because of: "
                    f"{', '.join(stale)}):\n{p.stdout[-3000:]}{p.stderr[-3000:]}", returncode=1)


def pytest_configure(config):
    _build_compiled_model()


def pytest_collection_modifyitems(config, items):
    # a strict xfail must name the failure it documents (raises=KnownBug or another
    # exception type): one that passes on any failure hides a new bug inside it
    loose = [item.nodeid for item in items for m in item.iter_markers("xfail")
             if not m.kwargs.get("raises")]
    if loose:
        raise pytest.UsageError("xfail without raises= (see KnownBug in tests/conftest.py): "
                                + ", ".join(loose))
    reason = _capture_unavailable()
    if reason:
        if CI and any("capture" in item.keywords for item in items):
            pytest.exit(f"CI: capture tests cannot run: {reason}", returncode=1)
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if "capture" in item.keywords:
                item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if CI and rep.skipped and "capture" in item.keywords and not hasattr(rep, "wasxfail"):
        why = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"CI: a capture test may not skip: {why}"


def spawn_roard(d: Path) -> tuple[subprocess.Popen, Path, dict]:
    """Start a roard whose socket (and log, spool) live in directory d; return
    once its socket exists: (process, socket path, environment for clients)."""
    sock = d / "roard.sock"
    env = {**os.environ, "ROAR_SOCKET": str(sock), "PYTHONPATH": str(REPO)}
    log = open(d / "roard.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "roar.daemon"], env=env, stdout=log,
                            stderr=log, start_new_session=True)
    # BCC compiles the kernel side before the socket exists: seconds here, minutes
    # in an emulated vm-tests guest (vm-tests/guest/suite.sh raises the limit)
    deadline = time.monotonic() + float(os.environ.get("ROAR_TEST_ROARD_START_S", "120"))
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"roard did not start: {(d / 'roard.log').read_text()}")
        time.sleep(0.1)
    return proc, sock, env


@pytest.fixture(scope="session")
def roard(tmp_path_factory):
    """A daemon on a private socket for the whole session; yields its socket."""
    proc, sock, _ = spawn_roard(tmp_path_factory.mktemp("roard"))
    yield sock
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


class Roar:
    """Runs the roar CLI as a user would, with a private store and daemon."""

    def __init__(self, home: Path, sock: Path | None, cwd: Path, kept: Path | None = None):
        self.home, self.sock, self.cwd = home, sock, cwd
        self.kept = kept  # where runs keep their raw event streams (ROAR_KEEP_EVENTS)
        self.warm: Warm | None = None  # ROAR_TEST_LAUNCHER: `roar run` via the launcher
        self.launched = 0  # runs handed to the launcher

    def env(self, **extra) -> dict:
        env = {**os.environ, "ROAR_HOME": str(self.home), "PYTHONPATH": str(REPO)}
        env["ROAR_SOCKET"] = str(self.sock) if self.sock else str(self.home / "no-daemon.sock")
        if self.kept is not None:
            env["ROAR_KEEP_EVENTS"] = str(self.kept)
        if self.warm is not None:
            env["ROAR_WARM_IDLE"] = "60"  # keyed: the same in every run of the test
        env.update(extra)
        return env

    def __call__(self, *args, check=True, input=None, timeout=300, cwd=None, env=None):
        entry = [sys.executable, "-m", "roar"]
        if self.warm is not None and args and args[0] == "run":
            entry = [str(self.warm.bin / "roar")]
            self.launched += 1
            if env is not None:  # an environment of its own: a recorder of its own
                self.warm.ensure(env)
        p = subprocess.run([*entry, *map(str, args)],
                           cwd=cwd or self.cwd, env=env or self.env(), capture_output=True,
                           text=True, input=input, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"roar {' '.join(map(str, args))} exited {p.returncode}\n"
                                 f"stdout: {p.stdout}\nstderr: {p.stderr}")
        return p

    def json(self, *args, **kw):
        return json.loads(self(*args, "--json", **kw).stdout)

    def run(self, *cmd, check=True, **kw):
        """roar run -- cmd...; returns (completed process, run document)."""
        p = self("run", "--", *cmd, check=False, **kw)
        if check and p.returncode != 0:
            raise AssertionError(f"roar run {cmd} exited {p.returncode}\n{p.stderr}")
        last = self.json("log", "-n", "1")[0]
        return p, self.json("show", last["id"])


@pytest.fixture
def cli(tmp_path):
    """The CLI with a private store and no daemon (for what must fail, or work,
    before any tracing starts)."""
    work = tmp_path / "work"
    work.mkdir()
    return Roar(tmp_path / "home", None, work)


def one_line_error(p) -> str:
    """A user error as roar must report it: non-zero exit, one `roar: ...` line,
    no traceback. Returns the line."""
    err = p.stderr if isinstance(p.stderr, str) else p.stderr.decode(errors="replace")
    assert p.returncode != 0
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("roar: "), err
    return lines[0]


# ROAR_TEST_LAUNCHER=1: the `roar` fixture's `roar run`s go through the compiled
# launcher (roar/cli/launcher.c) and a warm recorder started for the test, the
# path the installed `roar` command takes (.ci/run runs tests/test_capture.py so
# too). Not with tests/test_warm.py, which starts and stops its own.
LAUNCHER = os.environ.get("ROAR_TEST_LAUNCHER") == "1"


@pytest.fixture
def roar(roard, tmp_path, request):
    """The CLI with a private store and the session's roard. Every run keeps
    its raw event stream; after the test, each is replayed through both
    process models (model.py and the compiled one), which must agree on
    everything (tests/model_diff.py): the capture tests are the differential
    tests' real streams."""
    work = tmp_path / "work"
    work.mkdir()
    kept = tmp_path / "kept-events"
    kept.mkdir()
    r = Roar(tmp_path / "home", roard, work, kept)
    if LAUNCHER:
        r.warm = Warm(r, request.getfixturevalue("launcher_bin"))
        (r.warm.bin / "py.log").unlink(missing_ok=True)
        r.warm.start_server()
    yield r
    if r.warm is not None:
        r.warm.stop()
        fell_back = [line for line in r.warm.py_runs() if line.startswith("run")]
        # help, an option to check... take Python's path: not every run
        assert not r.launched or len(fell_back) < r.launched, \
            f"no run of the test was served warm: {fell_back}"
    from model_diff import check_stream

    for stream in sorted(kept.glob("*.events")):
        check_stream(stream)


@pytest.fixture(scope="session")
def launcher_bin(tmp_path_factory) -> Path:
    """A bin/ as an install makes it: the compiled `roar` and `roar-py` (the
    Python entry, which also notes each time it runs in py.log)."""
    d = tmp_path_factory.mktemp("bin")
    cc = shutil.which("cc") or shutil.which("gcc")
    subprocess.run([cc, "-O2", "-Wall", "-o", str(d / "roar"), str(REPO / "roar/cli/launcher.c")],
                   check=True)
    (d / "roar-py").write_text(
        f"#!{sys.executable}\nimport sys\n"
        f"open({str(d / 'py.log')!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "from roar.__main__ import main\nsys.exit(main())\n")
    (d / "roar-py").chmod(0o755)
    return d


class Warm:
    """The launcher in one test's environment; every server it started is
    ended at the test's end."""

    def __init__(self, roar, bindir: Path):
        self.roar, self.bin = roar, bindir
        self.servers: set[int] = set()

    def env(self, **extra) -> dict:
        return self.roar.env(**{"ROAR_WARM_IDLE": "60", **extra})

    def key_env(self, env: dict) -> dict:
        return {k.encode(): v.encode() for k, v in env.items()}

    def server(self, env=None) -> int | None:
        pid = warm.server_pid(str(self.bin), self.key_env(env or self.env()))
        if pid:
            self.servers.add(pid)
        return pid

    def ensure(self, env: dict) -> None:
        """A recorder for runs in env (started unless one answers)."""
        if self.server(env) is None:
            self.start_server(env)

    def start_server(self, env=None) -> int:
        env = env or self.env()
        k = warm.key(str(self.bin), self.key_env(env))
        subprocess.Popen([sys.executable, "-c", "from roar.cli.warm import serve; serve()",
                          str(self.bin), k], env=env, cwd="/", stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
        deadline = time.monotonic() + 30
        while (pid := self.server(env)) is None:
            assert time.monotonic() < deadline, "the warm recorder never answered"
            time.sleep(0.05)
        return pid

    def py_runs(self) -> list[str]:
        log = self.bin / "py.log"
        return log.read_text().splitlines() if log.exists() else []

    def __call__(self, *args, env=None, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("timeout", 120)
        return subprocess.run([str(self.bin / "roar"), *map(str, args)], cwd=self.roar.cwd,
                              env=env or self.env(), capture_output=True, text=True, **kw)

    def stop(self) -> None:
        """End every server of this test's environment: those seen, and those
        a run handed to Python started on its way out (maybe still importing)."""
        home = f"ROAR_HOME={self.roar.home}".encode()
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                cmd = (d / "cmdline").read_bytes()
                env = (d / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"roar.cli.warm import serve" in cmd and home in env:
                self.servers.add(int(d.name))
        for pid in self.servers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def xxh128(path) -> str:
    import xxhash

    with open(path, "rb") as f:
        return xxhash.xxh3_128(f.read()).hexdigest()


@pytest.fixture(scope="session")
def foreign_python(tmp_path_factory):
    """(python, PYTHONPATH) that another OS user can run roar with.

    The test interpreter and venv may live under /root (mode 0700); copy roar,
    bpf/ and roar's dependencies into a world-readable directory and use the
    system python3, which the compiled dependencies were built for when it is
    the same version."""
    import importlib
    import shutil

    exe = "/usr/bin/python3"
    ver = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2])"],
                         capture_output=True, text=True)
    if ver.returncode != 0 or ver.stdout.strip() != str(sys.version_info[:2]):
        pytest.skip("no system python3 of the test interpreter's version for another user")
    base = Path(tempfile.mkdtemp(prefix="roar-foreign-", dir="/tmp"))
    os.chmod(base, 0o755)
    shutil.copytree(REPO / "roar", base / "roar", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "bpf", base / "bpf")
    for name in ("click", "lmdb", "xxhash", "networkx"):
        mod = importlib.import_module(name)
        src = Path(mod.__file__).parent
        shutil.copytree(src, base / src.name, ignore=shutil.ignore_patterns("__pycache__"))
    for d, _, files in os.walk(base):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    yield exe, str(base)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def other_user():
    """A throwaway unprivileged OS user (created and removed by the test)."""
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("needs root and useradd")
    name = f"roart{os.getpid() % 100000}"
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True,
                   capture_output=True)
    import pwd

    yield pwd.getpwnam(name)
    subprocess.run(["userdel", name], capture_output=True)

# -- helpers shared by test files ------------------------------------------------------


class KnownBug(AssertionError):
    """The exact failure a strict xfail documents. Such a test raises it where the
    bug shows and is marked xfail(strict=True, raises=KnownBug): any other failure
    inside it fails the test, and a fix makes it XPASS, which fails too."""


PY = sys.executable


def roar_cmd(*args) -> list[str]:
    return [PY, "-m", "roar", *map(str, args)]


def last_run(roar) -> dict:
    last = roar.json("log", "-n", "1")[0]
    return roar.json("show", last["id"])


def stored_interrupted(roar, timeout: float = 60) -> list[dict]:
    """`roar log` once roard has stored the last run, whose client was killed,
    as interrupted (it rebuilds it from its spool in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = roar.json("log")
        if runs and runs[0]["status"] == "interrupted" and runs[0]["complete"] is not None:
            return runs
        assert time.monotonic() < deadline, runs
        time.sleep(0.2)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"roar run exited {proc.returncode} early: {err}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def workload_pid(path: Path, client: subprocess.Popen, timeout: float = 60) -> int:
    """The pid a traced workload wrote to path, once it has (while its `roar run`
    client still runs)."""
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text().strip():
        assert time.monotonic() < deadline and client.poll() is None
        time.sleep(0.05)
    return int(path.read_text())


def daemon_request(sock, payload: bytes, timeout: float = 10.0) -> bytes:
    """One raw request to roard's socket and everything it answers until it
    hangs up (it may hang up on a request it refuses)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(sock))
    chunks = []
    try:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        s.close()
    return b"".join(chunks)


def daemon_reply(raw: bytes) -> dict:
    """The JSON of roard's first frame (kind byte, u32 length, body)."""
    return json.loads(raw[5:])


TERMINAL_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT)  # nohup and `&` ignore them


def start(roar, *cmd, name=None, **kw) -> subprocess.Popen:
    """`roar run` in the background, started as from a terminal (the signals
    a test sends it not ignored, however the test runner was started:
    roar forwards only those it was not started ignoring)."""
    extra = ["--name", name] if name else []
    kw.setdefault("preexec_fn", started_with(default=TERMINAL_SIGNALS))
    return subprocess.Popen(roar_cmd("run", *extra, "--", *cmd), cwd=roar.cwd, env=roar.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def started_with(default=(), ignored=(), blocked=None):
    """A preexec_fn: the process starts with these signals' dispositions set
    (default: as a terminal's foreground job has them, whatever the test
    runner was started with; ignored: as `nohup ... &` leaves them) and, if
    given, this signal mask."""
    def pre():
        for sig in default:
            signal.signal(sig, signal.SIG_DFL)
        for sig in ignored:
            signal.signal(sig, signal.SIG_IGN)
        if blocked is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return pre


@contextlib.contextmanager
def tagged_child(script: str, *args: str, sink=None, name: str = "child"):
    """Real probes in this process (their records to sink) and a Python child
    that prints "ready" once started, then is moved into a cgroup v2 of its
    own and tagged there, its start-up untraced: yields (probes, child), the
    child's stdin and stdout text pipes; everything is ended at the end. The
    caller sets the environment the probes compile with (ROAR_TLS_PROBES...)."""
    from roar.capture import cgroups
    from roar.capture.probes import Probes

    probes = Probes(sink or (lambda raw: None))
    cg = cgroups.cgroup2_mount() / f"roar-test-{name}-{os.getpid()}"
    cg.mkdir()
    child = None
    try:
        probes.attach()
        child = subprocess.Popen([sys.executable, "-c", script, *args],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline() == "ready\n"
        cgroups.move(cg, child.pid)
        probes.tag(os.stat(cg).st_ino, child.pid, time.monotonic_ns(), cgroups.level_of(cg))
        yield probes, child
    finally:
        if child is not None:
            child.kill()
            child.wait()
        probes.detach()
        probes.bpf.cleanup()
        cgroups.remove(cg)


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


def children_running(*words: bytes) -> list[int]:
    """The pids of this process's children whose command line holds all of words
    (a background job the code under test started and does not wait for: the
    test reaps it, so that nothing else reaps it by surprise, as mutmut's
    os.wait() did)."""
    pids = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            continue
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if all(w in argv for w in words):
            out.append(pid)
    return out


def git(cwd, *args) -> str:
    """git in cwd with a throwaway identity; returns its output (stripped)."""
    return subprocess.run(["git", "-C", str(cwd), "-c", "user.email=t@e", "-c", "user.name=t",
                           *map(str, args)], check=True, capture_output=True,
                          text=True).stdout.strip()


def as_other(user, python, *args, home: Path) -> subprocess.CompletedProcess:
    """The CLI as another OS user, on the store at home."""
    exe, path = python
    return subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                           "--clear-groups", exe, "-m", "roar", *map(str, args)], cwd="/",
                          capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": path, "ROAR_HOME": str(home),
                               "PATH": os.environ["PATH"]})


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


def stop_roard(proc: subprocess.Popen | None, sock: Path) -> None:
    """Stop a daemon of ours, whatever state it is in, and remove what it left
    (proc None: one we did not start, already gone)."""
    from roar.capture.cgroups import cgroup2_mount, kill_all, remove
    from roar.daemon import cgroup_prefix

    if proc is not None and proc.poll() is None:
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


# -- synthetic stores (lineage, reproduce) ----------------------------------------------

T0 = 1_750_000_000_000


def hash_of(content: bytes) -> str:
    """The content hash roar records (xxh3-128), of bytes in memory."""
    return xxhash.xxh3_128(content).hexdigest()


def iso_ms(ms: int) -> str:
    """A time in ms since the epoch as the store writes it."""
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


class History:
    """A store filled with synthetic runs, one minute apart, as finish_run stores them."""

    def __init__(self, home: Path):
        self.store = Store(home)
        self.t = T0

    def run(self, command, reads=(), writes=(), code=(), cwd="/w", env=None, packages=None,
            git=None, complete=True, reasons=(), status="finished", exit_code=0,
            exe="/usr/bin/python3.11", unverified=(), at=None, files=(), name=None,
            signal=None) -> str:
        """reads/writes/code: (path, content bytes) pairs; unverified: input paths
        read without a verified hash; files: more file records, as they are."""
        self.t += 60_000
        t = self.t if at is None else at
        rid = new_run_id(t)

        def rec(path, content, role, kind="data"):
            return {"path": path, "kind": kind, "role": role, "hash": hash_of(content),
                    "size": len(content), "status": "ok", "bytes_read": len(content),
                    "bytes_written": 0, "processes": ["k1"]}

        extra = list(files)
        files = [rec(p, c, "input") for p, c in reads]
        files += [rec(p, c, "input", "code") for p, c in code]
        files += [{"path": p, "kind": "data", "role": "input", "hash": None, "size": 3,
                   "status": "unverified", "bytes_read": 3, "bytes_written": 0,
                   "processes": ["k1"]} for p in unverified]
        files += [rec(p, c, "output") for p, c in writes] + extra
        files.append({"path": "/usr/lib/libc.so.6", "kind": "env", "role": "env", "hash": None,
                      "size": None, "status": None, "bytes_read": 0, "bytes_written": 0,
                      "processes": ["k1"]})
        run = {"id": rid, "name": name, "status": status, "command": list(command), "cwd": cwd,
               "user": "u", "host": "h", "boot_id": "b", "started_at": iso_ms(t),
               "ended_at": iso_ms(t + 30_000), "exit_code": exit_code, "signal": signal,
               "git": git, "env": env if env is not None else {"HOME": "/root"},
               "packages": packages if packages is not None else {"numpy": "1.26.4"},
               "complete": complete, "incomplete_reasons": list(reasons), "lost_events": 0,
               "counts": {}}
        procs = [{"key": "k1", "pid": 10, "ppid": 1, "parent": None, "argv": list(command),
                  "exe": exe, "exit_code": exit_code, "signal": None, "files": []}]
        self.store.finish_run(run, files, procs)
        return rid


# -- synthetic event streams (model, recorder) ----------------------------------------

O_WRONLY_CREAT_TRUNC = 0o1 | 0o100 | 0o1000
ROOT = 100  # the run's first process in synthetic streams


class Stream:
    """Builds events with increasing timestamps and feeds them to a model."""

    def __init__(self, cwd="/work", fds=None):
        self.ts = 1000
        self.hashed: list[str] = []

        def submit(path, birth=False):
            self.hashed.append(path)
            f = Future()
            f.set_result(HashResult("ok", f"h:{path}", 1, self.ts, self.ts))
            return f

        self.m = RunModel(ROOT, cwd, ["python3", "train.py"], fds or {}, 0, submit)

    def ev(self, type_, tgid=ROOT, tid=None, fd=-1, ret=0, a0=0, a1=0, a2=0, flags=0,
           path=None, path2=None, argv=None):
        self.ts += 10
        e = E.Event(self.ts, 1, tgid, tid or tgid, type_, flags, fd, ret, a0, a1, a2,
                    path=path, path2=path2, argv=argv)
        self.m.feed(e)
        return e

    def open(self, path, fd, flags=0, tgid=ROOT, dirfd=-100):
        return self.ev(E.EV_OPEN, tgid=tgid, fd=fd, ret=dirfd, a0=flags, path=path)

    def read(self, fd, tgid=ROOT):
        return self.ev(E.EV_READ, tgid=tgid, fd=fd, a0=1)

    def write(self, fd, tgid=ROOT):
        return self.ev(E.EV_WRITE, tgid=tgid, fd=fd, a0=2)

    def close(self, fd, tgid=ROOT, rbytes=0, wbytes=0):
        return self.ev(E.EV_CLOSE, tgid=tgid, fd=fd, a0=rbytes, a1=wbytes)

    def fork(self, child, parent=ROOT, thread=False, clone_flags=0):
        return self.ev(E.EV_FORK, tgid=parent, ret=child, a0=int(thread), a1=clone_flags)
