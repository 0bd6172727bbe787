//! ONNX models run through qfuse's model (`qfuse::onnx::to_model`), on the CPU
//! reference and on the GPU, against ONNX Runtime 1.32's outputs
//! (`tests/data/onnx/ops`, see its README): every case converts and gives
//! ORT's outputs bit for bit on both, or is refused with an error naming the
//! node (the list below says which and why).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use qfuse::onnx::OnnxGraph;
use qfuse::{GpuContext, GpuModel, Model, Value};

fn ops_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx/ops")
}

fn manifest() -> Vec<serde_json::Value> {
    let s = std::fs::read_to_string(ops_dir().join("manifest.json")).expect("manifest.json");
    let m: serde_json::Value = serde_json::from_str(&s).expect("manifest JSON");
    m["cases"].as_array().expect("cases").clone()
}

/// The elements of an .npy file: float32, uint8 or int8 (as u32 bit
/// patterns for comparison), and its shape.
enum Npy {
    F32(Vec<f32>),
    U8(Vec<u8>),
    I8(Vec<i8>),
}

fn read_npy(path: &Path) -> (Npy, Vec<usize>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let f = npyz::NpyFile::new(&bytes[..]).expect("npy");
    let shape: Vec<usize> = f.shape().iter().map(|&d| d as usize).collect();
    let data = match f.dtype().descr().as_str() {
        "'<f4'" => Npy::F32(f.into_vec().expect("f4")),
        "'|u1'" => Npy::U8(f.into_vec().expect("u1")),
        "'|i1'" => Npy::I8(f.into_vec().expect("i1")),
        d => panic!("{}: dtype {d}", path.display()),
    };
    (data, shape)
}

/// A graph input as the model takes it.
fn input_value(path: &Path, info: &qfuse::model::TensorInfo) -> Value {
    let (data, shape) = read_npy(path);
    match (data, info.qparams()) {
        (Npy::F32(data), None) => Value::F32 { data, shape },
        (Npy::U8(data), Some(q)) if !q.signed => Value::Q { data, shape, q },
        (Npy::I8(data), Some(q)) if q.signed => Value::from_i8(&data, shape, q),
        _ => panic!("{}: dtype does not match the model input", path.display()),
    }
}

/// Bit patterns of a qfuse output in the ONNX type (int8 values for qint8).
fn out_bits(v: &Value) -> Vec<u32> {
    match v {
        Value::F32 { data, .. } => data.iter().map(|x| x.to_bits()).collect(),
        Value::Q { data, q, .. } => data
            .iter()
            .map(|&b| {
                if q.signed {
                    (b ^ 0x80) as i8 as u32
                } else {
                    b as u32
                }
            })
            .collect(),
    }
}

fn npy_bits(n: &Npy) -> Vec<u32> {
    match n {
        Npy::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
        Npy::U8(v) => v.iter().map(|&x| x as u32).collect(),
        Npy::I8(v) => v.iter().map(|&x| x as u32).collect(),
    }
}

/// The cases qfuse's model does not run, with a phrase of the error. Every
/// other case must run bit-exact.
fn refused() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("quantize_u8_axis", "per-axis qparams on an activation"),
        ("quantize_u8_axis_ties", "per-axis qparams on an activation"),
        ("dequantize_u8_axis", "per-axis qparams on an activation"),
        ("quantize_s8_axis", "per-axis qparams on an activation"),
        ("quantize_s8_axis_ties", "per-axis qparams on an activation"),
        ("dequantize_s8_axis", "per-axis qparams on an activation"),
        (
            "dequantize_s32_tensor",
            "an integer input (qfuse takes float32, uint8 or int8)",
        ),
        (
            "qlinearconv_u8_u8w_pc",
            "uint8 weights with zero point [113, 113, 113, 113] (not 128)",
        ),
        (
            "qlinearconv_u8_u8w_pt",
            "uint8 weights with zero point [108] (not 128): qfuse takes i",
        ),
        (
            "qlinearmatmul_u8_batched",
            "input of shape [N, 2, 24]: qfuse's linear layers take [N, K]",
        ),
        (
            "qlinearmatmul_s8_batched",
            "input of shape [N, 2, 24]: qfuse's linear layers take [N, K]",
        ),
        (
            "qlinearmatmul_u8_u8w_pt",
            "uint8 weights with zero point [149] (not 128): qfuse takes i",
        ),
        (
            "matmulinteger_u8_s8",
            "an int32 output (ConvInteger/MatMulInteger): qfuse's layers ",
        ),
        (
            "matmulinteger_u8_s8_pc_zp",
            "an int32 output (ConvInteger/MatMulInteger): qfuse's layers ",
        ),
        (
            "matmulinteger_u8_u8",
            "uint8 weights with zero point [137] (not 128): qfuse takes i",
        ),
        (
            "matmulinteger_s8_s8",
            "an int32 output (ConvInteger/MatMulInteger): qfuse's layers ",
        ),
        (
            "matmulinteger_u8_s8_dynamic_b",
            "weight 'b' is not a constant initializer (a product of two a",
        ),
        (
            "convinteger_u8",
            "uint8 weights with zero point [219] (not 128): qfuse takes i",
        ),
        (
            "convinteger_u8_s2_grouped",
            "uint8 weights with zero point [34] (not 128): qfuse takes in",
        ),
        (
            "qgemm_u8_float_out",
            "a float output (QGemm without y_scale): qfuse's layers requa",
        ),
        (
            "qgemm_s8_float_out",
            "a float output (QGemm without y_scale): qfuse's layers requa",
        ),
        ("qgemm_u8_nobias_transA", "Gemm with transA=1"),
        (
            "qadd_u8_scalar_b",
            "rank 1: qfuse takes [N, C, H, W], [N, C, L] or [N, K] inputs",
        ),
        (
            "qadd_s8_scalar_b",
            "rank 1: qfuse takes [N, C, H, W], [N, C, L] or [N, K] inputs",
        ),
        (
            "qmul_u8_scalar_b",
            "rank 1: qfuse takes [N, C, H, W], [N, C, L] or [N, K] inputs",
        ),
        (
            "qmul_s8_scalar_b",
            "rank 1: qfuse takes [N, C, H, W], [N, C, L] or [N, K] inputs",
        ),
        (
            "qsoftmax_u8_opset12",
            "Softmax (opset < 13) over the axes from 1 on",
        ),
        (
            "qsoftmax_s8_opset12",
            "Softmax (opset < 13) over the axes from 1 on",
        ),
        (
            "qdq_conv_u8_relu_zp_not_min",
            "ORT runs this Conv in float; not supported (its Relu is not ",
        ),
        (
            "qdq_conv_u8_clip_kept",
            "ORT runs this Conv in float; not supported (its Clip is not ",
        ),
        (
            "qdq_conv_s8_relu_zp_not_min",
            "ORT runs this Conv in float; not supported (its Relu is not ",
        ),
        (
            "qdq_conv_s8_clip_kept",
            "ORT runs this Conv in float; not supported (its Clip is not ",
        ),
        (
            "qdq_conv_s8_quantized_input",
            "ORT runs this Conv in float; not supported (int8 activations",
        ),
        (
            "qdq_pad_u8_constant",
            "Pad mode constant on quantized values",
        ),
        (
            "qdq_pad_s8_constant",
            "Pad mode constant on quantized values",
        ),
    ])
}

/// Runs every case on the CPU (`ctx` None) or the GPU; returns
/// (passed, failures, refusals).
fn run_all(ctx: Option<&GpuContext>) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut passed, mut failed, mut refusals) = (Vec::new(), Vec::new(), Vec::new());
    for case in manifest() {
        let name = case["name"].as_str().expect("name").to_string();
        let dir = ops_dir().join(&name);
        let model: Model =
            match OnnxGraph::load(dir.join("model.onnx")).and_then(|g| qfuse::onnx::to_model(&g)) {
                Ok(m) => m,
                Err(e) => {
                    refusals.push(format!("{name}: {e}"));
                    continue;
                }
            };
        let inputs: Vec<Value> = case["inputs"]
            .as_array()
            .expect("inputs")
            .iter()
            .zip(model.inputs())
            .map(|(i, (_, info))| input_value(&dir.join(i["file"].as_str().expect("file")), info))
            .collect();
        let got = match ctx {
            None => model.run_cpu(&inputs),
            Some(ctx) => GpuModel::new(ctx, &model).and_then(|g| g.run(ctx, &inputs)),
        };
        let got = match got {
            Ok(g) => g,
            Err(e) => {
                failed.push(format!("{name}: run: {e}"));
                continue;
            }
        };
        let mut problem = None;
        for (j, o) in case["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .enumerate()
        {
            let (want, wshape) = read_npy(&dir.join(o["file"].as_str().expect("file")));
            let g = &got[j];
            if g.shape() != wshape.as_slice() {
                problem = Some(format!(
                    "output {j}: shape {:?}, ORT {:?}",
                    g.shape(),
                    wshape
                ));
                break;
            }
            let (g, w) = (out_bits(g), npy_bits(&want));
            if let Some(i) = (0..w.len()).find(|&i| g[i] != w[i]) {
                let n = (0..w.len()).filter(|&i| g[i] != w[i]).count();
                problem = Some(format!(
                    "output {j}: {n}/{} differ, first at flat {i}: qfuse bits {:#x}, ORT {:#x}",
                    w.len(),
                    g[i],
                    w[i]
                ));
                break;
            }
        }
        match problem {
            None => passed.push(name),
            Some(p) => failed.push(format!("{name}: {p}")),
        }
    }
    (passed, failed, refusals)
}

fn check(ctx: Option<&GpuContext>) {
    let on = if ctx.is_some() { "GPU" } else { "CPU" };
    let (passed, failed, refusals) = run_all(ctx);
    for f in &failed {
        println!("FAIL ({on}) {f}");
    }
    let known = refused();
    // An error names the ONNX node once (not again as the qfuse node).
    for r in &refusals {
        assert!(!r.contains("): node \""), "node named twice: {r}");
    }
    let mut unexpected = Vec::new();
    for r in &refusals {
        let (name, msg) = r.split_once(": ").expect("name: error");
        match known.get(name) {
            Some(phrase) if msg.contains(phrase) => {}
            _ => unexpected.push(r.clone()),
        }
    }
    for r in &unexpected {
        println!("REFUSED ({on}) {r}");
    }
    // A listed case that runs (or fails) is no longer refused: the list
    // must say so, so it stays honest.
    let stale: Vec<&str> = known
        .keys()
        .copied()
        .filter(|name| {
            !refusals
                .iter()
                .any(|r| r.split_once(": ").map(|p| p.0) == Some(*name))
        })
        .collect();
    for s in &stale {
        println!("{on}: {s} is listed as refused but is not: take it off the list");
    }
    println!(
        "{on}: {} passed, {} failed, {} refused ({} not in the list)",
        passed.len(),
        failed.len(),
        refusals.len(),
        unexpected.len()
    );
    assert!(failed.is_empty() && unexpected.is_empty() && stale.is_empty());
}

#[test]
fn onnx_cases_on_cpu_equal_onnxruntime() {
    check(None);
}

#[test]
fn onnx_cases_on_gpu_equal_onnxruntime() {
    let ctx = common::gpu();
    check(Some(&ctx));
}

/// Float ops after the last dequantize run on the host after readback: the
/// GPU's output equals the CPU reference's, and the softmax sums to 1 over
/// its axis; a quantize reading one is refused on the GPU with an error.
#[test]
fn host_float_tail_runs_after_readback() {
    use qfuse::model::{DType, Node, TensorInfo};
    use qfuse::ops::host::HostFn;
    use qfuse::ops::Op;
    use qfuse::{QParams, Requant};
    let q = QParams::new_i8(0.05, -3).unwrap();
    let node = |name: &str, op: Op, input: &str| Node {
        name: name.into(),
        op,
        inputs: vec![input.into()],
    };
    let nodes = vec![
        node("q", Op::Quantize(q), "x"),
        node("dq", Op::Dequantize, "q"),
        node(
            "sm",
            Op::HostFloat(HostFn::Softmax {
                axis: 0,
                to_end: false,
                log: false,
            }),
            "dq",
        ),
        node("flat", Op::HostFloat(HostFn::Reshape(vec![60])), "sm"),
    ];
    let m = Model::new(
        Requant::OnnxRuntime,
        vec![(
            "x".into(),
            TensorInfo {
                shape: vec![5, 3, 4],
                dtype: DType::F32,
            },
        )],
        vec!["flat".into()],
        nodes,
    )
    .unwrap();
    let seed = 7u64;
    let mut s = seed;
    let data: Vec<f32> = (0..120)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 12.0
        })
        .collect();
    let x = [Value::F32 {
        data,
        shape: vec![2, 5, 3, 4],
    }];
    let cpu = m.run_cpu(&x).unwrap();
    assert_eq!(cpu[0].shape(), &[2, 60]);
    let y = cpu[0].to_f32();
    for b in 0..2 {
        for hw in 0..12 {
            let sum: f32 = (0..5).map(|c| y[b * 60 + c * 12 + hw]).sum();
            assert!((sum - 1.0).abs() < 1e-5, "seed {seed}: sum {sum}");
        }
    }
    let ctx = common::gpu();
    let gpu = GpuModel::new(&ctx, &m).unwrap().run(&ctx, &x).unwrap();
    assert_eq!(gpu, cpu, "seed {seed}");
    // A quantize of a host float op's output cannot run on the GPU.
    let mut nodes = m.nodes().to_vec();
    nodes.push(node("q2", Op::Quantize(q), "sm"));
    let m2 = Model::new(
        Requant::OnnxRuntime,
        m.inputs().to_vec(),
        vec!["q2".into()],
        nodes,
    )
    .unwrap();
    let e = GpuModel::new(&ctx, &m2).err().expect("refused");
    assert!(e.to_string().contains("run on the host"), "{e}");
}
