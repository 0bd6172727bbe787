#!/usr/bin/env bash
# End-to-end check of the exporter against the qfuse CLI.
#
#   tools/test_export.sh [--export-only] [--keep] [CASE,CASE,...]
#
# 1. Makes a Python venv in .venv (repo root, gitignored) from
#    tools/requirements.txt unless it exists. QFUSE_VENV=/path uses another.
# 2. tools/export_roundtrip.py export: builds the digits CNN, a ResNet-style
#    net, a MobileNetV2-style net, an MLP, ShuffleNetV2 and a toy of shape ops
#    (gather) ... (FX and eager mode, fbgemm and qnnpack), exports each with
#    tools/qfuse_export.py, and writes a random
#    input and PyTorch's output.
# 3. tools/qfuse_model.py validates every exported file.
# 4. For each case: cargo run --release --bin qfuse -- run MODEL --input X.npy
#    --output Y.npy, then export_roundtrip.py compare (bit for bit).
# --export-only stops after step 3 (no Rust needed). Work files go to a temp
# dir (kept with --keep, or set QFUSE_RT_DIR).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

EXPORT_ONLY=0; KEEP=0; CASES=""
for a in "$@"; do
  case "$a" in
    --export-only) EXPORT_ONLY=1 ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    -*) echo "unknown option $a" >&2; exit 2 ;;
    *) CASES="$a" ;;
  esac
done

VENV="${QFUSE_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
if [ ! -x "$PY" ] || ! "$PY" -c "import torch, torchvision, numpy, safetensors, sklearn" 2>/dev/null; then
  echo "== creating venv $VENV from tools/requirements.txt"
  python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --upgrade pip
  "$PY" -m pip install --quiet -r tools/requirements.txt
fi

if [ -n "${QFUSE_RT_DIR:-}" ]; then
  DIR="$QFUSE_RT_DIR"; mkdir -p "$DIR"
else
  DIR="$(mktemp -d -t qfuse-rt.XXXXXX)"
  if [ "$KEEP" = 0 ]; then trap 'rm -rf "$DIR"' EXIT; fi
fi
echo "== exporting into $DIR"
ARGS=(export "$DIR")
[ -n "$CASES" ] && ARGS+=(--cases "$CASES")
"$PY" tools/export_roundtrip.py "${ARGS[@]}"

mapfile -t NAMES < "$DIR/cases.txt"
echo "== validating ${#NAMES[@]} model files"
FILES=(); for n in "${NAMES[@]}"; do FILES+=("$DIR/$n.safetensors"); done
"$PY" tools/qfuse_model.py --quiet "${FILES[@]}"

if [ "$EXPORT_ONLY" = 1 ]; then
  echo "== --export-only: skipping the qfuse CLI"
  echo "export-only: ${#NAMES[@]} models exported and validated"
  exit 0
fi

echo "== building qfuse"
cargo build --release --bin qfuse
pass=0; fail=0; failed=()
for n in "${NAMES[@]}"; do
  echo "-- $n"
  if cargo run --quiet --release --bin qfuse -- run "$DIR/$n.safetensors" \
       --input "$DIR/$n.input.npy" --output "$DIR/$n.actual.npy" \
     && "$PY" tools/export_roundtrip.py compare "$DIR/$n.expected.npy" "$DIR/$n.actual.npy"; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1)); failed+=("$n")
  fi
done
[ "$fail" -gt 0 ] && echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
