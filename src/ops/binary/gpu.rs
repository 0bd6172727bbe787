//! `add` on the GPU (`add.wgsl`): the dequantize tables uploaded once, the
//! lowered uniforms completed with the batch's word count and vector split.

use super::table::BinaryLowered;
use super::{AddLowered, AddParams};
use crate::error::Result;
use crate::gpu::node::{storage, GpuIo, GpuNode, Upload, UploadCx, WG};
use crate::gpu::{Dispatch, GpuContext, Kernel};

struct AddNode {
    p: AddParams,
    tables: wgpu::Buffer,
}

impl Upload for AddLowered {
    fn upload(&self, cx: &UploadCx<'_>) -> Result<Box<dyn GpuNode>> {
        Ok(Box::new(AddNode {
            p: self.p,
            tables: storage(
                cx.ctx,
                "qfuse add tables",
                bytemuck::cast_slice(&self.tables),
            ),
        }))
    }
}

impl GpuNode for AddNode {
    fn record(&self, ctx: &GpuContext, io: &GpuIo<'_>) -> Result<Vec<Dispatch>> {
        let (a, b) = (&io.inputs[0], &io.inputs[1]);
        let words = io.words();
        let mut p = self.p;
        p.total = words;
        p.split = if p.order == super::ADD_SPLIT_NONE {
            0
        } else {
            crate::ops::n_vec(io.batch * a.info.numel()) as u32
        };
        Ok(vec![ctx.dispatch(
            Kernel::Add,
            &[("WG", WG as f64)],
            bytemuck::bytes_of(&p),
            &[a.buf, b.buf, &self.tables, io.output],
            words,
            WG,
        )?])
    }
    fn bytes(&self) -> u64 {
        self.tables.size()
    }
    fn vec_split(&self) -> bool {
        self.p.qnnpack == 0
    }
}

// ---------------------------------------------------------------------------
// `binary` / `mul` (`binary.wgsl`): the 65,536-entry table uploaded once.

/// The uniform block of `binary.wgsl`; `total` is set per batch.
#[doc(hidden)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BinaryParams {
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub c4: u32,
    pub bc: u32,
    pub bh: u32,
    pub bw: u32,
    pub bc4: u32,
    pub s0: u32,
    pub s1: u32,
    pub s2: u32,
    pub total: u32,
}

struct BinaryNode {
    p: BinaryParams,
    table: wgpu::Buffer,
}

impl Upload for BinaryLowered {
    fn upload(&self, cx: &UploadCx<'_>) -> Result<Box<dyn GpuNode>> {
        let u = |v: usize| v as u32;
        let (a, b, s) = (self.bc.a, self.bc.b, self.bc.src);
        Ok(Box::new(BinaryNode {
            p: BinaryParams {
                c: u(a[0]),
                h: u(a[1]),
                w: u(a[2]),
                c4: u(a[0].div_ceil(4)),
                bc: u(b[0]),
                bh: u(b[1]),
                bw: u(b[2]),
                bc4: u(b[0].div_ceil(4)),
                s0: u(s[0]),
                s1: u(s[1]),
                s2: u(s[2]),
                total: 0,
            },
            table: storage(cx.ctx, "qfuse binary table", &self.table),
        }))
    }
}

impl GpuNode for BinaryNode {
    fn record(&self, ctx: &GpuContext, io: &GpuIo<'_>) -> Result<Vec<Dispatch>> {
        let (a, b) = (&io.inputs[0], &io.inputs[1]);
        let words = io.words();
        let mut p = self.p;
        p.total = words;
        Ok(vec![ctx.dispatch(
            Kernel::Binary,
            &[("WG", WG as f64)],
            bytemuck::bytes_of(&p),
            &[a.buf, b.buf, &self.table, io.output],
            words,
            WG,
        )?])
    }
    fn bytes(&self) -> u64 {
        self.table.size()
    }
}
