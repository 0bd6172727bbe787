#!/usr/bin/env bash
# Issue #11 on a lent NVIDIA H200 (Vulkan), in one call of at most 590 s:
# the tensor-core kernel's bit-exactness checks, then the benchmark (packed
# dot and tensor cores side by side, batches 1, 16, 64, 256), then the
# networks end to end with the autotuner. Prepare here first with
# `bash tools/device_prepare.sh` (it says how to call the device tool).
#
#   bash tools/device_h200.sh [tests] [bench] [tuned] [checks]
#   (default: tests bench tuned; `checks` times ResNet-18's layers with
#   wgpu's loop-bound and index-bound checks off, QFUSE_SHADER_CHECKS)
#
# Results under $OUT (they come back): env.txt, clocks.csv (SM clock every
# 200 ms through the whole call), tests.log, bench_<net>.md/.json (per-layer
# tables with both paths, the conv chain, the networks; QFUSE_AUTOTUNE=0 so
# the tensor-core and packed-dot columns are the kernels themselves),
# tuned_<net>.md/.json (networks only, autotuned) and tune_cache.json (what
# the tuner chose per shape), run.log. Each stage has its own time limit and
# the whole stays inside the call's deadline, so a stage that runs long
# still leaves the others' files.
set -u
OUT=${OUT:-/tmp/qfuse-out}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
t0=$(date +%s)
deadline=$((t0 + ${QFUSE_DEVICE_SECONDS:-570}))
stages=${*:-tests bench tuned}
exec > >(tee -a "$OUT/run.log") 2>&1

left() { echo $((deadline - $(date +%s))); }
# limit SECONDS: the smaller of SECONDS and the time left (at least 1).
limit() {
    local l
    l=$(left)
    [ "$l" -lt "$1" ] && echo $((l > 1 ? l : 1)) || echo "$1"
}

# The Vulkan loader and driver (see tools/device_vulkan.sh).
. tools/device_vulkan.sh

# The tests read tests/data through the path they were compiled in.
if [ -f .devbin/manifest_dir ]; then
    m=$(cat .devbin/manifest_dir)
    if [ ! -e "$m" ]; then
        mkdir -p "$(dirname "$m")" && ln -s "$PWD" "$m"
    fi
fi

nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv -lms 200 >"$OUT/clocks.csv" 2>&1 &
smi=$!
trap 'kill $smi 2>/dev/null' EXIT
{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(cat .devbin/commit 2>/dev/null)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv 2>&1
    echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-}"
    ldconfig -p | grep -i libvulkan
    echo "cpus: $(nproc)"
    ls -la .devbin .devbin/tests 2>&1
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
[ -x .devbin/bench ] || { echo "no .devbin: run tools/device_prepare.sh here and carry .gl and .devbin" >&2; exit 2; }

rc=0
for stage in $stages; do
    echo "== $stage ($(($(date +%s) - t0)) s in, $(left) s left)"
    case $stage in
    tests)
        # Fail where the tensor-core kernel is not offered (or its
        # self-check failed): these runs are about it (16x16x16, NVIDIA).
        export QFUSE_EXPECT_COOPERATIVE_MATRIX=16
        : >"$OUT/tests.log"
        for t in coop tune conformance networks random_layers; do
            s=$(date +%s)
            timeout "$(limit 150)" ".devbin/tests/$t" --test-threads=4 >>"$OUT/tests.log" 2>&1
            r=$?
            echo "test $t: exit $r ($(($(date +%s) - s)) s)"
            [ $r -ne 0 ] && rc=1
        done
        unset QFUSE_EXPECT_COOPERATIVE_MATRIX
        grep -E "^test result|FAILED|panicked|tensor cores" "$OUT/tests.log" | head -40
        ;;
    bench)
        for net in resnet18 mobilenet_v2; do
            QFUSE_AUTOTUNE=0 timeout "$(limit 170)" .devbin/bench --resolution 224 --batch 1,16,64,256 \
                --budget "${QFUSE_BUDGET:-0.05}" --skip-simple-f32 --sample-clock --networks "$net" \
                --json "$OUT/bench_$net.json" >"$OUT/bench_$net.md" 2>>"$OUT/run.log"
            echo "bench $net: exit $?"
        done
        ;;
    tuned)
        QFUSE_AUTOTUNE=1 QFUSE_TUNE_CACHE="$OUT/tune_cache.json" timeout "$(limit 120)" .devbin/bench \
            --resolution 224 --batch 1,16,64,256 --budget "${QFUSE_BUDGET:-0.05}" --skip-layers --skip-chain \
            --skip-simple-f32 --networks resnet18,mobilenet_v2 \
            --json "$OUT/tuned.json" >"$OUT/tuned.md" 2>>"$OUT/run.log"
        echo "tuned: exit $?"
        ;;
    checks)
        # wgpu's runtime checks in qfuse's kernels (QFUSE_SHADER_CHECKS):
        # ResNet-18's layers with loop bounds off, then also index bounds off.
        for c in loops none; do
            QFUSE_SHADER_CHECKS=$c QFUSE_AUTOTUNE=0 timeout "$(limit 90)" .devbin/bench --resolution 224 \
                --batch 16,256 --budget "${QFUSE_BUDGET:-0.05}" --skip-chain --skip-real --skip-simple-f32 \
                --networks resnet18 --json "$OUT/checks_$c.json" >"$OUT/checks_$c.md" 2>>"$OUT/run.log"
            echo "checks $c: exit $?"
        done
        ;;
    *) echo "unknown stage $stage (tests, bench, tuned, checks)" >&2; rc=2 ;;
    esac
done
echo "done in $(($(date +%s) - t0)) s"
# The summaries last: the reply shows the end of the output.
for f in "$OUT"/bench_*.md "$OUT"/tuned.md; do
    [ -f "$f" ] || continue
    echo "---- $f"
    grep -m1 '^adapter:' "$f"
    sed -n '/^## Targets/,/^## Notes/{/^## Notes/!p}' "$f" | head -40
done
exit $rc
