"""`roar attach PID`: record an already-running process tree (an agent
session) from now on, as a run of kind `attached`, audited.

roard moves the tree into a run cgroup (roar/capture/attach.py) and hands
back a snapshot of each process; the process model starts from those
snapshots instead of a process it saw start. The session ends when the
cgroup is empty (the tree and everything it started, daemonized helpers
included, has exited) or on `roar detach RUN` / a signal to this command,
which give the tree back to its cgroup untouched. What the tree did before
the attach is unknown: the run is stored incomplete, membership `unknown`.
"""

from __future__ import annotations

import getpass
import os
import signal
import sys
import threading
import time
from pathlib import Path

from roar.capture import cgroups
from roar.capture.protocol import SessionError
from roar.capture.session import DaemonSession
from roar.cli.run import _chain, _consume
from roar.record import audit, context
from roar.record.ids import new_run_id, now_iso
from roar.record.runmodel import FdEntry, OpenFile
from roar.record.store import Store

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
BEFORE_UNKNOWN = "attached to a running process tree: what it did before the attach is unknown"


class AttachError(Exception):
    """The session could not be attached; nothing was changed."""


def _target(pid: int) -> tuple[list[str], str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [os.fsdecode(a) for a in f.read().split(b"\0")[:-1]]
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except FileNotFoundError:
        raise AttachError(f"no process {pid}") from None
    except PermissionError:
        raise AttachError(f"process {pid} is not yours: you may only attach to your own "
                          f"processes") from None
    return argv, cwd


def attach(pid: int, name: str | None = None, policy_path: str | None = None,
           store: Store | None = None, on_start=None) -> dict:
    """Record pid's tree until it exits or is detached; returns the stored run.
    on_start(run_id): called once the tree is traced."""
    store = store or Store()
    store.check_space()
    argv, cwd = _target(pid)
    git = context.git_state(cwd, allow_dirty=True)
    try:
        policy = audit.load_policy(policy_path, git["root"] if git else cwd,
                                   audit.homes_of(pid))
    except audit.PolicyError as e:
        raise AttachError(str(e)) from None
    from roar.record.classify import RulesError, load_rules

    try:
        rules = load_rules(store.home, git["root"] if git else None)
    except RulesError as e:
        raise AttachError(str(e)) from None
    try:
        session = DaemonSession()
    except SessionError as e:
        raise AttachError(f"roar attach needs roard ({e}): `roar daemon start` as root") from None
    run_id = new_run_id()
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        session.attach(pid, run_id, str(store.home.resolve()))
        session.started()
    except SessionError as e:
        session.close()
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        raise AttachError(str(e).replace("roard refused: ", "")) from None
    start_ns = time.monotonic_ns()
    if on_start is not None:
        on_start(run_id)
    key = context.store_key(store)
    record = {
        "id": run_id, "name": name, "status": "running", "command": argv,
        "command_redacted": context.redact_argv(argv, key), "cwd": cwd,
        "user": getpass.getuser(), "uid": os.getuid(), **context.host(),
        "started_at": now_iso(), "ended_at": None, "exit_code": None, "signal": None,
        "git": git, "env": {}, "mode": "attached", "attached_pid": pid,
        "client_pid": os.getpid(), "complete": None, "lost_events": None,
        "classify_rules": [r.to_doc() for r in rules],
    }
    record["command"] = record["command_redacted"]
    if git and git.get("untracked"):
        record["git"] = {**git, "untracked": {p: None for p in git["untracked"]}}
    store.put_run(record)

    from roar.record.recorder import RunRecorder

    snaps = session.attached or []
    root = next((s for s in snaps if s["pid"] == pid), None)
    root_fds = {int(k): v for k, v in (root["fds"] if root else {}).items()}
    recorder = RunRecorder(store, record, pid, root_fds, start_ns=start_ns)
    _adopt(recorder.model, snaps, pid, start_ns)
    stream = audit.EventStream(audit.stream_path(store.home, run_id))
    tracker = audit.AuditTracker(recorder, policy, kill=session.kill_run, stream=stream,
                                 kind="attached")
    for s in snaps:
        tracker.adopted(s)
    consumer = threading.Thread(target=_consume, args=(session, recorder, tracker),
                                name="roar-model")
    consumer.start()
    stopped = _wait(Path(session.cgroup_path), session)
    session.root_exited(0)
    consumer.join()
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    notes = [BEFORE_UNKNOWN]
    if (session.end or {}).get("detached"):
        notes.append("detached before the session ended"
                     + (" (roar attach was stopped)" if stopped else ""))
    if session.died:
        notes.append("roard died before the session ended: what its processes did "
                     "afterwards was not traced")
    record["audit"] = tracker.finish(session.killed_at_ns)
    stream.close({"type": "end", "run": run_id})
    stream.path.unlink(missing_ok=True)
    if tracker.killed_by:
        notes.append(f"killed by policy: {tracker.killed_by}")
    run = recorder.finish(None, False, session.lost, notes)
    from roar.record import chain

    chain_req = chain.chain_request(store, run["id"], recorder.files, recorder.procs,
                                    recorder.stored, recorder.pending_paths)
    session.stored(chain_req)  # roard appends it to the chain before it closes
    _chain(run["id"], chain_req, session)
    session.close()
    return run


def _adopt(model, snaps: list[dict], root_pid: int, ts: int) -> None:
    """Processes the model did not see start, as they were at the attach."""
    for s in snaps:
        if s["pid"] == root_pid:
            model.root.exe = s["exe"]
            continue
        parent = model.live.get(s["ppid"])
        fds = {int(k): v for k, v in s["fds"].items()}
        p = model._new_proc(s["pid"], parent, s["argv"], s["cwd"],
                            {fd: FdEntry(OpenFile(path, 0), False) for fd, path in fds.items()},
                            ts)
        p.exe = s["exe"]


def _wait(cgroup: Path, session: DaemonSession) -> bool:
    """Until the run cgroup is empty; a stop signal detaches (the tree goes
    on, untraced). Returns whether this command was stopped."""
    stopped = False
    while cgroups.populated(cgroup):
        info = signal.sigtimedwait(STOP_SIGNALS, 0.05)
        if info is not None and not stopped:
            stopped = True
            session.detach()
    return stopped


def detach(run_ref: str) -> str:
    """Ask roard to give an attached session's tree back; returns the run id."""
    from roar.capture.session import detach_run

    try:
        reply = detach_run(run_ref)
    except SessionError as e:
        raise AttachError(str(e)) from None
    if not reply.get("ok"):
        raise AttachError(reply.get("error", "roard refused"))
    return reply["run"]


def cli_attach(pid: int, name: str | None, policy: str | None, as_json: bool) -> None:
    """`roar attach` as the command line does it: errors are one line."""
    import json

    from roar.cli.output import fail

    def started(run_id: str) -> None:
        print(f"roar: attached to {pid}: run {run_id} (roar detach {run_id[:10]} to stop)",
              file=sys.stderr, flush=True)
        if as_json:
            print(json.dumps({"event": "attached", "run": run_id, "pid": pid}), flush=True)

    try:
        run = attach(pid, name, policy, Store(), on_start=started)
    except AttachError as e:
        fail(str(e))
    alerts = len((run.get("audit") or {}).get("alerts") or [])
    if as_json:
        print(json.dumps({"event": "ended", "run": run["id"], "status": run["status"],
                          "exit_code": run["exit_code"], "complete": run["complete"],
                          "alerts": alerts}), flush=True)
    print(f"roar: session {run['id']} ended ({run['status']}, exit {run['exit_code']}): "
          f"{run['counts']['processes']} processes, {alerts} alert(s); "
          f"roar audit {run['id'][:10]}", file=sys.stderr)
