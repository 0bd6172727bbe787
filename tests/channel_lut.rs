//! `channel_lut` (one 256-entry table per channel, channel = dim 0 of the
//! per-sample shape): the file round trip, the CPU loop against a direct
//! computation, GPU == CPU on seeded random tables, shapes and data (rank 1
//! to 3, channel counts not a multiple of 4, quint8 and qint8, after an
//! aliased reshape), and the errors bad tables give.

mod common;

use std::sync::Arc;

use common::{first_mismatch, gpu, Rng};
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
