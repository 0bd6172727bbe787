//! `gather`: the GPU equals the CPU reference on seeded random data for many
//! maps (transposes, slices, multi-input concatenations on C, H and W, ONNX
//! Gather, chunks, channel shuffles, arbitrary multi-input maps), the CPU
//! equals the definition, a model holding gathers saves and loads with the
//! same outputs, and bad maps and files are errors naming the node.

mod common;

use std::sync::Arc;

use common::{first_mismatch, gpu, Rng};
use qfuse::model::{DType, Model, Node, Op, TensorInfo, Value};
use qfuse::ops::gather::{
    compose_index, concat_index, conv_transpose_index, fill_byte, fill_entry, slice_index,
    split_index, take_index, transpose_index, FILL,
};
use qfuse::{GpuModel, QParams, Requant};

fn qinfo(shape: &[usize], q: QParams) -> TensorInfo {
    TensorInfo {
        shape: shape.to_vec(),
        dtype: DType::QUInt8(q),
    }
}

/// The model input shape standing for a per-sample shape: a `[C, H]`
/// tensor comes in as `[C, H, 1]` and is reshaped (a GPU model input is
/// `[C, H, W]` or `[F]`).
fn input_shape(s: &[usize]) -> Vec<usize> {
    match *s {
        [c, h] => vec![c, h, 1],
        _ => s.to_vec(),
    }
}

/// A model of one gather over quantized inputs of these per-sample shapes.
fn gather_model(in_shapes: &[Vec<usize>], q: QParams, out: Vec<usize>, index: Vec<u32>) -> Model {
    let inputs: Vec<(String, TensorInfo)> = in_shapes
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("x{i}"), qinfo(&input_shape(s), q)))
        .collect();
    let mut nodes = Vec::new();
    let mut names = Vec::new();
    for (i, s) in in_shapes.iter().enumerate() {
        if s.len() == 2 {
            nodes.push(Node {
                name: format!("r{i}"),
                op: Op::Reshape(s.clone()),
                inputs: vec![format!("x{i}")],
            });
            names.push(format!("r{i}"));
        } else {
            names.push(format!("x{i}"));
        }
    }
    nodes.push(Node {
        name: "g".into(),
        op: Op::Gather {
            shape: out,
            index: Arc::new(index),
        },
        inputs: names,
    });
    Model::new(Requant::Fbgemm, inputs, vec!["g".into()], nodes).unwrap()
}

/// The definition: per sample, `concat(inputs)[index[i]]`.
fn expected(values: &[Value], index: &[u32], batch: usize) -> Vec<u8> {
    let mut y = Vec::new();
    for b in 0..batch {
        let mut cat = Vec::new();
        for v in values {
            let Value::Q { data, .. } = v else {
                unreachable!()
            };
            let per = data.len() / batch;
            cat.extend_from_slice(&data[b * per..(b + 1) * per]);
        }
        y.extend(
            index
                .iter()
                .map(|&i| fill_byte(i).unwrap_or_else(|| cat[i as usize])),
        );
    }
    y
}

fn random_shape(rng: &mut Rng, rank: usize) -> Vec<usize> {
    (0..rank)
        .map(|k| {
            if k == 0 {
                rng.pick(&[1, 2, 3, 4, 5, 7, 8, 9, 12, 16])
            } else {
                rng.range(1, 7)
            }
        })
        .collect()
}

/// One random case: input shapes and the map.
fn random_map(rng: &mut Rng) -> (String, Vec<Vec<usize>>, Vec<usize>, Vec<u32>) {
    let kind = rng.range(0, 7);
    match kind {
        0 => {
            let rank = rng.range(2, 3);
            let s = random_shape(rng, rank);
            let perms: &[&[usize]] = if rank == 2 {
                &[&[1, 0]]
            } else {
                &[&[0, 2, 1], &[1, 0, 2], &[1, 2, 0], &[2, 0, 1], &[2, 1, 0]]
            };
            let p = rng.pick(perms);
            let (o, i) = transpose_index(&s, p).unwrap();
            (format!("transpose {s:?} {p:?}"), vec![s], o, i)
        }
        1 => {
            let s = random_shape(rng, 3);
            let a = rng.range(0, 2);
            let d = s[a] as i64;
            let step = rng.pick(&[1i64, 2, 3, -1, -2]);
            let (st, en) = if step > 0 {
                (rng.range(0, d as usize - 1) as i64 - d, i64::MAX)
            } else {
                (-1, i64::MIN)
            };
            let (o, i) = slice_index(&s, &[st], &[en], &[a as i64], &[step]).unwrap();
            (
                format!("slice {s:?} axis {a} {st}..{en} step {step}"),
                vec![s],
                o,
                i,
            )
        }
        2 => {
            // Concatenation of 2 or 3 inputs along C, H or W.
            let a = rng.range(0, 2);
            let base = random_shape(rng, 3);
            let n = rng.range(2, 3);
            let shapes: Vec<Vec<usize>> = (0..n)
                .map(|_| {
                    let mut s = base.clone();
                    s[a] = if a == 0 {
                        rng.pick(&[1, 2, 3, 4, 5, 6, 8, 11])
                    } else {
                        rng.range(1, 5)
                    };
                    s
                })
                .collect();
            let (o, i) = concat_index(&shapes, a as i64).unwrap();
            (format!("concat {shapes:?} axis {a}"), shapes, o, i)
        }
        3 => {
            let s = random_shape(rng, 3);
            let a = rng.range(0, 2);
            let k = rng.range(1, 5);
            let idx: Vec<i64> = (0..k)
                .map(|_| rng.range(0, 2 * s[a] - 1) as i64 - s[a] as i64)
                .collect();
            let (o, i) = take_index(&s, a as i64, &idx, &[k]).unwrap();
            // Rank 4 when the indices add a dim; fold [.., k, ..] into 3 dims.
            let o = if o.len() > 3 {
                vec![o[0] * o[1], o[2], o[3]]
            } else {
                o
            };
            (format!("take {s:?} axis {a} {idx:?}"), vec![s], o, i)
        }
        4 => {
            // chunk(2) on channels, second half.
            let mut s = random_shape(rng, 3);
            s[0] = rng.pick(&[2, 4, 6, 8, 10, 16]);
            let (o, i) = split_index(&s, 0, s[0] / 2, s[0] / 2).unwrap();
            (format!("chunk {s:?}"), vec![s], o, i)
        }
        5 => {
            // Channel shuffle: [C, H, W] -> [g, C/g, H, W] -> transpose -> [C, H, W].
            let g = rng.range(2, 3);
            let cg = rng.range(1, 5);
            let (h, w) = (rng.range(1, 5), rng.range(1, 5));
            let (_, i) = transpose_index(&[g, cg, h, w], &[1, 0, 2, 3]).unwrap();
            let s = vec![g * cg, h, w];
            (format!("shuffle {s:?} groups {g}"), vec![s.clone()], s, i)
        }
        _ => {
            // An arbitrary map over inputs of mixed ranks.
            let n = rng.range(1, 3);
            let shapes: Vec<Vec<usize>> = (0..n)
                .map(|_| {
                    let r = rng.range(1, 3);
                    random_shape(rng, r)
                })
                .collect();
            let total: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
            let r = rng.range(1, 3);
            let o = random_shape(rng, r);
            let len: usize = o.iter().product();
            let i = (0..len).map(|_| rng.range(0, total - 1) as u32).collect();
            (format!("random {shapes:?} -> {o:?}"), shapes, o, i)
        }
    }
}

#[test]
fn gpu_equals_cpu_on_random_maps() {
    let ctx = gpu();
    let mut kinds = 0;
    for seed in 0..120u64 {
        let mut rng = Rng(seed);
        let (what, shapes, out, index) = random_map(&mut rng);
        let q = QParams::new(0.05 + rng.f32(), rng.range(0, 255) as i32).unwrap();
        let batch = rng.range(1, 3);
        let values: Vec<Value> = shapes
            .iter()
            .map(|s| {
                let mut shape = vec![batch];
                shape.extend(input_shape(s));
                let n: usize = shape.iter().product();
                Value::Q {
                    data: rng.bytes(n),
                    shape,
                    q,
                }
            })
            .collect();
        let want = expected(&values, &index, batch);
        assert!(want.iter().any(|&v| v != want[0]) || want.len() < 4);
        let model = gather_model(&shapes, q, out.clone(), index);
        let cpu = model.run_cpu(&values).unwrap();
        let Value::Q {
            data: got,
            shape,
            q: qo,
        } = &cpu[0]
        else {
            panic!("seed {seed} {what}: float output")
        };
        assert_eq!(qo, &q);
        let mut want_shape = vec![batch];
        want_shape.extend(&out);
        assert_eq!(shape, &want_shape, "seed {seed} {what}");
        if let Some(m) = first_mismatch(got, &want) {
            panic!("seed {seed} {what}: CPU differs from the definition at {m}");
        }
        let g = GpuModel::new(&ctx, &model).unwrap();
        let gout = g.run(&ctx, &values).unwrap();
        assert_eq!(gout[0].shape(), cpu[0].shape());
        let Value::Q { data: gd, .. } = &gout[0] else {
            panic!("seed {seed} {what}: float GPU output")
        };
        if let Some(m) = first_mismatch(gd, got) {
            panic!("seed {seed} {what} batch {batch}: GPU differs from CPU at {m}");
        }
        kinds += 1;
    }
    assert_eq!(kinds, 120);
}

/// quantize -> gather(transpose) -> gather(concat on W of it and the input)
/// -> dequantize, through the file and back, on CPU and GPU.
fn file_model() -> Model {
    let q = QParams::new(0.03, 17).unwrap();
    let x = TensorInfo {
        shape: vec![3, 4, 4],
        dtype: DType::F32,
    };
    let (s1, t) = transpose_index(&[3, 4, 4], &[0, 2, 1]).unwrap();
    let (s2, c) = concat_index(&[s1.clone(), vec![3, 4, 4]], 2).unwrap();
    let node = |name: &str, op: Op, ins: &[&str]| Node {
        name: name.into(),
        op,
        inputs: ins.iter().map(|s| s.to_string()).collect(),
    };
    Model::new(
        Requant::Fbgemm,
        vec![("x".into(), x)],
        vec!["out".into()],
        vec![
            node("xq", Op::Quantize(q), &["x"]),
            node(
                "t",
                Op::Gather {
                    shape: s1,
                    index: Arc::new(t),
                },
                &["xq"],
            ),
            node(
                "c",
                Op::Gather {
                    shape: s2,
                    index: Arc::new(c),
                },
                &["t", "xq"],
            ),
            node("out", Op::Dequantize, &["c"]),
        ],
    )
    .unwrap()
}

#[test]
fn save_load_round_trip() {
    let m = file_model();
    let bytes = m.to_bytes().unwrap();
    let back = Model::from_bytes(&bytes).unwrap();
    assert_eq!(back.to_bytes().unwrap(), bytes);
    let mut rng = Rng(7);
    let data: Vec<f32> = (0..2 * 48).map(|_| rng.f32() * 6.0 - 3.0).collect();
    let x = Value::F32 {
        data: data.clone(),
        shape: vec![2, 3, 4, 4],
    };
    let a = m.run_cpu(std::slice::from_ref(&x)).unwrap();
    let b = back.run_cpu(std::slice::from_ref(&x)).unwrap();
    assert_eq!(a, b);
    assert_eq!(a[0].shape(), &[2, 3, 4, 8]);
    // Element (n=1, c=2, h=1, w=2) is the transpose's: x[1, 2, 2, 1];
    // (n=0, c=1, h=3, w=6) is the input's own x[0, 1, 3, 2].
    let out = a[0].to_f32();
    let q = QParams::new(0.03, 17).unwrap();
    let deq = |v: f32| q.dequantize_slice(&[q.quantize_slice(&[v])[0]])[0];
    assert_eq!(
        out[((3 + 2) * 4 + 1) * 8 + 2],
        deq(data[((3 + 2) * 4 + 2) * 4 + 1])
    );
    assert_eq!(out[((3) * 4 + 3) * 8 + 6], deq(data[((3) * 4 + 3) * 4 + 2]));
    let ctx = gpu();
    let g = GpuModel::new(&ctx, &back).unwrap();
    assert_eq!(g.run(&ctx, &[x]).unwrap(), b);
}

fn build_err(
    in_shapes: &[(Vec<usize>, Option<QParams>)],
    out: Vec<usize>,
    index: Vec<u32>,
) -> String {
    let inputs: Vec<(String, TensorInfo)> = in_shapes
        .iter()
        .enumerate()
        .map(|(i, (s, q))| {
            (
                format!("x{i}"),
                TensorInfo {
                    shape: s.clone(),
                    dtype: q.map_or(DType::F32, DType::QUInt8),
                },
            )
        })
        .collect();
    match Model::new(
        Requant::Fbgemm,
        inputs.clone(),
        vec!["bad_gather".into()],
        vec![Node {
            name: "bad_gather".into(),
            op: Op::Gather {
                shape: out,
                index: Arc::new(index),
            },
            inputs: inputs.iter().map(|(n, _)| n.clone()).collect(),
        }],
    ) {
        Ok(_) => panic!("a bad gather was accepted"),
        Err(e) => {
            let s = e.to_string();
            assert!(s.contains("bad_gather") && s.contains("gather"), "{s}");
            s
        }
    }
}

#[test]
fn bad_maps_are_errors_naming_the_node() {
    let q = QParams::new(0.1, 3).unwrap();
    let q2 = QParams::new(0.2, 3).unwrap();
    // Index out of range (6 elements in the two inputs).
    let e = build_err(
        &[(vec![2], Some(q)), (vec![2, 2], Some(q))],
        vec![2],
        vec![0, 6],
    );
    assert!(
        e.contains("entry 1 is 6") && e.contains("6 elements"),
        "{e}"
    );
    // Index length does not fit the shape.
    let e = build_err(&[(vec![4], Some(q))], vec![2, 2], vec![0, 1, 2]);
    assert!(e.contains("3 entries"), "{e}");
    // Different qparams; float input.
    let e = build_err(
        &[(vec![2], Some(q)), (vec![2], Some(q2))],
        vec![2],
        vec![0, 3],
    );
    assert!(e.contains("input 1") && e.contains("same qparams"), "{e}");
    let e = build_err(&[(vec![2], None)], vec![2], vec![0, 1]);
    assert!(e.contains("float32"), "{e}");
    // Output rank 0 or 4, a zero dimension.
    let e = build_err(&[(vec![2], Some(q))], vec![], vec![0]);
    assert!(e.contains("1 to 3 dimensions"), "{e}");
    let e = build_err(&[(vec![2], Some(q))], vec![1, 1, 1, 2], vec![0, 1]);
    assert!(e.contains("1 to 3 dimensions"), "{e}");
    let e = build_err(&[(vec![2], Some(q))], vec![0], vec![]);
    assert!(e.contains("at least 1"), "{e}");
    // No input.
    let e = Model::new(
        Requant::Fbgemm,
        vec![("x".into(), qinfo(&[2], q))],
        vec!["bad_gather".into()],
        vec![Node {
            name: "bad_gather".into(),
            op: Op::Gather {
                shape: vec![1],
                index: Arc::new(vec![0]),
            },
            inputs: vec![],
        }],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("bad_gather") && e.contains("at least 1 input"),
        "{e}"
    );
    // Builder errors.
    assert!(transpose_index(&[2, 3], &[1, 1]).is_err());
    assert!(compose_index(&[0, 1], &[2]).is_err());
}

#[test]
fn bad_files_are_errors_naming_the_node() {
    use safetensors::tensor::TensorView;
    use safetensors::{Dtype, SafeTensors};
    use std::collections::HashMap;
    let bytes = file_model().to_bytes().unwrap();
    type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;
    let rewrite = |edit: &dyn Fn(&mut Tensors)| {
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let mut t: Tensors = st
            .tensors()
            .into_iter()
            .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
            .collect();
        edit(&mut t);
        let views: Vec<(String, TensorView)> = t
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        let meta: HashMap<String, String> = meta.metadata().clone().unwrap();
        safetensors::serialize(views, Some(meta)).unwrap()
    };
    let err = |b: &[u8]| match Model::from_bytes(b) {
        Ok(_) => panic!("a bad file loaded"),
        Err(e) => e.to_string(),
    };
    // An index entry out of range.
    let b = rewrite(&|t| {
        let x = t.iter_mut().find(|x| x.0 == "t.index").unwrap();
        x.3[4..8].copy_from_slice(&1000u32.to_le_bytes());
    });
    let e = err(&b);
    assert!(e.contains("\"t\"") && e.contains("1000"), "{e}");
    // Missing index, wrong dtype, wrong length.
    let e = err(&rewrite(&|t| t.retain(|x| x.0 != "c.index")));
    assert!(e.contains("\"c\"") && e.contains("c.index"), "{e}");
    let e = err(&rewrite(&|t| {
        let x = t.iter_mut().find(|x| x.0 == "t.index").unwrap();
        x.1 = Dtype::I32;
    }));
    assert!(e.contains("t.index") && e.contains("I32"), "{e}");
    let e = err(&rewrite(&|t| {
        let x = t.iter_mut().find(|x| x.0 == "t.index").unwrap();
        x.2 = vec![47];
        x.3.truncate(47 * 4);
    }));
    assert!(e.contains("t.index") && e.contains("[47]"), "{e}");
}

/// Gathers with fill entries (`FILL + byte`): random maps mixing reads and
/// fills over one or two inputs, and the transposed-convolution maps; the CPU
/// equals the definition, the GPU equals the CPU, and the model survives the
/// file.
#[test]
fn fill_entries_gpu_equals_cpu() {
    let ctx = gpu();
    let mut fills_seen = 0usize;
    for seed in 0..60u64 {
        let mut rng = Rng(1000 + seed);
        let (what, shapes, out, index) = if seed % 2 == 0 {
            let n = rng.range(1, 2);
            let shapes: Vec<Vec<usize>> = (0..n).map(|_| random_shape(&mut rng, 3)).collect();
            let total: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
            let o = random_shape(&mut rng, 3);
            let len: usize = o.iter().product();
            let i: Vec<u32> = (0..len)
                .map(|_| {
                    if rng.range(0, 3) == 0 {
                        fill_entry(rng.range(0, 255) as u8)
                    } else {
                        rng.range(0, total - 1) as u32
                    }
                })
                .collect();
            (format!("random fills {shapes:?} -> {o:?}"), shapes, o, i)
        } else {
            let s = random_shape(&mut rng, 3);
            let k = [rng.range(1, 4), rng.range(1, 4)];
            let st = [rng.range(1, 3), rng.range(1, 3)];
            let d = [rng.range(1, 2), rng.range(1, 2)];
            let p = [
                rng.range(0, d[0] * (k[0] - 1)),
                rng.range(0, d[1] * (k[1] - 1)),
            ];
            let op = [
                rng.range(0, st[0].max(d[0]) - 1),
                rng.range(0, st[1].max(d[1]) - 1),
            ];
            let fill = rng.range(0, 255) as u8;
            // (padding beyond the input's reach leaves nothing: then without padding)
            let (p, (o, i)) = match conv_transpose_index(&s, k, st, p, op, d, fill) {
                Ok(m) => (p, m),
                Err(_) => (
                    [0, 0],
                    conv_transpose_index(&s, k, st, [0, 0], op, d, fill).unwrap(),
                ),
            };
            (
                format!(
                    "conv_transpose {s:?} k {k:?} s {st:?} p {p:?} op {op:?} d {d:?} fill {fill}"
                ),
                vec![s],
                o,
                i,
            )
        };
        fills_seen += index.iter().filter(|&&e| fill_byte(e).is_some()).count();
        let q = QParams::new(0.05 + rng.f32(), rng.range(0, 255) as i32).unwrap();
        let batch = rng.range(1, 3);
        let values: Vec<Value> = shapes
            .iter()
            .map(|s| {
                let mut shape = vec![batch];
                shape.extend(input_shape(s));
                let n: usize = shape.iter().product();
                Value::Q {
                    data: rng.bytes(n),
                    shape,
                    q,
                }
            })
            .collect();
        let want = expected(&values, &index, batch);
        let model = gather_model(&shapes, q, out.clone(), index);
        let back = Model::from_bytes(&model.to_bytes().unwrap()).unwrap();
        let cpu = back.run_cpu(&values).unwrap();
        let Value::Q { data: got, .. } = &cpu[0] else {
            panic!("seed {seed} {what}: float output")
        };
        if let Some(m) = first_mismatch(got, &want) {
            panic!("seed {seed} {what}: CPU differs from the definition at {m}");
        }
        let g = GpuModel::new(&ctx, &back).unwrap();
        let gout = g.run(&ctx, &values).unwrap();
        let Value::Q { data: gd, .. } = &gout[0] else {
            panic!("seed {seed} {what}: float GPU output")
        };
        if let Some(m) = first_mismatch(gd, got) {
            panic!("seed {seed} {what} batch {batch}: GPU differs from CPU at {m}");
        }
    }
    assert!(fills_seen > 1000, "only {fills_seen} fill entries");
}

#[test]
fn bad_fill_entries_are_errors() {
    let q = QParams::new(0.1, 3).unwrap();
    // FILL + 255 is the last fill entry; FILL + 256 and u32::MAX are invalid.
    let m = gather_model(&[vec![2]], q, vec![2], vec![fill_entry(255), 1]);
    let y = m
        .run_cpu(&[Value::Q {
            data: vec![9, 8],
            shape: vec![1, 2],
            q,
        }])
        .unwrap();
    let Value::Q { data, .. } = &y[0] else {
        panic!("float output")
    };
    assert_eq!(data, &vec![255, 8]);
    for bad in [FILL + 256, u32::MAX, FILL - 1] {
        let e = build_err(&[(vec![2], Some(q))], vec![2], vec![0, bad]);
        assert!(
            e.contains(&format!("entry 1 is {bad}")) && e.contains("fill entry"),
            "{e}"
        );
    }
    // The conv_transpose2d map refuses bad geometry.
    let e = conv_transpose_index(&[1, 2, 2], [3, 3], [1, 1], [0, 0], [1, 1], [1, 1], 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("output_padding"), "{e}");
}
