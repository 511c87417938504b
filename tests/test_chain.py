"""roard's tamper-evident chain file (roar/record/chain.py)."""

from __future__ import annotations

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
