#!/usr/bin/env bash
# Trace a real CUDA PyTorch training step under `roar run` on a GPU machine
# that has no BCC: the BCC runtime, generic kernel headers and the lmdb wheel
# travel in .gpu/ (see the note at the end). Results land in $OUT (or /tmp/out).
#   .gpu/*.deb  libbpfcc python3-bpfcc and their libraries, linux-headers-*
#   .gpu/*.whl  lmdb for the machine's python
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUTD="${OUT:-/tmp/out}"
mkdir -p "$OUTD"
exec > >(tee "$OUTD/log.txt") 2>&1
say() { echo "gpu-check: $*"; }

R=/opt/roar-bcc
mkdir -p "$R"
for d in "$REPO"/.gpu/*.deb; do dpkg -x "$d" "$R"; done
export LD_LIBRARY_PATH="$R/usr/lib/x86_64-linux-gnu:$R/lib/x86_64-linux-gnu"
python3 -m pip install -q --no-index --no-deps --target /tmp/site "$REPO"/.gpu/*.whl
export PYTHONPATH="$REPO:/tmp/site:$R/usr/lib/python3/dist-packages"
K="$(uname -r)"
if [[ ! -e /lib/modules/$K/build ]]; then
  hdr=$(ls -d "$R"/usr/src/linux-headers-*-amd64 | head -1)
  mkdir -p "/lib/modules/$K"
  ln -sfn "$hdr" "/lib/modules/$K/build"
  ln -sfn "${hdr%-amd64}-common" "/lib/modules/$K/source"
  say "linked generic headers $(basename "$hdr") for kernel $K"
fi
if ! grep -q " cgroup2 " /proc/mounts; then
  mkdir -p /sys/fs/cgroup/unified 2>/dev/null && mount -t cgroup2 none /sys/fs/cgroup/unified \
    || { mkdir -p /tmp/cg2 && mount -t cgroup2 none /tmp/cg2; }
  say "mounted cgroup2"
fi
uname -r; grep PRETTY /etc/os-release; nvidia-smi -L; python3 --version
python3 -m roar doctor

export ROAR_HOME=/tmp/roar-home ROAR_SOCKET=/tmp/roard.sock
python3 -m roar.daemon > "$OUTD/roard.log" 2>&1 &
DPID=$!
for _ in $(seq 120); do [[ -S $ROAR_SOCKET ]] && break; sleep 0.5; done
[[ -S $ROAR_SOCKET ]] || { say "roard did not start"; cat "$OUTD/roard.log"; exit 1; }

W=/tmp/gpuwork
rm -rf "$W" && mkdir -p "$W" && cd "$W"
python3 "$REPO/examples/gpu/make_shards.py" data 64
python3 "$REPO/examples/gpu/train_step.py" data warmup.pt   # CUDA/kernel caches warm
t0=$(date +%s.%N); python3 "$REPO/examples/gpu/train_step.py" data bare.pt; t1=$(date +%s.%N)
ROAR_TIMING=1 python3 -m roar run --name gpu-step -- \
  python3 "$REPO/examples/gpu/train_step.py" data ckpt.pt; rc=$?
t2=$(date +%s.%N)
say "exit $rc; bare $(python3 -c "print(round($t1 - $t0, 2))") s, traced $(python3 -c "print(round($t2 - $t1, 2))") s"
id=$(python3 -m roar log -n 1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
python3 -m roar show "$id" --json > "$OUTD/show.json"
python3 -m roar show "$id" | head -40
python3 -m roar trace "$id" > "$OUTD/trace.txt"
head -30 "$OUTD/trace.txt"
python3 - "$OUTD/show.json" <<'PY'
import glob, json, sys, xxhash
doc = json.load(open(sys.argv[1]))
h = lambda p: xxhash.xxh3_128(open(p, "rb").read()).hexdigest()
ins = {i["path"]: i["hash"] for i in doc["inputs"]}
outs = {o["path"]: o["hash"] for o in doc["outputs"]}
shards = sorted(glob.glob("/tmp/gpuwork/data/shard-*.pt"))
checks = {
    "complete": doc["complete"],
    "all 64 shards are inputs with their hashes": all(ins.get(p) == h(p) for p in shards),
    "checkpoint is the output, by its final name": outs.get("/tmp/gpuwork/ckpt.pt") == h("/tmp/gpuwork/ckpt.pt")
        and "/tmp/gpuwork/ckpt.pt.tmp" not in outs,
    "dataloader workers traced": len(doc["processes"]) >= 3,
    "torch recorded as a package": "torch" in doc["packages"],
    "gpu recorded": bool(doc.get("gpus")),
}
for k, v in checks.items():
    print(f"gpu-check: {'PASS' if v else 'FAIL'} {k}")
print("gpu-check:", "ALL PASS" if all(checks.values()) else "SOME FAILED")
PY
# Paired timings, interleaved: the whole step (torch import, CUDA init, data
# loading with workers, training, checkpoint) and torch's import alone.
for i in 1 2; do
  for mode in bare roar; do
    pre=(); [[ $mode == roar ]] && pre=(python3 -m roar run --)
    t0=$(date +%s.%N); "${pre[@]}" python3 "$REPO/examples/gpu/train_step.py" data t.pt >/dev/null 2>&1
    t1=$(date +%s.%N); "${pre[@]}" python3 -c 'import torch' >/dev/null 2>&1; t2=$(date +%s.%N)
    python3 -c "print('gpu-check: timing $mode step %.2f s, import torch %.2f s' % ($t1 - $t0, $t2 - $t1))"
  done
done
kill "$DPID" 2>/dev/null; wait "$DPID" 2>/dev/null
# .gpu/ is not in git. To rebuild it on a Debian 12 machine:
#   mkdir .gpu && cd .gpu && apt-get download libbpfcc python3-bpfcc libclang-cpp14 libllvm14 \
#     libz3-4 libicu72 libxml2 libedit2 libbsd0 libmd0 libbpf1 libelf1 libffi8 \
#     linux-headers-6.1.0-56-amd64 linux-headers-6.1.0-56-common
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d . lmdb
