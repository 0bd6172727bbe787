//! Shape ops on the GPU: a reshape that keeps the packed layout is an alias
//! (nothing runs); another is an identity-table `lut.wgsl` relayout; `cat`
//! runs one `lut.wgsl` pass per input, each writing its channel range.

use super::ShapeLowered;
use crate::error::Result;
use crate::gpu::node::{
    chw, table_buffer, GpuIo, GpuNode, LutParams, Nothing, TableNode, Upload, UploadCx, WG,
};
use crate::gpu::{Dispatch, GpuContext, Kernel};
use crate::plan::Placement;

struct CatNode {
    /// Per input: its table pair and the channel split.
    tables: Vec<(wgpu::Buffer, u32)>,
}

impl Upload for ShapeLowered {
    fn upload(&self, cx: &UploadCx<'_>) -> Result<Box<dyn GpuNode>> {
        Ok(match self {
            ShapeLowered::Copy if *cx.placement != Placement::Buffer => Box::new(Nothing),
            ShapeLowered::Copy => {
                let id: [u8; 256] = std::array::from_fn(|v| v as u8);
                Box::new(TableNode {
                    table: table_buffer(cx.ctx, &id, &id),
                    vec_split: false,
                })
            }
            ShapeLowered::Cat(tables) => Box::new(CatNode {
                tables: tables
                    .iter()
                    .map(|(a, b, split)| (table_buffer(cx.ctx, a, b), *split as u32))
                    .collect(),
            }),
        })
    }
}

impl GpuNode for CatNode {
    fn record(&self, ctx: &GpuContext, io: &GpuIo<'_>) -> Result<Vec<Dispatch>> {
        let words = io.words();
        let mut off = 0;
        let mut out = Vec::with_capacity(self.tables.len());
        for (x, (t, split)) in io.inputs.iter().zip(&self.tables) {
            let (ic, ih, iw) = chw(x.info);
            let p = LutParams::new(io.out_chw(), (ic, ih, iw), words, (off, ic), *split, true);
            out.push(ctx.dispatch(
                Kernel::Lut,
                &[("WG", WG as f64)],
                bytemuck::bytes_of(&p),
                &[x.buf, t, io.output],
                words,
                WG,
            )?);
            off += ic;
        }
        Ok(out)
    }
    fn bytes(&self) -> u64 {
        self.tables.iter().map(|(b, _)| b.size()).sum()
    }
}
