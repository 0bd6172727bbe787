//! ExecuTorch's XNNPACK delegate, bit for bit: every case in
//! `tests/data/pt2e/xnnpack` (float inputs, quantization parameters and what
//! the ExecuTorch runtime returned, recorded on an Intel Xeon with AVX-512
//! VNNI; see that folder's README) is built as a qfuse `Model` under the
//! engine `xnnpack` from the case's own parameters, with the XNNPACK rules of
//! `qfuse::ops::xnnpack`, and run on the CPU and on the GPU. Every output must
//! equal ExecuTorch's bit for bit (f32 outputs) and byte for byte (the int8
//! values behind them). Cases qfuse cannot express are listed with the reason.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::npy;
use qfuse::model::{DType, Node, TensorInfo};
use qfuse::ops::host::HostFn;
use qfuse::ops::{self, AvgPoolOpts, Op, Pool2d};
use qfuse::{Conv2dGeometry, GpuModel, LayerKind, Model, QLayer, QParams, Requant, Value};
use serde_json::Value as Json;

const DIR: &str = "tests/data/pt2e/xnnpack";

/// Cases with an op qfuse has no XNNPACK-exact form for, and why.
/// (None today: every committed case is expressed.)
const NOT_EXPRESSIBLE: &[(&str, &str)] = &[];

/// A float attribute; the case files write infinite clamp bounds as `Infinity`.
fn num(v: &Json) -> f32 {
    match v {
        Json::String(s) if s == "inf" => f32::INFINITY,
        Json::String(s) if s == "-inf" => f32::NEG_INFINITY,
        v => v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")) as f32,
    }
}

fn usize2(v: &Json) -> [usize; 2] {
    let a = v.as_array().unwrap();
    [
        a[0].as_u64().unwrap() as usize,
        a[1].as_u64().unwrap() as usize,
    ]
}

fn qp(nd: &Json, scale: &str, zp: &str) -> QParams {
    QParams::new_i8(num(&nd[scale]), nd[zp].as_i64().unwrap() as i32).unwrap()
}

/// XNNPACK's `merge_clamps` (README "clamp"): a clamp whose input comes from a
/// conv2d, linear or max pool read by nothing else is removed; the producer
/// writes the clamp's output tensor with the clamp's output qparams and the
/// bounds `[min(max(p_lo, c_lo), c_hi), min(max(p_hi, c_lo), c_hi)]`.
fn merge_clamps(nodes: &[Json]) -> Vec<Json> {
    let mut users: HashMap<String, usize> = HashMap::new();
    for n in nodes {
        for v in n["inputs"].as_array().unwrap() {
            *users.entry(v.as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    let mut out: Vec<Json> = Vec::new();
    for n in nodes {
        if n["op"] == "clamp" {
            let src = n["inputs"][0].as_str().unwrap();
            if let Some(p) = out.iter_mut().find(|p| p["output"] == src) {
                let op = p["op"].as_str().unwrap();
                if ["conv2d", "linear", "max_pool2d"].contains(&op) && users[src] == 1 {
                    let mut plo = p.get("act_min").map(num).unwrap_or(f32::NEG_INFINITY);
                    let phi = p.get("act_max").map(num).unwrap_or(f32::INFINITY);
                    if p["activation"] == "relu" {
                        plo = plo.max(0.0);
                    }
                    let (clo, chi) = (num(&n["min"]), num(&n["max"]));
                    p["act_min"] = Json::from(plo.max(clo).min(chi) as f64);
                    p["act_max"] = if phi.max(clo).min(chi).is_finite() {
                        Json::from(phi.max(clo).min(chi) as f64)
                    } else {
                        Json::from("inf")
                    };
                    p["output"] = n["output"].clone();
                    p["output_scale"] = n["output_scale"].clone();
                    p["output_zero_point"] = n["output_zero_point"].clone();
                    continue;
                }
            }
        }
        out.push(n.clone());
    }
    out
}

/// The output bytes `[lo, hi]` of a conv/linear (or a merged max pool clamp).
fn bounds(nd: &Json, out: QParams) -> (i32, i32) {
    if nd.get("act_min").is_some() {
        return (
            ops::xnnpack_quantize_bound(num(&nd["act_min"]), out) as i32,
            ops::xnnpack_quantize_bound(num(&nd["act_max"]), out) as i32,
        );
    }
    if nd["activation"] == "relu" {
        return (ops::xnnpack_quantize_bound(0.0, out) as i32, 255);
    }
    (0, 255)
}

struct Built {
    model: Model,
    inputs: Vec<Value>,
    /// Per case output: the model's f32 output and its int8 tensor (if any).
    expect: Vec<(Vec<f32>, Option<Vec<i8>>)>,
}

fn build(dir: &Path, case: &Json) -> Result<Built, String> {
    let arr = |name: &str| npy(&dir.join(format!("{name}.npy")));
    let mut nodes: Vec<Node> = Vec::new();
    let mut inputs = Vec::new();
    let mut values = Vec::new();
    for (i, inp) in case["inputs"].as_array().unwrap().iter().enumerate() {
        let a = arr(&format!("input_{i}"));
        let name = inp["name"].as_str().unwrap().to_string();
        inputs.push((
            name,
            TensorInfo {
                shape: a.shape[1..].to_vec(),
                dtype: DType::F32,
            },
        ));
        values.push(Value::F32 {
            data: a.f32(),
            shape: a.shape.clone(),
        });
    }
    let graph = merge_clamps(case["nodes"].as_array().unwrap());
    let shapes = &case["shapes"];
    let _ = shapes;
    for nd in &graph {
        let op = nd["op"].as_str().unwrap();
        let ins: Vec<String> = nd["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let out_name = nd["output"].as_str().unwrap().to_string();
        let k = nd["id"].as_u64().unwrap();
        let mut push = |name: String, op: Op, inputs: Vec<String>| {
            nodes.push(Node { name, op, inputs });
        };
        match op {
            "quantize" => push(
                out_name,
                Op::Quantize(qp(nd, "output_scale", "output_zero_point")),
                ins,
            ),
            "dequantize" => push(out_name, Op::Dequantize, ins),
            "conv2d" | "linear" => {
                let (qi, qo) = (
                    qp(nd, "input_scale", "input_zero_point"),
                    qp(nd, "output_scale", "output_zero_point"),
                );
                let w = arr(&format!("n{k}_weight_q"));
                let ws = arr(&format!("n{k}_weight_scale")).f32();
                let o = w.shape[0];
                let bias = if nd["has_bias"].as_bool().unwrap() {
                    let b = arr(&format!("n{k}_bias")).f32();
                    let rec = arr(&format!("n{k}_bias_i32")).i32();
                    let per_channel = nd["weight_per_channel"].as_bool().unwrap();
                    let rule = ops::xnnpack_bias_i32(&b, &ws, qi.scale, per_channel)
                        .map_err(|e| e.to_string())?;
                    if rule != rec {
                        return Err(format!(
                            "n{k}: the bias rule differs from the serialized int32 bias"
                        ));
                    }
                    rec
                } else {
                    vec![0; o]
                };
                let (kind, geom) = if op == "conv2d" {
                    let g = nd["groups"].as_u64().unwrap() as usize;
                    (
                        LayerKind::Conv2d,
                        Conv2dGeometry::new(w.shape[1] * g, o, [w.shape[2], w.shape[3]])
                            .stride(usize2(&nd["stride"]))
                            .padding(usize2(&nd["padding"]))
                            .dilation(usize2(&nd["dilation"]))
                            .groups(g),
                    )
                } else {
                    (LayerKind::Linear, Conv2dGeometry::linear(w.shape[1], o))
                };
                let l = QLayer::with_int_bias_rule(
                    kind,
                    geom,
                    w.i8(),
                    ws,
                    bias,
                    qi,
                    qo,
                    Requant::Xnnpack,
                )
                .map_err(|e| e.to_string())?;
                let (lo, hi) = bounds(nd, qo);
                let l = Box::new(l.with_clamp(lo, hi).map_err(|e| e.to_string())?);
                push(
                    out_name,
                    if kind == LayerKind::Conv2d {
                        Op::Conv2d(l)
                    } else {
                        Op::Linear(l)
                    },
                    ins,
                );
            }
            "add" | "mul" => {
                let q = |i: usize| {
                    QParams::new_i8(
                        num(&nd["input_scales"][i]),
                        nd["input_zero_points"][i].as_i64().unwrap() as i32,
                    )
                    .unwrap()
                };
                let qo = qp(nd, "output_scale", "output_zero_point");
                let relu = nd["activation"] == "relu";
                let table = if op == "add" {
                    ops::xnnpack_add_table(q(0), q(1), qo, relu)
                } else {
                    ops::xnnpack_mul_table(q(0), q(1), qo, relu)
                }
                .map_err(|e| e.to_string())?;
                push(
                    out_name,
                    Op::Binary {
                        table: Arc::new(table),
                        out: qo,
                    },
                    ins,
                );
            }
            "clamp" => {
                let (qi, qo) = (
                    qp(nd, "input_scale", "input_zero_point"),
                    qp(nd, "output_scale", "output_zero_point"),
                );
                let t = ops::xnnpack_clamp_table(qi, qo, num(&nd["min"]), num(&nd["max"]))
                    .map_err(|e| e.to_string())?;
                push(
                    out_name,
                    Op::Lut {
                        table: Box::new(t),
                        out: qo,
                    },
                    ins,
                );
            }
            "max_pool2d" => {
                let pool = Pool2d {
                    kernel: usize2(&nd["kernel"]),
                    stride: usize2(&nd["stride"]),
                    padding: usize2(&nd["padding"]),
                    dilation: usize2(&nd["dilation"]),
                    ceil_mode: nd["ceil_mode"].as_bool().unwrap(),
                };
                if nd.get("act_min").is_some() {
                    // a merged clamp: the pool's bytes, read with the clamp's
                    // output qparams, clamped there
                    let qo = qp(nd, "output_scale", "output_zero_point");
                    let t = ops::xnnpack_merged_clamp_table(
                        qo,
                        num(&nd["act_min"]),
                        num(&nd["act_max"]),
                    )
                    .map_err(|e| e.to_string())?;
                    let pooled = format!("{out_name}.pool");
                    push(pooled.clone(), Op::MaxPool2d(pool), ins);
                    push(
                        out_name,
                        Op::Lut {
                            table: Box::new(t),
                            out: qo,
                        },
                        vec![pooled],
                    );
                } else {
                    push(out_name, Op::MaxPool2d(pool), ins);
                }
            }
            "mean_hw" => {
                if nd["input_scale"] != nd["output_scale"]
                    || nd["input_zero_point"] != nd["output_zero_point"]
                {
                    return Err("mean with different input and output qparams".into());
                }
                push(out_name, Op::Mean { keepdim: true }, ins);
            }
            "adaptive_avg_pool2d" => {
                // ExecuTorch's portable kernel between two XNNPACK partitions;
                // shared qparams (what XNNPACKQuantizer gives it)
                if nd["input_scale"] != nd["output_scale"]
                    || nd["input_zero_point"] != nd["output_zero_point"]
                {
                    return Err(
                        "adaptive_avg_pool2d with different input and output qparams".into(),
                    );
                }
                push(
                    out_name,
                    Op::AdaptiveAvgPool2d(usize2(&nd["output_size"])),
                    ins,
                );
            }
            "cat" => {
                if nd["dim"].as_i64() != Some(1) {
                    return Err(format!("cat along dim {}", nd["dim"]));
                }
                push(
                    out_name,
                    Op::Cat(qp(nd, "output_scale", "output_zero_point")),
                    ins,
                );
            }
            "reshape" => {
                let s: Vec<usize> = nd["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_i64().unwrap() as usize)
                    .collect();
                push(out_name, Op::Reshape(s[1..].to_vec()), ins);
            }
            "f32_clamp" => push(
                out_name,
                Op::HostFloat(HostFn::Clip {
                    min: num(&nd["min"]),
                    max: num(&nd["max"]),
                }),
                ins,
            ),
            "unary" => {
                // a float unary op between dq and q: the exporter's table (recorded in the
                // case by tools/pt2e/gen_pt2e_unary.py from qfuse_export.xnnpack_rules,
                // README "unary ops"), run as an Op::Lut; the outputs are ExecuTorch's
                let t: Vec<u8> = nd["table"]
                    .as_array()
                    .ok_or("unary without a table")?
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u8)
                    .collect();
                let table: [u8; 256] = t.try_into().map_err(|_| "a unary table of 256 bytes")?;
                push(
                    out_name,
                    Op::Lut {
                        table: Box::new(table),
                        out: qp(nd, "output_scale", "output_zero_point"),
                    },
                    ins,
                );
            }
            "batch_norm" => {
                // a BatchNorm not after a conv: ExecuTorch's f32 1x1 depthwise conv in the
                // XNNPACK delegate, as the exporter's per-channel tables (recorded by
                // tools/pt2e/gen_pt2e_portable.py from qfuse_export.xnnpack_rules, README
                // "batch norm"), run as an Op::ChannelLut; the outputs are ExecuTorch's
                let t = arr(&format!("n{k}_tables"));
                let c = nd["channels"]
                    .as_u64()
                    .ok_or("batch_norm without channels")? as usize;
                if t.shape != [c, 256] {
                    return Err(format!("n{k}_tables of shape {:?}", t.shape));
                }
                push(
                    out_name,
                    Op::ChannelLut {
                        tables: Arc::new(t.u8()),
                        out: qp(nd, "output_scale", "output_zero_point"),
                    },
                    ins,
                );
            }
            "batch_norm_mean" => {
                // densenet's tail, left in float by XNNPACKQuantizer: XNNPACK's f32 batch
                // norm (+ clamp) per byte, its f32 global average and convert, as an
                // Op::XnnpackChannelMean over the exporter's f32 values (recorded by
                // tools/pt2e/gen_pt2e_portable.py, README "batch norm + mean"), which must
                // be the rule's values computed here from the BatchNorm's parameters
                let t = arr(&format!("n{k}_values"));
                let c = nd["channels"]
                    .as_u64()
                    .ok_or("batch_norm_mean without channels")? as usize;
                if t.shape != [c, 256] {
                    return Err(format!("n{k}_values of shape {:?}", t.shape));
                }
                let values = t.f32();
                let want = bn_values(&|n| arr(&format!("n{k}_{n}")).f32(), nd);
                if let Some(i) =
                    (0..values.len()).find(|&i| values[i].to_bits() != want[i].to_bits())
                {
                    return Err(format!(
                        "n{k}_values[{i}] = {} but the rule gives {}",
                        values[i], want[i]
                    ));
                }
                push(
                    out_name,
                    Op::XnnpackChannelMean {
                        values: Arc::new(values),
                        out: qp(nd, "output_scale", "output_zero_point"),
                    },
                    ins,
                );
            }
            "avg_pool2d" if nd["backend"] == "xnnpack" => {
                // delegated (no ceil_mode, padding not in the divisor): XNNPACK's f32
                // average pooling between its converts (README "avg_pool2d (XNNPACK)")
                assert_eq!(nd["ceil_mode"], false);
                assert_eq!(nd["count_include_pad"], false);
                assert!(nd["divisor_override"].is_null());
                push(
                    out_name,
                    Op::XnnpackAvgPool2d {
                        pool: Pool2d {
                            kernel: usize2(&nd["kernel"]),
                            stride: usize2(&nd["stride"]),
                            padding: usize2(&nd["padding"]),
                            dilation: [1, 1],
                            ceil_mode: false,
                        },
                        out: qp(nd, "output_scale", "output_zero_point"),
                    },
                    ins,
                );
            }
            "avg_pool2d" => {
                // ExecuTorch's portable avg_pool2d between two XNNPACK partitions
                let divisor_override = nd["divisor_override"].as_u64().map(|d| d as usize);
                push(
                    out_name,
                    Op::PortableAvgPool2d {
                        pool: Pool2d {
                            kernel: usize2(&nd["kernel"]),
                            stride: usize2(&nd["stride"]),
                            padding: usize2(&nd["padding"]),
                            dilation: [1, 1],
                            ceil_mode: nd["ceil_mode"].as_bool().unwrap(),
                        },
                        opts: AvgPoolOpts {
                            count_include_pad: nd["count_include_pad"].as_bool().unwrap(),
                            divisor_override,
                        },
                        out: qp(nd, "output_scale", "output_zero_point"),
                    },
                    ins,
                );
            }
            other => return Err(format!("op {other} has no qfuse form")),
        }
    }
    // Outputs: each case output, and the int8 tensor behind a dequantized one.
    let mut outs = Vec::new();
    let mut expect = Vec::new();
    for (i, o) in case["outputs"].as_array().unwrap().iter().enumerate() {
        let name = o["name"].as_str().unwrap().to_string();
        let f = arr(&format!("output_{i}")).f32();
        let q = if o.get("int8").is_some() {
            Some(arr(&format!("output_q_{i}")).i8())
        } else {
            None
        };
        outs.push(name.clone());
        if q.is_some() {
            let src = nodes
                .iter()
                .find(|n| n.name == name)
                .map(|n| n.inputs[0].clone())
                .ok_or("output without a node")?;
            outs.push(src);
        }
        expect.push((f, q));
    }
    let model = Model::new(Requant::Xnnpack, inputs, outs, nodes).map_err(|e| e.to_string())?;
    Ok(Built {
        model,
        inputs: values,
        expect,
    })
}

/// The f32 value XNNPACK computes for every stored byte of a
/// `dq -> batch_norm [-> clamp]` (README "batch norm"), per channel: weights
/// in f64 (`w = f32(gamma / d)`, `b = f32(-mean * gamma / d + beta)`, `d =
/// sqrt(var + f64(f32(eps)))`), `x = f32(q - z) * s`, `fma(x, w, b)`, the
/// clamp; `[C * 256]`, indexed by the stored byte `q + 128`.
fn bn_values(param: &dyn Fn(&str) -> Vec<f32>, nd: &Json) -> Vec<f32> {
    let (mean, var, gamma, beta) = (
        param("running_mean"),
        param("running_var"),
        param("weight"),
        param("bias"),
    );
    let eps = nd["eps"].as_f64().unwrap() as f32 as f64;
    let (s, z) = (
        nd["input_scale"].as_f64().unwrap() as f32,
        nd["input_zero_point"].as_i64().unwrap() as i32,
    );
    let (lo, hi) = (num(&nd["act_min"]), num(&nd["act_max"]));
    let mut out = Vec::with_capacity(mean.len() * 256);
    for c in 0..mean.len() {
        let d = (var[c] as f64 + eps).sqrt();
        let w = (gamma[c] as f64 / d) as f32;
        let b = (-(mean[c] as f64) * gamma[c] as f64 / d + beta[c] as f64) as f32;
        for q in -128..128 {
            let x = (q - z) as f32 * s;
            out.push(x.mul_add(w, b).max(lo).min(hi));
        }
    }
    out
}

/// The first difference between the run's outputs and ExecuTorch's.
fn compare(b: &Built, got: &[Value]) -> Option<String> {
    let mut at = 0;
    for (i, (f, q)) in b.expect.iter().enumerate() {
        let y = got[at].to_f32();
        at += 1;
        if y.len() != f.len() {
            return Some(format!(
                "output {i}: {} values, ExecuTorch {}",
                y.len(),
                f.len()
            ));
        }
        let bad = y
            .iter()
            .zip(f)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        if bad > 0 {
            let j = y
                .iter()
                .zip(f)
                .position(|(a, b)| a.to_bits() != b.to_bits())
                .unwrap();
            return Some(format!(
                "output {i}: {bad}/{} f32 differ (first at {j}: {} vs ExecuTorch {})",
                f.len(),
                y[j],
                f[j]
            ));
        }
        if let Some(q) = q {
            let (v, _) = got[at]
                .q_i8()
                .expect("a qint8 tensor behind the dequantize");
            at += 1;
            if &v != q {
                let j = v.iter().zip(q).position(|(a, b)| a != b).unwrap();
                return Some(format!(
                    "output {i}: int8 differ (first at {j}: {} vs ExecuTorch {})",
                    v[j], q[j]
                ));
            }
        }
    }
    None
}

fn cases() -> Vec<(String, PathBuf, Json)> {
    let mut v: Vec<_> = std::fs::read_dir(DIR)
        .expect("tests/data/pt2e/xnnpack")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").is_file())
        .collect();
    v.sort();
    v.into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(p.join("case.json")).unwrap();
            // Python's json writes infinite floats as bare Infinity
            let text = text
                .replace("-Infinity", "\"-inf\"")
                .replace("Infinity", "\"inf\"");
            let j: Json = serde_json::from_str(&text).unwrap();
            (j["name"].as_str().unwrap().to_string(), p, j)
        })
        .collect()
}

/// Runs every case with `run`, prints one line per failure and the count.
fn run_all(device: &str, run: &dyn Fn(&Built) -> Result<Vec<Value>, String>) {
    let all = cases();
    assert_eq!(all.len(), 104, "the committed XNNPACK cases");
    let (mut pass, mut fail, mut skipped) = (0, 0, 0);
    for (name, dir, case) in &all {
        let why = NOT_EXPRESSIBLE.iter().find(|(n, _)| n == name);
        let built = build(dir, case);
        if let Some((_, reason)) = why {
            assert!(
                built.is_err(),
                "{name} is listed as not expressible but builds"
            );
            println!("not expressible: {name}: {reason}");
            skipped += 1;
            continue;
        }
        let b = match built {
            Ok(b) => b,
            Err(e) => {
                println!("FAIL {name}: build: {e}");
                fail += 1;
                continue;
            }
        };
        match run(&b).map(|got| compare(&b, &got)) {
            Ok(None) => pass += 1,
            Ok(Some(msg)) => {
                println!("FAIL {name}: {msg}");
                fail += 1;
            }
            Err(e) => {
                println!("FAIL {name}: run: {e}");
                fail += 1;
            }
        }
    }
    println!("{device}: {pass} passed, {fail} failed ({skipped} not expressible)");
    assert_eq!(
        fail, 0,
        "{device}: {fail} XNNPACK cases differ from ExecuTorch"
    );
    assert_eq!(pass + skipped, all.len());
    assert_eq!(skipped, NOT_EXPRESSIBLE.len());
}

#[test]
fn xnnpack_cases_on_cpu_equal_executorch() {
    run_all("cpu", &|b| {
        b.model.run_cpu(&b.inputs).map_err(|e| e.to_string())
    });
}

#[test]
fn xnnpack_cases_on_gpu_equal_executorch() {
    let ctx = common::gpu();
    run_all("gpu", &|b| {
        GpuModel::new(&ctx, &b.model)
            .and_then(|g| g.run(&ctx, &b.inputs))
            .map_err(|e| e.to_string())
    });
}

#[test]
fn xnnpack_f32_mean_equals_executorch() {
    // The f32 chains of `batch_norm_mean` (no quantize after the pool: ExecuTorch
    // returned XNNPACK's pooled f32 values): qfuse's rule (`ops::channel_mean_f32`
    // over the values of `bn_values`) must give every f32 bit for bit.
    let dir = Path::new(DIR).join("batch_norm_mean");
    let (_, _, case) = cases()
        .into_iter()
        .find(|(n, _, _)| n == "batch_norm_mean")
        .expect("the batch_norm_mean case");
    let chains = case["f32_chains"].as_array().expect("f32_chains");
    assert!(!chains.is_empty());
    let mut checked = 0;
    for ch in chains {
        let j = ch["id"].as_u64().unwrap();
        let arr = |n: &str| npy(&dir.join(format!("f{j}_{n}.npy")));
        let values = arr("values").f32();
        let want = bn_values(&|n| arr(n).f32(), ch);
        assert!(
            values
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "f32 chain {j}: recorded values differ from the rule"
        );
        let x = arr("input");
        let (c, n) = (x.shape[1], x.shape[2] * x.shape[3]);
        let q = QParams::new_i8(
            ch["input_scale"].as_f64().unwrap() as f32,
            ch["input_zero_point"].as_i64().unwrap() as i32,
        )
        .unwrap();
        let bytes = q.quantize_slice(&x.f32());
        let y = arr("output").f32();
        assert_eq!(y.len(), c);
        let inv_n = 1.0f32 / n as f32;
        for k in 0..c {
            let t = &values[k * 256..][..256];
            let m = ops::channel_mean_f32(|b| t[b as usize], &bytes[k * n..][..n], inv_n);
            assert_eq!(
                m.to_bits(),
                y[k].to_bits(),
                "f32 chain {j} ({:?}), channel {k}: {m} vs ExecuTorch {}",
                x.shape,
                y[k]
            );
            checked += 1;
        }
    }
    println!("{checked} pooled f32 values equal ExecuTorch's");
    assert_eq!(checked, chains.len() * 100);
}

#[test]
fn xnnpack_f32_avg_pool_equals_executorch() {
    // The f32 pools of `avg_pool2d_xnnpack` (no quantize after the pool: ExecuTorch
    // returned XNNPACK's pooled f32 values): qfuse's rule (`ops::xnn_avg_pool_f32` over
    // the dequantized bytes) must give every f32 bit for bit.
    let dir = Path::new(DIR).join("avg_pool2d_xnnpack");
    let (_, _, case) = cases()
        .into_iter()
        .find(|(n, _, _)| n == "avg_pool2d_xnnpack")
        .expect("the avg_pool2d_xnnpack case");
    let pools = case["f32_pools"].as_array().expect("f32_pools");
    assert!(!pools.is_empty());
    let mut checked = 0;
    for ch in pools {
        let j = ch["id"].as_u64().unwrap();
        let arr = |n: &str| npy(&dir.join(format!("f{j}_{n}.npy")));
        let x = arr("input");
        let (c, h, w) = (x.shape[1], x.shape[2], x.shape[3]);
        let ([kh, kw], [sh, sw], [ph, pw]) = (
            usize2(&ch["kernel"]),
            usize2(&ch["stride"]),
            usize2(&ch["padding"]),
        );
        let (oh, ow) = ((h + 2 * ph - kh) / sh + 1, (w + 2 * pw - kw) / sw + 1);
        let q = QParams::new_i8(
            ch["input_scale"].as_f64().unwrap() as f32,
            ch["input_zero_point"].as_i64().unwrap() as i32,
        )
        .unwrap();
        let bytes = q.quantize_slice(&x.f32());
        let dq = |b: u8| (b as i32 - q.zero_point) as f32 * q.scale;
        let y = arr("output");
        assert_eq!(y.shape, [1, c, oh, ow]);
        let y = y.f32();
        for k in 0..c {
            let plane = &bytes[k * h * w..][..h * w];
            for oy in 0..oh {
                for ox in 0..ow {
                    let m = ops::xnn_avg_pool_f32(kh, kw, |ky, kx| {
                        let (iy, ix) = (
                            (oy * sh + ky).checked_sub(ph)?,
                            (ox * sw + kx).checked_sub(pw)?,
                        );
                        (iy < h && ix < w).then(|| dq(plane[iy * w + ix]))
                    });
                    let e = y[(k * oh + oy) * ow + ox];
                    assert_eq!(
                        m.to_bits(),
                        e.to_bits(),
                        "f32 pool {j} ({kh}x{kw} s{sh}x{sw} p{ph}x{pw}), channel {k}, output ({oy}, {ox}): {m} vs ExecuTorch {e}"
                    );
                    checked += 1;
                }
            }
        }
    }
    println!("{checked} pooled f32 values equal ExecuTorch's");
    assert_eq!(checked, 8208);
}

#[test]
fn xnnpack_models_round_trip_through_the_file() {
    // every op form used above survives the model file and runs the same
    let mut n = 0;
    for (name, dir, case) in cases() {
        let Ok(b) = build(&dir, &case) else { continue };
        let bytes = b.model.to_bytes().unwrap_or_else(|e| panic!("{name}: {e}"));
        let m2 = Model::from_bytes(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(m2.engine(), Requant::Xnnpack, "{name}");
        let (a, c) = (
            b.model.run_cpu(&b.inputs).unwrap(),
            m2.run_cpu(&b.inputs).unwrap(),
        );
        assert_eq!(a, c, "{name}: the reloaded model computes differently");
        n += 1;
    }
    assert_eq!(n, 104 - NOT_EXPRESSIBLE.len());
}

#[test]
fn xnnpack_refuses_pytorch_rule_ops() {
    // Under the xnnpack engine, ops whose rule is PyTorch's are errors that
    // name the XNNPACK form to use.
    let q = QParams::new_i8(0.05, -3).unwrap();
    let x = || {
        vec![(
            "x".to_string(),
            TensorInfo {
                shape: vec![2, 3, 3],
                dtype: DType::F32,
            },
        )]
    };
    let quant = Node {
        name: "q".into(),
        op: Op::Quantize(q),
        inputs: vec!["x".into()],
    };
    for (op, ins, want) in [
        (
            Op::Add {
                relu: false,
                out: q,
            },
            vec!["q".to_string(), "q".to_string()],
            "xnnpack_add_table",
        ),
        (
            Op::Hardtanh { min: 0.0, max: 6.0 },
            vec!["q".to_string()],
            "xnnpack_clamp_table",
        ),
        (Op::Relu6, vec!["q".to_string()], "xnnpack_clamp_table"),
    ] {
        let n = Node {
            name: "y".into(),
            op,
            inputs: ins,
        };
        let e = Model::new(
            Requant::Xnnpack,
            x(),
            vec!["y".into()],
            vec![quant.clone(), n],
        )
        .expect_err("refused");
        assert!(e.to_string().contains(want), "{e}");
    }
    // add scale ratios outside XNNPACK's range [2^-10, 2^8)
    let big = QParams::new_i8(1000.0, 0).unwrap();
    let e = ops::xnnpack_add_table(big, q, q, false).expect_err("refused");
    assert!(e.to_string().contains("XNNPACK's range"), "{e}");
    // the same model with XNNPACK's forms builds and runs
    let t = ops::xnnpack_add_table(q, q, q, true).unwrap();
    let n = Node {
        name: "y".into(),
        op: Op::Binary {
            table: Arc::new(t),
            out: q,
        },
        inputs: vec!["q".into(), "q".into()],
    };
    let m = Model::new(Requant::Xnnpack, x(), vec!["y".into()], vec![quant, n]).unwrap();
    let data: Vec<f32> = (0..18).map(|i| i as f32 * 0.07 - 0.6).collect();
    let y = m
        .run_cpu(&[Value::F32 {
            data: data.clone(),
            shape: vec![1, 2, 3, 3],
        }])
        .unwrap();
    let (v, _) = y[0].q_i8().unwrap();
    // x + x with a relu: 2 * q(x) - zp, clamped below at the zero point
    for (i, (&got, &xf)) in v.iter().zip(&data).enumerate() {
        let qx = ((xf * (1.0 / 0.05)).round_ties_even() as i32 - 3).clamp(-128, 127);
        let want = (2 * (qx + 3) - 3).clamp(-3, 127);
        assert_eq!(got as i32, want, "element {i}");
    }
}
