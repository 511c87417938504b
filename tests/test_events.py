"""The decoder is derived from bpf/roar_event.h; check it decodes what the
kernel side lays out."""

from __future__ import annotations

import struct

from roar.capture import events as E


def test_layout_parsed_from_header():
    assert E.FIELDS[:4] == ["ts", "cgroup", "tgid", "tid"]
    assert E.HEADER_SIZE == 72 and E.CGROUP_OFFSET == 8
    assert E.EVENT_NAMES[E.EV_OPEN] == "open"


def test_every_event_constant_is_named_in_the_module_with_the_headers_value():
    import re
    from pathlib import Path

    text = E.HEADER.read_text()
    defined = dict(re.findall(r"^#define\s+(EVF?_\w+)\s+(\w+)", text, re.M))
    assert defined and "EV_OPEN" in defined
    source = Path(E.__file__).read_text()
    for name, value in defined.items():
        assert getattr(E, name) == int(value, 0), name
        assert re.search(rf"^{name} = ", source, re.M), f"{name}: not greppable in events.py"


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


def test_non_utf8_paths_survive():
    raw = b"/d/\xff\xfe.bin\0"
    ev = E.decode(_record(E.EV_OPEN, len1=len(raw), data=raw))
    assert ev.path.encode("utf-8", "surrogateescape") == raw[:-1]


def test_signed_fields():
    rec = _record(E.EV_EXEC_RET, ret=-2)
    assert E.decode(rec).ret == -2
    assert struct.calcsize(E.FORMAT) == E.HEADER_SIZE
