//! `qsoftmax` (PyTorch's quantized softmax): PyTorch's vectors
//! (`tests/data/qsoftmax`, `tools/gen_qsoftmax_ops.py`, made on an Intel Xeon
//! with AVX-512 VNNI, torch 2.15) reproduced bit for bit on the CPU and the
//! GPU — QNNPACK's integer softargmax (engine qnnpack, output (1/256, 0): any
//! dim, contiguous and channels-last inputs) and ATen's float path over the
//! last dim (fbgemm, x86, qnnpack with other output qparams); GPU == CPU on
//! seeded random data; the file round trip; the refused combination (ATen's
//! path over a dim other than the last) is a typed error.

mod common;

use std::path::Path;

use common::{first_mismatch, gpu, Rng, TensorFile};
use qfuse::model::{DType, Model, Node, Op, TensorInfo, Value};
use qfuse::{Error, QParams, Requant};

fn model(
    engine: Requant,
    shape: &[usize],
    dim: usize,
    qi: QParams,
    qo: QParams,
) -> qfuse::Result<Model> {
    Model::new(
        engine,
        vec![(
            "x".into(),
            TensorInfo {
                shape: shape.to_vec(),
                dtype: DType::QUInt8(qi),
            },
        )],
        vec!["y".into()],
        vec![Node {
            name: "y".into(),
            op: Op::QSoftmax { dim, out: qo },
            inputs: vec!["x".into()],
        }],
    )
}

fn bytes_of(v: &Value) -> &[u8] {
    match v {
        Value::Q { data, .. } => data,
        Value::F32 { .. } => panic!("float output"),
    }
}

struct Case {
    name: String,
    engine: Requant,
    shape: Vec<usize>,
    dim: usize,
    qi: QParams,
    qo: QParams,
    input: Vec<u8>,
    output: Vec<u8>,
}

fn vectors() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/qsoftmax");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let f = TensorFile::open(p);
            let s = f.meta("spec");
            let shape: Vec<usize> = serde_json::from_value(s["shape"].clone()).unwrap();
            let d = s["dim"].as_i64().unwrap();
            let d = if d < 0 { d + shape.len() as i64 } else { d } as usize;
            let engine = match s["engine"].as_str().unwrap() {
                "qnnpack" => Requant::Qnnpack,
                _ => Requant::Fbgemm,
            };
            Case {
                name: p.file_name().unwrap().to_string_lossy().into_owned(),
                engine,
                dim: d - 1,
                qi: QParams::new(
                    s["input_scale"].as_f64().unwrap() as f32,
                    s["input_zero_point"].as_i64().unwrap() as i32,
                )
                .unwrap(),
                qo: QParams::new(
                    s["output_scale"].as_f64().unwrap() as f32,
                    s["output_zero_point"].as_i64().unwrap() as i32,
                )
                .unwrap(),
                input: f.u8("input"),
                output: f.u8("output"),
                shape,
            }
        })
        .collect()
}

fn input_of(c: &Case) -> Vec<Value> {
    vec![Value::Q {
        data: c.input.clone(),
        shape: c.shape.clone(),
        q: c.qi,
    }]
}

#[test]
fn qsoftmax_pytorch_vectors_cpu() {
    let cases = vectors();
    assert!(cases.len() >= 40, "only {} vectors", cases.len());
    let (mut qnnpack, mut aten) = (0, 0);
    for c in &cases {
        // (a row of one element is 1.0 everywhere)
        assert!(
            c.shape[c.dim + 1] == 1 || c.output.iter().any(|&b| b != c.output[0]),
            "{}: constant output",
            c.name
        );
        let m = model(c.engine, &c.shape[1..], c.dim, c.qi, c.qo).unwrap();
        let got = m.run_cpu(&input_of(c)).unwrap();
        if let Some(mm) = first_mismatch(bytes_of(&got[0]), &c.output) {
            panic!("{} (shape {:?}, dim {}): {mm}", c.name, c.shape, c.dim);
        }
        if c.name.starts_with("qnnpack") {
            qnnpack += 1;
        } else {
            aten += 1;
        }
    }
    assert!(
        qnnpack >= 9 && aten >= 30,
        "{qnnpack} qnnpack, {aten} aten cases"
    );
}

#[test]
fn qsoftmax_pytorch_vectors_gpu() {
    let ctx = gpu();
    for c in &vectors() {
        let m = model(c.engine, &c.shape[1..], c.dim, c.qi, c.qo).unwrap();
        let g = qfuse::GpuModel::new(&ctx, &m).unwrap();
        let got = g.run(&ctx, &input_of(c)).unwrap();
        if let Some(mm) = first_mismatch(bytes_of(&got[0]), &c.output) {
            panic!("{} (shape {:?}, dim {}): GPU: {mm}", c.name, c.shape, c.dim);
        }
    }
}

#[test]
fn qsoftmax_gpu_equals_cpu_random() {
    let ctx = gpu();
    for seed in 0..16u64 {
        let seed = 4100 + seed;
        println!("seed {seed}");
        let mut rng = Rng(seed);
        let shape = match seed % 3 {
            0 => vec![rng.range(1, 40)],
            1 => vec![rng.range(1, 6), rng.range(1, 40)],
            _ => vec![rng.range(1, 7), rng.range(1, 5), rng.range(1, 35)],
        };
        let qnn = seed % 2 == 0;
        let (engine, qo, dim) = if qnn {
            (
                Requant::Qnnpack,
                QParams::new(1.0 / 256.0, 0).unwrap(),
                rng.range(0, shape.len() - 1),
            )
        } else {
            (
                Requant::Fbgemm,
                QParams::new(0.003 + rng.f32().abs() * 0.01, rng.range(0, 30) as i32).unwrap(),
                shape.len() - 1,
            )
        };
        let qi = QParams::new(0.01 + rng.f32().abs() * 0.2, rng.range(0, 255) as i32).unwrap();
        let m = model(engine, &shape, dim, qi, qo).unwrap();
        let n = rng.range(1, 4);
        let numel: usize = shape.iter().product();
        let data = rng.bytes(n * numel);
        let mut bshape = vec![n];
        bshape.extend(&shape);
        let input = [Value::Q {
            data,
            shape: bshape.clone(),
            q: qi,
        }];
        let cpu = m.run_cpu(&input).unwrap();
        let g = qfuse::GpuModel::new(&ctx, &m).unwrap();
        let got = g.run(&ctx, &input).unwrap();
        if let Some(mm) = first_mismatch(bytes_of(&got[0]), bytes_of(&cpu[0])) {
            panic!("seed {seed}, shape {bshape:?}, dim {dim}, {engine:?}: {mm}");
        }
    }
}

#[test]
fn qsoftmax_round_trip() {
    let qi = QParams::new(0.05, 7).unwrap();
    let qo = QParams::new(1.0 / 256.0, 0).unwrap();
    let m = model(Requant::Qnnpack, &[5, 3, 4], 0, qi, qo).unwrap();
    let bytes = m.to_bytes().unwrap();
    let m2 = Model::from_bytes(&bytes).unwrap();
    assert_eq!(m2.to_bytes().unwrap(), bytes, "save(load(save(m))) changed");
    let input = [Value::Q {
        data: Rng(5).bytes(2 * 60),
        shape: vec![2, 5, 3, 4],
        q: qi,
    }];
    assert_eq!(m.run_cpu(&input).unwrap(), m2.run_cpu(&input).unwrap());
}

#[test]
fn qsoftmax_aten_rule_refuses_inner_dims() {
    let qi = QParams::new(0.05, 7).unwrap();
    let qo = QParams::new(1.0 / 256.0, 0).unwrap();
    // ATen's path (fbgemm; qnnpack with other output qparams) over dim 0 of [C, H, W]
    for (engine, q) in [
        (Requant::Fbgemm, qo),
        (Requant::Qnnpack, QParams::new(0.01, 3).unwrap()),
    ] {
        let e = model(engine, &[5, 3, 4], 0, qi, q).unwrap_err();
        assert!(matches!(e.root_cause(), Error::Config { .. }), "{e:?}");
        assert!(e.to_string().contains("not the last"), "{e}");
    }
    // a dim past the shape
    let e = model(Requant::Qnnpack, &[5, 3], 2, qi, qo).unwrap_err();
    assert!(e.to_string().contains("not a dimension"), "{e}");
    // qnnpack over dim 0 is fine, fbgemm over the last dim too
    model(Requant::Qnnpack, &[5, 3, 4], 0, qi, qo).unwrap();
    model(Requant::Fbgemm, &[5, 3, 4], 2, qi, qo).unwrap();
}
