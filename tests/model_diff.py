"""The differential oracle of the process model: model.py (the reference) and
the compiled model (roar/record/_cmodel.c) fed the same event stream must end
in the same state, every piece of it the recorder, the audit tracker or attach
can read. Used by tests/test_compiled_model.py (generated streams) and by every
capture test through the `roar` fixture (the streams of real runs, kept with
ROAR_KEEP_EVENTS)."""

from __future__ import annotations

from pathlib import Path

from roar.capture import events as E
from roar.record import model as pymodel

try:
    from roar.record import _cmodel
except ImportError:  # tests/conftest.py says why, and fails CI
    _cmodel = None


def recording_submit():
    """A submit_hash that records its calls and returns a token naming the call."""
    calls: list[tuple] = []

    def submit(path, birth=False):
        calls.append((path, birth))
        return ("job", len(calls), path, birth)

    return submit, calls


def state(m) -> dict:
    """Everything observable in a model, with object identities (shared open
    file descriptions, shared fd tables) as numbers in order of appearance."""
    files: dict[int, int] = {}
    tables: dict[int, int] = {}

    def fid(obj, ids):
        return ids.setdefault(id(obj), len(ids))

    def table(p):
        if not isinstance(p.fds, dict):
            return repr(p.fds)
        return (fid(p.fds, tables), {
            fd: (fid(e.file, files), e.file.path, e.file.flags, e.file.tmpfile_dir,
                 e.file.tmpfile_written, e.cloexec) for fd, e in p.fds.items()})

    def pfile(pf):
        return (pf.path, pf.read, pf.written, pf.mapped, pf.bytes_read, pf.bytes_written,
                pf.read_calls, pf.write_calls, pf.bytes_exact, pf.mode)

    return {
        "procs": [(p.pid, p.key, p.parent, p.ppid, list(p.argv), p.exe, p.cwd, p.start_ts,
                   p.end_ts, p.exit_code, p.signal, p.threads, p.execs, p.argv_incomplete,
                   p.pending_exec, [(k, pfile(pf)) for k, pf in p.files.items()], table(p))
                  for p in m.procs],
        "live": [(pid, p.key) for pid, p in m.live.items()],
        "root": m.root.key,
        "paths": [(k, s.path, s.first, s.read, s.written, s.deleted, s.modified_ts,
                   s.create_ts, s.early_hash, s.early_ts, list(s.renamed_from))
                  for k, s in m.paths.items()],
        "by_path": [(k, [(p.key, pfile(pf)) for p, pf in v]) for k, v in m.by_path.items()],
        "new_paths": list(m.new_paths),
        "dirs": sorted(m.dirs),
        "touched": sorted(m.touched),
        "connects": m.connects,
        "remote": [dict(vars(x)) for x in m.remote.exchanges],
        "problems": dict(m.problems),
        "untraced_fds": sorted(m.untraced_fds),
        "exec_closed": sorted(m.exec_closed),
        "still_running": m.still_running(),
        "io_uring": m.io_uring,
        "events": m.events,
    }


def first_difference(a: dict, b: dict) -> str | None:
    for key in a:
        if a[key] != b[key]:
            x, y = a[key], b[key]
            if isinstance(x, list) and isinstance(y, list):
                for i, (u, v) in enumerate(zip(x, y, strict=False)):
                    if u != v:
                        return f"{key}[{i}]: python {u!r} != compiled {v!r}"
                return f"{key}: python has {len(x)} entries, compiled {len(y)}"
            return f"{key}: python {x!r} != compiled {y!r}"
    return None


def replay_both(seed: dict, raws: list[bytes]) -> tuple[dict, dict, list, list]:
    """Both models over one kept stream, each fed as `roar run` feeds it (raw
    records; model.py after events.decode). Exceptions are what the run would
    count as internal errors: both must raise the same, on the same records."""
    out = []
    for impl in ("python", "compiled"):
        submit, calls = recording_submit()
        args = (seed["root_pid"], seed["cwd"], seed["argv"], seed["root_fds"],
                seed["start_ns"], submit)
        errors = []
        if impl == "python":
            m = pymodel.RunModel(*args)

            def feed(raw, m=m):
                m.feed(E.decode(raw))
        else:
            m = _cmodel.RunModel(*args)
            feed = m.feed_raw
        for i, raw in enumerate(raws):
            try:
                feed(raw)
            except Exception as e:  # noqa: BLE001 - compared between the two
                errors.append((i, type(e).__name__))
        out.append((state(m), calls, errors))
    (a, ca, ea), (b, cb, eb) = out
    return a, b, [ca, ea], [cb, eb]


def check_stream(path: Path) -> None:
    kept = E.read_stream(path)
    if kept is None:  # its client was killed before it wrote the seed
        return
    seed, raws = kept
    a, b, (ca, ea), (cb, eb) = replay_both(seed, raws)
    assert ea == eb, f"{path.name}: errors differ: python {ea[:5]} compiled {eb[:5]}"
    assert ca == cb, f"{path.name}: hash submissions differ"
    diff = first_difference(a, b)
    assert diff is None, f"{path.name} ({len(raws)} records): {diff}"
