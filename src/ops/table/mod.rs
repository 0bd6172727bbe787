//! Elementwise ops whose result depends on the input byte alone: `relu`,
//! `relu6`, `hardtanh`, `hardswish` (rules in `tests/data/ops/README.md`).
//! Lowered into two 256-entry tables (ATen's vector path and its scalar
//! tail); the CPU loop and `lut.wgsl` look bytes up in the same tables.

mod gpu;

use serde_json::json;

use crate::error::{Error, Result};
use crate::model::{DType, TensorInfo, Value};
use crate::quant::{QParams, Requant};

use super::{
    dequant_scalar, dequant_vector, keep, n_vec, quantize_inv, quantized, Attrs, CpuIo, FileOp,
    Lowered, NodeWriter, Op, OpKind, ParseCx, Signature,
};

pub(crate) const FILE_OPS: &[FileOp] = &[
    FileOp {
        name: "relu",
        attributes: &[],
        parse: |_: &Attrs<'_>, _: &ParseCx<'_>| Ok(Op::Relu),
    },
    FileOp {
        name: "relu6",
        attributes: &[],
        parse: |_: &Attrs<'_>, _: &ParseCx<'_>| Ok(Op::Relu6),
    },
    FileOp {
        name: "hardtanh",
        attributes: &["min_val", "max_val"],
        parse: |a: &Attrs<'_>, _: &ParseCx<'_>| {
            Ok(Op::Hardtanh {
                min: a.f32("min_val")?,
                max: a.f32("max_val")?,
            })
        },
    },
    FileOp {
        name: "hardswish",
        attributes: &["scale", "zero_point"],
        parse: |a: &Attrs<'_>, _: &ParseCx<'_>| Ok(Op::Hardswish(a.qparams()?)),
    },
];

/// A table op.
pub(crate) enum TableOp {
    Relu,
    Relu6,
    Hardtanh(f32, f32),
    /// With its output qparams.
    Hardswish(QParams),
}

impl TableOp {
    /// `(vector-path table, tail table, whether the tail starts at ATen's
    /// vector split)` for input qparams `q`.
    fn tables(&self, engine: Requant, q: QParams) -> Result<TableLowered> {
        let one = |t: [u8; 256]| TableLowered {
            vec: t,
            tail: t,
            vec_split: false,
        };
        Ok(match *self {
            TableOp::Relu => one(relu_table(q)),
            TableOp::Relu6 => one(hardtanh_table(q, 0.0, 6.0)?),
            TableOp::Hardtanh(lo, hi) => one(hardtanh_table(q, lo, hi)?),
            TableOp::Hardswish(out) => {
                let (vec, tail) = hardswish_tables(engine, q, out);
                TableLowered {
                    vec,
                    tail,
                    vec_split: engine == Requant::Fbgemm,
                }
            }
        })
    }
}

impl<'a> OpKind<'a> for TableOp {
    fn name(&self) -> &'static str {
        match self {
            TableOp::Relu => "relu",
            TableOp::Relu6 => "relu6",
            TableOp::Hardtanh(..) => "hardtanh",
            TableOp::Hardswish(_) => "hardswish",
        }
    }
    fn infer(&self, _: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo> {
        let x = ins[0];
        quantized(x)?;
        match *self {
            TableOp::Hardtanh(min, max) if !(min.is_finite() && max.is_finite() && min <= max) => {
                Err(Error::config(
                    "hardtanh",
                    format!("min_val {min} and max_val {max} must be finite with min <= max"),
                ))
            }
            TableOp::Hardswish(out) => {
                out.validate("hardswish output")?;
                Ok(TensorInfo {
                    shape: x.shape.clone(),
                    dtype: DType::QUInt8(out),
                })
            }
            _ => Ok(keep(x, x.shape.clone())),
        }
    }
    fn write(&self, w: &mut NodeWriter) {
        match *self {
            TableOp::Hardtanh(min, max) => {
                w.put("min_val", json!(min as f64));
                w.put("max_val", json!(max as f64));
            }
            TableOp::Hardswish(q) => w.put_qparams(q),
            TableOp::Relu | TableOp::Relu6 => {}
        }
    }
    fn lower(&self, sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
        Ok(Box::new(self.tables(sig.engine, sig.q_in(0)?)?))
    }
    fn byte_clamp(&self, q: QParams) -> Result<Option<(i32, i32)>> {
        if let TableOp::Hardswish(_) = self {
            return Ok(None);
        }
        // A clamp table is monotone: its ends are the bounds.
        let t = self.tables(Requant::Fbgemm, q)?.vec;
        Ok(Some((t[0] as i32, t[255] as i32)))
    }
}

/// Two byte tables; the second applies from ATen's vector split on (or never).
pub(crate) struct TableLowered {
    pub vec: [u8; 256],
    pub tail: [u8; 256],
    pub vec_split: bool,
}

impl Lowered for TableLowered {
    fn run_cpu(&self, io: &CpuIo<'_>) -> Result<Value> {
        let (x, _, _) = io.q(0)?;
        let split = if self.vec_split {
            n_vec(x.len())
        } else {
            x.len()
        };
        io.q_out(apply_tables(x, &self.vec, &self.tail, split))
    }
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

// `max(0).min(6)` is kept rather than `clamp(0, 6)`: it is the order of
// PyTorch's reference (`min(max(x + 3, 0), 6)`), and it maps NaN to 0 where
// `clamp` would keep NaN; this table must stay bit-exact with the engine.
#[allow(clippy::manual_clamp)]
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
        // (ONNX Runtime models have no hardswish op: refused by inference.)
        Requant::Fbgemm | Requant::OnnxRuntime | Requant::Onednn => (
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
