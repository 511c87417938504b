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
