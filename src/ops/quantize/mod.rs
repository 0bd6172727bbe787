//! `quantize` (float32 to quint8, rule Q of `tests/data/ops/README.md`) and
//! `dequantize` (quint8 to float32). On the GPU a dequantize stays on the
//! host: after readback when it is a model output, or folded with the
//! quantize that reads it into one requantize table.

mod gpu;

pub use gpu::QuantizeParams;

use crate::error::{Error, Result};
use crate::model::{DType, TensorInfo, Value};
use crate::quant::{QParams, Requant};

use super::{
    dequant_scalar, dequant_vector, quantize_inv, quantized, Attrs, CpuIo, FileOp, Lowered,
    NodeWriter, Op, OpKind, ParseCx, Signature, Storage,
};

pub(crate) const FILE_OPS: &[FileOp] = &[
    FileOp {
        name: "quantize",
        attributes: &["scale", "zero_point"],
        parse: |a: &Attrs<'_>, _: &ParseCx<'_>| Ok(Op::Quantize(a.qparams()?)),
    },
    FileOp {
        name: "dequantize",
        attributes: &[],
        parse: |_: &Attrs<'_>, _: &ParseCx<'_>| Ok(Op::Dequantize),
    },
];

/// `quantize` to these qparams.
pub(crate) struct Quantize(pub QParams);

impl<'a> OpKind<'a> for Quantize {
    fn name(&self) -> &'static str {
        "quantize"
    }
    fn infer(&self, _: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo> {
        let x = ins[0];
        if x.qparams().is_some() {
            return Err(Error::dtype(
                "input",
                "already quantized; quantize takes float32",
            ));
        }
        self.0.validate("quantize output")?;
        Ok(TensorInfo {
            shape: x.shape.clone(),
            dtype: DType::QUInt8(self.0),
        })
    }
    fn write(&self, w: &mut NodeWriter) {
        w.put_qparams(self.0);
    }
    fn lower(&self, sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
        Ok(Box::new(QuantizeLowered {
            inv: self.0.inv_scale(),
            zp: self.0.zero_point,
            divide_by: (sig.engine == Requant::OnnxRuntime).then_some(self.0.scale),
        }))
    }
    fn reads_dequantized(&self) -> bool {
        true
    }
}

/// Rule Q's constants: `1/scale` (computed once) and the zero point; under
/// ONNX Runtime the scale to divide by instead (ORT's rule Q:
/// `sat(rint(x / scale) + zp)`, a true division; on the GPU `ort.wgsl`'s
/// exactly rounded `fdiv`).
pub(crate) struct QuantizeLowered {
    pub inv: f32,
    pub zp: i32,
    pub divide_by: Option<f32>,
}

impl QuantizeLowered {
    /// Rule Q on one value.
    #[inline]
    pub fn quantize(&self, x: f32) -> u8 {
        match self.divide_by {
            Some(s) => crate::ops::ort::quantize_div(x, s, self.zp),
            None => quantize_inv(x, self.inv, self.zp),
        }
    }
    /// `quantize(dequantize(v))` from `from` for every byte `v`: what a
    /// dequantize followed by this quantize computes (ORT's rule DQ
    /// `f32(q - zp) * s` is the same product as PyTorch's scalar one).
    pub fn requantize_table(&self, from: QParams) -> [u8; 256] {
        std::array::from_fn(|v| self.quantize(dequant_scalar(v as u8, from)))
    }
}

impl Lowered for QuantizeLowered {
    fn run_cpu(&self, io: &CpuIo<'_>) -> Result<Value> {
        let x = io.f32(0)?;
        io.q_out(x.iter().map(|&v| self.quantize(v)).collect())
    }
}

/// `dequantize`.
pub(crate) struct Dequantize;

impl<'a> OpKind<'a> for Dequantize {
    fn name(&self) -> &'static str {
        "dequantize"
    }
    fn infer(&self, _: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo> {
        quantized(ins[0])?;
        Ok(TensorInfo {
            shape: ins[0].shape.clone(),
            dtype: DType::F32,
        })
    }
    fn write(&self, _: &mut NodeWriter) {}
    fn lower(&self, sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
        Ok(Box::new(DequantizeLowered(sig.q_in(0)?)))
    }
    fn storage(&self, _: &[&TensorInfo], _: &TensorInfo) -> Storage {
        Storage::Host
    }
}

/// The input's qparams.
pub(crate) struct DequantizeLowered(pub QParams);

impl Lowered for DequantizeLowered {
    fn run_cpu(&self, io: &CpuIo<'_>) -> Result<Value> {
        let (x, _, _) = io.q(0)?;
        Ok(Value::F32 {
            data: self.0.dequantize_slice(x),
            shape: io.out_shape(),
        })
    }
}

/// `quantize(dequantize(q))` to new qparams (scalar dequantize, rule Q): what
/// `cat` does to inputs with other qparams, and what a `dequantize` followed by
/// a `quantize` computes.
pub fn requantize_table(from: QParams, to: QParams) -> [u8; 256] {
    QuantizeLowered {
        inv: to.inv_scale(),
        zp: to.zero_point,
        divide_by: None,
    }
    .requantize_table(from)
}

/// The same with the vector-path dequantize (ATen's channels-last cat).
pub fn requantize_table_vector(from: QParams, to: QParams) -> [u8; 256] {
    let inv = to.inv_scale();
    std::array::from_fn(|v| quantize_inv(dequant_vector(v as u8, from), inv, to.zero_point))
}
