"""XNNPACK's int8 arithmetic (ExecuTorch's XNNPACK delegate) as the host-side
constants and tables a qfuse `"engine": "xnnpack"` file holds.

A numpy port of the rules in tests/data/pt2e/README.md ("XNNPACK rules"), taken
from tools/pt2e/check_pt2e_ops.py (which reproduces ExecuTorch bit for bit on
the 92 cases of tests/data/pt2e/xnnpack) and equal to qfuse's Rust functions
`qfuse::ops::xnnpack_bias_i32`, `xnnpack_quantize_bound`, `xnnpack_add_table`,
`xnnpack_mul_table`, `xnnpack_clamp_table`, `xnnpack_merged_clamp_table`.

Values are int8 (signed zero points); a qfuse file stores qint8 tensors as
their uint8 images `v + 128`, so every table here is indexed by and holds
stored bytes. Needs numpy only.
"""
import numpy as np

F32, F64, I64 = np.float32, np.float64, np.int64


def quantize_bound(val, scale, zp):
    """XNNPACK's xnn_qs8_quantize: lrintf(fminf(fmaxf(f32(val / s) + f32(z), -128), 127)):
    the int8 value of a float clamp bound (f32 division, then the zero point added
    in f32 before rounding; +inf -> 127, -inf -> -128)."""
    val = float(val)
    if np.isfinite(val):
        v = F32(F32(val) / F32(scale))
        v = F32(v + F32(zp))
    else:
        v = F32(val)
    v = min(max(v, F32(-128.0)), F32(127.0))
    return int(np.rint(v))


def bias_i32(b, wscale, in_scale, per_channel):
    """ExecuTorch's int32 bias for XNNPACK (QuantParams.from_bias + quantize_tensor):
    per-channel weights: bs = f32(ws[o] * f32(s_in)), b_i32 = rint(f32(b * f32(1 / bs)));
    per-tensor weights:  bs = ws * s_in in f64, inv = f32(1.0 / bs), b_i32 = rint(f32(b * inv))."""
    b = np.asarray(b, dtype=F32)
    if per_channel:
        bs = (np.asarray(wscale, dtype=F32) * F32(in_scale)).astype(F32)
        inv = (F32(1.0) / bs).astype(F32)
    else:
        bs = np.asarray(wscale, dtype=F32).astype(F64) * F64(in_scale)
        inv = (1.0 / bs).astype(F32)
    v = np.rint((b * inv).astype(F32))
    return np.clip(v, -2.0 ** 31, 2.0 ** 31 - 1).astype(np.int32)


def _all_pairs():
    a = np.repeat(np.arange(-128, 128, dtype=I64), 256)  # stored byte a*256 + b
    b = np.tile(np.arange(-128, 128, dtype=I64), 256)
    return a, b


def add_table(sa, za, sb, zb, so, zo, lo=-128, hi=127):
    """xnn_init_qs8_add_minmax_scalar_params + qs8-vadd: fixed point, shift 20 - e,
    round half up (arithmetic shift of acc + 2^(shift-1)); then the clamp [lo, hi]
    (int8 bounds of a fused relu: xq(0)). Returns the 65,536-entry table of stored bytes."""
    ra = F32(F32(sa) / F32(so))
    rb = F32(F32(sb) / F32(so))
    mx = max(abs(ra), abs(rb))
    exp = int(np.array(mx, F32).view(np.uint32) >> 23) - 127
    shift = 20 - exp
    if not 12 <= shift <= 30:
        raise ValueError(f"add: scale ratios {float(ra)}, {float(rb)} outside XNNPACK's range [2^-10, 2^8)")
    ma = int(np.rint(F64(abs(ra)) * 2.0 ** shift)) * (1 if ra >= 0 else -1)
    mb = int(np.rint(F64(abs(rb)) * 2.0 ** shift)) * (1 if rb >= 0 else -1)
    bias = (1 << (shift - 1)) - ma * za - mb * zb
    a, b = _all_pairs()
    acc = bias + a * ma + b * mb
    acc = ((acc + 2 ** 31) % 2 ** 32 - 2 ** 31)  # int32 wrap (never reached for int8 inputs)
    y = np.clip((acc >> shift) + zo, -128, 127)
    y = np.clip(y, lo, hi)
    return (y + 128).astype(np.uint8)


def mul_table(sa, za, sb, zb, so, zo, lo=-128, hi=127):
    """qs8-vmul-minmax-fp32: scale = f32(f32(sa * sb) / so); p = (a - za) * (b - zb);
    y = sat8(sat16(rint(f32(p) * scale)) + zo), then the clamp [lo, hi]."""
    scale = F32(F32(F32(sa) * F32(sb)) / F32(so))
    a, b = _all_pairs()
    v = ((a - za) * (b - zb)).astype(F32) * scale
    r = np.clip(np.rint(v.astype(F32)), -32768, 32767).astype(I64)
    y = np.clip(r + zo, -128, 127)
    y = np.clip(y, lo, hi)
    return (y + 128).astype(np.uint8)


def clamp_table(si, zi, so, zo, vmin, vmax):
    """A standalone clamp (relu / hardtanh / relu6) as a 256-entry table of stored bytes.
    Same qparams in and out: min(max(q, xq(min)), xq(max)). Different qparams (relu6 between
    two observers): XNNPACK's reference kernel, x = (f32(q) - f32(z_in)) * s_in,
    c = min(max(x, min), max), y = sat8(nearbyint(f32(c * f32(1/s_out)) + f32(z_out)))."""
    q = np.arange(-128, 128, dtype=I64)
    if (F32(si), int(zi)) == (F32(so), int(zo)):
        y = np.minimum(np.maximum(q, quantize_bound(vmin, so, zo)), quantize_bound(vmax, so, zo))
    else:
        xf = ((q.astype(F32) - F32(zi)) * F32(si)).astype(F32)
        c = np.minimum(np.maximum(xf, F32(vmin)), F32(vmax)).astype(F32)
        inv = F32(F32(1.0) / F32(so))
        v = ((c * inv).astype(F32) + F32(zo)).astype(F32)
        y = np.clip(np.rint(v), -128, 127).astype(I64)
    return [int(v) + 128 for v in y]


def merged_clamp_table(so, zo, vmin, vmax):
    """A clamp XNNPACK merged into the max pool before it: the pool's int8 values are
    passed on unchanged, read with the clamp's output qparams and clamped to
    [xq(min), xq(max)] there (README "clamp")."""
    return clamp_table(so, zo, so, zo, vmin, vmax)


# -- float unary ops between a dequantize and a quantize (README "unary ops")

UNARY_FNS = ("sigmoid", "tanh", "hardswish", "hardsigmoid", "silu", "gelu", "leaky_relu")


def _f32_exact(fr):
    """the f32 nearest to the exact rational `fr` (ties to even)"""
    from fractions import Fraction

    c = F32(float(fr))  # within one f32 ulp of fr
    best = None
    for v in (np.nextafter(c, F32(-np.inf)), c, np.nextafter(c, F32(np.inf))):
        d = abs(Fraction(float(v)) - fr)
        even = int(np.array(v, F32).view(np.uint32)) % 2 == 0
        if best is None or d < best[0] or (d == best[0] and even):
            best = (d, v)
    return F32(best[1])


def _fma_f32(a, b, c):
    """f32 fused multiply-add a * b + c, one rounding (as _mm512_fmadd_ps)"""
    from fractions import Fraction

    return np.array([_f32_exact(Fraction(float(x)) * Fraction(float(b)) + Fraction(float(c))) for x in a],
                    dtype=F32)


def unary_f32(fn, x, param=None):
    """XNNPACK's f32 value of `fn` on the f32 array `x` (the op as ExecuTorch lowers it):
    hardswish: XNNPACK's f32-vhswish (all x86 kernels: fma(x, 0x1.555556p-3, 0.5), clamp to
    [0, 1], times x); hardsigmoid: the aten decomposition ExecuTorch lowers (f32 add 3, clamp
    to [0, 6], f32 divide by 6); silu: the decomposition x * sigmoid(x) (two f32 ops);
    leaky_relu: x < 0 ? f32(x * slope) : x; sigmoid, tanh, gelu (erf form): the correctly
    rounded f32 value (XNNPACK's polynomial / rational kernels are within a few ulp of it,
    which changes a quantized value only when an output lies within those ulp of a rounding
    tie: see tests/data/pt2e/README.md)."""
    import math

    x = np.asarray(x, dtype=F32)
    x64 = x.astype(F64)
    if fn == "sigmoid":
        return (1.0 / (1.0 + np.exp(-x64))).astype(F32)
    if fn == "tanh":
        return np.tanh(x64).astype(F32)
    if fn == "gelu":
        return np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x64]).astype(F32)
    if fn == "hardswish":
        t = _fma_f32(x, F32(float.fromhex("0x1.555556p-3")), F32(0.5))
        t = np.minimum(np.maximum(t, F32(0.0)), F32(1.0))
        return (t * x).astype(F32)
    if fn == "hardsigmoid":
        t = (x + F32(3.0)).astype(F32)
        t = np.minimum(np.maximum(t, F32(0.0)), F32(6.0))
        return (t / F32(6.0)).astype(F32)
    if fn == "silu":
        return (x * unary_f32("sigmoid", x)).astype(F32)
    if fn == "leaky_relu":
        return np.where(x < 0, (x * F32(param)).astype(F32), x).astype(F32)
    raise ValueError(f"unary op {fn!r}: not one of {', '.join(UNARY_FNS)}")


def unary_table(chain, si, zi, so, zo):
    """A chain of float unary ops between dequantize (si, zi) and quantize (so, zo) as the
    256-entry table XNNPACK builds by running the chain on every int8 value
    (xnn_subgraph_fuse_unary_quantized_into_lut): x = f32(q - zi) * si, each op in f32,
    y = sat8(rint(f32(v * f32(1 / so))) + zo). `chain`: [(fn, param)]. Stored bytes."""
    q = np.arange(-128, 128, dtype=I64)
    v = ((q - int(zi)).astype(F32) * F32(si)).astype(F32)
    for fn, param in chain:
        v = unary_f32(fn, v, param)
    inv = F32(F32(1.0) / F32(so))
    y = np.clip(np.rint((v * inv).astype(F32)).astype(I64) + int(zo), -128, 127)
    return [int(t) + 128 for t in y]


def fma_f32(a, b, c):
    """f32 fused multiply-add `a * b + c` with one rounding (as `_mm512_fmadd_ps`), elementwise
    with numpy broadcasting, exact: the product of two f32 is exact in f64; `s = p + c` rounded
    in f64 with its exact error `e` (TwoSum); rounding `s` to f32 gives the correctly rounded
    result unless `s` lies exactly halfway between two f32 and `e != 0` (a double-rounding
    tie), where the result is the neighbour on `e`'s side."""
    p = np.asarray(a, F32).astype(F64) * np.asarray(b, F32).astype(F64)
    c = np.asarray(c, F32).astype(F64)
    s = p + c
    bb = s - p
    e = (p - (s - bb)) + (c - bb)
    r = s.astype(F32)
    with np.errstate(over="ignore", invalid="ignore"):
        lo = np.where(r.astype(F64) > s, np.nextafter(r, F32(-np.inf)), r)
        hi = np.nextafter(lo, F32(np.inf))
        mid = (lo.astype(F64) + hi.astype(F64)) / 2
    tie = (s == mid) & (e != 0)
    return np.where(tie, np.where(e > 0, hi, lo), r).astype(F32)


def batch_norm_weights(mean, var, gamma, beta, eps):
    """ExecuTorch's DecomposeBatchNorm.compute_w_and_b (a BatchNorm not after a conv becomes
    an f32 1x1 depthwise convolution in the XNNPACK delegate): in f64,
    `d = sqrt(var + f64(f32(eps)))` (eps goes through a float32 tensor), `w = f32(gamma / d)`,
    `b = f32(-mean * gamma / d + beta)` (left to right); gamma / beta None: 1 / 0."""
    m64 = np.asarray(mean, F32).astype(F64)
    v64 = np.asarray(var, F32).astype(F64)
    g64 = np.asarray(gamma, F32).astype(F64) if gamma is not None else np.ones(1, F64)
    b64 = np.asarray(beta, F32).astype(F64) if beta is not None else np.zeros(1, F64)
    d = np.sqrt(v64 + F64(F32(eps)))
    w = (g64 / d).astype(F32)
    b = (-m64 * g64 / d + b64).astype(F32)
    c = m64.size
    return np.broadcast_to(w, (c,)).copy(), np.broadcast_to(b, (c,)).copy()


def batch_norm_values(mean, var, gamma, beta, eps, si, zi, lo=-np.inf, hi=np.inf):
    """The f32 value XNNPACK computes for every input byte of `dq(si, zi) -> batch_norm (eval)
    [-> relu / hardtanh(lo, hi)]`: the batch norm is an f32 1x1 depthwise convolution with the
    weights of `batch_norm_weights`, computed by XNNPACK's f32 kernels (on this AVX-512 CPU
    one FMA: `y = fma(x, w[c], b[c])`), then its output clamp `min(max(y, lo), hi)`;
    `x = f32(q - zi) * si`. Returns [C, 256] f32, indexed by the stored byte (image v + 128)."""
    w, b = batch_norm_weights(mean, var, gamma, beta, eps)
    q = np.arange(-128, 128, dtype=I64)
    x = ((q - int(zi)).astype(F32) * F32(si)).astype(F32)
    y = fma_f32(x[None, :], w[:, None], b[:, None])
    return np.minimum(np.maximum(y, F32(lo)), F32(hi)).astype(F32)


def batch_norm_tables(mean, var, gamma, beta, eps, si, zi, so, zo, lo=-np.inf, hi=np.inf):
    """`dq(si, zi) -> batch_norm (eval) [-> relu / hardtanh(lo, hi)] -> q(so, zo)` as ExecuTorch
    runs it with the XNNPACK delegate: `batch_norm_values`, then XNNPACK's f32 -> qs8 convert
    `q' = sat8(rint(f32(y * f32(1 / so))) + zo)`.
    Returns the [C, 256] uint8 tables of a qfuse `channel_lut` (stored bytes: images v + 128)."""
    y = batch_norm_values(mean, var, gamma, beta, eps, si, zi, lo, hi)
    inv = F32(F32(1.0) / F32(so))
    t = np.clip(np.rint((y * inv).astype(F32)).astype(I64) + int(zo), -128, 127)
    return (t + 128).astype(np.uint8)


def channel_mean_f32(values, q):
    """XNNPACK's f32 global average pooling (`static_mean` over H, W of an NHWC tensor:
    `f32-rdsum` 7p7x kernels, one accumulator per channel) of the f32 values `values[c][byte]`
    ([C, 256], e.g. `batch_norm_values`) of the int8 input `q` ([N, C, H, W], true values):
    `acc = 0; acc = v_p + acc` over the pixels in row-major order, then `acc * f32(1.0f / N)`
    (`reduce-nd.c`: `scale = 1.0f / num_reduction_elements`). Returns [N, C] f32."""
    n, c, h, w = q.shape
    v = np.asarray(values, F32)[np.arange(c)[None, :, None], (np.asarray(q, I64) + 128).reshape(n, c, h * w)]
    acc = np.zeros((n, c), F32)
    for p in range(h * w):
        acc = (v[:, :, p] + acc).astype(F32)
    return (acc * F32(F32(1.0) / F32(h * w))).astype(F32)


def channel_mean_quantized(values, q, so, zo):
    """`channel_mean_f32`, then XNNPACK's f32 -> qs8 convert `sat8(rint(f32(m * f32(1/so))) + zo)`:
    [N, C] int8 (true values)"""
    m = channel_mean_f32(values, q)
    inv = F32(F32(1.0) / F32(so))
    return np.clip(np.rint((m * inv).astype(F32)).astype(I64) + int(zo), -128, 127)


def avg_pool2d_out_hw(h, w, kernel, stride, padding):
    """output size of a delegated avg_pool2d (no ceil_mode): (L + 2p - k) // s + 1"""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


def avg_pool2d_f32(q, si, zi, kernel, stride, padding=(0, 0), order="col", tree=True, divide=False):
    """XNNPACK's f32 average pooling (`xnn_f32_avgpool_minmax_ukernel_9p__*`, every x86 and
    scalar kernel the same) of the dequantized int8 input `q` ([N, C, H, W], true values;
    XNNPACK's qs8 -> f32 convert `f32(q - zi) * si`), as ExecuTorch's XNNPACK delegate runs a
    float `avg_pool2d` without ceil_mode between a dequantize and a quantize. Taps in the
    indirection order (`xnn_indirection_init_dwconv2d_compressed`: column-major, kx outer, ky
    inner; a tap in the padding reads the zero buffer, +0.0), in passes of 9:
    `s = ((i2+i3)+(i4+i5)) + (((i0+i1)+i8)+(i6+i7))` (missing taps of the last pass +0.0),
    `acc = acc + s` from the zero buffer; then `acc * f32(1.0f / (kh*kw))` (no padding) or
    `* f32(1.0f / valid_count)` (padding: the pixelwise kernel's multiplier). Returns
    [N, C, OH, OW] f32. `order`, `tree`, `divide`: the checker's mutations (row-major, one
    sequential accumulator, sum / count)."""
    q = np.asarray(q, np.int64)
    n, c, h, w = q.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh, ow = avg_pool2d_out_hw(h, w, kernel, stride, padding)
    xf = ((q - int(zi)).astype(F32) * F32(si)).astype(F32)
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), F32)
    xp[:, :, ph:ph + h, pw:pw + w] = xf
    y = np.zeros((n, c, oh, ow), F32)
    z = np.zeros((n, c), F32)
    for oy in range(oh):
        for ox in range(ow):
            taps = [(ky, kx) for kx in range(kw) for ky in range(kh)] if order == "col" else \
                [(ky, kx) for ky in range(kh) for kx in range(kw)]
            v = [xp[:, :, oy * sh + ky, ox * sw + kx] for ky, kx in taps]
            acc = z
            if tree:
                for p0 in range(0, len(v), 9):
                    t = v[p0:p0 + 9] + [z] * max(0, 9 - len(v[p0:p0 + 9]))
                    s018 = ((t[0] + t[1]).astype(F32) + t[8]).astype(F32)
                    s23, s45, s67 = (t[2] + t[3]).astype(F32), (t[4] + t[5]).astype(F32), (t[6] + t[7]).astype(F32)
                    s = ((s23 + s45).astype(F32) + (s018 + s67).astype(F32)).astype(F32)
                    acc = (acc + s).astype(F32)
            else:
                for t in v:
                    acc = (acc + t).astype(F32)
            if ph or pw:
                vh = min(oy * sh + kh - ph, h) - max(oy * sh - ph, 0)
                vw = min(ox * sw + kw - pw, w) - max(ox * sw - pw, 0)
                cnt = vh * vw
            else:
                cnt = kh * kw
            y[:, :, oy, ox] = (acc / F32(cnt)).astype(F32) if divide else \
                (acc * F32(F32(1.0) / F32(cnt))).astype(F32)
    return y


def avg_pool2d_quantized(q, si, zi, kernel, stride, padding, so, zo, **mut):
    """`avg_pool2d_f32`, then XNNPACK's f32 -> qs8 convert: [N, C, OH, OW] int8 (true values)"""
    m = avg_pool2d_f32(q, si, zi, kernel, stride, padding, **mut)
    inv = F32(F32(1.0) / F32(so))
    return np.clip(np.rint((m * inv).astype(F32)).astype(I64) + int(zo), -128, 127)
