//! `qsoftmax`: PyTorch's quantized softmax (`quantized::softmax`, the
//! `nnq.Softmax` module that FX `convert_fx` and eager `convert` produce),
//! exact for the two code paths of ATen's `qsoftmax`
//! (`aten/src/ATen/native/quantized/cpu/qsoftmax.cpp`, torch 2.15):
//!
//! - **qnnpack** (engine qnnpack, quint8 input, output qparams exactly
//!   (1/256, 0), which FX's fixed-qparams observer gives): QNNPACK's integer
//!   `softargmax` ([`qnnpack_table`], [`qnnpack_row`]), any dim, any layout.
//! - **aten** (every other case): `dequantize -> at::softmax(dim) ->
//!   quantize_per_tensor`. Over the last dim ATen's `_vec_softmax_lastdim`
//!   with AVX-512's 16 lanes ([`aten_row`]). Over another dim ATen's
//!   `_vec_softmax`: one position (all indices but `dim`) at a time, 16
//!   positions per vector step with Sleef's `expf`, the rest one by one with
//!   glibc's `expf` ([`glibc_expf`]); which positions take which is decided by
//!   ATen's thread split ([`aten_scalar_position`]), so the op records the
//!   thread count PyTorch ran with (`threads`; [`aten_dim_floats`]).
//!
//! Rules: `tests/data/ops/README.md` ("qsoftmax"). The CPU loop here and
//! `qsoftmax.wgsl` read the same lowered constants.

mod gpu;

#[doc(hidden)]
pub use gpu::QSoftmaxParams;

use serde_json::json;

use crate::error::{Error, Result};
use crate::model::{DType, TensorInfo, Value};
use crate::quant::{QParams, Requant};

use super::{quantized, Attrs, CpuIo, FileOp, Lowered, NodeWriter, Op, OpKind, ParseCx, Signature};

pub(crate) const FILE_OPS: &[FileOp] = &[FileOp {
    name: "qsoftmax",
    attributes: &["dim", "scale", "zero_point", "dtype", "threads"],
    parse: |a: &Attrs<'_>, _: &ParseCx<'_>| {
        let threads = match a.opt("threads") {
            None => None,
            Some(_) => match a.usize("threads")? {
                0 => {
                    return Err(Error::Model(
                        "qsoftmax: \"threads\" must be at least 1, got 0".into(),
                    ))
                }
                t => Some(t),
            },
        };
        Ok(Op::QSoftmax {
            dim: a.usize("dim")?,
            out: a.qparams()?,
            threads,
        })
    },
}];

/// Which of ATen's two code paths a `quantized::softmax` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftmaxRule {
    /// QNNPACK's integer `softargmax`.
    Qnnpack,
    /// dequantize -> float softmax over the last dim -> quantize.
    Aten,
}

/// The rule PyTorch runs for `engine`, input qparams `x` and output `y`
/// (`qsoftmax`'s dispatch: QNNPACK when the engine is qnnpack, the input
/// quint8 and the output qparams exactly (2^-8, 0)).
pub fn softmax_rule(engine: Requant, x: QParams, y: QParams) -> Result<SoftmaxRule> {
    match engine {
        Requant::Qnnpack
            if !x.signed && !y.signed && y.scale == 2f32.powi(-8) && y.zero_point == 0 =>
        {
            Ok(SoftmaxRule::Qnnpack)
        }
        Requant::Qnnpack | Requant::Fbgemm | Requant::Onednn => Ok(SoftmaxRule::Aten),
        e => Err(Error::config(
            "qsoftmax",
            format!("PyTorch's quantized softmax has no rule for engine {e:?}"),
        )),
    }
}

/// QNNPACK's `softargmax` table for `channels` elements a row and input
/// scale `s`: `t[i] = lrint(min(u32::MAX / channels, 8388607) *
/// exp((i - 255) * s))` in f64 (`pytorch_qnnp_create_softargmax_nc_q8`).
pub fn qnnpack_table(channels: usize, s: f32) -> [u32; 256] {
    let qscale = (u32::MAX as f64 / channels as f64).min(8388607.0);
    let mut t = [0u32; 256];
    for (i, v) in t.iter_mut().enumerate() {
        let e = qscale * ((i as f64 - 255.0) * s as f64).exp();
        *v = e.round_ties_even() as u32;
    }
    t
}

/// One row through QNNPACK's `u8rmax` + `u8lut32norm` (scalar, what x86
/// runs): `m` the row's max byte, `t'[x] = t[x + 255 - m]`, `sum = Σ t'[x]`
/// (u32, wrapping), `y = min((t'[x] << 8 + sum >> 1) / sum, 255)`.
pub fn qnnpack_row(t: &[u32; 256], x: &[u8], y: &mut [u8]) {
    let m = x.iter().copied().max().unwrap_or(0) as usize;
    let adj = 255 - m;
    let sum = x
        .iter()
        .fold(0u32, |s, &v| s.wrapping_add(t[v as usize + adj]));
    let sum = sum.max(1);
    let r = sum >> 1;
    for (o, &v) in y.iter_mut().zip(x) {
        let q = (t[v as usize + adj] << 8).wrapping_add(r) / sum;
        *o = q.min(255) as u8;
    }
}

/// Sleef's `expf_u10` (`Sleef_expf16_u10`, what ATen's
/// `Vectorized<float>::exp` calls on AVX-512 and AVX2), every multiply-add
/// a true fused one. The constants are Sleef's f32 values as bit patterns
/// (`L2Uf` 0.693145751953125, `L2Lf` 1.428606765e-6, then the polynomial's
/// 1.98527617e-4, 1.39304355e-3, 8.33336078e-3, 4.16664854e-2, 0.166666672).
pub fn sleef_expf_u10(d: f32) -> f32 {
    let q = (d * std::f32::consts::LOG2_E).round_ties_even() as i32;
    let qf = q as f32;
    let mut s = qf.mul_add(-f32::from_bits(0x3f31_7200), d);
    s = qf.mul_add(-f32::from_bits(0x35bf_be8e), s);
    let mut u = f32::from_bits(0x3950_2bda);
    u = u.mul_add(s, f32::from_bits(0x3ab6_96c9));
    u = u.mul_add(s, f32::from_bits(0x3c08_88a6));
    u = u.mul_add(s, f32::from_bits(0x3d2a_aa7a));
    u = u.mul_add(s, f32::from_bits(0x3e2a_aaab));
    u = u.mul_add(s, 0.5);
    u = 1.0 + (s * s).mul_add(u, s);
    // vldexp2: u * 2^(q >> 1) * 2^(q - (q >> 1))
    let a = q >> 1;
    let b = q - a;
    let pow2 = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    u = u * pow2(a) * pow2(b);
    if d < -104.0 {
        u = 0.0;
    }
    if d > 100.0 {
        u = f32::INFINITY;
    }
    u
}

/// ATen's exp table for input qparams `x`: entry `m * 256 + b` is
/// `sleef_expf_u10(D(b) - D(m))`, `D(q) = s * f32(q - zp)` (at::dequantize,
/// scalar form), for stored bytes `b <= m`.
pub fn aten_exp_table(x: QParams) -> Vec<f32> {
    exp_table(x, sleef_expf_u10)
}

/// glibc's `expf` (glibc 2.28 and later: `sysdeps/ieee754/flt-32/e_expf.c`,
/// from Arm's optimized-routines) as x86-64 runs it on a CPU with FMA (the
/// `__expf_fma` variant, which GCC compiles with every multiply-add
/// contracted, including `InvLn2N * x + SHIFT` and `InvLn2N * x - kd`).
/// Checked against glibc 2.36's `expf` on every f32 from -0 down to -110
/// (1,121,714,177 arguments, all equal); the SSE2 variant differs from it
/// at -0x1.f8cbb2p5 (0xc27c65d9) only in that range. Softmax only takes
/// arguments <= 0.
pub fn glibc_expf(x: f32) -> f32 {
    const TAB: [u64; 32] = [
        0x3ff0000000000000,
        0x3fefd9b0d3158574,
        0x3fefb5586cf9890f,
        0x3fef9301d0125b51,
        0x3fef72b83c7d517b,
        0x3fef54873168b9aa,
        0x3fef387a6e756238,
        0x3fef1e9df51fdee1,
        0x3fef06fe0a31b715,
        0x3feef1a7373aa9cb,
        0x3feedea64c123422,
        0x3feece086061892d,
        0x3feebfdad5362a27,
        0x3feeb42b569d4f82,
        0x3feeab07dd485429,
        0x3feea47eb03a5585,
        0x3feea09e667f3bcd,
        0x3fee9f75e8ec5f74,
        0x3feea11473eb0187,
        0x3feea589994cce13,
        0x3feeace5422aa0db,
        0x3feeb737b0cdc5e5,
        0x3feec49182a3f090,
        0x3feed503b23e255d,
        0x3feee89f995ad3ad,
        0x3feeff76f2fb5e47,
        0x3fef199bdd85529c,
        0x3fef3720dcef9069,
        0x3fef5818dcfba487,
        0x3fef7c97337b9b5f,
        0x3fefa4afa2a490da,
        0x3fefd0765b6e4540,
    ];
    const N: f64 = 32.0;
    let abstop = (x.to_bits() >> 20) & 0x7ff;
    if abstop >= 0x42b {
        // |x| >= 88 or NaN
        if x == f32::NEG_INFINITY {
            return 0.0;
        }
        if abstop >= 0x7f8 {
            return x + x;
        }
        if x > f32::from_bits(0x42b1_7217) {
            return f32::INFINITY;
        }
        if x < f32::from_bits(0xc2cf_f1b4) {
            return 0.0;
        }
    }
    let invln2n = f64::from_bits(0x3ff7_1547_652b_82fe) * N;
    let c0 = f64::from_bits(0x3fac_6af8_4b91_2394) / N / N / N;
    let c1 = f64::from_bits(0x3fce_bfce_50fa_c4f3) / N / N;
    let c2 = f64::from_bits(0x3fe6_2e42_ff0c_52d6) / N;
    let shift = f64::from_bits(0x4338_0000_0000_0000);
    let xd = x as f64;
    let kd = invln2n.mul_add(xd, shift);
    let ki = kd.to_bits();
    let r = invln2n.mul_add(xd, -(kd - shift));
    let s = f64::from_bits(TAB[(ki % 32) as usize].wrapping_add(ki << 47));
    let z = c0.mul_add(r, c1);
    let y = c2.mul_add(r, 1.0);
    let y = z.mul_add(r * r, y);
    (y * s) as f32
}

/// [`aten_exp_table`] with glibc's `expf` ([`glibc_expf`]): ATen's scalar
/// tail of `_vec_softmax`.
pub fn aten_glibc_exp_table(x: QParams) -> Vec<f32> {
    exp_table(x, glibc_expf)
}

fn exp_table(x: QParams, exp: fn(f32) -> f32) -> Vec<f32> {
    let d: Vec<f32> = (0..256)
        .map(|b| super::dequant_scalar(b as u8, x))
        .collect();
    let mut t = vec![0f32; 65536];
    for m in 0..256 {
        for b in 0..=m {
            t[m * 256 + b] = exp(d[b] - d[m]);
        }
    }
    t
}

/// Whether ATen's `_vec_softmax` computes position `pos` (of `total` =
/// outer * inner, `pos = outer_index * inner + inner_index`) in its scalar
/// tail (glibc's `expf`) rather than its 16-wide vector step (Sleef's), when
/// PyTorch runs with `threads` intra-op threads. `at::parallel_for` over
/// `[0, total)` gives thread `t` the range `[t * chunk, (t + 1) * chunk)`,
/// `chunk = ceil(total / min(threads, total))` (its grain size is below 16
/// for every dim size: measured, and any grain below 16 gives the same
/// split); each thread walks its range taking 16 positions at once while
/// they stay inside both the row of `inner` positions and its range, the
/// rest of that row (or of its range) one by one.
pub fn aten_scalar_position(pos: usize, total: usize, inner: usize, threads: usize) -> bool {
    const L: usize = ATEN_LANES;
    let (b, e) = if threads > 1 && total > 1 {
        let nt = threads.min(total);
        let chunk = total.div_ceil(nt);
        let b = pos / chunk * chunk;
        (b, total.min(b + chunk))
    } else {
        (0, total)
    };
    let row = pos / inner;
    let start = if row == b / inner { b % inner } else { 0 };
    let j = pos % inner;
    let block = start + (j - start) / L * L;
    !(block + L <= inner && row * inner + block + L <= e)
}

/// ATen's `_vec_softmax` (a dim other than the last) on a quantized input:
/// `x` holds `outer * len * inner` bytes in NCHW order (the whole batch:
/// `outer` counts every sample), the softmax runs over the middle index.
/// Per position: `m` the max byte, `e_k = exp(D(x_k) - D(m))` with Sleef's
/// or glibc's `expf` ([`aten_scalar_position`]), `sum = 0 + e_0 + e_1 + ...`
/// in f32, `y_k = e_k / sum`. Returns the f32 softmax (what `at::softmax`
/// of the dequantized tensor gives).
pub fn aten_dim_floats(
    x: &[u8],
    q: QParams,
    [outer, len, inner]: [usize; 3],
    threads: usize,
) -> Vec<f32> {
    let sleef = aten_exp_table(q);
    let glibc = aten_glibc_exp_table(q);
    let mut y = vec![0f32; x.len()];
    aten_dim_run(&sleef, &glibc, x, [outer, len, inner], threads, |i, v| {
        y[i] = v
    });
    y
}

fn aten_dim_run(
    sleef: &[f32],
    glibc: &[f32],
    x: &[u8],
    [outer, len, inner]: [usize; 3],
    threads: usize,
    mut put: impl FnMut(usize, f32),
) {
    let total = outer * inner;
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * len + k) * inner + i;
            let m = (0..len).map(|k| x[at(k)]).max().unwrap_or(0) as usize;
            let t = if aten_scalar_position(o * inner + i, total, inner, threads) {
                glibc
            } else {
                sleef
            };
            let e = |k: usize| t[m * 256 + x[at(k)] as usize];
            let mut sum = 0f32;
            for k in 0..len {
                sum += e(k);
            }
            for k in 0..len {
                put(at(k), e(k) / sum);
            }
        }
    }
}

/// Lanes of ATen's `Vectorized<float>` in the AVX-512 build of the softmax
/// kernels (`REGISTER_DISPATCH` picks AVX-512 on CPUs that have it).
pub const ATEN_LANES: usize = 16;

/// `vec::reduce_all` of `+` over `e` with 16 lanes: fewer than 16 values
/// add up left to right; else lane `l` accumulates `e[l], e[l + 16], ...`
/// (the last partial vector only in its lanes) and the lanes fold as
/// AVX-512's shuffle tree: `v[i] += v[i ^ 8]`, `^ 4`, `^ 2`, `^ 1`, lane 0.
pub fn aten_sum(e: &[f32]) -> f32 {
    const L: usize = ATEN_LANES;
    if e.len() < L {
        let mut s = e.first().copied().unwrap_or(0.0);
        for &v in &e[1.min(e.len())..] {
            s += v;
        }
        return s;
    }
    let mut acc = [0f32; L];
    acc.copy_from_slice(&e[..L]);
    for (k, &v) in e[L..].iter().enumerate() {
        acc[k % L] += v;
    }
    let mut k = L / 2;
    while k >= 1 {
        let prev = acc;
        for (i, a) in acc.iter_mut().enumerate() {
            *a = prev[i] + prev[i ^ k];
        }
        k /= 2;
    }
    acc[0]
}

/// One row through ATen's float path: `m` the max byte, `e = table[m][b]`,
/// `r = 1 / aten_sum(e)`, `y = Q(e * r)` (rule Q with `inv = 1 / s_out`).
pub fn aten_row(table: &[f32], out: QParams, x: &[u8], e: &mut Vec<f32>, y: &mut [u8]) {
    let m = x.iter().copied().max().unwrap_or(0) as usize;
    e.clear();
    e.extend(x.iter().map(|&b| table[m * 256 + b as usize]));
    let r = 1.0f32 / aten_sum(e);
    let inv = 1.0f32 / out.scale;
    for (o, &v) in y.iter_mut().zip(e.iter()) {
        *o = super::quantize_inv(v * r, inv, out.zero_point);
    }
}

/// The `qsoftmax` op's view of [`Op::QSoftmax`].
pub(crate) struct QSoftmax {
    pub dim: usize,
    pub out: QParams,
    pub threads: Option<usize>,
}

impl<'a> OpKind<'a> for QSoftmax {
    fn name(&self) -> &'static str {
        "qsoftmax"
    }
    fn infer(&self, engine: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo> {
        let x = ins[0];
        let q = quantized(x)?;
        self.out.validate("qsoftmax output")?;
        if x.shape.is_empty() || x.shape.len() > 3 {
            return Err(Error::shape(
                "qsoftmax",
                format!(
                    "input shape {:?}: a per-sample shape of 1 to 3 dimensions is needed",
                    x.shape
                ),
            ));
        }
        if self.dim >= x.shape.len() {
            return Err(Error::config(
                "qsoftmax",
                format!(
                    "dim {} is not a dimension of the per-sample shape {:?}",
                    self.dim, x.shape
                ),
            ));
        }
        if softmax_rule(engine, q, self.out)? == SoftmaxRule::Aten
            && self.dim + 1 != x.shape.len()
            && self.threads.is_none()
        {
            return Err(Error::config(
                "qsoftmax",
                format!(
                    "dim {} of {:?} is not the last, and the node has no \"threads\": ATen's \
                     float softmax over another dim (engine {engine:?}) computes exp with Sleef or \
                     glibc by its thread split, so the file must record the thread count PyTorch \
                     ran with (torch.get_num_threads(); qfuse_export records it)",
                    self.dim, x.shape
                ),
            ));
        }
        Ok(TensorInfo {
            shape: x.shape.clone(),
            dtype: DType::QUInt8(self.out),
        })
    }
    fn write(&self, w: &mut NodeWriter) {
        w.put("dim", json!(self.dim));
        w.put_qparams(self.out);
        if let Some(t) = self.threads {
            w.put("threads", json!(t));
        }
    }
    fn lower(&self, sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
        let x = sig.inputs[0];
        let q = sig.q_in(0)?;
        let rule = softmax_rule(sig.engine, q, self.out)?;
        let (c, h, w) = crate::layout::chw(&x.shape);
        let len = [c, h, w][self.dim];
        let lastdim = self.dim + 1 == x.shape.len();
        let tab: Vec<u32> = match rule {
            SoftmaxRule::Qnnpack => qnnpack_table(len, q.scale).to_vec(),
            SoftmaxRule::Aten if lastdim => aten_exp_table(q).iter().map(|v| v.to_bits()).collect(),
            SoftmaxRule::Aten => aten_exp_table(q)
                .iter()
                .chain(aten_glibc_exp_table(q).iter())
                .map(|v| v.to_bits())
                .collect(),
        };
        Ok(Box::new(QSoftmaxLowered {
            rule,
            dim: self.dim,
            chw: [c, h, w],
            out: self.out,
            tab,
            lastdim,
            threads: self.threads.unwrap_or(1),
        }))
    }
}

/// The lowered constants: the rule, the geometry and the table (QNNPACK's
/// 256 u32, or ATen's 65,536 f32 bit patterns of Sleef's `expf`, followed
/// over a dim other than the last by 65,536 of glibc's).
pub(crate) struct QSoftmaxLowered {
    pub rule: SoftmaxRule,
    pub dim: usize,
    pub chw: [usize; 3],
    pub out: QParams,
    pub tab: Vec<u32>,
    /// `dim` is the last dimension of the per-sample shape.
    pub lastdim: bool,
    /// ATen's thread count (the aten rule over another dim).
    pub threads: usize,
}

impl Lowered for QSoftmaxLowered {
    fn run_cpu(&self, io: &CpuIo<'_>) -> Result<Value> {
        let (x, _, _) = io.q(0)?;
        let [c, h, w] = self.chw;
        let len = self.chw[self.dim];
        // NCHW order: a row's elements are `stride` apart
        let stride: usize = self.chw[self.dim + 1..].iter().product();
        let sample = c * h * w;
        let mut y = vec![0u8; x.len()];
        if self.rule == SoftmaxRule::Aten && !self.lastdim {
            let table: Vec<f32> = self.tab.iter().map(|&b| f32::from_bits(b)).collect();
            let (sleef, glibc) = table.split_at(65536);
            let outer = x.len() / (len * stride);
            let inv = 1.0f32 / self.out.scale;
            let zp = self.out.zero_point;
            aten_dim_run(
                sleef,
                glibc,
                x,
                [outer, len, stride],
                self.threads,
                |i, v| y[i] = super::quantize_inv(v, inv, zp),
            );
            return io.q_out(y);
        }
        let qt: [u32; 256] = if self.rule == SoftmaxRule::Qnnpack {
            self.tab[..256].try_into().expect("256 entries")
        } else {
            [0; 256]
        };
        let table: Vec<f32> = if self.rule == SoftmaxRule::Aten {
            self.tab.iter().map(|&b| f32::from_bits(b)).collect()
        } else {
            Vec::new()
        };
        let (mut row, mut out, mut e) = (vec![0u8; len], vec![0u8; len], Vec::new());
        for n in 0..x.len() / sample {
            let base = n * sample;
            let outer = sample / (len * stride);
            for o in 0..outer {
                for i in 0..stride {
                    let at = |k: usize| base + (o * len + k) * stride + i;
                    for (k, r) in row.iter_mut().enumerate() {
                        *r = x[at(k)];
                    }
                    match self.rule {
                        SoftmaxRule::Qnnpack => qnnpack_row(&qt, &row, &mut out),
                        SoftmaxRule::Aten => aten_row(&table, self.out, &row, &mut e, &mut out),
                    }
                    for (k, &v) in out.iter().enumerate() {
                        y[at(k)] = v;
                    }
                }
            }
        }
        io.q_out(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aten_sum_orders() {
        // fewer than 16: left to right
        let e = [1.0f32, 1e8, -1e8];
        assert_eq!(aten_sum(&e), 0.0);
        // 17 values: lane 0 takes e[0] + e[16], then the tree
        let mut e = vec![0f32; 17];
        e[0] = 1e8;
        e[16] = 1.0;
        e[8] = -1e8;
        assert_eq!(aten_sum(&e), 0.0);
        e[16] = 0.0;
        e[1] = 1.0;
        e[9] = 0.5;
        assert_eq!(aten_sum(&e), 1.5);
    }

    #[test]
    fn qnnpack_uniform_row() {
        let t = qnnpack_table(4, 0.1);
        let mut y = [0u8; 4];
        qnnpack_row(&t, &[7, 7, 7, 7], &mut y);
        assert_eq!(y, [64; 4]);
    }

    #[test]
    fn sleef_exp_small_values() {
        assert_eq!(sleef_expf_u10(0.0), 1.0);
        assert_eq!(sleef_expf_u10(-200.0), 0.0);
        let v = sleef_expf_u10(-1.0);
        assert!((v - (-1.0f32).exp()).abs() <= f32::EPSILON);
    }
}
