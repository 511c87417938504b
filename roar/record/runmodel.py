"""The process model `roar run` uses: the compiled one (roar/record/_cmodel.c,
built by `pip install`), or model.py's when forced by ROAR_PYTHON_MODEL=1.

model.py is the reference the compiled model is tested against
(tests/test_compiled_model.py); it runs a run only when forced, or when the
extension was not built, which every run then says (docs/compiled.md).
"""

from __future__ import annotations

import os

from roar.capture.events import HEADER_NAME, decode

FORCED_PYTHON = os.environ.get("ROAR_PYTHON_MODEL", "") not in ("", "0")
_FALLBACK = ("this run used the Python model, several times slower per event; build it with "
             "`pip install -e .` (docs/compiled.md)")


def _stale(so: str) -> bool:
    """A source checkout whose C source (or event header) changed after the
    extension was built: it would model the events of an older roar."""
    src = os.path.join(os.path.dirname(__file__), "_cmodel.c")
    try:
        built = os.stat(so).st_mtime
        return max(os.stat(src).st_mtime, os.stat(HEADER_NAME).st_mtime) > built
    except OSError:  # an installed roar: no sources beside it
        return False


try:
    from roar.record import _cmodel
except ImportError as e:  # not built (a source checkout without `pip install -e .`)
    _cmodel = None
    NOT_BUILT: str | None = f"the compiled event model is not built ({e}): {_FALLBACK}"
else:
    NOT_BUILT = None
    if _stale(_cmodel.__file__):
        _cmodel = None
        NOT_BUILT = (f"the compiled event model is older than roar/record/_cmodel.c: "
                     f"{_FALLBACK}")

COMPILED = _cmodel is not None and not FORCED_PYTHON

if _cmodel is not None:  # the store's JSON encoder, compiled (the same bytes)
    from roar.record import codes

    codes.compiled_encode = _cmodel.encode_json

# _cmodel.c's builders of settled inputs' records (recorder.py): one, prebuild's
# loop, and the end's loop over the records built ahead; the loop over a
# process's entries built ahead and the check of its record built ahead, and a
# process's whole record from entries built ahead or remembered
settled_input = settled_inputs = gather_built = proc_files_built = sizes_same = None
proc_record_built = None
tally_records = index_rows = written_or_created = keys_not_in = ledger_sorted = None
Ledger = ledger_join = ledger_size = ledger_sort = ledger_spoil = None
Partial = partial_extend = partial_spoil = None
if COMPILED:
    from roar.record._cmodel import (  # noqa: F401
        FdEntry,
        Ledger,
        OpenFile,
        Partial,
        RunModel,
        gather_built,
        index_rows,
        keys_not_in,
        ledger_join,
        ledger_size,
        ledger_sort,
        ledger_sorted,
        ledger_spoil,
        partial_extend,
        partial_spoil,
        proc_files_built,
        proc_record_built,
        settled_input,
        settled_inputs,
        sizes_same,
        tally_records,
        written_or_created,
    )
else:
    from roar.record.model import FdEntry, OpenFile, RunModel


def new_model(root_pid: int, cwd: str, argv: list[str], root_fds: dict[int, str],
              start_ns: int, hasher=None):
    """A model of one run, and the function its raw records are fed to. With a
    hasher, inputs' hash jobs go to it; the compiled model answers those whose
    file state the stat cache knows in its own thread."""
    submit = hasher.submit_input if hasher is not None else None
    if COMPILED:
        m = RunModel(root_pid, cwd, argv, root_fds, start_ns, submit,
                     hasher.model_lookup if hasher is not None else None)
        return m, m.feed_raw
    m = RunModel(root_pid, cwd, argv, root_fds, start_ns, submit)
    feed = m.feed

    def feed_raw(raw: bytes) -> None:
        feed(decode(raw))

    return m, feed_raw


__all__ = ["COMPILED", "NOT_BUILT", "FORCED_PYTHON", "FdEntry", "OpenFile", "RunModel",
           "new_model"]
