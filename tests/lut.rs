//! `lut` (a 256-entry table given as data): the file round trip, GPU == CPU on
//! seeded random tables and data (quint8 and qint8 on either side), and the
//! errors a bad `table` attribute gives.

mod common;

use std::collections::HashMap;

use common::{first_mismatch, gpu, Rng};
use qfuse::model::{DType, Model, Node, Op, TensorInfo, Value};
use qfuse::{Error, QParams, Requant};
use safetensors::SafeTensors;
use serde_json::{json, Value as Json};

fn table(rng: &mut Rng) -> Box<[u8; 256]> {
    let t = rng.bytes(256);
    Box::new(t.try_into().unwrap())
}

/// x (float) -> quantize (quint8) -> lut (to qint8) -> lut (to quint8) -> dequantize,
/// with the qint8 tensor also an output.
fn chain(seed: u64) -> Model {
    let mut rng = Rng(seed);
    let q0 = QParams::new(0.05, 131).unwrap();
    let q1 = QParams::new_i8(0.0213, -7).unwrap();
    let q2 = QParams::new(0.1, 3).unwrap();
    let nodes = vec![
        Node {
            name: "xq".into(),
            op: Op::Quantize(q0),
            inputs: vec!["x".into()],
        },
        Node {
            name: "a".into(),
            op: Op::Lut {
                table: table(&mut rng),
                out: q1,
            },
            inputs: vec!["xq".into()],
        },
        Node {
            name: "b".into(),
            op: Op::Lut {
                table: table(&mut rng),
                out: q2,
            },
            inputs: vec!["a".into()],
        },
        Node {
            name: "y".into(),
            op: Op::Dequantize,
            inputs: vec!["b".into()],
        },
    ];
    let inputs = vec![(
        "x".to_string(),
        TensorInfo {
            shape: vec![3, 5, 7],
            dtype: DType::F32,
        },
    )];
    Model::new(Requant::Fbgemm, inputs, vec!["y".into(), "a".into()], nodes).unwrap()
}

#[test]
fn lut_round_trip_keeps_table_and_qparams() {
    let m = chain(11);
    let bytes = m.to_bytes().unwrap();
    let m2 = Model::from_bytes(&bytes).unwrap();
    assert_eq!(m2.to_bytes().unwrap(), bytes, "save(load(save(m))) changed");
    for (n1, n2) in m.nodes().iter().zip(m2.nodes()) {
        match (&n1.op, &n2.op) {
            (Op::Lut { table: t1, out: o1 }, Op::Lut { table: t2, out: o2 }) => {
                assert_eq!(t1, t2, "node {}: table changed", n1.name);
                assert_eq!(o1, o2, "node {}: qparams changed", n1.name);
            }
            (a, b) => assert_eq!(a.name(), b.name()),
        }
    }
    // The signed output is written with its int8 zero point.
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let h: Json = serde_json::from_str(&meta.metadata().as_ref().unwrap()["qfuse"]).unwrap();
    let a = h["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "a")
        .unwrap();
    assert_eq!(a["op"], "lut");
    assert_eq!(a["zero_point"], -7);
    assert_eq!(a["signed"], true);
    assert_eq!(a["table"].as_array().unwrap().len(), 256);
    // Same outputs after the round trip.
    let mut rng = Rng(5);
    let x: Vec<f32> = (0..2 * 105).map(|_| rng.f32() * 14.0 - 7.0).collect();
    let input = [Value::F32 {
        data: x,
        shape: vec![2, 3, 5, 7],
    }];
    assert_eq!(m.run_cpu(&input).unwrap(), m2.run_cpu(&input).unwrap());
}

#[test]
fn lut_cpu_is_the_table() {
    let seed = 21;
    let mut rng = Rng(seed);
    let t = table(&mut rng);
    let qi = QParams::new_i8(0.5, 3).unwrap();
    let qo = QParams::new_i8(0.25, -100).unwrap();
    let m = Model::new(
        Requant::Qnnpack,
        vec![(
            "x".into(),
            TensorInfo {
                shape: vec![256],
                dtype: DType::QUInt8(qi),
            },
        )],
        vec!["y".into()],
        vec![Node {
            name: "y".into(),
            op: Op::Lut {
                table: t.clone(),
                out: qo,
            },
            inputs: vec!["x".into()],
        }],
    )
    .unwrap();
    let data: Vec<u8> = (0..=255).collect();
    let got = m
        .run_cpu(&[Value::Q {
            data,
            shape: vec![1, 256],
            q: qi,
        }])
        .unwrap();
    let want = Value::Q {
        data: t.to_vec(),
        shape: vec![1, 256],
        q: qo,
    };
    assert_eq!(got[0], want, "seed {seed}");
}

#[test]
fn lut_gpu_equals_cpu() {
    let ctx = gpu();
    for seed in 0..6u64 {
        println!("seed {}", 1000 + seed);
        let mut rng = Rng(1000 + seed);
        // input: any shape, quint8 or qint8; an odd element count covers partial words
        let c = rng.range(1, 9);
        let h = rng.range(1, 11);
        let w = rng.range(1, 13);
        let n = rng.range(1, 3);
        let qi = if seed % 2 == 0 {
            QParams::new(0.02, rng.range(0, 255) as i32).unwrap()
        } else {
            QParams::new_i8(0.02, rng.range(0, 255) as i32 - 128).unwrap()
        };
        let qo = if seed % 3 == 0 {
            QParams::new(0.07, rng.range(0, 255) as i32).unwrap()
        } else {
            QParams::new_i8(0.07, rng.range(0, 255) as i32 - 128).unwrap()
        };
        let (t1, t2) = (table(&mut rng), table(&mut rng));
        let m = Model::new(
            Requant::Fbgemm,
            vec![(
                "x".into(),
                TensorInfo {
                    shape: vec![c, h, w],
                    dtype: DType::QUInt8(qi),
                },
            )],
            vec!["y".into(), "z".into()],
            vec![
                Node {
                    name: "y".into(),
                    op: Op::Lut { table: t1, out: qo },
                    inputs: vec!["x".into()],
                },
                Node {
                    name: "z".into(),
                    op: Op::Lut { table: t2, out: qi },
                    inputs: vec!["y".into()],
                },
            ],
        )
        .unwrap();
        let data = rng.bytes(n * c * h * w);
        assert!(data.iter().any(|&b| b != data[0]), "seed {seed}: flat data");
        let input = [Value::Q {
            data,
            shape: vec![n, c, h, w],
            q: qi,
        }];
        let cpu = m.run_cpu(&input).unwrap();
        let g = qfuse::GpuModel::new(&ctx, &m).unwrap();
        let got = g.run(&ctx, &input).unwrap();
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
            if let Some(m) = first_mismatch(ga, ca) {
                panic!("seed {seed}, shape {:?}: output {k}: {m}", [n, c, h, w]);
            }
        }
    }
}

/// The chain's file with node `a`'s attributes edited.
fn edited(edit: impl FnOnce(&mut Json)) -> std::result::Result<Model, Error> {
    let bytes = chain(3).to_bytes().unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut h: Json = serde_json::from_str(&meta.metadata().as_ref().unwrap()["qfuse"]).unwrap();
    let a = h["nodes"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|n| n["name"] == "a")
        .unwrap();
    edit(a);
    let b = safetensors::serialize(
        Vec::<(String, safetensors::tensor::TensorView)>::new(),
        Some(HashMap::from([("qfuse".to_string(), h.to_string())])),
    )
    .unwrap();
    Model::from_bytes(&b)
}

fn err(edit: impl FnOnce(&mut Json)) -> String {
    match edited(edit) {
        Ok(_) => panic!("a bad lut node loaded"),
        Err(e) => {
            assert!(
                matches!(&e, Error::Node { node, op, source }
                    if node == "a" && op == "lut" && matches!(**source, Error::Model(_))),
                "not Error::Node(lut a, Error::Model): {e:?}"
            );
            e.to_string()
        }
    }
}

#[test]
fn lut_bad_table_is_an_error() {
    let e = err(|a| {
        a["table"].as_array_mut().unwrap().pop();
    });
    assert!(e.contains("255 entries") && e.contains("256"), "{e}");
    assert!(e.contains("\"a\""), "names the node: {e}");
    let e = err(|a| a["table"].as_array_mut().unwrap().push(json!(0)));
    assert!(e.contains("257 entries"), "{e}");
    let e = err(|a| a["table"] = json!([]));
    assert!(e.contains("0 entries"), "{e}");
    let e = err(|a| a["table"][17] = json!(256));
    assert!(e.contains("entry 17") && e.contains("256"), "{e}");
    let e = err(|a| a["table"][3] = json!(-1));
    assert!(e.contains("entry 3"), "{e}");
    let e = err(|a| a["table"][0] = json!(1.5));
    assert!(e.contains("entry 0"), "{e}");
    let e = err(|a| a["table"] = json!("abc"));
    assert!(e.contains("\"table\" must be a list"), "{e}");
    let e = err(|a| {
        a.as_object_mut().unwrap().remove("table");
    });
    assert!(e.contains("missing attribute \"table\""), "{e}");
    // signed qparams are checked in qint8's range
    let e = err(|a| a["zero_point"] = json!(130));
    assert!(e.contains("qint8"), "{e}");
    let e = err(|a| a["signed"] = json!("yes"));
    assert!(e.contains("signed"), "{e}");
    // without "signed", a negative zero point is a quint8 error
    let e = err(|a| {
        a.as_object_mut().unwrap().remove("signed");
    });
    assert!(e.contains("quint8"), "{e}");
    // the edit helper itself loads an unedited file
    assert!(edited(|_| {}).is_ok());
}

/// x (quint8) -> conv2d 1x1 (identity weights: the conv's output is its input,
/// channels-last in PyTorch) -> lut_split, and x -> lut_split (contiguous).
fn split_model(c: usize, h: usize, w: usize, t: &[u8; 256], tail: &[u8; 256]) -> Model {
    use qfuse::layer::LayerKind;
    use qfuse::{Activation, Conv2dGeometry, QLayer};
    let q = QParams::new(0.05, 100).unwrap();
    let out = QParams::new(0.125, 7).unwrap();
    let mut weight = vec![0i8; c * c];
    for i in 0..c {
        weight[i * c + i] = 1;
    }
    let layer = QLayer::from_pytorch(
        LayerKind::Conv2d,
        Conv2dGeometry::new(c, c, [1, 1]),
        weight,
        vec![1.0; c],
        &vec![0; c],
        vec![0.0; c],
        q,
        q,
        Activation::None,
        Requant::Fbgemm,
    )
    .unwrap();
    let split = |name: &str, input: &str| Node {
        name: name.into(),
        op: Op::LutSplit {
            table: Box::new(*t),
            tail: Box::new(*tail),
            out,
        },
        inputs: vec![input.into()],
    };
    Model::new(
        Requant::Fbgemm,
        vec![(
            "x".into(),
            TensorInfo {
                shape: vec![c, h, w],
                dtype: DType::QUInt8(q),
            },
        )],
        vec!["cl".into(), "nchw".into(), "conv".into()],
        vec![
            Node {
                name: "conv".into(),
                op: Op::Conv2d(Box::new(layer)),
                inputs: vec!["x".into()],
            },
            split("cl", "conv"),
            split("nchw", "x"),
        ],
    )
    .unwrap()
}

#[test]
fn lut_split_follows_the_memory_order_on_cpu_and_gpu() {
    let ctx = gpu();
    for seed in 0..4u64 {
        println!("seed {}", 77 + seed);
        let mut rng = Rng(77 + seed);
        let (c, h, w) = (rng.range(2, 9), rng.range(2, 7), rng.range(2, 9));
        let n = rng.range(1, 3);
        let (t, tail) = (table(&mut rng), table(&mut rng));
        let m = split_model(c, h, w, &t, &tail);
        let data = rng.bytes(n * c * h * w);
        let input = [Value::Q {
            data: data.clone(),
            shape: vec![n, c, h, w],
            q: QParams::new(0.05, 100).unwrap(),
        }];
        let cpu = m.run_cpu(&input).unwrap();
        // the identity conv passes the bytes through
        let Value::Q { data: conv, .. } = &cpu[2] else {
            panic!("conv output not quantized")
        };
        assert_eq!(conv, &data, "seed {seed}: identity conv changed bytes");
        // independent rule: flat index in NHWC order (channels-last) or NCHW order
        let total = data.len();
        let split = total - total % 64;
        let (mut want_cl, mut want_nchw) = (vec![0u8; total], vec![0u8; total]);
        for b in 0..n {
            for ch in 0..c {
                for y in 0..h {
                    for xx in 0..w {
                        let i = ((b * c + ch) * h + y) * w + xx;
                        let j = ((b * h + y) * w + xx) * c + ch;
                        let v = data[i] as usize;
                        want_cl[i] = if j < split { t[v] } else { tail[v] };
                        want_nchw[i] = if i < split { t[v] } else { tail[v] };
                    }
                }
            }
        }
        assert!(
            want_cl != want_nchw || split == total,
            "seed {seed}: the two orders agree, the test separates nothing"
        );
        let gpu_out = qfuse::GpuModel::new(&ctx, &m)
            .unwrap()
            .run(&ctx, &input)
            .unwrap();
        for (what, got) in [("CPU", &cpu), ("GPU", &gpu_out)] {
            for (k, want) in [(0, &want_cl), (1, &want_nchw)] {
                let Value::Q { data: g, .. } = &got[k] else {
                    panic!("not quantized")
                };
                if let Some(e) = first_mismatch(g, want) {
                    panic!(
                        "seed {seed}, {what}, output {k}, shape {:?}: {e}",
                        [n, c, h, w]
                    );
                }
            }
        }
    }
}

#[test]
fn lut_split_round_trip_and_bad_tail_table() {
    let mut rng = Rng(9);
    let (t, tail) = (table(&mut rng), table(&mut rng));
    let m = split_model(3, 4, 5, &t, &tail);
    let bytes = m.to_bytes().unwrap();
    let m2 = Model::from_bytes(&bytes).unwrap();
    assert_eq!(m2.to_bytes().unwrap(), bytes);
    match &m2.nodes().iter().find(|n| n.name == "cl").unwrap().op {
        Op::LutSplit {
            table: a, tail: b, ..
        } => {
            assert_eq!(**a, *t);
            assert_eq!(**b, *tail);
        }
        other => panic!("loaded as {}", other.name()),
    }
    // a bad tail table names the attribute
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut h: Json = serde_json::from_str(&meta.metadata().as_ref().unwrap()["qfuse"]).unwrap();
    let node = h["nodes"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|n| n["name"] == "cl")
        .unwrap();
    node["tail_table"].as_array_mut().unwrap().truncate(100);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
    let b = safetensors::serialize(
        views,
        Some(HashMap::from([("qfuse".to_string(), h.to_string())])),
    )
    .unwrap();
    let e = match Model::from_bytes(&b) {
        Ok(_) => panic!("a bad lut_split loaded"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("\"tail_table\" has 100 entries") && e.contains("cl"),
        "{e}"
    );
}
