"""roar run's consumer hands roard's event frames to the compiled model in one
call per read (_cmodel.c feed_frames, capture/session.py DaemonSession._records
with a sink) instead of one Python call per record: the model must end in the
same state, barriers must fire at the same places in the stream, and a record
the model raises on must be reported where feeding records one by one reports
it, with the records after it still fed."""

from __future__ import annotations

import io
import socket
import threading

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings
from model_diff import state
from test_compiled_model import SEED, raw_record, streams

from roar.capture import protocol
from roar.capture.session import DaemonSession
from roar.record import _cmodel


class _Chunks(io.RawIOBase):
    """roard's socket: the stream arrives in reads of the given sizes."""

    def __init__(self, data: bytes, cuts: list[int]):
        self.data, self.cuts, self.pos = data, list(cuts), 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self.cuts.pop(0) if self.cuts else len(b), len(self.data) - self.pos)
        b[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


def _model():
    return _cmodel.RunModel(SEED["root_pid"], SEED["cwd"], SEED["argv"], SEED["root_fds"],
                            SEED["start_ns"], None)


def _session(data: bytes, cuts: list[int], log: list) -> DaemonSession:
    s = DaemonSession.__new__(DaemonSession)
    s.rfile = io.BufferedReader(_Chunks(data, cuts), 1 << 16)
    # the socket the session asks whether more is waiting after a read: nothing
    s.sock, s.peer = socket.socketpair()
    s.end = None
    s._send = threading.Lock()
    s._ending = False
    s._barriers = {}
    return s


def _through_session(data: bytes, cuts: list[int], barriers: list[int], use_sink: bool):
    m, log = _model(), []
    s = _session(data, cuts, log)
    for k in barriers:
        s._barriers[k] = lambda k=k: log.append(("barrier", k))
    try:
        for item in s.records(m.feed_frames if use_sink else None):
            if item is None:
                continue
            if isinstance(item, BaseException):
                log.append(("error", type(item).__name__))
            elif item.__class__ is not bytes:
                item()
            else:
                try:
                    m.feed_raw(item)
                except Exception as e:  # noqa: BLE001 - what roar run counts, compared
                    log.append(("error", type(e).__name__))
    finally:
        s.sock.close()
        s.peer.close()
    return state(m), log, s.end


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=streams(), cuts=st.lists(st.integers(1, 300), max_size=40),
       barriers=st.lists(st.integers(0, 90), max_size=4, unique=True),
       short=st.lists(st.integers(0, 90), max_size=2))
def test_frames_fed_in_c_are_records_fed_one_by_one(events, cuts, barriers, short):
    raws = [raw_record(*e[:-1], **e[-1]) for e in events]
    for i in short:  # a record too short to decode: the model raises on it
        raws.insert(min(i, len(raws)), b"\x01\x02\x03")
    data, ref_log, m = b"", [], _model()
    for i, raw in enumerate(raws):
        if i in barriers:
            data += protocol.encode_barrier(i)
            ref_log.append(("barrier", i))
        data += protocol.encode_events([raw])
        try:
            m.feed_raw(raw)
        except Exception as e:  # noqa: BLE001
            ref_log.append(("error", type(e).__name__))
    data += protocol.encode_json({"lost": 0})
    ref_log += [("barrier", k) for k in barriers if k >= len(raws)]  # never reached: fired
    ref = state(m)                                                    # at the end
    for use_sink in (False, True):
        got, log, end = _through_session(data, cuts, barriers, use_sink)
        assert end == {"lost": 0}
        assert log == ref_log
        assert got == ref


def test_a_frame_too_large_is_left_to_the_session():
    """feed_frames stops at a frame longer than the protocol allows; the session
    then refuses the stream as it always did."""
    m = _model()
    big = protocol.FRAME.pack(protocol.EVENT, protocol.MAX_FRAME + 1)
    assert m.feed_frames(big + b"x" * 10, 0, protocol.MAX_FRAME) == (0, None)
    raw = raw_record(10, 100, 1, 0, 3, -100, 0, 0, 0, "/w/a")
    one = protocol.encode_events([raw])
    assert m.feed_frames(one + one[:7], 0, protocol.MAX_FRAME) == (len(one), None)
    assert m.events == 1
