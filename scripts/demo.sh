#!/usr/bin/env bash
# End-to-end demo: set the machine up, run a 4-step ML pipeline under roar in a
# throwaway git repo, then show what roar recorded.
#   DEMO_DIR   where the demo repo goes (wiped first; default /tmp/roar-demo)
#   ROAR_HOME  roar's store (default $DEMO_DIR/.roar-home)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEMO_DIR="${DEMO_DIR:-/tmp/roar-demo}"
ROAR="$REPO/.venv/bin/roar"

bash "$REPO/scripts/setup.sh"

# --- a throwaway git repo holding the pipeline code --------------------------
DEMO_DIR="$(realpath -m "$DEMO_DIR")"
case "$DEMO_DIR" in
  /|"$HOME"|"$REPO"|"$REPO"/*) echo "demo: refusing to wipe DEMO_DIR=$DEMO_DIR" >&2; exit 1 ;;
esac
rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR"
cp -r "$REPO"/examples/pipeline/* "$DEMO_DIR"/
rm -rf "$DEMO_DIR/__pycache__"
cd "$DEMO_DIR"
printf '%s\n' '.roar-home/' 'data/' 'out/' '__pycache__/' > .gitignore
git init -q -b main
git config user.name "roar demo"
git config user.email "demo@roar.invalid"
git add -A
git commit -q -m "demo pipeline"
export ROAR_HOME="${ROAR_HOME:-$DEMO_DIR/.roar-home}"
echo "demo: repo $DEMO_DIR (commit $(git rev-parse --short HEAD)), ROAR_HOME=$ROAR_HOME"

# --- daemon (optional: as root, `roar run` falls back to embedded capture) ---
STARTED_DAEMON=0
stop_daemon() {
  if [[ $STARTED_DAEMON -eq 1 ]]; then
    "$ROAR" daemon stop || echo "demo: warning: could not stop the daemon" >&2
  fi
}
trap stop_daemon EXIT
if "$ROAR" daemon status >/dev/null 2>&1; then
  echo "demo: roar daemon already running; using it"
elif "$ROAR" daemon start; then
  STARTED_DAEMON=1
else
  echo "demo: daemon did not start; roar run will capture in embedded mode" >&2
fi

# --- the pipeline -------------------------------------------------------------
# Use the real interpreter (not a pyenv shim script) so the traces stay readable.
PY="$(python3 -c 'import sys; print(sys.executable)')"
step() {  # step NAME SCRIPT ARGS...
  local name="$1"; shift
  echo
  echo "== step $name: python3 $*"
  "$ROAR" run --name "$name" -- "$PY" "$@"
}
last_run_id() {
  "$ROAR" log -n 1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])'
}

step make_data  make_data.py data/raw --shards 20 --rows 50 --seed 42
step preprocess preprocess.py data/raw out/features.json
step train      train.py out/features.json out/model.json --lr 0.1 --epochs 20
TRAIN_ID="$(last_run_id)"
step evaluate   evaluate.py out/model.json out/features.json out/metrics.json

# --- what roar recorded -------------------------------------------------------
echo
echo "== roar log"
"$ROAR" log
echo
echo "== roar show out/model.json"
"$ROAR" show out/model.json
echo
echo "== roar inputs out/model.json   (everything upstream, by content)"
"$ROAR" inputs out/model.json
echo
SHARD="$(ls data/raw/*.csv | head -1)"
echo "== roar inputs out/model.json --contains $SHARD"
"$ROAR" inputs out/model.json --contains "$SHARD"
echo
echo "== roar trace $TRAIN_ID (train)"
"$ROAR" trace "$TRAIN_ID"
echo
echo "demo: done. Explore further with: cd $DEMO_DIR && ROAR_HOME=$ROAR_HOME $ROAR --help"
