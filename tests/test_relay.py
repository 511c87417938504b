"""roard's compiled relay (roar/capture/_relay.c): ring-buffer records routed
by run cgroup into each run's buffer, framed as the protocol frames events, in
order; records of no known run counted. The capture tests run it for real
(every roar run there goes through roard)."""

from __future__ import annotations

import io
import threading

from roar.capture._relay import Router

from roar.capture import events as E
from roar.capture import protocol


def record(cgroup: int, seq: int, path: str = "/data/x") -> bytes:
    data = path.encode() + b"\0"
    return E.HEADER_STRUCT.pack(seq, cgroup, 7, 7, E.EV_OPEN, 0, 3, -100, 0, 0, 0,
                                len(data), 0) + data


def frames(blob: bytes) -> list[bytes]:
    f, out = io.BytesIO(blob), []
    while (fr := protocol.read_frame(f)) is not None:
        kind, payload = fr
        assert kind == protocol.EVENT
        out.append(payload)
    return out


def test_records_are_routed_by_cgroup_in_order_and_framed():
    r = Router(protocol.EVENT)
    r.add(11)
    r.add(22)
    sent = {11: [], 22: []}
    for i in range(1000):
        cg = (11, 22, 33)[i % 3]
        raw = record(cg, i, f"/data/f{i}")
        r.feed(raw)
        if cg in sent:
            sent[cg].append(raw)
    assert r.unrouted == 333  # every third record is cgroup 33's: nobody's
    assert sorted(r.ready()) == [11, 22]
    assert r.pending(11) == sum(len(x) + protocol.FRAME.size for x in sent[11])
    first, n = r.take(11)
    assert n == len(sent[11]) and r.pending(11) == 0 and r.take(11) == (b"", 0)
    r.feed(record(11, 5000))
    rest, n = r.remove(11)
    assert n == 1 and frames(first) + frames(rest) == sent[11] + [record(11, 5000)]
    r.feed(record(11, 5001))  # removed: no longer routed
    assert r.unrouted == 334 and r.take(11) == (b"", 0)
    assert frames(r.remove(22)[0]) == sent[22]
    assert r.dropped(22) == 0


def test_a_full_buffer_drops_and_counts_never_grows():
    """roard's memory per run is bounded (QUEUE_MAX records waiting): past it
    records are dropped and counted on the run (stored incomplete)."""
    r = Router(protocol.EVENT, 100)
    r.add(1)
    for i in range(250):
        r.feed(record(1, i))
    blob, n = r.take(1)
    assert n == 100 and r.dropped(1) == 150
    assert [E.HEADER_STRUCT.unpack_from(x)[0] for x in frames(blob)] == list(range(100))
    r.feed(record(1, 999))  # room again once taken
    assert r.take(1)[1] == 1 and r.dropped(1) == 150


def test_short_records_are_unrouted_not_read_past_their_end():
    r = Router(protocol.EVENT)
    r.add(0)
    r.feed(b"\0" * 10)
    assert r.unrouted == 1 and r.take(0) == (b"", 0)


def test_routing_from_another_thread_while_taking():
    """libbcc calls the router from the polling thread while senders take."""
    r = Router(protocol.EVENT)
    r.add(5)
    n = 20000
    got: list[bytes] = []

    def produce():
        for i in range(n):
            r.feed(record(5, i))

    t = threading.Thread(target=produce)
    t.start()
    while t.is_alive() or r.pending(5):
        got += frames(r.take(5)[0])
    t.join()
    got += frames(r.remove(5)[0])
    assert [E.HEADER_STRUCT.unpack_from(x)[0] for x in got] == list(range(n))


def test_the_callback_is_a_c_function_for_libbcc():
    r = Router(protocol.EVENT)
    assert r.callback_address and r.context_address == id(r)


def test_every_run_with_records_waiting_is_ready():
    """roard wakes the spooler of each run ready() names: all of them, however
    many runs are active (one left out waits for its timeout while its buffer
    fills towards the cap)."""
    r = Router(protocol.EVENT)
    for cg in range(1, 301):
        r.add(cg)
    for cg in range(1, 301, 2):  # half of them have records
        r.feed(record(cg, cg))
    assert sorted(r.ready()) == list(range(1, 301, 2))
    for cg in range(1, 301, 2):
        r.take(cg)
    assert r.ready() == []
