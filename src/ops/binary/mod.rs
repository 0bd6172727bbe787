//! Elementwise binary ops: `binary` and `mul` (65,536-entry tables with
//! broadcasting, in `table.rs`), and `add` / `add_relu` with their own output qparams
//! (rules in `tests/data/ops/README.md`). Lowered once into [`AddParams`]
//! (the `add.wgsl` uniforms: QNNPACK's fixed-point multipliers, `1/so`, the
//! clamp) and the dequantize tables of both inputs; the CPU loop below and
//! the GPU kernel read the same constants.

mod gpu;
mod table;

#[doc(hidden)]
pub use gpu::BinaryParams;
pub use table::{
    ort_add_table, ort_mul_table, pytorch_mul_table, transpose_table, BINARY_TABLE_LEN,
};
pub(crate) use table::{Binary, Mul};

use serde_json::json;

use crate::error::{Error, Result};
use crate::model::{DType, TensorInfo, Value};
use crate::quant::{Activation, QParams, Requant};

use super::{
    dequant_scalar, dequant_vector, n_vec, quantize_inv, quantized, Arity, Attrs, CpuIo, FileOp,
    Lowered, NodeWriter, Op, OpKind, ParseCx, Signature,
};

pub(crate) const FILE_OPS: &[FileOp] = &[ADD_FILE_OP, table::BINARY_FILE_OP, table::MUL_FILE_OP];

const ADD_FILE_OP: FileOp = FileOp {
    name: "add",
    attributes: &["activation", "scale", "zero_point"],
    parse: |a: &Attrs<'_>, _: &ParseCx<'_>| {
        Ok(Op::Add {
            relu: a.activation()? == Activation::Relu,
            out: a.qparams()?,
        })
    },
};

/// `add` (with a fused ReLU or not) to output qparams `out`.
pub(crate) struct Add {
    pub relu: bool,
    pub out: QParams,
}

impl<'a> OpKind<'a> for Add {
    fn name(&self) -> &'static str {
        "add"
    }
    fn arity(&self) -> Arity {
        Arity::Exactly(2)
    }
    fn infer(&self, engine: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo> {
        if engine == Requant::Xnnpack {
            return Err(Error::config(
                "add",
                "follows PyTorch's rule; under the xnnpack engine add is a `binary` op \
                 (ops::xnnpack_add_table)",
            ));
        }
        if engine == Requant::InductorX86 {
            return Err(Error::config(
                "add",
                "follows PyTorch's rule; under the inductor_x86 engine add is a `binary` op \
                 (the exporter's table of Inductor's float add)",
            ));
        }
        let qa = quantized(ins[0])?;
        let qb = ins[1]
            .qparams()
            .ok_or_else(|| Error::dtype("second input", "float32; add takes quint8"))?;
        if ins[0].shape != ins[1].shape {
            return Err(Error::shape(
                "add inputs",
                format!(
                    "{:?} and {:?} differ (no broadcasting)",
                    ins[0].shape, ins[1].shape
                ),
            ));
        }
        self.out.validate("add output")?;
        if engine == Requant::Qnnpack {
            qnnpack_add_params(qa, qb, self.out, self.relu)?;
        }
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
        let (qa, qb, qo) = (sig.q_in(0)?, sig.q_in(1)?, self.out);
        let (c, h, w) = crate::layout::chw_u32(&sig.inputs[0].shape);
        let mut p = AddParams {
            c,
            h,
            w,
            c4: c.div_ceil(4),
            total: 0,
            split: 0,
            qnnpack: 0,
            relu: self.relu as u32,
            inv: 1.0 / qo.scale,
            zo: qo.zero_point,
            lo: if self.relu { qo.zero_point } else { 0 },
            shift: 0,
            ma: 0,
            mb: 0,
            za: qa.zero_point,
            zb: qb.zero_point,
            order: ADD_SPLIT_NCHW,
            pad0: 0,
            pad1: 0,
            pad2: 0,
        };
        p.order = add_split_order(sig);
        if sig.engine == Requant::Qnnpack {
            let (ma, mb, shift) = qnnpack_add_params(qa, qb, qo, self.relu)?;
            p.qnnpack = 1;
            (p.ma, p.mb, p.shift) = (ma, mb, shift);
        }
        let mut tables: Vec<f32> = Vec::with_capacity(1024);
        for q in [qa, qb] {
            tables.extend((0..256).map(|v| dequant_vector(v as u8, q)));
            tables.extend((0..256).map(|v| dequant_scalar(v as u8, q)));
        }
        Ok(Box::new(AddLowered { p, tables }))
    }
}

/// `AddParams::order`: ATen's vector/scalar split counted in NCHW order (both
/// inputs contiguous).
pub const ADD_SPLIT_NCHW: u32 = 0;
/// ... counted in NHWC order (both inputs channels-last: every residual add
/// of two conv outputs).
pub const ADD_SPLIT_NHWC: u32 = 1;
/// Every element on the scalar path (one input contiguous, the other
/// channels-last: TensorIterator cannot vectorize the inner loop).
pub const ADD_SPLIT_NONE: u32 = 2;

/// How fbgemm's `qadd` splits its elements between the vector body and the
/// scalar tail, from the inputs' memory formats in PyTorch (a tensor in
/// [`crate::memory_format::both_formats`] is either).
fn add_split_order(sig: &Signature<'_>) -> u32 {
    let fmt = |i: usize| {
        let both = crate::memory_format::both_formats(&sig.inputs[i].shape);
        (!both).then(|| sig.channels_last.get(i).copied().unwrap_or(false))
    };
    match (fmt(0), fmt(1)) {
        (Some(a), Some(b)) if a != b => ADD_SPLIT_NONE,
        (Some(true), _) | (_, Some(true)) => ADD_SPLIT_NHWC,
        _ => ADD_SPLIT_NCHW,
    }
}

/// The uniform block of `add.wgsl`; `total` and `split` depend on the batch
/// and are set when a batch is recorded.
#[doc(hidden)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AddParams {
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub c4: u32,
    pub total: u32,
    pub split: u32,
    pub qnnpack: u32,
    pub relu: u32,
    pub inv: f32,
    pub zo: i32,
    pub lo: i32,
    pub shift: u32,
    pub ma: i32,
    pub mb: i32,
    pub za: i32,
    pub zb: i32,
    /// [`ADD_SPLIT_NCHW`], [`ADD_SPLIT_NHWC`] or [`ADD_SPLIT_NONE`].
    pub order: u32,
    pub pad0: u32,
    pub pad1: u32,
    pub pad2: u32,
}

/// An add's constants: the uniforms and `[D_v(a), D_s(a), D_v(b), D_s(b)]`
/// (256 each) for fbgemm's two dequantizes.
pub(crate) struct AddLowered {
    pub p: AddParams,
    pub tables: Vec<f32>,
}

impl Lowered for AddLowered {
    fn run_cpu(&self, io: &CpuIo<'_>) -> Result<Value> {
        let ((a, sa, _), (b, sb, _)) = (io.q(0)?, io.q(1)?);
        if sa != sb || a.len() != b.len() {
            return Err(Error::shape("add inputs", format!("{sa:?} and {sb:?}")));
        }
        let p = &self.p;
        let n = a.len();
        let y = if p.qnnpack != 0 {
            (0..n)
                .map(|i| qnnpack_add_elem(a[i], b[i], p.za, p.zb, p.ma, p.mb, p.shift, p.zo, p.lo))
                .collect()
        } else {
            let nv = if p.order == ADD_SPLIT_NONE {
                0
            } else {
                n_vec(n)
            };
            let nhwc = p.order == ADD_SPLIT_NHWC;
            let (c, h, w) = (p.c as usize, p.h as usize, p.w as usize);
            let t = &self.tables;
            (0..n)
                .map(|i| {
                    // the element's index in PyTorch's memory order
                    let m = if nhwc {
                        let (xw, r) = (i % w, i / w);
                        let (y, r) = (r % h, r / h);
                        let (ch, b) = (r % c, r / c);
                        ((b * h + y) * w + xw) * c + ch
                    } else {
                        i
                    };
                    let off = if m < nv { 0 } else { 256 };
                    let mut c = t[a[i] as usize + off] + t[512 + b[i] as usize + off];
                    if p.relu != 0 {
                        c = c.max(0.0);
                    }
                    quantize_inv(c, p.inv, p.zo)
                })
                .collect()
        };
        io.q_out(y)
    }
}

/// The qnnpack add's fixed-point constants: `(ma, mb, shift)`.
pub fn qnnpack_add_params(
    a: QParams,
    b: QParams,
    out: QParams,
    relu: bool,
) -> Result<(i32, i32, u32)> {
    let ra = a.scale / out.scale;
    let rb = b.scale / out.scale;
    for (name, r) in [("first", ra), ("second", rb)] {
        if !(r >= 2f32.powi(-14) && r < 256.0) {
            return Err(Error::Unsupported(format!(
                "qnnpack add: {name} input scale / output scale = {r:e} is outside QNNPACK's range [2^-14, 2^8)"
            )));
        }
    }
    if relu && out.zero_point == 255 {
        return Err(Error::Unsupported(
            "qnnpack add_relu with output zero point 255 (QNNPACK refuses it)".into(),
        ));
    }
    let e = ((ra.max(rb).to_bits() >> 23) as i32) - 127;
    let shift = (21 - e) as u32;
    let scale = 2f32.powi(shift as i32);
    Ok((
        (ra * scale).round_ties_even() as i32,
        (rb * scale).round_ties_even() as i32,
        shift,
    ))
}

/// QNNPACK's per-element add: round half away from zero of `acc / 2^shift`.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn qnnpack_add_elem(
    qa: u8,
    qb: u8,
    za: i32,
    zb: i32,
    ma: i32,
    mb: i32,
    shift: u32,
    zo: i32,
    lo: i32,
) -> u8 {
    let acc = ma
        .wrapping_mul(qa as i32 - za)
        .wrapping_add(mb.wrapping_mul(qb as i32 - zb));
    let mask = ((1i64 << shift) - 1) as i32;
    let rem = (acc & mask) - (acc < 0) as i32;
    let r = (acc >> shift) + (rem > (mask >> 1)) as i32;
    (r + zo).clamp(lo, 255) as u8
}
