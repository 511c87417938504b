"""Doing work for a client with the client's own credentials: roard forks a
child that drops to the caller's uid and groups before it opens any path the
client named, so root's rights never reach a user's store or files."""

from __future__ import annotations

import json
import os
import pwd
import select
import signal
import time


def run_as(uid: int, fn, before=None, timeout: float = 60.0) -> dict:
    """fn(prepared) in a forked child running as uid (with its groups);
    `before()` runs in the child as root first (e.g. to open a root-only
    file). fn returns a JSON-able dict, which is returned here; a failure
    becomes {"ok": False, "error": ...}."""
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return {"ok": False, "error": f"uid {uid} has no user name"}
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no other threads, no exec; what it needs is imported
        try:
            os.close(r)
            prepared = before() if before is not None else None
            os.setgroups(os.getgrouplist(pw.pw_name, pw.pw_gid))
            os.setgid(pw.pw_gid)
            os.setuid(uid)
            out = fn(prepared)
        except BaseException as e:  # noqa: BLE001 - the child must answer, then _exit
            out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        try:
            os.write(w, json.dumps(out, default=str).encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                return {"ok": False, "error": "the work did not finish in time"}
            data = os.read(r, 1 << 16)
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return {"ok": False, "error": "the work ended without an answer"}


def spawn_as(uid: int, argv: list[str], env: dict, ready_s: float = 15.0):
    """Start argv as uid (its groups; cwd /; a session of its own, so it
    outlives whatever asked for it) and wait until it says it has started: its
    first line on stdout. Returns (process, None), or (None, why) when it could
    not start, died, or said nothing in ready_s. The caller reaps the process."""
    import subprocess

    creds = {}
    if uid != os.geteuid():
        try:
            pw = pwd.getpwuid(uid)
        except KeyError:
            return None, f"uid {uid} has no user name"
        creds = {"user": uid, "group": pw.pw_gid,
                 "extra_groups": os.getgrouplist(pw.pw_name, pw.pw_gid)}
    try:
        proc = subprocess.Popen(argv, env=env, cwd="/", stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                start_new_session=True, **creds)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"could not start {argv[0]}: {e}"
    try:
        line = b""
        deadline = time.monotonic() + ready_s
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                proc.kill()
                proc.wait()
                return None, f"{argv[0]} did not start in {ready_s:g}s"
            chunk = os.read(proc.stdout.fileno(), 256)
            if not chunk:
                code = proc.wait()
                return None, f"{argv[-1] if len(argv) > 1 else argv[0]} exited {code} at start"
            line += chunk
    finally:
        proc.stdout.close()  # it says one line; anything more is not read
    return proc, None
