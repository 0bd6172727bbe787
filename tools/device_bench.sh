#!/usr/bin/env bash
# Runs the qfuse benchmark on a lent NVIDIA machine (H200) through Vulkan, as
# one prepared command (see /work/.library/device/README.md). Nothing is
# compiled there: the release example binary built here travels in .devbin/
# (the example is qfuse-bench/examples/bench.rs, a workspace default member,
# so the cargo command below works from the repository root).
#
# Here, once, in the repository root of the checkout the device tool sends
# (the main checkout; .gl/ and .devbin/ must be ignored by .git/info/exclude):
#   grep -qx /.gl/ .git/info/exclude || echo /.gl/ >>.git/info/exclude
#   grep -qx /.devbin/ .git/info/exclude || echo /.devbin/ >>.git/info/exclude
#   ls .gl/*.deb || { mkdir -p .gl /tmp/amd64/partial; o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
#     apt-get $o update; (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2); }
#   cargo build --release --example bench && mkdir -p .devbin && cp target/release/examples/bench .devbin/
# Then call the device tool with carry [".gl", ".devbin"], timeout_s 480, and
#   command: bash tools/device_bench.sh
#
# It runs the full benchmark (224x224, batch 1 and 16) once per network, each
# under its own time limit, so a network that runs out of time still leaves
# the other's results; then PyTorch's CPU int8 vs f32 comparison if python3
# there can import torch. Results come back under $OUT (8 files at most):
#   env.txt  bench_resnet18.md  bench_resnet18.json  bench_mobilenet_v2.md
#   bench_mobilenet_v2.json  bench.log  pytorch.md  pytorch.json
#
# Env: QFUSE_BENCH_ARGS (default: --resolution 224 --batch 1,16 --budget 0.25),
# QFUSE_BENCH_TIMEOUT (seconds per network, default 150), QFUSE_PYTORCH=0 to
# skip PyTorch, QFUSE_PYTORCH_TIMEOUT (default 60). Defaults end within about
# 6 minutes.
set -u
OUT=${OUT:-/tmp/qfuse-out}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
t0=$(date +%s)

# The Vulkan loader and driver (see tools/device_vulkan.sh).
. tools/device_vulkan.sh

bin=${QFUSE_BENCH_BIN:-}
for c in .devbin/bench target/release/examples/bench; do
    [ -z "$bin" ] && [ -x "$c" ] && bin=$c
done
{
    echo "date: $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv 2>&1
    echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-}"
    ldconfig -p | grep -i libvulkan
    echo "binary: ${bin:-none}"
    echo "cpus: $(nproc)"
    python3 -c 'import torch; print("torch", torch.__version__)' 2>&1 | tail -1
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if [ -z "$bin" ]; then
    echo "no bench binary: build it here and carry .devbin (see the top of this script)" >&2
    exit 2
fi

rc=0
: >"$OUT/bench.log"
for net in resnet18 mobilenet_v2; do
    echo "== $net ($(($(date +%s) - t0)) s in)"
    # shellcheck disable=SC2086
    timeout "${QFUSE_BENCH_TIMEOUT:-150}" "$bin" ${QFUSE_BENCH_ARGS:---resolution 224 --batch 1,16 --budget 0.25} \
        --networks "$net" --json "$OUT/bench_$net.json" >"$OUT/bench_$net.md" 2>>"$OUT/bench.log"
    r=$?
    echo "$net: exit status $r"
    [ $r -ne 0 ] && rc=$r && tail -5 "$OUT/bench.log"
    # The adapter the benchmark picked (name, backend, driver).
    grep -m1 '^adapter:' "$OUT/bench_$net.md"
done

if [ "${QFUSE_PYTORCH:-1}" != 0 ] && python3 -c 'import torch' >/dev/null 2>&1; then
    echo "== pytorch CPU ($(($(date +%s) - t0)) s in)"
    PYTHONUNBUFFERED=1 timeout "${QFUSE_PYTORCH_TIMEOUT:-60}" python3 tools/bench_pytorch.py --resolution 224 --batch 1,16 --budget 0.5 \
        --json "$OUT/pytorch.json" >"$OUT/pytorch.md" 2>&1 || echo "pytorch baseline failed or ran out of time: see pytorch.md"
else
    echo "pytorch: skipped (QFUSE_PYTORCH=0 or python3 cannot import torch)"
fi
echo "done in $(($(date +%s) - t0)) s"
# The tables last: the reply shows the end of the output.
for net in resnet18 mobilenet_v2; do
    sed -n '/^## Targets/,/^## Notes/{/^## Notes/!p}' "$OUT/bench_$net.md"
    grep -A6 'end to end: the real network' "$OUT/bench_$net.md"
done
[ -f "$OUT/pytorch.md" ] && tail -15 "$OUT/pytorch.md"
exit $rc
