//! `binary` (a 65,536-entry table given by the model) and `mul` (PyTorch's
//! quantized mul, its table built from the rule) with input 1 broadcast into
//! input 0: the CPU loop equals an independent numpy-style reference, the GPU
//! equals the CPU on seeded random data for every broadcast form, the file
//! round trip keeps every bit, and bad inputs are typed errors.

mod common;

use std::sync::Arc;

use common::file_edit::{load_err, node_mut, rewrite};
use common::{first_mismatch, gpu, Rng};
use qfuse::model::{DType, Model, Node, Op, TensorInfo, Value};
use qfuse::{Error, GpuContext, QParams, Requant};
use safetensors::{Dtype, SafeTensors};

const SEED: u64 = 0x5eed_b1a7;

/// Per-sample (input 0, input 1) shapes: every broadcast form.
const FORMS: &[(&[usize], &[usize])] = &[
    (&[5, 6, 7], &[5, 6, 7]),
    (&[5, 6, 7], &[1]),
    (&[5, 6, 7], &[1, 1, 1]),
    (&[5, 6, 7], &[5, 1, 1]),
    (&[8, 3, 3], &[8, 1, 1]),
    (&[5, 6, 7], &[6, 7]),
    (&[5, 6, 7], &[7]),
    (&[5, 6, 7], &[1, 6, 1]),
    (&[5, 6, 7], &[5, 6, 1]),
    (&[5, 6, 7], &[1, 6, 7]),
    (&[13], &[13]),
    (&[13], &[1]),
    (&[6, 4], &[6, 1]),
    (&[6, 4], &[4]),
    (&[3, 1, 1], &[3, 1, 1]),
];

fn random_q(r: &mut Rng, signed: bool) -> QParams {
    let scale = 0.002 + r.f32() * 0.1;
    if signed {
        QParams::new_i8(scale, r.range(0, 255) as i32 - 128).unwrap()
    } else {
        QParams::new(scale, r.range(0, 255) as i32).unwrap()
    }
}

/// Independent reference: numpy broadcasting on the batched NCHW shapes.
fn reference(table: &[u8], a: &[u8], sa: &[usize], b: &[u8], sb: &[usize]) -> Vec<u8> {
    let r = sa.len();
    let sbp: Vec<usize> = std::iter::once(sb[0])
        .chain(std::iter::repeat_n(1, r - sb.len()))
        .chain(sb[1..].iter().copied())
        .collect();
    (0..a.len())
        .map(|i| {
            // multi-index of i in sa
            let mut rem = i;
            let mut idx = vec![0; r];
            for k in (0..r).rev() {
                idx[k] = rem % sa[k];
                rem /= sa[k];
            }
            let mut j = 0;
            for k in 0..r {
                let ik = if sbp[k] == 1 { 0 } else { idx[k] };
                j = j * sbp[k] + ik;
            }
            table[a[i] as usize * 256 + b[j] as usize]
        })
        .collect()
}

/// A one-op model reading inputs `a` and `b`. The GPU takes model inputs of
/// 1 or 3 dimensions only, so a 2-dimensional one arrives flat and is
/// reshaped inside the graph.
fn two_input_model(
    engine: Requant,
    op: Op,
    sa: &[usize],
    qa: QParams,
    sb: &[usize],
    qb: QParams,
) -> qfuse::Result<Model> {
    let mut inputs = Vec::new();
    let mut nodes = Vec::new();
    let mut names = Vec::new();
    for (name, s, q) in [("a", sa, qa), ("b", sb, qb)] {
        let flat = s.len() == 2;
        inputs.push((
            name.to_string(),
            TensorInfo {
                shape: if flat { vec![s[0] * s[1]] } else { s.to_vec() },
                dtype: DType::QUInt8(q),
            },
        ));
        if flat {
            nodes.push(Node {
                name: format!("{name}_2d"),
                op: Op::Reshape(s.to_vec()),
                inputs: vec![name.into()],
            });
            names.push(format!("{name}_2d"));
        } else {
            names.push(name.to_string());
        }
    }
    nodes.push(Node {
        name: "y".into(),
        op,
        inputs: names,
    });
    Model::new(engine, inputs, vec!["y".into()], nodes)
}

/// The batched shape a model input of per-sample shape `s` is fed with.
fn fed_shape(batch: usize, s: &[usize]) -> Vec<usize> {
    if s.len() == 2 {
        vec![batch, s[0] * s[1]]
    } else {
        std::iter::once(batch).chain(s.iter().copied()).collect()
    }
}

fn q_value(data: Vec<u8>, shape: Vec<usize>, q: QParams) -> Value {
    Value::Q { data, shape, q }
}

fn bytes_of(v: &Value) -> &[u8] {
    match v {
        Value::Q { data, .. } => data,
        _ => panic!("float output"),
    }
}

/// Runs every form with `make_op` on CPU (against the reference) and, with a
/// context, on the GPU (against the CPU).
fn check_forms(ctx: Option<&GpuContext>, mul: bool) {
    let mut r = Rng(SEED + mul as u64);
    println!("seed {SEED:#x} (mul: {mul})");
    let mut checked = 0;
    for (fi, &(sa, sb)) in FORMS.iter().enumerate() {
        for signed in [false, true] {
            if mul && signed {
                continue;
            }
            let batch = r.range(1, 3);
            let (qa, qb, qo) = (
                random_q(&mut r, signed),
                random_q(&mut r, signed),
                random_q(&mut r, signed),
            );
            let (op, table) = if mul {
                let relu = fi % 2 == 1;
                let t = qfuse::ops::pytorch_mul_table(qa, qb, qo, relu).unwrap();
                (Op::Mul { relu, out: qo }, t)
            } else {
                let t = r.bytes(65536);
                (
                    Op::Binary {
                        table: Arc::new(t.clone()),
                        out: qo,
                    },
                    t,
                )
            };
            let model = two_input_model(Requant::Fbgemm, op, sa, qa, sb, qb)
                .unwrap_or_else(|e| panic!("{sa:?} x {sb:?}: {e}"));
            let bsa: Vec<usize> = std::iter::once(batch).chain(sa.iter().copied()).collect();
            let bsb: Vec<usize> = std::iter::once(batch).chain(sb.iter().copied()).collect();
            let a = r.bytes(bsa.iter().product());
            let b = r.bytes(bsb.iter().product());
            let want = reference(&table, &a, &bsa, &b, &bsb);
            let inputs = vec![
                q_value(a, fed_shape(batch, sa), qa),
                q_value(b, fed_shape(batch, sb), qb),
            ];
            let cpu = model.run_cpu(&inputs).unwrap();
            assert_eq!(cpu[0].shape(), &bsa[..]);
            if let Some(m) = first_mismatch(bytes_of(&cpu[0]), &want) {
                panic!(
                    "seed {SEED:#x} form {sa:?} x {sb:?} signed {signed}: CPU vs reference: {m}"
                );
            }
            assert!(want.iter().any(|&v| v != want[0]), "constant output");
            if let Some(ctx) = ctx {
                let g = qfuse::GpuModel::new(ctx, &model)
                    .and_then(|g| g.run(ctx, &inputs))
                    .unwrap_or_else(|e| panic!("{sa:?} x {sb:?}: {e}"));
                if let Some(m) = first_mismatch(bytes_of(&g[0]), bytes_of(&cpu[0])) {
                    panic!("seed {SEED:#x} form {sa:?} x {sb:?} signed {signed}: GPU vs CPU: {m}");
                }
            }
            checked += 1;
        }
    }
    println!("{checked} cases");
    assert!(checked >= FORMS.len());
}

#[test]
fn binary_cpu_equals_reference_for_every_broadcast_form() {
    check_forms(None, false);
}

#[test]
fn mul_cpu_equals_reference_for_every_broadcast_form() {
    check_forms(None, true);
}

#[test]
fn binary_gpu_equals_cpu_for_every_broadcast_form() {
    let ctx = gpu();
    check_forms(Some(&ctx), false);
}

#[test]
fn mul_gpu_equals_cpu_for_every_broadcast_form() {
    let ctx = gpu();
    check_forms(Some(&ctx), true);
}

/// binary (qint8 output) then mul, saved and loaded.
fn chain_model() -> (Model, Vec<Value>) {
    let mut r = Rng(SEED ^ 0xf11e);
    let u = |s, z| QParams::new(s, z).unwrap();
    let (qa, qb) = (u(0.02, 100), u(0.05, 3));
    let qs = QParams::new_i8(0.03, -5).unwrap();
    let t = qfuse::ops::ort_add_table(qa, qb, qs);
    let model = Model::new(
        Requant::Fbgemm,
        vec![
            (
                "a".into(),
                TensorInfo {
                    shape: vec![6, 4, 5],
                    dtype: DType::QUInt8(qa),
                },
            ),
            (
                "b".into(),
                TensorInfo {
                    shape: vec![6, 1, 1],
                    dtype: DType::QUInt8(qb),
                },
            ),
        ],
        vec!["s".into(), "m".into()],
        vec![
            Node {
                name: "s".into(),
                op: Op::Binary {
                    table: Arc::new(t),
                    out: qs,
                },
                inputs: vec!["a".into(), "b".into()],
            },
            Node {
                name: "m".into(),
                op: Op::Mul {
                    relu: true,
                    out: u(0.04, 20),
                },
                inputs: vec!["a".into(), "b".into()],
            },
        ],
    )
    .unwrap();
    let inputs = vec![
        q_value(r.bytes(2 * 120), vec![2, 6, 4, 5], qa),
        q_value(r.bytes(2 * 6), vec![2, 6, 1, 1], qb),
    ];
    (model, inputs)
}

#[test]
fn save_and_load_keep_every_bit() {
    let (model, inputs) = chain_model();
    let bytes = model.to_bytes().unwrap();
    let back = Model::from_bytes(&bytes).unwrap();
    let (a, b) = (
        model.run_cpu(&inputs).unwrap(),
        back.run_cpu(&inputs).unwrap(),
    );
    assert_eq!(a.len(), 2);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(bytes_of(x), bytes_of(y));
        assert_eq!(x.shape(), y.shape());
    }
    match &a[0] {
        Value::Q { q, .. } => assert!(q.signed && q.true_zero_point() == -5),
        _ => panic!(),
    }
    match &b[0] {
        Value::Q { q, .. } => assert_eq!(*q, QParams::new_i8(0.03, -5).unwrap()),
        _ => panic!(),
    }
    assert_eq!(back.to_bytes().unwrap(), bytes);
    // the table is a tensor of the file
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("s.table").unwrap();
    assert_eq!((t.dtype(), t.shape()), (Dtype::U8, &[65536usize][..]));
}

#[test]
fn bad_files_are_errors() {
    let (model, _) = chain_model();
    let bytes = model.to_bytes().unwrap();
    let short = rewrite(
        &bytes,
        |_| {},
        |t| {
            let e = t.iter_mut().find(|e| e.0 == "s.table").unwrap();
            e.2 = vec![1000];
            e.3.truncate(1000);
        },
    );
    let e = load_err(&short);
    assert!(e.contains("s.table") && e.contains("65536"), "{e}");
    let missing = rewrite(&bytes, |_| {}, |t| t.retain(|e| e.0 != "s.table"));
    let e = load_err(&missing);
    assert!(e.contains("s.table") && e.contains("missing"), "{e}");
    let wrong_dtype = rewrite(
        &bytes,
        |_| {},
        |t| {
            t.iter_mut().find(|e| e.0 == "s.table").unwrap().1 = Dtype::I8;
        },
    );
    assert!(load_err(&wrong_dtype).contains("dtype"));
    let bad_type = rewrite(
        &bytes,
        |h| node_mut(h, "s")["dtype"] = "int4".into(),
        |_| {},
    );
    let e = load_err(&bad_type);
    assert!(e.contains("dtype") && e.contains("int4"), "{e}");
    let bad_zp = rewrite(
        &bytes,
        |h| node_mut(h, "s")["zero_point"] = 200.into(),
        |_| {},
    );
    let e = load_err(&bad_zp);
    assert!(e.contains("qint8") && e.contains("200"), "{e}");
    let bad_act = rewrite(
        &bytes,
        |h| node_mut(h, "m")["activation"] = "gelu".into(),
        |_| {},
    );
    assert!(load_err(&bad_act).contains("gelu"));
}

#[test]
fn bad_inputs_are_typed_errors() {
    let u = |s, z| QParams::new(s, z).unwrap();
    let q = u(0.02, 10);
    let table = || Arc::new(vec![7u8; 65536]);
    let bin = || Op::Binary {
        table: table(),
        out: q,
    };
    // shapes that do not broadcast
    for (sa, sb) in [
        (&[4usize, 3, 2][..], &[4usize][..]),
        (&[4, 3, 2], &[2, 3, 2]),
        (&[4, 1, 1], &[4, 3, 2]),
        (&[4], &[1, 4]),
    ] {
        for op in [
            bin(),
            Op::Mul {
                relu: false,
                out: q,
            },
        ] {
            let e = two_input_model(Requant::Fbgemm, op, sa, q, sb, q).unwrap_err();
            assert!(
                matches!(e.root_cause(), Error::Shape { .. }),
                "{sa:?} x {sb:?}: {e}"
            );
            assert!(e.to_string().contains("broadcast"), "{e}");
        }
    }
    // a table of the wrong length
    let e = two_input_model(
        Requant::Fbgemm,
        Op::Binary {
            table: Arc::new(vec![0; 100]),
            out: q,
        },
        &[3],
        q,
        &[3],
        q,
    )
    .unwrap_err();
    assert!(matches!(e.root_cause(), Error::Config { .. }), "{e}");
    assert!(e.to_string().contains("65536"), "{e}");
    // a float input
    let e = Model::new(
        Requant::Fbgemm,
        vec![
            (
                "a".into(),
                TensorInfo {
                    shape: vec![3],
                    dtype: DType::QUInt8(q),
                },
            ),
            (
                "b".into(),
                TensorInfo {
                    shape: vec![3],
                    dtype: DType::F32,
                },
            ),
        ],
        vec!["y".into()],
        vec![Node {
            name: "y".into(),
            op: bin(),
            inputs: vec!["a".into(), "b".into()],
        }],
    )
    .unwrap_err();
    assert!(matches!(e.root_cause(), Error::DType { .. }), "{e}");
    // wrong arity
    let e = Model::new(
        Requant::Fbgemm,
        vec![(
            "a".into(),
            TensorInfo {
                shape: vec![3],
                dtype: DType::QUInt8(q),
            },
        )],
        vec!["y".into()],
        vec![Node {
            name: "y".into(),
            op: bin(),
            inputs: vec!["a".into()],
        }],
    )
    .unwrap_err();
    assert!(e.to_string().contains("2 inputs"), "{e}");
    // mul: qint8, the onnxruntime rule set, overflowing multipliers
    let s = QParams::new_i8(0.02, 0).unwrap();
    let e = two_input_model(
        Requant::Fbgemm,
        Op::Mul {
            relu: false,
            out: q,
        },
        &[3],
        s,
        &[3],
        q,
    )
    .unwrap_err();
    assert!(matches!(e.root_cause(), Error::Unsupported(_)), "{e}");
    let e = two_input_model(
        Requant::OnnxRuntime,
        Op::Mul {
            relu: false,
            out: q,
        },
        &[3],
        q,
        &[3],
        q,
    )
    .unwrap_err();
    assert!(matches!(e.root_cause(), Error::Unsupported(_)), "{e}");
    let e = two_input_model(
        Requant::Fbgemm,
        Op::Mul {
            relu: false,
            out: u(1e-5, 0),
        },
        &[3],
        u(1.0, 0),
        &[3],
        u(1.0, 0),
    )
    .unwrap_err();
    assert!(matches!(e.root_cause(), Error::Unsupported(_)), "{e}");
    // run-time inputs of the wrong shape
    let m = two_input_model(Requant::Fbgemm, bin(), &[4, 2, 2], q, &[4, 1, 1], q).unwrap();
    let e = m
        .run_cpu(&[
            q_value(vec![1; 16], vec![1, 4, 2, 2], q),
            q_value(vec![1; 8], vec![1, 4, 2, 1], q),
        ])
        .unwrap_err();
    assert!(matches!(e.root_cause(), Error::Shape { .. }), "{e}");
}
