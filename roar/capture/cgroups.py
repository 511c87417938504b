"""Run cgroups in the cgroup v2 hierarchy: one per run, made BELOW THE
CALLER'S OWN cgroup (<caller>/roar/<run>), so every ancestor's limits,
device programs, accounting and kill path (cgroup.kill, scancel, pod
deletion, systemctl stop) still apply to the traced workload.

Where the caller's cgroup cannot take a child (cgroup.max.descendants or
max.depth reached, a threaded cgroup, not writable), the run cgroup is made
below the nearest ancestor that can, and the Placement says so (it goes on
the run record and `roar doctor` explains it): never a silent escape.

A run cgroup's id (its directory's inode number) is what the kernel side
matches with bpf_get_current_ancestor_cgroup_id(level), so processes that
move into child cgroups (containers, systemd scopes) stay traced. Run cgroups
sit at varying levels now: the probes keep a mask of the levels in use.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

PARENT = "roar"


def _tag_levels() -> int:
    """Levels 1..N-1 are traced (bpf/roar_event.h). Imported here, not at the
    top: `roar run` imports this module on its start path and never places."""
    from roar.capture.events import TAG_LEVELS

    return TAG_LEVELS


class CgroupError(Exception):
    pass


def _mounts() -> list[tuple[str, str]]:
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == "cgroup2":
                parts = left.split()
                found.append((parts[4], parts[3]))
    return found


def cgroup2_mount(mounts: list[tuple[str, str]] | None = None) -> Path:
    """Where the v2 hierarchy is mounted (/sys/fs/cgroup or .../unified).
    mounts: _mounts() as the caller read it (place() reads the table once)."""
    found = list(_mounts() if mounts is None else mounts)
    if not found:
        raise CgroupError("no cgroup v2 hierarchy is mounted (mount -t cgroup2 none "
                          "/sys/fs/cgroup/unified)")
    found.sort(key=lambda m: (m[0] != "/sys/fs/cgroup", m[0]))
    return Path(found[0][0])


def _mount_root(mount: Path, mounts: list[tuple[str, str]] | None = None) -> str:
    """The cgroup the mount shows at its top ("/" unless mounted from a subtree)."""
    for where, root in _mounts() if mounts is None else mounts:
        if where == str(mount):
            return "/" + root.strip("/") if root.strip("/") else "/"
    return "/"


def _depth(cgroup: str) -> int:
    c = cgroup.strip("/")
    return len(c.split("/")) if c else 0


def level_of(path: Path) -> int:
    """Level of a cgroup directory in the hierarchy (root = 0)."""
    mount = cgroup2_mount()
    return _depth(_mount_root(mount)) + len(path.relative_to(mount).parts)


def cgroup_of(pid: int | str = "self") -> str:
    """A process's cgroup v2 path, as /proc shows it ("/" for the root)."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip() or "/"
    except FileNotFoundError:
        raise CgroupError(f"no process {pid}") from None
    raise CgroupError(f"process {pid} is in no cgroup v2 (cgroup v1 only)")


def _dir_of(cgroup: str, mount: Path, mounts: list[tuple[str, str]] | None = None
            ) -> Path | None:
    """The directory of a cgroup path under the mount; None when the mount does
    not show it (a cgroup namespace, a mount of a subtree)."""
    root = _mount_root(mount, mounts)
    if cgroup.startswith("/.."):
        return None
    rel = os.path.relpath(cgroup, root)
    if rel == ".":
        return mount
    if rel.startswith(".."):
        return None
    return mount / rel


class Placement:
    """Where a run cgroup was made, and why there. (A plain class: dataclasses
    cost `roar run` ~13 ms to import.)"""

    def __init__(self, path: Path, cgroup_id: int, level: int, caller: str, parent: str,
                 note: str | None = None, mounts: list[tuple[str, str]] | None = None):
        self.path = path            # the run cgroup's directory
        self.shown = _cg_path(path, mounts)  # its cgroup path, as /proc/PID/cgroup shows it
        self.cgroup_id = cgroup_id  # its inode number: what the probes match
        self.level = level          # its level in the hierarchy (root = 0)
        self.caller = caller        # the caller's cgroup (of the held workload)
        self.parent = parent        # the cgroup it was made below (caller's or an ancestor)
        self.note = note            # set when parent is not caller's: what that means
        self.born = False           # the workload was cloned into it, not moved (make_for)

    def record(self) -> dict:
        """What the run document keeps (`cgroup`)."""
        return {"path": self.shown, "caller": self.caller, "parent": self.parent,
                "below_caller": self.parent == self.caller, "note": self.note,
                "entered": "clone" if self.born else "moved"}


def _cg_path(path: Path, mounts: list[tuple[str, str]] | None = None) -> str:
    try:
        mount = cgroup2_mount(mounts)
        rel = path.relative_to(mount)
    except (CgroupError, ValueError):
        return str(path)
    root = _mount_root(mount, mounts)
    return (root.rstrip("/") + "/" + str(rel)) if str(rel) != "." else root


def _ancestors(cgroup: str) -> list[str]:
    """cgroup itself, then each ancestor up to "/"."""
    out = [cgroup]
    while cgroup not in ("/", ""):
        cgroup = os.path.dirname(cgroup.rstrip("/")) or "/"
        out.append(cgroup)
    return out


def _why(e: OSError) -> str:
    if e.errno == errno.EAGAIN:
        return "cgroup.max.descendants or cgroup.max.depth of it or an ancestor reached"
    if e.errno == errno.EOPNOTSUPP:
        return "it is a threaded cgroup: processes cannot move below it"
    if e.errno == errno.EBUSY:
        return "the kernel refused the move (no-internal-process rule)"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"not writable here ({e.strerror}): not delegated"
    return e.strerror or str(e)


def place(name: str, pid: int) -> Placement:
    """Make the run cgroup `name` below pid's own cgroup and move pid there;
    below the nearest ancestor that can take it when that cgroup cannot (the
    Placement's note says which and what it means). CgroupError when none can."""
    mounts = _mounts()  # read once (~0.3 ms each time): the table every step below uses
    mount = cgroup2_mount(mounts)
    caller = cgroup_of(pid)
    first_failure = None
    base_depth = _depth(_mount_root(mount, mounts))
    for parent in _ancestors(caller):
        where, level, why = _site(parent, mount, mounts, base_depth)
        if where is None:
            first_failure = first_failure or why
            continue
        try:
            path = _make(where / PARENT, name)
        except OSError as e:
            first_failure = first_failure or _why(e)
            continue
        try:
            move(path, pid)
        except OSError as e:
            first_failure = first_failure or _why(e)
            remove(path)
            if e.errno == errno.ESRCH:
                raise CgroupError(f"no process {pid}") from None
            continue
        note = None
        if parent != caller:
            note = (f"the run cgroup could not be made below the caller's cgroup {caller} "
                    f"({first_failure}); it was made below {parent}: the limits, device "
                    f"programs, accounting and cgroup.kill of {caller} (and of the cgroups "
                    f"between it and {parent}) do not reach the workload; those of {parent} "
                    f"and above still do")
        return Placement(path, os.stat(path).st_ino, level, caller, parent, note, mounts)
    raise CgroupError(f"no run cgroup could be made below {caller} or any ancestor: "
                      f"{first_failure}")


def _site(cgroup: str, mount: Path, mounts: list[tuple[str, str]], base_depth: int
          ) -> tuple[Path | None, int, str | None]:
    """(directory, level, None) where a run cgroup below `cgroup` would be
    made, or (None, level, why not)."""
    where = _dir_of(cgroup, mount, mounts)
    if where is None:
        return None, 0, "this cgroup namespace does not show it"
    level = base_depth + len(where.relative_to(mount).parts) + 2
    if level >= _tag_levels():
        return None, level, f"deeper than the {_tag_levels() - 1} levels roar traces"
    return where, level, None


def make_for(name: str, pid: int) -> Placement | None:
    """The run cgroup `name` made below pid's own cgroup, nobody moved there:
    for a workload that pid (the launcher) is about to clone straight into it
    (CLONE_INTO_CGROUP). Moving a process takes the kernel's global
    threadgroup lock for writing, which waits for an RCU grace period (5-20 ms
    here, on the critical path of every run); a clone into the cgroup takes it
    only for reading. None where the cgroup cannot be made right there: the
    caller then forks as before and place() finds a home (an ancestor, with
    its note)."""
    try:
        mounts = _mounts()
        mount = cgroup2_mount(mounts)
        caller = cgroup_of(pid)
        where, level, _ = _site(caller, mount, mounts, _depth(_mount_root(mount, mounts)))
        if where is None:
            return None
        path = _make(where / PARENT, name)
    except (OSError, CgroupError):
        return None
    try:
        return Placement(path, os.stat(path).st_ino, level, caller, caller, None, mounts)
    except OSError:
        remove(path)
        return None


def holds(placement: Placement, pid: int) -> bool:
    """Whether pid is in the run cgroup itself (born there by a clone into it)."""
    try:
        return cgroup_of(pid) == placement.shown
    except CgroupError:
        return False


def _make(base: Path, name: str) -> Path:
    """mkdir base/name, base made first; another run may remove an empty base
    between the two (remove()): try again."""
    for _ in range(5):
        try:
            base.mkdir(exist_ok=True)
            path = base / name
            path.mkdir()
            return path
        except FileNotFoundError:
            continue
    raise OSError(errno.ENOENT, f"{base} keeps disappearing")


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
    """Remove a run cgroup (and any children), once its processes are gone, and
    the `roar` directory it was made in when that is empty and inside someone's
    cgroup (a job manager removing its cgroup must find nothing of roar's)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            for d, subdirs, _ in os.walk(path, topdown=False):
                for s in subdirs:
                    os.rmdir(os.path.join(d, s))
            os.rmdir(path)
            _remove_parent(path.parent)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            kill_all(path)
            time.sleep(0.02)


def _remove_parent(base: Path) -> None:
    if base.name != PARENT:
        return
    try:
        if base.parent == cgroup2_mount():
            return  # <root>/roar: shared by every run from the root cgroup, kept
        os.rmdir(base)
    except (OSError, CgroupError):
        pass  # another run's cgroup is in it (EBUSY): that run removes it


def run_cgroups(prefix: str) -> list[Path]:
    """Every run cgroup in the hierarchy whose name starts with prefix (left by
    a roard that died: they may be anywhere below its callers' cgroups)."""
    out = []
    try:
        mount = cgroup2_mount()
    except CgroupError:
        return out
    for d, subdirs, _ in os.walk(mount):
        if os.path.basename(d) == PARENT:
            out.extend(Path(d) / s for s in subdirs if s.startswith(prefix))
            subdirs[:] = [s for s in subdirs if not s.startswith(prefix)]
    return out


def _read_int(path: Path) -> int | None:
    try:
        raw = path.read_text().strip()
    except OSError:
        return None
    return None if raw == "max" else int(raw)


def _stat(path: Path) -> dict[str, int]:
    try:
        return {k: int(v) for k, v in (line.split() for line in
                                       (path / "cgroup.stat").read_text().splitlines())}
    except (OSError, ValueError):
        return {}


def obstacle(cgroup: str) -> str | None:
    """Why a run cgroup could not be made below `cgroup` now (None: nothing
    known stands in the way). What place() would meet, found without making
    anything: for `roar doctor`."""
    mount = cgroup2_mount()
    where = _dir_of(cgroup, mount)
    if where is None:
        return "this cgroup namespace does not show it"
    if _depth(_mount_root(mount)) + len(where.relative_to(mount).parts) + 2 >= _tag_levels():
        return f"deeper than the {_tag_levels() - 1} levels roar traces"
    try:
        if (where / "cgroup.type").read_text().strip() == "threaded":
            return "it is a threaded cgroup: processes cannot move below it"
    except OSError:
        pass
    # roar adds two levels (roar/<run>) and up to two cgroups below each ancestor
    d = where
    added_depth = 2
    while True:
        limit = _read_int(d / "cgroup.max.descendants")
        if limit is not None and _stat(d).get("nr_descendants", 0) + 2 > limit:
            return f"cgroup.max.descendants of {_cg_path(d)} reached"
        limit = _read_int(d / "cgroup.max.depth")
        if limit is not None and added_depth > limit:
            return f"cgroup.max.depth of {_cg_path(d)} reached"
        if d == mount:
            break
        d = d.parent
        added_depth += 1
    if os.geteuid() == 0 and not os.access(where, os.W_OK):
        return "not writable here: not delegated"
    return None
