"""Attaching to a live process tree (`roar attach`): roard's side. Finds the
tree under a pid, snapshots what the process model needs of each process
(parent, argv, executable, working directory, open files) and moves the
tree into the run cgroup; on detach, moves what is left back.

A process forked while the tree is being moved is in the cgroup already
(it inherits its parent's) or is found by the next pass, so the tree is
complete once a pass finds nothing left outside. Its children, daemonized
or not, are in the cgroup from then on.
"""

from __future__ import annotations

import os
from pathlib import Path

from roar.capture import cgroups

MAX_PASSES = 20


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, start time in clock ticks since boot) of a process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2:].split()
    return int(fields[1]), int(fields[19])


def _children(pids: set[int]) -> dict[int, int]:
    """Every live process whose parent is in pids: {pid: ppid}."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _stat(int(name))
        if st is not None and st[0] in pids:
            out[int(name)] = st[0]
    return out


def cgroup_of(pid: int) -> str | None:
    """The process's cgroup v2 path; None once it has exited."""
    try:
        return cgroups.cgroup_of(pid)
    except cgroups.CgroupError:
        return None


def snapshot(pid: int, ppid: int) -> dict | None:
    """What the process model needs of a process it did not see start."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [os.fsdecode(a) for a in f.read().split(b"\0")[:-1]]
        cwd = os.readlink(f"/proc/{pid}/cwd")
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
    fds = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        names = []
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("/"):
            fds[name] = target
    st = _stat(pid)
    return {"pid": pid, "ppid": ppid, "argv": argv, "cwd": cwd,
            "exe": exe.removesuffix(" (deleted)"), "fds": fds,
            "start": st[1] if st else 0, "cgroup": cgroup_of(pid)}


def move_tree(root: int, path: Path, owner_ok) -> list[dict]:
    """Move root and all its descendants into the cgroup at path; returns a
    snapshot of each moved process (taken just before it moved). owner_ok(pid):
    whether the caller may trace that process (others are left where they are)."""
    moved: dict[int, dict] = {}
    st = _stat(root)
    if st is None:
        raise ProcessLookupError(root)
    todo = {root: st[0]}
    for _ in range(MAX_PASSES):
        for pid, ppid in todo.items():
            if pid in moved or not owner_ok(pid):
                continue
            snap = snapshot(pid, ppid)
            if snap is None:  # it exited meanwhile
                continue
            try:
                cgroups.move(path, pid)
            except ProcessLookupError:
                continue
            except OSError:
                if pid == root:
                    raise
                continue
            moved[pid] = snap
        # forks made before their parent moved are still outside: next pass
        todo = {p: pp for p, pp in _children(set(moved)).items() if p not in moved
                and cgroup_of(p) != cgroup_of(root)}
        if not todo:
            break
    return list(moved.values())


def move_back(path: Path, dest: Path) -> int:
    """Detach: move every process left in the run cgroup to dest (where the
    attached tree was); returns how many moved."""
    n = 0
    for _ in range(MAX_PASSES):
        left = cgroups.pids(path)
        if not left:
            break
        for pid in left:
            try:
                cgroups.move(dest, pid)
                n += 1
            except OSError:
                pass
    return n
