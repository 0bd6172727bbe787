//! `conv2d` / `linear` on the GPU: a [`GpuLayer`] (packed weights and the
//! epilogue records, uploaded once) in the variant the model's chooser picks.

use super::ConvLowered;
use crate::error::Error;
use crate::error::Result;
use crate::gpu::node::{GpuIo, GpuNode, Upload, UploadCx};
use crate::gpu::{Dispatch, GpuContext, GpuLayer};

impl Upload for ConvLowered<'_> {
    fn upload(&self, cx: &UploadCx<'_>) -> Result<Box<dyn GpuNode>> {
        Ok(Box::new(GpuLayer::with_variant(
            cx.ctx,
            self.0,
            (cx.variant)(self.0),
        )?))
    }
}

impl GpuNode for GpuLayer {
    fn record(&self, ctx: &GpuContext, io: &GpuIo<'_>) -> Result<Vec<Dispatch>> {
        let x = &io.inputs[0];
        let q = x
            .stored
            .qparams()
            .ok_or_else(|| Error::dtype("conv2d/linear input", "float32 on the GPU"))?;
        self.dispatch(ctx, x.buf, &x.info.batched(io.batch), q, io.output)
    }
    fn bytes(&self) -> u64 {
        self.gpu_weight_bytes()
    }
}
