#!/usr/bin/env python3
"""Recompute every quantized-op case in DIR from its inputs and metadata only,
with the exact arithmetic written down in tests/data/ops/README.md, and compare
bit for bit with the output PyTorch produced.

Usage: python3 tools/check_ops.py DIR...      (needs numpy, safetensors; no torch)
"""
import glob, json, os, sys
import numpy as np
from safetensors import safe_open

F32 = np.float32
F64 = np.float64


def load(path):
    with safe_open(path, "np") as f:
        spec = json.loads(f.metadata()["case"])
        t = {k: f.get_tensor(k) for k in f.keys()}
    return spec, t


# ---------------------------------------------------------------- primitives

def f32(x):
    return np.asarray(x, dtype=F32)


def rint(x):
    """round to nearest, ties to even (nearbyint / cvtps2dq / WGSL round)"""
    return np.rint(x)


def fma32(a, b, c):
    """f32 fused multiply-add fma(a, b, c) = RN32(a*b + c), one rounding.
    a*b is exact in f64; the f64 sum is made round-to-odd (via TwoSum) so that
    the final rounding to f32 is correct (no double-rounding error)."""
    a, b, c = (np.asarray(v, F32).astype(F64) for v in (a, b, c))
    p = a * b                     # exact: 24+24 bits < 53
    s = p + c
    bb = s - p
    e = (p - (s - bb)) + (c - bb)  # exact error of s = p + c
    odd = (s.view(np.int64) & 1) == 1
    n = np.nextafter(s, np.where(e > 0, np.inf, -np.inf))
    s = np.where((e != 0) & ~odd, n, s)
    return s.astype(F32)


def quantize_val(x, inv_scale, zp):
    """PyTorch quantize (fbgemm::Quantize, non-legacy; QuantizeAvx2/512):
    zp + rint(x * inv_scale), clamped to [0, 255]; inv_scale = f32(1 / scale)"""
    return np.clip(rint(f32(x) * F32(inv_scale)).astype(np.int64) + zp, 0, 255)


def inv(scale):
    return F32(F32(1.0) / F32(scale))


def deq_scalar(q, scale, zp):
    """at::native::dequantize_val: f32(scale) * f32(q - zp)  (one rounding)"""
    return (F32(scale) * (q.astype(np.int64) - zp).astype(F32)).astype(F32)


def deq_vec(q, scale, zp):
    """Vectorized<quint8>::dequantize: fma(scale, f32(q), scale * -zp)
    where the premultiplied term is one f32 product"""
    premul = F32(F32(scale) * F32(-zp))
    return fma32(F32(scale), q.astype(F32), premul)


def vec_split(n, spec=None):
    """cpu_kernel_vec over a contiguous 1-D range of n elements: the vector lambda
    handles [0, n - n % 64) in steps of 2 * Vectorized<quint8>::size() = 2 * 32,
    the scalar lambda the last n % 64 elements.  The quantized elementwise kernels
    (qadd, qhardswish, qclamp, ...) are registered with REGISTER_DISPATCH, which
    runs the AVX2 build even on AVX512 machines, so the step is 64 on both."""
    return (n // 64) * 64


def pool_out(size, k, s, p, d, ceil):
    """pooling_output_shape (ATen Pool.h)"""
    num = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)
    o = num // s + 1
    if ceil and (o - 1) * s >= size + p:
        o -= 1
    return o


# ---------------------------------------------------------------- ops

def op_quantize(spec, t):
    x = t["float_input"]
    return quantize_val(x, inv(spec["output_scale"]), spec["output_zero_point"])


def op_dequantize(spec, t):
    return deq_scalar(t["input"], spec["input_scale"], spec["input_zero_point"])


def op_add(spec, t, relu):
    a = t["input_0"].ravel().astype(np.int64)
    b = t["input_1"].ravel().astype(np.int64)
    (sa, sb), (za, zb) = spec["input_scale"], spec["input_zero_point"]
    so, zo = spec["output_scale"], spec["output_zero_point"]
    if spec["engine"] == "qnnpack":
        # QNNPACK q8vadd (x86 SSE2): integer fixed point, round half away from zero
        aos = F32(F32(sa) / F32(so))
        bos = F32(F32(sb) / F32(so))
        m = max(aos, bos)
        exp = int(np.array(m, F32).view(np.uint32) >> 23) - 127
        shift = 21 - exp
        am = int(rint(aos * F32(2.0 ** shift)))
        bm = int(rint(bos * F32(2.0 ** shift)))
        acc = (a * am + b * bm) - (am * za + bm * zb)          # fits i32
        mask = (1 << shift) - 1
        rem = (acc & mask) - (acc < 0)
        r = (acc >> shift) + (rem > (mask >> 1))
        lo = zo if relu else 0
        y = np.clip(np.clip(r, -32768, 32767) + zo, lo, 255)
        return y.reshape(t["input_0"].shape)
    # fbgemm engine: ATen qadd_kernel (dequantize, f32 add, quantize). The split
    # counts elements in memory order: NHWC when both inputs are channels-last,
    # NCHW when both are contiguous; with one of each (not both_formats)
    # TensorIterator cannot vectorize and every element takes the scalar path.
    n = a.size
    v = vec_split(n, spec)
    shp = t["input_0"].shape
    lay = spec.get("input_layouts")
    restore = None
    if lay is not None and len(shp) == 4:
        trivial = shp[1] == 1 or (shp[2] == 1 and shp[3] == 1)
        if not trivial and lay[0] != lay[1]:
            v = 0
        elif not trivial and lay[0] == "channels_last":
            nn_, cc, hh, ww = shp
            a = t["input_0"].astype(np.int64).transpose(0, 2, 3, 1).ravel()
            b = t["input_1"].astype(np.int64).transpose(0, 2, 3, 1).ravel()
            restore = lambda f: f.reshape(nn_, hh, ww, cc).transpose(0, 3, 1, 2)
    c = np.empty(n, F32)
    c[:v] = deq_vec(a[:v], sa, za) + deq_vec(b[:v], sb, zb)
    c[v:] = deq_scalar(a[v:], sa, za) + deq_scalar(b[v:], sb, zb)
    if relu:
        c = np.maximum(c, F32(0))
    y = quantize_val(c, inv(so), zo)
    if restore is not None:
        return restore(y)
    return y.reshape(t["input_0"].shape)


def op_mul(spec, t, relu):
    # ATen qmul_kernel, every engine (vector and scalar paths agree):
    # m = (sa * sb) * inv(so); c = (a - za)(b - zb) in i32; y = clamp(rint(f32(c) * m) + zo)
    a = t["input_0"].astype(np.int64)
    b = np.broadcast_to(t["input_1"].astype(np.int64), a.shape)
    (sa, sb), (za, zb) = spec["input_scale"], spec["input_zero_point"]
    so, zo = spec["output_scale"], spec["output_zero_point"]
    m = F32(F32(F32(sa) * F32(sb)) * inv(so))
    c = (a - za) * (b - zb)
    v = rint(c.astype(F32) * m).astype(np.int64) + zo
    return np.clip(v, zo if relu else 0, 255)


def op_max_pool2d(spec, t):
    x = t["input"].astype(np.int64)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = spec["kernel"], spec["stride"], spec["padding"], spec["dilation"]
    oh = pool_out(h, kh, sh, ph, dh, spec["ceil_mode"])
    ow = pool_out(w, kw, sw, pw, dw, spec["ceil_mode"])
    y = np.full((n, c, oh, ow), -1, np.int64)
    # QNNPACK (engine qnnpack, ceil_mode False): its indirection buffer clamps every
    # window tap into the image, min(max(pos, 0), size - 1), instead of skipping
    # padded taps.  Same result unless dilation > 1 (a clamped tap can then land
    # on a row/column that is not in the dilated window).
    clamp_taps = spec["engine"] == "qnnpack" and not spec["ceil_mode"]
    for i in range(oh):
        for j in range(ow):
            for a in range(kh):
                for b in range(kw):
                    hh, ww = i * sh - ph + a * dh, j * sw - pw + b * dw
                    if clamp_taps:
                        hh, ww = min(max(hh, 0), h - 1), min(max(ww, 0), w - 1)
                    if 0 <= hh < h and 0 <= ww < w:
                        y[:, :, i, j] = np.maximum(y[:, :, i, j], x[:, :, hh, ww])
    return y


def op_avg_pool2d(spec, t):
    x = t["input"].astype(np.int64)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = spec["kernel"], spec["stride"], spec["padding"]
    ceil, cip, div = spec["ceil_mode"], spec["count_include_pad"], spec["divisor_override"]
    zp = spec["input_zero_point"]
    oh = pool_out(h, kh, sh, ph, 1, ceil)
    ow = pool_out(w, kw, sw, pw, 1, ceil)
    y = np.zeros((n, c, oh, ow), np.int64)
    if spec["engine"] == "qnnpack" and not ceil:
        # QNNPACK average pooling: padding holds the zero point, the divisor is
        # always kh*kw (count_include_pad and divisor_override are ignored)
        scale = F32(spec["input_scale"])
        mult = F32(scale / F32(scale * F32(kh * kw)))
        for i in range(oh):
            for j in range(ow):
                acc = np.zeros((n, c), np.int64)
                for a in range(kh):
                    for b in range(kw):
                        hh, ww = i * sh - ph + a, j * sw - pw + b
                        if 0 <= hh < h and 0 <= ww < w:
                            acc += x[:, :, hh, ww] - zp
                r = rint(acc.astype(F32) * mult).astype(np.int64)
                y[:, :, i, j] = np.clip(np.clip(r, -32768, 32767) + zp, 0, 255)
        return y
    nhwc = channels_last(x.shape, spec)
    vlen_c = {"AVX512": 16, "AVX2": 8}.get(spec.get("cpu_capability", "AVX2"), 8)
    cv = (c // vlen_c) * vlen_c  # channels handled by the AVX kernel in the NHWC path
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * sh - ph, j * sw - pw
            he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
            pool_size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            size = (he - hs) * (we - ws)
            if div is not None:
                df = div
            elif cip:
                df = pool_size
            else:
                df = size
            s = x[:, :, hs:he, ws:we].sum(axis=(2, 3)) - size * zp
            if not nhwc:
                # ATen avg_pool2d_out_frame: multiplier = f32(1.0 / divide_factor) (f64 division,
                # in/out scale ratio is 1.0); v = f32(sum) * multiplier + f32(zp); rint; clamp
                mult = F32(1.0 / df)
                v = F32(s.astype(F32) * mult) + F32(zp)
                y[:, :, i, j] = np.clip(rint(v.astype(F32)), 0, 255)
            else:
                # _qavg_pool_nhwc_kernel: multiplier = f32(1.0f / f32(df))
                mult = F32(F32(1.0) / F32(df))
                sf = s.astype(F32)
                r = np.empty(s.shape, np.int64)
                # AVX channels: QuantizeAvx512(acc, inverse_scale = multiplier)
                r[:, :cv] = rint(sf[:, :cv] * mult)
                # remaining channels: quantize_val(scale = 1/multiplier) -> x * (1/(1/multiplier))
                r[:, cv:] = rint(sf[:, cv:] * inv(F32(F32(1.0) / mult)))
                y[:, :, i, j] = np.clip(r + zp, 0, 255)
    return y


def channels_last(shape, spec=None):
    """Is the input channels-last contiguous? It is when PyTorch holds it
    channels-last (spec "input_layout": a conv's output), and an NCHW-contiguous
    tensor is too when C == 1 or H == W == 1. ATen's quantized avg_pool2d /
    adaptive_avg_pool2d then take the NHWC kernels."""
    n, c, h, w = shape
    if spec is not None and spec.get("input_layout") == "channels_last":
        return True
    return c == 1 or (h == 1 and w == 1)


def cascade_sum(vals):
    """ATen's multi_row_sum (SumKernel.cpp) for one column of f32 values: a running
    sum per chunk of 2^p values (p = max(4, ceil_log2(n) // 4)), chunk sums carried
    up through 3 more levels, the 4 levels added in order at the end."""
    n = len(vals)
    cl2 = 1 if n <= 2 else int(n - 1).bit_length()
    p = max(4, cl2 // 4)
    step = 1 << p
    acc = [F32(0)] * 4
    i = 0
    while i + step <= n:
        for _ in range(step):
            acc[0] = F32(acc[0] + vals[i])
            i += 1
        for j in range(1, 4):
            acc[j] = F32(acc[j] + acc[j - 1])
            acc[j - 1] = F32(0)
            if i & ((step - 1) << (j * p)):
                break
    while i < n:
        acc[0] = F32(acc[0] + vals[i])
        i += 1
    return F32(F32(F32(acc[0] + acc[1]) + acc[2]) + acc[3])


def cascade_sum_ilp4(vals):
    """ATen's row_sum: 4 interleaved cascade sums, the n % 4 tail added to the
    first, then the four added in order."""
    n = len(vals)
    m = n // 4
    part = [cascade_sum([vals[4 * i + k] for i in range(m)]) for k in range(4)]
    for i in range(4 * m, n):
        part[0] = F32(part[0] + vals[i])
    return F32(F32(F32(part[0] + part[1]) + part[2]) + part[3])


def op_adaptive_avg_pool2d(spec, t):
    x = t["input"].astype(np.int64)
    n, c, h, w = x.shape
    oh, ow = spec["output_size"]
    zp = spec["input_zero_point"]
    if spec["engine"] == "qnnpack" and not (oh == h and ow == w) and h % oh == 0 and w % ow == 0:
        k = dict(spec)
        k.update(kernel=[h // oh, w // ow], stride=[h // oh, w // ow], padding=[0, 0], ceil_mode=False,
                 count_include_pad=False, divisor_override=None)
        return op_avg_pool2d(k, t)
    y = np.zeros((n, c, oh, ow), np.int64)
    nhwc = channels_last(x.shape, spec)
    for i in range(oh):
        hs, he = (i * h) // oh, -((-(i + 1) * h) // oh)
        for j in range(ow):
            ws, we = (j * w) // ow, -((-(j + 1) * w) // ow)
            kh, kw = he - hs, we - ws
            if not nhwc:
                # adaptive_avg_pool_single_out_frame: kDHWr = ((1.0f / 1) / f32(kH)) / f32(kW)
                r = F32(F32(F32(1.0) / F32(kh)) / F32(kw))
                s = x[:, :, hs:he, ws:we].sum(axis=(2, 3))  # raw q values, zero point not removed
                y[:, :, i, j] = rint(s.astype(F32) * r)    # no clamp needed
            else:
                # _qadaptive_avg_pool_kernel (NHWC): multiplier = f32(1.0f / f32(kH*kW));
                # quantize_val(scale = 1/multiplier): zp + rint(acc * (1/(1/multiplier)))
                mult = F32(F32(1.0) / F32(kh * kw))
                s = x[:, :, hs:he, ws:we].sum(axis=(2, 3)) - zp * kh * kw
                r = rint(s.astype(F32) * inv(F32(F32(1.0) / mult))).astype(np.int64)
                y[:, :, i, j] = np.clip(r + zp, 0, 255)
    return y


def op_mean(spec, t):
    x = t["input"].astype(np.int64)
    n, c, h, w = x.shape
    zp = spec["input_zero_point"]
    if spec["engine"] == "qnnpack":
        # QNNPACK global average pooling
        scale = F32(spec["input_scale"])
        mult = F32(scale / F32(scale * F32(h * w)))
        acc = (x - zp).sum(axis=(2, 3))
        r = rint(acc.astype(F32) * mult).astype(np.int64)
        y = np.clip(np.clip(r, -32768, 32767) + zp, 0, 255)
    elif spec.get("input_layout") == "channels_last" and c > 1 and h * w > 1:
        # not contiguous: ATen dequantizes, takes an f32 mean (at::sum in its
        # channels-last order, then / f32(H*W)) and quantizes with the input's qparams
        d = deq_scalar(x, spec["input_scale"], zp)
        big = 4 * 8 if c >= 8 else 4  # channels in whole groups of 4 AVX2 vectors (4 scalars if C < 8)
        y = np.zeros((n, c), np.int64)
        for b in range(n):
            for ch in range(c):
                vals = list(d[b, ch].reshape(-1))
                ssum = cascade_sum(vals) if ch < c - c % big else cascade_sum_ilp4(vals)
                mean = F32(ssum / F32(h * w))
                y[b, ch] = quantize_val(np.array(mean, F32), inv(spec["input_scale"]), zp)
    else:
        # contiguous input: qmean_inner_dim_kernel: rint(f32(sum of raw q) / f32(H*W))
        s = x.sum(axis=(2, 3))
        y = rint(s.astype(F32) / F32(h * w)).astype(np.int64)
    if spec["keepdim"]:
        y = y[:, :, None, None]
    return y


def clamp_q(spec, t, lo_f, hi_f):
    s, z = spec["input_scale"], spec["input_zero_point"]
    lo = quantize_val(np.array(lo_f, F32), inv(s), z)
    hi = quantize_val(np.array(hi_f, F32), inv(s), z)
    return np.clip(t["input"].astype(np.int64), lo, hi)


def op_relu(spec, t):
    return np.maximum(t["input"].astype(np.int64), spec["input_zero_point"])


def memory_order(spec, x):
    """x (NCHW array) flattened in PyTorch's memory order: NHWC for a channels-last
    input (a conv output), else NCHW; and the inverse (flat -> NCHW array)."""
    if spec.get("input_layout") == "channels_last" and x.ndim == 4:
        n, c, h, w = x.shape
        return x.transpose(0, 2, 3, 1).ravel(), lambda f: f.reshape(n, h, w, c).transpose(0, 3, 1, 2)
    return x.ravel(), lambda f: f.reshape(x.shape)


def op_hardswish(spec, t):
    x, back = memory_order(spec, t["input"].astype(np.int64))
    s, z = spec["input_scale"], spec["input_zero_point"]
    so, zo = spec["output_scale"], spec["output_zero_point"]
    if spec["engine"] == "qnnpack":
        # QNNPACK lookup table (hardswish.c)
        xf = deq_scalar(x, s, z)
        x2 = np.minimum(np.maximum(xf + F32(3), F32(0)), F32(6))
        hs = ((xf * x2).astype(F32) / F32(6)).astype(F32)
        v = (hs * inv(so)).astype(F32) + F32(zo)
        y = rint(np.clip(v.astype(F32), F32(0), F32(255))).astype(np.int64)
        return back(y)
    n = x.size
    v = vec_split(n, spec)
    xf = np.empty(n, F32)
    xf[:v] = deq_vec(x[:v], s, z)
    xf[v:] = deq_scalar(x[v:], s, z)
    x2 = np.minimum(np.maximum(xf + F32(3), F32(0)), F32(6))
    hs = ((xf * x2).astype(F32) / F32(6)).astype(F32)
    return back(quantize_val(hs, inv(so), zo))


LUT_OPS = ("hardsigmoid", "sigmoid", "silu", "leaky_relu", "elu", "add_scalar", "mul_scalar")


def lut_rule_tables(spec):
    """(vector-body table, tail table) from the rules in the README, for the table
    ops whose arithmetic has no transcendental function; None for the others."""
    op, eng = spec["op"], spec["engine"]
    s, z = spec["input_scale"], spec["input_zero_point"]
    q = np.arange(256, dtype=np.int64)
    if op == "hardsigmoid":
        def hsig(x):
            return (np.minimum(np.maximum((x + F32(3)).astype(F32), F32(0)), F32(6)) / F32(6)).astype(F32)
        if eng == "qnnpack":  # QNNPACK lookup table (hardsigmoid.c): zero point added before rounding
            v = (inv(1 / 256) * hsig(deq_scalar(q, s, z))).astype(F32) + F32(0)
            tb = rint(np.clip(v, F32(0), F32(255))).astype(np.int64)
            return tb, tb
        return (quantize_val(hsig(deq_vec(q, s, z)), inv(1 / 256), 0),
                quantize_val(hsig(deq_scalar(q, s, z)), inv(1 / 256), 0))
    if op == "leaky_relu":
        a = F32(spec["negative_slope"])
        so, zo = spec["output_scale"], spec["output_zero_point"]

        def lr(x):
            return np.where(x > 0, x, (x * a).astype(F32)).astype(F32)
        return (quantize_val(lr(deq_vec(q, s, z)), inv(so), zo),
                quantize_val(lr(deq_scalar(q, s, z)), inv(so), zo))
    if op == "mul_scalar":
        c = spec["scalar"]
        # _mul_scalar_out: the bytes are relabelled, never rounded
        if c > 0:
            tb = q
        elif c == 0:
            tb = np.zeros(256, np.int64)
        else:
            tb = 255 - q
        return tb, tb
    if op == "add_scalar":
        # _add_scalar_out: c_q = round(c / s); the output qparams move the zero
        # point by c_q, or (out of range) rescale; qadd_scalar_kernel then computes
        # requantize_from_int(f32(s) * (1/f32(s')), z', q - z + c_q) on both paths
        c, so, zo = F64(spec["scalar"]), spec["output_scale"], spec["output_zero_point"]
        c_q = int(np.rint(c / F64(s)))
        m = F32(F32(s) * inv(so))
        tb = np.clip(zo + rint((q - z + c_q).astype(F32) * m).astype(np.int64), 0, 255)
        return tb, tb
    return None


def op_lut(spec, t):
    """Output = the case's tables (the exporter's, computed by PyTorch) applied with
    ATen's vector/scalar split in memory order; where the README gives the rule,
    the tables must also equal it."""
    table, tail = t["table"].astype(np.int64), t["tail_table"].astype(np.int64)
    rule = lut_rule_tables(spec)
    if rule is not None and not ((rule[0] == table).all() and (rule[1] == tail).all()):
        i = int(np.nonzero((rule[0] != table) | (rule[1] != tail))[0][0])
        print(f"     {spec['name']}: rule tables differ at byte {i}: rule {rule[0][i]}/{rule[1][i]}, "
              f"PyTorch {table[i]}/{tail[i]}")
        return np.full(t["input"].shape, -1)
    x, back = memory_order(spec, t["input"].astype(np.int64))
    v = vec_split(x.size, spec)
    if spec["op"] == "elu" and spec.get("input_layout") == "channels_last" and not channels_last(t["input"].shape):
        # quantized.elu's output is contiguous: with a channels-last input
        # TensorIterator cannot vectorize, every element takes the scalar path
        v = 0
    y = np.where(np.arange(x.size) < v, table[x], tail[x])
    return back(y)


def op_cat(spec, t):
    so, zo = spec["output_scale"], spec["output_zero_point"]
    xs = [t[f"input_{j}"] for j in range(spec["num_inputs"])]
    # all inputs channels-last contiguous (each has C == 1, or H == W == 1) -> qcat_nhwc_kernel
    nhwc = all(channels_last(x.shape) for x in xs)
    parts = []
    for j, x in enumerate(xs):
        sj, zj = spec["input_scale"][j], spec["input_zero_point"][j]
        if nhwc and sj == so and zj == zo:
            parts.append(x.astype(np.int64))  # memcpy fast path
            continue
        d = deq_scalar(x, sj, zj)
        if nhwc:
            # per pixel, channels [0, C - C % 8) go through Vectorized dequantize (FMA)
            cv = (x.shape[1] // 8) * 8
            d[:, :cv] = deq_vec(x[:, :cv], sj, zj)
        parts.append(quantize_val(d, inv(so), zo))
    return np.concatenate(parts, axis=1)


def reference(spec, t):
    op = spec["op"]
    if op == "quantize":
        return op_quantize(spec, t)
    if op == "dequantize":
        return op_dequantize(spec, t)
    if op in ("add", "add_relu"):
        return op_add(spec, t, op == "add_relu")
    if op == "max_pool2d":
        return op_max_pool2d(spec, t)
    if op == "avg_pool2d":
        return op_avg_pool2d(spec, t)
    if op == "adaptive_avg_pool2d":
        return op_adaptive_avg_pool2d(spec, t)
    if op == "mean":
        return op_mean(spec, t)
    if op == "relu":
        return op_relu(spec, t)
    if op == "relu6":
        return clamp_q(spec, t, 0.0, 6.0)
    if op == "hardtanh":
        return clamp_q(spec, t, spec["min_val"], spec["max_val"])
    if op == "hardswish":
        return op_hardswish(spec, t)
    if op == "cat":
        return op_cat(spec, t)
    if op in ("mul", "mul_relu"):
        return op_mul(spec, t, op == "mul_relu")
    if op in LUT_OPS:
        return op_lut(spec, t)
    raise ValueError(op)


def check_inputs(spec, t):
    """every quantized input must be torch.quantize_per_tensor of its float input"""
    ok = True
    names = [k for k in t if k.startswith("input")]
    for k in names:
        fk = "float_" + k
        if k == "input":
            s, z = spec["input_scale"], spec["input_zero_point"]
        else:
            j = int(k.split("_")[1])
            s, z = spec["input_scale"][j], spec["input_zero_point"][j]
        ok &= bool((quantize_val(t[fk], inv(s), z) == t[k]).all())
    return ok


def main():
    paths = []
    for d in sys.argv[1:]:
        paths += sorted(glob.glob(os.path.join(d, "*.safetensors")))
    if not paths:
        sys.exit("usage: check_ops.py DIR...  (no cases found)")
    bad = skipped = 0
    for p in paths:
        spec, t = load(p)
        if spec["op"] == "conv_transpose2d":
            # a layer (gather + conv2d in qfuse): checked against PyTorch's output by tests/ops_vectors.rs
            skipped += 1
            continue
        got = reference(spec, t)
        want = t["output"]
        if want.dtype == np.float32:
            same = got.astype(F32).view(np.uint32) == want.view(np.uint32)
            maxd = float(np.abs(got.astype(F64) - want.astype(F64)).max()) if got.shape == want.shape else -1
        else:
            got = np.asarray(got).reshape(want.shape) if got.size == want.size else got
            same = got == want.astype(np.int64) if got.shape == want.shape else np.zeros(1, bool)
            maxd = int(np.abs(got - want.astype(np.int64)).max()) if got.shape == want.shape else -1
        inputs_ok = check_inputs(spec, t)
        ok = got.shape == want.shape and bool(same.all()) and inputs_ok
        bad += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {spec['name']:<28} {spec['engine']:<8} "
              f"n={want.size:<6} exact={float(same.mean()):.5f} maxdiff={maxd} inputs_exact={inputs_ok}")
    print(f"{len(paths) - bad - skipped} passed, {bad} failed"
          + (f", {skipped} conv_transpose2d cases skipped (layers: tests/ops_vectors.rs)" if skipped else ""))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
