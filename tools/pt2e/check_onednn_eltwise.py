#!/usr/bin/env python3
"""numpy only: recomputes the cases of tools/pt2e/gen_onednn_eltwise.py (oneDNN's int8 conv with a
'hardswish' / 'swish' eltwise post-op) with candidate formulas and prints, per case and candidate,
how many outputs differ. The rule qfuse implements is the first candidate of each post-op (oneDNN
3.13's jit_uni_eltwise_injector, read in the source; tests/data/pt2e/README.md).

Usage: python3 tools/pt2e/check_onednn_eltwise.py DIR
"""
import json, os, sys

import numpy as np

F32, F64, I64 = np.float32, np.float64, np.int64


def f32(v):
    return np.asarray(v, dtype=F32)


def fma(a, b, c):
    """f32 fused multiply-add: the product is exact in f64 (24 + 24 bits), the sum is rounded
    once to f64, then to f32; a double rounding only matters at an f32 half-way point, which
    the f64 sum can land on only if it was exact, so this is exact for these operands"""
    return (a.astype(F64) * b.astype(F64) + c.astype(F64)).astype(F32)


def from_bits(u):
    return np.array(u, dtype=np.uint32).view(F32)


ONE, HALF = F32(1), F32(0.5)


def hardswish_onednn(x):
    """x * max(min(f32(f32(x * alpha) + beta), 1), 0), alpha = f32(1/6), beta = 0.5"""
    t = f32(f32(x * F32(1.0 / 6.0)) + HALF)
    t = np.maximum(np.minimum(t, ONE), F32(0))
    return f32(t * x)


def hardswish_fma(x):
    t = fma(x, np.full_like(x, F32(1.0 / 6.0)), np.full_like(x, HALF))
    return f32(np.maximum(np.minimum(t, ONE), F32(0)) * x)


def hardswish_torch(x):
    """PyTorch / Inductor C++: x * min(max(x + 3, 0), 6) / 6"""
    return f32(f32(x * np.clip(f32(x + F32(3)), 0, 6)) / F32(6))


def hardswish_exact(x):
    xd = x.astype(F64)
    return (xd * np.clip(xd + 3, 0, 6) / 6).astype(F32)


LOG2EF, LN2 = from_bits(0x3fb8aa3b), from_bits(0x3f317218)
LN_MAX, LN_MIN = from_bits(0x42b17218), from_bits(0xc2aeac50)
POL = from_bits([0x3f7ffffb, 0x3efffee3, 0x3e2aad40, 0x3d2b9d0d, 0x3c07cfce])


def fma_split(a, b, c):
    """a * b + c rounded twice (an implementation free to split a fused multiply-add)"""
    return f32(f32(a * b) + c)


def exp_onednn(x, fma=fma):
    x = f32(x)
    under = x < LN_MIN
    x = np.maximum(np.minimum(x, LN_MAX), LN_MIN)
    fx = f32(f32(x * LOG2EF) + HALF)
    fl = np.floor(fx).astype(F32)
    r = fma(-fl, np.full_like(x, LN2), x)
    n = (f32(fl - ONE)).astype(np.int32)
    pw = ((n + 127).astype(np.uint32) << 23).view(F32)
    pw = np.where(under, F32(0), pw).astype(F32)
    p = np.full_like(x, POL[4])
    for c in (POL[3], POL[2], POL[1], POL[0], ONE):
        p = fma(p, r, np.full_like(x, c))
    return f32(f32(p * pw) * F32(2))


def logistic_onednn(x, fma=fma, recip=False):
    neg = np.signbit(x)
    e = exp_onednn(-np.abs(x), fma)
    y = f32(e * f32(ONE / f32(e + ONE))) if recip else f32(e / f32(e + ONE))
    return np.where(neg, y, f32(ONE - y)).astype(F32)


def swish_onednn(x):
    return f32(logistic_onednn(x) * x)


def swish_split_fma(x):
    """oneDNN's formula with each fma rounded twice"""
    return f32(logistic_onednn(x, fma=fma_split) * x)


def swish_recip(x):
    """oneDNN's formula with the division as a product by the reciprocal"""
    return f32(logistic_onednn(x, recip=True) * x)


def swish_exact(x):
    xd = x.astype(F64)
    return (xd / (1 + np.exp(-xd))).astype(F32)


def swish_torch(x):
    """f32(x * sigmoid(x)), sigmoid correctly rounded"""
    s = (1 / (1 + np.exp(-x.astype(F64)))).astype(F32)
    return f32(x * s)


CANDIDATES = {"hardswish": [("onednn", hardswish_onednn), ("fma", hardswish_fma), ("torch", hardswish_torch),
                            ("exact", hardswish_exact)],
              "swish": [("onednn", swish_onednn), ("exact", swish_exact), ("torch_f32", swish_torch),
                        ("split_fma", swish_split_fma), ("recip", swish_recip)]}


def conv_acc(xq, zi, wq, pad, groups=1):
    O, C, k, _ = wq.shape
    H, W = xq.shape[2], xq.shape[3]
    xp = np.pad(xq.astype(I64) - zi, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    acc = np.zeros((xq.shape[0], O, H + 2 * pad - k + 1, W + 2 * pad - k + 1), dtype=I64)
    og, cg = O // groups, C
    for dy in range(k):
        for dx in range(k):
            for g in range(groups):
                acc[:, g * og:(g + 1) * og] += np.einsum(
                    "oc,nchw->nohw", wq[g * og:(g + 1) * og, :, dy, dx].astype(I64),
                    xp[:, g * cg:(g + 1) * cg, dy:dy + acc.shape[2], dx:dx + acc.shape[3]])
    return acc


def main():
    root = sys.argv[1]
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        cj = os.path.join(d, "case.json")
        if not os.path.isfile(cj):
            continue
        c = json.load(open(cj))
        ld = lambda f: np.load(os.path.join(d, f + ".npy"))
        xq, wq, ws, b = ld("x_u8"), ld("weight_q"), ld("weight_scale"), ld("bias")
        si, zi = F32(c["input"]["scale"]), c["input"]["zero_point"]
        acc = conv_acc(xq, zi, wq, c["padding"][0], c.get("groups", 1))
        v = f32(f32(f32(acc.astype(F32) * si) * ws[None, :, None, None]) + b[None, :, None, None])
        f32_out = c["output"]["dtype"] == "float32"
        y = ld("output_f32") if f32_out else ld("output_u8")
        res = []
        for cname, fn in CANDIDATES[c["post_op"]]:
            e = fn(v)
            if f32_out:
                bad = int((e.view(np.uint32) != y.view(np.uint32)).sum())
            else:
                so, zo = F32(c["output"]["scale"]), c["output"]["zero_point"]
                q = np.clip(np.rint(f32(f32(e * f32(ONE / so)) + F32(zo))), 0, 255).astype(np.uint8)
                bad = int((q != y).sum())
            res.append(f"{cname} {bad}")
        print(f"{name:<18} {y.size} outputs; differing: " + ", ".join(res))


if __name__ == "__main__":
    main()
