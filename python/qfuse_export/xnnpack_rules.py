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
