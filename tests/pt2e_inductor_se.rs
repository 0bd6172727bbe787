//! Inductor's float tails on f32 tensors (engine `inductor_x86`): the
//! squeeze-excitation product `quantize(gate(v2) * x)` (`inductor_gate_mul`,
//! gates hardsigmoid and sigmoid) and the classifier's
//! `quantize(hardswish(x))` (`inductor_hardswish`), checked byte for byte
//! against what torch.compile returned (`tests/data/pt2e/inductor_x86_se/`,
//! recorded by `tools/pt2e/gen_inductor_se.py` on an x86-64 CPU with AVX-512
//! VNNI; rules in tests/data/pt2e/README.md, "Eltwise post-ops and
//! squeeze-excitation"). On the CPU through a `Model` (and its file), on the
//! GPU (lavapipe in CI) by `inductor.wgsl` over f32 words in the GPU's f32
//! tensor layout. Wrong candidate rules must each miss a recorded byte.

mod common;

use common::{f32_info, node};

use std::path::{Path, PathBuf};

use common::{first_mismatch, TensorFile};
use qfuse::gpu::Kernel;
use qfuse::model::{DType, Node, TensorInfo, Value};
use qfuse::ops::inductor::{
    inductor_hardsigmoid, inductor_hardswish, inductor_mode, inductor_sigmoid, InductorGate,
    InductorParams,
};
use qfuse::ops::Op;
use qfuse::quant::{QParams, Requant};
use qfuse::{GpuContext, Model};
use wgpu::util::DeviceExt;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pt2e/inductor_x86_se")
}

struct Case {
    name: String,
    gate: Option<InductorGate>,
    out: QParams,
    /// Batched NCHW (or `[N, F]`) shape of x.
    shape: Vec<usize>,
    x: Vec<f32>,
    /// `[N * C]` (gate_mul only).
    v: Vec<f32>,
    y: Vec<u8>,
}

impl Case {
    fn n(&self) -> usize {
        self.shape[0]
    }
    fn c(&self) -> usize {
        self.shape[1]
    }
    /// Elements per channel of one sample.
    fn plane(&self) -> usize {
        self.shape[2..].iter().product()
    }
}

fn cases() -> Vec<Case> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("tests/data/pt2e/inductor_x86_se")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    paths.sort();
    let out: Vec<Case> = paths
        .iter()
        .map(|p| {
            let f = TensorFile::open(p);
            let m = f.meta("case");
            let gate = match m["op"].as_str().unwrap() {
                "gate_mul" => Some(InductorGate::parse(m["gate"].as_str().unwrap()).unwrap()),
                "hardswish" => None,
                o => panic!("{}: op {o}", p.display()),
            };
            let out = QParams::new(
                m["scale"].as_f64().unwrap() as f32,
                m["zero_point"].as_i64().unwrap() as i32,
            )
            .unwrap();
            let c = Case {
                name: m["name"].as_str().unwrap().to_string(),
                gate,
                out,
                shape: f.shape("x"),
                x: f.f32("x"),
                v: if gate.is_some() { f.f32("v2") } else { vec![] },
                y: f.u8("y"),
            };
            assert_eq!(f.shape("y"), c.shape, "{}", c.name);
            if gate.is_some() {
                assert_eq!(f.shape("v2"), vec![c.n(), c.c(), 1, 1], "{}", c.name);
            }
            c
        })
        .collect();
    // 4 hardsigmoid, 4 sigmoid, 4 hardswish cases (channel counts 16, 19, 40, 72)
    assert_eq!(out.len(), 12, "cases in {}", dir().display());
    out
}

fn model(c: &Case, v_flat: bool) -> Model {
    let x_info = TensorInfo {
        shape: c.shape[1..].to_vec(),
        dtype: DType::F32,
    };
    let (inputs, node_inputs, op) = match c.gate {
        Some(gate) => {
            let v_shape = if v_flat {
                vec![c.c()]
            } else {
                vec![c.c(), 1, 1]
            };
            (
                vec![
                    ("x".to_string(), x_info),
                    (
                        "v".to_string(),
                        TensorInfo {
                            shape: v_shape,
                            dtype: DType::F32,
                        },
                    ),
                ],
                vec!["x".to_string(), "v".to_string()],
                Op::InductorGateMul { gate, out: c.out },
            )
        }
        None => (
            vec![("x".to_string(), x_info)],
            vec!["x".to_string()],
            Op::InductorHardswish { out: c.out },
        ),
    };
    Model::new(
        Requant::InductorX86,
        inputs,
        vec!["y".into()],
        vec![Node {
            name: "y".into(),
            op,
            inputs: node_inputs,
        }],
    )
    .unwrap_or_else(|e| panic!("{}: {e}", c.name))
}

fn inputs(c: &Case, v_flat: bool) -> Vec<Value> {
    let mut v = vec![Value::F32 {
        data: c.x.clone(),
        shape: c.shape.clone(),
    }];
    if c.gate.is_some() {
        v.push(Value::F32 {
            data: c.v.clone(),
            shape: if v_flat {
                vec![c.n(), c.c()]
            } else {
                vec![c.n(), c.c(), 1, 1]
            },
        });
    }
    v
}

fn bytes(v: &Value) -> &[u8] {
    match v {
        Value::Q { data, .. } => data,
        Value::F32 { .. } => panic!("float output"),
    }
}

#[test]
fn cpu_is_bit_exact_with_inductor() {
    let mut n = 0;
    for c in cases() {
        for v_flat in [false, true] {
            let m = model(&c, v_flat);
            let got = m.run_cpu(&inputs(&c, v_flat)).unwrap();
            if let Some(msg) = first_mismatch(bytes(&got[0]), &c.y) {
                panic!("{} (v flat: {v_flat}): {msg}", c.name);
            }
            // and through the model file
            let m2 = Model::from_bytes(&m.to_bytes().unwrap()).unwrap();
            let got2 = m2.run_cpu(&inputs(&c, v_flat)).unwrap();
            assert_eq!(bytes(&got2[0]), &c.y[..], "{}: after the file", c.name);
        }
        println!("{}: {} bytes equal", c.name, c.y.len());
        n += c.y.len();
    }
    assert!(n > 5_000, "{n} bytes");
}

// ---------------------------------------------------------------------------
// Wrong candidate rules: each must miss at least one recorded byte.

fn q_inv(t: f32, s: f32, z: i32) -> u8 {
    qfuse::quant::quantize_with_inv(t, 1.0 / s, z)
}

fn q_div(t: f32, s: f32, z: i32) -> u8 {
    ((t / s).round_ties_even() + z as f32).clamp(0.0, 255.0) as u8
}

fn q_away(t: f32, s: f32, z: i32) -> u8 {
    ((t * (1.0 / s)).round() + z as f32).clamp(0.0, 255.0) as u8
}

fn relu6p3(v: f32) -> f32 {
    (v + 3.0).clamp(0.0, 6.0)
}

/// Candidate per-element rules of a case: (name, y(x, v)).
type Rule = (&'static str, Box<dyn Fn(f32, f32, QParams) -> u8>);

fn candidates(gate: Option<InductorGate>) -> Vec<Rule> {
    match gate {
        Some(InductorGate::Hardsigmoid) => vec![
            (
                "hardsigmoid by a product with f32(1/6)",
                Box::new(|x, v, o| q_inv(relu6p3(v) * (1.0 / 6.0) * x, o.scale, o.zero_point)),
            ),
            (
                "hardsigmoid as fma(v, 1/6, 0.5) clamped (oneDNN's)",
                Box::new(|x, v, o| {
                    let g = v.mul_add(1.0 / 6.0, 0.5).clamp(0.0, 1.0);
                    q_inv(g * x, o.scale, o.zero_point)
                }),
            ),
            (
                "(relu6(v + 3) * x) / 6",
                Box::new(|x, v, o| q_inv(relu6p3(v) * x / 6.0, o.scale, o.zero_point)),
            ),
            (
                "the product not rounded to f32 before the quantize",
                Box::new(|x, v, o| {
                    let t = inductor_hardsigmoid(v) as f64 * x as f64 * (1.0 / o.scale) as f64;
                    (t.round_ties_even() + o.zero_point as f64).clamp(0.0, 255.0) as u8
                }),
            ),
            (
                "quantize by t / s",
                Box::new(|x, v, o| q_div(inductor_hardsigmoid(v) * x, o.scale, o.zero_point)),
            ),
            (
                "quantize rounding ties away from zero",
                Box::new(|x, v, o| q_away(inductor_hardsigmoid(v) * x, o.scale, o.zero_point)),
            ),
        ],
        Some(InductorGate::Sigmoid) => vec![
            (
                "sigmoid with glibc's expf",
                Box::new(|x, v, o| {
                    let g = 1.0 / (1.0 + qfuse::ops::qsoftmax::glibc_expf(-v));
                    q_inv(g * x, o.scale, o.zero_point)
                }),
            ),
            (
                "the correctly rounded sigmoid",
                Box::new(|x, v, o| {
                    let g = (1.0 / (1.0 + (-(v as f64)).exp())) as f32;
                    q_inv(g * x, o.scale, o.zero_point)
                }),
            ),
            (
                "sigmoid as 1 - 1 / (1 + exp(v)) for v >= 0",
                Box::new(|x, v, o| {
                    let g = if v >= 0.0 {
                        1.0 - 1.0 / (1.0 + qfuse::ops::qsoftmax::sleef_expf_u10(v))
                    } else {
                        inductor_sigmoid(v)
                    };
                    q_inv(g * x, o.scale, o.zero_point)
                }),
            ),
            (
                "quantize rounding ties away from zero",
                Box::new(|x, v, o| q_away(inductor_sigmoid(v) * x, o.scale, o.zero_point)),
            ),
        ],
        None => vec![
            (
                "hardswish divided by a product with f32(1/6)",
                Box::new(|x, _, o| q_inv(x * relu6p3(x) * (1.0 / 6.0), o.scale, o.zero_point)),
            ),
            (
                "x * (relu6(x + 3) / 6)",
                Box::new(|x, _, o| q_inv(x * (relu6p3(x) / 6.0), o.scale, o.zero_point)),
            ),
            (
                "x * clamp(fma(x, 1/6, 0.5), 0, 1) (oneDNN's)",
                Box::new(|x, _, o| {
                    q_inv(
                        x * x.mul_add(1.0 / 6.0, 0.5).clamp(0.0, 1.0),
                        o.scale,
                        o.zero_point,
                    )
                }),
            ),
            (
                "quantize rounding ties away from zero",
                Box::new(|x, _, o| q_away(inductor_hardswish(x), o.scale, o.zero_point)),
            ),
        ],
    }
}

#[test]
fn wrong_rules_miss_recorded_bytes() {
    let all = cases();
    for kind in [
        Some(InductorGate::Hardsigmoid),
        Some(InductorGate::Sigmoid),
        None,
    ] {
        for (name, rule) in candidates(kind) {
            let mut miss = 0;
            let mut first = None;
            for c in all.iter().filter(|c| c.gate == kind) {
                let plane = c.plane();
                for (i, (&x, &want)) in c.x.iter().zip(&c.y).enumerate() {
                    let v = if kind.is_some() { c.v[i / plane] } else { 0.0 };
                    if rule(x, v, c.out) != want {
                        miss += 1;
                        first.get_or_insert_with(|| format!("{} element {i}", c.name));
                    }
                }
            }
            println!("{kind:?} candidate {name:?}: {miss} bytes missed (first: {first:?})");
            assert!(
                miss > 0,
                "{kind:?}: the wrong rule {name:?} matches every recorded byte"
            );
        }
    }
}

#[test]
fn refusals_name_the_problem() {
    let q = QParams::new(0.02, 10).unwrap();
    let f = |shape: &[usize]| TensorInfo {
        shape: shape.to_vec(),
        dtype: DType::F32,
    };
    let build = |engine: Requant, x: TensorInfo, v: TensorInfo, out: QParams| {
        Model::new(
            engine,
            vec![("x".into(), x), ("v".into(), v)],
            vec!["y".into()],
            vec![Node {
                name: "y".into(),
                op: Op::InductorGateMul {
                    gate: InductorGate::Sigmoid,
                    out,
                },
                inputs: vec!["x".into(), "v".into()],
            }],
        )
    };
    let e = build(Requant::Fbgemm, f(&[4, 2, 2]), f(&[4, 1, 1]), q).unwrap_err();
    assert!(e.to_string().contains("inductor_x86"), "{e}");
    let e = build(Requant::InductorX86, f(&[4, 2, 2]), f(&[5, 1, 1]), q).unwrap_err();
    assert!(e.to_string().contains("[4, 1, 1]"), "{e}");
    let e = build(
        Requant::InductorX86,
        TensorInfo {
            shape: vec![4, 2, 2],
            dtype: DType::QUInt8(q),
        },
        f(&[4]),
        q,
    )
    .unwrap_err();
    assert!(e.to_string().contains("float32"), "{e}");
    let e = build(
        Requant::InductorX86,
        f(&[4, 2, 2]),
        f(&[4]),
        QParams::new_i8(0.02, 3).unwrap(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("qint8"), "{e}");
    assert!(build(Requant::InductorX86, f(&[4, 2, 2]), f(&[4]), q).is_ok());
}

// ---------------------------------------------------------------------------
// GPU: inductor.wgsl on f32 words in the GPU's f32 tensor layout (NHWC,
// channels padded to a multiple of 4, one f32 per word).

/// NCHW f32 (`[N, C, H, W]` or `[N, C]`) to the GPU's f32 words.
fn f32_words(x: &[f32], shape: &[usize]) -> Vec<u32> {
    let (n, c) = (shape[0], shape[1]);
    let hw: usize = shape[2..].iter().product();
    let cp = 4 * c.div_ceil(4);
    let mut w = vec![0u32; n * hw * cp];
    for b in 0..n {
        for ch in 0..c {
            for p in 0..hw {
                w[(b * hw + p) * cp + ch] = x[(b * c + ch) * hw + p].to_bits();
            }
        }
    }
    w
}

/// Packed NHWC4 quint8 words to NCHW bytes.
fn unpack(words: &[u32], shape: &[usize]) -> Vec<u8> {
    let (n, c) = (shape[0], shape[1]);
    let hw: usize = shape[2..].iter().product();
    let c4 = c.div_ceil(4);
    let mut y = vec![0u8; n * c * hw];
    for b in 0..n {
        for ch in 0..c {
            for p in 0..hw {
                y[(b * c + ch) * hw + p] =
                    (words[(b * hw + p) * c4 + ch / 4] >> (8 * (ch % 4))) as u8;
            }
        }
    }
    y
}

fn buffer(ctx: &GpuContext, label: &str, words: &[u32], out: bool) -> wgpu::Buffer {
    let mut usage = wgpu::BufferUsages::STORAGE;
    if out {
        usage |= wgpu::BufferUsages::COPY_SRC;
    }
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(words),
            usage,
        })
}

/// Runs inductor.wgsl on x (NCHW, batched shape) and v (`[N * C]`).
fn gpu_run(
    ctx: &GpuContext,
    gate: Option<InductorGate>,
    out: QParams,
    x: &[f32],
    shape: &[usize],
    v: &[f32],
) -> Vec<u8> {
    let (n, c) = (shape[0], shape[1]);
    let (h, w) = match shape.len() {
        2 => (1, 1),
        4 => (shape[2], shape[3]),
        _ => panic!("shape {shape:?}"),
    };
    let xw = buffer(ctx, "x", &f32_words(x, shape), false);
    let vw = if gate.is_some() {
        buffer(ctx, "v", &f32_words(v, &[n, c]), false)
    } else {
        buffer(ctx, "v", &[0], false)
    };
    let words = (n * h * w * c.div_ceil(4)) as u32;
    let yw = buffer(ctx, "y", &vec![0xdead_beef; words as usize], true);
    let p = InductorParams::new((c as u32, h as u32, w as u32), out, words);
    let d = ctx
        .dispatch(
            Kernel::Inductor,
            &[("WG", 64.0), ("MODE", inductor_mode(gate) as f64)],
            bytemuck::bytes_of(&p),
            &[&xw, &vw, &yw],
            words,
            64,
        )
        .expect("inductor dispatch");
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        d.record(&mut pass);
    }
    ctx.submit_and_wait(enc).unwrap();
    let b = ctx.read_buffer(&yw, 4 * words as u64).unwrap();
    unpack(bytemuck::cast_slice(&b), shape)
}

#[test]
fn gpu_is_bit_exact_with_inductor() {
    let ctx = common::gpu();
    for c in cases() {
        let got = gpu_run(&ctx, c.gate, c.out, &c.x, &c.shape, &c.v);
        if let Some(msg) = first_mismatch(&got, &c.y) {
            panic!("{} on the GPU: {msg}", c.name);
        }
        println!("{}: {} bytes equal on the GPU", c.name, c.y.len());
    }
}

/// The GPU's Sleef expf, hardsigmoid and hardswish against the CPU rules on
/// many random values (seeded), including exp's whole range and underflow.
#[test]
fn gpu_matches_the_cpu_rules_on_random_values() {
    let ctx = common::gpu();
    let seed = 0x5e_1234u64;
    let mut rng = common::Rng(seed);
    let (n, c, h, w) = (2usize, 1037usize, 3usize, 2usize);
    let shape = [n, c, h, w];
    let u = |rng: &mut common::Rng| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
    let v: Vec<f32> = (0..n * c)
        .map(|i| match i % 4 {
            0 => (u(&mut rng) - 0.5) * 240.0,
            1 => (u(&mut rng) - 0.5) * 24.0,
            2 => -3.0 + (u(&mut rng) - 0.5) * 1e-5,
            _ => (u(&mut rng) - 0.5) * 8.0,
        })
        .collect();
    let x: Vec<f32> = (0..n * c * h * w)
        .map(|_| (u(&mut rng) - 0.4) * 9.0)
        .collect();
    let out = QParams::new(0.0173, 97).unwrap();
    for gate in [
        Some(InductorGate::Hardsigmoid),
        Some(InductorGate::Sigmoid),
        None,
    ] {
        let plane = h * w;
        let want: Vec<u8> = x
            .iter()
            .enumerate()
            .map(|(i, &xv)| match gate {
                Some(g) => qfuse::ops::inductor::inductor_gate_mul(g.apply(v[i / plane]), xv, out),
                None => qfuse::ops::inductor::inductor_quantize(inductor_hardswish(xv), out),
            })
            .collect();
        let got = gpu_run(&ctx, gate, out, &x, &shape, &v);
        if let Some(msg) = first_mismatch(&got, &want) {
            panic!("seed {seed:#x}, {gate:?}: {msg}");
        }
    }
}

/// `sleef_expf` of inductor.wgsl (its marked section, compiled with the float
/// prelude and a test entry point) is bit-exact with
/// `qfuse::ops::qsoftmax::sleef_expf_u10` on every 7919th f32 bit pattern in [-110, 110]
/// and around its bounds.
#[test]
fn gpu_sleef_expf_is_the_cpus() {
    let ctx = common::gpu();
    let body = Kernel::Inductor.body();
    let a = body.find("// ---- sleef begin").expect("sleef section");
    let b = body
        .find("// ---- sleef end ----")
        .expect("sleef section end");
    let src = format!(
        r#"{}
const F32_ONE: u32 = 0x3f800000u;
{}
struct P {{ n: u32, p0: u32, p1: u32, p2: u32 }}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {{
    let i = gid.x + gid.y * nw.x * 64u;
    if i >= p.n {{ return; }}
    out[i] = sleef_expf(a[i]);
}}
"#,
        Kernel::file_source(Kernel::FLOAT_PRELUDE).expect("float prelude"),
        &body[a..b]
    );
    let mut args: Vec<u32> = Vec::new();
    // every 7919th bit pattern of [0, 110] and of [-110, 0]
    for hi in [110.0f32.to_bits(), (-110.0f32).to_bits()] {
        let lo = hi & 0x8000_0000;
        args.extend((lo..=hi).step_by(7919));
    }
    for edge in [-104.0f32, 100.0, 88.72, -87.33, 1e-30, -1e-30] {
        let e = edge.to_bits();
        args.extend(e - 300..e + 300);
    }
    args.extend([0, 0x8000_0000]);
    let want: Vec<u32> = args
        .iter()
        .map(|&a| qfuse::ops::qsoftmax::sleef_expf_u10(f32::from_bits(a)).to_bits())
        .collect();
    let ab = buffer(&ctx, "args", &args, false);
    let ob = buffer(&ctx, "out", &vec![0xdead_beef; args.len()], true);
    let n = args.len() as u32;
    let d = ctx
        .dispatch_custom(
            qfuse::gpu::CustomKernel {
                name: "test_sleef_expf.wgsl",
                source: &src,
            },
            &[],
            bytemuck::cast_slice(&[n, 0, 0, 0]),
            &[(1, &ab), (2, &ob)],
            n,
            64,
        )
        .expect("sleef dispatch");
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        d.record(&mut pass);
    }
    ctx.submit_and_wait(enc).unwrap();
    let got: Vec<u32> = bytemuck::cast_slice(&ctx.read_buffer(&ob, 4 * n as u64).unwrap()).to_vec();
    let bad: Vec<_> = (0..args.len()).filter(|&i| got[i] != want[i]).collect();
    assert!(
        bad.is_empty(),
        "{} of {} arguments differ; first: expf({:e}) got {:#x}, want {:#x}",
        bad.len(),
        args.len(),
        f32::from_bits(args[bad[0]]),
        got[bad[0]],
        want[bad[0]]
    );
    println!("{} arguments bit-exact", args.len());
}

// ---------------------------------------------------------------------------
// Through a model: oneDNN convs/linears with an f32 output (NHWC4F on the
// GPU) feeding the ops, GPU == CPU (the CPU rules are pinned above, the f32
// convs by tests/inductor_f32_conv.rs).

/// A random oneDNN layer with an f32 output whose values spread over about
/// [-5, 5] (hardsigmoid's and hardswish's bends, sigmoid's curve).
fn f32_layer(
    rng: &mut common::Rng,
    geom: qfuse::Conv2dGeometry,
    kind: qfuse::LayerKind,
    act: qfuse::quant::Activation,
    hardswish: bool,
) -> qfuse::QLayer {
    let qi = QParams::new(0.03, 120).unwrap();
    let k = geom.cin_per_group() * geom.kernel[0] * geom.kernel[1];
    let o = geom.out_channels;
    let w = rng.i8s(o * k);
    // |acc| ~ 128 * 64 * sqrt(k); scale it to ~2
    let ws: Vec<f32> = (0..o)
        .map(|_| (0.5 + rng.f32()) * 2.0 / (0.03 * 128.0 * 64.0 * (k as f32).sqrt()))
        .collect();
    let bias: Vec<f32> = (0..o).map(|_| rng.f32() * 4.0 - 2.0).collect();
    let l = qfuse::QLayer::new(
        kind,
        geom,
        w,
        ws,
        bias,
        qi,
        QParams::new(0.05, 3).unwrap(),
        act,
        Requant::Onednn,
    )
    .unwrap()
    .with_plain_src_scale();
    let l = if hardswish {
        l.with_hardswish().unwrap()
    } else {
        l
    };
    l.with_float_output().unwrap()
}

fn variant(k: usize) -> impl Fn(&qfuse::QLayer) -> qfuse::gpu::ConvVariant {
    move |l: &qfuse::QLayer| {
        let c: Vec<_> = qfuse::gpu::ConvVariant::candidates(l)
            .into_iter()
            .filter(|v| v.applies(l))
            .collect();
        c[k % c.len()]
    }
}

#[test]
fn gpu_models_with_f32_convs_equal_the_cpu() {
    use qfuse::quant::Activation;
    use qfuse::{Conv2dGeometry, GpuModel, LayerKind};
    let seed = 0x5e_90d5u64;
    println!("seed {seed:#x}");
    let mut rng = common::Rng(seed);
    let ctx = common::gpu();
    let qa = QParams::new(0.03, 120).unwrap();
    let out = QParams::new(0.021, 77).unwrap();
    let mut checked = 0;
    // (C, H, W, the gate from a linear ([C]) instead of a 1x1 conv ([C, 1, 1]), gate, conv_a's post-op)
    let shapes = [
        (
            16usize,
            5usize,
            4usize,
            false,
            InductorGate::Hardsigmoid,
            1usize,
        ),
        (19, 3, 3, true, InductorGate::Sigmoid, 0),
        (40, 2, 3, false, InductorGate::Sigmoid, 2),
        (72, 4, 2, true, InductorGate::Hardsigmoid, 0),
    ];
    for &(c, h, w, linear_gate, gate, post) in &shapes {
        let cin = 8;
        let conv_a = f32_layer(
            &mut rng,
            Conv2dGeometry::new(cin, c, [3, 3]).padding([1, 1]),
            LayerKind::Conv2d,
            if post == 1 {
                Activation::Relu
            } else {
                Activation::None
            },
            post == 2,
        );
        // a second f32 conv of conv_a's output shape, for inductor_add
        let conv_c = f32_layer(
            &mut rng,
            Conv2dGeometry::new(cin, c, [1, 1]),
            LayerKind::Conv2d,
            Activation::Relu,
            false,
        );
        let (b_shape, conv_b) = if linear_gate {
            (
                vec![12],
                Op::Linear(Box::new(f32_layer(
                    &mut rng,
                    Conv2dGeometry::linear(12, c),
                    LayerKind::Linear,
                    Activation::None,
                    false,
                ))),
            )
        } else {
            (
                vec![12, 1, 1],
                Op::Conv2d(Box::new(f32_layer(
                    &mut rng,
                    Conv2dGeometry::new(12, c, [1, 1]),
                    LayerKind::Conv2d,
                    Activation::None,
                    false,
                ))),
            )
        };
        let se = Model::new(
            Requant::InductorX86,
            vec![
                ("a".into(), f32_info(&[cin, h, w])),
                ("b".into(), f32_info(&b_shape)),
            ],
            vec!["y".into(), "hs".into(), "sum".into()],
            vec![
                node("aq", Op::Quantize(qa), &["a"]),
                node("va", Op::Conv2d(Box::new(conv_a)), &["aq"]),
                node("vc", Op::Conv2d(Box::new(conv_c)), &["aq"]),
                node("bq", Op::Quantize(qa), &["b"]),
                node("vb", conv_b, &["bq"]),
                node("y", Op::InductorGateMul { gate, out }, &["va", "vb"]),
                node("hs", Op::InductorHardswish { out }, &["va"]),
                node("sum", Op::InductorAdd { out }, &["va", "vc"]),
            ],
        )
        .unwrap();
        // the classifier: linear (f32) -> hardswish
        let cls = Model::new(
            Requant::InductorX86,
            vec![("a".into(), f32_info(&[c]))],
            vec!["y".into()],
            vec![
                node("aq", Op::Quantize(qa), &["a"]),
                node(
                    "v",
                    Op::Linear(Box::new(f32_layer(
                        &mut rng,
                        Conv2dGeometry::linear(c, 2 * c + 3),
                        LayerKind::Linear,
                        Activation::None,
                        false,
                    ))),
                    &["aq"],
                ),
                node("y", Op::InductorHardswish { out }, &["v"]),
            ],
        )
        .unwrap();
        let n = 2;
        let rand = |rng: &mut common::Rng, shape: &[usize]| {
            let mut s = vec![n];
            s.extend_from_slice(shape);
            let len: usize = s.iter().product();
            Value::F32 {
                data: (0..len).map(|_| rng.f32() * 7.0 - 3.5).collect(),
                shape: s,
            }
        };
        for (model, inputs) in [
            (
                &se,
                vec![rand(&mut rng, &[cin, h, w]), rand(&mut rng, &b_shape)],
            ),
            (&cls, vec![rand(&mut rng, &[c])]),
        ] {
            let want = model.run_cpu(&inputs).unwrap();
            for o in &want {
                let b = bytes(o);
                assert!(
                    b.iter().filter(|&&v| v != b[0]).count() > b.len() / 4,
                    "seed {seed:#x}: nearly constant output"
                );
            }
            let file = Model::from_bytes(&model.to_bytes().unwrap()).unwrap();
            assert_eq!(file.run_cpu(&inputs).unwrap(), want, "after the file");
            for k in 0..3 {
                let g = GpuModel::with_variants(&ctx, model, &variant(k)).unwrap();
                let got = g.run(&ctx, &inputs).unwrap();
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    if let Some(m) = first_mismatch(bytes(a), bytes(b)) {
                        panic!("seed {seed:#x}, C {c}, output {i}, variant #{k}: {m}");
                    }
                    checked += bytes(b).len();
                }
            }
        }
    }
    println!("{checked} bytes equal");
    // a float32 model input (NCHW on the GPU) is refused, naming the op
    let c = &cases()[0];
    let e = match GpuModel::new(&ctx, &model(c, false)) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a float32 model input feeding inductor_gate_mul was accepted on the GPU"),
    };
    assert!(
        e.contains("inductor_gate_mul") && e.contains("model input"),
        "{e}"
    );
}

#[test]
fn inductor_add_quantizes_the_f32_sum_and_refuses_two_shapes() {
    // quantize(f32(a + b)) with Inductor's quantize (zero point after rounding)
    let out = QParams::new(0.5, 3).unwrap();
    let m = Model::new(
        Requant::InductorX86,
        vec![("a".into(), f32_info(&[3])), ("b".into(), f32_info(&[3]))],
        vec!["y".into()],
        vec![node("y", Op::InductorAdd { out }, &["a", "b"])],
    )
    .unwrap();
    let v = |d: &[f32]| Value::F32 {
        data: d.to_vec(),
        shape: vec![1, 3],
    };
    let y = m
        .run_cpu(&[v(&[0.25, 0.5, -10.0]), v(&[0.5, 0.75, 0.0])])
        .unwrap();
    // 0.75 / 0.5 = 1.5 -> 2 (ties to even) + 3; 1.25 / 0.5 = 2.5 -> 2 + 3; -20 -> 0
    assert_eq!(bytes(&y[0]), &[5, 5, 0]);
    let file = Model::from_bytes(&m.to_bytes().unwrap()).unwrap();
    assert_eq!(
        file.run_cpu(&[v(&[0.25, 0.5, -10.0]), v(&[0.5, 0.75, 0.0])])
            .unwrap(),
        y
    );
    let e = match Model::new(
        Requant::InductorX86,
        vec![
            ("a".into(), f32_info(&[4, 2, 2])),
            ("b".into(), f32_info(&[4, 2, 3])),
        ],
        vec!["y".into()],
        vec![node("y", Op::InductorAdd { out }, &["a", "b"])],
    ) {
        Ok(_) => panic!("inductor_add of two shapes accepted"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("inductor_add") && e.contains("one shape"), "{e}");
}
