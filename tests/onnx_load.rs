//! The ONNX front end (`qfuse::onnx`) against the committed ONNX Runtime 1.32
//! vectors (`tests/data/onnx/ops`, see its README): every case parses and
//! lowers to the kernels ORT ran (its `ort_nodes`), or is refused with the
//! documented error; the reference evaluation of the lowered Quantize,
//! Dequantize, Conv, MatMul and Gemm ops equals ORT's outputs bit for bit; bad
//! files (truncated, corrupted, unknown op, wrong opset, missing initializer,
//! inconsistent sizes, external data past the end, uint8 weights) give a clear
//! error and never a panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;
use qfuse::onnx::proto::{
    attribute_proto::AttributeType, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use qfuse::onnx::{
    reference, AccOut, ElemType, OnnxGraph, QOp, QType, TableKind, Tensor, TensorData, ValueKind,
};
use qfuse::Error;

fn ops_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx/ops")
}

fn manifest() -> Vec<serde_json::Value> {
    let s = std::fs::read_to_string(ops_dir().join("manifest.json")).expect("manifest.json");
    let m: serde_json::Value = serde_json::from_str(&s).expect("manifest JSON");
    m["cases"].as_array().expect("cases").clone()
}

/// The cases qfuse refuses, with the variant and a phrase of the error.
/// Everything else in the manifest must lower to ORT's kernels.
fn refused() -> BTreeMap<&'static str, (&'static str, &'static str)> {
    let u8w = ("unsupported", "uint8 weights with zero point");
    let float_conv = ("unsupported", "ORT runs this Conv in float; not supported");
    BTreeMap::from([
        ("qlinearconv_u8_u8w_pc", u8w),
        ("qlinearconv_u8_u8w_pt", u8w),
        ("qlinearmatmul_u8_u8w_pt", u8w),
        ("matmulinteger_u8_u8", u8w),
        ("convinteger_u8", u8w),
        ("convinteger_u8_s2_grouped", u8w),
        (
            "matmulinteger_u8_s8_dynamic_b",
            ("unsupported", "weight 'b' is not a constant initializer"),
        ),
        ("qdq_conv_u8_relu_zp_not_min", float_conv),
        ("qdq_conv_u8_clip_kept", float_conv),
        ("qdq_conv_s8_relu_zp_not_min", float_conv),
        ("qdq_conv_s8_clip_kept", float_conv),
        ("qdq_conv_s8_quantized_input", float_conv),
    ])
}

fn variant(e: &Error) -> &'static str {
    match e {
        Error::Onnx { .. } => "bad",
        Error::OnnxUnsupported { .. } => "unsupported",
        _ => "other",
    }
}

/// ORT's executed node types, domain and layout Transposes left out, sorted.
fn ort_signature(case: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = case["ort_nodes"]
        .as_array()
        .expect("ort_nodes")
        .iter()
        .map(|s| {
            let s = s.as_str().expect("string");
            s.rsplit("::").next().unwrap_or(s).to_string()
        })
        .filter(|s| s != "Transpose")
        .collect();
    v.sort();
    v
}

#[test]
fn every_case_lowers_to_the_kernels_ort_ran() {
    let refused = refused();
    let (mut ok, mut no) = (0, 0);
    let mut failures = Vec::new();
    for case in manifest() {
        let name = case["name"].as_str().expect("name");
        let path = ops_dir().join(name).join("model.onnx");
        let result = OnnxGraph::load(&path).and_then(|g| g.lower());
        match (refused.get(name), result) {
            (None, Ok(l)) => {
                let (got, want) = (l.kernel_signature(), ort_signature(&case));
                if got == want {
                    ok += 1;
                } else {
                    failures.push(format!("{name}: lowered to {got:?}, ORT ran {want:?}"));
                }
            }
            (None, Err(e)) => failures.push(format!("{name}: refused: {e}")),
            (Some((v, phrase)), Err(e)) => {
                let msg = e.to_string();
                if variant(&e) == *v && msg.contains(phrase) && msg.contains("node #") {
                    no += 1;
                } else {
                    failures.push(format!(
                        "{name}: wrong error {msg:?}, want {v} with {phrase:?}"
                    ));
                }
            }
            (Some(_), Ok(_)) => failures.push(format!("{name}: lowered, but should be refused")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // 289 cases: 277 lowered exactly as ORT runs them, 12 refused
    assert_eq!((ok, no), (277, 12));
}

/// Every lowered case, run by the plain-loop reference of ORT's rules
/// (`qfuse::onnx::reference`), gives ORT's outputs bit for bit: the descriptors
/// carry what the kernels need.
#[test]
fn reference_of_lowered_ops_bit_exact_with_ort() {
    let refused = refused();
    let mut checked = Vec::new();
    let mut values = 0usize;
    for case in manifest() {
        let name = case["name"].as_str().expect("name");
        if refused.contains_key(name) {
            continue;
        }
        let dir = ops_dir().join(name);
        let l = OnnxGraph::load(dir.join("model.onnx"))
            .and_then(|g| g.lower())
            .expect("lowers");
        assert!(
            !l.nodes.iter().any(|n| n.op.kind() == "FloatTail"),
            "{name}"
        );
        let inputs: Vec<Tensor> = case["inputs"]
            .as_array()
            .expect("inputs")
            .iter()
            .map(|i| {
                qfuse::npy::read_tensor(dir.join(i["file"].as_str().expect("file"))).expect("npy")
            })
            .collect();
        let got = reference::run(&l, &inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (j, o) in case["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .enumerate()
        {
            let want =
                qfuse::npy::read_tensor(dir.join(o["file"].as_str().expect("file"))).expect("npy");
            assert_eq!(got[j].dims, want.dims, "{name}: output {j} shape");
            assert_eq!(
                got[j].elem_type(),
                want.elem_type(),
                "{name}: output {j} type"
            );
            let (g, w) = (got[j].bits(), want.bits());
            if let Some(i) = (0..w.len()).find(|&i| g[i] != w[i]) {
                let n = (0..w.len()).filter(|&i| g[i] != w[i]).count();
                panic!(
                    "{name}: output {j}: {n}/{} differ, first at flat {i}: got {:?}, ORT {:?}",
                    w.len(),
                    slice(&got[j], i),
                    slice(&want, i)
                );
            }
            values += w.len();
        }
        checked.push(name.to_string());
    }
    println!(
        "{} cases, {values} values bit-exact: {}",
        checked.len(),
        checked.join(" ")
    );
    // every case qfuse supports
    assert_eq!(checked.len(), 277);
}

fn slice(t: &Tensor, i: usize) -> String {
    match &t.data {
        TensorData::F32(v) => format!("{}", v[i]),
        TensorData::U8(v) => format!("{}", v[i]),
        TensorData::I8(v) => format!("{}", v[i]),
        TensorData::I32(v) => format!("{}", v[i]),
        TensorData::I64(v) => format!("{}", v[i]),
    }
}

fn lower_case(name: &str) -> qfuse::onnx::Lowered {
    OnnxGraph::load(ops_dir().join(name).join("model.onnx"))
        .and_then(|g| g.lower())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// What the descriptors carry for a few cases whose decisions matter.
#[test]
fn descriptors_follow_ort_decisions() {
    // int8 QDQ model: the single-consumer int8 Q->DQ pairs became uint8, zero point + 128
    let l = lower_case("qdq_conv_s8_pc_w7");
    let conv = l
        .nodes
        .iter()
        .find(|n| n.op.kind() == "Conv")
        .expect("conv");
    let QOp::Conv { x, w, out, .. } = &conv.op else {
        unreachable!()
    };
    assert_eq!(x.dtype, QType::U8);
    let g = OnnxGraph::load(ops_dir().join("qdq_conv_s8_pc_w7/model.onnx")).expect("load");
    let s8_zp = g.initializers["zp_5"].data.to_i64().expect("int")[0];
    assert_eq!(x.zero_point as i64, s8_zp + 128);
    assert_eq!(w.scales.len(), w.shape[0], "per-channel weight scales");
    let AccOut::Requant { y, multipliers } = out else {
        panic!("requant")
    };
    assert_eq!(y.dtype, QType::U8);
    assert_eq!(multipliers[3], (x.scale * w.scales[3]) / y.scale);

    // float bias quantized as rint(b / (xs * ws)) (f32 product, f32 division)
    let g = OnnxGraph::load(ops_dir().join("qdq_conv_u8_float_bias/model.onnx")).expect("load");
    let b = g.initializers["b_11"].as_f32().expect("f32").to_vec();
    let xs = g.initializers["s_4"].as_f32().expect("f32")[0];
    let ws = g.initializers["s_8"].as_f32().expect("f32").to_vec();
    let l = g.lower().expect("lower");
    let conv = l
        .nodes
        .iter()
        .find(|n| n.op.kind() == "Conv")
        .expect("conv");
    let QOp::Conv { bias: Some(bq), .. } = &conv.op else {
        panic!("bias")
    };
    let want: Vec<i32> = (0..b.len())
        .map(|i| (b[i] / (xs * ws[i])).round_ties_even() as i32)
        .collect();
    assert_eq!(bq, &want);
    assert!(want.iter().any(|&v| v != 0));

    // Relu before a Q at the type minimum: absorbed, nothing left of it
    let l = lower_case("qdq_conv_u8_relu");
    let kinds: Vec<&str> = l.nodes.iter().map(|n| n.op.kind()).collect();
    assert_eq!(kinds, ["Quantize", "Conv", "Dequantize"]);

    // float groups that are functions of the byte: tables
    let l = lower_case("qdq_hardsigmoid_u8");
    assert!(l.nodes.iter().any(|n| matches!(
        n.op,
        QOp::Table {
            kind: TableKind::HardSigmoid { .. },
            ..
        }
    )));
    let l = lower_case("qdq_relu_alone_u8_zp_min");
    assert!(l.nodes.iter().any(|n| matches!(
        n.op,
        QOp::Table {
            kind: TableKind::Requantize,
            ..
        }
    )));

    // a whole-image QLinearAveragePool is computed as the global pool
    let l = lower_case("qavgpool_s8_global_kernel");
    assert_eq!(l.nodes[0].op.kind(), "GlobalAvgPool");
    // transA, no bias
    let l = lower_case("qgemm_u8_nobias_transA");
    assert!(matches!(
        l.nodes[0].op,
        QOp::Gemm {
            trans_a: true,
            bias: None,
            ..
        }
    ));
    // float output QGemm
    let l = lower_case("qgemm_s8_float_out");
    assert!(matches!(
        l.nodes[0].op,
        QOp::Gemm {
            out: AccOut::Float { .. },
            ..
        }
    ));
    assert_eq!(l.values[l.outputs[0]].kind, ValueKind::Float);
    // shapes are inferred through the graph
    let l = lower_case("qdq_conv_chain_u8");
    assert_eq!(l.values[l.outputs[0]].shape, Some(vec![1, 8, 6, 6]));
}

// ------------------------------------------------------------ bad input

fn corpus_model(name: &str) -> Vec<u8> {
    std::fs::read(ops_dir().join(name).join("model.onnx")).expect("model")
}

/// Small deterministic generator (xorshift64*), seeded, for the corruption tests.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn parse_and_lower(bytes: &[u8]) -> Result<qfuse::onnx::Lowered, Error> {
    OnnxGraph::from_bytes(bytes).and_then(|g| g.lower())
}

#[test]
fn truncated_files_give_errors_not_panics() {
    for name in [
        "qdq_conv_chain_u8",
        "qlinearconv_u8_s8w7_pc",
        "qdq_concat_s8",
    ] {
        let full = corpus_model(name);
        let whole = parse_and_lower(&full).expect("the full file lowers");
        let mut cuts: Vec<usize> = (0..full.len()).step_by(full.len() / 300 + 1).collect();
        cuts.extend(full.len().saturating_sub(64)..full.len());
        for cut in cuts {
            let r = std::panic::catch_unwind(|| parse_and_lower(&full[..cut]));
            match r {
                Err(_) => panic!("{name} truncated to {cut} bytes: panic"),
                // a cut between two top-level fields can leave a valid model (e.g. without
                // an opset import the graph does not use): then it must be the same program
                Ok(Ok(l)) => assert_eq!(
                    l.nodes,
                    whole.nodes,
                    "{name} truncated to {cut} of {} bytes: accepted as another model",
                    full.len()
                ),
                Ok(Err(e)) => assert!(
                    matches!(e, Error::Onnx { .. } | Error::OnnxUnsupported { .. }),
                    "{name} cut at {cut}: {e}"
                ),
            }
        }
    }
}

#[test]
fn random_byte_flips_never_panic() {
    let seed: u64 = std::env::var("QFUSE_ONNX_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0bad_f11e_0001);
    // QFUSE_ONNX_FUZZ_ROUNDS: mutants per model (250 by default; raise for a longer campaign)
    let rounds: usize = std::env::var("QFUSE_ONNX_FUZZ_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(250);
    println!(
        "byte-flip seed {seed} (set QFUSE_ONNX_FUZZ_SEED to replay), {rounds} mutants per model"
    );
    let mut rng = Rng(seed);
    let (mut accepted, mut refused) = (0, 0);
    for name in [
        "qdq_conv_chain_s8",
        "qgemm_u8_pc",
        "qdq_softmax_u8",
        "qavgpool_u8_k3s2p1",
    ] {
        let full = corpus_model(name);
        for m in 0..rounds {
            let mut b = full.clone();
            let flips = 1 + rng.below(4);
            let mut at = Vec::new();
            for _ in 0..flips {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
                at.push(i);
            }
            match std::panic::catch_unwind(|| parse_and_lower(&b)) {
                Err(_) => {
                    panic!("seed {seed}: {name} mutant {m} (bits flipped at {at:?}) panicked")
                }
                Ok(Ok(_)) => accepted += 1,
                Ok(Err(e)) => {
                    assert!(
                        matches!(e, Error::Onnx { .. } | Error::OnnxUnsupported { .. }),
                        "seed {seed}: {name} mutant {m}: {e}"
                    );
                    refused += 1
                }
            }
        }
    }
    println!("{accepted} mutants still valid, {refused} refused with an error");
    assert!(refused > 100, "most mutants should be refused");
}

// Hand-built models (through the prost types) for each kind of bad input.

fn dims_proto(d: &[i64]) -> Vec<i64> {
    d.to_vec()
}

fn raw(name: &str, ty: i32, dims: &[i64], bytes: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        data_type: Some(ty),
        dims: dims_proto(dims),
        raw_data: Some(bytes),
        ..Default::default()
    }
}

const FLOAT: i32 = 1;
const UINT8: i32 = 2;
const INT8: i32 = 3;
const INT32: i32 = 6;

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn vi(name: &str, ty: i32, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(ty),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| tensor_shape_proto::Dimension {
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn node(name: &str, op: &str, domain: &str, ins: &[&str], outs: &[&str]) -> NodeProto {
    NodeProto {
        name: Some(name.into()),
        op_type: Some(op.into()),
        domain: Some(domain.into()),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// A small valid QOperator model: x (uint8 [1,2,5,5]) -> QLinearConv (int8
/// weights [3,2,3,3], pads 1, int32 bias) -> DequantizeLinear -> y (float).
fn base_model() -> ModelProto {
    let w: Vec<u8> = (0..54)
        .map(|i: i32| ((i * 37 % 200) - 100) as i8 as u8)
        .collect();
    let mut conv = node(
        "conv",
        "QLinearConv",
        "",
        &["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"],
        &["q"],
    );
    conv.attribute = vec![
        ints_attr("pads", &[1, 1, 1, 1]),
        ints_attr("kernel_shape", &[3, 3]),
    ];
    let graph = GraphProto {
        name: Some("g".into()),
        node: vec![
            conv,
            node("dq", "DequantizeLinear", "", &["q", "ys", "yz"], &["y"]),
        ],
        initializer: vec![
            raw("xs", FLOAT, &[], f32s(&[0.02])),
            raw("xz", UINT8, &[], vec![100]),
            raw("w", INT8, &[3, 2, 3, 3], w),
            raw("ws", FLOAT, &[3], f32s(&[0.01, 0.02, 0.03])),
            raw("wz", INT8, &[3], vec![0, 0, 0]),
            raw("ys", FLOAT, &[], f32s(&[0.1])),
            raw("yz", UINT8, &[], vec![120]),
            raw(
                "b",
                INT32,
                &[3],
                [5i32, -7, 9].iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
        ],
        input: vec![vi("x", UINT8, &[1, 2, 5, 5])],
        output: vec![vi("y", FLOAT, &[1, 3, 5, 5])],
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(9),
        opset_import: vec![
            OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(19),
            },
            OperatorSetIdProto {
                domain: Some("com.microsoft".into()),
                version: Some(1),
            },
        ],
        graph: Some(graph),
        ..Default::default()
    }
}

fn graph_mut(m: &mut ModelProto) -> &mut GraphProto {
    m.graph.as_mut().expect("graph")
}

fn init_mut<'a>(m: &'a mut ModelProto, name: &str) -> &'a mut TensorProto {
    graph_mut(m)
        .initializer
        .iter_mut()
        .find(|t| t.name.as_deref() == Some(name))
        .expect("initializer")
}

fn expect_err(m: &ModelProto, want_variant: &str, phrases: &[&str]) -> String {
    let e = parse_and_lower(&m.encode_to_vec()).expect_err("must be refused");
    let msg = e.to_string();
    assert_eq!(variant(&e), want_variant, "{msg}");
    for p in phrases {
        assert!(msg.contains(p), "{msg:?} lacks {p:?}");
    }
    msg
}

#[test]
fn base_model_lowers_and_runs() {
    let l = parse_and_lower(&base_model().encode_to_vec()).expect("valid");
    assert_eq!(l.kernel_signature(), ["DequantizeLinear", "QLinearConv"]);
    let x = Tensor {
        dims: vec![1, 2, 5, 5],
        data: TensorData::U8((0..50).map(|i| (i * 5) as u8).collect()),
    };
    let y = reference::run(&l, &[x]).expect("runs");
    assert_eq!(y[0].dims, [1, 3, 5, 5]);
    let v = y[0].as_f32().expect("float");
    assert!(v.iter().any(|&f| f != v[0]), "not a constant output");
}

#[test]
fn unknown_op_names_the_node() {
    let mut m = base_model();
    let g = graph_mut(&mut m);
    g.node.push(node("mystery", "FooBar", "", &["y"], &["z"]));
    g.output = vec![vi("z", FLOAT, &[1, 3, 5, 5])];
    expect_err(
        &m,
        "unsupported",
        &[
            "node 'mystery' (FooBar)",
            "operator FooBar is not supported",
        ],
    );
    // an op of a domain that is not imported
    let mut m = base_model();
    let g = graph_mut(&mut m);
    g.node
        .push(node("odd", "Foo", "ai.onnx.ml", &["y"], &["z"]));
    g.output = vec![vi("z", FLOAT, &[1, 3, 5, 5])];
    expect_err(&m, "bad", &["node 'odd'", "not imported"]);
}

#[test]
fn opsets_outside_13_to_21_are_refused() {
    for v in [12, 22] {
        let mut m = base_model();
        m.opset_import[0].version = Some(v);
        expect_err(
            &m,
            "unsupported",
            &[&format!("opset {v} of the default ONNX domain"), "13 to 21"],
        );
    }
    for v in [13, 21] {
        let mut m = base_model();
        m.opset_import[0].version = Some(v);
        parse_and_lower(&m.encode_to_vec()).expect("opset in range");
    }
    let mut m = base_model();
    m.opset_import.remove(0);
    expect_err(
        &m,
        "bad",
        &["no opset imported for the default ONNX domain"],
    );
}

#[test]
fn missing_initializer_names_node_and_input() {
    let mut m = base_model();
    graph_mut(&mut m)
        .initializer
        .retain(|t| t.name.as_deref() != Some("w"));
    expect_err(
        &m,
        "bad",
        &[
            "node 'conv' (QLinearConv)",
            "input 'w'",
            "missing initializer",
        ],
    );
}

#[test]
fn data_length_inconsistent_with_dims() {
    // raw bytes
    let mut m = base_model();
    init_mut(&mut m, "w").raw_data = Some(vec![1; 50]);
    expect_err(
        &m,
        "bad",
        &["initializer 'w'", "raw_data holds 50 bytes", "need 54"],
    );
    // typed field
    let mut m = base_model();
    let t = init_mut(&mut m, "b");
    t.raw_data = None;
    t.int32_data = vec![1, 2];
    expect_err(
        &m,
        "bad",
        &["initializer 'b'", "holds 2 int32 values", "need 3"],
    );
    // element count overflow, negative dim
    let mut m = base_model();
    init_mut(&mut m, "w").dims = vec![1 << 40, 1 << 40, 1 << 40];
    expect_err(&m, "bad", &["initializer 'w'", "overflows"]);
    let mut m = base_model();
    init_mut(&mut m, "w").dims = vec![3, -2, 3, 3];
    expect_err(&m, "bad", &["initializer 'w'", "negative dimension"]);
    // typed int8 values out of range
    let mut m = base_model();
    let t = init_mut(&mut m, "wz");
    t.raw_data = None;
    t.int32_data = vec![0, 300, 0];
    expect_err(&m, "bad", &["initializer 'wz'", "out of range"]);
}

#[test]
fn inconsistent_shapes_are_errors() {
    // the input has 4 channels, the weights want 2
    let mut m = base_model();
    graph_mut(&mut m).input = vec![vi("x", UINT8, &[1, 4, 5, 5])];
    expect_err(&m, "bad", &["node 'conv'", "input has 4 channels"]);
    // the declared output shape disagrees with what the conv makes
    let mut m = base_model();
    graph_mut(&mut m).output = vec![vi("y", FLOAT, &[1, 3, 4, 4])];
    expect_err(&m, "bad", &["node 'dq'", "declares [1, 3, 4, 4]"]);
    // per-channel scales that do not match the output channels
    let mut m = base_model();
    let t = init_mut(&mut m, "ws");
    t.dims = vec![2];
    t.raw_data = Some(f32s(&[0.1, 0.2]));
    expect_err(
        &m,
        "bad",
        &["node 'conv'", "2 weight scales for 3 output channels"],
    );
    // a bias of the wrong length
    let mut m = base_model();
    let t = init_mut(&mut m, "b");
    t.dims = vec![2];
    t.raw_data = Some(vec![0; 8]);
    expect_err(&m, "bad", &["node 'conv'", "bias 'b' has shape [2]"]);
}

#[test]
fn uint8_weights_refused_unless_zero_point_128() {
    let mut m = base_model();
    init_mut(&mut m, "w").data_type = Some(UINT8);
    let t = init_mut(&mut m, "wz");
    t.data_type = Some(UINT8);
    t.raw_data = Some(vec![7, 7, 7]);
    expect_err(
        &m,
        "unsupported",
        &["node 'conv'", "uint8 weights with zero point [7, 7, 7]"],
    );
    // zero point 128: int8 weights with zero point 0, the same arithmetic
    let base = parse_and_lower(&base_model().encode_to_vec()).expect("valid");
    let mut m = base_model();
    let t = init_mut(&mut m, "w");
    t.data_type = Some(UINT8);
    let w: Vec<u8> = t
        .raw_data
        .as_ref()
        .expect("raw")
        .iter()
        .map(|&b| (b as i8 as i32 + 128) as u8)
        .collect();
    t.raw_data = Some(w);
    let t = init_mut(&mut m, "wz");
    t.data_type = Some(UINT8);
    t.raw_data = Some(vec![128; 3]);
    let l = parse_and_lower(&m.encode_to_vec()).expect("u8 weights with zp 128");
    assert_eq!(l.nodes[0].op, base.nodes[0].op);
}

#[test]
fn unsupported_types_and_float_ops_between_quantized_ops() {
    // a float16 input
    let mut m = base_model();
    graph_mut(&mut m).input = vec![vi("x", 10, &[1, 2, 5, 5])];
    expect_err(&m, "unsupported", &["tensor 'x'", "FLOAT16"]);
    // DQ -> ReduceMean -> Q in the middle of the graph: ORT runs it in float
    let mut m = base_model();
    let g = graph_mut(&mut m);
    g.node.push(node("mean", "ReduceMean", "", &["y"], &["r"]));
    g.node.push(node(
        "q2",
        "QuantizeLinear",
        "",
        &["r", "ys", "yz"],
        &["rq"],
    ));
    g.output = vec![vi("rq", UINT8, &[1, 1, 1, 1])];
    expect_err(
        &m,
        "unsupported",
        &["node 'mean' (ReduceMean)", "in float between quantized ops"],
    );
}

#[test]
fn float_op_at_the_tail_is_a_float_tail_op() {
    let mut m = base_model();
    let g = graph_mut(&mut m);
    let mut sm = node("softmax", "Softmax", "", &["y"], &["p"]);
    sm.attribute = vec![AttributeProto {
        name: Some("axis".into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(1),
        ..Default::default()
    }];
    g.node.push(sm);
    g.output = vec![vi("p", FLOAT, &[1, 3, 5, 5])];
    let l = parse_and_lower(&m.encode_to_vec()).expect("tail op");
    let last = l.nodes.last().expect("node");
    assert!(matches!(&last.op, QOp::FloatTail { op_type, .. } if op_type == "Softmax"));
    assert_eq!(last.name, "node 'softmax' (Softmax)");
    assert_eq!(l.output_names, ["p"]);
    // a float op at the tail that is not among those qfuse runs there
    let mut m = base_model();
    let g = graph_mut(&mut m);
    g.node
        .push(node("gap", "GlobalAveragePool", "", &["y"], &["p"]));
    g.output = vec![vi("p", FLOAT, &[1, 3, 1, 1])];
    expect_err(
        &m,
        "unsupported",
        &["node 'gap'", "float GlobalAveragePool at the graph's tail"],
    );
}

#[test]
fn constants_and_initializers_listed_as_inputs() {
    // the y scale as a Constant node, the weights also listed as a graph input
    let mut m = base_model();
    let g = graph_mut(&mut m);
    let ys = g
        .initializer
        .iter()
        .position(|t| t.name.as_deref() == Some("ys"))
        .expect("ys");
    let mut t = g.initializer.remove(ys);
    t.name = None;
    let mut c = node("c", "Constant", "", &[], &["ys"]);
    c.attribute = vec![AttributeProto {
        name: Some("value".into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(t),
        ..Default::default()
    }];
    g.node.insert(0, c);
    g.input.push(vi("w", INT8, &[3, 2, 3, 3]));
    let graph = OnnxGraph::from_bytes(&m.encode_to_vec()).expect("valid");
    assert_eq!(
        graph.inputs.len(),
        1,
        "an initializer listed as input is a constant"
    );
    assert!(graph.initializers.contains_key("ys"));
    let l = graph.lower().expect("lowers");
    let base = parse_and_lower(&base_model().encode_to_vec()).expect("valid");
    assert_eq!(l.nodes[0].op, base.nodes[0].op);
}

#[test]
fn cycle_and_duplicate_outputs_are_errors() {
    let mut m = base_model();
    graph_mut(&mut m).node[0].input[0] = "y".into();
    graph_mut(&mut m).input.clear();
    expect_err(&m, "bad", &["cycle"]);
    let mut m = base_model();
    graph_mut(&mut m).node[1].output[0] = "q".into();
    expect_err(&m, "bad", &["node 'dq'", "already produced"]);
}

/// A scratch folder under the system temp dir, removed on drop.
struct Scratch(PathBuf);
impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("qfuse_onnx_{tag}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Scratch(p)
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn externalize(
    m: &mut ModelProto,
    name: &str,
    location: &str,
    offset: u64,
    length: Option<u64>,
) -> Vec<u8> {
    let t = init_mut(m, name);
    let bytes = t.raw_data.take().expect("raw");
    t.data_location = Some(1);
    let kv = |k: &str, v: String| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v),
    };
    t.external_data = vec![
        kv("location", location.into()),
        kv("offset", offset.to_string()),
    ];
    if let Some(len) = length {
        t.external_data.push(kv("length", len.to_string()));
    }
    bytes
}

#[test]
fn external_data_read_next_to_the_model_and_bounds_checked() {
    let dir = Scratch::new("ext");
    let base = parse_and_lower(&base_model().encode_to_vec()).expect("valid");
    // weights at offset 16 of model.data
    let mut m = base_model();
    let w = externalize(&mut m, "w", "model.data", 16, Some(54));
    let mut data = vec![0xAAu8; 16];
    data.extend(&w);
    std::fs::write(dir.0.join("model.data"), &data).expect("write");
    std::fs::write(dir.0.join("model.onnx"), m.encode_to_vec()).expect("write");
    let l = OnnxGraph::load(dir.0.join("model.onnx"))
        .and_then(|g| g.lower())
        .expect("external data");
    assert_eq!(l.nodes[0].op, base.nodes[0].op);
    // from bytes, the folder is unknown: a clear refusal
    let e = OnnxGraph::from_bytes(&m.encode_to_vec()).expect_err("needs the folder");
    assert!(
        e.to_string().contains("external file \"model.data\""),
        "{e}"
    );
    // past the end of the file
    let mut m = base_model();
    externalize(&mut m, "w", "model.data", 40, Some(54));
    std::fs::write(dir.0.join("bad.onnx"), m.encode_to_vec()).expect("write");
    let e = OnnxGraph::load(dir.0.join("bad.onnx")).expect_err("past EOF");
    assert!(
        matches!(e, Error::Onnx { .. }) && e.to_string().contains("past the end"),
        "{e}"
    );
    // a length that disagrees with the dims
    let mut m = base_model();
    externalize(&mut m, "w", "model.data", 0, Some(20));
    std::fs::write(dir.0.join("bad.onnx"), m.encode_to_vec()).expect("write");
    let e = OnnxGraph::load(dir.0.join("bad.onnx")).expect_err("length");
    assert!(e.to_string().contains("length 20 but dims need 54"), "{e}");
    // offset + length overflow
    let mut m = base_model();
    externalize(&mut m, "w", "model.data", u64::MAX - 10, Some(54));
    std::fs::write(dir.0.join("bad.onnx"), m.encode_to_vec()).expect("write");
    let e = OnnxGraph::load(dir.0.join("bad.onnx")).expect_err("overflow");
    assert!(e.to_string().contains("overflows"), "{e}");
    // a location outside the model's folder
    for loc in ["../model.data", "/etc/passwd"] {
        let mut m = base_model();
        externalize(&mut m, "w", loc, 0, None);
        std::fs::write(dir.0.join("bad.onnx"), m.encode_to_vec()).expect("write");
        let e = OnnxGraph::load(dir.0.join("bad.onnx")).expect_err("outside");
        assert!(
            e.to_string()
                .contains("relative path inside the model's folder"),
            "{e}"
        );
    }
    // a missing data file: an I/O error naming it
    let mut m = base_model();
    externalize(&mut m, "w", "nowhere.data", 0, None);
    std::fs::write(dir.0.join("bad.onnx"), m.encode_to_vec()).expect("write");
    let e = OnnxGraph::load(dir.0.join("bad.onnx")).expect_err("missing file");
    assert!(
        matches!(e, Error::Io { .. }) && e.to_string().contains("nowhere.data"),
        "{e}"
    );
}

#[test]
fn sniffing_tells_onnx_from_other_files() {
    assert!(OnnxGraph::sniff(&corpus_model("qdq_add_u8")));
    assert!(!OnnxGraph::sniff(b"{\"format\": \"qfuse\"}"));
    assert!(!OnnxGraph::sniff(&[]));
    let _ = ElemType::F32;
}

/// `DQ -> Transpose -> Q` with different qparams: ORT runs the Transpose in
/// float; the values are the Transpose of the bytes followed by requantization,
/// which is how it lowers (a pass-through op on bytes, then a table).
#[test]
fn movement_op_between_different_qparams_is_bytes_then_requantize() {
    let mut t = node("t", "Transpose", "", &["d1"], &["tf"]);
    t.attribute = vec![ints_attr("perm", &[0, 2, 3, 1])];
    let graph = GraphProto {
        name: Some("g".into()),
        node: vec![
            node("q1", "QuantizeLinear", "", &["x", "s1", "z1"], &["xq"]),
            node("d1", "DequantizeLinear", "", &["xq", "s1", "z1"], &["d1"]),
            t,
            node("q2", "QuantizeLinear", "", &["tf", "s2", "z2"], &["tq"]),
            node("d2", "DequantizeLinear", "", &["tq", "s2", "z2"], &["y"]),
        ],
        initializer: vec![
            raw("s1", FLOAT, &[], f32s(&[0.05])),
            raw("z1", UINT8, &[], vec![128]),
            raw("s2", FLOAT, &[], f32s(&[0.03])),
            raw("z2", UINT8, &[], vec![100]),
        ],
        input: vec![vi("x", FLOAT, &[1, 2, 3, 4])],
        output: vec![vi("y", FLOAT, &[1, 3, 4, 2])],
        ..Default::default()
    };
    let mut m = base_model();
    m.graph = Some(graph);
    let l = parse_and_lower(&m.encode_to_vec()).expect("lowers");
    let kinds: Vec<&str> = l.nodes.iter().map(|n| n.op.kind()).collect();
    assert_eq!(kinds, ["Quantize", "Shape", "Table", "Dequantize"]);
    assert!(matches!(
        &l.nodes[2].op,
        QOp::Table { kind: TableKind::Requantize, x, y }
            if x.scale == 0.05 && x.zero_point == 128 && y.scale == 0.03 && y.zero_point == 100
    ));
    assert_eq!(
        l.kernel_signature(),
        [
            "DequantizeLinear",
            "DequantizeLinear",
            "QuantizeLinear",
            "QuantizeLinear"
        ]
    );
    assert_eq!(l.values[l.outputs[0]].shape, Some(vec![1, 3, 4, 2]));
}

/// A per-channel weight DequantizeLinear along an axis that is not the output
/// channels, and ops ORT may run on quantized values that qfuse lacks.
#[test]
fn weight_axis_and_unsupported_quantized_ops() {
    let mut m = ModelProto::decode(&corpus_model("qdq_conv_u8_pc_w7")[..]).expect("decode");
    let g = graph_mut(&mut m);
    let dq = g
        .node
        .iter_mut()
        .find(|n| n.input.first().map(String::as_str) == Some("w_q_7"))
        .expect("weight DQ");
    for a in dq
        .attribute
        .iter_mut()
        .filter(|a| a.name.as_deref() == Some("axis"))
    {
        a.i = Some(1);
    }
    expect_err(
        &m,
        "unsupported",
        &["(Conv -> conv_", "per-channel weight scales along axis 1"],
    );
    // DQ -> Resize (linear with antialias: not supported; plain linear and
    // cubic are, see tests/onnx_model.rs) -> Q
    let mut m = base_model();
    let g = graph_mut(&mut m);
    let mut up = node("up", "Resize", "", &["y", "", "sc"], &["r"]);
    up.attribute.push(AttributeProto {
        name: Some("mode".into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(b"linear".to_vec()),
        ..Default::default()
    });
    up.attribute.push(AttributeProto {
        name: Some("antialias".into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(1),
        ..Default::default()
    });
    g.node.push(up);
    g.node.push(node(
        "q2",
        "QuantizeLinear",
        "",
        &["r", "ys", "yz"],
        &["rq"],
    ));
    g.initializer
        .push(raw("sc", FLOAT, &[4], f32s(&[1.0, 1.0, 2.0, 2.0])));
    g.output = vec![vi("rq", UINT8, &[1, 3, 10, 10])];
    expect_err(
        &m,
        "unsupported",
        &["node 'up' (Resize)", "Resize (linear/cubic) with antialias"],
    );
}
