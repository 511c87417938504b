"""The codes of a run record that the capture path itself writes: the run's
status, a file version's role, the reasons a capture is incomplete (codes with
a message table), and the one JSON encoder/decoder of the store and `--json`.

Kept apart from the typed records (roar/record/records.py, which re-exports
all of this) because `roar run` imports it before the workload starts: plain
enums and functions cost next to nothing to import, a dozen dataclasses cost
milliseconds.
"""

from __future__ import annotations

import enum
import re

from roar.capture import jsonc


class RunStatus(str, enum.Enum):
    """Where a run stands. A str, so documents and comparisons with the
    stored strings keep working."""

    RUNNING = "running"  # written at start; stays so only while roar records it
    FINISHED = "finished"
    INTERRUPTED = "interrupted"  # a signal stopped it, a budget stop, or roar was killed

    def __str__(self) -> str:
        return self.value


class Role(str, enum.Enum):
    """What a run did with a file version (FileVersion.role)."""

    INPUT = "input"  # read before the run wrote it: hashed at the first read-open
    OUTPUT = "output"  # written and left behind: hashed at the end
    INTERNAL = "internal"  # read back after the run itself wrote it
    TEMPORARY = "temporary"  # written, then deleted by the run
    LOG = "log"  # the stdout/stderr file the run inherited (`> train.log`): bytes, no hash
    IPC = "ipc"  # shared memory the run made for itself (/dev/shm): never input or output
    ENV = "env"  # interpreter, libraries, site-packages: summarised as packages
    PSEUDO = "pseudo"  # /proc, /dev, /sys

    def __str__(self) -> str:
        return self.value


class Reason(str, enum.Enum):
    """Why a run's capture is incomplete: a code with parameters, stored as
    {"code": ..., **params}; MESSAGES turns it into the sentence shown.
    Programs (the late-hash filler, queries) test codes, never sentences."""

    LOST_EVENTS = "lost_events"  # n
    HASH_PENDING = "hash_pending"  # n
    UNHASHED_INPUTS = "unhashed_inputs"  # n
    UNHASHED_LATE = "unhashed_late"  # n (found by the background filler)
    MODEL_PROBLEM = "model_problem"  # what, n
    IO_URING = "io_uring"
    UNTRACED_FD = "untraced_fd"  # n
    LEFT_RUN = "left_run"  # n
    UNINSPECTED_NET = "uninspected_net"  # address, port (record/remote.py)
    INTERRUPTED = "interrupted"
    NOT_FINISHED = "not_finished"  # still marked running, its roar gone
    ROARD_DIED = "roard_died"  # roard went away mid-run: the client stopped the workload
    RECORDS_DROPPED = "records_dropped"  # n, why: roard's per-run spool cap (daemon.py)
    STORE_FAILED = "store_failed"  # why: roar run could not store it; roard rebuilt it
    STORE_DAMAGED = "store_damaged"  # why: the hasher could not read the store's cache
    NOTE = "note"  # text: a sentence from the session or the request gate
    TEXT = "text"  # text: a reason stored as a sentence by an older roar

    def __str__(self) -> str:
        return self.value


MESSAGES = {
    Reason.LOST_EVENTS: "{n} kernel events lost (ring buffer full)",
    Reason.HASH_PENDING: "{n} content hash(es) still being computed "
                         "(filled in by a background job)",
    Reason.UNHASHED_INPUTS: "{n} input(s) without a verified content hash",
    Reason.UNHASHED_LATE: "{n} input(s) without a verified content hash (hashed after the run)",
    Reason.MODEL_PROBLEM: "{what} ({n}x)",
    Reason.IO_URING: "io_uring used: file I/O submitted through it is not traced",
    Reason.UNTRACED_FD: "{n} file(s) read or written through an fd whose open was not seen "
                        "(received from another process): their paths are unknown",
    Reason.LEFT_RUN: "{n} process(es) left the run's cgroup (moved out, or into a run "
                     "started inside this one): what they did afterwards is not in this run",
    Reason.UNINSPECTED_NET: "uninspected network I/O with {address}:{port}: bytes received "
                            "from it may be inputs",
    Reason.INTERRUPTED: "run was interrupted",
    Reason.NOT_FINISHED: "run did not finish (roar was stopped)",
    Reason.ROARD_DIED: "roard died before the run ended: its workload was stopped (a "
                       "workload does not outlive its recorder)",
    Reason.RECORDS_DROPPED: "{n} kernel records dropped by roard ({why})",
    Reason.STORE_FAILED: "roar run could not store the run ({why}): rebuilt by roard from "
                         "its spool",
    Reason.STORE_DAMAGED: "the store could not be read while hashing ({why}): hashes were "
                          "taken without its cache; the store may be damaged",
    Reason.NOTE: "{text}",
    Reason.TEXT: "{text}",
}


def reason(code: Reason, **params) -> dict:
    """A stored reason: its code and the parameters its message needs."""
    return {"code": code.value, **params}


def message(r: dict) -> str:
    """The sentence of a stored reason."""
    return MESSAGES[Reason(r["code"])].format(**r)


def messages(reasons: list[dict]) -> list[str]:
    return [message(r) for r in reasons]


def _template_re(template: str) -> re.Pattern:
    out, pos = "", 0
    for m in re.finditer(r"\{(\w+)\}", template):
        out += re.escape(template[pos:m.start()])
        out += rf"(?P<{m[1]}>\d+)" if m[1] == "n" else rf"(?P<{m[1]}>.+)"
        pos = m.end()
    return re.compile(out + re.escape(template[pos:]))


_LEGACY = None


def from_sentence(text: str) -> dict:
    """The reason behind a sentence stored by a roar that had no codes (the
    same templates wrote them); TEXT when none matches."""
    global _LEGACY
    if _LEGACY is None:
        _LEGACY = [(code, _template_re(t)) for code, t in MESSAGES.items()
                   if code not in (Reason.NOTE, Reason.TEXT, Reason.MODEL_PROBLEM)]
        _LEGACY.append((Reason.MODEL_PROBLEM, _template_re(MESSAGES[Reason.MODEL_PROBLEM])))
    for code, rx in _LEGACY:
        m = rx.fullmatch(text)
        if m:
            return reason(code, **{k: int(v) if k == "n" else v
                                   for k, v in m.groupdict().items()})
    return reason(Reason.TEXT, text=text)


# -- one encoder -------------------------------------------------------------------------

_SEPARATORS = (",", ":")


# The same bytes, compiled (roar/record/_cmodel.c encode_json: None for what it
# leaves to the json module); set by roar/record/runmodel.py when it loads the
# compiled module (`roar run`, ~2 encodings per traced file). The query commands
# encode little and do not load it.
compiled_encode = None


def encode(obj) -> bytes:
    """A record (or a document, or a list of them) as stored: compact,
    ASCII-only JSON (paths that are not UTF-8 are kept as \\udcXX escapes)."""
    if type(obj) is not dict:
        if hasattr(obj, "to_doc"):  # a typed record (roar.record.records)
            obj = obj.to_doc()
        elif isinstance(obj, list) and obj and hasattr(obj[0], "to_doc"):
            obj = [r.to_doc() for r in obj]
    if compiled_encode is not None:
        out = compiled_encode(obj)
        if out is not None:
            return out
    return jsonc.dumps(obj, separators=_SEPARATORS).encode()


def decode(raw: bytes | memoryview | str):
    """The document behind encode()'s bytes (records are typed by the caller:
    Run.from_doc and so on)."""
    return jsonc.loads(bytes(raw) if not isinstance(raw, str) else raw)


def to_json(obj):
    """A record, a list of them, or a document holding them, as plain JSON
    values (what `--json` prints)."""
    if hasattr(obj, "to_doc"):
        return obj.to_doc()
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, list | tuple):
        return [to_json(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    return obj
