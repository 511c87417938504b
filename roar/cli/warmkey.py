"""The warm recorder's name and its start (roar/cli/warm.py is the server):
what the compiled launcher (roar/cli/launcher.c) computes to find it, and
what a run it handed to Python does on its way out to start one."""

from __future__ import annotations

import _signal
import _socket
import os
import sys

VERSION = b"roarw1"
KEYED = (b"ROAR_", b"ROARD_", b"PYTHON", b"LC_", b"HOME=", b"LANG=")
CREDS = (b"Uid:", b"Gid:", b"Groups:", b"CapInh:", b"CapBnd:", b"CapAmb:", b"NoNewPrivs:",
         b"Seccomp:")


# -- the key and the name (launcher.c computes the same) ----------------------------

def _fnv(h: int, data: bytes) -> int:
    for b in data + b"\0":
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def initial_environ() -> dict[bytes, bytes]:
    """This process's environment as exec gave it (/proc/self/environ): the
    launcher's, before the interpreter changed os.environ (PEP 538's locale
    coercion adds LC_CTYPE=C.UTF-8 when no locale is set: a key from
    os.environ would never match the launcher's)."""
    try:
        with open("/proc/self/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return dict(os.environb)
    out = {}
    for entry in raw.split(b"\0"):
        name, eq, value = entry.partition(b"=")
        if eq and name:
            out.setdefault(name, value)  # getenv's: the first of a name
    return out


def key(exe_dir: str, environ=None) -> str:
    """What a server must share with its launchers, hashed: a child must not
    inherit another uid's, cgroup's, namespace's, installation's or
    environment's state. environ: this process's initial one unless given."""
    environ = initial_environ() if environ is None else environ
    h = 14695981039346656037
    h = _fnv(h, VERSION)
    h = _fnv(h, b"uid=%d" % os.getuid())
    # the credentials an exec keeps and the root directory (launcher.c's comment)
    with open("/proc/self/status", "rb") as f:
        for line in f.read().split(b"\n"):
            if line.startswith(CREDS):
                h = _fnv(h, line)
    root = os.stat("/")
    h = _fnv(h, b"root=%d:%d" % (root.st_dev, root.st_ino))
    with open("/proc/self/cgroup", "rb") as f:
        h = _fnv(h, f.read())
    for ns in ("pid", "mnt", "cgroup", "net"):
        h = _fnv(h, os.fsencode(os.readlink(f"/proc/self/ns/{ns}")))
    h = _fnv(h, os.fsencode(exe_dir))
    for entry in sorted(k + b"=" + v for k, v in environ.items()
                        if (k + b"=").startswith(KEYED)):
        h = _fnv(h, entry)
    return f"{h:016x}"


def address(k: str) -> bytes:
    return b"\0roar-warm-%d-%s" % (os.getuid(), k.encode())


def launcher_dir() -> str | None:
    """The launcher's directory when this is the Python entry it hands runs to
    (roar-py, next to it); None for `python -m roar`."""
    if os.path.basename(sys.argv[0]) != "roar-py":
        return None
    d = os.path.dirname(os.path.realpath(sys.argv[0]))
    return d if os.path.exists(os.path.join(d, "roar")) else None


def listening(k: str) -> bool:
    """Whether something listens on the name (not connecting: a connection is
    a request to a server)."""
    name = address(k)[1:].decode()
    try:
        with open("/proc/net/unix", "rb") as f:
            return any(line.rstrip().endswith(b" @" + name.encode()) for line in f)
    except OSError:
        return False


def _connect(k: str):
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    try:
        s.connect(address(k))
    except OSError:
        s.close()
        return None
    return s


def server_pid(exe_dir: str, environ=None) -> int | None:
    """The pid of the server this environment's launcher would use (tests)."""
    s = _connect(key(exe_dir, environ))
    if s is None:
        return None
    import struct

    try:
        pid, uid, _gid = struct.unpack("3i", s.getsockopt(_socket.SOL_SOCKET,
                                                           _socket.SO_PEERCRED, 12))
    finally:
        s.close()
    return pid if uid == os.getuid() else None


def start_for_next_time() -> None:
    """At the end of a run the launcher handed to Python (it found no server):
    start one for the next runs, daemonized, unless one answers already. Never
    from inside a traced run, never with ROAR_WARM=0."""
    if os.environ.get("ROAR_WARM", "1") == "0" or "ROAR_RUN_ID" in os.environ:
        return
    exe_dir = launcher_dir()
    if exe_dir is None:
        return
    try:
        k = key(exe_dir)
    except OSError:
        return
    if listening(k):
        return
    try:
        pid = os.fork()
    except OSError:
        return
    if pid:
        os.waitpid(pid, 0)
        return
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        os.chdir("/")
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, os.sysconf("SC_OPEN_MAX") if os.sysconf("SC_OPEN_MAX") > 0 else 65536)
        for sig in range(1, _signal.NSIG):
            try:
                _signal.signal(sig, _signal.SIG_DFL)
            except (OSError, ValueError):
                pass
        _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
        # the environment the launcher had (not os.environ's, changed by the
        # interpreter): the server's key is computed from it again
        os.execve(sys.executable, [sys.executable, "-c",
                                   "from roar.cli.warm import serve; serve()", exe_dir, k],
                  initial_environ())
    finally:
        os._exit(1)
