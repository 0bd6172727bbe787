//! `conv2d` / `linear` on the GPU: a [`GpuLayer`] (packed weights and the
//! epilogue records, uploaded once) in the variant the model's chooser picks.

use super::ConvLowered;
use crate::error::Error;
use crate::error::Result;
use crate::gpu::node::{chw, table_buffer, GpuIo, GpuNode, LutParams, Upload, UploadCx, WG};
use crate::gpu::{Dispatch, GpuContext, GpuLayer, Kernel};

impl Upload for ConvLowered<'_> {
    fn upload(&self, cx: &UploadCx<'_>) -> Result<Box<dyn GpuNode>> {
        let sum_float = matches!(
            self.0.epilogue.form,
            crate::quant::EpilogueForm::OnednnSumFloat { .. }
        );
        if self.0.global_pool() || sum_float {
            // The pooled pass reads split-K's partial accumulators: the
            // chooser's split-K or tensor-core variant (one split at least),
            // else one split.
            let v = match (cx.variant)(self.0) {
                v @ (crate::gpu::ConvVariant::SplitK {
                    splits: Some(_), ..
                }
                | crate::gpu::ConvVariant::Coop { .. }) => v,
                _ => crate::gpu::ConvVariant::SplitK {
                    splits: Some(1),
                    tiles: None,
                },
            };
            return Ok(Box::new(SumPoolLayer(GpuLayer::with_variant(
                cx.ctx, self.0, v,
            )?)));
        }
        let layer = GpuLayer::with_variant(cx.ctx, self.0, (cx.variant)(self.0))?;
        if self.0.sum_input().is_some() {
            let ident: [u8; 256] = std::array::from_fn(|i| i as u8);
            return Ok(Box::new(SumLayer {
                layer,
                ident: table_buffer(cx.ctx, &ident, &ident),
            }));
        }
        Ok(Box::new(layer))
    }
}

/// A conv with oneDNN's sum post-op: an identity `lut.wgsl` dispatch copies
/// the addend (input 1, the output's shape and layout) into the output
/// buffer, then the conv's epilogue (form 3) reads each output word before
/// writing it (`requant_at` in `shaders/common.wgsl`). The output never
/// shares a buffer with an input (`plan::assign_buffers`).
struct SumLayer {
    layer: GpuLayer,
    ident: wgpu::Buffer,
}

impl GpuNode for SumLayer {
    fn record(&self, ctx: &GpuContext, io: &GpuIo<'_>) -> Result<Vec<Dispatch>> {
        let a = &io.inputs[1];
        let words = io.words();
        let p = LutParams::new(
            io.out_chw(),
            chw(a.stored),
            words,
            (0, io.out_chw().0),
            u32::MAX,
            false,
        );
        let copy = ctx.dispatch(
            Kernel::Lut,
            &[("WG", WG as f64)],
            bytemuck::bytes_of(&p),
            &[a.buf, &self.ident, io.output],
            words,
            WG,
        )?;
        let mut d = vec![copy];
        d.extend(self.layer.record(ctx, io)?);
        Ok(d)
    }
    fn bytes(&self) -> u64 {
        self.layer.bytes() + self.ident.size()
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

/// A conv (with oneDNN's sum post-op or without), f32 output, and a global
/// average, or oneDNN's sum with an f32 output ([`GpuLayer::dispatch_pool`]).
struct SumPoolLayer(GpuLayer);

impl GpuNode for SumPoolLayer {
    fn record(&self, ctx: &GpuContext, io: &GpuIo<'_>) -> Result<Vec<Dispatch>> {
        let x = &io.inputs[0];
        let q = x
            .stored
            .qparams()
            .ok_or_else(|| Error::dtype("conv2d input", "float32 on the GPU"))?;
        if q != self.0.layer().input() {
            return Err(Error::qparams(
                "conv2d input",
                format!(
                    "tensor has {q:?}, the layer was quantized for {:?}",
                    self.0.layer().input()
                ),
            ));
        }
        self.0.dispatch_pool(
            ctx,
            x.buf,
            &x.info.batched(io.batch),
            io.inputs.get(1).map(|a| a.buf),
            io.output,
        )
    }
    fn bytes(&self) -> u64 {
        self.0.gpu_weight_bytes()
    }
}
