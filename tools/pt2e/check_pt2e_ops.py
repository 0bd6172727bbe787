#!/usr/bin/env python3
"""Recompute every pt2e case in DIR (made by gen_pt2e_ops.py) with numpy only,
from its inputs and quantization parameters, with the arithmetic of the runtime
that produced it (ExecuTorch + XNNPACK, ExecuTorch portable kernels), and
compare bit for bit with the runtime's outputs.

Rules: tests/data/pt2e/README.md. Every rule here was read from the runtime's
source (XNNPACK, ExecuTorch) and is confirmed by the recorded vectors.

Usage: python3 tools/pt2e/check_pt2e_ops.py DIR [DIR...] [-v]
       DIR is a folder of case folders (tests/data/pt2e/xnnpack) or one case folder.
Needs: numpy
"""
import json, os, sys
import numpy as np

F32, F64, I32, I64 = np.float32, np.float64, np.int32, np.int64

# --mutate NAME swaps one rule for a plausible wrong one; the vectors must then fail.
MUTATIONS = {
    "requant_half_away": "conv/linear/mul requantization rounds half away from zero (not to even)",
    "requant_premul": "conv/linear multiplier m = s_in * (w_scale / s_out) instead of (s_in * w_scale) / s_out",
    "quantize_half_away": "quantize rounds half away from zero",
    "quantize_div": "quantize divides by the scale instead of multiplying by f32(1/scale)",
    "bias_f32_per_tensor": "per-tensor bias uses the per-channel f32 rule",
    "bias_f64_per_channel": "per-channel bias uses the per-tensor f64 rule",
    "add_half_away": "add rounds half away from zero (QNNPACK) instead of half up",
    "add_shift21": "add uses QNNPACK's shift 21 - exponent instead of 20 - exponent",
    "add_float": "add in f32: rint(sa/so*(a-za) + sb/so*(b-zb)) + zo",
    "mean_sub_zp": "mean: rint(sum(q - z_in) * s_in / (N * s_out)) + z_out (zero point removed first)",
    "mean_div": "mean: inv = (s_in / s_out) / N in one f32 division chain",
    "clamp_int": "clamp bounds z + rint(val / scale) (zero point added after rounding)",
    "maxpool_valid": "max pool over the valid taps only (PyTorch's definition; expected to pass)",
    "no_clamp_merge": "no merging of a clamp into the conv/linear/max pool that feeds it",
    "clamp_requant_round_then_zp": "clamp between different qparams adds the zero point after rounding",
    "bn_mul_add": "batch norm: f32(f32(x * w) + b) (no FMA) instead of fma(x, w, b)",
    "bn_portable": "batch norm: ExecuTorch's portable formula ((x - mean) * invstd) * gamma + beta",
    "avgpool_inv": "portable avg_pool2d multiplies the sum by f32(1 / count) instead of dividing",
    "avgpool_cip_valid": "portable avg_pool2d with count_include_pad divides by the whole kernel (ONNX's count)",
    "bnmean_div": "f32 global average (batch_norm_mean): sum / f32(N) instead of sum * f32(1.0f / N)",
    "bnmean_colmajor": "f32 global average: pixels summed column by column instead of in row-major order",
    "bnmean_tree": "f32 global average: pairwise (tree) sum instead of one sequential accumulator",
    "bnmean_f64": "f32 global average: the exact (f64) mean rounded once",
    "xpool_rowmajor": "XNNPACK f32 avg_pool2d: taps in row-major order instead of the indirection's column-major",
    "xpool_div": "XNNPACK f32 avg_pool2d: sum / f32(n) instead of sum * f32(1.0f / n)",
    "xpool_flat": "XNNPACK f32 avg_pool2d: one sequential accumulator instead of the 9-tap tree per pass",
}
MUT = None
TIES = {}


def count_ties(kind, v, ok=None):
    """count exact .5 cases met by a rounding step (to show the vectors exercise ties)"""
    v = np.asarray(v, dtype=F64)
    t = (v - np.floor(v)) == 0.5
    if ok is not None:
        t &= ok
    TIES[kind] = TIES.get(kind, 0) + int(t.sum())


def rint_mut(v, name):
    if MUT == name:
        v = np.asarray(v, dtype=F64)
        return np.sign(v) * np.floor(np.abs(v) + 0.5)
    return np.rint(v)


def f32(x):
    return np.asarray(x, dtype=F32)


def rint(x):
    """round half to even (cvtps2dq, lrintf, nearbyint in the default mode)"""
    return np.rint(x)


def wrap32(x):
    x = np.asarray(x, dtype=I64)
    return ((x + 2 ** 31) % 2 ** 32 - 2 ** 31).astype(I64)


def fma32_np(a, b, c):
    """f32 fused multiply-add RN32(a*b + c) with one rounding (a*b is exact in f64;
    the f64 sum is made round-to-odd so the final rounding to f32 is correct)"""
    a, b, c = (np.asarray(v, F32).astype(F64) for v in (a, b, c))
    p = a * b
    s = p + c
    bb = s - p
    e = (p - (s - bb)) + (c - bb)
    odd = (s.view(np.int64) & 1) == 1
    n = np.nextafter(s, np.where(e > 0, np.inf, -np.inf))
    s = np.where((e != 0) & ~odd, n, s)
    return s.astype(F32)


def xnn_qs8_quantize(val, scale, zp):
    """XNNPACK requantization.h: (int8) lrintf(fminf(fmaxf(val / scale + (float) zp, -128), 127)),
    used for the clamp bounds of fused/standalone relu and hardtanh"""
    v = F32(F32(val) / F32(scale)) if np.isfinite(val) else F32(val)
    if MUT == "clamp_int" and np.isfinite(v):
        return int(min(max(np.rint(v) + zp, -128), 127))
    v = F32(v + F32(zp))
    v = min(max(v, F32(-128.0)), F32(127.0))
    return int(np.rint(v))


# ------------------------------------------------------------------ rules: XNNPACK

def quantize(x, scale, zp):
    """f32 -> qs8 convert (f32-qs8-vcvt; xnn_init_f32_qs8_cvt_scalar_params):
    inv = 1.0f / scale (f32 division); y = sat8(rint(x * inv) + zp)"""
    inv = F32(F32(1.0) / F32(scale))
    p = (f32(x) * inv).astype(F32) if MUT != "quantize_div" else (f32(x) / F32(scale)).astype(F32)
    count_ties("quantize", p, np.abs(p) < 300)
    v = rint_mut(p, "quantize_half_away")
    v = np.clip(v, -2.0 ** 31, 2.0 ** 31 - 1).astype(I64)
    return np.clip(v + zp, -128, 127).astype(I64)


def dequantize(q, scale, zp):
    """qs8 -> f32 convert: f32(q - zp) * scale (one f32 rounding)"""
    return (f32(np.asarray(q, I64) - zp) * F32(scale)).astype(F32)


def bias_i32_rule(b, wscale, in_scale, per_channel):
    """ExecuTorch QuantParams.from_bias + quantize_tensor (serialize time, Python):
    per-channel: bs = f32(ws[o] * f32(s_in)) (torch f32 tensor * python float), then
                 quantize_per_channel: rint(b * f32(1 / bs)) with torch.reciprocal in f32
    per-tensor:  bs = ws * s_in in f64 (two python floats), then quantize_per_tensor:
                 inv = f32(1.0 / bs) (f64 division, rounded to f32 when it meets the f32 tensor),
                 rint(f32(b * inv))"""
    b = f32(b)
    if (per_channel and MUT != "bias_f64_per_channel") or MUT == "bias_f32_per_tensor":
        bs = (f32(wscale) * F32(in_scale)).astype(F32)
        inv = (F32(1.0) / bs).astype(F32)
    else:
        bs = np.asarray(wscale, dtype=F32).astype(F64) * F64(in_scale)
        inv = (1.0 / bs).astype(F32)
    v = rint((b * inv).astype(F32))
    return np.clip(v, -2.0 ** 31, 2.0 ** 31 - 1).astype(I64)


def requant_scale(in_scale, wscale, out_scale):
    """convolution-nhwc.c init_requantization_scale_*: in_scale * kernel_scale / out_scale,
    evaluated left to right in f32"""
    if MUT == "requant_premul":
        return (F32(in_scale) * (f32(wscale) / F32(out_scale)).astype(F32)).astype(F32)
    return ((F32(in_scale) * f32(wscale)).astype(F32) / F32(out_scale)).astype(F32)


def requantize(acc, m, zp, lo, hi):
    """qs8(-qc8w) gemm/igemm/dwconv fp32 epilogue (all x86 variants, e.g.
    qs8-qc8w-gemm-*-minmax-fp32-avx512vnni):
      v = f32(acc) * m; v = min(v, hi - zp); r = cvtps2dq(v) (ties to even);
      y = sat16(r + zp) -> sat8 -> max(y, lo)"""
    v = (f32(wrap32(acc)) * m).astype(F32)
    v = np.minimum(v, F32(hi - zp))
    count_ties("requantize", v, (v > lo - zp - 1) & (v < hi - zp + 1))
    r = rint_mut(v, "requant_half_away").astype(I64)
    return np.clip(r + zp, lo, hi).astype(I64)


def out_bounds(nd):
    """conv/fully-connected output_min/max: xq(float bound) with the output qparams
    (fused relu: [0, +inf]; a merged clamp narrows them, see merge_clamps)"""
    s, z = nd["output_scale"], nd["output_zero_point"]
    lo, hi = -128, 127
    if "act_min" in nd:
        return xnn_qs8_quantize(nd["act_min"], s, z), xnn_qs8_quantize(nd["act_max"], s, z)
    if nd.get("activation") == "relu":
        lo = xnn_qs8_quantize(0.0, s, z)
    return lo, hi


def im2col(x, kh, kw, stride, padding, dilation, pad_value):
    n, c, h, w = x.shape
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), pad_value, dtype=I64)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=I64)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
    return cols, oh, ow


def conv2d(x, nd, t, bias):
    w = t[f"n{nd['id']}_weight_q"].astype(I64)
    zi = nd["input_zero_point"]
    o, cg, kh, kw = w.shape
    g = nd["groups"]
    cols, oh, ow = im2col(x, kh, kw, nd["stride"], nd["padding"], nd["dilation"], zi)
    n = x.shape[0]
    cols = cols - zi  # padded taps hold the input zero point: they contribute 0
    acc = np.zeros((n, o, oh, ow), dtype=I64)
    og = o // g
    for gi in range(g):
        cg_cols = cols[:, gi * cg:(gi + 1) * cg].reshape(n, cg * kh * kw, oh * ow)
        wg = w[gi * og:(gi + 1) * og].reshape(og, cg * kh * kw)
        acc[:, gi * og:(gi + 1) * og] = np.einsum("ok,nkp->nop", wg, cg_cols).reshape(n, og, oh, ow)
    acc = acc + bias.reshape(1, o, 1, 1)
    m = requant_scale(nd["input_scale"], t[f"n{nd['id']}_weight_scale"], nd["output_scale"]).reshape(1, o, 1, 1)
    lo, hi = out_bounds(nd)
    return requantize(acc, m, nd["output_zero_point"], lo, hi), acc


def linear(x, nd, t, bias):
    w = t[f"n{nd['id']}_weight_q"].astype(I64)
    acc = (x - nd["input_zero_point"]) @ w.T + bias.reshape(1, -1)
    m = requant_scale(nd["input_scale"], t[f"n{nd['id']}_weight_scale"], nd["output_scale"]).reshape(1, -1)
    lo, hi = out_bounds(nd)
    return requantize(acc, m, nd["output_zero_point"], lo, hi), acc


def add_params(sa, za, sb, zb, so, zo):
    """xnn_init_qs8_add_minmax_scalar_params"""
    ra = F32(F32(sa) / F32(so))
    rb = F32(F32(sb) / F32(so))
    mx = max(abs(ra), abs(rb))
    exp = int((np.array(mx, F32).view(np.uint32) >> 23)) - 127
    shift = (21 if MUT == "add_shift21" else 20) - exp
    assert 12 <= shift <= 31, shift
    # lrintf(uint32_as_float(float_as_uint32(r) + (shift << 23))) = rint(r * 2^shift), exact scaling
    ma = int(np.rint(F64(abs(ra)) * 2.0 ** shift)) * (1 if ra >= 0 else -1)
    mb = int(np.rint(F64(abs(rb)) * 2.0 ** shift)) * (1 if rb >= 0 else -1)
    bias = (1 << (shift - 1)) - ma * za - mb * zb
    return ma, mb, bias, shift


def add(a, b, nd):
    (sa, sb), (za, zb) = nd["input_scales"], nd["input_zero_points"]
    so, zo = nd["output_scale"], nd["output_zero_point"]
    ma, mb, bias, shift = add_params(sa, za, sb, zb, so, zo)
    acc = wrap32(bias + a * ma + b * mb)
    r = acc >> shift  # arithmetic shift: floor -> round half up (towards +inf)
    exact = ma * (a - za) + mb * (b - zb)
    half = (exact & ((1 << shift) - 1)) == (1 << (shift - 1))
    TIES["add"] = TIES.get("add", 0) + int(half.sum())
    TIES["add (negative)"] = TIES.get("add (negative)", 0) + int((half & (exact < 0)).sum())
    if MUT == "add_half_away":
        r = np.where(half & (exact < 0), r - 1, r)
    if MUT == "add_float":
        v = (F32(F32(sa) / F32(so)) * f32(a - za)).astype(F32) + (F32(F32(sb) / F32(so)) * f32(b - zb)).astype(F32)
        r = np.rint(v.astype(F32)).astype(I64)
    y = np.clip(r + zo, -128, 127)
    if nd["activation"] == "relu":  # XNNPACK inserts a clamp node after the add
        y = np.maximum(y, xnn_qs8_quantize(0.0, so, zo))
    return y.astype(I64)


def mul(a, b, nd):
    """qs8-vmul-minmax-fp32 (x86: avx/sse41 mul16), xnn_init_qs8_mul_minmax_scalar_params:
    scale = f32(f32(sa * sb) / so); p = (a - za) * (b - zb) (int16 operands, int32 product);
    y = sat8(sat16(rint(f32(p) * scale)) + zo); mul + relu: a clamp node after it"""
    (sa, sb), (za, zb) = nd["input_scales"], nd["input_zero_points"]
    so, zo = nd["output_scale"], nd["output_zero_point"]
    scale = F32(F32(F32(sa) * F32(sb)) / F32(so))
    v = (f32((a - za) * (b - zb)) * scale).astype(F32)
    count_ties("mul", v, np.abs(v) < 300)
    r = np.clip(rint_mut(v, "requant_half_away"), -32768, 32767).astype(I64)
    y = np.clip(r + zo, -128, 127)
    if nd["activation"] == "relu":
        y = np.maximum(y, xnn_qs8_quantize(0.0, so, zo))
    return y.astype(I64)


def clamp(x, nd):
    """same qparams in and out: xnn_init_qs8_clamp_scalar_params + s8-vclamp.
    Different qparams (relu6 left in float by the quantizer): XNNPACK has no such clamp
    kernel and builds a 256-entry table with its reference kernel
    (unary_ukernel_quantized): x_f = (f32(q) - f32(z_in)) * s_in; c = min(max(x_f, lo), hi);
    y = sat8(nearbyint(f32(c * f32(1/s_out)) + f32(z_out)))"""
    s, z = nd["output_scale"], nd["output_zero_point"]
    if (s, z) == (nd["input_scale"], nd["input_zero_point"]) and MUT != "clamp_requant_float":
        lo = xnn_qs8_quantize(nd["min"], s, z)
        hi = xnn_qs8_quantize(nd["max"], s, z)
        return np.minimum(np.maximum(x, lo), hi)
    xf = ((f32(x) - F32(nd["input_zero_point"])) * F32(nd["input_scale"])).astype(F32)
    c = np.minimum(np.maximum(xf, F32(nd["min"])), F32(nd["max"])).astype(F32)
    inv = F32(F32(1.0) / F32(s))
    v = ((c * inv).astype(F32) + F32(z)).astype(F32)
    if MUT == "clamp_requant_round_then_zp":
        v = (np.rint((c * inv).astype(F32)) + z).astype(F32)
    return np.clip(np.rint(v), -128, 127).astype(I64)


def pool_out(L, k, s, p0, p1, d):
    return (L + p0 + p1 - ((k - 1) * d + 1)) // s + 1


def ceil_extra_pad(L, k, s, p, d):
    """ExecuTorch op_max_pool2d.calculate_pad_amount_1d (ceil_mode -> extra bottom/right padding)"""
    num_no_ceil = L + 2 * p - d * (k - 1) - 1
    num = num_no_ceil + s - 1
    o = num // s + 1
    adjust = (o - 1) * s >= L + p
    partial = num_no_ceil % s
    return (s - partial) if partial > 0 and not adjust else 0


def maxpool_taps(L, O, k, s, p, d):
    """xnn_indirection_init_maxpool2d: input index of each (output, tap)"""
    idx = np.zeros((O, k), dtype=I64)
    for o in range(O):
        for t in range(k):
            pos = o * s + t * d
            if d > 1:
                while pos < p:
                    pos += d
                while pos >= L + p:
                    pos = max(pos - d, 0)
                pos = min(max(pos - p, 0), L - 1)
            else:
                pos = min(max(pos - p, 0), L - 1)
            idx[o, t] = pos
    return idx


def max_pool2d(x, nd):
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = nd["kernel"], nd["stride"], nd["padding"], nd["dilation"]
    eh = ceil_extra_pad(h, kh, sh, ph, dh) if nd["ceil_mode"] else 0
    ew = ceil_extra_pad(w, kw, sw, pw, dw) if nd["ceil_mode"] else 0
    oh, ow = pool_out(h, kh, sh, ph, ph + eh, dh), pool_out(w, kw, sw, pw, pw + ew, dw)
    if MUT == "maxpool_valid":
        y = np.full((n, c, oh, ow), -(2 ** 31), dtype=I64)
        for oy in range(oh):
            for ox in range(ow):
                for i in range(kh):
                    for j in range(kw):
                        yy, xx = oy * sh - ph + i * dh, ox * sw - pw + j * dw
                        if 0 <= yy < h and 0 <= xx < w:
                            y[:, :, oy, ox] = np.maximum(y[:, :, oy, ox], x[:, :, yy, xx])
        if "act_min" in nd:
            s, z = nd["output_scale"], nd["output_zero_point"]
            y = np.clip(y, xnn_qs8_quantize(nd["act_min"], s, z), xnn_qs8_quantize(nd["act_max"], s, z))
        return y
    iy, ix = maxpool_taps(h, oh, kh, sh, ph, dh), maxpool_taps(w, ow, kw, sw, pw, dw)
    g = x[:, :, iy[:, :, None, None], ix[None, None, :, :]]  # n c oh kh ow kw
    y = g.max(axis=(3, 5))
    if "act_min" in nd:  # a merged clamp: bounds quantized with the (new) output qparams
        s, z = nd["output_scale"], nd["output_zero_point"]
        y = np.clip(y, xnn_qs8_quantize(nd["act_min"], s, z), xnn_qs8_quantize(nd["act_max"], s, z))
    return y


def mean_hw(x, nd, fma=False):
    """global average pooling -> static reduce mean (reduce-nd.c), qs8:
    int32 sum of raw int8 values (qs8-rsum / qs8-rdsum), then the reference int32->qs8
    convert: y = sat8(nearbyint(f32(sum) * inv + zp')) with
      inv = f32(s_in / s_out) * f32(1.0f / f32(N))
      zp' = f32(z_out) - f32(f32(N * z_in) * inv)"""
    n, c, h, w = x.shape
    N = h * w
    si, zi, so, zo = nd["input_scale"], nd["input_zero_point"], nd["output_scale"], nd["output_zero_point"]
    inv = F32(F32(F32(si) / F32(so)) * F32(F32(1.0) / F32(N)))
    zpp = F32(F32(zo) - F32(F32(N * zi) * inv))
    if MUT == "mean_div":
        inv = F32(F32(F32(si) / F32(so)) / F32(N))
        zpp = F32(F32(zo) - F32(F32(N * zi) * inv))
    s = x.sum(axis=(2, 3), keepdims=True)
    if MUT == "mean_sub_zp":
        v = (f32(s - N * zi) * F32(F32(si) / F32(F32(N) * F32(so)))).astype(F32)
        return np.clip(np.rint(v) + zo, -128, 127).astype(I64)
    v = (f32(s) * inv).astype(F32)
    v = (v + zpp).astype(F32)
    count_ties("mean", v)
    return np.clip(rint(v), -128, 127).astype(I64)


# ------------------------------------------------------------------ rules: portable kernels

def adaptive_avg_pool2d_portable(xf, out_size):
    """ExecuTorch kernels/portable/cpu/op__adaptive_avg_pool2d.cpp on f32:
    start = floor(f32(o * L) / O), end = ceil(f32((o+1) * L) / O);
    sum in f32, rows then columns, from 0.0f; out = sum / f32(count)"""
    n, c, h, w = xf.shape
    OH, OW = out_size
    y = np.zeros((n, c, OH, OW), dtype=F32)
    for oh in range(OH):
        h0 = int(np.floor(F32(oh * h) / F32(OH)))
        h1 = int(np.ceil(F32((oh + 1) * h) / F32(OH)))
        for ow in range(OW):
            w0 = int(np.floor(F32(ow * w) / F32(OW)))
            w1 = int(np.ceil(F32((ow + 1) * w) / F32(OW)))
            s = np.zeros((n, c), dtype=F32)
            for i in range(h0, h1):
                for j in range(w0, w1):
                    s = (s + xf[:, :, i, j]).astype(F32)
            y[:, :, oh, ow] = (s / F32((h1 - h0) * (w1 - w0))).astype(F32)
    return y


# ------------------------------------------------------------------ weights

def weight_rule(wf, per_channel, qmin, qmax, eps=2.0 ** -12):
    """torchao MinMaxObserver / PerChannelMinMaxObserver, symmetric int8 [-127, 127]:
    amax = max(-min(w, 0), max(w, 0)); scale = max(f32(amax / 127.0), eps);
    per-channel q = rint(w * f32(1 / scale)) (torch.reciprocal, f32);
    per-tensor  q = rint(w * f32(1.0 / scale)) (python f64 division, rounded to f32)"""
    wf = f32(wf)
    o = wf.shape[0]
    flat = wf.reshape(o, -1) if per_channel else wf.reshape(1, -1)
    amax = np.maximum(-np.minimum(flat.min(axis=1), 0), np.maximum(flat.max(axis=1), 0)).astype(F32)
    scale = np.maximum((amax / F32((qmax - qmin) / 2)).astype(F32), F32(eps)).astype(F32)
    if per_channel:
        inv = (F32(1.0) / scale).astype(F32)
    else:
        inv = np.array([F32(1.0 / F64(scale[0]))], dtype=F32)
    q = np.clip(rint((flat * inv[:, None]).astype(F32)), qmin, qmax).astype(np.int8).reshape(wf.shape)
    if not per_channel:
        scale = np.full(o, scale[0], dtype=F32)
    return q, scale


# ------------------------------------------------------------------ driver

HAS_CLAMP = ("conv2d", "linear", "max_pool2d")


def merge_clamps(nodes):
    """XNNPACK subgraph optimization optimize_common_subgraphs_merge_clamps: a clamp whose
    input is produced by a convolution / fully-connected / max-pooling node and read by
    nothing else is removed; the producer writes the clamp's output tensor directly
    (requantizing to the clamp's OUTPUT qparams, skipping its own) and its float bounds
    become [min(max(p_lo, c_lo), c_hi), min(max(p_hi, c_lo), c_hi)]. A max pool has no
    requantization: it passes its int8 values on unchanged, now read with the clamp's
    output qparams."""
    nodes = [dict(n) for n in nodes]
    users = {}
    for n in nodes:
        for v in n["inputs"]:
            users[v] = users.get(v, 0) + 1
    by_out = {n["output"]: n for n in nodes}
    keep = []
    for n in nodes:
        p = by_out.get(n["inputs"][0]) if n["op"] == "clamp" else None
        if p is not None and p["op"] in HAS_CLAMP and users[n["inputs"][0]] == 1:
            plo, phi = p.get("act_min", -np.inf), p.get("act_max", np.inf)
            if p.get("activation") == "relu":
                plo = max(plo, 0.0)
            p["act_min"] = min(max(plo, n["min"]), n["max"])
            p["act_max"] = min(max(phi, n["min"]), n["max"])
            p["output"] = n["output"]
            p["output_scale"], p["output_zero_point"] = n["output_scale"], n["output_zero_point"]
            p["merged_clamp"] = n["id"]
            continue
        keep.append(n)
    return keep


def unary_rule(chain, si, zi, so, zo):
    """the float-unary-op table (README "unary ops"): qfuse_export.xnnpack_rules.unary_table"""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                    "python"))
    from qfuse_export.xnnpack_rules import unary_table

    return unary_table(chain, si, zi, so, zo)


def batch_norm_rule(nd, t, k):
    """README "batch norm": qfuse_export.xnnpack_rules.batch_norm_tables (the FMA rule), or a
    mutated candidate; [C, 256] int8 values indexed by the input's stored byte"""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                    "python"))
    from qfuse_export import xnnpack_rules as xr

    mean, var, gamma, beta = (t[f"n{k}_{n}"] for n in ("running_mean", "running_var", "weight", "bias"))
    si, zi, so, zo = nd["input_scale"], nd["input_zero_point"], nd["output_scale"], nd["output_zero_point"]
    lo, hi = F32(float(nd["act_min"])), F32(float(nd["act_max"]))
    if MUT not in ("bn_mul_add", "bn_portable"):
        return xr.batch_norm_tables(mean, var, gamma, beta, nd["eps"], si, zi, so, zo, lo, hi).astype(I64) - 128
    x = ((np.arange(-128, 128) - zi).astype(F32) * F32(si)).astype(F32)[None, :]
    if MUT == "bn_mul_add":
        w, b = xr.batch_norm_weights(mean, var, gamma, beta, nd["eps"])
        y = ((x * w[:, None]).astype(F32) + b[:, None]).astype(F32)
    else:
        invstd = (1.0 / np.sqrt(var.astype(F64) + nd["eps"])).astype(F32)
        y = ((((x - mean[:, None]).astype(F32) * invstd[:, None]).astype(F32) * gamma[:, None]).astype(F32)
             + beta[:, None]).astype(F32)
    y = np.minimum(np.maximum(y, lo), hi)
    return np.clip(np.rint((y * F32(F32(1) / F32(so))).astype(F32)).astype(I64) + zo, -128, 127)


def batch_norm_mean_rule(nd, t, pre):
    """README "batch norm + mean": XNNPACK's f32 batch norm (+ clamp) per byte
    (xnnpack_rules.batch_norm_values; bn_mul_add: multiply then add), its f32 global average
    (xnnpack_rules.channel_mean_f32, or a mutated order / scale form). Returns (values [C, 256],
    a function of the int8 input [N, C, H, W] giving the f32 means [N, C])"""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                    "python"))
    from qfuse_export import xnnpack_rules as xr

    mean, var, gamma, beta = (t[f"{pre}_{n}"] for n in ("running_mean", "running_var", "weight", "bias"))
    si, zi = nd["input_scale"], nd["input_zero_point"]
    lo, hi = F32(float(nd["act_min"])), F32(float(nd["act_max"]))
    values = xr.batch_norm_values(mean, var, gamma, beta, nd["eps"], si, zi, lo, hi)
    if MUT == "bn_mul_add":
        w, b = xr.batch_norm_weights(mean, var, gamma, beta, nd["eps"])
        x = ((np.arange(-128, 128) - zi).astype(F32) * F32(si)).astype(F32)[None, :]
        values = np.minimum(np.maximum(((x * w[:, None]).astype(F32) + b[:, None]).astype(F32), lo), hi)

    def pool(q):
        if MUT not in ("bnmean_div", "bnmean_colmajor", "bnmean_tree", "bnmean_f64"):
            return xr.channel_mean_f32(values, q)
        n, c, h, w = q.shape
        if MUT == "bnmean_colmajor":
            q = q.transpose(0, 1, 3, 2)
        v = values[np.arange(c)[None, :, None], (q.astype(I64) + 128).reshape(n, c, h * w)]
        if MUT == "bnmean_f64":
            return (v.astype(F64).sum(2) / (h * w)).astype(F32)
        if MUT == "bnmean_tree":
            while v.shape[2] > 1:
                if v.shape[2] % 2:
                    v = np.concatenate([v, np.zeros((n, c, 1), F32)], 2)
                v = (v[:, :, 0::2] + v[:, :, 1::2]).astype(F32)
            return (v[:, :, 0] * F32(F32(1) / F32(h * w))).astype(F32)
        acc = np.zeros((n, c), F32)
        for p in range(h * w):
            acc = (v[:, :, p] + acc).astype(F32)
        return (acc * F32(F32(1) / F32(h * w))).astype(F32) if MUT != "bnmean_div" else (acc / F32(h * w)).astype(F32)

    return values, pool


def avg_pool2d_portable(xf, nd):
    """ExecuTorch kernels/portable/cpu/op_avg_pool2d.cpp (kernel_reduction_then_map_2d) on f32:
    i0 = o*s - p, i1 = min(i0 + k, L + p), taps [max(i0, 0), min(i1, L)); the first tap, then
    `tap + acc` in row-major order; out = acc / f32(count), count = (i1 - i0) products
    (count_include_pad), the taps' count, or divisor_override"""
    n, c, h, w = xf.shape
    (kh, kw), (sh, sw), (ph, pw) = nd["kernel"], nd["stride"], nd["padding"]
    cm, cip, dv = nd["ceil_mode"], nd["count_include_pad"], nd["divisor_override"]

    def out_len(L, k, s, p):
        num = L + 2 * p - k
        o = (-(-num // s) if cm else num // s) + 1
        if cm and (o - 1) * s >= L + p:
            o -= 1
        return o

    OH, OW = out_len(h, kh, sh, ph), out_len(w, kw, sw, pw)
    y = np.zeros((n, c, OH, OW), dtype=F32)
    for oy in range(OH):
        h0 = oy * sh - ph
        h1 = min(h0 + kh, h + ph)
        for ox in range(OW):
            w0 = ox * sw - pw
            w1 = min(w0 + kw, w + pw)
            pool = (h1 - h0) * (w1 - w0)
            a0, a1, b0, b1 = max(h0, 0), min(h1, h), max(w0, 0), min(w1, w)
            if MUT == "avgpool_cip_valid" and cip:
                pool = kh * kw
            count = dv if dv is not None else (pool if cip else (a1 - a0) * (b1 - b0))
            acc = None
            for i in range(a0, a1):
                for j in range(b0, b1):
                    acc = xf[:, :, i, j].astype(F32) if acc is None else (xf[:, :, i, j] + acc).astype(F32)
            if MUT == "avgpool_inv":
                y[:, :, oy, ox] = (acc * (F32(1) / F32(count))).astype(F32)
            else:
                y[:, :, oy, ox] = (acc / F32(count)).astype(F32)
    return y


def load_case(d):
    with open(os.path.join(d, "case.json")) as f:
        case = json.load(f)
    t = {}
    for fn in os.listdir(d):
        if fn.endswith(".npy"):
            t[fn[:-4]] = np.load(os.path.join(d, fn))
    return case, t


def run_case(d, verbose=False):
    case, t = load_case(d)
    vals = {}
    notes = []
    for i, inp in enumerate(case["inputs"]):
        vals[inp["name"]] = t[f"input_{i}"]
    nodes = merge_clamps(case["nodes"]) if MUT != "no_clamp_merge" else case["nodes"]
    for nd in nodes:
        op = nd["op"]
        ins = [vals[v] for v in nd["inputs"]]
        k = nd["id"]
        if op == "quantize":
            y = quantize(ins[0], nd["output_scale"], nd["output_zero_point"])
        elif op == "dequantize":
            y = dequantize(ins[0], nd["input_scale"], nd["input_zero_point"])
        elif op in ("conv2d", "linear"):
            wq, ws = t[f"n{k}_weight_q"], t[f"n{k}_weight_scale"]
            if f"n{k}_weight_f32" in t:
                rq, rs = weight_rule(t[f"n{k}_weight_f32"], nd["weight_per_channel"], nd["weight_qmin"], nd["weight_qmax"])
                if not (np.array_equal(rq, wq) and np.array_equal(rs.view(I32), f32(ws).view(I32))):
                    notes.append(f"n{k} weight rule: {int((rq != wq).sum())} weights / "
                                 f"{int((rs != ws).sum())} scales differ")
            if nd["has_bias"]:
                bias = bias_i32_rule(t[f"n{k}_bias"], ws, nd["input_scale"], nd["weight_per_channel"])
                rec = t[f"n{k}_bias_i32"].astype(I64)
                if not np.array_equal(bias, rec):
                    notes.append(f"n{k} bias rule: {int((bias != rec).sum())}/{bias.size} differ from serialized")
            else:
                bias = np.zeros(wq.shape[0], dtype=I64)
            fn = conv2d if op == "conv2d" else linear
            y, acc = fn(ins[0], nd, t, bias)
            if np.abs(acc).max() >= 2 ** 24:
                notes.append(f"n{k} |acc| reaches {int(np.abs(acc).max())} (>= 2^24: f32(acc) rounds)")
        elif op == "add":
            y = add(ins[0], ins[1], nd)
        elif op == "mul":
            y = mul(ins[0], ins[1], nd)
        elif op == "clamp":
            y = clamp(ins[0], nd)
        elif op == "max_pool2d":
            y = max_pool2d(ins[0], nd)
        elif op == "mean_hw":
            y = mean_hw(ins[0], nd)
        elif op == "cat":
            assert len(set(nd["input_scales"] + [nd["output_scale"]])) == 1
            assert len(set(nd["input_zero_points"] + [nd["output_zero_point"]])) == 1
            y = np.concatenate(ins, axis=nd["dim"])
        elif op == "reshape":
            y = ins[0].reshape(nd["shape"])
        elif op == "adaptive_avg_pool2d":
            assert nd["backend"] == "portable", "adaptive_avg_pool2d (output > 1x1) is not delegated to XNNPACK"
            xf = dequantize(ins[0], nd["input_scale"], nd["input_zero_point"])
            yf = adaptive_avg_pool2d_portable(xf, nd["output_size"])
            y = quantize(yf, nd["output_scale"], nd["output_zero_point"])
        elif op == "unary":
            # the exporter's table rule (qfuse_export.xnnpack_rules.unary_table), and the case's
            # recorded table (what tests/pt2e_xnnpack.rs runs) must be that table
            table = np.array(unary_rule([(nd["fn"], nd.get("param"))], nd["input_scale"], nd["input_zero_point"],
                                        nd["output_scale"], nd["output_zero_point"]), dtype=I64)
            if "table" in nd and list(nd["table"]) != table.tolist():
                notes.append(f"n{k} recorded table differs from the rule")
            y = table[ins[0].astype(I64) + 128] - 128
        elif op == "batch_norm":
            table = batch_norm_rule(nd, t, k)
            if MUT is None and not np.array_equal(table + 128, t[f"n{k}_tables"].astype(I64)):
                notes.append(f"n{k} recorded tables differ from the rule")
            c = table.shape[0]
            ch = np.arange(c).reshape((1, c) + (1,) * (ins[0].ndim - 2))
            y = table[ch, ins[0].astype(I64) + 128]
        elif op == "batch_norm_mean":
            values, pool = batch_norm_mean_rule(nd, t, f"n{k}")
            if MUT is None and not np.array_equal(values.view(I32), t[f"n{k}_values"].view(I32)):
                notes.append(f"n{k} recorded values differ from the rule")
            y = quantize(pool(ins[0]), nd["output_scale"], nd["output_zero_point"])[:, :, None, None]
        elif op == "avg_pool2d" and nd["backend"] == "xnnpack":
            y = xnn_avg_pool2d(ins[0], nd["input_scale"], nd["input_zero_point"], nd)
            y = quantize(y, nd["output_scale"], nd["output_zero_point"])
        elif op == "avg_pool2d":
            xf = dequantize(ins[0], nd["input_scale"], nd["input_zero_point"])
            y = quantize(avg_pool2d_portable(xf, nd), nd["output_scale"], nd["output_zero_point"])
        elif op == "f32_clamp":
            y = np.minimum(np.maximum(ins[0], F32(nd["min"])), F32(nd["max"])).astype(F32)
        else:
            raise NotImplementedError(op)
        vals[nd["output"]] = y
    bad = []
    for i, o in enumerate(case["outputs"]):
        got = f32(vals[o["name"]])
        ref = t[f"output_{i}"]
        if got.shape != ref.shape:
            bad.append(f"output {i}: shape {got.shape} vs {ref.shape}")
            continue
        diff = got.view(I32) != ref.view(I32)
        if diff.any():
            msg = f"output {i}: {int(diff.sum())}/{diff.size} differ"
            if "int8" in o:
                qref = t[f"output_q_{i}"].astype(I64)
                qgot = vals[case["nodes"][[n["output"] for n in case["nodes"]].index(o["name"])]["inputs"][0]]
                dq = np.abs(qgot - qref)
                j = np.argmax(dq)
                msg += f", max {int(dq.max())} steps (first at flat {int(np.flatnonzero(dq)[0])}: " \
                       f"got {int(qgot.flat[np.flatnonzero(dq)[0]])}, runtime {int(qref.flat[np.flatnonzero(dq)[0]])})"
            bad.append(msg)
    for ch in case.get("f32_chains", []):
        # no quantize after the pool: ExecuTorch's f32 output itself
        j = ch["id"]
        values, pool = batch_norm_mean_rule(ch, t, f"f{j}")
        if MUT is None and not np.array_equal(values.view(I32), t[f"f{j}_values"].view(I32)):
            notes.append(f"f32 chain {j} recorded values differ from the rule")
        q = quantize(t[f"f{j}_input"], ch["input_scale"], ch["input_zero_point"])
        got, ref = pool(q).reshape(-1), t[f"f{j}_output"].reshape(-1)
        diff = got.view(I32) != ref.view(I32)
        if diff.any():
            bad.append(f"f32 chain {j}: {int(diff.sum())}/{diff.size} f32 differ")
    for ch in case.get("f32_pools", []):
        # XNNPACK's f32 avg_pool2d without the quantize: ExecuTorch's f32 output itself
        j = ch["id"]
        q = quantize(t[f"f{j}_input"], ch["input_scale"], ch["input_zero_point"])
        got = xnn_avg_pool2d(q, ch["input_scale"], ch["input_zero_point"], ch).reshape(-1)
        ref = t[f"f{j}_output"].reshape(-1)
        diff = got.view(I32) != ref.view(I32)
        if diff.any():
            bad.append(f"f32 pool {j}: {int(diff.sum())}/{diff.size} f32 differ")
    return case, bad, notes


def xnn_avg_pool2d(q, si, zi, nd):
    """README "avg_pool2d (XNNPACK)": qfuse_export.xnnpack_rules.avg_pool2d_f32 (or a mutation)"""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                    "python"))
    from qfuse_export import xnnpack_rules as xr

    assert not nd.get("ceil_mode") and not nd.get("count_include_pad") and nd.get("divisor_override") is None
    return xr.avg_pool2d_f32(q, si, zi, nd["kernel"], nd["stride"], nd["padding"],
                             order="row" if MUT == "xpool_rowmajor" else "col", tree=MUT != "xpool_flat",
                             divide=MUT == "xpool_div")


def main():
    global MUT
    argv = sys.argv[1:]
    if "--mutate" in argv:
        i = argv.index("--mutate")
        MUT = argv[i + 1]
        del argv[i:i + 2]
        if MUT not in MUTATIONS:
            print("mutations:\n" + "\n".join(f"  {k}: {v}" for k, v in MUTATIONS.items()))
            sys.exit(2)
        print(f"MUTATED RULE: {MUTATIONS[MUT]}")
    args = [a for a in argv if not a.startswith("-")]
    verbose = "-v" in argv
    dirs = []
    for a in args:
        if os.path.isfile(os.path.join(a, "case.json")):
            dirs.append(a)
        else:
            dirs += sorted(os.path.join(a, d) for d in os.listdir(a) if os.path.isfile(os.path.join(a, d, "case.json")))
    if not dirs:
        print("no cases found")
        sys.exit(2)
    npass = nfail = 0
    for d in dirs:
        case, bad, notes = run_case(d, verbose)
        ok = not bad and not any("rule" in n for n in notes)
        ops = ",".join(n["op"] for n in case["nodes"])
        status = "ok  " if ok else "FAIL"
        print(f"{status} {case['name']:<34} [{ops}]" + ("" if ok else "  " + "; ".join(bad + notes)))
        if verbose and ok and notes:
            print("      " + "; ".join(notes))
        npass += ok
        nfail += not ok
    print("exact .5 ties met: " + ", ".join(f"{k} {v}" for k, v in TIES.items()))
    print(f"{npass} passed, {nfail} failed")
    sys.exit(1 if nfail else 0)


if __name__ == "__main__":
    main()
