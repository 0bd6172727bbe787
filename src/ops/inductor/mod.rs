//! Inductor's generated C++ (torch.compile with freezing, x86 CPU, engine
//! `inductor_x86`) for float regions that read **f32 tensors** (oneDNN
//! convs/linears with a float32 output) and end in a `quantize_per_tensor`:
//!
//! - `inductor_gate_mul` ([`Op::InductorGateMul`]): the squeeze-excitation
//!   product `quantize(gate(v2) * x)` of mobilenet_v3
//!   (`cpp_fused_hardsigmoid_mul_quantize_per_tensor_*`) and of
//!   efficientnet_b0 / regnet_y (`cpp_fused_mul_quantize_per_tensor_sigmoid_*`):
//!   `x` f32 `[C, H, W]` (per pixel), `v2` f32 `[C, 1, 1]` or `[C]` (per
//!   channel), output quint8 `[C, H, W]`.
//! - `inductor_hardswish` ([`Op::InductorHardswish`]): mobilenet_v3's
//!   classifier `quantize(hardswish(x))` (`cpp_fused_hardswish_quantize_per_tensor_*`),
//!   any shape.
//! - `inductor_add` ([`Op::InductorAdd`]): `quantize(f32(a + b))` of two f32
//!   tensors of one shape (`cpp_fused_add_max_pool2d_with_indices_quantize_per_tensor_*`
//!   for an add of two max pools of relu'd f32 conv outputs).
//!
//! Every kernel is 16-lane `at::vec` code over channels (channels-last) with
//! a masked vector tail (`loadu(ptr, count)`): the same arithmetic for every
//! element, no scalar path (read in the code generated for torchvision's
//! models, `tools/pt2e/gen_inductor_se.py`). The rules, each step one f32
//! rounding (the C++ is compiled with `-ffp-contract=off`; intrinsics):
//!
//! - hardsigmoid gate: `g = min(max(f32(v + 3), 0), 6) / 6` (a true division);
//! - sigmoid gate: `g = 1 / f32(1 + e)`, `e` = Sleef's `expf_u10(-v)`
//!   (`Vectorized<float>::exp`, [`crate::ops::qsoftmax::sleef_expf_u10`]) in
//!   the body and in the tail;
//! - product `t = f32(g * x)`; sum `t = f32(a + b)`;
//! - hardswish: `t = f32(x * min(max(f32(x + 3), 0), 6))`, `h = t / 6`;
//! - quantize: `clamp(rint(f32(t * c)) + z, 0, 255)`, `c = f32(1.0 / s)` (the
//!   C++ literal is the f64 reciprocal; rounded to f32 it is `f32(1 / s)`,
//!   double rounding being innocuous for a quotient of f32s), ties to even,
//!   the zero point added after rounding ([`quantize_with_inv`]).
//!
//! Vectors: `tests/data/pt2e/inductor_x86_se/` (`tests/pt2e_inductor_se.rs`).

mod gpu;

#[doc(hidden)]
pub use gpu::{inductor_mode, InductorParams};

use serde_json::json;

use crate::error::{Error, Result};
use crate::model::{DType, TensorInfo, Value};
use crate::quant::{quantize_with_inv, QParams, Requant};

use super::{Attrs, CpuIo, FileOp, Lowered, NodeWriter, Op, OpKind, ParseCx, Signature};

pub(crate) const FILE_OPS: &[FileOp] = &[
    FileOp {
        name: "inductor_gate_mul",
        attributes: &["gate", "scale", "zero_point"],
        parse: |a: &Attrs<'_>, _: &ParseCx<'_>| {
            let g = a.get("gate")?;
            let gate = InductorGate::parse(g.as_str().ok_or_else(|| {
                Error::Model(format!(
                    "inductor_gate_mul: \"gate\" must be a string, got {g}"
                ))
            })?)?;
            Ok(Op::InductorGateMul {
                gate,
                out: a.qparams()?,
            })
        },
    },
    FileOp {
        name: "inductor_hardswish",
        attributes: &["scale", "zero_point"],
        parse: |a: &Attrs<'_>, _: &ParseCx<'_>| Ok(Op::InductorHardswish { out: a.qparams()? }),
    },
    FileOp {
        name: "inductor_add",
        attributes: &["scale", "zero_point"],
        parse: |a: &Attrs<'_>, _: &ParseCx<'_>| Ok(Op::InductorAdd { out: a.qparams()? }),
    },
];

/// The per-channel gate of [`Op::InductorGateMul`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InductorGate {
    /// `min(max(f32(v + 3), 0), 6) / 6` ([`inductor_hardsigmoid`]).
    Hardsigmoid,
    /// `1 / f32(1 + sleef_expf_u10(-v))` ([`inductor_sigmoid`]).
    Sigmoid,
}

impl InductorGate {
    /// The file form: `"hardsigmoid"` or `"sigmoid"`.
    pub fn name(self) -> &'static str {
        match self {
            InductorGate::Hardsigmoid => "hardsigmoid",
            InductorGate::Sigmoid => "sigmoid",
        }
    }
    /// Parses the file form.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "hardsigmoid" => Ok(InductorGate::Hardsigmoid),
            "sigmoid" => Ok(InductorGate::Sigmoid),
            _ => Err(Error::Model(format!(
                "inductor_gate_mul: gate {s:?} (known: \"hardsigmoid\", \"sigmoid\")"
            ))),
        }
    }
    /// The gate of one channel's `v2`.
    pub fn apply(self, v: f32) -> f32 {
        match self {
            InductorGate::Hardsigmoid => inductor_hardsigmoid(v),
            InductorGate::Sigmoid => inductor_sigmoid(v),
        }
    }
    fn code(self) -> u32 {
        match self {
            InductorGate::Hardsigmoid => 0,
            InductorGate::Sigmoid => 1,
        }
    }
}

/// `min(max(f32(v + 3), 0), 6)`: hardsigmoid's and hardswish's clamp
/// (`at::vec::maximum` / `minimum`).
#[inline]
fn relu6_plus3(v: f32) -> f32 {
    (v + 3.0).clamp(0.0, 6.0)
}

/// Inductor's hardsigmoid: `min(max(f32(v + 3), 0), 6) / 6`, a true
/// division (not a product by `f32(1/6)`).
pub fn inductor_hardsigmoid(v: f32) -> f32 {
    relu6_plus3(v) / 6.0
}

/// Inductor's sigmoid: `1 / f32(1 + e)` with `e = sleef_expf_u10(-v)`
/// (`at::vec`'s `exp`, also in the masked tail).
pub fn inductor_sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + super::qsoftmax::sleef_expf_u10(-v))
}

/// Inductor's hardswish before its quantize: `f32(x * min(max(f32(x + 3),
/// 0), 6)) / 6` (the product first, then a true division).
pub fn inductor_hardswish(x: f32) -> f32 {
    (x * relu6_plus3(x)) / 6.0
}

/// Inductor's `quantize_per_tensor` of an f32 value with the output's
/// qparams: `clamp(rint(f32(t * f32(1/s))) + z, 0, 255)`.
#[inline]
pub fn inductor_quantize(t: f32, out: QParams) -> u8 {
    quantize_with_inv(t, 1.0 / out.scale, out.zero_point)
}

/// One element of `inductor_gate_mul`: `quantize(f32(g * x))`, `g` the
/// channel's gate value ([`InductorGate::apply`]).
#[inline]
pub fn inductor_gate_mul(g: f32, x: f32, out: QParams) -> u8 {
    inductor_quantize(g * x, out)
}

fn check_engine(name: &str, engine: Requant) -> Result<()> {
    super::require_engine(
        name,
        engine,
        Requant::InductorX86,
        "is Inductor's generated C++ on f32 tensors",
    )?;
    Ok(())
}

fn float_input(name: &str, i: usize, x: &TensorInfo) -> Result<()> {
    if x.dtype != DType::F32 {
        return Err(Error::dtype(
            format!("{name} input {i}"),
            format!(
                "{} where float32 is needed (an f32 conv/linear output)",
                x.dtype.name()
            ),
        ));
    }
    Ok(())
}

fn check_out(name: &str, out: QParams) -> Result<()> {
    out.validate(&format!("{name} output"))?;
    if out.signed {
        return Err(Error::config(
            name,
            "qint8 output: Inductor's x86 quantize here writes quint8",
        ));
    }
    Ok(())
}

/// What every op here checks first: the engine, a quint8 output, and that
/// each input is float32.
fn check_float_op(name: &str, engine: Requant, out: QParams, ins: &[&TensorInfo]) -> Result<()> {
    check_engine(name, engine)?;
    check_out(name, out)?;
    for (i, x) in ins.iter().enumerate() {
        float_input(name, i, x)?;
    }
    Ok(())
}

/// The view of [`Op::InductorGateMul`].
pub(crate) struct GateMul {
    pub gate: InductorGate,
    pub out: QParams,
}

impl<'a> OpKind<'a> for GateMul {
    fn name(&self) -> &'static str {
        "inductor_gate_mul"
    }
    fn arity(&self) -> super::Arity {
        super::Arity::Exactly(2)
    }
    fn infer(&self, engine: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo> {
        let name = self.name();
        check_float_op(name, engine, self.out, ins)?;
        let (x, v) = (ins[0], ins[1]);
        let c = match *x.shape {
            [c, h, w] if c > 0 && h > 0 && w > 0 => c,
            _ => {
                return Err(Error::shape(
                    name,
                    format!("input 0 shape {:?}: expected [C, H, W], all >= 1", x.shape),
                ))
            }
        };
        match *v.shape {
            [k, 1, 1] | [k] if k == c => {}
            _ => {
                return Err(Error::shape(
                    name,
                    format!(
                        "input 1 (the gate's input) shape {:?}: expected [{c}, 1, 1] or [{c}] for input 0 of shape {:?}",
                        v.shape, x.shape
                    ),
                ))
            }
        }
        Ok(TensorInfo {
            shape: x.shape.clone(),
            dtype: DType::QUInt8(self.out),
        })
    }
    fn write(&self, w: &mut NodeWriter) {
        w.put("gate", json!(self.gate.name()));
        w.put_qparams(self.out);
    }
    fn lower(&self, sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
        Ok(Box::new(InductorLowered::new(
            Mode::Gate(self.gate),
            self.out,
            sig,
        )))
    }
}

/// The view of [`Op::InductorHardswish`].
pub(crate) struct Hardswish {
    pub out: QParams,
}

impl<'a> OpKind<'a> for Hardswish {
    fn name(&self) -> &'static str {
        "inductor_hardswish"
    }
    fn infer(&self, engine: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo> {
        let name = self.name();
        check_float_op(name, engine, self.out, ins)?;
        let x = ins[0];
        if x.shape.is_empty() || x.shape.len() > 3 || x.shape.contains(&0) {
            return Err(Error::shape(
                name,
                format!(
                    "input shape {:?}: expected [F], [C, H] or [C, H, W], all >= 1",
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
        w.put_qparams(self.out);
    }
    fn lower(&self, sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
        Ok(Box::new(InductorLowered::new(
            Mode::Hardswish,
            self.out,
            sig,
        )))
    }
}

/// The view of [`Op::InductorAdd`].
pub(crate) struct Add {
    pub out: QParams,
}

impl<'a> OpKind<'a> for Add {
    fn name(&self) -> &'static str {
        "inductor_add"
    }
    fn arity(&self) -> super::Arity {
        super::Arity::Exactly(2)
    }
    fn infer(&self, engine: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo> {
        let name = self.name();
        check_float_op(name, engine, self.out, ins)?;
        let (a, b) = (ins[0], ins[1]);
        if a.shape.is_empty() || a.shape.len() > 3 || a.shape.contains(&0) || a.shape != b.shape {
            return Err(Error::shape(
                name,
                format!(
                    "input shapes {:?} and {:?}: expected one shape [F], [C, H] or [C, H, W], all >= 1 (no broadcasting)",
                    a.shape, b.shape
                ),
            ));
        }
        Ok(TensorInfo {
            shape: a.shape.clone(),
            dtype: DType::QUInt8(self.out),
        })
    }
    fn write(&self, w: &mut NodeWriter) {
        w.put_qparams(self.out);
    }
    fn lower(&self, sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
        Ok(Box::new(InductorLowered::new(Mode::Add, self.out, sig)))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Gate(InductorGate),
    Hardswish,
    Add,
}

impl Mode {
    /// `inductor.wgsl`'s MODE: 0 hardsigmoid gate, 1 sigmoid gate, 2
    /// hardswish, 3 add.
    fn code(self) -> u32 {
        match self {
            Mode::Gate(g) => g.code(),
            Mode::Hardswish => 2,
            Mode::Add => 3,
        }
    }

    /// The op's name in the model file.
    fn op_name(self) -> &'static str {
        match self {
            Mode::Gate(_) => "inductor_gate_mul",
            Mode::Hardswish => "inductor_hardswish",
            Mode::Add => "inductor_add",
        }
    }
}

/// What both the CPU loop and `inductor.wgsl` read.
pub(crate) struct InductorLowered {
    pub mode: Mode,
    pub out: QParams,
    /// Channels (dim 0 of the per-sample shape).
    pub channels: usize,
    /// Elements per channel of one sample.
    pub plane: usize,
}

impl InductorLowered {
    /// The lowered op of `mode` over the signature's input 0 (channels its
    /// dim 0, the rest per channel).
    fn new(mode: Mode, out: QParams, sig: &Signature<'_>) -> InductorLowered {
        let s = &sig.inputs[0].shape;
        InductorLowered {
            mode,
            out,
            channels: s[0],
            plane: s[1..].iter().product(),
        }
    }
}

impl Lowered for InductorLowered {
    fn run_cpu(&self, io: &CpuIo<'_>) -> Result<Value> {
        let x = io.f32(0)?;
        let per = self.channels * self.plane;
        let mut y = super::try_vec(x.len(), 0u8, "inductor output")?;
        match self.mode {
            Mode::Hardswish => {
                for (o, &v) in y.iter_mut().zip(x) {
                    *o = inductor_quantize(inductor_hardswish(v), self.out);
                }
            }
            Mode::Add => {
                let b = io.f32(1)?;
                if b.len() != x.len() {
                    return Err(Error::shape(
                        "inductor_add",
                        format!("{} and {} values (one shape expected)", x.len(), b.len()),
                    ));
                }
                for ((o, &u), &v) in y.iter_mut().zip(x).zip(b) {
                    *o = inductor_quantize(u + v, self.out);
                }
            }
            Mode::Gate(g) => {
                let v2 = io.f32(1)?;
                if per == 0 || x.len() != io.batch * per || v2.len() != io.batch * self.channels {
                    return Err(Error::shape(
                        "inductor_gate_mul",
                        format!(
                            "{} and {} values for a batch of {} x {} channels x {} pixels",
                            x.len(),
                            v2.len(),
                            io.batch,
                            self.channels,
                            self.plane
                        ),
                    ));
                }
                for (k, (ys, xs)) in y
                    .chunks_mut(self.plane)
                    .zip(x.chunks(self.plane))
                    .enumerate()
                {
                    let gate = g.apply(v2[k]);
                    for (o, &v) in ys.iter_mut().zip(xs) {
                        *o = inductor_gate_mul(gate, v, self.out);
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
    fn gates_at_their_bends() {
        assert_eq!(inductor_hardsigmoid(-3.0), 0.0);
        assert_eq!(inductor_hardsigmoid(3.0), 1.0);
        assert_eq!(inductor_hardsigmoid(0.0), 0.5);
        assert_eq!(inductor_hardsigmoid(-1.5), 0.25);
        assert_eq!(inductor_sigmoid(0.0), 0.5);
        assert_eq!(inductor_sigmoid(-200.0), 0.0);
        assert_eq!(inductor_sigmoid(200.0), 1.0);
        assert_eq!(inductor_hardswish(-3.0), 0.0);
        assert_eq!(inductor_hardswish(3.0), 3.0);
        assert_eq!(
            InductorGate::parse("sigmoid").unwrap(),
            InductorGate::Sigmoid
        );
        assert!(InductorGate::parse("relu").is_err());
    }
}
