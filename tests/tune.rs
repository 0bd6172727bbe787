//! The autotuner (`qfuse::gpu::tune`): tuned layers give the CPU
//! reference's bytes; every candidate is timed once per shape bucket and
//! the fastest kept; the cache file round-trips per adapter (a second
//! context measures nothing) and a damaged one is a clear error.

mod common;

use common::{first_mismatch, gpu, Rng};
use qfuse::gpu::{tune, ConvVariant};
use qfuse::layer::LayerKind;
use qfuse::{
    Activation, Conv2dGeometry, GpuContext, GpuLayer, GpuTensor, QLayer, QParams, Requant,
};

fn layer(kind: LayerKind, g: Conv2dGeometry, seed: u64) -> QLayer {
    let mut rng = Rng(seed);
    let o = g.out_channels;
    QLayer::new(
        kind,
        g,
        rng.i8s(g.weight_len()),
        vec![0.01; o],
        (0..o).map(|i| i as f32 * 0.1 - 1.0).collect(),
        QParams::new(0.05, 7).unwrap(),
        QParams::new(0.4, 120).unwrap(),
        Activation::Relu,
        Requant::Fbgemm,
    )
    .unwrap()
}

/// (layer, input shape): a 3x3 conv, a linear head at batch 2 (GEMV is a
/// candidate) and a 1x1 conv.
fn cases() -> Vec<(QLayer, Vec<usize>)> {
    vec![
        (
            layer(
                LayerKind::Conv2d,
                Conv2dGeometry::new(16, 24, [3, 3]).padding([1, 1]),
                1,
            ),
            vec![1, 16, 12, 10],
        ),
        (
            layer(LayerKind::Linear, Conv2dGeometry::linear(256, 40), 2),
            vec![2, 256],
        ),
        (
            layer(LayerKind::Conv2d, Conv2dGeometry::new(32, 20, [1, 1]), 3),
            vec![1, 32, 9, 9],
        ),
    ]
}

/// Runs every case through `GpuLayer::new` on `ctx` and checks the bytes.
fn run_cases(ctx: &GpuContext) {
    for (i, (l, shape)) in cases().into_iter().enumerate() {
        let g = GpuLayer::new(ctx, &l).unwrap();
        assert_eq!(g.variant(), ConvVariant::Tuned, "case {i}");
        let x = Rng(100 + i as u64).bytes(shape.iter().product());
        let (want, _) = qfuse::cpu::run_layer(&l, &x, &shape).unwrap();
        let t = GpuTensor::upload(ctx, &x, &shape, l.input()).unwrap();
        let got = g.run(ctx, &t).and_then(|y| y.download(ctx)).unwrap();
        if let Some(m) = first_mismatch(&got, &want) {
            panic!("case {i} tuned to {:?}: {m}", g.variant_for(&shape));
        }
        let key = g.tune_key(&shape).unwrap();
        let tuned = g.variant_for(&shape).unwrap();
        assert!(
            ctx.tuned_variants().contains(&(key, tuned)),
            "case {i}: {key} not cached"
        );
    }
}

fn temp_path(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("qfuse-tune-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join("tune.json")
}

#[test]
fn tuned_layers_are_exact_and_the_cache_round_trips() {
    let path = temp_path("roundtrip");
    let _ = std::fs::remove_file(&path);
    let ctx = gpu();
    ctx.set_autotune(true);
    ctx.set_tune_cache(&path).unwrap();
    assert!(ctx.tuned_variants().is_empty());
    run_cases(&ctx);
    // One measurement per case (the three buckets differ), every candidate
    // timed, the fastest kept.
    let log = ctx.tune_log();
    assert_eq!(log.len(), 3, "{log:?}");
    for (key, timings) in &log {
        let cands: Vec<ConvVariant> = timings.iter().map(|t| t.0).collect();
        assert!(cands.len() >= 6, "{key}: {cands:?}");
        let best = timings
            .iter()
            .filter_map(|&(v, t)| Some((v, t?)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        assert!(timings.iter().all(|t| t.1.is_some()), "{key}: {timings:?}");
        let chosen = ctx
            .tuned_variants()
            .into_iter()
            .find(|(k, _)| k == key)
            .unwrap()
            .1;
        assert_eq!(chosen, best.0, "{key}");
        println!("{key}: {chosen:?} ({:.1} us)", best.1 * 1e6);
    }
    assert!(log[1].1.iter().any(|t| t.0 == ConvVariant::Gemv));
    // The file holds them; a fresh context loads them and measures nothing.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"qfuse_tune_cache\": 1"), "{text}");
    let ctx2 = GpuContext::new().unwrap();
    ctx2.set_autotune(true);
    ctx2.set_tune_cache(&path).unwrap();
    assert_eq!(ctx2.tuned_variants(), ctx.tuned_variants());
    run_cases(&ctx2);
    assert!(ctx2.tune_log().is_empty(), "{:?}", ctx2.tune_log());
    // Running again on the first context measures nothing new either.
    run_cases(&ctx);
    assert_eq!(ctx.tune_log().len(), 3);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn damaged_tuner_caches_are_clear_errors() {
    let ctx = gpu();
    let path = temp_path("damaged");
    for (text, want) in [
        ("{not json", "tuner cache"),
        (r#"{"qfuse_tune_cache": 2, "adapters": {}}"#, "version 2"),
        (
            r#"{"qfuse_tune_cache": 1, "adapters": {"x": {"k3x3 s1x1 kq36 o4_6 m128": "fast"}}}"#,
            "not a variant",
        ),
        (
            r#"{"qfuse_tune_cache": 1, "adapters": {"x": {"3x3": "gemv"}}}"#,
            "not a tuner key",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let e = ctx.set_tune_cache(&path).unwrap_err().to_string();
        assert!(
            e.contains(want) && e.contains(&path.display().to_string()),
            "{text}: {e}"
        );
    }
    // A missing file is an empty cache.
    std::fs::remove_file(&path).unwrap();
    ctx.set_tune_cache(&path).unwrap();
    assert!(!path.exists());
}

#[test]
fn tuner_names_round_trip_and_keys_bucket_rows() {
    let ctx = gpu();
    for (l, shape) in cases() {
        let cands = qfuse::gpu::tune_candidates(&ctx, &l);
        assert!(cands.len() >= 6);
        for v in cands {
            let name = tune::variant_name(v).unwrap();
            assert_eq!(tune::parse_variant(&name), Some(v), "{name}");
        }
        let g = GpuLayer::with_variant(&ctx, &l, ConvVariant::Tiled(None)).unwrap();
        let key = g.tune_key(&shape).unwrap();
        assert_eq!(key.to_string().parse::<tune::TuneKey>(), Ok(key));
        assert!(key.rows.is_power_of_two());
    }
    for bad in ["splitk:0", "coop:x", "tiled:64x16", "words", ""] {
        assert_eq!(tune::parse_variant(bad), None, "{bad}");
    }
    // Not tuned: pooled layers and grouped layers.
    let dw = layer(
        LayerKind::Conv2d,
        Conv2dGeometry::new(8, 8, [3, 3]).groups(8),
        4,
    );
    assert!(!ConvVariant::Tuned.applies(&dw));
    let pooled = cases()[0].0.with_global_pool();
    if let Ok(p) = pooled {
        assert!(!ConvVariant::Tuned.applies(&p));
    }
}
