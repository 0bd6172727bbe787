//! Binary ops computed through a 65,536-entry table indexed by both input
//! bytes (`table[a * 256 + b]`, stored bytes: uint8 images for qint8), with
//! input 1 broadcast over input 0:
//!
//! - `binary` ([`Op::Binary`]): the table is given (a model converter builds
//!   it, e.g. [`ort_add_table`] / [`ort_mul_table`] for ONNX Runtime's
//!   QLinearAdd / QLinearMul) and travels in the model file;
//! - `mul` ([`Op::Mul`]): PyTorch's `quantized::mul` / `mul_relu`, whose
//!   table is built from the engine's rule at lowering ([`pytorch_mul_table`]).
//!
//! Both lower to one [`BinaryLowered`] (the table and the broadcast map); the
//! CPU loop below and `binary.wgsl` read the same constants.
//!
//! **Broadcasting.** Per-sample shapes (no batch dimension; both inputs carry
//! the same batch). The output has input 0's shape `A` (rank 1 to 3). Input
//! 1's shape `B` broadcasts into it as in numpy, aligned on the right:
//! `rank(B) <= rank(A)`, and each dimension of `B` is 1 or equals `A`'s
//! dimension it is aligned with. So against `[C, H, W]`: `[C, H, W]`, `[1]`,
//! `[1, 1, 1]`, `[C, 1, 1]` (per channel), `[H, W]`, `[W]`, `[1, H, 1]`, ...
//! A bare `[C]` against `[C, H, W]` is per *column* (numpy), not per channel;
//! say `[C, 1, 1]`. `B` larger than `A` along some dimension is an error:
//! put the larger input first (mul's rules are symmetric; a table is not, so
//! [`transpose_table`] swaps its roles).

use std::sync::Arc;

use serde_json::json;

use crate::error::{Error, Result};
use crate::model::{DType, TensorInfo, Value};
use crate::quant::{Activation, QParams, Requant};

use super::super::{
    quantized, try_vec, Arity, Attrs, CpuIo, FileOp, Lowered, NodeWriter, Op, OpKind, ParseCx,
    Signature,
};

/// Entries of a binary table: one per (a byte, b byte) pair.
pub const BINARY_TABLE_LEN: usize = 65536;

pub(crate) const BINARY_FILE_OP: FileOp = FileOp {
    name: "binary",
    attributes: &["scale", "zero_point", "dtype"],
    parse: |a: &Attrs<'_>, cx: &ParseCx<'_>| {
        let out = out_qparams(a)?;
        let name = format!("{}.table", cx.node);
        let (t, _) = cx
            .tensors
            .get(&name, safetensors::Dtype::U8, Some(&[BINARY_TABLE_LEN]))?;
        Ok(Op::Binary {
            table: Arc::new(t),
            out,
        })
    },
};

pub(crate) const MUL_FILE_OP: FileOp = FileOp {
    name: "mul",
    attributes: &["activation", "scale", "zero_point"],
    parse: |a: &Attrs<'_>, _: &ParseCx<'_>| {
        Ok(Op::Mul {
            relu: a.activation()? == Activation::Relu,
            out: a.qparams()?,
        })
    },
};

/// `binary`'s output qparams: `scale`, `zero_point` in the type's own range,
/// `dtype` `"quint8"` (default) or `"qint8"`.
fn out_qparams(a: &Attrs<'_>) -> Result<QParams> {
    let signed = match a.opt("dtype") {
        None => false,
        Some(v) => match v.as_str() {
            Some("quint8") => false,
            Some("qint8") => true,
            _ => {
                return Err(Error::Model(format!(
                    "\"dtype\" must be \"quint8\" or \"qint8\", got {v}"
                )))
            }
        },
    };
    if !signed {
        return a.qparams();
    }
    let s = a.get("scale")?;
    let z = a.get("zero_point")?;
    let scale = s
        .as_f64()
        .ok_or_else(|| Error::Model(format!("scale must be a number, got {s}")))?;
    let zp = z
        .as_i64()
        .ok_or_else(|| Error::Model(format!("zero_point must be an integer, got {z}")))?;
    if !(-128..=127).contains(&zp) {
        return Err(Error::Model(format!(
            "zero_point {zp} is outside qint8's range -128..=127"
        )));
    }
    QParams::new_i8(scale as f32, zp as i32)
}

/// How input 1's per-sample elements are found from input 0's coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Broadcast {
    /// Input 0's (and the output's) `(c, h, w)` (as [`crate::layout::chw`]).
    pub a: [usize; 3],
    /// Input 1's `(c, h, w)`.
    pub b: [usize; 3],
    /// For each of input 1's `(c, h, w)` axes, the axis of input 0 whose
    /// coordinate it takes, or 3: coordinate 0 (a broadcast dimension).
    pub src: [usize; 3],
}

impl Broadcast {
    /// The map of `b` into `a` (per-sample shapes), or an error naming both.
    pub fn new(a: &[usize], b: &[usize]) -> Result<Self> {
        let bad = |why: &str| {
            Error::shape(
                "binary op inputs",
                format!("input 1 {b:?} does not broadcast into input 0 {a:?}: {why}"),
            )
        };
        if a.is_empty() || a.len() > 3 {
            return Err(Error::shape(
                "binary op input 0",
                format!("shape {a:?}: expected [C], [C, H] or [C, H, W]"),
            ));
        }
        if b.len() > 3 {
            return Err(bad("more than 3 dimensions"));
        }
        if b.len() > a.len() {
            return Err(bad("input 1 has more dimensions than input 0"));
        }
        let pad = a.len() - b.len();
        let mut src = [3usize; 3];
        for (j, &d) in b.iter().enumerate() {
            let i = j + pad;
            if d == a[i] && d != 1 {
                src[j] = i;
            } else if d != 1 {
                return Err(bad(&format!(
                    "dimension {j} is {d}, neither 1 nor {} (shapes are aligned on the right)",
                    a[i]
                )));
            }
        }
        let (ac, ah, aw) = crate::layout::chw(a);
        let (bc, bh, bw) = crate::layout::chw(b);
        Ok(Broadcast {
            a: [ac, ah, aw],
            b: [bc, bh, bw],
            src,
        })
    }

    /// Input 1's per-sample `(c, h, w)` coordinates for input 0's `(c, h, w)`.
    #[inline]
    pub fn b_coord(&self, coord: [usize; 3]) -> [usize; 3] {
        let pick = |s: usize| if s < 3 { coord[s] } else { 0 };
        [pick(self.src[0]), pick(self.src[1]), pick(self.src[2])]
    }
}

/// Checks that both inputs are quantized and input 1 broadcasts into input 0.
fn check_inputs(op: &str, ins: &[&TensorInfo]) -> Result<(QParams, QParams)> {
    let qa = quantized(ins[0])?;
    let qb = ins[1].qparams().ok_or_else(|| {
        Error::dtype(
            "second input",
            format!("float32; {op} takes two quantized tensors"),
        )
    })?;
    Broadcast::new(&ins[0].shape, &ins[1].shape)?;
    Ok((qa, qb))
}

fn stored(v: i32, q: QParams) -> u8 {
    (v + q.offset()) as u8
}

fn sat(v: f32, y: QParams) -> i32 {
    let (lo, hi) = if y.signed { (-128, 127) } else { (0, 255) };
    v.clamp(lo as f32, hi as f32) as i32
}

/// ONNX Runtime's QLinearAdd (x86 MLAS, the FMA form; `tests/data/onnx/README.md`)
/// for every (a, b) byte pair, with input roles as given (the role swap of a
/// broadcast "A" is the caller's): `rA = sA / sC`, `rB = sB / sC`,
/// `fixed = f32(zC) - fma(rA, f32(zA), rB * f32(zB))`,
/// `y = sat(rint(fma(f32(a), rA, fma(f32(b), rB, fixed))))` on true values.
/// Indexed by stored bytes (uint8 images for qint8); entries are stored bytes.
pub fn ort_add_table(a: QParams, b: QParams, y: QParams) -> Vec<u8> {
    let (ra, rb) = (a.scale / y.scale, b.scale / y.scale);
    let fixed = y.true_zero_point() as f32
        - ra.mul_add(a.true_zero_point() as f32, rb * b.true_zero_point() as f32);
    let mut t = Vec::with_capacity(BINARY_TABLE_LEN);
    for ab in 0..256i32 {
        let pa = (ab - a.offset()) as f32;
        for bb in 0..256i32 {
            let pb = (bb - b.offset()) as f32;
            let v = pa.mul_add(ra, pb.mul_add(rb, fixed));
            t.push(stored(sat(v.round_ties_even(), y), y));
        }
    }
    t
}

/// ONNX Runtime's QLinearMul (x86 MLAS SSE2, no FMA) for every (a, b) byte
/// pair, roles as given: `r = (sA * sB) / sC`, `p = (a - zA)(b - zB)` (i32),
/// `y = sat(rint(f32(p) * r + f32(zC)))` on true values. Indexed by stored
/// bytes; entries are stored bytes.
pub fn ort_mul_table(a: QParams, b: QParams, y: QParams) -> Vec<u8> {
    let r = (a.scale * b.scale) / y.scale;
    let (za, zb, zy) = (a.zero_point, b.zero_point, y.true_zero_point());
    let mut t = Vec::with_capacity(BINARY_TABLE_LEN);
    for ab in 0..256i32 {
        for bb in 0..256i32 {
            // byte - zero point is the same on images and true values
            let p = (ab - za) * (bb - zb);
            let v = (p as f32) * r + zy as f32;
            t.push(stored(sat(v.round_ties_even(), y), y));
        }
    }
    t
}

/// The same table with the inputs' roles swapped: `t'[b * 256 + a] = t[a * 256 + b]`.
pub fn transpose_table(t: &[u8]) -> Vec<u8> {
    let mut o = vec![0u8; t.len()];
    for (i, &v) in t.iter().enumerate() {
        let (a, b) = (i / 256, i % 256);
        o[b * 256 + a] = v;
    }
    o
}

/// PyTorch's `quantized::mul` / `mul_relu` on quint8 (ATen `qmul_kernel`, every
/// engine; `tests/data/ops/README.md`): `m = (sa * sb) * inv(so)`,
/// `c = (a - za)(b - zb)` (i32), `y = clamp(i64(rint(f32(c) * m)) + zo, lo, 255)`
/// with `lo = zo` for mul_relu else 0. ATen's vector path computes the same
/// except where `|rint(f32(c) * m)| + 255` leaves the i32 range (it wraps);
/// such qparams are refused.
pub fn pytorch_mul_table(a: QParams, b: QParams, out: QParams, relu: bool) -> Result<Vec<u8>> {
    for (what, q) in [("first input", a), ("second input", b), ("output", out)] {
        if q.signed {
            return Err(Error::Unsupported(format!(
                "PyTorch quantized mul on qint8 ({what}): PyTorch runs it through XNNPACK, not modelled"
            )));
        }
    }
    let m = (a.scale * b.scale) * (1.0f32 / out.scale);
    let reach = |z: i32| z.max(255 - z);
    let cmax = (reach(a.zero_point) * reach(b.zero_point)) as f32;
    if (cmax * m).round_ties_even() >= (i32::MAX - 255) as f32 {
        return Err(Error::Unsupported(format!(
            "PyTorch quantized mul with multiplier (sa * sb) / so = {m:e}: products overflow ATen's i32 requantization"
        )));
    }
    let (lo, zo) = (if relu { out.zero_point } else { 0 }, out.zero_point);
    let mut t = Vec::with_capacity(BINARY_TABLE_LEN);
    for ab in 0..256i32 {
        for bb in 0..256i32 {
            let c = (ab - a.zero_point) * (bb - b.zero_point);
            let v = (c as f32 * m).round_ties_even() as i64 + zo as i64;
            t.push(v.clamp(lo as i64, 255) as u8);
        }
    }
    Ok(t)
}

/// `binary`: a given table, output qparams `out`.
pub(crate) struct Binary<'a> {
    pub table: &'a Arc<Vec<u8>>,
    pub out: QParams,
}

impl<'a> OpKind<'a> for Binary<'a> {
    fn name(&self) -> &'static str {
        "binary"
    }
    fn arity(&self) -> Arity {
        Arity::Exactly(2)
    }
    fn infer(&self, _engine: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo> {
        check_inputs("binary", ins)?;
        if self.table.len() != BINARY_TABLE_LEN {
            return Err(Error::config(
                "binary table",
                format!(
                    "{} entries, expected {BINARY_TABLE_LEN} (one per pair of input bytes)",
                    self.table.len()
                ),
            ));
        }
        self.out.validate("binary output")?;
        Ok(TensorInfo {
            shape: ins[0].shape.clone(),
            dtype: DType::QUInt8(self.out),
        })
    }
    fn write(&self, w: &mut NodeWriter) {
        w.put("scale", json!(self.out.scale as f64));
        w.put("zero_point", json!(self.out.true_zero_point()));
        if self.out.signed {
            w.put("dtype", json!("qint8"));
        }
        let name = format!("{}.table", w.node);
        w.tensors.push((
            name,
            safetensors::Dtype::U8,
            vec![BINARY_TABLE_LEN],
            self.table.as_ref().clone(),
        ));
    }
    fn lower(&self, sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
        let bc = Broadcast::new(&sig.inputs[0].shape, &sig.inputs[1].shape)?;
        Ok(Box::new(BinaryLowered {
            table: self.table.clone(),
            bc,
        }))
    }
}

/// `mul` (with a fused ReLU or not) to output qparams `out`.
pub(crate) struct Mul {
    pub relu: bool,
    pub out: QParams,
}

impl<'a> OpKind<'a> for Mul {
    fn name(&self) -> &'static str {
        "mul"
    }
    fn arity(&self) -> Arity {
        Arity::Exactly(2)
    }
    fn infer(&self, engine: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo> {
        let (qa, qb) = check_inputs("mul", ins)?;
        self.out.validate("mul output")?;
        mul_table(engine, qa, qb, self.out, self.relu)?;
        Ok(TensorInfo {
            shape: ins[0].shape.clone(),
            dtype: DType::QUInt8(self.out),
        })
    }
    fn write(&self, w: &mut NodeWriter) {
        w.put_qparams(self.out);
        w.put("activation", json!(if self.relu { "relu" } else { "none" }));
    }
    fn lower(&self, sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
        let bc = Broadcast::new(&sig.inputs[0].shape, &sig.inputs[1].shape)?;
        let t = mul_table(sig.engine, sig.q_in(0)?, sig.q_in(1)?, self.out, self.relu)?;
        Ok(Box::new(BinaryLowered {
            table: Arc::new(t),
            bc,
        }))
    }
}

/// The `mul` table of the model's engine.
fn mul_table(engine: Requant, a: QParams, b: QParams, out: QParams, relu: bool) -> Result<Vec<u8>> {
    match engine {
        // ATen's qmul_kernel serves fbgemm, qnnpack and x86 alike.
        Requant::Fbgemm | Requant::Qnnpack | Requant::Onednn => pytorch_mul_table(a, b, out, relu),
        Requant::Xnnpack => Err(Error::Unsupported(
            "mul under the xnnpack rule set (XNNPACK's mul is a `binary` op with ops::xnnpack_mul_table)".into(),
        )),
        Requant::InductorX86 => Err(Error::Unsupported(
            "mul under the inductor_x86 rule set (a float mul of dequantized tensors is a `binary` op with the exporter's table)".into(),
        )),
        Requant::OnnxRuntime => Err(Error::Unsupported(
            "mul under the onnxruntime rule set (mul is PyTorch's quantized mul; ONNX Runtime's QLinearMul is a `binary` op with ort_mul_table)".into(),
        )),
    }
}

/// A binary table op's constants: the table and the broadcast map.
pub(crate) struct BinaryLowered {
    pub table: Arc<Vec<u8>>,
    pub bc: Broadcast,
}

impl Lowered for BinaryLowered {
    fn run_cpu(&self, io: &CpuIo<'_>) -> Result<Value> {
        let ((a, sa, _), (b, sb, _)) = (io.q(0)?, io.q(1)?);
        let bc = &self.bc;
        let [c, h, w] = bc.a;
        let [cb, hb, wb] = bc.b;
        let n = io.batch;
        let per_a = c * h * w;
        let per_b = cb * hb * wb;
        if a.len() != n * per_a || b.len() != n * per_b {
            return Err(Error::shape(
                "binary op inputs",
                format!("{sa:?} and {sb:?} for batch {n} and per-sample maps {bc:?}"),
            ));
        }
        let t = &self.table;
        let mut y = try_vec(a.len(), 0u8, "binary op output")?;
        for s in 0..n {
            for ci in 0..c {
                for hi in 0..h {
                    for wi in 0..w {
                        let i = ((s * c + ci) * h + hi) * w + wi;
                        let [bc0, bc1, bc2] = bc.b_coord([ci, hi, wi]);
                        let j = ((s * cb + bc0) * hb + bc1) * wb + bc2;
                        y[i] = t[a[i] as usize * 256 + b[j] as usize];
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
    use crate::onnx::{reference, QOp, QType, Tensor, TensorData, Q};

    fn q(p: QParams) -> Q {
        Q {
            scale: p.scale,
            zero_point: p.true_zero_point(),
            dtype: if p.signed { QType::I8 } else { QType::U8 },
        }
    }

    /// Every (a, b) byte pair as two tensors of ONNX values.
    fn all_pairs(qa: QParams, qb: QParams) -> (Tensor, Tensor) {
        let data = |q: QParams, f: &dyn Fn(usize) -> usize| {
            let bytes: Vec<u8> = (0..BINARY_TABLE_LEN).map(|i| f(i) as u8).collect();
            if q.signed {
                TensorData::I8(bytes.iter().map(|&b| (b as i32 - 128) as i8).collect())
            } else {
                TensorData::U8(bytes)
            }
        };
        let t = |d| Tensor {
            dims: vec![BINARY_TABLE_LEN],
            data: d,
        };
        (t(data(qa, &|i| i / 256)), t(data(qb, &|i| i % 256)))
    }

    fn stored_bytes(t: &Tensor) -> Vec<u8> {
        match &t.data {
            TensorData::U8(v) => v.clone(),
            TensorData::I8(v) => v.iter().map(|&x| (x as i32 + 128) as u8).collect(),
            other => panic!("unexpected output {:?}", other.elem_type()),
        }
    }

    fn qparams_sets() -> Vec<(QParams, QParams, QParams)> {
        let u = |s, z| QParams::new(s, z).unwrap();
        let i = |s, z| QParams::new_i8(s, z).unwrap();
        vec![
            (u(0.02, 128), u(0.03, 120), u(0.04, 131)),
            (u(0.0137, 0), u(0.0071, 255), u(0.011, 3)),
            (u(0.5, 17), u(0.25, 200), u(0.1, 90)),
            (u(0.003921569, 0), u(0.2, 64), u(0.05, 0)),
            (i(0.02, 0), i(0.035, -7), i(0.04, 5)),
            (i(0.0173, -128), i(0.0091, 127), i(0.013, -3)),
            (i(0.3, 11), i(0.003, -100), i(0.02, 127)),
        ]
    }

    #[test]
    fn ort_tables_equal_the_reference_on_every_pair() {
        for (qa, qb, qy) in qparams_sets() {
            let (ta, tb) = all_pairs(qa, qb);
            for (name, op, table) in [
                (
                    "QLinearAdd",
                    QOp::Add {
                        a: q(qa),
                        b: q(qb),
                        y: q(qy),
                    },
                    ort_add_table(qa, qb, qy),
                ),
                (
                    "QLinearMul",
                    QOp::Mul {
                        a: q(qa),
                        b: q(qb),
                        y: q(qy),
                    },
                    ort_mul_table(qa, qb, qy),
                ),
            ] {
                let r = reference::eval_op(&op, &[&ta, &tb], None, name).unwrap();
                let want = stored_bytes(&r);
                assert_eq!(table.len(), BINARY_TABLE_LEN);
                if let Some(i) = (0..BINARY_TABLE_LEN).find(|&i| table[i] != want[i]) {
                    panic!(
                        "{name} {qa:?} {qb:?} {qy:?}: pair (a byte {}, b byte {}) table {} reference {}",
                        i / 256,
                        i % 256,
                        table[i],
                        want[i]
                    );
                }
                // not a degenerate table
                assert!(
                    table.iter().any(|&v| v != table[0]),
                    "{name}: constant table"
                );
            }
        }
    }

    #[test]
    fn transpose_swaps_roles() {
        let u = |s, z| QParams::new(s, z).unwrap();
        let (a, b, y) = (u(0.02, 100), u(0.05, 30), u(0.03, 128));
        assert_eq!(
            transpose_table(&ort_add_table(a, b, y)),
            ort_add_table(b, a, y)
        );
        assert_ne!(ort_add_table(a, b, y), ort_add_table(b, a, y));
    }

    #[test]
    fn pytorch_mul_rule() {
        let u = |s, z| QParams::new(s, z).unwrap();
        let (a, b, o) = (u(0.02, 100), u(0.05, 30), u(0.03, 128));
        let t = pytorch_mul_table(a, b, o, false).unwrap();
        let r = pytorch_mul_table(a, b, o, true).unwrap();
        let m = (0.02f32 * 0.05f32) * (1.0f32 / 0.03f32);
        for (x, y) in [(0usize, 0usize), (100, 255), (255, 0), (37, 200)] {
            let c = (x as i32 - 100) * (y as i32 - 30);
            let v = ((c as f32 * m).round_ties_even() as i32 + 128).clamp(0, 255);
            assert_eq!(t[x * 256 + y] as i32, v);
            assert_eq!(r[x * 256 + y] as i32, v.max(128));
        }
        // qint8 and overflowing multipliers are refused
        let s = QParams::new_i8(0.02, 0).unwrap();
        assert!(matches!(
            pytorch_mul_table(s, b, o, false),
            Err(Error::Unsupported(_))
        ));
        assert!(matches!(
            pytorch_mul_table(u(1.0, 0), u(1.0, 0), u(1e-5, 0), false),
            Err(Error::Unsupported(_))
        ));
    }

    #[test]
    fn broadcast_forms() {
        let ok = |a: &[usize], b: &[usize]| Broadcast::new(a, b).unwrap();
        assert_eq!(ok(&[4, 3, 2], &[4, 3, 2]).src, [0, 1, 2]);
        assert_eq!(ok(&[4, 3, 2], &[1]).src, [3, 3, 3]);
        assert_eq!(ok(&[4, 3, 2], &[]).src, [3, 3, 3]);
        assert_eq!(ok(&[4, 3, 2], &[1, 1, 1]).src, [3, 3, 3]);
        assert_eq!(ok(&[4, 3, 2], &[4, 1, 1]).src, [0, 3, 3]);
        let hw = ok(&[4, 3, 2], &[3, 2]);
        assert_eq!((hw.src, hw.b), ([1, 2, 3], [3, 2, 1]));
        assert_eq!(ok(&[4, 3, 2], &[2]).src, [2, 3, 3]);
        assert_eq!(ok(&[4, 3, 2], &[1, 3, 1]).src, [3, 1, 3]);
        assert_eq!(ok(&[8], &[8]).src, [0, 3, 3]);
        for (a, b) in [
            (&[4usize, 3, 2][..], &[4usize][..]),
            (&[4, 3, 2], &[2, 3, 2]),
            (&[4, 1, 1], &[4, 3, 2]),
            (&[4], &[1, 4]),
            (&[1, 2, 3, 4], &[1]),
            (&[], &[1]),
        ] {
            let e = Broadcast::new(a, b).unwrap_err();
            assert!(matches!(e, Error::Shape { .. }), "{a:?} {b:?}: {e}");
        }
    }
}
