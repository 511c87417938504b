"""Classification of accessed paths: data, code, environment, pseudo.

Environment files (interpreters, libraries, site-packages, system config)
are summarised as package versions, not listed as data inputs; pseudo files
(/proc, /sys, /dev) carry no content identity.
"""

from __future__ import annotations

import functools
import os
import re

DATA, CODE, ENV, PSEUDO = "data", "code", "env", "pseudo"

PSEUDO_PREFIXES = ("/proc/", "/sys/", "/dev/")
SYSTEM_PREFIXES = ("/usr/", "/lib/", "/lib32/", "/lib64/", "/libx32/", "/bin/", "/sbin/",
                   "/etc/", "/var/lib/", "/var/cache/", "/run/", "/opt/conda/", "/nix/store/",
                   "/snap/")
_ENV_PARTS = re.compile(
    r"/(?:site-packages|dist-packages|__pycache__|\.pyenv/versions|envs/[^/]+/lib)/"
    r"|/\.?v?env/(?:lib|lib64|bin|include)/|/pyvenv\.cfg$"
    r"|/lib(?:32|64)?/python\d+(?:\.\d+)?/"
    r"|\.pyc$"
    # pyenv's shims and its own scripts run before every pyenv python starts
    r"|/\.pyenv/(?:shims|libexec|plugins)/"
    # compiler and GPU kernel caches: rebuilt from code, never training data
    r"|/\.triton/|/\.nv/ComputeCache/|^/tmp/torchinductor_[^/]+/"
    r"|/\.cache/(?:pip|triton|torch_extensions|fontconfig|matplotlib|numba|pycache)/"
)
# shared libraries are environment wherever they live, unless in the work tree;
# versions may carry any suffix (libLLVM.so.22.1-rust-1.95.0-stable)
_SHARED_LIB = re.compile(r"\.so(?:\.\d+)*$|/lib[^/]*\.so\.\d[^/]*$")
# a virtualenv is wherever a pyvenv.cfg sits above bin/, lib/ or include/,
# whatever the directory is called
_VENV_PART = re.compile(r"/(?:bin|lib|lib64|include)/")


@functools.lru_cache(maxsize=4096)
def _is_venv(root: str) -> bool:
    return os.path.isfile(root + "/pyvenv.cfg")


def in_venv(path: str) -> bool:
    """Whether path lies in a virtualenv's bin/, lib/ or include/ (found by
    its pyvenv.cfg: one stat per directory, cached)."""
    for i, m in enumerate(_VENV_PART.finditer(path)):
        if i >= 3:
            break
        if m.start() > 0 and _is_venv(path[:m.start()]):
            return True
    return False
CODE_SUFFIXES = (".py", ".pyx", ".pxd", ".ipynb", ".sh", ".bash", ".c", ".cc", ".cpp", ".h",
                 ".hpp", ".cu", ".rs", ".go", ".js", ".ts", ".r", ".R", ".jl", ".lua", ".pl",
                 ".rb", ".java", ".scala", ".sql", ".toml", ".cfg", ".ini", ".yaml", ".yml",
                 "Makefile", "Dockerfile")


def is_pseudo(path: str) -> bool:
    # /dev/shm holds real files (datasets staged in RAM): not pseudo
    return (path.startswith(PSEUDO_PREFIXES) and not path.startswith("/dev/shm/")) or \
        path in ("/proc", "/sys", "/dev")


def is_environment(path: str, git_root: str | None = None) -> bool:
    """Interpreter, library and system files (no git knowledge needed)."""
    if _ENV_PARTS.search(path) or in_venv(path):
        return True
    if git_root and (path == git_root or path.startswith(git_root.rstrip("/") + "/")):
        rel = path[len(git_root.rstrip("/")) + 1 :]
        return rel == ".git" or rel.startswith(".git/")
    return path.startswith(SYSTEM_PREFIXES) or bool(_SHARED_LIB.search(path))


def needs_hash(path: str) -> bool:
    """Whether a read of this path may be a data or code input worth hashing
    (a shared library in the work tree is code: hashed too)."""
    return not (is_pseudo(path) or path.startswith(SYSTEM_PREFIXES)
                or _ENV_PARTS.search(path) or in_venv(path))


def classify(path: str, git_root: str | None = None, tracked: set[str] | None = None) -> str:
    """data | code | env | pseudo for an absolute path."""
    if is_pseudo(path):
        return PSEUDO
    if is_environment(path, git_root):
        return ENV
    if git_root and path.startswith(git_root.rstrip("/") + "/"):
        rel = path[len(git_root.rstrip("/")) + 1 :]
        if tracked is not None and rel in tracked:
            return CODE
        if path.endswith(CODE_SUFFIXES):
            return CODE
    return DATA
