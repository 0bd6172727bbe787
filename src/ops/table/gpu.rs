//! The table ops on the GPU: both tables uploaded once, one `lut.wgsl` pass.

use super::TableLowered;
use crate::error::Result;
use crate::gpu::node::{table_buffer, GpuNode, TableNode, Upload, UploadCx};

impl Upload for TableLowered {
    fn upload(&self, cx: &UploadCx<'_>) -> Result<Box<dyn GpuNode>> {
        Ok(Box::new(TableNode {
            table: table_buffer(cx.ctx, &self.vec, &self.tail),
            vec_split: self.vec_split,
        }))
    }
}
