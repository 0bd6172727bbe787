//! ExecuTorch's XNNPACK delegate (pt2e models quantized with
//! `XNNPACKQuantizer`), as qfuse data: the rules of
//! `tests/data/pt2e/README.md` ("XNNPACK rules") computed on the host into
//! the tables and constants of existing ops. Models use the engine
//! [`Requant::Xnnpack`](crate::quant::Requant::Xnnpack).
//!
//! | XNNPACK rule | qfuse op | built by |
//! | --- | --- | --- |
//! | quantize (`x * f32(1/s)`, ties to even) | `quantize` | (the op itself) |
//! | dequantize | `dequantize` | (the op itself) |
//! | conv2d / linear (int32 bias, fp32 epilogue) | `conv2d` / `linear`, `requant: "xnnpack"` | [`QLayer::with_int_bias_rule`](crate::layer::QLayer::with_int_bias_rule), [`xnnpack_bias_i32`], bounds [`xnnpack_quantize_bound`] |
//! | add (fixed point, round half up) [+ relu] | `binary` | [`xnnpack_add_table`] |
//! | mul (fp32) [+ relu] | `binary` | [`xnnpack_mul_table`] |
//! | clamp (relu, hardtanh, relu6 between qparams) | `lut` | [`xnnpack_clamp_table`] |
//! | a clamp merged into a max pool | `max_pool2d` + `lut` | [`xnnpack_merged_clamp_table`] |
//! | mean over H, W (global average pooling) | `mean` under the engine `xnnpack` | [`xnnpack_mean`] (CPU), [`xnnpack_mean_thresholds`] (GPU) |
//! | max pool, cat, reshape | `max_pool2d`, `cat`, `reshape` / `flatten` | (copies) |
//!
//! qint8 tensors are uint8 images (see [`QParams`]): every table here is
//! indexed by stored bytes and holds stored bytes; the rules themselves are
//! computed on the true int8 values and zero points.

use crate::error::{Error, Result};
use crate::quant::QParams;

pub use super::binary::BINARY_TABLE_LEN;

/// The true value of stored byte `b` of a tensor with qparams `q`.
#[inline]
fn val(b: i32, q: QParams) -> i32 {
    b - q.offset()
}

/// The stored byte of the true value `v` (already within the type's range).
#[inline]
fn byte(v: i32, q: QParams) -> u8 {
    (v + q.offset()) as u8
}

/// The type's range of true values.
#[inline]
fn range(q: QParams) -> (i32, i32) {
    (-q.offset(), 255 - q.offset())
}

/// XNNPACK's quantization of a float clamp bound (`requantization.h`):
/// `lrintf(fminf(fmaxf(f32(v / s) + f32(z), min), max))` with the true zero
/// point `z`; an infinite bound saturates. Returns the stored byte.
pub fn xnnpack_quantize_bound(v: f32, q: QParams) -> u8 {
    let (lo, hi) = range(q);
    let t = if v.is_finite() { v / q.scale } else { v };
    let t = t + q.true_zero_point() as f32;
    let t = t.max(lo as f32).min(hi as f32);
    byte(t.round_ties_even() as i32, q)
}

/// The int32 bias ExecuTorch serializes for XNNPACK (`QuantParams.from_bias`
/// and `quantize_tensor`), per output channel from the float bias `b`, the
/// weight scales and the input scale:
/// per-channel weights: `bs = f32(ws[o] * s_in)`, `rint(f32(b * f32(1 / bs)))`;
/// per-tensor weights: `bs = ws * s_in` in f64, `inv = f32(1.0 / bs)` (f64
/// division), `rint(f32(b * inv))`. Clamped to int32.
pub fn xnnpack_bias_i32(
    bias: &[f32],
    weight_scale: &[f32],
    input_scale: f32,
    per_channel: bool,
) -> Result<Vec<i32>> {
    if bias.len() != weight_scale.len() {
        return Err(Error::shape(
            "bias",
            format!(
                "{} values for {} weight scales",
                bias.len(),
                weight_scale.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(bias.len());
    for (o, (&b, &ws)) in bias.iter().zip(weight_scale).enumerate() {
        let inv = if per_channel {
            1.0f32 / (ws * input_scale)
        } else {
            (1.0f64 / (ws as f64 * input_scale as f64)) as f32
        };
        let v = (b * inv).round_ties_even();
        if v.is_nan() {
            return Err(Error::qparams(
                "bias",
                format!("output channel {o}: bias {b} x {inv} is not a number"),
            ));
        }
        out.push(v.clamp(-2_147_483_648.0, 2_147_483_520.0) as i32);
    }
    Ok(out)
}

/// XNNPACK's `add` constants (`xnn_init_qs8_add_minmax_scalar_params`):
/// `(ma, mb, bias, shift)` with `ra = f32(sa / so)`, `rb = f32(sb / so)`,
/// `shift = 20 - exponent(max(|ra|, |rb|))`, `ma = rint(ra * 2^shift)`,
/// `bias = 2^(shift-1) - ma*za - mb*zb` (true zero points). XNNPACK refuses
/// ratios outside `[2^-10, 2^8)`.
pub fn xnnpack_add_params(a: QParams, b: QParams, out: QParams) -> Result<(i64, i64, i64, u32)> {
    let ra = a.scale / out.scale;
    let rb = b.scale / out.scale;
    let mx = ra.abs().max(rb.abs());
    let exp = (mx.to_bits() >> 23) as i32 - 127;
    let shift = 20 - exp;
    if !(12..=30).contains(&shift) {
        return Err(Error::qparams(
            "add",
            format!(
                "input/output scale ratios {ra:e} and {rb:e} are outside XNNPACK's range [2^-10, 2^8)"
            ),
        ));
    }
    let p = 2f64.powi(shift);
    let ma = (ra as f64 * p).round_ties_even() as i64;
    let mb = (rb as f64 * p).round_ties_even() as i64;
    let bias =
        (1i64 << (shift - 1)) - ma * a.true_zero_point() as i64 - mb * b.true_zero_point() as i64;
    Ok((ma, mb, bias, shift as u32))
}

/// Wraps to int32, as XNNPACK's accumulator does.
#[inline]
fn wrap32(v: i64) -> i64 {
    v as i32 as i64
}

/// XNNPACK's quantized add (`qs8-vadd-minmax`) for every (a, b) byte pair:
/// `acc = bias + ma*a + mb*b` (int32), `y = sat(acc >> shift + zo)` (an
/// arithmetic shift: round half up), then with `relu` the clamp node XNNPACK
/// puts after it, `max(y, xq(0))`. Indexed by stored bytes `a * 256 + b`.
pub fn xnnpack_add_table(a: QParams, b: QParams, out: QParams, relu: bool) -> Result<Vec<u8>> {
    let (ma, mb, bias, shift) = xnnpack_add_params(a, b, out)?;
    let (lo, hi) = range(out);
    let lo = if relu {
        val(xnnpack_quantize_bound(0.0, out) as i32, out)
    } else {
        lo
    };
    let zo = out.true_zero_point() as i64;
    let mut t = Vec::with_capacity(BINARY_TABLE_LEN);
    for ab in 0..256 {
        let av = val(ab, a) as i64;
        for bb in 0..256 {
            let bv = val(bb, b) as i64;
            let acc = wrap32(bias + wrap32(av * ma) + wrap32(bv * mb));
            let r = (acc >> shift) + zo;
            t.push(byte(r.clamp(lo as i64, hi as i64) as i32, out));
        }
    }
    Ok(t)
}

/// XNNPACK's quantized mul (`qs8-vmul-minmax-fp32`) for every (a, b) byte
/// pair: `scale = f32(f32(sa * sb) / so)`, `p = (a - za)(b - zb)` (int32),
/// `y = sat(sat16(rint(f32(p) * scale)) + zo)`, with `relu` then
/// `max(y, xq(0))`. Indexed by stored bytes `a * 256 + b`.
pub fn xnnpack_mul_table(a: QParams, b: QParams, out: QParams, relu: bool) -> Result<Vec<u8>> {
    let scale = (a.scale * b.scale) / out.scale;
    if !(scale.is_finite() && scale > 0.0) {
        return Err(Error::qparams(
            "mul",
            format!("sa * sb / so = {scale:e} is not a usable f32 scale"),
        ));
    }
    let (lo, hi) = range(out);
    let lo = if relu {
        val(xnnpack_quantize_bound(0.0, out) as i32, out)
    } else {
        lo
    };
    let zo = out.true_zero_point();
    let mut t = Vec::with_capacity(BINARY_TABLE_LEN);
    for ab in 0..256 {
        for bb in 0..256 {
            // byte - zero point is the same on images and true values
            let p = (ab - a.zero_point) * (bb - b.zero_point);
            let r = ((p as f32) * scale)
                .round_ties_even()
                .clamp(-32768.0, 32767.0) as i32;
            t.push(byte((r + zo).clamp(lo, hi), out));
        }
    }
    Ok(t)
}

/// XNNPACK's standalone clamp from `input` to `out` qparams as a table over
/// stored bytes. Same qparams (relu / hardtanh): `min(max(q, xq(min)),
/// xq(max))` with [`xnnpack_quantize_bound`]. Different qparams (relu6, which
/// the quantizer leaves in float): XNNPACK's reference kernel,
/// `x = (f32(q) - f32(z_in)) * s_in`, `c = min(max(x, min), max)`,
/// `y = sat(rint(f32(c * f32(1/s_out)) + f32(z_out)))` (true values).
/// A clamp that follows a conv/linear it can be merged into (XNNPACK's
/// `merge_clamps`) belongs in that layer's clamp instead (bounds
/// [`xnnpack_quantize_bound`] in the clamp's output qparams).
pub fn xnnpack_clamp_table(input: QParams, out: QParams, min: f32, max: f32) -> Result<[u8; 256]> {
    if min.is_nan() || max.is_nan() || min > max {
        return Err(Error::config(
            "clamp",
            format!("bounds [{min}, {max}] are not an interval"),
        ));
    }
    if input == out {
        let (lo, hi) = (
            xnnpack_quantize_bound(min, out),
            xnnpack_quantize_bound(max, out),
        );
        return Ok(std::array::from_fn(|b| (b as u8).max(lo).min(hi)));
    }
    let (lo, hi) = range(out);
    let inv = 1.0f32 / out.scale;
    let zin = input.true_zero_point() as f32;
    let zo = out.true_zero_point() as f32;
    Ok(std::array::from_fn(|b| {
        let x = (val(b as i32, input) as f32 - zin) * input.scale;
        let c = x.max(min).min(max);
        let v = (c * inv + zo).round_ties_even();
        byte(v.clamp(lo as f32, hi as f32) as i32, out)
    }))
}

/// A clamp XNNPACK merged into the max pool before it: the pool passes its
/// bytes on unchanged and they are read with the clamp's *output* qparams
/// `out`, clamped to `[xq(min), xq(max)]` in `out`. As a `lut` with output
/// qparams `out` after the `max_pool2d` (whatever the pool's qparams).
pub fn xnnpack_merged_clamp_table(out: QParams, min: f32, max: f32) -> Result<[u8; 256]> {
    xnnpack_clamp_table(out, out, min, max)
}

/// The constants of XNNPACK's mean over `n` taps (global average pooling,
/// `reduce-nd.c`): `inv = f32(s_in / s_out) * f32(1 / f32(n))`,
/// `zp' = f32(z_out) - f32(f32(n * z_in) * inv)` (true zero points).
pub fn xnnpack_mean_params(input: QParams, out: QParams, n: usize) -> (f32, f32) {
    let inv = (input.scale / out.scale) * (1.0f32 / n as f32);
    let nz = (n as i64 * input.true_zero_point() as i64) as f32;
    let zpp = out.true_zero_point() as f32 - nz * inv;
    (inv, zpp)
}

/// XNNPACK's mean of `n` taps whose stored bytes sum to `sum` (a sum of
/// uint8 images): the raw sum `S = sum - offset * n` of the true values,
/// `y = sat(rint(f32(f32(S) * inv) + zp'))` (no FMA). Returns the stored byte.
pub fn xnnpack_mean(sum: u64, n: usize, input: QParams, out: QParams) -> u8 {
    let (inv, zpp) = xnnpack_mean_params(input, out, n);
    mean_byte(sum, n, input.offset(), inv, zpp, out)
}

#[inline]
fn mean_byte(sum: u64, n: usize, offset: i32, inv: f32, zpp: f32, out: QParams) -> u8 {
    mean_byte_raw(sum, n, offset, inv, zpp, out.offset())
}

/// The mean rule on lowered constants: input offset `off_in`, output offset
/// `off_out` (see [`xnnpack_mean`]).
#[inline]
pub(crate) fn mean_byte_raw(
    sum: u64,
    n: usize,
    off_in: i32,
    inv: f32,
    zpp: f32,
    off_out: i32,
) -> u8 {
    let s = sum as i64 - off_in as i64 * n as i64;
    let v = ((s as f32) * inv + zpp).round_ties_even();
    (v.clamp(-off_out as f32, (255 - off_out) as f32) as i32 + off_out) as u8
}

/// The mean as 255 thresholds on the byte sum, for the GPU (no float
/// arithmetic there): `t[k - 1]` is the smallest byte sum in `0..=255 n`
/// whose mean is the stored byte `k` or more (`255 n + 1` if none), so the
/// stored byte is the number of thresholds `<= sum`. Exact because the rule
/// is non-decreasing in the sum.
pub fn xnnpack_mean_thresholds(n: usize, input: QParams, out: QParams) -> Vec<u32> {
    let (inv, zpp) = xnnpack_mean_params(input, out, n);
    let top = 255 * n as u64;
    (1..=255u32)
        .map(|k| {
            // smallest s in [0, top + 1] with f(s) >= k (f(top + 1) taken as 255)
            let (mut lo, mut hi) = (0u64, top + 1);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if mean_byte(mid, n, input.offset(), inv, zpp, out) as u32 >= k {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            lo as u32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_rounds_half_up_with_shift_20_minus_e() {
        // sa = so, sb = so: ra = rb = 1, e = 0, shift 20, ma = mb = 2^20
        let q = QParams::new_i8(0.5, 0).unwrap();
        let (ma, mb, bias, shift) = xnnpack_add_params(q, q, q).unwrap();
        assert_eq!((ma, mb, bias, shift), (1 << 20, 1 << 20, 1 << 19, 20));
        // ratio 1/2: -3 * 1/2 = -1.5 rounds half up to -1 (QNNPACK: -2)
        let a = QParams::new_i8(0.25, 0).unwrap();
        let t = xnnpack_add_table(a, q, q, false).unwrap();
        let at = |x: i32, y: i32| t[((x + 128) * 256 + y + 128) as usize] as i32 - 128;
        assert_eq!(at(-3, 0), -1);
        assert_eq!(at(3, 0), 2);
        assert_eq!(at(127, 127), 127);
        assert_eq!(at(-128, -128), -128);
    }

    #[test]
    fn clamp_bounds_add_the_zero_point_in_f32() {
        // v / s = 2.5 exactly, + z = -3 in f32 = -0.5, rint -> -0 (even);
        // rint(2.5) + z would give 2 - 3 = -1
        let q = QParams::new_i8(0.25, -3).unwrap();
        assert_eq!(xnnpack_quantize_bound(0.625, q) as i32 - 128, 0);
        assert_eq!(xnnpack_quantize_bound(f32::INFINITY, q), 255);
        assert_eq!(xnnpack_quantize_bound(f32::NEG_INFINITY, q), 0);
    }

    #[test]
    fn mean_thresholds_agree_with_the_rule() {
        for (si, zi, so, zo, n) in [
            (0.03125f32, 3, 0.03125f32, 3, 4usize),
            (0.017, -5, 0.017, -5, 49),
            (0.1, -128, 0.05, 17, 9),
            (0.01, 100, 0.3, -100, 1),
        ] {
            let (qi, qo) = (
                QParams::new_i8(si, zi).unwrap(),
                QParams::new_i8(so, zo).unwrap(),
            );
            let t = xnnpack_mean_thresholds(n, qi, qo);
            for s in 0..=255 * n as u64 {
                let want = xnnpack_mean(s, n, qi, qo) as usize;
                let got = t.iter().filter(|&&x| x as u64 <= s).count();
                assert_eq!(got, want, "sum {s}, n {n}");
            }
        }
    }

    #[test]
    fn bias_rules_differ_by_precision() {
        let b = xnnpack_bias_i32(&[1.0, -2.5], &[0.01, 0.02], 0.1, true).unwrap();
        assert_eq!(b, vec![1000, -1250]);
        assert!(xnnpack_bias_i32(&[1.0], &[0.1, 0.2], 0.1, false).is_err());
    }
}
