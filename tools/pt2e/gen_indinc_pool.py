#!/usr/bin/env python3
"""Records Inductor's average pools of **f32** tensors, as torchvision inception_v3's branch pools
leave them under X86InductorQuantizer (the pool's input is not quantized: Inductor averages
oneDNN's f32 conv outputs, the f32 `max_pool2d` of one, or f32 `cat`s of them), compiled by
torch.compile (freezing) into C++ (`cpp_fused_avg_pool2d_[cat_][max_pool2d_with_indices_]
quantize_per_tensor_*`), on channels-last f32 inputs crafted so that the plausible rules disagree.
For tests/inductor_f32_pool.rs (no Python in CI).

Graphs (each input channels-last f32; `branches`: the cat's inputs in order, each an input
optionally through an f32 max_pool2d):
    quantize_per_tensor(avg_pool2d(cat([max_pool2d?(x_i)], 1)), s, z, 0, 255, uint8)
Data: `_tie` cases hold f32(f32(j / 2) * s) for integers j, with an output scale s that is not a
power of two and an odd zero point: a window whose sum of j / 2 over the count is an exact .5
(counts 4, 6, 9, 10) lands within a few ulps of a rounding tie, where the rules' f32 roundings
decide the byte; `_grid` holds multiples of 0.375 with s = 0.25 (exact ties); `_order` sprinkles
+-2^25 among them so that the sum's order changes the sum; `_rand` holds random normals.
Rules compared with the compiled output (mismatching bytes in case.json `alternatives`):
  rule          the taps summed in f32 from 0 in row-major order (taps in the input; Inductor adds
                the padding's masked 0.0 loads, which change no sum), v = sum / f32(count),
                y = clamp(rint(f32(v * f32(1/s))) + z, 0, 255)
  reciprocal    v = sum * f32(1 / count)
  column_major  the window summed column by column
  f64_sum       the window summed in f64, then rounded to f32
  zp_before     y = rint(f32(v * f32(1/s)) + z)

Usage: python3 tools/pt2e/gen_indinc_pool.py OUT   (writes OUT/<case>/{case.json, x0.npy[, x1.npy],
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

INCEPTION = dict(kernel=[3, 3], stride=[1, 1], padding=[1, 1], ceil_mode=False,
                 count_include_pad=True, divisor_override=None)
MAX32 = dict(kernel=[3, 3], stride=[2, 2], padding=[0, 0])

# name, avg params, inputs' shapes [N, C, H, W], branches [(input, max pool or None)], data kind
CASES = [
    # inception_v3's branch pool on one f32 tensor (count 9 everywhere); 19 channels: a 16-lane
    # vector and a tail
    ("avg3x3_s1_p1_tie", INCEPTION, [[2, 19, 9, 9]], [(0, None)], "half"),
    ("avg3x3_s1_p1_grid", INCEPTION, [[2, 19, 9, 9]], [(0, None)], "grid"),
    ("avg3x3_s1_p1_order", INCEPTION, [[2, 19, 9, 9]], [(0, None)], "order"),
    ("avg3x3_s1_p1_rand", INCEPTION, [[2, 19, 9, 9]], [(0, None)], "rand"),
    # Mixed_5b: the pool of the f32 max_pool2d (3x3, stride 2) of a conv output
    ("max_avg_tie", INCEPTION, [[2, 19, 19, 19]], [(0, MAX32)], "half"),
    ("max_avg_order", INCEPTION, [[2, 19, 19, 19]], [(0, MAX32)], "order"),
    # Mixed_5c..: the pool of an f32 cat (16 + 5 channels)
    ("cat_avg_tie", INCEPTION, [[2, 16, 9, 9], [2, 5, 9, 9]], [(0, None), (1, None)], "half"),
    # Mixed_6b / 7b: a cat whose last branch is the f32 max pool of another tensor
    ("cat_max_avg_tie", INCEPTION, [[2, 16, 9, 9], [2, 6, 19, 19]], [(0, None), (1, MAX32)], "half"),
    # other windows: counts 4, 6, 9 (ceil_mode, padding not counted), divisor_override
    ("avg3x3_s2_p1_nocip_ceil_tie", dict(kernel=[3, 3], stride=[2, 2], padding=[1, 1], ceil_mode=True,
                                         count_include_pad=False, divisor_override=None),
     [[2, 19, 10, 10]], [(0, None)], "half"),
    ("avg3x3_s3_div10_tie", dict(kernel=[3, 3], stride=[3, 3], padding=[0, 0], ceil_mode=False,
                                 count_include_pad=True, divisor_override=10),
     [[2, 19, 9, 9]], [(0, None)], "half"),
]
GRID, TIE_SCALE, BIG = 0.375, 0.25, float(2 ** 25)


def out_len(L, k, s, p, ceil):
    num = L + 2 * p - k + (s - 1 if ceil else 0)
    o = num // s + 1
    if ceil and (o - 1) * s >= L + p:
        o -= 1
    return o


def windows(prm, h, w):
    def avg(L, i):
        k, s, p = prm["kernel"][i], prm["stride"][i], prm["padding"][i]
        out = []
        for j in range(out_len(L, k, s, p, prm["ceil_mode"])):
            i0 = j * s - p
            i1 = min(i0 + k, L + p)
            c0, c1 = max(i0, 0), min(i1, L)
            out.append((c0, c1, (i1 - i0) if prm["count_include_pad"] else (c1 - c0)))
        return out
    return avg(h, 0), avg(w, 1), prm["divisor_override"]


def max_pool(x, mp):
    t = torch.from_numpy(np.ascontiguousarray(x))
    return F.max_pool2d(t, mp["kernel"], mp["stride"], mp["padding"]).numpy().astype(F32)


def rule(x, s, z, prm, alt="rule"):
    n_, c_, h, w = x.shape
    rows, cols, div = windows(prm, h, w)
    y = np.zeros((n_, c_, len(rows), len(cols)), dtype=np.uint8)
    c = F32(1.0 / float(s))
    for oy, (h0, h1, fh) in enumerate(rows):
        for ox, (w0, w1, fw) in enumerate(cols):
            count = F32(div if div else fh * fw)
            win = x[:, :, h0:h1, w0:w1]
            if alt == "f64_sum":
                acc = win.astype(np.float64).sum(axis=(2, 3)).astype(F32)
            else:
                acc = np.zeros((n_, c_), dtype=F32)
                taps = [(iy, ix) for ix in range(w1 - w0) for iy in range(h1 - h0)] if alt == "column_major" \
                    else [(iy, ix) for iy in range(h1 - h0) for ix in range(w1 - w0)]
                for iy, ix in taps:
                    acc = (acc + win[:, :, iy, ix]).astype(F32)
            v = (acc * (F32(1) / count)).astype(F32) if alt == "reciprocal" else (acc / count).astype(F32)
            t = (v * c).astype(F32)
            r = np.rint((t + F32(z)).astype(F32)) if alt == "zp_before" else np.rint(t) + z
            y[:, :, oy, ox] = np.clip(r, -1, 256).clip(0, 255).astype(np.uint8)
    return y


def data(rng, shape, kind, s):
    if kind == "rand":
        return (rng.standard_normal(shape) * 3.0).astype(F32)
    if kind == "half":
        return (rng.integers(-12, 80, shape).astype(F32) * F32(0.5) * F32(s)).astype(F32)
    x = (rng.integers(-6, 40, shape) * GRID).astype(F32)
    if kind == "order":
        u = rng.random(shape)
        x = np.where(u < 0.12, F32(BIG), np.where(u < 0.24, F32(-BIG), x)).astype(F32)
    return x


def compiled(xs, prm, branches, s, z):
    def f(*ins):
        parts = []
        for i, mp in branches:
            t = ins[i]
            if mp is not None:
                t = F.max_pool2d(t, mp["kernel"], mp["stride"], mp["padding"])
            parts.append(t)
        t = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
        p = F.avg_pool2d(t, prm["kernel"], prm["stride"], prm["padding"], prm["ceil_mode"],
                         prm["count_include_pad"], prm["divisor_override"])
        return qd.quantize_per_tensor.default(p, s, z, 0, 255, torch.uint8)

    ts = [torch.from_numpy(x).contiguous(memory_format=torch.channels_last) for x in xs]
    torch._dynamo.reset()
    import torch._inductor.config as icfg
    icfg.freezing = True
    with torch.no_grad():
        y, code = run_and_get_code(torch.compile(f), *ts)
    torch._dynamo.reset()
    return y.contiguous().numpy().astype(np.uint8), "\n".join(code)


def main():
    out = sys.argv[1]
    rng = np.random.default_rng(29)
    total = {}
    for name, prm, shapes, branches, kind in CASES:
        if kind in ("rand", "half"):
            while True:
                s = float(F32(10 ** rng.uniform(-2, -1)))
                if np.log2(s) != np.round(np.log2(s)):
                    break
            z = int(rng.integers(20, 120)) | 1
        else:
            s, z = TIE_SCALE, int(rng.integers(1, 40)) | 1
        xs = [data(rng, sh, kind, s) for sh in shapes]
        y, code = compiled(xs, prm, branches, s, z)
        # the pool's f32 input as Inductor builds it: per branch the (max pooled) tensor, one cat
        pin = np.concatenate([x if mp is None else max_pool(xs[i], mp) for i, mp in branches
                              for x in [xs[i]]], axis=1)
        alts = {a: int((rule(pin, s, z, prm, a) != y).sum())
                for a in ("rule", "reciprocal", "column_major", "f64_sum", "zp_before")}
        rows, cols, div = windows(prm, pin.shape[2], pin.shape[3])
        t = pin.copy()
        ties = 0
        for h0, h1, fh in rows:
            for w0, w1, fw in cols:
                cnt = div if div else fh * fw
                v = t[:, :, h0:h1, w0:w1].astype(np.float64).sum(axis=(2, 3)) / cnt / s
                ties += int((np.abs(v - np.floor(v) - 0.5) < 1e-4).sum())
        kernels = sorted({ln.split("=")[0].strip() for ln in code.splitlines()
                          if ln.startswith("cpp_fused") and "avg_pool" in ln})
        divides = any(" / " in ln for ln in code.splitlines() if "tmp" in ln)
        print(f"{name}: {y.size} bytes, {ties} (near) ties; mismatches {alts}; kernels {kernels}; "
              f"division in the code: {divides}")
        for a, v in alts.items():
            total[a] = total.get(a, 0) + v
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        for i, x in enumerate(xs):
            np.save(os.path.join(d, f"x{i}.npy"), x)
        np.save(os.path.join(d, "output_u8.npy"), y)
        case = dict(name=name, **prm, scale=s, zero_point=z, inputs=shapes,
                    branches=[dict(input=i, max_pool=mp) for i, mp in branches], data=kind,
                    near_ties=ties, alternatives=alts, inductor_kernels=kernels, division_in_code=divides,
                    graph="quantize_per_tensor(avg_pool2d(cat([max_pool2d?(x_i)], 1))), torch.compile, "
                          "freezing, channels-last f32 inputs",
                    torch=torch.__version__, cpu_capability=torch.backends.cpu.get_cpu_capability(),
                    cpu="x86-64 with AVX-512 VNNI")
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump(case, f, indent=1)
    print("total mismatches:", total)


if __name__ == "__main__":
    main()
