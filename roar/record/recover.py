"""Rebuilding a run whose `roar run` client died: roard kept every record
of the run in a spool; this replays it through the same recorder, as the
client's user, into the client's store. Hashes are taken now, so each is
checked against the file's ctime (see RunRecorder) and may be unverified."""

from __future__ import annotations

import json

from roar.capture import protocol
from roar.record.codes import Reason, reason
from roar.record.recorder import RunRecorder
from roar.record.store import Store

NOTE = "roar run was killed before it stored the run: rebuilt by roard from its spool"


def recover_from(spool, home: str, run_id: str, root_pid: int,
                 root_fds: dict[int, str], notes: list[str] | None = None,
                 cause: dict | None = None) -> dict:
    """Replay an open spool file into the run `run_id` of the store at home;
    notes: what roard knows of why the client died (on the run's reasons);
    cause: why the client did not store the run, when it said (a coded
    reason), instead of NOTE."""
    with Store(home) as store:
        run = store.get_run(run_id)
        if run is None:
            return {"ok": False, "error": f"run {run_id} is not in {home}"}
        if run.get("status") != "running":
            return {"ok": True, "note": "the client had stored the run already"}
        recorder = RunRecorder(store, run, root_pid, root_fds)
        end: dict = {}
        found: list = [cause or NOTE]
        with spool:
            while True:
                try:
                    frame = protocol.read_frame(spool)
                except protocol.ProtocolError as e:  # cut short (a full disk)
                    found.append(f"roard's spool of the run ends early: {e}")
                    break
                if frame is None:
                    break
                kind, payload = frame
                if kind == protocol.EVENT:
                    recorder.feed_raw(payload)
                elif kind == protocol.JSON:  # (a barrier, B, only ordered the live stream)
                    end = json.loads(payload)
        if not end:
            found.append("roard's spool of the run has no end: records may be missing")
        if end.get("dropped"):
            found.append(reason(Reason.RECORDS_DROPPED, n=int(end["dropped"]),
                                why=str(end.get("dropped_why") or "its spool was full")))
        if end.get("unspooled"):
            found.append(reason(Reason.RECORDS_DROPPED, n=int(end["unspooled"]),
                                why=f"not in roard's spool: {end.get('unspooled_why')}; "
                                    f"only the roar run that died had them"))
        done = recorder.finish(None, True, int(end.get("lost", 0)), [*found, *(notes or [])])
        return {"ok": True, "run": done["id"], "complete": done["complete"]}
