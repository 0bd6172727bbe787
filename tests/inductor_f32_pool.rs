//! Inductor's pools of **f32** tensors (engine `inductor_x86`): `max_pool2d`
//! of an f32 tensor (f32 out) and `inductor_avg_pool2d` (Inductor's average
//! pool of an f32 tensor, quantized), what torchvision inception_v3's branch
//! pools compile to (the pool's input is a float max pool / cat of oneDNN's
//! f32 conv outputs), bit for bit:
//!
//! - the recorded torch.compile cases `tests/data/pt2e/indinc_f32_pool/`
//!   (`tools/pt2e/gen_indinc_pool.py`: `quantize(avg_pool2d(cat([max_pool2d?
//!   (x_i)])))` on channels-last f32 inputs, 19 or 21 channels, ties crafted)
//!   on the CPU, through the model file and on the GPU (the f32 inputs as
//!   NCHW model inputs); a cat of f32 tensors is one pool per input and a
//!   cat of the bytes (the pool and the quantize are per channel);
//! - the rule is not vacuous: the alternatives (the reciprocal of the count,
//!   a column-major sum, the zero point before rounding) each miss recorded
//!   bytes;
//! - seeded random conv2d layers with oneDNN's f32 output (NHWC4F on the
//!   GPU) -> f32 max pool -> Inductor's average: the GPU equals the CPU, the
//!   f32 max pool bit for bit.
//!
//! Vectors recorded on an Intel Xeon with AVX-512 VNNI (torch 2.15).

mod common;

use std::path::Path;

use common::npy_raw;
use common::{f32_info, node, pair};
use qfuse::ops::{AvgPoolOpts, Op, Pool2d};
use qfuse::quant::Activation;
use qfuse::{Conv2dGeometry, GpuModel, LayerKind, Model, QLayer, QParams, Requant, Value};
use serde_json::Value as Json;

const DIR: &str = "tests/data/pt2e/indinc_f32_pool";

struct Case {
    name: String,
    j: Json,
    /// NCHW f32 inputs with their full shapes.
    inputs: Vec<Value>,
    expect: Vec<u8>,
    model: Model,
}

fn avg_of(j: &Json) -> (Pool2d, AvgPoolOpts) {
    (
        Pool2d {
            kernel: pair(&j["kernel"]),
            stride: pair(&j["stride"]),
            padding: pair(&j["padding"]),
            dilation: [1, 1],
            ceil_mode: j["ceil_mode"].as_bool().unwrap(),
        },
        AvgPoolOpts {
            count_include_pad: j["count_include_pad"].as_bool().unwrap(),
            divisor_override: j["divisor_override"].as_u64().map(|d| d as usize),
        },
    )
}

fn max_of(m: &Json) -> Pool2d {
    Pool2d {
        kernel: pair(&m["kernel"]),
        stride: pair(&m["stride"]),
        padding: pair(&m["padding"]),
        dilation: [1, 1],
        ceil_mode: false,
    }
}

/// `x_i -> [max_pool2d] -> inductor_avg_pool2d` per branch, a cat of the bytes.
fn case_model(j: &Json, shapes: &[Vec<usize>]) -> Model {
    let q = QParams::new(
        j["scale"].as_f64().unwrap() as f32,
        j["zero_point"].as_i64().unwrap() as i32,
    )
    .unwrap();
    let (pool, opts) = avg_of(j);
    let mut nodes = Vec::new();
    let mut avgs = Vec::new();
    let branches = j["branches"].as_array().unwrap();
    for (b, br) in branches.iter().enumerate() {
        let mut src = format!("x{}", br["input"].as_u64().unwrap());
        if !br["max_pool"].is_null() {
            let m = format!("mp{b}");
            nodes.push(node(&m, Op::MaxPool2d(max_of(&br["max_pool"])), &[&src]));
            src = m;
        }
        let a = if branches.len() == 1 {
            "y".to_string()
        } else {
            format!("avg{b}")
        };
        nodes.push(node(
            &a,
            Op::InductorAvgPool2d { pool, opts, out: q },
            &[&src],
        ));
        avgs.push(a);
    }
    if avgs.len() > 1 {
        let ins: Vec<&str> = avgs.iter().map(String::as_str).collect();
        nodes.push(node("y", Op::Cat(q), &ins));
    }
    Model::new(
        Requant::InductorX86,
        shapes
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("x{i}"), f32_info(&s[1..])))
            .collect(),
        vec!["y".into()],
        nodes,
    )
    .unwrap()
}

fn cases() -> Vec<Case> {
    let mut names: Vec<String> = std::fs::read_dir(DIR)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| Path::new(DIR).join(n).join("case.json").exists())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let d = Path::new(DIR).join(&name);
            let j: Json =
                serde_json::from_str(&std::fs::read_to_string(d.join("case.json")).unwrap())
                    .unwrap();
            let mut inputs = Vec::new();
            let mut shapes = Vec::new();
            for i in 0..j["inputs"].as_array().unwrap().len() {
                let (data, shape) = qfuse::npy::read_f32(d.join(format!("x{i}.npy"))).unwrap();
                shapes.push(shape.clone());
                inputs.push(Value::F32 { data, shape });
            }
            let (_, expect) = npy_raw(&d.join("output_u8.npy"));
            let model = case_model(&j, &shapes);
            Case {
                name,
                j,
                inputs,
                expect,
                model,
            }
        })
        .collect()
}

fn bytes(v: &Value) -> &[u8] {
    match v {
        Value::Q { data, .. } => data,
        Value::F32 { .. } => panic!("an f32 output where quint8 is expected"),
    }
}

fn byte_mismatches(what: &str, got: &[u8], want: &[u8]) -> usize {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want[i]).collect();
    if let Some(&i) = bad.first() {
        println!(
            "{what}: {} of {} differ; first at {i}: {} vs {}",
            bad.len(),
            got.len(),
            got[i],
            want[i]
        );
    }
    bad.len()
}

#[test]
fn recorded_f32_pools_equal_torch_compile_on_cpu_and_file() {
    let cases = cases();
    assert_eq!(cases.len(), 10, "cases in {DIR}");
    let mut bytes_checked = 0;
    for c in &cases {
        let got = c.model.run_cpu(&c.inputs).unwrap();
        assert_eq!(
            byte_mismatches(&format!("{} cpu", c.name), bytes(&got[0]), &c.expect),
            0
        );
        let back = Model::from_bytes(&c.model.to_bytes().unwrap()).unwrap();
        let file = back.run_cpu(&c.inputs).unwrap();
        assert_eq!(
            byte_mismatches(&format!("{} file", c.name), bytes(&file[0]), &c.expect),
            0
        );
        bytes_checked += c.expect.len();
        // not all-equal outputs
        assert!(c.expect.iter().any(|&b| b != c.expect[0]), "{}", c.name);
    }
    println!("{bytes_checked} recorded bytes exact on the CPU and through the file");
}

#[test]
fn recorded_f32_pools_equal_torch_compile_on_the_gpu() {
    let ctx = common::gpu();
    for c in cases() {
        let g = GpuModel::new(&ctx, &c.model).unwrap();
        let got = g.run(&ctx, &c.inputs).unwrap();
        assert_eq!(
            byte_mismatches(&format!("{} gpu", c.name), bytes(&got[0]), &c.expect),
            0
        );
    }
}

/// One pooled channel plane by a candidate rule (`alt`): "rule" (qfuse's),
/// "reciprocal" (`sum * f32(1/count)`), "column_major", "zp_before".
fn candidate(c: &Case, alt: &str) -> Vec<u8> {
    let j = &c.j;
    let (pool, opts) = avg_of(j);
    let s = j["scale"].as_f64().unwrap() as f32;
    let z = j["zero_point"].as_i64().unwrap() as i32;
    let inv = 1.0 / s;
    // the pool's input: per branch the (max pooled) f32 tensor, channels concatenated
    let mut planes: Vec<Vec<Vec<f32>>> = Vec::new(); // [batch][channel] -> plane
    let (mut h, mut w) = (0, 0);
    for br in j["branches"].as_array().unwrap() {
        let Value::F32 { data, shape } = &c.inputs[br["input"].as_u64().unwrap() as usize] else {
            unreachable!()
        };
        let (n, ch, ih, iw) = (shape[0], shape[1], shape[2], shape[3]);
        let mp = (!br["max_pool"].is_null()).then(|| max_of(&br["max_pool"]));
        let (oh, ow) = mp.map_or((ih, iw), |p| p.out_hw(ih, iw).unwrap());
        (h, w) = (oh, ow);
        planes.resize(n, Vec::new());
        for (b, batch) in planes.iter_mut().enumerate() {
            for k in 0..ch {
                let plane = &data[(b * ch + k) * ih * iw..][..ih * iw];
                let Some(p) = mp else {
                    batch.push(plane.to_vec());
                    continue;
                };
                let mut o = vec![f32::NEG_INFINITY; oh * ow];
                for oy in 0..oh {
                    for ox in 0..ow {
                        for ky in 0..p.kernel[0] {
                            for kx in 0..p.kernel[1] {
                                let v = plane[(oy * p.stride[0] + ky) * iw + ox * p.stride[1] + kx];
                                o[oy * ow + ox] = o[oy * ow + ox].max(v);
                            }
                        }
                    }
                }
                batch.push(o);
            }
        }
    }
    let (oh, ow) = pool.out_hw(h, w).unwrap();
    let cip = opts.count_include_pad;
    let mut y = Vec::new();
    for batch in &planes {
        for plane in batch {
            for oy in 0..oh {
                let (y0, y1, fh) = qfuse::ops::pool::avg_window(
                    oy,
                    h,
                    pool.kernel[0],
                    pool.stride[0],
                    pool.padding[0],
                    cip,
                );
                for ox in 0..ow {
                    let (x0, x1, fw) = qfuse::ops::pool::avg_window(
                        ox,
                        w,
                        pool.kernel[1],
                        pool.stride[1],
                        pool.padding[1],
                        cip,
                    );
                    let count = opts.divisor_override.unwrap_or(fh * fw);
                    let v = match alt {
                        "column_major" => {
                            let mut sum = 0f32;
                            for ix in x0..x1 {
                                for iy in y0..y1 {
                                    sum += plane[iy * w + ix];
                                }
                            }
                            sum / count as f32
                        }
                        "reciprocal" => {
                            let mut sum = 0f32;
                            for iy in y0..y1 {
                                for ix in x0..x1 {
                                    sum += plane[iy * w + ix];
                                }
                            }
                            sum * (1.0 / count as f32)
                        }
                        _ => {
                            qfuse::ops::pool::inductor_avg_f32(plane, w, (y0, y1), (x0, x1), count)
                        }
                    };
                    y.push(if alt == "zp_before" {
                        ((v * inv) + z as f32).round_ties_even().clamp(0.0, 255.0) as u8
                    } else {
                        qfuse::quant::quantize_with_inv(v, inv, z)
                    });
                }
            }
        }
    }
    y
}

#[test]
fn the_recorded_cases_separate_the_candidate_rules() {
    let cases = cases();
    for alt in ["rule", "reciprocal", "column_major", "zp_before"] {
        let mut miss = 0;
        for c in &cases {
            let got = candidate(c, alt);
            let m = byte_mismatches(&format!("{} {alt}", c.name), &got, &c.expect);
            // the generator's own count of this candidate's misses
            assert_eq!(
                m as u64,
                c.j["alternatives"][alt].as_u64().unwrap(),
                "{} {alt}",
                c.name
            );
            miss += m;
        }
        println!("{alt}: {miss} recorded bytes missed");
        if alt == "rule" {
            assert_eq!(miss, 0);
        } else {
            assert!(miss > 0, "{alt} is not separated by the recorded cases");
        }
    }
}

/// A seeded conv2d with oneDNN's f32 output (relu post-op).
fn random_conv(rng: &mut common::Rng, cin: usize, cout: usize) -> QLayer {
    let geom = Conv2dGeometry::new(cin, cout, [3, 3]).padding([1, 1]);
    let w = rng.i8s(cout * cin * 9);
    let ws: Vec<f32> = (0..cout).map(|_| 0.002 + rng.f32() * 0.01).collect();
    let bias: Vec<f32> = (0..cout).map(|_| rng.f32() - 0.5).collect();
    QLayer::new(
        LayerKind::Conv2d,
        geom,
        w,
        ws,
        bias,
        QParams::new(0.05, 7).unwrap(),
        QParams::new(1.0, 0).unwrap(),
        Activation::Relu,
        Requant::Onednn,
    )
    .unwrap()
    .with_plain_src_scale()
    .with_float_output()
    .unwrap()
}

/// inception's Mixed_5b / 6b shapes in small: `x -> q -> conv_a (f32) ->
/// max_pool2d 3/2 (f32)`, `conv_b (f32)` of the pooled bytes' quantize, and
/// the branch pool of cat([conv_b, max pool]) as one pool per part + cat;
/// outputs the f32 max pool and the pooled bytes.
fn random_model(rng: &mut common::Rng, c1: usize, c2: usize, hw: usize) -> Model {
    let a = random_conv(rng, 3, c1);
    let qi = a.input();
    let qm = QParams::new(0.04 + rng.f32() * 0.02, 0).unwrap();
    let b = QLayer::new(
        LayerKind::Conv2d,
        Conv2dGeometry::new(c1, c2, [3, 3]).padding([1, 1]),
        rng.i8s(c2 * c1 * 9),
        (0..c2).map(|_| 0.002 + rng.f32() * 0.01).collect(),
        (0..c2).map(|_| rng.f32() - 0.5).collect(),
        qm,
        QParams::new(1.0, 0).unwrap(),
        Activation::Relu,
        Requant::Onednn,
    )
    .unwrap()
    .with_plain_src_scale()
    .with_float_output()
    .unwrap();
    let qo = QParams::new(0.01 + rng.f32() * 0.03, 1 + (rng.next_u64() % 9) as i32).unwrap();
    let inception = Pool2d {
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
        dilation: [1, 1],
        ceil_mode: false,
    };
    let opts = AvgPoolOpts {
        count_include_pad: true,
        divisor_override: None,
    };
    let avg = |p: Pool2d| Op::InductorAvgPool2d {
        pool: p,
        opts,
        out: qo,
    };
    Model::new(
        Requant::InductorX86,
        vec![("x".into(), f32_info(&[3, hw, hw]))],
        vec!["mp".into(), "y".into()],
        vec![
            node("xq", Op::Quantize(qi), &["x"]),
            node("ca", Op::Conv2d(Box::new(a)), &["xq"]),
            node(
                "mp",
                Op::MaxPool2d(Pool2d {
                    kernel: [3, 3],
                    stride: [2, 2],
                    padding: [0, 0],
                    dilation: [1, 1],
                    ceil_mode: false,
                }),
                &["ca"],
            ),
            node("mq", Op::Quantize(qm), &["mp"]),
            node("cb", Op::Conv2d(Box::new(b)), &["mq"]),
            node("pb", avg(inception), &["cb"]),
            node("pm", avg(inception), &["mp"]),
            node("y", Op::Cat(qo), &["pb", "pm"]),
        ],
    )
    .unwrap()
}

#[test]
fn gpu_f32_pools_of_conv_outputs_equal_the_cpu() {
    let ctx = common::gpu();
    let seed = 0x1dc5_u64;
    let mut rng = common::Rng(seed);
    for (rep, (c1, c2, hw)) in [(5, 7, 13), (16, 3, 17), (9, 12, 11)]
        .into_iter()
        .enumerate()
    {
        let model = random_model(&mut rng, c1, c2, hw);
        let n = 2;
        let x: Vec<f32> = (0..n * 3 * hw * hw)
            .map(|_| rng.f32() * 4.0 - 2.0)
            .collect();
        let input = Value::F32 {
            data: x,
            shape: vec![n, 3, hw, hw],
        };
        let cpu = model.run_cpu(std::slice::from_ref(&input)).unwrap();
        let gpu = GpuModel::new(&ctx, &model)
            .unwrap()
            .run(&ctx, std::slice::from_ref(&input))
            .unwrap();
        let (Value::F32 { data: a, .. }, Value::F32 { data: b, .. }) = (&cpu[0], &gpu[0]) else {
            panic!("the max pool's output is f32");
        };
        let what = format!("seed {seed:#x} rep {rep}");
        let bad = (0..a.len())
            .filter(|&i| a[i].to_bits() != b[i].to_bits())
            .count();
        assert_eq!(bad, 0, "{what}: f32 max pool, {bad} of {} differ", a.len());
        assert!(a.iter().any(|&v| v > 0.0), "{what}: an all-zero max pool");
        let (ya, yb) = (bytes(&cpu[1]), bytes(&gpu[1]));
        assert_eq!(byte_mismatches(&what, yb, ya), 0);
        assert!(ya.iter().any(|&v| v != ya[0]), "{what}: constant output");
        // and through the file
        let back = Model::from_bytes(&model.to_bytes().unwrap()).unwrap();
        let file = back.run_cpu(std::slice::from_ref(&input)).unwrap();
        assert_eq!(bytes(&file[1]), ya, "{what}: file");
    }
}

#[test]
fn f32_pools_refuse_what_they_do_not_reproduce() {
    let q = QParams::new(0.1, 3).unwrap();
    let p3 = Pool2d {
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
        dilation: [1, 1],
        ceil_mode: false,
    };
    let opts = AvgPoolOpts {
        count_include_pad: true,
        divisor_override: None,
    };
    let build = |engine: Requant, op: Op, quantized_input: bool| {
        let mut nodes = Vec::new();
        let src = if quantized_input {
            nodes.push(node("xq", Op::Quantize(q), &["x"]));
            "xq"
        } else {
            "x"
        };
        nodes.push(node("y", op, &[src]));
        Model::new(
            engine,
            vec![("x".into(), f32_info(&[4, 8, 8]))],
            vec!["y".into()],
            nodes,
        )
    };
    let avg = |p: Pool2d| Op::InductorAvgPool2d {
        pool: p,
        opts,
        out: q,
    };
    // another engine
    let e = build(Requant::Qnnpack, avg(p3), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("inductor_x86"), "{e}");
    let e = build(Requant::Fbgemm, Op::MaxPool2d(p3), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("inductor_x86"), "{e}");
    // a quantized input
    let e = build(Requant::InductorX86, avg(p3), true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("float32"), "{e}");
    // Inductor's ATen fallback (more than 25 taps, kernel != stride)
    let big = Pool2d {
        kernel: [6, 6],
        stride: [1, 1],
        padding: [0, 0],
        ..p3
    };
    let e = build(Requant::InductorX86, avg(big), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("fallback"), "{e}");
    // what it takes
    build(Requant::InductorX86, avg(p3), false).unwrap();
    build(Requant::InductorX86, Op::MaxPool2d(p3), false).unwrap();
}
