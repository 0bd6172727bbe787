//! Calibration: the builder's observers choose the activation qparams
//! PyTorch's FX flow chose (`tests/data/calib`, made by `tools/gen_calib.py`)
//! for the same float network and calibration batches. MinMax matches exactly, end to end; MovingAverageMinMax everywhere but
//! the linear head (one ulp of scale there); the Histogram observer is
//! printed (12 of 12 identical when written) and held to 1e-6 relative.

mod common;

use std::path::Path;

use common::TensorFile;
use qfuse::builder::{FloatOp, ModelBuilder, ObserverKind};
use qfuse::model::Op;
use qfuse::ops::Pool2d;
use qfuse::{Activation, BatchNorm, Conv2dGeometry, FloatConv2d, FloatLinear, QParams, Requant};

fn network(f: &TensorFile, engine: Requant, eps: f32) -> ModelBuilder {
    let bn = |i: u32| BatchNorm {
        gamma: f.f32(&format!("float.bn{i}.weight")),
        beta: f.f32(&format!("float.bn{i}.bias")),
        running_mean: f.f32(&format!("float.bn{i}.running_mean")),
        running_var: f.f32(&format!("float.bn{i}.running_var")),
        eps,
    };
    let mut b = ModelBuilder::new(engine, "x", &[3, 8, 8]);
    let g1 = Conv2dGeometry::new(3, 8, [3, 3]).padding([1, 1]);
    b.conv2d(
        "conv1",
        "x",
        FloatConv2d {
            geometry: g1,
            weight: f.f32("float.conv1.weight"),
            bias: Some(f.f32("float.conv1.bias")),
            batchnorm: Some(bn(1)),
            activation: Activation::Relu,
        },
    );
    let g2 = Conv2dGeometry::new(8, 8, [3, 3]).padding([1, 1]);
    b.conv2d(
        "conv2",
        "conv1",
        FloatConv2d {
            geometry: g2,
            weight: f.f32("float.conv2.weight"),
            bias: None,
            batchnorm: Some(bn(2)),
            activation: Activation::None,
        },
    );
    b.add("add", "conv2", "conv1", true);
    b.op(
        "pool",
        FloatOp::MaxPool2d(Pool2d {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
            dilation: [1, 1],
            ceil_mode: false,
        }),
        &["add"],
    );
    let g3 = Conv2dGeometry::new(8, 16, [1, 1]);
    b.conv2d(
        "conv3",
        "pool",
        FloatConv2d {
            geometry: g3,
            weight: f.f32("float.conv3.weight"),
            bias: Some(f.f32("float.conv3.bias")),
            batchnorm: None,
            activation: Activation::Relu,
        },
    );
    b.op("gap", FloatOp::AdaptiveAvgPool2d([1, 1]), &["conv3"]);
    b.op("flat", FloatOp::Flatten, &["gap"]);
    b.linear(
        "fc",
        "flat",
        FloatLinear {
            in_features: 16,
            out_features: 10,
            weight: f.f32("float.fc.weight"),
            bias: Some(f.f32("float.fc.bias")),
            activation: Activation::None,
        },
    );
    b
}

/// (name, ours, PyTorch's) for every observed tensor.
fn compare(observer: &str, engine: &str) -> Vec<(String, QParams, QParams)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/data/calib/{observer}_{engine}.safetensors"));
    let f = TensorFile::open(&path);
    let meta = f.meta("calib");
    let rule = Requant::parse(engine).unwrap();
    let b = network(&f, rule, meta["bn_eps"].as_f64().unwrap() as f32);
    let batches: Vec<_> = (0..3)
        .map(|i| (f.f32(&format!("calib_{i}")), f.shape(&format!("calib_{i}"))))
        .collect();
    let kind = match observer {
        "minmax" => ObserverKind::MinMax,
        "moving_average" => ObserverKind::MovingAverageMinMax {
            averaging_constant: 0.01,
        },
        _ => ObserverKind::Histogram { bins: 2048 },
    };
    let model = b.calibrate(&batches, kind).unwrap();
    let ours = |name: &str| -> QParams {
        let n = model.nodes().iter().find(|n| n.name == name).unwrap();
        match &n.op {
            Op::Quantize(q) | Op::Add { out: q, .. } => *q,
            Op::Conv2d(l) | Op::Linear(l) => l.output(),
            op => panic!("{name}: {op:?}"),
        }
    };
    ["input", "conv1", "conv2", "add", "conv3", "fc"]
        .iter()
        .map(|&name| {
            let t = &meta["qparams"][name];
            let theirs = QParams {
                scale: t[0].as_f64().unwrap() as f32,
                zero_point: t[1].as_i64().unwrap() as i32,
                signed: false,
            };
            (
                name.to_string(),
                ours(if name == "input" { "x_q" } else { name }),
                theirs,
            )
        })
        .collect()
}

#[test]
fn qparams_from_pytorchs_observed_ranges_are_exact() {
    // Given the min/max PyTorch's MinMax and MovingAverageMinMax observers
    // ended with, qfuse's qparams rule gives exactly PyTorch's qparams.
    for observer in ["minmax", "moving_average"] {
        for engine in ["fbgemm", "qnnpack"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("tests/data/calib/{observer}_{engine}.safetensors"));
            let meta = TensorFile::open(&path).meta("calib");
            let spec = qfuse::quant::default_activation_spec(Requant::parse(engine).unwrap());
            for name in ["input", "conv1", "conv2", "add", "conv3", "fc"] {
                let mm = &meta["minmax"][name];
                let (scale, zp) = spec
                    .qparams(
                        mm[0].as_f64().unwrap() as f32,
                        mm[1].as_f64().unwrap() as f32,
                    )
                    .unwrap();
                let t = &meta["qparams"][name];
                assert_eq!(
                    (scale, zp),
                    (t[0].as_f64().unwrap() as f32, t[1].as_i64().unwrap() as i32),
                    "{observer} {engine} {name}"
                );
            }
        }
    }
}

#[test]
fn minmax_calibration_equals_pytorch_exactly() {
    // End to end from the float network and the calibration batches: the
    // float reference sums like PyTorch's oneDNN conv (FMA, taps outer,
    // channels inner), so every observed range, and so every qparams, is
    // PyTorch's to the bit.
    for engine in ["fbgemm", "qnnpack"] {
        for (name, ours, theirs) in compare("minmax", engine) {
            assert_eq!(ours, theirs, "minmax {engine}: {name}");
        }
        println!("minmax {engine}: all 6 activation qparams equal PyTorch's");
    }
}

#[test]
fn moving_average_calibration_matches_pytorch() {
    // Exact everywhere but the linear head, whose float output (PyTorch:
    // MKL sgemm) can differ from qfuse's reference in the last bit; there the
    // scale may differ by one ulp.
    let (mut exact, mut total) = (0, 0);
    for engine in ["fbgemm", "qnnpack"] {
        for (name, ours, theirs) in compare("moving_average", engine) {
            let rel = (ours.scale - theirs.scale).abs() / theirs.scale;
            println!(
                "moving_average {engine} {name}: ours {ours:?} PyTorch {theirs:?} (rel {rel:.1e})"
            );
            if name == "fc" {
                assert_eq!(ours.zero_point, theirs.zero_point, "{engine} fc");
                assert!(rel <= 1.2e-7, "{engine} fc: scale differs by {rel:.1e}");
            } else {
                assert_eq!(ours, theirs, "moving_average {engine}: {name}");
            }
            exact += (ours == theirs) as usize;
            total += 1;
        }
    }
    println!("MovingAverageMinMax: {exact} of {total} qparams identical");
}

#[test]
fn histogram_qparams_close_to_pytorch() {
    let mut worst = 0f32;
    let (mut exact, mut total) = (0, 0);
    for engine in ["fbgemm", "qnnpack"] {
        for (name, ours, theirs) in compare("histogram", engine) {
            let rel = (ours.scale - theirs.scale).abs() / theirs.scale;
            println!("histogram {engine} {name}: ours {ours:?} PyTorch {theirs:?} (scale rel diff {rel:.2e})");
            worst = worst.max(rel);
            total += 1;
            exact += (ours == theirs) as usize;
            assert!(
                (ours.zero_point - theirs.zero_point).abs() <= 1,
                "{engine} {name}: zero point {} vs {}",
                ours.zero_point,
                theirs.zero_point
            );
        }
    }
    println!("histogram observer: {exact} of {total} qparams identical to PyTorch's; worst scale difference {worst:.2e} relative");
    assert!(worst < 1e-6, "histogram scales differ by {worst:.2e}");
}
