//! Timing: repeated runs until a budget is spent, GPU timestamps where the
//! device has them, the median.

use qfuse::{GpuContext, GpuModel, Result, Value};
use serde::Serialize;

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

pub(crate) fn median(v: &mut [f64]) -> f64 {
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
