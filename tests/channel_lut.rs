//! `channel_lut` (one 256-entry table per channel, channel = dim 0 of the
//! per-sample shape): the file round trip, the CPU loop against a direct
//! computation, GPU == CPU on seeded random tables, shapes and data (rank 1
//! to 3, channel counts not a multiple of 4, quint8 and qint8, after an
//! aliased reshape), the errors bad tables give, and PyTorch's vectors
//! (`tests/data/chanlut`, `tools/gen_chanlut_ops.py`): quantized batch_norm2d
//! (+ relu) and prelu under fbgemm, qnnpack and x86 — the exporter's tables
//! reproduce PyTorch's output on CPU and GPU, and the Rust rules
//! (`pytorch_batch_norm_tables`, `pytorch_prelu_tables`) give those tables.

mod common;

use std::sync::Arc;

use common::{first_mismatch, gpu, Rng, TensorFile};
use qfuse::model::{DType, Model, Node, Op, TensorInfo, Value};
use qfuse::{Error, QParams, Requant};

fn qin(shape: Vec<usize>, q: QParams) -> Vec<(String, TensorInfo)> {
    vec![(
        "x".into(),
        TensorInfo {
            shape,
            dtype: DType::QUInt8(q),
        },
    )]
}

/// x -> channel_lut (to `qo`) [-> reshape -> channel_lut (back to `qi`)].
fn model(shape: &[usize], qi: QParams, qo: QParams, rng: &mut Rng, reshape: bool) -> Model {
    let c = shape[0];
    let mut nodes = vec![Node {
        name: "y".into(),
        op: Op::ChannelLut {
            tables: Arc::new(rng.bytes(c * 256)),
            out: qo,
        },
        inputs: vec!["x".into()],
    }];
    let mut outs = vec!["y".to_string()];
    if reshape {
        // [C, H, W] -> [C, H * W]: the second table op reads a reshaped input
        let plane: usize = shape[1..].iter().product();
        nodes.push(Node {
            name: "r".into(),
            op: Op::Reshape(vec![c, plane]),
            inputs: vec!["y".into()],
        });
        nodes.push(Node {
            name: "z".into(),
            op: Op::ChannelLut {
                tables: Arc::new(rng.bytes(c * 256)),
                out: qi,
            },
            inputs: vec!["r".into()],
        });
        outs.push("z".into());
    }
    Model::new(Requant::Fbgemm, qin(shape.to_vec(), qi), outs, nodes).unwrap()
}

fn tables_of(m: &Model, node: &str) -> Arc<Vec<u8>> {
    match &m.nodes().iter().find(|n| n.name == node).unwrap().op {
        Op::ChannelLut { tables, .. } => Arc::clone(tables),
        _ => panic!("{node} is not a channel_lut"),
    }
}

#[test]
fn channel_lut_cpu_is_the_tables() {
    let seed = 7;
    let mut rng = Rng(seed);
    let qi = QParams::new(0.1, 100).unwrap();
    let qo = QParams::new_i8(0.05, -3).unwrap();
    let (n, c, h, w) = (2, 5, 3, 4);
    let m = model(&[c, h, w], qi, qo, &mut rng, false);
    let t = tables_of(&m, "y");
    let data = rng.bytes(n * c * h * w);
    assert!(data.iter().any(|&b| b != data[0]), "seed {seed}: flat data");
    let got = m
        .run_cpu(&[Value::Q {
            data: data.clone(),
            shape: vec![n, c, h, w],
            q: qi,
        }])
        .unwrap();
    let mut want = Vec::new();
    for b in 0..n {
        for ch in 0..c {
            for p in 0..h * w {
                let v = data[(b * c + ch) * h * w + p];
                want.push(t[ch * 256 + v as usize]);
            }
        }
    }
    let Value::Q { data: g, q, .. } = &got[0] else {
        panic!("not quantized")
    };
    assert_eq!(*q, qo);
    if let Some(mm) = first_mismatch(g, &want) {
        panic!("seed {seed}: {mm}");
    }
}

#[test]
fn channel_lut_round_trip_keeps_tables_and_qparams() {
    let mut rng = Rng(3);
    let qi = QParams::new_i8(0.1, 5).unwrap();
    let qo = QParams::new(0.03, 17).unwrap();
    let m = model(&[6, 2, 3], qi, qo, &mut rng, true);
    let bytes = m.to_bytes().unwrap();
    let m2 = Model::from_bytes(&bytes).unwrap();
    assert_eq!(m2.to_bytes().unwrap(), bytes, "save(load(save(m))) changed");
    assert_eq!(tables_of(&m, "y"), tables_of(&m2, "y"));
    assert_eq!(tables_of(&m, "z"), tables_of(&m2, "z"));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("y.tables").unwrap().shape(), &[6, 256]);
    let input = [Value::Q {
        data: rng.bytes(2 * 36),
        shape: vec![2, 6, 2, 3],
        q: qi,
    }];
    assert_eq!(m.run_cpu(&input).unwrap(), m2.run_cpu(&input).unwrap());
}

#[test]
fn channel_lut_gpu_equals_cpu() {
    let ctx = gpu();
    let mut cases = 0;
    for seed in 0..12u64 {
        let seed = 2000 + seed;
        println!("seed {seed}");
        let mut rng = Rng(seed);
        let c = rng.range(1, 11);
        let shape = match seed % 3 {
            0 => vec![c],
            1 => vec![c, rng.range(1, 6)],
            _ => vec![c, rng.range(1, 7), rng.range(1, 9)],
        };
        let n = rng.range(1, 4);
        let qi = if seed % 2 == 0 {
            QParams::new(0.02, rng.range(0, 255) as i32).unwrap()
        } else {
            QParams::new_i8(0.02, rng.range(0, 255) as i32 - 128).unwrap()
        };
        let qo = QParams::new(0.07, rng.range(0, 255) as i32).unwrap();
        let reshape = shape.len() == 3;
        let m = model(&shape, qi, qo, &mut rng, reshape);
        let numel: usize = shape.iter().product();
        let data = rng.bytes(n * numel);
        assert!(data.iter().any(|&b| b != data[0]), "seed {seed}: flat data");
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
        assert_eq!(got.len(), cpu.len());
        for (k, (a, b)) in got.iter().zip(&cpu).enumerate() {
            let (
                Value::Q {
                    data: ga, q: qa, ..
                },
                Value::Q {
                    data: ca, q: qc, ..
                },
            ) = (a, b)
            else {
                panic!("seed {seed}: output {k} is not quantized");
            };
            assert_eq!(qa, qc, "seed {seed}: output {k} qparams");
            if let Some(mm) = first_mismatch(ga, ca) {
                panic!("seed {seed}, shape {bshape:?}: output {k}: {mm}");
            }
            cases += 1;
        }
    }
    assert!(cases >= 12);
}

#[test]
fn channel_lut_bad_tables_are_errors() {
    let qi = QParams::new(0.1, 0).unwrap();
    let bad = |tables: Vec<u8>, shape: Vec<usize>| {
        Model::new(
            Requant::Fbgemm,
            qin(shape, qi),
            vec!["y".into()],
            vec![Node {
                name: "y".into(),
                op: Op::ChannelLut {
                    tables: Arc::new(tables),
                    out: qi,
                },
                inputs: vec!["x".into()],
            }],
        )
    };
    let e = bad(vec![0; 3 * 256], vec![4, 2, 2]).unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("768 bytes") && s.contains("4 channels"),
        "unexpected error: {s}"
    );
    assert!(matches!(e, Error::Node { .. }), "{e:?}");
    let e = bad(vec![0; 255], vec![1]).unwrap_err();
    assert!(e.to_string().contains("255 bytes"), "{e}");
    assert!(bad(vec![0; 2 * 256], vec![2, 1, 1]).is_ok());
}

fn qp(m: &serde_json::Value, s: &str, z: &str) -> QParams {
    QParams::new(m[s].as_f64().unwrap() as f32, m[z].as_i64().unwrap() as i32).unwrap()
}

#[test]
fn pytorch_vectors_channel_lut_cpu_gpu_and_rules() {
    use qfuse::ops::chanlut::{pytorch_batch_norm_tables, pytorch_prelu_tables, BatchNormParams};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/chanlut");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 48,
        "{} cases in {}",
        paths.len(),
        dir.display()
    );
    let ctx = gpu();
    let (mut ties, mut cl, mut scalar_tail) = (0, 0, 0);
    for p in &paths {
        let f = TensorFile::open(p);
        let m = f.meta("case");
        let name = m["name"].as_str().unwrap().to_string();
        let op = m["op"].as_str().unwrap();
        let shape: Vec<usize> = m["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let (qi, qo) = (
            qp(&m, "input_scale", "input_zero_point"),
            qp(&m, "output_scale", "output_zero_point"),
        );
        let c = shape[1];
        let tables = f.u8("tables");
        assert_eq!(tables.len(), c * 256, "{name}");
        // the Rust rule gives PyTorch's tables
        let rule = if op.starts_with("batch_norm2d") {
            let (w, b, mean, var) = (f.f32("weight"), f.f32("bias"), f.f32("mean"), f.f32("var"));
            let bp = BatchNormParams {
                weight: &w,
                bias: &b,
                mean: &mean,
                var: &var,
                eps: m["eps"].as_f64().unwrap(),
            };
            if !c.is_multiple_of(64) {
                scalar_tail += 1;
            }
            pytorch_batch_norm_tables(qi, qo, &bp, op == "batch_norm2d_relu")
        } else {
            pytorch_prelu_tables(
                qi,
                qo,
                &f.u8("weight_q"),
                m["weight_scale"].as_f64().unwrap() as f32,
                m["weight_zero_point"].as_i64().unwrap() as i32,
                c,
            )
        };
        if let Some(mm) = first_mismatch(&rule, &tables) {
            panic!("{name}: Rust rule vs PyTorch's tables (index = channel * 256 + byte): {mm}");
        }
        ties += m["ties"].as_bool().unwrap() as usize;
        cl += (m["input_layout"] == "channels_last") as usize;
        // channel_lut with those tables reproduces PyTorch's output, CPU and GPU
        let model = Model::new(
            Requant::Fbgemm,
            qin(shape[1..].to_vec(), qi),
            vec!["y".into()],
            vec![Node {
                name: "y".into(),
                op: Op::ChannelLut {
                    tables: Arc::new(tables),
                    out: qo,
                },
                inputs: vec!["x".into()],
            }],
        )
        .unwrap();
        let input = [Value::Q {
            data: f.u8("input"),
            shape: shape.clone(),
            q: qi,
        }];
        let want = f.u8("output");
        let cpu = model.run_cpu(&input).unwrap();
        let g = qfuse::GpuModel::new(&ctx, &model).unwrap();
        let got = g.run(&ctx, &input).unwrap();
        for (what, v) in [("CPU", &cpu[0]), ("GPU", &got[0])] {
            let Value::Q { data, q, .. } = v else {
                panic!("{name}: {what} output not quantized")
            };
            assert_eq!(*q, qo, "{name} {what}");
            if let Some(mm) = first_mismatch(data, &want) {
                panic!("{name}: {what} vs PyTorch: {mm}");
            }
        }
    }
    assert!(
        ties >= 8 && cl >= 16 && scalar_tail >= 8,
        "{ties} {cl} {scalar_tail}"
    );
}
