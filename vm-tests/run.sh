#!/usr/bin/env bash
# vm-tests: roar on stock distribution kernels, each booted under qemu/KVM.
#
#   bash vm-tests/run.sh [--kernel NAME]... [--quick] [--full] [--verifier] [--measure] [--refresh]
#
# For every kernel in vm-tests/kernels.list (or only the --kernel ones) this
# fetches the kernel image and headers packages through apt with a private
# sources list and state (the host's apt configuration is never touched),
# builds one Debian 12 root filesystem with python3-bpfcc and roar's
# dependencies (once, cached), boots it, and runs inside the guest either the
# capture smoke suite (vm-tests/smoke.txt, real workloads under the real
# probes, hashes computed in the guest) or, for EXPECT=refuse boots, checks
# that roard, `roar run` and `roar doctor` refuse with one clear line.
# Prints PASS/FAIL per kernel with the seconds it took; exits 1 on any FAIL.
#
#   --quick    only the first `pass` kernel and the first `refuse` boot
#   --full     run all of tests/test_capture.py in the guests, not the smoke list
#   --verifier first load every program of the kernel side one by one and print
#              each one the kernel refuses with the verifier's last lines (all of
#              them at once; the suite stops there if any is refused)
#   --measure  no suite: vm-tests/guest/hooks.py (per-call cost of roar-like programs on
#              the syscall tracepoints vs kprobe/fentry/BPF LSM on the security_file_*
#              functions, and whether they see io_uring), booted with lsm=...,bpf;
#              default kernel debian12; PASS when it completed, its table printed
#   --refresh  re-resolve kernel packages (new ABI) and rebuild the image
#
# Cache (downloads, root filesystem, image): $ROAR_VM_CACHE, default
# /var/cache/roar-vm-tests. Needs root, qemu-system-x86, debootstrap
# (scripts/setup.sh installs them). Without a KVM that runs stock kernels it
# falls back to TCG emulation with a longer limit (ROAR_VM_ACCEL=kvm|tcg
# forces one), or skips with ROAR_VM_NO_TCG=1. ROAR_VM_TIMEOUT: seconds a boot
# may take.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
CACHE="${ROAR_VM_CACHE:-/var/cache/roar-vm-tests}"
MIRROR="${ROAR_VM_MIRROR:-http://deb.debian.org/debian}"
SECURITY="${ROAR_VM_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
ROOT_SUITE=bookworm           # the guests' userspace
IMAGE_SIZE=6G
ROOTFS_REV=2                  # bump when build_rootfs changes what it puts in the image
GUEST_PY_DEPS="click>=8 lmdb>=1.4 xxhash>=3 networkx>=3 pytest>=7 hypothesis>=6"

say() { echo "vm-tests: $*" >&2; }
die() { echo "vm-tests: error: $*" >&2; exit 2; }

WANT=() QUICK=0 FULL=0 REFRESH=0 VERIFIER=0 MEASURE=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --kernel) [[ $# -ge 2 ]] || die "--kernel needs a NAME"; WANT+=("$2"); shift 2 ;;
    --kernel=*) WANT+=("${1#*=}"); shift ;;
    --quick) QUICK=1; shift ;;
    --full) FULL=1; shift ;;
    --verifier) VERIFIER=1; shift ;;
    --measure) MEASURE=1; shift ;;
    --refresh) REFRESH=1; shift ;;
    -h|--help) sed -n '2,32p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

[[ $EUID -eq 0 ]] || die "must run as root (debootstrap, chroot, loop images)"
for tool in qemu-system-x86_64 qemu-img debootstrap mkfs.ext4 apt-get dpkg-deb; do
  command -v "$tool" >/dev/null || die "$tool not found (run scripts/setup.sh)"
done

# -- which kernels -----------------------------------------------------------------
declare -A SUITE META EXPECT EXTRA
ORDER=()
while read -r name suite meta expect extra; do
  [[ -z $name || $name == \#* ]] && continue
  SUITE[$name]=$suite META[$name]=$meta EXPECT[$name]=$expect EXTRA[$name]=$extra
  ORDER+=("$name")
done < "$HERE/kernels.list"

if [[ ${#WANT[@]} -eq 0 ]]; then
  if [[ $MEASURE -eq 1 ]]; then
    WANT=(debian12)
  elif [[ $QUICK -eq 1 ]]; then
    for n in "${ORDER[@]}"; do [[ ${EXPECT[$n]} == pass ]] && { WANT+=("$n"); break; }; done
    for n in "${ORDER[@]}"; do [[ ${EXPECT[$n]} == refuse ]] && { WANT+=("$n"); break; }; done
  else
    WANT=("${ORDER[@]}")
  fi
fi
for n in "${WANT[@]}"; do
  [[ -n ${SUITE[$n]:-} ]] || die "unknown kernel $n (known: ${ORDER[*]})"
done

# KVM, or TCG with a longer limit. /dev/kvm alone is not enough: a PVM host
# (kvm_pvm, as on this project's CI VMs) runs only guests built as PVM guests,
# and a stock kernel hangs right after decompression there.
kvm_usable() {
  [[ -w /dev/kvm ]] || return 1
  [[ -d /sys/module/kvm_intel || -d /sys/module/kvm_amd ]] || return 1
}
ACCEL_KIND="${ROAR_VM_ACCEL:-}"
if [[ -z $ACCEL_KIND ]]; then
  if kvm_usable; then ACCEL_KIND=kvm
  else
    why="/dev/kvm is absent"
    [[ -e /dev/kvm ]] && why="/dev/kvm cannot run stock kernels here (no kvm_intel/kvm_amd"
    [[ -e /dev/kvm && -d /sys/module/kvm_pvm ]] && why+="; kvm_pvm runs PVM guests only"
    [[ -e /dev/kvm ]] && why+=")"
    if [[ ${ROAR_VM_NO_TCG:-0} == 1 ]]; then
      echo "vm-tests: SKIP all kernels: $why and ROAR_VM_NO_TCG=1"
      exit 0
    fi
    say "$why: using TCG emulation (slower; longer time limit)"
    ACCEL_KIND=tcg
  fi
fi
case "$ACCEL_KIND" in
  kvm) ACCEL=(-enable-kvm -cpu host) LIMIT=900 ;;
  tcg) ACCEL=(-accel tcg,thread=multi -cpu max) LIMIT=2400 ;;
  *) die "ROAR_VM_ACCEL must be kvm or tcg" ;;
esac
LIMIT="${ROAR_VM_TIMEOUT:-$LIMIT}"

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock -w 3600 9 || die "another vm-tests run holds $CACHE/.lock"

# -- private apt per suite ---------------------------------------------------------
apt_private() {  # apt_private SUITE apt-get|apt-cache ARGS... : own sources, state, cache
  local suite=$1 tool=$2; shift 2
  local d="$CACHE/apt/$suite"
  "$tool" -q -o Dir::Etc::SourceList="$d/sources.list" -o Dir::Etc::SourceParts=/dev/null \
    -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null \
    -o Dir::State="$d/state" -o Dir::State::status="$d/state/status" \
    -o Dir::Cache="$d/cache" -o APT::Architecture=amd64 -o Debug::NoLocking=1 \
    -o APT::Sandbox::User=root "$@"
}

apt_private_update() {
  local suite=$1 d="$CACHE/apt/$1"
  if [[ $REFRESH -eq 0 && -f $d/updated ]]; then return 0; fi
  mkdir -p "$d/state/lists/partial" "$d/cache/archives/partial"
  : > "$d/state/status"
  cat > "$d/sources.list" <<EOF
deb [signed-by=$KEYRING] $MIRROR $suite main
deb [signed-by=$KEYRING] $SECURITY $suite-security main
EOF
  say "apt-get update (private lists for $suite)"
  apt_private "$suite" apt-get update -qq >/dev/null
  touch "$d/updated"
}

# fetch_kernel NAME: download image + headers debs into $CACHE/debs/NAME, once
fetch_kernel() {
  local name=$1 suite=${SUITE[$1]} meta=${META[$1]} d="$CACHE/debs/$1"
  if [[ $REFRESH -eq 0 && -f $d/resolved ]]; then return 0; fi
  apt_private_update "$suite"
  local image abi flavour
  image="$(apt_private "$suite" apt-cache depends --no-recommends --no-suggests "$meta" 2>/dev/null \
           | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\).*/\1/p' | head -n 1)"
  [[ -n $image ]] || die "$name: $meta does not depend on a linux-image-<abi> package in $suite"
  abi="${image#linux-image-}"                  # e.g. 6.1.0-41-amd64
  local pkgs=("$image" "linux-headers-$abi")
  # the headers' own kernel-side dependencies (common headers, kbuild)
  while read -r dep; do pkgs+=("$dep"); done < <(
    apt_private "$suite" apt-cache depends --no-recommends --no-suggests "linux-headers-$abi" 2>/dev/null \
      | sed -n 's/^ *Depends: \(linux-\(headers\|kbuild\)-[^ ]*\).*/\1/p' | sort -u)
  rm -rf "$d"; mkdir -p "$d"
  say "$name: downloading ${pkgs[*]}"
  (cd "$d" && apt_private "$suite" apt-get download "${pkgs[@]}" >/dev/null)
  printf '%s\n' "$abi" > "$d/resolved"
}

# -- root filesystem (once) ----------------------------------------------------------
ROOTFS="$CACHE/rootfs"
IMAGE="$CACHE/rootfs.img"
CHROOT_MOUNTS=()
chroot_mount() {
  local m
  for m in proc sys dev; do
    mount --bind "/$m" "$ROOTFS/$m"
    CHROOT_MOUNTS+=("$ROOTFS/$m")
  done
}
chroot_umount() {
  local i
  for ((i=${#CHROOT_MOUNTS[@]}-1; i>=0; i--)); do umount -l "${CHROOT_MOUNTS[$i]}" || true; done
  CHROOT_MOUNTS=()
}
trap chroot_umount EXIT

build_rootfs() {
  local stamp="$ROOTFS/.roar-vm-rootfs" want
  want="$(sha256sum < "$HERE/guest/roar-vm-test.service" | cut -c1-16) $ROOTFS_REV $GUEST_PY_DEPS"
  [[ -f $stamp && "$(cat "$stamp")" == "$want" && $REFRESH -eq 0 ]] && return 0
  # gcc: the tests build the compiled `roar` launcher (tests/conftest.py launcher_bin);
  # a root filesystem from before it had none: made again
  if [[ ! -x $ROOTFS/usr/bin/python3 || ! -x $ROOTFS/usr/bin/gcc ]]; then
    # never into a chroot's bind mounts (/proc, /sys, /dev) a killed run left behind
    local mounts; mounts="$(findmnt -rn -o TARGET)"  # whole: grep -q in a pipe under pipefail
    if grep -q "^$ROOTFS/" <<< "$mounts"; then
      die "something is still mounted below $ROOTFS (a killed run?): unmount it first"
    fi
    rm -rf --one-file-system "$ROOTFS" "$ROOTFS.tmp"
    say "debootstrap $ROOT_SUITE (once; several minutes)"
    debootstrap --variant=minbase \
      --include=systemd-sysv,udev,kmod,initramfs-tools,iproute2,procps,python3,python3-venv,python3-pip,python3-bpfcc,ca-certificates,zstd,xz-utils,util-linux,gcc,libc6-dev \
      "$ROOT_SUITE" "$ROOTFS.tmp" "$MIRROR" > "$CACHE/debootstrap.log" 2>&1 \
      || die "debootstrap failed; see $CACHE/debootstrap.log"
    mv "$ROOTFS.tmp" "$ROOTFS"
  fi
  say "configuring the root filesystem"
  # wheels are fetched by the host's pip (its index and CA configuration apply;
  # host and guest are both Debian 12, Python 3.11) and installed offline
  local pip=python3
  [[ -x $REPO/.venv/bin/python ]] && pip="$REPO/.venv/bin/python"
  mkdir -p "$ROOTFS/opt/roar-wheels"
  # shellcheck disable=SC2086
  "$pip" -m pip download -q -d "$ROOTFS/opt/roar-wheels" --only-binary=:all: \
    --python-version 3.11 $GUEST_PY_DEPS 2>&1 | sed "/^WARNING: Location '.*' is ignored/d" >&2
  [[ ${PIPESTATUS[0]} -eq 0 ]] || die "pip download of the guest's dependencies failed"
  chroot_mount
  chroot "$ROOTFS" /usr/bin/env -u PIP_FIND_LINKS /bin/sh -ec "
    [ -x /opt/roar-venv/bin/python ] || python3 -m venv --system-site-packages /opt/roar-venv
    /opt/roar-venv/bin/pip install -q --disable-pip-version-check --no-index \
      --find-links /opt/roar-wheels $(printf "'%s' " $GUEST_PY_DEPS)
    /opt/roar-venv/bin/python -c 'import bcc, click, lmdb, xxhash, networkx, pytest, hypothesis'
  " || die "installing roar's Python dependencies in the guest failed"
  chroot_umount
  echo roar-vm > "$ROOTFS/etc/hostname"
  printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' > "$ROOTFS/etc/fstab"
  chroot "$ROOTFS" passwd -d root >/dev/null
  printf 'virtio_pci\nvirtio_blk\next4\n' >> "$ROOTFS/etc/initramfs-tools/modules"
  sort -u -o "$ROOTFS/etc/initramfs-tools/modules" "$ROOTFS/etc/initramfs-tools/modules"
  install -m 644 "$HERE/guest/roar-vm-test.service" "$ROOTFS/etc/systemd/system/"
  ln -sf /etc/systemd/system/roar-vm-test.service \
    "$ROOTFS/etc/systemd/system/multi-user.target.wants/roar-vm-test.service"
  # nothing in the guest should wait for a network or a login
  ln -sf /dev/null "$ROOTFS/etc/systemd/system/getty@tty1.service"
  ln -sf /dev/null "$ROOTFS/etc/systemd/system/serial-getty@ttyS0.service"
  echo "$want" > "$stamp"
  rm -f "$IMAGE"
}

# install_kernel NAME: unpack its debs into the root filesystem, depmod, initramfs
install_kernel() {
  local name=$1 d="$CACHE/debs/$1" abi out="$CACHE/kernels/$1"
  abi="$(cat "$d/resolved")"
  if [[ -f $out/vmlinuz && -f $out/initrd.img && "$(cat "$out/abi" 2>/dev/null)" == "$abi" \
        && -L $ROOTFS/usr/lib/modules/$abi/build ]]; then
    return 0
  fi
  say "$name: installing kernel $abi into the root filesystem"
  local deb
  for deb in "$d"/*.deb; do
    # no maintainer scripts: depmod and the initramfs are made below; keep the
    # merged-/usr symlinks (/lib -> usr/lib) that bullseye's packages would replace
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$ROOTFS" --keep-directory-symlink
  done
  chroot_mount
  chroot "$ROOTFS" depmod -a "$abi"
  chroot "$ROOTFS" mkinitramfs -o "/boot/initrd.img-$abi" "$abi" 2> "$CACHE/mkinitramfs-$name.log" \
    || { chroot_umount; die "$name: mkinitramfs failed; see $CACHE/mkinitramfs-$name.log"; }
  chroot_umount
  mkdir -p "$out"
  cp "$ROOTFS/boot/vmlinuz-$abi" "$out/vmlinuz"
  cp "$ROOTFS/boot/initrd.img-$abi" "$out/initrd.img"
  echo "$abi" > "$out/abi"
  rm -f "$IMAGE"
}

build_image() {
  [[ -f $IMAGE ]] && return 0
  say "making the guest disk image from the root filesystem"
  rm -f "$IMAGE.tmp"
  mkfs.ext4 -q -F -L roar-vm -d "$ROOTFS" "$IMAGE.tmp" "$IMAGE_SIZE" \
    || die "mkfs.ext4 -d failed"
  mv "$IMAGE.tmp" "$IMAGE"
}

# -- boot one kernel ------------------------------------------------------------------
RUNS="$CACHE/runs"
boot() {  # boot NAME -> sets VERDICT and WHY; results in $RUNS/NAME
  local name=$1 out="$RUNS/$1" k="$CACHE/kernels/$1"
  rm -rf "$out"; mkdir -p "$out/results"
  qemu-img create -q -f qcow2 -b "$IMAGE" -F raw "$out/overlay.qcow2"
  # the compiled event model travels built (the guest has a C compiler for the
  # launcher but no Python headers; the tests never fall back to the Python
  # model): built in place like tests/conftest.py
  local py=python3
  [[ -x $REPO/.venv/bin/python ]] && py="$REPO/.venv/bin/python"
  (cd "$REPO" && "$py" setup.py -q build_ext --inplace > "$out/build_ext.log" 2>&1) \
    || say "$name: building roar/record/_cmodel.c failed (see $out/build_ext.log)"
  # the project also travels as a tar on a read-only disk: 5.10's 9p client
  # handed the guest files with runs of zero bytes when copying from the share
  tar -C "$REPO" --exclude=./.git --exclude=./.venv --exclude='__pycache__' -cf "$out/project.tar" .
  truncate -s %512 "$out/project.tar"
  local tests=smoke; [[ $FULL -eq 1 ]] && tests=full
  local cmdline="root=/dev/vda rw console=ttyS0 quiet loglevel=4 panic=-1"
  cmdline+=" systemd.show_status=0 roar.expect=${EXPECT[$name]} roar.tests=$tests"
  cmdline+=" roar.verifier=$VERIFIER"
  # the BPF LSM is off unless named in lsm= (Debian's own list, plus bpf)
  [[ $MEASURE -eq 1 ]] && cmdline+=" roar.measure=1 lsm=lockdown,capability,landlock,yama,apparmor,tomoyo,bpf"
  cmdline+=" ${EXTRA[$name]}"
  local rc=0
  timeout --foreground -k 10 "$LIMIT" qemu-system-x86_64 "${ACCEL[@]}" -m 2048 -smp 2 \
    -nographic -no-reboot -monitor none -serial "file:$out/console.log" \
    -kernel "$k/vmlinuz" -initrd "$k/initrd.img" -append "$cmdline" \
    -drive "file=$out/overlay.qcow2,if=virtio,format=qcow2" \
    -drive "file=$out/project.tar,if=virtio,format=raw,readonly=on" \
    -virtfs "local,path=$REPO,mount_tag=roar,security_model=none,readonly=on" \
    -virtfs "local,path=$out/results,mount_tag=results,security_model=none" \
    -nic none > "$out/qemu.log" 2>&1 || rc=$?
  rm -f "$out/overlay.qcow2" "$out/project.tar"
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then
    VERDICT=FAIL WHY="timed out after ${LIMIT}s (console: $out/console.log)"; return
  fi
  if [[ ! -f $out/results/done ]]; then
    VERDICT=FAIL WHY="the guest suite did not finish (qemu exit $rc; console: $out/console.log)"
    return
  fi
  if [[ $MEASURE -eq 1 ]]; then
    sed 's/^/  /' "$out/results/measure.txt" >&2 || true
    if [[ "$(cat "$out/results/measure.rc" 2>/dev/null)" == 0 ]] \
        && grep -q '^hooks: done' "$out/results/measure.txt"; then
      VERDICT=PASS WHY="hook costs measured ($out/results/measure.txt)"
    else
      VERDICT=FAIL WHY="vm-tests/guest/hooks.py did not complete ($out/results/measure.txt)"
    fi
    return
  fi
  local verdict
  verdict="$(python3 "$HERE/judge.py" "${EXPECT[$name]}" "$out/results")" && VERDICT=PASS \
    || VERDICT=FAIL
  WHY="$verdict"
}

# -- main (a function: bash reads it whole, so editing this file mid-run is safe) ------
main() {
build_rootfs
for n in "${WANT[@]}"; do fetch_kernel "$n"; install_kernel "$n"; done
build_image

failed=0
for n in "${WANT[@]}"; do
  t0=$SECONDS
  boot "$n"
  printf 'vm-tests: %s %-14s %-24s %-3s %4ds  %s\n' "$VERDICT" "$n" \
    "$(cat "$CACHE/kernels/$n/abi")" "$ACCEL_KIND" $((SECONDS - t0)) "$WHY"
  [[ $VERDICT == PASS ]] || failed=1
done
exit "$failed"
}
main
