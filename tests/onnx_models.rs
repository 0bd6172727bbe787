//! Whole ONNX models (`tests/data/onnx/models`, made by
//! `tools/onnx/gen_onnx_models.py`: small networks quantized by ONNX Runtime's
//! `quantize_static`) loaded with `Model::load` and run on the CPU reference
//! and on the GPU against ONNX Runtime 1.32's outputs, bit for bit. Cases that
//! qfuse does not run yet are listed in `known()` with the reason; every other
//! case must run bit-exact. Shrink the list as ops land.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use qfuse::{GpuContext, GpuModel, Model, Value};

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx/models")
}

fn manifest() -> Vec<serde_json::Value> {
    let s = std::fs::read_to_string(models_dir().join("manifest.json")).expect("manifest.json");
    let m: serde_json::Value = serde_json::from_str(&s).expect("manifest JSON");
    m["cases"].as_array().expect("cases").clone()
}

/// A float32 .npy file: its elements and shape.
fn read_f32(path: &Path) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let f = npyz::NpyFile::new(&bytes[..]).expect("npy");
    let shape: Vec<usize> = f.shape().iter().map(|&d| d as usize).collect();
    assert_eq!(
        f.dtype().descr(),
        "'<f4'",
        "{}: not float32",
        path.display()
    );
    (f.into_vec().expect("f4"), shape)
}

/// Why a case does not run bit-exact today.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Known {
    /// `Model::load` refuses the model with an error containing the phrase.
    Refused(&'static str),
    /// The model loads and runs, but its output differs from ORT's (none
    /// today: once the converter accepts a model, it runs bit-exact).
    #[allow(dead_code)]
    Mismatch(&'static str),
}

/// The cases today's qfuse does not run bit-exact, and why. Every case not
/// listed must load, run and equal ORT bit for bit on the CPU and the GPU, and
/// every listed case must still fail as listed (a listed case that passes
/// fails the test, so the list stays honest).
fn known() -> BTreeMap<&'static str, Known> {
    use Known::*;
    BTreeMap::from([
        // int8-activation QDQ: ORT runs the stem Conv (and the Add) in float (not
        // bit-exact-able: ORT's float conv is MLAS's float GEMM)
        (
            "tiny_resnet_qdq_s8_pc",
            Refused("ORT runs this Conv in float"),
        ),
        (
            "tiny_mobilenet_qdq_s8_pc",
            Refused("ORT runs this Conv in float"),
        ),
    ])
}

enum Outcome {
    Pass,
    Refused(String),
    Failed(String),
}

fn run_case(case: &serde_json::Value, ctx: Option<&GpuContext>) -> Outcome {
    let name = case["name"].as_str().expect("name");
    let dir = models_dir().join(name);
    let model = match Model::load(dir.join("model.onnx")) {
        Ok(m) => m,
        Err(e) => return Outcome::Refused(e.to_string()),
    };
    let ins = case["inputs"].as_array().expect("inputs");
    if ins.len() != model.inputs().len() {
        return Outcome::Failed(format!(
            "{} model inputs, the manifest has {}",
            model.inputs().len(),
            ins.len()
        ));
    }
    let inputs: Vec<Value> = ins
        .iter()
        .map(|i| {
            let (data, shape) = read_f32(&dir.join(i["file"].as_str().expect("file")));
            Value::F32 { data, shape }
        })
        .collect();
    let got = match ctx {
        None => model.run_cpu(&inputs),
        Some(ctx) => GpuModel::new(ctx, &model).and_then(|g| g.run(ctx, &inputs)),
    };
    let got = match got {
        Ok(g) => g,
        Err(e) => return Outcome::Failed(format!("run: {e}")),
    };
    for (j, o) in case["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .enumerate()
    {
        let (want, wshape) = read_f32(&dir.join(o["file"].as_str().expect("file")));
        let Some(g) = got.get(j) else {
            return Outcome::Failed(format!("no output {j}"));
        };
        let Value::F32 { data: g, shape } = g else {
            return Outcome::Failed(format!("output {j} is quantized, ORT's is float32"));
        };
        if shape != &wshape {
            return Outcome::Failed(format!("output {j}: shape {shape:?}, ORT {wshape:?}"));
        }
        let differ = |i: &usize| g[*i].to_bits() != want[*i].to_bits();
        if let Some(i) = (0..want.len()).find(differ) {
            let n = (0..want.len()).filter(differ).count();
            return Outcome::Failed(format!(
                "output {j}: {n}/{} differ, first at flat {i}: qfuse {:?}, ORT {:?}",
                want.len(),
                g[i],
                want[i]
            ));
        }
    }
    Outcome::Pass
}

fn check(ctx: Option<&GpuContext>) {
    let on = if ctx.is_some() { "GPU" } else { "CPU" };
    let known = known();
    let cases = manifest();
    assert!(!cases.is_empty(), "no cases in the manifest");
    for name in known.keys() {
        assert!(
            cases.iter().any(|c| c["name"] == *name),
            "known() lists {name}, which is not in the manifest"
        );
    }
    let (mut passed, mut failed, mut refused) = (0, 0, 0);
    let mut unexpected = Vec::new();
    let mut stale = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().expect("name");
        let k = known.get(name).copied();
        match run_case(case, ctx) {
            Outcome::Pass => {
                passed += 1;
                println!("PASS    ({on}) {name}");
                if let Some(k) = k {
                    stale.push(format!("{name} (listed as {k:?})"));
                }
            }
            Outcome::Refused(e) => {
                refused += 1;
                println!("REFUSED ({on}) {name}: {e}");
                match k {
                    Some(Known::Refused(p)) if e.contains(p) => {}
                    _ => unexpected.push(format!("{name}: refused: {e}")),
                }
            }
            Outcome::Failed(e) => {
                failed += 1;
                println!("FAIL    ({on}) {name}: {e}");
                match k {
                    Some(Known::Mismatch(_)) => {}
                    _ => unexpected.push(format!("{name}: {e}")),
                }
            }
        }
    }
    println!("{on}: {passed} passed, {failed} failed, {refused} refused");
    for s in &stale {
        println!("{on}: now runs bit-exact, remove it from known(): {s}");
    }
    for u in &unexpected {
        println!("{on}: NOT IN known(): {u}");
    }
    assert!(
        unexpected.is_empty() && stale.is_empty(),
        "{} cases fail or are refused without being listed in known(), {} listed cases now run \
         bit-exact (take them off the list)",
        unexpected.len(),
        stale.len()
    );
}

#[test]
fn onnx_models_on_cpu_equal_onnxruntime() {
    check(None);
}

#[test]
fn onnx_models_on_gpu_equal_onnxruntime() {
    let ctx = common::gpu();
    check(Some(&ctx));
}
