"""Filling in content hashes that were still being computed when a run
ended (huge inputs or outputs): `roar run` records them as pending and
returns; this background job hashes them and completes the record.

A late hash counts only if the file has not changed since the bound the
record carries (the run's first open for an input, the run's end for an
output); otherwise the version is recorded as unverified, never guessed.

A filler holds a lock on the run ($ROAR_HOME/pending/RUN.lock) while it
works: `roar pending` tells runs being hashed from runs whose filler died
(a job scheduler ends the detached child with the job), and `roar pending
--resume` finishes the latter in the foreground.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from pathlib import Path

from roar.record.codes import Reason, reason
from roar.record.hasher import OK, hash_path
from roar.record.store import Store

FILL_ENV = ("ROAR_SHARED", "ROAR_SHARED_RETRY_S")  # what the job needs of the caller's env


def start_fill(home: Path, run_id: str, daemon: Path | None = None) -> str | None:
    """Start the job that hashes the run's pending files. Through roard when
    its socket is given: roard starts it as the caller, outside the caller's
    batch job, so the scheduler ending the job does not end it. Else (no
    roard, or it could not) detached from this process. Returns what the
    user should know, if anything."""
    why = None
    if daemon is not None:
        from roar.capture import protocol

        env = {k: os.environ[k] for k in FILL_ENV if k in os.environ}
        try:
            answer = protocol.ask({"op": "fill", "run_id": run_id, "home": str(home),
                                   "env": env}, daemon, timeout=30)
        except (OSError, ValueError, protocol.NoDaemon, protocol.ProtocolError) as e:
            answer = {"ok": False, "error": str(e)}
        if answer.get("ok"):
            return None
        why = str(answer.get("error"))[:300]
    problem = start_background_fill(home, run_id)
    if problem or why is None:
        return problem
    return (f"roard could not start the hashing of run {run_id} ({why}): it goes on in the "
            "background here; if a batch job ends it first, `roar pending --resume` finishes it")


def start_background_fill(home: Path, run_id: str) -> str | None:
    """Start the filler detached from this process (it outlives `roar run`):
    roar/cli/fill.py, which also pushes the completed run to a shared store.
    Returns why it could not be started, if it could not."""
    env = {**os.environ, "ROAR_HOME": str(home),
           "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[2]),
                                                     os.environ.get("PYTHONPATH")) if p)}
    try:
        subprocess.Popen([sys.executable, "-m", "roar.cli.fill", run_id], env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as e:  # the record says pending; say why it stays so
        return f"could not start the background hashing of run {run_id}: {e}"
    return None


@contextlib.contextmanager
def fill_lock(home: Path, run_id: str):
    """Held while a filler works on the run: yields whether this one got it."""
    d = Path(home) / "pending"
    d.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(d / f"{run_id}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
        os.unlink(d / f"{run_id}.lock")
    finally:
        os.close(fd)


def being_filled(home: Path, run_id: str) -> bool:
    """Whether a filler holds the run's lock now."""
    try:
        fd = os.open(Path(home) / "pending" / f"{run_id}.lock", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def pending_runs(store: Store) -> list[dict]:
    """Runs with hashes still pending, newest first: {run, name, started_at,
    files: [{path, role}], hashing (a filler is at work), progress}."""
    out = []
    runs = [run for run in store.iter_runs()
            if any(r.get("code") == Reason.HASH_PENDING for r in run.get("reasons") or [])]
    for run in runs:
        files = [{"path": f["path"], "role": f["role"]} for f in store.run_files(run["id"])
                 if f.get("status") == "pending"]
        out.append({"run": run["id"], "name": run.get("name"),
                    "started_at": run.get("started_at"), "files": files,
                    "hashing": being_filled(store.home, run["id"]),
                    "progress": run.get("hash_progress")})
    return out


def fill(store: Store, run_id: str, progress=None) -> int:
    """Hash every pending file record of the run; returns how many were filled
    (0 when another filler is at work on it). progress(path, done, size)."""
    with fill_lock(store.home, run_id) as mine:
        return _fill(store, run_id, progress) if mine else 0


def _fill(store: Store, run_id: str, progress) -> int:
    files = store.run_files(run_id)
    filled = 0
    unverified = 0
    todo = [f for f in files if f.get("status") == "pending"]
    for i, f in enumerate(todo):
        res, key = hash_path(f["path"], store.cached_hash_key,
                             progress=_reporter(store, run_id, f["path"], i, len(todo), progress))
        bound = f.pop("pending_bound_ns", None)
        if res.status == OK and bound is not None and (res.ctime_ns or 0) > bound:
            f.update(hash=None, size=res.size, status="unverified",
                     error="changed after the run used it, before it could be hashed")
        else:
            f.update(hash=res.hash, size=res.size, status=res.status, error=res.error)
            if key is not None and res.hash:
                store.cache_hashes([(key, res.hash)])
        if f["status"] not in (OK, "special") and f["role"] == "input":
            unverified += 1
        filled += 1
    if not filled:
        return 0

    store.fill_files(run_id, files, {Reason.HASH_PENDING},
                     [reason(Reason.UNHASHED_LATE, n=unverified)] if unverified else [])
    return filled


def _reporter(store: Store, run_id: str, path: str, index: int, count: int, told=None):
    """Progress of a long hash, kept on the run (`hash_progress`) for roar show
    and `roar pending`, and told to told(path, done, size) if given."""
    def report(done: int, size: int) -> None:
        progress = {"path": path, "file": index + 1, "files": count,
                    "bytes_done": done, "bytes": size}
        store.set_hash_progress(run_id, progress)
        if told is not None:
            told(path, done, size)

    return report
