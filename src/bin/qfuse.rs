//! The `qfuse` command: inspect a model, run it on .npy input, list adapters.
//!
//!     qfuse info MODEL
//!     qfuse run MODEL --input X.npy --output Y.npy [--cpu]
//!     qfuse adapters
//!
//! MODEL is a qfuse model file, or `digits` for the bundled model. Errors are
//! one line on stderr and a non-zero exit code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use qfuse::model::{DType, Model, Op};
use qfuse::{GpuContext, GpuModel, Value};

#[derive(Parser)]
#[command(
    name = "qfuse",
    version,
    about = "Run PyTorch-quantized int8 models on any GPU, bit-exact"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Nodes, shapes, qparams, weight bytes (int8 vs f32) and planned activation bytes.
    Info {
        /// Model file (or `digits` for the bundled model).
        model: String,
        /// Batch size for the activation plan.
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
    /// Run the model on a float32 NCHW .npy input; write its float32 output.
    Run {
        /// Model file (or `digits` for the bundled model).
        model: String,
        /// Input array (.npy, float32, [N, ...the model's input shape]).
        #[arg(long)]
        input: String,
        /// Where to write the output (.npy, float32).
        #[arg(long)]
        output: String,
        /// Run on the CPU reference path instead of the GPU.
        #[arg(long)]
        cpu: bool,
    },
    /// What wgpu sees, which adapter is chosen, and whether it has the packed int8 dot product.
    Adapters,
}

fn load(model: &str) -> qfuse::Result<Model> {
    if model == "digits" && !std::path::Path::new(model).exists() {
        return qfuse::bundled::digits_model();
    }
    Model::load(model)
}

fn fmt_bytes(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64)
    } else if b >= 1 << 10 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        format!("{b} B")
    }
}

fn info(model: &str, batch: usize) -> qfuse::Result<()> {
    let m = load(model)?;
    println!(
        "model {model}: engine {}, {} nodes",
        m.engine().name(),
        m.nodes().len()
    );
    for (name, i) in m.inputs() {
        println!("  input  {name:<24} {:?} {}", i.shape, dtype(&i.dtype));
    }
    for n in m.nodes() {
        let i = m.info(&n.name).expect("validated");
        let extra = match &n.op {
            Op::Conv2d(l) => {
                let g = l.geometry();
                format!(
                    " k{:?} s{:?} p{:?} d{:?} g{} {} {}",
                    g.kernel,
                    g.stride,
                    g.padding,
                    g.dilation,
                    g.groups,
                    l.activation().name(),
                    l.requant().name()
                )
            }
            Op::Linear(l) => format!(" {} {}", l.activation().name(), l.requant().name()),
            _ => String::new(),
        };
        let extra = match &n.op {
            Op::Conv2d(l) | Op::Linear(l) if l.clamp() != l.activation_clamp() => {
                format!("{extra} clamp {:?}", l.clamp())
            }
            _ => extra,
        };
        println!(
            "  {:<20} {:<24} <- {:<30} {:?} {}{extra}",
            n.op.name(),
            n.name,
            n.inputs.join(", "),
            i.shape,
            dtype(&i.dtype)
        );
    }
    println!("  outputs: {}", m.outputs().join(", "));
    let (wi, wf) = m.weight_bytes();
    println!(
        "weights: int8 {} vs f32 {} ({:.3}x)",
        fmt_bytes(wi as u64),
        fmt_bytes(wf as u64),
        wi as f64 / wf.max(1) as f64
    );
    let p = qfuse::plan::plan(&m, batch)?;
    println!(
        "activations (batch {batch}): planned peak int8 {} in {} buffers (all tensors {}); f32 peak {} ({:.3}x)",
        fmt_bytes(p.peak_bytes),
        p.buffers.len(),
        fmt_bytes(p.total_bytes),
        fmt_bytes(p.f32_peak_bytes),
        p.peak_bytes as f64 / p.f32_peak_bytes.max(1) as f64
    );
    Ok(())
}

fn dtype(d: &DType) -> String {
    match d {
        DType::F32 => "float32".into(),
        DType::QUInt8(q) => format!("quint8 scale {} zp {}", q.scale, q.zero_point),
    }
}

fn run(model: &str, input: &str, output: &str, cpu: bool) -> qfuse::Result<()> {
    let m = load(model)?;
    if m.inputs().len() != 1 || m.outputs().len() != 1 {
        return Err(qfuse::Error::Unsupported(format!(
            "`qfuse run` takes models with one input and one output; this one has {} and {}",
            m.inputs().len(),
            m.outputs().len()
        )));
    }
    let (data, shape) = qfuse::npy::read_f32(input)?;
    let x = vec![Value::F32 { data, shape }];
    let out = if cpu {
        m.run_cpu(&x)?
    } else {
        let ctx = GpuContext::new()?;
        GpuModel::new(&ctx, &m)?.run(&ctx, &x)?
    };
    let y = &out[0];
    qfuse::npy::write_f32(output, &y.to_f32(), y.shape())?;
    eprintln!(
        "wrote {output}: {:?} float32 ({})",
        y.shape(),
        if cpu { "CPU reference" } else { "GPU" }
    );
    Ok(())
}

fn adapters() -> qfuse::Result<()> {
    let all = GpuContext::list_adapters();
    println!("adapters wgpu sees ({}):", all.len());
    for a in &all {
        println!(
            "  {} ({:?}, {:?}, driver {} {})",
            a.name, a.backend, a.device_type, a.driver, a.driver_info
        );
    }
    let ctx = GpuContext::new()?;
    println!("chosen: {}", ctx.report());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Info { model, batch } => info(&model, batch),
        Cmd::Run {
            model,
            input,
            output,
            cpu,
        } => run(&model, &input, &output, cpu),
        Cmd::Adapters => adapters(),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qfuse: error: {e}");
            ExitCode::FAILURE
        }
    }
}
