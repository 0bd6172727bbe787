//! Float ops after the last dequantize (`host_float`): they run on the host,
//! after the GPU's output is read back and dequantized (and in the CPU
//! reference, in order, like any op). They take and give float32, one input
//! each, and only model outputs may depend on them (the GPU has nothing of
//! theirs to read). ONNX models whose graph ends in float ops (a final
//! Softmax on the dequantized logits) get them; their arithmetic is plain f32
//! and not part of the bit-exact rules.

use serde_json::json;

use super::{Attrs, CpuIo, FileOp, Lowered, NodeWriter, Op, OpKind, ParseCx, Signature, Storage};
use crate::error::{Error, Result};
use crate::gpu::node::{GpuNode, Nothing, Upload, UploadCx};
use crate::model::{DType, TensorInfo, Value};
use crate::quant::Requant;

/// A float function of one tensor (per-sample shapes: no batch dimension).
#[derive(Clone, Debug, PartialEq)]
pub enum HostFn {
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, min), max)`.
    Clip {
        /// lower bound
        min: f32,
        /// upper bound
        max: f32,
    },
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// Softmax over the per-sample dims `axis..` (one dim, or all from it on),
    /// computed as `exp(x - max) / Σ exp(x - max)` in f32.
    Softmax {
        /// First per-sample dim of the reduction.
        axis: usize,
        /// Reduce over every dim from `axis` on (ONNX opset < 13), not `axis` alone.
        to_end: bool,
        /// `log` of the result (LogSoftmax).
        log: bool,
    },
    /// A reshape to this per-sample shape (flatten, squeeze, ...).
    Reshape(Vec<usize>),
    /// A linear layer whose **f32** output oneDNN writes (engine
    /// `inductor_x86`: a graph's last linear, read by no quantize), on the
    /// dequantized input: see [`OnednnLinear`]. Bit-exact, unlike the others.
    OnednnLinear(std::sync::Arc<OnednnLinear>),
    /// ONNX Runtime's QGemm with a float output (no `y_scale`), computed on
    /// the host from the dequantized input: see [`OrtLinear`]. Bit-exact.
    OrtLinear(std::sync::Arc<OrtLinear>),
    /// Inductor's global average of per-channel float values of the input
    /// bytes, then its quantize (engine `inductor_x86`: densenet's
    /// `dq -> batch_norm -> relu -> adaptive_avg_pool2d(1) -> q`): see
    /// [`TableMean`]. Bit-exact.
    TableMean(std::sync::Arc<TableMean>),
}

/// Inductor's C++ for `dq(a) -> (float elementwise ops) -> mean over H, W ->
/// quantize` (`cpp_fused_..._mean_quantize_per_tensor`): from the input's
/// dequantized values `x = f32(q - zp) * s` the bytes `q` are recovered
/// exactly, each pixel's f32 value is `table[c][q]` (the elementwise ops, as
/// the exporter computed them), per channel `S` is the f32 sum over the
/// pixels in row-major order from 0 (`((0 + t_0) + t_1) + ...`),
/// `m = f32(S / f32(H*W))`, `r = clamp(rint(f32(m * f32(1/s_out))) + z_out,
/// 0, 255)` (zero point after rounding), and the output is the dequantized
/// byte `f32(r - z_out) * s_out`, per-sample shape `[C, 1, 1]`
/// (tests/data/pt2e/README.md, "Inductor x86 graphs").
#[derive(Clone, Debug, PartialEq)]
pub struct TableMean {
    /// `[C, 256]` f32 values of each channel's bytes.
    pub table: Vec<f32>,
    /// The input's qparams (the dequantize's).
    pub input: crate::quant::QParams,
    /// The quantize's qparams after the mean.
    pub output: crate::quant::QParams,
}

impl TableMean {
    /// Checks the parts and builds the op (`C` is `table.len() / 256`).
    pub fn new(
        table: Vec<f32>,
        input: crate::quant::QParams,
        output: crate::quant::QParams,
    ) -> Result<Self> {
        input.validate("table_mean input")?;
        output.validate("table_mean output")?;
        if table.is_empty() || !table.len().is_multiple_of(256) {
            return Err(Error::shape(
                "table_mean",
                format!("{} table values do not make [C, 256]", table.len()),
            ));
        }
        if table.iter().any(|v| !v.is_finite()) {
            return Err(Error::qparams(
                "table_mean",
                "the table's values must be finite",
            ));
        }
        Ok(TableMean {
            table,
            input,
            output,
        })
    }
    /// `C`.
    pub fn channels(&self) -> usize {
        self.table.len() / 256
    }
    fn apply(&self, x: &[f32], shape: &[usize]) -> Vec<f32> {
        let c = self.channels();
        let hw: usize = shape[1..].iter().product();
        let (s, z) = (self.input.scale, self.input.zero_point);
        let (so, zo) = (self.output.scale, self.output.zero_point as f32);
        let inv = 1.0f32 / so;
        let mut y = Vec::with_capacity(x.len() / (c * hw).max(1) * c);
        for smp in x.chunks_exact(c * hw) {
            for (ch, plane) in smp.chunks_exact(hw).enumerate() {
                let t = &self.table[ch * 256..ch * 256 + 256];
                let sum = recover(plane, s)
                    .iter()
                    .fold(0f32, |acc, &d| acc + t[(d + z).clamp(0, 255) as usize]);
                let m = sum / hw as f32;
                let r = ((m * inv).round_ties_even() + zo).clamp(0.0, 255.0);
                y.push((r - zo) * so);
            }
        }
        y
    }
}

/// ONNX Runtime's QGemm with a float output (MLAS's scale output processor):
/// from the dequantized input `x = f32(q - zp) * s` the integers
/// `d = rint(x / s)` are recovered exactly, then `acc = Σ d·w + bias` (i32,
/// exact) and `y = f32(acc) * scale[o]`, `scale[o] = f32(s * w_scale[o])`
/// (tests/data/onnx/README.md).
#[derive(Clone, Debug, PartialEq)]
pub struct OrtLinear {
    /// `[O, K]` int8 weights (zero point 0), row-major.
    pub weight: Vec<i8>,
    /// `[O]` int32 bias, added to the accumulator.
    pub bias: Vec<i32>,
    /// `[O]` output scales.
    pub scale: Vec<f32>,
    /// The input's qparams (the dequantize's).
    pub input: crate::quant::QParams,
}

impl OrtLinear {
    /// Checks the parts and builds the op (`K` is `weight.len() / O`).
    pub fn new(
        weight: Vec<i8>,
        bias: Vec<i32>,
        scale: Vec<f32>,
        input: crate::quant::QParams,
    ) -> Result<Self> {
        input.validate("ort_linear input")?;
        let o = scale.len();
        if o == 0 || bias.len() != o || weight.is_empty() || !weight.len().is_multiple_of(o) {
            return Err(Error::shape(
                "ort_linear",
                format!(
                    "{} weights, {} biases and {o} scales do not make [O, K]",
                    weight.len(),
                    bias.len()
                ),
            ));
        }
        if scale.iter().any(|v| !v.is_finite()) {
            return Err(Error::qparams("ort_linear", "output scales must be finite"));
        }
        Ok(OrtLinear {
            weight,
            bias,
            scale,
            input,
        })
    }
    /// `O`.
    pub fn out_features(&self) -> usize {
        self.scale.len()
    }
    /// `K`.
    pub fn in_features(&self) -> usize {
        self.weight.len() / self.out_features()
    }
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        let (o, k) = (self.out_features(), self.in_features());
        let mut y = Vec::with_capacity(x.len() / k * o);
        for row in x.chunks_exact(k) {
            let d = recover(row, self.input.scale);
            for (c, w) in self.weight.chunks_exact(k).enumerate() {
                // i64: an i32 overflow (which ORT wraps) saturates visibly instead
                let acc = d
                    .iter()
                    .zip(w)
                    .fold(self.bias[c] as i64, |a, (&d, &w)| a + (d * w as i32) as i64);
                let acc = acc.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
                y.push(acc as f32 * self.scale[c]);
            }
        }
        y
    }
}

/// The integers `q - zp` (|.| <= 255) behind dequantized values
/// `f32(q - zp) * s`: exact, since the rounding error of the product and of
/// the division is far below half a unit.
fn recover(row: &[f32], s: f32) -> Vec<i32> {
    row.iter()
        .map(|&v| (v / s).round_ties_even().clamp(-255.0, 255.0) as i32)
        .collect()
}

/// oneDNN's linear with an f32 output (`qlinear_pointwise` with
/// `output_dtype` float32, as Inductor calls it): from the input's
/// dequantized values `x = f32(q - zp) * s` (the `dequantize` before it) the
/// integers `d = rint(x / s)` are recovered exactly (`|q - zp| <= 255`), then
/// `acc = Σ d·w` (i32, exact) and
/// `y = f32(f32(f32(acc) * s) * weight_scale[o]) + bias[o]`, `max(y, 0)` for
/// relu (tests/data/pt2e/README.md, "Inductor x86").
#[derive(Clone, Debug, PartialEq)]
pub struct OnednnLinear {
    /// `[O, K]` int8 weights, row-major.
    pub weight: Vec<i8>,
    /// `[O]` weight scales.
    pub weight_scale: Vec<f32>,
    /// `[O]` float bias.
    pub bias: Vec<f32>,
    /// The input's qparams (the dequantize's).
    pub input: crate::quant::QParams,
    /// oneDNN's relu post-op.
    pub relu: bool,
}

impl OnednnLinear {
    /// Checks the parts and builds the op (`K` is `weight.len() / O`).
    pub fn new(
        weight: Vec<i8>,
        weight_scale: Vec<f32>,
        bias: Vec<f32>,
        input: crate::quant::QParams,
        relu: bool,
    ) -> Result<Self> {
        input.validate("onednn_linear input")?;
        let o = weight_scale.len();
        if o == 0 || bias.len() != o || weight.is_empty() || !weight.len().is_multiple_of(o) {
            return Err(Error::shape(
                "onednn_linear",
                format!(
                    "{} weights, {o} weight scales and {} biases do not make [O, K]",
                    weight.len(),
                    bias.len()
                ),
            ));
        }
        if weight.len() / o > 43_000 {
            return Err(Error::config(
                "onednn_linear",
                "the reduction is too long for an exact i32 accumulator",
            ));
        }
        if weight_scale.iter().chain(&bias).any(|v| !v.is_finite()) {
            return Err(Error::qparams(
                "onednn_linear",
                "weight scales and biases must be finite",
            ));
        }
        Ok(OnednnLinear {
            weight,
            weight_scale,
            bias,
            input,
            relu,
        })
    }
    /// `O`.
    pub fn out_features(&self) -> usize {
        self.weight_scale.len()
    }
    /// `K`.
    pub fn in_features(&self) -> usize {
        self.weight.len() / self.out_features()
    }
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        let (o, k) = (self.out_features(), self.in_features());
        let s = self.input.scale;
        let mut y = Vec::with_capacity(x.len() / k * o);
        for row in x.chunks_exact(k) {
            // a dequantized byte gives |d| <= 255; anything else is clamped
            let d = recover(row, s);
            for (c, w) in self.weight.chunks_exact(k).enumerate() {
                let acc = d
                    .iter()
                    .zip(w)
                    .fold(0i32, |a, (&d, &w)| a.wrapping_add(d * w as i32));
                // (|d| <= 255, |w| <= 128, K <= 43000: no overflow)
                let v = ((acc as f32) * s) * self.weight_scale[c] + self.bias[c];
                y.push(if self.relu { v.max(0.0) } else { v });
            }
        }
        y
    }
}

pub(crate) const FILE_OPS: &[FileOp] = &[FileOp {
    name: "host_float",
    attributes: &[
        "fn",
        "min",
        "max",
        "axis",
        "to_end",
        "log",
        "shape",
        "input_scale",
        "input_zero_point",
        "activation",
        "scale",
        "zero_point",
    ],
    parse,
}];

fn parse(a: &Attrs<'_>, cx: &ParseCx<'_>) -> Result<Op> {
    let f = a.get("fn")?;
    let f = match f.as_str() {
        Some("relu") => HostFn::Relu,
        Some("clip") => HostFn::Clip {
            min: a.f32("min")?,
            max: a.f32("max")?,
        },
        Some("sigmoid") => HostFn::Sigmoid,
        Some("tanh") => HostFn::Tanh,
        Some("softmax") => HostFn::Softmax {
            axis: a.usize("axis")?,
            to_end: a.bool("to_end")?,
            log: a.bool("log")?,
        },
        Some("reshape") => {
            let s = a.get("shape")?;
            let s = s
                .as_array()
                .and_then(|v| {
                    v.iter()
                        .map(|d| d.as_u64().map(|d| d as usize))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| {
                    Error::Model(format!("\"shape\" must be a list of sizes, got {s}"))
                })?;
            HostFn::Reshape(s)
        }
        Some("onednn_linear") => {
            let (input, w, o) = host_linear_parts(a, cx)?;
            let relu = a.activation()? == crate::quant::Activation::Relu;
            let (t, name) = (cx.tensors, cx.node);
            let ws = t.f32(&format!("{name}.weight_scale"), &[o])?;
            let b = t.f32(&format!("{name}.bias"), &[o])?;
            HostFn::OnednnLinear(std::sync::Arc::new(OnednnLinear::new(
                w, ws, b, input, relu,
            )?))
        }
        Some("ort_linear") => {
            let (input, w, o) = host_linear_parts(a, cx)?;
            let (t, name) = (cx.tensors, cx.node);
            let (b, _) = t.get(&format!("{name}.bias_i32"), safetensors::Dtype::I32, Some(&[o]))?;
            let b = b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let sc = t.f32(&format!("{name}.scale"), &[o])?;
            HostFn::OrtLinear(std::sync::Arc::new(OrtLinear::new(w, b, sc, input)?))
        }
        Some("table_mean") => {
            let input = crate::quant::QParams::new(
                a.f32("input_scale")?,
                a.usize("input_zero_point")? as i32,
            )?;
            let output = a.qparams()?;
            let c = cx
                .inputs
                .first()
                .and_then(|t| t.shape.first().copied())
                .ok_or_else(|| Error::Model("table_mean needs a [C, H, W] input".into()))?;
            let table = cx.tensors.f32(&format!("{}.table", cx.node), &[c, 256])?;
            HostFn::TableMean(std::sync::Arc::new(TableMean::new(table, input, output)?))
        }
        _ => {
            return Err(Error::Model(format!(
                "\"fn\" is {f} (known: relu, clip, sigmoid, tanh, softmax, reshape, onednn_linear, ort_linear, table_mean)"
            )))
        }
    };
    Ok(Op::HostFloat(f))
}

/// The parts both host linears read: the input's qparams and the `[O, K]`
/// int8 weight (and `O`).
fn host_linear_parts(
    a: &Attrs<'_>,
    cx: &ParseCx<'_>,
) -> Result<(crate::quant::QParams, Vec<i8>, usize)> {
    let input =
        crate::quant::QParams::new(a.f32("input_scale")?, a.usize("input_zero_point")? as i32)?;
    let name = cx.node;
    let (w, wshape) = cx
        .tensors
        .get(&format!("{name}.weight"), safetensors::Dtype::I8, None)?;
    if wshape.len() != 2 {
        return Err(Error::Model(format!(
            "tensor {name:?}.weight has shape {wshape:?}, expected [O, K]"
        )));
    }
    Ok((input, w.into_iter().map(|v| v as i8).collect(), wshape[0]))
}

/// Writes what both host linears share: the input's qparams and the
/// `NAME.weight` tensor.
fn write_host_linear(
    w: &mut NodeWriter,
    f: &str,
    input: crate::quant::QParams,
    weight: &[i8],
    o: usize,
) {
    w.put("fn", json!(f));
    w.put("input_scale", json!(input.scale as f64));
    w.put("input_zero_point", json!(input.zero_point));
    let name = w.node.to_string();
    w.tensors.push((
        format!("{name}.weight"),
        safetensors::Dtype::I8,
        vec![o, weight.len() / o],
        weight.iter().map(|&v| v as u8).collect(),
    ));
}

pub(crate) struct HostOp<'a>(pub &'a HostFn);

impl<'a> OpKind<'a> for HostOp<'a> {
    fn name(&self) -> &'static str {
        "host_float"
    }
    fn infer(&self, _: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo> {
        let x = ins[0];
        if x.dtype != DType::F32 {
            return Err(Error::dtype(
                "input",
                "quantized; a host float op takes float32 (a dequantize's output)",
            ));
        }
        let shape = match self.0 {
            HostFn::Reshape(s) => {
                if s.is_empty() || s.len() > 3 || s.iter().product::<usize>() != x.numel() {
                    return Err(Error::shape(
                        "reshape",
                        format!("cannot reshape {:?} to {s:?}", x.shape),
                    ));
                }
                s.clone()
            }
            HostFn::OrtLinear(_) | HostFn::OnednnLinear(_) => {
                let (what, k, o) = match self.0 {
                    HostFn::OrtLinear(l) => ("ort_linear", l.in_features(), l.out_features()),
                    HostFn::OnednnLinear(l) => ("onednn_linear", l.in_features(), l.out_features()),
                    _ => unreachable!("matched above"),
                };
                if x.numel() != k {
                    return Err(Error::shape(
                        what,
                        format!("input {:?} per sample, the weights take {k}", x.shape),
                    ));
                }
                vec![o]
            }
            HostFn::TableMean(t) => {
                if x.shape.len() != 3 || x.shape[0] != t.channels() {
                    return Err(Error::shape(
                        "table_mean",
                        format!(
                            "input {:?} per sample, the table has {} channels ([C, H, W] needed)",
                            x.shape,
                            t.channels()
                        ),
                    ));
                }
                vec![t.channels(), 1, 1]
            }
            HostFn::Softmax { axis, .. } if *axis >= x.shape.len() => {
                return Err(Error::shape(
                    "softmax",
                    format!("axis {axis} of a per-sample shape {:?}", x.shape),
                ))
            }
            HostFn::Clip { min, max } if min.is_nan() || max.is_nan() || min > max => {
                return Err(Error::config("clip", format!("min {min} > max {max}")))
            }
            _ => x.shape.clone(),
        };
        Ok(TensorInfo {
            shape,
            dtype: DType::F32,
        })
    }
    fn write(&self, w: &mut NodeWriter) {
        match self.0 {
            HostFn::Relu => w.put("fn", json!("relu")),
            HostFn::Clip { min, max } => {
                w.put("fn", json!("clip"));
                w.put("min", json!(*min as f64));
                w.put("max", json!(*max as f64));
            }
            HostFn::Sigmoid => w.put("fn", json!("sigmoid")),
            HostFn::Tanh => w.put("fn", json!("tanh")),
            HostFn::Softmax { axis, to_end, log } => {
                w.put("fn", json!("softmax"));
                w.put("axis", json!(axis));
                w.put("to_end", json!(to_end));
                w.put("log", json!(log));
            }
            HostFn::Reshape(s) => {
                w.put("fn", json!("reshape"));
                w.put("shape", json!(s));
            }
            HostFn::OnednnLinear(l) => {
                let o = l.out_features();
                write_host_linear(w, "onednn_linear", l.input, &l.weight, o);
                w.put("activation", json!(if l.relu { "relu" } else { "none" }));
                let f = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
                let name = w.node.to_string();
                w.tensors.push((
                    format!("{name}.weight_scale"),
                    safetensors::Dtype::F32,
                    vec![o],
                    f(&l.weight_scale),
                ));
                w.tensors.push((
                    format!("{name}.bias"),
                    safetensors::Dtype::F32,
                    vec![o],
                    f(&l.bias),
                ));
            }
            HostFn::OrtLinear(l) => {
                let o = l.out_features();
                write_host_linear(w, "ort_linear", l.input, &l.weight, o);
                let name = w.node.to_string();
                w.tensors.push((
                    format!("{name}.bias_i32"),
                    safetensors::Dtype::I32,
                    vec![o],
                    l.bias.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ));
                w.tensors.push((
                    format!("{name}.scale"),
                    safetensors::Dtype::F32,
                    vec![o],
                    l.scale.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ));
            }
            HostFn::TableMean(t) => {
                w.put("fn", json!("table_mean"));
                w.put("input_scale", json!(t.input.scale as f64));
                w.put("input_zero_point", json!(t.input.zero_point));
                w.put("scale", json!(t.output.scale as f64));
                w.put("zero_point", json!(t.output.zero_point));
                let name = w.node.to_string();
                w.tensors.push((
                    format!("{name}.table"),
                    safetensors::Dtype::F32,
                    vec![t.channels(), 256],
                    t.table.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ));
            }
        }
        w.require_version(2);
    }
    fn lower(&self, _: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
        Ok(Box::new(HostLowered(self.0.clone())))
    }
    fn storage(&self, _: &[&TensorInfo], _: &TensorInfo) -> Storage {
        Storage::Host
    }
    fn runs_on_host(&self) -> bool {
        true
    }
}

pub(crate) struct HostLowered(pub HostFn);

impl HostLowered {
    /// Applies the function to a batched float tensor of per-sample shape `shape`.
    pub(crate) fn apply(f: &HostFn, x: &[f32], shape: &[usize]) -> Vec<f32> {
        match f {
            HostFn::Relu => x.iter().map(|&v| v.max(0.0)).collect(),
            HostFn::Clip { min, max } => x.iter().map(|&v| v.max(*min).min(*max)).collect(),
            HostFn::Sigmoid => x.iter().map(|&v| 1.0 / (1.0 + (-v).exp())).collect(),
            HostFn::Tanh => x.iter().map(|&v| v.tanh()).collect(),
            HostFn::Reshape(_) => x.to_vec(),
            HostFn::OnednnLinear(l) => l.apply(x),
            HostFn::OrtLinear(l) => l.apply(x),
            HostFn::TableMean(t) => t.apply(x, shape),
            HostFn::Softmax { axis, to_end, log } => {
                let per: usize = shape.iter().product();
                let (len, inner) = if *to_end {
                    (shape[*axis..].iter().product::<usize>(), 1)
                } else {
                    (shape[*axis], shape[axis + 1..].iter().product::<usize>())
                };
                let pre: usize = shape[..*axis].iter().product();
                let mut y = vec![0f32; x.len()];
                for smp in 0..x.len() / per.max(1) {
                    for p in 0..pre {
                        for i in 0..inner {
                            let at = |k: usize| smp * per + (p * len + k) * inner + i;
                            let m = (0..len).map(|k| x[at(k)]).fold(f32::NEG_INFINITY, f32::max);
                            let sum: f32 = (0..len).map(|k| (x[at(k)] - m).exp()).sum();
                            for k in 0..len {
                                let e = x[at(k)] - m;
                                y[at(k)] = if *log { e - sum.ln() } else { e.exp() / sum };
                            }
                        }
                    }
                }
                y
            }
        }
    }
}

impl Lowered for HostLowered {
    fn run_cpu(&self, io: &CpuIo<'_>) -> Result<Value> {
        let x = io.f32(0)?;
        let in_shape = io.inputs[0].shape()[1..].to_vec();
        Ok(Value::F32 {
            data: Self::apply(&self.0, x, &in_shape),
            shape: io.out_shape(),
        })
    }
}

impl Upload for HostLowered {
    fn upload(&self, _: &UploadCx<'_>) -> Result<Box<dyn GpuNode>> {
        Ok(Box::new(Nothing))
    }
}
