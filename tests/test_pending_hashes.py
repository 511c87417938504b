"""Huge inputs: their hash never holds up the end of a run; a pending hash is
filled in later, or marked unverified when the file changed."""

from __future__ import annotations

import os
import signal
import time

import pytest


def _pending_filler(run_id: str) -> int | None:
    """The pid of the background job hashing a run's pending files, if running."""
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"roar.cli.fill" in argv and run_id.encode() in argv:
            return int(pid)
    return None


def _zeros_hash(size: int) -> str:
    import xxhash

    h = xxhash.xxh3_128()
    zeros = bytes(1 << 24)
    for _ in range(size // len(zeros)):
        h.update(zeros)
    return h.hexdigest()


@pytest.mark.capture
def test_huge_input_hash_does_not_hold_up_the_end_of_the_run(roar):
    """A 20 GiB (sparse) input read in part: the end of `roar run` waits for its hash
    at most ROAR_HASH_WAIT seconds (default 5; 2 here) and the record says pending."""
    big = roar.cwd / "big"
    with open(big, "wb") as f:
        f.truncate(20 << 30)
    bound = 2.0
    t0 = time.monotonic()
    p = roar("run", "--", "sh", "-c", "head -c 1M big > /dev/null",
             env=roar.env(ROAR_HASH_WAIT=str(bound), ROAR_TIMING="1"))
    wall = time.monotonic() - t0
    run_id = roar.json("log", "-n", "1")[0]["id"]
    filler = _pending_filler(run_id)
    if filler is not None:  # hashing 20 GiB is not this test's business
        os.kill(filler, signal.SIGKILL)
    waited = float(next(line.split()[-1].rstrip("s") for line in p.stderr.splitlines()
                        if "waits for hashes" in line))
    print(f"\n[huge] the end of roar run waited {waited:.2f}s for the hash of a 20 GiB "
          f"input (bound {bound:g}s); roar run took {wall:.1f}s in all")
    assert waited < bound + 0.5
    doc = roar.json("show", run_id)
    [inp] = doc["inputs"]
    assert inp["path"] == str(big) and inp["status"] == "pending" and inp["hash"] is None
    assert doc["complete"] is False
    assert any("still being computed" in r for r in doc["incomplete_reasons"])


@pytest.mark.capture
@pytest.mark.parametrize("changed", [False, True], ids=["unchanged", "changed-after-run"])
def test_pending_hash_is_filled_in_later_or_unverified(roar, changed):
    """The background job fills a pending hash in, unless the file changed after the
    run used it: then the input is unverified, never given the new content's hash."""
    big = roar.cwd / "big"
    size = 1 << 30
    with open(big, "wb") as f:
        f.truncate(size)
    roar("run", "--", "sh", "-c", "head -c 1M big > /dev/null",
         env=roar.env(ROAR_HASH_WAIT="0"))
    if changed:
        with open(big, "r+b") as f:
            f.write(b"changed")
    run_id = roar.json("log", "-n", "1")[0]["id"]
    expected = _zeros_hash(size)
    deadline = time.monotonic() + 120
    while True:
        doc = roar.json("show", run_id)
        [inp] = doc["inputs"]
        if inp["status"] != "pending":
            break
        assert time.monotonic() < deadline, "the pending hash was never filled in"
        time.sleep(0.5)
    print(f"\n[pending] {'changed' if changed else 'unchanged'}: {inp['status']}")
    if changed:
        assert (inp["status"], inp["hash"]) in (("unverified", None), ("ok", expected)), inp
        assert doc["complete"] is (inp["status"] == "ok")
    else:
        assert (inp["status"], inp["hash"]) == ("ok", expected)
        assert doc["complete"] is True, doc["incomplete_reasons"]


@pytest.mark.capture
def test_roar_pending_lists_and_resumes_a_run_whose_job_died(roar):
    """The background job is killed (as a batch scheduler ends a job's
    processes): `roar pending` lists the run as waiting with no job at work,
    `roar pending --resume` hashes it here, and the record is complete."""
    big = roar.cwd / "big"
    size = 8 << 30
    with open(big, "wb") as f:
        f.truncate(size)
    roar("run", "--", "sh", "-c", "head -c 1M big > /dev/null",
         env=roar.env(ROAR_HASH_WAIT="0"))
    run_id = roar.json("log", "-n", "1")[0]["id"]
    deadline = time.monotonic() + 30
    while (filler := _pending_filler(run_id)) is None:
        assert time.monotonic() < deadline, "no background job started"
        time.sleep(0.01)
    os.kill(filler, signal.SIGKILL)
    while _pending_filler(run_id) is not None:
        time.sleep(0.05)
    [waiting] = roar.json("pending")
    assert waiting["run"] == run_id and waiting["hashing"] is False
    assert waiting["files"] == [{"path": str(big), "role": "input"}]
    assert "no job at work: roar pending --resume" in roar("pending").stdout
    assert roar.json("pending", "--resume") == []
    doc = roar.json("show", run_id)
    [inp] = doc["inputs"]
    assert (inp["status"], inp["hash"]) == ("ok", _zeros_hash(size))
    assert doc["complete"] is True, doc["incomplete_reasons"]
    assert roar("pending").stdout.strip() == "no run has pending hashes"
