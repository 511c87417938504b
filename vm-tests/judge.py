"""Judge one vm-tests guest from what its suite left in the results share.

    python3 vm-tests/judge.py pass|refuse RESULTS_DIR

Prints one line (the reason, or a summary) and exits 0 for PASS, 1 for FAIL.
A `pass` kernel passes when roar doctor found nothing missing, the embedded run
recorded the input and output with the hashes computed in the guest, and the
pytest smoke suite ran with no failure, error or skip (a skip there means the
probes did not load: that is a failure). A strict xfail (a known roar bug that
failed exactly as its test documents, on every kernel) is reported, not failed.
A `refuse` boot passes when roar doctor, `roar run` and roard each exit non-zero
with one clear line naming the missing feature, and no traceback. With run.sh
--verifier, a kernel that refuses any program fails with their names
(vm-tests/guest/verifier.py's list).
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def read(d: Path, name: str) -> str:
    try:
        return (d / name).read_text(errors="replace")
    except FileNotFoundError:
        return ""


def rc(d: Path, name: str) -> int | None:
    text = read(d, name).strip()
    return int(text) if text.lstrip("-").isdigit() else None


def one_line(err: str, prefix: str) -> str | None:
    """The single error line, or None when stderr is not exactly one such line."""
    lines = [line for line in err.splitlines() if line.strip()]
    if len(lines) != 1 or not lines[0].startswith(prefix) or "Traceback" in err:
        return None
    return lines[0]


def judge_refuse(d: Path) -> tuple[bool, str]:
    problems = []
    if rc(d, "doctor.rc") in (0, None):
        problems.append("roar doctor exited 0 on a boot that lacks a feature")
    fails = [line for line in read(d, "doctor.txt").splitlines() if line.startswith("[FAIL]")]
    if not fails:
        problems.append("roar doctor printed no [FAIL] line")
    lines = []
    for what, prefix in (("refuse-run", "roar: "), ("refuse-roard", "roard: ")):
        code = rc(d, f"{what}.rc")
        line = one_line(read(d, f"{what}.err"), prefix)
        if code in (0, None):
            problems.append(f"{what}: exited {code}, expected a refusal")
        elif line is None:
            problems.append(f"{what}: stderr is not one '{prefix}...' line: "
                            f"{read(d, what + '.err')[-300:]!r}")
        else:
            lines.append(line)
    if problems:
        return False, "; ".join(problems)
    return True, f"refused: {lines[0]}"


def judge_pass(d: Path) -> tuple[bool, str]:
    refused = [line.split()[1].rstrip(":") for line in read(d, "verifier.txt").splitlines()
               if line.startswith("FAIL ")]
    if refused:  # run.sh --verifier: the suite stopped there
        return False, (f"the kernel refused {len(refused)} programs ({d / 'verifier.txt'}): "
                       f"{', '.join(refused[:6])}{' ...' if len(refused) > 6 else ''}")
    problems = []
    fails = [line for line in read(d, "doctor.txt").splitlines() if line.startswith("[FAIL]")]
    if fails or rc(d, "doctor.rc") != 0:
        problems.append(f"roar doctor: {' | '.join(fails) or 'exit ' + str(rc(d, 'doctor.rc'))}")
    # the embedded run: input and output hashes as computed in the guest
    expect = read(d, "embedded.expect").split()
    try:
        doc = json.loads(read(d, "embedded.json"))
        ins = {e["path"].rsplit("/", 1)[-1]: e["hash"] for e in doc["inputs"]}
        outs = {e["path"].rsplit("/", 1)[-1]: e["hash"] for e in doc["outputs"]}
        if rc(d, "embedded.rc") != 0 or len(expect) != 2 \
                or ins.get("input.bin") != expect[0] or outs.get("output.bin") != expect[1]:
            problems.append(f"embedded roar run: rc {rc(d, 'embedded.rc')}, inputs {ins}, "
                            f"outputs {outs}, expected {expect}")
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        problems.append(f"embedded roar run: no run document ({e}): "
                        f"{read(d, 'embedded.out')[-300:]!r}")
    xfails: list[str] = []
    try:
        suite = ET.parse(d / "junit.xml").getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        n, failures, errors, skipped = (int(suite.get(k, 0)) for k in
                                        ("tests", "failures", "errors", "skipped"))
        # junit counts an xfail as a skip; an xfail here is a strict one that
        # failed the documented way (a known roar bug, the same on every kernel):
        # not a test that could not run
        xfails = [case.get("name", "?") for case in suite.iter("testcase")
                  for sk in case.findall("skipped") if sk.get("type") == "pytest.xfail"]
        skipped -= len(xfails)
    except (OSError, ET.ParseError, AttributeError) as e:
        problems.append(f"pytest left no junit.xml ({e})")
        n = failures = errors = skipped = 0
    else:
        if n == 0 or failures or errors or skipped or rc(d, "pytest.rc") != 0:
            bad = [line for line in read(d, "pytest.txt").splitlines()
                   if line.startswith(("FAILED", "ERROR", "SKIPPED"))]
            problems.append(f"pytest: {n} tests, {failures} failed, {errors} errors, "
                            f"{skipped} skipped: {' | '.join(bad[:4])}")
    if problems:
        return False, "; ".join(problems)
    known = f" ({len(xfails)} known roar bug(s) failed as documented: xfail {', '.join(xfails)})" \
        if xfails else ""
    return True, (f"doctor clean, embedded run hashes match, {n - len(xfails)} capture tests "
                  f"passed{known}")


def main() -> None:
    expect, d = sys.argv[1], Path(sys.argv[2])
    ok, why = (judge_refuse if expect == "refuse" else judge_pass)(d)
    print(why)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
