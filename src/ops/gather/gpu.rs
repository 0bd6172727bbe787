//! `gather` on the GPU (`gather.wgsl`): the byte table built and uploaded
//! once, one pass per input.

use super::GatherLowered;
use crate::error::{Error, Result};
use crate::gpu::node::{storage, GpuIo, GpuNode, Upload, UploadCx, WG};
use crate::gpu::{Dispatch, GpuContext, Kernel};
use crate::layout::chw;

/// The uniform block of `gather.wgsl`.
#[doc(hidden)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GatherParams {
    pub total: u32,
    pub out_wps: u32,
    pub in_wps: u32,
    pub lo: u32,
    pub hi: u32,
    pub merge: u32,
    pub pad0: u32,
    pub pad1: u32,
}

/// Words per sample of a packed tensor of this per-sample shape.
fn wps(shape: &[usize]) -> usize {
    let (c, h, w) = chw(shape);
    h * w * c.div_ceil(4)
}

/// A packed output sample's byte table, and per input its words per sample
/// and first source byte position.
type Table = (Vec<u32>, Vec<(u32, u32)>);

struct GatherNode {
    table: wgpu::Buffer,
    out_wps: u32,
    /// Per input: its words per sample and its first source byte position.
    inputs: Vec<(u32, u32)>,
}

impl GatherLowered {
    /// Per byte of one packed output sample, its source byte position in the
    /// concatenated packed inputs (`u32::MAX` for padding, the index's own
    /// `FILL + b` for a fill byte `b`); per input, its
    /// words per sample and first byte position.
    fn table(&self, in_shapes: &[&[usize]]) -> Result<Table> {
        let too_large = |what: &str, needed: usize| Error::TooLarge {
            what: format!("gather {what} (packed bytes of one sample a u32 table addresses)"),
            needed: needed as u64,
            limit: super::FILL as u64 - 1,
        };
        // Element offset and packed byte offset of each input.
        let mut elem_off = Vec::with_capacity(in_shapes.len());
        let mut inputs = Vec::with_capacity(in_shapes.len());
        let (mut e, mut byte) = (0usize, 0usize);
        for s in in_shapes {
            elem_off.push(e);
            let w = wps(s);
            inputs.push((w as u32, byte as u32));
            e += s.iter().product::<usize>();
            byte = w
                .checked_mul(4)
                .and_then(|b| b.checked_add(byte))
                .filter(|&b| b < super::FILL as usize)
                .ok_or_else(|| too_large("inputs", usize::MAX))?;
        }
        let (oc, oh, ow) = chw(&self.out_shape);
        let ow4 = wps(&self.out_shape);
        let len = ow4 * 4;
        if len >= super::FILL as usize {
            return Err(too_large("output", len));
        }
        let mut t: Vec<u32> = crate::ops::try_vec(len, u32::MAX, "gather table")?;
        let oc4 = oc.div_ceil(4);
        for c in 0..oc {
            for y in 0..oh {
                for x in 0..ow {
                    let e = self.index[(c * oh + y) * ow + x];
                    let dst = ((y * ow + x) * oc4) * 4 + c;
                    if super::fill_byte(e).is_some() {
                        // The shader writes the byte itself (same encoding).
                        t[dst] = e;
                        continue;
                    }
                    let src = e as usize;
                    // The input holding element `src` (the last offset <= src).
                    let j = elem_off.partition_point(|&o| o <= src) - 1;
                    let local = src - elem_off[j];
                    let (ic, ih, iw) = chw(in_shapes[j]);
                    let (ch, r) = (local / (ih * iw), local % (ih * iw));
                    let pos = (r * ic.div_ceil(4) + ch / 4) * 4 + ch % 4;
                    debug_assert!(ch < ic);
                    t[dst] = inputs[j].1 + pos as u32;
                }
            }
        }
        Ok((t, inputs))
    }
}

impl Upload for GatherLowered {
    fn upload(&self, cx: &UploadCx<'_>) -> Result<Box<dyn GpuNode>> {
        let shapes: Vec<&[usize]> = if cx.stored.len() == self.in_shapes.len() {
            cx.stored.iter().map(|t| t.shape.as_slice()).collect()
        } else {
            self.in_shapes.iter().map(|s| s.as_slice()).collect()
        };
        let (t, inputs) = self.table(&shapes)?;
        cx.ctx
            .check_storage_size("gather index table (bytes)", t.len() as u64 * 4)?;
        Ok(Box::new(GatherNode {
            table: storage(cx.ctx, "qfuse gather table", bytemuck::cast_slice(&t)),
            out_wps: wps(&self.out_shape) as u32,
            inputs,
        }))
    }
}

impl GpuNode for GatherNode {
    fn record(&self, ctx: &GpuContext, io: &GpuIo<'_>) -> Result<Vec<Dispatch>> {
        let words = io.words();
        io.inputs
            .iter()
            .zip(&self.inputs)
            .enumerate()
            .map(|(j, (x, &(in_wps, lo)))| {
                let p = GatherParams {
                    total: words,
                    out_wps: self.out_wps,
                    in_wps,
                    lo,
                    hi: lo + in_wps * 4,
                    merge: (j > 0) as u32,
                    pad0: 0,
                    pad1: 0,
                };
                ctx.dispatch(
                    Kernel::Gather,
                    &[("WG", WG as f64)],
                    bytemuck::bytes_of(&p),
                    &[x.buf, &self.table, io.output],
                    words,
                    WG,
                )
            })
            .collect()
    }
    fn bytes(&self) -> u64 {
        self.table.size()
    }
}
