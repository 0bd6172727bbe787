//! `quantize` on the GPU: `quantize.wgsl` from a float32 model input or an
//! f32 tensor computed on the GPU (a conv with an f32 output), or one
//! `lut.wgsl` requantize table when it reads a host-side dequantize.
//! `dequantize` records nothing (its bytes are read back and dequantized).

use super::{DequantizeLowered, QuantizeLowered};
use crate::error::{Error, Result};
use crate::gpu::node::{
    chw, table_buffer, GpuIo, GpuNode, Nothing, TableNode, Upload, UploadCx, WG,
};
use crate::gpu::{Dispatch, GpuContext, Kernel};
use crate::ops::ort::gpu::OrtNode;
use crate::ops::ort::{OrtMode, OrtParams};

/// The uniform block of `quantize.wgsl`.
#[doc(hidden)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct QuantizeParams {
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub c4: u32,
    pub total: u32,
    pub zp: i32,
    pub inv: f32,
    pub pad: u32,
}

struct QuantizeNode {
    inv: f32,
    zp: i32,
    /// The input is NHWC4F words (an f32 tensor computed on the GPU), not
    /// an NCHW float32 model input.
    nhwc: bool,
}

impl Upload for QuantizeLowered {
    fn upload(&self, cx: &UploadCx<'_>) -> Result<Box<dyn GpuNode>> {
        Ok(match cx.stored[0].qparams() {
            // dequantize -> quantize: one requantize table.
            Some(from) => {
                let t = self.requantize_table(from);
                Box::new(TableNode {
                    table: table_buffer(cx.ctx, &t, &t),
                    vec_split: false,
                })
            }
            // An f32 tensor computed on the GPU (NHWC4F words): quantize.wgsl.
            None if cx.gpu_f32[0] => {
                if self.divide_by.is_some() {
                    return Err(Error::Unsupported(
                        "ONNX Runtime's quantize of a float32 tensor computed on the GPU".into(),
                    ));
                }
                Box::new(QuantizeNode {
                    inv: self.inv,
                    zp: self.zp,
                    nhwc: true,
                })
            }
            // ONNX Runtime's rule Q: ort.wgsl, exact division.
            None if self.divide_by.is_some() => {
                let (c, h, w) = chw(cx.stored[0]);
                let p = OrtParams {
                    c,
                    h,
                    w,
                    c4: c.div_ceil(4),
                    oh: h,
                    ow: w,
                    bits: self.divide_by.unwrap_or(1.0).to_bits(),
                    zp_out: self.zp,
                    ..Default::default()
                };
                Box::new(OrtNode::new(cx.ctx, p, OrtMode::Quantize, &[0])?)
            }
            None => Box::new(QuantizeNode {
                inv: self.inv,
                zp: self.zp,
                nhwc: false,
            }),
        })
    }
}

impl GpuNode for QuantizeNode {
    fn record(&self, ctx: &GpuContext, io: &GpuIo<'_>) -> Result<Vec<Dispatch>> {
        let x = &io.inputs[0];
        if x.stored.qparams().is_some() {
            return Err(Error::Unsupported(
                "quantize of a quantized tensor on the GPU".into(),
            ));
        }
        let (c, h, w) = chw(x.info);
        let words = io.words();
        let p = QuantizeParams {
            c,
            h,
            w,
            c4: c.div_ceil(4),
            total: words,
            zp: self.zp,
            inv: self.inv,
            pad: 0,
        };
        Ok(vec![ctx.dispatch(
            Kernel::Quantize,
            &[("WG", WG as f64), ("NHWC", self.nhwc as u8 as f64)],
            bytemuck::bytes_of(&p),
            &[x.buf, io.output],
            words,
            WG,
        )?])
    }
}

impl Upload for DequantizeLowered {
    fn upload(&self, _: &UploadCx<'_>) -> Result<Box<dyn GpuNode>> {
        Ok(Box::new(Nothing))
    }
}
