//! `binary` with ONNX Runtime's QLinearAdd / QLinearMul tables against the
//! committed ORT 1.32 vectors (`tests/data/onnx/ops`, every QLinearAdd,
//! QLinearMul and QDQ Add/Mul case): each lowered model runs node by node,
//! the Add/Mul nodes as a one-node qfuse model holding an `Op::Binary` (CPU
//! and GPU), the other nodes (Quantize, Dequantize) by `qfuse::onnx::reference`;
//! the outputs equal ORT's bit for bit. The role swap ("the varying input is
//! A") is done here, as a converter does it.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::gpu;
use qfuse::model::{DType, Model, Node, Op, TensorInfo, Value};
use qfuse::onnx::{reference, OnnxGraph, QOp, QType, Tensor, TensorData, Q};
use qfuse::{GpuContext, QParams, Requant};

fn ops_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx/ops")
}

fn qparams(q: &Q) -> QParams {
    match q.dtype {
        QType::U8 => QParams::new(q.scale, q.zero_point).unwrap(),
        QType::I8 => QParams::new_i8(q.scale, q.zero_point).unwrap(),
    }
}

/// Stored bytes (uint8 images for int8).
fn stored(t: &Tensor) -> Vec<u8> {
    match &t.data {
        TensorData::U8(v) => v.clone(),
        TensorData::I8(v) => v.iter().map(|&x| (x as i32 + 128) as u8).collect(),
        _ => panic!("not quantized"),
    }
}

fn from_stored(bytes: &[u8], dims: Vec<usize>, signed: bool) -> Tensor {
    let data = if signed {
        TensorData::I8(bytes.iter().map(|&b| (b as i32 - 128) as i8).collect())
    } else {
        TensorData::U8(bytes.to_vec())
    };
    Tensor { dims, data }
}

fn pad(s: &[usize], r: usize) -> Vec<usize> {
    std::iter::repeat_n(1, r - s.len())
        .chain(s.iter().copied())
        .collect()
}

/// ORT's broadcast loop hands the kernel the varying input as "A": true when
/// input A is the single value over the innermost run (the roles swap).
fn ort_swaps(sa: &[usize], sb: &[usize]) -> bool {
    let r = sa.len().max(sb.len());
    let (sa, sb) = (pad(sa, r), pad(sb, r));
    let (pa, pb): (usize, usize) = (sa.iter().product(), sb.iter().product());
    if pb == 1 && pa != 1 {
        return false;
    }
    if pa == 1 && pb != 1 {
        return true;
    }
    if sa == sb {
        return false;
    }
    let mut i = r as isize - 1;
    while i >= 0 && sa[i as usize] == sb[i as usize] {
        i -= 1;
    }
    let i = i.max(0) as usize;
    if sb[i..].iter().all(|&d| d == 1) {
        return false;
    }
    sa[i..].iter().all(|&d| d == 1)
}

/// One QLinearAdd/QLinearMul as an `Op::Binary` model, run on the CPU and
/// (with a context) the GPU; both must agree. Returns the output tensor.
fn run_binary(ctx: Option<&GpuContext>, op: &QOp, x: &Tensor, y: &Tensor, at: &str) -> Tensor {
    let (qa, qb, qy, add) = match op {
        QOp::Add { a, b, y } => (qparams(a), qparams(b), qparams(y), true),
        QOp::Mul { a, b, y } => (qparams(a), qparams(b), qparams(y), false),
        _ => unreachable!(),
    };
    let table = |a: QParams, b: QParams| {
        if add {
            qfuse::ops::ort_add_table(a, b, qy)
        } else {
            qfuse::ops::ort_mul_table(a, b, qy)
        }
    };
    let r = x.dims.len().max(y.dims.len());
    let (da, db) = (pad(&x.dims, r), pad(&y.dims, r));
    // input 0 must be the one of the output's shape
    let a_full = da.iter().zip(&db).all(|(a, b)| a >= b);
    let swap = ort_swaps(&x.dims, &y.dims);
    // the kernel's roles (ORT): A = varying input after the swap
    let t = if swap { table(qb, qa) } else { table(qa, qb) };
    // qfuse's roles: input 0 = the full-shape input; the table indexed [in0 * 256 + in1]
    let (in0, in1, q0, q1, t) = match (a_full, swap) {
        (true, false) => (x, y, qa, qb, t),
        (true, true) => (x, y, qa, qb, qfuse::ops::transpose_table(&t)),
        (false, true) => (y, x, qb, qa, t),
        (false, false) => (y, x, qb, qa, qfuse::ops::transpose_table(&t)),
    };
    let (d0, d1) = (pad(&in0.dims, r), pad(&in1.dims, r));
    assert_eq!(d0[0], d1[0], "{at}: batch dims {d0:?} {d1:?}");
    let info = |d: &[usize], q: QParams| TensorInfo {
        shape: d[1..].to_vec(),
        dtype: DType::QUInt8(q),
    };
    let model = Model::new(
        Requant::OnnxRuntime,
        vec![("a".into(), info(&d0, q0)), ("b".into(), info(&d1, q1))],
        vec!["y".into()],
        vec![Node {
            name: "y".into(),
            op: Op::Binary {
                table: Arc::new(t),
                out: qy,
            },
            inputs: vec!["a".into(), "b".into()],
        }],
    )
    .unwrap_or_else(|e| panic!("{at}: {e}"));
    let inputs = vec![
        Value::Q {
            data: stored(in0),
            shape: d0.clone(),
            q: q0,
        },
        Value::Q {
            data: stored(in1),
            shape: d1,
            q: q1,
        },
    ];
    let cpu = model
        .run_cpu(&inputs)
        .unwrap_or_else(|e| panic!("{at}: {e}"));
    let bytes = match &cpu[0] {
        Value::Q { data, .. } => data.clone(),
        _ => panic!(),
    };
    if let Some(ctx) = ctx {
        let g = qfuse::GpuModel::new(ctx, &model)
            .and_then(|g| g.run(ctx, &inputs))
            .unwrap_or_else(|e| panic!("{at}: {e}"));
        match &g[0] {
            Value::Q { data, .. } => {
                if let Some(m) = common::first_mismatch(data, &bytes) {
                    panic!("{at}: GPU vs CPU: {m}");
                }
            }
            _ => panic!(),
        }
    }
    from_stored(&bytes, d0, qy.signed)
}

fn run_all(ctx: Option<&GpuContext>) {
    let s = std::fs::read_to_string(ops_dir().join("manifest.json")).expect("manifest");
    let m: serde_json::Value = serde_json::from_str(&s).expect("manifest JSON");
    let (mut cases, mut values, mut swapped) = (Vec::new(), 0, 0);
    for case in m["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().unwrap();
        let op = case["op"].as_str().unwrap_or("");
        if !matches!(op, "QLinearAdd" | "QLinearMul" | "Add" | "Mul") {
            continue;
        }
        let dir = ops_dir().join(name);
        let l = OnnxGraph::load(dir.join("model.onnx"))
            .and_then(|g| g.lower())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let inputs: Vec<Tensor> = case["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| qfuse::npy::read_tensor(dir.join(i["file"].as_str().unwrap())).expect("npy"))
            .collect();
        let mut env: Vec<Option<Tensor>> = l.values.iter().map(|v| v.constant.clone()).collect();
        for (&id, t) in l.inputs.iter().zip(&inputs) {
            env[id] = Some(t.clone());
        }
        let mut binaries = 0;
        for n in &l.nodes {
            let ins: Vec<&Tensor> = n.inputs.iter().map(|&v| env[v].as_ref().unwrap()).collect();
            let y = match &n.op {
                QOp::Add { .. } | QOp::Mul { .. } => {
                    binaries += 1;
                    swapped += ort_swaps(&ins[0].dims, &ins[1].dims) as usize;
                    run_binary(ctx, &n.op, ins[0], ins[1], &format!("{name}/{}", n.name))
                }
                op => {
                    reference::eval_op(op, &ins, l.values[n.outputs[0]].shape.as_deref(), &n.name)
                        .unwrap_or_else(|e| panic!("{name}: {e}"))
                }
            };
            env[n.outputs[0]] = Some(y);
        }
        assert_eq!(binaries, 1, "{name}: one Add/Mul expected");
        for (j, o) in case["outputs"].as_array().unwrap().iter().enumerate() {
            let want = qfuse::npy::read_tensor(dir.join(o["file"].as_str().unwrap())).expect("npy");
            let got = env[l.outputs[j]].as_ref().unwrap();
            assert_eq!(got.dims, want.dims, "{name}: output {j} shape");
            let problem = match (&got.data, &want.data) {
                (TensorData::F32(g), TensorData::F32(w)) => common::first_mismatch_bits(g, w),
                _ => common::first_mismatch(&stored(got), &stored(&want)),
            };
            if let Some(msg) = problem {
                panic!("{name}: output {j}: {msg}");
            }
            values += want.len();
        }
        cases.push(name.to_string());
    }
    println!(
        "{} cases ({swapped} with ORT's role swap), {values} values bit-exact: {}",
        cases.len(),
        cases.join(" ")
    );
    assert_eq!(cases.len(), 38); // 8 with a constant operand (q*_const_a, q*_const_b)
    assert!(swapped >= 4);
}

#[test]
fn ort_add_mul_vectors_on_cpu() {
    run_all(None);
}

#[test]
fn ort_add_mul_vectors_on_gpu() {
    let ctx = gpu();
    run_all(Some(&ctx));
}
