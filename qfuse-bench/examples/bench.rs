//! The qfuse benchmark: adapter ceilings, per-layer int8-fused vs f32
//! (3 dispatches: Conv, BatchNorm, ReLU; and 1 fused dispatch), memory, and
//! end-to-end images/s for a ResNet-18-shaped and a MobileNetV2-shaped
//! network, at batch 1 and 16. See BENCHMARKS.md.
//!
//!     cargo run --release --example bench -- [--json out.json] [--quick] [--batch 1,16]
//!         [--resolution 224] [--networks resnet18,mobilenet_v2] [--budget 0.5]
//!         [--threads 1,2,4,8] [--skip-layers] [--skip-chain] [--skip-real]
//!         [--skip-simple-f32]

use clap::Parser;
use qfuse::GpuContext;
use qfuse_bench::{run, BenchConfig};

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
