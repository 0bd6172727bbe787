//! The qfuse benchmark: adapter ceilings, per-layer int8-fused vs f32
//! (3 dispatches: Conv, BatchNorm, ReLU; and 1 fused dispatch), memory, and
//! end-to-end images/s for a ResNet-18-shaped and a MobileNetV2-shaped
//! network, at batch 1 and 16. See BENCHMARKS.md.
//!
//!     cargo run --release --example bench -- [--json out.json] [--quick] [--batch 1,16]
//!         [--resolution 224] [--networks resnet18,mobilenet_v2] [--budget 0.5]
//!         [--threads 1,2,4,8] [--skip-layers] [--skip-chain] [--skip-real]
//!         [--skip-simple-f32] [--peak-int8 T] [--peak-f32 T] [--peak-f16 T]
//!         [--peak-bw TB/s] [--peak-clock MHz] [--clock-log FILE] [--sample-clock]
//!         [--ceiling-groups N] [--coop-emulated]

use clap::Parser;
use qfuse::GpuContext;
use qfuse_bench::{run, BenchConfig, PeakOverrides};

#[derive(Parser, Debug)]
#[command(
    about = "Benchmark qfuse's fused int8 layers against an f32 baseline on the chosen adapter"
)]
struct Args {
    /// Also write every number as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Short run: smaller input resolution (32 unless --resolution) and shorter timing budgets.
    #[arg(long)]
    quick: bool,
    /// Batch sizes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    batch: Vec<usize>,
    /// Input resolution of both networks (default 224, or 32 with --quick).
    #[arg(long)]
    resolution: Option<usize>,
    /// Networks, comma separated (resnet18, mobilenet_v2).
    #[arg(long, value_delimiter = ',', default_value = "resnet18,mobilenet_v2")]
    networks: Vec<String>,
    /// Seconds of timed runs per layer case, end-to-end cases twice this
    /// (default 0.5, --quick 0.05); at least 5 runs (--quick 3) regardless.
    #[arg(long)]
    budget: Option<f64>,
    /// Thread counts sharing one GpuModel for the throughput-vs-threads
    /// table, comma separated (0: skip it).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    threads: Vec<usize>,
    /// No progress lines on stderr.
    #[arg(long)]
    silent: bool,
    /// Skip the per-layer table.
    #[arg(long)]
    skip_layers: bool,
    /// Skip the conv chain (int8 vs f32 conv/linear layers end to end).
    #[arg(long)]
    skip_chain: bool,
    /// Skip the real networks through GpuModel::run.
    #[arg(long)]
    skip_real: bool,
    /// Skip the f32 simple (untiled) baseline (the tiled f32 baseline always runs).
    #[arg(long)]
    skip_simple_f32: bool,
    /// Specified packed-int8 (DP4A) peak in T op/s (replaces the table's
    /// value for this adapter; the table knows H200, H100 SXM/PCIe, A100).
    #[arg(long, value_name = "T")]
    peak_int8: Option<f64>,
    /// Specified f32 FMA peak in T flop/s.
    #[arg(long, value_name = "T")]
    peak_f32: Option<f64>,
    /// Specified dense f16 tensor-core peak in T flop/s.
    #[arg(long, value_name = "T")]
    peak_f16: Option<f64>,
    /// Specified memory bandwidth in TB/s.
    #[arg(long, value_name = "TB/s")]
    peak_bw: Option<f64>,
    /// The SM clock (MHz) the given peaks are specified at.
    #[arg(long, value_name = "MHz")]
    peak_clock: Option<f64>,
    /// An nvidia-smi CSV log written during the run
    /// (`nvidia-smi --query-gpu=timestamp,clocks.sm --format=csv -lms 200 > FILE`):
    /// min/median/max SM clock and the peaks at the measured median clock.
    #[arg(long, value_name = "FILE")]
    clock_log: Option<std::path::PathBuf>,
    /// Run nvidia-smi (if present) during the ceiling measurements and record
    /// the SM clock of that phase.
    #[arg(long)]
    sample_clock: bool,
    /// Workgroups (of 256 invocations) of the ceiling loops (default 16384 on
    /// a GPU: 15.5 waves of an H200's 132 SMs x 2048 resident threads; 1024
    /// on a CPU adapter).
    #[arg(long)]
    ceiling_groups: Option<u32>,
    /// Use the tensor-core kernel's emulation (`Coop { emulated: true }`,
    /// plain WGSL, slow) as the default kernel of every conv/linear layer of
    /// one group, so that the tensor-core vs packed-dot comparison (per
    /// layer, conv chain, real networks) runs on any adapter.
    #[arg(long)]
    coop_emulated: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let cfg = BenchConfig {
        quick: args.quick,
        batches: args.batch.clone(),
        resolution: args.resolution.unwrap_or(if args.quick { 32 } else { 224 }),
        networks: args.networks.clone(),
        verbose: !args.silent,
        budget_s: args.budget,
        threads: args.threads.clone(),
        skip_layers: args.skip_layers,
        skip_chain: args.skip_chain,
        skip_real: args.skip_real,
        skip_simple_f32: args.skip_simple_f32,
        peaks: PeakOverrides {
            int8_ops_per_s: args.peak_int8.map(|t| t * 1e12),
            f32_flops_per_s: args.peak_f32.map(|t| t * 1e12),
            f16_tensor_flops_per_s: args.peak_f16.map(|t| t * 1e12),
            mem_bytes_per_s: args.peak_bw.map(|t| t * 1e12),
            clock_mhz: args.peak_clock,
        },
        clock_log: args.clock_log.clone(),
        sample_clock: args.sample_clock,
        ceiling_groups: args.ceiling_groups,
        coop_emulated: args.coop_emulated,
    };
    let ctx = GpuContext::new()?;
    let t = std::time::Instant::now();
    let report = run(&ctx, &cfg)?;
    print!("{}", report.to_text());
    println!("(benchmark took {:.1} s)", t.elapsed().as_secs_f64());
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
