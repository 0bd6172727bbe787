//! The tensor-core vs packed-dot comparison on any adapter: with
//! `coop_emulated`, every conv/linear layer of one group defaults to the
//! tensor-core kernel's emulation (`ConvVariant::Coop { emulated: true }`),
//! so the per-layer table, the conv chain and the real network each carry
//! both paths' numbers, in the report, its JSON and its text.

use qfuse::GpuContext;
use qfuse_bench::{run, BenchConfig, PeakOverrides, COOP_EMULATED_LABEL, PACKED_DOT_LABEL};

#[test]
fn coop_emulated_reports_both_paths() {
    let ctx = match GpuContext::new() {
        Ok(ctx) => ctx,
        Err(e) => panic!("this test needs a GPU adapter and found none: {e}"),
    };
    eprintln!("GPU adapter: {}", ctx.report());
    let cfg = BenchConfig {
        quick: true,
        batches: vec![1],
        // 32x32: conv1 (16x16 output) and layer1 (8x8) have >= 32 output
        // pixels and run the coop kernel; the later layers and the fc fall
        // back to the packed-dot kernels (few pixels).
        resolution: 32,
        networks: vec!["resnet18".into()],
        budget_s: Some(0.0),
        threads: vec![],
        skip_simple_f32: true,
        coop_emulated: true,
        // Known peaks, so that every fraction is filled (lavapipe has none).
        peaks: PeakOverrides {
            int8_ops_per_s: Some(1e12),
            f16_tensor_flops_per_s: Some(4e12),
            mem_bytes_per_s: Some(1e11),
            ..Default::default()
        },
        ..BenchConfig::default()
    };
    let t = std::time::Instant::now();
    let r = run(&ctx, &cfg).expect("benchmark run");
    eprintln!("harness took {:.1} s", t.elapsed().as_secs_f64());
    assert!(
        r.adapter.report.contains("tensor cores: "),
        "{}",
        r.adapter.report
    );
    let net = &r.networks[0];

    // Per layer: every ungrouped layer (all of ResNet-18's) defaults to the
    // emulated coop kernel and has a packed-dot twin on another variant.
    assert_eq!(net.layers.len(), 16);
    for l in &net.layers {
        assert_eq!(
            l.int8_kernel, "Coop { emulated: true, splits: None }",
            "{}",
            l.name
        );
        let p = l
            .packed_dot
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no packed dot", l.name));
        assert!(!p.kernel.contains("Coop"), "{}: {}", l.name, p.kernel);
        assert!(p.ops_per_s > 0.0 && p.fraction > 0.0, "{}: {p:?}", l.name);
        assert!(p.spec_fraction.is_some(), "{}", l.name);
        let want = p.timing.median_s / l.int8.median_s;
        assert!((p.time_vs_coop - want).abs() <= 1e-12 * want, "{}", l.name);
        // The f16 tensor-core fraction exactly where the coop kernel runs.
        assert_eq!(l.tensor_spec_fraction.is_some(), l.coop, "{}", l.name);
        if l.coop {
            assert!(
                l.int8_kernel_at_shape.starts_with("Coop emulated"),
                "{}",
                l.name
            );
            let f = l.tensor_spec_fraction.unwrap();
            assert!(
                (f - l.int8_ops_per_s / 4e12).abs() < 1e-12,
                "{}: {f}",
                l.name
            );
        } else {
            assert!(!l.int8_kernel_at_shape.contains("Coop"), "{}", l.name);
        }
    }
    let coop: Vec<&str> = net
        .layers
        .iter()
        .filter(|l| l.coop)
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(
        coop,
        ["conv1", "layer1.0.conv1", "layer1.0.conv2"],
        "layers on the coop kernel"
    );
    let fc = net.layers.iter().find(|l| l.name == "fc").unwrap();
    assert_eq!(
        fc.int8_kernel_at_shape, "Gemv",
        "fc at batch 1: the GEMV fallback"
    );

    // Conv chain: both paths.
    let e = &net.conv_chain[0];
    assert_eq!(e.int8_path, COOP_EMULATED_LABEL);
    let p = e.packed_dot.as_ref().expect("conv chain on packed dot");
    assert!(p.images_per_s > 0.0 && p.time_vs_coop > 0.0, "{p:?}");
    if ctx.device_type() == wgpu::DeviceType::Cpu {
        // ConvVariant::choose on a CPU adapter: Tiled, one dispatch each.
        assert_eq!(p.dispatches, 21, "one dispatch per layer on Tiled kernels");
    } else {
        assert!(p.dispatches >= 21, "{}", p.dispatches);
    }
    assert!(e.int8_dispatches > 21, "the coop layers' split-K passes");

    // Real network: built twice, both timed.
    let real = net.real.as_ref().expect("real network");
    assert_eq!(real.path, COOP_EMULATED_LABEL);
    let pr = real.packed_dot_runs.as_ref().expect("packed-dot runs");
    assert_eq!((real.runs.len(), pr.len()), (1, 1));
    assert!(real.runs[0].images_per_s > 0.0 && pr[0].images_per_s > 0.0);
    assert!(pr[0].speedup_vs_f32_tiled_unfused_chain.is_some());

    // The JSON carries both.
    let json: serde_json::Value = serde_json::to_value(&r).unwrap();
    let n = &json["networks"][0];
    assert!(n["layers"][0]["tensor_spec_fraction"].as_f64().unwrap() > 0.0);
    assert!(n["layers"][0]["packed_dot"]["ops_per_s"].as_f64().unwrap() > 0.0);
    assert!(
        n["layers"][0]["packed_dot"]["spec_fraction"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(
        n["conv_chain"][0]["packed_dot"]["images_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(n["real"]["path"], COOP_EMULATED_LABEL);
    assert!(
        n["real"]["packed_dot_runs"][0]["images_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(json["adapter"]["report"], r.adapter.report.as_str());

    // The text: the packed-dot columns, both labels in the end-to-end tables.
    let text = r.to_text();
    assert!(text.contains("| packed-dot kernel |") && text.contains("| packed dot / coop |"));
    assert!(
        text.contains(&format!("| {COOP_EMULATED_LABEL} | 1 |")),
        "{text}"
    );
    assert!(
        text.contains(&format!("| {PACKED_DOT_LABEL} | 1 |")),
        "{text}"
    );
    assert!(text.contains("| int8 fused (packed dot) | 1 |"), "{text}");
    assert!(text.contains(&format!("adapter: {}", r.adapter.report)));
}

/// Without a tensor-core default (lavapipe, no `coop_emulated`) the report
/// has none of the packed-dot extras: no columns, no second runs.
#[test]
fn no_coop_default_no_extra_columns() {
    let ctx = match GpuContext::new() {
        Ok(ctx) => ctx,
        Err(e) => panic!("this test needs a GPU adapter and found none: {e}"),
    };
    if ctx.cooperative_matrix_by_default() {
        eprintln!(
            "this adapter runs the tensor-core kernel: the check below is for adapters without"
        );
    }
    let cfg = BenchConfig {
        quick: true,
        batches: vec![1],
        resolution: 16,
        networks: vec!["resnet18".into()],
        budget_s: Some(0.0),
        threads: vec![],
        skip_simple_f32: true,
        skip_real: ctx.cooperative_matrix_by_default(),
        ..BenchConfig::default()
    };
    let r = run(&ctx, &cfg).expect("benchmark run");
    let net = &r.networks[0];
    let any = net.layers.iter().any(|l| l.packed_dot.is_some());
    assert_eq!(any, ctx.cooperative_matrix_by_default());
    if !ctx.cooperative_matrix_by_default() {
        assert!(net
            .layers
            .iter()
            .all(|l| !l.coop && l.tensor_spec_fraction.is_none()));
        assert!(net.conv_chain[0].packed_dot.is_none());
        assert_eq!(net.conv_chain[0].int8_path, PACKED_DOT_LABEL);
        let real = net.real.as_ref().unwrap();
        assert_eq!(real.path, PACKED_DOT_LABEL);
        assert!(real.packed_dot_runs.is_none());
        let text = r.to_text();
        assert!(!text.contains("| packed-dot kernel |") && !text.contains("| int8 kernels |"));
    }
}
