//! The quantized operators around conv/linear, as PyTorch computes them
//! (`tests/data/ops/README.md` states each rule; the vectors there pin them
//! down bit for bit). Plain loops over NCHW bytes: this is the CPU reference,
//! and the GPU kernels build their host-side constants and tables from the
//! scalar functions here.

use crate::error::{Error, Result};
use crate::quant::{QParams, Requant};

/// ATen's elementwise quantized kernels run the first `n - n % 64` elements of
/// a flat tensor through the vectorized lambda and the rest through the scalar
/// one; for `add` and `hardswish` under fbgemm the two round differently.
pub const VEC_SPLIT: usize = 64;

/// Number of leading elements of an `n`-element tensor that take ATen's vector path.
pub fn n_vec(n: usize) -> usize {
    n - n % VEC_SPLIT
}

/// Scalar-path dequantize: `s * f32(q - zp)`.
#[inline]
pub fn dequant_scalar(q: u8, p: QParams) -> f32 {
    p.scale * (q as i32 - p.zero_point) as f32
}

/// Vector-path dequantize: `fma(s, f32(q), s * f32(-zp))`, one rounding for
/// the multiply-add.
#[inline]
pub fn dequant_vector(q: u8, p: QParams) -> f32 {
    let premul = p.scale * (-p.zero_point) as f32;
    p.scale.mul_add(q as f32, premul)
}

/// Rule Q with `inv = 1/s` (see [`crate::quant::quantize_with_inv`]).
pub use crate::quant::quantize_with_inv as quantize_inv;

fn dims4(shape: &[usize], what: &str) -> Result<(usize, usize, usize, usize)> {
    match *shape {
        [n, c, h, w] if n > 0 && c > 0 && h > 0 && w > 0 => Ok((n, c, h, w)),
        _ => Err(Error::shape(
            what,
            format!("input shape {shape:?}: expected [N, C, H, W], all >= 1"),
        )),
    }
}

fn check_len(x: &[u8], shape: &[usize], what: &str) -> Result<()> {
    let want: usize = shape.iter().product();
    if x.len() != want {
        return Err(Error::shape(
            what,
            format!("{} elements for shape {shape:?} ({want} expected)", x.len()),
        ));
    }
    Ok(())
}

/// The qnnpack add's fixed-point constants: `(ma, mb, shift)`.
pub fn qnnpack_add_params(
    a: QParams,
    b: QParams,
    out: QParams,
    relu: bool,
) -> Result<(i32, i32, u32)> {
    let ra = a.scale / out.scale;
    let rb = b.scale / out.scale;
    for (name, r) in [("first", ra), ("second", rb)] {
        if !(r >= 2f32.powi(-14) && r < 256.0) {
            return Err(Error::Unsupported(format!(
                "qnnpack add: {name} input scale / output scale = {r:e} is outside QNNPACK's range [2^-14, 2^8)"
            )));
        }
    }
    if relu && out.zero_point == 255 {
        return Err(Error::Unsupported(
            "qnnpack add_relu with output zero point 255 (QNNPACK refuses it)".into(),
        ));
    }
    let e = ((ra.max(rb).to_bits() >> 23) as i32) - 127;
    let shift = (21 - e) as u32;
    let scale = 2f32.powi(shift as i32);
    Ok((
        (ra * scale).round_ties_even() as i32,
        (rb * scale).round_ties_even() as i32,
        shift,
    ))
}

/// QNNPACK's per-element add: round half away from zero of `acc / 2^shift`.
#[inline]
pub fn qnnpack_add_elem(
    qa: u8,
    qb: u8,
    za: i32,
    zb: i32,
    ma: i32,
    mb: i32,
    shift: u32,
    zo: i32,
    lo: i32,
) -> u8 {
    let acc = ma
        .wrapping_mul(qa as i32 - za)
        .wrapping_add(mb.wrapping_mul(qb as i32 - zb));
    let mask = ((1i64 << shift) - 1) as i32;
    let rem = (acc & mask) - (acc < 0) as i32;
    let r = (acc >> shift) + (rem > (mask >> 1)) as i32;
    (r + zo).clamp(lo, 255) as u8
}

/// Quantized `add` / `add_relu` of two tensors of the same shape, with its own
/// output qparams.
pub fn add(
    engine: Requant,
    a: &[u8],
    qa: QParams,
    b: &[u8],
    qb: QParams,
    shape: &[usize],
    relu: bool,
    out: QParams,
) -> Result<Vec<u8>> {
    check_len(a, shape, "add (first input)")?;
    check_len(b, shape, "add (second input)")?;
    let n = a.len();
    match engine {
        Requant::Fbgemm => {
            let nv = n_vec(n);
            let inv = 1.0 / out.scale;
            Ok((0..n)
                .map(|i| {
                    let mut c = if i < nv {
                        dequant_vector(a[i], qa) + dequant_vector(b[i], qb)
                    } else {
                        dequant_scalar(a[i], qa) + dequant_scalar(b[i], qb)
                    };
                    if relu {
                        c = c.max(0.0);
                    }
                    quantize_inv(c, inv, out.zero_point)
                })
                .collect())
        }
        Requant::Qnnpack => {
            let (ma, mb, shift) = qnnpack_add_params(qa, qb, out, relu)?;
            let lo = if relu { out.zero_point } else { 0 };
            Ok((0..n)
                .map(|i| {
                    qnnpack_add_elem(
                        a[i],
                        b[i],
                        qa.zero_point,
                        qb.zero_point,
                        ma,
                        mb,
                        shift,
                        out.zero_point,
                        lo,
                    )
                })
                .collect())
        }
    }
}

/// Pooling hyper-parameters (`[h, w]` each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2d {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub ceil_mode: bool,
}

impl Pool2d {
    /// ATen's `pooling_output_shape` for one dimension.
    pub fn out_len(&self, len: usize, i: usize) -> Result<usize> {
        let (k, s, p, d) = (
            self.kernel[i] as i64,
            self.stride[i] as i64,
            self.padding[i] as i64,
            self.dilation[i] as i64,
        );
        if k < 1 || s < 1 || d < 1 {
            return Err(Error::config(
                "pool2d",
                format!(
                    "kernel {:?}, stride {:?}, dilation {:?} must be >= 1",
                    self.kernel, self.stride, self.dilation
                ),
            ));
        }
        if 2 * p > k {
            return Err(Error::config(
                "pool2d",
                format!(
                    "padding {:?} must be at most half the kernel {:?}",
                    self.padding, self.kernel
                ),
            ));
        }
        let l = len as i64;
        let num = l + 2 * p - d * (k - 1) - 1 + if self.ceil_mode { s - 1 } else { 0 };
        if num < 0 {
            return Err(Error::shape(
                "pool2d input",
                format!(
                    "size {len} is smaller than the (dilated) kernel {:?}",
                    self.kernel
                ),
            ));
        }
        let mut o = num / s + 1;
        if self.ceil_mode && (o - 1) * s >= l + p {
            o -= 1;
        }
        Ok(o as usize)
    }

    pub fn out_hw(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        Ok((self.out_len(h, 0)?, self.out_len(w, 1)?))
    }
}

/// `max_pool2d` (output qparams = input's). Under qnnpack with `ceil_mode`
/// off, QNNPACK clamps every tap into the image (a PyTorch quirk, visible
/// only with dilation > 1); otherwise taps outside the image are skipped.
pub fn max_pool2d(
    engine: Requant,
    x: &[u8],
    shape: &[usize],
    p: &Pool2d,
) -> Result<(Vec<u8>, Vec<usize>)> {
    let (n, c, h, w) = dims4(shape, "max_pool2d")?;
    check_len(x, shape, "max_pool2d")?;
    let (oh, ow) = p.out_hw(h, w)?;
    let clamp_taps = engine == Requant::Qnnpack && !p.ceil_mode;
    let mut y = Vec::with_capacity(n * c * oh * ow);
    for plane in x.chunks(h * w) {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut m = 0u8;
                for ky in 0..p.kernel[0] {
                    for kx in 0..p.kernel[1] {
                        let iy =
                            (oy * p.stride[0] + ky * p.dilation[0]) as i64 - p.padding[0] as i64;
                        let ix =
                            (ox * p.stride[1] + kx * p.dilation[1]) as i64 - p.padding[1] as i64;
                        let (iy, ix) = if clamp_taps {
                            (iy.clamp(0, h as i64 - 1), ix.clamp(0, w as i64 - 1))
                        } else if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                            continue;
                        } else {
                            (iy, ix)
                        };
                        m = m.max(plane[iy as usize * w + ix as usize]);
                    }
                }
                y.push(m);
            }
        }
    }
    Ok((y, vec![n, c, oh, ow]))
}

/// `avg_pool2d` options beyond the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvgPoolOpts {
    pub count_include_pad: bool,
    pub divisor_override: Option<usize>,
}

/// Which of PyTorch's average-pooling kernels a call lands in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AvgPath {
    /// QNNPACK average pooling: divisor always kh*kw, `m = s / (s * kh*kw)`.
    Qnnpack,
    /// ATen's channels-last kernel (C == 1 or H == W == 1).
    Nhwc,
    /// ATen's NCHW kernel: the zero point is added before rounding.
    Nchw,
}

/// Channels below this take the NHWC average kernel's vector path (AVX512 build).
pub const AVG_NHWC_SPLIT: usize = 16;

pub fn avg_pool2d_path(engine: Requant, ceil_mode: bool, c: usize, h: usize, w: usize) -> AvgPath {
    if engine == Requant::Qnnpack && !ceil_mode {
        AvgPath::Qnnpack
    } else if c == 1 || (h == 1 && w == 1) {
        AvgPath::Nhwc
    } else {
        AvgPath::Nchw
    }
}

/// One average-pool window's `acc = Σ(q - zp)` over valid taps, the valid tap
/// count and the window size counting padding.
fn avg_window(
    plane: &[u8],
    h: usize,
    w: usize,
    zp: i32,
    p: &Pool2d,
    oy: usize,
    ox: usize,
) -> (i32, usize, usize) {
    let hs = (oy * p.stride[0]) as i64 - p.padding[0] as i64;
    let ws = (ox * p.stride[1]) as i64 - p.padding[1] as i64;
    let he = (hs + p.kernel[0] as i64).min(h as i64 + p.padding[0] as i64);
    let we = (ws + p.kernel[1] as i64).min(w as i64 + p.padding[1] as i64);
    let pool_size = ((he - hs) * (we - ws)) as usize;
    let (hs, ws, he, we) = (hs.max(0), ws.max(0), he.min(h as i64), we.min(w as i64));
    let mut acc = 0i32;
    let mut size = 0usize;
    for iy in hs..he {
        for ix in ws..we {
            acc += plane[iy as usize * w + ix as usize] as i32 - zp;
            size += 1;
        }
    }
    (acc, size, pool_size)
}

/// The multiplier `s / (s * f32(k))` of QNNPACK's average pooling.
pub fn qnnpack_avg_mult(scale: f32, k: usize) -> f32 {
    scale / (scale * k as f32)
}

/// `avg_pool2d` (output qparams = input's), following the three kernels
/// PyTorch picks between (see [`AvgPath`]).
pub fn avg_pool2d(
    engine: Requant,
    x: &[u8],
    shape: &[usize],
    q: QParams,
    p: &Pool2d,
    o: &AvgPoolOpts,
) -> Result<(Vec<u8>, Vec<usize>)> {
    let (n, c, h, w) = dims4(shape, "avg_pool2d")?;
    check_len(x, shape, "avg_pool2d")?;
    if p.dilation != [1, 1] {
        return Err(Error::config("avg_pool2d", "dilation must be 1"));
    }
    if o.divisor_override == Some(0) {
        return Err(Error::config("avg_pool2d", "divisor_override must be >= 1"));
    }
    let (oh, ow) = p.out_hw(h, w)?;
    let path = avg_pool2d_path(engine, p.ceil_mode, c, h, w);
    let zp = q.zero_point;
    let mut y = Vec::with_capacity(n * c * oh * ow);
    for (pi, plane) in x.chunks(h * w).enumerate() {
        let ch = pi % c;
        for oy in 0..oh {
            for ox in 0..ow {
                let (acc, size, pool_size) = avg_window(plane, h, w, zp, p, oy, ox);
                let df = o.divisor_override.unwrap_or(if o.count_include_pad {
                    pool_size
                } else {
                    size
                });
                let v = match path {
                    AvgPath::Qnnpack => {
                        let m = qnnpack_avg_mult(q.scale, p.kernel[0] * p.kernel[1]);
                        (acc as f32 * m).round_ties_even() as i32 + zp
                    }
                    AvgPath::Nhwc => {
                        let m = 1.0 / df as f32;
                        let r = if ch < c - c % AVG_NHWC_SPLIT {
                            acc as f32 * m
                        } else {
                            acc as f32 * (1.0 / (1.0 / m))
                        };
                        r.round_ties_even() as i32 + zp
                    }
                    AvgPath::Nchw => {
                        let m = (1.0f64 / df as f64) as f32;
                        (acc as f32 * m + zp as f32).round_ties_even() as i32
                    }
                };
                y.push(v.clamp(0, 255) as u8);
            }
        }
    }
    Ok((y, vec![n, c, oh, ow]))
}

/// Row (or column) `i` of an adaptive pool's windows: `[floor(i*L/o), ceil((i+1)*L/o))`.
pub fn adaptive_window(i: usize, len: usize, out: usize) -> (usize, usize) {
    (i * len / out, ((i + 1) * len).div_ceil(out))
}

/// Which of PyTorch's kernels an `adaptive_avg_pool2d` call lands in.
pub fn adaptive_path(
    engine: Requant,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
) -> AvgPath {
    if engine == Requant::Qnnpack && h % oh == 0 && w % ow == 0 && !(oh == h && ow == w) {
        AvgPath::Qnnpack
    } else if c == 1 || (h == 1 && w == 1) {
        AvgPath::Nhwc
    } else {
        AvgPath::Nchw
    }
}

/// `adaptive_avg_pool2d` to `[oh, ow]` (output qparams = input's).
pub fn adaptive_avg_pool2d(
    engine: Requant,
    x: &[u8],
    shape: &[usize],
    q: QParams,
    out: [usize; 2],
) -> Result<(Vec<u8>, Vec<usize>)> {
    let (n, c, h, w) = dims4(shape, "adaptive_avg_pool2d")?;
    check_len(x, shape, "adaptive_avg_pool2d")?;
    let [oh, ow] = out;
    if oh == 0 || ow == 0 {
        return Err(Error::config(
            "adaptive_avg_pool2d",
            format!("output size {out:?} must be >= 1"),
        ));
    }
    let path = adaptive_path(engine, c, h, w, oh, ow);
    if path == AvgPath::Qnnpack {
        let p = Pool2d {
            kernel: [h / oh, w / ow],
            stride: [h / oh, w / ow],
            padding: [0, 0],
            dilation: [1, 1],
            ceil_mode: false,
        };
        return avg_pool2d(
            engine,
            x,
            shape,
            q,
            &p,
            &AvgPoolOpts {
                count_include_pad: true,
                divisor_override: None,
            },
        );
    }
    let zp = q.zero_point;
    let mut y = Vec::with_capacity(n * c * oh * ow);
    for plane in x.chunks(h * w) {
        for oy in 0..oh {
            let (hs, he) = adaptive_window(oy, h, oh);
            for ox in 0..ow {
                let (ws, we) = adaptive_window(ox, w, ow);
                let (kh, kw) = (he - hs, we - ws);
                let sum: i32 = (hs..he)
                    .flat_map(|iy| (ws..we).map(move |ix| (iy, ix)))
                    .map(|(iy, ix)| plane[iy * w + ix] as i32)
                    .sum();
                let v = match path {
                    AvgPath::Nhwc => {
                        let m = 1.0 / (kh * kw) as f32;
                        let acc = sum - zp * (kh * kw) as i32;
                        (acc as f32 * (1.0 / (1.0 / m))).round_ties_even() as i32 + zp
                    }
                    _ => {
                        let r = (1.0 / kh as f32) / kw as f32;
                        (sum as f32 * r).round_ties_even() as i32
                    }
                };
                y.push(v.clamp(0, 255) as u8);
            }
        }
    }
    Ok((y, vec![n, c, oh, ow]))
}

/// Round-half-to-even of `sum / n` for non-negative integers, exactly (what
/// `rint(f32(sum) / f32(n))` gives while `sum < 2^24` and `n < 2^15`).
pub fn div_round_even(sum: u32, n: u32) -> u32 {
    let t = 2 * sum as u64 + n as u64;
    let d = 2 * n as u64;
    let mut y = t / d;
    if t % d == 0 && y % 2 == 1 {
        y -= 1;
    }
    y as u32
}

/// `mean` over the spatial dimensions `[2, 3]` (output qparams = input's);
/// the output is `[N, C]` (the caller reshapes for `keepdim`).
pub fn mean_hw(engine: Requant, x: &[u8], shape: &[usize], q: QParams) -> Result<Vec<u8>> {
    let (_, _, h, w) = dims4(shape, "mean")?;
    check_len(x, shape, "mean")?;
    let hw = h * w;
    Ok(x.chunks(hw)
        .map(|plane| match engine {
            Requant::Qnnpack => {
                let m = qnnpack_avg_mult(q.scale, hw);
                let acc: i32 = plane.iter().map(|&v| v as i32 - q.zero_point).sum();
                ((acc as f32 * m).round_ties_even() as i32 + q.zero_point).clamp(0, 255) as u8
            }
            Requant::Fbgemm => {
                let sum: u32 = plane.iter().map(|&v| v as u32).sum();
                (sum as f32 / hw as f32).round_ties_even().clamp(0.0, 255.0) as u8
            }
        })
        .collect())
}

/// `relu` on a quantized tensor: `max(q, zp)`.
pub fn relu_table(q: QParams) -> [u8; 256] {
    std::array::from_fn(|v| (v as i32).max(q.zero_point) as u8)
}

/// `hardtanh(min_val, max_val)` (and `relu6` = hardtanh(0, 6)): clamp between
/// the bounds quantized with the input's qparams.
pub fn hardtanh_table(q: QParams, min_val: f32, max_val: f32) -> Result<[u8; 256]> {
    if !(min_val.is_finite() && max_val.is_finite()) || min_val > max_val {
        return Err(Error::config(
            "hardtanh",
            format!("min_val {min_val} and max_val {max_val} must be finite with min <= max"),
        ));
    }
    let inv = 1.0 / q.scale;
    let lo = quantize_inv(min_val, inv, q.zero_point);
    let hi = quantize_inv(max_val, inv, q.zero_point);
    Ok(std::array::from_fn(|v| (v as u8).max(lo).min(hi)))
}

fn hardswish_f(x: f32) -> f32 {
    let t = (x + 3.0).max(0.0).min(6.0);
    (x * t) / 6.0
}

/// `hardswish` with output qparams `out`, as tables over the input byte:
/// `(vector-path table, scalar-path table)`. Under qnnpack both are QNNPACK's
/// lookup table; under fbgemm elements `i < n_vec(n)` use the first.
pub fn hardswish_tables(engine: Requant, q: QParams, out: QParams) -> ([u8; 256], [u8; 256]) {
    let inv = 1.0 / out.scale;
    match engine {
        Requant::Fbgemm => (
            std::array::from_fn(|v| {
                quantize_inv(hardswish_f(dequant_vector(v as u8, q)), inv, out.zero_point)
            }),
            std::array::from_fn(|v| {
                quantize_inv(hardswish_f(dequant_scalar(v as u8, q)), inv, out.zero_point)
            }),
        ),
        Requant::Qnnpack => {
            let t = std::array::from_fn(|v| {
                let x = dequant_scalar(v as u8, q);
                let y = (hardswish_f(x) * inv + out.zero_point as f32).clamp(0.0, 255.0);
                y.round_ties_even() as u8
            });
            (t, t)
        }
    }
}

/// `quantize(dequantize(q))` to new qparams (scalar dequantize, rule Q): what
/// `cat` does to inputs with other qparams, and what a `dequantize` followed by
/// a `quantize` computes.
pub fn requantize_table(from: QParams, to: QParams) -> [u8; 256] {
    let inv = 1.0 / to.scale;
    std::array::from_fn(|v| quantize_inv(dequant_scalar(v as u8, from), inv, to.zero_point))
}

/// The same with the vector-path dequantize (ATen's channels-last cat).
pub fn requantize_table_vector(from: QParams, to: QParams) -> [u8; 256] {
    let inv = 1.0 / to.scale;
    std::array::from_fn(|v| quantize_inv(dequant_vector(v as u8, from), inv, to.zero_point))
}

/// Applies a table to every element, choosing the second table for flat
/// indices `>= split`.
pub fn apply_tables(
    x: &[u8],
    vec_table: &[u8; 256],
    tail_table: &[u8; 256],
    split: usize,
) -> Vec<u8> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            if i < split {
                vec_table[v as usize]
            } else {
                tail_table[v as usize]
            }
        })
        .collect()
}

/// Channels-last check ATen uses to pick its NHWC kernels: C == 1 or H == W == 1.
pub fn is_channels_last_trivially(shape: &[usize]) -> bool {
    match *shape {
        [_, c, h, w] => c == 1 || (h == 1 && w == 1),
        [_, _] => true,
        _ => false,
    }
}

/// Per-input tables of `cat` along channels: `(table for channels below the
/// split, table for the rest, split)`. In ATen's channels-last path inputs with
/// the output's qparams are copied and the first `C - C % 8` channels use the
/// vector dequantize; otherwise every element is dequantized (scalar) and
/// requantized.
pub fn cat_tables(
    shapes: &[Vec<usize>],
    qs: &[QParams],
    out: QParams,
) -> Vec<([u8; 256], [u8; 256], usize)> {
    let nhwc = shapes.iter().all(|s| is_channels_last_trivially(s));
    shapes
        .iter()
        .zip(qs)
        .map(|(s, &q)| {
            let c = s[1];
            if nhwc {
                if q == out {
                    let id = std::array::from_fn(|v| v as u8);
                    (id, id, c)
                } else {
                    (
                        requantize_table_vector(q, out),
                        requantize_table(q, out),
                        c - c % 8,
                    )
                }
            } else {
                let t = requantize_table(q, out);
                (t, t, c)
            }
        })
        .collect()
}

/// `cat` along dim 1 of NCHW (or `[N, K]`) tensors, requantized to `out`.
pub fn cat(inputs: &[(&[u8], &[usize], QParams)], out: QParams) -> Result<(Vec<u8>, Vec<usize>)> {
    if inputs.is_empty() {
        return Err(Error::config("cat", "needs at least one input"));
    }
    let first = inputs[0].1;
    for (i, (x, s, _)) in inputs.iter().enumerate() {
        check_len(x, s, "cat")?;
        if s.len() != first.len() || s[0] != first[0] || s[2..] != first[2..] {
            return Err(Error::shape(
                "cat",
                format!("input {i} has shape {s:?}, input 0 {first:?}: only dim 1 may differ"),
            ));
        }
    }
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|i| i.1.to_vec()).collect();
    let qs: Vec<QParams> = inputs.iter().map(|i| i.2).collect();
    let tables = cat_tables(&shapes, &qs, out);
    let n = first[0];
    let spatial: usize = first[2..].iter().product();
    let c_total: usize = shapes.iter().map(|s| s[1]).sum();
    let mut y = Vec::with_capacity(n * c_total * spatial);
    for b in 0..n {
        for ((x, s, _), (t_lo, t_hi, split)) in inputs.iter().zip(&tables) {
            let c = s[1];
            for ch in 0..c {
                let t = if ch < *split { t_lo } else { t_hi };
                let base = (b * c + ch) * spatial;
                y.extend(x[base..base + spatial].iter().map(|&v| t[v as usize]));
            }
        }
    }
    let mut shape = first.to_vec();
    shape[1] = c_total;
    Ok((y, shape))
}
