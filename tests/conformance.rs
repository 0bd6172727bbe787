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
        Ok(v) if !variants_for(ctx, &layer).contains(v) => {
            fails.push(format!("default variant {v:?} is not a candidate"))
        }
        Err(e) => fails.push(format!("GPU default variant: {e}")),
        _ => {}
    }
    for v in variants_for(ctx, &layer) {
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
    variants.extend(variants_for(ctx, &layer).iter().map(|v| format!("{v:?}")));
    (name, fails)
}

/// Every variant `ctx` runs, and where it has no cooperative matrices the
/// tensor-core kernel's emulation (the kernel's logic on every
/// PyTorch-quantized layer; where it has them, `candidates_on` gives the
/// kernel itself).
fn variants_for(ctx: &qfuse::GpuContext, layer: &qfuse::QLayer) -> Vec<ConvVariant> {
    let mut v = ConvVariant::candidates_on(ctx, layer);
    let emu = ConvVariant::Coop {
        emulated: true,
        splits: None,
    };
    if !ctx.cooperative_matrix() && emu.applies(layer) {
        v.push(emu);
    }
    v
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

/// The exact i64 accumulators of a conformance case (naive loops; `[N, O, OH, OW]`
/// or `[N, O]` row-major), from its stored input, weight and geometry.
fn case_accumulators(f: &TensorFile, spec: &serde_json::Value) -> Vec<i64> {
    let x = f.u8("input");
    let w = f.i8("weight");
    let zx = spec["input_zero_point"].as_i64().unwrap();
    let xs = f.shape("input");
    let ws = f.shape("weight");
    if spec["op"] != "conv2d" {
        let (n, k, o) = (xs[0], xs[1], ws[0]);
        let mut acc = vec![0i64; n * o];
        for b in 0..n {
            for oc in 0..o {
                acc[b * o + oc] = (0..k)
                    .map(|i| (x[b * k + i] as i64 - zx) * w[oc * k + i] as i64)
                    .sum();
            }
        }
        return acc;
    }
    let (n, c, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    let (o, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    let [sh, sw] = pair(&spec["stride"]);
    let [ph, pw] = pair(&spec["padding"]);
    let [dh, dw] = pair(&spec["dilation"]);
    let groups = spec["groups"].as_u64().unwrap() as usize;
    let og = o / groups;
    let oh = (h + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
    let ow = (wd + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
    let mut acc = vec![0i64; n * o * oh * ow];
    for b in 0..n {
        for oc in 0..o {
            let g = oc / og;
            for y in 0..oh {
                for xx in 0..ow {
                    let mut s = 0i64;
                    for ci in 0..cg {
                        for i in 0..kh {
                            for j in 0..kw {
                                let iy = (y * sh + i * dh) as isize - ph as isize;
                                let ix = (xx * sw + j * dw) as isize - pw as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue; // padding holds the real 0
                                }
                                let cin = g * cg + ci;
                                let xv = x[((b * c + cin) * h + iy as usize) * wd + ix as usize];
                                let wv = w[((oc * cg + ci) * kh + i) * kw + j];
                                s += (xv as i64 - zx) * wv as i64;
                            }
                        }
                    }
                    acc[((b * o + oc) * oh + y) * ow + xx] = s;
                }
            }
        }
    }
    acc
}

/// oneDNN's rule with the input scale `s_in` it multiplies by, in plain f32
/// steps (tests/data/conformance/README.md, rule 5, `onednn`).
fn onednn_rule(spec: &serde_json::Value, f: &TensorFile, acc: &[i64], s_in: f32) -> Vec<u8> {
    let ws = f.f32("weight_scale");
    let bias = f.f32("bias");
    let o = ws.len();
    let per = acc.len() / f.shape("input")[0] / o;
    let s_out = spec["output_scale"].as_f64().unwrap() as f32;
    let zp = spec["output_zero_point"].as_i64().unwrap() as i32;
    let lo = if spec["activation"] == "relu" { zp } else { 0 };
    let inv = 1.0f32 / s_out;
    acc.iter()
        .enumerate()
        .map(|(i, &a)| {
            let oc = (i / per) % o;
            let v = (a as f32 * s_in) * ws[oc] + bias[oc];
            let r = (v * inv + zp as f32).round_ties_even() as i32;
            r.clamp(lo, 255) as u8
        })
        .collect()
}

/// PyTorch hands oneDNN the input scale through a reciprocal round trip
/// (`qfuse::quant::onednn_src_scale`), not the scale itself. The `*_src_*`
/// cases have input scales that the round trip moves by one ulp and outputs
/// at ties: each case's output follows the round-tripped scale, and the plain
/// scale gives another output somewhere in every case.
#[test]
fn onednn_src_cases_pin_the_input_scale_round_trip() {
    let files: Vec<PathBuf> = case_files()
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains("_src_"))
        .collect();
    assert!(
        files.len() >= 5,
        "expected the *_src_* cases, found {}",
        files.len()
    );
    for p in &files {
        let f = TensorFile::open(p);
        let spec = f.meta("case");
        let name = spec["name"].as_str().unwrap().to_string();
        assert_eq!(spec["requant"], "onednn", "{name}");
        let s = spec["input_scale"].as_f64().unwrap() as f32;
        let rt = qfuse::quant::onednn_src_scale(s);
        assert_ne!(rt, s, "{name}: the round trip must move this scale");
        let acc = case_accumulators(&f, &spec);
        let want = f.u8("output");
        assert_eq!(acc.len(), want.len(), "{name}");
        let good = onednn_rule(&spec, &f, &acc, rt);
        if let Some(m) = first_mismatch(&good, &want) {
            panic!("{name}: the round-tripped input scale {rt:e}: {m}");
        }
        let plain = onednn_rule(&spec, &f, &acc, s);
        let differ = plain.iter().zip(&want).filter(|(a, b)| a != b).count();
        println!("{name}: the plain input scale {s:e} gives {differ} other outputs");
        assert!(
            differ > 0,
            "{name}: the plain input scale gives the same output"
        );
    }
}
