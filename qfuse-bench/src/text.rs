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

/// A fraction as a percentage, "-" when unknown.
fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.1}%", 100.0 * v))
}

fn opt_si(x: Option<f64>, unit: &str) -> String {
    x.map_or("?".into(), |v| format!("{}{unit}", si(v)))
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
        // The adapter report line (ends with "tensor cores: yes/no (why)").
        let _ = writeln!(s, "adapter: {}", a.report);
        let _ = writeln!(s, "timing: {}\n", self.timing_method);
        let _ = writeln!(s, "## Ceilings\n");
        let sp = self.spec_peaks.as_ref();
        let at = self.peaks_at_measured_clock.as_ref();
        let vs = &self.ceilings_vs_spec;
        let vm = self.ceilings_vs_measured_clock_peak.as_ref();
        let _ = writeln!(
            s,
            "Loops: {} workgroups x {} invocations; each row's ops = invocations x iterations x ops per iteration.\n",
            c.groups, c.workgroup_size
        );
        let _ = writeln!(s, "| ceiling | rate | median time | ops per iteration | iterations | ops per dispatch | % of spec peak | % of peak at measured clock |\n|---|---|---|---|---|---|---|---|");
        for (i, f) in c.forms.iter().enumerate() {
            let (unit, v, m) = match f.mode {
                0 => ("op/s", vs.int8, vm.and_then(|v| v.int8)),
                1 => ("flop/s", vs.f32, vm.and_then(|v| v.f32)),
                2 => ("op/s", vs.int8_chained, vm.and_then(|v| v.int8_chained)),
                3 => ("op/s", vs.int8_legacy, vm.and_then(|v| v.int8_legacy)),
                _ => ("flop/s", vs.f32_legacy, vm.and_then(|v| v.f32_legacy)),
            };
            let _ = writeln!(
                s,
                "| {}{} | {}{unit} | {} | {} | {} | {:.3e} | {} | {} |",
                f.name,
                if i < 2 { " (**ceiling**)" } else { "" },
                si(f.ops_per_s),
                ms(f.timing.median_s),
                f.ops_per_iteration,
                f.iterations,
                f.ops,
                pct(v),
                pct(m)
            );
        }
        let _ = writeln!(
            s,
            "| buffer copy ({}, read + write) | {}B/s | {} | | | | {} | |\n",
            mib(c.copy_buffer_bytes),
            si(c.copy_bytes_per_s),
            ms(c.copy_timing.median_s),
            pct(vs.copy)
        );
        match sp {
            Some(p) => {
                let _ = writeln!(
                    s,
                    "Specified peaks ({}): int8 packed dot {}, f32 FMA {}, f16 tensor core dense {}, memory {} ({})\n",
                    p.chip,
                    opt_si(p.int8_ops_per_s, "op/s"),
                    opt_si(p.f32_flops_per_s, "flop/s"),
                    opt_si(p.f16_tensor_flops_per_s, "flop/s"),
                    opt_si(p.mem_bytes_per_s, "B/s"),
                    p.source
                );
            }
            None => {
                let _ = writeln!(s, "Specified peaks: none known for this adapter (give --peak-int8 / --peak-f32 / --peak-f16 / --peak-bw).\n");
            }
        }
        for c in [&self.ceiling_clock, &self.clock].into_iter().flatten() {
            let _ = writeln!(
                s,
                "SM clock ({}): {} samples, min {:.0} / median {:.0} / max {:.0} MHz{}\n",
                c.source,
                c.samples,
                c.min_mhz,
                c.median_mhz,
                c.max_mhz,
                c.busy_median_mhz.map_or(String::new(), |b| format!(
                    "; median while busy {b:.0} MHz ({} samples)",
                    c.busy_samples.unwrap_or(0)
                ))
            );
        }
        if let Some(p) = at {
            let _ = writeln!(
                s,
                "Peak at measured clock ({:.0} MHz): int8 packed dot {}, f32 FMA {}, f16 tensor core dense {}\n",
                p.clock_mhz.unwrap_or(0.0),
                opt_si(p.int8_ops_per_s, "op/s"),
                opt_si(p.f32_flops_per_s, "flop/s"),
                opt_si(p.f16_tensor_flops_per_s, "flop/s"),
            );
        }
        // Packed-dot columns beside the tensor-core ones, only where some
        // layer of the run has a cooperative-matrix default.
        let show_pd = self
            .networks
            .iter()
            .any(|n| n.layers.iter().any(|l| l.packed_dot.is_some()));
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
                let (pd_head, pd_rule) = if show_pd {
                    let _ = writeln!(s, "int8 kernel: the library's default (tensor cores where the device has them); for layers whose default is the cooperative-matrix kernel, the packed-dot (dot4I8Packed) kernels on the same layer in the 'packed dot' columns, and 'packed dot / coop': packed-dot time over the default's time (above 1: the tensor cores are faster). '% of f16 tensor spec peak': int8 op/s on the cooperative-matrix kernel against the specified dense f16 tensor-core peak.\n");
                    (
                        " % of f16 tensor spec peak | packed-dot kernel | packed-dot time | packed-dot op/s | packed-dot % of ceiling | packed-dot % of spec peak | packed dot / coop |",
                        "---|---|---|---|---|---|---|",
                    )
                } else {
                    ("", "")
                };
                let _ = writeln!(s, "| layer | shape | xN | batch | int8 kernel | int8 time | int8 op/s | bound | % of ceiling | % of spec peak |{pd_head} f32 tiled 3-disp | f32 tiled fused | f32 tiled flop/s | % of f32 ceiling | % of f32 spec peak | int8 vs f32 tiled unfused | int8 vs f32 tiled fused | f32 simple (untiled) 3-disp | f32 simple fused | int8 vs simple unfused | int8 vs simple fused |");
                let _ = writeln!(
                    s,
                    "|---|---|---|---|---|---|---|---|---|---|{pd_rule}---|---|---|---|---|---|---|---|---|---|---|"
                );
            }
            for l in &net.layers {
                let tiled_tag = if l.f32_tiled_kernel == "f32 tiled" {
                    ""
                } else {
                    " (simple)"
                };
                let kernel = if l.packed_dot.is_some() && !l.coop {
                    // A Coop default that runs the packed-dot kernels at
                    // this shape (few output pixels).
                    format!("{} (Coop default, few pixels)", l.int8_kernel_at_shape)
                } else {
                    l.int8_kernel_at_shape.clone()
                };
                let pd = match (&l.packed_dot, show_pd) {
                    (_, false) => String::new(),
                    (None, true) => {
                        format!(" {} | - | - | - | - | - | - |", pct(l.tensor_spec_fraction))
                    }
                    (Some(p), true) => format!(
                        " {} | {} | {} | {} | {:.1}% | {} | {:.2}x |",
                        pct(l.tensor_spec_fraction),
                        p.kernel_at_shape,
                        ms(p.timing.median_s),
                        si(p.ops_per_s),
                        100.0 * p.fraction,
                        pct(p.spec_fraction),
                        p.time_vs_coop
                    ),
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1}% | {} |{pd} {} ({}){tiled_tag} | {}{tiled_tag} | {} | {:.1}% | {} | {:.2}x | {:.2}x | {} | {} | {} | {} |",
                    l.name,
                    l.desc,
                    l.count,
                    l.batch,
                    kernel,
                    ms(l.int8.median_s),
                    si(l.int8_ops_per_s),
                    l.bound,
                    100.0 * l.fraction,
                    pct(l.spec_fraction),
                    ms(l.f32_tiled_unfused.median_s),
                    l.f32_tiled_unfused_dispatches,
                    ms(l.f32_tiled_fused.median_s),
                    si(l.f32_tiled_flops_per_s),
                    100.0 * l.f32_tiled_fraction,
                    pct(l.f32_tiled_spec_fraction),
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
                // With a tensor-core default, each batch twice: "tensor
                // cores" (GpuModel::new) and "packed dot" (with_variants).
                let both = rn.packed_dot_runs.as_ref();
                let (k_head, k_rule) = if both.is_some() {
                    ("| int8 kernels ", "|---")
                } else {
                    ("", "")
                };
                let _ = writeln!(s, "{k_head}| batch | wall (upload + run + readback) | images/s (wall) | GPU time (timestamps) | images/s (GPU) | runs | planned activations int8 | f32 | int8/f32 | vs f32 tiled unfused conv chain | vs f32 simple unfused conv chain |\n{k_rule}|---|---|---|---|---|---|---|---|---|---|---|");
                let mut rows: Vec<(&str, &crate::report::RealRun)> = vec![];
                for r in &rn.runs {
                    rows.push((&rn.path, r));
                    for p in both.into_iter().flatten().filter(|p| p.batch == r.batch) {
                        rows.push((crate::report::PACKED_DOT_LABEL, p));
                    }
                }
                for (label, r) in rows {
                    if both.is_some() {
                        let _ = write!(s, "| {label} ");
                    }
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
                for p in both.into_iter().flatten() {
                    if let Some(r) = rn.runs.iter().find(|r| r.batch == p.batch) {
                        let _ = writeln!(
                            s,
                            "\nbatch {}: {} {:.2} images/s, packed dot {:.2} images/s ({}; packed dot / {} time {:.2}x)",
                            r.batch,
                            rn.path,
                            r.gpu_images_per_s.unwrap_or(r.images_per_s),
                            p.gpu_images_per_s.unwrap_or(p.images_per_s),
                            if r.gpu_images_per_s.is_some() { "GPU time" } else { "wall" },
                            rn.path,
                            p.timing.gpu_median_s.unwrap_or(p.timing.wall_median_s)
                                / r.timing.gpu_median_s.unwrap_or(r.timing.wall_median_s)
                        );
                    }
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
                let int8_label = match &e.packed_dot {
                    Some(_) => format!("int8 fused ({})", e.int8_path),
                    None => "int8 fused".into(),
                };
                let pd_label = format!("int8 fused ({})", crate::report::PACKED_DOT_LABEL);
                let pd = e.packed_dot.as_ref();
                let rows = [
                    (
                        int8_label.as_str(),
                        Some(&e.int8),
                        e.int8_images_per_s,
                        e.int8_images_per_s_wall,
                        e.int8_dispatches,
                    ),
                    (
                        pd_label.as_str(),
                        pd.map(|p| &p.timing),
                        pd.map_or(f64::NAN, |p| p.images_per_s),
                        pd.map_or(f64::NAN, |p| p.images_per_s_wall),
                        pd.map_or(0, |p| p.dispatches),
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
                if let Some(p) = &e.packed_dot {
                    let _ = writeln!(
                        s,
                        "conv chain batch {}: {} {:.2} images/s, packed dot {:.2} images/s (packed dot / {} time {:.2}x)",
                        e.batch, e.int8_path, e.int8_images_per_s, p.images_per_s, e.int8_path, p.time_vs_coop
                    );
                }
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
        // The packed-dot numbers of each large layer: its own where its
        // kernel is a packed-dot one, else its packed-dot twin's.
        let packed: Vec<(f64, Option<f64>)> = big
            .iter()
            .filter_map(|l| match &l.packed_dot {
                Some(p) => Some((p.fraction, p.spec_fraction)),
                None => (!l.coop).then_some((l.fraction, l.spec_fraction)),
            })
            .collect();
        if big.is_empty() {
            let _ = writeln!(s, "- large layers (>= 0.2 Gop per dispatch, compute-bound): none at this resolution/batch");
        } else {
            let best = packed.iter().map(|p| p.0).fold(0.0, f64::max);
            let mut f: Vec<f64> = packed.iter().map(|p| p.0).collect();
            let med = median(&mut f);
            let _ = writeln!(
                s,
                "- large compute-bound layers (>= 0.2 Gop per dispatch) on the packed-dot kernels: {} measured, median {:.1}%, best {:.1}% of the int8 ceiling; {} reach 30% (target), {} reach 60%",
                packed.len(),
                100.0 * med,
                100.0 * best,
                packed.iter().filter(|p| p.0 >= 0.3).count(),
                packed.iter().filter(|p| p.0 >= 0.6).count()
            );
            let mut sf: Vec<f64> = packed.iter().filter_map(|p| p.1).collect();
            if !sf.is_empty() {
                let best = sf.iter().copied().fold(0.0, f64::max);
                let n60 = sf.iter().filter(|&&f| f >= 0.6).count();
                let _ = writeln!(
                    s,
                    "- the same layers against the specified int8 peak: median {:.1}%, best {:.1}%; {n60} reach 60% (target)",
                    100.0 * median(&mut sf),
                    100.0 * best
                );
            }
            let mut coop: Vec<f64> = big
                .iter()
                .filter(|l| l.coop)
                .map(|l| l.int8_ops_per_s)
                .collect();
            if !coop.is_empty() {
                let best = coop.iter().copied().fold(0.0, f64::max);
                let n300 = coop.iter().filter(|&&v| v >= 300e12).count();
                let tf: Vec<f64> = big.iter().filter_map(|l| l.tensor_spec_fraction).collect();
                let _ = writeln!(
                    s,
                    "- the same layers on the cooperative-matrix kernel: {} measured, median {}op/s, best {}op/s{}; {n300} reach 300 T op/s (target)",
                    coop.len(),
                    si(median(&mut coop)),
                    si(best),
                    if tf.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (best {:.1}% of the f16 tensor-core spec peak)",
                            100.0 * tf.iter().copied().fold(0.0, f64::max)
                        )
                    }
                );
            }
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
                let pd = real.packed_dot_runs.iter().flatten();
                for (label, r) in real
                    .runs
                    .iter()
                    .map(|r| (real.path.as_str(), r))
                    .chain(pd.map(|r| (crate::report::PACKED_DOT_LABEL, r)))
                {
                    let _ = writeln!(
                        s,
                        "- {} batch {}: real network {:.0} images/s ({}, {})",
                        net.name,
                        r.batch,
                        r.gpu_images_per_s.unwrap_or(r.images_per_s),
                        label,
                        if r.gpu_images_per_s.is_some() {
                            "GPU time"
                        } else {
                            "wall"
                        }
                    );
                }
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
