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
}

pub(crate) const FILE_OPS: &[FileOp] = &[FileOp {
    name: "host_float",
    attributes: &["fn", "min", "max", "axis", "to_end", "log", "shape"],
    parse,
}];

fn parse(a: &Attrs<'_>, _: &ParseCx<'_>) -> Result<Op> {
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
        _ => {
            return Err(Error::Model(format!(
                "\"fn\" is {f} (known: relu, clip, sigmoid, tanh, softmax, reshape)"
            )))
        }
    };
    Ok(Op::HostFloat(f))
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
