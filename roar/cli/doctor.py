"""`roar doctor`: one line per thing roar needs, each with the fix."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import click

from roar.capture import cgroups, features
from roar.capture.events import program_text
from roar.capture.probes import ProbeError, ensure_tracefs, import_bcc
from roar.capture.session import daemon_status
from roar.record.store import Store, StoreError

# the checks made so far: {"check", "status" (ok | warn | fail), "detail", "fix"}
_checks: list[dict] = []
_quiet = False


def _line(ok: bool | None, what: str, detail: str, fix: str = "") -> bool:
    mark = {True: "ok  ", False: "FAIL", None: "warn"}[ok]
    _checks.append({"check": what, "status": mark.strip().lower(), "detail": detail,
                    "fix": fix if fix and not ok else None})
    if not _quiet:
        click.echo(f"[{mark}] {what:<12} {detail}" + (f"  -> {fix}" if fix and not ok else ""))
    return ok is not False


def _mounted(where: str) -> bool:
    with open("/proc/mounts") as f:
        return any(line.split()[1] == where for line in f)


def checks() -> tuple[bool, list[dict]]:
    """Every check, silently: (all passed, the checks) for `roar doctor --json`."""
    global _quiet
    _quiet = True
    try:
        return run_checks(), list(_checks)
    finally:
        _quiet = False


def run_checks() -> bool:
    _checks.clear()
    good = True
    release = platform.release()
    good &= _line(True, "kernel", f"{release} ({platform.machine()}); roar is tested on "
                  f"{features.TESTED_KERNELS}; oldest that loads: {features.MIN_KERNEL}")
    root = os.geteuid() == 0
    if root:
        mounted = ensure_tracefs()
        if mounted:
            _line(True, "tracefs", f"mounted {', '.join(mounted)} now")
    # what the kernel itself offers, probed (not inferred from the version):
    # one line per missing feature, with the reason and the fix
    for f in features.probe_all():
        ok = f.ok if f.required else (True if f.ok else None)
        good &= _line(ok, f.name, f.detail, f.fix)
    headers = Path(f"/lib/modules/{release}/build")
    good &= _line(headers.exists(), "headers", str(headers.resolve()) if headers.exists()
                  else "missing", "run scripts/setup.sh (installs and links kernel headers)")
    try:
        _placement_lines()
    except cgroups.CgroupError:
        pass  # the cgroup v2 feature line above says why
    try:
        bcc = import_bcc()
        good &= _line(True, "bcc", f"python bindings at {Path(bcc.__file__).parent}")
    except ProbeError as e:
        good &= _line(False, "bcc", str(e), "apt-get install python3-bpfcc")
        bcc = None
    good &= _line(root or None, "privileges", "root" if root else
                  f"uid {os.getuid()}: roar run needs a running roard",
                  "start roard as root: roar daemon start")
    _preimage_line(root)
    st = daemon_status()
    _line(True if st else None, "daemon", f"pid {st['pid']}, probes "
          f"{'attached' if st['attached'] else 'detached'}" if st else "not running "
          "(roar run as root starts one)", "roar daemon start")
    if bcc is not None and root and st is None:
        try:
            import time

            t = time.monotonic()
            bcc.BPF(text="int roar_doctor(void *ctx) { return 0; }")
            _line(True, "compile", f"test program compiled in {time.monotonic() - t:.1f}s")
            program_text()
        except Exception as e:  # BCC reports compile failures as bare Exception
            good &= _line(False, "compile", str(e).splitlines()[0],
                          "check kernel headers (scripts/setup.sh)")
    try:
        store = Store(readonly=True)
        n = sum(1 for _ in store.iter_runs())
        _line(True, "store", f"{store.path} ({n} runs)")
    except StoreError as e:
        ok = None if "no roar store" in str(e) else False
        good &= _line(ok, "store", str(e))
    return bool(good)


def _preimage_line(root: bool) -> None:
    """Whether runs get the pre-image hold (docs/preimage.md); never a failure:
    without it such inputs are recorded unverified."""
    if os.environ.get("ROAR_PREIMAGE", "1") in ("0", "off", "no"):
        _line(None, "pre-image", "off (ROAR_PREIMAGE=0): an input rewritten within "
              "microseconds of its read is recorded unverified", "unset ROAR_PREIMAGE")
        return
    from roar.capture import seccomp

    why = seccomp.unavailable()
    if why:
        _line(None, "pre-image", f"the seccomp filter cannot be installed ({why}): an input "
              "rewritten within microseconds of its read is recorded unverified",
              "allow seccomp() in this container's profile")
    else:
        _line(True, "pre-image", "held: write-opens, truncate, rename, unlink of the run" +
              ("" if root else " (runs get no_new_privs: setuid programs in them gain "
               "nothing; ROAR_PREIMAGE=0 turns it off)"))


def _placement_lines() -> None:
    """Where a run started from here would be placed, and the last runs that
    could not be placed below their caller's cgroup (cgroups.place)."""
    try:
        mine = cgroups.cgroup_of()
        why = cgroups.obstacle(mine)
    except (cgroups.CgroupError, OSError) as e:
        _line(None, "placement", f"unknown: {e}")
        return
    if why is None:
        _line(True, "placement", f"run cgroups go below the caller's own cgroup (here {mine}): "
              f"its limits, device programs, accounting and cgroup.kill apply to the workload")
    else:
        _line(None, "placement", f"a run started here cannot get a cgroup below {mine} ({why}): "
              f"it gets one below the nearest ancestor that can, and the limits, device "
              f"programs, accounting and cgroup.kill of {mine} will not reach the workload "
              f"(said on the run's record, `cgroup`)")
    try:
        store = Store(readonly=True)
    except StoreError:
        return
    for i, run in enumerate(store.iter_runs()):
        if i >= 100:
            break
        cg = run.get("cgroup") or {}
        if cg and not cg.get("below_caller", True):
            _line(None, "placement", f"run {run['id']}: {cg.get('note')}")
            break
