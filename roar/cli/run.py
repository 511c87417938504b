"""`roar run`: start a command inside a traced run cgroup, wait for it and
everything it started, and store what it did.

The workload is forked first and held on a pipe until its cgroup is tagged,
so its very first instruction after exec is traced. Only what must precede
it (checks that may refuse the run, the "running" record, tagging) runs
before it is released; the rest of roar's start-up (the event model and its
imports, host and GPU facts) runs while the workload does. roar keeps the signals
that would stop it (INT, TERM, HUP) and forwards those sent to roar alone;
the run is then stored as interrupted, never lost.
"""

from __future__ import annotations

import _signal  # signal.py's C half: the enums signal.py builds are ~1 ms of every start
import gc
import os
import stat
import sys
import threading
import time

from roar.capture import jsonc
from roar.capture.protocol import SessionError
from roar.capture.session import DEFAULT_LINGER, DaemonSession, EmbeddedSession, OlderDaemon
from roar.cli.output import RUN_REFUSED, fail
from roar.record import codes, context, groups, timing
from roar.record.ids import new_run_id, now_iso
from roar.record.store import Store, StoreError
from roar.record.timing import mark
from roar.requests.policyfiles import any_policy

FORWARDED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)
CLOCK_REALTIME_COARSE = 5  # <linux/time.h>; the time module does not name it
STOP_GRACE = 10.0  # seconds between a budget stop's SIGTERM and its SIGKILL
SI_USER, SI_QUEUE, SI_TKILL = 0, -1, -6


def forwarded() -> tuple[int, ...]:
    """The signals roar forwards to the run: FORWARDED less those roar was
    started with ignored (`nohup roar run ... &`: a hangup or an interrupt the
    user asked the job to ignore, roar ignores too; the workload, which starts
    with them ignored, runs on as bare, and the run is not taken for
    interrupted). roar blocks them and never changes their dispositions, so
    asking at any time tells what it was started with (the launcher asks the
    same: launcher.c main)."""
    return tuple(s for s in FORWARDED if _signal.getsignal(s) != _signal.SIG_IGN)


class RunError(Exception):
    """The run could not start; nothing was executed."""

    def __init__(self, message: str, exit_code: int = RUN_REFUSED):
        super().__init__(message)
        self.exit_code = exit_code


def cli_run(name: str | None, allow_dirty: bool, linger: float | None,
            request_id: str | None, command: list[str], group: str | None = None,
            audit: bool = False, policy: str | None = None, no_git: bool = False) -> None:
    """`roar run` as the command line does it (never returns): errors are one
    line, the exit status is the workload's."""
    global _gc_at_release, _kept_to_exit
    _gc_at_release = not gc.isenabled()  # roar/__main__.py paused it for the start
    _kept_to_exit = []
    try:
        code = run(command, name=name, allow_dirty=allow_dirty,
                   linger=DEFAULT_LINGER if linger is None else linger,
                   store=Store(), request_id=request_id, group=group,
                   audit=audit or policy is not None, policy=policy, no_git=no_git)
    except RunError as e:
        fail(str(e), e.exit_code)
    except (StoreError, SessionError) as e:
        fail(str(e), RUN_REFUSED)
    # Everything is committed (LMDB syncs at commit); skip the interpreter's
    # teardown, which costs ~0.1 s of the run's fixed cost.
    timing.cpu()
    sys.stdout.flush()
    sys.stderr.flush()
    if os.path.basename(sys.argv[0]) == "roar-py":  # the launcher found no warm recorder
        from roar.cli import warmkey

        warmkey.start_for_next_time()  # after this run's work, for the next ones
    os._exit(code)


_gc_at_release = False  # cli_run: the cyclic collector is enabled when the workload runs
# cli_run: the run's recorder, kept until os._exit frees the whole process at once:
# run() returning would free its model and records one object at a time (~50 ms of
# CPU for 20,000 files: dict_dealloc, list_dealloc). None: run() called as a library.
_kept_to_exit: list | None = None


def check_command(argv: list[str]) -> None:
    """Refuse, before anything is recorded, a command that cannot be executed
    (exit 127 / 126 as a shell would)."""
    cmd = argv[0]
    if "/" in cmd:
        if not os.path.exists(cmd):
            raise RunError(f"{cmd}: no such file", 127)
        if os.path.isdir(cmd) or not os.access(cmd, os.X_OK):
            raise RunError(f"{cmd}: permission denied (not an executable file)", 126)
    elif context.which(cmd) is None:
        raise RunError(f"{cmd}: command not found", 127)


def daemon_session() -> DaemonSession | None:
    """roard when it answers on its socket (connecting is the check: no status
    round trip on every run's start)."""
    try:
        return DaemonSession()
    except SessionError:
        return None


def _start_roard() -> DaemonSession | None:
    """As root with no roard answering: start one (it loads the probes once,
    seconds, for this run and the next ones, and exits after a quiet spell)
    rather than load them in this process for this run alone. Only for the
    system's socket unless ROAR_START_ROARD=1 (a ROAR_SOCKET of one's own names
    a roard one runs oneself); ROAR_START_ROARD=0: never. None: embedded."""
    want = os.environ.get("ROAR_START_ROARD", "auto")
    if want not in ("auto", "1", "0"):
        raise RunError(f"ROAR_START_ROARD={want!r}: expected auto, 1 or 0")
    if want == "0" or (want == "auto" and os.environ.get("ROAR_SOCKET")):
        return None
    from roar.capture.namespaces import in_child_pid_namespace

    if in_child_pid_namespace():  # a roard here could not match the kernel's pids
        return None
    from roar import daemon

    try:
        pid, started = daemon.start_for_run()
    except daemon.DaemonError as e:
        print(f"roar: warning: could not start roard ({e}); loading the probes in this "
              f"process for this run", file=sys.stderr)
        return None
    if started:
        print(f"roar: started roard (pid {pid}, {daemon.socket_path()}): it keeps the probes "
              f"loaded for later runs and exits after {daemon.AUTO_IDLE_EXIT / 60:g} min "
              f"without one (`roar daemon stop` ends it now)", file=sys.stderr)
    return daemon_session()


def _inherited_fds() -> dict[int, str]:
    """The files the first process starts with (its stdin/stdout/stderr and
    any other fd without close-on-exec): this process's own, which the
    workload's fork copies with their close-on-exec flags (every fd roar opens
    itself is close-on-exec), read here without opening each fd's fdinfo."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not os.get_inheritable(fd):
                continue
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own fd, closed since
            continue
        if target.startswith("/"):
            out[fd] = target
    return out


class LocalWorkload:
    """The workload forked by this process (`python -m roar run`, and every run
    the compiled launcher hands to Python): held on a pipe until released.
    roar/cli/warm.py has the other implementation (the launcher forks it)."""

    pid = 0
    clones_into = False  # os.fork: roard moves it into the run cgroup

    def __init__(self):
        # the mask this process was started with, before run() blocks the
        # signals it forwards: the workload starts with it, as bare
        self.mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, [])

    @property
    def client_pid(self) -> int:
        return os.getpid()

    def spawn(self, argv: list[str], run_id: str, hold=None, cgroup_dir=None) -> int:
        self.pid, self._go = _spawn_held(argv, run_id, hold, self.mask)
        return self.pid

    def root_fds(self) -> dict[int, str]:
        return _inherited_fds()

    def release(self) -> None:
        os.write(self._go, b"g")
        os.close(self._go)

    def abandon(self) -> None:
        """End the held (never released) workload."""
        os.kill(self.pid, _signal.SIGKILL)
        os.waitpid(self.pid, 0)

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, gate=None, session=None) -> tuple[int, bool]:
        return _wait_root(self.pid, gate, session, self)


def _spawn_held(argv: list[str], run_id: str, hold=None, mask=()) -> tuple[int, int]:
    """Fork the workload, blocked until we write to the returned pipe. Its
    environment names the run (ROAR_RUN_ID) for trackers and notebooks to store.
    hold: a socket the workload sends its pre-image hold's seccomp listener on
    (installed on itself just before its exec: roar/capture/seccomp.py).
    mask: the signal mask it starts with (the one roar was started with)."""
    r, w = os.pipe()
    dirs = _exec_path()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w)
            # what the interpreter ignores (as subprocess's restore_signals):
            # `roar run -- yes | head` ends as bare (the launcher forks it as
            # bare). The forwarded signals keep what roar was started with:
            # one ignored then stays ignored (`nohup roar run ... &`: forwarded()),
            # the interpreter's SIGINT handler goes at the exec.
            for sig in (_signal.SIGPIPE, _signal.SIGXFSZ):
                _signal.signal(sig, _signal.SIG_DFL)
            _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)
            go = os.read(r, 1)
            os.close(r)
            if go != b"g":
                os._exit(RUN_REFUSED)
            os.environ["ROAR_RUN_ID"] = run_id
            if hold is not None:
                _install_hold(hold)
            try:
                _execvp(argv, dirs)
            except OSError as e:  # the name as given, bytes that are not UTF-8 too
                why = {FileNotFoundError: "command not found",
                       PermissionError: "permission denied"}.get(type(e), e.strerror)
                os.write(2, f"roar: {argv[0]}: {why}\n".encode("utf-8", "surrogateescape"))
                os._exit(127 if isinstance(e, FileNotFoundError) else 126)
        finally:
            os._exit(RUN_REFUSED)
    os.close(r)
    return pid, w


def _exec_path() -> list[str]:
    """os.get_exec_path(), which imports warnings: in the workload's process
    (its first, before its exec) that import's reads would be the run's."""
    path = os.environ.get("PATH")
    return (os.defpath if path is None else path).split(os.pathsep)


def _execvp(argv: list[str], dirs: list[str]) -> None:
    """os.execvp(argv[0], argv) over dirs (_exec_path): the same execs in the
    same order, the same error raised when none succeeds."""
    file = argv[0]
    if os.path.dirname(file):
        os.execv(file, argv)
    saved = last = None
    for d in dirs:
        try:
            os.execv(os.path.join(os.fsencode(d), os.fsencode(file)), argv)
        except (FileNotFoundError, NotADirectoryError) as e:
            last = e
        except OSError as e:
            last = e
            if saved is None:
                saved = e
    raise saved if saved is not None else last


def _install_hold(sock) -> None:
    """In the workload, before its exec: install the pre-image hold's filter and
    send its listener to roar run (or why it could not be installed). Without
    CAP_SYS_ADMIN the kernel requires no_new_privs first."""
    from roar.capture import protocol, seccomp

    try:
        try:
            fd = seccomp.install(no_new_privs=os.geteuid() != 0)
        except PermissionError:  # root without CAP_SYS_ADMIN (a container)
            fd = seccomp.install(no_new_privs=True)
        protocol.send_fds(sock, b"ok", [fd])
        os.close(fd)
    except OSError as e:
        try:
            sock.send(f"no: {e.strerror or e}".encode())
        except OSError:
            pass
    sock.close()


def _hold_listener(sock) -> tuple[int | None, str]:
    """The listener the released workload sends (it installs the filter first
    thing): (fd, "") or (None, why not)."""
    from roar.capture import protocol

    try:
        sock.settimeout(10)
        msg, fds = protocol.recv_fds(sock, 256, 1)
    except OSError as e:
        return None, f"no answer from the workload: {e.strerror or e}"
    finally:
        sock.close()
    if msg == b"ok" and fds:
        return fds[0], ""
    for fd in fds:
        os.close(fd)
    return None, msg.decode(errors="replace") or "the workload ended first"


def run(argv: list[str], name: str | None = None, allow_dirty: bool = False,
        linger: float = DEFAULT_LINGER, store: Store | None = None,
        request_id: str | None = None, group: str | None = None, audit: bool = False,
        policy: str | None = None, no_git: bool = False, workload=None) -> int:
    """Run argv traced; returns the exit status roar should exit with.
    group: the job group (--group); else found in the environment (groups.detect).
    audit: also keep the session's audit (roar/record/audit.py), under the
    policy file given, if any. workload: who forks and waits for the command
    (LocalWorkload, this process, unless given)."""
    workload = workload or LocalWorkload()
    check_command(argv)
    if group is not None and (why := groups.check_flag(group)):
        raise RunError(why)
    store = store or Store()
    store.check_space()
    audit_policy = _load_policy(policy) if audit else None
    run_id = new_run_id()
    session = daemon_session()
    if session is None and os.geteuid() == 0:
        session = _start_roard()
    prepared = None
    if session is None:  # embedded probes, for root: refuse first, then load them (seconds)
        if os.geteuid() != 0:
            raise RunError("no roar daemon is running and tracing needs root: ask an admin to "
                           "run `roar daemon start` (or run roar as root)")
        from roar.capture.namespaces import in_child_pid_namespace

        if in_child_pid_namespace():
            raise RunError("no roar daemon is reachable and this is a pid namespace of its own "
                           "(a container): the kernel's records name host pids, which only a "
                           "roard on the host can match; run roard there and set ROAR_SOCKET "
                           "to its socket (docs/deploy.md)")
        prepared = _prepare(store, argv, run_id, name, allow_dirty, request_id, "embedded",
                            group, no_git, client_pid=workload.client_pid)
        session = EmbeddedSession()
    logs = _regular_output_files()
    hold = theirs = None
    if os.environ.get("ROAR_PREIMAGE", "1") not in ("0", "off", "no"):  # docs/preimage.md
        import _socket

        # imported (and its filter built) here, not in the workload: a file it
        # opened after being placed in the run's cgroup would be the run's
        from roar.capture import seccomp

        seccomp.program()

        hold, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    home = os.path.realpath(store.home_dir)
    # prompt: an audit policy's kill, or inputs rewritten soon after their
    # read with no hold to wait for their hash, want records within ms
    prompt = audit_policy is not None or hold is None
    into = workload.clones_into and isinstance(session, DaemonSession)
    cgroup_dir = None
    if into:  # the launcher forks the workload straight into its run cgroup
        try:
            try:
                cgroup_dir = session.begin_into(workload.client_pid, run_id, home,
                                                workload.root_fds(), prompt=prompt)
            except OlderDaemon:  # until it is restarted: moved there, as it does
                session.close()
                session, into = DaemonSession(), False
        except BaseException:
            if hold is not None:
                hold.close()
                theirs.close()
            session.abort()
            session.close()
            raise
    old_mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, [*forwarded(), _signal.SIGCHLD])
    try:
        pid = workload.spawn(argv, run_id, theirs, cgroup_dir)
    except BaseException:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, old_mask)
        if into:
            session.abort()
            session.close()
        raise
    finally:
        if theirs is not None:
            theirs.close()
    try:
        root_fds = workload.root_fds()
        start_ns = time.monotonic_ns()
        # roard creates the run's cgroup, tags it and moves the held workload
        # there (a cgroup migration: milliseconds; none when it was cloned into
        # it) while the checks that may still refuse the run are made here
        if into:
            session.give_pid(pid)
        else:
            session.begin(pid, run_id, home, root_fds, prompt=prompt)
        record, gate = prepared or _prepare(store, argv, run_id, name, allow_dirty,
                                            request_id, session.mode, group, no_git,
                                            meanwhile=_preload,
                                            client_pid=workload.client_pid)
        session.started()
        record["cgroup"] = session.placement  # where the run cgroup is, and why there
        record["namespaces"] = session.namespaces
        store.put_run(record)  # "running" before the command starts: never lost
    except BaseException:
        workload.abandon()
        if hold is not None:
            hold.close()
        session.abort()  # nothing ran: roard keeps nothing
        session.close()
        _signal.pthread_sigmask(_signal.SIG_SETMASK, old_mask)
        raise
    # before the workload can do anything: the coarse clock file times come
    # from (CLOCK_REALTIME_COARSE), then the wall clock
    released_coarse_ns = time.clock_gettime_ns(CLOCK_REALTIME_COARSE)
    released_wall_ns = time.time_ns()
    workload.release()
    listener = None
    if hold is not None:
        listener, why = _hold_listener(hold)
        if listener is None:
            print(f"roar: warning: the pre-image hold is off for this run ({why}): an input "
                  f"rewritten by the run within microseconds of its read is recorded "
                  f"unverified", file=sys.stderr)
        else:
            session.give_listener(listener)
    mark("start")
    if session.placement and session.placement.get("note"):
        print(f"roar: warning: {session.placement['note']}", file=sys.stderr)

    # The workload runs. Its records wait in the session until the model reads them.
    try:
        from roar.record.recorder import RunRecorder

        recorder = RunRecorder(store, record, session.host_pid or pid, root_fds,
                               start_ns=start_ns)
        recorder.released_wall_ns = released_wall_ns
        recorder.released_coarse_ns = released_coarse_ns
        if _kept_to_exit is not None:
            _kept_to_exit.append(recorder)
        if isinstance(session, DaemonSession):  # roard starts its pending-hash job
            recorder.fill_via = session.path
        feeder = recorder
        if audit_policy is not None:
            feeder = _tracker(store, record, recorder, audit_policy, session)
        keep = _keep_events(session.host_pid or pid, record, root_fds, start_ns)
        # a daemon: the end of run() joins it; a start that fails after it (a
        # thread the job's pids.max refuses) exits without it, and roard, whose
        # client went away, keeps the run from its spool
        consumer = threading.Thread(target=_consume,
                                    args=(session, recorder, feeder, pid, keep),
                                    name="roar-model", daemon=True)
        consumer.start()
        supervisor = None
        if listener is not None:  # after the consumer: its barriers need the model fed
            from roar.record import preimage

            supervisor = preimage.Supervisor(listener, recorder.model, recorder.hasher,
                                             session.barrier, recorder.start_wall,
                                             released_wall_ns)
            recorder.existed_at_open = supervisor.existed
            supervisor.start()
        gpus: list = []
        gpu_thread = None
        smi = context.which("nvidia-smi")
        cached = context.gpus_cached(store.home_dir, smi) if smi else None
        if cached is not None:
            gpus.append(cached)
        elif smi:  # asked while the workload runs (nvidia-smi takes ~0.1 s); no GPU, no thread
            gpu_thread = threading.Thread(target=lambda: gpus.append(context.gpus(smi)),
                                          daemon=True)
            gpu_thread.start()
    except RuntimeError as e:  # "can't start new thread": roar's threads count in pids.max
        workload.signal(_signal.SIGKILL)  # never leave it running unrecorded
        raise RunError(f"could not start roar's threads ({e}): the process limit of the "
                       f"job's cgroup (pids.max) is reached; the command was ended", 1) from None
    except BaseException:
        workload.signal(_signal.SIGKILL)  # never leave it running unrecorded
        raise
    if _gc_at_release:
        gc.freeze()  # the start's objects (modules...) live to the end: out of its sight
        gc.enable()
    mark("model ready (the workload runs)")
    status, interrupted = workload.wait(gate, session)
    mark("workload")
    session.root_exited(linger)
    mark("cgroup empty and drained")
    consumer.join()
    mark("model caught up")
    if supervisor is not None:
        supervisor.stop()
        if timing.ENABLED:
            print(f"roar-preimage: {jsonc.dumps(supervisor.stats())}", file=sys.stderr)
        problems = supervisor.problems
        if problems:  # held syscalls continued all the same; a bug in roar if any
            recorder.model.problem(f"pre-image hold: {'; '.join(sorted(problems))}")
    if listener is not None:
        os.close(listener)
    if keep is not None:
        keep.close()
    _signal.pthread_sigmask(_signal.SIG_SETMASK, old_mask)
    notes = []
    if session.killed:
        record["leftovers_killed"] = session.killed
        print(f"roar: {session.killed} process(es) still running {linger:g}s after the first "
              f"one exited were ended", file=sys.stderr)
    if getattr(session, "died", False):  # the consumer stopped the workload
        interrupted = True
        notes.append(codes.reason(codes.Reason.ROARD_DIED))
        print("roar: roard died before the run ended: the workload was stopped",
              file=sys.stderr)
    if getattr(session, "dropped", 0):
        notes.append(codes.reason(codes.Reason.RECORDS_DROPPED, n=session.dropped,
                                  why=session.dropped_why or "its spool was full"))
    if gpu_thread is not None:
        gpu_thread.join(timeout=5)
        if gpus and gpus[0]:
            context.remember_gpus(store.home_dir, smi, gpus[0])
    record["gpus"] = gpus[0] if gpus else None
    if gate is not None and gate.stopped:
        notes.append(gate.stopped)
    if feeder is not recorder:
        record["audit"] = feeder.finish(session.killed_at_ns)
        if feeder.stream is not None:
            feeder.stream.close({"type": "end", "run": run_id})
            feeder.stream.path.unlink(missing_ok=True)
        if feeder.killed_by:
            notes.append(f"killed by policy: {feeder.killed_by}")
            print(f"roar: killed by policy: {feeder.killed_by}", file=sys.stderr)
    try:
        run = recorder.finish(status, interrupted, session.lost, notes)
    except StoreError as e:
        session.unstored(str(e))  # roard keeps its spool and rebuilds the run from it
        session.close()
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code
        print(f"roar: the run could not be stored: {e}; the command exited {code}",
              file=sys.stderr)
        return code or 1
    # the run's records (tens of thousands of objects, made with the collector
    # off) live until this process exits: out of its sight, or the next
    # allocation walks them all (~50 ms for 20,000 files)
    gc.freeze()
    from roar.record import chain

    # roard appends the run to the tamper-evident chain while the rest is done here
    # (the file records themselves only when a hash is pending: a run's end
    # builds tens of thousands of them only when asked, recorder.files)
    chain_req = chain.chain_request(store, run["id"],
                                    recorder.files if recorder.pending_paths else None,
                                    recorder.procs, recorder.stored, recorder.pending_paths,
                                    recorder.digests)
    session.stored(chain_req)
    for msg in recorder.messages:
        print(f"roar: {msg}", file=sys.stderr)
    from roar.query import links

    found = links.from_records((), [(p, start, _size(p)) for p, start in logs],
                               run_id=run["id"], written=recorder.written)
    if found:  # none reads as none stored: no write (and sync) for it
        store.set_links(run["id"], found)
    if gate is not None:
        gate.resolve(store, run, recorder.files)
        _say(gate)
    _chain(run["id"], chain_req, session)
    session.close()
    from roar.shared.outbox import kick

    problem = kick(store.home_dir)  # the run is in the outbox already; this pushes it soon
    if problem:
        print(f"roar: {problem}", file=sys.stderr)
    mark("end: links, chain, shared outbox")
    _summary(run)
    return run["exit_code"] if run["exit_code"] is not None else 1


# What a run uses only after its workload is released: the event model, the
# recorder and what the end of the run uses (~45 ms of CPU). They are imported
# while git's commands run and roard creates, tags and populates the run's cgroup
# (5-25 ms, in other processes), where this process would otherwise only wait.
# In this thread: a second one would hand the GIL back late (up to the switch
# interval) at each of this one's wake-ups. A failed import is reported where
# the module is used (imported again there).
PRELOAD = ("roar.record.recorder", "roar.record.preimage", "roar.query.links",
           "roar.record.chain", "roar.shared.outbox")


def _preload() -> None:
    for name in PRELOAD:
        try:
            __import__(name)  # importlib.import_module would import importlib (~1 ms)
        except Exception:  # noqa: BLE001 - imported again where used, and reported there
            return


def _prepare(store: Store, argv: list[str], run_id: str, name: str | None,
             allow_dirty: bool, request_id: str | None, mode: str,
             group: str | None = None, no_git: bool = False,
             meanwhile=None, client_pid: int | None = None) -> tuple[dict, object]:
    """The run document as it starts, and the training request's gate; raises
    RunError when the run may not start (dirty work tree, request refused).
    meanwhile(): called once, while git's commands run."""
    key = context.store_key(store)
    cwd = os.getcwd()
    try:
        git = None if no_git else context.git_state(cwd, allow_dirty, meanwhile=meanwhile)
    except context.GitError as e:
        raise RunError(str(e)) from None
    if no_git and meanwhile is not None:
        meanwhile()
    from roar.record.classify import RulesError, load_rules

    try:  # the user's classification rules: a broken file refuses the run
        rules = load_rules(store.home_dir, git["root"] if git else None)
    except RulesError as e:
        raise RunError(str(e)) from None
    gate = None
    if request_id is not None or any_policy(store.home_dir, git["root"] if git else None):
        from roar.requests import training as requests

        try:
            gate = requests.gate_run(store, request_id, argv, git, context.user())
        except requests.RequestError as e:
            raise RunError(str(e)) from None
        _say(gate)
    if git and git.get("untracked"):
        from roar.record.hasher import hash_path

        git["untracked"] = {p: hash_path(os.path.join(git["root"], p))[0].hash
                            for p in git["untracked"]}
    record = {
        "id": run_id, "name": name, "status": "running", "command": argv,
        "command_redacted": context.redact_argv(argv, key), "cwd": cwd,
        "user": context.user(), "uid": os.getuid(), **context.host(),
        "started_at": now_iso(),
        "ended_at": None, "exit_code": None, "signal": None,
        "git": git, "env": context.environment(dict(os.environ), key), "mode": mode,
        "client_pid": os.getpid() if client_pid is None else client_pid,
        "complete": None, "lost_events": None,
        "request": request_id, "group": groups.detect(os.environ, group),
        "classify_rules": [r.to_doc() for r in rules],
    }
    if any(a != b for a, b in zip(argv, record["command_redacted"], strict=False)):
        record["command"] = record["command_redacted"]
    return record, gate


def _regular_output_files() -> list[tuple[str, int]]:
    """roar's stdout/stderr when they are regular files (batch jobs), with the
    offset the run's output starts at: scanned afterwards for tracker links
    (W&B / MLflow run URLs...) without touching what the workload writes."""
    out = []
    for fd in (1, 2):
        try:
            st = os.fstat(fd)
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and path.startswith("/") and path not in dict(out):
            out.append((path, st.st_size))
    return out


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _chain(run_id: str, req: dict | None, session) -> None:
    """Check the stored run's append to the tamper-evident chain roard keeps
    (handed to it with the session's `stored`; else asked again, or written
    by root itself: chain.appended)."""
    from roar.record import chain

    why = f"run {run_id} is not in the store" if req is None else chain.appended(
        req, session.chained())
    if why:
        print(f"roar: run {run_id} is not in the tamper-evident chain: {why}", file=sys.stderr)


def _load_policy(path: str | None):
    """The audit policy, refused (one line) before anything runs."""
    from roar.record import audit

    try:
        return audit.load_policy(path, os.getcwd(), audit.homes_of())
    except audit.PolicyError as e:
        raise RunError(str(e)) from None


def _tracker(store, record, recorder, policy, session):
    """The audit tracker of an audited run; its workspace defaults to the git
    work tree (else the working directory)."""
    from roar.record import audit

    git = record.get("git")
    if git and not policy.workspace_given:  # relative globs follow the workspace
        policy = audit.load_policy(policy.source, git["root"], policy.homes)
    stream = audit.EventStream(audit.stream_path(store.home, record["id"]))
    return audit.AuditTracker(recorder, policy, kill=session.kill_run, stream=stream)


def _keep_events(root_pid: int, record: dict, root_fds: dict, start_ns: int):
    """ROAR_KEEP_EVENTS=FILE (or a directory: DIR/RUN_ID.events): the file the
    run's raw records are also written to (roar/capture/events.py,
    write_stream), or None."""
    path = os.environ.get("ROAR_KEEP_EVENTS")
    if not path:
        return None
    if os.path.isdir(path):
        path = os.path.join(path, f"{record['id']}.events")
    from roar.capture.events import write_stream

    try:
        f = open(path, "wb")  # noqa: SIM115 - closed after the model caught up
    except OSError as e:
        print(f"roar: warning: ROAR_KEEP_EVENTS: cannot write {path}: {e.strerror}",
              file=sys.stderr)
        return None
    write_stream(f, {"root_pid": root_pid, "cwd": record["cwd"], "argv": record["command"],
                     "root_fds": root_fds, "start_ns": start_ns}, ())
    return f


def _consume(session, recorder, feeder=None, pid: int = 0, keep=None) -> None:
    """Feed every record to the model (through the audit tracker, if any). A
    record the model cannot digest is a bug in roar: it is counted and named
    on the run, and the stream is still drained to the end so nothing else
    is dropped. If roard dies meanwhile the workload is stopped at once: it
    would go on untraced. keep: a file every record is also written to
    (ROAR_KEEP_EVENTS)."""
    try:
        _feed(session, recorder, feeder or recorder, keep)
    finally:
        if getattr(session, "died", False) and pid > 0:
            session.stop_workload(pid)


def _keeping(sink, keep):
    """sink (the compiled model's feed_frames), also writing each event frame it
    took to the kept stream: runs that keep their records (the capture tests
    keep every run's) take the path every other run takes."""
    from roar.capture.protocol import EVENT, FRAME

    head, unpack = FRAME.size, FRAME.unpack_from

    def take(buf, pos, max_frame):
        end, err = sink(buf, pos, max_frame)
        while pos < end:  # only event frames: it stops before anything else
            kind, size = unpack(buf, pos)
            if kind == EVENT:
                keep.write(size.to_bytes(4, "little") + buf[pos + head:pos + head + size])
            pos += head + size
        return end, err

    return take


def _feed(session, recorder, feeder, keep=None) -> None:
    # the compiled model takes roard's event frames itself (no Python per record),
    # unless each record also goes to the audit tracker
    sink = getattr(recorder.model, "feed_frames", None) if feeder is recorder else None
    if sink is not None and keep is not None:
        sink = _keeping(sink, keep)
    for raw in session.records(sink):
        try:
            if raw is None:  # caught up with the run: work ahead on the end
                if recorder.prebuild():
                    # what the model and the recorder hold is kept to the end of
                    # the run, when this process exits: out of the cyclic
                    # collector's sight, which would walk it again at every
                    # collection (~7 µs per file of 20,000). Only after records
                    # were built (cycles that are garbage just then stay too:
                    # at most one young generation's worth per look that built)
                    gc.freeze()
                continue
            if raw.__class__ is not bytes:
                if isinstance(raw, BaseException):  # raised by a record the sink fed
                    raise raw
                raw()  # a barrier: the pre-image hold's question
                continue
            if keep is not None:
                keep.write(len(raw).to_bytes(4, "little") + raw)
            feeder.feed_raw(raw)
        except Exception as e:  # noqa: BLE001 - reported on the run record, not hidden
            recorder.model.problem(f"internal error handling an event: {type(e).__name__}: {e}")


def _wait_root(pid: int, gate=None, session=None, workload=None) -> tuple[int, bool]:
    """Wait for the first process, forwarding signals sent to roar alone and
    letting a training request's budget stop the workload."""
    interrupted = False
    started = time.monotonic()
    stop_sent = None
    signals = forwarded()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status, interrupted
        stop_sent = _budget(gate, started, stop_sent, workload or _Pid(pid))
        interrupted = interrupted or stop_sent is not None
        info = _signal.sigtimedwait([*signals, _signal.SIGCHLD], 0.5)
        # SIGCONT after a stop (Ctrl-Z, fg) ends the wait with signo 0: no signal
        if info is None or info.si_signo not in signals:
            continue
        interrupted = True
        forward(info.si_signo, info.si_code in (SI_USER, SI_QUEUE, SI_TKILL), session,
                workload or _Pid(pid))


class _Pid:
    def __init__(self, pid: int):
        self.pid = pid

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)


def _budget(gate, started: float, stop_sent: float | None, workload) -> float | None:
    """A training request's budget check: when it says stop, SIGTERM the root,
    then SIGKILL after STOP_GRACE. Returns when the stop was first sent (None:
    not stopped)."""
    verdict = gate.check(time.monotonic() - started) if gate is not None else None
    _say(gate)
    if verdict != "stop":
        return stop_sent
    now = time.monotonic()
    if stop_sent is None:
        stop_sent = now
    # SIGTERM first; a workload that ignores it is killed after a grace
    sig = _signal.SIGKILL if now - stop_sent > STOP_GRACE else _signal.SIGTERM
    try:
        workload.signal(sig)
    except ProcessLookupError:
        pass
    return stop_sent


def forward(sig: int, by_user: bool, session, workload) -> None:
    """A forwarded signal roar got: one sent by another process (by_user) did
    not reach the workload, so every process of the run gets it, as a
    terminal's group would; one from the terminal reached the whole
    foreground group, workload included, already."""
    if not by_user:
        return
    targets = set(session.pids()) if session is not None else set()
    targets.discard(workload.pid)
    try:  # the root first: a shell whose child died first may exit 0 before it gets it
        workload.signal(sig)
    except (ProcessLookupError, PermissionError):
        pass
    for target in sorted(targets):
        try:
            os.kill(target, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _say(gate) -> None:
    """Print what the training request's gate has to say (roar's own stderr)."""
    for msg in gate.take_messages() if gate is not None else ():
        print(f"roar: {msg}", file=sys.stderr)


def _summary(run: dict) -> None:
    c = run["counts"]
    state = "complete" if run["complete"] else "INCOMPLETE: " + "; ".join(
        run["incomplete_reasons"])
    print(f"roar: run {run['id']} {run['status']}, exit {run['exit_code']}: "
          f"{c['inputs']} inputs, {c['outputs']} outputs, {c['processes']} processes, {state}",
          file=sys.stderr)
