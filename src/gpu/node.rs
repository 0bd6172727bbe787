//! The GPU side of an op, as [`super::GpuModel`] drives it: each op family's
//! `gpu.rs` (under `src/ops/`) implements [`Upload`] for its lowered
//! constants (upload once, when the model is built) and [`GpuNode`] for what
//! it uploaded (record the dispatches for one batch size). The helpers the
//! table-driven ops share (`lut.wgsl`) are here too.

use wgpu::util::DeviceExt;

use super::{ConvVariant, Dispatch, GpuContext, Kernel};
use crate::error::Result;
use crate::layer::QLayer;
use crate::model::TensorInfo;
use crate::plan::Placement;

/// Invocations per workgroup of the op kernels.
pub(crate) const WG: u32 = 64;

/// What an upload sees.
pub(crate) struct UploadCx<'a> {
    pub ctx: &'a GpuContext,
    /// The kernel variant of each conv/linear layer.
    pub variant: &'a dyn Fn(&QLayer) -> ConvVariant,
    /// Per input: the info of the bytes its buffer holds (for a dequantize
    /// kept on the host, the quantized tensor it reads).
    pub stored: Vec<&'a TensorInfo>,
    /// Where the node's output lives.
    pub placement: &'a Placement,
    /// Per input: whether it is a float32 tensor computed on the GPU (NHWC4F
    /// words, see [`crate::layout`]) rather than a float32 model input (NCHW)
    /// or a host-side dequantize.
    pub gpu_f32: Vec<bool>,
}

/// Uploads an op's lowered constants (weights, tables) once.
pub(crate) trait Upload {
    fn upload(&self, cx: &UploadCx<'_>) -> Result<Box<dyn GpuNode>>;
}

/// An op's constants on the GPU; records its dispatches for one batch size.
pub(crate) trait GpuNode: wgpu::WasmNotSendSync {
    fn record(&self, ctx: &GpuContext, io: &GpuIo<'_>) -> Result<Vec<Dispatch>>;
    /// Bytes of weights and tables it holds on the GPU.
    fn bytes(&self) -> u64 {
        0
    }
    /// Whether the node rounds by ATen's vector/scalar split over the whole
    /// flat tensor (fbgemm `add`, `hardswish`): then its results depend on
    /// the batch size unless the per-sample element count is a multiple of
    /// [`crate::ops::VEC_SPLIT`], and a batch must not be run in pieces.
    fn vec_split(&self) -> bool {
        false
    }
}

/// A node that runs nothing on the GPU (an alias, a host-side dequantize).
pub(crate) struct Nothing;

impl GpuNode for Nothing {
    fn record(&self, _: &GpuContext, _: &GpuIo<'_>) -> Result<Vec<Dispatch>> {
        Ok(Vec::new())
    }
}

/// One input of a node on the GPU.
pub(crate) struct GpuInput<'a> {
    /// The buffer holding its bytes (packed NHWC4 quint8, or f32 NCHW for a
    /// float32 model input).
    pub buf: &'a wgpu::Buffer,
    /// The tensor's own info (one sample).
    pub info: &'a TensorInfo,
    /// The info of the bytes in `buf`: `info` itself, an aliased tensor of
    /// the same layout, or the quantized input of a host-side dequantize.
    pub stored: &'a TensorInfo,
}

/// A node's buffers for one batch size.
pub(crate) struct GpuIo<'a> {
    pub batch: usize,
    pub inputs: Vec<GpuInput<'a>>,
    pub output: &'a wgpu::Buffer,
    /// One sample's output info.
    pub out: &'a TensorInfo,
}

impl GpuIo<'_> {
    /// The output's `(c, h, w)`.
    pub fn out_chw(&self) -> (u32, u32, u32) {
        chw(self.out)
    }
    /// Words of the packed output (one invocation each).
    pub fn words(&self) -> u32 {
        let (oc, oh, ow) = self.out_chw();
        (self.batch as u32) * oh * ow * oc.div_ceil(4)
    }
}

/// `(c, h, w)` of one sample's info, as u32.
pub(crate) fn chw(info: &TensorInfo) -> (u32, u32, u32) {
    crate::layout::chw_u32(&info.shape)
}

/// A read-only storage buffer holding `bytes`.
pub(crate) fn storage(ctx: &GpuContext, label: &str, bytes: &[u8]) -> wgpu::Buffer {
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytes,
            usage: wgpu::BufferUsages::STORAGE,
        })
}

/// Two 256-entry byte tables as `lut.wgsl` reads them (one u32 per entry).
pub(crate) fn table_buffer(ctx: &GpuContext, a: &[u8; 256], b: &[u8; 256]) -> wgpu::Buffer {
    let t: Vec<u32> = a.iter().chain(b.iter()).map(|&v| v as u32).collect();
    storage(ctx, "qfuse table", bytemuck::cast_slice(&t))
}

/// The uniform block of `lut.wgsl`.
#[doc(hidden)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LutParams {
    pub oc: u32,
    pub oh: u32,
    pub ow: u32,
    pub oc4: u32,
    pub ic: u32,
    pub ih: u32,
    pub iw: u32,
    pub ic4: u32,
    pub c_off: u32,
    pub c_len: u32,
    pub split: u32,
    pub by_channel: u32,
    pub total: u32,
    pub merge: u32,
    /// (`split_nhwc` in `lut.wgsl`) nonzero: `split` counts elements in NHWC
    /// order (ATen's split of a channels-last tensor).
    pub pad0: u32,
    pub pad1: u32,
}

impl LutParams {
    /// Output `(c, h, w)`, input `(c, h, w)`, output words, the output channel
    /// range `(offset, count)` this input fills, the second table's split and
    /// whether it counts input channels (a concatenation: other bytes of shared
    /// words are kept) or flat NCHW elements.
    pub(crate) fn new(
        o: (u32, u32, u32),
        i: (u32, u32, u32),
        total: u32,
        (c_off, c_len): (u32, u32),
        split: u32,
        cat: bool,
    ) -> Self {
        LutParams {
            oc: o.0,
            oh: o.1,
            ow: o.2,
            oc4: o.0.div_ceil(4),
            ic: i.0,
            ih: i.1,
            iw: i.2,
            ic4: i.0.div_ceil(4),
            c_off,
            c_len,
            split,
            by_channel: cat as u32,
            total,
            merge: cat as u32,
            pad0: 0,
            pad1: 0,
        }
    }
}

/// One `lut.wgsl` dispatch applying `table` to the whole of input 0 (flat
/// split at `split`), as the elementwise table ops and relayouts do.
pub(crate) fn lut_dispatch(
    ctx: &GpuContext,
    io: &GpuIo<'_>,
    table: &wgpu::Buffer,
    split: u32,
) -> Result<Dispatch> {
    let x = &io.inputs[0];
    let words = io.words();
    let p = LutParams::new(
        io.out_chw(),
        chw(x.stored),
        words,
        (0, io.out_chw().0),
        split,
        false,
    );
    ctx.dispatch(
        Kernel::Lut,
        &[("WG", WG as f64)],
        bytemuck::bytes_of(&p),
        &[x.buf, table, io.output],
        words,
        WG,
    )
}

/// A table-driven op on the GPU: one table pair, applied to input 0.
pub(crate) struct TableNode {
    pub table: wgpu::Buffer,
    /// Whether the second table applies from ATen's vector split (flat index
    /// `n_vec(n * numel)` of the input) instead of never.
    pub vec_split: bool,
}

impl GpuNode for TableNode {
    fn record(&self, ctx: &GpuContext, io: &GpuIo<'_>) -> Result<Vec<Dispatch>> {
        let split = if self.vec_split {
            crate::ops::n_vec(io.batch * io.inputs[0].stored.numel()) as u32
        } else {
            u32::MAX
        };
        Ok(vec![lut_dispatch(ctx, io, &self.table, split)?])
    }
    fn bytes(&self) -> u64 {
        self.table.size()
    }
    fn vec_split(&self) -> bool {
        self.vec_split
    }
}
