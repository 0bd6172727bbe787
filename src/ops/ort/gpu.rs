//! ORT's ops on the GPU (`ort.wgsl`): the lowered table uploaded once, the
//! uniforms completed with the batch's word count. ORT's `quantize` uses the
//! same kernel (MODE 0, see `crate::ops::quantize`).

use super::{OrtLowered, OrtMode};
use crate::error::Result;
use crate::gpu::node::{storage, GpuIo, GpuNode, Upload, UploadCx, WG};
use crate::gpu::{Dispatch, GpuContext, Kernel};

/// The uniform block of `ort.wgsl` (`total` is set per batch).
#[doc(hidden)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct OrtParams {
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub c4: u32,
    pub oh: u32,
    pub ow: u32,
    pub total: u32,
    /// softmax: the per-sample axis (0: C, 1: H, 2: W).
    pub axis: u32,
    pub kh: u32,
    pub kw: u32,
    pub sh: u32,
    pub sw: u32,
    /// avg pool: the begin pads (top, left).
    pub pt: u32,
    pub pl: u32,
    /// avg pool: count_include_pad.
    pub cip: u32,
    /// The divisor's f32 bits: quantize's scale, avg pool's y_scale.
    pub bits: u32,
    /// The input's zero point (image).
    pub zp_in: i32,
    /// The output's zero point: the image's, except avg pool's (the true one).
    pub zp_out: i32,
    /// avg pool: the output type's offset (128 for qint8).
    pub offset: i32,
    /// global avg pool: the multiplier.
    pub m: f32,
}

/// One `ort.wgsl` dispatch over the output words.
pub(crate) struct OrtNode {
    pub p: OrtParams,
    pub mode: OrtMode,
    pub tab: wgpu::Buffer,
}

impl OrtNode {
    /// A node for `p` in `mode` with this table (f32 bit patterns; one dummy
    /// entry when the mode reads none).
    pub(crate) fn new(ctx: &GpuContext, p: OrtParams, mode: OrtMode, tab: &[u32]) -> Result<Self> {
        ctx.check_storage_size("ort table (bytes)", tab.len() as u64 * 4)?;
        Ok(OrtNode {
            p,
            mode,
            tab: storage(ctx, "qfuse ort table", bytemuck::cast_slice(tab)),
        })
    }
}

impl Upload for OrtLowered {
    fn upload(&self, cx: &UploadCx<'_>) -> Result<Box<dyn GpuNode>> {
        Ok(Box::new(OrtNode::new(
            cx.ctx, self.p, self.mode, &self.tab,
        )?))
    }
}

impl GpuNode for OrtNode {
    fn record(&self, ctx: &GpuContext, io: &GpuIo<'_>) -> Result<Vec<Dispatch>> {
        let words = io.words();
        let mut p = self.p;
        p.total = words;
        Ok(vec![ctx.dispatch(
            Kernel::Ort,
            &[("WG", WG as f64), ("MODE", self.mode as u32 as f64)],
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
