//! GPU vs CPU reference on a few hundred seeded random layers covering every
//! conv2d/linear feature: batch, odd channel counts, rectangular kernels,
//! stride/padding/dilation per dimension, groups and depthwise with a channel
//! multiplier, long reductions (K > 4096), accumulators past 2^24, extreme
//! scales and zero points, both requantization rules, every kernel variant
//! (split-K included: chosen per shape and pinned to 1, 3 and 8 splits).
//! Equal bit for bit; a mismatch prints the seed, the layer and the first
//! differing element.

mod common;

use common::{first_mismatch, gpu, Rng};
use qfuse::gpu::ConvVariant;
use qfuse::layer::LayerKind;
use qfuse::{Activation, Conv2dGeometry, GpuLayer, GpuTensor, QLayer, QParams, Requant};

struct Case {
    layer: QLayer,
    input: Vec<u8>,
    shape: Vec<usize>,
}

fn log_uniform(rng: &mut Rng, lo: f32, hi: f32) -> f32 {
    (lo.ln() + rng.f32() * (hi.ln() - lo.ln())).exp()
}

fn random_case(seed: u64) -> Case {
    let mut rng = Rng(seed);
    let kind = if rng.range(0, 4) == 0 {
        LayerKind::Linear
    } else {
        LayerKind::Conv2d
    };
    let large = seed % 50 == 7; // a few long reductions
    let (geom, shape) = match kind {
        LayerKind::Linear => {
            let k = if large {
                rng.range(4097, 6000)
            } else {
                rng.pick(&[1, 2, 3, 4, 5, 7, 8, 15, 16, 33, 64, 100, 257])
            };
            let o = rng.pick(&[1, 2, 3, 4, 5, 9, 10, 16, 31, 64]);
            (Conv2dGeometry::linear(k, o), vec![rng.range(1, 4), k])
        }
        LayerKind::Conv2d => {
            let style = rng.range(0, 3);
            let (cin, cout, groups) = match style {
                0 => (
                    rng.pick(&[1, 2, 3, 4, 5, 7, 8, 13, 16, 32]),
                    rng.pick(&[1, 3, 4, 5, 8, 12, 17]),
                    1,
                ),
                1 => {
                    // depthwise, channel multiplier 1..3
                    let c = rng.pick(&[1, 2, 3, 4, 5, 8, 11, 16]);
                    (c, c * rng.range(1, 3), c)
                }
                2 => {
                    let g = rng.range(2, 4);
                    (g * rng.range(1, 6), g * rng.range(1, 4), g)
                }
                _ => {
                    // long reduction: K = cin * 9 > 4096
                    (rng.pick(&[460, 512, 520]), rng.range(1, 6), 1)
                }
            };
            let (cin, cout, groups) = if large {
                (rng.pick(&[460, 512, 520]), rng.range(1, 6), 1)
            } else {
                (cin, cout, groups)
            };
            let kernel = [rng.range(1, 5), rng.range(1, 5)];
            let kernel = if large { [3, 3] } else { kernel };
            let stride = [rng.range(1, 3), rng.range(1, 3)];
            let dilation = [rng.range(1, 2), rng.range(1, 2)];
            let padding = [
                rng.range(0, kernel[0] / 2 + 1),
                rng.range(0, kernel[1] / 2 + 1),
            ];
            let g = Conv2dGeometry::new(cin, cout, kernel)
                .stride(stride)
                .padding(padding)
                .dilation(dilation)
                .groups(groups);
            let span = |i: usize| dilation[i] * (kernel[i] - 1) + 1;
            let min_h = span(0).saturating_sub(2 * padding[0]).max(1);
            let min_w = span(1).saturating_sub(2 * padding[1]).max(1);
            let (h, w) = if large {
                (rng.range(3, 6), rng.range(3, 6))
            } else {
                (rng.range(min_h, min_h + 9), rng.range(min_w, min_w + 9))
            };
            (g, vec![rng.range(1, 3), cin, h.max(min_h), w.max(min_w)])
        }
    };
    finish_case(&mut rng, seed, large && seed % 100 == 7, kind, geom, shape)
}

/// Random qparams, weights, bias and input for a given geometry; `saturate`
/// pushes the accumulators past 2^24.
fn finish_case(
    rng: &mut Rng,
    seed: u64,
    saturate: bool,
    kind: LayerKind,
    geom: Conv2dGeometry,
    shape: Vec<usize>,
) -> Case {
    let mut rng = Rng(rng.next_u64());
    let k = geom.reduction_len() as f32;
    // Zero points: often the extremes.
    let zp = |rng: &mut Rng| match rng.range(0, 4) {
        0 => 0,
        1 => 255,
        2 => 128,
        _ => rng.range(0, 255) as i32,
    };
    let s_in = log_uniform(&mut rng, 1e-4, 10.0);
    let in_zp = zp(&mut rng);
    let w_scales: Vec<f32> = if rng.range(0, 1) == 0 {
        vec![log_uniform(&mut rng, 1e-4, 1.0); geom.out_channels]
    } else {
        (0..geom.out_channels)
            .map(|_| log_uniform(&mut rng, 1e-4, 1.0))
            .collect()
    };
    // Output scale around the accumulator's typical magnitude, with a spread
    // that saturates some layers and magnifies others.
    let typical = s_in * w_scales[0] * 128.0 * 40.0 * k.sqrt();
    let s_out = typical * log_uniform(&mut rng, 0.01, 10.0);
    // Bias up to a few typical accumulators, in each channel's own units.
    let bias: Vec<f32> = w_scales
        .iter()
        .map(|&sw| (rng.f32() - 0.5) * 4.0 * s_in * sw * 128.0 * 40.0 * k.sqrt())
        .collect();
    let out = QParams::new(s_out, zp(&mut rng)).unwrap();
    let act = if rng.range(0, 1) == 0 {
        Activation::None
    } else {
        Activation::Relu
    };
    let rule = if rng.range(0, 1) == 0 {
        Requant::Fbgemm
    } else {
        Requant::Qnnpack
    };
    let mut weight = rng.i8s(geom.weight_len());
    let mut input = rng.bytes(shape.iter().product());
    if saturate {
        // Accumulators past 2^24: saturated inputs and weights of one sign.
        for w in weight.iter_mut() {
            *w = 127 - (*w as u8 % 4) as i8;
        }
        for x in input.iter_mut() {
            *x = 255 - *x % 3;
        }
    }
    let layer = QLayer::new(
        kind,
        geom,
        weight,
        w_scales,
        bias,
        QParams::new(s_in, in_zp).unwrap(),
        out,
        act,
        rule,
    )
    .unwrap_or_else(|e| panic!("seed {seed}: building the layer failed: {e}"));
    Case {
        layer,
        input,
        shape,
    }
}

/// What the split-K runs covered (asserted so the tests keep their reach).
#[derive(Default, Debug)]
struct SplitCoverage {
    /// Runs with two passes.
    runs: usize,
    /// ... of them chosen by the per-shape heuristic (SplitK { splits: None }).
    auto: usize,
    /// ... with K slices not a multiple of the splits.
    uneven: usize,
    /// ... with more splits than K slices (empty splits).
    empty: usize,
    /// ... with one output pixel.
    m1: usize,
    /// ... with accumulators past 2^24.
    over_2_24: usize,
}

/// Runs `c` with every applicable variant (and the default choice); returns the
/// number of runs and records mismatches and split-K coverage (`over`: the
/// layer's accumulators reach 2^24).
#[allow(clippy::too_many_arguments)]
fn check_all_variants(
    ctx: &qfuse::GpuContext,
    label: &str,
    c: &Case,
    want: &[u8],
    over: bool,
    cov: &mut SplitCoverage,
    failures: &mut Vec<String>,
    extra: &[ConvVariant],
) -> usize {
    let x = GpuTensor::upload(ctx, &c.input, &c.shape, c.layer.input()).unwrap();
    let mut runs = 0;
    let mut variants = ConvVariant::candidates_on(ctx, &c.layer);
    variants.extend(extra.iter().filter(|v| v.applies(&c.layer)));
    assert!(
        variants.contains(&ConvVariant::choose_on(ctx, &c.layer)),
        "{label}: the default variant is not a candidate"
    );
    for v in variants {
        let g = GpuLayer::with_variant(ctx, &c.layer, v)
            .unwrap_or_else(|e| panic!("{label} {v:?}: {e}"));
        if let Some(s) = g.splits(&c.shape).unwrap() {
            let geo = c.layer.geometry();
            let kq = geo.kernel[0] * geo.kernel[1] * geo.cin_per_group().div_ceil(4);
            // K words per slice (tiled) or stage (coop).
            let kt = g
                .tile_config(&c.shape)
                .unwrap()
                .map_or(qfuse::gpu::COOP_KC / 4, |t| t.kt) as usize;
            let slices = kq.div_ceil(kt);
            let out = c.layer.output_shape(&c.shape).unwrap();
            let m = out[0] * out.get(2).unwrap_or(&1) * out.get(3).unwrap_or(&1);
            let s = s as usize;
            cov.runs += 1;
            cov.auto += matches!(v, ConvVariant::SplitK { splits: None, .. }) as usize;
            cov.uneven += !slices.is_multiple_of(s) as usize;
            cov.empty += (s > slices) as usize;
            cov.m1 += (m == 1) as usize;
            cov.over_2_24 += over as usize;
        }
        let got = g
            .run(ctx, &x)
            .unwrap_or_else(|e| panic!("{label} {v:?}: {e}"))
            .download(ctx)
            .unwrap();
        runs += 1;
        if let Some(m) = first_mismatch(&got, want) {
            failures.push(format!(
                "{label} variant {v:?}: {:?} {:?} input {:?} in {:?} out {:?} {:?} {:?}: {m}",
                c.layer.kind(),
                c.layer.geometry(),
                c.shape,
                c.layer.input(),
                c.layer.output(),
                c.layer.activation(),
                c.layer.requant()
            ));
        }
    }
    runs
}

/// Variants the edge shapes run besides the candidates: the tensor-core
/// kernel's emulation and the two tiles that combine the 8-row register
/// block and prefetch differently from the candidates.
const EDGE_EXTRA: [ConvVariant; 3] = [
    ConvVariant::Coop {
        emulated: true,
        splits: None,
    },
    ConvVariant::Tiled(Some(qfuse::gpu::TileConfig::BIG_PF)),
    ConvVariant::Tiled(Some(qfuse::gpu::TileConfig::WIDE_PF)),
];

/// Shapes at the tiled kernel's edges: M, O/4 and K words not multiples of any
/// tile, M = 1, O = 1, K > 4096, exactly one tile, accumulators past 2^24; and
/// depthwise layers with channel multipliers.
#[test]
fn every_variant_on_tile_edge_shapes() {
    let ctx = gpu();
    let lin = |n: usize, k: usize, o: usize| {
        (LayerKind::Linear, Conv2dGeometry::linear(k, o), vec![n, k])
    };
    let conv = |n: usize, c: usize, h: usize, w: usize, o: usize, k: usize, s: usize, p: usize| {
        (
            LayerKind::Conv2d,
            Conv2dGeometry::new(c, o, [k, k])
                .stride([s, s])
                .padding([p, p]),
            vec![n, c, h, w],
        )
    };
    let mut shapes = vec![
        lin(1, 1, 1),
        lin(1, 4100, 1),
        lin(1, 37, 200),
        lin(3, 5000, 7),
        lin(7, 33, 65),
        lin(8, 64, 64),
        lin(33, 130, 69),
        lin(64, 64, 64),
        lin(65, 257, 131),
        lin(129, 20, 3),
        conv(1, 3, 1, 1, 5, 1, 1, 0),    // M = 1
        conv(1, 520, 3, 3, 9, 3, 1, 1),  // K = 9 * 130 words
        conv(2, 13, 9, 7, 67, 3, 2, 1),  // odd everything
        conv(1, 64, 8, 8, 64, 3, 1, 1),  // exactly one 64x64 tile
        conv(1, 16, 11, 12, 1, 3, 1, 0), // O = 1
        conv(2, 5, 17, 9, 130, 2, 1, 1),
        conv(1, 256, 4, 5, 33, 1, 1, 0),
    ];
    // Depthwise, multiplier 1..3, rectangular, strided, dilated.
    for (c, mult, k, s, d) in [
        (1, 1, 3, 1, 1),
        (3, 2, 3, 2, 1),
        (8, 1, 5, 1, 2),
        (13, 3, 3, 1, 1),
        (32, 1, 3, 2, 1),
        (6, 2, 1, 1, 1),
    ] {
        let g = Conv2dGeometry::new(c, c * mult, [k, k.max(2) - 1])
            .stride([s, 1])
            .padding([k / 2, 0])
            .dilation([d, 1])
            .groups(c);
        shapes.push((LayerKind::Conv2d, g, vec![2, c, 9 + k * d, 7 + k]));
    }
    // Latency-bound shapes split-K is for (the heuristic splits them): the
    // H200 linear 1280 -> 1000 at batch 1 (K = 320 words, 5 splits) and a
    // 3x3 conv at 7x7 with K = 576 words (9 splits).
    shapes.push(lin(1, 1280, 1000));
    shapes.push(conv(1, 256, 7, 7, 64, 3, 1, 1));
    let mut rng = Rng(0xed9e);
    let mut cov = SplitCoverage::default();
    let (mut runs, mut failures, mut over) = (0, Vec::new(), 0);
    for (i, (kind, geom, shape)) in shapes.into_iter().enumerate() {
        for saturate in [false, true] {
            let c = finish_case(&mut rng, i as u64, saturate, kind, geom, shape.clone());
            let (want, _) = qfuse::cpu::run_layer(&c.layer, &c.input, &c.shape).unwrap();
            let (acc, _) = qfuse::cpu::conv2d_accumulators(&c.layer, &c.input, &c.shape).unwrap();
            let big = acc.iter().any(|a| a.abs() >= 1 << 24);
            over += big as usize;
            runs += check_all_variants(
                &ctx,
                &format!("edge shape {i} saturate {saturate}"),
                &c,
                &want,
                big,
                &mut cov,
                &mut failures,
                &EDGE_EXTRA,
            );
        }
    }
    println!("{runs} GPU runs; {over} layers with accumulators >= 2^24; split-K {cov:?}");
    for f in failures.iter().take(10) {
        println!("MISMATCH {f}");
    }
    assert!(
        failures.is_empty(),
        "{} GPU runs differ from the CPU reference; first: {}",
        failures.len(),
        failures[0]
    );
    assert!(over >= 2, "no edge layer crossed 2^24");
    assert!(
        cov.auto >= 6 && cov.uneven > 0 && cov.empty > 0 && cov.m1 > 0 && cov.over_2_24 > 0,
        "split-K lost coverage: {cov:?}"
    );
}

#[test]
fn gpu_equals_cpu_on_random_layers() {
    let ctx = gpu();
    let count: u64 = std::env::var("QFUSE_RANDOM_LAYERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let base: u64 = std::env::var("QFUSE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let (mut runs, mut failures, mut over_2_24) = (0, Vec::new(), 0);
    let mut nonconstant = 0;
    let mut cov = SplitCoverage::default();
    for i in 0..count {
        let seed = base + i;
        let c = random_case(seed);
        let (want, _) = qfuse::cpu::run_layer(&c.layer, &c.input, &c.shape).unwrap();
        let (acc, _) = qfuse::cpu::conv2d_accumulators(&c.layer, &c.input, &c.shape).unwrap();
        let big = acc.iter().any(|a| a.abs() >= 1 << 24);
        over_2_24 += big as usize;
        if want.iter().any(|&v| v != want[0]) {
            nonconstant += 1;
        }
        runs += check_all_variants(
            &ctx,
            &format!("seed {seed}"),
            &c,
            &want,
            big,
            &mut cov,
            &mut failures,
            &[],
        );
    }
    println!("{runs} GPU runs of {count} random layers (seeds {base}..{}); {over_2_24} layers with accumulators >= 2^24; {nonconstant} with non-constant outputs; split-K {cov:?}", base + count);
    for f in failures.iter().take(10) {
        println!("MISMATCH {f}");
    }
    println!(
        "{} passed, {} failed",
        runs - failures.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} GPU runs differ from the CPU reference; first: {}",
        failures.len(),
        failures[0]
    );
    assert!(
        over_2_24 >= 1,
        "no layer crossed 2^24: the test lost its coverage"
    );
    assert!(
        cov.auto > 0 && cov.over_2_24 > 0,
        "split-K lost coverage: {cov:?}"
    );
    assert!(
        nonconstant as u64 > count * 3 / 4,
        "too many constant outputs ({nonconstant} of {count} vary): the scales are off"
    );
}

/// The split-K heuristic (no GPU needed): only GPUs get the split-K variant,
/// and it splits only few-tile, long-K shapes.
#[test]
fn split_k_heuristic() {
    use qfuse::gpu::{splitk_for_shape, TileConfig};
    use wgpu::DeviceType;
    let mut rng = Rng(3);
    let c = finish_case(
        &mut rng,
        0,
        false,
        LayerKind::Conv2d,
        Conv2dGeometry::new(8, 8, [3, 3]).padding([1, 1]),
        vec![1, 8, 5, 5],
    );
    let lim = wgpu::Limits::default();
    let auto = ConvVariant::SplitK {
        splits: None,
        tiles: None,
    };
    for d in [
        DeviceType::DiscreteGpu,
        DeviceType::IntegratedGpu,
        DeviceType::VirtualGpu,
    ] {
        assert_eq!(ConvVariant::choose(&c.layer, &lim, d), auto, "{d:?}");
    }
    for d in [DeviceType::Cpu, DeviceType::Other] {
        assert_eq!(
            ConvVariant::choose(&c.layer, &lim, d),
            ConvVariant::Tiled(None),
            "{d:?}"
        );
    }
    // ResNet-18 layer4 3x3 512 -> 512 at 7x7: WIDE tiles, K = 1152 words.
    let wide = TileConfig::WIDE;
    assert_eq!(TileConfig::for_shape(49, 128, 1152), wide);
    assert_eq!(splitk_for_shape(4, 1152, wide.kt), 18); // batch 1: 72 workgroups
    assert_eq!(splitk_for_shape(52, 1152, wide.kt), 5); // batch 16: 260
                                                        // Linear 1280 -> 1000 at batch 1: SKINNY tiles, K = 320 words.
    assert_eq!(TileConfig::for_shape(1, 250, 320), TileConfig::SKINNY);
    assert_eq!(splitk_for_shape(4, 320, 8), 5);
    // Linear 512 -> 1000 at batch 1: K = 128 words, 16-word splits.
    assert_eq!(splitk_for_shape(4, 128, 8), 8);
    // No split: many tiles, or K too short for two splits.
    assert_eq!(splitk_for_shape(256, 4608, 16), 1);
    assert_eq!(splitk_for_shape(1, 63, 16), 1);
    assert_eq!(splitk_for_shape(1, 20, 8), 1);
    // Every split keeps >= 64 K words (16 when K < 256 words), tiles * splits
    // stays < 512, and no split is empty.
    for tiles in 1..300 {
        for kq in (1..5000).step_by(37) {
            for kt in [8, 16] {
                let s = splitk_for_shape(tiles, kq, kt) as usize;
                if s > 1 {
                    let per = kq.div_ceil(kt as usize).div_ceil(s) * kt as usize;
                    let min = if kq >= 256 { 64 } else { 16 };
                    assert!(per >= min, "tiles {tiles} kq {kq}: {s} splits of {per}");
                    assert!(tiles * s < 512, "tiles {tiles} kq {kq}: {s} splits");
                    assert!((s - 1) * per < kq, "tiles {tiles} kq {kq}: empty split");
                }
            }
        }
    }
}

/// oneDNN's epilogue (`Requant::Onednn`: scales applied one at a time, the
/// float bias, the output zero point added in f32 before rounding): the
/// random layers above rebuilt with that rule, a quarter of them with a qint8
/// output (whose rule adds the true zero point, not the image's), GPU == CPU
/// on every variant.
#[test]
fn gpu_equals_cpu_on_random_onednn_layers() {
    let ctx = gpu();
    let count: u64 = std::env::var("QFUSE_RANDOM_LAYERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(120, |n: u64| n.min(120));
    let base: u64 = 0x0d11;
    let (mut runs, mut failures, mut signed, mut over_2_24) = (0, Vec::new(), 0, 0);
    let mut cov = SplitCoverage::default();
    let mut nonconstant = 0;
    for i in 0..count {
        let seed = base + i;
        let c = random_case(seed);
        let l = &c.layer;
        let mut output = l.output();
        if seed % 4 == 1 {
            output = QParams::new_i8(output.scale, output.zero_point - 128).unwrap();
            signed += 1;
        }
        let layer = QLayer::new(
            l.kind(),
            *l.geometry(),
            l.weight().to_vec(),
            l.weight_scale().to_vec(),
            l.bias().to_vec(),
            l.input(),
            output,
            l.activation(),
            Requant::Onednn,
        )
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let c = Case {
            layer,
            input: c.input,
            shape: c.shape,
        };
        let (want, _) = qfuse::cpu::run_layer(&c.layer, &c.input, &c.shape).unwrap();
        let (acc, _) = qfuse::cpu::conv2d_accumulators(&c.layer, &c.input, &c.shape).unwrap();
        let big = acc.iter().any(|a| a.abs() >= 1 << 24);
        over_2_24 += big as usize;
        nonconstant += want.iter().any(|&v| v != want[0]) as usize;
        runs += check_all_variants(
            &ctx,
            &format!("onednn seed {seed}"),
            &c,
            &want,
            big,
            &mut cov,
            &mut failures,
            &[],
        );
    }
    println!("{runs} GPU runs of {count} random oneDNN layers (seeds {base}..{}, {signed} with qint8 outputs, {over_2_24} with accumulators >= 2^24, {nonconstant} with non-constant outputs); split-K {cov:?}", base + count);
    for f in failures.iter().take(10) {
        println!("MISMATCH {f}");
    }
    assert!(
        failures.is_empty(),
        "{} GPU runs differ from the CPU reference; first: {}",
        failures.len(),
        failures[0]
    );
    assert!(
        nonconstant as u64 > count * 2 / 3 && signed > 0 && cov.runs > 0 && over_2_24 > 0,
        "lost coverage: {nonconstant} non-constant, {signed} signed, split-K {cov:?}"
    );
}
