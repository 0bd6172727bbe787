#!/bin/sh
# Regenerate src/onnx/proto/onnx.rs (the prost types of ONNX's schema) from
# src/onnx/proto/onnx.proto. Needs only cargo (protox compiles the .proto; no protoc).
# To move to a newer ONNX schema, copy onnx.proto from the `onnx` Python package
# (site-packages/onnx/onnx.proto) over src/onnx/proto/onnx.proto first, then run this.
set -e
root=$(cd "$(dirname "$0")/../.." && pwd)
cargo run --quiet --release --manifest-path "$root/tools/onnx/gen_proto/Cargo.toml" -- "$root"
rustfmt --edition 2021 "$root/src/onnx/proto/onnx.rs"
