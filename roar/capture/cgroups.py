"""Run cgroups in the cgroup v2 hierarchy: one per run, under <mount>/roar/.

A run cgroup's id (its directory's inode number) is what the kernel side
matches with bpf_get_current_ancestor_cgroup_id(), so processes that move
into child cgroups (containers, systemd scopes) stay traced.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

PARENT = "roar"


class CgroupError(Exception):
    pass


def cgroup2_mount() -> Path:
    """Where the v2 hierarchy is mounted (/sys/fs/cgroup or .../unified)."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == "cgroup2":
                parts = left.split()
                found.append((parts[4], parts[3]))
    if not found:
        raise CgroupError("no cgroup v2 hierarchy is mounted (mount -t cgroup2 none "
                          "/sys/fs/cgroup/unified)")
    found.sort(key=lambda m: (m[0] != "/sys/fs/cgroup", m[0]))
    return Path(found[0][0])


def _mount_root_depth(mount: Path) -> int:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[4] == str(mount):
                root = parts[3].strip("/")
                return len(root.split("/")) if root else 0
    return 0


def run_level() -> int:
    """Level of run cgroups in the hierarchy (root = 0): <root>/roar/<run>."""
    return _mount_root_depth(cgroup2_mount()) + 2


def create(run_id: str) -> tuple[Path, int]:
    base = cgroup2_mount() / PARENT
    base.mkdir(exist_ok=True)
    path = base / run_id
    path.mkdir()
    return path, os.stat(path).st_ino


def move(path: Path, pid: int) -> None:
    with open(path / "cgroup.procs", "w") as f:
        f.write(str(pid))


def pids(path: Path) -> list[int]:
    """Every process in the cgroup and its descendants."""
    out: list[int] = []
    for d, _, files in os.walk(path):
        if "cgroup.procs" in files:
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    out.extend(int(x) for x in f.read().split())
            except OSError:
                pass
    return out


def populated(path: Path) -> bool:
    try:
        with open(path / "cgroup.events") as f:
            for line in f:
                if line.startswith("populated"):
                    return line.split()[1] == "1"
    except FileNotFoundError:
        return False
    return bool(pids(path))


def kill_all(path: Path, sig: int = signal.SIGKILL) -> int:
    """Signal every process left in the cgroup; returns how many were signalled."""
    left = pids(path)
    for pid in left:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return len(left)


def kill_tree(path: Path) -> int:
    """SIGKILL the whole cgroup at once (cgroup.kill: no process can fork
    away while it is being ended); returns the kernel's CLOCK_MONOTONIC time
    of the kill in ns. Falls back to signalling each process."""
    try:
        with open(path / "cgroup.kill", "w") as f:
            f.write("1")
    except FileNotFoundError:  # kernels before 5.14
        kill_all(path)
    return time.monotonic_ns()


def remove(path: Path, timeout: float = 5.0) -> None:
    """Remove a run cgroup (and any children), once its processes are gone."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            for d, subdirs, _ in os.walk(path, topdown=False):
                for s in subdirs:
                    os.rmdir(os.path.join(d, s))
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            kill_all(path)
            time.sleep(0.02)
