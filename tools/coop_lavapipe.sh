#!/usr/bin/env bash
# The tensor-core kernel on real cooperative matrices without a GPU.
#
# Mesa's software Vulkan driver, lavapipe, has VK_KHR_cooperative_matrix from
# Mesa 26 on (8x8x8 f16 x f16 -> f32 on subgroups of 8: qfuse's Kernel::Coop8,
# the same coop.wgsl as the 16x16x16 kernel of NVIDIA's tensor cores). Debian
# ships it in trixie-backports; the Debian of CI and of this repository's
# machines (bookworm, Mesa 22) is too old for it, and its C library too old
# for trixie's driver. So this script makes a minimal Debian trixie root
# (debootstrap) under target/coop-root, installs that lavapipe in it (and
# spirv-tools: the coop kernels' SPIR-V goes through its validator first),
# builds the test binaries here, and runs them in the root (chroot; the repository
# bind-mounted at its own path, where the binaries find tests/data) with
# QFUSE_EXPECT_COOPERATIVE_MATRIX=8 (a driver without the configuration fails
# the run rather than letting the tensor-core tests skip) and
# QFUSE_COOPERATIVE_MATRIX=1 (the tensor-core kernel is then the default of
# every conv layer of one group, as on a GPU: models built with
# GpuModel::new run it).
#
#   bash tools/coop_lavapipe.sh [TEST ...]     (tests/TEST.rs; default: coop)
#
# .ci/run runs it after tools/test.sh. Needs root (or sudo), debootstrap
# (installed when missing) and Debian's mirror; the root is kept for the next
# run (delete target/coop-root to renew it).
set -euo pipefail
cd "$(dirname "$0")/.."
# debootstrap and chroot live in sbin, which a non-login root shell may lack.
export PATH="$PATH:/usr/sbin:/sbin"
repo=$PWD
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(coop)
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
mirror=${QFUSE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$repo/target/coop-root

if [ ! -e "$root/.qfuse-ready" ]; then
  if ! command -v debootstrap >/dev/null; then
    echo "tools/coop_lavapipe.sh: installing debootstrap"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq debootstrap >/dev/null
  fi
  echo "tools/coop_lavapipe.sh: a Debian trixie root in $root (debootstrap)"
  # Twice, for a mirror that drops a connection.
  for try in 1 2; do
    $SUDO rm -rf "$root"
    mkdir -p "$root"
    if $SUDO debootstrap --variant=minbase trixie "$root" "$mirror" >"$repo/target/coop-root.log" 2>&1; then
      break
    fi
    tail -20 "$repo/target/coop-root.log"
    [ "$try" = 2 ] && { echo "tools/coop_lavapipe.sh: debootstrap failed" >&2; exit 1; }
  done
  echo "deb $mirror trixie-backports main" | $SUDO tee "$root/etc/apt/sources.list.d/backports.list" >/dev/null
  $SUDO chroot "$root" apt-get update -qq || $SUDO chroot "$root" apt-get update -qq
  install="apt-get install -y -qq -t trixie-backports mesa-vulkan-drivers libvulkan1 spirv-tools"
  $SUDO chroot "$root" env DEBIAN_FRONTEND=noninteractive $install >/dev/null ||
    $SUDO chroot "$root" env DEBIAN_FRONTEND=noninteractive $install >/dev/null
  $SUDO touch "$root/.qfuse-ready"
fi
echo "tools/coop_lavapipe.sh: $($SUDO chroot "$root" dpkg-query -W -f '${Package} ${Version}' mesa-vulkan-drivers)"

# The test executables (their paths, from cargo's JSON messages).
args=()
for t in "${tests[@]}"; do args+=(--test "$t"); done
exes=$(cargo test --release --no-run --message-format=json "${args[@]}" |
  python3 tools/cargo_test_exes.py | cut -d' ' -f2)
[ -n "$exes" ] || { echo "tools/coop_lavapipe.sh: no test binary for ${tests[*]}" >&2; exit 1; }

mounted=()
cleanup() {
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do $SUDO umount "${mounted[i]}" || true; done
}
trap cleanup EXIT
bind() { # bind SRC DEST-inside-root
  $SUDO mkdir -p "$root$2"
  $SUDO mount --bind "$1" "$root$2"
  mounted+=("$root$2")
}
bind /dev /dev
$SUDO mkdir -p "$root/proc"
$SUDO mount -t proc proc "$root/proc"
mounted+=("$root/proc")
bind "$repo" "$repo"

status=0
# The coop kernels' SPIR-V as wgpu's Vulkan backend writes it (naga, split-K
# overrides resolved), through trixie's spirv-val (bookworm's predates
# SPV_KHR_cooperative_matrix).
spv=$repo/target/coop-spv
rm -rf "$spv" && mkdir -p "$spv"
QFUSE_WRITE_SPIRV=$spv cargo test --release -q --test shaders coop_kernel_validates_and_writes_spirv >/dev/null
for f in "$spv"/*.spv; do
  if $SUDO chroot "$root" spirv-val --target-env vulkan1.1 "$f"; then
    echo "tools/coop_lavapipe.sh: spirv-val: $(basename "$f") valid"
  else
    echo "tools/coop_lavapipe.sh: spirv-val: $(basename "$f") INVALID" >&2
    status=1
  fi
done
[ "$(ls "$spv"/*.spv | wc -l)" -eq 3 ] || { echo "tools/coop_lavapipe.sh: expected 3 SPIR-V modules in $spv" >&2; status=1; }
for exe in $exes; do
  echo "tools/coop_lavapipe.sh: $(basename "$exe") on Mesa's lavapipe with cooperative matrices"
  $SUDO chroot "$root" env -i PATH=/usr/bin:/bin HOME=/tmp XDG_RUNTIME_DIR=/tmp \
    VK_ICD_FILENAMES=/usr/share/vulkan/icd.d/lvp_icd.json WGPU_BACKEND=vulkan \
    QFUSE_EXPECT_COOPERATIVE_MATRIX=8 QFUSE_COOPERATIVE_MATRIX=1 RUST_BACKTRACE=1 \
    "$exe" --nocapture --test-threads=1 || status=1
done
exit $status
