"""roard: the privileged daemon. It loads the probes once, tags a fresh run
cgroup for each client that asks (only for processes the caller owns, by
SO_PEERCRED), streams that cgroup's raw records back to the client and
cleans up when the run's processes are gone.

The daemon never reads or hashes the traced files: clients turn records
into run records with their own credentials and write their own store.
Probes are attached when the first run starts and detached once no run has
been active for ROARD_IDLE_DETACH seconds (default 60), off any run's path.
A roard that `roar run` started because none answered (start_for_run) exits
after ROARD_IDLE_EXIT seconds without runs (AUTO_IDLE_EXIT); one started by
`roar daemon start`, the systemd unit or by hand stays.

roard serves every user of the machine, so no one user may wear it out: each
peer uid holds at most ROARD_MAX_CONN_PER_UID connections (64) and all of
them ROARD_MAX_CONN (1024); a request line must arrive whole within
ROARD_REQUEST_TIMEOUT seconds (10) and within protocol.MAX_REQUEST bytes,
nested at most protocol.MAX_DEPTH deep. A run's records pass through a
bounded buffer (filled in C by capture/_relay.c, no Python per record) into
its spool file (at most ROARD_SPOOL_MAX bytes per run,
1 GiB, and never filling the spool's filesystem past SPOOL_RESERVE) and are
streamed to the client from there, so a client that stops reading costs
disk, not roard's memory. Past the cap a run's records go to its client
through a bounded buffer in memory (OVERFLOW_MAX in all, OVERFLOW_RUN each),
no longer into the spool: a client that keeps up loses nothing, and only a
rebuild after its death would miss them (it says how many). Records that
find that buffer full are dropped and counted: the run is stored incomplete
with that count; it never hangs.
"""

from __future__ import annotations

import array
import fcntl
import hashlib
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

from roar.capture import cgroups, events, namespaces, protocol
from roar.capture._relay import Router
from roar.capture.privileges import run_as, spawn_as
from roar.capture.protocol import socket_path
from roar.capture.seccomp import continue_all
from roar.capture.session import POLL_MS, daemon_status, wait_empty
from roar.record.codes import Reason, reason

IDLE_DETACH = float(os.environ.get("ROARD_IDLE_DETACH", "60"))
IDLE_EXIT = float(os.environ.get("ROARD_IDLE_EXIT", "0"))  # 0: never
AUTO_IDLE_EXIT = 900.0  # what start_for_run gives the roard it starts
CHAIN_PAGE = 4000  # chain entries per answer (a frame holds at most 1 MiB)
MAX_CONN_PER_UID = int(os.environ.get("ROARD_MAX_CONN_PER_UID", "64"))
MAX_CONN = int(os.environ.get("ROARD_MAX_CONN", "1024"))
REQUEST_TIMEOUT = float(os.environ.get("ROARD_REQUEST_TIMEOUT", "10"))  # a whole request line
SPOOL_MAX = int(os.environ.get("ROARD_SPOOL_MAX", str(1 << 30)))  # bytes per run
SPOOL_RESERVE = 64 << 20  # free bytes left on the spool's filesystem for everyone else
QUEUE_MAX = 1 << 18  # records waiting for the spool, per run (~100 bytes each)
OVERFLOW_MAX = 256 << 20  # bytes past spool caps waiting for their clients, all runs
OVERFLOW_RUN = min(64 << 20, max(1 << 20, SPOOL_MAX // 16))  # ... and per run
# a rebuild the user's store refused (a full disk) is tried again this often,
# for this long, for at most this many runs at once (their spools are kept)
REBUILD_EVERY, REBUILD_FOR, MAX_REBUILDS = 5.0, 3600.0, 32
MAX_FILL_PER_UID, MAX_FILL = 4, 64  # pending-hash jobs at work at once, per uid and in all


# roard's poller sleeps until the kernel side wakes it (once per WAKE_EVERY
# records, bpf/emit.h), until roard itself wants every record committed so far
# (a barrier of the pre-image hold, a run's end: drain() wakes it at once), or
# for this long: the records of a quiet run, fewer than a batch, reach its
# client at most this late. Each wake-up costs ~0.2 ms of CPU here (Python,
# and the kernel's sleep and wake), and a run waits on none of them: at 5 ms
# they cost roard ~0.025 s of CPU a second of every run (CPU taken from the
# traced job). With no run active, the poller sleeps until one starts.
IDLE_POLL_S = 0.05
# ...and while a run that asked to be served promptly is active: an audit
# policy's kill is a tripwire of a few milliseconds (docs/audit.md), and a run
# without the pre-image hold has only the model's early hash to keep an input
# rewritten soon after its read.
PROMPT_POLL_S = POLL_MS / 1000
# Records are moved into a run's spool (and on to its client) at most this often,
# unless a barrier or the run's end asks for them. Each move is a round of
# Python in three threads (poller, spooler, streamer) and a read in the client:
# moved at every 5 ms poll, a steady trickle of records (a spawn loop, ~20,000
# a second) cost roard about as much CPU as the records themselves
# (docs/bench.md, spawns). The router holds them meanwhile (QUEUE_MAX).
SPOOL_EVERY_S = 0.02


class DaemonError(Exception):
    pass


class ActiveRun:
    """One client's run: its cgroup, the records waiting for its spool and
    how far the spool has been written."""

    def __init__(self, conn: socket.socket, run_id: str, path: Path, cgroup_id: int,
                 spool: Path, recovery: dict):
        self.conn = conn
        self.run_id = run_id
        self.path = path
        self.cgroup_id = cgroup_id
        self.wake = threading.Event()
        self.pausing = False  # the spooler waits out SPOOL_EVERY_S: records do not wake it
        self.closed = False
        # every record goes to a spool file, kept until the client says it
        # stored the run (if the client dies, roard rebuilds the run from it);
        # the client is sent the spool's bytes, so a slow client costs disk only
        self.spool_path = spool
        self.spool_fd = os.open(spool, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.spooled = 0  # bytes of whole frames in the spool
        self.dropped = 0  # records not kept: the queue or the spool was full
        self.tail = (b"", 0)  # its last records, taken from the router when the run ended
        self.spool_full = ""  # why records are being dropped
        self.capped = ""  # why the spool takes no more records (they go to overflow)
        self.overflow: deque[bytes] = deque()  # past the cap: for the client only
        self.overflow_bytes = 0
        self.unspooled = 0  # records the client was sent that the spool lacks
        self.spool_done = threading.Event()  # the spooler wrote its last frame
        self.written = threading.Condition()
        self.end_blob = b""
        self.end_spooled = False
        self.recovery = recovery
        self.prompt = False  # its records are wanted within PROMPT_POLL_S (audit)
        self.client_alive = True
        self.ending = threading.Lock()
        self.killed_at_ns: int | None = None  # when an audit policy's kill ended it
        self.placement: cgroups.Placement | None = None
        self.peer_uid = -1
        self.attached: list[dict] | None = None  # attach: the processes it started with
        self.origin: Path | None = None  # attach: the cgroup they were taken from
        self.detached = False
        self.namespaces: dict | None = None
        self.view: tuple[int, int] | None = None  # the workload's mount ns and root (fds)
        self.marks: deque[int] = deque()  # barriers asked for, spooled after what preceded
        self.listener: int | None = None  # the client's pre-image hold listener (a copy)


class Daemon:
    def __init__(self, sock_path: Path):
        from roar.capture.probes import Probes

        self.sock_path = sock_path
        self.spool_dir = sock_path.parent / "spool"
        self.spool_dir.mkdir(mode=0o700, exist_ok=True)
        self.runs: dict[int, ActiveRun] = {}
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.last_active = time.monotonic()
        self.stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)  # stop(): wake serve()
        self.drain_requests: list[threading.Event] = []
        # drain(), a run's start and stop() wake the poller out of its wait
        self._poll_wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        # records go from the ring buffer to each run's buffer in C (capture/_relay.c)
        self.router = Router(protocol.EVENT, QUEUE_MAX)
        self.probes = Probes(self.router)
        self.conns: dict[int, int] = {}  # peer uid -> open connections
        self.rebuilds = 0  # runs waiting for their store to take their rebuild
        self.fills: dict[int, int] = {}  # uid -> pending-hash jobs of that uid at work
        self.overflow = 0  # bytes in all runs' overflow buffers (OVERFLOW_MAX)
        self.poller = threading.Thread(target=self.poll_loop, name="roard-ringbuf",
                                       daemon=True)

    # -- ring buffer ---------------------------------------------------------------

    def poll_loop(self) -> None:
        """Route the ring buffer's records to their runs whenever the kernel
        side, roard (drain()) or the poll timeout says. The ring buffer's own
        fd, in an epoll set of our own: level-triggered, it is ready after the
        kernel side's wakeup until everything is consumed, and not for records
        committed without one (what the timeout picks up)."""
        ring = select.epoll()
        ring.register(self.probes.ring_fd, select.EPOLLIN)
        ring.register(self._poll_wake, select.EPOLLIN)
        timeout = None
        try:
            while not self.stopping.is_set():
                ready = ring.poll(timeout)
                # cleared before the requests are taken; not read when it did not
                # wake us (a timeout, a batch): one syscall less per quiet wake-up
                if any(fd == self._poll_wake for fd, _ in ready):
                    try:
                        os.eventfd_read(self._poll_wake)
                    except BlockingIOError:
                        pass
                with self.lock:
                    waiting, self.drain_requests = self.drain_requests, []
                    if not self.runs:
                        timeout = None
                    elif any(r.prompt for r in self.runs.values()):
                        timeout = PROMPT_POLL_S
                    else:
                        timeout = IDLE_POLL_S
                self.probes.consume()  # after every drain() taken was asked for
                self._wake_ready()
                for ev in waiting:
                    ev.set()
        finally:
            ring.close()

    def _wake_poller(self) -> None:
        try:
            os.eventfd_write(self._poll_wake, 1)
        except OSError:  # closed: roard is exiting
            pass

    def _wake_ready(self) -> None:
        """Wake the spooler of each run that has records waiting."""
        for cg in self.router.ready():
            run = self.runs.get(cg)
            if run is not None and not run.pausing:
                run.wake.set()

    def drain(self) -> None:
        """Return once every record committed so far has been routed."""
        if not self.poller.is_alive():  # stopping: no other consumer is left
            self.probes.consume()
            return
        ev = threading.Event()
        with self.lock:
            self.drain_requests.append(ev)
        self._wake_poller()
        ev.wait()

    def idle_loop(self) -> None:
        while not self.stopping.wait(1.0):
            with self.lock:
                quiet = time.monotonic() - self.last_active if not self.runs else 0.0
                idle = quiet > IDLE_DETACH
                # no run and no connection (one may be asking for a run right now)
                leave = 0 < IDLE_EXIT < quiet and not self.conns
                if leave:
                    self.stopping.set()  # under the lock: _admit takes no one after this
            if leave:
                _log(f"no run for {IDLE_EXIT:g}s (ROARD_IDLE_EXIT): exiting")
                self.stop()
                return
            if idle and self.probes.attached:
                self.probes.detach()

    # -- clients -----------------------------------------------------------------------

    def serve(self) -> None:
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock_path.unlink()
        except FileNotFoundError:
            pass
        srv.bind(str(self.sock_path))
        os.chmod(self.sock_path, 0o666)  # anyone may ask; SO_PEERCRED decides what
        srv.listen(64)
        srv.settimeout(0.5)
        _warm_up_store_code()
        self.poller.start()
        threading.Thread(target=self.idle_loop, name="roard-idle", daemon=True).start()
        failing = False
        waiting = select.poll()  # a connection, or stop()'s word
        waiting.register(srv, select.POLLIN)
        waiting.register(self._wake_r, select.POLLIN)
        while not self.stopping.is_set():
            if not any(fd == srv.fileno() for fd, _ in waiting.poll(1000)):
                continue
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError as e:
                # out of fds or memory (EMFILE, ENFILE, ENOBUFS...): a user's
                # flood of connections must not end the daemon everyone relies on
                if not failing:
                    _log(f"accept failed: {e.strerror or e}; retrying until it succeeds")
                failing = True
                self.stopping.wait(0.1)
                continue
            failing = False
            self._admit(conn)
        srv.close()

    def stop(self) -> None:
        """Stop serving (SIGTERM, SIGINT): serve() returns at once, not at its
        next timeout."""
        self.stopping.set()
        self._wake_poller()
        try:
            os.write(self._wake_w, b"x")
        except OSError:  # already written: the pipe is full
            pass

    def _admit(self, conn: socket.socket) -> None:
        """Serve a new connection in its own thread unless its peer's uid (or
        everyone together) already holds the most connections allowed."""
        try:
            conn.settimeout(REQUEST_TIMEOUT)
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                    struct.calcsize("3i"))
            peer_pid, peer_uid, _ = struct.unpack("3i", creds)
        except OSError:
            conn.close()
            return
        with self.lock:
            if self.stopping.is_set():  # exiting (idle): this client finds no roard
                conn.close()
                return
            mine, total = self.conns.get(peer_uid, 0), sum(self.conns.values())
            refuse = mine >= MAX_CONN_PER_UID or total >= MAX_CONN
            if not refuse:
                self.conns[peer_uid] = mine + 1
        if refuse:
            conn.setblocking(False)  # never wait on a peer that does not read
            _send_quietly(conn, {"ok": False, "error": "too many connections to roard "
                                 f"({'yours' if mine >= MAX_CONN_PER_UID else 'in all'}): "
                                 "try again later"})
            conn.close()
            return
        try:
            threading.Thread(target=self.client, args=(conn, peer_pid, peer_uid),
                             daemon=True).start()
        except RuntimeError:  # no thread to be had: refuse this one, keep serving
            self._release(peer_uid)
            conn.close()

    def _release(self, peer_uid: int) -> None:
        with self.lock:
            _count_down(self.conns, peer_uid)

    def client(self, conn: socket.socket, peer_pid: int, peer_uid: int) -> None:
        run = streamer = reader = None
        try:
            reader = LineReader(conn)
            line = reader.readline(time.monotonic() + REQUEST_TIMEOUT)
            if not line:
                return
            conn.settimeout(REQUEST_TIMEOUT)  # for the answer: a peer that does not read
            req = protocol.parse_request(line)
            if req["op"] == "status":
                conn.sendall(protocol.encode_json(self.status()))
                return
            if req["op"] == "review":  # training requests: the reviewer is the peer's uid
                from roar.requests.training import daemon_review

                conn.sendall(protocol.encode_json(daemon_review(req, peer_uid)))
                return
            if req["op"] in ("chain", "chain_get"):  # tamper evidence (roar/record/chain.py)
                conn.sendall(protocol.encode_json(self._chain_op(req, peer_uid)))
                return
            if req["op"] == "detach":  # roar detach RUN: the owner of the run, or root
                conn.sendall(protocol.encode_json(self._detach_op(req, peer_uid)))
                return
            if req["op"] == "fill":  # a run's pending hashes, finished outside its job
                conn.sendall(protocol.encode_json(self._fill_op(req, peer_uid, peer_pid)))
                return
            if req["op"] not in ("trace", "attach"):
                raise protocol.ProtocolError(f"unknown op {req['op'][:64]!r}")
            if req["op"] == "attach":
                run = self._start_attach(conn, req, peer_uid)
            else:
                run = self._start_run(conn, req, peer_uid, peer_pid, reader)
            conn.settimeout(None)  # a run lasts as long as its workload
            try:
                conn.sendall(protocol.encode_json({"ok": True, "cgroup": run.cgroup_id,
                                                   "path": str(run.path),
                                                   "placement": run.placement.record(),
                                                   "procs": run.attached,
                                                   "pid": run.recovery.get("root_pid"),
                                                   "namespaces": run.namespaces,
                                                   "layout": events.LAYOUT}))
            except OSError:
                # gone before it heard "ok" (it aborted while the probes were being
                # attached): its command was never released, there is nothing to keep
                self._discard(run)
                namespaces.close_view(run.view)
                run = None
                return
            spooler = threading.Thread(target=self._spooler, args=(run,), daemon=True)
            spooler.start()
            streamer = threading.Thread(target=self._streamer, args=(run,), daemon=True)
            streamer.start()
            run_of_stream = run
            self._follow(run, reader, spooler, peer_uid)
            run = None
        except protocol.ProtocolError as e:
            _send_quietly(conn, {"ok": False, "error": str(e)})
        except PermissionError as e:
            _send_quietly(conn, {"ok": False, "error": str(e)})
        except cgroups.CgroupError as e:
            _send_quietly(conn, {"ok": False, "error": str(e)})
        except (OSError, ValueError, KeyError, TypeError) as e:
            _send_quietly(conn, {"ok": False, "error": f"{type(e).__name__}: {e}"})
        except Exception as e:  # noqa: BLE001 - one client's bug must not show as a traceback
            _log(f"internal error serving a client: {type(e).__name__}: {e}")
            _send_quietly(conn, {"ok": False, "error": "internal error in roard"})
        finally:
            try:
                if run is not None:
                    self._end_run(run, linger=0)
                if streamer is not None:
                    # the streamer may be blocked sending to a peer that does not
                    # read: wake it, and let it go before its fd can be reused
                    try:
                        conn.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    streamer.join()
                    self._release_overflow(run_of_stream)
            finally:
                conn.close()
                self._release(peer_uid)
                for fd in reader.fds if reader is not None else ():
                    os.close(fd)

    def _start_run(self, conn, req: dict, peer_uid: int, peer_pid: int,
                   reader: LineReader) -> ActiveRun:
        run_id = req.get("run_id")
        if not isinstance(run_id, str) or not run_id.isalnum() or len(run_id) > 64:
            raise protocol.ProtocolError("trace needs an alphanumeric run_id")
        into = req.get("into") is True
        # the launcher (`parent`) forks the workload only after this answer: the
        # run cgroup is made first, below the launcher's own cgroup, for it to
        # clone the workload straight into (cgroups.make_for); the pid follows
        who = (self._own_pid(req.get("parent"), peer_pid, peer_uid, "parent") if into
               else self._own_pid(req.get("pid"), peer_pid, peer_uid, "pid"))
        home, root_fds = req.get("home"), req.get("root_fds", {})
        if not (isinstance(home, str) and os.path.isabs(home)):
            raise protocol.ProtocolError("trace needs the absolute ROAR_HOME of the client")
        if not (isinstance(root_fds, dict) and all(
                isinstance(k, str) and k.isdigit() and isinstance(v, str)
                for k, v in root_fds.items())):
            raise protocol.ProtocolError("root_fds must map fd numbers to paths")
        name = cgroup_prefix(self.sock_path) + run_id
        pid, made = who, None
        if into:
            made = cgroups.make_for(name, who)
            try:
                conn.sendall(protocol.encode_json({"ok": True,
                                                   "into": made and str(made.path)}))
                line = reader.readline(time.monotonic() + REQUEST_TIMEOUT)
                told = protocol.parse_request(line) if line else {"op": "pid"}
                if told["op"] != "pid":
                    raise protocol.ProtocolError("trace into: the workload's pid expected")
                pid = self._own_pid(told.get("pid"), peer_pid, peer_uid, "pid")
            except BaseException:
                if made is not None:
                    cgroups.remove(made.path)
                raise
        # below the held workload's own cgroup (= its caller's): the job's limits,
        # device programs and kill path keep applying (cgroups.place)
        if made is not None and cgroups.holds(made, pid):
            placement, made.born = made, True
        else:  # not cloned into it (refused there, or no launcher): moved, as always
            if made is not None:
                cgroups.remove(made.path)
            placement = cgroups.place(name, pid)
        try:  # before the run (and its spool) exists: a refused client may have ended pid
            ns = namespaces.identity(pid)
            view = namespaces.open_view(pid) if ns["container"] else None
        except OSError:
            cgroups.remove(placement.path)
            raise protocol.ProtocolError(f"process {pid} ended before it was traced") from None
        cgid = placement.cgroup_id
        recovery = {"home": home, "run_id": run_id, "root_pid": pid,
                    "root_fds": {int(k): v for k, v in root_fds.items()}}
        try:
            run = ActiveRun(conn, run_id, placement.path, cgid,
                            self.spool_dir / f"{name}.spool", recovery)
        except BaseException:
            namespaces.close_view(view)
            cgroups.remove(placement.path)
            raise
        run.placement = placement
        run.namespaces, run.view = ns, view  # a rebuild must see its files as it did
        run.prompt = req.get("prompt") is True
        try:
            self._trace(run, pid)
        except BaseException:
            self._end_run(run, linger=0)
            raise
        return run

    @staticmethod
    def _own_pid(pid, peer_pid: int, peer_uid: int, what: str) -> int:
        """A pid of the request, as this namespace names it, of a process the
        peer owns (or any, for root)."""
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            raise protocol.ProtocolError(f"trace needs a {what}")
        # the pid is the caller's namespace's (a container's): find it from here
        try:
            pid = namespaces.resolve_pid(peer_pid, pid)
        except LookupError as e:
            raise protocol.ProtocolError(str(e)) from None
        try:
            owner = os.stat(f"/proc/{pid}").st_uid
        except FileNotFoundError:
            raise protocol.ProtocolError(f"no process {pid}") from None
        if peer_uid != 0 and owner != peer_uid:
            raise PermissionError(f"process {pid} is not yours: you may only trace your own "
                                  f"processes")
        return pid

    def _trace(self, run: ActiveRun, pid: int) -> None:
        """Route the run's records, count it among the runs, and tag its cgroup
        with pid as its first process (attaching the probes if they are not)."""
        self.router.add(run.cgroup_id)  # before the cgroup is tagged: none goes unrouted
        with self.lock:
            self.runs[run.cgroup_id] = run
            self.last_active = time.monotonic()
        self._wake_poller()  # its poll timeout now applies
        self.probes.attach()
        self.probes.tag(run.cgroup_id, pid, time.monotonic_ns(), run.placement.level)

    def _start_attach(self, conn, req: dict, peer_uid: int) -> ActiveRun:
        """A run of a live process tree (roar attach): the tree moves into a
        fresh run cgroup; what each process was doing is snapshotted for the
        client's model. Only the owner of the processes, or root, may."""
        from roar.capture import attach

        pid, run_id, home = req.get("pid"), req.get("run_id"), req.get("home")
        if not isinstance(pid, int) or pid <= 1:
            raise protocol.ProtocolError("attach needs a pid")
        if not isinstance(run_id, str) or not run_id.isalnum() or len(run_id) > 64:
            raise protocol.ProtocolError("attach needs an alphanumeric run_id")
        if not (isinstance(home, str) and os.path.isabs(home)):
            raise protocol.ProtocolError("attach needs the absolute ROAR_HOME of the client")

        def owner_ok(p: int) -> bool:
            try:
                return peer_uid == 0 or os.stat(f"/proc/{p}").st_uid == peer_uid
            except FileNotFoundError:
                return False

        if not os.path.exists(f"/proc/{pid}"):
            raise protocol.ProtocolError(f"no process {pid}")
        if not owner_ok(pid):
            raise PermissionError(f"process {pid} is not yours: you may only attach to your "
                                  f"own processes")
        with self.lock:
            if any(pid in (p["pid"] for p in r.attached or ()) or
                   pid in cgroups.pids(r.path) for r in self.runs.values()):
                raise protocol.ProtocolError(f"process {pid} is already traced by roar")
        name = cgroup_prefix(self.sock_path) + run_id
        # the run cgroup goes below the process's own cgroup, as for roar run
        # (cgroups.place); the root moves there first, its tree follows once tagged
        placement = cgroups.place(name, pid)
        cgid = placement.cgroup_id
        recovery = {"home": home, "run_id": run_id, "root_pid": pid, "root_fds": {}}
        try:
            run = ActiveRun(conn, run_id, placement.path, cgid,
                            self.spool_dir / f"{name}.spool", recovery)
        except BaseException:
            cgroups.remove(placement.path)
            raise
        run.placement = placement
        run.peer_uid = peer_uid
        run.prompt = True  # its audit policy may kill it: a tripwire of a few ms
        run.origin = (cgroups._dir_of(placement.caller, cgroups.cgroup2_mount())
                      or placement.path.parent.parent)
        try:
            self._trace(run, pid)
            run.attached = attach.move_tree(pid, placement.path, owner_ok)
        except BaseException:
            self._detach(run)
            self._end_run(run, linger=0)
            raise
        return run

    def _detach(self, run: ActiveRun) -> None:
        """Give an attached tree back: every process left in the run cgroup
        returns to the cgroup the tree was taken from (the run then ends
        when its client sees the cgroup empty)."""
        from roar.capture import attach

        if run.origin is None or run.closed:
            return
        run.detached = True
        attach.move_back(run.path, run.origin)

    def _detach_op(self, req: dict, peer_uid: int) -> dict:
        run_id = req.get("run_id")
        if not isinstance(run_id, str) or not run_id:
            raise protocol.ProtocolError("detach needs a run id")
        with self.lock:
            found = [r for r in self.runs.values() if r.run_id.startswith(run_id.upper())]
        if not found:
            return {"ok": False, "error": f"no attached session {run_id} is live"}
        if len(found) > 1:
            return {"ok": False, "error": f"run prefix {run_id} is ambiguous"}
        run = found[0]
        if run.origin is None:
            return {"ok": False, "error": f"run {run.run_id} was started by roar run, not "
                                          f"attached: stop its command instead"}
        if peer_uid not in (0, run.peer_uid):
            return {"ok": False, "error": f"run {run.run_id} is not yours"}
        self._detach(run)
        return {"ok": True, "run": run.run_id}

    def _fill_op(self, req: dict, peer_uid: int, peer_pid: int) -> dict:
        """Start the job that hashes what a run left pending (roar/cli/fill.py)
        as the caller's uid, in roard's own cgroup and session: a batch
        scheduler ending the caller's job does not end it. Only that program,
        with roard's own interpreter: nothing else is started for a client."""
        from roar.record.pending import FILL_ENV  # what a client may hand its job

        run_id, home, env = req.get("run_id"), req.get("home"), req.get("env", {})
        if not (isinstance(run_id, str) and run_id.isalnum() and len(run_id) <= 64
                and isinstance(home, str) and os.path.isabs(home) and len(home) < 4096
                and isinstance(env, dict) and set(env) <= set(FILL_ENV)
                and all(isinstance(v, str) and len(v) < 4096 for v in env.values())):
            raise protocol.ProtocolError("fill needs run_id, home and env")
        try:  # its paths are the caller's: in another mount namespace they are not ours
            same_view = os.stat(f"/proc/{peer_pid}/ns/mnt").st_ino == \
                os.stat("/proc/self/ns/mnt").st_ino
        except OSError:
            same_view = False
        if not same_view:
            return {"ok": False, "error": "the caller is in another mount namespace"}
        with self.lock:
            mine, total = self.fills.get(peer_uid, 0), sum(self.fills.values())
            if mine >= MAX_FILL_PER_UID or total >= MAX_FILL:
                return {"ok": False, "error": f"{'your' if mine >= MAX_FILL_PER_UID else 'all'} "
                                              "pending-hash jobs are busy"}
            self.fills[peer_uid] = mine + 1
        import pwd

        try:
            user_home = pwd.getpwuid(peer_uid).pw_dir
        except KeyError:
            user_home = "/"
        roar_root = str(Path(__file__).resolve().parents[1])
        child_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": user_home,
                     "LANG": "C.UTF-8", "ROAR_HOME": home, "PYTHONPATH": roar_root, **env}
        proc, why = spawn_as(peer_uid, [sys.executable, "-m", "roar.cli.fill", run_id],
                             child_env)
        if proc is None:
            self._fill_done(peer_uid)
            return {"ok": False, "error": why}
        _log(f"run {run_id}: pending hashes: job {proc.pid} started for uid {peer_uid}")

        def reap():
            proc.wait()
            self._fill_done(peer_uid)

        threading.Thread(target=reap, name="roard-fill", daemon=True).start()
        return {"ok": True, "pid": proc.pid}

    def _fill_done(self, uid: int) -> None:
        with self.lock:
            _count_down(self.fills, uid)

    def _chain_op(self, req: dict, peer_uid: int) -> dict:
        """Append to, or read, the caller's own chain (its uid's file)."""
        from roar.record import chain

        f = chain.ChainFile(chain.state_dir(self.sock_path, protocol.DEFAULT_SOCKET), peer_uid)
        if req["op"] == "chain_get":
            offset = req.get("offset", 0)
            if not isinstance(offset, int) or offset < 0:
                raise protocol.ProtocolError("chain_get needs an offset")
            with self.lock:
                entries = f.entries()
            part = entries[offset:offset + CHAIN_PAGE]
            end = offset + len(part)
            return {"ok": True, "entries": part, "next": end if end < len(entries) else None}
        run_id, home, dig = req.get("run_id"), req.get("home"), req.get("digest")
        pending = req.get("pending", [])
        if not (isinstance(run_id, str) and run_id.isalnum() and len(run_id) <= 64
                and isinstance(home, str) and os.path.isabs(home)
                and isinstance(dig, str) and len(dig) == 64
                and isinstance(pending, list) and all(isinstance(p, str) for p in pending)):
            raise protocol.ProtocolError("chain needs run_id, home, digest and pending")
        with self.lock:
            entry = f.append(home, run_id, dig, pending)
        return {"ok": True, "seq": entry["seq"], "head": entry["head"]}

    def _stored_chain(self, req, peer_uid: int) -> dict:
        """The chain op a client handed with its `stored` (chain.chain_request):
        appended as a chain op of its own would be, without a connection, a
        thread and a round trip of its own."""
        if not isinstance(req, dict):
            return {"ok": False, "error": "chain needs run_id, home, digest and pending"}
        try:
            return self._chain_op({**req, "op": "chain"}, peer_uid)
        except protocol.ProtocolError as e:
            return {"ok": False, "error": str(e)}
        except OSError as e:  # the chain file cannot be written: the client says so
            return {"ok": False, "error": f"the chain could not be written: {e.strerror or e}"}

    @staticmethod
    def _next_op(reader: LineReader) -> dict:
        try:
            line = reader.readline()
            return protocol.parse_request(line) if line else {"op": "gone"}
        except (protocol.ProtocolError, OSError, ValueError):
            return {"op": "gone"}

    def _run_op(self, run: ActiveRun, reader: LineReader) -> dict:
        """The client's next op that is not a barrier or its listener (those
        are served here, at any time during the run)."""
        while True:
            req = self._next_op(reader)
            if req["op"] == "barrier":
                if not run.closed:  # after the end the client has had everything
                    self._barrier(run, req)
            elif req["op"] == "listener":
                self._take_listener(run, reader)
            else:
                return req

    def _follow(self, run: ActiveRun, reader: LineReader, spooler: threading.Thread,
                peer_uid: int) -> None:
        try:
            self._follow_run(run, reader, spooler, peer_uid)
        finally:
            namespaces.close_view(run.view)
            run.view = None
            if run.listener is not None:
                os.close(run.listener)
                run.listener = None

    def _follow_run(self, run: ActiveRun, reader: LineReader, spooler: threading.Thread,
                    peer_uid: int) -> None:
        """Wait for the client's word that its first process exited, end the
        run, then for its word that the run is stored. A client that goes
        away first (killed) has its workload ended now (the documented
        policy) and its run rebuilt from the spool, as the client's user."""
        req = self._run_op(run, reader)
        while req["op"] in ("kill", "detach"):
            if req["op"] == "kill":  # an audit policy's kill: the whole run, at once
                run.killed_at_ns = cgroups.kill_tree(run.path)
            else:
                self._detach(run)
            req = self._run_op(run, reader)
        answering = None
        if req["op"] == "gone" and run.listener is not None:
            # held syscalls go on unheld while the run is ended (SIGTERM first:
            # a workload saving its state on SIGTERM must be able to write)
            answering = threading.Event()
            threading.Thread(target=continue_all, args=(run.listener, answering),
                             name="roard-unhold", daemon=True).start()
        if req["op"] == "gone" and run.origin is not None:
            # the client of an attached session died: the session was not roar's
            # to start, so it is not roar's to end; it goes back where it was
            self._detach(run)
        if req["op"] == "abort":  # refused before its command ran: nothing to keep
            self._discard(run, spooler)
            return
        linger = 0.0
        if req["op"] == "gone":
            note = killed_with_job(run.path, run.placement)
            if note:
                run.recovery["notes"] = [note]
        if req["op"] == "root_exited":
            try:
                linger = float(req.get("linger", 0))
            except (TypeError, ValueError):
                linger = 0.0
            if linger != linger:  # NaN
                linger = 0.0
        self._end_run(run, linger)
        if answering is not None:
            answering.set()
        spooler.join()
        os.close(run.spool_fd)
        if req["op"] == "root_exited":
            after = self._run_op(run, reader)
            if after["op"] == "stored":
                run.spool_path.unlink(missing_ok=True)
                if after.get("chain") is not None:  # the run's chain op, answered here
                    _send_quietly(run.conn, self._stored_chain(after["chain"], peer_uid))
                return
            if after["op"] == "unstored":  # its store failed (a full disk): say so
                why = after.get("why")
                run.recovery["cause"] = reason(Reason.STORE_FAILED, why=why[:500]
                                               if isinstance(why, str) else "unknown")
        self._recover(run, peer_uid)

    def _discard(self, run: ActiveRun, spooler: threading.Thread | None = None) -> None:
        """End a run whose command never ran and drop its spool."""
        self._end_run(run, linger=0)
        if spooler is not None:
            spooler.join()
        os.close(run.spool_fd)
        run.spool_path.unlink(missing_ok=True)

    def _recover(self, run: ActiveRun, peer_uid: int) -> None:
        from roar.record.recover import recover_from

        spool = run.spool_path

        def before():
            f = open(spool, "rb")  # roard's path, then the workload's view (paths, store)
            if run.view is not None:
                namespaces.enter_view(run.view)
            return f

        out = run_as(peer_uid, lambda f: recover_from(f, **run.recovery), before=before,
                     timeout=3600)
        _log(f"run {run.run_id}: client gone; rebuilt from its spool: {out}")
        if out.get("ok"):
            spool.unlink(missing_ok=True)
        elif str(out.get("error")).startswith("StoreError") and run.view is None:
            # the user's store could not take it (a full disk): try again as
            # space comes back, a bounded number of runs at a time
            with self.lock:
                retry = self.rebuilds < MAX_REBUILDS
                self.rebuilds += retry
            if retry:
                threading.Thread(target=self._recover_later, args=(run, peer_uid),
                                 daemon=True).start()

    def _recover_later(self, run: ActiveRun, peer_uid: int) -> None:
        from roar.record.recover import recover_from

        try:
            deadline = time.monotonic() + REBUILD_FOR
            while not self.stopping.wait(REBUILD_EVERY) and time.monotonic() < deadline:
                out = run_as(peer_uid, lambda f: recover_from(f, **run.recovery),
                             before=lambda: open(run.spool_path, "rb"), timeout=3600)
                if out.get("ok"):
                    _log(f"run {run.run_id}: rebuilt from its spool at last: {out}")
                    run.spool_path.unlink(missing_ok=True)
                    return
                if not str(out.get("error")).startswith("StoreError"):
                    return
        finally:
            with self.lock:
                self.rebuilds -= 1

    def _end_run(self, run: ActiveRun, linger: float) -> None:
        with run.ending:  # the client's thread and a stopping daemon may race here
            self._end_run_locked(run, linger)

    def _end_run_locked(self, run: ActiveRun, linger: float) -> None:
        if run.closed:
            return
        killed = wait_empty(run.path, max(0.0, min(linger, 3600.0)))
        self.drain()
        lost = self.probes.untag(run.cgroup_id)
        with self.lock:
            self.runs.pop(run.cgroup_id, None)
            self.last_active = time.monotonic()
        full = self.router.dropped(run.cgroup_id)  # its buffer was full (QUEUE_MAX)
        if full:
            run.spool_full = run.spool_full or "roard's queue for the run was full"
            run.dropped += full
        run.tail = self.router.remove(run.cgroup_id)  # spooled after what was taken
        try:
            cgroups.remove(run.path)
        except OSError:
            pass
        run.closed = True
        run.end = {"lost": lost, "killed": killed, "killed_at_ns": run.killed_at_ns,
                   "detached": run.detached}
        run.wake.set()

    def _spooler(self, run: ActiveRun) -> None:
        """Move the run's records from memory to its spool file, then its end
        message. Past the spool's cap (or near a full filesystem) records go
        to the client's overflow buffer, and are dropped and counted when it
        is full; the spool always holds whole frames. The records come from
        the router (capture/_relay.c), framed there, a blob per wake-up."""
        cg = run.cgroup_id
        taken = 0.0  # when records were last taken
        while True:
            if not run.closed and not run.marks and not self.router.pending(cg):
                # wait only when idle: records (_wake_ready), a barrier and the
                # run's end each wake it; the timeout is a safety net only
                run.wake.wait(1.0)
                run.wake.clear()
            pause = taken + SPOOL_EVERY_S - time.monotonic()
            if pause > 0 and not run.closed and not run.marks:
                # records came soon after the last take: let more gather (a
                # barrier or the run's end still wakes it at once)
                run.pausing = True
                run.wake.wait(pause)
                run.pausing = False
                run.wake.clear()
            # barriers asked for so far follow every record taken now (routed
            # before they were asked for: roard drained the ring buffer first)
            marks = len(run.marks)
            blob, n = self.router.take(cg)
            if n:
                taken = time.monotonic()
            if not n and run.closed and run.tail[1]:
                (blob, n), run.tail = run.tail, (b"", 0)
            if n:
                self._spool(run, blob, n)
            if marks:
                if run.tail[1]:  # the run ended meanwhile: its last records first
                    (blob, k), run.tail = run.tail, (b"", 0)
                    self._spool(run, blob, k)
                self._spool_marks(run, b"".join(protocol.encode_barrier(run.marks.popleft())
                                                for _ in range(marks)))
            if n or marks:
                continue
            if run.closed:
                end = dict(run.end)
                if run.dropped:
                    end["dropped"] = run.dropped
                    end["dropped_why"] = run.spool_full
                if run.unspooled:  # for a rebuild: what the spool lacks
                    end["unspooled"] = run.unspooled
                    end["unspooled_why"] = run.capped
                run.end_blob = protocol.encode_json(end)
                if run.capped:  # the client gets it after the overflow, the spool too
                    try:
                        _write_all(run.spool_fd, run.end_blob)
                    except OSError:
                        pass  # a rebuild reads a spool without its end as such
                    with self.lock:
                        self.overflow += len(run.end_blob)
                    with run.written:
                        run.overflow.append(run.end_blob)
                        run.overflow_bytes += len(run.end_blob)
                else:
                    run.end_spooled = self._spool(run, run.end_blob, 0)
                run.spool_done.set()
                with run.written:
                    run.written.notify_all()
                return

    def _spool(self, run: ActiveRun, blob: bytes, records: int) -> bool:
        """Append whole frames to the spool, or past its cap to the client's
        overflow buffer; False when they were not kept."""
        why = run.capped
        if why:
            pass
        elif records and run.spooled + len(blob) > SPOOL_MAX:
            why = f"the run's spool reached its cap ({SPOOL_MAX} bytes)"
        elif records and _free(run.spool_path.parent) - len(blob) < SPOOL_RESERVE:
            why = "the spool's filesystem is nearly full"
        if not why:
            try:
                _write_all(run.spool_fd, blob)
            except OSError as e:  # ENOSPC, EIO: cut back to whole frames
                why = f"writing the spool failed: {e.strerror}"
                try:
                    os.ftruncate(run.spool_fd, run.spooled)
                    os.lseek(run.spool_fd, run.spooled, os.SEEK_SET)
                except OSError:
                    pass
            else:
                with run.written:
                    run.spooled += len(blob)
                    run.written.notify_all()
                return True
        if not records:
            return False
        run.capped = why  # from now on the spool takes no more: records stay in order
        with self.lock:
            room = (run.client_alive and run.overflow_bytes + len(blob) <= OVERFLOW_RUN
                    and self.overflow + len(blob) <= OVERFLOW_MAX)
            if room:
                self.overflow += len(blob)
        if room:
            with run.written:
                run.overflow.append(blob)
                run.overflow_bytes += len(blob)
                run.unspooled += records
                run.written.notify_all()
            return True
        run.spool_full = run.spool_full or (
            f"{why}, and its client was not reading fast enough" if run.client_alive else why)
        run.dropped += records
        return False

    def _spool_marks(self, run: ActiveRun, blob: bytes) -> None:
        """Barrier frames, in order after the records before them: in the
        spool, or past its cap in the client's overflow (never dropped: a
        held syscall of the workload waits for its barrier)."""
        if not run.capped and self._spool(run, blob, 0):
            return
        with self.lock:
            self.overflow += len(blob)
        with run.written:
            run.overflow.append(blob)
            run.overflow_bytes += len(blob)
            run.written.notify_all()

    def _barrier(self, run: ActiveRun, req: dict) -> None:
        """The client's pre-image hold asks for a barrier (roar/record/preimage.py):
        every record committed so far is routed, then the mark is queued."""
        n = req.get("n")
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < 1 << 63:
            return
        if len(run.marks) >= QUEUE_MAX:  # bounded memory, as records
            return
        self.drain()
        run.marks.append(n)
        run.wake.set()

    def _take_listener(self, run: ActiveRun, reader: LineReader) -> None:
        """The client's copy of its workload's seccomp listener (SCM_RIGHTS):
        kept to answer held syscalls should the client die first."""
        fd = reader.take_fd()
        if fd is None:
            return
        try:
            ok = os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:seccomp notify"
        except OSError:
            ok = False
        if not ok or run.listener is not None:
            os.close(fd)
            return
        run.listener = fd

    def _release_overflow(self, run: ActiveRun) -> None:
        """What the client will never take: its share of OVERFLOW_MAX back."""
        with run.written:
            n, run.overflow_bytes = run.overflow_bytes, 0
            run.overflow.clear()
        with self.lock:
            self.overflow -= n

    def _streamer(self, run: ActiveRun) -> None:
        """Send the client what the spool holds, as it grows, then the end
        message. A client that stops reading blocks only this thread."""
        try:
            src = os.open(run.spool_path, os.O_RDONLY)
        except OSError:
            run.client_alive = False
            return
        sent = 0
        try:
            out = run.conn.fileno()
            while True:
                with run.written:
                    while (sent >= run.spooled and not run.overflow
                           and not run.spool_done.is_set()):
                        run.written.wait(0.5)
                    avail, done = run.spooled, run.spool_done.is_set()
                while sent < avail:
                    sent += os.sendfile(out, src, sent, avail - sent)
                while run.overflow:  # past the cap, in order after the spool's last byte
                    with run.written:
                        blob = run.overflow.popleft()
                        run.overflow_bytes -= len(blob)
                    with self.lock:
                        self.overflow -= len(blob)
                    run.conn.sendall(blob)
                if done and sent >= run.spooled and not run.overflow:
                    if not run.end_spooled and not run.capped:
                        run.conn.sendall(run.end_blob)  # the spool could not hold it
                    return
        except OSError:
            run.client_alive = False  # the run is rebuilt from the spool
        finally:
            os.close(src)

    def status(self) -> dict:
        return {"pid": os.getpid(), "active_runs": len(self.runs),
                "attached": self.probes.attached, "uptime": time.monotonic() - self.started,
                "socket": str(self.sock_path), "unrouted_events": self.router.unrouted,
                "connections": sum(self.conns.values())}


class LineReader:
    """Request lines from a client socket, each bounded in size and, for the
    first, in time: a peer that trickles bytes cannot hold a thread forever."""

    def __init__(self, conn: socket.socket):
        self.conn = conn
        self.buf = b""
        self.fds: list[int] = []  # passed with the bytes read (SCM_RIGHTS): at most one kept

    def take_fd(self) -> int | None:
        return self.fds.pop() if self.fds else None

    def _recv(self) -> bytes:
        chunk, anc, _flags, _addr = self.conn.recvmsg(protocol.MAX_REQUEST + 1,
                                                      socket.CMSG_SPACE(4 * 4))
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
                for fd in fds:
                    if self.fds:  # one is all a client has to give
                        os.close(fd)
                    else:
                        self.fds.append(fd)
        return chunk

    def readline(self, deadline: float | None = None) -> bytes:
        """One line (with its newline), or what came before end of stream."""
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line, self.buf = self.buf[:nl + 1], self.buf[nl + 1:]
                return line
            if len(self.buf) > protocol.MAX_REQUEST:
                raise protocol.ProtocolError("request too large")
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise protocol.ProtocolError("request timed out")
                self.conn.settimeout(left)
            try:
                chunk = self._recv()
            except TimeoutError:
                raise protocol.ProtocolError("request timed out") from None
            if not chunk:
                line, self.buf = self.buf, b""
                return line
            self.buf += chunk


def _count_down(table: dict, key) -> None:
    """One fewer of key's (connections, jobs) in a table of counts."""
    left = table.get(key, 0) - 1
    if left > 0:
        table[key] = left
    else:
        table.pop(key, None)


def _log(message: str) -> None:
    print(f"roard: {message}", file=sys.stderr, flush=True)


def _write_all(fd: int, blob: bytes) -> None:
    view = memoryview(blob)
    while view:
        view = view[os.write(fd, view):]


def _free(path: Path) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def _send_quietly(conn, obj) -> None:
    try:
        conn.sendall(protocol.encode_json(obj))
    except OSError:
        pass


def _pidfile(sock: Path) -> Path:
    return sock.with_name(sock.name + ".pid")


def _warm_up_store_code() -> None:
    """Open and close a throwaway store once, as root, so that whatever the
    store code imports on first use (py-lmdb imports lmdb._envid at its first
    open) is loaded before a child of run_as drops root: after that it may not
    be able to read the interpreter's files (roar installed under /root).
    The same goes for what a rebuild imports lazily: the recorder and its
    redaction of sh -c scripts (shlex), keyed hashes (hmac), classify rules
    (tomllib), the pending-hash filler."""
    import hmac  # noqa: F401
    import shlex  # noqa: F401
    import shutil  # noqa: F401

    import roar.record.classify
    import roar.record.pending  # noqa: F401
    import roar.record.recover  # noqa: F401
    from roar.record.store import Store

    with tempfile.TemporaryDirectory() as d:
        Store(d).close()
        rules = Path(d) / "rules.toml"
        rules.write_text("")
        roar.record.classify.read_rules(rules, None)  # imports tomllib (or tomli)


def serve_forever(sock: Path | None = None) -> None:
    sock = sock or socket_path()
    if os.geteuid() != 0:
        raise DaemonError("roard must run as root (it loads eBPF programs)")
    sock.parent.mkdir(parents=True, exist_ok=True)
    lockf = open(_pidfile(sock), "a+")
    try:
        fcntl.flock(lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise DaemonError(f"another roard is already running ({_pidfile(sock)})") from None
    lockf.seek(0)
    lockf.truncate()
    lockf.write(str(os.getpid()))
    lockf.flush()
    # every client holds a socket and, while it runs, a spool's two fds
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard or hard == resource.RLIM_INFINITY:
        try:
            most = hard if hard != resource.RLIM_INFINITY else int(
                Path("/proc/sys/fs/nr_open").read_text())
            resource.setrlimit(resource.RLIMIT_NOFILE, (most, most))
        except (OSError, ValueError):
            pass
    d = Daemon(sock)

    def stop(*_):
        d.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _clean_stale_cgroups(sock)
    print(f"roard: listening on {sock} (pid {os.getpid()})", file=sys.stderr, flush=True)
    try:
        d.serve()
    finally:
        if d.poller.ident is not None:  # serve() can fail before it starts the poller
            d.poller.join(timeout=5)
        for run in list(d.runs.values()):
            d._end_run(run, 0)
        d.probes.detach()
        try:
            sock.unlink()
        except FileNotFoundError:
            pass
        lockf.close()
        _pidfile(sock).unlink(missing_ok=True)
        print("roard: stopped", file=sys.stderr, flush=True)


def cgroup_prefix(sock: Path) -> str:
    """Names of the run cgroups owned by the daemon on this socket."""
    return "d" + hashlib.sha1(str(sock).encode()).hexdigest()[:8] + "-"


def killed_with_job(path: Path, placement, wait: float = 1.0,
                    dying_wait: float = 15.0) -> str | None:
    """Why a run's client vanished, when its job was ended around it: the run
    cgroup empties on its own (nothing of roard's doing) and no process is
    left in the caller's own cgroup. That is what the job's cgroup.kill (and
    scancel, pod deletion, systemctl stop, an OOM kill of the job) does; a
    roar run killed alone leaves its workload running.
    The cgroup gets `wait` seconds to empty; while every process left in it
    has a SIGKILL pending (they are being ended: on a loaded machine that can
    take longer), up to `dying_wait`."""
    start = time.monotonic()
    while cgroups.populated(path):
        waited = time.monotonic() - start
        if waited > dying_wait or (waited > wait and not all(
                map(_being_killed, cgroups.pids(path)))):
            return None
        time.sleep(0.02)
    if placement.parent != placement.caller or placement.caller == "/":
        return None
    caller_dir = path.parent.parent
    try:
        left = (caller_dir / "cgroup.procs").read_text().split()
    except OSError:
        return None
    if left:
        return None
    return (f"ended together with every process of the caller's cgroup {placement.caller} "
            f"(killed from outside: the job's cgroup.kill, scancel, pod deletion, systemctl "
            f"stop or an OOM kill of the job)")


def _being_killed(pid: int) -> bool:
    """pid has a SIGKILL pending (or is gone, or a zombie): it is ending."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == "State" and value.split()[0] in ("Z", "X"):
                    return True
                if key in ("SigPnd", "ShdPnd") and int(value, 16) & (1 << (signal.SIGKILL - 1)):
                    return True
    except (FileNotFoundError, ProcessLookupError):
        return True
    except (OSError, ValueError, IndexError):
        return False
    return False


def _clean_stale_cgroups(sock: Path) -> None:
    """Run cgroups left by a daemon on this socket that died: end their
    processes and remove them (they may be below any caller's cgroup)."""
    spool = sock.parent / "spool"
    if spool.is_dir():  # their clients stored what they had, marked incomplete
        for f in spool.glob(cgroup_prefix(sock) + "*.spool"):
            f.unlink(missing_ok=True)
    for d in cgroups.run_cgroups(cgroup_prefix(sock)):
        try:
            cgroups.kill_all(d)
            cgroups.remove(d)
        except OSError:
            pass


def start_background(timeout: float = 60.0, idle_exit: float | None = None) -> int:
    """Start roard detached; returns its pid once it answers. idle_exit: it
    exits after that many seconds without runs (unless ROARD_IDLE_EXIT says)."""
    st = daemon_status()
    if st is not None:
        return st["pid"]
    if os.geteuid() != 0:
        raise DaemonError("starting roard needs root")
    sock = socket_path()
    sock.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": _package_parent()}
    if idle_exit is not None:
        env.setdefault("ROARD_IDLE_EXIT", f"{idle_exit:g}")
    log = open(sock.with_name("roard.log"), "ab")
    proc = subprocess.Popen([sys.executable, "-m", "roar.daemon"], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log, start_new_session=True, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = daemon_status()
        if st is not None:
            return st["pid"]
        if proc.poll() is not None:
            raise DaemonError(f"roard exited with status {proc.returncode}; see "
                              f"{sock.with_name('roard.log')}")
        time.sleep(0.1)
    raise DaemonError(f"roard did not answer within {timeout:.0f}s; see "
                      f"{sock.with_name('roard.log')}")


def start_for_run(timeout: float = 300.0) -> tuple[int, bool]:
    """roard on this socket for `roar run`, which found none: (pid, started).
    Concurrent runs start one between them (the first takes the start lock,
    the others find its roard). The one started exits after AUTO_IDLE_EXIT
    seconds without runs: nothing of roar's stays behind unasked."""
    sock = socket_path()
    try:
        sock.parent.mkdir(parents=True, exist_ok=True)
        lock = open(sock.with_name("roard.start.lock"), "a")  # noqa: SIM115 - closed below
    except OSError as e:
        raise DaemonError(f"{sock.parent}: {e.strerror}") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        st = daemon_status()
        if st is not None:
            return st["pid"], False
        return start_background(timeout, idle_exit=AUTO_IDLE_EXIT), True


def _package_parent() -> str:
    here = str(Path(__file__).resolve().parent.parent)
    extra = os.environ.get("PYTHONPATH")
    return here + (os.pathsep + extra if extra else "")


def stop(timeout: float = 30.0) -> None:
    sock = socket_path()
    try:
        pid = int(_pidfile(sock).read_text().strip())
    except (OSError, ValueError):
        st = daemon_status()
        if st is None:
            raise DaemonError("roard is not running") from None
        pid = st["pid"]
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        raise DaemonError("roard is not running (stale pid file)") from None
    except PermissionError:
        raise DaemonError("stopping roard needs root") from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise DaemonError(f"roard (pid {pid}) did not stop within {timeout:.0f}s")


ROARD_HELP = """usage: roard [--help] [--version]

roard, roar's privileged tracing daemon: run it as root (or use `roar daemon
start`, or the systemd unit). It serves unprivileged `roar run` clients on a
Unix socket until SIGTERM.

environment:
  ROAR_SOCKET         the socket to serve (default /run/roar/roard.sock)
  ROARD_IDLE_DETACH   seconds without runs before the probes are detached
                      (default 60)
  ROARD_IDLE_EXIT     seconds without runs before roard exits (default 0:
                      never; a roard `roar run` started itself: 900)
  ROARD_MAX_CONN_PER_UID  connections one user may hold open (default 64)
  ROARD_MAX_CONN      connections all users together may hold (default 1024)
  ROARD_REQUEST_TIMEOUT  seconds a client has to send its whole first
                      request line (default 10)
  ROARD_SPOOL_MAX     bytes of records spooled per run (default 1 GiB); past
                      it records go to the client through a bounded buffer
                      and are dropped, and counted on the run, when it is full
"""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(ROARD_HELP, end="")
        return
    if argv and argv[0] in ("-V", "--version"):
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"roard {version('roar')}")
        except PackageNotFoundError:
            print("roard (version unknown: roar is not installed)")
        return
    if argv:
        print(f"roard: unknown argument {argv[0]!r} (roard --help)", file=sys.stderr)
        sys.exit(2)
    try:
        serve_forever()
    except DaemonError as e:
        print(f"roard: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # probes failing to load: one line, the fix in roar doctor
        print(f"roard: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
