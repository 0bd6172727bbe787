//! Throughput against threads: 1, 2, 4, 8 threads sharing one
//! [`qfuse::GpuModel`] (the bundled digits model, small batches), images/s
//! side by side. Each thread runs its own seeded random inputs; every run
//! uses a pooled instance of the model's buffers, so runs of different
//! threads overlap on the GPU.

use qfuse::error::Result;
use qfuse::{GpuContext, GpuModel, Value};
use serde::Serialize;

use crate::rng::Lcg;

/// One thread count's throughput.
#[derive(Clone, Debug, Serialize)]
pub struct ThreadPoint {
    pub threads: usize,
    /// Runs in all (split evenly over the threads).
    pub runs: usize,
    pub wall_s: f64,
    pub images_per_s: f64,
}

/// Throughput with 1, 2, 4, 8 (or the configured) threads on one model.
#[derive(Clone, Debug, Serialize)]
pub struct ThreadsResult {
    pub model: String,
    pub batch: usize,
    pub points: Vec<ThreadPoint>,
    /// Per-batch-size buffers the model held at the end (GpuModel::memory_bytes).
    pub memory_bytes: u64,
}

/// Runs `runs` inferences of batch `batch` spread over each thread count
/// in `threads`, all on one shared model, after one untimed round that
/// builds the pooled instances.
pub fn measure_threads(
    ctx: &GpuContext,
    threads: &[usize],
    batch: usize,
    runs: usize,
) -> Result<ThreadsResult> {
    let model = qfuse::bundled::digits_model()?;
    let g = GpuModel::new(ctx, &model)?;
    let shape = model.inputs()[0].1.batched(batch);
    let per: usize = shape.iter().product();
    let input = |seed: u64| {
        let mut r = Lcg(seed);
        vec![Value::F32 {
            data: (0..per).map(|_| 16.0 * r.uniform()).collect(),
            shape: shape.clone(),
        }]
    };
    let round = |t: usize, runs: usize| -> Result<f64> {
        let start = std::time::Instant::now();
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..t)
                .map(|i| {
                    let (g, input) = (&g, &input);
                    s.spawn(move || -> Result<()> {
                        for k in 0..runs.div_ceil(t) {
                            g.run(ctx, &input((i * 1000 + k) as u64 + 1))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            hs.into_iter()
                .try_for_each(|h| h.join().expect("bench thread panicked"))
        })?;
        Ok(start.elapsed().as_secs_f64())
    };
    let most = threads.iter().copied().max().unwrap_or(1);
    round(most, most)?; // warm-up: one instance per concurrent run
    let mut points = Vec::new();
    for &t in threads {
        let t = t.max(1);
        let done = runs.div_ceil(t) * t;
        let wall_s = round(t, runs)?;
        points.push(ThreadPoint {
            threads: t,
            runs: done,
            wall_s,
            images_per_s: (done * batch) as f64 / wall_s,
        });
    }
    Ok(ThreadsResult {
        model: "bundled digits (1x8x8)".into(),
        batch,
        points,
        memory_bytes: g.memory_bytes(),
    })
}
