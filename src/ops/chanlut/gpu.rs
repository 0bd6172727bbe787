//! `channel_lut` on the GPU: the tables uploaded once (four bytes a word),
//! one `chanlut.wgsl` pass.

use super::ChannelLutLowered;
use crate::error::Result;
use crate::gpu::node::{chw, storage, GpuIo, GpuNode, Upload, UploadCx, WG};
use crate::gpu::{Dispatch, GpuContext, Kernel};

/// The uniform block of `chanlut.wgsl`.
#[doc(hidden)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ChannelLutParams {
    pub oc: u32,
    pub oh: u32,
    pub ow: u32,
    pub oc4: u32,
    pub ic: u32,
    pub ih: u32,
    pub iw: u32,
    pub ic4: u32,
    pub total: u32,
    pub pad0: u32,
    pub pad1: u32,
    pub pad2: u32,
}

struct ChannelLutNode {
    tables: wgpu::Buffer,
}

impl Upload for ChannelLutLowered {
    fn upload(&self, cx: &UploadCx<'_>) -> Result<Box<dyn GpuNode>> {
        cx.ctx
            .check_storage_size("channel_lut tables (bytes)", self.tables.len() as u64)?;
        Ok(Box::new(ChannelLutNode {
            tables: storage(cx.ctx, "qfuse channel tables", &self.tables),
        }))
    }
}

impl GpuNode for ChannelLutNode {
    fn record(&self, ctx: &GpuContext, io: &GpuIo<'_>) -> Result<Vec<Dispatch>> {
        let x = &io.inputs[0];
        let words = io.words();
        let (oc, oh, ow) = io.out_chw();
        let (ic, ih, iw) = chw(x.stored);
        let p = ChannelLutParams {
            oc,
            oh,
            ow,
            oc4: oc.div_ceil(4),
            ic,
            ih,
            iw,
            ic4: ic.div_ceil(4),
            total: words,
            ..Default::default()
        };
        Ok(vec![ctx.dispatch(
            Kernel::ChannelLut,
            &[("WG", WG as f64)],
            bytemuck::bytes_of(&p),
            &[x.buf, &self.tables, io.output],
            words,
            WG,
        )?])
    }
    fn bytes(&self) -> u64 {
        self.tables.size()
    }
}
