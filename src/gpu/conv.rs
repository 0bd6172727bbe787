//! The fused int8 conv2d / linear on the GPU (`shaders/conv2d.wgsl`).

use wgpu::util::DeviceExt;

use super::{GpuContext, GpuTensor, Kernel};
use crate::error::{Error, Result};
use crate::layer::{LayerKind, QLayer};

/// The kernel's uniform block (`Params` in `shaders/conv2d.wgsl`, 96 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ConvParams {
    pub n: u32,
    pub c4: u32,
    pub h: u32,
    pub w: u32,
    pub o: u32,
    pub o4: u32,
    pub oh: u32,
    pub ow: u32,
    pub kh: u32,
    pub kw: u32,
    pub stride_h: u32,
    pub stride_w: u32,
    pub pad_h: u32,
    pub pad_w: u32,
    pub dil_h: u32,
    pub dil_w: u32,
    pub cg: u32,
    pub og: u32,
    pub kq: u32,
    pub pad_word: u32,
    pub zp_out: i32,
    pub lo: i32,
    pub hi: i32,
    pub total: u32,
}

/// Which reduction the kernel runs (the `GATHER` override).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvVariant {
    /// Whole input words: one group, or channels per group a multiple of 4.
    Words,
    /// Bytes gathered 4 at a time across (ky, kx, c): any grouped/depthwise conv.
    Gather,
}

impl ConvVariant {
    /// The variant a layer uses by default.
    pub fn for_layer(layer: &QLayer) -> Self {
        let g = &layer.geometry;
        if g.groups == 1 || g.cin_per_group() % 4 == 0 {
            ConvVariant::Words
        } else {
            ConvVariant::Gather
        }
    }
}

const WG: u32 = 64;

/// A fused quantized conv2d/linear layer whose int8 weights and epilogue
/// constants live on the GPU (uploaded once, at creation).
pub struct GpuLayer {
    layer: QLayer,
    variant: ConvVariant,
    weights: wgpu::Buffer,
    chans: wgpu::Buffer,
    /// Weight words per output channel.
    kq: u32,
}

/// Packs a layer's int8 weights for a kernel variant (see `shaders/conv2d.wgsl`).
pub fn pack_weights(layer: &QLayer, variant: ConvVariant) -> (Vec<u32>, u32) {
    let g = &layer.geometry;
    let (cg, [kh, kw]) = (g.cin_per_group(), g.kernel);
    let byte = |oc: usize, ci: usize, ky: usize, kx: usize| {
        layer.weight[((oc * cg + ci) * kh + ky) * kw + kx] as u8 as u32
    };
    let mut out = Vec::new();
    let kq = match variant {
        ConvVariant::Words => {
            let cg4 = cg.div_ceil(4);
            for oc in 0..g.out_channels {
                for ky in 0..kh {
                    for kx in 0..kw {
                        for j in 0..cg4 {
                            let mut word = 0u32;
                            for l in 0..4 {
                                let ci = 4 * j + l;
                                if ci < cg {
                                    word |= byte(oc, ci, ky, kx) << (8 * l);
                                }
                            }
                            out.push(word);
                        }
                    }
                }
            }
            kh * kw * cg4
        }
        ConvVariant::Gather => {
            let k = kh * kw * cg;
            let kq = k.div_ceil(4);
            for oc in 0..g.out_channels {
                for q in 0..kq {
                    let mut word = 0u32;
                    for l in 0..4 {
                        let r = 4 * q + l;
                        if r < k {
                            let (ci, t) = (r % cg, r / cg);
                            word |= byte(oc, ci, t / kw, t % kw) << (8 * l);
                        }
                    }
                    out.push(word);
                }
            }
            kq
        }
    };
    (out, kq as u32)
}

impl GpuLayer {
    /// Uploads a layer's weights and epilogue constants, with the default variant.
    pub fn new(ctx: &GpuContext, layer: &QLayer) -> Result<Self> {
        Self::with_variant(ctx, layer, ConvVariant::for_layer(layer))
    }

    /// Uploads a layer for a given kernel variant (`Gather` runs any layer).
    pub fn with_variant(ctx: &GpuContext, layer: &QLayer, variant: ConvVariant) -> Result<Self> {
        if variant == ConvVariant::Words && ConvVariant::for_layer(layer) == ConvVariant::Gather {
            return Err(Error::config(
                "conv2d variant",
                "the word-wise kernel needs one group or C/groups divisible by 4",
            ));
        }
        let (words, kq) = pack_weights(layer, variant);
        ctx.check_storage_size("layer weights", words.len() as u64 * 4)?;
        let epi = layer
            .epilogue
            .shifted_for_signed_input(layer.input.zero_point, &layer.weight_sums());
        let weights = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("qfuse weights"),
                contents: bytemuck::cast_slice(&words),
                usage: wgpu::BufferUsages::STORAGE,
            });
        let chans = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("qfuse epilogue"),
                contents: bytemuck::cast_slice(&epi.channels),
                usage: wgpu::BufferUsages::STORAGE,
            });
        Ok(GpuLayer {
            layer: layer.clone(),
            variant,
            weights,
            chans,
            kq,
        })
    }

    pub fn layer(&self) -> &QLayer {
        &self.layer
    }
    pub fn variant(&self) -> ConvVariant {
        self.variant
    }

    /// Bytes of weights and per-channel constants held on the GPU.
    pub fn gpu_weight_bytes(&self) -> u64 {
        self.weights.size() + self.chans.size()
    }

    /// The uniform block for an input shape; also returns the output shape.
    pub fn params(&self, input_shape: &[usize]) -> Result<(ConvParams, Vec<usize>)> {
        let out_shape = self.layer.output_shape(input_shape)?;
        let g = &self.layer.geometry;
        let (n, c, h, w) = super::layout::nchw(input_shape)?;
        let (oh, ow) = if self.layer.kind == LayerKind::Linear {
            (1, 1)
        } else {
            (out_shape[2], out_shape[3])
        };
        let o4 = g.out_channels.div_ceil(4);
        let total = (n * oh * ow * o4) as u64;
        if total > u32::MAX as u64 / 2 {
            return Err(Error::TooLarge {
                what: "conv2d output words".into(),
                needed: total,
                limit: u32::MAX as u64 / 2,
            });
        }
        let zp = self.layer.input.zero_point as u32;
        let e = &self.layer.epilogue;
        let p = ConvParams {
            n: n as u32,
            c4: c.div_ceil(4) as u32,
            h: h as u32,
            w: w as u32,
            o: g.out_channels as u32,
            o4: o4 as u32,
            oh: oh as u32,
            ow: ow as u32,
            kh: g.kernel[0] as u32,
            kw: g.kernel[1] as u32,
            stride_h: g.stride[0] as u32,
            stride_w: g.stride[1] as u32,
            pad_h: g.padding[0] as u32,
            pad_w: g.padding[1] as u32,
            dil_h: g.dilation[0] as u32,
            dil_w: g.dilation[1] as u32,
            cg: g.cin_per_group() as u32,
            og: g.cout_per_group() as u32,
            kq: self.kq,
            pad_word: zp * 0x0101_0101,
            zp_out: e.zero_point,
            lo: e.lo,
            hi: e.hi,
            total: total as u32,
        };
        Ok((p, out_shape))
    }

    /// Builds this layer's one dispatch reading `input` (an NHWC4 tensor of
    /// `input_shape` quantized with `input_q`) and writing `output`.
    pub fn dispatch(
        &self,
        ctx: &GpuContext,
        input: &wgpu::Buffer,
        input_shape: &[usize],
        input_q: crate::quant::QParams,
        output: &wgpu::Buffer,
    ) -> Result<super::Dispatch> {
        if input_q != self.layer.input {
            return Err(Error::qparams(
                "conv2d input",
                format!(
                    "tensor has {:?}, the layer was quantized for {:?}",
                    input_q, self.layer.input
                ),
            ));
        }
        let (params, out_shape) = self.params(input_shape)?;
        let out_bytes = GpuTensor::gpu_bytes(&out_shape)?;
        ctx.check_storage_size("conv2d output", out_bytes)?;
        if output.size() < out_bytes {
            return Err(Error::shape(
                "conv2d output buffer",
                format!("{} bytes, {out_bytes} needed", output.size()),
            ));
        }
        let gather = (self.variant == ConvVariant::Gather) as u8 as f64;
        ctx.dispatch(
            Kernel::Conv2d,
            &[("WG", WG as f64), ("GATHER", gather)],
            bytemuck::bytes_of(&params),
            &[input, &self.weights, &self.chans, output],
            params.total,
            WG,
        )
    }

    /// Records this layer's one dispatch, reading `input` and writing `output`
    /// (which must be large enough for the output shape).
    pub fn encode(
        &self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        input: &GpuTensor,
        output: &wgpu::Buffer,
    ) -> Result<Vec<usize>> {
        let out_shape = self.layer.output_shape(input.shape())?;
        let d = self.dispatch(ctx, &input.buffer, input.shape(), input.qparams(), output)?;
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("qfuse conv2d"),
            timestamp_writes: None,
        });
        d.record(&mut pass);
        Ok(out_shape)
    }

    /// Runs the layer on a GPU tensor: one dispatch, one submit.
    pub fn run(&self, ctx: &GpuContext, input: &GpuTensor) -> Result<GpuTensor> {
        ctx.scoped("conv2d", || {
            let out_shape = self.layer.output_shape(input.shape())?;
            let out = GpuTensor::empty(ctx, &out_shape, self.layer.output)?;
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            self.encode(ctx, &mut enc, input, &out.buffer)?;
            ctx.submit_and_wait(enc)?;
            Ok(out)
        })
    }
}

/// Splits a workgroup count over x and y so that neither exceeds the device's
/// per-dimension limit; kernels recover the linear index as `x + y * nx * WG`.
pub(crate) fn dispatch_size(ctx: &GpuContext, groups: u32) -> Result<(u32, u32)> {
    let max = ctx.limits().max_compute_workgroups_per_dimension.max(1);
    if groups <= max {
        return Ok((groups.max(1), 1));
    }
    let gy = groups.div_ceil(max);
    if gy > max {
        return Err(Error::TooLarge {
            what: "dispatch workgroups".into(),
            needed: groups as u64,
            limit: max as u64 * max as u64,
        });
    }
    Ok((max, gy))
}
