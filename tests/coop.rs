//! The tensor-core kernel (`shaders/coop.wgsl`): its integer accumulators
//! equal the CPU's exact sums at the exactness limit of its f32 chunks
//! (products of -128 x -128 over whole 512-value chunks: partial sums of
//! exactly 2^23), on crafted and seeded random layers, one pass and split;
//! and where it runs.
//!
//! On an adapter with cooperative matrices (`GpuContext::cooperative_matrix`)
//! every check runs the tensor cores and the emulation; elsewhere (Debian
//! bookworm's lavapipe, in `tools/test.sh`) the emulation only: the same
//! kernel body on plain-WGSL matrix primitives (`shaders/coop_emu.wgsl`),
//! which checks everything but the driver's matrix operations. Set
//! `QFUSE_EXPECT_COOPERATIVE_MATRIX=1` to fail when the adapter does not offer
//! the tensor-core kernel, or `=16` / `=8` to require its fragment edge
//! (`tools/coop_lavapipe.sh` runs this file on Mesa 26's lavapipe, 8x8x8
//! fragments, in CI; `tools/device_h200.sh` on NVIDIA's, 16x16x16).

mod common;

use common::{first_mismatch, gpu, Rng};
use qfuse::gpu::{ConvVariant, COOP_CHUNK};
use qfuse::layer::LayerKind;
use qfuse::{
    Activation, Conv2dGeometry, GpuContext, GpuLayer, GpuTensor, QLayer, QParams, Requant,
};

/// The coop variants `ctx` runs: emulated always, tensor cores where offered.
fn coop_kinds(ctx: &GpuContext) -> Vec<bool> {
    match std::env::var("QFUSE_EXPECT_COOPERATIVE_MATRIX").as_deref() {
        Err(_) | Ok("0") => {}
        Ok(v) => {
            let fr = ctx.cooperative_matrix_kernel().and_then(|k| k.coop_shape());
            assert!(
                fr.is_some_and(|(fr, _)| v == "1" || v == fr.to_string()),
                "QFUSE_EXPECT_COOPERATIVE_MATRIX={v} but {}",
                ctx.report()
            );
        }
    }
    let mut v = vec![true];
    if ctx.cooperative_matrix() {
        v.push(false);
    }
    v
}

struct Case {
    name: String,
    layer: QLayer,
    input: Vec<u8>,
    shape: Vec<usize>,
}

fn layer(kind: LayerKind, g: Conv2dGeometry, weight: Vec<i8>, zp_in: i32, s_out: f32) -> QLayer {
    let o = g.out_channels;
    QLayer::new(
        kind,
        g,
        weight,
        vec![0.01; o],
        (0..o).map(|i| (i as f32 - 3.5) * 0.37).collect(),
        QParams::new(0.05, zp_in).unwrap(),
        QParams::new(s_out, 100).unwrap(),
        Activation::None,
        Requant::Fbgemm,
    )
    .unwrap()
}

/// A 1x1 conv over 1536 channels (3 chunks of 512): output channel 0 of the
/// first 8 pixels multiplies -128 by -128 at every K value, so each chunk's
/// f32 sum is exactly 2^23 and the total 3 * 2^23; channel 1 of pixels
/// 8..16 multiplies 127 by 127 (odd products): 3 chunks of 8,258,048, a
/// total past 2^24 that one f32 sum would round (so a kernel that does not
/// cut K into chunks fails, emulated too); elsewhere values flipped to 127
/// here and there (so a transposed or shifted fragment shows).
fn limit_case() -> Case {
    let (c, o, h, w) = (1536, 72, 9, 8);
    let (input, weight) = qfuse::gpu::__internal::coop_limit_data(c, o, h * w);
    let g = Conv2dGeometry::new(c, o, [1, 1]);
    Case {
        name: "limit 1x1 1536->72".into(),
        layer: layer(LayerKind::Conv2d, g, weight, 128, 1e4),
        input,
        shape: vec![1, c, h, w],
    }
}

/// Seeded random cases: values mostly at the extremes (-128 after the
/// shift, weights -128), with padding that reads zero point 0 (also -128
/// after the shift), strides, odd channel counts and tile tails.
fn random_case(seed: u64) -> Case {
    let mut rng = Rng(seed);
    let extreme = rng.range(0, 1) == 0;
    let (kind, g, shape) = match rng.range(0, 2) {
        0 => {
            let k = rng.pick(&[513, 1024, 2048, 3001]);
            let o = rng.pick(&[1, 5, 20, 67]);
            let n = rng.range(32, 100);
            (LayerKind::Linear, Conv2dGeometry::linear(k, o), vec![n, k])
        }
        _ => {
            let c = rng.pick(&[3, 17, 64, 128, 129]);
            let o = rng.pick(&[8, 40, 64, 65]);
            let kk = rng.pick(&[1, 3, 5]);
            let s = rng.range(1, 2);
            let g = Conv2dGeometry::new(c, o, [kk, kk])
                .stride([s, s])
                .padding([kk / 2, kk / 2]);
            let (h, w) = (rng.range(8, 17), rng.range(8, 17));
            (LayerKind::Conv2d, g, vec![rng.range(1, 2), c, h, w])
        }
    };
    let mut input = rng.bytes(shape.iter().product());
    let mut weight = rng.i8s(g.weight_len());
    if extreme {
        for x in input.iter_mut() {
            if !x.is_multiple_of(8) {
                *x = 0;
            }
        }
        for w in weight.iter_mut() {
            if !(*w as u8).is_multiple_of(8) {
                *w = -128;
            }
        }
    }
    let zp = if extreme { 0 } else { rng.range(0, 255) as i32 };
    Case {
        name: format!("seed {seed} {kind:?} {g:?} {shape:?} extreme {extreme}"),
        layer: layer(kind, g, weight, zp, 5.0),
        input,
        shape,
    }
}

/// The CPU's exact accumulators in the kernels' convention: `[M][O4 * 4]`,
/// `Σ (x - 128) * w`, padded positions reading the input zero point.
fn cpu_accumulators(c: &Case) -> Vec<i32> {
    let (acc, out_shape) = qfuse::cpu::conv2d_accumulators(&c.layer, &c.input, &c.shape).unwrap();
    let g = c.layer.geometry();
    let o = g.out_channels;
    let taps = g.cin_per_group() * g.kernel[0] * g.kernel[1];
    let zp = c.layer.input().zero_point as i64;
    let n = out_shape[0];
    let hw: usize = out_shape[2..].iter().product();
    let o4 = o.div_ceil(4) * 4;
    let mut out = vec![0i32; n * hw * o4];
    for oc in 0..o {
        let wsum: i64 = c.layer.weight()[oc * taps..(oc + 1) * taps]
            .iter()
            .map(|&w| w as i64)
            .sum();
        for b in 0..n {
            for p in 0..hw {
                let v = acc[(b * o + oc) * hw + p] + (zp - 128) * wsum;
                out[(b * hw + p) * o4 + oc] = i32::try_from(v).unwrap();
            }
        }
    }
    out
}

fn check_accumulators(ctx: &GpuContext, c: &Case, fails: &mut Vec<String>) -> usize {
    let want = cpu_accumulators(c);
    let x = GpuTensor::upload(ctx, &c.input, &c.shape, c.layer.input()).unwrap();
    let mut runs = 0;
    for emulated in coop_kinds(ctx) {
        for splits in [None, Some(1), Some(3), Some(7)] {
            let v = ConvVariant::Coop { emulated, splits };
            let g = GpuLayer::with_variant(ctx, &c.layer, v).unwrap();
            let got = g.raw_accumulators(ctx, &x).unwrap();
            if let Some(m) = first_mismatch(&got, &want) {
                fails.push(format!("{} {v:?} accumulators: {m}", c.name));
            }
            // The whole layer, pass 2 and epilogue included.
            let (bytes, _) = qfuse::cpu::run_layer(&c.layer, &c.input, &c.shape).unwrap();
            let y = g.run(ctx, &x).and_then(|t| t.download(ctx)).unwrap();
            if let Some(m) = first_mismatch(&y, &bytes) {
                fails.push(format!("{} {v:?} output: {m}", c.name));
            }
            runs += 1;
        }
    }
    runs
}

#[test]
fn coop_accumulators_are_exact_at_the_chunk_limit() {
    let ctx = gpu();
    let c = limit_case();
    let want = cpu_accumulators(&c);
    // The case reaches the limit: 3 chunks of exactly 2^23.
    assert_eq!(COOP_CHUNK, 512);
    assert_eq!(want[0], 3 << 23);
    let o4 = 72;
    assert_eq!(want[8 * o4 + 1], 1536 * 127 * 127);
    assert!(want[8 * o4 + 1] > 1 << 24 && want[8 * o4 + 1] % 2 == 0);
    let mut fails = Vec::new();
    let runs = check_accumulators(&ctx, &c, &mut fails);
    assert!(
        fails.is_empty(),
        "{} of {runs} runs differ:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

#[test]
fn coop_accumulators_equal_cpu_on_random_layers() {
    let ctx = gpu();
    let mut fails = Vec::new();
    let mut runs = 0;
    for seed in 0..10u64 {
        let c = random_case(0xC00B_0000 + seed);
        runs += check_accumulators(&ctx, &c, &mut fails);
    }
    assert!(runs >= 40);
    assert!(
        fails.is_empty(),
        "{} of {runs} runs differ:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

#[test]
fn coop_kernel_runs_only_where_offered() {
    let ctx = gpu();
    let c = random_case(3);
    let hw = ConvVariant::Coop {
        emulated: false,
        splits: None,
    };
    let chosen = ConvVariant::choose_on(&ctx, &c.layer);
    if ctx.cooperative_matrix() {
        assert!(ctx.report().cooperative_matrix_off.is_none());
        let k = ctx.cooperative_matrix_kernel().unwrap();
        assert_eq!(ctx.report().cooperative_matrix_shape, k.coop_shape());
        println!("tensor-core kernel here: {k:?}, {:?}", k.coop_shape());
        // Autotuned layers time it among the candidates; otherwise it is
        // the default where the context says so (GPUs, or
        // QFUSE_COOPERATIVE_MATRIX=1), the packed-dot kernels elsewhere.
        if ctx.autotune() {
            assert_eq!(chosen, ConvVariant::Tuned);
            assert!(qfuse::gpu::tune_candidates(&ctx, &c.layer).contains(&hw));
        } else if ctx.cooperative_matrix_by_default() {
            assert_eq!(chosen, hw);
        } else {
            assert_eq!(ctx.device_type(), wgpu::DeviceType::Cpu);
            assert_eq!(
                chosen,
                ConvVariant::choose(&c.layer, &ctx.limits(), ctx.device_type())
            );
        }
        assert!(ConvVariant::candidates_on(&ctx, &c.layer).contains(&hw));
    } else {
        let why = ctx.report().cooperative_matrix_off.clone().unwrap();
        assert!(!why.is_empty());
        assert_ne!(chosen, hw);
        assert!(!ConvVariant::candidates_on(&ctx, &c.layer).contains(&hw));
        let e = GpuLayer::with_variant(&ctx, &c.layer, hw).err().unwrap();
        assert!(e.to_string().contains("tensor-core"), "{e}");
        println!("no tensor cores here: {why}");
    }
    // Grouped layers never run it.
    let dw = layer(
        LayerKind::Conv2d,
        Conv2dGeometry::new(8, 8, [3, 3]).groups(8),
        vec![1; 72],
        128,
        1.0,
    );
    assert!(!hw.applies(&dw));
    assert!(GpuLayer::with_variant(
        &ctx,
        &dw,
        ConvVariant::Coop {
            emulated: true,
            splits: None
        }
    )
    .is_err());
}

/// The known-answer check a context runs before it turns the tensor-core
/// kernel on passes (emulated here; on tensor cores too where offered: a
/// context whose check failed reports why and does not offer the kernel).
#[test]
fn coop_self_check_passes() {
    let ctx = gpu();
    for emulated in coop_kinds(&ctx) {
        qfuse::gpu::__internal::coop_self_check(&ctx, emulated)
            .unwrap_or_else(|e| panic!("emulated {emulated}: {e}"));
    }
    if let Some(why) = &ctx.report().cooperative_matrix_off {
        assert!(!why.contains("self-check"), "{why}");
    }
}
