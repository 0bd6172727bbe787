//! Graph algorithms are iterative and linear: a chain of 100,000 nodes loads
//! from bytes and validates on a thread with a 256 KiB stack (a recursive
//! topological sort overflows it at a few thousand nodes), runs on the CPU,
//! and builds and runs on the GPU, each in seconds (a quadratic walk of the
//! chain would take minutes).

mod common;

use std::collections::HashMap;
use std::time::Instant;

use common::{first_mismatch_bits, gpu, Rng};
use qfuse::model::{Model, Value};
use qfuse::{GpuModel, QParams};
use serde_json::json;

const CHAIN: usize = 100_000;
const SMALL_STACK: usize = 256 * 1024;

fn q() -> QParams {
    QParams::new(0.05, 3).unwrap()
}

/// `x` (float32 [16]) -> quantize -> CHAIN nodes made by `link` -> dequantize,
/// as model file bytes, the nodes written in reverse order (loading sorts them).
fn chain_file(link: impl Fn(usize, &str) -> serde_json::Value) -> Vec<u8> {
    let mut nodes = vec![json!({"name": "q", "op": "quantize", "inputs": ["x"],
        "scale": q().scale as f64, "zero_point": q().zero_point})];
    let mut prev = "q".to_string();
    for i in 0..CHAIN {
        nodes.push(link(i, &prev));
        prev = format!("n{i}");
    }
    nodes.push(json!({"name": "out", "op": "dequantize", "inputs": [prev]}));
    nodes.reverse();
    let header = json!({
        "format": "qfuse",
        "format_version": 1,
        "engine": "fbgemm",
        "inputs": [{"name": "x", "shape": [16]}],
        "outputs": ["out"],
        "nodes": nodes,
    });
    let none: Vec<(String, safetensors::tensor::TensorView)> = Vec::new();
    safetensors::serialize(
        none,
        Some(HashMap::from([("qfuse".to_string(), header.to_string())])),
    )
    .unwrap()
}

fn input(batch: usize) -> Value {
    let mut rng = Rng(42);
    Value::F32 {
        data: (0..batch * 16).map(|_| rng.f32() * 8.0 - 4.0).collect(),
        shape: vec![batch, 16],
    }
}

/// Runs `f` on a thread with a 256 KiB stack.
fn on_small_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(SMALL_STACK)
            .spawn_scoped(s, f)
            .unwrap()
            .join()
            .expect("the small-stack thread panicked (stack overflow?)")
    })
}

/// Loads and validates `bytes` and runs the model on the CPU, on a small
/// stack; returns the model, the output and the seconds each step took.
fn load_and_run(bytes: Vec<u8>, x: Value) -> (Model, Vec<Value>, f64, f64) {
    on_small_stack(move || {
        let t = Instant::now();
        let m = Model::from_bytes(&bytes).unwrap();
        let load = t.elapsed().as_secs_f64();
        assert_eq!(m.nodes().len(), CHAIN + 2);
        // Model::new validates and sorts the same graph on the same stack.
        let again = Model::new(
            m.engine(),
            m.inputs().to_vec(),
            m.outputs().to_vec(),
            m.nodes().iter().rev().cloned().collect(),
        )
        .unwrap();
        assert_eq!(again.nodes().len(), CHAIN + 2);
        let t = Instant::now();
        let y = m.run_cpu(&[x]).unwrap();
        (m, y, load, t.elapsed().as_secs_f64())
    })
}

#[test]
fn chain_of_100k_reshapes_loads_on_a_small_stack_and_runs_on_cpu_and_gpu() {
    // [16] <-> [16, 1, 1]: the same packed layout, so on the GPU every link
    // is an alias of the quantize's buffer.
    let bytes = chain_file(|i, prev| {
        let shape = if i % 2 == 0 {
            json!([16, 1, 1])
        } else {
            json!([16])
        };
        json!({"name": format!("n{i}"), "op": "reshape", "inputs": [prev], "shape": shape})
    });
    let x = input(3);
    let (m, y, load, run) = load_and_run(bytes, x.clone());
    let want: Vec<f32> = x
        .to_f32()
        .iter()
        .map(|&v| q().dequantize(q().quantize(v)))
        .collect();
    if let Some(d) = first_mismatch_bits(&y[0].to_f32(), &want) {
        panic!("CPU output differs from dequantize(quantize(x)) at {d}");
    }
    let ctx = gpu();
    let t = Instant::now();
    let g = on_small_stack(|| GpuModel::new(&ctx, &m)).unwrap();
    let build = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let out = g.run(&ctx, &[x]).unwrap();
    let gpu_run = t.elapsed().as_secs_f64();
    if let Some(d) = first_mismatch_bits(&out[0].to_f32(), &want) {
        panic!("GPU output differs from the CPU's at {d}");
    }
    println!(
        "{CHAIN} reshapes: load+validate {load:.2} s, CPU run {run:.2} s, GPU build {build:.2} s, GPU run {gpu_run:.2} s"
    );
    for (what, s) in [
        ("load", load),
        ("CPU run", run),
        ("GPU build", build),
        ("GPU run", gpu_run),
    ] {
        assert!(
            s < 30.0,
            "{what} of a {CHAIN}-node chain took {s:.1} s (not linear?)"
        );
    }
}

#[test]
fn chain_of_100k_relus_loads_on_a_small_stack_and_runs_on_cpu() {
    let bytes =
        chain_file(|i, prev| json!({"name": format!("n{i}"), "op": "relu", "inputs": [prev]}));
    let x = input(2);
    let (m, y, load, run) = load_and_run(bytes, x.clone());
    let want: Vec<f32> = x
        .to_f32()
        .iter()
        .map(|&v| q().dequantize(q().quantize(v).max(q().zero_point as u8)))
        .collect();
    assert!(want.iter().any(|&v| v > 0.0) && want.contains(&0.0));
    if let Some(d) = first_mismatch_bits(&y[0].to_f32(), &want) {
        panic!("CPU output differs from relu(x) at {d}");
    }
    // The memory plan of 100,000 live-one-step tensors: two buffers reused.
    let t = Instant::now();
    let p = on_small_stack(|| qfuse::plan::plan(&m, 2)).unwrap();
    let plan = t.elapsed().as_secs_f64();
    assert_eq!(p.assignment.len(), CHAIN + 1);
    assert_eq!(p.buffers.len(), 2, "{:?}", p.buffers);
    println!(
        "{CHAIN} relus: load+validate {load:.2} s, CPU run {run:.2} s, memory plan {plan:.2} s"
    );
    for (what, s) in [("load", load), ("CPU run", run), ("plan", plan)] {
        assert!(
            s < 30.0,
            "{what} of a {CHAIN}-node chain took {s:.1} s (not linear?)"
        );
    }
}
