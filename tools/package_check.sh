#!/usr/bin/env bash
# The crate as published builds and runs on its own: package it (`cargo
# package`), unpack the .crate into a temporary folder, and there check that
# the library without default features depends on neither clap nor indicatif,
# build the binary and every shipped example and bench, then run the digits
# example (it reads the test images shipped with the crate) and the binary on
# the bundled model. (Building the library without default features as well
# would rebuild wgpu and every proc-macro crate, since clap's derive changes
# syn's features: minutes of CI for what `cargo tree` shows.)
# Run by .ci/run after tools/test.sh; needs an adapter like the GPU tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# Share the repository's build folder: only qfuse itself is rebuilt.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
rm -f "$CARGO_TARGET_DIR/package/qfuse-$version.crate"
cargo package -p qfuse --allow-dirty --no-verify --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xzf "$CARGO_TARGET_DIR/package/qfuse-$version.crate" -C "$work"
cd "$work/qfuse-$version"
echo "tools/package_check.sh: the packaged crate holds $(find . -type f | wc -l) files"
cli_deps=$(cargo tree --locked --no-default-features -e normal --prefix none \
  | grep -E '^(clap|indicatif) ' || true)
if [ -n "$cli_deps" ]; then
  echo "tools/package_check.sh: the library without default features depends on: $cli_deps" >&2
  exit 1
fi
# Cargo would reuse qfuse's own artifacts built from the repository (same
# sources, older times): build the unpacked crate's anew.
cargo clean --release --locked -p qfuse --quiet
cargo build --release --locked --bins --examples --benches
"$CARGO_TARGET_DIR/release/examples/digits"
"$CARGO_TARGET_DIR/release/qfuse" run bundled:digits \
  --input tests/data/digits/test_images.npy --output "$work/out.npy"
echo "tools/package_check.sh: the packaged crate builds and runs"
