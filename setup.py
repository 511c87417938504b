"""The compiled part of roar (everything else is in pyproject.toml): the
process model, roar/record/_cmodel.c, roard's relay, roar/capture/_relay.c, and the
system calls the os module lacks, roar/capture/_sys.c, built with the OS's C compiler against
the interpreter's headers (Debian/Ubuntu: python3-dev). A failed build fails
the install: `roar run` needs it (docs/compiled.md)."""

from setuptools import Extension, setup

FLAGS = ["-O2", "-Wall", "-Wno-missing-braces"]
setup(ext_modules=[
    Extension("roar.record._cmodel", ["roar/record/_cmodel.c"], include_dirs=["bpf"],
              depends=["bpf/roar_event.h", "bpf/roar_event_user.h"], extra_compile_args=FLAGS, optional=False),
    # a file's content hash read and hashed without the GIL (roar/record/hasher.py)
    Extension("roar.record._readhash", ["roar/record/_readhash.c"], extra_compile_args=FLAGS,
              optional=False),
    # roard's per-record path (routing ring-buffer records to runs)
    Extension("roar.capture._relay", ["roar/capture/_relay.c"], include_dirs=["bpf"],
              depends=["bpf/roar_event.h", "bpf/roar_event_user.h"], extra_compile_args=FLAGS, optional=False),
    # seccomp(), process_vm_readv(), statx() for `roar run` without ctypes (syscalls.py)
    Extension("roar.capture._sys", ["roar/capture/_sys.c"], extra_compile_args=FLAGS,
              optional=False),
])
