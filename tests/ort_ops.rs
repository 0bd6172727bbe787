//! ONNX Runtime's quantize, global/average pooling, softmax and concat as
//! qfuse ops (`Requant::OnnxRuntime`; rules in `tests/data/onnx/README.md`):
//! - bit-exact with ONNX Runtime 1.32 (x86-64 with AVX-512 VNNI) on the
//!   committed vectors `tests/data/onnx/ops`, on the CPU and on the GPU: each
//!   case's lowered program (`qfuse::onnx`) is rebuilt as a qfuse `Model`
//!   (quantize -> op -> dequantize, or the QOperator op alone on quantized
//!   inputs), with its qparams;
//! - `ort.wgsl`'s integer f32 division equals Rust's `/` bit for bit on edge
//!   cases and seeded random pairs (normal, subnormal, zero, infinite, NaN);
//! - GPU == CPU on seeded random shapes, windows, qparams and data, quint8
//!   and qint8;
//! - bad ops give typed errors naming what is wrong; the file form round-trips.

mod common;

use std::path::{Path, PathBuf};

use common::{first_mismatch, gpu, Rng};
use qfuse::gpu::{CustomKernel, Kernel};
use qfuse::model::{DType, Model, Node, Op, TensorInfo, Value};
use qfuse::onnx::{ElemType, OnnxGraph, QAxis, QOp, QType, Tensor, TensorData, Q};
use qfuse::ops::OrtPool2d;
use qfuse::{Error, GpuContext, GpuModel, QParams, Requant};
use wgpu::util::DeviceExt;

const ORT: Requant = Requant::OnnxRuntime;

fn ops_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx/ops")
}

fn manifest() -> Vec<serde_json::Value> {
    let s = std::fs::read_to_string(ops_dir().join("manifest.json")).expect("manifest.json");
    let m: serde_json::Value = serde_json::from_str(&s).expect("manifest JSON");
    m["cases"].as_array().expect("cases").clone()
}

fn qp(q: &Q) -> QParams {
    match q.dtype {
        QType::U8 => QParams::new(q.scale, q.zero_point).unwrap(),
        QType::I8 => QParams::new_i8(q.scale, q.zero_point).unwrap(),
    }
}

fn qp_axis(q: &QAxis) -> Option<QParams> {
    if q.axis.is_some() || q.scales.len() != 1 {
        return None;
    }
    let q1 = Q {
        scale: q.scales[0],
        zero_point: q.zero_points[0],
        dtype: match q.dtype {
            ElemType::U8 => QType::U8,
            ElemType::I8 => QType::I8,
            _ => return None,
        },
    };
    Some(qp(&q1))
}

/// NHWC <-> NCHW of a flat `[n, a, b, c]` buffer to `[n, c, a, b]`
/// (`to_nchw`) or back.
fn permute<T: Copy>(v: &[T], d: &[usize], to_nchw: bool) -> Vec<T> {
    let (n, h, w, c) = if to_nchw {
        (d[0], d[1], d[2], d[3])
    } else {
        (d[0], d[2], d[3], d[1])
    };
    let mut out = Vec::with_capacity(v.len());
    if to_nchw {
        for b in 0..n {
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        out.push(v[((b * h + y) * w + x) * c + ch]);
                    }
                }
            }
        }
    } else {
        for b in 0..n {
            for y in 0..h {
                for x in 0..w {
                    for ch in 0..c {
                        out.push(v[((b * c + ch) * h + y) * w + x]);
                    }
                }
            }
        }
    }
    out
}

/// A committed case as a qfuse model: the model, its inputs (NCHW), and per
/// output whether to permute it back to NHWC.
struct Built {
    model: Model,
    inputs: Vec<Value>,
    nhwc: bool,
}

/// The ops this file covers; other cases of the manifest are not its concern.
const OPS: &[&str] = &[
    "QuantizeLinear",
    "QLinearGlobalAveragePool",
    "QLinearAveragePool",
    "QLinearSoftmax",
    "QLinearConcat",
    "GlobalAveragePool",
    "AveragePool",
    "Softmax",
    "Concat",
];

/// Cases of those ops that qfuse's ops cannot express, with the reason.
fn not_expressible(name: &str) -> Option<&'static str> {
    if name.contains("concat") && name.contains("axis2") {
        return Some("cat is along channels only");
    }
    if name.starts_with("quantize_") && name.contains("_axis") {
        return Some("quantize is per tensor only");
    }
    None
}

fn build(name: &str, case: &serde_json::Value) -> Built {
    let dir = ops_dir().join(name);
    let l = OnnxGraph::load(dir.join("model.onnx"))
        .and_then(|g| g.lower())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let vname = |id: usize| format!("v{id}");
    let mut nhwc = false;
    let mut flatten_from: Option<usize> = None;
    // the qparams each graph input is read with (a QOperator input has none of its own)
    let mut in_q: std::collections::HashMap<usize, QParams> = Default::default();
    let mut nodes = Vec::new();
    for n in &l.nodes {
        let rank = |v: usize| l.values[v].shape.as_ref().expect("shape").len();
        let op = match &n.op {
            QOp::Quantize { y } => Op::Quantize(qp_axis(y).expect("per-tensor quantize")),
            QOp::Dequantize { .. } => Op::Dequantize,
            QOp::GlobalAvgPool {
                x,
                y,
                channels_last,
            } => {
                nhwc |= *channels_last;
                in_q.insert(n.inputs[0], qp(x));
                Op::GlobalAvgPool { out: qp(y) }
            }
            QOp::AvgPool {
                x,
                y,
                geom,
                count_include_pad,
                channels_last,
            } => {
                nhwc |= *channels_last;
                in_q.insert(n.inputs[0], qp(x));
                assert_eq!(geom.dilation, [1, 1], "{name}");
                Op::AvgPoolRequant {
                    pool: OrtPool2d {
                        kernel: geom.kernel,
                        stride: geom.stride,
                        pads: geom.pads,
                        ceil_mode: geom.ceil_mode,
                    },
                    count_include_pad: *count_include_pad,
                    out: qp(y),
                }
            }
            QOp::Softmax {
                x,
                y,
                axis,
                opset13,
            } => {
                in_q.insert(n.inputs[0], qp(x));
                let r = rank(n.inputs[0]);
                let a = axis.rem_euclid(r as i64) as usize;
                assert!(a >= 1, "{name}: softmax over the batch axis");
                if !opset13 {
                    flatten_from = Some(a);
                }
                Op::Softmax {
                    axis: a - 1,
                    out: qp(y),
                }
            }
            QOp::Concat { axis, inputs, y } => {
                let r = rank(n.inputs[0]);
                assert_eq!(axis.rem_euclid(r as i64), 1, "{name}: concat axis");
                for (v, q) in n.inputs.iter().zip(inputs) {
                    in_q.insert(*v, qp(q));
                }
                Op::Cat(qp(y))
            }
            other => panic!("{name}: unexpected op {}", other.kind()),
        };
        nodes.push(Node {
            name: vname(n.outputs[0]),
            op,
            inputs: n.inputs.iter().map(|&v| vname(v)).collect(),
        });
    }
    let sample_shape = |dims: &[usize]| -> Vec<usize> {
        let mut s: Vec<usize> = if nhwc {
            vec![dims[3], dims[1], dims[2]]
        } else {
            dims[1..].to_vec()
        };
        if let Some(a) = flatten_from {
            let tail: usize = s[a - 1..].iter().product();
            s.truncate(a - 1);
            s.push(tail);
        }
        s
    };
    let mut decl = Vec::new();
    let mut inputs = Vec::new();
    for (j, (&id, meta)) in l
        .inputs
        .iter()
        .zip(case["inputs"].as_array().expect("inputs"))
        .enumerate()
    {
        let t =
            qfuse::npy::read_tensor(dir.join(meta["file"].as_str().expect("file"))).expect("npy");
        let shape = sample_shape(&t.dims);
        let mut batched = vec![t.dims[0]];
        batched.extend(&shape);
        let (info, value) = match &t.data {
            TensorData::F32(v) => {
                let data = if nhwc {
                    permute(v, &t.dims, true)
                } else {
                    v.clone()
                };
                (
                    DType::F32,
                    Value::F32 {
                        data,
                        shape: batched,
                    },
                )
            }
            TensorData::U8(_) | TensorData::I8(_) => {
                let q = *in_q.get(&id).unwrap_or_else(|| panic!("{name}: input {j}"));
                let bytes: Vec<u8> = match &t.data {
                    TensorData::U8(v) => v.clone(),
                    TensorData::I8(v) => v.iter().map(|&b| (b as u8) ^ 0x80).collect(),
                    _ => unreachable!(),
                };
                assert_eq!(q.signed, matches!(t.data, TensorData::I8(_)), "{name}");
                let data = if nhwc {
                    permute(&bytes, &t.dims, true)
                } else {
                    bytes
                };
                (
                    DType::QUInt8(q),
                    Value::Q {
                        data,
                        shape: batched,
                        q,
                    },
                )
            }
            _ => panic!("{name}: input type"),
        };
        decl.push((vname(id), TensorInfo { shape, dtype: info }));
        inputs.push(value);
    }
    let outputs = l.outputs.iter().map(|&v| vname(v)).collect();
    let model = Model::new(ORT, decl, outputs, nodes).unwrap_or_else(|e| panic!("{name}: {e}"));
    Built {
        model,
        inputs,
        nhwc,
    }
}

/// Output `got` (NCHW) against ORT's `want`, bit for bit; an error message
/// naming the first mismatch.
fn compare(name: &str, got: &Value, want: &Tensor, nhwc: bool) -> Result<usize, String> {
    let g: Vec<u32> = match got {
        Value::F32 { data, .. } => data.iter().map(|x| x.to_bits()).collect(),
        Value::Q { data, q, .. } => data
            .iter()
            .map(|&b| {
                if q.signed {
                    (b ^ 0x80) as u32
                } else {
                    b as u32
                }
            })
            .collect(),
    };
    let g = if nhwc {
        let mut d = want.dims.clone();
        d = vec![d[0], d[3], d[1], d[2]];
        permute(&g, &d, false)
    } else {
        g
    };
    let w: Vec<u32> = match &want.data {
        TensorData::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
        TensorData::U8(v) => v.iter().map(|&x| x as u32).collect(),
        TensorData::I8(v) => v.iter().map(|&x| x as u8 as u32).collect(),
        _ => return Err(format!("{name}: output type")),
    };
    match first_mismatch(&g, &w) {
        None => Ok(w.len()),
        Some(m) => {
            let n = g.iter().zip(&w).filter(|(a, b)| a != b).count();
            Err(format!("{name}: {n}/{} differ, first {m}", w.len()))
        }
    }
}

/// Runs every covered case with `run`; returns (cases, values) checked.
fn run_vectors(run: &dyn Fn(&Built) -> qfuse::Result<Vec<Value>>) -> (usize, usize) {
    let (mut cases, mut values, mut skipped) = (0, 0, 0);
    let mut failures = Vec::new();
    for case in manifest() {
        let name = case["name"].as_str().expect("name");
        let op = case["op"].as_str().expect("op");
        if !OPS.contains(&op) {
            continue;
        }
        if not_expressible(name).is_some() {
            skipped += 1;
            continue;
        }
        let b = build(name, &case);
        let got = match run(&b) {
            Ok(g) => g,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let dir = ops_dir().join(name);
        for (j, o) in case["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .enumerate()
        {
            let want =
                qfuse::npy::read_tensor(dir.join(o["file"].as_str().expect("file"))).expect("npy");
            match compare(name, &got[j], &want, b.nhwc) {
                Ok(n) => values += n,
                Err(e) => failures.push(e),
            }
        }
        cases += 1;
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // 4 concat axis-2 and per-axis quantize cases cannot be expressed
    assert_eq!(skipped, 6, "skipped cases");
    println!("{cases} cases, {values} values bit-exact with ONNX Runtime");
    (cases, values)
}

#[test]
fn committed_vectors_bit_exact_on_cpu() {
    let (cases, values) = run_vectors(&|b| b.model.run_cpu(&b.inputs));
    assert_eq!(cases, 42);
    assert!(values > 3000, "{values}");
}

#[test]
fn committed_vectors_bit_exact_on_gpu() {
    let ctx = gpu();
    let (cases, _) = run_vectors(&|b| GpuModel::new(&ctx, &b.model)?.run(&ctx, &b.inputs));
    assert_eq!(cases, 42);
}

// ---------------------------------------------------------------------------
// fdiv

/// The float prelude's `fdiv` section (what `ort.wgsl` is compiled with),
/// compiled on its own with a test entry point.
fn fdiv_kernel() -> String {
    let body = Kernel::file_source(Kernel::FLOAT_PRELUDE).expect("float prelude");
    assert!(Kernel::Ort.uses_float_prelude());
    let a = body.find("// ---- fdiv begin").expect("fdiv begin marker");
    let b = body.find("// ---- fdiv end").expect("fdiv end marker");
    format!(
        r#"
struct P {{ n: u32, p0: u32, p1: u32, p2: u32 }}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> ab: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
{}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {{
    let i = gid.x + gid.y * nw.x * 64u;
    if i >= p.n {{ return; }}
    out[i] = fdiv(ab[2u * i], ab[2u * i + 1u]);
}}
"#,
        &body[a..b]
    )
}

fn gpu_fdiv(ctx: &GpuContext, src: &str, pairs: &[(u32, u32)]) -> Vec<u32> {
    let flat: Vec<u32> = pairs.iter().flat_map(|&(a, b)| [a, b]).collect();
    let ab = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("fdiv operands"),
            contents: bytemuck::cast_slice(&flat),
            usage: wgpu::BufferUsages::STORAGE,
        });
    let out = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("fdiv out"),
            contents: bytemuck::cast_slice(&vec![0xdeadbeefu32; pairs.len()]),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        });
    let n = pairs.len() as u32;
    let d = ctx
        .dispatch_custom(
            CustomKernel {
                name: "test_fdiv.wgsl",
                source: src,
            },
            &[],
            bytemuck::cast_slice(&[n, 0, 0, 0]),
            &[(1, &ab), (2, &out)],
            n,
            64,
        )
        .expect("fdiv dispatch");
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        d.record(&mut pass);
    }
    ctx.submit_and_wait(enc).unwrap();
    let bytes = ctx.read_buffer(&out, 4 * pairs.len() as u64).unwrap();
    bytemuck::cast_slice(&bytes).to_vec()
}

/// Rust's `/` as bits; every NaN as the one quiet NaN `fdiv` returns.
fn rust_div(a: u32, b: u32) -> u32 {
    let q = f32::from_bits(a) / f32::from_bits(b);
    if q.is_nan() {
        0x7fc00000
    } else {
        q.to_bits()
    }
}

#[test]
fn fdiv_on_the_gpu_is_rusts_division() {
    let ctx = gpu();
    let src = fdiv_kernel();
    let seed = 0x0f_d1_u64;
    let mut rng = Rng(seed);
    let special: Vec<u32> = [
        0.0f32,
        -0.0,
        1.0,
        -1.0,
        3.0,
        0.1,
        255.0,
        f32::MAX,
        -f32::MAX,
        f32::MIN_POSITIVE,
        f32::EPSILON,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1.0 / 256.0,
        0.003921569,
        16777215.0,
        16777216.0,
    ]
    .iter()
    .map(|x| x.to_bits())
    .chain([
        1u32, 2, 3, 0x007fffff, 0x00400000, 0x80000001, 0x00800001, 0x7f7ffffe,
    ])
    .collect();
    let mut pairs = Vec::new();
    for &a in &special {
        for &b in &special {
            pairs.push((a, b));
        }
    }
    // random bit patterns (every exponent), random values of similar size
    // (the quotient's ties and near-ties), subnormal operands and results
    for _ in 0..200_000 {
        let r = rng.next_u64();
        let (a, b) = (r as u32, (r >> 32) as u32);
        pairs.push((a, b));
        let e = (rng.next_u64() % 40) as u32;
        pairs.push((
            0x3f800000 ^ (a & 0x807fffff),
            (0x3f800000 + (e << 23)) ^ (b & 0x807fffff),
        ));
        pairs.push((a & 0x80ffffff, b | 0x40000000)); // small / large: underflow
        pairs.push((a | 0x7e000000, b & 0x80ffffff)); // large / small: overflow
                                                      // exact quotients (ties after rounding to fewer bits when subnormal)
        let m = (rng.next_u64() % 0xffffff) as f32 + 1.0;
        let d = rng.pick(&[3.0f32, 5.0, 7.0, 0.75, 1.5e30, 6.0e-39]);
        pairs.push(((m * d).to_bits(), d.to_bits()));
    }
    let got = gpu_fdiv(&ctx, &src, &pairs);
    let mut subnormal = 0;
    for (i, (&(a, b), &g)) in pairs.iter().zip(&got).enumerate() {
        let want = rust_div(a, b);
        if f32::from_bits(want).is_subnormal() {
            subnormal += 1;
        }
        assert_eq!(
            g,
            want,
            "seed {seed:#x}: pair {i}: {:e} / {:e} ({a:#010x} / {b:#010x}): GPU {:e} ({g:#010x}), Rust {:e} ({want:#010x})",
            f32::from_bits(a),
            f32::from_bits(b),
            f32::from_bits(g),
            f32::from_bits(want),
        );
    }
    assert!(subnormal > 1000, "{subnormal} subnormal quotients");
    println!(
        "{} divisions exact ({subnormal} subnormal quotients)",
        pairs.len()
    );
}

// ---------------------------------------------------------------------------
// GPU == CPU on random data

fn rand_q(rng: &mut Rng, signed: bool, lo: f32, hi: f32) -> QParams {
    let s = lo * (hi / lo).powf(rng.f32());
    if signed {
        QParams::new_i8(s, rng.range(0, 255) as i32 - 128).unwrap()
    } else {
        QParams::new(s, rng.range(0, 255) as i32).unwrap()
    }
}

fn single(op: Op, x: Vec<(TensorInfo, Value)>) -> (Model, Vec<Value>) {
    let names: Vec<String> = (0..x.len()).map(|i| format!("x{i}")).collect();
    let decl = names
        .iter()
        .zip(&x)
        .map(|(n, (i, _))| (n.clone(), i.clone()))
        .collect();
    let m = Model::new(
        ORT,
        decl,
        vec!["y".into()],
        vec![Node {
            name: "y".into(),
            op,
            inputs: names,
        }],
    )
    .unwrap();
    (m, x.into_iter().map(|(_, v)| v).collect())
}

fn q_input(rng: &mut Rng, n: usize, shape: &[usize], q: QParams) -> (TensorInfo, Value) {
    let len = n * shape.iter().product::<usize>();
    // not all-zero, and sometimes a narrow range (near-equal softmax rows)
    let narrow = rng.range(0, 3) == 0;
    let base = rng.range(0, 200) as u8;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            let r = rng.next_u64() as u8;
            if narrow {
                base + r % 8
            } else {
                r
            }
        })
        .collect();
    let mut batched = vec![n];
    batched.extend(shape);
    (
        TensorInfo {
            shape: shape.to_vec(),
            dtype: DType::QUInt8(q),
        },
        Value::Q {
            data,
            shape: batched,
            q,
        },
    )
}

fn bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::Q { data, .. } => data.clone(),
        Value::F32 { data, .. } => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn q_of(q: QParams) -> Q {
    Q {
        scale: q.scale,
        zero_point: q.true_zero_point(),
        dtype: if q.signed { QType::I8 } else { QType::U8 },
    }
}

fn tensor_of(v: &Value) -> Tensor {
    match v {
        Value::F32 { data, shape } => Tensor {
            dims: shape.clone(),
            data: TensorData::F32(data.clone()),
        },
        Value::Q { data, shape, q } => Tensor {
            dims: shape.clone(),
            data: if q.signed {
                TensorData::I8(data.iter().map(|&b| (b ^ 0x80) as i8).collect())
            } else {
                TensorData::U8(data.clone())
            },
        },
    }
}

/// The single op of `m` run by `qfuse::onnx::reference` (an independent
/// plain-loop implementation of ORT's rules), as stored bytes; None where
/// the reference cannot run it (a softmax whose products overflow to
/// infinity: the reference's integer conversion is not defined there).
fn reference_of(m: &Model, inputs: &[Value]) -> Option<Vec<u8>> {
    let node = &m.nodes()[0];
    let ins: Vec<Tensor> = inputs.iter().map(tensor_of).collect();
    let q_in = |i: usize| m.info(&node.inputs[i]).unwrap().qparams().unwrap();
    let y = m.info("y").unwrap();
    let yq = y.qparams().unwrap();
    let op = match &node.op {
        Op::Quantize(q) => QOp::Quantize {
            y: QAxis {
                scales: vec![q.scale],
                zero_points: vec![q.true_zero_point()],
                axis: None,
                dtype: if q.signed { ElemType::I8 } else { ElemType::U8 },
            },
        },
        Op::GlobalAvgPool { .. } => QOp::GlobalAvgPool {
            x: q_of(q_in(0)),
            y: q_of(yq),
            channels_last: false,
        },
        Op::AvgPoolRequant {
            pool,
            count_include_pad,
            ..
        } => QOp::AvgPool {
            x: q_of(q_in(0)),
            y: q_of(yq),
            geom: qfuse::onnx::PoolGeom {
                kernel: pool.kernel,
                stride: pool.stride,
                pads: pool.pads,
                dilation: [1, 1],
                ceil_mode: pool.ceil_mode,
            },
            count_include_pad: *count_include_pad,
            channels_last: false,
        },
        Op::Softmax { axis, .. } => {
            let d = y.shape[*axis];
            let t0 = qfuse::ops::softmax_table(q_in(0).scale, d)[0];
            if (t0 * (1.0 / yq.scale).floor()).is_infinite() {
                return None;
            }
            QOp::Softmax {
                x: q_of(q_in(0)),
                y: q_of(yq),
                axis: *axis as i64 + 1,
                opset13: true,
            }
        }
        Op::Cat(_) => QOp::Concat {
            axis: 1,
            inputs: (0..inputs.len()).map(|i| q_of(q_in(i))).collect(),
            y: q_of(yq),
        },
        other => panic!("no reference for {other:?}"),
    };
    let refs: Vec<&Tensor> = ins.iter().collect();
    let n = inputs[0].shape()[0];
    let out_shape = y.batched(n);
    let t = qfuse::onnx::reference::eval_op(&op, &refs, Some(&out_shape), "reference").unwrap();
    Some(match t.data {
        TensorData::U8(v) => v,
        TensorData::I8(v) => v.iter().map(|&b| (b as u8) ^ 0x80).collect(),
        _ => panic!("reference output type"),
    })
}

/// Seeded random shapes, windows, qparams (quint8 and qint8) and data: the
/// GPU equals the CPU, and the CPU equals `qfuse::onnx::reference`.
#[test]
fn random_ops_gpu_equals_cpu() {
    let ctx = gpu();
    let seed = 0x0a7_u64;
    let mut rng = Rng(seed);
    let mut checked = 0usize;
    let mut distinct = std::collections::HashSet::new();
    let mut by_reference = 0;
    for iter in 0..150 {
        let signed = rng.range(0, 1) == 1;
        let n = rng.range(1, 3);
        let (c, h, w) = (rng.range(1, 19), rng.range(1, 23), rng.range(1, 23));
        let xq = rand_q(&mut rng, signed, 1e-3, 2.0);
        let yq = rand_q(&mut rng, signed, 1e-3, 2.0);
        let (what, model, inputs) = match iter % 5 {
            0 => {
                let yq = QParams {
                    scale: xq.scale * (0.3 + rng.f32()),
                    ..yq
                };
                let x = q_input(&mut rng, n, &[c, h, w], xq);
                let (m, i) = single(Op::GlobalAvgPool { out: yq }, vec![x]);
                ("global_avg_pool", m, i)
            }
            1 => {
                let k = [rng.range(1, h.min(5)), rng.range(1, w.min(5))];
                let pool = OrtPool2d {
                    kernel: k,
                    stride: [rng.range(1, 3), rng.range(1, 3)],
                    pads: [
                        rng.range(0, k[0] - 1),
                        rng.range(0, k[1] - 1),
                        rng.range(0, k[0] - 1),
                        rng.range(0, k[1] - 1),
                    ],
                    ceil_mode: rng.range(0, 1) == 1,
                };
                let x = q_input(&mut rng, n, &[c, h, w], xq);
                let op = Op::AvgPoolRequant {
                    pool,
                    count_include_pad: rng.range(0, 1) == 1,
                    out: yq,
                };
                let (m, i) = single(op, vec![x]);
                ("avg_pool_requant", m, i)
            }
            2 => {
                let rank = rng.range(1, 3);
                let shape = [c, h, w][..rank].to_vec();
                let yq = if rng.range(0, 1) == 0 {
                    QParams {
                        scale: 1.0 / 256.0,
                        ..yq
                    }
                } else {
                    yq
                };
                let xq = rand_q(&mut rng, signed, 1e-2, 40.0);
                let x = q_input(&mut rng, n, &shape, xq);
                let axis = rng.range(0, rank - 1);
                let (m, i) = single(Op::Softmax { axis, out: yq }, vec![x]);
                ("softmax", m, i)
            }
            3 => {
                let shape = [c, h, w][..rng.range(1, 3)].to_vec();
                let len = n * shape.iter().product::<usize>();
                let data: Vec<f32> = (0..len)
                    .map(|_| {
                        let r = rng.next_u64();
                        match r % 4 {
                            // values near the quantization grid's ties
                            0 => ((r >> 8) % 600) as f32 * 0.5 * xq.scale - 150.0 * xq.scale,
                            1 => f32::from_bits((r >> 32) as u32 & 0x807fffff), // subnormal
                            _ => (rng.f32() - 0.5) * 300.0 * xq.scale,
                        }
                    })
                    .collect();
                let mut batched = vec![n];
                batched.extend(&shape);
                let info = TensorInfo {
                    shape,
                    dtype: DType::F32,
                };
                let v = Value::F32 {
                    data,
                    shape: batched,
                };
                let (m, i) = single(Op::Quantize(xq), vec![(info, v)]);
                ("quantize", m, i)
            }
            _ => {
                let k = rng.range(1, 4);
                let out = rand_q(&mut rng, signed, 1e-2, 1.0);
                let xs: Vec<(TensorInfo, Value)> = (0..k)
                    .map(|_| {
                        let q = if rng.range(0, 2) == 0 {
                            out
                        } else {
                            rand_q(&mut rng, signed, 1e-2, 1.0)
                        };
                        let ci = rng.range(1, 9);
                        q_input(&mut rng, n, &[ci, h, w], q)
                    })
                    .collect();
                let (m, i) = single(Op::Cat(out), xs);
                ("cat", m, i)
            }
        };
        let cpu = model.run_cpu(&inputs).unwrap();
        let g = GpuModel::new(&ctx, &model)
            .and_then(|g| g.run(&ctx, &inputs))
            .unwrap_or_else(|e| panic!("seed {seed:#x} iter {iter} {what}: {e}"));
        let (a, b) = (bytes(&g[0]), bytes(&cpu[0]));
        if let Some(m) = first_mismatch(&a, &b) {
            panic!(
                "seed {seed:#x} iter {iter} {what} ({:?}): GPU != CPU at {m}",
                model.nodes()[0].op
            );
        }
        if let Some(want) = reference_of(&model, &inputs) {
            if let Some(m) = first_mismatch(&b, &want) {
                panic!(
                    "seed {seed:#x} iter {iter} {what} ({:?}): CPU != qfuse::onnx::reference at {m}",
                    model.nodes()[0].op
                );
            }
            by_reference += 1;
        }
        distinct.extend(b.iter().copied());
        checked += b.len();
    }
    assert!(
        by_reference >= 140,
        "{by_reference} checked by the reference"
    );
    assert!(
        distinct.len() > 100,
        "outputs too uniform: {}",
        distinct.len()
    );
    println!("{checked} values GPU == CPU");
}

/// ORT's quantize divides: on inputs where `x / s` and `x * (1/s)` round
/// differently the CPU and the GPU follow the division (and differ from the
/// PyTorch rule, so the test can fail).
#[test]
fn quantize_divides_under_onnxruntime() {
    let ctx = gpu();
    let q = QParams::new(0.1, 3).unwrap();
    let inv = 1.0 / q.scale;
    let mut xs = Vec::new();
    let mut k = 0u32;
    while xs.len() < 64 {
        k += 1;
        let x = f32::from_bits(0x3e000000 + k * 7919);
        if (x / q.scale).round_ties_even() != (x * inv).round_ties_even() {
            xs.push(x);
        }
    }
    let info = TensorInfo {
        shape: vec![64],
        dtype: DType::F32,
    };
    let v = Value::F32 {
        data: xs.clone(),
        shape: vec![1, 64],
    };
    let (m, i) = single(Op::Quantize(q), vec![(info, v)]);
    let want: Vec<u8> = xs
        .iter()
        .map(|&x| ((x / q.scale).round_ties_even() as i32 + 3).clamp(0, 255) as u8)
        .collect();
    let cpu = bytes(&m.run_cpu(&i).unwrap()[0]);
    assert_eq!(first_mismatch(&cpu, &want), None);
    let g = bytes(&GpuModel::new(&ctx, &m).unwrap().run(&ctx, &i).unwrap()[0]);
    assert_eq!(first_mismatch(&g, &want), None);
}

// ---------------------------------------------------------------------------
// errors and the file form

fn q8(s: f32, z: i32) -> QParams {
    QParams::new(s, z).unwrap()
}

fn try_single(engine: Requant, op: Op, shape: &[usize], q: QParams) -> qfuse::Result<Model> {
    Model::new(
        engine,
        vec![(
            "x".into(),
            TensorInfo {
                shape: shape.to_vec(),
                dtype: DType::QUInt8(q),
            },
        )],
        vec!["y".into()],
        vec![Node {
            name: "y".into(),
            op,
            inputs: vec!["x".into()],
        }],
    )
}

#[test]
fn bad_ops_give_typed_errors() {
    let q = q8(0.1, 10);
    let s8 = QParams::new_i8(1.0 / 256.0, -128).unwrap();
    let gap = Op::GlobalAvgPool { out: q };
    let e = try_single(Requant::Fbgemm, gap.clone(), &[3, 4, 4], q).unwrap_err();
    assert!(matches!(e.root_cause(), Error::Config { .. }), "{e}");
    assert!(e.to_string().contains("onnxruntime"), "{e}");
    let e = try_single(ORT, gap, &[3, 4], q).unwrap_err();
    assert!(matches!(e.root_cause(), Error::Shape { .. }), "{e}");
    // ORT refuses x_scale / (y_scale * N) >= 256
    let e = try_single(ORT, Op::GlobalAvgPool { out: q8(1e-5, 0) }, &[3, 2, 2], q).unwrap_err();
    assert!(matches!(e.root_cause(), Error::QParams { .. }), "{e}");
    assert!(e.to_string().contains("2^-32, 256"), "{e}");
    let e = try_single(ORT, Op::Softmax { axis: 0, out: s8 }, &[3, 4], q).unwrap_err();
    assert!(matches!(e.root_cause(), Error::DType { .. }), "{e}");
    assert!(e.to_string().contains("qint8"), "{e}");
    let sm = Op::Softmax { axis: 2, out: q };
    let e = try_single(ORT, sm, &[3, 4], q).unwrap_err();
    assert!(matches!(e.root_cause(), Error::Config { .. }), "{e}");
    assert!(e.to_string().contains("axis 2"), "{e}");
    let pool = OrtPool2d {
        kernel: [2, 2],
        stride: [1, 1],
        pads: [0, 2, 0, 0],
        ceil_mode: false,
    };
    let ap = |pool| Op::AvgPoolRequant {
        pool,
        count_include_pad: false,
        out: q,
    };
    let e = try_single(ORT, ap(pool), &[3, 4, 4], q).unwrap_err();
    assert!(matches!(e.root_cause(), Error::Config { .. }), "{e}");
    assert!(e.to_string().contains("pads"), "{e}");
    let big = OrtPool2d {
        kernel: [9, 2],
        pads: [0; 4],
        ..pool
    };
    let e = try_single(ORT, ap(big), &[3, 4, 4], q).unwrap_err();
    assert!(matches!(e.root_cause(), Error::Shape { .. }), "{e}");
    let e = try_single(
        ORT,
        ap(OrtPool2d {
            pads: [0; 4],
            ..pool
        }),
        &[3, 4, 4],
        q8(1e-35, 0),
    )
    .unwrap_err();
    assert!(matches!(e.root_cause(), Error::QParams { .. }), "{e}");
}

#[test]
fn file_form_round_trips() {
    let q = q8(0.05, 7);
    let y = q8(0.02, 100);
    let nodes = vec![
        Node {
            name: "gap".into(),
            op: Op::GlobalAvgPool { out: y },
            inputs: vec!["x".into()],
        },
        Node {
            name: "ap".into(),
            op: Op::AvgPoolRequant {
                pool: OrtPool2d {
                    kernel: [3, 2],
                    stride: [2, 1],
                    pads: [1, 0, 2, 1],
                    ceil_mode: true,
                },
                count_include_pad: true,
                out: y,
            },
            inputs: vec!["x".into()],
        },
        Node {
            name: "sm".into(),
            op: Op::Softmax {
                axis: 1,
                out: q8(1.0 / 256.0, 0),
            },
            inputs: vec!["x".into()],
        },
    ];
    let m = Model::new(
        ORT,
        vec![(
            "x".into(),
            TensorInfo {
                shape: vec![3, 6, 5],
                dtype: DType::QUInt8(q),
            },
        )],
        vec!["gap".into(), "ap".into(), "sm".into()],
        nodes,
    )
    .unwrap();
    let back = Model::from_bytes(&m.to_bytes().unwrap()).unwrap();
    let mut rng = Rng(0xf11e);
    let x = Value::Q {
        data: rng.bytes(2 * 90),
        shape: vec![2, 3, 6, 5],
        q,
    };
    let a = m.run_cpu(std::slice::from_ref(&x)).unwrap();
    let b = back.run_cpu(&[x]).unwrap();
    assert_eq!(a, b);
    assert_eq!(back.nodes().len(), 3);
}

/// Exhaustive inputs where ORT's rule and a plausible alternative give other
/// bytes, found on the host: QLinearAveragePool's zero point added before
/// rounding (vs after), QLinearSoftmax's division by the sum (vs a multiply
/// by its reciprocal). The CPU and the GPU follow ORT's rule
/// (`qfuse::onnx::reference`) on every input, and the alternative differs on
/// some, so the test can fail.
#[test]
fn rules_that_differ_from_alternatives() {
    let ctx = gpu();
    let seed = 0xad_u64;
    let mut rng = Rng(seed);
    let all_pairs: Vec<u8> = (0..65536u32)
        .flat_map(|v| [v as u8, (v >> 8) as u8])
        .collect();
    // avg pool: one 1x2 window over every pair of bytes
    let mut found = 0;
    for attempt in 0..20000 {
        let signed = attempt % 2 == 1;
        let xq = rand_q(&mut rng, signed, 1e-3, 1.0);
        let yq = rand_q(&mut rng, signed, 1e-3, 1.0);
        let d = |b: u8| xq.scale * (b as i32 - xq.zero_point) as f32;
        let (z, lo) = (yq.true_zero_point() as f32, -(yq.offset() as f32));
        let differs = all_pairs.chunks(2).any(|p| {
            let w = (d(p[0]) + d(p[1])) / 2.0 / yq.scale;
            let ort = (w + z).round_ties_even().clamp(lo, lo + 255.0);
            ort != (w.round_ties_even() + z).clamp(lo, lo + 255.0)
        });
        if !differs {
            continue;
        }
        let alt: Vec<u8> = all_pairs
            .chunks(2)
            .map(|p| {
                let v = (d(p[0]) + d(p[1])) / 2.0;
                let r = (v / yq.scale).round_ties_even() + yq.true_zero_point() as f32;
                let lo = -(yq.offset() as f32);
                (r.clamp(lo, lo + 255.0) as i32 + yq.offset()) as u8
            })
            .collect();
        let op = Op::AvgPoolRequant {
            pool: OrtPool2d {
                kernel: [1, 2],
                stride: [1, 2],
                pads: [0; 4],
                ceil_mode: false,
            },
            count_include_pad: false,
            out: yq,
        };
        let info = TensorInfo {
            shape: vec![1, 1, 2],
            dtype: DType::QUInt8(xq),
        };
        let v = Value::Q {
            data: all_pairs.clone(),
            shape: vec![65536, 1, 1, 2],
            q: xq,
        };
        let (m, i) = single(op, vec![(info, v)]);
        let want = reference_of(&m, &i).unwrap();
        assert!(first_mismatch(&alt, &want).is_some(), "seed {seed:#x}");
        let cpu = bytes(&m.run_cpu(&i).unwrap()[0]);
        let g = bytes(&GpuModel::new(&ctx, &m).unwrap().run(&ctx, &i).unwrap()[0]);
        if let Some(e) = first_mismatch(&cpu, &want) {
            panic!("seed {seed:#x} attempt {attempt} avg pool {xq:?} {yq:?}: CPU {e}");
        }
        if let Some(e) = first_mismatch(&g, &want) {
            panic!("seed {seed:#x} attempt {attempt} avg pool {xq:?} {yq:?}: GPU {e}");
        }
        found += 1;
        if found == 4 {
            break;
        }
    }
    assert_eq!(
        found, 4,
        "seed {seed:#x}: too few avg pool qparams with a difference"
    );
    // softmax over 2 values: every pair of bytes, input scales searched
    let mut found = 0;
    for attempt in 0..20000 {
        let signed = attempt % 2 == 1;
        let xq = rand_q(&mut rng, signed, 1e-2, 4.0);
        let yq = if signed {
            QParams::new_i8(1.0 / 256.0, -128).unwrap()
        } else {
            QParams::new(1.0 / 256.0, 0).unwrap()
        };
        let t = qfuse::ops::softmax_table(xq.scale, 2);
        let differs = (0..256).any(|d| {
            let sum = t[0] + t[d];
            [t[0], t[d]].iter().any(|&e| {
                let p = e * 256.0;
                (p / sum).round_ties_even() != (p * (1.0 / sum)).round_ties_even()
            })
        });
        if !differs {
            continue;
        }
        let info = TensorInfo {
            shape: vec![2],
            dtype: DType::QUInt8(xq),
        };
        let v = Value::Q {
            data: all_pairs.clone(),
            shape: vec![65536, 2],
            q: xq,
        };
        let (m, i) = single(Op::Softmax { axis: 0, out: yq }, vec![(info, v)]);
        let want = reference_of(&m, &i).unwrap();
        let cpu = bytes(&m.run_cpu(&i).unwrap()[0]);
        let g = bytes(&GpuModel::new(&ctx, &m).unwrap().run(&ctx, &i).unwrap()[0]);
        if let Some(e) = first_mismatch(&cpu, &want) {
            panic!("seed {seed:#x} attempt {attempt} softmax {xq:?}: CPU {e}");
        }
        if let Some(e) = first_mismatch(&g, &want) {
            panic!("seed {seed:#x} attempt {attempt} softmax {xq:?}: GPU {e}");
        }
        found += 1;
        if found == 4 {
            break;
        }
    }
    assert_eq!(
        found, 4,
        "seed {seed:#x}: too few softmax scales with a difference"
    );
}

/// Under ONNX Runtime a dequantize followed by a quantize (a DQ -> Q pair)
/// is ORT's rule DQ then rule Q (divide): on the GPU one requantize table,
/// on the CPU the two ops; both equal `qfuse::onnx::reference`.
#[test]
fn dequantize_quantize_pair_divides() {
    let ctx = gpu();
    let seed = 0xd9_u64;
    let mut rng = Rng(seed);
    for iter in 0..20 {
        let signed = iter % 2 == 1;
        let xq = rand_q(&mut rng, signed, 1e-3, 1.0);
        let y_signed = rng.range(0, 1) == 1;
        let yq = rand_q(&mut rng, y_signed, 1e-3, 1.0);
        let x = q_input(&mut rng, 2, &[5, 3, 2], xq);
        let nodes = vec![
            Node {
                name: "d".into(),
                op: Op::Dequantize,
                inputs: vec!["x".into()],
            },
            Node {
                name: "y".into(),
                op: Op::Quantize(yq),
                inputs: vec!["d".into()],
            },
        ];
        let m = Model::new(ORT, vec![("x".into(), x.0)], vec!["y".into()], nodes).unwrap();
        let i = vec![x.1];
        let t = tensor_of(&i[0]);
        let axis = |q: QParams| QAxis {
            scales: vec![q.scale],
            zero_points: vec![q.true_zero_point()],
            axis: None,
            dtype: if q.signed { ElemType::I8 } else { ElemType::U8 },
        };
        let d = qfuse::onnx::reference::dequantize(&t, &axis(xq)).unwrap();
        let want = match qfuse::onnx::reference::quantize(&d, &axis(yq))
            .unwrap()
            .data
        {
            TensorData::U8(v) => v,
            TensorData::I8(v) => v.iter().map(|&b| (b as u8) ^ 0x80).collect(),
            _ => panic!("type"),
        };
        let cpu = bytes(&m.run_cpu(&i).unwrap()[0]);
        let g = bytes(&GpuModel::new(&ctx, &m).unwrap().run(&ctx, &i).unwrap()[0]);
        if let Some(e) = first_mismatch(&cpu, &want) {
            panic!("seed {seed:#x} iter {iter} {xq:?} -> {yq:?}: CPU {e}");
        }
        if let Some(e) = first_mismatch(&g, &want) {
            panic!("seed {seed:#x} iter {iter} {xq:?} -> {yq:?}: GPU {e}");
        }
    }
}
