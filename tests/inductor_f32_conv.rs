//! oneDNN's conv/linear with an **f32** output (Inductor's
//! `qconv_pointwise(..., torch.float32, post_op)`; `QLayer::with_float_output`,
//! `"output": "float32"` in the model file) and the f32 tensors it leaves on
//! the GPU (NHWC4F words, see `qfuse::layout`), bit for bit:
//!
//! - the recorded torch.compile cases `tests/data/pt2e/inductor_x86/
//!   {conv3x3_f32, conv3x3_relu_f32, linear_f32}` (`quantize -> conv/linear`
//!   with an f32 output, relu post-op on one) and oneDNN's direct call
//!   `inductor_x86_eltwise/hardswish_f32` (hardswish post-op, f32 output): the
//!   CPU, every GPU kernel variant and the model file give oneDNN's floats;
//! - a quantize of the GPU's f32 tensor (`quantize.wgsl`, NHWC4F) equals the
//!   fused form (`"requant": "inductor_x86"`: oneDNN's f32 value quantized by
//!   Inductor's rule) byte for byte;
//! - seeded random layers (odd channel counts, batch 2, depthwise, strided,
//!   linear) on every kernel variant equal the CPU's floats.
//!
//! Vectors recorded on an Intel Xeon with AVX-512 VNNI (torch 2.15, torchao
//! 0.18, oneDNN 3.13.3 as bundled).

mod common;

use std::path::Path;

use common::npy_raw;
use common::{f32_info, node, pair};
use qfuse::gpu::ConvVariant;
use qfuse::ops::Op;
use qfuse::quant::Activation;
use qfuse::{Conv2dGeometry, GpuModel, LayerKind, Model, QLayer, QParams, Requant, Value};
use serde_json::Value as Json;

fn npy_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let (data, shape) =
        qfuse::npy::read_f32(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (shape, data)
}

struct Case {
    name: String,
    model: Model,
    input: Value,
    expect: Vec<f32>,
}

/// The recorded f32-output cases.
fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for name in ["conv3x3_f32", "conv3x3_relu_f32", "linear_f32"] {
        let d = Path::new("tests/data/pt2e/inductor_x86").join(name);
        let j: Json =
            serde_json::from_str(&std::fs::read_to_string(d.join("case.json")).unwrap()).unwrap();
        assert_eq!(j["output_kind"], "f32", "{name}");
        let a = &j["act_qparams"][0];
        let qi = QParams::new(
            a["scale"].as_f64().unwrap() as f32,
            a["zero_point"].as_i64().unwrap() as i32,
        )
        .unwrap();
        let (xs, x) = npy_f32(&d.join("input.npy"));
        let (wsh, w) = npy_raw(&d.join("weight_q.npy"));
        let (_, ws) = npy_f32(&d.join("weight_scale.npy"));
        let (_, bias) = npy_f32(&d.join("bias.npy"));
        let (_, expect) = npy_f32(&d.join("output.npy"));
        let (kind, geom) = if j["op"] == "linear" {
            (LayerKind::Linear, Conv2dGeometry::linear(wsh[1], wsh[0]))
        } else {
            let g = j["groups"].as_u64().unwrap() as usize;
            (
                LayerKind::Conv2d,
                Conv2dGeometry::new(wsh[1] * g, wsh[0], [wsh[2], wsh[3]])
                    .stride(pair(&j["stride"]))
                    .padding(pair(&j["padding"]))
                    .dilation(pair(&j["dilation"]))
                    .groups(g),
            )
        };
        let act = if j["relu"] == true {
            Activation::Relu
        } else {
            Activation::None
        };
        let layer = QLayer::new(
            kind,
            geom,
            w.into_iter().map(|b| b as i8).collect(),
            ws,
            bias,
            qi,
            QParams::new(1.0, 0).unwrap(),
            act,
            Requant::Onednn,
        )
        .unwrap()
        .with_plain_src_scale()
        .with_float_output()
        .unwrap();
        v.push(Case {
            name: name.into(),
            model: common::quantize_conv_model(layer, &xs[1..]),
            input: Value::F32 { data: x, shape: xs },
            expect,
        });
    }
    // oneDNN's direct calls with the hardswish / swish post-op and an f32 output.
    for post in ["hardswish", "swish"] {
        let d = Path::new("tests/data/pt2e/inductor_x86_eltwise").join(format!("{post}_f32"));
        let j: Json =
            serde_json::from_str(&std::fs::read_to_string(d.join("case.json")).unwrap()).unwrap();
        assert_eq!(j["post_op"], post);
        let qi = QParams::new(
            j["input"]["scale"].as_f64().unwrap() as f32,
            j["input"]["zero_point"].as_i64().unwrap() as i32,
        )
        .unwrap();
        let (xs, x) = npy_raw(&d.join("x_u8.npy"));
        let (wsh, w) = npy_raw(&d.join("weight_q.npy"));
        let (_, ws) = npy_f32(&d.join("weight_scale.npy"));
        let (_, bias) = npy_f32(&d.join("bias.npy"));
        let (_, expect) = npy_f32(&d.join("output_f32.npy"));
        let layer = QLayer::new(
            LayerKind::Conv2d,
            Conv2dGeometry::new(wsh[1], wsh[0], [wsh[2], wsh[3]])
                .stride(pair(&j["stride"]))
                .padding(pair(&j["padding"]))
                .dilation(pair(&j["dilation"])),
            w.into_iter().map(|b| b as i8).collect(),
            ws,
            bias,
            qi,
            QParams::new(1.0, 0).unwrap(),
            Activation::None,
            Requant::Onednn,
        )
        .unwrap()
        .with_plain_src_scale();
        let layer = if post == "swish" {
            layer.with_swish()
        } else {
            layer.with_hardswish()
        }
        .unwrap()
        .with_float_output()
        .unwrap();
        v.push(Case {
            name: format!("{post}_f32"),
            model: common::quantize_conv_model(layer, &xs[1..]),
            input: Value::F32 {
                data: qi.dequantize_slice(&x),
                shape: xs,
            },
            expect,
        });
    }
    v
}

/// Bitwise mismatches of `got` against `want`, printing the first.
fn mismatches(what: &str, got: &[f32], want: &[f32]) -> usize {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let bad: Vec<usize> = (0..got.len())
        .filter(|&i| got[i].to_bits() != want[i].to_bits())
        .collect();
    if let Some(&i) = bad.first() {
        println!(
            "{what}: {} of {} differ; first at {i}: {:e} vs {:e}",
            bad.len(),
            got.len(),
            got[i],
            want[i]
        );
    }
    bad.len()
}

fn floats(v: &Value) -> &[f32] {
    match v {
        Value::F32 { data, .. } => data,
        Value::Q { .. } => panic!("a quantized output where f32 is expected"),
    }
}

/// The `k`-th applicable kernel variant of each layer (cycling).
fn variant(k: usize) -> impl Fn(&QLayer) -> ConvVariant {
    move |l: &QLayer| {
        let c: Vec<ConvVariant> = ConvVariant::candidates(l)
            .into_iter()
            .filter(|v| v.applies(l))
            .collect();
        c[k % c.len()]
    }
}

#[test]
fn onednn_f32_outputs_equal_torch_compile_on_cpu_file_and_every_gpu_variant() {
    let cases = cases();
    assert_eq!(cases.len(), 5);
    for c in &cases {
        let cpu = c.model.run_cpu(std::slice::from_ref(&c.input)).unwrap();
        assert_eq!(
            mismatches(&format!("{} cpu", c.name), floats(&cpu[0]), &c.expect),
            0
        );
        let back = Model::from_bytes(&c.model.to_bytes().unwrap()).unwrap();
        let file = back.run_cpu(std::slice::from_ref(&c.input)).unwrap();
        assert_eq!(
            mismatches(&format!("{} file", c.name), floats(&file[0]), &c.expect),
            0
        );
        // The rule is not vacuous: the relu/hardswish post-op and the
        // product order each move values.
        let no_post: usize = c.expect.iter().filter(|v| **v <= 0.0).count();
        assert!(no_post > 0, "{}: no value at or below 0", c.name);
    }
    let ctx = common::gpu();
    for k in 0..8 {
        for c in &cases {
            let g = GpuModel::with_variants(&ctx, &c.model, &variant(k)).unwrap();
            let got = g.run(&ctx, std::slice::from_ref(&c.input)).unwrap();
            assert_eq!(
                mismatches(
                    &format!("{} gpu variant #{k}", c.name),
                    floats(&got[0]),
                    &c.expect
                ),
                0
            );
        }
    }
}

#[test]
fn f32_output_file_form_is_checked() {
    let c = cases().remove(1);
    let bytes = c.model.to_bytes().unwrap();
    // the attribute is written (and the edits below find it)
    let mut seen = false;
    common::file_edit::rewrite(
        &bytes,
        |h| seen = common::file_edit::node_mut(h, "y")["output"] == "float32",
        |_| {},
    );
    assert!(seen, "no \"output\": \"float32\" in the file");
    // another dtype, or output qparams beside "float32", are errors naming it
    let edits: [fn(&mut Json); 2] = [
        |n| n["output"] = "float16".into(),
        |n| {
            n["scale"] = 1.0.into();
            n["zero_point"] = 0.into();
        },
    ];
    for edit in edits {
        let e = common::file_edit::rewrite(
            &bytes,
            |h| edit(common::file_edit::node_mut(h, "y")),
            |_| {},
        );
        let err = common::file_edit::load_err(&e);
        assert!(err.contains("\"output\""), "{err}");
    }
}

/// `x -> quantize -> conv (f32 out) -> quantize(q)` and the fused
/// `"requant": "inductor_x86"` conv (OnednnF32) over the same layer.
fn quantize_pair(layer: &QLayer, in_shape: &[usize], q: QParams) -> (Model, Model) {
    let qi = layer.input();
    let float = layer.with_float_output().unwrap();
    let a = Model::new(
        Requant::InductorX86,
        vec![("x".into(), f32_info(in_shape))],
        vec!["y".into()],
        vec![
            node("xq", Op::Quantize(qi), &["x"]),
            node("v", Op::Conv2d(Box::new(float)), &["xq"]),
            node("y", Op::Quantize(q), &["v"]),
        ],
    )
    .unwrap();
    let fused = QLayer::new(
        LayerKind::Conv2d,
        *layer.geometry(),
        layer.weight().to_vec(),
        layer.weight_scale().to_vec(),
        layer.bias().to_vec(),
        qi,
        q,
        layer.activation(),
        Requant::InductorX86,
    )
    .unwrap()
    .with_plain_src_scale();
    let b = Model::new(
        Requant::InductorX86,
        vec![("x".into(), f32_info(in_shape))],
        vec!["y".into()],
        vec![
            node("xq", Op::Quantize(qi), &["x"]),
            node("y", Op::Conv2d(Box::new(fused)), &["xq"]),
        ],
    )
    .unwrap();
    (a, b)
}

fn random_layer(rng: &mut common::Rng, kind: usize) -> (QLayer, Vec<usize>) {
    let qi = QParams::new(0.02 + rng.f32() * 0.05, rng.range(90, 160) as i32).unwrap();
    let (geom, shape, lk) = match kind {
        0 => (
            Conv2dGeometry::new(7, 13, [1, 1]),
            vec![7, 5, 6],
            LayerKind::Conv2d,
        ),
        1 => (
            Conv2dGeometry::new(10, 21, [3, 3])
                .padding([1, 1])
                .stride([2, 2]),
            vec![10, 9, 7],
            LayerKind::Conv2d,
        ),
        2 => (
            Conv2dGeometry::new(18, 18, [5, 5])
                .padding([2, 2])
                .groups(18),
            vec![18, 8, 8],
            LayerKind::Conv2d,
        ),
        3 => (
            Conv2dGeometry::new(64, 67, [3, 3]).padding([1, 1]),
            vec![64, 6, 6],
            LayerKind::Conv2d,
        ),
        _ => (Conv2dGeometry::linear(45, 11), vec![45], LayerKind::Linear),
    };
    let k = geom.cin_per_group() * geom.kernel[0] * geom.kernel[1];
    let o = geom.out_channels;
    let w = rng.i8s(o * k);
    let ws: Vec<f32> = (0..o).map(|_| 0.002 + rng.f32() * 0.01).collect();
    let bias: Vec<f32> = (0..o).map(|_| rng.f32() * 2.0 - 1.0).collect();
    let act = if rng.range(0, 1) == 1 {
        Activation::Relu
    } else {
        Activation::None
    };
    let l = QLayer::new(
        lk,
        geom,
        w,
        ws,
        bias,
        qi,
        QParams::new(0.05, 3).unwrap(),
        act,
        Requant::Onednn,
    )
    .unwrap()
    .with_plain_src_scale();
    (l, shape)
}

fn random_input(rng: &mut common::Rng, shape: &[usize]) -> Value {
    let n: usize = shape.iter().product();
    let mut s = vec![2];
    s.extend_from_slice(shape);
    Value::F32 {
        data: (0..2 * n).map(|_| rng.f32() * 8.0 - 4.0).collect(),
        shape: s,
    }
}

#[test]
fn gpu_f32_conv_outputs_equal_the_cpu_on_random_layers_and_every_variant() {
    let seed = 0x5eed_f32c;
    println!("seed {seed:#x}");
    let mut rng = common::Rng(seed);
    let ctx = common::gpu();
    let (mut hardswish, mut swish) = (0, 0);
    for kind in 0..5 {
        for rep in 0..3 {
            let (base, shape) = random_layer(&mut rng, kind);
            let layer = if rep == 1 && base.activation() == Activation::None {
                hardswish += 1;
                base.with_hardswish().unwrap()
            } else if rep == 2 && base.activation() == Activation::None {
                swish += 1;
                base.with_swish().unwrap()
            } else {
                base
            }
            .with_float_output()
            .unwrap();
            let model = common::quantize_conv_model(layer, &shape);
            let x = random_input(&mut rng, &shape);
            let want = model.run_cpu(std::slice::from_ref(&x)).unwrap();
            let want = floats(&want[0]).to_vec();
            assert!(want.iter().any(|v| *v != 0.0), "all-zero output");
            for k in 0..6 {
                let g = GpuModel::with_variants(&ctx, &model, &variant(k)).unwrap();
                let got = g.run(&ctx, std::slice::from_ref(&x)).unwrap();
                let what = format!("seed {seed:#x} layer kind {kind} rep {rep} variant #{k}");
                assert_eq!(mismatches(&what, floats(&got[0]), &want), 0, "{what}");
            }
        }
    }
    assert!(
        hardswish > 0 && swish > 0,
        "no hardswish / swish layer drawn"
    );
}

#[test]
fn quantize_of_a_gpu_f32_tensor_equals_the_fused_inductor_epilogue() {
    let seed = 0x9a_f32;
    println!("seed {seed:#x}");
    let mut rng = common::Rng(seed);
    let ctx = common::gpu();
    for kind in 0..4 {
        let (layer, shape) = random_layer(&mut rng, kind);
        let q = QParams::new(0.01 + rng.f32() * 0.02, rng.range(0, 255) as i32).unwrap();
        let (a, b) = quantize_pair(&layer, &shape, q);
        let x = random_input(&mut rng, &shape);
        let fused = b.run_cpu(std::slice::from_ref(&x)).unwrap();
        let Value::Q { data: want, .. } = &fused[0] else {
            panic!("quantized")
        };
        assert!(want.iter().any(|&v| v != want[0]), "constant output");
        let cpu = a.run_cpu(std::slice::from_ref(&x)).unwrap();
        assert_eq!(cpu, fused, "seed {seed:#x} kind {kind}: cpu");
        for k in 0..4 {
            let g = GpuModel::with_variants(&ctx, &a, &variant(k)).unwrap();
            let got = g.run(&ctx, std::slice::from_ref(&x)).unwrap();
            let Value::Q { data, .. } = &got[0] else {
                panic!("quantized")
            };
            if let Some(m) = common::first_mismatch(data, want) {
                panic!("seed {seed:#x} kind {kind} variant #{k}: {m}");
            }
        }
    }
}
