#!/usr/bin/env python3
"""Measures PyTorch's FLOAT bilinear upsampling (ATen UpSampleKernel.cpp) on dequantized
quantized tensors, and the quantize that follows: the FX pattern dequantize -> nn.Upsample
(bilinear, float) -> quantize_per_tensor that prepare_fx/convert_fx leave for an
nn.Upsample module (engines fbgemm, x86, qnnpack). Seeded random cases, both layouts,
align_corners both ways, scale factor and size, C in {1, 3, 8, 13, 16, 20}. Compares the
exact f32 bits of F.interpolate's result with candidate formulas (FMA contraction orders,
vector widths) and prints, per kernel and channel class, the mismatch count of each
candidate; then checks the dequantize table and the quantize. Exits 1 unless the chosen
rules (marked RULE) match every value. Needs torch, numpy.

    /work/venv/bin/python tools/torch_float_upsample_rules.py [--seed 1] [--cases 40]

Kernel choice (upsample_bilinear2d_kernel_impl_float): ATen's channels-last kernel
`cpu_upsample_linear_channels_last` when (input is_contiguous(channels_last) and C > 3) or
OH + OW <= 128 (any layout), or when at::get_num_threads() == 1 and C == 3; else the
generic kernel `upsample_generic_Nd_kernel_impl<2, HelperInterpLinear>`.

Measured rules (torch 2.15.0, capability AVX512, Intel Xeon with AVX-512 VNNI; seeds 1 and 2,
40 cases per engine: 0 mismatching f32 values, 0 mismatching bytes; every other candidate
misses):
- Dequantize: x = (f32(q) - f32(zp)) * f32(s) (a 256-entry table per byte).
- Taps per axis (compute_source_index_and_lambda): out == in: (d, d, 1, 0) (that axis only).
  Else scale as area_pixel_compute_scale<float> (tools/torch_upsample_rules.py);
  align_corners: v = scale * f32(d); else v = scale * f32(d + 0.5) - 0.5, **fused**
  (fma(scale, d + 0.5, -0.5)) in the channels-last kernel, **unfused** in the generic one;
  0 when negative. i0 = min(floor(v), in - 1), i1 = i0 + (i0 < in - 1), l1 = clamp(v - i0,
  0, 1), l0 = 1 - l1.
- Channels-last kernel: w00 = h0*w0, w01 = h0*w1, w10 = h1*w0, w11 = h1*w1 (rounded).
  Channels [0, 8*floor(C/8)) (Vectorized<float> at ATen's AVX2 dispatch: 8 lanes, although
  the capability is AVX512): r = fma(p00, w00, fma(p01, w01, fma(p11, w11, p10*w10))).
  The other channels (scalar tail): r = fma(p11, w11, fma(p10, w10, fma(p00, w00, p01*w01))).
- Generic kernel: t0 = fma(p00, w0, p01*w1), t1 = fma(p10, w0, p11*w1),
  r = fma(t0, h0, t1*h1).
- Quantize (quantize_per_tensor, fbgemm's Quantize, every engine):
  y = sat(rint(r * f32(1 / f32(s_out))) + zp_out), the reciprocal in f32, ties to even
  (a true division misses: f32 157, f64 1116 of 3.2 million; fma(r, inv, zp) 1157).
"""
import argparse
import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore")
f32 = np.float32


def fma(a, b, c):
    """Correctly rounded f32 fma, vectorized: exact product in f64, TwoSum, then a fix of
    the double rounding when the f64 sum sits on an f32 midpoint."""
    a, b, c = (np.asarray(v, f32).astype(np.float64) for v in (a, b, c))
    p = a * b  # exact (48 bits)
    s = p + c
    bb = s - p
    err = (p - (s - bb)) + (c - bb)  # s + err == p + c exactly
    r = s.astype(f32)
    r64 = r.astype(np.float64)
    other = np.where(r64 > s, np.nextafter(r, f32(-np.inf)), np.nextafter(r, f32(np.inf)))
    mid = (r64 != s) & ((r64 + other.astype(np.float64)) / 2 == s) & (err != 0)
    above = np.where(r64 > s, r, other)
    below = np.where(r64 > s, other, r)
    fixed = np.where(err > 0, above, below)
    return np.where(mid, fixed, r).astype(f32)


def mul(a, b):
    return (np.asarray(a, f32) * np.asarray(b, f32)).astype(f32)


def add(a, b):
    return (np.asarray(a, f32) + np.asarray(b, f32)).astype(f32)


def axis_scale(i, o, ac, sc):
    if ac:
        return f32(i - 1) / f32(o - 1) if o > 1 else f32(0)
    if sc:
        return f32(1.0 / sc)
    return f32(i) / f32(o)


def taps(i, o, ac, sc, fused):
    """compute_source_index_and_lambda: (i0, i1, l0, l1) per output index."""
    s = axis_scale(i, o, ac, sc)
    out = []
    for d in range(o):
        if o == i:
            out.append((d, d, f32(1), f32(0)))
            continue
        if ac:
            v = f32(s * f32(d))
        else:
            dd = f32(f32(d) + f32(0.5))
            v = fma(s, dd, f32(-0.5))[()] if fused else f32(f32(s * dd) - f32(0.5))
            v = f32(0) if v < 0 else v
        h = min(int(np.floor(v)), i - 1)
        l1 = f32(min(max(f32(v - f32(h)), f32(0)), f32(1)))
        out.append((h, h + (1 if h < i - 1 else 0), f32(f32(1) - l1), l1))
    return out


def gather(x, th, tw):
    """x [N, C, H, W] f32 -> p00, p01, p10, p11 [N, C, OH, OW] and weights [OH, OW]."""
    hi0 = np.array([t[0] for t in th]); hi1 = np.array([t[1] for t in th])
    wi0 = np.array([t[0] for t in tw]); wi1 = np.array([t[1] for t in tw])
    h0 = np.array([t[2] for t in th], f32)[:, None]; h1 = np.array([t[3] for t in th], f32)[:, None]
    w0 = np.array([t[2] for t in tw], f32)[None, :]; w1 = np.array([t[3] for t in tw], f32)[None, :]
    g = lambda hi, wi: x[:, :, hi][:, :, :, wi]
    return g(hi0, wi0), g(hi0, wi1), g(hi1, wi0), g(hi1, wi1), h0, h1, w0, w1


def lin(a, wa, b, wb, how):
    """a*wa + b*wb: 'u' unfused, 'f0' fma(a, wa, b*wb), 'f1' fma(b, wb, a*wa)."""
    if how == "u":
        return add(mul(a, wa), mul(b, wb))
    if how == "f0":
        return fma(a, wa, mul(b, wb))
    return fma(b, wb, mul(a, wa))


def generic(x, th, tw, how_in, how_out):
    """Interpolate<2, ..., 2>: t0 = p00*w0 + p01*w1, t1 = p10*w0 + p11*w1, t0*h0 + t1*h1."""
    p00, p01, p10, p11, h0, h1, w0, w1 = gather(x, th, tw)
    t0 = lin(p00, w0, p01, w1, how_in)
    t1 = lin(p10, w0, p11, w1, how_in)
    return lin(t0, h0, t1, h1, how_out)


CL_VEC = {
    # i00*w00 + (i01*w01 + (i10*w10 + i11*w11)) (interpolate(...) recursion)
    "vec_u": lambda p, w: add(mul(p[0], w[0]), add(mul(p[1], w[1]), add(mul(p[2], w[2]), mul(p[3], w[3])))),
    "vec_fma_a": lambda p, w: fma(p[0], w[0], fma(p[1], w[1], fma(p[2], w[2], mul(p[3], w[3])))),
    "vec_fma_b": lambda p, w: fma(p[0], w[0], fma(p[1], w[1], fma(p[3], w[3], mul(p[2], w[2])))),
}
CL_TAIL = {
    # ((i00*w00 + i01*w01) + i10*w10) + i11*w11
    "tail_u": lambda p, w: add(add(add(mul(p[0], w[0]), mul(p[1], w[1])), mul(p[2], w[2])), mul(p[3], w[3])),
    "tail_fma_a": lambda p, w: fma(p[3], w[3], fma(p[2], w[2], fma(p[1], w[1], mul(p[0], w[0])))),
    "tail_fma_b": lambda p, w: fma(p[3], w[3], fma(p[2], w[2], fma(p[0], w[0], mul(p[1], w[1])))),
}


def channels_last(x, th, tw, form):
    p00, p01, p10, p11, h0, h1, w0, w1 = gather(x, th, tw)
    w = (mul(h0, w0), mul(h0, w1), mul(h1, w0), mul(h1, w1))
    return form((p00, p01, p10, p11), w)


def bits(a):
    return np.ascontiguousarray(a, f32).view(np.uint32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cases", type=int, default=40)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    stats = {}
    kernels = {}

    def tally(key, cand, n_bad, n):
        d = stats.setdefault(key, {})
        b, t = d.get(cand, (0, 0))
        d[cand] = (b + n_bad, t + n)

    rule_bad = 0
    q_stats = {}
    threads = torch.get_num_threads()
    for eng in ("fbgemm", "x86", "qnnpack"):
        torch.backends.quantized.engine = eng
        # one thread under qnnpack: ATen then takes the channels-last kernel for C == 3 too
        torch.set_num_threads(1 if eng == "qnnpack" else threads)
        for t in range(args.cases):
            C = int(rng.choice([1, 3, 8, 13, 16, 20]))
            H, W = (int(v) for v in rng.integers(2, 9, 2))
            cl_in = bool(t % 2)
            xb = rng.integers(0, 256, (2, C, H, W)).astype(np.uint8)
            zp = int(rng.integers(0, 256))
            s = float(rng.choice([0.05, 0.0173, 0.31, 0.007, 1.7]))
            q = torch._make_per_tensor_quantized_tensor(torch.from_numpy(xb), s, zp)
            if cl_in:
                q = q.contiguous(memory_format=torch.channels_last)
            xf = q.dequantize()
            # size: small (<= 128: the channels-last kernel for every layout) or large
            big = t % 4 in (2, 3)
            if t % 3 == 0:
                sc = float(rng.choice([1.5, 2.0, 2.5, 3.0, 1.7, 0.6, 1.3]))
                if big:
                    sc = float(rng.choice([9.0, 10.5, 12.0]))
                kw = dict(scale_factor=sc)
            else:
                sc = None
                lo, hi = (66, 90) if big else (1, 17)
                kw = dict(size=tuple(int(v) for v in rng.integers(lo, hi, 2)))
            ac = bool(rng.integers(0, 2))
            y = F.interpolate(xf, mode="bilinear", align_corners=ac, **kw)
            oh, ow = y.shape[2:]
            x = xf.contiguous().numpy().astype(f32)
            yv = y.contiguous().numpy()
            layout_cl = xf.is_contiguous(memory_format=torch.channels_last)
            use_cl = (layout_cl and C > 3) or (oh + ow <= 128) or (torch.get_num_threads() == 1 and C == 3)
            kind = "cl_kernel" if use_cl else "generic"
            kernels[(kind, "cl_in" if layout_cl else "nchw_in")] = kernels.get(
                (kind, "cl_in" if layout_cl else "nchw_in"), 0) + 1
            for fused in (False, True):
                th, tw = taps(H, oh, ac, sc, fused), taps(W, ow, ac, sc, fused)
                src = "idx_fma" if fused else "idx_nofma"
                if use_cl:
                    for lanes in (8, 16):
                        v = lanes * (C // lanes)
                        for name, form in CL_VEC.items():
                            if v:
                                r = channels_last(x, th, tw, form)[:, :v]
                                tally(("cl_kernel", f"body{lanes}"), f"{src}/{name}",
                                      int((bits(r) != bits(yv[:, :v])).sum()), r.size)
                        for name, form in CL_TAIL.items():
                            if v < C:
                                r = channels_last(x, th, tw, form)[:, v:]
                                tally(("cl_kernel", f"tail{lanes}"), f"{src}/{name}",
                                      int((bits(r) != bits(yv[:, v:])).sum()), r.size)
                else:
                    for hi in ("u", "f0", "f1"):
                        for ho in ("u", "f0", "f1"):
                            r = generic(x, th, tw, hi, ho)
                            tally(("generic", "all"), f"{src}/in_{hi}/out_{ho}",
                                  int((bits(r) != bits(yv)).sum()), r.size)
            # the rule (see RULE below)
            th, tw = taps(H, oh, ac, sc, use_cl), taps(W, ow, ac, sc, use_cl)
            if use_cl:
                v = 8 * (C // 8)
                r = channels_last(x, th, tw, CL_VEC[RULE_VEC])
                r[:, v:] = channels_last(x, th, tw, CL_TAIL[RULE_TAIL])[:, v:]
            else:
                r = generic(x, th, tw, *RULE_GENERIC)
            rule_bad += int((bits(r) != bits(yv)).sum())
            # quantize to new qparams
            s2 = float(rng.choice([0.05, 0.0173, 0.31, 0.007, 1.7, 0.1]))
            zp2 = int(rng.integers(0, 256))
            yq = torch.quantize_per_tensor(y, s2, zp2, torch.quint8).int_repr().contiguous().numpy().astype(np.int64)
            inv = f32(f32(1) / f32(s2))
            cands = {
                "rint(x*f32(1/s))+zp": np.rint(mul(yv, inv)).astype(np.int64) + zp2,
                "rint(x/s)+zp (f32 div)": np.rint((yv / f32(s2)).astype(f32)).astype(np.int64) + zp2,
                "rint(x/s)+zp (f64 div)": np.rint(yv.astype(np.float64) / s2).astype(np.int64) + zp2,
                "rint(fma(x,f32(1/s),zp))": np.rint(fma(yv, inv, f32(zp2))).astype(np.int64),
            }
            for k, c in cands.items():
                c = np.clip(c, 0, 255)
                b, n = q_stats.get(k, (0, 0))
                q_stats[k] = (b + int((c != yq).sum()), n + c.size)
            # the dequantize table
            tab = ((np.arange(256, dtype=f32) - f32(zp)) * f32(s)).astype(f32)
            if not np.array_equal(bits(tab[xb]), bits(x)):
                rule_bad += 1
                print("dequantize: (f32(q) - f32(zp)) * f32(s) differs, case", eng, t)
    print(f"threads {threads} (1 under qnnpack), capability {torch.backends.cpu.get_cpu_capability()}, "
          f"torch {torch.__version__}")
    print("kernel counts:", kernels)
    for key in sorted(stats):
        print(key)
        for cand, (b, n) in sorted(stats[key].items(), key=lambda kv: kv[1][0]):
            print(f"   {cand:32s} {b:7d} / {n}")
    print("quantize_per_tensor candidates:")
    for k, (b, n) in q_stats.items():
        print(f"   {k:28s} {b:7d} / {n}")
    print("RULE mismatches (f32 bits):", rule_bad)
    bad = rule_bad + q_stats[RULE_Q][0]
    sys.exit(0 if bad == 0 else 1)


RULE_VEC = "vec_fma_b"
RULE_TAIL = "tail_fma_b"
RULE_GENERIC = ("f0", "f0")
RULE_Q = "rint(x*f32(1/s))+zp"

if __name__ == "__main__":
    main()
