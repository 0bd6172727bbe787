//! `qsoftmax`: PyTorch's quantized softmax (`quantized::softmax`, the
//! `nnq.Softmax` module that FX `convert_fx` and eager `convert` produce),
//! exact for the two code paths of ATen's `qsoftmax`
//! (`aten/src/ATen/native/quantized/cpu/qsoftmax.cpp`, torch 2.15):
//!
//! - **qnnpack** (engine qnnpack, quint8 input, output qparams exactly
//!   (1/256, 0), which FX's fixed-qparams observer gives): QNNPACK's integer
//!   `softargmax` ([`qnnpack_table`], [`qnnpack_row`]), any dim, any layout.
//! - **aten** (every other case): `dequantize -> at::softmax(dim) ->
//!   quantize_per_tensor`, reproduced for `dim` = the last dimension only
//!   (ATen's `_vec_softmax_lastdim` with AVX-512's 16 lanes, [`aten_row`]).
//!   Over another dim ATen's `_vec_softmax` runs glibc's `expf` on positions
//!   chosen by its thread split; its shape check (`infer`) refuses it.
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
    attributes: &["dim", "scale", "zero_point", "dtype"],
    parse: |a: &Attrs<'_>, _: &ParseCx<'_>| {
        Ok(Op::QSoftmax {
            dim: a.usize("dim")?,
            out: a.qparams()?,
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
    let d: Vec<f32> = (0..256)
        .map(|b| super::dequant_scalar(b as u8, x))
        .collect();
    let mut t = vec![0f32; 65536];
    for m in 0..256 {
        for b in 0..=m {
            t[m * 256 + b] = sleef_expf_u10(d[b] - d[m]);
        }
    }
    t
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
        if softmax_rule(engine, q, self.out)? == SoftmaxRule::Aten && self.dim + 1 != x.shape.len()
        {
            return Err(Error::config(
                "qsoftmax",
                format!(
                    "dim {} of {:?} is not the last: ATen's float softmax over another dim \
                     runs glibc's expf on elements its thread split picks, not reproducible \
                     (engine {engine:?}; only qnnpack with output qparams (1/256, 0) is exact there)",
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
    }
    fn lower(&self, sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
        let x = sig.inputs[0];
        let q = sig.q_in(0)?;
        let rule = softmax_rule(sig.engine, q, self.out)?;
        let (c, h, w) = crate::layout::chw(&x.shape);
        let len = [c, h, w][self.dim];
        let tab: Vec<u32> = match rule {
            SoftmaxRule::Qnnpack => qnnpack_table(len, q.scale).to_vec(),
            SoftmaxRule::Aten => aten_exp_table(q).iter().map(|v| v.to_bits()).collect(),
        };
        Ok(Box::new(QSoftmaxLowered {
            rule,
            dim: self.dim,
            chw: [c, h, w],
            out: self.out,
            tab,
        }))
    }
}

/// The lowered constants: the rule, the geometry and the table (QNNPACK's
/// 256 u32, or ATen's 65,536 f32 bit patterns).
pub(crate) struct QSoftmaxLowered {
    pub rule: SoftmaxRule,
    pub dim: usize,
    pub chw: [usize; 3],
    pub out: QParams,
    pub tab: Vec<u32>,
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
