"""Where a run's events come from: probes loaded in this process (embedded,
root only) or the roard daemon over its Unix socket. Both tag a fresh run
cgroup holding the workload and hand its raw records to a callback until
the cgroup is empty and every record has been delivered."""

from __future__ import annotations

import _socket
import io
import os
import select
import threading
import time
from collections import deque

from roar.capture import jsonc, namespaces, protocol
from roar.capture.protocol import SessionError

DEFAULT_LINGER = 5.0  # seconds leftover processes may outlive the run's first one
# The kernel side wakes the consumer once per batch of records; what stays
# below a batch is picked up by polling this often (it bounds how late an
# input's first-read hash can start): embedded, and by roard for a run that
# asks to be served promptly (others wait its IDLE_POLL_S).
POLL_MS = 5
# A read of roard's stream shorter than this means the client is not behind.
# So does a read after which nothing more is waiting on the socket: roard
# sends a run's records in batches (its spooler takes them every
# SPOOL_EVERY_S), and a busy run's batch is often larger than this.
IDLE_READ = 64 << 10


def wait_empty(path: os.PathLike, linger: float) -> int:
    """Wait for the cgroup to empty; after `linger` seconds end what is left
    (SIGTERM, then SIGKILL). Returns how many processes had to be ended."""
    import signal

    from roar.capture import cgroups

    deadline = time.monotonic() + linger
    delay = 0.001
    while cgroups.populated(path):
        if time.monotonic() > deadline:
            killed = cgroups.kill_all(path, signal.SIGTERM)
            end = time.monotonic() + 2.0
            while cgroups.populated(path) and time.monotonic() < end:
                time.sleep(0.02)
            if cgroups.populated(path):
                cgroups.kill_all(path, signal.SIGKILL)
                while cgroups.populated(path):
                    time.sleep(0.01)
            return killed
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return 0


class EmbeddedSession:
    """Probes loaded by this process for a single run (needs root)."""

    mode = "embedded"

    def __init__(self):
        from roar.capture.probes import Probes  # BCC is imported only when embedded

        self.queue: deque[bytes] = deque()
        self.probes = Probes(self.queue.append)
        self.lost = 0
        self.killed = 0
        self.killed_at_ns: int | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._wake = threading.Event()
        self.path: os.PathLike | None = None
        self.cgroup_id = 0
        self.placement: dict | None = None
        self.host_pid: int | None = None
        self.namespaces: dict | None = None
        self._barriers: deque = deque()  # callbacks waiting for the next drain
        self._fast_until = 0.0  # poll every 1 ms until then (after a barrier)

    def begin(self, pid: int, run_id: str, home: str = "", root_fds: dict | None = None,
              prompt: bool = False) -> None:
        """Tracing starts in started() (nothing to overlap here); this
        process's poller is always prompt."""
        self._begun = (pid, run_id)

    def started(self) -> None:
        from roar.capture import cgroups  # not in roar run's daemon path: it needs pathlib

        pid, run_id = self._begun
        placement = cgroups.place(run_id, pid)  # below our own cgroup: the job's
        self.placement = placement.record()
        # embedded, the probes are ours: our pid namespace must be the kernel's
        self.host_pid = pid
        self.namespaces = namespaces.identity(pid)
        self.path, self.cgroup_id = placement.path, placement.cgroup_id
        self.probes.tag(self.cgroup_id, pid, time.monotonic_ns(), placement.level)
        self.probes.attach()
        # after attach, so that the watchdog shares the probes' fds; the workload
        # is still held (run.py releases it after this returns), so a roar run
        # killed before the fork leaves nothing running
        self._watchdog()
        self._poller = threading.Thread(target=self._poll, name="roar-ringbuf", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            # right after a barrier more follow, often (roard does the same)
            self.probes.poll(1 if time.monotonic() < self._fast_until else POLL_MS)
            self._barrier_marks()
            if self.queue:
                self._wake.set()

    def _barrier_marks(self) -> None:
        """Barriers asked for so far go into the queue after every record
        committed before they were asked for (consumed now)."""
        n = len(self._barriers)
        if n:
            self.probes.consume()
            for _ in range(n):
                self.queue.append(self._barriers.popleft())

    def barrier(self, callback) -> bool:
        """callback() is called in the model's thread once every record committed
        before this call has been fed (the pre-image hold); False if the run is
        ending (no barrier then)."""
        if self._stop.is_set():
            return False
        self._fast_until = time.monotonic() + 0.1
        self._barriers.append(callback)
        return True

    def give_listener(self, fd: int) -> None:
        """(Daemon sessions hand roard a copy; embedded, the watchdog SIGKILLs
        the workload when roar run dies: nothing is left held.)"""

    def records(self, sink=None):
        """Raw records of this run, in order, until the run has ended; None
        whenever all that arrived so far was handed out (the consumer is idle).
        (sink: DaemonSession's; records arrive here one by one.)"""
        q = self.queue
        while True:
            while q:
                yield q.popleft()
            if self._done.is_set() and not q:
                return
            yield None
            self._wake.wait(0.05)
            self._wake.clear()

    def root_exited(self, linger: float) -> None:
        try:
            self.killed = wait_empty(self.path, linger)
        finally:
            self._stop.set()
            self._poller.join()
            self.probes.consume()  # everything the dead processes emitted
            while self._barriers:  # asked for meanwhile: answered after it all
                self.queue.append(self._barriers.popleft())
            self.lost = self.probes.untag(self.cgroup_id)
            from roar.capture import cgroups

            cgroups.remove(self.path)
            self._done.set()
            self._wake.set()

    def abort(self) -> None:
        if self.path is None:
            return
        from roar.capture import cgroups

        cgroups.kill_all(self.path)
        if getattr(self, "_poller", None) is not None:
            self.root_exited(0)
            return
        # start() failed half way: no poller to stop, maybe not even tagged
        self.probes.untag(self.cgroup_id)
        cgroups.remove(self.path)

    def pids(self) -> list[int]:
        from roar.capture import cgroups

        return cgroups.pids(self.path) if self.path is not None else []

    def kill_run(self) -> None:
        """End every process of the run now (an audit policy's kill)."""
        if self.path is not None:
            from roar.capture import cgroups

            self.killed_at_ns = cgroups.kill_tree(self.path)

    def stored(self, chain: dict | None = None) -> None:
        pass

    def chained(self, timeout: float = 30.0) -> dict | None:
        return None  # no roard here: chain.appended asks one, or writes the chain itself

    def unstored(self, why: str) -> None:
        pass

    def _watchdog(self) -> None:
        """A child that outlives this process. If `roar run` dies (even by
        SIGKILL) it ends the workload and removes the run cgroup: nothing is
        left running untraced. Forked once the probes are attached, it shares
        their perf event fds, so it, not `roar run`, pays for detaching them
        (an RCU grace period each, ~4 s for all) when it exits. Were `roar
        run` their last holder, its exit would spend those seconds before the
        pipe below reported its death, the workload running on untraced
        (measured: 3.6-4.3 s; now under 0.05 s)."""
        from roar.capture import cgroups

        r, w = os.pipe()
        if os.fork() == 0:
            os.setsid()
            os.close(w)
            # out of the job's cgroup: when the job is killed whole (cgroup.kill),
            # this is what removes the run cgroup it made there
            try:
                cgroups.move(cgroups.cgroup2_mount(), os.getpid())
            except (OSError, cgroups.CgroupError):
                pass
            os.read(r, 1)  # returns when the parent is gone, however it ended
            if self.path is not None and self.path.exists():
                cgroups.kill_all(self.path)
                try:
                    cgroups.remove(self.path)
                except OSError:
                    pass
            os._exit(0)
        os.close(r)
        self._watchdog_fd = w  # closed with this process

    def close(self) -> None:
        pass


class _SocketReader(io.RawIOBase):
    """What sock.makefile("rb") reads through, for a socket of the C module
    (roar/capture/protocol.py: the socket module is not imported by roar run)."""

    def __init__(self, sock):
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        return self._sock.recv_into(b)

    def fileno(self) -> int:
        return self._sock.fileno()


class OlderDaemon(SessionError):
    """roard predates the two-step start (begin_into): it closed the connection;
    a new one takes the one-step start (begin) as before."""


class DaemonSession:
    """A run traced by roard; records arrive over the socket."""

    mode = "daemon"

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = path or protocol.socket_name()
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            self.sock.connect(str(self.path))
        except OSError as e:
            self.sock.close()
            raise SessionError(f"roard is not reachable at {self.path}: {e.strerror}") from None
        self.rfile = io.BufferedReader(_SocketReader(self.sock), 1 << 20)
        self.lost = 0
        self.killed = 0
        self.killed_at_ns: int | None = None
        self.dropped = 0  # records roard could not keep (its spool cap)
        self.dropped_why = ""
        self.died = False  # roard went away before it ended the run
        self._chain_asked = False  # stored() handed roard the run's chain op
        self.end: dict | None = None
        self.cgroup_path: str | None = None
        self.placement: dict | None = None
        self.host_pid: int | None = None
        self.namespaces: dict | None = None
        self._send = threading.Lock()  # requests come from two threads (the pre-image hold)
        self._barriers: dict[int, object] = {}
        self._barrier_n = 0
        self._ending = False  # root_exited was sent: roard takes no more barriers

    def request(self, obj: dict, fds: list[int] | None = None) -> None:
        data = jsonc.dumps(obj).encode() + b"\n"
        try:
            with self._send:
                if fds:
                    protocol.send_fds(self.sock, data, fds)
                else:
                    self.sock.sendall(data)
        except OSError as e:  # EPIPE, ECONNRESET: roard is gone
            raise SessionError(f"roard went away: {e.strerror or e}") from None

    def barrier(self, callback) -> bool:
        """callback() is called in the model's thread once every record the
        kernel committed before this call has been fed (roard drains the ring
        buffer, then spools a barrier frame after what it routed); False when
        the run is ending (no barrier then)."""
        with self._send:
            if self._ending or self.end is not None:
                return False
            self._barrier_n += 1
            n = self._barrier_n
            self._barriers[n] = callback
        try:
            self.request({"op": "barrier", "n": n})
        except SessionError:
            self._barriers.pop(n, None)
            return False
        return True

    def give_listener(self, fd: int) -> None:
        """Hand roard a copy of the pre-image hold's seccomp listener: should
        this client die, roard lets the workload's held syscalls continue
        while it ends the run (closed, they would fail with ENOSYS)."""
        self._tell({"op": "listener"}, [fd])

    def _tell(self, obj: dict, fds: list[int] | None = None) -> None:
        """A message roard may no longer be there to hear (it died mid-run):
        what the client received is stored all the same."""
        try:
            self.request(obj, fds)
        except SessionError:
            if not self.end:  # no end message: roard died mid-run
                self.died = True

    def _reply(self) -> dict:
        try:
            frame = protocol.read_frame(self.rfile)
        except OSError as e:
            raise SessionError(f"roard went away: {e.strerror or e}") from None
        if frame is None or frame[0] != protocol.JSON:
            raise SessionError("roard closed the connection")
        return jsonc.loads(frame[1])

    def begin(self, pid: int, run_id: str, home: str = "", root_fds: dict | None = None,
              prompt: bool = False) -> None:
        """Ask roard to trace pid's new cgroup (it creates it, tags it and moves
        pid there while we go on; started() waits for its answer). home and
        root_fds let roard rebuild the run into this user's store should this
        client die. prompt: the run's records are wanted within POLL_MS, not
        roard's idle poll (an audit policy's kill)."""
        self.request(self._trace_request(run_id, home, root_fds, prompt, pid=pid))

    def begin_into(self, parent: int, run_id: str, home: str = "",
                   root_fds: dict | None = None, prompt: bool = False) -> str | None:
        """begin() for a workload process `parent` (the launcher) has yet to
        fork: roard makes the run cgroup first and answers its directory, for
        the fork to clone the workload straight into it (no migration to wait
        for; cgroups.make_for), or None where it could not. give_pid() then
        names the workload; roard moves it if it was not born there."""
        self.request(self._trace_request(run_id, home, root_fds, prompt, into=True,
                                         parent=parent))
        reply = self._reply()
        if not reply.get("ok"):
            if reply.get("error") == "trace needs a pid":  # a roard before the two steps
                raise OlderDaemon("roard knows only the one-step start")
            raise SessionError(f"roard refused: {reply.get('error', 'unknown error')}")
        into = reply.get("into")
        return into if isinstance(into, str) else None

    def give_pid(self, pid: int) -> None:
        self.request({"op": "pid", "pid": pid})

    @staticmethod
    def _trace_request(run_id: str, home: str, root_fds: dict | None, prompt: bool,
                       **more) -> dict:
        req = {"op": "trace", **more, "run_id": run_id, "home": home,
               "root_fds": {str(k): v for k, v in (root_fds or {}).items()}}
        if prompt:
            req["prompt"] = True
        return req

    def started(self) -> None:
        reply = self._reply()
        if not reply.get("ok"):
            raise SessionError(f"roard refused: {reply.get('error', 'unknown error')}")
        from roar.capture.events import LAYOUT

        if reply.get("layout", LAYOUT) != LAYOUT:  # none: a roard from before the check
            raise SessionError(f"roard runs another version of roar (record layout "
                               f"{reply['layout']}, this roar {LAYOUT}): restart it with this "
                               f"one (roar daemon stop; roar daemon start) or the system unit")
        self.cgroup_id = reply["cgroup"]
        self.cgroup_path = reply.get("path")
        self.placement = reply.get("placement")
        self.attached = reply.get("procs")  # attach: the processes taken over
        # the workload's pid as the kernel's records name it (a container's differs)
        self.host_pid = reply.get("pid")
        self.namespaces = reply.get("namespaces")

    def records(self, sink=None):
        """Raw records until roard's end message; frames are parsed out of
        large reads, not read one by one. None after a read that was not a
        backlog (IDLE_READ): the consumer has caught up with the run.
        sink(buf, pos, max_frame) -> (pos, exception or None): takes the event
        frames from buf[pos] on itself (the compiled model's feed_frames) and
        says where it stopped; an exception one of them raised is yielded."""
        try:
            yield from self._records(sink)
        except BaseException:
            self._fire_barriers()
            raise
        self._fire_barriers()

    def _fire_barriers(self) -> None:
        """Barriers roard did not answer (the stream ended): the model has had
        everything there is (called in the model's thread, as records())."""
        with self._send:
            self._ending = True
            left, self._barriers = list(self._barriers.values()), {}
        for callback in left:
            callback()

    def _records(self, sink=None):
        head = protocol.FRAME.size
        unpack = protocol.FRAME.unpack_from
        waiting = select.poll()
        waiting.register(self.sock, select.POLLIN)
        buf = b""
        while True:
            try:
                chunk = self.rfile.read1(1 << 20)
            except OSError:  # reset: roard was killed
                chunk = b""
            if not chunk:
                if self.end is None:
                    self.died = True
                    self.end = {}
                return
            buf = buf + chunk if buf else chunk
            pos, n = 0, len(buf)
            while n - pos >= head:
                if sink is not None:
                    pos, err = sink(buf, pos, protocol.MAX_FRAME)
                    if err is not None:
                        yield err
                        continue
                    if n - pos < head:
                        break
                kind, size = unpack(buf, pos)
                if size > protocol.MAX_FRAME:
                    raise SessionError("roard sent a frame that is too large")
                if n - pos - head < size:
                    break
                payload = buf[pos + head:pos + head + size]
                pos += head + size
                if kind == protocol.EVENT:
                    yield payload
                elif kind == protocol.BARRIER:
                    callback = self._barriers.pop(int.from_bytes(payload, "little"), None)
                    if callback is not None:
                        yield callback
                else:
                    self.end = jsonc.loads(payload)
                    self.lost = int(self.end.get("lost", 0))
                    self.killed = int(self.end.get("killed", 0))
                    self.killed_at_ns = self.end.get("killed_at_ns")
                    self.dropped = int(self.end.get("dropped", 0))
                    self.dropped_why = str(self.end.get("dropped_why") or "")
                    return
            buf = buf[pos:]
            # (read1 took all the reader had buffered: the socket says the rest)
            if n < IDLE_READ or not waiting.poll(0):
                yield None

    def pids(self) -> list[int]:
        if not self.cgroup_path:
            return []
        from pathlib import Path

        from roar.capture import cgroups

        return cgroups.pids(Path(self.cgroup_path))

    def root_exited(self, linger: float) -> None:
        with self._send:
            self._ending = True
        self._tell({"op": "root_exited", "linger": linger})

    def kill_run(self) -> None:
        """Ask roard to end every process of the run now (an audit policy's
        kill); the time it did is in its end message (killed_at_ns)."""
        self._tell({"op": "kill"})

    def attach(self, pid: int, run_id: str, home: str) -> None:
        """Ask roard to move pid's live process tree into a new run cgroup
        (roar attach); started() waits for the answer, then .attached holds
        a snapshot of each process taken over."""
        self.request({"op": "attach", "pid": pid, "run_id": run_id, "home": home})

    def detach(self) -> None:
        """Give the attached tree back to its cgroup; the run then ends."""
        self._tell({"op": "detach"})

    def stored(self, chain: dict | None = None) -> None:
        """The run is in the store: roard may drop its spool. chain: the run's
        chain op (roar/record/chain.py), which roard appends to the user's
        chain before it closes the connection (answered: chained())."""
        msg = {"op": "stored", "chain": chain} if chain else {"op": "stored"}
        if chain and len(jsonc.dumps(msg)) >= protocol.MAX_REQUEST:
            msg = {"op": "stored"}  # too long a line for roard: a chain op of its own
        self._chain_asked = "chain" in msg and not self.died
        self._tell(msg)

    def chained(self, timeout: float = 30.0) -> dict | None:
        """roard's answer to the chain op stored() handed it; None when there
        is none (none handed, roard gone, or a roard from before the op)."""
        if not self._chain_asked or self.died:
            return None
        try:
            self.sock.settimeout(timeout)
            return self._reply()
        except (OSError, SessionError, ValueError):
            return None

    def unstored(self, why: str) -> None:
        """The run could not be stored (a full disk): roard rebuilds it from
        its spool, and its record says why rather than that roar was killed."""
        self._tell({"op": "unstored", "why": why[:500]})

    def stop_workload(self, root_pid: int) -> None:
        """roard died: end every process of the run ourselves (they are the
        caller's own), until its cgroup is empty."""
        import signal

        deadline = time.monotonic() + 5.0
        while True:
            left = set(self.pids()) | {root_pid}
            for pid in left - {0, os.getpid()}:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if not self.pids() or time.monotonic() > deadline:
                return
            time.sleep(0.01)

    def abort(self) -> None:
        """The run did not start (refused before its command was released):
        roard ends it and keeps nothing."""
        try:
            self.request({"op": "abort"})
        except SessionError:
            pass

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()


def detach_run(run_id: str, path: str | os.PathLike | None = None) -> dict:
    """roard's answer to `roar detach RUN` ({ok, run} or {ok: false, error})."""
    s = DaemonSession(path)
    try:
        s.sock.settimeout(30)
        s.request({"op": "detach", "run_id": run_id})
        return s._reply()
    finally:
        s.close()


def daemon_status(path: str | os.PathLike | None = None,
                  timeout: float = 2.0) -> dict | None:
    """roard's status, or None when no daemon answers."""
    try:
        return protocol.ask({"op": "status"}, path, timeout)
    except (OSError, protocol.NoDaemon, protocol.ProtocolError, ValueError):
        return None
