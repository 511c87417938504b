"""roard's tamper-evident chain file (roar/record/chain.py)."""

from __future__ import annotations

import pytest
import xxhash

from roar.record import chain


def _h(*parts) -> str:
    return xxhash.xxh3_128("/".join(map(str, parts)).encode()).hexdigest()


def test_the_chain_appends_from_its_last_entry(tmp_path):
    """roard's chain file (roar/record/chain.py) is appended from its last line,
    not parsed whole on every run: the same entries as parsing it whole gives,
    long lines and a first line included."""
    f = chain.ChainFile(tmp_path, 1000)
    assert f.last() is None
    made = []
    for i in range(30):
        pending = [f"/p/{'x' * (i * 700)}"] if i % 5 == 4 else []  # lines past 4 KiB
        made.append(f.append("/home/u/.roar", f"RUN{i:03d}", _h("d", i), pending))
        assert f.last() == made[-1]
    entries = f.entries()
    assert entries == made and [e["seq"] for e in entries] == list(range(30))
    prev = chain.GENESIS
    for e in entries:  # each head chains the one before
        assert e["head"] == chain._head(prev, e["home"], e["run"], e["digest"])
        prev = e["head"]


def _stored_run(store, files: list[dict], **extra) -> dict:
    from roar.record.ids import new_run_id

    run = {"id": new_run_id(), "status": "finished", "command": ["train"], "complete": True,
           "reasons": [], "incomplete_reasons": [], "counts": {"inputs": len(files)}, **extra}
    store.put_run(run)
    procs = [{"key": "k1", "pid": 1, "files": [{"path": f["path"], "kind": "data", "mode": "r",
                                                 "bytes_read": 1, "bytes_written": 0,
                                                 "read_calls": 1, "write_calls": 0}
                                                for f in files]}]
    store.finish_run(run, files, procs)
    return run


def _file(path: str, h: str | None, status: str = "ok") -> dict:
    return {"path": path, "kind": "data", "bytes_read": 5, "bytes_written": 0,
            "processes": ["k1"], "role": "input", "mode": "r", "hash": h,
            "size": None if h is None else 5, "status": status}


def test_verify_checks_both_digest_versions_and_late_hashes_never_read_as_edits(tmp_path):
    """A run with no pending hash is chained by the digest of its records' stored
    bytes (version 2); one with pending hashes, and every entry an older roar
    chained, by version 1's canonical JSON. `roar verify` checks each; a late
    hash filled in is not an edit; an edit is found under either version,
    version 2 also in a field version 1 never covered (bytes read)."""
    from roar.record.codes import Reason, reason
    from roar.record.store import Store

    with Store(tmp_path / "home") as store:
        home = str(store.home.resolve())
        cf = chain.ChainFile(tmp_path / "state", 0)
        new = _stored_run(store, [_file("/d/a", _h("a")), _file("/d/b", _h("b"))])
        late = _stored_run(store, [_file("/d/a", _h("a")), _file("/d/big", None, "pending")],
                           complete=False, reasons=[reason(Reason.HASH_PENDING, n=1)])
        old = _stored_run(store, [_file("/d/c", _h("c"))])
        entries = []
        dig, pending = chain.run_digest(store, new["id"])
        assert pending == [] and dig == chain.digest_stored(store.get_run(new["id"]),
                                                            *store.raw_records(new["id"]))
        entries.append(cf.append(home, new["id"], dig, pending))
        dig, pending = chain.run_digest(store, late["id"])
        assert pending == ["/d/big"]
        entries.append(cf.append(home, late["id"], dig, pending))
        # as a roar before version 2 chained it
        v1 = chain.digest(store.get_run(old["id"]), store.run_files(old["id"]),
                          store.run_procs(old["id"]), [])
        assert v1 != chain.run_digest(store, old["id"])[0]
        entries.append(cf.append(home, old["id"], v1, []))
        assert chain.verify(store, entries) == {"ok": True, "checked": 3, "problems": []}

        # the background job fills in the late hash (roar/record/pending.py does this)
        files = store.run_files(late["id"])
        files[1].update(hash=_h("big"), size=9, status="ok")
        store.index_files(late["id"], files)
        store.replace_reasons(late["id"], {Reason.HASH_PENDING}, [])
        assert store.get_run(late["id"])["complete"] is True
        assert chain.verify(store, entries)["ok"]

        files = store.run_files(new["id"])
        files[0]["bytes_read"] = 4  # not in version 1's digest, in version 2's
        store.index_files(new["id"], files)
        files = store.run_files(old["id"])
        files[0]["hash"] = _h("other")
        store.index_files(old["id"], files)
        got = chain.verify(store, entries)
        assert not got["ok"] and sorted(p["run"] for p in got["problems"]) == sorted(
            [new["id"], old["id"]])


def _ended_session(sock, run_id: str):
    """A DaemonSession of roard at sock whose run (a `sleep`, ended at once)
    has ended and whose every record has been read: ready for `stored`."""
    import subprocess

    from roar.capture.session import DaemonSession

    proc = subprocess.Popen(["sleep", "30"])
    s = DaemonSession(sock)
    try:
        s.begin(proc.pid, run_id, "/nonexistent/home")
        s.started()
    finally:
        proc.kill()
        proc.wait()
    s.root_exited(0)
    for _ in s.records():
        pass
    assert s.end is not None and not s.died
    return s


def _stored_with(roard, req: dict) -> dict | None:
    """roard's answer to the chain op req handed with an ended run's `stored`."""
    s = _ended_session(roard, req["run_id"])
    try:
        s.stored(req)
        return s.chained()
    finally:
        s.close()


@pytest.mark.capture
def test_a_run_is_chained_by_roard_on_the_run_s_own_connection(roard, monkeypatch):
    """roar run hands roard the run's chain op with its `stored` word: roard
    appends it before it closes the run's connection and answers there (no
    second connection, thread and round trip per run). A refused op is
    answered there too, and said by chain.appended as the separate op's was."""
    monkeypatch.setenv("ROAR_SOCKET", str(roard))
    home = "/var/tmp/roar-chain-test-home"
    req = {"op": "chain", "home": home, "run_id": "CHAINSAME1", "digest": _h("x") * 2,
           "pending": []}
    reply = _stored_with(roard, req)
    assert reply is not None and reply["ok"], reply
    assert chain.appended(req, reply) is None
    last = chain.ChainFile(roard.parent / "state", 0).last()
    assert last["run"] == "CHAINSAME1" and last["seq"] == reply["seq"]
    assert last["head"] == reply["head"] and last["digest"] == req["digest"]

    bad = {**req, "run_id": "CHAINSAME2", "digest": "short"}
    reply = _stored_with(roard, bad)
    assert reply is not None and not reply["ok"]
    assert "digest" in chain.appended(bad, reply)
    assert chain.ChainFile(roard.parent / "state", 0).last()["run"] == "CHAINSAME1"


@pytest.mark.capture
def test_a_chain_op_roard_did_not_answer_on_the_run_s_connection_is_asked_again(
        roard, monkeypatch, tmp_path):
    """A `stored` without a chain op (a client's that had none, or one too long
    for a request line) gets no answer: chained() says None and chain.appended
    asks roard on a connection of its own, as before; with no roard at all,
    root writes the chain itself."""
    monkeypatch.setenv("ROAR_SOCKET", str(roard))
    s = _ended_session(roard, "CHAINSEP1")
    try:
        long = {"op": "chain", "home": "/h", "run_id": "CHAINSEP1", "digest": _h("y") * 2,
                "pending": ["/p" * 40000]}
        s.stored(long)  # past protocol.MAX_REQUEST: sent without it
        assert s.chained(timeout=5) is None
    finally:
        s.close()
    req = {**long, "pending": []}
    assert chain.appended(req, None) is None
    assert chain.ChainFile(roard.parent / "state", 0).last()["run"] == "CHAINSEP1"
    monkeypatch.setenv("ROAR_SOCKET", str(tmp_path / "none.sock"))
    monkeypatch.setenv("ROARD_STATE_DIR", str(tmp_path / "state"))
    assert chain.appended({**req, "run_id": "CHAINSEP2"}, None) is None
    assert chain.ChainFile(tmp_path / "state", 0).last()["run"] == "CHAINSEP2"


def test_stored_digests_are_the_stored_bytes_digests_with_or_without_a_thread(monkeypatch):
    """chain.StoredDigests hashes the stored bytes in a bare thread while they are
    written (its end a lock: no wait for the thread to start); with no thread to
    be had it hashes when asked. The same parts either way."""
    import _thread
    import hashlib

    files_raw, procs_raw = b"[" + b"x" * 3_000_000 + b"]", b"[{}]"
    want = hashlib.sha256(files_raw).digest(), hashlib.sha256(procs_raw).digest()
    got = chain.StoredDigests(files_raw, procs_raw)
    assert got.parts() == want and got.parts() == want

    def no_thread(*a):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(_thread, "start_new_thread", no_thread)
    assert chain.StoredDigests(files_raw, procs_raw).parts() == want
