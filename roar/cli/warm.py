"""The warm recorder: a per-user server that has imported everything `roar
run` uses, for the compiled launcher (roar/cli/launcher.c, docs/launcher.md).

The launcher forks and holds the workload itself; per request the server
forks a child that takes the launcher's argv, environment, working directory,
umask, stdout/stderr and inherited fds, and runs roar/cli/run.py's run() with
the launcher as its workload (RemoteWorkload). The server has no threads and
opens nothing a child could share (no store, no roard connection).

A server serves one key: its uid, cgroup, namespaces, the launcher's
directory and every environment variable roar's modules (or the interpreter)
read at import (key()). It listens on the abstract unix name
"\\0roar-warm-UID-KEY" (SOCK_SEQPACKET); both ends check the other's uid
(SO_PEERCRED): a name squatted by another user only sends runs to Python.
It refuses (and exits) once any module file it loaded changed on disk, and
exits after ROAR_WARM_IDLE seconds (default 300) without a request.
"""

from __future__ import annotations

import _signal
import _socket
import gc
import os
import select
import sys
import time

from roar.cli.warmkey import (  # noqa: F401 - the tests and scripts/bench use them here
    VERSION,
    address,
    key,
    listening,
    server_pid,
    start_for_next_time,
)

DEFAULT_IDLE = 300.0
MAX_REQUEST = 1 << 21


# -- the server ----------------------------------------------------------------------

def _loaded_files() -> dict[str, tuple]:
    """Every loaded module's file (sources and extension modules alike), as
    (mtime, size, inode)."""
    out = {}
    for m in list(sys.modules.values()):
        f = getattr(m, "__file__", None)
        if f and f not in out:
            try:
                st = os.stat(f)
            except OSError:
                continue
            out[f] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return out


def _changed(files: dict[str, tuple]) -> bool:
    for f, was in files.items():
        try:
            st = os.stat(f)
        except OSError:
            return True
        if (st.st_mtime_ns, st.st_size, st.st_ino) != was:
            return True
    return False


def _peer_uid(conn) -> int:
    import struct

    return struct.unpack("3i", conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12))[1]


def serve() -> None:
    """python -c 'from roar.cli.warm import serve; serve()' EXE_DIR KEY
    (start_for_next_time). Exits quietly when the name is taken."""
    exe_dir, k = sys.argv[1], sys.argv[2]
    if key(exe_dir) != k:
        return
    idle = DEFAULT_IDLE
    try:
        idle = float(os.environ.get("ROAR_WARM_IDLE", DEFAULT_IDLE))
    except ValueError:
        pass
    if listening(k):
        return  # another server answers (or a squatter: runs take Python's path)
    # everything `roar run` imports, here once
    import roar.cli.runargs  # noqa: F401
    from roar.capture import protocol, seccomp, session  # noqa: F401
    from roar.cli import run as run_mod
    from roar.record import classify, hasher, preimage, recorder  # noqa: F401

    run_mod._preload()
    seccomp.program()
    import threading

    if threading.active_count() != 1:  # a child would inherit a lock held by it
        return
    files = _loaded_files()  # before answering: what a launcher gets is this code
    gc.collect()
    gc.freeze()  # what children share stays shared (no collector writes to it)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    try:
        sock.bind(address(k))
    except OSError:
        return
    sock.listen(64)
    last = time.monotonic()
    children = 0
    while True:
        while children:
            try:
                done, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                children = 0
                break
            if not done:
                break
            children -= 1
        left = idle - (time.monotonic() - last)
        if left <= 0:
            return
        # idle, it sleeps until its idle time is up; with children, it wakes to reap them
        r, _, _ = select.select([sock], [], [], min(left, 1.0) if children else left)
        if not r:
            continue
        try:
            fd, _ = sock._accept()
            conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, 0, fd)
        except OSError:
            continue
        if _peer_uid(conn) != os.getuid():
            conn.close()
            continue
        if _changed(files):  # roar was upgraded or edited: not this code any more
            try:
                conn.send(b"F")
            except OSError:
                pass
            return
        last = time.monotonic()
        try:
            pid = os.fork()
        except OSError:
            try:
                conn.send(b"F")
            except OSError:
                pass
            conn.close()
            continue
        if pid == 0:
            sock.close()
            code = 1
            try:
                code = _child(conn, k)
            finally:
                os._exit(code)
        children += 1
        conn.close()


class LauncherGone(Exception):
    """The launcher's connection ended: roard keeps the run from its spool."""


def _child(conn, k: str) -> int:
    """Serve one launcher; any failure before its workload was forked sends it
    to Python's path (which does everything again)."""
    spawned: list = []
    try:
        return _request(conn, k, spawned)
    except LauncherGone:
        return 1
    except BaseException:
        if spawned and spawned[0].pid:
            raise
        try:
            conn.send(b"F")
        except OSError:
            pass
        return 0


def _request(conn, k: str, spawned: list) -> int:
    from roar.capture import protocol

    data, fds = protocol.recv_fds(conn, MAX_REQUEST, 3)
    f = data.split(b"\0")
    if len(fds) != 3 or not data.endswith(b"\0") or f[0] != VERSION or f[1].decode() != k:
        conn.send(b"F")
        return 0
    try:
        i = 2
        client_pid, umask, nargs = int(f[i]), int(f[i + 1]), int(f[i + 2])
        i += 3
        args = [os.fsdecode(a) for a in f[i:i + nargs]]
        i += nargs
        nenv = int(f[i])
        env = f[i + 1:i + 1 + nenv]
        i += 1 + nenv
        nfds = int(f[i])
        pairs = f[i + 1:i + 1 + 2 * nfds]
        root_fds = {int(pairs[j]): os.fsdecode(pairs[j + 1]) for j in range(0, len(pairs), 2)}
    except (ValueError, IndexError):
        conn.send(b"F")
        return 0
    from roar.cli.runargs import parse_run

    parsed = parse_run(args)
    if parsed is None:  # help, an option to check, no command: click's
        conn.send(b"F")
        return 0
    os.environ.clear()
    for entry in env:
        name, eq, value = entry.partition(b"=")
        if eq and name:
            os.environb[name] = value
    os.fchdir(fds[0])
    os.umask(umask)
    os.dup2(fds[1], 1)
    os.dup2(fds[2], 2)
    for fd in fds:
        os.close(fd)
    sys.argv = ["roar", "run", *args]
    # the user's stdout and stderr, as the interpreter would have opened them
    # (roar/__main__.py's surrogateescape: file names that are not UTF-8)
    enc = sys.stderr.encoding
    sys.stdout = open(1, "w", encoding=enc, errors="surrogateescape", closefd=False,  # noqa: SIM115
                      buffering=1 if os.isatty(1) else -1)
    sys.stderr = open(2, "w", encoding=enc, errors="surrogateescape", closefd=False,  # noqa: SIM115
                      buffering=1)
    from roar.capture.protocol import SessionError
    from roar.cli import run as run_mod
    from roar.cli.output import RUN_REFUSED
    from roar.record import timing
    from roar.record.store import Store, StoreError

    timing._last = time.monotonic()  # ROAR_TIMING's "start": from the request on
    gc.disable()  # as roar/__main__.py does for the start; back once the workload runs
    run_mod._gc_at_release = True
    run_mod._kept_to_exit = []
    workload = RemoteWorkload(conn, client_pid, root_fds)
    spawned.append(workload)
    linger = parsed["linger"]
    try:
        code = run_mod.run(parsed["command"], name=parsed["name"],
                           allow_dirty=parsed["allow_dirty"],
                           linger=run_mod.DEFAULT_LINGER if linger is None else linger,
                           store=Store(), request_id=parsed["request_id"],
                           group=parsed["group"],
                           audit=parsed["audit"] or parsed["policy"] is not None,
                           policy=parsed["policy"], no_git=parsed["no_git"],
                           workload=workload)
    except run_mod.RunError as e:
        code = _fail(str(e), e.exit_code)
    except (StoreError, SessionError) as e:
        code = _fail(str(e), RUN_REFUSED)
    timing.cpu()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        conn.send(b"C%d" % code)
    except OSError:
        pass
    return 0


def _fail(msg: str, code: int) -> int:
    """roar/cli/output.py's fail(), returning the code."""
    sys.stdout.flush()
    print(f"roar: {msg}", file=sys.stderr, flush=True)
    return code


class RemoteWorkload:
    """The workload as the launcher forks and waits for it (run.py's
    LocalWorkload is this process's own)."""

    def __init__(self, conn, client_pid: int, root_fds: dict[int, str]):
        self.conn, self.client_pid, self._root_fds = conn, client_pid, root_fds
        self.pid = 0
        self.pidfd = -1
        self.status: int | None = None
        self.signals: list[tuple[int, bool]] = []

    def _send(self, data: bytes, fds=()) -> None:
        from roar.capture import protocol

        try:
            protocol.send_fds(self.conn, data, list(fds)) if fds else self.conn.send(data)
        except OSError:
            raise LauncherGone() from None

    def _recv(self) -> tuple[bytes, list[int]]:
        """One message; signals and the exit are kept as they come."""
        from roar.capture import protocol

        try:
            msg, fds = protocol.recv_fds(self.conn, 256, 1)
        except OSError:
            msg, fds = b"", []
        if not msg:
            raise LauncherGone()
        if msg[:1] == b"I":
            sig, user = msg[1:].split()
            self.signals.append((int(sig), user == b"1"))
        elif msg[:1] == b"X":
            self.status = int(msg[1:])
        return msg, fds

    # the launcher clones the workload straight into the run cgroup roard made
    # first (CLONE_INTO_CGROUP), where the kernel lets it; else it forks
    clones_into = True

    def spawn(self, argv: list[str], run_id: str, hold=None, cgroup_dir: str | None = None
              ) -> int:
        from roar.capture import seccomp

        prog = seccomp.program() if hold is not None else b""
        msg = (b"S" + run_id.encode() + b"\0" + os.fsencode(cgroup_dir or "") + b"\0%d\0"
               % len(prog) + prog + b"".join(os.fsencode(a) + b"\0" for a in argv))
        self._send(msg, [hold.fileno()] if hold is not None else ())
        while True:
            reply, fds = self._recv()
            if reply[:1] == b"P":
                self.pid, self.pidfd = int(reply[1:]), fds[0]
                return self.pid
            for fd in fds:
                os.close(fd)

    def root_fds(self) -> dict[int, str]:
        return self._root_fds

    def release(self) -> None:
        self._send(b"G")

    def signal(self, sig: int) -> None:
        _signal.pidfd_send_signal(self.pidfd, sig)

    def abandon(self) -> None:
        try:
            self.signal(_signal.SIGKILL)
        except ProcessLookupError:
            pass
        # gone before roard removes its cgroup (the launcher reaps it)
        select.select([self.pidfd], [], [], 5)

    def wait(self, gate=None, session=None) -> tuple[int, bool]:
        """run.py's _wait_root, the launcher waiting and relaying signals."""
        from roar.cli.run import _budget, forward

        interrupted = False
        started = time.monotonic()
        stop_sent = None
        while True:
            while self.signals:
                sig, user = self.signals.pop(0)
                interrupted = True
                forward(sig, user, session, self)
            if self.status is not None:
                return self.status, interrupted
            stop_sent = _budget(gate, started, stop_sent, self)
            interrupted = interrupted or stop_sent is not None
            r, _, _ = select.select([self.conn], [], [], 0.5)
            if r:
                try:
                    self._recv()
                except LauncherGone:
                    # killed (or its connection lost): as for a SIGKILLed `roar run`,
                    # roard keeps the run from its spool
                    os._exit(1)
