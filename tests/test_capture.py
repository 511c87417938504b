"""Capture tests: real workloads under the real probes, with real hashes.

Each test runs one workload (python3 -c, sh, coreutils) under `roar run`
through the session daemon, then checks the stored run against what the
workload really did: absolute paths, content hashes (xxh3-128 computed here,
before the run for inputs and after it for outputs), processes and exit
status. Inputs/outputs are compared as exact sets, so a missed file and a
spurious one both fail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from conftest import PY, KnownBug, last_run, roar_cmd, xxh128

pytestmark = pytest.mark.capture


# Raw syscalls from python, for the variants the os module never issues.
PRELUDE = """\
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sysc(nr, *args):
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    r = libc.syscall(ctypes.c_long(nr), *conv)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r
def write(path, text, dir_fd=None):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dir_fd)
    os.write(fd, text); os.close(fd)
class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
AT_FDCWD = -100
"""

SYS_OPEN, SYS_CREAT, SYS_PREADV, SYS_PWRITEV = 2, 85, 295, 296
SYS_PREADV2, SYS_PWRITEV2, SYS_RENAMEAT2, SYS_EXECVEAT = 327, 328, 316, 322
SYS_OPENAT2, SYS_CLOSE_RANGE, SYS_IO_URING_SETUP, SYS_EXIT = 437, 436, 425, 60


# -- helpers -----------------------------------------------------------------------


# for a workload's script (it cannot import roar: those reads would be the run's):
# `mount`, where the cgroup2 hierarchy is mounted
CGROUP2_MOUNT = """import os
mount = None
for line in open("/proc/self/mountinfo"):
    left, _, right = line.partition(" - ")
    if right.split()[0] == "cgroup2":
        mount = left.split()[4]
        break
"""


def py(roar, code: str, *, prelude: bool = False, **kw):
    """roar run -- python3 -c CODE."""
    src = (PRELUDE if prelude else "") + textwrap.dedent(code)
    return roar.run(PY, "-c", src, **kw)


def put(path: Path, content: bytes | str) -> tuple[str, str]:
    """Write a file before the run; returns (absolute path, hash)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return str(path), xxh128(path)


def versions(entries: list[dict]) -> dict[str, dict]:
    return {e["path"]: e for e in entries}


def assert_versions(entries: list[dict], expected: dict[str, str], what: str) -> None:
    """entries (inputs or outputs of a run doc) are exactly `expected` (path -> hash)."""
    got = versions(entries)
    assert sorted(got) == sorted(expected), (
        f"{what}: missing {sorted(set(expected) - set(got))}, "
        f"unexpected {sorted(set(got) - set(expected))}")
    for path, h in expected.items():
        e = got[path]
        assert e["status"] == "ok" and e["hash"] == h, (
            f"{what} {path}: hash {e['hash']} status {e['status']}, expected {h}")


def outputs_now(*paths: Path) -> dict[str, str]:
    return {str(p): xxh128(p) for p in paths}


def assert_complete(doc: dict) -> None:
    assert doc["complete"] is True, f"run incomplete: {doc['incomplete_reasons']}"
    assert doc["lost_events"] == 0


def trace(roar, run_id: str, *extra) -> dict:
    return roar.json("trace", run_id, *extra)


def proc_files(proc: dict) -> dict[str, dict]:
    return {f["path"]: f for f in proc["files"]}


# -- opens ---------------------------------------------------------------------------


def test_open_openat_openat2_creat(roar):
    w = roar.cwd
    ins = dict([put(w / "via_open.txt", "read through open(2)\n"),
                put(w / "via_openat.txt", "read through openat(2)\n"),
                put(w / "via_openat2.txt", "read through openat2(2)\n"),
                put(w / "sub" / "via_dirfd.txt", "read through openat(dirfd)\n"),
                put(w / "sub" / "via_openat2_dirfd.txt", "openat2 with a dirfd\n")])
    _, doc = py(roar, f"""
        fd = sysc({SYS_OPEN}, b"via_open.txt", os.O_RDONLY, 0)
        os.read(fd, 4096); os.close(fd)
        fd = os.open("via_openat.txt", os.O_RDONLY)              # openat(AT_FDCWD)
        os.read(fd, 4096); os.close(fd)
        class How(ctypes.Structure):
            _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                        ("resolve", ctypes.c_uint64)]
        how = How(os.O_RDONLY, 0, 0)
        fd = sysc({SYS_OPENAT2}, AT_FDCWD, b"via_openat2.txt", ctypes.byref(how), 24)
        os.read(fd, 4096); os.close(fd)
        d = os.open("sub", os.O_RDONLY | os.O_DIRECTORY)
        fd = os.open("via_dirfd.txt", os.O_RDONLY, dir_fd=d)     # openat(dirfd)
        os.read(fd, 4096); os.close(fd)
        fd = sysc({SYS_OPENAT2}, d, b"via_openat2_dirfd.txt", ctypes.byref(how), 24)
        os.read(fd, 4096); os.close(fd)
        # outputs
        fd = sysc({SYS_CREAT}, b"out_creat.txt", 0o644)
        os.write(fd, b"made by creat\\n"); os.close(fd)
        fd = sysc({SYS_OPEN}, b"out_open.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, b"made by open\\n"); os.close(fd)
        how = How(os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, 0)
        fd = sysc({SYS_OPENAT2}, d, b"out_openat2.txt", ctypes.byref(how), 24)
        os.write(fd, b"made by openat2\\n"); os.close(fd)
        fd = os.open("out_openat.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, dir_fd=d)
        os.write(fd, b"made by openat\\n"); os.close(fd)
    """, prelude=True)
    assert_versions(doc["inputs"], ins, "inputs")
    assert_versions(doc["outputs"], outputs_now(
        w / "out_creat.txt", w / "out_open.txt", w / "sub" / "out_openat2.txt",
        w / "sub" / "out_openat.txt"), "outputs")
    assert_complete(doc)


def test_opened_but_never_read_is_not_an_input(roar):
    w = roar.cwd
    put(w / "opened.txt", "opened, never read\n")
    put(w / "opath.txt", "opened with O_PATH\n")
    put(w / "stat.txt", "only stat'ed\n")
    _, doc = py(roar, """
        import os
        fd = os.open("opened.txt", os.O_RDONLY); os.close(fd)
        fd = os.open("opath.txt", os.O_PATH); os.fstat(fd); os.close(fd)
        os.stat("stat.txt")
    """)
    assert_versions(doc["inputs"], {}, "inputs")
    assert_versions(doc["outputs"], {}, "outputs")
    assert_complete(doc)


def test_a_file_the_command_makes_at_once_is_an_output(roar):
    """`roar run -- touch made`: the file is born ~1 ms after the release, and
    its birth time (the kernel's coarse clock) is then at or before the wall
    clock read just before the release. Made by the run, never written: an
    output each time (the birth-time check alone called it older than the
    run 19 times in 20)."""
    w = roar.cwd
    for i in range(6):
        _, doc = roar.run("touch", f"made{i}")
        assert [(o["path"], o["hash"]) for o in doc["outputs"]] == [
            (str(w / f"made{i}"), xxh128(w / f"made{i}"))], (i, doc["outputs"])
        assert_complete(doc)


@pytest.fixture
def ramfs(tmp_path):
    """A filesystem that keeps no birth times (ramfs, as NFS and others may
    not), mounted for the test."""
    d = tmp_path / "ramfs"
    d.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_files_made_or_only_opened_where_no_birth_time_is_kept(roar, ramfs):
    """Without birth times, what an O_CREAT open that writes nothing did is
    told by the file's change time and size (and by the pre-image hold, which
    sees a held open find the file there): `touch` of a new file and `cp` of an
    empty one make outputs; `touch` of a file that was there makes none; the
    empty file cp read is an input."""
    old, empty = ramfs / "old", ramfs / "empty"
    old.write_bytes(b"there before\n")
    empty.write_bytes(b"")
    time.sleep(0.05)
    _, doc = roar.run("sh", "-c", f"touch {ramfs}/made; touch {old}; cp {empty} {ramfs}/copy")
    assert [(i["path"], i["hash"]) for i in doc["inputs"]] == [(str(empty), xxh128(empty))]
    assert sorted((o["path"], o["hash"]) for o in doc["outputs"]) == [
        (str(ramfs / "copy"), xxh128(ramfs / "copy")),
        (str(ramfs / "made"), xxh128(ramfs / "made"))], doc["outputs"]
    assert_complete(doc)


# -- read and write families ---------------------------------------------------------------


def test_read_family(roar):
    w = roar.cwd
    names = ["read", "pread64", "readv", "preadv", "preadv2", "preadv2_flags"]
    ins = dict(put(w / f"{n}.bin", f"content read with {n}\n".encode() * 50) for n in names)
    _, doc = py(roar, f"""
        def opened(name):
            return os.open(name + ".bin", os.O_RDONLY)
        buf = bytearray(1 << 16)
        iov = (IoVec * 1)(IoVec(ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf)),
                                len(buf)))
        fd = opened("read"); os.read(fd, 1 << 16); os.close(fd)
        fd = opened("pread64"); os.pread(fd, 1 << 16, 0); os.close(fd)
        fd = opened("readv"); os.readv(fd, [buf]); os.close(fd)
        fd = opened("preadv"); sysc({SYS_PREADV}, fd, iov, 1, 0, 0); os.close(fd)
        fd = opened("preadv2"); sysc({SYS_PREADV2}, fd, iov, 1, 0, 0, 0); os.close(fd)
        fd = opened("preadv2_flags"); os.preadv(fd, [buf], 0, os.RWF_HIPRI); os.close(fd)
    """, prelude=True)
    assert_versions(doc["inputs"], ins, "inputs")
    assert_versions(doc["outputs"], {}, "outputs")
    assert_complete(doc)


def test_write_family(roar):
    w = roar.cwd
    names = ["write", "pwrite64", "writev", "pwritev", "pwritev2", "pwritev2_flags"]
    _, doc = py(roar, f"""
        def created(name):
            return os.open(name + ".bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        def data(name):
            return (b"written with " + name.encode() + b"\\n") * 40
        def iov(b):
            buf = ctypes.create_string_buffer(b, len(b))
            return (IoVec * 1)(IoVec(ctypes.addressof(buf), len(b))), buf
        fd = created("write"); os.write(fd, data("write")); os.close(fd)
        fd = created("pwrite64"); os.pwrite(fd, data("pwrite64"), 0); os.close(fd)
        fd = created("writev"); os.writev(fd, [data("writev")]); os.close(fd)
        v, keep = iov(data("pwritev"))
        fd = created("pwritev"); sysc({SYS_PWRITEV}, fd, v, 1, 0, 0); os.close(fd)
        v, keep = iov(data("pwritev2"))
        fd = created("pwritev2"); sysc({SYS_PWRITEV2}, fd, v, 1, 0, 0, 0); os.close(fd)
        fd = created("pwritev2_flags")
        os.pwritev(fd, [data("pwritev2_flags")], 0, os.RWF_DSYNC); os.close(fd)
    """, prelude=True)
    outs = outputs_now(*(w / f"{n}.bin" for n in names))
    for n in names:  # the workload really wrote what we think it wrote
        assert (w / f"{n}.bin").read_bytes() == (b"written with " + n.encode() + b"\n") * 40
    assert_versions(doc["inputs"], {}, "inputs")
    assert_versions(doc["outputs"], outs, "outputs")
    assert_complete(doc)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="int 0x80 is x86")
def test_compat_syscall_is_not_read_as_a_64_bit_one(roar):
    """A 32-bit syscall (int 0x80) numbers calls the i386 way: its lseek is 19,
    which is readv on x86_64. The read/write probes skip compat calls, as the
    syscalls:* tracepoints do (bpf/files.h's raw sys_enter program, opt-in with
    ROAR_RAW_SYSCALLS=1, reads the task's TS_COMPAT): an lseek is no read, and
    the file no input."""
    w = roar.cwd
    put(w / "seeked.bin", b"x" * 100)
    _, doc = py(roar, """
        import ctypes, mmap, os
        # push rbx; mov ebx, edi; mov eax, 19; xor ecx, ecx; mov edx, 1 (SEEK_CUR);
        # int 0x80; pop rbx; ret: lseek(fd, 0, SEEK_CUR) as a 32-bit call
        code = bytes([0x53, 0x89, 0xFB, 0xB8, 19, 0, 0, 0, 0x31, 0xC9, 0xBA, 1, 0, 0, 0,
                      0xCD, 0x80, 0x5B, 0xC3])
        m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        m.write(code)
        lseek32 = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(
            ctypes.addressof(ctypes.c_char.from_buffer(m)))
        fd = os.open("seeked.bin", os.O_RDONLY)
        assert lseek32(fd) == 0
        os.close(fd)
    """)
    assert_versions(doc["inputs"], {}, "inputs")
    assert_complete(doc)


def test_bytes_counted_are_bytes_moved(roar):
    """bytes_read / bytes_written are what the calls moved, not what they asked for."""
    w = roar.cwd
    src, _ = put(w / "ten_thousand.bin", os.urandom(10_000))
    _, doc = py(roar, """
        import os
        fd = os.open("ten_thousand.bin", os.O_RDONLY)
        while os.read(fd, 4096):   # 3 reads with data (10000 bytes) and one at EOF
            pass
        os.close(fd)
        fd = os.open("out.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.write(fd, b"x" * 5000); os.close(fd)
    """)
    assert versions(doc["inputs"])[src]["bytes_read"] == 10_000
    assert versions(doc["outputs"])[str(w / "out.bin")]["bytes_written"] == 5000


# -- mmap ------------------------------------------------------------------------------------


def test_mmap_read_only_is_an_input(roar):
    w = roar.cwd
    ins = dict([put(w / "weights.bin", os.urandom(64 * 1024))])
    _, doc = py(roar, """
        import mmap, os
        fd = os.open("weights.bin", os.O_RDONLY)
        m = mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        os.close(fd)                   # no read() at all: the data comes through the map
        total = sum(m[i] for i in range(0, len(m), 4096))
        m.close()
        print(total)
    """)
    assert_versions(doc["inputs"], ins, "inputs")
    assert_versions(doc["outputs"], {}, "outputs")
    root = trace(roar, doc["id"])["processes"][0]
    f = proc_files(root)[str(w / "weights.bin")]
    assert "m" in f["mode"] and "r" in f["mode"] and "w" not in f["mode"]
    assert f["read_calls"] == 0
    assert_complete(doc)


def test_mmap_shared_writable_is_an_output(roar):
    w = roar.cwd
    path, before = put(w / "buffer.bin", bytes(8192))
    _, doc = py(roar, """
        import mmap, os
        fd = os.open("buffer.bin", os.O_RDWR)
        m = mmap.mmap(fd, 8192, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        os.close(fd)
        m[100:105] = b"hello"
        m[5000:5005] = b"world"
        m.flush(); m.close()
    """)
    assert (w / "buffer.bin").read_bytes()[100:105] == b"hello"
    assert_versions(doc["outputs"], outputs_now(w / "buffer.bin"), "outputs")
    # A readable mapping may be an input too; if it is listed, it is the pre-image.
    for e in doc["inputs"]:
        assert e["path"] == path
        assert e["hash"] in (before, None) and e["hash"] != xxh128(w / "buffer.bin")
        if e["hash"] is None:
            assert not doc["complete"]
    root = trace(roar, doc["id"])["processes"][0]
    assert "w" in proc_files(root)[path]["mode"]


def test_reads_and_maps_of_fds_closed_by_exec_are_inputs(roar):
    """A read or a read-only mapping of an fd below FLUSH_MAX is told only by
    the fd's summary; an fd closed by exec as close-on-exec has no close(2):
    the exec flushes it (EVF_EXEC_FLUSH), and the fds that stay open keep
    their path (a read after the exec counts too), whether fcntl or ioctl
    (os.set_inheritable, subprocess's pass_fds: not traced) made them
    inheritable: the exec's result says which fds it left open."""
    w = roar.cwd
    ins = dict([put(w / "read.txt", "r" * 3000), put(w / "mapped.bin", os.urandom(8192)),
                put(w / "kept.txt", "k" * 500), put(w / "ioctl.txt", "i" * 700)])
    _, doc = py(roar, """
        import fcntl, mmap, os, sys
        fd = os.open("read.txt", os.O_RDONLY | os.O_CLOEXEC); os.read(fd, 1000)
        fd2 = os.open("mapped.bin", os.O_RDONLY | os.O_CLOEXEC)
        m = mmap.mmap(fd2, 0, prot=mmap.PROT_READ)
        kept = os.open("kept.txt", os.O_RDONLY)
        fcntl.fcntl(kept, fcntl.F_SETFD, 0)  # inherited, through fcntl
        os.read(kept, 100)
        by_ioctl = os.open("ioctl.txt", os.O_RDONLY)
        os.set_inheritable(by_ioctl, True)  # inherited, through ioctl(FIONCLEX)
        os.read(by_ioctl, 10)
        os.execv(sys.executable, [sys.executable, "-c",
                 f"import os; os.read({kept}, 1000); os.read({by_ioctl}, 1000)"])
    """)
    assert_versions(doc["inputs"], ins, "inputs")
    files = {}
    for p in trace(roar, doc["id"])["processes"]:
        files.update(proc_files(p))
    assert files[str(w / "read.txt")]["bytes_read"] == 1000
    assert "m" in files[str(w / "mapped.bin")]["mode"]
    assert files[str(w / "kept.txt")]["read_calls"] == 2  # one before the exec, one after
    assert files[str(w / "ioctl.txt")]["read_calls"] == 2
    assert_complete(doc)


# -- in-kernel copies ----------------------------------------------------------------------


def test_sendfile_splice_copy_file_range_both_ends(roar):
    w = roar.cwd
    ins = dict([put(w / "src_sendfile.bin", os.urandom(20_000)),
                put(w / "src_splice.bin", os.urandom(30_000)),
                put(w / "src_cfr.bin", os.urandom(40_000))])
    _, doc = py(roar, """
        import os
        def pair(name):
            return (os.open("src_" + name + ".bin", os.O_RDONLY),
                    os.open("dst_" + name + ".bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC))
        i, o = pair("sendfile")
        while os.sendfile(o, i, None, 1 << 20):
            pass
        os.close(i); os.close(o)
        i, o = pair("splice")
        r, wp = os.pipe()
        while True:
            n = os.splice(i, wp, 1 << 14)
            if not n:
                break
            while n:
                n -= os.splice(r, o, n)
        os.close(i); os.close(o)
        i, o = pair("cfr")
        while os.copy_file_range(i, o, 1 << 20):
            pass
        os.close(i); os.close(o)
    """)
    for n in ("sendfile", "splice", "cfr"):
        assert (w / f"dst_{n}.bin").read_bytes() == (w / f"src_{n}.bin").read_bytes()
    assert_versions(doc["inputs"], ins, "inputs")
    assert_versions(doc["outputs"], outputs_now(
        w / "dst_sendfile.bin", w / "dst_splice.bin", w / "dst_cfr.bin"), "outputs")
    assert_complete(doc)


def test_cp_copies_an_input_to_an_output(roar):
    """coreutils cp (reflink/copy_file_range/read+write, whatever it picks)."""
    w = roar.cwd
    ins = dict([put(w / "dataset.bin", os.urandom(200_000))])
    _, doc = roar.run("cp", "dataset.bin", "copy.bin")
    assert_versions(doc["inputs"], ins, "inputs")
    assert_versions(doc["outputs"], outputs_now(w / "copy.bin"), "outputs")
    assert_complete(doc)


def test_git_clone_of_a_local_repository_is_complete(roar):
    """`git clone src dst` of a repository on the same filesystem hard-links its
    pack files. A link changes the linked inode's ctime, so an input whose hash
    was not done yet was recorded "changed after the run opened it" (the run
    incomplete, every time); the pre-image hold now holds link(2) until such an
    input is hashed. Every input is hashed, every checked-out file an output."""
    w = roar.cwd
    src = w / "src"
    src.mkdir()
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "-C", str(src)]
    subprocess.run([*git, "init", "-q"], check=True)
    files = {f"f{i}.txt": f"tracked file {i}\n" * (i * 100) for i in range(1, 4)}
    for name, text in files.items():
        put(src / name, text)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "three files"], check=True)
    subprocess.run([*git, "gc", "-q"], check=True)  # into a pack, as clones and fetches leave it
    time.sleep(0.05)
    _, doc = roar.run("git", "clone", "-q", "src", "dst")
    assert_complete(doc)
    assert all(i["status"] == "ok" for i in doc["inputs"]), doc["inputs"]
    packs = [i["path"] for i in doc["inputs"] if i["path"].endswith(".pack")]
    assert packs and all(i["hash"] == xxh128(Path(i["path"])) for i in doc["inputs"]
                         if i["path"] in packs), doc["inputs"]
    outputs = {o["path"]: o["hash"] for o in doc["outputs"]}
    for name in files:
        assert outputs.get(str(w / "dst" / name)) == xxh128(w / "dst" / name), (name, outputs)


# -- fd duplication and closing -------------------------------------------------------------


def test_dup_dup2_dup3_fcntl_read_through_duplicate_only(roar):
    w = roar.cwd
    names = ["dup", "dup2", "dup3", "f_dupfd", "f_dupfd_cloexec", "dup2_over_open"]
    ins = dict(put(w / f"{n}.txt", f"read through a {n} duplicate\n") for n in names)
    put(w / "replaced.txt", "its fd number gets reused by dup2; never read\n")
    _, doc = py(roar, """
        import fcntl
        libc.dup.restype = ctypes.c_int
        def src(name):
            return os.open(name + ".txt", os.O_RDONLY)
        def through(fd, new):
            os.close(fd)                        # the original goes first
            assert os.read(new, 4096)
            os.close(new)
        fd = src("dup"); through(fd, libc.dup(fd))                       # dup(2)
        fd = src("dup2"); through(fd, os.dup2(fd, 40))                   # dup2(2)
        fd = src("dup3"); through(fd, os.dup2(fd, 41, inheritable=False)) # dup3(2)
        fd = src("f_dupfd"); through(fd, fcntl.fcntl(fd, fcntl.F_DUPFD, 50))
        fd = src("f_dupfd_cloexec"); through(fd, fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 60))
        # dup2 onto an fd that names another open file: that one is not read
        other = os.open("replaced.txt", os.O_RDONLY)
        fd = src("dup2_over_open"); through(fd, os.dup2(fd, other))
        # writing through a duplicate
        fd = os.open("out_dup.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 70); os.close(fd)
        os.write(new, b"written through a duplicate\\n"); os.close(new)
    """, prelude=True)
    assert_versions(doc["inputs"], ins, "inputs")
    assert_versions(doc["outputs"], outputs_now(w / "out_dup.txt"), "outputs")
    assert_complete(doc)


def test_close_and_close_range(roar):
    """After close/close_range an fd number names nothing: a failed read on it is
    not a read of the file it used to name, and reused numbers name the new file."""
    w = roar.cwd
    put(w / "closed_by_range.txt", "closed by close_range before any read\n")
    put(w / "closed_by_raw_range.txt", "closed by a raw close_range\n")
    put(w / "closed.txt", "closed by close before any read\n")
    ins = dict([put(w / "reused.txt", "opened on a reused fd number\n")])
    _, doc = py(roar, f"""
        import errno
        def bad_read(fd):
            try:
                os.read(fd, 100)
            except OSError as e:
                assert e.errno == errno.EBADF
            else:
                raise AssertionError("fd still open")
        a = os.open("closed_by_range.txt", os.O_RDONLY)
        b = os.open("closed_by_raw_range.txt", os.O_RDONLY)
        c = os.open("closed.txt", os.O_RDONLY)
        os.close(c); bad_read(c)
        os.closerange(a, a + 1)                     # close_range(a, a, 0)
        bad_read(a)
        sysc({SYS_CLOSE_RANGE}, b, b + 100, 0)
        bad_read(b)
        r = os.open("reused.txt", os.O_RDONLY)
        assert r == a, (r, a)
        os.read(r, 100); os.close(r)
        o = os.open("out.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.write(o, b"on a reused number\\n")
        os.closerange(o, o + 10)
    """, prelude=True)
    assert_versions(doc["inputs"], ins, "inputs")
    assert_versions(doc["outputs"], outputs_now(w / "out.txt"), "outputs")
    assert_complete(doc)


# -- namespace changes ---------------------------------------------------------------------


def test_rename_renameat_renameat2_output_is_final_name(roar):
    w = roar.cwd
    (w / "sub").mkdir()
    put(w / "replaced.out", "old content, replaced by the run\n")
    _, doc = py(roar, f"""
        write("a.tmp", b"renamed with rename\\n")
        os.rename("a.tmp", "a.out")                                  # rename(2)
        d = os.open("sub", os.O_RDONLY | os.O_DIRECTORY)
        write("b.tmp", b"renamed with renameat\\n", dir_fd=d)
        os.rename("b.tmp", "b.out", src_dir_fd=d, dst_dir_fd=d)      # renameat(2)
        write("c.tmp", b"renamed with renameat2\\n")
        sysc({SYS_RENAMEAT2}, AT_FDCWD, b"c.tmp", d, b"c.out", 1)    # RENAME_NOREPLACE
        write("r.tmp", b"atomic replace of an existing file\\n")
        os.replace("r.tmp", "replaced.out")
        os.mkdir("stage.tmp")
        write("stage.tmp/part-0", b"staged part\\n")
        os.rename("stage.tmp", "final_dir")                          # a whole directory
    """, prelude=True)
    assert_versions(doc["inputs"], {}, "inputs")
    assert_versions(doc["outputs"], outputs_now(
        w / "a.out", w / "sub" / "b.out", w / "sub" / "c.out", w / "replaced.out",
        w / "final_dir" / "part-0"), "outputs")
    assert_complete(doc)


def test_coreutils_mv_and_ln_with_relative_names(roar):
    """mv and ln call renameat2/linkat with AT_FDCWD zero-extended in the register
    (Python's os.rename sign-extends it): the run is still complete, the input read
    before the move is an input, and the moved and linked outputs have their final
    names."""
    w = roar.cwd
    src, src_hash = put(w / "raw.csv", "id,value\n1,2\n")
    _, doc = roar.run("sh", "-c", "mv raw.csv moved.csv && cat moved.csv > model.tmp "
                      "&& mv model.tmp model.bin && ln model.bin model.link")
    assert_versions(doc["inputs"], {str(w / "moved.csv"): src_hash}, "inputs")
    assert_versions(doc["outputs"], outputs_now(w / "model.bin", w / "model.link"), "outputs")
    assert_complete(doc)


def test_link_linkat(roar):
    w = roar.cwd
    (w / "sub").mkdir()
    _, doc = py(roar, """
        import os
        write("l.tmp", b"published with link\\n")
        os.link("l.tmp", "l.out")                                     # link(2)
        os.unlink("l.tmp")
        d = os.open("sub", os.O_RDONLY | os.O_DIRECTORY)
        write("m.tmp", b"published with linkat\\n", dir_fd=d)
        os.link("m.tmp", "m.out", src_dir_fd=d, dst_dir_fd=d)         # linkat(2)
        os.unlink("m.tmp", dir_fd=d)
    """, prelude=True)
    assert_versions(doc["inputs"], {}, "inputs")
    assert_versions(doc["outputs"], outputs_now(w / "l.out", w / "sub" / "m.out"), "outputs")
    assert_complete(doc)


def test_unlink_written_file_is_not_an_output(roar):
    w = roar.cwd
    (w / "sub").mkdir()
    _, doc = py(roar, """
        import os, shutil
        write("scratch.tmp", b"deleted with unlink\\n")
        os.unlink("scratch.tmp")                                      # unlink(2)
        d = os.open("sub", os.O_RDONLY | os.O_DIRECTORY)
        write("scratch2.tmp", b"deleted with unlinkat\\n", dir_fd=d)
        os.unlink("scratch2.tmp", dir_fd=d)                           # unlinkat(2)
        os.mkdir("tmpdir")
        for i in range(3):
            write(f"tmpdir/part{i}", b"deleted with the whole tree\\n")
        shutil.rmtree("tmpdir")                                       # unlinkat + AT_REMOVEDIR
        write("keep.txt", b"the only output\\n")
    """, prelude=True)
    assert_versions(doc["outputs"], outputs_now(w / "keep.txt"), "outputs")
    assert_versions(doc["inputs"], {}, "inputs")
    assert_complete(doc)


def test_written_then_deleted_by_other_processes_is_not_an_output(roar):
    w = roar.cwd
    _, doc = roar.run("sh", "-c", "mkdir work && for i in 1 2 3; do echo $i > work/f$i; done "
                      "&& cp work/f1 work/copy && rm -rf work && echo kept > kept.txt")
    assert not (w / "work").exists()
    assert_versions(doc["outputs"], outputs_now(w / "kept.txt"), "outputs")
    assert_versions(doc["inputs"], {}, "inputs")
    assert_complete(doc)


def test_truncate_ftruncate(roar):
    w = roar.cwd
    put(w / "t_path.bin", b"0123456789" * 10)
    put(w / "t_fd.bin", b"abcdefghij" * 10)
    put(w / "t_grow.bin", b"short")
    _, doc = py(roar, """
        import os
        os.truncate("t_path.bin", 10)                                 # truncate(2)
        fd = os.open("t_fd.bin", os.O_RDWR)
        os.ftruncate(fd, 20); os.close(fd)                             # ftruncate(2)
        fd = os.open("t_grow.bin", os.O_WRONLY)
        os.ftruncate(fd, 1000); os.close(fd)
    """)
    assert (w / "t_path.bin").read_bytes() == b"0123456789"
    assert_versions(doc["outputs"], outputs_now(w / "t_path.bin", w / "t_fd.bin",
                                                w / "t_grow.bin"), "outputs")
    assert_versions(doc["inputs"], {}, "inputs")
    assert_complete(doc)


# -- working directory -----------------------------------------------------------------------


def test_chdir_fchdir_relative_paths(roar):
    w = roar.cwd
    ins = dict([put(w / "d1" / "a.txt", "after chdir\n"),
                put(w / "d2" / "b.txt", "after fchdir\n"),
                put(w / "c.txt", "after chdir ..\n"),
                put(w / "d1" / "child.txt", "read by a child that inherited the cwd\n"),
                put(w / "d3" / "sh.txt", "read by cat after the shell's cd\n")])
    _, doc = py(roar, """
        import os, subprocess
        os.chdir("d1")                                                # chdir(2)
        open("a.txt", "rb").read()
        open("o1.txt", "w").write("written after chdir\\n")
        subprocess.run(["cat", "child.txt"], check=True, stdout=subprocess.DEVNULL)
        fd = os.open("../d2", os.O_RDONLY | os.O_DIRECTORY)
        os.fchdir(fd)                                                 # fchdir(2)
        open("b.txt", "rb").read()
        open("o2.txt", "w").write("written after fchdir\\n")
        os.chdir("..")
        open("c.txt", "rb").read()
        subprocess.run(["sh", "-c", "cd d3 && cat sh.txt > sh_out.txt"], check=True)
    """)
    assert_versions(doc["inputs"], ins, "inputs")
    assert_versions(doc["outputs"], outputs_now(w / "d1" / "o1.txt", w / "d2" / "o2.txt",
                                                w / "d3" / "sh_out.txt"), "outputs")
    assert_complete(doc)


# -- processes -------------------------------------------------------------------------------


def test_execve_execveat_argv(roar):
    w = roar.cwd
    ins = dict([put(w / f"e{i}.txt", f"read by exec'ed cat {i}\n") for i in range(1, 5)])
    _, doc = py(roar, f"""
        def argv_array(items):
            arr = (ctypes.c_char_p * (len(items) + 1))(*items, None)
            return arr
        envp = (ctypes.c_char_p * 1)(None)
        def child(fn):
            pid = os.fork()
            if pid == 0:
                try:
                    fn()
                finally:
                    os._exit(99)
            _, st = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(st) == 0, st
        child(lambda: os.execv("/bin/cat", ["cat", "e1.txt"]))                # execve
        d = os.open("/usr/bin", os.O_RDONLY | os.O_DIRECTORY)
        child(lambda: sysc({SYS_EXECVEAT}, d, b"cat",
                           argv_array([b"dircat", b"e2.txt"]), envp, 0))     # execveat(dirfd)
        f = os.open("/usr/bin/cat", os.O_PATH)
        child(lambda: sysc({SYS_EXECVEAT}, f, b"",
                           argv_array([b"fdcat", b"e3.txt"]), envp, 0x1000))  # AT_EMPTY_PATH
        # the root itself; its empty last argument ($0) must stay in argv (kernels
        # before 6.16 count "" as 0 bytes in bpf_probe_read_user_str)
        os.execv("/bin/sh", ["sh", "-c", "cat e4.txt", ""])
    """, prelude=True)
    assert_versions(doc["inputs"], ins, "inputs")
    argvs = [pr["argv"] for pr in doc["processes"]]
    for expected in (["cat", "e1.txt"], ["dircat", "e2.txt"], ["fdcat", "e3.txt"],
                     ["sh", "-c", "cat e4.txt", ""], ["cat", "e4.txt"]):
        assert expected in argvs, argvs
    tr = trace(roar, doc["id"])["processes"]
    exes = {tuple(pr["argv"]): pr["exe"] for pr in tr}
    assert exes[("dircat", "e2.txt")] == "/usr/bin/cat"
    assert exes[("fdcat", "e3.txt")] == "/usr/bin/cat"
    for pr in tr:  # each file belongs to the process that read it
        if pr["argv"][:1] in (["cat"], ["dircat"], ["fdcat"]):
            assert set(proc_files(pr)) == {str(w / pr["argv"][-1])}, pr
    assert_complete(doc)


def test_fork_vfork_posix_spawn_children(roar):
    w = roar.cwd
    ins = dict([put(w / "by_fork.txt", "read by a forked child\n"),
                put(w / "by_vfork.txt", "read by a vfork'ed child (subprocess)\n"),
                put(w / "by_spawn.txt", "read by a posix_spawn'ed child (clone3)\n"),
                put(w / "inherited.txt", "read through an fd inherited over fork\n")])
    p, doc = py(roar, """
        import os, subprocess
        inh = os.open("inherited.txt", os.O_RDONLY)
        pid = os.fork()                                               # clone(2)
        if pid == 0:
            open("by_fork.txt", "rb").read()
            os.read(inh, 4096)
            open("out_fork.txt", "w").write("written by a forked child\\n")
            os._exit(0)
        os.waitpid(pid, 0)
        subprocess.run(["/bin/cat", "by_vfork.txt"], check=True,        # vfork(2)
                       stdout=subprocess.DEVNULL)
        pid = os.posix_spawn("/bin/cat", ["cat", "by_spawn.txt"], os.environ)  # clone3(2)
        os.waitpid(pid, 0)
        print(os.getpid())
    """)
    assert_versions(doc["inputs"], ins, "inputs")
    assert_versions(doc["outputs"], outputs_now(w / "out_fork.txt"), "outputs")
    root_pid = int(p.stdout.split()[-1])
    procs = doc["processes"]
    assert len(procs) == 4, procs
    children = [pr for pr in procs if pr["pid"] != root_pid]
    assert all(pr["ppid"] == root_pid for pr in children), procs
    argvs = [pr["argv"] for pr in children]
    assert ["/bin/cat", "by_vfork.txt"] in argvs and ["cat", "by_spawn.txt"] in argvs
    tr = trace(roar, doc["id"])["processes"]
    forked = [pr for pr in tr if pr["pid"] != root_pid and pr["argv"][0] == PY]
    assert len(forked) == 1
    assert set(proc_files(forked[0])) == {str(w / "by_fork.txt"), str(w / "inherited.txt"),
                                          str(w / "out_fork.txt")}
    assert_complete(doc)


def test_threads_files_belong_to_their_process(roar):
    w = roar.cwd
    ins = dict(put(w / f"shard{i}.bin", os.urandom(5000 + i)) for i in range(6))
    _, doc = py(roar, """
        import threading
        def load(i):
            with open(f"shard{i}.bin", "rb") as f:
                f.read()
            if i == 0:
                with open("from_thread.txt", "w") as f:
                    f.write("written by a thread\\n")
        ts = [threading.Thread(target=load, args=(i,)) for i in range(6)]
        for t in ts: t.start()
        for t in ts: t.join()
    """)
    assert_versions(doc["inputs"], ins, "inputs")
    assert_versions(doc["outputs"], outputs_now(w / "from_thread.txt"), "outputs")
    assert len(doc["processes"]) == 1, doc["processes"]
    root = trace(roar, doc["id"])["processes"][0]
    assert root["threads"] >= 7
    assert set(proc_files(root)) == set(ins) | {str(w / "from_thread.txt")}
    assert_complete(doc)


def test_double_forked_grandchild_outliving_its_parent(roar):
    w = roar.cwd
    p, doc = py(roar, """
        import os, time
        pid = os.fork()
        if pid == 0:
            if os.fork() == 0:
                os.setsid()
                time.sleep(1.5)           # its parent and the run's first process are gone
                with open("late.txt", "w") as f:
                    f.write(f"written by orphan {os.getpid()}\\n")
                os._exit(0)
            os._exit(0)
        os.waitpid(pid, 0)
        print(pid)
    """)
    middle = int(p.stdout.split()[-1])
    assert (w / "late.txt").exists()
    orphan = int((w / "late.txt").read_text().split()[-1])
    assert_versions(doc["outputs"], outputs_now(w / "late.txt"), "outputs")
    grand = [pr for pr in doc["processes"] if pr["pid"] == orphan]
    assert grand and grand[0]["ppid"] == middle and grand[0]["exit_code"] == 0
    assert_complete(doc)


def _children_status(roar, body: str):
    """Run a workload that forks children described by `body` (a list `kids` of
    (how, expected) with how() run in the child); returns {pid: expected}, doc."""
    p, doc = py(roar, body + """
pids = {}
for how, expected in kids:
    pid = os.fork()
    if pid == 0:
        how()
        os._exit(0)
    os.waitpid(pid, 0)
    pids[pid] = expected
print(json.dumps(pids))
""", prelude=True)
    expect = {int(k): v for k, v in json.loads(p.stdout.strip().splitlines()[-1]).items()}
    return expect, doc


def test_child_exit_group_codes_and_sigkill(roar):
    expect, doc = _children_status(roar, """
import json, signal
kids = [(lambda: os._exit(7), {"exit_code": 7, "signal": None}),
        (lambda: sys.exit(3), {"exit_code": 3, "signal": None}),
        (lambda: None, {"exit_code": 0, "signal": None}),
        (lambda: os.kill(os.getpid(), signal.SIGKILL), {"exit_code": None, "signal": 9})]
""")
    procs = {pr["pid"]: pr for pr in doc["processes"]}
    for pid, e in expect.items():
        assert {"exit_code": procs[pid]["exit_code"], "signal": procs[pid]["signal"]} == e


def test_child_killed_by_sigterm_records_sigterm(roar):
    expect, doc = _children_status(roar, """
import json, signal
kids = [(lambda: os.kill(os.getpid(), signal.SIGTERM), {"exit_code": None, "signal": 15}),
        (lambda: os.kill(os.getpid(), signal.SIGSEGV), {"exit_code": None, "signal": 11})]
""")
    procs = {pr["pid"]: pr for pr in doc["processes"]}
    for pid, e in expect.items():
        assert {"exit_code": procs[pid]["exit_code"], "signal": procs[pid]["signal"]} == e


def test_child_exit_syscall_records_code(roar):
    """A single-threaded process ending with exit(2), not exit_group(2)."""
    expect, doc = _children_status(roar, f"""
import json
kids = [(lambda: sysc({SYS_EXIT}, 5), {{"exit_code": 5, "signal": None}})]
""")
    procs = {pr["pid"]: pr for pr in doc["processes"]}
    for pid, e in expect.items():
        assert {"exit_code": procs[pid]["exit_code"], "signal": procs[pid]["signal"]} == e


def test_exit_status_is_what_the_parent_collects(roar):
    """The status a process's parent collects, whoever ends it: a leader that
    exits first with exit(2) while another thread ends the process with exit(2)
    later (the leader's code on 5.10, the last thread's since 6.0: what waitpid
    said is the reference); a thread's fatal signal ends the whole group; an
    orphan, reaped outside the run, keeps its own code."""
    p, doc = py(roar, f"""
import json, signal, threading, time
out = {{}}

def leader_first():
    def later():
        time.sleep(0.3)
        sysc({SYS_EXIT}, 5)
    threading.Thread(target=later).start()
    sysc({SYS_EXIT}, 4)

def thread_signal():
    threading.Thread(target=lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    time.sleep(5)

for name, how in (("leader_first", leader_first), ("thread_signal", thread_signal)):
    pid = os.fork()
    if pid == 0:
        how()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    out[name] = [pid, status]
r, w = os.pipe()
pid = os.fork()
if pid == 0:  # the orphan's parent: ends at once
    if os.fork() == 0:
        os.read(r, 1)  # until its parent was reaped
        os._exit(6)
    os._exit(0)
os.waitpid(pid, 0)
out["orphan_parent"] = [pid, 0]
os.write(w, b"x")
time.sleep(0.5)
print(json.dumps(out))
""", prelude=True)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    procs = {pr["pid"]: pr for pr in doc["processes"]}
    pid, status = out["leader_first"]
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) in (4, 5)
    assert (procs[pid]["exit_code"], procs[pid]["signal"]) == (os.WEXITSTATUS(status), None)
    pid, status = out["thread_signal"]
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    assert (procs[pid]["exit_code"], procs[pid]["signal"]) == (None, signal.SIGTERM)
    parent = procs[out["orphan_parent"][0]]
    orphan = next(pr for pr in doc["processes"] if pr["ppid"] == parent["pid"])
    assert (orphan["exit_code"], orphan["signal"]) == (6, None)


# -- network and io_uring ------------------------------------------------------------------


def test_connect_tcp_and_unix(roar):
    w = roar.cwd
    sock_path = str(w / "s.sock")
    p, doc = py(roar, f"""
        import os, socket, threading
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.bind(("127.0.0.1", 0)); srv.listen(1)
        port = srv.getsockname()[1]
        threading.Thread(target=lambda: srv.accept()[0].close(), daemon=True).start()
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.connect(("127.0.0.1", port)); c.close()
        u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        u.bind({sock_path!r}); u.listen(1)
        threading.Thread(target=lambda: u.accept()[0].close(), daemon=True).start()
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect({sock_path!r}); c.close()
        port6 = 0
        if socket.has_ipv6:
            try:
                s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
                s6.bind(("::1", 0)); s6.listen(1)
            except OSError:
                pass
            else:
                port6 = s6.getsockname()[1]
                threading.Thread(target=lambda: s6.accept()[0].close(), daemon=True).start()
                c = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
                c.connect(("::1", port6)); c.close()
        print(port, port6)
    """)
    port, port6 = map(int, p.stdout.split()[-2:])
    root_key = trace(roar, doc["id"])["processes"][0]["key"]
    conns = [{k: c[k] for k in ("family", "address", "port", "process")}
             for c in doc["connects"]]
    assert {"family": "inet", "address": "127.0.0.1", "port": port,
            "process": root_key} in conns, conns
    assert {"family": "unix", "address": sock_path, "port": None,
            "process": root_key} in conns, conns
    if port6:
        assert {"family": "inet6", "address": "::1", "port": port6,
                "process": root_key} in conns, conns


def test_connect_relative_unix_socket_path_is_resolved(roar):
    """connect() to a unix socket named relative to the cwd records its absolute path."""
    w = roar.cwd
    (w / "run").mkdir()
    _, doc = py(roar, """
        import os, socket, threading
        os.chdir("run")
        u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        u.bind("rel.sock"); u.listen(1)
        threading.Thread(target=lambda: u.accept()[0].close(), daemon=True).start()
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect("rel.sock"); c.close()
    """)
    unix = [c["address"] for c in doc["connects"] if c["family"] == "unix"]
    assert str(w / "run" / "rel.sock") in unix, doc["connects"]


def _io_uring_works() -> bool:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    params = ctypes.create_string_buffer(120)
    fd = libc.syscall(ctypes.c_long(SYS_IO_URING_SETUP), ctypes.c_long(4), params)
    if fd < 0:
        return False
    os.close(fd)
    return True


def test_io_uring_is_flagged(roar):
    if not _io_uring_works():
        pytest.skip("io_uring_setup is not available on this kernel (disabled or absent)")
    put(roar.cwd / "d.txt", "x")
    _, doc = py(roar, f"""
        params = ctypes.create_string_buffer(120)
        fd = sysc({SYS_IO_URING_SETUP}, 4, params)
        os.close(fd)
    """, prelude=True)
    assert doc["io_uring"] is True
    assert doc["complete"] is False
    assert any("io_uring" in r for r in doc["incomplete_reasons"])


# -- paths -----------------------------------------------------------------------------------


def _deep_dir(base: Path, total: int) -> Path:
    """A directory nested below base whose absolute path is about `total` chars."""
    d = base
    i = 0
    while len(str(d)) < total - 110:
        d = d / (f"level{i:02d}_" + "x" * 90)
        i += 1
    return d


def test_dotdot_after_a_symlinked_directory_resolves_like_the_kernel(roar):
    """link/../x names x beside link's *target*, not beside link: the recorded path
    (and so its hash) must be the file the kernel opened."""
    w = roar.cwd
    (w / "store" / "shard").mkdir(parents=True)
    (w / "link").symlink_to(w / "store" / "shard")
    real, h_real = put(w / "store" / "labels.csv", "the labels really read\n")
    put(w / "labels.csv", "a decoy beside the link, never read\n")
    _, doc = py(roar, """
        data = open("link/../labels.csv").read()
        assert data == "the labels really read\\n", data
    """)
    assert_versions(doc["inputs"], {real: h_real}, "inputs")
    assert_complete(doc)


def test_long_path_is_resolved_fully(roar):
    w = roar.cwd
    deep = _deep_dir(w, 3000)
    deep.mkdir(parents=True)
    src, h = put(deep / "input.txt", "deep input\n")
    assert 2800 < len(src) < 3100
    rel = os.path.relpath(deep, w)
    _, doc = py(roar, f"""
        import os
        open({src!r}, "rb").read()                                   # one absolute path
        os.chdir({rel!r})                                            # one relative chdir
        open("output.txt", "w").write("deep output\\n")
    """)
    assert_versions(doc["inputs"], {src: h}, "inputs")
    assert_versions(doc["outputs"], outputs_now(deep / "output.txt"), "outputs")
    assert_complete(doc)


def _xxh128_deep(base: Path, rel_parts: list[str]) -> str:
    """Hash a file whose absolute path exceeds PATH_MAX (walk with dir fds)."""
    import xxhash

    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    for part in rel_parts[:-1]:
        nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    f = os.open(rel_parts[-1], os.O_RDONLY, dir_fd=fd)
    os.close(fd)
    with os.fdopen(f, "rb") as fh:
        return xxhash.xxh3_128(fh.read()).hexdigest()


def test_path_longer_than_path_max_via_relative_steps(roar):
    """Every syscall path is short, but the absolute path is over 4096 chars."""
    w = roar.cwd
    parts = [f"step{i:02d}_" + "y" * 200 for i in range(25)]
    d = os.open(w, os.O_RDONLY | os.O_DIRECTORY)
    for part in parts:  # the absolute path is too long for mkdir(abs)
        os.mkdir(part, dir_fd=d)
        nd = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=d)
        os.close(d)
        d = nd
    fd = os.open("in.txt", os.O_WRONLY | os.O_CREAT, dir_fd=d)
    os.write(fd, b"beyond PATH_MAX\n")
    os.close(fd)
    os.close(d)
    deep = str(w) + "/" + "/".join(parts)
    assert len(deep) > 5000
    h_in = _xxh128_deep(w, parts + ["in.txt"])
    _, doc = py(roar, f"""
        import os
        for part in {parts!r}:
            os.chdir(part)
        open("in.txt", "rb").read()
        open("out.txt", "w").write("written beyond PATH_MAX\\n")
    """)
    assert_versions(doc["inputs"], {deep + "/in.txt": h_in}, "inputs")
    assert_versions(doc["outputs"], {deep + "/out.txt": _xxh128_deep(w, parts + ["out.txt"])},
                    "outputs")
    assert_complete(doc)


def test_o_tmpfile_linked_into_place_is_the_output(roar):
    """An anonymous O_TMPFILE, written, then given a name with linkat(AT_EMPTY_PATH):
    the named file is the output; the directory it was created in is not."""
    w = roar.cwd
    _, doc = py(roar, """
        fd = os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o644)
        os.write(fd, b"anonymous, then linked into place\\n")
        sysc(265, fd, b"", AT_FDCWD, b"linked.txt", 0x1000)   # linkat(AT_EMPTY_PATH)
        os.close(fd)
    """, prelude=True)
    assert (w / "linked.txt").read_text() == "anonymous, then linked into place\n"
    assert_versions(doc["outputs"], outputs_now(w / "linked.txt"), "outputs")
    assert_versions(doc["inputs"], {}, "inputs")
    assert_complete(doc)


# -- versions --------------------------------------------------------------------------------


def unverified_inputs(doc: dict, *paths: str) -> None:
    """The failure the pre-image xfails document, and only that one: raises KnownBug
    when one of these inputs was recorded 'unverified' instead of its first version."""
    got = versions(doc["inputs"])
    bad = [f"{p} ({got[p]})" for p in paths
           if p in got and got[p]["status"] == "unverified"]
    if bad:
        raise KnownBug(f"pre-image race: inputs recorded unverified instead of v1: {bad}")


def test_read_v1_then_rewrite_same_path(roar):
    w = roar.cwd
    path, v1 = put(w / "data.csv", "id,value\n1,10\n2,20\n")
    cfg, c1 = put(w / "config.json", '{"epoch": 1}\n')
    _, doc = py(roar, """
        import os
        rows = open("data.csv").read().splitlines()
        with open("data.csv", "w") as f:                 # rewritten in place
            f.write("\\n".join(rows + ["3,30"]) + "\\n")
        old = open("config.json").read()
        with open("config.json.tmp", "w") as f:          # atomic save over the input
            f.write(old.replace("1", "2"))
        os.replace("config.json.tmp", "config.json")
    """)
    assert xxh128(path) != v1 and xxh128(cfg) != c1
    unverified_inputs(doc, path, cfg)
    assert_versions(doc["inputs"], {path: v1, cfg: c1}, "inputs")
    assert_versions(doc["outputs"], outputs_now(w / "data.csv", w / "config.json"), "outputs")
    assert_complete(doc)


def test_sort_in_place_reads_v1_writes_v2(roar):
    w = roar.cwd
    path, v1 = put(w / "words.txt", "pear\napple\nfig\n")
    _, doc = roar.run("sort", "-o", "words.txt", "words.txt")
    assert (w / "words.txt").read_text() == "apple\nfig\npear\n"
    unverified_inputs(doc, path)
    assert_versions(doc["inputs"], {path: v1}, "inputs")
    assert_versions(doc["outputs"], outputs_now(w / "words.txt"), "outputs")
    assert_complete(doc)


def test_the_hold_leaves_the_workloads_speculation_mitigations_as_they_are(roar):
    """The pre-image hold's seccomp filter is no sandbox: it must not turn on the
    Speculative Store Bypass mitigation (or any other) that a filter forces where
    the kernel's spec_store_bypass_disable is `seccomp`, the default before 5.16
    (Debian 11's 5.10: vm-tests' smoke list runs this there), which slows the
    training job's own code. The workload's lines are the same as a bare process's."""
    def lines(text: str) -> list[str]:
        return [ln for ln in text.splitlines() if ln.startswith(("Speculation", "Seccomp:"))]

    bare = subprocess.run(["cat", "/proc/self/status"], capture_output=True, text=True,
                          check=True).stdout
    p, doc = roar.run("cat", "/proc/self/status")
    got = lines(p.stdout)
    assert any(ln.startswith("Speculation_Store_Bypass") for ln in got), p.stdout
    held = [ln for ln in got if ln.startswith("Seccomp:")]
    assert held == ["Seccomp:\t2"], held  # the run was held (a filter is on)
    assert [ln for ln in got if not ln.startswith("Seccomp:")] == [
        ln for ln in lines(bare) if not ln.startswith("Seccomp:")]
    assert_complete(doc)


def test_file_created_read_write_is_an_output_not_an_input(roar):
    """O_RDWR|O_CREAT of a new file (sqlite, 'a+'): written, read back; never an input."""
    w = roar.cwd
    _, doc = py(roar, """
        import sqlite3
        db = sqlite3.connect("results.db")
        db.execute("create table m (k text, v real)")
        db.executemany("insert into m values (?, ?)", [("loss", 0.1), ("acc", 0.9)])
        db.commit()
        assert db.execute("select count(*) from m").fetchone()[0] == 2
        db.close()
        with open("log.txt", "a+") as f:
            f.write("epoch 1\\n"); f.seek(0); f.read()
    """)
    assert_versions(doc["inputs"], {}, "inputs")
    assert_versions(doc["outputs"], outputs_now(w / "results.db", w / "log.txt"), "outputs")
    assert_complete(doc)


def test_pipeline_intermediate_is_an_output_not_an_input(roar):
    """One process writes a file another then reads: both files are outputs of the
    run, neither is an input."""
    w = roar.cwd
    _, doc = roar.run("sh", "-c", "echo step1 > mid.txt && cat mid.txt > final.txt")
    assert_versions(doc["inputs"], {}, "inputs")
    assert_versions(doc["outputs"], outputs_now(w / "mid.txt", w / "final.txt"), "outputs")
    assert_complete(doc)


def test_created_or_truncated_without_a_write_is_an_output(roar):
    """open(..., "w") and close: a new empty marker file, or an existing file emptied.
    The content the run left behind is new; it is an output (empty content hash)."""
    w = roar.cwd
    put(w / "old.log", "content from before the run\n")
    _, doc = py(roar, """
        open("_SUCCESS", "w").close()          # O_CREAT|O_TRUNC, no write
        open("old.log", "w").close()           # O_TRUNC empties it, no write
    """)
    assert (w / "old.log").read_bytes() == b""
    assert_versions(doc["outputs"], outputs_now(w / "_SUCCESS", w / "old.log"), "outputs")
    assert_versions(doc["inputs"], {}, "inputs")
    assert_complete(doc)


def test_append_to_existing_file_is_output_only(roar):
    w = roar.cwd
    put(w / "history.log", "run 1\n")
    _, doc = roar.run("sh", "-c", "echo 'run 2' >> history.log")
    assert_versions(doc["inputs"], {}, "inputs")
    assert_versions(doc["outputs"], outputs_now(w / "history.log"), "outputs")
    assert_complete(doc)


# -- inherited and reopened descriptors ------------------------------------------------------


def _run_with_stdio(roar, cmd: list[str], stdin=None, stdout=None, stderr=None):
    p = subprocess.run(roar_cmd("run", "--", *cmd), cwd=roar.cwd, env=roar.env(),
                       stdin=stdin, stdout=stdout if stdout is not None else subprocess.PIPE,
                       stderr=stderr if stderr is not None else subprocess.PIPE, timeout=120,
                       check=False)
    assert p.returncode == 0, p.stderr
    return p, last_run(roar)


def test_stdin_redirect_from_file_is_an_input(roar):
    w = roar.cwd
    src, h = put(w / "stdin_data.txt", "fed through stdin\n" * 100)
    with open(src, "rb") as f:
        p, doc = _run_with_stdio(roar, ["sh", "-c", "cat"], stdin=f)
    assert p.stdout == (w / "stdin_data.txt").read_bytes()
    assert_versions(doc["inputs"], {src: h}, "inputs")
    assert_complete(doc)


def test_stdin_redirect_read_by_first_process(roar):
    w = roar.cwd
    src, h = put(w / "stdin_py.txt", "read by the first process itself\n")
    with open(src, "rb") as f:
        _, doc = _run_with_stdio(roar, [PY, "-c", "import sys; sys.stdin.buffer.read()"],
                                 stdin=f)
    assert_versions(doc["inputs"], {src: h}, "inputs")
    assert_complete(doc)


def test_stdout_and_stderr_redirects_are_the_logs(roar):
    """`roar run -- step > out.txt 2> log.txt`: files the caller opened for the
    run are its logs (bytes written, no version), whoever else writes there;
    a file the workload opens itself is an output (tests/test_capture_outputs.py)."""
    w = roar.cwd
    with open(w / "redirected.txt", "wb") as out, open(w / "log.txt", "wb") as err:
        _, doc = _run_with_stdio(roar, ["sh", "-c", "echo to the redirect; echo oops >&2"],
                                 stdout=out, stderr=err)
    assert (w / "redirected.txt").read_text() == "to the redirect\n"
    assert doc["outputs"] == []
    assert {f["path"]: f["bytes_written"] for f in doc["logs"]} == {
        str(w / "redirected.txt"): 16, str(w / "log.txt"): 5}
    root = trace(roar, doc["id"])["processes"][0]
    assert "w" in proc_files(root)[str(w / "log.txt")]["mode"]
    assert "oops" in (w / "log.txt").read_text()
    assert_complete(doc)


def test_reopen_through_dev_stdin_and_proc_fd(roar):
    """/dev/stdin and /proc/self/fd/N reopen the file behind an fd: it is that
    file that is read, not a pseudo file."""
    w = roar.cwd
    src, h = put(w / "via_dev_stdin.txt", "read as /dev/stdin\n")
    ins = {src: h}
    ins.update([put(w / "via_proc_fd.txt", "read as /proc/self/fd/3\n")])
    with open(src, "rb") as f:
        _, doc = _run_with_stdio(
            roar, ["sh", "-c", ("cat /dev/stdin >/dev/null; "
                                "exec 3<via_proc_fd.txt; cat /proc/self/fd/3 >/dev/null")],
            stdin=f)
    assert_versions(doc["inputs"], ins, "inputs")
    assert_complete(doc)


def test_python_script_with_local_module(roar):
    """The everyday case: python train.py importing a local module, reading data."""
    w = roar.cwd
    ins = dict([put(w / "train.py", "import helper\n"
                    "rows = open('data.csv').read().splitlines()\n"
                    "open('model.txt', 'w').write(helper.fit(rows))\n"),
                put(w / "helper.py", "def fit(rows):\n    return f'{len(rows)} rows\\n'\n"),
                put(w / "data.csv", "a,b\n1,2\n3,4\n")])
    _, doc = roar.run(PY, "train.py")
    assert (w / "model.txt").read_text() == "3 rows\n"
    assert_versions(doc["inputs"], ins, "inputs")
    assert_versions(doc["outputs"], outputs_now(w / "model.txt"), "outputs")
    assert doc["processes"][0]["argv"] == [PY, "train.py"]
    assert_complete(doc)


def test_concurrent_runs_stay_apart(roar):
    w = roar.cwd
    ins = {n: dict([put(w / f"{n}.in", f"input of run {n}\n")]) for n in ("a", "b")}
    code = ("import sys, time; n = sys.argv[1]; time.sleep(0.3); open(n + '.in').read(); "
            "time.sleep(0.3); open(n + '.out', 'w').write(n)")
    procs = [subprocess.Popen(roar_cmd("run", "--name", n, "--", PY, "-c", code, n),
                              cwd=w, env=roar.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for n in ("a", "b")]
    for pr in procs:
        _, err = pr.communicate(timeout=120)
        assert pr.returncode == 0, err
    runs = {e["name"]: e["id"] for e in roar.json("log", "-n", "2")}
    assert sorted(runs) == ["a", "b"]
    for n, run_id in runs.items():
        doc = roar.json("show", run_id)
        assert_versions(doc["inputs"], ins[n], f"inputs of {n}")
        assert_versions(doc["outputs"], outputs_now(w / f"{n}.out"), f"outputs of {n}")
        assert len(doc["processes"]) == 1
        assert_complete(doc)


# -- cgroups ---------------------------------------------------------------------------------


def test_child_cgroup_stays_traced(roar):
    w = roar.cwd
    ins = dict([put(w / "in_child_cgroup.txt", "read from a nested cgroup\n")])
    p, doc = py(roar, CGROUP2_MOUNT + textwrap.dedent("""
        rel = [l for l in open("/proc/self/cgroup").read().splitlines()
               if l.startswith("0::")][0][3:]
        mine = mount + rel
        child = os.path.join(mine, "inner")
        os.mkdir(child)
        with open(os.path.join(child, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
        now = [l for l in open("/proc/self/cgroup").read().splitlines() if l.startswith("0::")]
        assert now[0].endswith("/inner"), now
        open("in_child_cgroup.txt", "rb").read()
        open("out_child_cgroup.txt", "w").write("written from a nested cgroup\\n")
        print(now[0])
    """))
    assert p.stdout.strip().endswith("/inner")
    assert_versions(doc["inputs"], ins, "inputs")
    assert_versions(doc["outputs"], outputs_now(w / "out_child_cgroup.txt"), "outputs")
    assert_complete(doc)


def test_a_process_moved_out_of_the_run_is_not_traced_from_then_on(roar):
    """A process reading back to back (the kernel side's per-thread shortcut, which
    skips the cgroup id: bpf/tagging.h) and moved out of the run cgroup by another
    is untraced from its next call: cgroup_attach_task makes the shortcut stale.
    Without that, this fails only where nothing else ran on the child's CPU (any
    other task's call there replaces the per-CPU entry): it pins the behaviour
    more than it catches the one bug."""
    w = roar.cwd
    ins = dict([put(w / "busy.txt", "read back to back\n")])
    put(w / "after_move.txt", "read only once moved out\n")
    _, doc = py(roar, CGROUP2_MOUNT + textwrap.dedent("""
        import mmap, time
        moved = mmap.mmap(-1, 1)  # shared, anonymous: polled without a syscall
        # fds above FLUSH_MAX: a read is told at once, not by a close summary
        # (the child exits outside the run, where nothing is flushed)
        busy = os.dup2(os.open("busy.txt", os.O_RDONLY), 300)
        after = os.dup2(os.open("after_move.txt", os.O_RDONLY), 301)
        pid = os.fork()
        if pid == 0:
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
            while moved[0] == 0:
                os.pread(busy, 1, 0)
            os.pread(after, 64, 0)
            os._exit(0)
        time.sleep(0.3)
        with open(os.path.join(mount, "cgroup.procs"), "w") as f:
            f.write(str(pid))
        moved[0] = 1
        os.waitpid(pid, 0)
    """))
    assert_versions(doc["inputs"], ins, "inputs")


# -- exit status and signals -----------------------------------------------------------------


def test_exit_status_propagates(roar):
    p, doc = roar.run("sh", "-c", "exit 3", check=False)
    assert p.returncode == 3
    assert doc["exit_code"] == 3 and doc["signal"] is None
    assert doc["status"] == "finished"
    p, doc = roar.run("sh", "-c", "kill -TERM $$", check=False)
    assert p.returncode == 143
    assert doc["signal"] == 15 and doc["exit_code"] == 143


def test_command_not_found(roar):
    p = roar("run", "--", "no-such-command-roar-test", check=False)
    assert p.returncode == 127
    assert "Traceback" not in p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, p.stderr
    assert "no-such-command-roar-test" in lines[0] and "not found" in lines[0]


def test_sigterm_to_roar_is_forwarded_and_run_stored_interrupted(roar):
    w = roar.cwd
    proc = subprocess.Popen(
        roar_cmd("run", "--", PY, "-c",
                 "import time; open('ready', 'w').close(); time.sleep(60)"),
        cwd=w, env=roar.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (w / "ready").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "workload never started"
            time.sleep(0.05)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert time.monotonic() - t0 < 10, "the workload did not get the SIGTERM"
    assert proc.returncode == 143, err
    doc = last_run(roar)
    assert doc["status"] == "interrupted"
    assert doc["signal"] == 15
    assert doc["complete"] is False
    assert doc["outputs"] == [] or [o["path"] for o in doc["outputs"]] == [str(w / "ready")]
