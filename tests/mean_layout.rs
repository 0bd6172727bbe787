//! `mean` over H and W of a conv output (channels-last in PyTorch): under
//! fbgemm/x86 PyTorch dequantizes, sums in f32 in ATen's cascade order, divides
//! and requantizes (`tests/data/ops` pins that down against PyTorch). Here:
//! seeded random shapes past the vectors' (many channels, maps of thousands of
//! positions, 1-wide maps, odd sizes, extreme scales), GPU == CPU bit for bit,
//! and the f32 path really differs from the integer one somewhere.

mod common;

use common::{first_mismatch, gpu, Rng};
use qfuse::layer::LayerKind;
use qfuse::model::{DType, Model, Node, Op, TensorInfo, Value};
use qfuse::{Activation, Conv2dGeometry, QLayer, QParams, Requant};

/// x (quint8) -> 1x1 conv (fbgemm rule) -> mean([2, 3]); output: the mean, and
/// the conv output.
fn conv_mean(rng: &mut Rng, engine: Requant, c: usize, h: usize, w: usize, s: f32) -> Model {
    let cin = rng.range(1, 4);
    let q_in = QParams::new(0.05, rng.range(0, 255) as i32).unwrap();
    let q_mid = QParams::new(s, rng.range(0, 255) as i32).unwrap();
    let weight = rng.i8s(c * cin);
    let scales: Vec<f32> = (0..c)
        .map(|_| 0.01 * s / 0.05 * (0.5 + rng.f32()))
        .collect();
    let bias: Vec<f32> = (0..c).map(|_| (rng.f32() - 0.5) * s * 40.0).collect();
    let layer = QLayer::from_pytorch(
        LayerKind::Conv2d,
        Conv2dGeometry::new(cin, c, [1, 1]),
        weight,
        scales,
        &vec![0; c],
        bias,
        q_in,
        q_mid,
        Activation::None,
        Requant::Fbgemm,
    )
    .unwrap();
    let nodes = vec![
        Node {
            name: "conv".into(),
            op: Op::Conv2d(Box::new(layer)),
            inputs: vec!["x".into()],
        },
        Node {
            name: "mean".into(),
            op: Op::Mean { keepdim: false },
            inputs: vec!["conv".into()],
        },
    ];
    let x = TensorInfo {
        shape: vec![cin, h, w],
        dtype: DType::QUInt8(q_in),
    };
    let m = Model::new(
        engine,
        vec![("x".into(), x)],
        vec!["mean".into(), "conv".into()],
        nodes,
    )
    .unwrap();
    assert!(m.is_channels_last("conv") && !m.is_channels_last("x"));
    m
}

/// `mean` over H and W of `x` as a model input (contiguous in PyTorch: the
/// integer fast path under fbgemm), on the CPU.
fn contiguous_mean(engine: Requant, x: &[u8], shape: &[usize], q: QParams) -> Vec<u8> {
    let info = TensorInfo {
        shape: shape[1..].to_vec(),
        dtype: DType::QUInt8(q),
    };
    let node = Node {
        name: "mean".into(),
        op: Op::Mean { keepdim: false },
        inputs: vec!["x".into()],
    };
    let m = Model::new(
        engine,
        vec![("x".into(), info)],
        vec!["mean".into()],
        vec![node],
    )
    .unwrap();
    assert!(!m.is_channels_last("x"));
    let v = Value::Q {
        data: x.to_vec(),
        shape: shape.to_vec(),
        q,
    };
    match m.run_cpu(&[v]).unwrap().remove(0) {
        Value::Q { data, .. } => data,
        Value::F32 { .. } => panic!("quantized mean expected"),
    }
}

#[test]
fn mean_of_conv_outputs_gpu_equals_cpu() {
    let ctx = gpu();
    let seed = 0x6d65616e;
    let mut rng = Rng(seed);
    let maps = [
        (2, 2),
        (4, 4),
        (7, 7),
        (3, 5),
        (1, 9),
        (9, 1),
        (16, 16),
        (17, 19),
        (40, 40),
        (64, 65),
    ];
    let mut f32_differs = 0;
    for case in 0..40 {
        let engine = if case % 4 == 3 {
            Requant::Qnnpack
        } else {
            Requant::Fbgemm
        };
        let c = rng.pick(&[2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 64, 65, 100]);
        let (h, w) = rng.pick(&maps);
        let n = rng.range(1, 3);
        let s = rng.pick(&[0.02f32, 0.3, 1e-6, 3e5]);
        let m = conv_mean(&mut rng, engine, c, h, w, s);
        let q_in = m.inputs()[0].1.qparams().unwrap();
        let x = Value::Q {
            data: rng.bytes(n * m.inputs()[0].1.numel()),
            shape: m.inputs()[0].1.batched(n),
            q: q_in,
        };
        let cpu = m.run_cpu(std::slice::from_ref(&x)).unwrap();
        let g = qfuse::GpuModel::new(&ctx, &m).unwrap();
        let got = g.run(&ctx, std::slice::from_ref(&x)).unwrap();
        let (Value::Q { data: want, .. }, Value::Q { data: have, .. }) = (&cpu[0], &got[0]) else {
            panic!("quantized outputs expected");
        };
        if let Some(e) = first_mismatch(have, want) {
            panic!("seed {seed:#x} case {case}: {engine:?} N={n} C={c} {h}x{w} scale {s}: GPU differs from CPU: {e}");
        }
        // The integer fast path (PyTorch's on a contiguous input) on the same data.
        let Value::Q {
            data: mid,
            shape,
            q,
        } = &cpu[1]
        else {
            panic!("quantized conv output expected")
        };
        let fast = contiguous_mean(engine, mid, shape, *q);
        if engine == Requant::Fbgemm && &fast != want {
            f32_differs += 1;
        }
        if engine == Requant::Qnnpack {
            assert_eq!(&fast, want, "qnnpack's mean does not depend on the layout");
        }
    }
    println!("fbgemm cases where the f32 mean differs from the integer mean: {f32_differs}");
    assert!(f32_differs > 0, "no case told the two paths apart");
    // Outside [2^-60, 2^60] the GPU's exact division is not guaranteed: an error
    // naming the scale, not a wrong answer (the CPU runs it).
    let m = conv_mean(&mut rng, Requant::Fbgemm, 8, 4, 4, 1e-19);
    let e = qfuse::GpuModel::new(&ctx, &m)
        .err()
        .expect("an error")
        .to_string();
    assert!(e.contains("scale") && e.contains("mean"), "{e}");
}
