//! torch.compile (Inductor, freezing) on X86InductorQuantizer models whose
//! quantizes read *float* values that Inductor's C++ moves, max-pools,
//! normalizes or averages (tests/data/pt2e/README.md, "Inductor x86 graphs":
//! float regions, batch norm, `table_mean`), bit for bit, without Python.
//!
//! `tests/data/pt2e/inductor_x86_float/<case>`: small models exported by
//! `qfuse_export` and recorded by `tools/pt2e/gen_inductor_float.py`
//! (`output.npy` is what the compiled model returned) on an Intel Xeon with
//! AVX-512 VNNI (torch 2.15, torchao 0.18):
//! - `shuffle_blocks`: ShuffleNetV2 blocks (cat of a dequantized half and a
//!   conv's f32 relu output, channel shuffle, chunk): convs with requant
//!   `inductor_x86`, byte tables, multi-input gathers;
//! - `inception_pools`: GoogLeNet Inception blocks (cat of f32 conv outputs,
//!   float max pools of it, ceil mode, a max pool of a max pool);
//! - `dense_5x6`, `dense_9x7`: a one-block DenseNet (dq -> batch_norm -> relu
//!   -> q as `channel_lut`; the tail's global average of batch-normed bytes as
//!   `host_float` `table_mean`, then the last linear on the host).

mod common;

use std::path::{Path, PathBuf};

use qfuse::ops::host::{HostFn, TableMean};
use qfuse::ops::Op;
use qfuse::{GpuModel, Model, QParams, Requant, Value};

const CASES: &str = "tests/data/pt2e/inductor_x86_float";

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

fn dirs() -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(CASES)
        .unwrap_or_else(|e| panic!("{CASES}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").is_file())
        .collect();
    v.sort();
    v
}

/// The op names of a model (`host_float` as `host_float <fn>`).
fn op_names(m: &Model) -> Vec<String> {
    m.nodes()
        .iter()
        .map(|n| match &n.op {
            Op::HostFloat(HostFn::TableMean(_)) => "host_float table_mean".into(),
            Op::HostFloat(HostFn::OnednnLinear(_)) => "host_float onednn_linear".into(),
            Op::Gather { .. } if n.inputs.len() > 1 => "gather of several".into(),
            Op::Conv2d(l) if l.requant() == Requant::InductorX86 => "conv2d inductor_x86".into(),
            op => op.name().to_string(),
        })
        .collect()
}

fn cases() -> Vec<Case> {
    let v: Vec<Case> = dirs()
        .iter()
        .map(|d| {
            let model = Model::load(d.join("model.safetensors")).unwrap();
            assert_eq!(model.engine(), Requant::InductorX86);
            let (xs, x) = npy_f32(&d.join("input.npy"));
            let (_, expect) = npy_f32(&d.join("output.npy"));
            Case {
                name: d.file_name().unwrap().to_string_lossy().into(),
                model,
                input: Value::F32 { data: x, shape: xs },
                expect,
            }
        })
        .collect();
    let names: Vec<&str> = v.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "dense_5x6",
            "dense_9x7",
            "inception_pools",
            "shuffle_blocks"
        ],
        "the recorded cases of {CASES}"
    );
    // each case holds the forms it is recorded for
    for c in &v {
        let ops = op_names(&c.model);
        let need: &[&str] = match c.name.as_str() {
            "shuffle_blocks" => &["conv2d inductor_x86", "gather of several", "lut"],
            "inception_pools" => &["conv2d inductor_x86", "gather of several", "max_pool2d"],
            _ => &[
                "channel_lut",
                "host_float table_mean",
                "host_float onednn_linear",
            ],
        };
        for k in need {
            assert!(ops.iter().any(|o| o == k), "{}: no {k} in {ops:?}", c.name);
        }
    }
    v
}

fn check(device: &str, run: &dyn Fn(&Case) -> Vec<Value>) {
    let (mut pass, mut fail) = (0, 0);
    for c in cases() {
        let got = run(&c);
        assert_eq!(got.len(), 1, "{}", c.name);
        let y = got[0].to_f32();
        assert_eq!(y.len(), c.expect.len(), "{}", c.name);
        assert!(
            c.expect.iter().any(|&v| v != 0.0),
            "{}: all-zero output",
            c.name
        );
        let bad: Vec<usize> = (0..y.len())
            .filter(|&i| y[i].to_bits() != c.expect[i].to_bits())
            .collect();
        if let Some(&i) = bad.first() {
            println!(
                "FAIL {} [{device}]: {} of {} differ; first at {i}: {} vs compiled {}",
                c.name,
                bad.len(),
                y.len(),
                y[i],
                c.expect[i]
            );
            fail += 1;
        } else {
            pass += 1;
        }
    }
    println!("{device}: {pass} passed, {fail} failed");
    assert_eq!(fail, 0);
}

#[test]
fn inductor_float_regions_on_cpu_equal_torch_compile() {
    check("cpu", &|c| {
        c.model.run_cpu(std::slice::from_ref(&c.input)).unwrap()
    });
}

#[test]
fn inductor_float_regions_on_gpu_equal_torch_compile() {
    let ctx = common::gpu();
    check("gpu", &|c| {
        GpuModel::new(&ctx, &c.model)
            .and_then(|g| g.run(&ctx, std::slice::from_ref(&c.input)))
            .unwrap_or_else(|e| panic!("{}: {e}", c.name))
    });
}

#[test]
fn inductor_float_models_round_trip_through_the_file() {
    for c in cases() {
        let bytes = c.model.to_bytes().unwrap();
        let m2 = Model::from_bytes(&bytes).unwrap();
        let x = std::slice::from_ref(&c.input);
        assert_eq!(
            c.model.run_cpu(x).unwrap(),
            m2.run_cpu(x).unwrap(),
            "{}",
            c.name
        );
    }
}

#[test]
fn table_mean_refuses_bad_tables() {
    let q = QParams::new(0.05, 3).unwrap();
    let e = TableMean::new(vec![0.0; 300], q, q).unwrap_err();
    assert!(e.to_string().contains("[C, 256]"), "{e}");
    let mut t = vec![0.5; 512];
    t[7] = f32::NAN;
    let e = TableMean::new(t, q, q).unwrap_err();
    assert!(e.to_string().contains("finite"), "{e}");
    assert_eq!(TableMean::new(vec![0.5; 512], q, q).unwrap().channels(), 2);
}
