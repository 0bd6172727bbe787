#!/usr/bin/env bash
# Prepares, here, everything tools/device_h200.sh runs on a lent NVIDIA
# machine (see /work/.library/device/README.md): nothing is compiled there.
#
#   bash tools/device_prepare.sh
#
# then call the device tool from the repository root with
#   carry: [".gl", ".devbin"], timeout_s: 590,
#   command: bash tools/device_h200.sh            (all stages)
#            bash tools/device_h200.sh tests       (or: bench, tuned; any list)
#
# It writes (both ignored through .git/info/exclude):
#   .gl/      the Vulkan loader's .debs (the device image has none)
#   .devbin/  stripped release binaries: the benchmark, and the test
#             binaries of the GPU checks of issue #11 (tests/coop.rs,
#             tests/tune.rs, tests/conformance.rs, tests/random_layers.rs,
#             tests/networks.rs), plus `manifest_dir`: the path the tests
#             were compiled for (they read tests/data through it; the device
#             script links it to its checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
git_dir=$(git rev-parse --git-dir)
mkdir -p "$git_dir/info"
for p in /.gl/ /.devbin/; do
    grep -qx "$p" "$git_dir/info/exclude" 2>/dev/null || echo "$p" >>"$git_dir/info/exclude"
done

if ! ls .gl/*.deb >/dev/null 2>&1; then
    mkdir -p .gl /tmp/amd64/partial
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    # shellcheck disable=SC2086
    apt-get $o update >/dev/null
    # shellcheck disable=SC2086
    (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi

tests=(coop tune conformance random_layers networks)
args=()
for t in "${tests[@]}"; do args+=(--test "$t"); done
cargo build --release --example bench
# The test executables cargo builds (their paths, from its JSON messages).
cargo test --release --no-run --message-format=json "${args[@]}" 2>/dev/null |
    python3 tools/cargo_test_exes.py >/tmp/qfuse_device_tests.txt
rm -rf .devbin
mkdir -p .devbin/tests
while read -r name exe; do
    strip -o ".devbin/tests/$name" "$exe"
done </tmp/qfuse_device_tests.txt
for t in "${tests[@]}"; do
    [ -x ".devbin/tests/$t" ] || { echo "missing test binary $t" >&2; exit 1; }
done
strip -o .devbin/bench target/release/examples/bench
echo "$root" >.devbin/manifest_dir
git rev-parse HEAD >.devbin/commit
du -sh .gl .devbin
echo "carry [\".gl\", \".devbin\"] (64 MiB at most): $(du -scm .gl .devbin | tail -1 | cut -f1) MiB"
