//! Elementwise ops whose result depends on the input byte alone: `relu`,
//! `relu6`, `hardtanh`, `hardswish` (rules in `tests/data/ops/README.md`),
//! and `lut`, a table given as data (built by a converter, e.g. from ONNX
//! Runtime's table ops with [`onnx_table`]).
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
    FileOp {
        name: "lut_split",
        attributes: &["table", "tail_table", "scale", "zero_point", "signed"],
        parse: |a: &Attrs<'_>, _: &ParseCx<'_>| {
            Ok(Op::LutSplit {
                table: Box::new(parse_table(a.get("table")?, "table")?),
                tail: Box::new(parse_table(a.get("tail_table")?, "tail_table")?),
                out: a.qparams_signed()?,
            })
        },
    },
    FileOp {
        name: "lut",
        attributes: &["table", "scale", "zero_point", "signed"],
        parse: |a: &Attrs<'_>, _: &ParseCx<'_>| {
            Ok(Op::Lut {
                table: Box::new(parse_table(a.get("table")?, "table")?),
                out: a.qparams_signed()?,
            })
        },
    },
];

/// A table attribute (`key`) of a `lut` / `lut_split` node: exactly 256
/// integers in `0..=255`.
fn parse_table(v: &serde_json::Value, key: &str) -> Result<[u8; 256]> {
    let a = v.as_array().ok_or_else(|| {
        Error::Model(format!(
            "\"{key}\" must be a list of 256 integers in 0..=255, got {}",
            short(v)
        ))
    })?;
    if a.len() != 256 {
        return Err(Error::Model(format!(
            "\"{key}\" has {} entries, must have 256 (one per input byte)",
            a.len()
        )));
    }
    let mut t = [0u8; 256];
    for (i, (e, x)) in t.iter_mut().zip(a).enumerate() {
        *e = x.as_u64().filter(|&b| b <= 255).ok_or_else(|| {
            Error::Model(format!(
                "\"table\" entry {i} is {}, must be an integer in 0..=255",
                short(x)
            ))
        })? as u8;
    }
    Ok(t)
}

/// A JSON value for an error message, cut to a readable length.
fn short(v: &serde_json::Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// A table op.
pub(crate) enum TableOp<'a> {
    Relu,
    Relu6,
    Hardtanh(f32, f32),
    /// With its output qparams.
    Hardswish(QParams),
    /// A given table and the output qparams (possibly signed).
    Lut(&'a [u8; 256], QParams),
    /// Given tables for ATen's vector body and its scalar tail, and the
    /// output qparams.
    LutSplit(&'a [u8; 256], &'a [u8; 256], QParams),
}

impl TableOp<'_> {
    /// `(vector-path table, tail table, whether the tail starts at ATen's
    /// vector split)` for input qparams `q`; `nhwc`: PyTorch holds the input
    /// channels-last (ATen's split then counts elements in NHWC order).
    fn tables(&self, engine: Requant, q: QParams, nhwc: bool) -> Result<TableLowered> {
        let one = |t: [u8; 256]| TableLowered {
            vec: t,
            tail: t,
            vec_split: false,
            nhwc: false,
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
                    nhwc,
                }
            }
            TableOp::Lut(t, _) => one(*t),
            TableOp::LutSplit(t, tail, _) => TableLowered {
                vec: *t,
                tail: *tail,
                vec_split: true,
                nhwc,
            },
        })
    }
}

impl<'a> OpKind<'a> for TableOp<'_> {
    fn name(&self) -> &'static str {
        match self {
            TableOp::Relu => "relu",
            TableOp::Relu6 => "relu6",
            TableOp::Hardtanh(..) => "hardtanh",
            TableOp::Hardswish(_) => "hardswish",
            TableOp::Lut(..) => "lut",
            TableOp::LutSplit(..) => "lut_split",
        }
    }
    fn infer(&self, engine: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo> {
        let x = ins[0];
        quantized(x)?;
        if engine == Requant::Xnnpack
            && matches!(
                self,
                TableOp::Relu6 | TableOp::Hardtanh(..) | TableOp::Hardswish(_)
            )
        {
            return Err(Error::config(
                self.name(),
                "follows PyTorch's rule; under the xnnpack engine a clamp is a `lut` \
                 (ops::xnnpack_clamp_table) or a conv/linear clamp",
            ));
        }
        if engine == Requant::InductorX86
            && matches!(
                self,
                TableOp::Relu6 | TableOp::Hardtanh(..) | TableOp::Hardswish(_)
            )
        {
            return Err(Error::config(
                self.name(),
                "follows PyTorch's rule; under the inductor_x86 engine a float op between \
                 dequantize and quantize is a `lut` computed by the exporter",
            ));
        }
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
            TableOp::Lut(_, out) | TableOp::LutSplit(_, _, out) => {
                out.validate("lut output")?;
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
            TableOp::Lut(t, q) => {
                w.put("table", json!(t.to_vec()));
                w.put_qparams_signed(q);
            }
            TableOp::LutSplit(t, tail, q) => {
                w.put("table", json!(t.to_vec()));
                w.put("tail_table", json!(tail.to_vec()));
                w.put_qparams_signed(q);
            }
            TableOp::Relu | TableOp::Relu6 => {}
        }
    }
    fn lower(&self, sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
        let nhwc = sig.channels_last.first().copied().unwrap_or(false);
        Ok(Box::new(self.tables(sig.engine, sig.q_in(0)?, nhwc)?))
    }
    fn byte_clamp(&self, q: QParams) -> Result<Option<(i32, i32)>> {
        if let TableOp::Hardswish(_) | TableOp::Lut(..) | TableOp::LutSplit(..) = self {
            return Ok(None);
        }
        // A clamp table is monotone: its ends are the bounds.
        let t = self.tables(Requant::Fbgemm, q, false)?.vec;
        Ok(Some((t[0] as i32, t[255] as i32)))
    }
}

/// Two byte tables; the second applies from ATen's vector split on (or never).
pub(crate) struct TableLowered {
    pub vec: [u8; 256],
    pub tail: [u8; 256],
    pub vec_split: bool,
    /// The split counts elements in NHWC order (PyTorch holds the input
    /// channels-last: ATen's kernel walks memory order).
    pub nhwc: bool,
}

impl Lowered for TableLowered {
    fn run_cpu(&self, io: &CpuIo<'_>) -> Result<Value> {
        let (x, shape, _) = io.q(0)?;
        if !self.vec_split {
            return io.q_out(apply_tables(x, &self.vec, &self.tail, x.len()));
        }
        let split = n_vec(x.len());
        match (self.nhwc, shape) {
            (true, &[n, c, h, w]) => io.q_out(apply_tables_nhwc(
                x,
                [n, c, h, w],
                &self.vec,
                &self.tail,
                split,
            )),
            _ => io.q_out(apply_tables(x, &self.vec, &self.tail, split)),
        }
    }
}

/// [`apply_tables`] for an NCHW tensor that PyTorch holds channels-last:
/// element `(b, c, y, x)` takes the second table when its NHWC flat index
/// `((b*H + y)*W + x)*C + c` is `>= split`.
pub fn apply_tables_nhwc(
    x: &[u8],
    [_, c, h, w]: [usize; 4],
    vec_table: &[u8; 256],
    tail_table: &[u8; 256],
    split: usize,
) -> Vec<u8> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let (xw, r) = (i % w, i / w);
            let (y, r) = (r % h, r / h);
            let (ch, b) = (r % c, r / c);
            if ((b * h + y) * w + xw) * c + ch < split {
                vec_table[v as usize]
            } else {
                tail_table[v as usize]
            }
        })
        .collect()
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
        Requant::Fbgemm
        | Requant::OnnxRuntime
        | Requant::Onednn
        | Requant::Xnnpack
        | Requant::InductorX86 => (
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

/// The table of one of ONNX Runtime's table ops ([`crate::onnx::TableKind`]),
/// indexed by the stored input byte and holding stored output bytes (uint8
/// images for qint8, see [`QParams`]): [`crate::onnx::reference::table`]
/// (indexed by the input's bit pattern, holding true output values) re-indexed.
/// `x` and `y` are the input's and output's qparams (either may be signed).
pub fn onnx_table(kind: &crate::onnx::TableKind, x: QParams, y: QParams) -> [u8; 256] {
    use crate::onnx::{QType, Q};
    let to_q = |p: QParams| Q {
        scale: p.scale,
        zero_point: p.true_zero_point(),
        dtype: if p.signed { QType::I8 } else { QType::U8 },
    };
    let t = crate::onnx::reference::table(kind, &to_q(x), &to_q(y));
    std::array::from_fn(|b| {
        // stored byte b is the value b - offset, whose bit pattern indexes `t`
        let bits = (b as i32 - x.offset()) as u8;
        (t[bits as usize] + y.offset()) as u8
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::reference::table;
    use crate::onnx::{QType, TableKind, Q};

    fn kinds() -> Vec<TableKind> {
        vec![
            TableKind::Sigmoid,
            TableKind::LeakyRelu { alpha: 0.01 },
            TableKind::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            TableKind::Relu,
            TableKind::Requantize,
        ]
    }

    fn onnx_q(p: QParams) -> Q {
        Q {
            scale: p.scale,
            zero_point: p.true_zero_point(),
            dtype: if p.signed { QType::I8 } else { QType::U8 },
        }
    }

    #[test]
    fn onnx_table_agrees_with_the_reference_for_u8_and_s8() {
        let qs = [
            QParams::new(0.031, 140).unwrap(),
            QParams::new(0.0039, 0).unwrap(),
            QParams::new_i8(0.027, -9).unwrap(),
            QParams::new_i8(0.0078, -128).unwrap(),
        ];
        let mut checked = 0;
        for kind in kinds() {
            for &x in &qs {
                for &y in &qs {
                    let ours = onnx_table(&kind, x, y);
                    let r = table(&kind, &onnx_q(x), &onnx_q(y));
                    // every value v of the input type: ours at v's stored
                    // byte is the reference at v's bit pattern, stored
                    let (lo, hi) = if x.signed { (-128, 127) } else { (0, 255) };
                    for v in lo..=hi {
                        let stored = (v + x.offset()) as usize;
                        let want = r[v as u8 as usize] + y.offset();
                        assert_eq!(
                            ours[stored] as i32, want,
                            "{kind:?} x {x:?} y {y:?} value {v}"
                        );
                        checked += 1;
                    }
                    assert!(ours.iter().any(|&b| b != ours[0]), "{kind:?} constant");
                }
            }
        }
        assert_eq!(checked, 5 * 16 * 256);
    }

    #[test]
    fn onnx_requantize_to_itself_is_the_identity_on_stored_bytes() {
        for x in [
            QParams::new(0.05, 17).unwrap(),
            QParams::new_i8(0.05, 17).unwrap(),
            QParams::new_i8(0.3, -128).unwrap(),
        ] {
            let t = onnx_table(&TableKind::Requantize, x, x);
            for (b, &v) in t.iter().enumerate() {
                assert_eq!(v as usize, b, "{x:?}");
            }
            // relu keeps bytes from the zero point up and maps the rest to it
            let t = onnx_table(&TableKind::Relu, x, x);
            for (b, &v) in t.iter().enumerate() {
                assert_eq!(v as i32, (b as i32).max(x.zero_point), "{x:?} byte {b}");
            }
        }
    }
}
