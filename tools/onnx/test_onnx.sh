#!/usr/bin/env bash
# The ONNX model matrix: torchvision architectures x (QDQ, QOperator) x (u8, s8 activations) x
# (per-channel, per-tensor int8 weights), each exported (seeded random weights), quantized by
# onnxruntime's quantize_static (reduce_range=True), run by ONNX Runtime and by `qfuse run` on the
# GPU and with --cpu, and compared bit for bit. One line per case (PASS / FAIL: first mismatch /
# REFUSED: qfuse's error) and a final "N passed, M failed, K refused".
#
#   tools/onnx/test_onnx.sh [--models resnet18,mobilenet_v2] [--configs QOperator_u8] [--markdown] ...
#
# Environment: PYTHON (default: python3; needs tools/onnx/requirements.txt), QFUSE (default: the
# release binary, built here with `cargo build --release --bin qfuse`), SIZE (default 64), BATCH
# (default 2). Extra arguments go to tools/onnx/zoo_onnx.py.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
if [ -z "${QFUSE:-}" ]; then
    (cd "$root" && cargo build --release --bin qfuse)
    QFUSE="${CARGO_TARGET_DIR:-$root/target}/release/qfuse"
fi
# lavapipe and other Vulkan drivers want a runtime dir
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
models="$("$PYTHON" -c "import sys; sys.path.insert(0, '$here'); import zoo_onnx; print(','.join(zoo_onnx.QFUSE_MODELS))" 2>/dev/null)"
exec "$PYTHON" "$here/zoo_onnx.py" --qfuse "$QFUSE" --no-reference --batch "${BATCH:-2}" --size "${SIZE:-64}" \
    --models "$models" "$@"
