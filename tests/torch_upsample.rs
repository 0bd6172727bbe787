//! PyTorch's quantized bilinear upsampling (`resize` mode `torch_bilinear`):
//! the float prelude's exact `ffma` (and so `fmul_exact`, `fadd_exact`) on
//! the GPU equals Rust's `f32::mul_add` on seeded random and edge operands;
//! PyTorch's vectors (`tests/data/upsample`, `tools/gen_torch_upsample.py`)
//! are reproduced bit-exactly by the CPU reference and the GPU, with the
//! scales the Rust helper computes; GPU == CPU on seeded random cases; the
//! file form round-trips; bad parameters are errors.

mod common;

use common::file_edit::{load_err, node_mut, rewrite};
use common::{first_mismatch, gpu, Rng, TensorFile};
use qfuse::gpu::{CustomKernel, Kernel};
use qfuse::model::{DType, Model, Node, Op, TensorInfo, Value};
use qfuse::ops::resize::{
    torch_float_taps, torch_scale, torch_taps, Coord, Resize, ResizeMode, ResizeRule,
};
use qfuse::{Error, GpuContext, GpuModel, QParams, Requant};
use wgpu::util::DeviceExt;

// ---------------------------------------------------------------------------
// ffma

/// The float prelude compiled with a test entry point: out = ffma(a, b, c).
fn ffma_kernel() -> String {
    format!(
        r#"{}
struct P {{ n: u32, p0: u32, p1: u32, p2: u32 }}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> abc: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {{
    let i = gid.x + gid.y * nw.x * 64u;
    if i >= p.n {{ return; }}
    out[i] = ffma(abc[3u * i], abc[3u * i + 1u], abc[3u * i + 2u]);
}}
"#,
        Kernel::file_source(Kernel::FLOAT_PRELUDE).expect("float prelude")
    )
}

fn gpu_ffma(ctx: &GpuContext, triples: &[[u32; 3]]) -> Vec<u32> {
    let flat: Vec<u32> = triples.iter().flatten().copied().collect();
    let abc = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("ffma operands"),
            contents: bytemuck::cast_slice(&flat),
            usage: wgpu::BufferUsages::STORAGE,
        });
    let out = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("ffma out"),
            contents: bytemuck::cast_slice(&vec![0xdeadbeefu32; triples.len()]),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        });
    let n = triples.len() as u32;
    let src = ffma_kernel();
    let d = ctx
        .dispatch_custom(
            CustomKernel {
                name: "test_ffma.wgsl",
                source: &src,
            },
            &[],
            bytemuck::cast_slice(&[n, 0, 0, 0]),
            &[(1, &abc), (2, &out)],
            n,
            64,
        )
        .expect("ffma dispatch");
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        d.record(&mut pass);
    }
    ctx.submit_and_wait(enc).unwrap();
    let bytes = ctx.read_buffer(&out, 4 * triples.len() as u64).unwrap();
    bytemuck::cast_slice(&bytes).to_vec()
}

/// Rust's `mul_add` as bits; every NaN as the one quiet NaN `ffma` returns.
fn rust_fma(a: u32, b: u32, c: u32) -> u32 {
    let r = f32::from_bits(a).mul_add(f32::from_bits(b), f32::from_bits(c));
    if r.is_nan() {
        0x7fc00000
    } else {
        r.to_bits()
    }
}

#[test]
fn ffma_on_the_gpu_is_rusts_mul_add() {
    let ctx = gpu();
    let seed = 0xf3a_u64;
    let mut rng = Rng(seed);
    let special: Vec<u32> = [
        0.0f32,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -0.5,
        3.0,
        0.1,
        255.0,
        -255.0,
        f32::MAX,
        -f32::MAX,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        f32::EPSILON,
        1.0 + f32::EPSILON,
        1.0 - f32::EPSILON / 2.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        16777215.0,
        16777216.0,
    ]
    .iter()
    .map(|x| x.to_bits())
    .chain([
        1u32, 0x80000001, 0x007fffff, 0x00400000, 0x00800001, 0x7f7ffffe,
    ])
    .collect();
    let mut t: Vec<[u32; 3]> = Vec::new();
    for &a in &special {
        for &b in &special {
            for &c in &special {
                t.push([a, b, c]);
            }
        }
    }
    let f = |x: f32| x.to_bits();
    for _ in 0..150_000 {
        let r = rng.next_u64();
        let (a, b) = (r as u32, (r >> 32) as u32);
        let c = rng.next_u64() as u32;
        // random bit patterns (every exponent, huge gaps)
        t.push([a, b, c]);
        // values near 1: c close to -a*b (cancellation), same size (carries)
        let am = 0x3f800000 | (a & 0x807fffff);
        let bm = 0x3f800000 | (b & 0x007fffff);
        let p = f32::from_bits(am) * f32::from_bits(bm);
        let nudge = (c % 7) as i32 - 3;
        t.push([am, bm, (-p).to_bits().wrapping_add(nudge as u32)]);
        t.push([am, bm, f(p)]);
        // exponent gaps of 0..60 between the product and c, either way
        let g = (c >> 8) % 61;
        let cc = (0x3f800000u32 ^ (c & 0x807fffff)).wrapping_sub(g << 23);
        t.push([am, bm, cc]);
        t.push([
            am,
            bm.wrapping_sub(g << 23) & 0x7fffffff,
            0x3f800000 ^ (c & 0x807fffff),
        ]);
        // ties: short significands, so a * b + c sits on a halfway point
        let sa = f((a % 4096) as f32 + 1.0);
        let sb = f32::from_bits(((b % 4096) as f32 + 1.0).to_bits() + ((c % 20) << 23));
        let sc = f32::from_bits(0x3f800000 | (c & 0x80000000)) * 2f32.powi((c % 40) as i32);
        t.push([sa, f(sb), f(sc)]);
        // subnormal operands and results, overflow
        t.push([a & 0x80ffffff, b & 0x3fffffff, c & 0x80ffffff]);
        t.push([a | 0x7e000000, b | 0x40000000, c]);
        // the operands of PyTorch's bilinear: weights in [0, 1], bytes
        let w = rng.f32();
        let px = rng.range(0, 255) as f32;
        let q = (1.0 - w) * rng.range(0, 255) as f32;
        t.push([f(w), f(px), f(q)]);
    }
    let got = gpu_ffma(&ctx, &t);
    let mut subnormal = 0;
    for (i, (&[a, b, c], &g)) in t.iter().zip(&got).enumerate() {
        let want = rust_fma(a, b, c);
        if f32::from_bits(want).is_subnormal() {
            subnormal += 1;
        }
        assert_eq!(
            g,
            want,
            "seed {seed:#x}: triple {i}: fma({:e}, {:e}, {:e}) ({a:#010x}, {b:#010x}, {c:#010x}): GPU {:e} ({g:#010x}), Rust {:e} ({want:#010x})",
            f32::from_bits(a),
            f32::from_bits(b),
            f32::from_bits(c),
            f32::from_bits(g),
            f32::from_bits(want),
        );
    }
    assert!(subnormal > 1000, "{subnormal} subnormal results");
    println!(
        "{} fused multiply-adds exact ({subnormal} subnormal results)",
        t.len()
    );
}

// ---------------------------------------------------------------------------
// the op

fn torch_resize(size: [usize; 2], scales: [f32; 2], ac: bool, q: QParams, cl: bool) -> Resize {
    Resize {
        size,
        scales,
        coord: if ac {
            Coord::AlignCorners
        } else {
            Coord::HalfPixel
        },
        rule: ResizeRule::Round,
        out: q,
        mode: ResizeMode::TorchBilinear {
            channels_last: cl,
            lanes: 8,
        },
    }
}

fn model(engine: Requant, x: &[usize], q: QParams, r: Resize) -> qfuse::Result<Model> {
    Model::new(
        engine,
        vec![(
            "x".into(),
            TensorInfo {
                shape: x.to_vec(),
                dtype: DType::QUInt8(q),
            },
        )],
        vec!["r".into()],
        vec![Node {
            name: "r".into(),
            op: Op::Resize(r),
            inputs: vec!["x".into()],
        }],
    )
}

fn bytes_of(v: &Value) -> &[u8] {
    match v {
        Value::Q { data, .. } => data,
        _ => panic!("float output"),
    }
}

/// One committed PyTorch upsampling case: its metadata, input qparams
/// and ATen's scales (checked against [`torch_scale`]).
struct UpCase {
    name: String,
    f: TensorFile,
    m: serde_json::Value,
    shape: Vec<usize>,
    size: Vec<usize>,
    align: bool,
    q: QParams,
    scales: [f32; 2],
    engine: Requant,
}

fn read_up_case(path: &std::path::Path) -> UpCase {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let f = TensorFile::open(path);
    let m = f.meta("case");
    let us = |k: &str| -> Vec<usize> {
        m[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect()
    };
    let (shape, size) = (us("shape"), us("size"));
    let (h, w) = (shape[2], shape[3]);
    let align = m["align_corners"].as_bool().unwrap();
    let sf: Option<Vec<f64>> = m["scale_factor"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_f64().unwrap()).collect());
    let scale = m["scale"].as_f64().unwrap() as f32;
    let zp = m["zero_point"].as_i64().unwrap() as i32;
    let q = if m["dtype"] == "qint8" {
        QParams::new_i8(scale, zp).unwrap()
    } else {
        QParams::new(scale, zp).unwrap()
    };
    let scales = [
        torch_scale(h, size[0], align, sf.as_ref().map(|s| s[0])),
        torch_scale(w, size[1], align, sf.as_ref().map(|s| s[1])),
    ];
    let want_scales = f.f32("scales");
    assert_eq!(
        scales.map(f32::to_bits).to_vec(),
        want_scales.iter().map(|s| s.to_bits()).collect::<Vec<_>>(),
        "{name}: torch_scale vs ATen's"
    );
    let engine = match m["engine"].as_str().unwrap() {
        "qnnpack" => Requant::Qnnpack,
        _ => Requant::Fbgemm,
    };
    UpCase {
        name,
        f,
        m,
        shape,
        size,
        align,
        q,
        scales,
        engine,
    }
}

/// Runs `r` on the case's input on the CPU and the GPU and compares both
/// with PyTorch's output; returns the number of values compared.
fn check_up_case(ctx: &GpuContext, case: &UpCase, r: Resize) -> usize {
    let name = &case.name;
    let model =
        model(case.engine, &case.shape[1..], case.q, r).unwrap_or_else(|e| panic!("{name}: {e}"));
    let input = [Value::Q {
        data: case.f.u8("input"),
        shape: case.shape.clone(),
        q: case.q,
    }];
    let want = case.f.u8("output");
    let cpu = model.run_cpu(&input).unwrap();
    let gpu = GpuModel::new(ctx, &model)
        .unwrap()
        .run(ctx, &input)
        .unwrap();
    for (what, v) in [("CPU", &cpu[0]), ("GPU", &gpu[0])] {
        if let Some(mm) = first_mismatch(bytes_of(v), &want) {
            panic!("{name}: {what} vs PyTorch: {mm}");
        }
    }
    want.len()
}

#[test]
fn pytorch_vectors_cpu_and_gpu() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/upsample");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("bilinear_")
        })
        .collect();
    paths.sort();
    assert_eq!(paths.len(), 48, "cases in {}", dir.display());
    let ctx = gpu();
    let (mut cl, mut ac, mut body, mut tail, mut signed, mut values) = (0, 0, 0, 0, 0, 0);
    for path in &paths {
        let case = read_up_case(path);
        let (m, size, align, q, scales) = (&case.m, &case.size, case.align, case.q, case.scales);
        let c = case.shape[1];
        signed += q.signed as usize;
        let layout_cl = m["layout"] == "channels_last";
        let lanes = m["lanes"].as_u64().unwrap() as u32;
        let mut r = torch_resize([size[0], size[1]], scales, align, q, layout_cl);
        r.mode = ResizeMode::TorchBilinear {
            channels_last: layout_cl,
            lanes,
        };
        values += check_up_case(&ctx, &case, r);
        cl += layout_cl as usize;
        ac += align as usize;
        if layout_cl {
            body += (c >= 8) as usize;
            tail += !c.is_multiple_of(8) as usize;
        }
    }
    assert!(
        cl >= 16 && ac >= 16 && body >= 6 && tail >= 6 && signed >= 4,
        "{cl} {ac} {body} {tail} {signed}"
    );
    println!(
        "{} cases, {values} bytes bit-exact with PyTorch",
        paths.len()
    );
}

/// One random case: input `[C, H, W]`, qparams, the op.
fn random_case(rng: &mut Rng) -> ([usize; 3], QParams, Resize) {
    let signed = rng.range(0, 3) == 0;
    let s = 0.01 + rng.f32();
    let q = if signed {
        QParams::new_i8(s, rng.range(0, 255) as i32 - 128).unwrap()
    } else {
        QParams::new(s, rng.range(0, 255) as i32).unwrap()
    };
    let x = [rng.range(1, 21), rng.range(1, 9), rng.range(1, 9)];
    let ac = rng.range(0, 1) == 1;
    let mut size = [0; 2];
    let mut scales = [0f32; 2];
    for k in 0..2 {
        let d = x[k + 1];
        if rng.range(0, 1) == 0 {
            size[k] = rng.range(1, 3 * d + 2);
            scales[k] = torch_scale(d, size[k], ac, None);
        } else {
            let sf = rng.pick(&[0.6f64, 1.0, 1.3, 1.5, 1.7, 2.0, 2.5, 3.0, 3.3]);
            size[k] = ((d as f64 * sf).floor() as usize).max(1);
            scales[k] = torch_scale(d, size[k], ac, Some(sf));
        }
    }
    let cl = rng.range(0, 1) == 1;
    (x, q, torch_resize(size, scales, ac, q, cl))
}

#[test]
fn gpu_equals_cpu_on_random_cases() {
    let ctx = gpu();
    let seed = 0xb111_u64;
    let mut rng = Rng(seed);
    for case in 0..60 {
        let (x, q, r) = random_case(&mut rng);
        let m = model(Requant::Fbgemm, &x, q, r)
            .unwrap_or_else(|e| panic!("seed {seed:#x} case {case}: {r:?} on {x:?}: {e}"));
        let n = rng.range(1, 2);
        let data = rng.bytes(n * x.iter().product::<usize>());
        let v = vec![Value::Q {
            data,
            shape: [n, x[0], x[1], x[2]].to_vec(),
            q,
        }];
        let cpu = m.run_cpu(&v).unwrap();
        let g = GpuModel::new(&ctx, &m).unwrap().run(&ctx, &v).unwrap();
        let (c, g) = (bytes_of(&cpu[0]), bytes_of(&g[0]));
        assert!(
            c.iter().any(|&b| b != c[0]) || c.len() < 4,
            "seed {seed:#x} case {case}: flat output"
        );
        if let Some(mm) = first_mismatch(g, c) {
            panic!("seed {seed:#x} case {case}: {r:?} on {x:?}: GPU vs CPU: {mm}");
        }
    }
}

#[test]
fn taps_follow_atens_rule() {
    // 3 -> 5, half pixel, scale 0.6: v = 0.6 * (x + 0.5) - 0.5, 0 when negative
    let t = torch_taps(false, 0.6, 5, 3, true).unwrap();
    assert_eq!((t[0].i0, t[0].i1, t[0].l0, t[0].l1), (0, 1, 1.0, 0.0));
    assert_eq!((t[4].i0, t[4].i1), (2, 2));
    assert_eq!(t[2].l1, 0.6f32.mul_add(2.5, -0.5) - 1.0);
    // the fused source coordinate differs from the two-rounding one
    let s = torch_scale(7, 10, false, Some(1.0 / 0.7));
    let (f, p) = (
        torch_taps(false, s, 10, 7, true).unwrap(),
        torch_taps(false, s, 10, 7, false).unwrap(),
    );
    assert_ne!(f, p, "the fma and the plain coordinate agree everywhere");
    // align corners: scale * x
    let t = torch_taps(true, torch_scale(3, 5, true, Some(2.0)), 5, 3, true).unwrap();
    assert_eq!((t[1].i0, t[1].l1), (0, 0.5));
    assert_eq!((t[4].i0, t[4].i1, t[4].l1), (2, 2, 0.0));
    // a scale that reads past the input
    assert!(torch_taps(true, 2.0, 5, 3, false).is_none());
}

#[test]
fn file_round_trip_and_errors() {
    let q = QParams::new_i8(0.02, -5).unwrap();
    let r = torch_resize([7, 5], [3.0 / 6.0, 0.8], true, q, true);
    let m = model(Requant::Qnnpack, &[11, 4, 4], q, r).unwrap();
    let bytes = m.to_bytes().unwrap();
    let back = Model::from_bytes(&bytes).unwrap();
    assert_eq!(back.to_bytes().unwrap(), bytes);
    let Op::Resize(b) = &back.nodes()[0].op else {
        panic!("not a resize")
    };
    assert_eq!(*b, r);
    let mut rng = Rng(11);
    let v = vec![Value::Q {
        data: rng.bytes(2 * 11 * 16),
        shape: vec![2, 11, 4, 4],
        q,
    }];
    let (a, c) = (m.run_cpu(&v).unwrap(), back.run_cpu(&v).unwrap());
    assert_eq!(bytes_of(&a[0]), bytes_of(&c[0]));
    // errors, each naming the node
    let bad = |engine: Requant, r: Resize| {
        let e = model(engine, &[3, 4, 4], q, r).expect_err("accepted");
        assert!(
            e.to_string().contains("\"r\""),
            "the error names the node: {e}"
        );
        e
    };
    let e = bad(Requant::OnnxRuntime, r);
    assert!(matches!(e.root_cause(), Error::Config { .. }), "{e}");
    let mut o = r;
    o.out = QParams::new_i8(0.03, -5).unwrap();
    assert!(matches!(
        bad(Requant::Fbgemm, o).root_cause(),
        Error::QParams { .. }
    ));
    let mut o = r;
    o.rule = ResizeRule::Truncate;
    assert!(matches!(
        bad(Requant::Fbgemm, o).root_cause(),
        Error::Config { .. }
    ));
    let mut o = r;
    o.coord = Coord::Asymmetric;
    assert!(matches!(
        bad(Requant::Fbgemm, o).root_cause(),
        Error::Config { .. }
    ));
    let mut o = r;
    o.scales = [2.0, 0.8];
    assert!(matches!(
        bad(Requant::Fbgemm, o).root_cause(),
        Error::Config { .. }
    ));
    let mut o = r;
    o.scales = [f32::NAN, 0.8];
    assert!(matches!(
        bad(Requant::Fbgemm, o).root_cause(),
        Error::Config { .. }
    ));
    // rule round with an ORT mode
    let mut o = r;
    o.mode = ResizeMode::Linear;
    o.scales = [1.5, 1.25];
    assert!(matches!(
        bad(Requant::OnnxRuntime, o).root_cause(),
        Error::Config { .. }
    ));
    // bad file attributes
    let e = load_err(&rewrite(
        &bytes,
        |h| node_mut(h, "r")["layout"] = "nhwc".into(),
        |_| {},
    ));
    assert!(e.contains("layout") && e.contains("nhwc"), "{e}");
    let e = load_err(&rewrite(
        &bytes,
        |h| node_mut(h, "r")["lanes"] = 0.into(),
        |_| {},
    ));
    assert!(e.contains("lanes"), "{e}");
    let e = load_err(&rewrite(
        &bytes,
        |h| node_mut(h, "r")["rule"] = "truncate".into(),
        |_| {},
    ));
    assert!(e.contains("round"), "{e}");
}

// ---------------------------------------------------------------------------
// mode torch_bilinear_float (FX's dequantize -> float upsample -> quantize)

fn torch_float_resize(
    size: [usize; 2],
    scales: [f32; 2],
    ac: bool,
    out: QParams,
    cl: bool,
) -> Resize {
    Resize {
        size,
        scales,
        coord: if ac {
            Coord::AlignCorners
        } else {
            Coord::HalfPixel
        },
        rule: ResizeRule::Requantize,
        out,
        mode: ResizeMode::TorchBilinearFloat {
            channels_last: cl,
            lanes: 8,
        },
    }
}

#[test]
fn fx_float_vectors_cpu_and_gpu() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/upsample");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("float_")
        })
        .collect();
    paths.sort();
    assert_eq!(paths.len(), 36, "float cases in {}", dir.display());
    let ctx = gpu();
    let (mut clk, mut generic, mut ac, mut body, mut tail, mut signed, mut values) =
        (0, 0, 0, 0, 0, 0, 0);
    for path in &paths {
        let case = read_up_case(path);
        let (m, size, align, q, scales) = (&case.m, &case.size, case.align, case.q, case.scales);
        let c = case.shape[1];
        signed += q.signed as usize;
        let kernel_cl = m["kernel"] == "channels_last";
        let out = QParams::new(
            m["out_scale"].as_f64().unwrap() as f32,
            m["out_zero_point"].as_i64().unwrap() as i32,
        )
        .unwrap();
        let mut r = torch_float_resize([size[0], size[1]], scales, align, out, kernel_cl);
        r.mode = ResizeMode::TorchBilinearFloat {
            channels_last: kernel_cl,
            lanes: m["lanes"].as_u64().unwrap() as u32,
        };
        values += check_up_case(&ctx, &case, r);
        ac += align as usize;
        if kernel_cl {
            clk += 1;
            body += (c >= 8) as usize;
            tail += !c.is_multiple_of(8) as usize;
        } else {
            generic += 1;
        }
    }
    assert!(
        clk >= 12 && generic >= 3 && ac >= 12 && body >= 6 && tail >= 6 && signed >= 3,
        "{clk} {generic} {ac} {body} {tail} {signed}"
    );
    println!(
        "{} cases, {values} bytes bit-exact with PyTorch's dq -> upsample -> q",
        paths.len()
    );
}

#[test]
fn fx_float_gpu_equals_cpu_on_random_cases() {
    let ctx = gpu();
    let seed = 0xf10a7_u64;
    let mut rng = Rng(seed);
    let mut varied = 0;
    for case in 0..40 {
        let c = rng.pick(&[1usize, 3, 8, 13, 16, 20]);
        let (h, w) = (rng.range(1, 8), rng.range(1, 8));
        let size = [rng.range(1, 19), rng.range(1, 19)];
        let ac = rng.range(0, 1) == 1;
        let cl = rng.range(0, 1) == 1;
        let q = QParams::new(0.001 + rng.f32(), rng.range(0, 255) as i32).unwrap();
        let out = QParams::new(q.scale * (0.3 + rng.f32()), rng.range(0, 255) as i32).unwrap();
        let scales = [
            torch_scale(h, size[0], ac, None),
            torch_scale(w, size[1], ac, None),
        ];
        let r = torch_float_resize(size, scales, ac, out, cl);
        let model = model(Requant::Fbgemm, &[c, h, w], q, r).unwrap();
        let data: Vec<u8> = (0..2 * c * h * w)
            .map(|_| rng.range(0, 256) as u8)
            .collect();
        let input = [Value::Q {
            data,
            shape: vec![2, c, h, w],
            q,
        }];
        let cpu = model.run_cpu(&input).unwrap();
        let gpu = GpuModel::new(&ctx, &model)
            .unwrap()
            .run(&ctx, &input)
            .unwrap();
        let (a, b) = (bytes_of(&cpu[0]), bytes_of(&gpu[0]));
        varied += a.iter().any(|&v| v != a[0]) as usize;
        if let Some(mm) = first_mismatch(b, a) {
            panic!("seed {seed:#x} case {case} (c {c}, {h}x{w} -> {size:?}, cl {cl}): GPU vs CPU: {mm}");
        }
    }
    assert!(
        varied >= 30,
        "seed {seed:#x}: only {varied} of 40 outputs vary"
    );
}

#[test]
fn fx_float_taps_and_errors() {
    // an axis whose size is kept takes (x, x, 1, 0) whatever the scale
    let t = torch_float_taps(false, 0.7, 3, 3, true).unwrap();
    assert_eq!((t[2].i0, t[2].i1, t[2].l0, t[2].l1), (2, 2, 1.0, 0.0));
    // 2 -> 4 half-pixel: v = 0.5 * (x + 0.5) - 0.5 -> 0, 0.25, 0.75, 1.25 (clamped index)
    let t = torch_float_taps(false, 0.5, 4, 2, false).unwrap();
    assert_eq!((t[1].i0, t[1].i1, t[1].l1), (0, 1, 0.25));
    assert_eq!((t[3].i0, t[3].i1, t[3].l0, t[3].l1), (1, 1, 0.75, 0.25));
    // the file form round-trips (both kernels), and the loaded model computes the same bytes
    let qi = QParams::new_i8(0.02, -5).unwrap();
    for cl in [false, true] {
        let r = torch_float_resize([7, 5], [0.5, 0.8], true, QParams::new(0.05, 7).unwrap(), cl);
        let m = model(Requant::Qnnpack, &[11, 4, 4], qi, r).unwrap();
        let bytes = m.to_bytes().unwrap();
        let back = Model::from_bytes(&bytes).unwrap();
        assert_eq!(back.to_bytes().unwrap(), bytes);
        let Op::Resize(b) = &back.nodes()[0].op else {
            panic!("not a resize")
        };
        assert_eq!(*b, r);
        let mut rng = Rng(12);
        let v = vec![Value::Q {
            data: rng.bytes(2 * 11 * 16),
            shape: vec![2, 11, 4, 4],
            q: qi,
        }];
        let (a, c) = (m.run_cpu(&v).unwrap(), back.run_cpu(&v).unwrap());
        assert_eq!(bytes_of(&a[0]), bytes_of(&c[0]));
    }
    // the float mode needs rule requantize
    let q = QParams::new(0.1, 3).unwrap();
    let mut r = torch_float_resize([4, 4], [0.5, 0.5], false, q, true);
    r.rule = ResizeRule::Round;
    let e = model(Requant::Fbgemm, &[3, 2, 2], q, r).unwrap_err();
    assert!(e.to_string().contains("requantize"), "{e}");
    // and PyTorch's engine
    let r = torch_float_resize([4, 4], [0.5, 0.5], false, q, true);
    let e = model(Requant::OnnxRuntime, &[3, 2, 2], q, r).unwrap_err();
    assert!(e.to_string().contains("onnxruntime"), "{e}");
    // a scale that is not finite
    let r = torch_float_resize([4, 4], [f32::INFINITY, 0.5], false, q, true);
    let e = model(Requant::Fbgemm, &[3, 2, 2], q, r).unwrap_err();
    assert!(e.to_string().contains("scales"), "{e}");
}
