//! The benchmark: what to run ([`BenchConfig`]), [`run`], and every number
//! it measures ([`Report`], serialized as the JSON that
//! `tools/device_bench.sh` collects).

use qfuse::builder::ObserverKind;
use qfuse::{Error, GpuContext, GpuModel, GpuTensor, Result, Value};
use serde::Serialize;

use crate::ceilings::{measure_ceilings, Ceilings};
use crate::layers::{
    build_layer_with, default_variant, kernel_at, packed_dot_variant, random_buffer, runs_coop,
    BenchLayer, F32Mode,
};
use crate::networks::{
    f32_bytes, int8_bytes, mobilenet_v2, plan, random_images, resnet18, Network, Op,
};
use crate::peaks::{frac, ClockStats, PeakOverrides, SpecPeaks};
use crate::rng::Lcg;
use crate::threads::{measure_threads, ThreadsResult};
use crate::timing::{has_encoder_timestamps, measure, measure_model, Timing, TimingOpts};

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
    /// Thread counts for the throughput-vs-threads measurement (threads
    /// sharing one `GpuModel`); empty: skipped.
    pub threads: Vec<usize>,
    /// Skip the per-layer table.
    pub skip_layers: bool,
    /// Skip the conv chain.
    pub skip_chain: bool,
    /// Skip the real networks through `GpuModel::run`.
    pub skip_real: bool,
    /// Skip the f32 simple (untiled) baseline (its fields are then null);
    /// the tiled f32 baseline always runs.
    pub skip_simple_f32: bool,
    /// Specified peaks given on the command line (replace the table's).
    pub peaks: PeakOverrides,
    /// An `nvidia-smi --query-gpu=timestamp,clocks.sm --format=csv -lms 200`
    /// log written during the run: read at the end, its SM clock samples
    /// summarized and the peaks recomputed at the median clock.
    pub clock_log: Option<std::path::PathBuf>,
    /// Run `nvidia-smi` (if there is one) while the ceilings are measured
    /// and record the SM clock of exactly that phase.
    pub sample_clock: bool,
    /// Workgroups (of 256) of the ceiling loops; `None`: 16384 on a GPU,
    /// 1024 on a CPU adapter.
    pub ceiling_groups: Option<u32>,
    /// Use the tensor-core kernel's emulation (`ConvVariant::Coop {
    /// emulated: true, splits: None }`) as the default variant of every
    /// conv/linear layer of one group (per-layer table, conv chain, real
    /// networks through `GpuModel::with_variants`), so that the
    /// tensor-core-vs-packed-dot comparison runs on any adapter (slowly).
    pub coop_emulated: bool,
}

impl Default for BenchConfig {
    /// The full benchmark at 224x224, batches 1 and 16, both networks.
    fn default() -> Self {
        BenchConfig {
            quick: false,
            batches: vec![1, 16],
            resolution: 224,
            networks: vec!["resnet18".into(), "mobilenet_v2".into()],
            verbose: false,
            budget_s: None,
            threads: vec![1, 2, 4, 8],
            skip_layers: false,
            skip_chain: false,
            skip_real: false,
            skip_simple_f32: false,
            peaks: PeakOverrides::default(),
            clock_log: None,
            sample_clock: false,
            ceiling_groups: None,
            coop_emulated: false,
        }
    }
}

impl BenchConfig {
    /// The label of the default int8 path where it is the cooperative-matrix
    /// kernel ("tensor cores", or "tensor cores (emulated)" with
    /// `coop_emulated`); `None` where the default is the packed-dot kernels.
    pub fn coop_label(&self, ctx: &GpuContext) -> Option<&'static str> {
        if self.coop_emulated {
            Some(COOP_EMULATED_LABEL)
        } else if ctx.cooperative_matrix_by_default() {
            Some(COOP_LABEL)
        } else {
            None
        }
    }
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

/// Label of the tensor-core (cooperative-matrix) int8 path.
pub const COOP_LABEL: &str = "tensor cores";
/// Label of the tensor-core kernel's emulation (`--coop-emulated`).
pub const COOP_EMULATED_LABEL: &str = "tensor cores (emulated)";
/// Label of the packed-dot (`dot4I8Packed`) int8 path.
pub const PACKED_DOT_LABEL: &str = "packed dot";

#[derive(Clone, Debug, Serialize)]
pub struct AdapterJson {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub packed_dot: bool,
    pub timestamps: bool,
    /// The device runs the tensor-core kernel (`GpuContext::cooperative_matrix`).
    pub cooperative_matrix: bool,
    /// Why not, where it does not.
    pub cooperative_matrix_off: Option<String>,
    /// The adapter report line (`AdapterReport`'s Display: ends with
    /// "tensor cores: yes/no (why)").
    pub report: String,
}

/// The packed-dot twin of a layer whose default kernel is the
/// cooperative-matrix one: the same layer on `ConvVariant::choose`'s
/// variant (`dot4I8Packed` kernels).
#[derive(Clone, Debug, Serialize)]
pub struct PackedDotLayer {
    /// The variant (`Debug`).
    pub kernel: String,
    /// The kernel it runs at this shape (`layers::kernel_at`).
    pub kernel_at_shape: String,
    pub timing: Timing,
    pub ops_per_s: f64,
    /// Fraction of the int8 ceiling (compute-bound) or of copy bandwidth
    /// (memory-bound; `bound` as the layer's).
    pub fraction: f64,
    /// Fraction of the specified int8 (DP4A) peak or memory bandwidth.
    pub spec_fraction: Option<f64>,
    /// Packed-dot time / default (cooperative-matrix) time: above 1 where
    /// the tensor-core kernel is faster.
    pub time_vs_coop: f64,
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
    /// The default variant (`Debug`; `GpuLayer::new`'s, or the emulated
    /// tensor-core kernel with `coop_emulated`).
    pub int8_kernel: String,
    /// The kernel it runs at this shape (`layers::kernel_at`), e.g.
    /// "Coop (tensor cores), one pass", "SplitK 64x64, 4 splits", "Gemv".
    pub int8_kernel_at_shape: String,
    /// The int8 kernel at this shape is the cooperative-matrix one (tensor
    /// cores, or their emulation): false for packed-dot kernels, including
    /// a `Coop` default that runs them for few output pixels.
    pub coop: bool,
    pub ops: u64,
    /// Minimum bytes an int8 layer moves: input + weights + output.
    pub int8_bytes: u64,
    pub int8: Timing,
    pub int8_ops_per_s: f64,
    /// "compute" or "memory" (ops/byte against the ceilings' ratio).
    pub bound: String,
    /// Fraction of the int8 ceiling (compute-bound) or of copy bandwidth (memory-bound).
    pub fraction: f64,
    /// Fraction of the specified int8 (DP4A) peak (compute-bound) or of the
    /// specified memory bandwidth (memory-bound), where known.
    pub spec_fraction: Option<f64>,
    /// int8 op/s as a fraction of the specified dense f16 tensor-core peak,
    /// for layers whose int8 kernel runs on cooperative matrices at this
    /// shape (`coop`; tensor cores, or their emulation with
    /// `coop_emulated`); null for packed-dot kernels or an unknown peak.
    pub tensor_spec_fraction: Option<f64>,
    /// Where the default variant is a `ConvVariant::Coop`: the same layer
    /// on the packed-dot kernels (null otherwise).
    pub packed_dot: Option<PackedDotLayer>,
    /// The kernel the tiled f32 baseline runs on this layer: "f32 tiled"
    /// (`conv2d_f32_tiled.wgsl`), or "f32 simple (untiled)" for depthwise
    /// layers (as the int8 side runs its one-word-per-invocation kernel).
    pub f32_tiled_kernel: String,
    /// Tiled f32: conv, BatchNorm, ReLU (up to 3 dispatches).
    pub f32_tiled_unfused: Timing,
    pub f32_tiled_unfused_dispatches: usize,
    /// Tiled f32, BN folded and ReLU fused: one dispatch.
    pub f32_tiled_fused: Timing,
    /// 2 x MACs / tiled fused time.
    pub f32_tiled_flops_per_s: f64,
    /// Tiled fused flop/s as a fraction of the measured f32 ceiling.
    pub f32_tiled_fraction: f64,
    /// Tiled fused flop/s as a fraction of the specified f32 FMA peak.
    pub f32_tiled_spec_fraction: Option<f64>,
    /// Minimum bytes an f32 layer moves: input + weights + bias + output, f32.
    pub f32_bytes: u64,
    /// Tiled f32 unfused time / int8 fused time: the like-for-like ratio.
    pub speedup_vs_tiled_unfused: f64,
    /// Tiled f32 fused time / int8 fused time: the like-for-like ratio.
    pub speedup_vs_tiled_fused: f64,
    /// f32 simple (untiled, `conv2d_f32.wgsl`): conv, BatchNorm, ReLU
    /// (null with `skip_simple_f32`).
    pub f32_unfused: Option<Timing>,
    pub f32_unfused_dispatches: usize,
    /// f32 simple (untiled), fused: one dispatch.
    pub f32_fused: Option<Timing>,
    /// 2 x MACs / f32 simple (untiled) fused time (NaN, i.e. null, if skipped).
    pub f32_flops_per_s: f64,
    /// f32 simple (untiled) unfused time / int8 fused time (NaN, i.e. null, if skipped).
    pub speedup_vs_unfused: f64,
    /// f32 simple (untiled) fused time / int8 fused time (NaN, i.e. null, if skipped).
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

/// The conv chain at one batch size. `f32_tiled_*`: the tiled f32
/// baseline (the like-for-like comparison); `f32_unfused` / `f32_fused`
/// without "tiled": the f32 simple (untiled) baseline (null, and NaN ratios
/// serialized as null, with `skip_simple_f32`).
#[derive(Clone, Debug, Serialize)]
pub struct EndToEnd {
    pub batch: usize,
    /// The int8 layers' default path: "tensor cores", "tensor cores
    /// (emulated)" or "packed dot".
    pub int8_path: String,
    pub int8: Timing,
    pub int8_dispatches: usize,
    /// Where the default path is the tensor-core one: the same chain with
    /// every layer on the packed-dot kernels (null otherwise).
    pub packed_dot: Option<ChainPackedDot>,
    pub f32_tiled_unfused: Timing,
    pub f32_tiled_unfused_dispatches: usize,
    pub f32_tiled_fused: Timing,
    pub f32_tiled_fused_dispatches: usize,
    pub f32_unfused: Option<Timing>,
    pub f32_unfused_dispatches: usize,
    pub f32_fused: Option<Timing>,
    pub f32_fused_dispatches: usize,
    pub int8_images_per_s: f64,
    pub f32_tiled_unfused_images_per_s: f64,
    pub f32_tiled_fused_images_per_s: f64,
    pub f32_unfused_images_per_s: f64,
    pub f32_fused_images_per_s: f64,
    /// Images/s from the wall clock (encode + one submit + wait per inference).
    pub int8_images_per_s_wall: f64,
    pub f32_tiled_unfused_images_per_s_wall: f64,
    pub f32_tiled_fused_images_per_s_wall: f64,
    pub f32_unfused_images_per_s_wall: f64,
    pub f32_fused_images_per_s_wall: f64,
    /// Tiled f32 unfused / int8 fused time (like for like).
    pub speedup_vs_tiled_unfused: f64,
    /// Tiled f32 fused / int8 fused time (like for like).
    pub speedup_vs_tiled_fused: f64,
    /// f32 simple (untiled) unfused / int8 fused time.
    pub speedup_vs_unfused: f64,
    /// f32 simple (untiled) fused / int8 fused time.
    pub speedup_vs_fused: f64,
}

/// The conv chain on the packed-dot kernels.
#[derive(Clone, Debug, Serialize)]
pub struct ChainPackedDot {
    pub timing: Timing,
    pub dispatches: usize,
    pub images_per_s: f64,
    pub images_per_s_wall: f64,
    /// Packed-dot chain time / default (tensor-core) chain time.
    pub time_vs_coop: f64,
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
    /// Tiled f32 unfused conv chain time (GPU if timed, else wall) / this
    /// graph's GPU time (wall if untimed): a conservative end-to-end ratio,
    /// since the int8 graph also runs the pools, adds and ReLU6 the f32
    /// chain skips.
    pub speedup_vs_f32_tiled_unfused_chain: Option<f64>,
    /// The same against the f32 simple (untiled) unfused conv chain.
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
    /// The int8 kernels of `runs`: "tensor cores" (`GpuModel::new` on a
    /// context with cooperative matrices), "tensor cores (emulated)"
    /// (`coop_emulated`) or "packed dot".
    pub path: String,
    pub runs: Vec<RealRun>,
    /// Where `runs` is a tensor-core path: the same network through
    /// `GpuModel::with_variants` with `ConvVariant::choose` (packed dot
    /// only), label "packed dot" (null otherwise). Its f32-chain ratios
    /// are against the same f32 chains.
    pub packed_dot_runs: Option<Vec<RealRun>>,
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
    /// The real network built with `ModelBuilder`, calibrated, run by
    /// `GpuModel` (null with `skip_real`).
    pub real: Option<RealNetwork>,
    pub layers: Vec<LayerResult>,
    /// The bench's own liveness plan of the conv chain's graph (used to
    /// place the conv-chain buffers; the real plan is in `real`).
    pub conv_chain_memory: Vec<MemoryResult>,
    /// Conv/linear layers only (no pool, add, ReLU6), int8 vs f32.
    pub conv_chain: Vec<EndToEnd>,
}

/// Measured ceilings as fractions of specified peaks (null where the peak
/// is unknown).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CeilingsVsSpec {
    pub int8: Option<f64>,
    pub int8_chained: Option<f64>,
    pub int8_legacy: Option<f64>,
    pub f32: Option<f64>,
    pub f32_legacy: Option<f64>,
    pub copy: Option<f64>,
}

impl CeilingsVsSpec {
    fn new(c: &Ceilings, p: &SpecPeaks) -> Self {
        CeilingsVsSpec {
            int8: frac(c.int8_ops_per_s, p.int8_ops_per_s),
            int8_chained: frac(c.int8_chained_ops_per_s, p.int8_ops_per_s),
            int8_legacy: frac(c.int8_legacy_ops_per_s, p.int8_ops_per_s),
            f32: frac(c.f32_flops_per_s, p.f32_flops_per_s),
            f32_legacy: frac(c.f32_legacy_flops_per_s, p.f32_flops_per_s),
            copy: frac(c.copy_bytes_per_s, p.mem_bytes_per_s),
        }
    }
}

/// Runs `nvidia-smi` logging the SM clock every 200 ms into a temporary
/// file while `f` runs; `None` for the stats when there is no nvidia-smi.
pub(crate) fn with_clock_samples<T>(
    enabled: bool,
    f: impl FnOnce() -> Result<T>,
) -> Result<(T, Option<ClockStats>)> {
    if !enabled {
        return Ok((f()?, None));
    }
    let path = std::env::temp_dir().join(format!("qfuse-bench-clock-{}.csv", std::process::id()));
    let child = std::fs::File::create(&path).ok().and_then(|file| {
        std::process::Command::new("nvidia-smi")
            .args([
                "--query-gpu=timestamp,clocks.sm,utilization.gpu",
                "--format=csv",
                "-lms",
                "200",
            ])
            .stdout(file)
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()
    });
    let r = f();
    let stats = child.and_then(|mut c| {
        // SIGINT first (what Ctrl-C sends: nvidia-smi leaves its loop and
        // flushes), SIGKILL if it is still running after 2 s.
        let _ = std::process::Command::new("kill")
            .args(["-INT", &c.id().to_string()])
            .status();
        let t = std::time::Instant::now();
        while matches!(c.try_wait(), Ok(None)) && t.elapsed().as_secs_f64() < 2.0 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if matches!(c.try_wait(), Ok(None)) {
            let _ = c.kill();
        }
        let _ = c.wait();
        let text = std::fs::read_to_string(&path).ok()?;
        ClockStats::parse("nvidia-smi during the ceilings (--sample-clock)", &text)
    });
    let _ = std::fs::remove_file(&path);
    Ok((r?, stats))
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub adapter: AdapterJson,
    pub timing_method: String,
    pub quick: bool,
    pub batches: Vec<usize>,
    pub ceilings: Ceilings,
    /// The chip's specified peaks (table by adapter name, or the command
    /// line); null where unknown.
    pub spec_peaks: Option<SpecPeaks>,
    /// The measured ceilings as fractions of the specified peaks.
    pub ceilings_vs_spec: CeilingsVsSpec,
    /// SM clock samples during the ceilings (`sample_clock`).
    pub ceiling_clock: Option<ClockStats>,
    /// SM clock samples of the run (`clock_log`).
    pub clock: Option<ClockStats>,
    /// The specified peaks recomputed at the measured clock (the ceiling
    /// phase's busy median if sampled, else the clock log's).
    pub peaks_at_measured_clock: Option<SpecPeaks>,
    /// The measured ceilings as fractions of the peaks at the measured clock.
    pub ceilings_vs_measured_clock_peak: Option<CeilingsVsSpec>,
    pub networks: Vec<NetworkResult>,
    /// Images/s with several threads sharing one `GpuModel`.
    pub threads: Option<ThreadsResult>,
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
    network: &Network,
    log: &dyn Fn(&str),
) -> Result<RealNetwork> {
    let res = cfg.resolution;
    let name = &network.name;
    let net = network.float_network(0x7e57);
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
    let coop = cfg.coop_label(ctx);
    // The default: GpuModel::new (tensor cores where the context has them),
    // or the tensor-core emulation wherever it applies (coop_emulated).
    let g = if cfg.coop_emulated {
        GpuModel::with_variants(ctx, &model, &|l| default_variant(ctx, l, true))?
    } else {
        GpuModel::new(ctx, &model)?
    };
    // Where that is a tensor-core path: the packed-dot kernels only.
    let packed = match coop {
        Some(_) => Some(GpuModel::with_variants(ctx, &model, &|l| {
            packed_dot_variant(ctx, l)
        })?),
        None => None,
    };
    let weight_int8_bytes = g.weight_bytes();
    let path = coop.unwrap_or(PACKED_DOT_LABEL);
    let mut runs = vec![];
    let mut packed_runs = vec![];
    for &n in &cfg.batches {
        let (x, shape) = random_images(&mut rng, n, res);
        let input = [Value::F32 { data: x, shape }];
        let models = [(path, Some(&g)), (PACKED_DOT_LABEL, packed.as_ref())];
        for (i, (label, g)) in models.into_iter().enumerate() {
            let Some(g) = g else { continue };
            log(&format!(
                "{name} batch {n}: real network through GpuModel::run ({label})"
            ));
            let timing = measure_model(ctx, g, &input, cfg.e2e_opts())?;
            let p = g.plan(ctx, n)?;
            let nf = n as f64;
            let run = RealRun {
                batch: n,
                int8_planned_bytes: p.peak_bytes,
                f32_planned_bytes: p.f32_peak_bytes,
                activation_ratio: p.peak_bytes as f64 / p.f32_peak_bytes as f64,
                int8_buffers: p.buffers.len(),
                int8_unplanned_bytes: p.total_bytes,
                images_per_s: nf / timing.wall_median_s,
                gpu_images_per_s: timing.gpu_median_s.map(|t| nf / t),
                speedup_vs_f32_tiled_unfused_chain: None,
                speedup_vs_f32_unfused_chain: None,
                timing,
            };
            if i == 0 {
                runs.push(run);
            } else {
                packed_runs.push(run);
            }
        }
    }
    Ok(RealNetwork {
        path: path.into(),
        packed_dot_runs: packed.is_some().then_some(packed_runs),
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
    let (ceilings, ceiling_clock) = with_clock_samples(cfg.sample_clock, || {
        measure_ceilings(ctx, cfg.quick, cfg.ceiling_groups)
    })?;
    let ridge = ceilings.int8_ops_per_s / ceilings.copy_bytes_per_s;
    let spec = SpecPeaks::lookup(&r.name, &cfg.peaks);
    let spec_int8 = spec.as_ref().and_then(|p| p.int8_ops_per_s);
    let spec_f32 = spec.as_ref().and_then(|p| p.f32_flops_per_s);
    let spec_mem = spec.as_ref().and_then(|p| p.mem_bytes_per_s);
    let spec_f16 = spec.as_ref().and_then(|p| p.f16_tensor_flops_per_s);
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
        let real = if cfg.skip_real {
            None
        } else {
            Some(run_real(ctx, cfg, &net, &log)?)
        };
        log(&format!("{}: building layers", net.name));
        // Layers, one per conv step (weights differ per layer, as in a real net).
        let mut layers: Vec<Option<BenchLayer>> = vec![];
        for st in &net.steps {
            layers.push(match &st.op {
                Op::Conv { .. } => {
                    Some(build_layer_with(ctx, &st.op, &mut rng, cfg.coop_emulated)?)
                }
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
        let simple = !cfg.skip_simple_f32;
        for &n in &cfg.batches {
            // One input and one output buffer per batch, as large as the
            // largest layer needs, shared by every layer (filling fresh
            // random buffers per layer costs seconds at batch 256).
            let (mut in8, mut out8, mut inf, mut outf) = (0u64, 0u64, 0u64, 0u64);
            for &(i, _) in &uniq {
                let l = layers[i].as_ref().unwrap();
                let in_shape = l.full_shape(n, &net.tensors[net.steps[i].inputs[0]]);
                let out_shape = l.full_shape(n, &net.tensors[net.steps[i].output]);
                in8 = in8.max(int8_bytes(&in_shape));
                out8 = out8.max(int8_bytes(&out_shape));
                inf = inf.max(f32_bytes(&in_shape));
                outf = outf.max(f32_bytes(&out_shape));
            }
            let bufs = (!cfg.skip_layers && !uniq.is_empty()).then(|| {
                (
                    random_buffer(ctx, in8, false, &mut rng),
                    random_buffer(ctx, out8, false, &mut rng),
                    random_buffer(ctx, inf, true, &mut rng),
                    random_buffer(ctx, outf, true, &mut rng),
                )
            });
            for &(i, count) in uniq.iter().filter(|_| !cfg.skip_layers) {
                let (b_in8, y8, xf, yf) = bufs.as_ref().unwrap();
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
                let x8 = GpuTensor::from_buffer(b_in8.clone(), &in_shape, l.int8.layer().input())?;
                let t8 = measure(ctx, cfg.layer_opts(), &mut |enc| {
                    l.int8.encode(ctx, enc, &x8, y8).map(|_| ())
                })?;
                let tp = match &l.packed_dot {
                    Some(p) => {
                        let xp =
                            GpuTensor::from_buffer(b_in8.clone(), &in_shape, p.layer().input())?;
                        let t = measure(ctx, cfg.layer_opts(), &mut |enc| {
                            p.encode(ctx, enc, &xp, y8).map(|_| ())
                        })?;
                        Some((p, t))
                    }
                    None => None,
                };
                drop(x8);
                let f32_time = |mode: F32Mode| {
                    measure(ctx, cfg.layer_opts(), &mut |enc| {
                        l.f32.encode(ctx, enc, mode, xf, &in_shape, yf)
                    })
                };
                let ttu = f32_time(F32Mode::TiledUnfused)?;
                let ttf = f32_time(F32Mode::TiledFused)?;
                let (tu, tf) = if simple {
                    (
                        Some(f32_time(F32Mode::Unfused)?),
                        Some(f32_time(F32Mode::Fused)?),
                    )
                } else {
                    (None, None)
                };
                let ops = 2 * l.macs(n, s);
                let bytes =
                    int8_bytes(&in_shape) + int8_bytes(&out_shape) + l.int8.gpu_weight_bytes();
                let fbytes = f32_bytes(&in_shape) + f32_bytes(&out_shape) + 4 * l.f32.params as u64;
                let intensity = ops as f64 / bytes as f64;
                let ops_s = ops as f64 / t8.median_s;
                let compute = intensity >= ridge;
                // (fraction of ceiling, of spec peak) of a time.
                let fractions = |secs: f64| {
                    if compute {
                        let ops_s = ops as f64 / secs;
                        (ops_s / ceilings.int8_ops_per_s, frac(ops_s, spec_int8))
                    } else {
                        let bytes_s = bytes as f64 / secs;
                        (bytes_s / ceilings.copy_bytes_per_s, frac(bytes_s, spec_mem))
                    }
                };
                let bound = if compute { "compute" } else { "memory" };
                let (fraction, spec_fraction) = fractions(t8.median_s);
                let coop = runs_coop(&l.int8, &in_shape)?;
                let packed_dot = match tp {
                    Some((p, t)) => {
                        let (fraction, spec_fraction) = fractions(t.median_s);
                        Some(PackedDotLayer {
                            kernel: format!("{:?}", p.variant()),
                            kernel_at_shape: kernel_at(p, &in_shape)?,
                            ops_per_s: ops as f64 / t.median_s,
                            fraction,
                            spec_fraction,
                            time_vs_coop: t.median_s / t8.median_s,
                            timing: t,
                        })
                    }
                    None => None,
                };
                let f32_tiled_flops_per_s = ops as f64 / ttf.median_s;
                let secs = |t: &Option<Timing>| t.as_ref().map_or(f64::NAN, |t| t.median_s);
                results.push(LayerResult {
                    name: l.name.clone(),
                    count,
                    desc: desc(l, s),
                    batch: n,
                    input_shape: in_shape.clone(),
                    int8_kernel: format!("{:?}", l.int8.variant()),
                    int8_kernel_at_shape: kernel_at(&l.int8, &in_shape)?,
                    coop,
                    packed_dot,
                    ops,
                    int8_bytes: bytes,
                    int8_ops_per_s: ops_s,
                    bound: bound.into(),
                    fraction,
                    spec_fraction,
                    tensor_spec_fraction: if coop { frac(ops_s, spec_f16) } else { None },
                    f32_tiled_fraction: f32_tiled_flops_per_s / ceilings.f32_flops_per_s,
                    f32_tiled_spec_fraction: frac(f32_tiled_flops_per_s, spec_f32),
                    f32_tiled_flops_per_s,
                    f32_tiled_kernel: l.f32.kernel_name(F32Mode::TiledFused).into(),
                    f32_tiled_unfused_dispatches: l.f32.dispatches(F32Mode::TiledUnfused),
                    f32_bytes: fbytes,
                    speedup_vs_tiled_unfused: ttu.median_s / t8.median_s,
                    speedup_vs_tiled_fused: ttf.median_s / t8.median_s,
                    f32_unfused_dispatches: l.f32.dispatches(F32Mode::Unfused),
                    f32_flops_per_s: ops as f64 / secs(&tf),
                    speedup_vs_unfused: secs(&tu) / t8.median_s,
                    speedup_vs_fused: secs(&tf) / t8.median_s,
                    int8: t8,
                    f32_tiled_unfused: ttu,
                    f32_tiled_fused: ttf,
                    f32_unfused: tu,
                    f32_fused: tf,
                });
            }
            drop(bufs);

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
            if cfg.skip_chain {
                continue;
            }
            log(&format!("{} batch {n}: conv chain", net.name));
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
            // The int8 chain on the default layers, or (`packed`) on the
            // packed-dot twins where a layer has one.
            let int8_chain = |packed: bool| {
                measure(ctx, cfg.e2e_opts(), &mut |enc| {
                    for &(i, l) in &convs {
                        let st = &net.steps[i];
                        let g = match (&l.packed_dot, packed) {
                            (Some(p), true) => p,
                            _ => &l.int8,
                        };
                        let x = GpuTensor::from_buffer(
                            b8[p8.tensor_buffer[st.inputs[0]]].clone(),
                            &full(st.inputs[0]),
                            g.layer().input(),
                        )?;
                        g.encode(ctx, enc, &x, &b8[p8.tensor_buffer[st.output]])?;
                    }
                    Ok(())
                })
            };
            let t8 = int8_chain(false)?;
            let coop_path = convs.iter().any(|(_, l)| l.packed_dot.is_some());
            let tp = if coop_path {
                Some(int8_chain(true)?)
            } else {
                None
            };
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
            let ttu = f32_chain(F32Mode::TiledUnfused)?;
            let ttf = f32_chain(F32Mode::TiledFused)?;
            let (tu, tf) = if simple {
                (
                    Some(f32_chain(F32Mode::Unfused)?),
                    Some(f32_chain(F32Mode::Fused)?),
                )
            } else {
                (None, None)
            };
            let nf = n as f64;
            let med = |t: &Option<Timing>| t.as_ref().map_or(f64::NAN, |t| t.median_s);
            let wall = |t: &Option<Timing>| t.as_ref().map_or(f64::NAN, |t| t.wall_median_s);
            let unfused_dispatches: usize = convs
                .iter()
                .map(|(_, l)| l.f32.dispatches(F32Mode::Unfused))
                .sum();
            let packed_dot = match tp {
                Some(t) => Some(ChainPackedDot {
                    dispatches: convs
                        .iter()
                        .map(|&(i, l)| {
                            l.packed_dot
                                .as_ref()
                                .unwrap_or(&l.int8)
                                .dispatch_count(&full(net.steps[i].inputs[0]))
                        })
                        .sum::<Result<usize>>()?,
                    images_per_s: nf / t.median_s,
                    images_per_s_wall: nf / t.wall_median_s,
                    time_vs_coop: t.median_s / t8.median_s,
                    timing: t,
                }),
                None => None,
            };
            e2e.push(EndToEnd {
                batch: n,
                int8_path: if coop_path {
                    cfg.coop_label(ctx).unwrap_or(COOP_LABEL)
                } else {
                    PACKED_DOT_LABEL
                }
                .into(),
                packed_dot,
                int8_dispatches: convs
                    .iter()
                    .map(|&(i, l)| l.int8.dispatch_count(&full(net.steps[i].inputs[0])))
                    .sum::<Result<usize>>()?,
                f32_tiled_unfused_dispatches: unfused_dispatches,
                f32_tiled_fused_dispatches: convs.len(),
                f32_unfused_dispatches: unfused_dispatches,
                f32_fused_dispatches: convs.len(),
                int8_images_per_s: nf / t8.median_s,
                f32_tiled_unfused_images_per_s: nf / ttu.median_s,
                f32_tiled_fused_images_per_s: nf / ttf.median_s,
                f32_unfused_images_per_s: nf / med(&tu),
                f32_fused_images_per_s: nf / med(&tf),
                int8_images_per_s_wall: nf / t8.wall_median_s,
                f32_tiled_unfused_images_per_s_wall: nf / ttu.wall_median_s,
                f32_tiled_fused_images_per_s_wall: nf / ttf.wall_median_s,
                f32_unfused_images_per_s_wall: nf / wall(&tu),
                f32_fused_images_per_s_wall: nf / wall(&tf),
                speedup_vs_tiled_unfused: ttu.median_s / t8.median_s,
                speedup_vs_tiled_fused: ttf.median_s / t8.median_s,
                speedup_vs_unfused: med(&tu) / t8.median_s,
                speedup_vs_fused: med(&tf) / t8.median_s,
                int8: t8,
                f32_tiled_unfused: ttu,
                f32_tiled_fused: ttf,
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
            real: real.map(|mut real| {
                let packed = real.packed_dot_runs.iter_mut().flatten();
                for r in real.runs.iter_mut().chain(packed) {
                    if let Some(c) = e2e.iter().find(|e| e.batch == r.batch) {
                        let t = r.timing.gpu_median_s.unwrap_or(r.timing.wall_median_s);
                        r.speedup_vs_f32_tiled_unfused_chain =
                            Some(c.f32_tiled_unfused.median_s / t);
                        r.speedup_vs_f32_unfused_chain =
                            c.f32_unfused.as_ref().map(|u| u.median_s / t);
                    }
                }
                real
            }),
            layers: results,
            conv_chain_memory: memory,
            conv_chain: e2e,
        });
    }
    let threads = if cfg.threads.iter().any(|&t| t > 0) {
        let counts: Vec<usize> = cfg.threads.iter().copied().filter(|&t| t > 0).collect();
        log(&format!("threads: {counts:?} sharing one GpuModel"));
        Some(measure_threads(
            ctx,
            &counts,
            2,
            if cfg.quick { 48 } else { 400 },
        )?)
    } else {
        None
    };
    let notes = vec![
        "Threads: the bundled digits model at batch 2, one GpuModel shared by N threads (each run takes a pooled instance of the model's buffers; no lock is held while the GPU works), the same number of runs in all for each N, after an untimed round that builds the instances; images/s over the wall time of the whole round.".into(),
        "Real end to end: the network built with ModelBuilder (random seeded weights, Conv+BN(+ReLU) fused), calibrated with MinMax observers on random images (the float network runs on the CPU), converted, and run by GpuModel::run: quantize, every conv/linear, max pool, residual adds, ReLU6 tables, average pool / mean, dequantize, one submit per inference. Wall time covers the f32 input upload, the run and the output readback; GPU time is from timestamps at the start and end of the compute pass.".into(),
        "Planned peak activation bytes (real network): GpuModel::plan, i.e. qfuse::plan::plan on the quantized model: the sum of the reused activation buffers, int8 packed NHWC4 (1 byte per element, channels padded to 4) vs the same plan with f32 tensors.".into(),
        "Conv chain: only the conv/linear layers (int8: one fused dispatch each, two for split-K; f32: Conv, BatchNorm, ReLU dispatches, or one fused dispatch), one command encoder and one submit per inference, on buffers from the bench's own liveness plan. The f32 baselines have no pool/add kernels, so the int8 vs f32 ratios come from this chain.".into(),
        "Weight bytes: int8 = packed int8 weights + 12 bytes of epilogue constants per output channel as held on the GPU; f32 = BN-folded f32 weights + f32 bias.".into(),
        "Ceilings (qfuse-bench/shaders/bench_ceiling.wgsl): the int8 loop keeps 16 independent accumulators, acc_k += dot4I8Packed(x, w_k) with x changing every step, 8 steps per loop iteration (1024 ops per iteration); the f32 loop 16 independent FMA chains, 8 steps per iteration (256 flops): the loop's own compare/increment/branch and naga's loop-bound counter are a few percent of the issue slots, where with the earlier forms (reference rows, 8 operations per iteration) they took about a third. The grid is 16384 workgroups of 256 on a GPU (--ceiling-groups), 1024 on a CPU adapter; each row gives invocations x iterations x ops per iteration.".into(),
        "Specified peaks (qfuse-bench/src/peaks.rs, or --peak-int8/--peak-f32/--peak-f16/--peak-bw): packed int8 dot = SMs x 64 DP4A/SM/clock (the 32-bit integer multiply-add rate, assumed for DP4A) x 8 ops x boost clock; f32 = SMs x FMA/SM/clock x 2 x boost clock; f16 tensor core dense and memory bandwidth from the datasheet. '% of spec peak': compute-bound layers against the int8 peak, memory-bound ones against the specified bandwidth. 'Peak at measured clock': the compute peaks scaled by the measured SM clock (the busy median of --sample-clock's samples, else of --clock-log's) over the clock they are specified at.".into(),
        "Ops: 2 x MACs for int8 and f32 alike. Int8 ceiling: a dot4I8Packed + accumulate counts 8 ops. Copy bandwidth counts bytes read + bytes written. A layer is memory-bound when its ops per byte (input + weights + output, int8) is below ceiling ops/s over copy bytes/s; its fraction is then of copy bandwidth.".into(),
        "f32 tiled baseline (qfuse-bench/shaders/conv2d_f32_tiled.wgsl; the like-for-like comparison, 'int8 vs f32 tiled'): the same effort as the library's tiled int8 kernel (shaders/tiled.wgsl): implicit GEMM over NHWC, the int8 kernel's tile choice (TileConfig::for_shape), K staged in KT slices in workgroup memory, a 4-pixel x 4-vec4 register block of f32 per invocation, bias (BN folded) + ReLU fused. Depthwise layers run the simple kernel (the int8 side's depthwise kernel is one word per invocation too). Unfused: the tiled conv, then BatchNorm and ReLU in place.".into(),
        "f32 simple (untiled) baseline (qfuse-bench/shaders/conv2d_f32.wgsl; extra columns 'vs simple'): NHWC, one invocation per 4 output channels of one pixel, no tiling: the same effort as the int8 kernel of shaders/conv2d.wgsl. BatchNorm and ReLU run in place.".into(),
        "Tensor cores vs packed dot: where the int8 default is the cooperative-matrix kernel (ConvVariant::Coop: GpuModel::new / GpuLayer::new on a device with cooperative matrices, or its emulation with --coop-emulated), every layer whose default is Coop is also built and timed on the packed-dot kernels (ConvVariant::choose for the device, through GpuLayer::with_variant), the conv chain is timed on both, and each real network is built twice: GpuModel::new ('tensor cores') and GpuModel::with_variants with ConvVariant::choose ('packed dot'). A Coop default runs the packed-dot kernels itself for fewer than 32 output pixels (GEMV up to 4): such rows say 'Coop default, few pixels' and get no f16 tensor-core fraction. The int8 '% of ceiling' of a Coop row is against the packed-dot ceiling loop (the only one measured).".into(),
    ];
    let clock = match &cfg.clock_log {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
                path: path.display().to_string(),
                source: e,
            })?;
            let c = ClockStats::parse(&format!("clock log {}", path.display()), &text);
            if c.is_none() {
                log(&format!(
                    "clock log {}: no SM clock samples in it",
                    path.display()
                ));
            }
            c
        }
        None => None,
    };
    let measured_mhz = ceiling_clock
        .as_ref()
        .or(clock.as_ref())
        .map(ClockStats::clock_mhz);
    let peaks_at_measured_clock = match (&spec, measured_mhz) {
        (Some(p), Some(mhz)) => Some(p.at_clock(mhz)),
        _ => None,
    };
    Ok(Report {
        ceilings_vs_spec: spec
            .as_ref()
            .map(|p| CeilingsVsSpec::new(&ceilings, p))
            .unwrap_or_default(),
        ceilings_vs_measured_clock_peak: peaks_at_measured_clock
            .as_ref()
            .map(|p| CeilingsVsSpec::new(&ceilings, p)),
        spec_peaks: spec,
        ceiling_clock,
        clock,
        peaks_at_measured_clock,
        adapter: AdapterJson {
            name: r.name.clone(),
            backend: r.backend.clone(),
            device_type: r.device_type.clone(),
            driver: r.driver.clone(),
            packed_dot: r.packed_dot,
            timestamps: r.timestamps,
            cooperative_matrix: ctx.cooperative_matrix(),
            cooperative_matrix_off: r.cooperative_matrix_off.clone(),
            report: r.to_string(),
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
        threads,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--sample-clock` with a stand-in `nvidia-smi` on PATH that prints a
    /// header and a sample every 20 ms until it is stopped; and without one.
    #[test]
    fn samples_the_clock_while_a_phase_runs() {
        let dir = std::env::temp_dir().join(format!("qfuse-bench-fake-smi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let smi = dir.join("nvidia-smi");
        std::fs::write(
            &smi,
            "#!/bin/sh\necho 'timestamp, clocks.current.sm [MHz], utilization.gpu [%]'\n\
             while true; do echo '2026/11/30 12:00:00.100, 1755 MHz, 100 %'; sleep 0.02; done\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::var("PATH").unwrap_or_default();
        std::env::set_var("PATH", format!("{}:{path}", dir.display()));
        let (v, stats) = with_clock_samples(true, || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            Ok(7)
        })
        .unwrap();
        std::env::set_var("PATH", &path);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(v, 7);
        let stats = stats.expect("clock samples from the stand-in nvidia-smi");
        assert!(stats.samples >= 3, "{stats:?}");
        assert_eq!(
            (stats.median_mhz, stats.busy_median_mhz),
            (1755.0, Some(1755.0))
        );
        // Not enabled: no samples, the phase still runs.
        let (v, stats) = with_clock_samples(false, || Ok(8)).unwrap();
        assert_eq!((v, stats.is_none()), (8, true));
    }
}
