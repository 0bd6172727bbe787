//! `channel_lut`: one 256-entry table per channel. Output byte =
//! `tables[c * 256 + input byte]`, where `c` is the element's index along
//! dim 0 of the per-sample shape (`[C, H, W]`, `[C, H]` or `[C]`); stored
//! bytes throughout (uint8 images for qint8, see [`QParams`]).
//!
//! The exact form of every per-channel elementwise quantized op: PyTorch's
//! `quantized::batch_norm2d` / `batch_norm2d_relu` and `quantized::prelu`
//! (the exporter computes the tables with PyTorch itself; whether a channel
//! takes ATen's vector or scalar code depends on the channel alone, so the
//! tables absorb that split), and ONNX Runtime's float `BatchNormalization`
//! or `Add`/`Sub`/`Mul`/`Div` with a constant between a DequantizeLinear and a
//! QuantizeLinear ([`ort_channel_tables`]).

mod gpu;

#[doc(hidden)]
pub use gpu::ChannelLutParams;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::{DType, TensorInfo, Value};
use crate::quant::{QParams, Requant};

use super::{quantized, Attrs, CpuIo, FileOp, Lowered, NodeWriter, Op, OpKind, ParseCx, Signature};

pub(crate) const FILE_OPS: &[FileOp] = &[FileOp {
    name: "channel_lut",
    attributes: &["scale", "zero_point", "signed"],
    parse: parse_channel_lut,
}];

fn parse_channel_lut(a: &Attrs<'_>, cx: &ParseCx<'_>) -> Result<Op> {
    let x = cx
        .inputs
        .first()
        .ok_or_else(|| Error::Model("needs an input".into()))?;
    let c = *x.shape.first().ok_or_else(|| {
        Error::shape(
            "channel_lut",
            "input is a scalar per sample; the channel is dim 0 of the per-sample shape",
        )
    })?;
    let name = format!("{}.tables", cx.node);
    let (bytes, _) = cx
        .tensors
        .get(&name, safetensors::Dtype::U8, Some(&[c, 256]))?;
    Ok(Op::ChannelLut {
        tables: Arc::new(bytes),
        out: a.qparams_signed()?,
    })
}

/// The `channel_lut` op's view of [`Op::ChannelLut`].
pub(crate) struct ChannelLut<'a> {
    pub tables: &'a Arc<Vec<u8>>,
    pub out: QParams,
}

impl<'a> OpKind<'a> for ChannelLut<'a> {
    fn name(&self) -> &'static str {
        "channel_lut"
    }
    fn infer(&self, _: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo> {
        let x = ins[0];
        quantized(x)?;
        self.out.validate("channel_lut output")?;
        let c = *x.shape.first().ok_or_else(|| {
            Error::shape(
                "channel_lut",
                "input is a scalar per sample; the channel is dim 0 of the per-sample shape",
            )
        })?;
        if x.shape.len() > 3 {
            return Err(Error::shape(
                "channel_lut",
                format!(
                    "input shape {:?}: a per-sample shape has 1 to 3 dimensions",
                    x.shape
                ),
            ));
        }
        if c.checked_mul(256) != Some(self.tables.len()) {
            return Err(Error::shape(
                "channel_lut tables",
                format!(
                    "{} bytes for an input of {c} channels (shape {:?}): {c} x 256 expected",
                    self.tables.len(),
                    x.shape
                ),
            ));
        }
        Ok(TensorInfo {
            shape: x.shape.clone(),
            dtype: DType::QUInt8(self.out),
        })
    }
    fn write(&self, w: &mut NodeWriter) {
        w.put_qparams_signed(self.out);
        let name = format!("{}.tables", w.node);
        let c = self.tables.len() / 256;
        w.tensors.push((
            name,
            safetensors::Dtype::U8,
            vec![c, 256],
            self.tables.to_vec(),
        ));
    }
    fn lower(&self, sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
        let shape = &sig.inputs[0].shape;
        Ok(Box::new(ChannelLutLowered {
            tables: Arc::clone(self.tables),
            channels: shape[0],
            plane: shape[1..].iter().product(),
        }))
    }
}

/// The tables and the geometry the CPU loop needs.
pub(crate) struct ChannelLutLowered {
    pub tables: Arc<Vec<u8>>,
    pub channels: usize,
    /// Elements per channel of one sample.
    pub plane: usize,
}

impl Lowered for ChannelLutLowered {
    fn run_cpu(&self, io: &CpuIo<'_>) -> Result<Value> {
        let (x, _, _) = io.q(0)?;
        io.q_out(apply_channel_tables(
            x,
            &self.tables,
            self.channels,
            self.plane,
        ))
    }
}

/// Applies per-channel tables to batched NCHW-ordered bytes: element `i` is
/// in channel `(i / plane) % channels`.
pub fn apply_channel_tables(x: &[u8], tables: &[u8], channels: usize, plane: usize) -> Vec<u8> {
    let plane = plane.max(1);
    x.chunks(plane)
        .enumerate()
        .flat_map(|(k, run)| {
            let t = &tables[(k % channels) * 256..][..256];
            run.iter().map(move |&v| t[v as usize])
        })
        .collect()
}

/// The `channel_lut` tables of a float per-channel function ONNX Runtime runs
/// between a DequantizeLinear with qparams `x` and a QuantizeLinear with
/// qparams `y` (either may be qint8; stored bytes in and out), optionally
/// followed by a float `Relu`: per channel `c < channels` and byte,
/// `v = f(c, f32(q - zp_x) * s_x)`, `relu`: `max(v, 0)`, then QuantizeLinear
/// `sat(rint(v / s_y) + zp_y)` (a true division, ties to even). `f` is ORT's
/// f32 arithmetic ([`crate::onnx::ChannelFn::apply`]: `BatchNormalization`,
/// `Add`/`Sub`/`Mul`/`Div` with a constant).
pub fn ort_channel_tables(
    x: QParams,
    y: QParams,
    channels: usize,
    relu: bool,
    f: impl Fn(usize, f32) -> f32,
) -> Vec<u8> {
    let (lo, hi) = if y.signed {
        (-128.0, 127.0)
    } else {
        (0.0, 255.0)
    };
    let mut t = Vec::with_capacity(channels * 256);
    for c in 0..channels {
        for byte in 0..256i32 {
            let q = byte - x.offset();
            let d = (q - x.true_zero_point()) as f32 * x.scale;
            let mut v = f(c, d);
            if relu {
                v = v.max(0.0);
            }
            let r = ((v / y.scale).round_ties_even() + y.true_zero_point() as f32).clamp(lo, hi);
            t.push((r as i32 + y.offset()) as u8);
        }
    }
    t
}

/// A quantized `BatchNorm2d`'s parameters (PyTorch's float32 buffers).
#[derive(Clone, Debug)]
pub struct BatchNormParams<'a> {
    /// `weight` (gamma), per channel.
    pub weight: &'a [f32],
    /// `bias` (beta), per channel.
    pub bias: &'a [f32],
    /// `running_mean`, per channel.
    pub mean: &'a [f32],
    /// `running_var`, per channel.
    pub var: &'a [f32],
    /// `eps` (a double in PyTorch).
    pub eps: f64,
}

/// The `channel_lut` tables of PyTorch's `quantized::batch_norm2d` (`relu`:
/// `batch_norm2d_relu`), every engine (ATen's kernel; quint8 in and out),
/// with input qparams `x` and output qparams `y`. ATen folds per channel
/// (`compute_fused_params`, doubles where the scales enter):
/// `inv = f32(1.0 / f64(sqrt(var + f32(eps))))`,
/// `alpha = f32(f64(inv * weight) * (f64(s_x) / f64(s_y)))`,
/// `beta = f32(f64(bias - mean * inv * weight) / f64(s_y))`, then per byte
/// `q = clamp(rint(fma(alpha, f32(byte - zp_x), beta)) + zp_y, 0, 255)`, and
/// `relu`: `max(q, zp_y)`. Its vector body and its scalar channel tail both
/// compute the fused multiply-add (vectors: `tests/data/chanlut`).
pub fn pytorch_batch_norm_tables(
    x: QParams,
    y: QParams,
    p: &BatchNormParams<'_>,
    relu: bool,
) -> Vec<u8> {
    let ratio = x.scale as f64 / y.scale as f64;
    let mut t = Vec::with_capacity(p.weight.len() * 256);
    for c in 0..p.weight.len() {
        let inv = (1.0 / ((p.var[c] + p.eps as f32).sqrt() as f64)) as f32;
        let alpha = ((inv * p.weight[c]) as f64 * ratio) as f32;
        let beta = ((p.bias[c] - p.mean[c] * inv * p.weight[c]) as f64 / y.scale as f64) as f32;
        for b in 0..256i32 {
            let v = alpha.mul_add((b - x.zero_point) as f32, beta);
            let mut q = v.round_ties_even() as i64 + y.zero_point as i64;
            if relu {
                q = q.max(y.zero_point as i64);
            }
            t.push(q.clamp(0, 255) as u8);
        }
    }
    t
}

/// The `channel_lut` tables of PyTorch's `quantized::prelu` (every engine;
/// quint8 in and out) of `channels` channels with quint8 weight bytes `w`
/// (one per channel, or one for all) quantized with `(w_scale, w_zp)`.
/// ATen: `m = s_x * w_scale * (1 / s_y)` (f32), `one = quantize(1.0)` with
/// the weight's qparams, per byte `pos = max(q, zp_x) - zp_x`,
/// `neg = min(q, zp_x) - zp_x`, `acc = pos * (one - w_zp) + neg * (w - w_zp)`
/// (integers), `clamp(rint(f32(acc) * m) + zp_y, 0, 255)`: its vector and
/// scalar code agree.
pub fn pytorch_prelu_tables(
    x: QParams,
    y: QParams,
    w: &[u8],
    w_scale: f32,
    w_zp: i32,
    channels: usize,
) -> Vec<u8> {
    let m = x.scale * w_scale * (1.0 / y.scale);
    let one = crate::quant::quantize_with_inv(1.0, 1.0 / w_scale, w_zp) as i32 - w_zp;
    let mut t = Vec::with_capacity(channels * 256);
    for c in 0..channels {
        let wc = w[if w.len() == 1 { 0 } else { c }] as i32 - w_zp;
        for b in 0..256i32 {
            let pos = b.max(x.zero_point) - x.zero_point;
            let neg = b.min(x.zero_point) - x.zero_point;
            let acc = pos * one + neg * wc;
            let q = (acc as f32 * m).round_ties_even() as i64 + y.zero_point as i64;
            t.push(q.clamp(0, 255) as u8);
        }
    }
    t
}
