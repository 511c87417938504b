#!/bin/bash
# Inside a vm-tests guest (started by roar-vm-test.service): run roar on this
# kernel and leave what happened in /mnt/results for vm-tests/judge.py.
#   roar.expect=pass   roar doctor, one embedded `roar run`, the capture smoke
#                      suite (vm-tests/smoke.txt, or tests/test_capture.py
#                      with roar.tests=full) under pytest
#   roar.expect=refuse roar doctor, embedded `roar run` and roard must each
#                      refuse with one line (this boot lacks a needed feature)
#   roar.verifier=1    first vm-tests/guest/verifier.py (stops if a program is refused)
#   roar.measure=1     only vm-tests/guest/hooks.py (hook costs, run.sh --measure)
set -u
R=/mnt/results
arg() { sed -n "s/.*\<roar\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }

# one function, read whole before it runs: the project share is live, and bash reads
# a script as it goes (an edit on the host mid-boot would shift what it executes)
main() {
EXPECT="$(arg expect)" TESTS="$(arg tests)"
PY=/opt/roar-venv/bin/python
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
echo "roar-vm: kernel $(uname -r), expect=$EXPECT tests=$TESTS"
uname -r > "$R/kernel"

# a private writable copy of the project (the share is read-only)
rm -rf /root/roar && mkdir -p /root/roar
if [[ -b /dev/vdb ]]; then  # the project as a tar on a disk (run.sh): no 9p client involved
  tar -C /root/roar -xf /dev/vdb
else
  tar -C /mnt/roar --exclude=./.git --exclude=./.venv --exclude='*.pyc' -cf - . | tar -C /root/roar -xf -
fi
cd /root/roar
export PYTHONPATH=/root/roar

if [[ "$(arg measure)" == 1 ]]; then
  $PY vm-tests/guest/hooks.py > "$R/measure.txt" 2>&1; echo $? > "$R/measure.rc"
  cat "$R/measure.txt"
  sync; echo done > "$R/done"; exit 0
fi
if [[ $EXPECT == pass && "$(arg verifier)" == 1 ]]; then
  # every program loaded one by one: what this kernel's verifier refuses, all at once
  $PY vm-tests/guest/verifier.py 2>&1 | tee "$R/verifier.txt"
  if grep -q '^FAIL ' "$R/verifier.txt"; then sync; echo done > "$R/done"; exit 0; fi
fi
$PY -m roar doctor > "$R/doctor.txt" 2>&1; echo $? > "$R/doctor.rc"
cat "$R/doctor.txt"

home=/tmp/roar-home; work=/tmp/roar-work; mkdir -p "$home" "$work"
export ROAR_HOME=$home ROAR_SOCKET=$home/no-daemon.sock
if [[ $EXPECT == refuse ]]; then
  (cd "$work" && $PY -m roar run -- true) > "$R/refuse-run.out" 2> "$R/refuse-run.err"
  echo $? > "$R/refuse-run.rc"
  ROAR_SOCKET=$home/roard.sock timeout 120 $PY -m roar.daemon > "$R/refuse-roard.out" \
    2> "$R/refuse-roard.err"
  echo $? > "$R/refuse-roard.rc"
  head -n 5 "$R"/refuse-*.err
else
  # embedded mode (no roard): one run whose input hash is checked by judge.py
  head -c 65536 /dev/urandom > "$work/input.bin"
  $PY -c 'import sys, xxhash; print(xxhash.xxh3_128(open(sys.argv[1], "rb").read()).hexdigest())' \
    "$work/input.bin" > "$R/embedded.expect"
  (cd "$work" && $PY -m roar run -- cp input.bin output.bin) > "$R/embedded.out" 2>&1
  echo $? > "$R/embedded.rc"
  $PY -c 'import sys, xxhash; print(xxhash.xxh3_128(open(sys.argv[1], "rb").read()).hexdigest())' \
    "$work/output.bin" >> "$R/embedded.expect"
  id="$(cd "$work" && $PY -m roar log -n 1 --json | $PY -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')"
  (cd "$work" && $PY -m roar show "$id" --json) > "$R/embedded.json" 2>> "$R/embedded.out"
  unset ROAR_HOME ROAR_SOCKET
  if [[ $TESTS == full ]]; then sel=(tests/test_capture.py)
  else mapfile -t sel < <(grep -v '^\s*\(#\|$\)' vm-tests/smoke.txt); fi
  # roard compiles the kernel side before it listens: minutes under emulation
  ROAR_TEST_ROARD_START_S=1200 $PY -m pytest -p no:cacheprovider -q -rfEs --junitxml="$R/junit.xml" "${sel[@]}" \
    > "$R/pytest.txt" 2>&1
  echo $? > "$R/pytest.rc"
  tail -n 30 "$R/pytest.txt"
fi
sync
echo done > "$R/done"
echo "roar-vm: done"
}
main
exit
