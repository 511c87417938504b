#!/usr/bin/env bash
# Prepare this machine for roar: BCC, kernel headers, tracefs/debugfs, and a
# virtualenv at .venv with roar installed in editable mode (plus test extras).
# Idempotent; run as root on Debian/Ubuntu. Safe to run on every CI start.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KREL="$(uname -r)"
ARCH="$(dpkg --print-architecture)"
say() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "must run as root (BPF, apt and mounts need it); try: sudo bash $0"
command -v apt-get >/dev/null || die "apt-get not found: only Debian/Ubuntu are supported"
export DEBIAN_FRONTEND=noninteractive

APT_UPDATED=0
apt_update_once() {
  if [[ $APT_UPDATED -eq 0 ]]; then
    say "apt-get update"
    apt-get update -qq
    APT_UPDATED=1
  fi
}
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
apt_install() {  # apt_install PKG... : installs only those missing
  local missing=() p
  for p in "$@"; do installed "$p" || missing+=("$p"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  apt_update_once
  say "installing ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
apt_has() { apt_update_once; apt-cache show "$1" >/dev/null 2>&1; }

# 1. Packages --------------------------------------------------------------
apt_install python3-bpfcc libbpfcc bpfcc-tools python3-venv git

# 1b. What the tests use (owner: tests) -------------------------------------
# CI fails a capture test that skips (tests/conftest.py), so every tool a test
# needs is installed here: gcc + libc headers (load generators), strace (no IP
# socket), setpriv/unshare (util-linux), useradd/groupadd (passwd), and the
# system python3 the foreign-user tests run roar with.
apt_install gcc libc6-dev strace util-linux passwd python3
# roar's C extensions (the event model roar/record/_cmodel.c, the hasher's
# roar/record/_readhash.c, roard's relay roar/capture/_relay.c) build with gcc against the interpreter's headers: the
# system python3's come from python3-dev
apt_install python3-dev
# remote data tests (owner: remote): a self-signed certificate, curl over HTTPS
apt_install openssl curl ca-certificates

# 2. Kernel headers (BCC compiles its C programs against them) ---------------
HEADERS="ok: /lib/modules/$KREL/build"
if [[ ! -e /lib/modules/$KREL/build ]]; then
  if ! installed "linux-headers-$KREL" && apt_has "linux-headers-$KREL"; then
    apt_install "linux-headers-$KREL"
  fi
  if [[ ! -e /lib/modules/$KREL/build ]]; then
    # Custom/cloud kernel with no headers package: use the distribution's
    # generic headers. BCC only needs them to compile tracepoint programs;
    # roar's programs use no kernel struct layouts, so the version mismatch
    # does not matter.
    flavour="$ARCH"                                  # Debian: linux-headers-amd64
    installed "linux-headers-$ARCH" || apt_has "linux-headers-$ARCH" || flavour=generic  # Ubuntu
    apt_install "linux-headers-$flavour"
    hdr="$(ls -d /usr/src/linux-headers-*-"$flavour" 2>/dev/null | sort -V | tail -n 1 || true)"
    [[ -n $hdr && -d $hdr ]] || die "no /usr/src/linux-headers-*-$flavour after installing linux-headers-$flavour"
    common="${hdr%-"$flavour"}-common"                # Debian layout
    [[ -d $common ]] || common="${hdr%-"$flavour"}"   # Ubuntu layout
    mkdir -p "/lib/modules/$KREL"
    ln -sfn "$hdr" "/lib/modules/$KREL/build"
    [[ -d $common ]] && ln -sfn "$common" "/lib/modules/$KREL/source"
    say "no headers package for kernel $KREL: using generic headers"
    say "  /lib/modules/$KREL/build  -> $hdr"
    [[ -d $common ]] && say "  /lib/modules/$KREL/source -> $common"
    say "  (fine for BCC: tracepoint programs need no kernel struct layouts)"
    HEADERS="generic: $(basename "$hdr")"
  else
    HEADERS="installed: linux-headers-$KREL"
  fi
fi

# 3. tracefs / debugfs -------------------------------------------------------
ensure_mount() {  # ensure_mount FSTYPE DIR
  if awk -v d="$2" -v t="$1" '$2 == d && $3 == t { f = 1 } END { exit !f }' /proc/mounts; then
    return 0
  fi
  mkdir -p "$2" 2>/dev/null || true
  mount -t "$1" "$1" "$2" || die "could not mount $1 at $2"
  say "mounted $1 at $2"
}
ensure_mount tracefs /sys/kernel/tracing
ensure_mount debugfs /sys/kernel/debug

# 4. Virtualenv with roar (editable) ----------------------------------------
VENV="$REPO/.venv"
if [[ -e $VENV ]] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  say "removing broken $VENV"
  rm -rf "$VENV"
fi
if [[ ! -e $VENV ]]; then
  for py in python3 /usr/bin/python3; do
    command -v "$py" >/dev/null || continue
    if "$py" -c 'import venv, ensurepip' >/dev/null 2>&1 && "$py" -m venv "$VENV"; then
      say "created $VENV with $("$VENV/bin/python" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
      break
    fi
    rm -rf "$VENV"
  done
  [[ -x $VENV/bin/python ]] || die "could not create a virtualenv (is python3-venv installed?)"
fi

# Reinstall only when pyproject.toml (deps, entry points), the compiled model's
# sources or the interpreter changed; the editable install picks up Python source
# changes by itself (the C extension is built in place by the install).
STAMP="$VENV/.roar-setup-stamp"
want="$( (cat "$REPO/pyproject.toml" "$REPO/setup.py" "$REPO/roar/record/_cmodel.c" \
          "$REPO/roar/record/_readhash.c" "$REPO/roar/capture/_relay.c" "$REPO/roar/capture/_sys.c" "$REPO/roar/cli/launcher.c" "$REPO/bpf/roar_event.h" "$REPO/bpf/roar_event_user.h"; "$VENV/bin/python" -VV; echo editable=compat) \
        | sha256sum | cut -d' ' -f1)"
if [[ ! -x $VENV/bin/roar || "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]]; then
  say "pip install -e '.[test]' into .venv"
  # compat mode: a plain path entry in a .pth file. The default editable mode
  # installs an import hook whose own imports cost ~25 ms at every `roar` start.
  # (drop pip's noise about configured-but-absent local index folders)
  (cd "$REPO" && "$VENV/bin/python" -m pip install -q -e '.[test]' \
     --config-settings editable_mode=compat 2>&1 1>&3 \
     | sed "/^WARNING: Location 'file:.*' is ignored/d" >&2) 3>&1
  "$VENV/bin/python" -c 'import roar.record._cmodel, roar.record._readhash, roar.capture._relay, roar.capture._sys' \
    || die "roar's C extensions did not build (gcc, python3-dev? see docs/compiled.md)"
  echo "$want" > "$STAMP"
fi
# roar's byte code, written now (up-to-date files are skipped): an editable
# install writes none, and where PYTHONDONTWRITEBYTECODE is set (container
# images, CI runners) Python would compile every module roar imports at every
# start, ~80 ms of each `roar run` that does not go through a warm recorder
# (docs/bench.md). That setting stops Python writing byte code, not reading it.
"$VENV/bin/python" -m compileall -q -j 0 "$REPO/roar" >/dev/null \
  || die "could not write roar's byte code (python -m compileall roar)"

# -- shared store (roar/shared): a PostgreSQL server from the OS packages ------
# The tests and scripts/bench_cluster start their own throwaway cluster with
# initdb/pg_ctl (tests/pgserver.py) as the `postgres` user; the distribution's
# default cluster is not used. faketime skews one simulated node's clock in
# the cluster bench.
apt_install postgresql faketime
PG="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
[[ -x $PG/initdb ]] || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb"
# -- end shared store ---------------------------------------------------------

# vm-tests (vm-tests/run.sh) -------------------------------------------------
# qemu and debootstrap boot roar on stock distribution kernels; the guests'
# downloads and images live in /var/cache/roar-vm-tests, outside the repo.
apt_install qemu-system-x86 qemu-utils debootstrap e2fsprogs
# -- end vm-tests -------------------------------------------------------------

# 5. Summary -----------------------------------------------------------------
BCC="$(/usr/bin/python3 -c 'import bcc, os; print(os.path.dirname(bcc.__file__))' 2>/dev/null || echo 'NOT importable')"
echo "setup: done"
echo "  kernel   $KREL ($ARCH)"
echo "  headers  $HEADERS"
echo "  tracefs  /sys/kernel/tracing, debugfs /sys/kernel/debug"
echo "  bcc      $BCC"
echo "  venv     $VENV ($("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])'))"
echo "  roar     $VENV/bin/roar"
echo "  postgres $PG"
