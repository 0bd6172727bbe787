//! Every conformance case (layers quantized by PyTorch itself) on the CPU
//! reference and on the GPU, bit for bit: quantizing the float input, fusing
//! and quantizing the float layer, and the layer's output, with every GPU
//! kernel variant that applies to the layer (a failure names the variant).
//!
//! Cases: `tests/data/conformance/*.safetensors`, plus every case in
//! `$QFUSE_CONFORMANCE_DIR` when it is set.

mod common;

use std::path::{Path, PathBuf};

use common::{first_mismatch, first_mismatch_bits, gpu, TensorFile};
use qfuse::gpu::ConvVariant;
use qfuse::layer::LayerKind;
use qfuse::{
    Activation, BatchNorm, Conv2dGeometry, Engine, FloatConv2d, FloatLinear, GpuLayer, GpuTensor,
    QLayer, QParams, Requant,
};

fn case_files() -> Vec<PathBuf> {
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/conformance")];
    if let Ok(d) = std::env::var("QFUSE_CONFORMANCE_DIR") {
        dirs.push(PathBuf::from(d));
    }
    let mut files = Vec::new();
    for d in dirs {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&d)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        v.sort();
        files.extend(v);
    }
    files
}

fn pair(v: &serde_json::Value) -> [usize; 2] {
    [
        v[0].as_u64().unwrap() as usize,
        v[1].as_u64().unwrap() as usize,
    ]
}

fn gpu_quantize(
    ctx: &qfuse::GpuContext,
    x: &[f32],
    shape: &[usize],
    q: QParams,
) -> qfuse::Result<Vec<u8>> {
    use qfuse::model::{DType, Model, Node, Op, TensorInfo, Value};
    let info = TensorInfo {
        shape: shape[1..].to_vec(),
        dtype: DType::F32,
    };
    let node = Node {
        name: "q".into(),
        op: Op::Quantize(q),
        inputs: vec!["x".into()],
    };
    let m = Model::new(
        Requant::Fbgemm,
        vec![("x".into(), info)],
        vec!["q".into()],
        vec![node],
    )?;
    let out = qfuse::GpuModel::new(ctx, &m)?.run(
        ctx,
        &[Value::F32 {
            data: x.to_vec(),
            shape: shape.to_vec(),
        }],
    )?;
    match &out[0] {
        Value::Q { data, .. } => Ok(data.clone()),
        Value::F32 { .. } => unreachable!("quantize gives quint8"),
    }
}

/// Checks one case; returns the list of failures (empty = pass).
fn check_case(
    ctx: &qfuse::GpuContext,
    path: &Path,
    variants: &mut Vec<String>,
) -> (String, Vec<String>) {
    let f = TensorFile::open(path);
    let spec = f.meta("case");
    let name = spec["name"].as_str().unwrap().to_string();
    let mut fails = Vec::new();
    let rule = Requant::parse(spec["requant"].as_str().unwrap()).unwrap();
    let act = Activation::parse(spec["activation"].as_str().unwrap()).unwrap();
    let input = QParams::new(
        spec["input_scale"].as_f64().unwrap() as f32,
        spec["input_zero_point"].as_i64().unwrap() as i32,
    )
    .unwrap();
    let output = QParams::new(
        spec["output_scale"].as_f64().unwrap() as f32,
        spec["output_zero_point"].as_i64().unwrap() as i32,
    )
    .unwrap();
    let wshape = f.shape("weight");
    let is_conv = spec["op"] == "conv2d";
    // Cases made on a CPU with AVX-512 VNNI record the rule PyTorch's dispatch
    // chose there; it is Engine::layer_rule's (x86: oneDNN for conv2d with
    // groups <= 100, fbgemm otherwise; onednn: every layer).
    if spec["cpu_avx512_vnni"].as_bool() == Some(true) {
        let engine = Engine::parse(spec["engine"].as_str().unwrap()).unwrap();
        let groups = spec["groups"].as_u64().unwrap_or(1) as usize;
        if engine.layer_rule(is_conv, groups) != rule {
            fails.push(format!(
                "recorded rule {rule:?}, Engine::{engine:?}.layer_rule gives {:?}",
                engine.layer_rule(is_conv, groups)
            ));
        }
    }
    let (kind, geom) = if is_conv {
        let g = Conv2dGeometry::new(
            wshape[1] * spec["groups"].as_u64().unwrap() as usize,
            wshape[0],
            [wshape[2], wshape[3]],
        )
        .stride(pair(&spec["stride"]))
        .padding(pair(&spec["padding"]))
        .dilation(pair(&spec["dilation"]))
        .groups(spec["groups"].as_u64().unwrap() as usize);
        (LayerKind::Conv2d, g)
    } else {
        (
            LayerKind::Linear,
            Conv2dGeometry::linear(wshape[1], wshape[0]),
        )
    };

    // 1. Quantizing the float input gives the quantized input.
    let x = f.u8("input");
    if let Some(m) = first_mismatch(&input.quantize_slice(&f.f32("float_input")), &x) {
        fails.push(format!("quantize(float_input): {m}"));
    }
    // ... on the GPU too (the quantize kernel, as a one-node model).
    match gpu_quantize(ctx, &f.f32("float_input"), &f.shape("float_input"), input) {
        Ok(q) => {
            if let Some(m) = first_mismatch(&q, &x) {
                fails.push(format!("GPU quantize(float_input): {m}"));
            }
        }
        Err(e) => fails.push(format!("GPU quantize: {e}")),
    }

    // 2. Fusing and quantizing the float layer gives PyTorch's weight, scales and bias.
    let fused = if is_conv {
        let bn = spec["batchnorm"].as_bool().unwrap().then(|| BatchNorm {
            gamma: f.f32("float.bn.weight"),
            beta: f.f32("float.bn.bias"),
            running_mean: f.f32("float.bn.running_mean"),
            running_var: f.f32("float.bn.running_var"),
            eps: spec["bn_eps"].as_f64().unwrap() as f32,
        });
        FloatConv2d {
            geometry: geom,
            weight: f.f32("float.conv.weight"),
            bias: f.has("float.conv.bias").then(|| f.f32("float.conv.bias")),
            batchnorm: bn,
            activation: act,
        }
        .quantize(input, output, rule)
    } else {
        FloatLinear {
            in_features: geom.in_channels,
            out_features: geom.out_channels,
            weight: f.f32("float.fc.weight"),
            bias: f.has("float.fc.bias").then(|| f.f32("float.fc.bias")),
            activation: act,
        }
        .quantize(input, output, rule)
    };
    match fused {
        Err(e) => fails.push(format!("fuse+quantize: {e}")),
        Ok(l) => {
            if let Some(m) = first_mismatch(l.weight(), &f.i8("weight")) {
                fails.push(format!("fused weight: {m}"));
            }
            if let Some(m) = first_mismatch_bits(l.weight_scale(), &f.f32("weight_scale")) {
                fails.push(format!("weight scale: {m}"));
            }
            if let Some(m) = first_mismatch_bits(l.bias(), &f.f32("bias")) {
                fails.push(format!("fused bias: {m}"));
            }
        }
    }

    // 3. The layer made from PyTorch's stored tensors computes PyTorch's output.
    let layer = QLayer::from_pytorch(
        kind,
        geom,
        f.i8("weight"),
        f.f32("weight_scale"),
        &f.i32("weight_zero_point"),
        f.f32("bias"),
        input,
        output,
        act,
        rule,
    )
    .unwrap();
    let want = f.u8("output");
    let in_shape = f.shape("input");
    match qfuse::cpu::run_layer(&layer, &x, &in_shape) {
        Ok((y, shape)) => {
            assert_eq!(shape, f.shape("output"));
            if let Some(m) = first_mismatch(&y, &want) {
                fails.push(format!("CPU output: {m}"));
            }
        }
        Err(e) => fails.push(format!("CPU: {e}")),
    }
    // Every kernel variant that applies to the layer, and the default choice.
    let default = GpuLayer::new(ctx, &layer).map(|g| g.variant());
    match &default {
        Ok(v) if !ConvVariant::candidates(&layer).contains(v) => {
            fails.push(format!("default variant {v:?} is not a candidate"))
        }
        Err(e) => fails.push(format!("GPU default variant: {e}")),
        _ => {}
    }
    for v in ConvVariant::candidates(&layer) {
        let gpu_out = GpuLayer::with_variant(ctx, &layer, v).and_then(|g| {
            let t = GpuTensor::upload(ctx, &x, &in_shape, input)?;
            g.run(ctx, &t)?.download(ctx)
        });
        match gpu_out {
            Ok(y) => {
                if let Some(m) = first_mismatch(&y, &want) {
                    fails.push(format!("GPU {v:?}: {m}"));
                }
            }
            Err(e) => fails.push(format!("GPU {v:?}: {e}")),
        }
    }
    variants.extend(
        ConvVariant::candidates(&layer)
            .iter()
            .map(|v| format!("{v:?}")),
    );
    (name, fails)
}

#[test]
fn conformance_cases_bit_exact_on_cpu_and_gpu() {
    let files = case_files();
    assert!(!files.is_empty(), "no conformance cases found");
    let ctx = gpu();
    let (mut passed, mut failed) = (0, 0);
    let mut per_variant = std::collections::BTreeMap::new();
    for p in &files {
        let mut variants = Vec::new();
        let (name, fails) = check_case(&ctx, p, &mut variants);
        for v in variants {
            *per_variant.entry(v).or_insert(0usize) += 1;
        }
        if fails.is_empty() {
            passed += 1;
            println!("ok   {name}");
        } else {
            failed += 1;
            println!("FAIL {name}: {}", fails.join("; "));
        }
    }
    println!("{passed} passed, {failed} failed");
    for (v, n) in &per_variant {
        println!("  {n:3} cases ran {v}");
    }
    assert_eq!(
        failed,
        0,
        "{failed} of {} conformance cases failed",
        files.len()
    );
}
