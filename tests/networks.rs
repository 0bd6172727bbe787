//! Whole networks built from float layers with the builder (fusion,
//! calibration, conversion): a ResNet-style and a MobileNetV2-style net, batch
//! 1 and 4. The GPU run equals the CPU reference bit for bit; the dequantized
//! output stays close to the float network's (the bound is printed). The
//! memory plan of the ResNet-style net reuses buffers and never lets two live
//! tensors share one.

mod common;

use common::{first_mismatch, gpu, Rng};
use qfuse::builder::{FloatOp, ModelBuilder, ObserverKind};
use qfuse::gpu::ConvVariant;
use qfuse::model::Value;
use qfuse::ops::Pool2d;
use qfuse::{
    Activation, BatchNorm, Conv2dGeometry, FloatConv2d, FloatLinear, GpuModel, Model, Requant,
};

fn normal(rng: &mut Rng) -> f32 {
    (0..12).map(|_| rng.f32()).sum::<f32>() - 6.0
}

fn conv(
    rng: &mut Rng,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    groups: usize,
    relu: bool,
) -> FloatConv2d {
    let g = Conv2dGeometry::new(cin, cout, [k, k])
        .stride([stride, stride])
        .padding([k / 2, k / 2])
        .groups(groups);
    let fan_in = (g.reduction_len()) as f32;
    FloatConv2d {
        geometry: g,
        weight: (0..g.weight_len())
            .map(|_| normal(rng) * (2.0 / fan_in).sqrt())
            .collect(),
        bias: None,
        batchnorm: Some(BatchNorm {
            gamma: (0..cout).map(|_| 0.5 + rng.f32()).collect(),
            beta: (0..cout).map(|_| 0.2 * normal(rng)).collect(),
            running_mean: (0..cout).map(|_| 0.1 * normal(rng)).collect(),
            running_var: (0..cout).map(|_| 0.5 + rng.f32()).collect(),
            eps: 1e-5,
        }),
        activation: if relu {
            Activation::Relu
        } else {
            Activation::None
        },
    }
}

fn linear(rng: &mut Rng, k: usize, o: usize) -> FloatLinear {
    FloatLinear {
        in_features: k,
        out_features: o,
        weight: (0..k * o)
            .map(|_| normal(rng) / (k as f32).sqrt())
            .collect(),
        bias: Some((0..o).map(|_| 0.1 * normal(rng)).collect()),
        activation: Activation::None,
    }
}

/// 7x7/2 stem, max pool, two basic blocks (the second strided with a 1x1/2
/// downsample), global average pool, linear.
pub fn resnet(engine: Requant, seed: u64) -> ModelBuilder {
    let mut r = Rng(seed);
    let mut b = ModelBuilder::new(engine, "x", &[3, 32, 32]);
    b.conv2d("stem", "x", conv(&mut r, 3, 16, 7, 2, 1, true));
    b.op(
        "pool",
        FloatOp::MaxPool2d(Pool2d {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
            dilation: [1, 1],
            ceil_mode: false,
        }),
        &["stem"],
    );
    // block 1: 16 -> 16
    b.conv2d("b1c1", "pool", conv(&mut r, 16, 16, 3, 1, 1, true));
    b.conv2d("b1c2", "b1c1", conv(&mut r, 16, 16, 3, 1, 1, false));
    b.add("b1", "b1c2", "pool", true);
    // block 2: 16 -> 32, stride 2
    b.conv2d("b2c1", "b1", conv(&mut r, 16, 32, 3, 2, 1, true));
    b.conv2d("b2c2", "b2c1", conv(&mut r, 32, 32, 3, 1, 1, false));
    b.conv2d("b2down", "b1", conv(&mut r, 16, 32, 1, 2, 1, false));
    b.add("b2", "b2c2", "b2down", true);
    b.op("gap", FloatOp::AdaptiveAvgPool2d([1, 1]), &["b2"]);
    b.op("flat", FloatOp::Flatten, &["gap"]);
    b.linear("fc", "flat", linear(&mut r, 32, 10));
    b
}

/// Inverted residual blocks: 1x1 expand, ReLU6, 3x3 depthwise, ReLU6, 1x1
/// project, residual add where shapes allow; a hardswish; mean pooling.
pub fn mobilenet(engine: Requant, seed: u64) -> ModelBuilder {
    let mut r = Rng(seed);
    let mut b = ModelBuilder::new(engine, "x", &[3, 32, 32]);
    b.conv2d("stem", "x", conv(&mut r, 3, 16, 3, 2, 1, false));
    let mut x = b.op("stem_r6", FloatOp::Relu6, &["stem"]);
    for (i, (cin, cout, t, s)) in [(16, 16, 3, 1), (16, 24, 4, 2), (24, 24, 4, 1)]
        .into_iter()
        .enumerate()
    {
        let e = b.conv2d(
            &format!("ir{i}_expand"),
            &x,
            conv(&mut r, cin, cin * t, 1, 1, 1, false),
        );
        let e = b.op(&format!("ir{i}_expand_r6"), FloatOp::Relu6, &[&e]);
        let d = b.conv2d(
            &format!("ir{i}_dw"),
            &e,
            conv(&mut r, cin * t, cin * t, 3, s, cin * t, false),
        );
        let d = b.op(&format!("ir{i}_dw_r6"), FloatOp::Relu6, &[&d]);
        let p = b.conv2d(
            &format!("ir{i}_project"),
            &d,
            conv(&mut r, cin * t, cout, 1, 1, 1, false),
        );
        x = if s == 1 && cin == cout {
            b.add(&format!("ir{i}_add"), &p, &x, false)
        } else {
            p
        };
    }
    b.conv2d("head", &x, conv(&mut r, 24, 64, 1, 1, 1, false));
    b.op("head_hs", FloatOp::Hardswish, &["head"]);
    b.op("pool", FloatOp::Mean { keepdim: false }, &["head_hs"]);
    b.linear("fc", "pool", linear(&mut r, 64, 10));
    b
}

fn batch(rng: &mut Rng, n: usize) -> (Vec<f32>, Vec<usize>) {
    (
        (0..n * 3 * 32 * 32).map(|_| normal(rng)).collect(),
        vec![n, 3, 32, 32],
    )
}

fn check_net(name: &str, build: fn(Requant, u64) -> ModelBuilder) {
    let ctx = gpu();
    for engine in [Requant::Fbgemm, Requant::Qnnpack] {
        let seed = 1234;
        let b = build(engine, seed);
        let mut rng = Rng(seed + 1);
        let calib: Vec<_> = (0..3).map(|_| batch(&mut rng, 4)).collect();
        let model = b.calibrate(&calib, ObserverKind::MinMax).unwrap();
        let g = GpuModel::new(&ctx, &model).unwrap();
        // Split-K (two dispatches per layer) on every one-group conv/linear.
        let split = GpuModel::with_variants(&ctx, &model, &|l| {
            if l.geometry().groups == 1 {
                ConvVariant::SplitK {
                    splits: Some(3),
                    tiles: None,
                }
            } else {
                ConvVariant::for_layer(l)
            }
        })
        .unwrap();
        for n in [1, 4] {
            let (x, shape) = batch(&mut rng, n);
            let input = vec![Value::F32 {
                data: x.clone(),
                shape: shape.clone(),
            }];
            let cpu = model.run_cpu(&input).unwrap();
            let out = g.run(&ctx, &input).unwrap();
            let (c, o) = (cpu[0].to_f32(), out[0].to_f32());
            let cb: Vec<u32> = c.iter().map(|v| v.to_bits()).collect();
            let ob: Vec<u32> = o.iter().map(|v| v.to_bits()).collect();
            if let Some(m) = first_mismatch(&ob, &cb) {
                panic!("{name} {engine:?} batch {n} (seed {seed}): GPU differs from CPU at {m}");
            }
            let so = split.run(&ctx, &input).unwrap()[0].to_f32();
            let sb: Vec<u32> = so.iter().map(|v| v.to_bits()).collect();
            if let Some(m) = first_mismatch(&sb, &cb) {
                panic!("{name} {engine:?} batch {n} (seed {seed}): split-K GPU differs from CPU at {m}");
            }
            let (f, _) = b.run_float(&x, &shape).unwrap();
            let range = f.iter().fold(0f32, |a, v| a.max(v.abs()));
            let err = o
                .iter()
                .zip(&f)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            println!("{name} {engine:?} batch {n}: GPU == CPU bit for bit; max |int8 - float| = {err:.4} (output range ±{range:.3}, {:.1}%)", 100.0 * err / range);
            assert!(
                err < 0.25 * range,
                "{name}: the int8 network drifted far from the float one"
            );
        }
    }
}

#[test]
fn resnet_style_network_gpu_equals_cpu() {
    check_net("resnet", resnet);
}

#[test]
fn mobilenet_v2_style_network_gpu_equals_cpu() {
    check_net("mobilenet", mobilenet);
}

#[test]
fn resnet_memory_plan_reuses_buffers_safely() {
    let b = resnet(Requant::Fbgemm, 7);
    let mut rng = Rng(8);
    let model: Model = b
        .calibrate(&[batch(&mut rng, 2)], ObserverKind::MinMax)
        .unwrap();
    for n in [1, 4] {
        let p = qfuse::plan::plan(&model, n).unwrap();
        println!(
            "resnet plan batch {n}: peak {} B in {} buffers, all tensors {} B, f32 peak {} B",
            p.peak_bytes,
            p.buffers.len(),
            p.total_bytes,
            p.f32_peak_bytes
        );
        assert!(
            p.peak_bytes < p.total_bytes,
            "no reuse: peak {} >= total {}",
            p.peak_bytes,
            p.total_bytes
        );
        // 1 byte per element instead of 4; the 3-channel input pads to 4 channels
        // in the packed layout, so this small net's peak is at most 4/12 of f32.
        assert!(
            p.peak_bytes * 3 <= p.f32_peak_bytes,
            "int8 peak {} above 1/3 of f32 {}",
            p.peak_bytes,
            p.f32_peak_bytes
        );
        // No two tensors alive at the same time share a buffer.
        let names: Vec<&String> = p.assignment.keys().collect();
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                if p.assignment[*a] == p.assignment[*b] {
                    let (la, lb) = (p.lifetimes[*a], p.lifetimes[*b]);
                    assert!(
                        la.1 < lb.0 || lb.1 < la.0,
                        "{a} {la:?} and {b} {lb:?} share buffer {} while both alive",
                        p.assignment[*a]
                    );
                }
            }
            assert!(
                p.buffers[p.assignment[*a]]
                    >= qfuse::GpuTensor::gpu_bytes(&model.info(a).unwrap().batched(n)).unwrap()
            );
        }
    }
}

#[test]
fn folding_relu6_into_conv_epilogues_changes_no_bit() {
    for engine in [Requant::Fbgemm, Requant::Qnnpack] {
        let b = mobilenet(engine, 99);
        let mut rng = Rng(100);
        let model = b
            .calibrate(&[batch(&mut rng, 2)], ObserverKind::MinMax)
            .unwrap();
        let fused = qfuse::model::fuse_activations(&model).unwrap();
        let count = |m: &Model, op: &str| m.nodes().iter().filter(|n| n.op.name() == op).count();
        assert!(count(&model, "relu6") >= 6);
        assert_eq!(
            count(&fused, "relu6"),
            0,
            "every relu6 follows a conv and should fold"
        );
        let (x, shape) = batch(&mut rng, 3);
        let input = vec![Value::F32 { data: x, shape }];
        assert_eq!(
            model.run_cpu(&input).unwrap(),
            fused.run_cpu(&input).unwrap()
        );
        let p = (
            qfuse::plan::plan(&model, 3).unwrap(),
            qfuse::plan::plan(&fused, 3).unwrap(),
        );
        println!(
            "mobilenet {engine:?}: {} relu6 folded; planned peak {} -> {} B",
            count(&model, "relu6"),
            p.0.peak_bytes,
            p.1.peak_bytes
        );
    }
}

/// The fused model (relu6 folded into conv epilogues, as `GpuModel` runs it)
/// carries its clamps in the model file: saving it and loading it gives the
/// unfused model's outputs bit for bit, on the CPU and on the GPU.
#[test]
fn fused_model_saves_and_loads_with_its_clamps() {
    let ctx = gpu();
    for engine in [Requant::Fbgemm, Requant::Qnnpack] {
        let b = mobilenet(engine, 99);
        let mut rng = Rng(100);
        let model = b
            .calibrate(&[batch(&mut rng, 2)], ObserverKind::MinMax)
            .unwrap();
        let g = GpuModel::new(&ctx, &model).unwrap();
        let fused = g.model();
        let bytes = fused.to_bytes().unwrap();
        let header = String::from_utf8_lossy(&bytes);
        assert!(
            header.contains("\\\"clamp\\\"") && header.contains("\\\"format_version\\\":2"),
            "the fused model's file does not carry its clamps (format version 2)"
        );
        let loaded = Model::from_bytes(&bytes).unwrap();
        assert_eq!(
            loaded.to_bytes().unwrap(),
            bytes,
            "save(load(save(fused))) changed"
        );
        let (x, shape) = batch(&mut rng, 3);
        let input = vec![Value::F32 { data: x, shape }];
        let want = model.run_cpu(&input).unwrap();
        assert_eq!(loaded.run_cpu(&input).unwrap(), want, "{engine:?} CPU");
        let lg = GpuModel::new(&ctx, &loaded).unwrap();
        assert_eq!(lg.run(&ctx, &input).unwrap(), want, "{engine:?} GPU");
        println!(
            "mobilenet {engine:?}: the fused model ({} bytes) saves and loads with its clamps",
            bytes.len()
        );
    }
}
