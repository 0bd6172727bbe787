//! Pooling and mean on the GPU (`pool.wgsl`): the lowered table uploaded
//! once, the uniforms completed with the batch's word count.

use super::{MeanPath, PoolLowered, PoolMode, PoolParams};
use crate::error::{Error, Result};
use crate::gpu::node::{storage, GpuIo, GpuNode, Upload, UploadCx, WG};
use crate::gpu::{Dispatch, GpuContext, Kernel};

struct PoolNode {
    p: PoolParams,
    mode: PoolMode,
    tab: wgpu::Buffer,
}

impl Upload for PoolLowered {
    fn upload(&self, cx: &UploadCx<'_>) -> Result<Box<dyn GpuNode>> {
        if self.p.mean_path == MeanPath::F32 as u32 {
            // Every value the f32 path meets stays a normal f32 in this range.
            let s = self.p.scale;
            if !(2f32.powi(-60)..=2f32.powi(60)).contains(&s) {
                return Err(Error::Unsupported(format!(
                    "mean of a channels-last tensor with scale {s:e} on the GPU (exact for scales in [2^-60, 2^60])"
                )));
            }
        } else if !self.mean_exact {
            let (h, w) = (self.p.h, self.p.w);
            return Err(Error::Unsupported(format!(
                "mean over {h}x{w} = {} positions on the GPU (exact up to 32767)",
                h * w
            )));
        }
        cx.ctx
            .check_storage_size("pool table (bytes)", self.tab.len() as u64 * 4)?;
        Ok(Box::new(PoolNode {
            p: self.p,
            mode: self.mode,
            tab: storage(cx.ctx, "qfuse pool table", bytemuck::cast_slice(&self.tab)),
        }))
    }
}

impl GpuNode for PoolNode {
    fn record(&self, ctx: &GpuContext, io: &GpuIo<'_>) -> Result<Vec<Dispatch>> {
        let words = io.words();
        let mut p = self.p;
        p.total = words;
        Ok(vec![ctx.dispatch(
            Kernel::Pool,
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

/// `pool_f32.wgsl`: an f32 pool (max: f32 out; Inductor's average: quint8
/// out) over NHWC4F words or an NCHW float32 model input.
struct F32PoolNode {
    p: super::F32PoolParams,
    mode: super::float::F32PoolMode,
    nhwc: bool,
}

impl Upload for super::float::F32PoolLowered {
    fn upload(&self, cx: &UploadCx<'_>) -> Result<Box<dyn GpuNode>> {
        Ok(Box::new(F32PoolNode {
            p: self.p,
            mode: self.mode,
            nhwc: cx.gpu_f32[0],
        }))
    }
}

impl GpuNode for F32PoolNode {
    fn record(&self, ctx: &GpuContext, io: &GpuIo<'_>) -> Result<Vec<Dispatch>> {
        let words = match self.mode {
            // one f32 output word per invocation (NHWC4F: four per packed word)
            super::float::F32PoolMode::Max => io.words().checked_mul(4).ok_or_else(|| {
                Error::shape("max_pool2d output", "too many f32 words for one dispatch")
            })?,
            super::float::F32PoolMode::Avg => io.words(),
        };
        let mut p = self.p;
        p.total = words;
        Ok(vec![ctx.dispatch(
            Kernel::PoolF32,
            &[
                ("WG", WG as f64),
                ("MODE", self.mode as u32 as f64),
                ("NHWC", self.nhwc as u8 as f64),
            ],
            bytemuck::bytes_of(&p),
            &[io.inputs[0].buf, io.output],
            words,
            WG,
        )?])
    }
    fn bytes(&self) -> u64 {
        0
    }
}
