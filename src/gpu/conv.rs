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

/// Tile sizes of the tiled kernel (`shaders/tiled.wgsl`), passed as its
/// pipeline-overridable constants. `tn` counts output *words* (4 channels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileConfig {
    /// Output pixels per workgroup tile.
    pub tm: u32,
    /// Output words (4 channels each) per workgroup tile.
    pub tn: u32,
    /// K words (input words of the reduction) per workgroup-memory slice.
    pub kt: u32,
}

/// Sizes of the workgroup arrays and the register block in `tiled.wgsl`.
const XS_MAX: u32 = 2048;
const WS_MAX: u32 = 512;
/// The register block of `tiled.wgsl`: pixels x output words per invocation.
pub const TILE_RM: u32 = 4;
pub const TILE_RN: u32 = 4;

impl TileConfig {
    /// 64 pixels x 64 channels, 64 invocations: large layers.
    pub const LARGE: TileConfig = TileConfig {
        tm: 64,
        tn: 16,
        kt: 16,
    };
    /// 128 pixels x 64 channels, 128 invocations.
    pub const TALL: TileConfig = TileConfig {
        tm: 128,
        tn: 16,
        kt: 16,
    };
    /// 64 pixels x 128 channels, 128 invocations.
    pub const WIDE: TileConfig = TileConfig {
        tm: 64,
        tn: 32,
        kt: 16,
    };
    /// 4 pixels x 256 channels, 16 invocations: few output pixels (a linear
    /// layer's small batch).
    pub const SKINNY: TileConfig = TileConfig {
        tm: 4,
        tn: 64,
        kt: 8,
    };
    /// Every preset (tests run each).
    pub const PRESETS: &'static [TileConfig] = &[
        TileConfig::LARGE,
        TileConfig::TALL,
        TileConfig::WIDE,
        TileConfig::SKINNY,
    ];

    /// Invocations per workgroup, `(tm/rm) * (tn/rn)`.
    pub fn workgroup_size(&self) -> u32 {
        (self.tm / TILE_RM) * (self.tn / TILE_RN)
    }

    /// Bytes of workgroup memory the kernel declares.
    pub const WORKGROUP_BYTES: u32 = XS_MAX * 4 + WS_MAX * 16;

    /// Checks the constraints of `tiled.wgsl` and the device's limits.
    pub fn check(&self, limits: &wgpu::Limits) -> Result<()> {
        let c = self;
        let wg = c.workgroup_size();
        let bad = |why: &str| Err(Error::config("tile config", format!("{c:?}: {why}")));
        if c.tm == 0 || c.tn == 0 || c.kt == 0 || c.tm % TILE_RM != 0 || c.tn % TILE_RN != 0 {
            return bad("tm and tn must be positive multiples of 4, kt >= 1");
        }
        if c.tm * c.kt > XS_MAX || c.tn * c.kt > WS_MAX {
            return bad(&format!(
                "slice too large (tm*kt <= {XS_MAX}, tn*kt <= {WS_MAX})"
            ));
        }
        if wg % c.tm != 0 || c.kt % (wg / c.tm) != 0 {
            return bad("the workgroup size must be a multiple of tm, and kt a multiple of workgroup size / tm");
        }
        if wg > limits.max_compute_invocations_per_workgroup
            || wg > limits.max_compute_workgroup_size_x
        {
            return Err(Error::TooLarge {
                what: "tiled kernel workgroup".into(),
                needed: wg as u64,
                limit: limits
                    .max_compute_invocations_per_workgroup
                    .min(limits.max_compute_workgroup_size_x) as u64,
            });
        }
        if Self::WORKGROUP_BYTES > limits.max_compute_workgroup_storage_size {
            return Err(Error::TooLarge {
                what: "tiled kernel workgroup memory".into(),
                needed: Self::WORKGROUP_BYTES as u64,
                limit: limits.max_compute_workgroup_storage_size as u64,
            });
        }
        Ok(())
    }

    /// The tile heuristic for a GEMM of `m` output pixels, `o4` output words
    /// and `kq` reduction words:
    /// - `m < 32` (a linear layer's small batch, a tiny image): [`Self::SKINNY`],
    ///   so a workgroup does not compute 60 rows of padding;
    /// - `o4 >= 32` (128 or more output channels): [`Self::WIDE`] (64 x 128),
    ///   which halves the activation staging per output;
    /// - otherwise [`Self::LARGE`] (64 x 64).
    ///
    /// Measured on lavapipe with `examples/kernel_speed.rs` (512^3 GEMM,
    /// ResNet 3x3 convs); other adapters use the same choice for now.
    pub fn for_shape(m: usize, o4: usize, _kq: usize) -> TileConfig {
        if m < 32 {
            TileConfig::SKINNY
        } else if o4 >= 32 {
            TileConfig::WIDE
        } else {
            TileConfig::LARGE
        }
    }
}

/// Which kernel (and, for the tiled one, which tiles) a layer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvVariant {
    /// One output word per invocation over whole input words (`conv2d.wgsl`):
    /// one group, or channels per group a multiple of 4.
    Words,
    /// One output word per invocation, bytes gathered 4 at a time across
    /// (ky, kx, c) (`conv2d.wgsl`): any conv2d/linear.
    Gather,
    /// Tiled implicit GEMM (`tiled.wgsl`): one group. `None` picks the tiles
    /// per input shape ([`TileConfig::for_shape`]); `Some` pins them.
    Tiled(Option<TileConfig>),
    /// Depthwise (`depthwise.wgsl`): groups == in_channels > 1, any channel
    /// multiplier.
    Depthwise,
}

impl ConvVariant {
    /// Whether this variant can run `layer`.
    pub fn applies(&self, layer: &QLayer) -> bool {
        let g = &layer.geometry;
        match self {
            ConvVariant::Gather => true,
            ConvVariant::Words => g.groups == 1 || g.cin_per_group() % 4 == 0,
            ConvVariant::Tiled(_) => g.groups == 1,
            ConvVariant::Depthwise => g.groups > 1 && g.cin_per_group() == 1,
        }
    }

    /// Every variant that applies to `layer`, each tile preset pinned (for tests).
    pub fn candidates(layer: &QLayer) -> Vec<ConvVariant> {
        let mut v = vec![
            ConvVariant::Words,
            ConvVariant::Gather,
            ConvVariant::Depthwise,
            ConvVariant::Tiled(None),
        ];
        v.extend(
            TileConfig::PRESETS
                .iter()
                .map(|&c| ConvVariant::Tiled(Some(c))),
        );
        v.retain(|x| x.applies(layer));
        v
    }

    /// The kernel heuristic `GpuLayer::new` uses:
    /// - depthwise layers (groups == in_channels > 1) run [`ConvVariant::Depthwise`];
    /// - one group runs [`ConvVariant::Tiled`]`(None)` (tiles chosen per input
    ///   shape at encode time) when the device offers the tiled kernel's
    ///   workgroup size and memory ([`TileConfig::check`] of every preset),
    ///   else [`ConvVariant::Words`];
    /// - other grouped layers run `Words` when C/groups is a multiple of 4,
    ///   else `Gather`.
    pub fn choose(layer: &QLayer, limits: &wgpu::Limits) -> ConvVariant {
        let g = &layer.geometry;
        if ConvVariant::Depthwise.applies(layer) {
            ConvVariant::Depthwise
        } else if g.groups == 1 && TileConfig::PRESETS.iter().all(|c| c.check(limits).is_ok()) {
            ConvVariant::Tiled(None)
        } else if ConvVariant::Words.applies(layer) {
            ConvVariant::Words
        } else {
            ConvVariant::Gather
        }
    }

    /// [`ConvVariant::choose`] under WebGPU's default limits.
    pub fn for_layer(layer: &QLayer) -> Self {
        Self::choose(layer, &wgpu::Limits::default())
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
    /// Weight words per output channel (Words, Gather), K words (Tiled) or
    /// taps (Depthwise).
    kq: u32,
}

fn pack_word(f: impl Fn(usize) -> Option<u32>) -> u32 {
    (0..4)
        .map(|l| f(l).map_or(0, |b| b << (8 * l)))
        .fold(0, |a, b| a | b)
}

/// Packs a layer's int8 weights for a kernel variant (see the kernel's WGSL
/// file); returns the words and the `kq` of the uniform block.
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
                            out.push(pack_word(|l| {
                                (4 * j + l < cg).then(|| byte(oc, 4 * j + l, ky, kx))
                            }));
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
                    out.push(pack_word(|l| {
                        let r = 4 * q + l;
                        let (ci, t) = (r % cg, r / cg);
                        (r < k).then(|| byte(oc, ci, t / kw, t % kw))
                    }));
                }
            }
            kq
        }
        ConvVariant::Tiled(_) => {
            // K-major: word (k * O4 + o4) * 4 + l is channel 4*o4+l at K word
            // k = (ky * kw + kx) * cg4 + j, so a vec4 holds 4 channels.
            let cg4 = cg.div_ceil(4);
            let o4 = g.out_channels.div_ceil(4);
            for ky in 0..kh {
                for kx in 0..kw {
                    for j in 0..cg4 {
                        for oc in 0..o4 * 4 {
                            out.push(if oc < g.out_channels {
                                pack_word(|l| (4 * j + l < cg).then(|| byte(oc, 4 * j + l, ky, kx)))
                            } else {
                                0
                            });
                        }
                    }
                }
            }
            kh * kw * cg4
        }
        ConvVariant::Depthwise => {
            // [O4][kh*kw], byte l the weight of channel 4*o4+l (cg == 1).
            let o4 = g.out_channels.div_ceil(4);
            for q in 0..o4 {
                for ky in 0..kh {
                    for kx in 0..kw {
                        out.push(pack_word(|l| {
                            (4 * q + l < g.out_channels).then(|| byte(4 * q + l, 0, ky, kx))
                        }));
                    }
                }
            }
            kh * kw
        }
    };
    (out, kq as u32)
}

impl GpuLayer {
    /// Uploads a layer's weights and epilogue constants, with the variant
    /// [`ConvVariant::choose`] picks for the layer and the device.
    pub fn new(ctx: &GpuContext, layer: &QLayer) -> Result<Self> {
        Self::with_variant(ctx, layer, ConvVariant::choose(layer, &ctx.limits()))
    }

    /// Uploads a layer for a given kernel variant (`Gather` runs any layer).
    pub fn with_variant(ctx: &GpuContext, layer: &QLayer, variant: ConvVariant) -> Result<Self> {
        if !variant.applies(layer) {
            let g = &layer.geometry;
            return Err(Error::config(
                "conv2d variant",
                format!(
                    "{variant:?} cannot run a layer with {} input channels in {} groups",
                    g.in_channels, g.groups
                ),
            ));
        }
        if let ConvVariant::Tiled(Some(c)) = variant {
            c.check(&ctx.limits())?;
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

    /// The tiles the tiled kernel uses for an input shape (None for the
    /// other kernels).
    pub fn tile_config(&self, input_shape: &[usize]) -> Result<Option<TileConfig>> {
        Ok(match self.variant {
            ConvVariant::Tiled(Some(c)) => Some(c),
            ConvVariant::Tiled(None) => {
                let out = self.layer.output_shape(input_shape)?;
                let m = out[0] * out.get(2).unwrap_or(&1) * out.get(3).unwrap_or(&1);
                Some(TileConfig::for_shape(
                    m,
                    self.layer.geometry.out_channels.div_ceil(4),
                    self.kq as usize,
                ))
            }
            _ => None,
        })
    }

    /// The uniform block for an input shape; also returns the output shape.
    /// `total` counts output words, or output tiles for the tiled kernel.
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
        let total = match self.tile_config(input_shape)? {
            Some(c) => ((n * oh * ow).div_ceil(c.tm as usize) * o4.div_ceil(c.tn as usize)) as u64,
            None => total,
        };
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
    /// `input_shape` quantized with `input_q`) and writing `output` (which
    /// must be large enough for the output shape).
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
        let buffers = [input, &self.weights, &self.chans, output];
        let bytes = bytemuck::bytes_of(&params);
        match self.tile_config(input_shape)? {
            Some(c) => {
                c.check(&ctx.limits())?;
                let constants = [
                    ("WG", c.workgroup_size() as f64),
                    ("TM", c.tm as f64),
                    ("TN", c.tn as f64),
                    ("KT", c.kt as f64),
                ];
                // `params.total` counts workgroups here.
                ctx.dispatch(Kernel::Tiled, &constants, bytes, &buffers, params.total, 1)
            }
            None if self.variant == ConvVariant::Depthwise => ctx.dispatch(
                Kernel::Depthwise,
                &[("WG", WG as f64)],
                bytes,
                &buffers,
                params.total,
                WG,
            ),
            None => {
                let gather = (self.variant == ConvVariant::Gather) as u8 as f64;
                ctx.dispatch(
                    Kernel::Conv2d,
                    &[("WG", WG as f64), ("GATHER", gather)],
                    bytes,
                    &buffers,
                    params.total,
                    WG,
                )
            }
        }
    }

    /// Records this layer's one dispatch, reading `input` and writing `output`.
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
