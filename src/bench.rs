//! The benchmark harness behind `cargo run --release --example bench`:
//! adapter ceilings, per-layer int8-fused vs f32 (unfused and fused) timings,
//! memory, and end-to-end chains for a ResNet-18-shaped and a
//! MobileNetV2-shaped network.
//!
//! Timing: GPU timestamp queries around each sample where the device has
//! `TIMESTAMP_QUERY_INSIDE_ENCODERS`, wall clock (encode + submit + wait)
//! otherwise; a warm-up run first; the median of repeated runs, repeated
//! until a time budget is spent (at least `min_runs`).
//!
//! The int8 layers run through the public [`GpuLayer`] API (so whichever
//! kernel it picks is what gets measured). The float baseline is
//! `shaders/conv2d_f32.wgsl`.

use serde::Serialize;
use wgpu::util::DeviceExt;

use crate::builder::{FloatOp, ModelBuilder, ObserverKind};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuLayer, GpuModel, GpuTensor, Kernel};
use crate::layer::{Conv2dGeometry, FloatConv2d, FloatLinear, QLayer};
use crate::model::Value;
use crate::ops::Pool2d;
use crate::quant::{Activation, BatchNorm, QParams, Requant};

/// Uniform block of `shaders/bench_ceiling.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct CeilParams {
    pub iters: u32,
    pub seed: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}

/// Uniform block of `shaders/conv2d_f32.wgsl`.
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

// ---------------------------------------------------------------------------
// Timing

/// How long to measure and how often.
#[derive(Clone, Copy, Debug)]
pub struct TimingOpts {
    /// Keep repeating until this much wall time was spent (after warm-up).
    pub budget_s: f64,
    pub min_runs: usize,
    pub max_runs: usize,
}

/// Median and spread of repeated runs, in seconds.
#[derive(Clone, Debug, Serialize)]
pub struct Timing {
    /// The median used in every ratio: GPU time where timestamps exist, else wall.
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    pub runs: usize,
    /// Median GPU time between timestamps, if the device has them.
    pub gpu_median_s: Option<f64>,
    /// Median wall time of encode + submit + wait, one submit per run.
    pub wall_median_s: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Whether this context can time with timestamps written inside encoders.
pub fn has_encoder_timestamps(ctx: &GpuContext) -> bool {
    ctx.device
        .features()
        .contains(wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
}

/// Times `encode` (which records one sample's GPU work): one warm-up run,
/// then runs until `opts.budget_s` is spent, one submit each.
pub fn measure(
    ctx: &GpuContext,
    opts: TimingOpts,
    encode: &mut dyn FnMut(&mut wgpu::CommandEncoder) -> Result<()>,
) -> Result<Timing> {
    let max_runs = opts.max_runs.clamp(1, 2000);
    let ts = has_encoder_timestamps(ctx);
    let (qs, resolve) = if ts {
        let qs = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("qfuse bench timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2 * max_runs as u32,
        });
        let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("qfuse bench resolve"),
            size: 256 * max_runs as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        (Some(qs), Some(resolve))
    } else {
        (None, None)
    };
    ctx.scoped("benchmark run", || {
        // Warm-up: compiles pipelines, touches buffers.
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        encode(&mut enc)?;
        ctx.submit_and_wait(enc)?;
        let mut wall = Vec::new();
        let start = std::time::Instant::now();
        while wall.len() < max_runs
            && (wall.len() < opts.min_runs || start.elapsed().as_secs_f64() < opts.budget_s)
        {
            let i = wall.len() as u32;
            let t = std::time::Instant::now();
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            if let Some(qs) = &qs {
                enc.write_timestamp(qs, 2 * i);
            }
            encode(&mut enc)?;
            if let (Some(qs), Some(r)) = (&qs, &resolve) {
                enc.write_timestamp(qs, 2 * i + 1);
                enc.resolve_query_set(qs, 2 * i..2 * i + 2, r, 256 * i as u64);
            }
            ctx.submit_and_wait(enc)?;
            wall.push(t.elapsed().as_secs_f64());
        }
        let runs = wall.len();
        let mut gpu: Option<Vec<f64>> = None;
        if let Some(r) = &resolve {
            let raw = ctx.read_buffer(r, 256 * runs as u64)?;
            let period = ctx.queue.get_timestamp_period() as f64 * 1e-9;
            let v: Vec<f64> = (0..runs)
                .map(|i| {
                    let a = u64::from_le_bytes(raw[256 * i..256 * i + 8].try_into().unwrap());
                    let b = u64::from_le_bytes(raw[256 * i + 8..256 * i + 16].try_into().unwrap());
                    b.wrapping_sub(a) as f64 * period
                })
                .collect();
            // A driver that writes zeros (or nonsense) gets the wall clock instead.
            if v.iter().all(|&x| x > 0.0 && x < 1e4) {
                gpu = Some(v);
            }
        }
        let wall_median_s = median(&mut wall.clone());
        let mut main = gpu.clone().unwrap_or_else(|| wall.clone());
        let median_s = median(&mut main);
        Ok(Timing {
            median_s,
            min_s: main[0],
            max_s: *main.last().unwrap(),
            runs,
            gpu_median_s: gpu.map(|mut g| median(&mut g)),
            wall_median_s,
        })
    })
}

fn dispatch_size(ctx: &GpuContext, groups: u32) -> Result<(u32, u32)> {
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

// ---------------------------------------------------------------------------
// Ceilings

/// The adapter's own ceilings, measured.
#[derive(Clone, Debug, Serialize)]
pub struct Ceilings {
    /// Each rate is the best of three interleaved measurements.
    /// Register-only `dot4I8Packed` + accumulate loop, 8 int8 ops per step:
    /// 8 independent accumulators against one activation word that changes
    /// every step (the throughput form; fractions of the ceiling use this).
    pub int8_ops_per_s: f64,
    /// The same dot products as 8 dependent chains `a = dot4I8Packed(a, b) + a`
    /// (each step waits for the whole previous dot product): what the
    /// benchmark measured as its ceiling before; latency-bound, for reference.
    pub int8_chained_ops_per_s: f64,
    /// Register-only f32 FMA loop, 2 flops per FMA.
    pub f32_flops_per_s: f64,
    /// `copy_buffer_to_buffer`, counting bytes read plus bytes written.
    pub copy_bytes_per_s: f64,
    pub copy_buffer_bytes: u64,
    pub int8_timing: Timing,
    pub int8_chained_timing: Timing,
    pub f32_timing: Timing,
    pub copy_timing: Timing,
}

const CEIL_WG: u32 = 256;

fn ceiling_loop(
    ctx: &GpuContext,
    mode: u32,
    groups: u32,
    target_s: f64,
    opts: TimingOpts,
) -> Result<(f64, Timing)> {
    let pipeline = ctx.pipeline(
        Kernel::BenchCeiling,
        &[("WG", CEIL_WG as f64), ("MODE", mode as f64)],
    )?;
    let out = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("qfuse ceiling out"),
        size: 4096,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let (gx, gy) = dispatch_size(ctx, groups)?;
    let invocations = gx as f64 * gy as f64 * CEIL_WG as f64;
    let per_step = if mode == 1 { 8.0 * 2.0 } else { 8.0 * 8.0 };
    let run = |iters: u32, opts: TimingOpts| -> Result<Timing> {
        let params = CeilParams {
            iters,
            seed: 12345,
            ..Default::default()
        };
        let uniform = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("qfuse ceiling params"),
                contents: bytemuck::bytes_of(&params),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let bind = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: uniform.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: out.as_entire_binding(),
                },
            ],
        });
        measure(ctx, opts, &mut |enc| {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(gx, gy, 1);
            Ok(())
        })
    };
    // Calibrate: double the loop count until one dispatch takes target_s.
    let probe = TimingOpts {
        budget_s: 0.0,
        min_runs: 1,
        max_runs: 1,
    };
    let mut iters = 16u32;
    loop {
        let t = run(iters, probe)?;
        if t.median_s >= target_s || iters >= 1 << 24 {
            break;
        }
        let grow = (target_s / t.median_s.max(1e-7)).clamp(2.0, 64.0);
        iters = ((iters as f64 * grow) as u64).min(1 << 24) as u32;
    }
    let t = run(iters, opts)?;
    Ok((invocations * iters as f64 * per_step / t.median_s, t))
}

/// Measures the int8 and f32 arithmetic ceilings and the copy bandwidth.
pub fn measure_ceilings(ctx: &GpuContext, quick: bool) -> Result<Ceilings> {
    let opts = TimingOpts {
        budget_s: if quick { 0.2 } else { 0.5 },
        min_runs: 3,
        max_runs: 50,
    };
    let target = if quick { 0.02 } else { 0.05 };
    // 2^20 invocations fill any current GPU; a CPU driver does not mind.
    let groups = (1u32 << 20) / CEIL_WG;
    // On a shared machine a single measurement can land on a busy moment and
    // understate the ceiling (inflating every fraction of it): keep the best
    // of three, interleaved.
    let mut best = [None, None, None];
    for _ in 0..3 {
        for (mode, b) in best.iter_mut().enumerate() {
            let (rate, t) = ceiling_loop(ctx, mode as u32, groups, target, opts)?;
            if b.as_ref().is_none_or(|(r, _): &(f64, Timing)| rate > *r) {
                *b = Some((rate, t));
            }
        }
    }
    let [Some((int8, int8_timing)), Some((f32r, f32_timing)), Some((int8c, int8_chained_timing))] =
        best
    else {
        unreachable!("three modes measured")
    };
    let lim = ctx.limits();
    let want: u64 = if quick { 64 << 20 } else { 512 << 20 };
    let size = want.min(lim.max_buffer_size / 2).max(1 << 20) & !255;
    let mk = |usage| {
        ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("qfuse copy"),
            size,
            usage,
            mapped_at_creation: false,
        })
    };
    let src = mk(wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST);
    let dst = mk(wgpu::BufferUsages::COPY_DST);
    let copy_timing = measure(ctx, opts, &mut |enc| {
        enc.copy_buffer_to_buffer(&src, 0, &dst, 0, size);
        Ok(())
    })?;
    Ok(Ceilings {
        int8_ops_per_s: int8,
        int8_chained_ops_per_s: int8c,
        int8_chained_timing,
        f32_flops_per_s: f32r,
        copy_bytes_per_s: 2.0 * size as f64 / copy_timing.median_s,
        copy_buffer_bytes: size,
        int8_timing,
        f32_timing,
        copy_timing,
    })
}

// ---------------------------------------------------------------------------
// Networks

/// A small deterministic generator for weights and data.
pub struct Lcg(pub u64);
impl Lcg {
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 32) as u32
    }
    pub fn uniform(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32
    }
    /// Roughly standard normal (sum of 4 uniforms, rescaled).
    pub fn normal(&mut self) -> f32 {
        ((0..4).map(|_| self.uniform()).sum::<f32>() - 2.0) * 1.732
    }
}

/// One step of a network graph. Only `Conv` steps run; pooling and residual
/// adds are kept in the graph for the memory plan.
#[derive(Clone, Debug)]
pub enum Op {
    /// Conv2d (+BN) (+ReLU), or Linear when `linear`.
    Conv {
        name: String,
        geometry: Conv2dGeometry,
        relu: bool,
        linear: bool,
    },
    /// Max or average pooling (omitted from the executed chain).
    Pool,
    /// Residual add (omitted from the executed chain).
    Add,
}

#[derive(Clone, Debug)]
pub struct Step {
    pub op: Op,
    pub inputs: Vec<usize>,
    pub output: usize,
}

/// A network: tensors (per-image shapes, `[C, H, W]` or `[K]`) and steps in
/// execution order. Tensor 0 is the input image.
#[derive(Clone, Debug)]
pub struct Network {
    pub name: String,
    pub resolution: usize,
    pub tensors: Vec<Vec<usize>>,
    pub steps: Vec<Step>,
}

struct Builder {
    net: Network,
}

impl Builder {
    fn new(name: &str, c: usize, res: usize) -> Self {
        Builder {
            net: Network {
                name: name.into(),
                resolution: res,
                tensors: vec![vec![c, res, res]],
                steps: vec![],
            },
        }
    }
    fn push(&mut self, op: Op, inputs: Vec<usize>, shape: Vec<usize>) -> usize {
        self.net.tensors.push(shape);
        let output = self.net.tensors.len() - 1;
        self.net.steps.push(Step { op, inputs, output });
        output
    }
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        x: usize,
        cout: usize,
        k: usize,
        stride: usize,
        groups: usize,
        relu: bool,
    ) -> usize {
        let s = self.net.tensors[x].clone();
        let g = Conv2dGeometry::new(s[0], cout, [k, k])
            .stride([stride, stride])
            .padding([k / 2, k / 2])
            .groups(groups);
        let (oh, ow) = g.output_hw(s[1], s[2]).unwrap();
        self.push(
            Op::Conv {
                name: name.into(),
                geometry: g,
                relu,
                linear: false,
            },
            vec![x],
            vec![cout, oh, ow],
        )
    }
    fn pool(&mut self, x: usize, k: usize, stride: usize, pad: usize) -> usize {
        let s = self.net.tensors[x].clone();
        let o = |d: usize| (d + 2 * pad - k) / stride + 1;
        self.push(Op::Pool, vec![x], vec![s[0], o(s[1]), o(s[2])])
    }
    fn global_pool(&mut self, x: usize) -> usize {
        let c = self.net.tensors[x][0];
        self.push(Op::Pool, vec![x], vec![c])
    }
    fn add(&mut self, a: usize, b: usize) -> usize {
        let s = self.net.tensors[a].clone();
        self.push(Op::Add, vec![a, b], s)
    }
    fn linear(&mut self, name: &str, x: usize, out: usize) -> usize {
        let k = self.net.tensors[x][0];
        self.push(
            Op::Conv {
                name: name.into(),
                geometry: Conv2dGeometry::linear(k, out),
                relu: false,
                linear: true,
            },
            vec![x],
            vec![out],
        )
    }
}

/// ResNet-18 (torchvision layout) at `res`x`res`: every conv and the fc, with
/// the max pool, global average pool and residual adds in the graph.
pub fn resnet18(res: usize) -> Network {
    let mut b = Builder::new("resnet18", 3, res);
    let mut x = b.conv("conv1", 0, 64, 7, 2, 1, true);
    x = b.pool(x, 3, 2, 1);
    let mut cin = 64;
    for (li, &(cout, stride)) in [(64, 1), (128, 2), (256, 2), (512, 2)].iter().enumerate() {
        for blk in 0..2 {
            let s = if blk == 0 { stride } else { 1 };
            let n = format!("layer{}.{blk}", li + 1);
            let short = if s != 1 || cin != cout {
                b.conv(&format!("{n}.downsample"), x, cout, 1, s, 1, false)
            } else {
                x
            };
            let a = b.conv(&format!("{n}.conv1"), x, cout, 3, s, 1, true);
            let c = b.conv(&format!("{n}.conv2"), a, cout, 3, 1, 1, false);
            x = b.add(c, short);
            cin = cout;
        }
    }
    x = b.global_pool(x);
    b.linear("fc", x, 1000);
    b.net
}

/// MobileNetV2 (torchvision layout, width 1.0) at `res`x`res`. ReLU6 is the
/// fused ReLU with the clamp in the output qparams, as in quantized PyTorch.
pub fn mobilenet_v2(res: usize) -> Network {
    let mut b = Builder::new("mobilenet_v2", 3, res);
    let mut x = b.conv("features.0", 0, 32, 3, 2, 1, true);
    let mut cin = 32;
    let mut idx = 1;
    for &(t, c, n, s) in &[
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ] {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            let hidden = cin * t;
            let name = format!("features.{idx}");
            let mut h = x;
            if t != 1 {
                h = b.conv(&format!("{name}.expand"), h, hidden, 1, 1, 1, true);
            }
            h = b.conv(&format!("{name}.dw"), h, hidden, 3, stride, hidden, true);
            h = b.conv(&format!("{name}.project"), h, c, 1, 1, 1, false);
            x = if stride == 1 && cin == c {
                b.add(h, x)
            } else {
                h
            };
            cin = c;
            idx += 1;
        }
    }
    x = b.conv("features.18", x, 1280, 1, 1, 1, true);
    x = b.global_pool(x);
    b.linear("classifier", x, 1000);
    b.net
}

// ---------------------------------------------------------------------------
// The real networks: ModelBuilder -> calibration -> GpuModel

/// A float network for [`ModelBuilder`] and its f32 weight bytes (BN folded:
/// weights + one bias per output channel).
pub struct RealNet {
    pub builder: ModelBuilder,
    pub f32_weight_bytes: u64,
}

struct RealBuilder {
    b: ModelBuilder,
    rng: Lcg,
    f32_params: usize,
}

impl RealBuilder {
    fn new(res: usize, seed: u64) -> Self {
        RealBuilder {
            b: ModelBuilder::new(Requant::Fbgemm, "x", &[3, res, res]),
            rng: Lcg(seed),
            f32_params: 0,
        }
    }
    /// Conv (no bias) + BatchNorm (+ fused ReLU), random weights (He init).
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        x: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        groups: usize,
        relu: bool,
    ) -> String {
        let g = Conv2dGeometry::new(cin, cout, [k, k])
            .stride([stride, stride])
            .padding([k / 2, k / 2])
            .groups(groups);
        let r = &mut self.rng;
        let sd = (2.0 / g.reduction_len() as f32).sqrt();
        let layer = FloatConv2d {
            geometry: g,
            weight: (0..g.weight_len()).map(|_| r.normal() * sd).collect(),
            bias: None,
            batchnorm: Some(BatchNorm {
                gamma: (0..cout).map(|_| 0.5 + r.uniform()).collect(),
                beta: (0..cout).map(|_| 0.2 * r.normal()).collect(),
                running_mean: (0..cout).map(|_| 0.1 * r.normal()).collect(),
                running_var: (0..cout).map(|_| 0.5 + r.uniform()).collect(),
                eps: 1e-5,
            }),
            activation: if relu {
                Activation::Relu
            } else {
                Activation::None
            },
        };
        self.f32_params += g.weight_len() + cout;
        self.b.conv2d(name, x, layer)
    }
    fn linear(&mut self, name: &str, x: &str, k: usize, o: usize) -> String {
        let r = &mut self.rng;
        let sd = 1.0 / (k as f32).sqrt();
        let layer = FloatLinear {
            in_features: k,
            out_features: o,
            weight: (0..k * o).map(|_| r.normal() * sd).collect(),
            bias: Some((0..o).map(|_| 0.1 * r.normal()).collect()),
            activation: Activation::None,
        };
        self.f32_params += k * o + o;
        self.b.linear(name, x, layer)
    }
    fn done(self) -> RealNet {
        RealNet {
            builder: self.b,
            f32_weight_bytes: 4 * self.f32_params as u64,
        }
    }
}

/// ResNet-18 (torchvision layout, the shapes of [`resnet18`]) as a float
/// network: 7x7/2 stem + BN + ReLU, 3x3/2 max pool, basic blocks (two 3x3
/// convs with BN, a 1x1/2 conv + BN downsample where the shape changes,
/// residual add + ReLU), global average pool, flatten, linear 512 -> 1000.
pub fn resnet18_builder(res: usize, seed: u64) -> RealNet {
    let mut b = RealBuilder::new(res, seed);
    b.conv("conv1", "x", 3, 64, 7, 2, 1, true);
    let mut x = b.b.op(
        "maxpool",
        FloatOp::MaxPool2d(Pool2d {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
            dilation: [1, 1],
            ceil_mode: false,
        }),
        &["conv1"],
    );
    let mut cin = 64;
    for (li, &(cout, stride)) in [(64, 1), (128, 2), (256, 2), (512, 2)].iter().enumerate() {
        for blk in 0..2 {
            let s = if blk == 0 { stride } else { 1 };
            let n = format!("layer{}.{blk}", li + 1);
            let short = if s != 1 || cin != cout {
                b.conv(&format!("{n}.downsample"), &x, cin, cout, 1, s, 1, false)
            } else {
                x.clone()
            };
            let a = b.conv(&format!("{n}.conv1"), &x, cin, cout, 3, s, 1, true);
            let c = b.conv(&format!("{n}.conv2"), &a, cout, cout, 3, 1, 1, false);
            x = b.b.add(&format!("{n}.add"), &c, &short, true);
            cin = cout;
        }
    }
    b.b.op("avgpool", FloatOp::AdaptiveAvgPool2d([1, 1]), &[&x]);
    b.b.op("flatten", FloatOp::Flatten, &["avgpool"]);
    b.linear("fc", "flatten", 512, 1000);
    b.done()
}

/// MobileNetV2 (torchvision layout, width 1.0, the shapes of
/// [`mobilenet_v2`]) as a float network: conv + BN, then ReLU6 as its own op
/// (quantized PyTorch does not fuse ReLU6 into the conv); inverted residuals
/// (1x1 expand, ReLU6, 3x3 depthwise, ReLU6, 1x1 project, residual add where
/// the shape allows), 1x1 320 -> 1280 + ReLU6, mean over H and W, linear
/// 1280 -> 1000.
pub fn mobilenet_v2_builder(res: usize, seed: u64) -> RealNet {
    let mut b = RealBuilder::new(res, seed);
    b.conv("features.0", "x", 3, 32, 3, 2, 1, false);
    let mut x = b.b.op("features.0.relu6", FloatOp::Relu6, &["features.0"]);
    let mut cin = 32;
    let mut idx = 1;
    for &(t, c, n, s) in &[
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ] {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            let hidden = cin * t;
            let name = format!("features.{idx}");
            let mut h = x.clone();
            if t != 1 {
                let e = b.conv(&format!("{name}.expand"), &h, cin, hidden, 1, 1, 1, false);
                h =
                    b.b.op(&format!("{name}.expand.relu6"), FloatOp::Relu6, &[&e]);
            }
            let d = b.conv(
                &format!("{name}.dw"),
                &h,
                hidden,
                hidden,
                3,
                stride,
                hidden,
                false,
            );
            h = b.b.op(&format!("{name}.dw.relu6"), FloatOp::Relu6, &[&d]);
            h = b.conv(&format!("{name}.project"), &h, hidden, c, 1, 1, 1, false);
            x = if stride == 1 && cin == c {
                b.b.add(&format!("{name}.add"), &h, &x, false)
            } else {
                h
            };
            cin = c;
            idx += 1;
        }
    }
    let f = b.conv("features.18", &x, cin, 1280, 1, 1, 1, false);
    b.b.op("features.18.relu6", FloatOp::Relu6, &[&f]);
    b.b.op(
        "pool",
        FloatOp::Mean { keepdim: false },
        &["features.18.relu6"],
    );
    b.linear("classifier", "pool", 1280, 1000);
    b.done()
}

/// A random float32 NCHW batch (roughly standard normal).
pub fn random_images(rng: &mut Lcg, n: usize, res: usize) -> (Vec<f32>, Vec<usize>) {
    (
        (0..n * 3 * res * res).map(|_| rng.normal()).collect(),
        vec![n, 3, res, res],
    )
}

/// Times `GpuModel::run_timed` on `input`: one warm-up run (which also makes
/// the memory plan and records the dispatches), then runs until the budget is
/// spent. `median_s` etc. are wall times of the whole call (input upload, one
/// submit, wait, output readback and unpacking); `gpu_median_s` is the median
/// GPU time of the compute pass from timestamps, where the device has them.
pub fn measure_model(
    ctx: &GpuContext,
    g: &GpuModel,
    input: &[Value],
    opts: TimingOpts,
) -> Result<Timing> {
    g.run_timed(ctx, input)?;
    let mut wall = vec![];
    let mut gpu = vec![];
    let start = std::time::Instant::now();
    while wall.len() < opts.max_runs.max(1)
        && (wall.len() < opts.min_runs || start.elapsed().as_secs_f64() < opts.budget_s)
    {
        let t = std::time::Instant::now();
        let (_, ns) = g.run_timed(ctx, input)?;
        wall.push(t.elapsed().as_secs_f64());
        if let Some(ns) = ns {
            gpu.push(ns * 1e-9);
        }
    }
    let runs = wall.len();
    let wall_median_s = median(&mut wall);
    Ok(Timing {
        median_s: wall_median_s,
        min_s: wall[0],
        max_s: wall[runs - 1],
        runs,
        gpu_median_s: (gpu.len() == runs).then(|| median(&mut gpu)),
        wall_median_s,
    })
}

// ---------------------------------------------------------------------------
// Memory plan

/// Buffer assignment for a network's activations: tensors whose lifetimes
/// do not overlap share a buffer. An output never shares with its inputs.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Buffer index of each tensor.
    pub tensor_buffer: Vec<usize>,
    /// Size of each buffer in bytes.
    pub buffer_bytes: Vec<u64>,
    /// Sum of the buffer sizes: the planned peak activation memory.
    pub planned_bytes: u64,
    /// The most bytes of tensors alive at once (a lower bound for any plan).
    pub max_live_bytes: u64,
}

/// Plans the activation buffers of `net` at batch `n`, `bytes(shape)` giving
/// a tensor's size (shape with the batch dimension first).
pub fn plan(net: &Network, n: usize, bytes: &dyn Fn(&[usize]) -> u64) -> Plan {
    let nt = net.tensors.len();
    let size: Vec<u64> = net
        .tensors
        .iter()
        .map(|s| {
            let mut full = vec![n];
            full.extend_from_slice(s);
            bytes(&full)
        })
        .collect();
    // Last step that reads each tensor (the network output lives to the end).
    let mut last = vec![0usize; nt];
    for (i, st) in net.steps.iter().enumerate() {
        for &t in &st.inputs {
            last[t] = i;
        }
    }
    last[net.steps.last().map_or(0, |s| s.output)] = usize::MAX;
    // Step 0 holds the input; step i + 1 runs `net.steps[i]`.
    let mut lifetimes: Vec<crate::plan::Lifetime> = size
        .iter()
        .map(|&bytes| crate::plan::Lifetime {
            def: 0,
            last: usize::MAX,
            bytes,
        })
        .collect();
    for (i, st) in net.steps.iter().enumerate() {
        lifetimes[st.output].def = i + 1;
    }
    for (t, l) in lifetimes.iter_mut().enumerate() {
        if last[t] != usize::MAX && net.steps.iter().any(|st| st.inputs.contains(&t)) {
            l.last = last[t] + 1;
        }
    }
    let (buffer_bytes, tensor_buffer) = crate::plan::assign_buffers(&lifetimes);
    // The most bytes alive at once: after each step's output is allocated,
    // before its last-read inputs are released.
    let max_live = (0..=net.steps.len())
        .map(|s| {
            lifetimes
                .iter()
                .filter(|l| l.def <= s && (l.last == usize::MAX || l.last >= s))
                .map(|l| l.bytes)
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0);
    let planned_bytes = buffer_bytes.iter().sum();
    Plan {
        tensor_buffer,
        buffer_bytes,
        planned_bytes,
        max_live_bytes: max_live,
    }
}

/// Bytes of an int8 activation (packed NHWC4).
pub fn int8_bytes(shape: &[usize]) -> u64 {
    GpuTensor::gpu_bytes(shape).unwrap()
}
/// Bytes of an f32 activation.
pub fn f32_bytes(shape: &[usize]) -> u64 {
    4 * shape.iter().product::<usize>() as u64
}

// ---------------------------------------------------------------------------
// Layers: int8 and f32 twins

/// One conv/linear layer in both forms.
pub struct BenchLayer {
    pub name: String,
    pub geometry: Conv2dGeometry,
    pub linear: bool,
    pub relu: bool,
    pub has_bn: bool,
    pub int8: GpuLayer,
    pub f32: F32Layer,
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
    while v.len() < 4 || v.len() % 4 != 0 {
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
    /// Conv, then BatchNorm, then ReLU: up to 3 dispatches.
    Unfused,
    /// One dispatch: BN folded into the weights, ReLU in the epilogue.
    Fused,
}

impl F32Layer {
    /// Number of dispatches a mode records.
    pub fn dispatches(&self, mode: F32Mode) -> usize {
        match mode {
            F32Mode::Fused => 1,
            F32Mode::Unfused => 1 + self.has_bn as usize + self.relu as usize,
        }
    }

    fn params(&self, in_shape: &[usize]) -> Result<(F32Params, Vec<usize>)> {
        let g = &self.geometry;
        let (n, c, h, w) = crate::layout::nchw(in_shape)?;
        if g.out_channels % 4 != 0 {
            return Err(Error::config(
                "f32 baseline",
                "output channels must be a multiple of 4",
            ));
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
            return Err(Error::shape(
                "f32 output buffer",
                format!("{} bytes for {out_shape:?}", output.size()),
            ));
        }
        let uniform = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("qfuse f32 params"),
                contents: bytemuck::bytes_of(&p),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let (gx, gy) = dispatch_size(ctx, p.total.div_ceil(64))?;
        let fused = mode == F32Mode::Fused;
        let mut dispatch = |op: u32,
                            relu: bool,
                            x: &wgpu::Buffer,
                            w: &wgpu::Buffer,
                            ch: &wgpu::Buffer|
         -> Result<()> {
            let pipeline = ctx.pipeline(
                Kernel::Conv2dF32,
                &[("WG", 64.0), ("OP", op as f64), ("RELU", relu as u8 as f64)],
            )?;
            let bind = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("qfuse f32"),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: uniform.as_entire_binding(),
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
        if fused {
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
/// for the int8 path and kept in f32 for the baseline.
pub fn build_layer(ctx: &GpuContext, op: &Op, rng: &mut Lcg) -> Result<BenchLayer> {
    let Op::Conv {
        name,
        geometry: g,
        relu,
        linear,
    } = op
    else {
        return Err(Error::config("bench layer", "not a conv/linear step"));
    };
    let (g, relu, linear) = (*g, *relu, *linear);
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
    let f = F32Layer {
        geometry: g,
        relu,
        has_bn,
        w_raw: storage(ctx, &to_khwco(&g, &w_raw)),
        b_raw: storage(ctx, &b_raw),
        bn: storage(ctx, &bn),
        w_fused: storage(ctx, &to_khwco(&g, &w_f)),
        b_fused: storage(ctx, &b_f),
        dummy: storage(ctx, &[0.0; 4]),
        params: g.weight_len() + o,
    };
    let int8 = GpuLayer::new(ctx, &qlayer)?;
    Ok(BenchLayer {
        name: name.clone(),
        geometry: g,
        linear,
        relu,
        has_bn,
        int8,
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
    fn full_shape(&self, n: usize, s: &[usize]) -> Vec<usize> {
        let mut v = vec![n];
        v.extend_from_slice(s);
        v
    }
}

/// A storage buffer of `bytes` random bytes (or uniform f32 in [-1, 1]).
pub fn random_buffer(ctx: &GpuContext, bytes: u64, f32_data: bool, rng: &mut Lcg) -> wgpu::Buffer {
    let words = (bytes.max(16) / 4) as usize;
    let data: Vec<u32> = if f32_data {
        (0..words)
            .map(|_| (rng.uniform() * 2.0 - 1.0).to_bits())
            .collect()
    } else {
        (0..words).map(|_| rng.next_u32()).collect()
    };
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("qfuse bench activations"),
            contents: bytemuck::cast_slice(&data),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        })
}

// ---------------------------------------------------------------------------
// The benchmark

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub quick: bool,
    pub batches: Vec<usize>,
    /// Input resolution (224 for the real networks).
    pub resolution: usize,
    pub networks: Vec<String>,
    /// Print progress to stderr.
    pub verbose: bool,
    /// Seconds of timed runs per layer case (end-to-end cases get twice
    /// this); `None`: 0.05 with `quick`, else 0.5. The minimum run counts
    /// still apply.
    pub budget_s: Option<f64>,
}

impl BenchConfig {
    pub fn layer_opts(&self) -> TimingOpts {
        if self.quick {
            TimingOpts {
                budget_s: self.budget_s.unwrap_or(0.05),
                min_runs: 3,
                max_runs: 50,
            }
        } else {
            TimingOpts {
                budget_s: self.budget_s.unwrap_or(0.5),
                min_runs: 5,
                max_runs: 200,
            }
        }
    }
    pub fn e2e_opts(&self) -> TimingOpts {
        if self.quick {
            TimingOpts {
                budget_s: self.budget_s.map_or(0.2, |b| 2.0 * b),
                min_runs: 3,
                max_runs: 50,
            }
        } else {
            TimingOpts {
                budget_s: self.budget_s.map_or(1.0, |b| 2.0 * b),
                min_runs: 5,
                max_runs: 200,
            }
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct AdapterJson {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub packed_dot: bool,
    pub timestamps: bool,
}

/// One unique layer shape at one batch size.
#[derive(Clone, Debug, Serialize)]
pub struct LayerResult {
    pub name: String,
    /// How many layers of the network have this shape (the first one's name is shown).
    pub count: usize,
    pub desc: String,
    pub batch: usize,
    pub input_shape: Vec<usize>,
    pub int8_kernel: String,
    pub ops: u64,
    /// Minimum bytes an int8 layer moves: input + weights + output.
    pub int8_bytes: u64,
    pub int8: Timing,
    pub int8_ops_per_s: f64,
    /// "compute" or "memory" (ops/byte against the ceilings' ratio).
    pub bound: String,
    /// Fraction of the int8 ceiling (compute-bound) or of copy bandwidth (memory-bound).
    pub fraction: f64,
    pub f32_unfused: Timing,
    pub f32_unfused_dispatches: usize,
    pub f32_fused: Timing,
    pub f32_flops_per_s: f64,
    /// f32 unfused time / int8 fused time.
    pub speedup_vs_unfused: f64,
    /// f32 fused time / int8 fused time.
    pub speedup_vs_fused: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct MemoryResult {
    pub batch: usize,
    pub int8_planned_bytes: u64,
    pub f32_planned_bytes: u64,
    pub ratio: f64,
    pub int8_max_live_bytes: u64,
    pub f32_max_live_bytes: u64,
    pub int8_buffers: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct EndToEnd {
    pub batch: usize,
    pub int8: Timing,
    pub int8_dispatches: usize,
    pub f32_unfused: Timing,
    pub f32_unfused_dispatches: usize,
    pub f32_fused: Timing,
    pub f32_fused_dispatches: usize,
    pub int8_images_per_s: f64,
    pub f32_unfused_images_per_s: f64,
    pub f32_fused_images_per_s: f64,
    /// Images/s from the wall clock (encode + one submit + wait per inference).
    pub int8_images_per_s_wall: f64,
    pub f32_unfused_images_per_s_wall: f64,
    pub f32_fused_images_per_s_wall: f64,
    pub speedup_vs_unfused: f64,
    pub speedup_vs_fused: f64,
}

/// The real network (every op: quantize, convs, pools, adds, ReLU6, mean,
/// linear, dequantize) through [`GpuModel::run`] at one batch size.
#[derive(Clone, Debug, Serialize)]
pub struct RealRun {
    pub batch: usize,
    /// `GpuModel::plan`: bytes of the planned int8 activation buffers (the peak).
    pub int8_planned_bytes: u64,
    /// The same plan with f32 tensors.
    pub f32_planned_bytes: u64,
    /// int8 / f32 planned peak activation bytes.
    pub activation_ratio: f64,
    pub int8_buffers: usize,
    /// Bytes of all int8 tensors if each had its own buffer.
    pub int8_unplanned_bytes: u64,
    /// Wall times of `GpuModel::run` (upload + one submit + wait + readback);
    /// `gpu_median_s`: GPU time of the compute pass from timestamps.
    pub timing: Timing,
    /// Images/s from the wall time (upload and readback included).
    pub images_per_s: f64,
    /// Images/s from the GPU time of the compute pass alone.
    pub gpu_images_per_s: Option<f64>,
    /// f32 unfused conv chain time (GPU if timed, else wall) / this graph's
    /// GPU time (wall if untimed): a conservative end-to-end ratio, since the
    /// int8 graph also runs the pools, adds and ReLU6 the f32 chain skips.
    pub speedup_vs_f32_unfused_chain: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RealNetwork {
    /// Nodes of the quantized model (each one dispatch, or none for aliases).
    pub nodes: usize,
    pub calibration: String,
    pub calibration_s: f64,
    /// `GpuModel::weight_bytes`: int8 weights, epilogue constants and op tables.
    pub weight_int8_bytes: u64,
    /// f32 weights with BN folded (weights + bias per output channel).
    pub weight_f32_bytes: u64,
    pub weight_ratio: f64,
    pub runs: Vec<RealRun>,
}

#[derive(Clone, Debug, Serialize)]
pub struct NetworkResult {
    pub name: String,
    pub resolution: usize,
    pub conv_layers: usize,
    pub macs_per_image: u64,
    pub weight_int8_bytes: u64,
    pub weight_f32_bytes: u64,
    pub weight_ratio: f64,
    /// The real network built with `ModelBuilder`, calibrated, run by `GpuModel`.
    pub real: RealNetwork,
    pub layers: Vec<LayerResult>,
    /// The bench's own liveness plan of the conv chain's graph (used to
    /// place the conv-chain buffers; the real plan is in `real`).
    pub conv_chain_memory: Vec<MemoryResult>,
    /// Conv/linear layers only (no pool, add, ReLU6), int8 vs f32.
    pub conv_chain: Vec<EndToEnd>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub adapter: AdapterJson,
    pub timing_method: String,
    pub quick: bool,
    pub batches: Vec<usize>,
    pub ceilings: Ceilings,
    pub networks: Vec<NetworkResult>,
    pub notes: Vec<String>,
}

fn desc(l: &BenchLayer, s: &[usize]) -> String {
    let g = &l.geometry;
    if l.linear {
        return format!("linear {}->{}", g.in_channels, g.out_channels);
    }
    let dw = if g.groups > 1 && g.groups == g.in_channels {
        " dw"
    } else {
        ""
    };
    format!(
        "{}x{}{dw} {}->{} s{} @{}x{}",
        g.kernel[0], g.kernel[1], g.in_channels, g.out_channels, g.stride[0], s[1], s[2]
    )
}

/// Builds, calibrates and times the real network `name` at each batch.
fn run_real(
    ctx: &GpuContext,
    cfg: &BenchConfig,
    name: &str,
    log: &dyn Fn(&str),
) -> Result<RealNetwork> {
    let res = cfg.resolution;
    let net = match name {
        "resnet18" => resnet18_builder(res, 0x7e57),
        _ => mobilenet_v2_builder(res, 0x7e57),
    };
    let mut rng = Lcg(0xca1b);
    // Calibration runs the float network on the CPU: keep it cheap.
    let (nb, bn) = if res <= 64 { (2, 2) } else { (1, 1) };
    log(&format!(
        "{name}: calibrating (MinMax, {nb} random batch(es) of {bn} at {res}x{res}, float on the CPU)"
    ));
    let t = std::time::Instant::now();
    let calib: Vec<_> = (0..nb).map(|_| random_images(&mut rng, bn, res)).collect();
    let model = net.builder.calibrate(&calib, ObserverKind::MinMax)?;
    let calibration_s = t.elapsed().as_secs_f64();
    let g = GpuModel::new(ctx, &model)?;
    let weight_int8_bytes = g.weight_bytes();
    let mut runs = vec![];
    for &n in &cfg.batches {
        log(&format!(
            "{name} batch {n}: real network through GpuModel::run"
        ));
        let (x, shape) = random_images(&mut rng, n, res);
        let input = [Value::F32 { data: x, shape }];
        let timing = measure_model(ctx, &g, &input, cfg.e2e_opts())?;
        let p = g.plan(ctx, n)?;
        let nf = n as f64;
        runs.push(RealRun {
            batch: n,
            int8_planned_bytes: p.peak_bytes,
            f32_planned_bytes: p.f32_peak_bytes,
            activation_ratio: p.peak_bytes as f64 / p.f32_peak_bytes as f64,
            int8_buffers: p.buffers.len(),
            int8_unplanned_bytes: p.total_bytes,
            images_per_s: nf / timing.wall_median_s,
            gpu_images_per_s: timing.gpu_median_s.map(|t| nf / t),
            speedup_vs_f32_unfused_chain: None,
            timing,
        });
    }
    Ok(RealNetwork {
        nodes: model.nodes().len(),
        calibration: format!("MinMax, {nb} random batch(es) of {bn}"),
        calibration_s,
        weight_int8_bytes,
        weight_f32_bytes: net.f32_weight_bytes,
        weight_ratio: weight_int8_bytes as f64 / net.f32_weight_bytes as f64,
        runs,
    })
}

/// Runs everything the config asks for.
pub fn run(ctx: &GpuContext, cfg: &BenchConfig) -> Result<Report> {
    let log = |m: &str| {
        if cfg.verbose {
            eprintln!("[bench] {m}");
        }
    };
    let r = ctx.report();
    let ts = has_encoder_timestamps(ctx);
    log(&format!("adapter: {r}"));
    log("ceilings");
    let ceilings = measure_ceilings(ctx, cfg.quick)?;
    let ridge = ceilings.int8_ops_per_s / ceilings.copy_bytes_per_s;
    let mut networks = vec![];
    let mut rng = Lcg(0x5eed);
    for name in cfg.networks.iter().filter(|n| !n.is_empty()) {
        let net = match name.as_str() {
            "resnet18" => resnet18(cfg.resolution),
            "mobilenet_v2" => mobilenet_v2(cfg.resolution),
            _ => {
                return Err(Error::Unsupported(format!(
                    "network {name:?} (known: resnet18, mobilenet_v2)"
                )))
            }
        };
        let real = run_real(ctx, cfg, &net.name, &log)?;
        log(&format!("{}: building layers", net.name));
        // Layers, one per conv step (weights differ per layer, as in a real net).
        let mut layers: Vec<Option<BenchLayer>> = vec![];
        for st in &net.steps {
            layers.push(match &st.op {
                Op::Conv { .. } => Some(build_layer(ctx, &st.op, &mut rng)?),
                _ => None,
            });
        }
        let convs: Vec<(usize, &BenchLayer)> = layers
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.as_ref().map(|l| (i, l)))
            .collect();
        let macs_per_image: u64 = convs
            .iter()
            .map(|(i, l)| l.macs(1, &net.tensors[net.steps[*i].inputs[0]]))
            .sum();
        let weight_int8_bytes: u64 = convs.iter().map(|(_, l)| l.int8.gpu_weight_bytes()).sum();
        let weight_f32_bytes: u64 = convs.iter().map(|(_, l)| 4 * l.f32.params as u64).sum();

        // Unique shapes for the per-layer table.
        let mut uniq: Vec<(usize, usize)> = vec![]; // (step index, count)
        for &(i, l) in &convs {
            let key = (desc(l, &net.tensors[net.steps[i].inputs[0]]), l.relu);
            match uniq.iter_mut().find(|(j, _)| {
                let lj = layers[*j].as_ref().unwrap();
                (desc(lj, &net.tensors[net.steps[*j].inputs[0]]), lj.relu) == key
            }) {
                Some(u) => u.1 += 1,
                None => uniq.push((i, 1)),
            }
        }

        let mut results = vec![];
        let mut memory = vec![];
        let mut e2e = vec![];
        for &n in &cfg.batches {
            for &(i, count) in &uniq {
                let l = layers[i].as_ref().unwrap();
                let s = &net.tensors[net.steps[i].inputs[0]];
                let in_shape = l.full_shape(n, s);
                let out_shape = l.full_shape(n, &net.tensors[net.steps[i].output]);
                log(&format!(
                    "{} batch {n}: {} {}",
                    net.name,
                    l.name,
                    desc(l, s)
                ));
                let x8 = GpuTensor::from_buffer(
                    random_buffer(ctx, int8_bytes(&in_shape), false, &mut rng),
                    &in_shape,
                    l.int8.layer().input,
                )?;
                let y8 = random_buffer(ctx, int8_bytes(&out_shape), false, &mut rng);
                let t8 = measure(ctx, cfg.layer_opts(), &mut |enc| {
                    l.int8.encode(ctx, enc, &x8, &y8).map(|_| ())
                })?;
                drop((x8, y8));
                let xf = random_buffer(ctx, f32_bytes(&in_shape), true, &mut rng);
                let yf = random_buffer(ctx, f32_bytes(&out_shape), true, &mut rng);
                let tu = measure(ctx, cfg.layer_opts(), &mut |enc| {
                    l.f32
                        .encode(ctx, enc, F32Mode::Unfused, &xf, &in_shape, &yf)
                })?;
                let tf = measure(ctx, cfg.layer_opts(), &mut |enc| {
                    l.f32.encode(ctx, enc, F32Mode::Fused, &xf, &in_shape, &yf)
                })?;
                let ops = 2 * l.macs(n, s);
                let bytes =
                    int8_bytes(&in_shape) + int8_bytes(&out_shape) + l.int8.gpu_weight_bytes();
                let intensity = ops as f64 / bytes as f64;
                let ops_s = ops as f64 / t8.median_s;
                let (bound, fraction) = if intensity >= ridge {
                    ("compute", ops_s / ceilings.int8_ops_per_s)
                } else {
                    (
                        "memory",
                        bytes as f64 / t8.median_s / ceilings.copy_bytes_per_s,
                    )
                };
                results.push(LayerResult {
                    name: l.name.clone(),
                    count,
                    desc: desc(l, s),
                    batch: n,
                    input_shape: in_shape.clone(),
                    int8_kernel: format!("{:?}", l.int8.variant()),
                    ops,
                    int8_bytes: bytes,
                    int8_ops_per_s: ops_s,
                    bound: bound.into(),
                    fraction,
                    f32_unfused_dispatches: l.f32.dispatches(F32Mode::Unfused),
                    f32_flops_per_s: ops as f64 / tf.median_s,
                    speedup_vs_unfused: tu.median_s / t8.median_s,
                    speedup_vs_fused: tf.median_s / t8.median_s,
                    int8: t8,
                    f32_unfused: tu,
                    f32_fused: tf,
                });
            }

            // Memory plans and the end-to-end chains.
            let p8 = plan(&net, n, &int8_bytes);
            let pf = plan(&net, n, &f32_bytes);
            memory.push(MemoryResult {
                batch: n,
                int8_planned_bytes: p8.planned_bytes,
                f32_planned_bytes: pf.planned_bytes,
                ratio: p8.planned_bytes as f64 / pf.planned_bytes as f64,
                int8_max_live_bytes: p8.max_live_bytes,
                f32_max_live_bytes: pf.max_live_bytes,
                int8_buffers: p8.buffer_bytes.len(),
            });
            log(&format!("{} batch {n}: end to end", net.name));
            let b8: Vec<wgpu::Buffer> = p8
                .buffer_bytes
                .iter()
                .map(|&b| random_buffer(ctx, b, false, &mut rng))
                .collect();
            let bf: Vec<wgpu::Buffer> = pf
                .buffer_bytes
                .iter()
                .map(|&b| random_buffer(ctx, b, true, &mut rng))
                .collect();
            let full = |t: usize| {
                let mut v = vec![n];
                v.extend_from_slice(&net.tensors[t]);
                v
            };
            let t8 = measure(ctx, cfg.e2e_opts(), &mut |enc| {
                for &(i, l) in &convs {
                    let st = &net.steps[i];
                    let x = GpuTensor::from_buffer(
                        b8[p8.tensor_buffer[st.inputs[0]]].clone(),
                        &full(st.inputs[0]),
                        l.int8.layer().input,
                    )?;
                    l.int8
                        .encode(ctx, enc, &x, &b8[p8.tensor_buffer[st.output]])?;
                }
                Ok(())
            })?;
            let f32_chain = |mode: F32Mode| {
                measure(ctx, cfg.e2e_opts(), &mut |enc| {
                    for &(i, l) in &convs {
                        let st = &net.steps[i];
                        l.f32.encode(
                            ctx,
                            enc,
                            mode,
                            &bf[pf.tensor_buffer[st.inputs[0]]],
                            &full(st.inputs[0]),
                            &bf[pf.tensor_buffer[st.output]],
                        )?;
                    }
                    Ok(())
                })
            };
            let tu = f32_chain(F32Mode::Unfused)?;
            let tf = f32_chain(F32Mode::Fused)?;
            let nf = n as f64;
            e2e.push(EndToEnd {
                batch: n,
                int8_dispatches: convs
                    .iter()
                    .map(|&(i, l)| l.int8.dispatch_count(&full(net.steps[i].inputs[0])))
                    .sum::<Result<usize>>()?,
                f32_unfused_dispatches: convs
                    .iter()
                    .map(|(_, l)| l.f32.dispatches(F32Mode::Unfused))
                    .sum(),
                f32_fused_dispatches: convs.len(),
                int8_images_per_s: nf / t8.median_s,
                f32_unfused_images_per_s: nf / tu.median_s,
                f32_fused_images_per_s: nf / tf.median_s,
                int8_images_per_s_wall: nf / t8.wall_median_s,
                f32_unfused_images_per_s_wall: nf / tu.wall_median_s,
                f32_fused_images_per_s_wall: nf / tf.wall_median_s,
                speedup_vs_unfused: tu.median_s / t8.median_s,
                speedup_vs_fused: tf.median_s / t8.median_s,
                int8: t8,
                f32_unfused: tu,
                f32_fused: tf,
            });
        }
        networks.push(NetworkResult {
            name: net.name.clone(),
            resolution: net.resolution,
            conv_layers: convs.len(),
            macs_per_image,
            weight_int8_bytes,
            weight_f32_bytes,
            weight_ratio: weight_int8_bytes as f64 / weight_f32_bytes as f64,
            real: {
                let mut real = real;
                for r in &mut real.runs {
                    if let Some(c) = e2e.iter().find(|e| e.batch == r.batch) {
                        let t = r.timing.gpu_median_s.unwrap_or(r.timing.wall_median_s);
                        r.speedup_vs_f32_unfused_chain = Some(c.f32_unfused.median_s / t);
                    }
                }
                real
            },
            layers: results,
            conv_chain_memory: memory,
            conv_chain: e2e,
        });
    }
    let notes = vec![
        "Real end to end: the network built with ModelBuilder (random seeded weights, Conv+BN(+ReLU) fused), calibrated with MinMax observers on random images (the float network runs on the CPU), converted, and run by GpuModel::run: quantize, every conv/linear, max pool, residual adds, ReLU6 tables, average pool / mean, dequantize, one submit per inference. Wall time covers the f32 input upload, the run and the output readback; GPU time is from timestamps at the start and end of the compute pass.".into(),
        "Planned peak activation bytes (real network): GpuModel::plan, i.e. qfuse::plan::plan on the quantized model: the sum of the reused activation buffers, int8 packed NHWC4 (1 byte per element, channels padded to 4) vs the same plan with f32 tensors.".into(),
        "Conv chain: only the conv/linear layers (int8: one fused dispatch each, two for split-K; f32: Conv, BatchNorm, ReLU dispatches, or one fused dispatch), one command encoder and one submit per inference, on buffers from the bench's own liveness plan. The f32 baseline has no pool/add kernels, so the int8 vs f32 ratios come from this chain.".into(),
        "Weight bytes: int8 = packed int8 weights + 12 bytes of epilogue constants per output channel as held on the GPU; f32 = BN-folded f32 weights + f32 bias.".into(),
        "Ops: 2 x MACs for int8 and f32 alike. Int8 ceiling: a dot4I8Packed + accumulate counts 8 ops. Copy bandwidth counts bytes read + bytes written. A layer is memory-bound when its ops per byte (input + weights + output, int8) is below ceiling ops/s over copy bytes/s; its fraction is then of copy bandwidth.".into(),
        "f32 baseline (shaders/conv2d_f32.wgsl): NHWC, one invocation per 4 output channels of one pixel, no tiling: the same effort as the int8 kernel of shaders/conv2d.wgsl. BatchNorm and ReLU run in place.".into(),
    ];
    Ok(Report {
        adapter: AdapterJson {
            name: r.name.clone(),
            backend: r.backend.clone(),
            device_type: r.device_type.clone(),
            driver: r.driver.clone(),
            packed_dot: r.packed_dot,
            timestamps: r.timestamps,
        },
        timing_method: if ts {
            "GPU timestamp queries (median)".into()
        } else {
            "wall clock: encode + submit + wait (median)".into()
        },
        quick: cfg.quick,
        batches: cfg.batches.clone(),
        ceilings,
        networks,
        notes,
    })
}

// ---------------------------------------------------------------------------
// Text output

fn si(x: f64) -> String {
    let (v, u) = if x >= 1e12 {
        (x / 1e12, "T")
    } else if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    format!("{v:.2}{u}")
}

fn ms(t: f64) -> String {
    if t < 1e-3 {
        format!("{:.1}us", t * 1e6)
    } else {
        format!("{:.2}ms", t * 1e3)
    }
}

fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / (1 << 20) as f64)
}

impl Report {
    /// The report as Markdown tables (what the example prints).
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let a = &self.adapter;
        let c = &self.ceilings;
        let _ = writeln!(
            s,
            "# qfuse benchmark{}\n",
            if self.quick { " (--quick)" } else { "" }
        );
        let _ = writeln!(
            s,
            "adapter: {} ({}, {}), driver: {}",
            a.name,
            a.backend,
            a.device_type,
            if a.driver.is_empty() { "?" } else { &a.driver }
        );
        let _ = writeln!(s, "timing: {}\n", self.timing_method);
        let _ = writeln!(s, "## Ceilings\n");
        let _ = writeln!(s, "| ceiling | rate | median time |\n|---|---|---|");
        let _ = writeln!(
            s,
            "| int8 dot4I8Packed loop (register-only, 8 independent accumulators) | {}op/s | {} |",
            si(c.int8_ops_per_s),
            ms(c.int8_timing.median_s)
        );
        let _ = writeln!(
            s,
            "| int8 dot4I8Packed, 8 dependent chains (latency-bound, reference only) | {}op/s | {} |",
            si(c.int8_chained_ops_per_s),
            ms(c.int8_chained_timing.median_s)
        );
        let _ = writeln!(
            s,
            "| f32 FMA loop (register-only) | {}flop/s | {} |",
            si(c.f32_flops_per_s),
            ms(c.f32_timing.median_s)
        );
        let _ = writeln!(
            s,
            "| buffer copy ({}, read + write) | {}B/s | {} |\n",
            mib(c.copy_buffer_bytes),
            si(c.copy_bytes_per_s),
            ms(c.copy_timing.median_s)
        );
        for net in &self.networks {
            let _ = writeln!(
                s,
                "## {} ({}x{}, {} conv/linear layers, {} MMAC/image)\n",
                net.name,
                net.resolution,
                net.resolution,
                net.conv_layers,
                net.macs_per_image / 1_000_000
            );
            let _ = writeln!(s, "| layer | shape | xN | batch | int8 kernel | int8 time | int8 op/s | bound | % of ceiling | f32 3-disp | f32 fused | f32 fused flop/s | int8 vs unfused | int8 vs fused |");
            let _ = writeln!(
                s,
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
            );
            for l in &net.layers {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1}% | {} ({}) | {} | {} | {:.2}x | {:.2}x |",
                    l.name,
                    l.desc,
                    l.count,
                    l.batch,
                    l.int8_kernel,
                    ms(l.int8.median_s),
                    si(l.int8_ops_per_s),
                    l.bound,
                    100.0 * l.fraction,
                    ms(l.f32_unfused.median_s),
                    l.f32_unfused_dispatches,
                    ms(l.f32_fused.median_s),
                    si(l.f32_flops_per_s),
                    l.speedup_vs_unfused,
                    l.speedup_vs_fused
                );
            }
            let rn = &net.real;
            let _ = writeln!(
                s,
                "\n### {} end to end: the real network through `GpuModel::run` ({} nodes, calibrated {} in {:.1} s)\n",
                net.name, rn.nodes, rn.calibration, rn.calibration_s
            );
            let _ = writeln!(s, "| batch | wall (upload + run + readback) | images/s (wall) | GPU time (timestamps) | images/s (GPU) | runs | planned activations int8 | f32 | int8/f32 | vs f32 unfused conv chain |\n|---|---|---|---|---|---|---|---|---|---|");
            for r in &rn.runs {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.2} | {} | {} | {} | {} | {} | {:.3} | {} |",
                    r.batch,
                    ms(r.timing.wall_median_s),
                    r.images_per_s,
                    r.timing.gpu_median_s.map_or("-".into(), ms),
                    r.gpu_images_per_s.map_or("-".into(), |v| format!("{v:.2}")),
                    r.timing.runs,
                    mib(r.int8_planned_bytes),
                    mib(r.f32_planned_bytes),
                    r.activation_ratio,
                    r.speedup_vs_f32_unfused_chain
                        .map_or("-".into(), |v| format!("{v:.2}x"))
                );
            }
            let _ = writeln!(
                s,
                "\nweights (GpuModel::weight_bytes, tables included): int8 {} vs f32 {} ({:.3}x); conv/linear layers alone: int8 {} vs f32 {} ({:.3}x)",
                mib(rn.weight_int8_bytes),
                mib(rn.weight_f32_bytes),
                rn.weight_ratio,
                mib(net.weight_int8_bytes),
                mib(net.weight_f32_bytes),
                net.weight_ratio
            );
            let _ = writeln!(
                s,
                "\n### {} conv chain (conv/linear layers only: no pool, add or ReLU6; one submit; for the int8 vs f32 ratios)\n",
                net.name
            );
            let _ = writeln!(s, "| conv chain | batch | time | images/s | images/s (wall, 1 submit) | dispatches |\n|---|---|---|---|---|---|");
            for e in &net.conv_chain {
                for (what, t, ips, ipw, d) in [
                    (
                        "int8 fused",
                        &e.int8,
                        e.int8_images_per_s,
                        e.int8_images_per_s_wall,
                        e.int8_dispatches,
                    ),
                    (
                        "f32 unfused",
                        &e.f32_unfused,
                        e.f32_unfused_images_per_s,
                        e.f32_unfused_images_per_s_wall,
                        e.f32_unfused_dispatches,
                    ),
                    (
                        "f32 fused",
                        &e.f32_fused,
                        e.f32_fused_images_per_s,
                        e.f32_fused_images_per_s_wall,
                        e.f32_fused_dispatches,
                    ),
                ] {
                    let _ = writeln!(
                        s,
                        "| {what} | {} | {} | {:.2} | {:.2} | {d} |",
                        e.batch,
                        ms(t.median_s),
                        ips,
                        ipw
                    );
                }
            }
            for e in &net.conv_chain {
                let _ = writeln!(
                    s,
                    "\nconv chain batch {}: int8 fused is {:.2}x as fast as f32 unfused, {:.2}x as f32 fused",
                    e.batch, e.speedup_vs_unfused, e.speedup_vs_fused
                );
            }
            s.push('\n');
        }
        let _ = writeln!(s, "## Targets\n");
        let big: Vec<&LayerResult> = self
            .networks
            .iter()
            .flat_map(|n| n.layers.iter())
            .filter(|l| l.bound == "compute" && l.ops >= 200_000_000)
            .collect();
        if big.is_empty() {
            let _ = writeln!(s, "- large layers (>= 0.2 Gop per dispatch, compute-bound): none at this resolution/batch");
        } else {
            let best = big.iter().map(|l| l.fraction).fold(0.0, f64::max);
            let mut f: Vec<f64> = big.iter().map(|l| l.fraction).collect();
            let med = median(&mut f);
            let _ = writeln!(
                s,
                "- large compute-bound layers (>= 0.2 Gop per dispatch): {} measured, median {:.1}%, best {:.1}% of the int8 ceiling; {} reach 30% (target), {} reach 60%",
                big.len(),
                100.0 * med,
                100.0 * best,
                big.iter().filter(|l| l.fraction >= 0.3).count(),
                big.iter().filter(|l| l.fraction >= 0.6).count()
            );
        }
        for net in &self.networks {
            for e in &net.conv_chain {
                let _ = writeln!(
                    s,
                    "- {} batch {}: conv chain int8 fused vs f32 unfused {:.2}x (target >= 3x)",
                    net.name, e.batch, e.speedup_vs_unfused
                );
            }
            for r in &net.real.runs {
                if let Some(v) = r.speedup_vs_f32_unfused_chain {
                    let _ = writeln!(s, "- {} batch {}: real int8 network vs f32 unfused conv chain {:.2}x (conservative: the int8 side also runs pools/adds/ReLU6)", net.name, r.batch, v);
                }
            }
            let _ = writeln!(
                s,
                "- {}: weight memory int8/f32 = {:.3} with op tables, {:.3} conv/linear layers only (target <= 0.26)",
                net.name, net.real.weight_ratio, net.weight_ratio
            );
            for r in &net.real.runs {
                let _ = writeln!(
                    s,
                    "- {} batch {}: planned peak activations int8/f32 = {:.3} (GpuModel::plan; target <= 0.26)",
                    net.name, r.batch, r.activation_ratio
                );
            }
        }
        let _ = writeln!(s, "\n## Notes\n");
        for n in &self.notes {
            let _ = writeln!(s, "- {n}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_have_the_right_size() {
        let r = resnet18(224);
        let convs = r
            .steps
            .iter()
            .filter(|s| matches!(s.op, Op::Conv { .. }))
            .count();
        assert_eq!(convs, 21); // 20 convs + fc
        let m = mobilenet_v2(224);
        let convs = m
            .steps
            .iter()
            .filter(|s| matches!(s.op, Op::Conv { .. }))
            .count();
        assert_eq!(convs, 53); // 52 convs + classifier
        assert_eq!(r.tensors.last().unwrap(), &vec![1000]);
    }

    #[test]
    fn plan_reuses_buffers() {
        let net = resnet18(224);
        let p = plan(&net, 1, &|s| 4 * s.iter().product::<usize>() as u64);
        // conv1 output (64x112x112) and the pooled tensor are alive together.
        let c1 = 4 * 64 * 112 * 112u64;
        assert!(p.max_live_bytes >= c1 + c1 / 4);
        assert!(p.planned_bytes >= p.max_live_bytes);
        assert!(p.planned_bytes < 3 * c1, "{p:?}");
        // No tensor shares a buffer with an input of the step that writes it.
        for st in &net.steps {
            for &i in &st.inputs {
                assert_ne!(p.tensor_buffer[i], p.tensor_buffer[st.output]);
            }
        }
    }
}
