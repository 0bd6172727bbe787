//! The table ops on the GPU: both tables uploaded once, one `lut.wgsl` pass.

use super::TableLowered;
use crate::error::Result;
use crate::gpu::node::{
    chw, table_buffer, GpuIo, GpuNode, LutParams, TableNode, Upload, UploadCx, WG,
};
use crate::gpu::{Dispatch, GpuContext, Kernel};

impl Upload for TableLowered {
    fn upload(&self, cx: &UploadCx<'_>) -> Result<Box<dyn GpuNode>> {
        let table = table_buffer(cx.ctx, &self.vec, &self.tail);
        Ok(if self.vec_split && self.nhwc {
            Box::new(NhwcSplitNode { table })
        } else {
            Box::new(TableNode {
                table,
                vec_split: self.vec_split,
            })
        })
    }
}

/// A table pair whose second table applies from ATen's vector split counted
/// in NHWC order (the input is channels-last in PyTorch).
struct NhwcSplitNode {
    table: wgpu::Buffer,
}

impl GpuNode for NhwcSplitNode {
    fn record(&self, ctx: &GpuContext, io: &GpuIo<'_>) -> Result<Vec<Dispatch>> {
        let x = &io.inputs[0];
        let split = crate::ops::n_vec(io.batch * x.stored.numel()) as u32;
        let words = io.words();
        let mut p = LutParams::new(
            io.out_chw(),
            chw(x.stored),
            words,
            (0, io.out_chw().0),
            split,
            false,
        );
        p.pad0 = 1; // split_nhwc
        Ok(vec![ctx.dispatch(
            Kernel::Lut,
            &[("WG", WG as f64)],
            bytemuck::bytes_of(&p),
            &[x.buf, &self.table, io.output],
            words,
            WG,
        )?])
    }
    fn bytes(&self) -> u64 {
        self.table.size()
    }
    fn vec_split(&self) -> bool {
        true
    }
}
