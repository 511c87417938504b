"""A seeded random generator over roard's request grammar, run as a client
of roard's socket for a bounded time (tests/test_daemon_hostile.py runs it as
another OS user). Standard library only: the other user runs it with the
system python. Prints one JSON line: {"n": requests sent, "hung": the request
roard did not answer within 15 s, or null}.

usage: python roard_fuzz.py SOCKET SEED SECONDS HOME
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import time


def fuzz_value(rng: random.Random, depth=0):
    kinds = ["int", "neg", "big", "float", "str", "weird", "none", "bool"]
    if depth < 3:
        kinds += ["list", "dict"]
    k = rng.choice(kinds)
    if k == "int":
        return rng.randint(0, 70000)
    if k == "neg":
        return -rng.randint(1, 1 << 40)
    if k == "big":
        return rng.choice([1 << 64, 10 ** 30, 2 ** 31 - 1, float("1e308")])
    if k == "float":
        return rng.choice([0.5, -1.0, 1e9, float("inf"), float("nan")])
    if k == "str":
        return rng.choice(["", "A", "../..", "/", "/tmp", "x" * rng.randint(1, 300), "0",
                           "trace", "status", "approve", "\u0000", "\udcff"[:0] + "\u2603"])
    if k == "weird":
        return "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(1, 20)))
    if k == "none":
        return None
    if k == "bool":
        return rng.random() < 0.5
    if k == "list":
        return [fuzz_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["op", "pid", "run_id", "home", "root_fds", "linger", "id", "1"]):
            fuzz_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def fuzz_request(rng: random.Random, own_pid: int, home: str) -> bytes:
    """One request from the grammar: an op with fields of the right and wrong
    types, sometimes cut short, doubled or followed by the run's later ops."""
    op = rng.choice(["status", "trace", "trace", "attach", "detach", "chain", "chain_get",
                     "review", "root_exited", "stored", "unstored", "abort", "kill", "nope",
                     None])
    req: dict = {} if op is None else {"op": op}
    if op in ("trace", "attach"):
        req["pid"] = rng.choice([own_pid, own_pid, 1, 0, -1, fuzz_value(rng)])
        req["run_id"] = rng.choice(["F" + str(rng.randint(0, 10 ** 6)), "", "../x", "a b",
                                    fuzz_value(rng)])
        req["home"] = rng.choice([home, "relative", fuzz_value(rng)])
        req["root_fds"] = rng.choice([{}, {"1": "/dev/null"}, {"x": 1}, fuzz_value(rng)])
    elif op in ("chain", "chain_get", "detach"):
        req.update(run_id=rng.choice(["F" + str(rng.randint(0, 99)), "", fuzz_value(rng)]),
                   home=rng.choice([home, fuzz_value(rng)]),
                   digest=rng.choice(["0" * 64, "x", fuzz_value(rng)]),
                   pending=rng.choice([[], ["a"], fuzz_value(rng)]),
                   offset=rng.choice([0, -1, 10 ** 9, fuzz_value(rng)]))
    elif op == "review":
        req.update(home=rng.choice([home, fuzz_value(rng)]), id=fuzz_value(rng),
                   decision=rng.choice(["approve", "deny", fuzz_value(rng)]),
                   text=fuzz_value(rng))
    for _ in range(rng.randint(0, 3)):
        req[rng.choice(["linger", "pid", "x", "op"])] = fuzz_value(rng)
    try:
        line = json.dumps(req, allow_nan=True).encode()
    except (ValueError, TypeError):
        line = b"{}"
    cut = rng.random()
    if cut < 0.1:
        line = line[:rng.randint(0, len(line))]
    elif cut < 0.15:
        line = bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 200)))
    out = line + (b"\n" if rng.random() < 0.9 else b"")
    if op in ("trace", "attach") and rng.random() < 0.7:  # what a client says after "ok"
        out += b"".join(json.dumps({"op": rng.choice(["root_exited", "stored", "unstored",
                                                      "abort", "kill", "detach", "gone"]),
                                    "linger": rng.choice([0, 0.1, -5, "x", 1e9]),
                                    "why": fuzz_value(rng)}).encode()
                        + b"\n" for _ in range(rng.randint(0, 2)))
    return out


def status(sock: str) -> dict:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(15)
    try:
        s.connect(sock)
        s.sendall(b'{"op":"status"}\n')
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    finally:
        s.close()
    return json.loads(got[5:])


def main(sock: str, seed: int, seconds: float, home: str) -> dict:
    rng = random.Random(seed)
    target = subprocess.Popen(["sleep", "600"])  # a process of ours the fuzzer may trace
    deadline = time.monotonic() + seconds
    n, pid = 0, status(sock)["pid"]
    try:
        while time.monotonic() < deadline:
            payload = fuzz_request(rng, target.pid, home)
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(15)
            got = b""
            try:
                s.connect(sock)
                s.sendall(payload)
                shut = rng.random() < 0.8
                if shut:
                    s.shutdown(socket.SHUT_WR)
                while chunk := s.recv(1 << 16):
                    got += chunk
                    if not shut and len(got) >= 5 + int.from_bytes(got[1:5], "little"):
                        break  # answered; a run it started lasts until we hang up
            except (ConnectionResetError, BrokenPipeError):
                pass
            except TimeoutError:
                return {"n": n, "hung": repr(payload[:300]), "got": repr(got[:300])}
            finally:
                s.close()
            n += 1
            if n % 10 == 0 or target.poll() is not None:
                if status(sock)["pid"] != pid:
                    return {"n": n, "hung": "roard restarted"}
            if target.poll() is not None:  # a run's end killed it: a fresh one
                target.wait()
                target = subprocess.Popen(["sleep", "600"])
    finally:
        target.kill()
        target.wait()
    return {"n": n, "hung": None}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])))
