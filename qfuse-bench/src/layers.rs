//! One conv/linear layer of a benchmark network in both forms: fused int8
//! through [`GpuLayer`], and the f32 baselines: the tiled f32 kernel
//! (`shaders/conv2d_f32_tiled.wgsl`, the same effort as the library's tiled
//! int8 kernel: the like-for-like comparison) and the simple untiled one
//! (`shaders/conv2d_f32.wgsl`, one invocation per output vec4), each as
//! conv, BatchNorm and ReLU in up to three dispatches, or one fused.

use qfuse::gpu::{dispatch_size, layout, ConvVariant, CustomKernel, TileConfig, GEMV_MAX_ROWS};
use qfuse::{
    Activation, BatchNorm, Conv2dGeometry, Error, FloatConv2d, FloatLinear, GpuContext, GpuLayer,
    QLayer, QParams, Requant, Result,
};
use wgpu::util::DeviceExt;

use crate::networks::{f32_bytes, Op};
use crate::rng::Lcg;

/// `shaders/conv2d_f32.wgsl`: the float baseline (f32 conv, batchnorm, relu; NHWC).
pub const F32_KERNEL: CustomKernel<'static> = CustomKernel {
    name: "conv2d_f32.wgsl",
    source: include_str!("../shaders/conv2d_f32.wgsl"),
};

/// `shaders/conv2d_f32_tiled.wgsl`: the tiled f32 conv (groups == 1), the
/// same effort as the library's tiled int8 kernel.
pub const F32_TILED_KERNEL: CustomKernel<'static> = CustomKernel {
    name: "conv2d_f32_tiled.wgsl",
    source: include_str!("../shaders/conv2d_f32_tiled.wgsl"),
};

/// Uniform block of `shaders/conv2d_f32.wgsl` and `shaders/conv2d_f32_tiled.wgsl`
/// (`total`: output vec4s for the simple kernel, workgroups for the tiled one).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct F32Params {
    pub n: u32,
    pub c: u32,
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
    pub cg: u32,
    pub og: u32,
    pub total: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

/// One conv/linear layer in both forms.
pub struct BenchLayer {
    pub name: String,
    pub geometry: Conv2dGeometry,
    pub linear: bool,
    pub relu: bool,
    pub has_bn: bool,
    /// The int8 layer with the library's default variant
    /// ([`default_variant`]: `GpuLayer::new`'s choice, or the emulated
    /// tensor-core kernel with `coop_emulated`).
    pub int8: GpuLayer,
    /// Where the default is a [`ConvVariant::Coop`]: the same layer on the
    /// packed-dot (`dot4I8Packed`) kernels, i.e. [`ConvVariant::choose`] for
    /// the device (the kernels every adapter without tensor cores runs).
    pub packed_dot: Option<GpuLayer>,
    pub f32: F32Layer,
}

/// The kernel variant the bench gives `layer` by default: the library's
/// choice ([`ConvVariant::choose_on`], what `GpuLayer::new` and
/// `GpuModel::new` pick: the tensor-core kernel where the context offers
/// it), or with `coop_emulated` the tensor-core kernel's emulation
/// (`Coop { emulated: true, splits: None }`) wherever it applies (one
/// group), so that the tensor-core paths of the bench run on any adapter.
pub fn default_variant(ctx: &GpuContext, layer: &QLayer, coop_emulated: bool) -> ConvVariant {
    let emu = ConvVariant::Coop {
        emulated: true,
        splits: None,
    };
    if coop_emulated && emu.applies(layer) {
        emu
    } else {
        ConvVariant::choose_on(ctx, layer)
    }
}

/// The packed-dot variant of `layer` on `ctx`: [`ConvVariant::choose`] for
/// the device's limits and type (never the tensor-core kernel).
pub fn packed_dot_variant(ctx: &GpuContext, layer: &QLayer) -> ConvVariant {
    ConvVariant::choose(layer, &ctx.limits(), ctx.device_type())
}

/// Whether `l` runs the cooperative-matrix (tensor-core or emulated) kernel
/// at `input_shape`. A `Coop { splits: None, .. }` layer runs the
/// packed-dot kernels for few output pixels (GEMV up to
/// [`GEMV_MAX_ROWS`], tiled / split-K below `COOP_MIN_ROWS`).
pub fn runs_coop(l: &GpuLayer, input_shape: &[usize]) -> Result<bool> {
    Ok(matches!(l.variant(), ConvVariant::Coop { .. })
        && l.tile_config(input_shape)?.is_none()
        && !runs_gemv(l, input_shape)?)
}

fn runs_gemv(l: &GpuLayer, input_shape: &[usize]) -> Result<bool> {
    let shape_chosen = matches!(
        l.variant(),
        ConvVariant::SplitK {
            splits: None,
            tiles: None
        } | ConvVariant::Coop { splits: None, .. }
    );
    Ok(l.variant() == ConvVariant::Gemv
        || (shape_chosen && ConvVariant::Gemv.applies(l.layer()) && {
            let out = l.layer().output_shape(input_shape)?;
            out[0] * out.get(2).unwrap_or(&1) * out.get(3).unwrap_or(&1) <= GEMV_MAX_ROWS
        }))
}

/// The kernel `l` runs at `input_shape`, resolved from its variant: e.g.
/// "Coop (tensor cores), 3 splits", "Coop emulated, one pass", "SplitK 64x64,
/// 4 splits", "Tiled 64x128", "Gemv", "Depthwise".
pub fn kernel_at(l: &GpuLayer, input_shape: &[usize]) -> Result<String> {
    let splits = |s: Option<u32>| s.map_or("one pass".to_string(), |s| format!("{s} splits"));
    if let Some(c) = l.tile_config(input_shape)? {
        return Ok(match l.splits(input_shape)? {
            Some(s) => format!("SplitK {}x{}, {s} splits", c.tm, 4 * c.tn),
            None => format!("Tiled {}x{}", c.tm, 4 * c.tn),
        });
    }
    if runs_gemv(l, input_shape)? {
        return Ok("Gemv".into());
    }
    Ok(match l.variant() {
        ConvVariant::Coop { emulated, .. } => format!(
            "Coop {}, {}",
            if emulated {
                "emulated"
            } else {
                "(tensor cores)"
            },
            splits(l.splits(input_shape)?)
        ),
        v => format!("{v:?}"),
    })
}

/// The float layer on the GPU: raw weights + BN (unfused) and folded weights (fused).
pub struct F32Layer {
    geometry: Conv2dGeometry,
    relu: bool,
    has_bn: bool,
    w_raw: wgpu::Buffer,
    b_raw: wgpu::Buffer,
    bn: wgpu::Buffer,
    w_fused: wgpu::Buffer,
    b_fused: wgpu::Buffer,
    dummy: wgpu::Buffer,
    /// Parameter count of the fused float layer (weights + bias).
    pub params: usize,
}

fn storage(ctx: &GpuContext, data: &[f32]) -> wgpu::Buffer {
    let mut v = data.to_vec();
    while v.len() < 4 || !v.len().is_multiple_of(4) {
        v.push(0.0);
    }
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("qfuse f32"),
            contents: bytemuck::cast_slice(&v),
            usage: wgpu::BufferUsages::STORAGE,
        })
}

/// `[O, C/g, kh, kw]` to `[kh][kw][C/g][O]`.
fn to_khwco(g: &Conv2dGeometry, w: &[f32]) -> Vec<f32> {
    let (o, cg, [kh, kw]) = (g.out_channels, g.cin_per_group(), g.kernel);
    let mut out = vec![0f32; w.len()];
    for oc in 0..o {
        for ci in 0..cg {
            for ky in 0..kh {
                for kx in 0..kw {
                    out[((ky * kw + kx) * cg + ci) * o + oc] =
                        w[((oc * cg + ci) * kh + ky) * kw + kx];
                }
            }
        }
    }
    out
}

/// Which f32 kernel to record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum F32Mode {
    /// f32 simple (untiled) conv, then BatchNorm, then ReLU: up to 3 dispatches.
    Unfused,
    /// f32 simple (untiled), one dispatch: BN folded into the weights, ReLU
    /// in the epilogue.
    Fused,
    /// Tiled f32 conv (groups == 1; the simple conv for grouped and
    /// depthwise layers), then BatchNorm, then ReLU: up to 3 dispatches.
    TiledUnfused,
    /// Tiled f32 conv with BN folded and ReLU in the epilogue: one dispatch.
    TiledFused,
}

impl F32Mode {
    pub fn tiled(self) -> bool {
        matches!(self, F32Mode::TiledUnfused | F32Mode::TiledFused)
    }
    pub fn fused(self) -> bool {
        matches!(self, F32Mode::Fused | F32Mode::TiledFused)
    }
}

impl F32Layer {
    /// The float layer of geometry `g` on the GPU. `raw`: weights
    /// `[O, C/groups, kh, kw]` and bias `[O]` of the conv (the unfused
    /// baseline runs it, then `bn` = per-channel (scale, shift) if any, then
    /// ReLU if `relu`); `fused`: weights and bias with the BatchNorm folded
    /// in (the fused baseline: one dispatch, ReLU in its epilogue). The
    /// output channel count must be a multiple of 4 (checked when encoding).
    pub fn new(
        ctx: &GpuContext,
        g: Conv2dGeometry,
        relu: bool,
        raw: (&[f32], &[f32]),
        bn: Option<(&[f32], &[f32])>,
        fused: (&[f32], &[f32]),
    ) -> F32Layer {
        let mut bn_v = vec![0f32; 2 * g.out_channels];
        if let Some((scale, shift)) = bn {
            bn_v = scale.iter().chain(shift).copied().collect();
        }
        F32Layer {
            geometry: g,
            relu,
            has_bn: bn.is_some(),
            w_raw: storage(ctx, &to_khwco(&g, raw.0)),
            b_raw: storage(ctx, raw.1),
            bn: storage(ctx, &bn_v),
            w_fused: storage(ctx, &to_khwco(&g, fused.0)),
            b_fused: storage(ctx, fused.1),
            dummy: storage(ctx, &[0.0; 4]),
            params: g.weight_len() + g.out_channels,
        }
    }

    /// Number of dispatches a mode records.
    pub fn dispatches(&self, mode: F32Mode) -> usize {
        if mode.fused() {
            1
        } else {
            1 + self.has_bn as usize + self.relu as usize
        }
    }

    /// Whether `mode` runs the tiled conv on this layer (tiled modes on
    /// ungrouped layers; grouped and depthwise layers run the simple conv,
    /// as the int8 side runs its one-word-per-invocation depthwise kernel).
    pub fn runs_tiled(&self, mode: F32Mode) -> bool {
        mode.tiled() && self.geometry.groups == 1
    }

    /// The conv kernel `mode` runs on this layer: "f32 tiled" or "f32 simple (untiled)".
    pub fn kernel_name(&self, mode: F32Mode) -> &'static str {
        if self.runs_tiled(mode) {
            "f32 tiled"
        } else {
            "f32 simple (untiled)"
        }
    }

    /// The tile the tiled conv uses at `in_shape`: the int8 kernel's choice
    /// for the same GEMM shape (`TileConfig::for_shape`, K counted in f32
    /// values instead of int8 words).
    pub fn tile(&self, in_shape: &[usize]) -> Result<TileConfig> {
        let (p, _) = self.params(in_shape)?;
        let m = (p.n * p.oh * p.ow) as usize;
        let k = (p.kh * p.kw * p.c) as usize;
        Ok(TileConfig::for_shape(m, p.o4 as usize, k))
    }

    fn params(&self, in_shape: &[usize]) -> Result<(F32Params, Vec<usize>)> {
        let g = &self.geometry;
        let (n, c, h, w) = layout::nchw(in_shape)?;
        if g.dilation != [1, 1] {
            return Err(Error::Config {
                what: "f32 baseline".into(),
                detail: format!("dilation {:?}: only 1 is implemented", g.dilation),
            });
        }
        if !g.out_channels.is_multiple_of(4) {
            return Err(Error::Config {
                what: "f32 baseline".into(),
                detail: "output channels must be a multiple of 4".into(),
            });
        }
        let (oh, ow) = g.output_hw(h, w)?;
        let o4 = g.out_channels / 4;
        let p = F32Params {
            n: n as u32,
            c: c as u32,
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
            cg: g.cin_per_group() as u32,
            og: g.cout_per_group() as u32,
            total: (n * oh * ow * o4) as u32,
            ..Default::default()
        };
        let out = if in_shape.len() == 2 {
            vec![n, g.out_channels]
        } else {
            vec![n, g.out_channels, oh, ow]
        };
        Ok((p, out))
    }

    /// Records the layer (NHWC f32 `input` of logical NCHW shape `in_shape`
    /// into `output`).
    pub fn encode(
        &self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        mode: F32Mode,
        input: &wgpu::Buffer,
        in_shape: &[usize],
        output: &wgpu::Buffer,
    ) -> Result<()> {
        let (p, out_shape) = self.params(in_shape)?;
        if output.size() < f32_bytes(&out_shape) {
            return Err(Error::Shape {
                what: "f32 output buffer".into(),
                detail: format!("{} bytes for {out_shape:?}", output.size()),
            });
        }
        let uniform = |p: &F32Params| {
            ctx.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("qfuse f32 params"),
                    contents: bytemuck::bytes_of(p),
                    usage: wgpu::BufferUsages::UNIFORM,
                })
        };
        let simple_u = uniform(&p);
        let (gx, gy) = dispatch_size(ctx, p.total.div_ceil(64))?;
        let tiled = self.runs_tiled(mode);
        let tiled_u = if tiled {
            let tc = self.tile(in_shape)?;
            tc.check(&ctx.limits())?;
            let m = p.n * p.oh * p.ow;
            let groups = m.div_ceil(tc.tm) * p.o4.div_ceil(tc.tn);
            let pt = F32Params { total: groups, ..p };
            Some((tc, uniform(&pt), dispatch_size(ctx, groups)?))
        } else {
            None
        };
        let mut dispatch = |op: u32,
                            relu: bool,
                            x: &wgpu::Buffer,
                            w: &wgpu::Buffer,
                            ch: &wgpu::Buffer|
         -> Result<()> {
            let (pipeline, u, (gx, gy)) = match (&tiled_u, op) {
                (Some((tc, u, groups)), 0) => (
                    ctx.custom_pipeline(
                        F32_TILED_KERNEL,
                        &[
                            ("WG", tc.workgroup_size() as f64),
                            ("TM", tc.tm as f64),
                            ("TN", tc.tn as f64),
                            ("KT", tc.kt as f64),
                            ("RELU", relu as u8 as f64),
                        ],
                    )?,
                    u,
                    *groups,
                ),
                _ => (
                    ctx.custom_pipeline(
                        F32_KERNEL,
                        &[("WG", 64.0), ("OP", op as f64), ("RELU", relu as u8 as f64)],
                    )?,
                    &simple_u,
                    (gx, gy),
                ),
            };
            let bind = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("qfuse f32"),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: u.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: x.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: w.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: ch.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 4,
                        resource: output.as_entire_binding(),
                    },
                ],
            });
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("qfuse f32"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(gx, gy, 1);
            Ok(())
        };
        if mode.fused() {
            dispatch(0, self.relu, input, &self.w_fused, &self.b_fused)?;
        } else {
            dispatch(0, false, input, &self.w_raw, &self.b_raw)?;
            if self.has_bn {
                dispatch(1, false, &self.dummy, &self.dummy, &self.bn)?;
            }
            if self.relu {
                dispatch(2, false, &self.dummy, &self.dummy, &self.dummy)?;
            }
        }
        Ok(())
    }
}

/// Builds a layer with random weights and BatchNorm, quantized (fbgemm rule)
/// for the int8 path and kept in f32 for the baseline; the int8 layer runs
/// the library's default variant (`GpuLayer::new`).
pub fn build_layer(ctx: &GpuContext, op: &Op, rng: &mut Lcg) -> Result<BenchLayer> {
    build_layer_with(ctx, op, rng, false)
}

/// [`build_layer`] with the int8 variant from [`default_variant`]
/// (`coop_emulated`: the tensor-core kernel's emulation where it applies);
/// where that is a [`ConvVariant::Coop`], also the packed-dot twin
/// ([`BenchLayer::packed_dot`]).
pub fn build_layer_with(
    ctx: &GpuContext,
    op: &Op,
    rng: &mut Lcg,
    coop_emulated: bool,
) -> Result<BenchLayer> {
    let Op::Conv {
        name,
        geometry: g,
        linear,
        ..
    } = op
    else {
        return Err(Error::Config {
            what: "bench layer".into(),
            detail: "not a conv/linear step".into(),
        });
    };
    let (g, relu, linear) = (*g, op.relu(), *linear);
    let fan_in = g.reduction_len() as f32;
    let weight: Vec<f32> = (0..g.weight_len())
        .map(|_| rng.normal() / fan_in.sqrt())
        .collect();
    let o = g.out_channels;
    let act = if relu {
        Activation::Relu
    } else {
        Activation::None
    };
    let input = QParams::new(0.04, 3)?;
    let output = QParams::new(0.05, if relu { 0 } else { 128 })?;
    let (qlayer, w_raw, b_raw, bn, w_f, b_f, has_bn): (QLayer, _, _, _, _, _, _) = if linear {
        let bias: Vec<f32> = (0..o).map(|_| 0.1 * rng.normal()).collect();
        let fl = FloatLinear {
            in_features: g.in_channels,
            out_features: o,
            weight: weight.clone(),
            bias: Some(bias.clone()),
            activation: act,
        };
        let q = fl.quantize(input, output, Requant::Fbgemm)?;
        (
            q,
            weight.clone(),
            bias.clone(),
            vec![0f32; 2 * o],
            weight,
            bias,
            false,
        )
    } else {
        let bnp = BatchNorm {
            gamma: (0..o).map(|_| 0.5 + rng.uniform()).collect(),
            beta: (0..o).map(|_| 0.2 * rng.normal()).collect(),
            running_mean: (0..o).map(|_| 0.1 * rng.normal()).collect(),
            running_var: (0..o).map(|_| 0.5 + rng.uniform()).collect(),
            eps: 1e-5,
        };
        let fc = FloatConv2d {
            geometry: g,
            weight: weight.clone(),
            bias: None,
            batchnorm: Some(bnp.clone()),
            activation: act,
        };
        let q = fc.quantize(input, output, Requant::Fbgemm)?;
        let (wf, bf) = fc.fused_weight_bias()?;
        let scale: Vec<f32> = (0..o)
            .map(|c| bnp.gamma[c] / (bnp.running_var[c] + bnp.eps).sqrt())
            .collect();
        let shift: Vec<f32> = (0..o)
            .map(|c| bnp.beta[c] - bnp.running_mean[c] * scale[c])
            .collect();
        let mut bn = scale;
        bn.extend(shift);
        (q, weight, vec![0f32; o], bn, wf, bf, true)
    };
    let (scale, shift) = bn.split_at(o);
    let f = F32Layer::new(
        ctx,
        g,
        relu,
        (&w_raw, &b_raw),
        has_bn.then_some((scale, shift)),
        (&w_f, &b_f),
    );
    let int8 = GpuLayer::with_variant(ctx, &qlayer, default_variant(ctx, &qlayer, coop_emulated))?;
    let packed_dot = match int8.variant() {
        ConvVariant::Coop { .. } => Some(GpuLayer::with_variant(
            ctx,
            &qlayer,
            packed_dot_variant(ctx, &qlayer),
        )?),
        _ => None,
    };
    Ok(BenchLayer {
        name: name.clone(),
        geometry: g,
        linear,
        relu,
        has_bn,
        int8,
        packed_dot,
        f32: f,
    })
}

impl BenchLayer {
    /// Multiply-accumulates for a batch of `n` at input `in_shape` (per image).
    pub fn macs(&self, n: usize, in_shape: &[usize]) -> u64 {
        let g = &self.geometry;
        let (oh, ow) = if self.linear {
            (1, 1)
        } else {
            g.output_hw(in_shape[1], in_shape[2]).unwrap()
        };
        (n * oh * ow * g.out_channels * g.reduction_len()) as u64
    }
    /// `s` (per image) with the batch `n` in front.
    pub fn full_shape(&self, n: usize, s: &[usize]) -> Vec<usize> {
        let mut v = vec![n];
        v.extend_from_slice(s);
        v
    }
}

/// A storage buffer of `bytes` random bytes (or uniform f32 in [-1, 1]).
/// Past 4 MiB the first 4 MiB of random words repeat (filling gigabytes
/// at batch 256 word by word would cost seconds per buffer; the kernels'
/// timing does not depend on the values).
pub fn random_buffer(ctx: &GpuContext, bytes: u64, f32_data: bool, rng: &mut Lcg) -> wgpu::Buffer {
    const FRESH: usize = 1 << 20;
    let words = (bytes.max(16) / 4) as usize;
    let mut data: Vec<u32> = if f32_data {
        (0..words.min(FRESH))
            .map(|_| (rng.uniform() * 2.0 - 1.0).to_bits())
            .collect()
    } else {
        (0..words.min(FRESH)).map(|_| rng.next_u32()).collect()
    };
    data.reserve(words - data.len());
    while data.len() < words {
        let take = (words - data.len()).min(data.len());
        data.extend_from_within(..take);
    }
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("qfuse bench activations"),
            contents: bytemuck::cast_slice(&data),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        })
}
