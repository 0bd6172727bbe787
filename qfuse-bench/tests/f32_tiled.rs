//! The f32 baselines against a CPU f32 conv (f64 accumulation) on seeded
//! random non-zero data: the tiled kernel (`conv2d_f32_tiled.wgsl`) and the
//! simple untiled one (`conv2d_f32.wgsl`), each unfused (conv, BatchNorm,
//! ReLU dispatches) and fused (BN folded, ReLU in the epilogue), on shapes
//! that cover stride 2, 1x1, padding, each tile preset the int8 kernel's
//! choice picks (LARGE, WIDE, SKINNY), channel counts that are not multiples
//! of the tile (C = 3, 5, 20, 36; O = 40, 72, 136), a linear layer and a
//! depthwise conv (which the tiled modes run with the simple kernel).
//!
//! These are float baselines, not bit-exact paths: the GPU's summation
//! order differs from the CPU's, so outputs are compared with a tolerance
//! scaled by the sum of |terms| of each output.

use qfuse::{Conv2dGeometry, GpuContext};
use qfuse_bench::{F32Layer, F32Mode, Lcg};
use wgpu::util::DeviceExt;

struct Case {
    name: &'static str,
    g: Conv2dGeometry,
    /// Logical NCHW input shape (or `[N, K]` for a linear layer).
    shape: Vec<usize>,
    relu: bool,
    bn: bool,
}

fn cases() -> Vec<Case> {
    let conv = |c, o, k: usize, s: usize, p: usize| {
        Conv2dGeometry::new(c, o, [k, k])
            .stride([s, s])
            .padding([p, p])
    };
    vec![
        Case {
            name: "3x3 20->40 s1 p1 @9x7, batch 2 (C, O not multiples of the tile)",
            g: conv(20, 40, 3, 1, 1),
            shape: vec![2, 20, 9, 7],
            relu: true,
            bn: true,
        },
        Case {
            name: "3x3 3->16 s2 p1 @15x15 (stem-like, C = 3)",
            g: conv(3, 16, 3, 2, 1),
            shape: vec![1, 3, 15, 15],
            relu: true,
            bn: true,
        },
        Case {
            name: "7x7 3->64 s2 p3 @20x20 (the ResNet stem, LARGE tile)",
            g: conv(3, 64, 7, 2, 3),
            shape: vec![1, 3, 20, 20],
            relu: true,
            bn: true,
        },
        Case {
            name: "1x1 64->72 s1 @5x5, batch 3",
            g: conv(64, 72, 1, 1, 0),
            shape: vec![3, 64, 5, 5],
            relu: false,
            bn: true,
        },
        Case {
            name: "1x1 5->48 s2 @9x9 (downsample-like, C = 5)",
            g: conv(5, 48, 1, 2, 0),
            shape: vec![2, 5, 9, 9],
            relu: false,
            bn: true,
        },
        Case {
            name: "3x3 36->136 s1 p1 @6x6, batch 2 (WIDE tile, O4 = 34)",
            g: conv(36, 136, 3, 1, 1),
            shape: vec![2, 36, 6, 6],
            relu: true,
            bn: true,
        },
        Case {
            name: "3x3 24->32 s2 p0 @8x8 (no padding)",
            g: conv(24, 32, 3, 2, 0),
            shape: vec![1, 24, 8, 8],
            relu: true,
            bn: false,
        },
        Case {
            name: "linear 100->1000, batch 5 (SKINNY tile)",
            g: Conv2dGeometry::linear(100, 1000),
            shape: vec![5, 100],
            relu: false,
            bn: false,
        },
        Case {
            name: "depthwise 3x3 24 s2 p1 @7x7 (tiled modes: the simple kernel)",
            g: conv(24, 24, 3, 2, 1).groups(24),
            shape: vec![2, 24, 7, 7],
            relu: true,
            bn: true,
        },
    ]
}

/// A non-zero value in [-1, -0.05] U [0.05, 1].
fn nonzero(rng: &mut Lcg) -> f32 {
    let v = 0.05 + 0.95 * rng.uniform();
    if rng.next_u32() & 1 == 0 {
        v
    } else {
        -v
    }
}

/// CPU conv on NHWC `x` with weights `[O, C/g, kh, kw]`: per output
/// (value, sum of |terms|), NHWC.
fn cpu_conv(
    g: &Conv2dGeometry,
    shape: &[usize],
    x: &[f32],
    w: &[f32],
    b: &[f32],
) -> Vec<(f64, f64)> {
    let (n, c, h, wd) = if shape.len() == 2 {
        (shape[0], shape[1], 1, 1)
    } else {
        (shape[0], shape[1], shape[2], shape[3])
    };
    let (oh, ow) = g.output_hw(h, wd).unwrap();
    let (o, cg, og) = (g.out_channels, g.cin_per_group(), g.cout_per_group());
    let [kh, kw] = g.kernel;
    let mut out = vec![(0.0, 0.0); n * oh * ow * o];
    for bi in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for oc in 0..o {
                    let (mut acc, mut mag) = (b[oc] as f64, (b[oc] as f64).abs());
                    let g0 = (oc / og) * cg;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * g.stride[0] + ky) as isize - g.padding[0] as isize;
                            let ix = (ox * g.stride[1] + kx) as isize - g.padding[1] as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                continue;
                            }
                            for ci in 0..cg {
                                let xv =
                                    x[((bi * h + iy as usize) * wd + ix as usize) * c + g0 + ci];
                                let wv = w[((oc * cg + ci) * kh + ky) * kw + kx];
                                let t = xv as f64 * wv as f64;
                                acc += t;
                                mag += t.abs();
                            }
                        }
                    }
                    out[((bi * oh + oy) * ow + ox) * o + oc] = (acc, mag);
                }
            }
        }
    }
    out
}

#[test]
fn f32_baselines_match_a_cpu_conv() {
    let ctx = match GpuContext::new() {
        Ok(ctx) => ctx,
        Err(e) => panic!("this test needs a GPU adapter and found none: {e}"),
    };
    eprintln!("GPU adapter: {}", ctx.report());
    let seed = 0xf32_7113d_u64;
    eprintln!("seed {seed:#x}");
    let mut rng = Lcg(seed);
    let mut checked = 0usize;
    for case in cases() {
        let g = &case.g;
        let o = g.out_channels;
        let x: Vec<f32> = (0..case.shape.iter().product::<usize>())
            .map(|_| nonzero(&mut rng))
            .collect();
        let w: Vec<f32> = (0..g.weight_len()).map(|_| nonzero(&mut rng)).collect();
        let b: Vec<f32> = (0..o).map(|_| nonzero(&mut rng)).collect();
        let scale: Vec<f32> = (0..o).map(|_| 0.5 + rng.uniform()).collect();
        let shift: Vec<f32> = (0..o).map(|_| nonzero(&mut rng)).collect();
        // BN folded: w' = w * scale, b' = b * scale + shift (what the fused
        // kernels compute with), on the CPU in f32 as the host folds it.
        let (wf, bf): (Vec<f32>, Vec<f32>) = if case.bn {
            let per = g.weight_len() / o;
            (
                w.iter()
                    .enumerate()
                    .map(|(i, &v)| v * scale[i / per])
                    .collect(),
                (0..o).map(|c| b[c] * scale[c] + shift[c]).collect(),
            )
        } else {
            (w.clone(), b.clone())
        };
        let layer = F32Layer::new(
            &ctx,
            *g,
            case.relu,
            (&w, &b),
            case.bn.then_some((&scale[..], &shift[..])),
            (&wf, &bf),
        );
        // References: unfused = relu(conv(x, w) + b, then * scale + shift),
        // fused = relu(conv(x, w') + b').
        let relu = |v: f64| if case.relu { v.max(0.0) } else { v };
        let raw = cpu_conv(g, &case.shape, &x, &w, &b);
        let unfused: Vec<(f64, f64)> = raw
            .iter()
            .enumerate()
            .map(|(i, &(v, m))| {
                let c = i % o;
                if case.bn {
                    let s = scale[c] as f64;
                    (
                        relu(v * s + shift[c] as f64),
                        m * s + (shift[c] as f64).abs(),
                    )
                } else {
                    (relu(v), m)
                }
            })
            .collect();
        let fused: Vec<(f64, f64)> = cpu_conv(g, &case.shape, &x, &wf, &bf)
            .into_iter()
            .map(|(v, m)| (relu(v), m))
            .collect();
        let input = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("test f32 input"),
                contents: bytemuck::cast_slice(&x),
                usage: wgpu::BufferUsages::STORAGE,
            });
        let out_bytes = 4 * fused.len() as u64;
        for mode in [
            F32Mode::TiledFused,
            F32Mode::TiledUnfused,
            F32Mode::Fused,
            F32Mode::Unfused,
        ] {
            // Garbage (non-zero) in the output first: every value must be written.
            let garbage: Vec<f32> = (0..fused.len()).map(|_| 1e6 + rng.uniform()).collect();
            let output = ctx
                .device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("test f32 output"),
                    contents: bytemuck::cast_slice(&garbage),
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                });
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            layer
                .encode(&ctx, &mut enc, mode, &input, &case.shape, &output)
                .unwrap_or_else(|e| panic!("{}: {mode:?}: {e}", case.name));
            ctx.submit_and_wait(enc).unwrap();
            let got: Vec<f32> =
                bytemuck::cast_slice(&ctx.read_buffer(&output, out_bytes).unwrap()).to_vec();
            let want = if mode.fused() { &fused } else { &unfused };
            for (i, (&gv, &(wv, mag))) in got.iter().zip(want.iter()).enumerate() {
                let tol = 1e-5 * mag + 1e-6;
                let err = (gv as f64 - wv).abs();
                if err.is_nan() || err > tol {
                    panic!(
                        "seed {seed:#x}, {}: {mode:?} ({}): first mismatch at output {i} (NHWC; channel {}): got {gv}, want {wv} (tolerance {tol:.3e})",
                        case.name,
                        layer.kernel_name(mode),
                        i % o
                    );
                }
            }
            checked += got.len();
            eprintln!("ok: {} {mode:?} ({})", case.name, layer.kernel_name(mode));
        }
        // The tiled modes run the tiled kernel exactly on ungrouped layers.
        assert_eq!(
            layer.runs_tiled(F32Mode::TiledFused),
            g.groups == 1,
            "{}",
            case.name
        );
        assert!(!layer.runs_tiled(F32Mode::Fused));
    }
    eprintln!("{checked} outputs checked");
    assert!(checked > 10_000);
}
