//! `qsoftmax` on the GPU: the lowered table uploaded once, one
//! `qsoftmax.wgsl` pass (one invocation per output word).

use super::{QSoftmaxLowered, SoftmaxRule};
use crate::error::Result;
use crate::gpu::node::{storage, GpuIo, GpuNode, Upload, UploadCx, WG};
use crate::gpu::{Dispatch, GpuContext, Kernel};

/// The uniform block of `qsoftmax.wgsl` (`total` is set per batch).
#[doc(hidden)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct QSoftmaxParams {
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub c4: u32,
    pub total: u32,
    /// The per-sample dim the softmax runs over (0: C, 1: H, 2: W).
    pub dim: u32,
    /// The output's zero point (the image's).
    pub zp_out: i32,
    /// `1 / s_out` (f32 bits; aten rule).
    pub inv_bits: u32,
    /// ATen's thread count (aten rule over a dim other than the last).
    pub threads: u32,
    pub pad: [u32; 3],
}

struct QSoftmaxNode {
    p: QSoftmaxParams,
    mode: u32,
    tab: wgpu::Buffer,
}

impl Upload for QSoftmaxLowered {
    fn upload(&self, cx: &UploadCx<'_>) -> Result<Box<dyn GpuNode>> {
        cx.ctx
            .check_storage_size("qsoftmax table (bytes)", self.tab.len() as u64 * 4)?;
        let [c, h, w] = self.chw;
        let p = QSoftmaxParams {
            c: c as u32,
            h: h as u32,
            w: w as u32,
            c4: (c as u32).div_ceil(4),
            total: 0,
            dim: self.dim as u32,
            zp_out: self.out.zero_point,
            inv_bits: (1.0f32 / self.out.scale).to_bits(),
            threads: self.threads.min(u32::MAX as usize) as u32,
            pad: [0; 3],
        };
        Ok(Box::new(QSoftmaxNode {
            p,
            mode: match self.rule {
                SoftmaxRule::Qnnpack => 0,
                SoftmaxRule::Aten if self.lastdim => 1,
                SoftmaxRule::Aten => 2,
            },
            tab: storage(
                cx.ctx,
                "qfuse qsoftmax table",
                bytemuck::cast_slice(&self.tab),
            ),
        }))
    }
}

impl GpuNode for QSoftmaxNode {
    fn record(&self, ctx: &GpuContext, io: &GpuIo<'_>) -> Result<Vec<Dispatch>> {
        let words = io.words();
        let mut p = self.p;
        p.total = words;
        Ok(vec![ctx.dispatch(
            Kernel::QSoftmax,
            &[("WG", WG as f64), ("MODE", self.mode as f64)],
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
