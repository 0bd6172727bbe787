//! Quantized activations on the GPU: quint8 bytes packed 4 per u32 in the
//! NHWC4 layout (see [`crate::layout`]), with their qparams.

use wgpu::util::DeviceExt;

use super::GpuContext;
use crate::error::{Error, Result};
use crate::layout;
use crate::quant::QParams;

/// A quint8 tensor living on the GPU. Its logical shape is NCHW (`[N, C, H, W]`)
/// or `[N, K]`; its bytes are packed NHWC4.
pub struct GpuTensor {
    pub(crate) buffer: wgpu::Buffer,
    shape: Vec<usize>,
    qparams: QParams,
}

impl GpuTensor {
    pub(crate) fn usage() -> wgpu::BufferUsages {
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST
    }

    /// Bytes the tensor occupies on the GPU.
    pub fn gpu_bytes(shape: &[usize]) -> Result<u64> {
        Ok(layout::words(shape)? as u64 * 4)
    }

    /// Uploads quint8 NCHW data.
    pub fn upload(
        ctx: &GpuContext,
        data: &[u8],
        shape: &[usize],
        qparams: QParams,
    ) -> Result<Self> {
        qparams.validate("tensor")?;
        if shape.contains(&0) {
            return Err(Error::shape(
                "tensor",
                format!("shape {shape:?} has a zero dimension"),
            ));
        }
        let bytes = Self::gpu_bytes(shape)?;
        ctx.check_storage_size("activation tensor", bytes)?;
        let words = layout::pack(data, shape)?;
        let buffer = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("qfuse activation"),
                contents: bytemuck::cast_slice(&words),
                usage: Self::usage(),
            });
        Ok(GpuTensor {
            buffer,
            shape: shape.to_vec(),
            qparams,
        })
    }

    /// An uninitialised tensor of the given shape.
    pub fn empty(ctx: &GpuContext, shape: &[usize], qparams: QParams) -> Result<Self> {
        let bytes = Self::gpu_bytes(shape)?;
        ctx.check_storage_size("activation tensor", bytes)?;
        let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("qfuse activation"),
            size: bytes.max(4),
            usage: Self::usage(),
            mapped_at_creation: false,
        });
        Ok(GpuTensor {
            buffer,
            shape: shape.to_vec(),
            qparams,
        })
    }

    /// Views an existing buffer (at least [`GpuTensor::gpu_bytes`] long) as a
    /// tensor, e.g. a planned activation buffer shared by several tensors.
    pub fn from_buffer(buffer: wgpu::Buffer, shape: &[usize], qparams: QParams) -> Result<Self> {
        let bytes = Self::gpu_bytes(shape)?;
        if buffer.size() < bytes {
            return Err(Error::shape(
                "tensor buffer",
                format!("{} bytes, {bytes} needed for {shape:?}", buffer.size()),
            ));
        }
        Ok(GpuTensor {
            buffer,
            shape: shape.to_vec(),
            qparams,
        })
    }

    /// Reads the tensor back as quint8 NCHW bytes.
    pub fn download(&self, ctx: &GpuContext) -> Result<Vec<u8>> {
        let bytes = Self::gpu_bytes(&self.shape)?;
        let raw = ctx.read_buffer(&self.buffer, bytes)?;
        layout::unpack(bytemuck::cast_slice(&raw), &self.shape)
    }

    /// The logical NCHW (or `[N, F]`) shape, batch dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Scale and zero point of every element.
    pub fn qparams(&self) -> QParams {
        self.qparams
    }
    /// The storage buffer: the bytes packed NHWC4 (4 channels per `u32`
    /// word, channels padded to a multiple of 4; see [`crate::layout`]).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}
