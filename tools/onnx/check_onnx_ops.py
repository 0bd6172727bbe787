#!/usr/bin/env python3
"""Recompute ONNX Runtime's outputs for quantized ONNX models in plain numpy, bit for
bit, with the rules written down in tests/data/onnx/README.md, and compare.

    python3 tools/onnx/check_onnx_ops.py tests/data/onnx/ops     (a vector folder + manifest.json)

The reference is an interpreter of ONNX graphs: QOperator nodes (QLinearConv, QGemm, ...)
run the integer rules directly; QDQ graphs (DequantizeLinear -> op -> QuantizeLinear, as
onnxruntime.quantization.quantize_static writes them) first go through `fuse_qdq`, which
makes the same decisions ONNX Runtime 1.32's CPU execution provider makes on x86-64
(which groups become integer kernels, which stay in float, int8 -> uint8 rewrites), then
run. Prints one line per case and "N passed, M failed". Needs numpy and onnx only.
"""
import json
import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper

F32 = np.float32
F64 = np.float64
RANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127), np.dtype(np.int32): (-2 ** 31, 2 ** 31 - 1)}


# ------------------------------------------------------------------ primitives

def f32(x):
    return np.asarray(x, dtype=F32)


def rint(x):
    """round to nearest, ties to even (cvtps2dq / nearbyintf / WGSL round)"""
    return np.rint(x)


def fma32(a, b, c):
    """fused multiply-add in f32: one rounding of a*b + c (vfmadd*ps; Rust f32::mul_add).
    a*b is exact in f64; the f64 sum is made round-to-odd so that rounding it to f32 is correct."""
    a, b, c = (np.asarray(v, F32).astype(F64) for v in (a, b, c))
    p = a * b
    s = p + c
    bb = s - p
    e = (p - (s - bb)) + (c - bb)
    odd = (s.view(np.int64) & 1) == 1
    n = np.nextafter(s, np.where(e > 0, np.inf, -np.inf))
    s = np.where((e != 0) & ~odd, n, s)
    return s.astype(F32)


def i2f(acc):
    """int32 -> f32 conversion (cvtdq2ps): round to nearest even"""
    return np.asarray(acc, np.int64).astype(F64).astype(F32)  # |acc| < 2^31: exact in f64, one rounding


def saturate(v, dtype):
    lo, hi = RANGE[np.dtype(dtype)]
    return np.clip(v, lo, hi).astype(dtype)


def quantize(x, scale, zp, dtype):
    """QuantizeLinear / MlasQuantizeLinear: rint(x / scale) + zp, saturated (true f32 division)"""
    v = rint(f32(x) / f32(scale))
    return saturate(v + np.asarray(zp, np.int64), dtype)


def dequantize(q, scale, zp):
    """DequantizeLinear / MlasDequantizeLinear: f32(q - zp) * scale (one rounding)"""
    return (np.asarray(q, np.int64) - np.asarray(zp, np.int64)).astype(F32) * f32(scale)


def requantize(acc, scale, zp, dtype):
    """MlasRequantizeOutput and the ConvSym kernels: f32(acc) * scale (per tensor or per
    output channel, precomputed), clamp to [qmin - zp, qmax - zp] in f32, round ties-even, + zp"""
    lo, hi = RANGE[np.dtype(dtype)]
    zp = int(zp)
    v = i2f(acc) * f32(scale)
    v = np.clip(v, F32(lo - zp), F32(hi - zp))
    return (rint(v).astype(np.int64) + zp).astype(dtype)


def out_scale(xs, ws, ys):
    """(x_scale * w_scale) / y_scale, f32, left to right (QLinearConv / QLinearMatMul ComputeOutputScale)"""
    return f32(f32(f32(xs) * f32(ws)) / f32(ys))


# ------------------------------------------------------------ integer kernels

def conv_acc(x, w, x_zp, w_zp, strides, pads, dil, group):
    """int64 accumulator of (x - x_zp) * (w - w_zp); padded taps hold x_zp (contribute 0). NCHW/OIHW, 1-D or 2-D."""
    x = np.asarray(x, np.int64) - int(x_zp)
    w = np.asarray(w, np.int64) - np.asarray(w_zp, np.int64).reshape((-1,) + (1,) * (w.ndim - 1))
    sp = x.ndim - 2
    if sp == 1:
        x, w = x[:, :, None, :], w[:, :, None, :]
        strides, dil = [1] + list(strides), [1] + list(dil)
        pads = [0, pads[0], 0, pads[1]]
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = (h + pads[0] + pads[2] - dil[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (wd + pads[1] + pads[3] - dil[1] * (kw - 1) - 1) // strides[1] + 1
    out = np.zeros((n, o, oh, ow), np.int64)
    og = o // group
    for g in range(group):
        xs = xp[:, g * cg:(g + 1) * cg]
        for ky in range(kh):
            for kx in range(kw):
                patch = xs[:, :, ky * dil[0]: ky * dil[0] + strides[0] * (oh - 1) + 1: strides[0],
                           kx * dil[1]: kx * dil[1] + strides[1] * (ow - 1) + 1: strides[1]]
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, w[g * og:(g + 1) * og, :, ky, kx])
    if sp == 1:
        out = out[:, :, 0, :]
    return out


def conv_attrs(attrs, w):
    k = len(w.shape) - 2
    strides = attrs.get("strides", [1] * k)
    dil = attrs.get("dilations", [1] * k)
    pads = attrs.get("pads", [0] * (2 * k))
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise NotImplementedError("auto_pad")
    return strides, pads, dil, attrs.get("group", 1)


def check_i32(acc, what):
    if acc.min() < -2 ** 31 or acc.max() >= 2 ** 31:
        raise OverflowError(f"{what}: int32 accumulator overflow")


def k_qlinearconv(x, xs, xz, w, ws, wz, ys, yz, b=None, attrs=None):
    strides, pads, dil, group = conv_attrs(attrs, w)
    acc = conv_acc(x, w, xz, wz, strides, pads, dil, group)
    if b is not None:
        acc = acc + np.asarray(b, np.int64).reshape((1, -1) + (1,) * (acc.ndim - 2))
    check_i32(acc, "QLinearConv")
    m = out_scale(xs, ws, ys).reshape((1, -1) + (1,) * (acc.ndim - 2)) if np.ndim(ws) else out_scale(xs, ws, ys)
    return requantize(acc, m, yz, x.dtype)


def matmul_acc(a, b, az, bz):
    a = np.asarray(a, np.int64) - int(az)
    bz = np.asarray(bz, np.int64)
    b = np.asarray(b, np.int64) - (bz.reshape(bz.shape[:-1] + (1, bz.shape[-1])) if bz.ndim else bz)
    return np.matmul(a, b)


def k_qlinearmatmul(a, as_, az, b, bs, bz, ys, yz):
    acc = matmul_acc(a, b, az, bz)
    check_i32(acc, "QLinearMatMul")
    return requantize(acc, out_scale(as_, bs, ys), yz, a.dtype)


def k_qgemm(a, as_, az, b, bs, bz, c, ys, yz, attrs, out_dtype):
    alpha = F32(attrs.get("alpha", 1.0))
    if attrs.get("transA", 0):
        a = a.T
    if attrs.get("transB", 0):
        b = b.T
    bz = np.asarray(bz)
    acc = matmul_acc(a, b, az, bz)
    if c is not None:
        acc = acc + np.asarray(c, np.int64)
    check_i32(acc, "QGemm")
    s = f32(f32(alpha * f32(as_)) * f32(bs))
    if ys is None:
        return i2f(acc) * s                      # float output: f32(acc + C) * (alpha*a_scale*b_scale)
    s = f32(s / f32(ys))
    return requantize(acc, s, yz, out_dtype)


# QLinearAdd: MLAS AVX2 kernel (qladd_avx2.cpp) as compiled in the PyPI build (GCC contracts the
# scalar expressions and the mul+add intrinsics into fused multiply-adds; pinned by probes):
#   rA = sA / sC, rB = sB / sC (f32);  fixed = f32(zC) - fma(rA, f32(zA), rB * f32(zB))
#   both inputs vary:  v = fma(a, rA, fma(b, rB, fixed))
#   one input is a single value over the innermost run (broadcast / scalar): the kernel is called
#   with the varying input as "A": fixed = f32(zC) - fma(r_var, z_var, r_one * z_one);
#   fixed' = fma(one, r_one, fixed);  v = fma(var, r_var, fixed')
#   y = saturate(rint(v))
def k_qlinearadd(a, sa, za, b, sb, zb, sc, zc):
    out_shape = np.broadcast_shapes(a.shape, b.shape)
    ra, rb = f32(f32(sa) / f32(sc)), f32(f32(sb) / f32(sc))
    za_, zb_, zc_ = int(za), int(zb), int(zc)
    dtype = a.dtype
    mode = binary_mode(a.shape, b.shape)
    if mode == "scalar_a":
        a, b, ra, rb, za_, zb_ = b, a, rb, ra, zb_, za_
        mode = "scalar_b"
    fixed = F32(F32(zc_) - fma32(ra, F32(za_), F32(rb * F32(zb_))))
    A = np.broadcast_to(f32(a.astype(np.int32)), out_shape)
    B = np.broadcast_to(f32(b.astype(np.int32)), out_shape)
    if mode == "scalar_b":
        v = fma32(A, ra, fma32(B, rb, fixed))   # same expression; fixed' = fma(b, rB, fixed) per broadcast value
    else:
        v = fma32(A, ra, fma32(B, rb, fixed))
    return saturate(rint(v), dtype)


# QLinearMul: MLAS SSE2 kernel (qlmul.cpp): p = (a - zA) * (b - zB) exact in i32;
#   v = f32(p) * f32(sA * sB / sC) + f32(zC)   (two roundings, no FMA);  y = saturate(rint(v))
def k_qlinearmul(a, sa, za, b, sb, zb, sc, zc):
    mode = binary_mode(a.shape, b.shape)
    if mode == "scalar_a":
        a, b, sa, sb, za, zb = b, a, sb, sa, zb, za
    r = f32(f32(f32(sa) * f32(sb)) / f32(sc))
    p = (a.astype(np.int64) - int(za)) * (b.astype(np.int64) - int(zb))
    v = F32(i2f(p) * r) + F32(int(zc))
    return saturate(rint(v), a.dtype)


def binary_mode(sa, sb):
    """How ORT's BroadcastLooper hands the two inputs to the kernel: which one is a single
    value over the innermost run of elements."""
    n = max(len(sa), len(sb))
    sa, sb = (1,) * (n - len(sa)) + tuple(sa), (1,) * (n - len(sb)) + tuple(sb)
    if int(np.prod(sb)) == 1 and int(np.prod(sa)) != 1:
        return "scalar_b"
    if int(np.prod(sa)) == 1 and int(np.prod(sb)) != 1:
        return "scalar_a"
    if sa == sb:
        return "vector"
    # the innermost dimensions where the shapes differ decide
    i = n - 1
    while i >= 0 and sa[i] == sb[i]:
        i -= 1
    if sb[i] == 1 and all(sb[j] == 1 for j in range(i, n)):
        return "scalar_b"
    if sa[i] == 1 and all(sa[j] == 1 for j in range(i, n)):
        return "scalar_a"
    return "vector"


def k_qgap(x, xs, xz, ys, yz, channels_last):
    """QLinearGlobalAveragePool (MlasQLinearGlobalAveragePool, x86):
    scale = xs / (ys * f32(N)); acc = sum(q) - xz * N (i32); y = clamp(rint(f32(acc) * scale)) + yz"""
    if channels_last:
        x = np.moveaxis(x, -1, 1)
    n = int(np.prod(x.shape[2:]))
    scale = f32(f32(xs) / f32(f32(ys) * F32(n)))
    acc = x.reshape(x.shape[0], x.shape[1], -1).astype(np.int64).sum(-1) - int(xz) * n
    y = requantize(acc, scale, yz, x.dtype).reshape(x.shape[:2] + (1,) * (x.ndim - 2))
    if channels_last:
        y = np.moveaxis(y, 1, -1)
    return y


def pool_out(L, k, s, pb, pe, d, ceil):
    if ceil:
        o = -(-(L + pb + pe - d * (k - 1) - 1) // s) + 1
    else:
        o = (L + pb + pe - d * (k - 1) - 1) // s + 1
    return o


def k_qavgpool(x, xs, xz, ys, yz, attrs):
    """QLinearAveragePool (contrib qlinear_pool.cc): dequantize every input to f32
    (xs * f32(q - xz)), sum the window's valid taps in f32 in row-major order starting from 0.0,
    divide by the count (kernel size with count_include_pad, else the valid taps), then
    y = saturate(rint(sum / ys + f32(yz))) -- the zero point is added before rounding.
    A kernel equal to the whole image with no padding takes the QLinearGlobalAveragePool path."""
    cl = attrs.get("channels_last", 0)
    if cl:
        x = np.moveaxis(x, -1, 1)
    k = attrs["kernel_shape"]
    nd = len(k)
    strides = attrs.get("strides", [1] * nd)
    pads = attrs.get("pads", [0] * (2 * nd))
    cip = attrs.get("count_include_pad", 0)
    ceil = attrs.get("ceil_mode", 0)
    if list(x.shape[2:]) == list(k) and all(p == 0 for p in pads):
        y = k_qgap(x, xs, xz, ys, yz, 0)
        return np.moveaxis(y, 1, -1) if cl else y
    if nd != 2:
        raise NotImplementedError("QLinearAveragePool rank")
    H, W = x.shape[2:]
    OH = pool_out(H, k[0], strides[0], pads[0], pads[2], 1, ceil)
    OW = pool_out(W, k[1], strides[1], pads[1], pads[3], 1, ceil)
    # ORT PoolAttributes::SetOutputSize with ceil_mode: drop a last window starting in the end padding
    if ceil:
        if (OH - 1) * strides[0] >= H + pads[0]:
            OH -= 1
        if (OW - 1) * strides[1] >= W + pads[1]:
            OW -= 1
    d = dequantize(x, xs, xz)
    y = np.zeros(x.shape[:2] + (OH, OW), x.dtype)
    for oh in range(OH):
        hs = oh * strides[0] - pads[0]
        he = min(hs + k[0], H)
        hs = max(hs, 0)
        for ow in range(OW):
            ws_ = ow * strides[1] - pads[1]
            we = min(ws_ + k[1], W)
            ws_ = max(ws_, 0)
            acc = np.zeros(x.shape[:2], F32)
            for h in range(hs, he):
                for w in range(ws_, we):
                    acc = F32(acc + d[:, :, h, w])
            cnt = k[0] * k[1] if cip else (he - hs) * (we - ws_)
            v = F32(acc / F32(cnt))
            y[:, :, oh, ow] = saturate(rint(F32(F32(v / f32(ys)) + F32(int(yz)))), x.dtype)
    if cl:
        y = np.moveaxis(y, 1, -1)
    return y


def k_maxpool(x, attrs):
    k = attrs["kernel_shape"]
    nd = len(k)
    strides = attrs.get("strides", [1] * nd)
    pads = attrs.get("pads", [0] * (2 * nd))
    dil = attrs.get("dilations", [1] * nd)
    ceil = attrs.get("ceil_mode", 0)
    if nd != 2:
        raise NotImplementedError("MaxPool rank")
    H, W = x.shape[2:]
    OH = pool_out(H, k[0], strides[0], pads[0], pads[2], dil[0], ceil)
    OW = pool_out(W, k[1], strides[1], pads[1], pads[3], dil[1], ceil)
    if ceil:
        if (OH - 1) * strides[0] >= H + pads[0]:
            OH -= 1
        if (OW - 1) * strides[1] >= W + pads[1]:
            OW -= 1
    lo = RANGE[x.dtype][0] if x.dtype != np.float32 else -np.inf
    y = np.full(x.shape[:2] + (OH, OW), lo, x.dtype)
    for oh in range(OH):
        for ow in range(OW):
            for ky in range(k[0]):
                h = oh * strides[0] - pads[0] + ky * dil[0]
                if not 0 <= h < H:
                    continue
                for kx in range(k[1]):
                    w = ow * strides[1] - pads[1] + kx * dil[1]
                    if 0 <= w < W:
                        y[:, :, oh, ow] = np.maximum(y[:, :, oh, ow], x[:, :, h, w])
    return y


def lut_input(dtype, xs, xz):
    """the 256 table inputs, indexed by the byte's bit pattern: xs * f32(int(x) - xz)"""
    vals = np.arange(256).astype(np.uint8).view(dtype)
    return vals, F32(f32(xs) * (vals.astype(np.int64) - int(xz)).astype(F32))


def apply_lut(x, table):
    return table[x.view(np.uint8)]


def logistic_mlas(x):
    """MlasComputeLogistic, x86-64 FMA3 kernel (LogisticKernelFma3.S): rational approximation
    from Eigen, evaluated with fused multiply-adds, result clamped below at 0."""
    c = dict(lo=-18.0, hi=18.0, a9=4.37031012579801e-11, a7=1.15627324459942e-07,
             a5=6.08574864600143e-05, a3=8.51377133304701e-03, a1=2.48287947061529e-01,
             b10=6.10247389755681e-13, b8=5.76102136993427e-09, b6=6.29106785017040e-06,
             b4=1.70198817374094e-03, b2=1.16817656904453e-01, b0=9.93151921023180e-01)
    c = {k: F32(v) for k, v in c.items()}
    x = np.minimum(np.maximum(f32(x), c["lo"]), c["hi"])
    x2 = F32(x * x)
    p = fma32(x2, c["a9"], c["a7"])
    for k in ("a5", "a3", "a1"):
        p = fma32(x2, p, c[k])
    q = fma32(x2, c["b10"], c["b8"])
    for k in ("b6", "b4", "b2", "b0"):
        q = fma32(x2, q, c[k])
    p = F32(x * p)
    r = F32(F32(p / q) + F32(0.5))
    return np.maximum(r, F32(0.0))


def k_qlut(op, x, xs, xz, ys, yz, attrs):
    """QLinearSigmoid / QLinearLeakyRelu: a 256-entry table built once from the qparams
    (dequantize every byte value, apply the f32 function, MlasQuantizeLinear), then a lookup."""
    vals, d = lut_input(x.dtype, xs, xz)
    if op == "QLinearSigmoid":
        f = logistic_mlas(d)
    else:
        alpha = F32(attrs.get("alpha", 0.01))
        f = np.where(d >= 0, d, F32(alpha * d))
    table = quantize(f, ys, yz, x.dtype)
    return apply_lut(x, table)


def k_qconcat(inputs, ys, yz, axis):
    outs = []
    for x, s, z in inputs:
        if F32(s) == F32(ys) and int(z) == int(yz):
            outs.append(x)                     # same scale and zero point: bytes copied
        else:
            _, d = lut_input(x.dtype, s, z)
            outs.append(apply_lut(x, quantize(d, ys, yz, x.dtype)))
    return np.concatenate(outs, axis=axis)


def k_qsoftmax(x, xs, xz, ys, yz, attrs):
    """QLinearSoftmax (contrib qlinear_softmax.cc). Table (built once from x_scale and the
    reduced length D): shift = max(0, ln(FLT_MAX / D) - 5) / xs (f64);
    t[i] = f32(exp((i - 255 + shift) * xs)) (f64 exp). Per row: m = max(x); the row reads
    t[255 - m + x] (uint8) or t[(127 - m + x) as u8] (int8, table index i-128 stored at byte i-128);
    sum = f32 sum in order; y = min(rint(t * floor(1/ys) / sum) + yz, 255 or 127): only clipped above.
    x_zero_point and the real y_scale do not enter (only floor(1 / y_scale))."""
    opset = attrs.get("opset", 13)
    axis = attrs.get("axis", 1 if opset < 13 else -1)
    axis = axis % x.ndim
    signed = x.dtype == np.int8
    if opset < 13:
        D = int(np.prod(x.shape[axis:]))
        xr = x.reshape(int(np.prod(x.shape[:axis])), D)
        moved = None
    else:
        moved = np.moveaxis(x, axis, -1)
        D = x.shape[axis]
        xr = moved.reshape(-1, D)
    shift = max(0.0, float(np.log(F64(F32(np.finfo(F32).max) / F32(D)))) - 5.0) / float(F32(xs))
    table = np.zeros(256, F32)
    for i in range(256):
        v = np.exp((float(i) - 255.0 + shift) * float(F32(xs)))
        idx = (i - 128) & 0xFF if signed else i
        table[idx] = F32(v)
    yscale = F32(np.floor(F32(1.0) / F32(ys)))
    out = np.zeros_like(xr)
    for r in range(xr.shape[0]):
        row = xr[r].astype(np.int64)
        m = int(row.max())
        if signed:
            idx = ((127 - m) + row) & 0xFF
        else:
            idx = 255 - m + row
        t = table[idx]
        s = F32(0.0)
        for v in t:
            s = F32(s + v)
        vq = rint(F32(F32(t * yscale) / s)).astype(np.int64) + int(yz)
        if signed:
            out[r] = np.minimum(vq, 127).astype(np.int8)
        else:
            out[r] = np.minimum(vq, 255).astype(np.uint8)
    if moved is None:
        return out.reshape(x.shape)
    return np.moveaxis(out.reshape(moved.shape), -1, axis)


# ------------------------------------------------------------------ interpreter

class Node:
    def __init__(self, op, inputs, outputs, attrs=None, domain=""):
        self.op, self.inputs, self.outputs, self.attrs, self.domain = op, list(inputs), list(outputs), dict(attrs or {}), domain

    def __repr__(self):
        return f"{self.op}({', '.join(self.inputs)}) -> {', '.join(self.outputs)}"


def load_graph(model):
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = []
    for n in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(attrs["value"])
            continue
        nodes.append(Node(n.op_type, n.input, n.output, attrs, n.domain))
    return nodes, consts


def opt(env, name):
    return env[name] if name else None


def _sattr(a, name, default):
    v = a.get(name, default)
    return v.decode() if isinstance(v, bytes) else v


def resize_nearest(n, I):
    """ONNX Resize, mode nearest, with ORT's f32 arithmetic (upsamplebase.h)."""
    a, x = n.attrs, I[0]
    assert _sattr(a, "mode", "nearest") == "nearest", "only Resize nearest"
    ctm = _sattr(a, "coordinate_transformation_mode", "half_pixel")
    nm = _sattr(a, "nearest_mode", "round_prefer_floor")
    scales = I[2] if len(I) > 2 and I[2] is not None and np.size(I[2]) else None
    if scales is not None:
        scales = np.asarray(scales, F32)
        out = [int(F32(c) * F32(d)) for c, d in zip(scales, x.shape)]
    else:
        out = [int(v) for v in I[3]]
        scales = [F32(o) / F32(d) for o, d in zip(out, x.shape)]
    y = x
    for k, (d, o, c) in enumerate(zip(x.shape, out, scales)):
        c = F32(c)
        idx = []
        for j in range(o):
            xf = F32(j)
            if ctm == "half_pixel" or (ctm == "pytorch_half_pixel" and o > 1):
                orig = F32(F32(xf + F32(0.5)) / c) - F32(0.5)
            elif ctm == "pytorch_half_pixel":
                orig = F32(0)
            elif ctm == "asymmetric":
                orig = F32(xf / c)
            elif ctm == "align_corners":
                orig = F32(0) if o == 1 else F32(F32(xf * F32(d - 1)) / F32(o - 1))
            else:
                raise ValueError(f"coordinate_transformation_mode {ctm}")
            orig = F32(orig)
            if nm == "round_prefer_floor" and orig == F32(int(orig)) + F32(0.5):
                i = int(np.floor(orig))
            elif nm in ("round_prefer_floor", "round_prefer_ceil"):
                i = int(np.sign(orig) * np.floor(abs(orig) + 0.5))  # std::round: half away from zero
            elif nm == "floor":
                i = int(np.floor(orig))
            elif nm == "ceil":
                i = int(np.ceil(orig))
            else:
                raise ValueError(f"nearest_mode {nm}")
            idx.append(min(max(i, 0), d - 1))
        y = np.take(y, idx, axis=k)
    return y


def resize_linear(n, I):
    """ONNX Resize, mode linear, as ORT 1.32's UpsampleBilinear (NCHW, H and W): f32 weights,
    (((dx2*dy2)*X11 + (dx1*dy2)*X21) + (dx2*dy1)*X12) + (dx1*dy1)*X22; on uint8/int8 the result
    is truncated toward zero (static_cast), on float it is the value."""
    a, x = n.attrs, I[0]
    ctm = _sattr(a, "coordinate_transformation_mode", "half_pixel")
    scales = I[2] if len(I) > 2 and I[2] is not None and np.size(I[2]) else None
    if scales is not None:
        scales = [F32(c) for c in np.asarray(scales, F32)]
        out = [int(F32(c) * F32(d)) for c, d in zip(scales, x.shape)]
    else:
        out = [int(v) for v in I[3]]
        scales = [F32(o) / F32(d) for o, d in zip(out, x.shape)]
    assert x.ndim == 4 and out[:2] == list(x.shape[:2]), "linear: NCHW, H and W only"
    if out == list(x.shape):
        return x.copy()

    def taps(d, o, c):
        r = []
        for j in range(o):
            xf = F32(j)
            if c == F32(1):
                v = xf
            elif ctm == "half_pixel" or (ctm == "pytorch_half_pixel" and o > 1):
                v = F32(F32(xf + F32(0.5)) / c) - F32(0.5)
            elif ctm == "pytorch_half_pixel":
                v = F32(0)
            elif ctm == "asymmetric":
                v = F32(xf / c)
            elif ctm == "align_corners":
                v = F32(0) if o == 1 else F32(F32(xf * F32(d - 1)) / F32(o - 1))
            else:
                raise ValueError(f"coordinate_transformation_mode {ctm}")
            v = max(F32(0), min(F32(v), F32(d - 1)))
            i1 = min(int(v), d - 1)
            i2 = min(i1 + 1, d - 1)
            d1, d2 = (F32(0.5), F32(0.5)) if i1 == i2 else (F32(abs(v - F32(i1))), F32(abs(v - F32(i2))))
            r.append((i1, i2, d1, d2))
        return r

    ty, tx = taps(x.shape[2], out[2], scales[2]), taps(x.shape[3], out[3], scales[3])
    X = x.astype(F32)
    y = np.zeros(out, F32)
    for a_, (y1, y2, dy1, dy2) in enumerate(ty):
        for b_, (x1, x2, dx1, dx2) in enumerate(tx):
            v = F32(dx2 * dy2) * X[:, :, y1, x1]
            v = (v + F32(dx1 * dy2) * X[:, :, y1, x2]).astype(F32)
            v = (v + F32(dx2 * dy1) * X[:, :, y2, x1]).astype(F32)
            v = (v + F32(dx1 * dy1) * X[:, :, y2, x2]).astype(F32)
            y[:, :, a_, b_] = v
    if x.dtype == np.float32:
        return y
    return np.trunc(y).astype(x.dtype)


def resize_cubic(n, I):
    """ONNX Resize, mode cubic, as ORT 1.32's ResizeBiCubic (NCHW, float; exclude_outside 0):
    Keys coefficients (cubic_coeff_a, default -0.75) of s = v - floor(v) in f32, the rows
    interpolated first (sum from 0 of f32(coeff / 1) * X over x - 1 .. x + 2, clamped to the
    image), then the column (sum of row_result * coeff / 1)."""
    a, x = n.attrs, I[0]
    ctm = _sattr(a, "coordinate_transformation_mode", "half_pixel")
    A = F32(a.get("cubic_coeff_a", -0.75))
    if a.get("exclude_outside", 0):
        raise NotImplementedError("Resize cubic with exclude_outside")
    scales = I[2] if len(I) > 2 and I[2] is not None and np.size(I[2]) else None
    if scales is not None:
        scales = [F32(c) for c in np.asarray(scales, F32)]
        out = [int(F32(c) * F32(d)) for c, d in zip(scales, x.shape)]
    else:
        out = [int(v) for v in I[3]]
        scales = [F32(o) / F32(d) for o, d in zip(out, x.shape)]
    if x.dtype != np.float32 or x.ndim != 4 or out[:2] != list(x.shape[:2]):
        raise NotImplementedError("Resize cubic: float NCHW only")
    if out == list(x.shape):
        return x.copy()

    def orig(j, c, d, o):
        xf = F32(j)
        if c == F32(1):
            return xf
        if ctm == "half_pixel" or (ctm == "pytorch_half_pixel" and o > 1):
            return F32(F32(F32(xf + F32(0.5)) / c) - F32(0.5))
        if ctm == "pytorch_half_pixel":
            return F32(0)
        if ctm == "asymmetric":
            return F32(xf / c)
        if ctm == "align_corners":
            return F32(0) if o == 1 else F32(F32(xf * F32(d - 1)) / F32(o - 1))
        raise NotImplementedError(f"coordinate_transformation_mode {ctm}")

    def coeffs(s):
        s = F32(abs(s))
        one, two = F32(1), F32(2)
        t0 = F32(s + one)
        c0 = F32(F32(F32(F32(F32(A * t0) - F32(F32(5) * A)) * t0) + F32(F32(8) * A)) * t0) - F32(F32(4) * A)
        c1 = F32(F32(F32(F32(F32(A + two) * s) - F32(A + F32(3))) * s) * s) + one
        t2 = F32(one - s)
        c2 = F32(F32(F32(F32(F32(A + two) * t2) - F32(A + F32(3))) * t2) * t2) + one
        t3 = F32(two - s)
        c3 = F32(F32(F32(F32(F32(A * t3) - F32(F32(5) * A)) * t3) + F32(F32(8) * A)) * t3) - F32(F32(4) * A)
        return [F32(c0), F32(c1), F32(c2), F32(c3)]

    H, W = x.shape[2], x.shape[3]
    y = np.zeros(out, F32)
    for a_ in range(out[2]):
        vy = orig(a_, scales[2], H, out[2])
        yi = int(np.floor(vy))
        cy = coeffs(F32(vy - F32(yi)))
        for b_ in range(out[3]):
            vx = orig(b_, scales[3], W, out[3])
            xi = int(np.floor(vx))
            cx = coeffs(F32(vx - F32(xi)))
            res = np.zeros(x.shape[:2], F32)
            for i, yy in enumerate(range(yi - 1, yi + 3)):
                row = np.zeros(x.shape[:2], F32)
                for k, xx in enumerate(range(xi - 1, xi + 3)):
                    v = x[:, :, min(max(yy, 0), H - 1), min(max(xx, 0), W - 1)]
                    row = (row + F32(cx[k] / F32(1)) * v).astype(F32)
                res = (res + (row * cy[i]).astype(F32) / F32(1)).astype(F32)
            y[:, :, a_, b_] = res
    return y


def run_node(n, env):
    I = [opt(env, i) for i in n.inputs]
    a = n.attrs
    op = n.op
    if op == "QuantizeLinear":
        x, s, z = I[0], I[1], I[2] if len(I) > 2 and I[2] is not None else np.uint8(0)
        if np.ndim(s):
            ax = a.get("axis", 1) % x.ndim
            shp = [1] * x.ndim
            shp[ax] = -1
            s, z = s.reshape(shp), np.asarray(z).reshape(shp)
        return [quantize(x, s, z, np.asarray(z).dtype)]
    if op == "DequantizeLinear":
        x, s = I[0], I[1]
        z = I[2] if len(I) > 2 and I[2] is not None else np.zeros((), x.dtype)
        if np.ndim(s):
            ax = a.get("axis", 1) % x.ndim
            shp = [1] * x.ndim
            shp[ax] = -1
            s, z = s.reshape(shp), np.asarray(z).reshape(shp)
        return [dequantize(x, s, z)]
    if op == "QLinearConv":
        b = I[8] if len(I) > 8 else None
        return [k_qlinearconv(I[0], I[1], I[2], I[3], I[4], I[5], I[6], I[7], b, a)]
    if op == "QLinearMatMul":
        return [k_qlinearmatmul(*I[:8])]
    if op == "MatMulInteger":
        az = I[2] if len(I) > 2 and I[2] is not None else 0
        bz = I[3] if len(I) > 3 and I[3] is not None else 0
        acc = matmul_acc(I[0], I[1], az, bz)
        return [acc.astype(np.int64).astype(np.int32)]
    if op == "ConvInteger":
        xz = I[2] if len(I) > 2 and I[2] is not None else 0
        wz = I[3] if len(I) > 3 and I[3] is not None else 0
        strides, pads, dil, group = conv_attrs(a, I[1])
        return [conv_acc(I[0], I[1], xz, wz, strides, pads, dil, group).astype(np.int32)]
    if op == "QGemm":
        c = I[6] if len(I) > 6 else None
        ys = I[7] if len(I) > 7 else None
        yz = I[8] if len(I) > 8 else None
        dt = np.asarray(yz).dtype if yz is not None else None
        return [k_qgemm(I[0], I[1], I[2], I[3], I[4], I[5], c, ys, yz, a, dt)]
    if op == "QLinearAdd":
        return [k_qlinearadd(*I[:8])]
    if op == "QLinearMul":
        return [k_qlinearmul(*I[:8])]
    if op == "QLinearGlobalAveragePool":
        return [k_qgap(I[0], I[1], I[2], I[3], I[4], a.get("channels_last", 0))]
    if op == "QLinearAveragePool":
        return [k_qavgpool(I[0], I[1], I[2], I[3], I[4], a)]
    if op in ("QLinearSigmoid", "QLinearLeakyRelu"):
        return [k_qlut(op, I[0], I[1], I[2], I[3], I[4], a)]
    if op == "QLinearSoftmax":
        return [k_qsoftmax(I[0], I[1], I[2], I[3], I[4], a)]
    if op == "QLinearConcat":
        trip = [(I[i], I[i + 1], I[i + 2]) for i in range(2, len(I), 3)]
        return [k_qconcat(trip, I[0], I[1], a.get("axis"))]
    if op == "MaxPool":
        return [k_maxpool(I[0], a)]
    if op == "Reshape":
        shape = list(I[1])
        shape = [I[0].shape[i] if (s == 0 and not a.get("allowzero", 0)) else s for i, s in enumerate(shape)]
        return [I[0].reshape(shape)]
    if op == "Flatten":
        ax = a.get("axis", 1) % I[0].ndim if I[0].ndim else 0
        return [I[0].reshape(int(np.prod(I[0].shape[:ax])), -1)]
    if op == "Transpose":
        return [np.transpose(I[0], a.get("perm"))]
    if op == "Squeeze":
        return [np.squeeze(I[0], axis=tuple(int(v) for v in I[1]) if len(I) > 1 and I[1] is not None else None)]
    if op == "Unsqueeze":
        y = I[0]
        for ax in sorted(int(v) for v in I[1]):
            y = np.expand_dims(y, ax)
        return [y]
    if op == "Identity":
        return [I[0]]
    if op == "Slice":
        x = I[0]
        starts, ends = [int(v) for v in I[1]], [int(v) for v in I[2]]
        axes = [int(v) for v in I[3]] if len(I) > 3 and I[3] is not None else list(range(len(starts)))
        steps = [int(v) for v in I[4]] if len(I) > 4 and I[4] is not None else [1] * len(starts)
        sl = [slice(None)] * x.ndim
        for st, en, ax, sp in zip(starts, ends, axes, steps):
            sl[ax % x.ndim] = slice(st, en, sp)
        return [x[tuple(sl)]]
    if op == "Gather":
        return [np.take(I[0], np.asarray(I[1], np.int64), axis=a.get("axis", 0))]
    if op == "Split":
        x, ax = I[0], a.get("axis", 0) % I[0].ndim
        d, k = x.shape[ax], len(n.outputs)
        if len(I) > 1 and I[1] is not None:
            sizes = [int(v) for v in I[1]]
        else:
            c = -(-d // a.get("num_outputs", k))
            sizes = [min(c, max(d - j * c, 0)) for j in range(k)]
        return np.split(x, np.cumsum(sizes)[:-1], axis=ax)
    if op == "Pad":
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        p = [int(v) for v in I[1]]
        r = I[0].ndim
        width = [(p[k], p[k + r]) for k in range(r)]
        if mode == "constant":
            c = I[2] if len(I) > 2 and I[2] is not None else 0
            return [np.pad(I[0], width, mode="constant", constant_values=np.asarray(c, I[0].dtype))]
        return [np.pad(I[0], width, mode=mode)]
    if op == "Resize":
        if _sattr(a, "mode", "nearest") == "linear":
            return [resize_linear(n, I)]
        if _sattr(a, "mode", "nearest") == "cubic":
            return [resize_cubic(n, I)]
        return [resize_nearest(n, I)]
    if op == "Concat" and I[0].dtype == np.float32:
        return [np.concatenate(I, axis=a["axis"])]
    if op == "ReduceMean" and I[0].dtype == np.float32:
        return [reducemean_f32(I[0], I[1] if len(I) > 1 and I[1] is not None else a.get("axes"), a.get("keepdims", 1))]
    if op == "Sigmoid" and I[0].dtype == np.float32:
        return [logistic_mlas(I[0])]
    # ---- float ops ORT leaves unfused (exact elementwise ones only)
    if op in ("Add", "Sub", "Mul", "Div") and I[0].dtype == np.float32:
        f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
        return [f(I[0], I[1]).astype(F32)]
    if op == "Relu":
        return [np.maximum(I[0], F32(0.0))]
    if op == "HardSigmoid":
        alpha, beta = F32(a.get("alpha", 0.2)), F32(a.get("beta", 0.5))
        return [hardsigmoid_f32(I[0], alpha, beta)]
    if op == "Clip":
        lo = I[1] if len(I) > 1 and I[1] is not None else F32(-np.inf)
        hi = I[2] if len(I) > 2 and I[2] is not None else F32(np.inf)
        return [np.minimum(np.maximum(I[0], lo), hi)]
    if op in ("Conv", "FusedConv") and I[0].dtype == np.float32:
        return [float_conv_mlas(I[0], I[1], I[2] if len(I) > 2 else None, a)]
    raise NotImplementedError(f"op {n.domain}:{op}")


def float_conv_mlas(x, w, b, attrs):
    """Float Conv (ORT FusedConv -> MlasConv, im2col + SGEMM), modelled for small K only: each
    output is a chain of f32 fused multiply-adds over K = (c, ky, kx) in that order starting from 0
    (one SGEMM K block, K <= 128), then + bias (f32 add), then the activation. Padded taps are 0.0."""
    strides, pads, dil, group = conv_attrs(attrs, w)
    if x.ndim != 4 or group != 1:
        raise NotImplementedError("float Conv: only 2-D, group 1 modelled")
    n, c, H, W = x.shape
    o, cg, kh, kw = w.shape
    K = cg * kh * kw
    if K > 128:
        raise NotImplementedError("float Conv: K > 128 (several SGEMM K blocks) not modelled")
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = (H + pads[0] + pads[2] - dil[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (W + pads[1] + pads[3] - dil[1] * (kw - 1) - 1) // strides[1] + 1
    acc = np.zeros((n, o, oh, ow), F32)
    for ci in range(c):
        for ky in range(kh):
            for kx in range(kw):
                patch = xp[:, ci:ci + 1, ky * dil[0]: ky * dil[0] + strides[0] * (oh - 1) + 1: strides[0],
                           kx * dil[1]: kx * dil[1] + strides[1] * (ow - 1) + 1: strides[1]]
                acc = fma32(patch, w[:, ci, ky, kx].reshape(1, o, 1, 1), acc)
    if b is not None:
        acc = F32(acc + b.reshape(1, o, 1, 1))
    act = attrs.get("activation", b"")
    act = act.decode() if isinstance(act, bytes) else act
    if act == "Relu":
        acc = np.maximum(acc, F32(0.0))
    elif act == "Clip":
        lo, hi = (F32(v) for v in attrs["activation_params"])
        acc = np.minimum(np.maximum(acc, lo), hi)
    elif act:
        raise NotImplementedError(f"FusedConv activation {act}")
    return acc


def reducemean_f32(x, axes, keepdims):
    """float ReduceMean over trailing axes, modelled for short rows (< 8 values): the values summed
    one after the other in f32 from the first, then divided by f32(count)."""
    axes = sorted(int(v) % x.ndim for v in axes)
    if axes != list(range(x.ndim - len(axes), x.ndim)):
        raise NotImplementedError("ReduceMean over non-trailing axes")
    lead = x.shape[:x.ndim - len(axes)]
    r = x.reshape(int(np.prod(lead)), -1)
    if r.shape[1] >= 8:
        raise NotImplementedError("float ReduceMean over >= 8 values (vectorized sum order) not modelled")
    acc = r[:, 0].copy()
    for i in range(1, r.shape[1]):
        acc = F32(acc + r[:, i])
    y = F32(acc / F32(r.shape[1])).reshape(lead)
    if keepdims:
        y = y.reshape(lead + (1,) * len(axes))
    return y


def hardsigmoid_f32(x, alpha, beta):
    """ORT HardSigmoid (CPU, Eigen): max(0, min(1, alpha * x + beta)) -- alpha*x rounded, then + beta."""
    return np.maximum(F32(0.0), np.minimum(F32(1.0), F32(F32(alpha * x) + beta)))


def execute(nodes, consts, feeds, outputs):
    env = dict(consts)
    env.update(feeds)
    for n in nodes:
        res = run_node(n, env)
        for name, v in zip(n.outputs, res):
            env[name] = v
    return [env[o] for o in outputs]


# ----------------------------------------------------------- QDQ fusion (ORT)

QMIN = {np.dtype(np.uint8): 0, np.dtype(np.int8): -128}


def consumers(nodes, name):
    return [n for n in nodes if name in n.inputs]


def producer(nodes, name):
    for n in nodes:
        if name in n.outputs:
            return n
    return None


def is_const(consts, name):
    return name in consts


def fuse_qdq(nodes, consts, graph_outputs, log=None):
    """Rewrite a QDQ graph the way ORT 1.32 (CPU EP, x86-64, default ORT_ENABLE_ALL) does, as far
    as the arithmetic is concerned. Returns the new node list (QOperator nodes where ORT fuses,
    float DQ -> op -> Q where it does not)."""
    nodes = list(nodes)
    consts = consts
    log = log if log is not None else []
    gout = set(graph_outputs)

    # level 1: EnsureUniqueDQForNodeUnit -- a DQ read by several nodes is duplicated, one per reader;
    # so a Q whose value fans out (e.g. a residual connection) ends up with several DQ consumers
    for dq in [n for n in nodes if n.op == "DequantizeLinear"]:
        cs = consumers(nodes, dq.outputs[0])
        if len(cs) <= 1 and not (cs and dq.outputs[0] in gout):
            continue
        for k, c in enumerate(cs[1:] if dq.outputs[0] not in gout else cs, 1):
            dup = Node("DequantizeLinear", dq.inputs, [f"{dq.outputs[0]}__dup{k}"], dq.attrs)
            nodes.insert(nodes.index(dq) + 1, dup)
            c.inputs = [dup.outputs[0] if i == dq.outputs[0] else i for i in c.inputs]
        log.append("EnsureUniqueDQForNodeUnit: DQ duplicated")

    # level 1: ReluQuantFusion -- Relu -> Q whose zero point is the type's minimum: drop the Relu
    for n in list(nodes):
        if n.op != "Relu" or n.outputs[0] in gout:
            continue
        cs = consumers(nodes, n.outputs[0])
        if len(cs) != 1 or cs[0].op != "QuantizeLinear" or len(cs[0].inputs) < 3:
            continue
        q = cs[0]
        if not is_const(consts, q.inputs[2]):
            continue
        z = consts[q.inputs[2]]
        if z.size != 1 or int(z.reshape(-1)[0]) != QMIN.get(z.dtype, None):
            continue
        q.inputs[0] = n.inputs[0]
        nodes.remove(n)
        log.append("ReluQuantFusion: Relu removed")

    # level 1: ClipQuantFusion -- Clip -> Q whose range lies inside [min, max] (f32, epsilon slack)
    for n in list(nodes):
        if n.op != "Clip" or n.outputs[0] in gout:
            continue
        cs = consumers(nodes, n.outputs[0])
        if len(cs) != 1 or cs[0].op != "QuantizeLinear" or len(cs[0].inputs) != 3:
            continue
        q = cs[0]
        mn = consts.get(n.inputs[1]) if len(n.inputs) > 1 and n.inputs[1] else F32(-np.finfo(F32).max)
        mx = consts.get(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] else F32(np.finfo(F32).max)
        if mn is None or mx is None or q.inputs[1] not in consts or q.inputs[2] not in consts:
            continue
        s, z = consts[q.inputs[1]], consts[q.inputs[2]]
        if np.ndim(s) != 0 or np.ndim(z) != 0:
            continue
        qlo, qhi = RANGE[z.dtype]
        lower, upper = F32(F32(s) * F32(qlo - int(z))), F32(F32(s) * F32(qhi - int(z)))
        eps = np.finfo(F32).eps
        if eps < F32(F32(mn) - lower) or eps < F32(upper - F32(mx)):
            continue
        q.inputs[0] = n.inputs[0]
        nodes.remove(n)
        log.append("ClipQuantFusion: Clip removed")

    # level 1: WeightBiasQuantization -- Conv/Gemm reading DQ(x) (per-tensor scale) on a single path to a Q
    # (through Relu/Clip), with a float bias initializer: the bias becomes
    # Cast<int32>(Round(bias / (x_scale * w_scale))) behind a DQ (f32 Mul, f32 Div, round half to even),
    # constant-folded at session creation
    for n in list(nodes):
        if n.op not in ("Conv", "Gemm") or len(n.inputs) < 3 or not n.inputs[2] or n.inputs[2] not in consts:
            continue
        b = consts[n.inputs[2]]
        if b.dtype != np.float32 or b.ndim != 1:
            continue
        d0, d1 = producer(nodes, n.inputs[0]), producer(nodes, n.inputs[1])
        if d0 is None or d0.op != "DequantizeLinear" or np.ndim(consts.get(d0.inputs[1], np.zeros(2))) != 0:
            continue
        if d1 is None or d1.op != "DequantizeLinear":
            raise NotImplementedError("WeightBiasQuantization of a float weight")
        cur = n
        while True:
            cs = consumers(nodes, cur.outputs[0])
            if len(cs) != 1 or cur.outputs[0] in gout:
                cur = None
                break
            if cs[0].op == "QuantizeLinear":
                break
            if cs[0].op not in ("Relu", "Clip"):
                cur = None
                break
            cur = cs[0]
        if cur is None:
            continue
        bs = F32(consts[d0.inputs[1]]) * f32(consts[d1.inputs[1]])
        bq = rint(f32(b) / f32(bs)).astype(np.int32)
        nm = n.inputs[2] + "__int32"
        consts[nm] = bq
        consts[nm + "_scale"] = f32(bs)
        dq = Node("DequantizeLinear", [nm, nm + "_scale"], [nm + "_dq"], {"axis": 0} if np.ndim(bs) else {})
        nodes.insert(nodes.index(n), dq)
        n.inputs[2] = nm + "_dq"
        log.append("WeightBiasQuantization: float bias -> int32")

    # level 2: QDQS8ToU8Transformer -- an int8 Q whose only consumer is a DQ with the same
    # zero point: both become uint8 with zero point + 128 (values shift by 128)
    for q in list(nodes):
        if q.op != "QuantizeLinear" or len(q.inputs) != 3 or q.outputs[0] in gout:
            continue
        cs = consumers(nodes, q.outputs[0])
        if len(cs) != 1 or cs[0].op != "DequantizeLinear" or len(cs[0].inputs) != 3:
            continue
        dq = cs[0]
        if not (is_const(consts, q.inputs[2]) and is_const(consts, dq.inputs[2])):
            continue
        qz, dz = consts[q.inputs[2]], consts[dq.inputs[2]]
        if qz.size != 1 or dz.size != 1 or qz.dtype != np.int8 or dz.dtype != np.int8 or int(qz.reshape(-1)[0]) != int(dz.reshape(-1)[0]):
            continue
        nm = q.outputs[0] + "__u8zp"
        consts[nm] = np.uint8(int(qz.reshape(-1)[0]) + 128)
        q.inputs[2] = nm
        dq.inputs[2] = nm
        log.append("QDQS8ToU8: int8 Q/DQ pair -> uint8")

    # level 2: QDQSelectorActionTransformer
    def dq_of(name):
        p = producer(nodes, name)
        return p if p is not None and p.op == "DequantizeLinear" else None

    def single_q(name):
        if name in gout:
            return None
        cs = consumers(nodes, name)
        if len(cs) == 1 and cs[0].op == "QuantizeLinear":
            return cs[0]
        return None

    def dtype_of(name):
        if name in consts:
            return consts[name].dtype
        return None

    def zp_dtype(dqq):
        return dtype_of(dqq.inputs[2]) if len(dqq.inputs) > 2 and dqq.inputs[2] else np.dtype(np.uint8)

    def scalar_const(name):
        return name in consts and consts[name].size == 1

    new_nodes = []
    removed = set()
    for n in nodes:
        if id(n) in removed:
            continue
        fused = None
        ins_dq = [dq_of(i) if i else None for i in n.inputs]
        op = n.op
        if op in ("Conv", "MatMul", "Gemm", "Add", "Mul", "AveragePool", "GlobalAveragePool", "LeakyRelu",
                  "Sigmoid", "Softmax", "Concat") and n.domain in ("", "ai.onnx"):
            q = single_q(n.outputs[0])
            if op == "Conv" and q and ins_dq[0] and ins_dq[1] and (len(n.inputs) < 3 or not n.inputs[2] or ins_dq[2]):
                xt, wt, yt = zp_dtype(ins_dq[0]), zp_dtype(ins_dq[1]), zp_dtype(q)
                bias_ok = len(n.inputs) < 3 or not n.inputs[2] or dtype_of(ins_dq[2].inputs[0]) == np.int32
                if xt == yt and xt == np.uint8 and wt in (np.uint8, np.int8) and bias_ok:
                    dx, dw = ins_dq[0], ins_dq[1]
                    ins = [dx.inputs[0], dx.inputs[1], dx.inputs[2], dw.inputs[0], dw.inputs[1], dw.inputs[2],
                           q.inputs[1], q.inputs[2]]
                    if len(n.inputs) > 2 and n.inputs[2]:
                        ins.append(ins_dq[2].inputs[0])
                    fused = Node("QLinearConv", ins, q.outputs, n.attrs)
            elif op == "MatMul" and q and ins_dq[0] and ins_dq[1]:
                xt, wt, yt = zp_dtype(ins_dq[0]), zp_dtype(ins_dq[1]), zp_dtype(q)
                if xt == yt and xt == np.uint8 and wt in (np.uint8, np.int8):
                    da, db = ins_dq
                    fused = Node("QLinearMatMul", [da.inputs[0], da.inputs[1], da.inputs[2], db.inputs[0], db.inputs[1],
                                                   db.inputs[2], q.inputs[1], q.inputs[2]], q.outputs)
            elif op == "Gemm" and ins_dq[0] and ins_dq[1] and (len(n.inputs) < 3 or not n.inputs[2] or ins_dq[2]):
                da, db = ins_dq[0], ins_dq[1]
                ins = [da.inputs[0], da.inputs[1], da.inputs[2], db.inputs[0], db.inputs[1], db.inputs[2],
                       ins_dq[2].inputs[0] if len(n.inputs) > 2 and n.inputs[2] else ""]
                if q:
                    fused = Node("QGemm", ins + [q.inputs[1], q.inputs[2]], q.outputs, n.attrs, "com.microsoft")
            elif op in ("Add", "Mul") and q and ins_dq[0] and ins_dq[1]:
                ts = {zp_dtype(ins_dq[0]), zp_dtype(ins_dq[1]), zp_dtype(q)}
                if len(ts) == 1:
                    da, db = ins_dq
                    fused = Node("QLinear" + op, [da.inputs[0], da.inputs[1], da.inputs[2], db.inputs[0], db.inputs[1],
                                                  db.inputs[2], q.inputs[1], q.inputs[2]], q.outputs, {}, "com.microsoft")
            elif op in ("AveragePool", "GlobalAveragePool", "LeakyRelu", "Sigmoid", "Softmax") and q and ins_dq[0]:
                if zp_dtype(ins_dq[0]) == zp_dtype(q):
                    d = ins_dq[0]
                    attrs = dict(n.attrs)
                    if op == "Softmax":
                        attrs.setdefault("axis", -1)
                        attrs["opset"] = 13
                    fused = Node("QLinear" + op, [d.inputs[0], d.inputs[1], d.inputs[2], q.inputs[1], q.inputs[2]],
                                 q.outputs, attrs, "com.microsoft")
            elif op == "Concat" and q and all(ins_dq):
                if len({zp_dtype(d) for d in ins_dq} | {zp_dtype(q)}) == 1:
                    ins = [q.inputs[1], q.inputs[2]]
                    for d in ins_dq:
                        ins += d.inputs[:3]
                    fused = Node("QLinearConcat", ins, q.outputs, n.attrs, "com.microsoft")
            if fused is not None:
                removed.add(id(q))
                log.append(f"{op} -> {fused.op}")
        elif op == "Split" and ins_dq[0]:
            # ORT's Split rule: DQ -> Split -> Q on every output, all with the DQ's scalar qparams
            d = ins_dq[0]
            qs = [single_q(o) for o in n.outputs]
            def same(q):
                return q and scalar_const(d.inputs[1]) and scalar_const(q.inputs[1]) and len(d.inputs) > 2 \
                    and len(q.inputs) > 2 and scalar_const(d.inputs[2]) and scalar_const(q.inputs[2]) \
                    and F32(consts[d.inputs[1]]) == F32(consts[q.inputs[1]]) \
                    and consts[d.inputs[2]].dtype == consts[q.inputs[2]].dtype \
                    and int(consts[d.inputs[2]]) == int(consts[q.inputs[2]])
            if qs and all(same(q) for q in qs):
                fused = Node(op, [d.inputs[0]] + n.inputs[1:], [q.outputs[0] for q in qs], n.attrs)
                removed.update(id(q) for q in qs)
                log.append("Split: Q/DQ dropped (same scale and zero point)")
        elif op in ("Reshape", "Flatten", "Transpose", "MaxPool", "Squeeze", "Unsqueeze", "Slice", "Gather",
                    "Resize") and ins_dq[0]:
            q = single_q(n.outputs[0])
            d = ins_dq[0]
            if q and scalar_const(d.inputs[1]) and scalar_const(q.inputs[1]) and len(d.inputs) > 2 and len(q.inputs) > 2 \
                    and scalar_const(d.inputs[2]) and scalar_const(q.inputs[2]) \
                    and F32(consts[d.inputs[1]]) == F32(consts[q.inputs[1]]) \
                    and consts[d.inputs[2]].dtype == consts[q.inputs[2]].dtype \
                    and int(consts[d.inputs[2]]) == int(consts[q.inputs[2]]) \
                    and (op != "MaxPool" or F32(consts[q.inputs[1]]) > 0) \
                    and (op != "Resize" or _sattr(n.attrs, "mode", "nearest") == "nearest"):
                # (ORT 1.32 keeps DQ -> Resize -> Q in float for modes linear and cubic)
                fused = Node(op, [d.inputs[0]] + n.inputs[1:], q.outputs, n.attrs)
                removed.add(id(q))
                log.append(f"{op}: Q/DQ dropped (same scale and zero point)")
        new_nodes.append(fused if fused is not None else n)
    # level 2: ConvActivationFusion -- a float Conv followed by Relu becomes FusedConv (same arithmetic)
    for n in list(new_nodes):
        if n.op != "Conv" or n.outputs[0] in gout:
            continue
        cs = consumers(new_nodes, n.outputs[0])
        if len(cs) == 1 and cs[0].op in ("Relu", "Clip"):
            extra = {"activation": cs[0].op}
            if cs[0].op == "Clip":
                lo = consts.get(cs[0].inputs[1]) if len(cs[0].inputs) > 1 and cs[0].inputs[1] else None
                hi = consts.get(cs[0].inputs[2]) if len(cs[0].inputs) > 2 and cs[0].inputs[2] else None
                extra["activation_params"] = [float(-np.finfo(F32).max if lo is None else lo),
                                              float(np.finfo(F32).max if hi is None else hi)]
            f = Node("FusedConv", n.inputs, cs[0].outputs, dict(n.attrs, **extra), "com.microsoft")
            new_nodes[new_nodes.index(n)] = f
            new_nodes.remove(cs[0])
            log.append(f"ConvActivationFusion: float Conv + {cs[0].op} -> FusedConv")

    # drop nodes whose outputs nobody reads (the DQs folded into fused nodes)
    changed = True
    while changed:
        changed = False
        used = set(gout)
        for n in new_nodes:
            used.update(n.inputs)
        keep = [n for n in new_nodes if any(o in used for o in n.outputs)]
        changed = len(keep) != len(new_nodes)
        new_nodes = keep
    return new_nodes


def is_qdq(nodes):
    return any(n.op == "DequantizeLinear" for n in nodes) and any(
        n.op not in ("QuantizeLinear", "DequantizeLinear") for n in nodes)


def reference(model, feeds, log=None):
    nodes, consts = load_graph(model)
    outs = [o.name for o in model.graph.output]
    if is_qdq(nodes):
        nodes = fuse_qdq(nodes, consts, outs, log)
    return execute(nodes, consts, feeds, outs), nodes


# ------------------------------------------------------------------------ main

# the op types of the graph ORT executes, minus layout plumbing: the fused graph must match
LAYOUT_ONLY = {"Transpose"}


def kernel_signature(ops):
    return sorted(o.split("::")[-1] for o in ops if o.split("::")[-1] not in LAYOUT_ONLY)


def check_dir(d, verbose=False):
    with open(os.path.join(d, "manifest.json")) as f:
        man = json.load(f)
    npass = nfail = 0
    for case in man["cases"]:
        cd = os.path.join(d, case["name"])
        model = onnx.load(os.path.join(cd, "model.onnx"))
        feeds = {i["name"]: np.load(os.path.join(cd, i["file"])) for i in case["inputs"]}
        want = [np.load(os.path.join(cd, o["file"])) for o in case["outputs"]]
        log = []
        try:
            got, fused = reference(model, feeds, log)
        except (NotImplementedError, OverflowError) as e:
            print(f"FAIL {case['name']}: {e}")
            nfail += 1
            continue
        msgs = []
        for j, (g, w) in enumerate(zip(got, want)):
            g = np.asarray(g)
            if g.dtype != w.dtype or g.shape != w.shape:
                msgs.append(f"output {j}: got {g.dtype}{g.shape}, ORT {w.dtype}{w.shape}")
                continue
            gb = np.ascontiguousarray(g).view(np.uint8).reshape(-1, g.itemsize)
            wb = np.ascontiguousarray(w).view(np.uint8).reshape(-1, w.itemsize)
            bad = (gb != wb).any(axis=1)
            if bad.any():
                i = int(np.argmax(bad))
                msgs.append(f"output {j}: {int(bad.sum())}/{g.size} differ, first at flat {i}: "
                            f"got {g.reshape(-1)[i]!r}, ORT {w.reshape(-1)[i]!r}")
        sig_ref = kernel_signature((n.domain or "ai.onnx") + "::" + n.op for n in fused)
        sig_ort = kernel_signature(case.get("ort_nodes", []))
        if sig_ref != sig_ort:
            msgs.append(f"fusion differs: reference runs {sig_ref}, ORT ran {sig_ort}")
        n_el = sum(int(np.asarray(w).size) for w in want)
        if msgs:
            nfail += 1
            print(f"FAIL {case['name']}: " + "; ".join(msgs))
        else:
            npass += 1
            print(f"ok   {case['name']} ({n_el} values; {' '.join(sig_ref)})")
    return npass, nfail


def main():
    dirs = sys.argv[1:] or [os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "onnx", "ops")]
    tp = tf = 0
    for d in dirs:
        p, f = check_dir(d)
        tp += p
        tf += f
    print(f"{tp} passed, {tf} failed")
    sys.exit(1 if tf else 0)


if __name__ == "__main__":
    main()
