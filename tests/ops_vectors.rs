//! Each op alone against vectors made by PyTorch's quantized operators
//! (`tests/data/ops`, made by `tools/gen_ops.py`): the op runs as a one-node
//! model on the CPU reference and on the GPU, and both equal PyTorch's output
//! bit for bit. Cases with a `producer` take their input from a quantized
//! conv2d (a channels-last tensor in PyTorch): they run as conv2d -> op, and
//! the conv's output must equal the case's input too.

mod common;

use std::path::{Path, PathBuf};

use common::{first_mismatch, first_mismatch_bits, gpu, TensorFile};
use qfuse::layer::LayerKind;
use qfuse::model::{DType, Model, Node, Op, TensorInfo, Value};
use qfuse::ops::{AvgPoolOpts, Pool2d};
use qfuse::{Activation, Conv2dGeometry, Engine, GpuContext, QLayer, QParams, Requant};

fn pair(v: &serde_json::Value) -> [usize; 2] {
    [
        v[0].as_u64().unwrap() as usize,
        v[1].as_u64().unwrap() as usize,
    ]
}

fn qp(s: &serde_json::Value, z: &serde_json::Value) -> QParams {
    QParams::new(s.as_f64().unwrap() as f32, z.as_i64().unwrap() as i32).unwrap()
}

/// The case as a one-node model (two with a producer conv), its inputs and
/// PyTorch's outputs (the op's; with a producer also the op's input).
/// A `conv_transpose2d` case as qfuse runs it (and the exporter writes it):
/// a gather dilating the input with zero-point fill bytes, then a conv2d with
/// the flipped, channel-swapped weight (under x86/oneDNN first scrambled as
/// PyTorch does), with the rule PyTorch ran the layer with.
fn conv_transpose_model(f: &TensorFile) -> (Model, Vec<Value>, Vec<Value>) {
    use qfuse::ops::conv::{conv_transpose_weight, onednn_conv_transpose_weight};
    use qfuse::ops::gather::conv_transpose_index;
    let m = f.meta("case");
    let pytorch_engine = Engine::parse(m["engine"].as_str().unwrap()).unwrap();
    let rule = Requant::parse(m["requant"].as_str().unwrap()).unwrap();
    let in_q = qp(&m["input_scale"], &m["input_zero_point"]);
    let out_q = qp(&m["output_scale"], &m["output_zero_point"]);
    let shape = f.shape("input");
    let wshape = f.shape("weight");
    let (cin, og, k) = (wshape[0], wshape[1], [wshape[2], wshape[3]]);
    let groups = m["groups"].as_u64().unwrap() as usize;
    let cout = og * groups;
    let dilation = pair(&m["dilation"]);
    let (gshape, index) = conv_transpose_index(
        &shape[1..],
        k,
        pair(&m["stride"]),
        pair(&m["padding"]),
        pair(&m["output_padding"]),
        dilation,
        in_q.zero_point as u8,
    )
    .unwrap();
    let mut w = f.i8("weight");
    if rule == Requant::Onednn {
        w = onednn_conv_transpose_weight(&w, cin, og, groups, k).unwrap();
    }
    let w = conv_transpose_weight(&w, cin, og, groups, k).unwrap();
    let geom = Conv2dGeometry::new(cin, cout, k)
        .dilation(dilation)
        .groups(groups);
    let layer = QLayer::from_pytorch(
        LayerKind::Conv2d,
        geom,
        w,
        f.f32("weight_scale"),
        &vec![0; cout],
        f.f32("bias"),
        in_q,
        out_q,
        Activation::None,
        rule,
    )
    .unwrap();
    let nodes = vec![
        Node {
            name: "dilate".into(),
            op: Op::Gather {
                shape: gshape,
                index: std::sync::Arc::new(index),
            },
            inputs: vec!["x".into()],
        },
        Node {
            name: "y".into(),
            op: Op::Conv2d(Box::new(layer)),
            inputs: vec!["dilate".into()],
        },
    ];
    let inputs = vec![(
        "x".to_string(),
        TensorInfo {
            shape: shape[1..].to_vec(),
            dtype: DType::QUInt8(in_q),
        },
    )];
    let model = Model::new(pytorch_engine.requant(), inputs, vec!["y".into()], nodes)
        .and_then(|m| m.with_pytorch_engine(pytorch_engine))
        .unwrap_or_else(|e| panic!("{}: {e}", m["name"]));
    let values = vec![Value::Q {
        data: f.u8("input"),
        shape,
        q: in_q,
    }];
    let want = vec![Value::Q {
        data: f.u8("output"),
        shape: f.shape("output"),
        q: out_q,
    }];
    (model, values, want)
}

fn case_model(f: &TensorFile) -> (Model, Vec<Value>, Vec<Value>) {
    let m = f.meta("case");
    let op_name = m["op"].as_str().unwrap();
    if op_name == "conv_transpose2d" {
        return conv_transpose_model(f);
    }
    let pytorch_engine = Engine::parse(m["engine"].as_str().unwrap()).unwrap();
    let engine = pytorch_engine.requant();
    let out_q = || qp(&m["output_scale"], &m["output_zero_point"]);
    let n_in = if f.has("input_0") {
        m["input_scale"].as_array().unwrap().len()
    } else {
        1
    };
    let in_name = |i: usize| {
        if n_in == 1 && f.has("input") {
            "input".to_string()
        } else {
            format!("input_{i}")
        }
    };
    let in_q = |i: usize| {
        if m["input_scale"].is_array() {
            qp(&m["input_scale"][i], &m["input_zero_point"][i])
        } else {
            qp(&m["input_scale"], &m["input_zero_point"])
        }
    };
    let pool = || Pool2d {
        kernel: pair(&m["kernel"]),
        stride: pair(&m["stride"]),
        padding: pair(&m["padding"]),
        dilation: if m["dilation"].is_null() {
            [1, 1]
        } else {
            pair(&m["dilation"])
        },
        ceil_mode: m["ceil_mode"].as_bool().unwrap(),
    };
    let op = match op_name {
        "quantize" => Op::Quantize(out_q()),
        "dequantize" => Op::Dequantize,
        "add" | "add_relu" => Op::Add {
            relu: op_name == "add_relu",
            out: out_q(),
        },
        "max_pool2d" => Op::MaxPool2d(pool()),
        "avg_pool2d" => Op::AvgPool2d(
            pool(),
            AvgPoolOpts {
                count_include_pad: m["count_include_pad"].as_bool().unwrap(),
                divisor_override: m["divisor_override"].as_u64().map(|d| d as usize),
            },
        ),
        "adaptive_avg_pool2d" => Op::AdaptiveAvgPool2d(pair(&m["output_size"])),
        "mean" => Op::Mean {
            keepdim: m["keepdim"].as_bool().unwrap(),
        },
        "relu" => Op::Relu,
        "relu6" => Op::Relu6,
        "hardtanh" => Op::Hardtanh {
            min: m["min_val"].as_f64().unwrap() as f32,
            max: m["max_val"].as_f64().unwrap() as f32,
        },
        "hardswish" => Op::Hardswish(out_q()),
        "cat" => Op::Cat(out_q()),
        "mul" | "mul_relu" => Op::Mul {
            relu: op_name == "mul_relu",
            out: out_q(),
        },
        // PyTorch's table ops, as the exporter writes them: one table when
        // ATen's vector body and scalar tail agree on every byte, else both
        "hardsigmoid" | "sigmoid" | "silu" | "leaky_relu" | "elu" | "add_scalar" | "mul_scalar" => {
            let mut table: Box<[u8; 256]> = Box::new(f.u8("table").try_into().unwrap());
            let tail: Box<[u8; 256]> = Box::new(f.u8("tail_table").try_into().unwrap());
            let s = f.shape("input");
            let both = s[1] == 1 || (s[2] == 1 && s[3] == 1);
            if op_name == "elu" && m["input_layout"] == "channels_last" && !both {
                // quantized.elu writes a contiguous output: on a channels-last
                // input every element takes ATen's scalar path (the exporter's
                // lut of the tail table)
                table = tail.clone();
            }
            if table == tail {
                Op::Lut {
                    table,
                    out: out_q(),
                }
            } else {
                Op::LutSplit {
                    table,
                    tail,
                    out: out_q(),
                }
            }
        }
        other => panic!("unknown op {other}"),
    };
    let (mut inputs, mut values) = (Vec::new(), Vec::new());
    if op_name == "quantize" {
        let shape = f.shape("float_input");
        inputs.push((
            "x".to_string(),
            TensorInfo {
                shape: shape[1..].to_vec(),
                dtype: DType::F32,
            },
        ));
        values.push(Value::F32 {
            data: f.f32("float_input"),
            shape,
        });
    } else {
        for i in 0..n_in {
            let name = in_name(i);
            let shape = f.shape(&name);
            inputs.push((
                format!("x{i}"),
                TensorInfo {
                    shape: shape[1..].to_vec(),
                    dtype: DType::QUInt8(in_q(i)),
                },
            ));
            values.push(Value::Q {
                data: f.u8(&name),
                shape,
                q: in_q(i),
            });
        }
    }
    let mut node = Node {
        name: "y".into(),
        op,
        inputs: inputs.iter().map(|(n, _)| n.clone()).collect(),
    };
    let mut nodes = Vec::new();
    let mut outputs = vec!["y".to_string()];
    let mut wants = Vec::new();
    // conv2d (fbgemm rule) -> op: the op's input is channels-last, as in
    // PyTorch. `producer` feeds input 0; `producer_1` (add with both inputs
    // or only the second channels-last) input 1, from `conv1.*`/`conv_input_1`.
    for (i, key, pre, cin_name) in [
        (0usize, "producer", "conv", "conv_input"),
        (1, "producer_1", "conv1", "conv_input_1"),
    ] {
        let pr = &m[key];
        if pr.is_null() {
            continue;
        }
        assert_eq!(pr["op"], "conv2d");
        let wshape = f.shape(&format!("{pre}.weight"));
        let (o, cin) = (wshape[0], wshape[1]);
        let q_in = qp(&pr["input_scale"], &pr["input_zero_point"]);
        let geom =
            Conv2dGeometry::new(cin, o, [wshape[2], wshape[3]]).padding(pair(&pr["padding"]));
        let layer = QLayer::from_pytorch(
            LayerKind::Conv2d,
            geom,
            f.i8(&format!("{pre}.weight")),
            f.f32(&format!("{pre}.weight_scale")),
            &vec![0; o],
            f.f32(&format!("{pre}.bias")),
            q_in,
            in_q(i),
            Activation::None,
            Requant::parse(pr["requant"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
        let cshape = f.shape(cin_name);
        inputs[i] = (
            format!("x{i}"),
            TensorInfo {
                shape: cshape[1..].to_vec(),
                dtype: DType::QUInt8(q_in),
            },
        );
        values[i] = Value::Q {
            data: f.u8(cin_name),
            shape: cshape,
            q: q_in,
        };
        let conv = if i == 0 {
            "conv".to_string()
        } else {
            format!("conv{i}")
        };
        nodes.push(Node {
            name: conv.clone(),
            op: Op::Conv2d(Box::new(layer)),
            inputs: vec![format!("x{i}")],
        });
        node.inputs[i] = conv.clone();
        outputs.push(conv);
        wants.push(Value::Q {
            data: f.u8(&in_name(i)),
            shape: f.shape(&in_name(i)),
            q: in_q(i),
        });
    }
    nodes.push(node);
    let model = Model::new(engine, inputs, outputs, nodes)
        .and_then(|m| m.with_pytorch_engine(pytorch_engine))
        .unwrap_or_else(|e| panic!("{}: {e}", m["name"]));
    let oshape = f.shape("output");
    let want = if op_name == "dequantize" {
        Value::F32 {
            data: f.f32("output"),
            shape: oshape,
        }
    } else {
        let q = if op_name == "max_pool2d"
            || op_name == "avg_pool2d"
            || op_name.starts_with("adaptive")
            || op_name == "mean"
            || op_name.starts_with("relu")
            || op_name == "hardtanh"
        {
            in_q(0)
        } else {
            out_q()
        };
        Value::Q {
            data: f.u8("output"),
            shape: oshape,
            q,
        }
    };
    wants.insert(0, want);
    (model, values, wants)
}

fn compare(got: &Value, want: &Value) -> Option<String> {
    if got.shape() != want.shape() {
        return Some(format!("shape {:?}, want {:?}", got.shape(), want.shape()));
    }
    match (got, want) {
        (Value::Q { data: g, q: gq, .. }, Value::Q { data: w, q: wq, .. }) => {
            if gq != wq {
                return Some(format!("qparams {gq:?}, want {wq:?}"));
            }
            first_mismatch(g, w)
        }
        (Value::F32 { data: g, .. }, Value::F32 { data: w, .. }) => first_mismatch_bits(g, w),
        _ => Some("dtype differs".into()),
    }
}

fn cases() -> Vec<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ops");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    v.sort();
    v
}

fn run_all(ctx: Option<&GpuContext>) {
    let files = cases();
    assert!(
        files.len() >= 200,
        "expected the committed op vectors, found {}",
        files.len()
    );
    let (mut passed, mut failed) = (0, 0);
    for p in &files {
        let f = TensorFile::open(p);
        let name = f.meta("case")["name"].as_str().unwrap().to_string();
        let (model, inputs, want) = case_model(&f);
        let got = match ctx {
            None => model.run_cpu(&inputs),
            Some(ctx) => qfuse::GpuModel::new(ctx, &model).and_then(|g| g.run(ctx, &inputs)),
        };
        let problem = match got {
            Ok(out) => out
                .iter()
                .zip(&want)
                .enumerate()
                .find_map(|(i, (g, w))| compare(g, w).map(|m| format!("output {i}: {m}"))),
            Err(e) => Some(e.to_string()),
        };
        match problem {
            None => passed += 1,
            Some(m) => {
                failed += 1;
                println!(
                    "FAIL {name} ({}): {m}",
                    if ctx.is_some() { "GPU" } else { "CPU" }
                );
            }
        }
    }
    println!(
        "{}: {passed} passed, {failed} failed",
        if ctx.is_some() { "GPU" } else { "CPU" }
    );
    assert_eq!(failed, 0);
}

#[test]
fn ops_on_cpu_equal_pytorch() {
    run_all(None);
}

#[test]
fn ops_on_gpu_equal_pytorch() {
    let ctx = gpu();
    run_all(Some(&ctx));
}
