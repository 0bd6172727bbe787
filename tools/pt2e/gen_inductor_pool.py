#!/usr/bin/env python3
"""Records Inductor's average pools on u8 tensors as X86InductorQuantizer graphs leave them
(`dq -> avg_pool2d / adaptive_avg_pool2d -> q`, equal qparams: the quantizer shares the pool's
observer with its input), compiled by torch.compile into one C++ kernel
(`cpp_fused_..avg_pool2d_dequantize_per_tensor_quantize_per_tensor`), on inputs crafted so that
the plausible rules disagree. For tests/pt2e_inductor.rs (no Python in CI).

With equal qparams, `v * f32(1/s)` is `n / count` (n = the sum of `q - z` over the window) up to
a few ulps, so the rules can only disagree on windows where `n / count` is an exact .5 tie (an
even count). The generator draws a scale that is not a power of two (the dequantized taps and
their sums round) and an odd zero point, then sets, for each window with an even count, one tap
that no other window reads so that the window's `n` is a tie (windows without such a tap keep
their random bytes: about half of their even windows tie). Rules compared with the compiled
output (mismatching bytes recorded in case.json, `alternatives`):
  rule          qfuse's: f32 sum of f32(q - z) * s from 0 in row-major order, v = sum / f32(count),
                y = clamp(rint(f32(v * f32(1/s))) + z, 0, 255)
  reciprocal    v = sum * f32(1 / count)  (what Inductor emits for a constant divisor off the CPU)
  column_major  the window summed column by column
  exact_sum     v = f32(f32(n) * s) / count  (the integer sum dequantized once)
  zp_before     y = rint(f32(v * f32(1/s)) + z)  (oneDNN's zero point before rounding)

Usage: python3 tools/pt2e/gen_inductor_pool.py OUT   (writes OUT/<case>/{case.json, x_u8.npy,
    output_u8.npy}; this CPU: x86-64 with AVX-512 VNNI; torch 2.15)
"""
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")
import numpy as np
import torch
import torch.nn.functional as F
import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # noqa: F401  (registers the ops)
from torch._inductor.utils import run_and_get_code

F32 = np.float32
qd = torch.ops.quantized_decomposed

# name, kind, params, [N, C, H, W]
CASES = [
    # inception_v3's branch pool: count 9 everywhere (odd: no tie is possible with equal qparams)
    ("avg3x3_s1_p1", "avg", dict(kernel=[3, 3], stride=[1, 1], padding=[1, 1], ceil_mode=False,
                                 count_include_pad=True, divisor_override=None), [2, 19, 9, 9]),
    # a constant divisor 6 (no padding): Inductor divides on the CPU
    ("avg2x3_s2x3_tie", "avg", dict(kernel=[2, 3], stride=[2, 3], padding=[0, 0], ceil_mode=False,
                                    count_include_pad=True, divisor_override=None), [2, 19, 8, 9]),
    # counts 4, 6, 9 (padding not counted), a last partial window (ceil_mode)
    ("avg3x3_s2_p1_nocip_ceil_tie", "avg", dict(kernel=[3, 3], stride=[2, 2], padding=[1, 1], ceil_mode=True,
                                                count_include_pad=False, divisor_override=None), [2, 19, 10, 10]),
    # padding counted, windows clipped to the padded input: counts 6 and 9 ... (2x3 at the edge)
    ("avg3x2_s2_p1_cip_ceil_tie", "avg", dict(kernel=[3, 2], stride=[2, 2], padding=[1, 1], ceil_mode=True,
                                              count_include_pad=True, divisor_override=None), [2, 19, 10, 9]),
    # divisor_override 10 on a 3x3 window
    ("avg3x3_s3_div10_tie", "avg", dict(kernel=[3, 3], stride=[3, 3], padding=[0, 0], ceil_mode=False,
                                        count_include_pad=True, divisor_override=10), [2, 19, 9, 9]),
    # a 6x6 window (36 taps, kernel == stride): Inductor's reduction loop, not unrolled
    ("avg6x6_s6_tie", "avg", dict(kernel=[6, 6], stride=[6, 6], padding=[0, 0], ceil_mode=False,
                                  count_include_pad=True, divisor_override=None), [2, 19, 12, 12]),
    # adaptive, windows of 2 and 3 rows/columns (counts 4, 6, 9): Inductor's masked-sum lowering
    ("adaptive_5x7_to_3x4_tie", "adaptive", dict(output_size=[3, 4]), [2, 19, 5, 7]),
    # adaptive, overlapping windows of a tiny input (vgg11_bn's 7x7 of a 2x2 map)
    ("adaptive_2x2_to_7x7", "adaptive", dict(output_size=[7, 7]), [2, 19, 2, 2]),
    # alexnet's 6x6 of a 1x1 map
    ("adaptive_1x1_to_6x6", "adaptive", dict(output_size=[6, 6]), [2, 19, 1, 1]),
    # divisible: Inductor's avg_pool2d with kernel = stride = 6 (36 taps, a reduction loop)
    ("adaptive_12x12_to_2x2_tie", "adaptive", dict(output_size=[2, 2]), [2, 19, 12, 12]),
]


def windows(kind, prm, h, w):
    """per output row and column: (taps start, end, divisor factor); count override"""
    def avg(L, i):
        k, s, p = prm["kernel"][i], prm["stride"][i], prm["padding"][i]
        num = L + 2 * p - k + (s - 1 if prm["ceil_mode"] else 0)
        o = num // s + 1
        if prm["ceil_mode"] and (o - 1) * s >= L + p:
            o -= 1
        out = []
        for j in range(o):
            i0 = j * s - p
            i1 = min(i0 + k, L + p)
            c0, c1 = max(i0, 0), min(i1, L)
            out.append((c0, c1, (i1 - i0) if prm["count_include_pad"] else (c1 - c0)))
        return out

    def adaptive(L, O):
        return [(o * L // O, -(-((o + 1) * L) // O), -(-((o + 1) * L) // O) - o * L // O) for o in range(O)]

    if kind == "avg":
        return avg(h, 0), avg(w, 1), prm["divisor_override"]
    oh, ow = prm["output_size"]
    return adaptive(h, oh), adaptive(w, ow), None


def rule(xq, s, z, rows, cols, div, alt="rule"):
    n_, c_, _, _ = xq.shape
    y = np.zeros((n_, c_, len(rows), len(cols)), dtype=np.uint8)
    deq = ((xq.astype(np.int64) - z).astype(F32) * F32(s)).astype(F32)
    c = F32(1.0 / float(s))
    for oy, (h0, h1, fh) in enumerate(rows):
        for ox, (w0, w1, fw) in enumerate(cols):
            count = F32(div if div else fh * fw)
            win = deq[:, :, h0:h1, w0:w1]
            acc = np.zeros((n_, c_), dtype=F32)
            if alt == "column_major":
                for ix in range(w1 - w0):
                    for iy in range(h1 - h0):
                        acc = (acc + win[:, :, iy, ix]).astype(F32)
            else:
                for iy in range(h1 - h0):
                    for ix in range(w1 - w0):
                        acc = (acc + win[:, :, iy, ix]).astype(F32)
            if alt == "exact_sum":
                n = (xq[:, :, h0:h1, w0:w1].astype(np.int64) - z).sum(axis=(2, 3))
                acc = (n.astype(F32) * F32(s)).astype(F32)
            if alt == "reciprocal":
                v = (acc * (F32(1) / count)).astype(F32)
            else:
                v = (acc / count).astype(F32)
            t = (v * c).astype(F32)
            r = np.rint((t + F32(z)).astype(F32)) if alt == "zp_before" else np.rint(t) + z
            y[:, :, oy, ox] = np.clip(r, 0, 255).astype(np.uint8)
    return y


def craft(rng, shape, z, rows, cols, div):
    """random bytes around z; then, per window with an even count, one tap no other window reads set
    so that the window's sum of (q - z) is an exact .5 multiple of the count"""
    n_, c_, h, w = shape
    xq = np.clip(z + rng.integers(-60, 61, shape), 0, 255).astype(np.int64)
    cover = np.zeros((h, w), dtype=np.int64)
    for h0, h1, _ in rows:
        for w0, w1, _ in cols:
            cover[h0:h1, w0:w1] += 1
    ties = 0
    for h0, h1, fh in rows:
        for w0, w1, fw in cols:
            count = div if div else fh * fw
            if count % 2:
                continue
            own = [(iy, ix) for iy in range(h0, h1) for ix in range(w0, w1) if cover[iy, ix] == 1]
            if not own:
                continue
            iy, ix = own[0]
            for b in range(n_):
                for ch in range(c_):
                    rest = int((xq[b, ch, h0:h1, w0:w1] - z).sum() - (xq[b, ch, iy, ix] - z))
                    # want (rest + t) % count == count / 2 with t = q - z, q in [0, 255]
                    t0 = int(xq[b, ch, iy, ix] - z)
                    best = None
                    for t in range(t0 - count, t0 + count + 1):
                        if 0 <= t + z <= 255 and (rest + t) % count == count // 2:
                            if best is None or abs(t - t0) < abs(best - t0):
                                best = t
                    if best is not None:
                        xq[b, ch, iy, ix] = best + z
                        ties += 1
    return xq.astype(np.uint8), ties


def compiled(kind, prm, xq, s, z):
    def f(x):
        d = qd.dequantize_per_tensor.default(x, s, z, 0, 255, torch.uint8)
        if kind == "avg":
            p = F.avg_pool2d(d, prm["kernel"], prm["stride"], prm["padding"], prm["ceil_mode"],
                             prm["count_include_pad"], prm["divisor_override"])
        else:
            p = F.adaptive_avg_pool2d(d, prm["output_size"])
        return qd.quantize_per_tensor.default(p, s, z, 0, 255, torch.uint8)

    x = torch.from_numpy(xq).contiguous(memory_format=torch.channels_last)
    torch._dynamo.reset()
    import torch._inductor.config as icfg
    icfg.freezing = True
    with torch.no_grad():
        y, code = run_and_get_code(torch.compile(f), x)
    torch._dynamo.reset()
    return y.contiguous().numpy().astype(np.uint8), "\n".join(code)


def main():
    out = sys.argv[1]
    rng = np.random.default_rng(11)
    total = {}
    for name, kind, prm, shape in CASES:
        rows, cols, div = windows(kind, prm, shape[2], shape[3])
        while True:
            s = float(F32(10 ** rng.uniform(-3, -1)))
            if np.log2(s) != np.round(np.log2(s)):
                break
        z = int(rng.integers(20, 120)) | 1
        xq, ties = craft(rng, shape, z, rows, cols, div)
        y, code = compiled(kind, prm, xq, s, z)
        alts = {a: int((rule(xq, s, z, rows, cols, div, a) != y).sum())
                for a in ("rule", "reciprocal", "column_major", "exact_sum", "zp_before")}
        kernels = sorted({ln.split("=")[0].strip() for ln in code.splitlines()
                          if ln.startswith("cpp_fused") and "avg_pool" in ln})
        divides = any(" / " in ln for ln in code.splitlines() if "tmp" in ln)
        print(f"{name}: {y.size} bytes, {ties} crafted ties; mismatches {alts}; kernels {kernels}; "
              f"division in the code: {divides}")
        for a, v in alts.items():
            total[a] = total.get(a, 0) + v
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        np.save(os.path.join(d, "x_u8.npy"), xq)
        np.save(os.path.join(d, "output_u8.npy"), y)
        case = dict(name=name, op="avg_pool2d" if kind == "avg" else "adaptive_avg_pool2d", **prm,
                    scale=s, zero_point=z, shape=shape, crafted_ties=ties, alternatives=alts,
                    inductor_kernels=kernels, division_in_code=divides,
                    graph="dequantize_per_tensor -> pool -> quantize_per_tensor (equal qparams), "
                          "torch.compile, freezing, channels-last u8 input",
                    torch=torch.__version__, cpu_capability=torch.backends.cpu.get_cpu_capability(),
                    cpu="x86-64 with AVX-512 VNNI")
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump(case, f, indent=1)
    print("total mismatches:", total)


if __name__ == "__main__":
    main()
