"""Kernel feature probes (roar/capture/features.py) and what roar doctor and
the vm-tests smoke list make of them.

The probes run against this machine's real kernel (root for the bpf() ones);
a missing feature is shown with a tracepoint list naming one that does not
exist, since this kernel has everything roar needs. The refusal on a kernel
that really lacks cgroup v2 is checked by vm-tests/ (debian12-cgv1 boot).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO, one_line_error

from roar.capture import features

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="bpf() probes need root")

FAKE = """
#define READ_PROBE(name, count_expr, vec)                     \\
    TRACEPOINT_PROBE(syscalls, sys_enter_##name)              \\
    { return 0; }
READ_PROBE(read, args->count, 0)
READ_PROBE(pread64, args->count, 0)
TRACEPOINT_PROBE(sched, sched_process_fork) { return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_roar_no_such_call) { return 0; }
"""


def test_tracepoints_are_read_from_the_sources_including_macro_built_names():
    assert features.required_tracepoints(FAKE) == [
        ("sched", "sched_process_fork"), ("syscalls", "sys_enter_pread64"),
        ("syscalls", "sys_enter_read"), ("syscalls", "sys_enter_roar_no_such_call")]


def test_tracepoint_list_matches_every_probe_in_bpf():
    """Every TRACEPOINT_PROBE the kernel side defines is in the list, counted
    independently from the C: direct uses plus one per *_PROBE(name, ...) line."""
    text = "".join(p.read_text() for p in sorted((REPO / "bpf").glob("*.[ch]")))
    direct = set(re.findall(r"TRACEPOINT_PROBE\((\w+), (\w+)\)", text))
    built = {("syscalls", "sys_enter_" + n)
             for n in re.findall(r"^(?:READ|WRITE)_PROBE\((\w+),", text, re.M)}
    assert set(features.required_tracepoints()) == direct | built
    assert ("syscalls", "sys_enter_read") in built and ("sched", "sched_process_exit") in direct


@root_only
def test_this_kernel_has_everything_roar_needs():
    got = {f.name: f for f in features.probe_all()}
    for name in ("ring buffer", "cgroup helper", "tracepoints", "cgroup v2"):
        assert got[name].ok is True, got[name].line()
    assert features.missing(list(got.values())) == []
    features.require()  # does not raise


@root_only
def test_missing_tracepoint_is_one_line_with_reason_and_fix():
    out = features.probe_tracepoints(FAKE)
    assert [f.name for f in out] == ["tracepoint syscalls:sys_enter_roar_no_such_call"]
    line = out[0].line()
    assert "does not exist" in line and "->" in line and "\n" not in line
    with pytest.raises(features.FeatureError, match="sys_enter_roar_no_such_call"):
        features.require(FAKE)


@root_only
def test_a_whole_missing_category_is_one_line():
    text = "TRACEPOINT_PROBE(roarnone, a)\nTRACEPOINT_PROBE(roarnone, b)\n"
    out = features.probe_tracepoints(text)
    assert len(out) == 1 and out[0].ok is False and "none of the 2" in out[0].detail


def test_cgroup_mode_names_this_machines_hierarchy():
    mode, mount = features.cgroup_mode()
    assert mode in ("unified", "hybrid")
    assert (mount / "cgroup.procs").exists()


def test_bpf_probes_without_privileges_say_so_instead_of_failing(other_user, foreign_python):
    code = ("from roar.capture import features as f\n"
            "for p in (f.probe_ringbuf(), f.probe_ancestor_cgroup_helper()):\n"
            "    print(p.ok, p.detail)\n")
    exe, path = foreign_python
    p = subprocess.run([exe, "-c", code], env={"PYTHONPATH": path}, capture_output=True,
                       text=True, user=other_user.pw_uid, group=other_user.pw_gid, cwd="/")
    assert p.returncode == 0, p.stderr
    for line in p.stdout.splitlines():
        assert line.startswith("None cannot probe without root"), p.stdout


def test_doctor_prints_a_line_per_feature(cli):
    p = cli("doctor", check=False)
    assert "Traceback" not in p.stderr
    for what in ("ring buffer", "cgroup helper", "tracepoints", "cgroup v2",
                 "oldest that loads: 5.10"):
        assert what in p.stdout, p.stdout


def test_refusal_reaches_the_user_as_one_line(cli, tmp_path):
    """The line roard and embedded roar run print when a feature is missing
    (FeatureError -> ProbeError -> `roar: ...`): a copy of roar whose kernel
    side attaches a tracepoint this kernel lacks, run embedded."""
    if os.geteuid() != 0:
        pytest.skip("embedded roar run needs root")
    import shutil

    base = tmp_path / "copy"
    shutil.copytree(REPO / "roar", base / "roar", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "bpf", base / "bpf")
    with open(base / "bpf" / "net.h", "a") as f:
        f.write("\nTRACEPOINT_PROBE(syscalls, sys_enter_roar_no_such_call) { return 0; }\n")
    p = cli("run", "--", "true", check=False, env=cli.env(PYTHONPATH=str(base)))
    line = one_line_error(p)
    assert "this kernel cannot run roar" in line and "sys_enter_roar_no_such_call" in line


def test_smoke_list_names_tests_that_exist():
    """vm-tests/smoke.txt names pytest node ids; a renamed or moved test must
    fail here, not silently shrink the suite the guests run."""
    ids = [line.strip() for line in (REPO / "vm-tests/smoke.txt").read_text().splitlines()
           if line.strip() and not line.startswith("#")]
    assert len(ids) >= 10
    for node in ids:
        path, _, name = node.partition("::")
        assert re.search(rf"^def {re.escape(name)}\(", (REPO / path).read_text(), re.M), node


@pytest.mark.parametrize("body, verdict", [
    ("pytest.skip('probes did not load')", 1),
    ("pass", 0),
])
def test_vm_judge_fails_a_skip_and_reports_a_strict_xfail(tmp_path, body, verdict):
    """vm-tests/judge.py on a guest's results: junit counts an xfail as a skip,
    but only a real skip (the probes did not load) fails the kernel; a strict
    xfail of a known roar bug is named in the PASS line. The junit.xml comes
    from a real pytest run."""
    import json
    import sys

    tests = tmp_path / "t"
    tests.mkdir()
    (tests / "test_one.py").write_text(
        "import pytest\nclass KnownBug(Exception): pass\n"
        "@pytest.mark.xfail(strict=True, raises=KnownBug, reason='known')\n"
        "def test_bug():\n    raise KnownBug('as documented')\n"
        f"def test_case():\n    {body}\n")
    r = tmp_path / "results"
    r.mkdir()
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        f"--junitxml={r / 'junit.xml'}", str(tests)], capture_output=True,
                       text=True, cwd=tmp_path)
    (r / "pytest.rc").write_text(f"{p.returncode}\n")
    (r / "pytest.txt").write_text(p.stdout)
    (r / "doctor.txt").write_text("[ok  ] ring buffer  fine\n")
    (r / "doctor.rc").write_text("0\n")
    (r / "embedded.rc").write_text("0\n")
    (r / "embedded.expect").write_text("aa\nbb\n")
    (r / "embedded.json").write_text(json.dumps({
        "inputs": [{"path": "/w/input.bin", "hash": "aa"}],
        "outputs": [{"path": "/w/output.bin", "hash": "bb"}]}))
    j = subprocess.run([sys.executable, str(REPO / "vm-tests/judge.py"), "pass", str(r)],
                       capture_output=True, text=True)
    assert j.returncode == verdict, j.stdout + j.stderr
    if verdict:
        assert "1 skipped" in j.stdout, j.stdout
    else:
        assert "1 capture tests passed" in j.stdout and "xfail test_bug" in j.stdout, j.stdout


def test_btf_offsets_are_the_running_kernels(tmp_path):
    """The struct offsets the kernel side reads come from the running kernel's
    BTF; a missing or broken BTF file turns the check off (no guessed offsets)."""
    from roar.capture import btf

    if btf.offsets() is None:
        pytest.skip("no BTF in this kernel")
    found = btf.offsets()
    assert set(found) == set(btf.FIELDS)
    assert found["OFF_FDT_FD"] != found["OFF_FDT_MAX_FDS"]
    assert "-DROAR_FD_KIND=1" in btf.compile_flags()
    (tmp_path / "junk").write_bytes(b"\x00" * 64)
    assert btf.offsets.__wrapped__(str(tmp_path / "junk")) is None
    assert btf.offsets.__wrapped__(str(tmp_path / "absent")) is None


def test_exit_status_offsets_turn_on_the_kernels_own_exit_status(tmp_path):
    """bpf/process.h reads a process's exit status at its exit where BTF gives
    the five offsets (EXIT_FROM_TASK=1); without them the old programs (exit_group,
    signal_deliver, the parent's wait4) are compiled in (=0)."""
    from roar.capture import btf

    assert btf.exit_offsets.__wrapped__(str(tmp_path / "absent")) is None
    found = btf.exit_offsets()
    if found is None:
        assert btf.exit_flags() == ["-DEXIT_FROM_TASK=0"]
        pytest.skip("no BTF in this kernel")
    assert set(found) == set(btf.EXIT_FIELDS)
    assert len(set(found[k] for k in ("OFF_TASK_SIGNAL", "OFF_TASK_GROUP_LEADER",
                                      "OFF_TASK_EXIT_CODE"))) == 3
    flags = btf.exit_flags()
    assert flags[0] == "-DEXIT_FROM_TASK=1" and len(flags) == 1 + len(btf.EXIT_FIELDS)
    assert "-DEXIT_FROM_TASK=1" in features.compile_flags()


@root_only
def test_fallbacks_for_older_verifiers_are_chosen_by_probes_and_load():
    """This kernel's verifier takes bpf_get_current_ancestor_cgroup_id in tracepoints,
    so the kernel side is built with it (no struct cgroup offsets). The code Debian
    11's 5.10 gets instead (the ancestor ids read from the task's cgroup; vm-tests
    run it there) compiles and passes this kernel's verifier too: only loading is
    asked here, as 6.1 and later have no ancestor_ids[] to read."""
    from roar.capture import btf
    from roar.capture.probes import import_bcc

    flags = features.compile_flags()
    assert "-DHAVE_ANCESTOR_CGROUP_HELPER=1" in flags
    assert not [f for f in flags if f.startswith("-DOFF_CGROUP")]
    assert btf.cgroup_offsets() is None  # 6.1+: struct cgroup has ancestors[] instead
    found = btf._offsets(btf.VMLINUX, {**btf.CGROUP_FIELDS,
                                       "OFF_CGROUP_ANCESTOR_IDS": ("cgroup", "ancestors")})
    assert found is not None
    bcc = import_bcc()

    class _BPF(bcc.BPF):
        def _trace_autoload(self):
            pass

    # BCC rewrites map calls in the main file only: the headers go in inline
    text = "".join(re.sub(r'(?m)^#include ".*"$', "", (REPO / "bpf" / h).read_text())
                   for h in ("roar_event.h", "tagging.h", "emit.h")) + """
TRACEPOINT_PROBE(syscalls, sys_enter_getppid)
{
    u64 run = resolve_run(~0ULL);
    return run ? (int)wake_flag() : 0;
}
"""
    fallback = [f for f in flags if not f.startswith("-DHAVE_ANCESTOR")]
    fallback += ["-DHAVE_ANCESTOR_CGROUP_HELPER=0", "-DRINGBUF_PAGES=16", "-Wno-macro-redefined",
                 *(f"-D{k}={v}" for k, v in found.items())]
    b = _BPF(text=text.encode(), cflags=fallback)
    try:
        b.load_func(b"tracepoint__syscalls__sys_enter_getppid", bcc.BPF.TRACEPOINT)
    finally:
        b.cleanup()


@root_only
def test_hook_cost_script_runs_and_its_tracepoints_see_each_call_once():
    """vm-tests/guest/hooks.py (run.sh --measure) on this kernel: the variants it
    cannot attach here are one line each, and the syscall tracepoint variant
    records each open, read and mmap of the workload once and none of the opens
    and reads submitted through io_uring (what the LSM-function hooks close)."""
    p = subprocess.run([sys.executable, str(REPO / "vm-tests/guest/hooks.py"), "-n", "1000",
                        "-r", "1"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.rstrip().endswith("hooks: done"), p.stdout
    row = next(line for line in p.stdout.splitlines() if re.match(r"tp +\d", line))
    for hook in ("open", "read", "mmap"):  # the child's read of its next command: +1 a round
        assert re.search(rf"{hook} \d+ \([\d.]+, 1\.0[01]\)", row), row
    assert re.search(r"^tp +opens seen +0 +reads seen +0$", p.stdout, re.M), p.stdout
