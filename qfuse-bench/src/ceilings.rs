//! The adapter's own ceilings: register-only int8 and f32 arithmetic loops
//! (`shaders/bench_ceiling.wgsl`) and buffer-copy bandwidth.

use qfuse::gpu::CustomKernel;
use qfuse::{GpuContext, Result};
use serde::Serialize;

use crate::timing::{measure, Timing, TimingOpts};

/// `shaders/bench_ceiling.wgsl`: the int8 and f32 ceiling loops.
pub const CEILING_KERNEL: CustomKernel<'static> = CustomKernel {
    name: "bench_ceiling.wgsl",
    source: include_str!("../shaders/bench_ceiling.wgsl"),
};

/// Uniform block of `shaders/bench_ceiling.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct CeilParams {
    pub iters: u32,
    pub seed: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}

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
    let out = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("qfuse ceiling out"),
        size: 4096,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let per_step = if mode == 1 { 8.0 * 2.0 } else { 8.0 * 8.0 };
    let run = |iters: u32, opts: TimingOpts| -> Result<(Timing, f64)> {
        let params = CeilParams {
            iters,
            seed: 12345,
            ..Default::default()
        };
        let d = ctx.dispatch_custom(
            CEILING_KERNEL,
            &[("WG", CEIL_WG as f64), ("MODE", mode as f64)],
            bytemuck::bytes_of(&params),
            &[(1, &out)],
            groups * CEIL_WG,
            CEIL_WG,
        )?;
        let invocations = d.groups.0 as f64 * d.groups.1 as f64 * CEIL_WG as f64;
        let t = measure(ctx, opts, &mut |enc| {
            let mut pass = enc.begin_compute_pass(&Default::default());
            d.record(&mut pass);
            Ok(())
        })?;
        Ok((t, invocations))
    };
    // Calibrate: double the loop count until one dispatch takes target_s.
    let probe = TimingOpts {
        budget_s: 0.0,
        min_runs: 1,
        max_runs: 1,
    };
    let mut iters = 16u32;
    loop {
        let (t, _) = run(iters, probe)?;
        if t.median_s >= target_s || iters >= 1 << 24 {
            break;
        }
        let grow = (target_s / t.median_s.max(1e-7)).clamp(2.0, 64.0);
        iters = ((iters as f64 * grow) as u64).min(1 << 24) as u32;
    }
    let (t, invocations) = run(iters, opts)?;
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
