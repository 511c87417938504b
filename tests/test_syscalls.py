"""roar/capture/syscalls.py: the compiled system calls (roar/capture/_sys.c)
and their ctypes versions, used where the module is not built, give the same
answers; `roar run` imports neither ctypes nor the socket module."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from roar.capture import seccomp, syscalls

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_compiled():
    assert syscalls.COMPILED  # tests/conftest.py builds it


def test_birth_ns_both_ways(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x")
    by_path = syscalls.birth_ns(syscalls.AT_FDCWD, os.fsencode(f), 0)
    assert by_path == syscalls.ctypes_birth_ns(syscalls.AT_FDCWD, os.fsencode(f), 0)
    fd = os.open(f, os.O_RDONLY)
    try:
        assert syscalls.birth_ns(fd, b"", syscalls.AT_EMPTY_PATH) == by_path
        assert syscalls.ctypes_birth_ns(fd, b"", syscalls.AT_EMPTY_PATH) == by_path
    finally:
        os.close(fd)
    gone = os.fsencode(tmp_path / "gone")
    assert syscalls.birth_ns(syscalls.AT_FDCWD, gone, 0) is None
    assert syscalls.ctypes_birth_ns(syscalls.AT_FDCWD, gone, 0) is None
    with pytest.raises(ValueError):
        syscalls.birth_ns(syscalls.AT_FDCWD, b"a\0b", 0)


def test_read_mem_both_ways():
    data = b"path/to/something\0and more"
    buf = ctypes.create_string_buffer(data, len(data))
    addr = ctypes.addressof(buf)
    pid = os.getpid()
    for n in (1, 8, len(data)):
        assert syscalls.read_mem(pid, addr, n) == data[:n]
        assert syscalls.ctypes_read_mem(pid, addr, n) == data[:n]
    assert syscalls.read_mem(pid, 0, 8) is None  # unmapped
    assert syscalls.ctypes_read_mem(pid, 0, 8) is None


@pytest.mark.parametrize("install", ["compiled", "ctypes"])
def test_seccomp_install_both_ways(install):
    """In a child: the filter installs (with no_new_privs, as a user would)
    and hands back a listener fd; a held write-open is seen through it."""
    fn = syscalls.seccomp_install if install == "compiled" else syscalls.ctypes_seccomp_install
    prog = seccomp.program()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            fd = fn(prog, True)
            os.write(w, b"ok" if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:seccomp notify"
                     else b"not a listener")
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            os.write(w, repr(e).encode())
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 256)
    os.close(r)
    os.waitpid(pid, 0)
    assert got == b"ok"


def test_run_imports_neither_ctypes_nor_socket():
    """The modules `roar run` imports before and after its workload starts."""
    code = ("import sys; import roar.cli.run as r; r._preload(); "
            "print(' '.join(m for m in ('ctypes', 'socket', 'selectors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, check=True).stdout
    assert out.strip() == ""
