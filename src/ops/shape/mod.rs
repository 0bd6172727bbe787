//! Shape ops: `flatten`, `reshape` (the same bytes in NCHW order; on the GPU
//! an alias when the packed layout does not change, else an identity-table
//! relayout) and `cat` along channels (each input requantized to the
//! output's qparams by tables lowered once: ATen's rules, or QLinearConcat's
//! under `Requant::OnnxRuntime`).

mod gpu;

use serde_json::json;

use crate::error::{Error, Result};
use crate::model::{DType, TensorInfo, Value};
use crate::quant::{QParams, Requant};

use super::{
    keep, quantized, Arity, Attrs, CpuIo, FileOp, Lowered, NodeWriter, Op, OpKind, ParseCx,
    Signature, Storage,
};
use crate::ops::quantize::{requantize_table, requantize_table_vector};

pub(crate) const FILE_OPS: &[FileOp] = &[
    FileOp {
        name: "flatten",
        attributes: &["start_dim", "end_dim"],
        parse: |a: &Attrs<'_>, _: &ParseCx<'_>| {
            let s = a.opt("start_dim").and_then(|v| v.as_i64()).unwrap_or(1);
            let e = a.opt("end_dim").and_then(|v| v.as_i64()).unwrap_or(-1);
            if s != 1 || e != -1 {
                return Err(Error::Unsupported(format!(
                    "flatten({s}, {e}) (only start_dim 1, end_dim -1)"
                )));
            }
            Ok(Op::Flatten)
        },
    },
    FileOp {
        name: "reshape",
        attributes: &["shape"],
        parse: |a: &Attrs<'_>, _: &ParseCx<'_>| {
            let v = a.get("shape")?;
            let s: Vec<usize> = v
                .as_array()
                .and_then(|s| s.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
                .ok_or_else(|| {
                    Error::Model(format!("\"shape\" must be a list of sizes, got {v}"))
                })?;
            Ok(Op::Reshape(s))
        },
    },
    FileOp {
        name: "cat",
        attributes: &["dim", "scale", "zero_point"],
        parse: |a: &Attrs<'_>, _: &ParseCx<'_>| {
            let d = a.get("dim")?;
            if d.as_i64() != Some(1) {
                return Err(Error::Unsupported(format!(
                    "cat along dim {d} (only dim 1)"
                )));
            }
            Ok(Op::Cat(a.qparams()?))
        },
    },
];

/// A shape op.
pub(crate) enum ShapeOp<'a> {
    Flatten,
    /// To this per-sample shape.
    Reshape(&'a [usize]),
    /// Along channels, to these qparams.
    Cat(QParams),
}

impl<'a> OpKind<'a> for ShapeOp<'a> {
    fn name(&self) -> &'static str {
        match self {
            ShapeOp::Flatten => "flatten",
            ShapeOp::Reshape(_) => "reshape",
            ShapeOp::Cat(_) => "cat",
        }
    }
    fn arity(&self) -> Arity {
        match self {
            ShapeOp::Cat(_) => Arity::AtLeast(1),
            _ => Arity::Exactly(1),
        }
    }
    fn infer(&self, _: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo> {
        let x = ins[0];
        match self {
            ShapeOp::Flatten => {
                quantized(x)?;
                Ok(keep(x, vec![x.numel()]))
            }
            ShapeOp::Reshape(s) => {
                quantized(x)?;
                let n = s.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                if n != Some(x.numel()) || s.is_empty() || s.len() > 3 {
                    return Err(Error::shape(
                        "reshape",
                        format!("cannot reshape {:?} to {s:?}", x.shape),
                    ));
                }
                Ok(keep(x, s.to_vec()))
            }
            ShapeOp::Cat(out) => {
                for (i, t) in ins.iter().enumerate() {
                    if t.qparams().is_none() {
                        return Err(Error::dtype(format!("cat input {i}"), "float32"));
                    }
                    if t.shape.len() != x.shape.len()
                        || t.shape.is_empty()
                        || t.shape[1..] != x.shape[1..]
                    {
                        return Err(Error::shape(
                            "cat",
                            format!(
                                "input {i} has shape {:?}, input 0 {:?}: only dim 1 may differ",
                                t.shape, x.shape
                            ),
                        ));
                    }
                }
                out.validate("cat output")?;
                let mut s = x.shape.clone();
                s[0] = ins
                    .iter()
                    .try_fold(0usize, |a, t| a.checked_add(t.shape[0]))
                    .ok_or_else(|| Error::shape("cat", "the channels overflow"))?;
                Ok(TensorInfo {
                    shape: s,
                    dtype: DType::QUInt8(*out),
                })
            }
        }
    }
    fn write(&self, w: &mut NodeWriter) {
        match self {
            ShapeOp::Flatten => {
                w.put("start_dim", json!(1));
                w.put("end_dim", json!(-1));
            }
            ShapeOp::Reshape(s) => w.put("shape", json!(s)),
            ShapeOp::Cat(q) => {
                w.put_qparams(*q);
                w.put("dim", json!(1));
            }
        }
    }
    fn storage(&self, ins: &[&TensorInfo], out: &TensorInfo) -> Storage {
        match self {
            ShapeOp::Flatten | ShapeOp::Reshape(_)
                if crate::layout::same_layout(&ins[0].shape, &out.shape) =>
            {
                Storage::Alias
            }
            _ => Storage::Buffer,
        }
    }
    fn lower(&self, sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
        Ok(Box::new(match self {
            ShapeOp::Flatten | ShapeOp::Reshape(_) => ShapeLowered::Copy,
            ShapeOp::Cat(out) => {
                let shapes: Vec<Vec<usize>> = sig.inputs.iter().map(|i| i.batched(1)).collect();
                let qs: Vec<QParams> = (0..sig.inputs.len())
                    .map(|i| sig.q_in(i))
                    .collect::<Result<_>>()?;
                if sig.engine == Requant::OnnxRuntime {
                    ShapeLowered::Cat(ort_cat_tables(&shapes, &qs, *out))
                } else {
                    ShapeLowered::Cat(cat_tables(&shapes, &qs, *out, &sig.channels_last))
                }
            }
        }))
    }
}

/// A shape op's constants: none for a reshape; per cat input, the tables for
/// the channels below its split and from it on, and the split.
pub(crate) enum ShapeLowered {
    Copy,
    Cat(Vec<([u8; 256], [u8; 256], usize)>),
}

impl Lowered for ShapeLowered {
    fn run_cpu(&self, io: &CpuIo<'_>) -> Result<Value> {
        let tables = match self {
            ShapeLowered::Copy => return io.q_out(io.q(0)?.0.to_vec()),
            ShapeLowered::Cat(t) => t,
        };
        let ins = (0..io.inputs.len())
            .map(|i| io.q(i))
            .collect::<Result<Vec<_>>>()?;
        let n = io.batch;
        let len = super::checked_product("cat output", &io.out_shape())?;
        let mut y = super::try_with_capacity(len, "cat output")?;
        for b in 0..n {
            for ((x, s, _), (t_lo, t_hi, split)) in ins.iter().zip(tables) {
                let c = s[1];
                let spatial: usize = s[2..].iter().product();
                for ch in 0..c {
                    let t = if ch < *split { t_lo } else { t_hi };
                    let base = (b * c + ch) * spatial;
                    y.extend(x[base..base + spatial].iter().map(|&v| t[v as usize]));
                }
            }
        }
        io.q_out(y)
    }
}

/// Channels-last check ATen uses to pick its NHWC kernels: C == 1 or H == W == 1.
pub fn is_channels_last_trivially(shape: &[usize]) -> bool {
    match *shape {
        [_, c, h, w] => c == 1 || (h == 1 && w == 1),
        [_, _] => true,
        _ => false,
    }
}

/// Per-input tables of `cat` under ONNX Runtime (QLinearConcat): an input
/// whose scale and zero point equal the output's is copied, any other goes
/// through ORT's requantization table (rule DQ, then rule Q with a true
/// division; [`crate::ops::requantize_table_div`]). Same table pair layout as
/// [`cat_tables`].
pub fn ort_cat_tables(
    shapes: &[Vec<usize>],
    qs: &[QParams],
    out: QParams,
) -> Vec<([u8; 256], [u8; 256], usize)> {
    shapes
        .iter()
        .zip(qs)
        .map(|(s, &q)| {
            let t = if q.scale == out.scale && q.zero_point == out.zero_point {
                std::array::from_fn(|v| v as u8)
            } else {
                crate::ops::requantize_table_div(q, out)
            };
            (t, t, s[1])
        })
        .collect()
}

/// Per-input tables of `cat` along channels: `(table for channels below the
/// split, table for the rest, split)`. In ATen's channels-last path inputs with
/// the output's qparams are copied and the first `C - C % 8` channels use the
/// vector dequantize; otherwise every element is dequantized (scalar) and
/// requantized. ATen takes the channels-last path when every input is
/// channels-last: `channels_last[j]` says whether PyTorch holds input `j`
/// so (see [`crate::memory_format`]), or its shape makes it both.
pub fn cat_tables(
    shapes: &[Vec<usize>],
    qs: &[QParams],
    out: QParams,
    channels_last: &[bool],
) -> Vec<([u8; 256], [u8; 256], usize)> {
    let nhwc = shapes
        .iter()
        .enumerate()
        .all(|(j, s)| channels_last.get(j) == Some(&true) || is_channels_last_trivially(s));
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
