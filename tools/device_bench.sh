#!/usr/bin/env bash
# Runs the qfuse benchmark on a lent NVIDIA machine (H200) through Vulkan, as
# one prepared command (see /work/.library/device/README.md). Nothing is
# compiled there: the release example binary built here travels with the call.
#
# Here, once, in the repository root of the checkout the device tool sends:
#   echo /.gl/ >>.git/info/exclude; echo /.devbin/ >>.git/info/exclude
#   mkdir -p .gl /tmp/amd64/partial; o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
#   apt-get $o update; (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
#   cargo build --release --example bench && mkdir -p .devbin && cp target/release/examples/bench .devbin/
# Then call the device tool with carry [".gl", ".devbin"], timeout_s 540, and
#   command: bash tools/device_bench.sh
# Results come back under $OUT: bench.json, bench.md, bench.log, pytorch.json,
# pytorch.md, env.txt.
#
# Env: QFUSE_BENCH_ARGS (default: full mode, batch 1,16), QFUSE_PYTORCH=0 to
# skip the PyTorch CPU comparison, QFUSE_BENCH_TIMEOUT (seconds, default 420).
set -u
OUT=${OUT:-/tmp/qfuse-out}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."

# Vulkan loader: unpack the carried .debs if the image has none.
if ! ldconfig -p | grep -q libvulkan.so.1; then
    for f in .gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
    ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ] && ! ls /usr/share/vulkan/icd.d/*nvidia* >/dev/null 2>&1 && ! ls /etc/vulkan/icd.d/*nvidia* >/dev/null 2>&1; then
    export VK_DRIVER_FILES=$icd
    export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
export WGPU_BACKEND=${WGPU_BACKEND:-vulkan}

bin=${QFUSE_BENCH_BIN:-}
for c in .devbin/bench target/release/examples/bench; do
    [ -z "$bin" ] && [ -x "$c" ] && bin=$c
done
{
    echo "date: $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv 2>&1
    echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-}"
    ldconfig -p | grep -i vulkan
    echo "binary: $bin"
    nproc
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if [ -z "$bin" ]; then
    echo "no bench binary: build it here and carry .devbin (see the top of this script)" >&2
    exit 2
fi

# shellcheck disable=SC2086
timeout "${QFUSE_BENCH_TIMEOUT:-420}" "$bin" ${QFUSE_BENCH_ARGS:---batch 1,16} --json "$OUT/bench.json" >"$OUT/bench.md" 2>"$OUT/bench.log"
rc=$?
echo "bench exit status: $rc"
tail -5 "$OUT/bench.log"

if [ "${QFUSE_PYTORCH:-1}" != 0 ] && command -v python3 >/dev/null; then
    PYTHONUNBUFFERED=1 timeout 120 python3 tools/bench_pytorch.py --budget 0.5 --json "$OUT/pytorch.json" >"$OUT/pytorch.md" 2>&1 || echo "pytorch baseline failed: see pytorch.md"
fi
# The table last: the reply shows the end of the output.
cat "$OUT/bench.md"
[ -f "$OUT/pytorch.md" ] && cat "$OUT/pytorch.md"
exit $rc
