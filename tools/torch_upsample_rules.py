#!/usr/bin/env python3
"""Checks the arithmetic of PyTorch's quantized upsampling (quint8, F.interpolate /
nn.Upsample on a quantized tensor) against the rules below, on seeded random cases, for the
engines fbgemm, x86 and qnnpack (the kernels are ATen's, the same for every engine). Prints the
mismatch counts and exits 1 on any mismatch. Needs torch, numpy.

    /work/venv/bin/python tools/torch_upsample_rules.py [--seed 1]

Rules (PyTorch 2.15, x86-64 Xeon with AVX-512 VNNI; the output keeps the input's qparams):
- Scales per axis (`area_pixel_compute_scale<float>`): align_corners: f32(in-1)/f32(out-1)
  (0 if out == 1); else f32(1/scale_factor) (the double reciprocal) when a scale factor is
  given, else f32(in)/f32(out).
- nearest (UpSampleNearest2d.cpp): src = dst if out == in; dst >> 1 if out == 2*in; else
  min(floor(f32(dst) * scale), in - 1). A byte gather. EXCEPT a 1x1 input with C > 1 (it is
  both contiguous and channels-last): ATen runs the NHWC kernel but allocates an NCHW output,
  so the bytes come out in NHWC order read as NCHW (same for bilinear).
- bilinear, source index: align_corners: scale * f32(dst); else v = scale * (f32(dst) + 0.5) -
  0.5 (0 if negative). h1 = trunc(v), h1p = 1 if h1 < in-1 else 0, l1 = v - h1, l0 = 1 - l1.
- bilinear on a contiguous (NCHW) input (UpSampleBilinear2d.cpp, plain f32, no FMA; v without
  FMA): r = h0*(w0*p00 + w1*p01) + h1*(w0*p10 + w1*p11) - f32(zp), y = sat(rint(r) + zp).
  An output the size of the input is a copy (whatever the scale; the NHWC kernel computes).
- bilinear on a channels-last input (every quantized conv output; QuantizedOpKernels.cpp's
  qupsample_bilinear2d_nhwc_kernel, compiled with FMA contraction): v = fma(scale, dst + 0.5,
  -0.5). Channels [0, 8*floor(C/8)) (the vector body: ATen dispatches this kernel at its AVX2
  capability here, 8 lanes, although the CPU has AVX-512):
  A = fma(w1, p01, w0*p00), B = fma(w1, p11, w0*p10), r = fma(h1, B, h0*A) - f32(zp). The other
  channels (scalar tail): A = fma(w0, p00, w1*p01), B = fma(w0, p10, w1*p11),
  r = fma(h0, A, h1*B) - f32(zp). y = sat(rint(r) + zp). Which channels take which formula
  depends on the CPU capability ATen picks (8 lanes measured; 16 under AVX-512 dispatch).
qfuse runs bilinear as `resize` mode torch_bilinear (vectors: tools/gen_torch_upsample.py,
tests/data/upsample/README.md).
"""
import argparse
import sys
import warnings
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore")
f32 = np.float32


def fma(a, b, c):
    """f32 fma, correctly rounded (exact rational, then one rounding to f32)."""
    ex = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    lo = f32(float(ex))  # nearest double, then f32: fix a double rounding below
    cands = [lo, np.nextafter(lo, f32(np.inf)), np.nextafter(lo, f32(-np.inf))]
    best = min(cands, key=lambda v: (abs(Fraction(float(v)) - ex),
                                     int(np.frombuffer(f32(v).tobytes(), np.uint32)[0]) & 1))
    return f32(best)


def axis_scale(i, o, ac, sc):
    if ac:
        return f32(i - 1) / f32(o - 1) if o > 1 else f32(0)
    if sc:
        return f32(1.0 / sc)
    return f32(i) / f32(o)


def nearest_index(i, o, sc):
    if o == i:
        return np.arange(o)
    if o == 2 * i:
        return np.arange(o) >> 1
    s = axis_scale(i, o, False, sc)
    return np.minimum(np.floor(np.arange(o).astype(f32) * s).astype(np.int64), i - 1)


def taps(i, o, ac, sc, fused):
    s = axis_scale(i, o, ac, sc)
    out = []
    for d in range(o):
        if ac:
            v = f32(s * f32(d))
        else:
            v = fma(s, f32(d) + f32(0.5), f32(-0.5)) if fused else f32(f32(s * (f32(d) + f32(0.5))) - f32(0.5))
            v = f32(0) if v < 0 else v
        h = int(v)
        l1 = f32(v - f32(h))
        out.append((h, 1 if h < i - 1 else 0, f32(f32(1) - l1), l1))
    return out


def bilinear(x, zp, oh, ow, ac, sc, channels_last):
    n_, c_, H, W = x.shape
    if not channels_last and (oh, ow) == (H, W):
        return x.astype(np.int64)  # ATen's contiguous kernel copies
    th, tw = taps(H, oh, ac, sc, channels_last), taps(W, ow, ac, sc, channels_last)
    y = np.zeros((n_, c_, oh, ow), np.int64)
    vec = 8 * (c_ // 8) if channels_last else 0
    for n in range(n_):
        for c in range(c_):
            for a, (h1, hp, h0l, h1l) in enumerate(th):
                for b, (w1, wp, w0l, w1l) in enumerate(tw):
                    p00, p01 = f32(x[n, c, h1, w1]), f32(x[n, c, h1, w1 + wp])
                    p10, p11 = f32(x[n, c, h1 + hp, w1]), f32(x[n, c, h1 + hp, w1 + wp])
                    if not channels_last:
                        A = f32(f32(w0l * p00) + f32(w1l * p01))
                        B = f32(f32(w0l * p10) + f32(w1l * p11))
                        r = f32(f32(h0l * A) + f32(h1l * B))
                    elif c < vec:
                        A = fma(w1l, p01, f32(w0l * p00))
                        B = fma(w1l, p11, f32(w0l * p10))
                        r = fma(h1l, B, f32(h0l * A))
                    else:
                        A = fma(w0l, p00, f32(w1l * p01))
                        B = fma(w0l, p10, f32(w1l * p11))
                        r = fma(h0l, A, f32(h1l * B))
                    r = f32(r - f32(zp))
                    y[n, c, a, b] = min(255, max(0, int(np.rint(r)) + zp))
    return y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cases", type=int, default=24)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    total = {}
    for eng in ("fbgemm", "x86", "qnnpack"):
        torch.backends.quantized.engine = eng
        for t in range(args.cases):
            C = int(rng.choice([1, 3, 5, 8, 11, 16, 19, 24, 37]))
            H, W = (int(v) for v in rng.integers(2, 8, 2))
            cl = bool(t % 2)
            x = rng.integers(0, 256, (2, C, H, W)).astype(np.uint8)
            zp = int(rng.integers(0, 256))
            q = torch._make_per_tensor_quantized_tensor(torch.from_numpy(x), 0.05, zp)
            if cl:
                q = q.contiguous(memory_format=torch.channels_last)
            # ATen picks the NHWC kernel for any is_contiguous(channels_last) input (C == 1 too)
            cl = q.is_contiguous(memory_format=torch.channels_last)
            if t % 3 == 0:
                sc = float(rng.choice([1.5, 2.0, 2.5, 3.0, 1.7]))
                kw = dict(scale_factor=sc)
            else:
                sc = None
                kw = dict(size=tuple(int(v) for v in rng.integers(1, 16, 2)))
            for mode in ("nearest", "bilinear"):
                ac = bool(rng.integers(0, 2)) if mode == "bilinear" else None
                extra = dict(align_corners=ac) if mode == "bilinear" else {}
                y = F.interpolate(q, mode=mode, **kw, **extra)
                assert y.q_scale() == q.q_scale() and y.q_zero_point() == q.q_zero_point()
                yb = y.int_repr().contiguous().numpy().astype(np.int64)
                oh, ow = yb.shape[2:]
                if mode == "nearest":
                    r = x[:, :, nearest_index(H, oh, sc)][:, :, :, nearest_index(W, ow, sc)]
                else:
                    r = bilinear(x, zp, oh, ow, ac, sc, cl)
                key = (eng, mode, "channels_last" if cl else "contiguous")
                total[key] = total.get(key, 0) + int((r != yb).sum())
    bad = 0
    for k, v in sorted(total.items()):
        print(f"{k[0]:8s} {k[1]:9s} {k[2]:13s} mismatches: {v}")
        bad += v
    # the 1x1 input quirk
    torch.backends.quantized.engine = "fbgemm"
    x = np.arange(1, 6, dtype=np.uint8).reshape(1, 5, 1, 1)
    q = torch._make_per_tensor_quantized_tensor(torch.from_numpy(x), 0.1, 0)
    y = F.interpolate(q, size=(2, 3), mode="nearest").int_repr().numpy()
    nhwc = np.broadcast_to(x.reshape(1, 1, 1, 5), (1, 2, 3, 5)).reshape(-1)
    quirk = np.array_equal(y.reshape(-1), nhwc)
    print("1x1 input: output bytes are the NHWC order read as NCHW:", quirk)
    sys.exit(0 if bad == 0 and quirk else 1)


if __name__ == "__main__":
    main()
