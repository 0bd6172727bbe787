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

/// One ceiling loop's measurement, with the op count it used.
#[derive(Clone, Debug, Serialize)]
pub struct CeilingForm {
    /// `MODE` of `shaders/bench_ceiling.wgsl`.
    pub mode: u32,
    pub name: String,
    /// Ops one invocation does per loop iteration (int8: 8 per packed dot;
    /// f32: 2 per FMA).
    pub ops_per_iteration: u64,
    /// Loop iterations per invocation (calibrated so a dispatch takes the
    /// target time).
    pub iterations: u64,
    pub invocations: u64,
    /// invocations x iterations x ops_per_iteration: the ops of one dispatch.
    pub ops: f64,
    pub ops_per_s: f64,
    pub timing: Timing,
}

/// The ceiling loops: (MODE, ops per iteration, name).
pub const CEILING_FORMS: [(u32, u64, &str); 5] = [
    (
        0,
        1024,
        "int8 dot4I8Packed loop (register-only, 16 independent accumulators, 8 steps per iteration)",
    ),
    (
        1,
        256,
        "f32 FMA loop (register-only, 16 independent chains, 8 steps per iteration)",
    ),
    (
        2,
        64,
        "int8 dot4I8Packed, 8 dependent chains (latency-bound, reference only)",
    ),
    (
        3,
        64,
        "int8 dot4I8Packed, 8 accumulators, 1 step per iteration (the earlier form, reference only)",
    ),
    (
        4,
        16,
        "f32 FMA, 8 chains, 1 step per iteration (the earlier form, reference only)",
    ),
];

/// The adapter's own ceilings, measured.
#[derive(Clone, Debug, Serialize)]
pub struct Ceilings {
    /// Each rate is the best of three interleaved measurements (the
    /// reference forms: one).
    /// Register-only `dot4I8Packed` + accumulate loop, 8 int8 ops per packed
    /// dot: 16 independent accumulators against one activation word that
    /// changes every step, 8 steps per loop iteration (the throughput form;
    /// fractions of the ceiling use this).
    pub int8_ops_per_s: f64,
    /// The same dot products as 8 dependent chains `a = dot4I8Packed(a, b) + a`
    /// (each step waits for the whole previous dot product); latency-bound,
    /// for reference.
    pub int8_chained_ops_per_s: f64,
    /// The earlier throughput form (8 accumulators, one step per loop
    /// iteration), for reference.
    pub int8_legacy_ops_per_s: f64,
    /// Register-only f32 FMA loop, 2 flops per FMA: 16 independent chains,
    /// 8 steps per loop iteration.
    pub f32_flops_per_s: f64,
    /// The earlier f32 form (8 chains, one step per loop iteration).
    pub f32_legacy_flops_per_s: f64,
    /// `copy_buffer_to_buffer`, counting bytes read plus bytes written.
    pub copy_bytes_per_s: f64,
    pub copy_buffer_bytes: u64,
    /// Workgroups of the ceiling loops' dispatch, and invocations per workgroup.
    pub groups: u32,
    pub workgroup_size: u32,
    /// Every loop form with the op count it used (best measurement of each).
    pub forms: Vec<CeilingForm>,
    pub int8_timing: Timing,
    pub int8_chained_timing: Timing,
    pub f32_timing: Timing,
    pub copy_timing: Timing,
}

/// Invocations per workgroup of the ceiling loops.
pub const CEIL_WG: u32 = 256;

/// Default workgroups of the ceiling loops on a GPU: 16384 x 256 = 4.2 M
/// invocations, 15.5 times the 270,336 threads an H100/H200 holds resident
/// (132 SMs x 2048), so the tail of the last wave is a few percent of the
/// dispatch. Software adapters (device type Cpu) get 1024 (262,144
/// invocations).
pub const DEFAULT_CEILING_GROUPS: u32 = 16384;

fn ceiling_loop(
    ctx: &GpuContext,
    (mode, per_iter, name): (u32, u64, &str),
    groups: u32,
    target_s: f64,
    opts: TimingOpts,
) -> Result<CeilingForm> {
    let out = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("qfuse ceiling out"),
        size: 4096,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let run = |iters: u32, opts: TimingOpts| -> Result<(Timing, u64)> {
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
        let invocations = d.groups.0 as u64 * d.groups.1 as u64 * CEIL_WG as u64;
        let t = measure(ctx, opts, &mut |enc| {
            let mut pass = enc.begin_compute_pass(&Default::default());
            d.record(&mut pass);
            Ok(())
        })?;
        Ok((t, invocations))
    };
    // Calibrate: grow the loop count until one dispatch takes target_s.
    let probe = TimingOpts {
        budget_s: 0.0,
        min_runs: 1,
        max_runs: 1,
    };
    let mut iters = 1u32;
    loop {
        let (t, _) = run(iters, probe)?;
        if t.median_s >= target_s || iters >= 1 << 24 {
            break;
        }
        let grow = (target_s / t.median_s.max(1e-7)).clamp(2.0, 64.0);
        iters = ((iters as f64 * grow) as u64).min(1 << 24) as u32;
    }
    let (t, invocations) = run(iters, opts)?;
    let ops = invocations as f64 * iters as f64 * per_iter as f64;
    Ok(CeilingForm {
        mode,
        name: name.into(),
        ops_per_iteration: per_iter,
        iterations: iters as u64,
        invocations,
        ops,
        ops_per_s: ops / t.median_s,
        timing: t,
    })
}

/// Measures the int8 and f32 arithmetic ceilings and the copy bandwidth.
/// `groups`: workgroups of the loops' dispatch (default
/// [`DEFAULT_CEILING_GROUPS`], 1024 on a CPU adapter).
pub fn measure_ceilings(ctx: &GpuContext, quick: bool, groups: Option<u32>) -> Result<Ceilings> {
    let opts = TimingOpts {
        budget_s: if quick { 0.2 } else { 0.5 },
        min_runs: 3,
        max_runs: 50,
    };
    let target = if quick { 0.02 } else { 0.05 };
    let cpu = ctx.device_type() == wgpu::DeviceType::Cpu;
    let max_groups = {
        let l = ctx.limits();
        l.max_compute_workgroups_per_dimension as u64
            * l.max_compute_workgroups_per_dimension as u64
    };
    let groups = groups
        .unwrap_or(if cpu { 1024 } else { DEFAULT_CEILING_GROUPS })
        .clamp(1, max_groups.min(u32::MAX as u64 / CEIL_WG as u64) as u32);
    // On a shared machine a single measurement can land on a busy moment and
    // understate the ceiling (inflating every fraction of it): keep the best
    // of three, interleaved, for the two ceilings; the reference forms once.
    let mut best: Vec<Option<CeilingForm>> = vec![None; CEILING_FORMS.len()];
    for round in 0..3 {
        for (form, b) in CEILING_FORMS.iter().zip(best.iter_mut()) {
            if round > 0 && form.0 >= 2 {
                continue;
            }
            let f = ceiling_loop(ctx, *form, groups, target, opts)?;
            if b.as_ref().is_none_or(|b| f.ops_per_s > b.ops_per_s) {
                *b = Some(f);
            }
        }
    }
    let forms: Vec<CeilingForm> = best.into_iter().map(|f| f.expect("measured")).collect();
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
        int8_ops_per_s: forms[0].ops_per_s,
        f32_flops_per_s: forms[1].ops_per_s,
        int8_chained_ops_per_s: forms[2].ops_per_s,
        int8_legacy_ops_per_s: forms[3].ops_per_s,
        f32_legacy_flops_per_s: forms[4].ops_per_s,
        copy_bytes_per_s: 2.0 * size as f64 / copy_timing.median_s,
        copy_buffer_bytes: size,
        groups,
        workgroup_size: CEIL_WG,
        int8_timing: forms[0].timing.clone(),
        f32_timing: forms[1].timing.clone(),
        int8_chained_timing: forms[2].timing.clone(),
        copy_timing,
        forms,
    })
}
