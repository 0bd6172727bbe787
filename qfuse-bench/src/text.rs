//! The report as Markdown tables (what the bench example prints).

use crate::report::{LayerResult, Report};
use crate::timing::median;

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

/// A ratio, "-" when not measured (NaN).
fn ratio(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}x")
    } else {
        "-".into()
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
            if !net.layers.is_empty() {
                let _ = writeln!(s, "Per layer. int8 vs f32: the tiled f32 baseline (like for like: the same tiling effort as the int8 kernel); the f32 simple (untiled) baseline in the last columns.\n");
                let _ = writeln!(s, "| layer | shape | xN | batch | int8 kernel | int8 time | int8 op/s | bound | % of ceiling | f32 tiled 3-disp | f32 tiled fused | f32 tiled flop/s | int8 vs f32 tiled unfused | int8 vs f32 tiled fused | f32 simple (untiled) 3-disp | f32 simple fused | int8 vs simple unfused | int8 vs simple fused |");
                let _ = writeln!(
                    s,
                    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
                );
            }
            for l in &net.layers {
                let tiled_tag = if l.f32_tiled_kernel == "f32 tiled" {
                    ""
                } else {
                    " (simple)"
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1}% | {} ({}){tiled_tag} | {}{tiled_tag} | {} | {:.2}x | {:.2}x | {} | {} | {} | {} |",
                    l.name,
                    l.desc,
                    l.count,
                    l.batch,
                    l.int8_kernel,
                    ms(l.int8.median_s),
                    si(l.int8_ops_per_s),
                    l.bound,
                    100.0 * l.fraction,
                    ms(l.f32_tiled_unfused.median_s),
                    l.f32_tiled_unfused_dispatches,
                    ms(l.f32_tiled_fused.median_s),
                    si(l.f32_tiled_flops_per_s),
                    l.speedup_vs_tiled_unfused,
                    l.speedup_vs_tiled_fused,
                    l.f32_unfused.as_ref().map_or("-".into(), |t| format!(
                        "{} ({})",
                        ms(t.median_s),
                        l.f32_unfused_dispatches
                    )),
                    l.f32_fused.as_ref().map_or("-".into(), |t| ms(t.median_s)),
                    ratio(l.speedup_vs_unfused),
                    ratio(l.speedup_vs_fused)
                );
            }
            if let Some(rn) = &net.real {
                let _ = writeln!(
                    s,
                    "\n### {} end to end: the real network through `GpuModel::run` ({} nodes, calibrated {} in {:.1} s)\n",
                    net.name, rn.nodes, rn.calibration, rn.calibration_s
                );
                let _ = writeln!(s, "| batch | wall (upload + run + readback) | images/s (wall) | GPU time (timestamps) | images/s (GPU) | runs | planned activations int8 | f32 | int8/f32 | vs f32 tiled unfused conv chain | vs f32 simple unfused conv chain |\n|---|---|---|---|---|---|---|---|---|---|---|");
                for r in &rn.runs {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {:.2} | {} | {} | {} | {} | {} | {:.3} | {} | {} |",
                        r.batch,
                        ms(r.timing.wall_median_s),
                        r.images_per_s,
                        r.timing.gpu_median_s.map_or("-".into(), ms),
                        r.gpu_images_per_s.map_or("-".into(), |v| format!("{v:.2}")),
                        r.timing.runs,
                        mib(r.int8_planned_bytes),
                        mib(r.f32_planned_bytes),
                        r.activation_ratio,
                        r.speedup_vs_f32_tiled_unfused_chain
                            .map_or("-".into(), |v| format!("{v:.2}x")),
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
            }
            if net.conv_chain.is_empty() {
                s.push('\n');
                continue;
            }
            let _ = writeln!(
                s,
                "\n### {} conv chain (conv/linear layers only: no pool, add or ReLU6; one submit; for the int8 vs f32 ratios)\n",
                net.name
            );
            let _ = writeln!(s, "| conv chain | batch | time | images/s | images/s (wall, 1 submit) | dispatches |\n|---|---|---|---|---|---|");
            for e in &net.conv_chain {
                let rows = [
                    (
                        "int8 fused",
                        Some(&e.int8),
                        e.int8_images_per_s,
                        e.int8_images_per_s_wall,
                        e.int8_dispatches,
                    ),
                    (
                        "f32 tiled unfused",
                        Some(&e.f32_tiled_unfused),
                        e.f32_tiled_unfused_images_per_s,
                        e.f32_tiled_unfused_images_per_s_wall,
                        e.f32_tiled_unfused_dispatches,
                    ),
                    (
                        "f32 tiled fused",
                        Some(&e.f32_tiled_fused),
                        e.f32_tiled_fused_images_per_s,
                        e.f32_tiled_fused_images_per_s_wall,
                        e.f32_tiled_fused_dispatches,
                    ),
                    (
                        "f32 simple (untiled) unfused",
                        e.f32_unfused.as_ref(),
                        e.f32_unfused_images_per_s,
                        e.f32_unfused_images_per_s_wall,
                        e.f32_unfused_dispatches,
                    ),
                    (
                        "f32 simple (untiled) fused",
                        e.f32_fused.as_ref(),
                        e.f32_fused_images_per_s,
                        e.f32_fused_images_per_s_wall,
                        e.f32_fused_dispatches,
                    ),
                ];
                for (what, t, ips, ipw, d) in rows {
                    if let Some(t) = t {
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
            }
            for e in &net.conv_chain {
                let _ = writeln!(
                    s,
                    "\nconv chain batch {}: int8 fused is {:.2}x as fast as f32 tiled unfused, {:.2}x as f32 tiled fused (f32 simple (untiled): {} unfused, {} fused)",
                    e.batch,
                    e.speedup_vs_tiled_unfused,
                    e.speedup_vs_tiled_fused,
                    ratio(e.speedup_vs_unfused),
                    ratio(e.speedup_vs_fused)
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
                    "- {} batch {}: conv chain int8 fused vs f32 tiled unfused {:.2}x (target >= 3x; vs f32 simple (untiled) unfused {})",
                    net.name,
                    e.batch,
                    e.speedup_vs_tiled_unfused,
                    ratio(e.speedup_vs_unfused)
                );
            }
            let runs = net.real.as_ref().map_or(&[][..], |r| &r.runs[..]);
            for r in runs {
                if let Some(v) = r.speedup_vs_f32_tiled_unfused_chain {
                    let _ = writeln!(s, "- {} batch {}: real int8 network vs f32 tiled unfused conv chain {:.2}x (conservative: the int8 side also runs pools/adds/ReLU6)", net.name, r.batch, v);
                }
            }
            if let Some(real) = &net.real {
                let _ = writeln!(
                    s,
                    "- {}: weight memory int8/f32 = {:.3} with op tables, {:.3} conv/linear layers only (target <= 0.26)",
                    net.name, real.weight_ratio, net.weight_ratio
                );
            }
            for r in runs {
                let _ = writeln!(
                    s,
                    "- {} batch {}: planned peak activations int8/f32 = {:.3} (GpuModel::plan; target <= 0.26)",
                    net.name, r.batch, r.activation_ratio
                );
            }
        }
        if let Some(t) = &self.threads {
            let _ = writeln!(
                s,
                "\n## Threads sharing one GpuModel ({}, batch {})\n",
                t.model, t.batch
            );
            let _ = writeln!(
                s,
                "| threads | runs | wall | images/s | vs 1 thread |\n|---|---|---|---|---|"
            );
            let base = t.points.first().map(|p| p.images_per_s).unwrap_or(1.0);
            for p in &t.points {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.0} | {:.2}x |",
                    p.threads,
                    p.runs,
                    ms(p.wall_s),
                    p.images_per_s,
                    p.images_per_s / base
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
