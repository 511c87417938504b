"""The decoder is derived from bpf/roar_event.h; check it decodes what the
kernel side lays out."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from roar.capture import events as E


def test_layout_parsed_from_header():
    assert E.FIELDS[:4] == ["ts", "cgroup", "tgid", "tid"]
    assert E.HEADER_SIZE == 72 and E.CGROUP_OFFSET == 8
    assert E.EVENT_NAMES[E.EV_OPEN] == "open"


def test_every_event_constant_is_named_in_the_module_with_the_headers_value():
    text = E.HEADER.read_text()
    shared = "|".join(E.SHARED_PREFIXES)
    defined = dict(re.findall(rf"^#define\s+((?:{shared})\w+)\s+(\w+)", text, re.M))
    assert {"EV_OPEN", "EVF_FAULT", "FD_MAP_WRITE", "CLOSE_RANGE_CLOEXEC"} <= defined.keys()
    source = Path(E.__file__).read_text()
    for name, value in defined.items():
        assert getattr(E, name) == int(value, 0), name
        assert re.search(rf"^{name} = ", source, re.M), f"{name}: not greppable in events.py"


def test_facts_of_both_sides_are_defined_once_in_the_header():
    """Every #define and struct of roar_event.h is defined there only: no other
    bpf/ file redefines one, and no module of roar/ assigns a shared name
    except events.py, which reads it from the header by name."""
    import ast

    text = E.HEADER.read_text()
    defines = set(re.findall(r"^#define\s+(\w+)", text, re.M)) - {"ROAR_EVENT_H"}
    structs = set(re.findall(r"^struct (\w+)\s*\{", text, re.M))
    assert {"roar_event", "proc_state"} <= structs and "FD_READ" in defines
    for src in sorted(E.BPF_DIR.glob("*.[ch]")):
        if src == E.HEADER:
            continue
        other = src.read_text()
        again = set(re.findall(r"^\s*#define\s+(\w+)", other, re.M)) & defines
        again |= set(re.findall(r"^struct (\w+)\s*\{", other, re.M)) & structs
        assert not again, f"{src.name} redefines {sorted(again)} (roar_event.h has them)"
    shared = {n for n in E.CONSTS if n.startswith(E.SHARED_PREFIXES)}
    package = Path(E.__file__).resolve().parents[1]
    for mod in sorted(package.rglob("*.py")):
        tree = ast.parse(mod.read_text())
        for node in ast.walk(tree):
            targets = (node.targets if isinstance(node, ast.Assign)
                       else [node.target] if isinstance(node, ast.AnnAssign) else [])
            names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            for name in names & shared:
                # events.py reads each from the header: NAME = CONSTS["NAME"]
                assert mod.name == "events.py" and ast.unparse(node.value) == \
                    f"CONSTS['{name}']", f"{mod}: {name} defined again ({ast.unparse(node)})"


def test_close_range_flag_is_the_kernels():
    uapi = Path("/usr/include/linux/close_range.h")
    if not uapi.exists():
        pytest.skip("no kernel UAPI headers installed")
    value = re.search(r"#define CLOSE_RANGE_CLOEXEC\s+\(1U << (\d+)\)", uapi.read_text())
    assert value and E.CLOSE_RANGE_CLOEXEC == 1 << int(value.group(1))


@pytest.mark.capture
def test_compiled_kernel_side_agrees_with_what_python_reads(capfd):
    """Compile the real kernel side with a static assertion per shared constant
    (the value Python decodes with): a redefinition anywhere in bpf/ that the
    compiler takes fails here. The procs map BCC built has the fields Python
    parses from struct proc_state (probes.tag writes the root's epoch by name)."""
    from roar.capture import features
    from roar.capture.events import program_text
    from roar.capture.probes import import_bcc

    bcc = import_bcc()
    shared = {n: v for n, v in E.CONSTS.items() if n.startswith(E.SHARED_PREFIXES)}
    asserts = "".join(f'_Static_assert({n} == {v}, "{n}");\n' for n, v in shared.items())

    class _BPF(bcc.BPF):
        def _trace_autoload(self):  # compile only: nothing is loaded or attached
            pass

    cflags = ["-DRINGBUF_PAGES=16", *features.compile_flags(), "-Wno-macro-redefined",
              "-Wno-unused-value"]
    b = _BPF(text=(program_text() + asserts).encode(), cflags=cflags)
    try:
        leaf = b[b"procs"].Leaf
        assert [f[0] for f in leaf._fields_] == E.PROC_STATE_FIELDS
        state = leaf()
        state.epoch = 7
        assert state.epoch == 7 and state.maxfd == 0
    finally:
        b.cleanup()
    capfd.readouterr()
    wrong = asserts.replace(f"FD_READ == {E.FD_READ}", f"FD_READ == {E.FD_READ + 64}")
    with pytest.raises(Exception, match="Failed to compile"):  # the assertion can fail
        _BPF(text=(program_text() + wrong).encode(), cflags=cflags)
    assert '"FD_READ"' in capfd.readouterr().err  # clang names the failed assertion


def _record(type_, len1=0, len2=0, data=b"", **kw):
    vals = dict(ts=1, cgroup=77, tgid=10, tid=11, type=type_, flags=0, fd=3, ret=-100, a0=0,
                a1=0, a2=0, len1=len1, len2=len2)
    vals.update(kw)
    return E.HEADER_STRUCT.pack(*(vals[f] for f in E.FIELDS)) + data


def test_decode_open_with_path():
    path = b"/data/train.csv\0"
    ev = E.decode(_record(E.EV_OPEN, len1=len(path), data=path))
    assert (ev.path, ev.fd, ev.ret, ev.cgroup) == ("/data/train.csv", 3, -100, 77)
    assert E.cgroup_of(_record(E.EV_OPEN)) == 77


def test_decode_two_paths_and_argv():
    a, b = b"/x/old\0", b"/x/new\0"
    data = a + b"\0" * (E.PATH_MAX - len(a)) + b
    ev = E.decode(_record(E.EV_RENAME, len(a), len(b), data))
    assert (ev.path, ev.path2) == ("/x/old", "/x/new")
    fn = b"/usr/bin/python3\0"
    argv = b"python3\0train.py\0--lr\0" + b"0.1\0"
    data = fn + b"\0" * (E.PATH_MAX - len(fn)) + argv
    ev = E.decode(_record(E.EV_EXEC, len(fn), len(argv), data))
    assert ev.argv == ["python3", "train.py", "--lr", "0.1"]
    # the kernel side's layout: the argv right after the filename
    ev = E.decode(_record(E.EV_EXEC, len(fn), len(argv), fn + argv, flags=E.EVF_ARGV_PACKED))
    assert (ev.path, ev.argv) == ("/usr/bin/python3", ["python3", "train.py", "--lr", "0.1"])
    # a filename cut at PATH_MAX: its PATH_MAX - 1 bytes, no NUL, then the argv
    long = b"/" + b"d" * (E.PATH_MAX - 2)
    ev = E.decode(_record(E.EV_EXEC, len(long), 3, long + b"x\0y", flags=E.EVF_ARGV_PACKED))
    assert (ev.path, ev.argv) == (long.decode(), ["x", "y"])


def test_non_utf8_paths_survive():
    raw = b"/d/\xff\xfe.bin\0"
    ev = E.decode(_record(E.EV_OPEN, len1=len(raw), data=raw))
    assert ev.path.encode("utf-8", "surrogateescape") == raw[:-1]


def test_signed_fields():
    rec = _record(E.EV_EXEC_RET, ret=-2)
    assert E.decode(rec).ret == -2
    assert struct.calcsize(E.FORMAT) == E.HEADER_SIZE
