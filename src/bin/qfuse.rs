//! The `qfuse` command: inspect a model, run it on .npy input, list adapters.
//!
//!     qfuse info MODEL [--batch N]
//!     qfuse run MODEL --input X.npy --output Y.npy [--cpu] [--batch-size B]
//!     qfuse adapters
//!
//! MODEL is a model file's path, or `bundled:digits` for the model bundled
//! with qfuse. (A bare `digits` also names the bundled model, with a note,
//! when no file or folder of that name exists; when one does, it is a path.
//! A file whose name starts with `bundled:` is `./bundled:...`.)
//! Errors are one line on stderr (`qfuse: error: ...`, sometimes followed by a
//! `qfuse: hint: ...` line) and a non-zero exit code.
//!
//! Built with the `cli` feature (on by default).

use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use qfuse::model::{DType, Model, Op};
use qfuse::{bundled, npy, Error, GpuContext, GpuModel, Value};

#[derive(Parser)]
#[command(
    name = "qfuse",
    version,
    about = "Run PyTorch-quantized int8 models on any GPU, bit-exact",
    after_help = "MODEL is a model file's path, or `bundled:digits` for the model bundled with qfuse \
(input [N, 1, 8, 8] float32 pixels in [0, 1], output [N, 10] logits).\n\
Environment: WGPU_BACKEND (vulkan, metal, dx12, gl), WGPU_ADAPTER_NAME (part of a name), \
WGPU_POWER_PREF (high, low) choose the adapter."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

fn parse_batch(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("the batch size N must be >= 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e} (the batch size is a whole number >= 1)")),
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Nodes, shapes ([N, ...]: N is the batch size), qparams, weight bytes (int8 vs f32) and planned activation bytes.
    Info {
        /// Model file, or `bundled:digits`.
        model: String,
        /// Batch size N for the activation plan.
        #[arg(long, default_value_t = 1, value_parser = parse_batch, value_name = "N")]
        batch: usize,
    },
    /// Run the model on a float32 .npy input; write its float32 output (.npy).
    Run {
        /// Model file, or `bundled:digits`.
        model: String,
        /// Input array (.npy, float32, C order, [N, ...the model's input shape], finite values).
        #[arg(long)]
        input: String,
        /// Where to write the output (.npy, float32). Written to a temporary
        /// file beside it and renamed when complete: never a partial file.
        #[arg(long)]
        output: String,
        /// Run on the CPU reference path instead of the GPU.
        #[arg(long)]
        cpu: bool,
        /// Run the input through the model in pieces of at most B samples
        /// (less memory, and a progress bar with an ETA). Default: the whole
        /// input as one batch. Results do not depend on B for models of
        /// conv/linear/pool layers; fbgemm `add`/`hardswish` follow PyTorch
        /// run on batches of B.
        #[arg(long, value_parser = parse_batch, value_name = "B")]
        batch_size: Option<usize>,
    },
    /// What wgpu sees, which adapter is chosen, and whether it has the packed int8 dot product.
    Adapters,
}

/// An error for the user: qfuse's error, and perhaps a hint on what to do.
struct CliError {
    err: Error,
    hint: Option<String>,
}

impl From<Error> for CliError {
    fn from(err: Error) -> Self {
        CliError { err, hint: None }
    }
}

type CliResult<T> = Result<T, CliError>;

fn with_hint(err: Error, hint: String) -> CliError {
    CliError {
        err,
        hint: Some(hint),
    }
}

/// Resolves MODEL: `bundled:NAME` is a bundled model, anything else a path,
/// except a bundled model's bare name when nothing of that name exists.
fn load(spec: &str) -> CliResult<Model> {
    if let Some(name) = spec.strip_prefix(bundled::PREFIX) {
        return Ok(bundled::by_name(name)?);
    }
    let path = Path::new(spec);
    if bundled::NAMES.contains(&spec) {
        if !path.exists() {
            eprintln!(
                "qfuse: note: no file {spec:?} here, so {spec:?} is the bundled model (write `{}{spec}` to say so)",
                bundled::PREFIX
            );
            return Ok(bundled::by_name(spec)?);
        }
        if path.is_dir() {
            return Err(with_hint(
                Error::Model(format!("{spec}: a folder, not a model file")),
                format!(
                    "the bundled model is `{}{spec}`; a model file in that folder is `{spec}/FILE`",
                    bundled::PREFIX
                ),
            ));
        }
        eprintln!(
            "qfuse: note: loading the file {spec:?} (the bundled model is `{}{spec}`)",
            bundled::PREFIX
        );
    }
    Model::load(path).map_err(|e| match e {
        Error::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => with_hint(
            e,
            format!(
                "MODEL is a file path, or one of the bundled models: {}",
                bundled::NAMES
                    .iter()
                    .map(|n| format!("{}{n}", bundled::PREFIX))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        e => e.into(),
    })
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

/// A per-sample shape with the batch dimension in front: `[N, 1, 8, 8]`.
fn batched(shape: &[usize]) -> String {
    std::iter::once("N".to_string())
        .chain(shape.iter().map(|d| d.to_string()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn info(model: &str, batch: usize) -> CliResult<()> {
    let m = load(model)?;
    println!(
        "model {model}: engine {}, {} nodes (shapes [N, ...]: N is the batch size)",
        m.pytorch_engine().name(),
        m.nodes().len()
    );
    for (name, i) in m.inputs() {
        println!(
            "  input  {name:<24} [{}] {}",
            batched(&i.shape),
            dtype(&i.dtype)
        );
    }
    for n in m.nodes() {
        let i = m.info(&n.name).expect("validated");
        let extra = match &n.op {
            Op::Conv2d(l) => {
                let g = &l.geometry();
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
            "  {:<20} {:<24} <- {:<30} [{}] {}{extra}",
            n.op.name(),
            n.name,
            n.inputs.join(", "),
            batched(&i.shape),
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
        "activations (batch N = {batch}): planned peak int8 {} in {} buffers (all tensors {}); f32 peak {} ({:.3}x)",
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
        DType::QUInt8(q) => format!(
            "{} scale {} zp {}",
            q.dtype_name(),
            q.scale,
            q.true_zero_point()
        ),
    }
}

/// Progress on stderr for runs longer than a couple of seconds: nothing
/// before, nothing when stderr is not a terminal, cleared at the end.
struct Progress {
    bar: ProgressBar,
    stop: Option<mpsc::Sender<()>>,
    shower: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    const DELAY: Duration = Duration::from_secs(2);

    fn new(samples: usize, batch: usize) -> Self {
        let bar = ProgressBar::with_draw_target(Some(samples as u64), ProgressDrawTarget::hidden());
        let template = if batch >= samples {
            "{spinner} {elapsed_precise} running {len} samples as one batch (--batch-size shows progress)"
        } else {
            "{spinner} {elapsed_precise} [{bar:32}] {pos}/{len} samples ({rate}, about {eta} left)"
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("valid template")
                .with_key(
                    "rate",
                    |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.0} samples/s", s.per_sec());
                    },
                )
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        let (stop, rx) = mpsc::channel::<()>();
        let shown = bar.clone();
        let shower = std::thread::spawn(move || {
            if rx.recv_timeout(Self::DELAY) == Err(mpsc::RecvTimeoutError::Timeout) {
                // Hidden by indicatif itself when stderr is not a terminal.
                shown.set_draw_target(ProgressDrawTarget::stderr());
            }
        });
        Progress {
            bar,
            stop: Some(stop),
            shower: Some(shower),
        }
    }

    fn set(&self, done: usize) {
        self.bar.set_position(done as u64);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.shower.take() {
            let _ = t.join();
        }
        self.bar.finish_and_clear();
    }
}

fn run(
    model: &str,
    input: &str,
    output: &str,
    cpu: bool,
    batch_size: Option<usize>,
) -> CliResult<()> {
    let m = load(model)?;
    if m.inputs().len() != 1 || m.outputs().len() != 1 {
        return Err(Error::Unsupported(format!(
            "`qfuse run` takes models with one input and one output; this one has {} and {}",
            m.inputs().len(),
            m.outputs().len()
        ))
        .into());
    }
    let (in_name, in_info) = &m.inputs()[0];
    if in_info.dtype != DType::F32 {
        return Err(Error::Unsupported(format!(
            "`qfuse run` feeds float32 input; model input {in_name:?} is {}",
            dtype(&in_info.dtype)
        ))
        .into());
    }
    let mut reader = npy::F32Reader::open(input)?;
    let shape = reader.shape().to_vec();
    if shape.len() != in_info.shape.len() + 1 || shape[1..] != in_info.shape[..] {
        return Err(Error::Shape {
            what: input.to_string(),
            detail: format!(
                "array of shape {shape:?}, expected [{}] (N >= 1) for model input {in_name:?}",
                batched(&in_info.shape)
            ),
        }
        .into());
    }
    let n = shape[0];
    if n == 0 {
        return Err(Error::Shape {
            what: input.to_string(),
            detail: format!(
                "array of shape {shape:?} holds no sample: N must be >= 1 (expected [{}])",
                batched(&in_info.shape)
            ),
        }
        .into());
    }
    let batch = batch_size.unwrap_or(n).min(n);
    let row = in_info.numel();
    let out_info = m.info(&m.outputs()[0]).expect("validated").clone();
    let out_shape = out_info.batched(n);

    let setup = Instant::now();
    let gpu = if cpu {
        eprintln!("qfuse: running {n} samples on the CPU reference path");
        None
    } else {
        let ctx = GpuContext::new()?;
        let report = ctx.report();
        eprintln!("qfuse: running {n} samples on {report}");
        if report.backend == "Gl" && std::env::var_os("WGPU_BACKEND").is_none() {
            eprintln!(
                "qfuse: note: wgpu chose the GL backend: it found no Vulkan, Metal or DX12 adapter (`qfuse adapters` lists what it sees)"
            );
        }
        let g = GpuModel::new(&ctx, &m)?;
        Some((ctx, g))
    };
    let setup = setup.elapsed();

    let mut writer = npy::F32Writer::create(output, &out_shape)?;
    let progress = Progress::new(n, batch);
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let b = batch.min(n - done);
        let mut s = shape.clone();
        s[0] = b;
        let x = [Value::F32 {
            data: reader.read(b * row)?,
            shape: s,
        }];
        let out = match &gpu {
            Some((ctx, g)) => g.run(ctx, &x),
            None => m.run_cpu(&x),
        }
        .map_err(|e| match e {
            Error::TooLarge { .. } if b > 1 => with_hint(
                e,
                format!("run the input in pieces: --batch-size {}", (b / 4).max(1)),
            ),
            e => e.into(),
        })?;
        let y = &out[0];
        if y.shape() != out_info.batched(b) {
            return Err(Error::Shape {
                what: "model output".into(),
                detail: format!("got {:?}, expected {:?}", y.shape(), out_info.batched(b)),
            }
            .into());
        }
        writer.write(&y.to_f32())?;
        done += b;
        progress.set(done);
    }
    drop(progress);
    let took = start.elapsed();
    writer.finish()?;
    let pieces = n.div_ceil(batch);
    eprintln!(
        "qfuse: wrote {output}: {out_shape:?} float32; {n} samples in {:.3} s ({:.0} samples/s; {pieces} batch{} of up to {batch}) on {}; setup {:.3} s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64().max(1e-9),
        if pieces == 1 { "" } else { "es" },
        match &gpu {
            Some((ctx, _)) => format!("the GPU ({})", ctx.report().name),
            None => "the CPU reference path".into(),
        },
        setup.as_secs_f64(),
    );
    Ok(())
}

fn adapters() -> CliResult<()> {
    let all = GpuContext::list_adapters()?;
    println!("adapters wgpu sees ({}):", all.len());
    for a in &all {
        let driver = format!("{} {}", a.driver, a.driver_info);
        println!(
            "  {} (driver {})",
            GpuContext::describe_adapter(a),
            driver.trim()
        );
    }
    let ctx = GpuContext::new()?;
    println!("chosen: {}", ctx.report());
    Ok(())
}

/// Mesa's Vulkan device-select layer asks the Wayland compositor which GPU
/// is the default (wgpu enables the Wayland surface extension), and
/// libwayland prints "XDG_RUNTIME_DIR is invalid or not set" when the
/// variable is unset or not an absolute path, where no compositor can be
/// reached anyway. Then give this process a private, empty runtime folder:
/// the connection fails silently and nothing else changes. A valid
/// XDG_RUNTIME_DIR is left alone. Returns the folder to remove at exit.
fn runtime_dir() -> Option<std::path::PathBuf> {
    if !cfg!(all(unix, not(target_os = "macos"))) {
        return None;
    }
    let valid = std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| Path::new(&d).is_absolute());
    if valid {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("qfuse-runtime-{}", std::process::id()));
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir).ok()?;
    // Still one thread: nothing reads the environment concurrently.
    std::env::set_var("XDG_RUNTIME_DIR", &dir);
    Some(dir)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = runtime_dir();
    let r = match cli.cmd {
        Cmd::Info { model, batch } => info(&model, batch),
        Cmd::Run {
            model,
            input,
            output,
            cpu,
            batch_size,
        } => run(&model, &input, &output, cpu, batch_size),
        Cmd::Adapters => adapters(),
    };
    if let Some(d) = runtime {
        let _ = std::fs::remove_dir(d);
    }
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError { err, hint }) => {
            eprintln!("qfuse: error: {err}");
            if let Some(h) = hint {
                eprintln!("qfuse: hint: {h}");
            }
            ExitCode::FAILURE
        }
    }
}
