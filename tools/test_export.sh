#!/usr/bin/env bash
# End-to-end check of the exporter against the qfuse CLI.
#
#   tools/test_export.sh [--quick] [--export-only] [--keep] [--cpu-only] [CASES]
#
# CASES: comma-separated case names or fnmatch patterns, e.g.
#   'tv_fx_*_qnnpack', 'tv_eager_resnet*,resnet_fx' (`tools/export_roundtrip.py
#   list` prints every name). Default: the whole matrix:
#   - the small cases (digits, ResNet-, MobileNetV2-style nets, MLPs, ShuffleNetV2,
#     shape and activation toys ..., FX and eager, engines fbgemm/qnnpack/x86/onednn);
#   - tv_fx_<model>_<engine>: torchvision.models (19 nets) through
#     prepare_fx/convert_fx with get_default_qconfig_mapping(engine);
#   - tv_eager_<model>_<engine>: every torchvision.models.quantization net
#     (fuse_model, QuantStub), engines x86, fbgemm, qnnpack.
#   Random weights, randomized BatchNorm, calibration on random data, batch 2 of
#   64x64 (inception_v3 80x80).
# --quick: only the small cases (the old set, a few minutes).
#
# 1. Makes a Python venv in .venv (repo root, gitignored) from
#    tools/requirements.txt unless it exists. QFUSE_VENV=/path uses another.
# 2. tools/export_roundtrip.py export: quantizes and exports each case (package
#    python/qfuse_export), writes a random input and PyTorch's output. A case the
#    exporter refuses is "failed", or "pending" when it needs an op that is being
#    added (quantized BatchNorm2d, PReLU, ConvTranspose2d).
# 3. tools/qfuse_model.py validates each exported file.
# 4. qfuse run MODEL on the GPU and with --cpu (the reference path), each
#    compared bit for bit with PyTorch's output (export_roundtrip.py compare).
# Prints one line per case (PASS / FAIL / PENDING, with the reason and notes, e.g.
# where PyTorch's own output is wrong) and "N passed, M failed" (and pending).
# --export-only stops after step 3 (no Rust needed); --cpu-only skips the GPU
# run. Work files go to a temp dir (kept with --keep, or set QFUSE_RT_DIR).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

EXPORT_ONLY=0; KEEP=0; CASES=""; QUICK=0; CPU_ONLY=0
for a in "$@"; do
  case "$a" in
    --export-only) EXPORT_ONLY=1 ;;
    --keep) KEEP=1 ;;
    --quick) QUICK=1 ;;
    --cpu-only) CPU_ONLY=1 ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    -*) echo "unknown option $a" >&2; exit 2 ;;
    *) CASES="$a" ;;
  esac
done
T0=$SECONDS

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
[ "$QUICK" = 1 ] && ARGS+=(--quick)
"$PY" tools/export_roundtrip.py "${ARGS[@]}"
echo "== export took $((SECONDS - T0)) s"

# status.tsv: NAME<TAB>ok|pending|failed<TAB>note
mapfile -t LINES < "$DIR/status.tsv"

BIN=""
if [ "$EXPORT_ONLY" = 0 ]; then
  echo "== building qfuse"
  cargo build --release --bin qfuse
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/qfuse"
fi

pass=0; fail=0; pend=0; RESULTS=()
for line in "${LINES[@]}"; do
  IFS=$'\t' read -r n st note <<< "$line"
  if [ "$st" = pending ]; then
    pend=$((pend + 1)); RESULTS+=("PENDING $n: $note"); continue
  fi
  if [ "$st" != ok ]; then
    fail=$((fail + 1)); RESULTS+=("FAIL    $n: $note"); continue
  fi
  echo "-- $n"
  why=""
  if ! "$PY" tools/qfuse_model.py --quiet "$DIR/$n.safetensors"; then
    why="qfuse_model.py rejects the exported file"
  else
    PATHS=(gpu cpu); [ "$EXPORT_ONLY" = 1 ] && PATHS=(); [ "$CPU_ONLY" = 1 ] && PATHS=(cpu)
    for p in "${PATHS[@]}"; do
      flag=(); [ "$p" = cpu ] && flag=(--cpu)
      if ! out=$("$BIN" run "$DIR/$n.safetensors" --input "$DIR/$n.input.npy" \
                   --output "$DIR/$n.$p.npy" "${flag[@]}" 2>&1); then
        echo "$out"; why+="${why:+; }$p: qfuse run failed: $(echo "$out" | tail -1)"; continue
      fi
      if ! cmp=$("$PY" tools/export_roundtrip.py compare "$DIR/$n.expected.npy" "$DIR/$n.$p.npy"); then
        echo "$cmp"; why+="${why:+; }$p: $(echo "$cmp" | head -1)"
      fi
    done
  fi
  if [ -z "$why" ]; then
    pass=$((pass + 1)); RESULTS+=("PASS    $n${note:+ (note: $note)}")
  else
    fail=$((fail + 1)); RESULTS+=("FAIL    $n: $why${note:+ (note: $note)}")
  fi
done

echo "== results ($((SECONDS - T0)) s)"
printf '%s\n' "${RESULTS[@]}"
if [ "$EXPORT_ONLY" = 1 ]; then
  echo "export-only: $pass exported and validated, $fail failed, $pend pending"
else
  echo "$pass passed, $fail failed${pend:+, $pend pending}"
fi
[ "$fail" -eq 0 ]
