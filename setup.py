"""The compiled part of roar (everything else is in pyproject.toml): the
process model, roar/record/_cmodel.c, roard's relay, roar/capture/_relay.c, the
system calls the os module lacks, roar/capture/_sys.c, built with the OS's C compiler against
the interpreter's headers (Debian/Ubuntu: python3-dev), and the `roar` command
itself, roar/cli/launcher.c, a small program installed in the environment's bin/
(docs/launcher.md; the Python entry is `roar-py`). A failed build fails the
install: `roar run` needs it (docs/compiled.md)."""

import os  # noqa: I001 - setuptools before distutils (its own copy of it)

from setuptools import Extension, setup

# after setuptools: its own copy of distutils (Python 3.12 has none in the standard library)
from distutils.ccompiler import new_compiler  # noqa: E402
from distutils.command.build_scripts import build_scripts  # noqa: E402
from distutils.sysconfig import customize_compiler  # noqa: E402

FLAGS = ["-O2", "-Wall", "-Wno-missing-braces"]
LAUNCHER = "roar/cli/launcher.c"


class build_launcher(build_scripts):
    """The `roar` program: compiled from LAUNCHER (the only "script") with the
    compiler and flags extensions get, into the scripts build directory that
    install_scripts copies to bin/ (wheels, editable installs and setup.py
    install alike)."""

    def run(self):
        cc = new_compiler()
        customize_compiler(cc)
        tmp = os.path.join(self.get_finalized_command("build").build_temp, "launcher")
        objs = cc.compile([LAUNCHER], output_dir=tmp, extra_postargs=FLAGS)
        self.mkpath(self.build_dir)
        cc.link_executable(objs, "roar", output_dir=self.build_dir)
        os.chmod(os.path.join(self.build_dir, "roar"), 0o755)


setup(
    scripts=[LAUNCHER],
    cmdclass={"build_scripts": build_launcher},
    ext_modules=[
        Extension("roar.record._cmodel", ["roar/record/_cmodel.c"], include_dirs=["bpf"],
                  depends=["bpf/roar_event.h", "bpf/roar_event_user.h"],
                  extra_compile_args=FLAGS, optional=False),
        # a file's content hash read and hashed without the GIL (roar/record/hasher.py)
        Extension("roar.record._readhash", ["roar/record/_readhash.c"],
                  extra_compile_args=FLAGS, optional=False),
        # roard's per-record path (routing ring-buffer records to runs)
        Extension("roar.capture._relay", ["roar/capture/_relay.c"], include_dirs=["bpf"],
                  depends=["bpf/roar_event.h", "bpf/roar_event_user.h"],
                  extra_compile_args=FLAGS, optional=False),
        # seccomp(), process_vm_readv(), statx() for `roar run` without ctypes (syscalls.py)
        Extension("roar.capture._sys", ["roar/capture/_sys.c"], extra_compile_args=FLAGS,
                  optional=False),
    ])
