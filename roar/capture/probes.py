"""Loading the kernel side with BCC: compile bpf/, load the tracepoint
programs, attach / detach them, tag run cgroups and drain the ring buffer."""

from __future__ import annotations

import ctypes
import glob
import os
import re
import sys
import threading

from roar.capture import features
from roar.capture.events import GEN_TAGS, TAG_LEVELS, program_text
from roar.capture.protocol import SessionError

RINGBUF_PAGES = 16384  # 64 MiB: about 400k events of burst at ~150 bytes each


# OpenSSL entry points whose plaintext carries HTTP: (symbol, program, on return)
TLS_PROBES = (("SSL_write", "roar_tls_write", False),
              ("SSL_write_ex", "roar_tls_write", False),
              ("SSL_read", "roar_tls_read_enter", False),
              ("SSL_read", "roar_tls_read_return", True),
              ("SSL_read_ex", "roar_tls_read_ex_enter", False),
              ("SSL_read_ex", "roar_tls_read_return", True),
              ("SSL_free", "roar_tls_free", False))
# Raw tracepoint programs (bpf/files.h, compiled where features.raw_rw_flags() says)
# and the syscalls:* programs each stands in for: loaded instead of those, which
# are the fallback wherever the raw one is refused (at load or at attach).
RAW_RW_CALLS = ("read", "pread64", "readv", "preadv", "preadv2",
                "write", "pwrite64", "writev", "pwritev", "pwritev2")
RAW_PROGRAMS = {b"raw_tracepoint__sys_enter":
                frozenset(b"tracepoint__syscalls__sys_enter_" + c.encode() for c in RAW_RW_CALLS)}
TLS_LIBRARY = re.compile(r"(^|/)libssl(-[0-9a-f]+)?\.so(\.[0-9.]+)?$")


LD_CACHE = "/etc/ld.so.cache"
_tls_seen: tuple[tuple | None, list[str]] | None = None  # (ld.so.cache's stat, libraries)


def _ld_cache_stat() -> tuple | None:
    try:
        st = os.stat(LD_CACHE)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def tls_libraries() -> list[str]:
    """The host's OpenSSL libraries, from the dynamic linker's cache: probed
    while a run is traced, so the first HTTPS request of a run is seen. Private
    copies (in a wheel or a venv) are not probed: their TLS stays uninspected.
    `ldconfig -p` (a fork of roard, 6-10 ms) is asked again only when the
    cache file changed since it was last asked (or is missing)."""
    global _tls_seen
    key = _ld_cache_stat()
    if key is not None and _tls_seen is not None and _tls_seen[0] == key:
        return [lib for lib in _tls_seen[1] if os.path.exists(lib)]
    found = {}
    try:
        out = os.popen("ldconfig -p 2>/dev/null").read()
    except OSError:
        out = ""
    for line in out.splitlines():
        path = line.rpartition("=> ")[2].strip()
        if TLS_LIBRARY.search(path) and os.path.exists(path):
            found.setdefault(os.path.realpath(path), None)
    _tls_seen = key, sorted(found)
    return sorted(found)


def _tracepoint(name: bytes) -> bytes:
    """tracepoint__syscalls__sys_enter_read -> syscalls:sys_enter_read"""
    return name[len(b"tracepoint__"):].replace(b"__", b":")


class ProbeError(SessionError):
    """The probes cannot be loaded or attached (a session that cannot start)."""


def _all_at_once(jobs: list) -> None:
    """Call every fn(*args) of jobs, each in a thread of its own (jobs that
    wait in the kernel, not on the GIL); those no thread could be had for run
    here. The first exception is raised once all have returned."""
    errors: list[BaseException] = []

    def call(fn, args):
        try:
            fn(*args)
        except BaseException as e:  # noqa: BLE001 - raised below, after the others
            errors.append(e)

    threads, left = [], list(jobs)
    while left:
        t = threading.Thread(target=call, args=left[-1], daemon=True)
        try:
            t.start()
        except RuntimeError:  # no thread to be had: the rest one after another
            break
        threads.append(t)
        left.pop()
    for job in left:
        call(*job)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def import_bcc():
    """BCC's Python bindings, from this interpreter or the OS dist-packages."""
    try:
        import bcc  # noqa: F401
    except ImportError:
        for d in ["/usr/lib/python3/dist-packages", "/usr/local/lib/python3/dist-packages",
                  *glob.glob("/usr/lib/python3*/site-packages"),
                  *glob.glob("/usr/lib64/python3*/site-packages")]:
            if os.path.isdir(os.path.join(d, "bcc")) and d not in sys.path:
                sys.path.append(d)
                try:
                    import bcc  # noqa: F401
                    break
                except ImportError:
                    sys.path.remove(d)
        else:
            raise ProbeError("BCC's Python bindings are not installed (install python3-bpfcc, "
                             "or run scripts/setup.sh)") from None
    import bcc

    return bcc


def ensure_tracefs() -> list[str]:
    """Mount tracefs and debugfs where they are missing; returns what was mounted."""
    mounted = []
    with open("/proc/mounts") as f:
        types = {(line.split()[1], line.split()[2]) for line in f}
    points = {p for p, _ in types}
    for fstype, where in (("tracefs", "/sys/kernel/tracing"), ("debugfs", "/sys/kernel/debug")):
        if where not in points and os.path.isdir(where):
            if os.system(f"mount -t {fstype} {fstype} {where} 2>/dev/null") == 0:
                mounted.append(where)
    return mounted


def _give_back_heap() -> None:
    """Hand the compiler's freed heap back to the system: BCC's clang/LLVM
    compile leaves ~50 MB freed but held by malloc in a process that lives on
    (roard: 324 -> 275 MB RSS, in ~20 ms once). glibc only; elsewhere a no-op."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Probes:
    """The loaded kernel side. `sink(raw_bytes)` receives every record; or
    the sink is a compiled router (roar/capture/_relay.c, roard's), whose C
    callback libbcc calls for each record: no Python per record."""

    def __init__(self, sink, ringbuf_pages: int = RINGBUF_PAGES):
        if os.geteuid() != 0:
            raise ProbeError("loading eBPF probes needs root (or start the daemon: roar daemon "
                             "start)")
        ensure_tracefs()
        text = program_text()
        try:  # a kernel without these would load nothing, or probes that never fire
            features.require(text)
        except features.FeatureError as e:
            raise ProbeError(str(e)) from None
        bcc = import_bcc()

        class _BPF(bcc.BPF):
            def _trace_autoload(self):  # attach later, on demand
                pass

        self.levels: dict[int, int] = {}  # level -> run cgroups tagged there
        cflags = [f"-DRINGBUF_PAGES={ringbuf_pages}", *features.compile_flags(),
                  "-Wno-macro-redefined", "-Wno-unused-value"]
        try:
            self.bpf = _BPF(text=text, cflags=cflags)
        except Exception as e:  # BCC raises bare Exception with the compiler's reason
            raise ProbeError(f"compiling the eBPF programs failed: {e} (run roar doctor)") from e
        self._bcc = bcc
        self.names = []  # syscalls:* and sched:* programs loaded (tracepoint__CAT__EVENT)
        self.raw: list[bytes] = []  # raw tracepoint programs loaded (raw_tracepoint__EVENT)
        funcs = [bcc.lib.bpf_function_name(self.bpf.module, i)
                 for i in range(bcc.lib.bpf_num_functions(self.bpf.module))]
        replaced: set[bytes] = set()
        for name in funcs:
            if name in RAW_PROGRAMS:
                try:
                    self.bpf.load_func(name, bcc.BPF.RAW_TRACEPOINT)
                except Exception:  # noqa: BLE001 - refused: the tracepoints it stands for
                    continue
                self.raw.append(name)
                replaced |= RAW_PROGRAMS[name]
        for name in funcs:
            if name.startswith(b"tracepoint__") and name not in replaced:
                self._load_tracepoint(name)
        self.attached = False
        self.tls: dict[str, list[tuple[str, bool]]] = {}  # library -> probes attached
        self._attach_lock = threading.Lock()
        self._levels_lock = threading.Lock()
        self._tagged_levels: dict[int, int] = {}
        self.sink = sink
        if hasattr(sink, "callback_address"):
            from bcc.libbcc import _RINGBUF_CB_TYPE

            self._cb = _RINGBUF_CB_TYPE(sink.callback_address)  # kept: libbcc holds it
            self.bpf._open_ring_buffer(self.bpf["events"].map_fd, self._cb,
                                       ctypes.c_void_p(sink.context_address))
        else:
            self._cb = self.bpf["events"].open_ring_buffer(self._on_record)
        _give_back_heap()

    def _load_tracepoint(self, name: bytes) -> None:
        try:
            self.bpf.load_func(name, self._bcc.BPF.TRACEPOINT)
        except Exception as e:  # BCC raises bare Exception with the verifier's reason
            raise ProbeError(f"the kernel refused {name.decode()}: "
                             f"{str(e).splitlines()[0]} (run roar doctor)") from e
        self.names.append(name)

    def _attach_raw(self) -> None:
        """Attach the raw tracepoint programs; one the kernel refuses is dropped
        for good, and the syscalls:* programs it stood for take its place."""
        for name in list(self.raw):
            try:
                self.bpf.attach_raw_tracepoint(tp=name[len(b"raw_tracepoint__"):], fn_name=name)
            except Exception:  # noqa: BLE001 - BCC raises bare Exception: the fallback
                self.raw.remove(name)
                for tp_name in sorted(RAW_PROGRAMS[name]):
                    self._load_tracepoint(tp_name)
                    self.bpf.attach_tracepoint(tp=_tracepoint(tp_name), fn_name=tp_name)

    def _on_record(self, ctx, data, size):
        self.sink(ctypes.string_at(data, size))
        return 0

    def attach(self) -> None:
        with self._attach_lock:
            if self.attached:
                return
            for name in self.names:
                self.bpf.attach_tracepoint(tp=_tracepoint(name), fn_name=name)
            self._attach_raw()
            self.attached = True
            if os.environ.get("ROAR_TLS_PROBES", "1") != "0":  # 0: no HTTPS plaintext (bench)
                for lib in tls_libraries():
                    self._attach_tls(lib)

    def detach(self) -> None:
        """Detach every program, all at once: closing a tracepoint's perf event
        waits for RCU grace periods (the kernel's tracepoint_synchronize_unregister),
        25-90 ms each; one after another, the 79 tracepoints and 7 uprobes took
        3-7 s (roard's stop, its idle detach holding the attach lock), at once
        they share the grace periods (~0.1 s)."""
        with self._attach_lock:
            if not self.attached:
                return

            def tls(lib, sym, ret):
                try:
                    if ret:
                        self.bpf.detach_uretprobe(name=lib, sym=sym)
                    else:
                        self.bpf.detach_uprobe(name=lib, sym=sym)
                except Exception:  # noqa: BLE001 - the library may be gone; nothing left to undo
                    pass

            jobs = [(self.bpf.detach_tracepoint, (_tracepoint(name),)) for name in self.names]
            jobs += [(self.bpf.detach_raw_tracepoint, (name[len(b"raw_tracepoint__"):],))
                     for name in self.raw]
            jobs += [(tls, (lib, sym, ret)) for lib, probes in self.tls.items()
                     for sym, ret in probes]
            _all_at_once(jobs)
            self.tls = {}
            self.attached = False
            self._forget_stashes()

    def _forget_stashes(self) -> None:
        """Empty the syscalls' stash (bpf/stash.h), the programs detached: each
        thread keeps its entry until its exit deletes it, and the exits of
        threads that end while nothing is attached would leave theirs behind
        for good (16,384 entries in all: a full map stashes nothing more)."""
        table = self.bpf["pending_args"]
        for key in list(table.keys()):
            try:
                del table[key]
            except KeyError:  # gone already
                pass

    def _attach_tls(self, lib: str) -> bool:
        """Probe one OpenSSL library's SSL_read/SSL_write (and _ex) and SSL_free.
        A library without a symbol (OpenSSL 1.0 has no _ex) gets the others;
        one that cannot be probed at all is left out (its TLS stays uninspected)."""
        if lib in self.tls:
            return True
        done = []
        for sym, fn, ret in TLS_PROBES:
            try:
                if ret:
                    self.bpf.attach_uretprobe(name=lib, sym=sym, fn_name=fn)
                else:
                    self.bpf.attach_uprobe(name=lib, sym=sym, fn_name=fn)
            except Exception:  # noqa: BLE001 - BCC raises bare Exception for a missing symbol
                continue
            done.append((sym, ret))
        if done:
            self.tls[lib] = done
        return bool(done)

    def tag(self, cgroup_id: int, root_pid: int, epoch: int, level: int) -> None:
        """Start tracing a run cgroup at `level` of the hierarchy; root_pid gets a
        fresh epoch so no stale per-fd state of an earlier process with its pid
        can hide its reads."""
        if not 0 < level < TAG_LEVELS:
            raise ProbeError(f"a run cgroup at level {level} cannot be traced "
                             f"(levels 1..{TAG_LEVELS - 1})")
        tagged = self.bpf["tagged"]
        lost = self.bpf["lost"]
        lost[lost.Key(cgroup_id)] = lost.Leaf(0)
        procs = self.bpf["procs"]
        state = procs.Leaf()  # struct proc_state (roar_event.h): zeroed, then by name
        state.epoch = epoch
        procs[procs.Key(root_pid)] = state
        with self._levels_lock:
            self.levels[level] = self.levels.get(level, 0) + 1
            self._tagged_levels[cgroup_id] = level
            self._write_levels()
            tagged[tagged.Key(cgroup_id)] = tagged.Leaf(1)
            self._tags_changed()

    def _tags_changed(self) -> None:
        """After every change of what is tagged (and of a root's epoch): the
        kernel side's per-CPU resolutions made before it are stale
        (bpf/tagging.h). Called with _levels_lock held: one writer."""
        gens = self.bpf["generations"]
        key = gens.Key(GEN_TAGS)
        gens[key] = gens.Leaf(gens[key].value + 1)

    def _write_levels(self) -> None:
        mask = 0
        for level, n in self.levels.items():
            if n:
                mask |= 1 << level
        table = self.bpf["tag_levels"]
        table[table.Key(0)] = table.Leaf(mask)

    def untag(self, cgroup_id: int) -> int:
        """Stop tracing a run cgroup; returns its lost-event count."""
        tagged = self.bpf["tagged"]
        with self._levels_lock:
            try:
                del tagged[tagged.Key(cgroup_id)]
            except KeyError:
                pass
            level = self._tagged_levels.pop(cgroup_id, None)
            if level is not None:
                self.levels[level] -= 1
                self._write_levels()
            self._tags_changed()
        return self.lost(cgroup_id, pop=True)

    def lost(self, cgroup_id: int, pop: bool = False) -> int:
        lost = self.bpf["lost"]
        key = lost.Key(cgroup_id)
        try:
            n = lost[key].value
        except KeyError:
            return 0
        if pop:
            del lost[key]
        return n

    @property
    def ring_fd(self) -> int:
        """The ring buffer's fd: readable once the kernel side has woken its
        consumer (epoll), until everything there is consumed."""
        return self.bpf["events"].map_fd

    def poll(self, timeout_ms: int) -> None:
        """Wait up to timeout_ms for a wakeup, then take everything there. The
        kernel side wakes the consumer once per batch; epoll alone would leave
        the records of a quiet moment waiting for the next batch."""
        self.bpf.ring_buffer_poll(timeout_ms)
        self.bpf.ring_buffer_consume()

    def consume(self) -> None:
        self.bpf.ring_buffer_consume()
