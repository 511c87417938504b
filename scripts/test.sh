#!/usr/bin/env bash
# Set the machine up (idempotent) and run the test suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh

# -- CI strictness (owner: tests) ----------------------------------------------------
# Under `.ci/run` (CI=true) the capture tests must run: the probes are compiled and
# loaded once before pytest starts, and the tools the tests use must be there. Any
# of these missing fails the run here, with the reason; tests/conftest.py fails any
# capture test that skips anyway.
if [[ ${CI:-} == true || ${CI:-} == 1 ]]; then
  export CI=true
  missing=()
  for tool in gcc strace setpriv unshare useradd userdel groupadd groupdel git mount; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  [[ ${#missing[@]} -eq 0 ]] || { echo "test.sh: CI: missing tools: ${missing[*]}" >&2; exit 1; }
  want="$(.venv/bin/python -c 'import sys; print(sys.version_info[:2])')"
  have="$(/usr/bin/python3 -c 'import sys; print(sys.version_info[:2])' 2>/dev/null || true)"
  [[ $want == "$have" ]] || {
    echo "test.sh: CI: /usr/bin/python3 ${have:-missing} is not the test interpreter's $want" \
         "(the foreign-user tests need it)" >&2; exit 1; }
  if ! err="$(.venv/bin/python -c '
from roar.capture.probes import Probes
p = Probes(lambda raw: None)
print(f"test.sh: CI: probes load ({len(p.names)} programs)")' 2>&1)"; then
    echo "test.sh: CI: the probes cannot load, capture tests cannot run:" >&2
    echo "$err" | tail -n 5 >&2
    exit 1
  fi
  echo "$err"
fi

rc=0
.venv/bin/python -m pytest -q tests "$@" || rc=$?
if [[ $rc -eq 5 ]]; then
  echo "test.sh: pytest collected no tests; treating that as a failure" >&2
  exit 1
fi
[[ $rc -eq 0 ]] || exit "$rc"

# The capture, pre-image, signal, budget and audit tests again through the compiled
# `roar` launcher and a warm recorder (the path the installed `roar` command takes;
# tests/conftest.py ROAR_TEST_LAUNCHER), ~5 min. Not with extra pytest args (a
# selection of tests).
# Its failures get one rerun (pytest --lf): the known pre-image race (a KnownBug, notes
# and docs/preimage.md) hit test_sort_in_place_reads_v1_writes_v2 once in this pass; a
# failure that repeats fails the run.
if [[ $# -eq 0 ]]; then
  ROAR_TEST_LAUNCHER=1 .venv/bin/python -m pytest -q tests/test_capture.py \
    tests/test_preimage.py tests/test_capture_outputs.py tests/test_signals.py \
    tests/test_requests.py tests/test_audit.py \
    || ROAR_TEST_LAUNCHER=1 .venv/bin/python -m pytest -q --lf tests/test_capture.py \
    tests/test_preimage.py tests/test_capture_outputs.py tests/test_signals.py \
    tests/test_requests.py tests/test_audit.py || exit 1
fi

# vm-tests: roar on stock distribution kernels under qemu (vm-tests/run.sh).
# CI boots the cgroup-v1 refusal boot (debian12-cgv1, about a minute); a stock
# kernel's smoke suite takes 15-25 minutes under TCG on a loaded 2-core VM
# (docs/vm-tests.md), too long for CI: ROAR_VM_TESTS=quick adds debian12 (6.1),
# =full boots every kernel in vm-tests/kernels.list, =0 skips.
case "${ROAR_VM_TESTS:-${CI:+ci}}" in
  ci) bash vm-tests/run.sh --kernel debian12-cgv1 || exit 1 ;;
  quick) bash vm-tests/run.sh --quick || exit 1 ;;
  full) bash vm-tests/run.sh || exit 1 ;;
  *) echo "test.sh: vm-tests skipped (ROAR_VM_TESTS=ci|quick|full; ci is the default in CI)" ;;
esac
exit 0
