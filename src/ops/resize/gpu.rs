//! `resize` on the GPU (`resize.wgsl`): the lowered table uploaded
//! once, the uniforms completed with the batch's word count.

use super::ResizeLowered;
use crate::error::Result;
use crate::gpu::node::{storage, GpuIo, GpuNode, Upload, UploadCx, WG};
use crate::gpu::{Dispatch, GpuContext, Kernel};

/// The uniform block of `resize.wgsl` (`total` is set per batch).
#[doc(hidden)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ResizeParams {
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub c4: u32,
    pub oh: u32,
    pub ow: u32,
    pub total: u32,
    /// 1: rule Q to the output qparams; 0: truncation of true values.
    pub requant: u32,
    /// 1: output size == input size (ORT copies, then Q under `requant`).
    pub copy: u32,
    /// The output scale's f32 bits.
    pub s_out: u32,
    /// The output's zero point (image).
    pub zp_out: i32,
    /// The output type's offset (128 for int8).
    pub offset: i32,
    /// 1: mode cubic (5-word table entries).
    pub cubic: u32,
    /// Mode torch_bilinear: 0 no, 1 the contiguous kernel, 2 the NHWC one.
    pub torch: u32,
    /// Under `torch == 2`: channels below take the vector formula.
    pub body: u32,
    /// Padding to 16 bytes.
    pub pad: u32,
}

pub(crate) struct ResizeNode {
    p: ResizeParams,
    tab: wgpu::Buffer,
}

impl Upload for ResizeLowered {
    fn upload(&self, cx: &UploadCx<'_>) -> Result<Box<dyn GpuNode>> {
        cx.ctx
            .check_storage_size("resize table (bytes)", self.tab.len() as u64 * 4)?;
        Ok(Box::new(ResizeNode {
            p: self.p,
            tab: storage(
                cx.ctx,
                "qfuse resize table",
                bytemuck::cast_slice(&self.tab),
            ),
        }))
    }
}

impl GpuNode for ResizeNode {
    fn record(&self, ctx: &GpuContext, io: &GpuIo<'_>) -> Result<Vec<Dispatch>> {
        let words = io.words();
        let mut p = self.p;
        p.total = words;
        Ok(vec![ctx.dispatch(
            Kernel::Resize,
            &[("WG", WG as f64)],
            bytemuck::bytes_of(&p),
            &[io.inputs[0].buf, &self.tab, io.output],
            words,
            WG,
        )?])
    }
    fn bytes(&self) -> u64 {
        self.tab.size()
    }
}
