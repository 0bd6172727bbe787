//! The whole harness on the test adapter, as small as it goes (32x32, batch
//! 1, the minimum run counts): every table gets filled, and what does not
//! depend on timing is what the harness has always reported for these
//! networks (node counts of the real networks, layer counts, planned bytes).

use qfuse::GpuContext;
use qfuse_bench::{run, BenchConfig};

#[test]
fn harness_runs_both_networks() {
    let ctx = match GpuContext::new() {
        Ok(ctx) => ctx,
        Err(e) => panic!("this test needs a GPU adapter and found none: {e}"),
    };
    eprintln!("GPU adapter: {}", ctx.report());
    let cfg = BenchConfig {
        quick: true,
        batches: vec![1],
        resolution: 32,
        networks: vec!["resnet18".into(), "mobilenet_v2".into()],
        verbose: false,
        budget_s: Some(0.0),
        threads: vec![1, 2],
        ..BenchConfig::default()
    };
    let t = std::time::Instant::now();
    let r = run(&ctx, &cfg).expect("benchmark run");
    eprintln!("harness took {:.1} s", t.elapsed().as_secs_f64());
    let t = r.threads.as_ref().expect("threads measured");
    assert_eq!(
        t.points.iter().map(|p| p.threads).collect::<Vec<_>>(),
        [1, 2]
    );
    for p in &t.points {
        assert!(p.images_per_s.is_finite() && p.images_per_s > 0.0, "{p:?}");
    }
    let c = &r.ceilings;
    for (what, v) in [
        ("int8 ceiling", c.int8_ops_per_s),
        ("f32 ceiling", c.f32_flops_per_s),
        ("copy bandwidth", c.copy_bytes_per_s),
    ] {
        assert!(v.is_finite() && v > 0.0, "{what}: {v}");
    }
    // (name, real-network nodes, conv/linear layers, int8 / f32 planned
    // conv-chain activation bytes at batch 1), as the harness reported them
    // when it was part of the library.
    let want = [
        ("resnet18", 34, 21, 24576, 98304),
        ("mobilenet_v2", 101, 53, 43008, 172032),
    ];
    assert_eq!(r.networks.len(), want.len());
    for (net, &(name, nodes, convs, int8_b, f32_b)) in r.networks.iter().zip(&want) {
        assert_eq!(net.name, name);
        let real = net.real.as_ref().expect("real network measured");
        assert_eq!(real.nodes, nodes, "{name}: real network nodes");
        assert_eq!(net.conv_layers, convs, "{name}: conv/linear layers");
        assert_eq!(
            net.layers.iter().map(|l| l.count).sum::<usize>(),
            convs,
            "{name}: the per-layer table covers every conv/linear layer"
        );
        let m = &net.conv_chain_memory[0];
        assert_eq!(
            (m.int8_planned_bytes, m.f32_planned_bytes),
            (int8_b, f32_b),
            "{name}: conv chain plan"
        );
        for l in &net.layers {
            assert!(
                l.speedup_vs_unfused.is_finite() && l.speedup_vs_unfused > 0.0,
                "{name} {}: {}",
                l.name,
                l.speedup_vs_unfused
            );
            for v in [l.speedup_vs_tiled_unfused, l.speedup_vs_tiled_fused] {
                assert!(
                    v.is_finite() && v > 0.0,
                    "{name} {}: tiled f32 ratio {v}",
                    l.name
                );
            }
            // Depthwise layers run the simple f32 kernel, every other layer the tiled one.
            let dw = l.desc.contains(" dw ");
            assert_eq!(
                l.f32_tiled_kernel,
                if dw {
                    "f32 simple (untiled)"
                } else {
                    "f32 tiled"
                },
                "{name} {}",
                l.name
            );
        }
        assert!(net.conv_chain[0].speedup_vs_tiled_unfused > 0.0);
        let run = &real.runs[0];
        assert!(run.images_per_s > 0.0, "{name}: {}", run.images_per_s);
        assert!(net.conv_chain[0].speedup_vs_unfused > 0.0);
    }
    let text = r.to_text();
    assert!(text.contains("## Targets") && text.contains("end to end: the real network"));
}

/// Several batches reach every table and the JSON (each row carries its
/// batch), and the skip switches leave out what they name: here the real
/// networks and the f32 simple (untiled) baseline (its fields null).
#[test]
fn batches_and_skips_reach_the_json() {
    let ctx = match GpuContext::new() {
        Ok(ctx) => ctx,
        Err(e) => panic!("this test needs a GPU adapter and found none: {e}"),
    };
    let cfg = BenchConfig {
        quick: true,
        batches: vec![2, 3],
        resolution: 16,
        networks: vec!["resnet18".into()],
        budget_s: Some(0.0),
        threads: vec![],
        skip_real: true,
        skip_simple_f32: true,
        peaks: qfuse_bench::PeakOverrides {
            int8_ops_per_s: Some(1e12),
            ..Default::default()
        },
        ..BenchConfig::default()
    };
    let r = run(&ctx, &cfg).expect("benchmark run");
    let net = &r.networks[0];
    assert!(net.real.is_none());
    assert!(r.threads.is_none());
    let mut batches: Vec<usize> = net.layers.iter().map(|l| l.batch).collect();
    batches.dedup();
    assert_eq!(batches, [2, 3]);
    assert_eq!(
        net.conv_chain.iter().map(|e| e.batch).collect::<Vec<_>>(),
        [2, 3]
    );
    for l in &net.layers {
        assert!(l.f32_unfused.is_none() && l.f32_fused.is_none());
        assert!(l.speedup_vs_tiled_fused > 0.0, "{}", l.name);
        // The given int8 peak: compute-bound layers get a fraction of it.
        if l.bound == "compute" {
            let f = l.spec_fraction.expect("spec fraction");
            assert!((f - l.int8_ops_per_s / 1e12).abs() < 1e-12, "{f}");
        }
    }
    let json: serde_json::Value = serde_json::to_value(&r).unwrap();
    let layer = &json["networks"][0]["layers"][net.layers.len() - 1];
    assert_eq!(layer["batch"], 3);
    assert!(layer["f32_unfused"].is_null() && layer["speedup_vs_unfused"].is_null());
    assert!(layer["speedup_vs_tiled_unfused"].as_f64().unwrap() > 0.0);
    assert_eq!(json["networks"][0]["conv_chain"][1]["batch"], 3);
    assert_eq!(json["spec_peaks"]["int8_ops_per_s"], 1e12);
    // Every ceiling form reports the op count it used.
    for f in &r.ceilings.forms {
        assert_eq!(
            f.ops,
            f.invocations as f64 * f.iterations as f64 * f.ops_per_iteration as f64
        );
        assert!(f.ops_per_s > 0.0, "{}", f.name);
    }
    assert_eq!(r.ceilings.forms.len(), 5);
}
