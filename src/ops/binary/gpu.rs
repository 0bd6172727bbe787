//! `add` on the GPU (`add.wgsl`): the dequantize tables uploaded once, the
//! lowered uniforms completed with the batch's word count and vector split.

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
        p.split = crate::ops::n_vec(io.batch * a.info.numel()) as u32;
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
