#!/usr/bin/env bash
# The test command: makes sure a Vulkan driver is present (installing Mesa's
# software driver, lavapipe, on Debian/Ubuntu if no Vulkan ICD is found), then
# runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
have_icd() {
  for f in /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json; do [ -e "$f" ] && return 0; done
  return 1
}
if ! have_icd; then
  echo "tools/test.sh: no Vulkan driver found; installing Mesa's software Vulkan driver (mesa-vulkan-drivers)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq mesa-vulkan-drivers >/dev/null
fi
# The GPU tests run one adapter at a time: the software driver uses every core per dispatch.
# --workspace: the library and the benchmark harness (qfuse-bench/).
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
cargo test --release --workspace -- --nocapture --test-threads=1 "$@"
