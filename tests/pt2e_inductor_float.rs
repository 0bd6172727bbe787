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
//!   `host_float` `table_mean`, then the last linear on the host);
//! - `bn_orders`, `tail_div` (`tools/pt2e/gen_inductor_bn_tail.py`): a batch
//!   norm (+ relu) and densenet's tail mean with parameters searched so that
//!   candidate operation orders give other bytes; the tests below recompute
//!   qfuse's rule and every candidate from `params.npy` and show that only
//!   qfuse's rule gives every recorded byte.

mod common;

use common::OracleCase as Case;
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
            "bn_orders",
            "dense_5x6",
            "dense_9x7",
            "inception_pools",
            "shuffle_blocks",
            "tail_div"
        ],
        "the recorded cases of {CASES}"
    );
    // each case holds the forms it is recorded for
    for c in &v {
        let ops = op_names(&c.model);
        let need: &[&str] = match c.name.as_str() {
            "shuffle_blocks" => &["conv2d inductor_x86", "gather of several", "lut"],
            "inception_pools" => &["conv2d inductor_x86", "gather of several", "max_pool2d"],
            "bn_orders" => &["channel_lut"],
            "tail_div" => &["host_float table_mean"],
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
    common::check_oracle(device, cases(), run);
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

/// A case of `tools/pt2e/gen_inductor_bn_tail.py`: `params.npy` rows mean,
/// invstd, w, b (per channel), then s_in, z_in, s_out, z_out.
struct Sep {
    c: usize,
    p: Vec<f32>,
    x: Vec<f32>,
    expect: Vec<f32>,
    json: String,
}

impl Sep {
    fn load(name: &str) -> Sep {
        let d = Path::new(CASES).join(name);
        let (ps, p) = npy_f32(&d.join("params.npy"));
        assert_eq!(ps.len(), 2, "{name}: params.npy {ps:?}");
        assert_eq!(ps[0], 8, "{name}: params.npy {ps:?}");
        let (_, x) = npy_f32(&d.join("input.npy"));
        let (_, expect) = npy_f32(&d.join("output.npy"));
        let json = std::fs::read_to_string(d.join("case.json")).unwrap();
        Sep {
            c: ps[1],
            p,
            x,
            expect,
            json,
        }
    }
    fn row(&self, r: usize, ch: usize) -> f32 {
        self.p[r * self.c + ch]
    }
    /// (s_in, z_in, s_out, z_out)
    fn qp(&self) -> (f32, f32, f32, f32) {
        (
            self.row(4, 0),
            self.row(5, 0),
            self.row(6, 0),
            self.row(7, 0),
        )
    }
    /// The recorded count of output bytes candidate `rule` gets wrong
    /// (case.json `misses`).
    fn recorded_misses(&self, rule: &str) -> usize {
        let m = &self.json[self
            .json
            .find("\"misses\"")
            .expect("no misses in case.json")..];
        let k = format!("\"{rule}\":");
        let at = m.find(&k).unwrap_or_else(|| panic!("no {k} in case.json"));
        let digits: String = m[at + k.len()..]
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().unwrap()
    }
}

/// Inductor's quantize: clamp(rint(f32(t * f32(1 / s))) + z, 0, 255), 1 / s
/// in f64 (the constant in the generated code).
fn ind_quant(t: f32, s: f32, z: f32) -> f32 {
    let c = (1.0f64 / s as f64) as f32;
    ((t * c).round_ties_even() + z).clamp(0.0, 255.0)
}

fn dequant(q: f32, s: f32, z: f32) -> f32 {
    (q - z) * s
}

/// The batch norm of `x` by `rule`: qfuse's (`requant_chain_table`) or a
/// candidate order (Rust's f32 operations are single roundings, never
/// contracted; `mul_add` is one rounding).
fn bn_rule(rule: &str, x: f32, m: f32, i: f32, w: f32, b: f32) -> f32 {
    let d = x - m;
    let a = i * w;
    match rule {
        "qfuse" => d * i * w + b,
        "mul_order" => d * a + b,
        "fused" => x * a + (b - m * a),
        "fused_fma" => x.mul_add(a, b - m * a),
        "mul_order_fma" => d.mul_add(a, b),
        "last_fma" => (d * i).mul_add(w, b),
        "w_first" => d * w * i + b,
        "exact" => (d as f64 * i as f64 * w as f64 + b as f64) as f32,
        _ => unreachable!("{rule}"),
    }
}

const BN_RULES: [&str; 8] = [
    "qfuse",
    "mul_order",
    "fused",
    "fused_fma",
    "mul_order_fma",
    "last_fma",
    "w_first",
    "exact",
];

/// Counts, per rule, the recorded output values the rule gets wrong, prints
/// them and checks: qfuse's rule none, each candidate at least one, as many as
/// case.json records.
fn check_separation(name: &str, case: &Sep, rules: &[&str], misses: &[usize]) {
    println!(
        "{name}: misses of {} outputs: {rules:?} {misses:?}",
        case.expect.len()
    );
    assert_eq!(misses[0], 0, "{name}: qfuse's rule misses recorded bytes");
    for (r, &n) in rules.iter().zip(misses).skip(1) {
        assert!(n > 0, "{name}: candidate {r} gives every recorded byte");
    }
    for (r, &n) in rules.iter().zip(misses) {
        assert_eq!(n, case.recorded_misses(r), "{name}: {r}");
    }
}

#[test]
fn inductor_batch_norm_order_is_separated_from_candidates() {
    let case = Sep::load("bn_orders");
    let (s_in, z_in, s_out, z_out) = case.qp();
    let hw = case.x.len() / case.c;
    assert_eq!(hw, 256);
    assert_eq!(case.expect.len(), case.x.len());
    let mut misses = [0usize; BN_RULES.len()];
    for ch in 0..case.c {
        let (m, i, w, b) = (
            case.row(0, ch),
            case.row(1, ch),
            case.row(2, ch),
            case.row(3, ch),
        );
        let mut seen = [false; 256];
        for p in 0..hw {
            let k = ch * hw + p;
            let q = ind_quant(case.x[k], s_in, z_in);
            seen[q as usize] = true;
            let x = dequant(q, s_in, z_in);
            for (r, rule) in BN_RULES.iter().enumerate() {
                let t = bn_rule(rule, x, m, i, w, b).max(0.0);
                let y = dequant(ind_quant(t, s_out, z_out), s_out, z_out);
                if y.to_bits() != case.expect[k].to_bits() {
                    if r == 0 {
                        println!(
                            "qfuse: channel {ch} byte {q}: {y} vs compiled {}",
                            case.expect[k]
                        );
                    }
                    misses[r] += 1;
                }
            }
        }
        assert!(
            seen.iter().all(|&s| s),
            "channel {ch}: not every input byte"
        );
    }
    check_separation("bn_orders", &case, &BN_RULES, &misses);
}

#[test]
fn inductor_tail_mean_division_is_separated_from_candidates() {
    let case = Sep::load("tail_div");
    let (s_in, z_in, s_out, z_out) = case.qp();
    let hw = case.x.len() / case.c;
    assert_eq!(hw, 49);
    assert_eq!(case.expect.len(), case.c);
    let rules = [
        "qfuse",
        "mul_recip",
        "pixel_lanes",
        "exact_mean",
        "folded_scale",
    ];
    let mut misses = [0usize; 5];
    for ch in 0..case.c {
        let (m, i, w, b) = (
            case.row(0, ch),
            case.row(1, ch),
            case.row(2, ch),
            case.row(3, ch),
        );
        let t: Vec<f32> = case.x[ch * hw..(ch + 1) * hw]
            .iter()
            .map(|&v| {
                let x = dequant(ind_quant(v, s_in, z_in), s_in, z_in);
                bn_rule("qfuse", x, m, i, w, b).max(0.0)
            })
            .collect();
        let acc = t.iter().fold(0f32, |a, &v| a + v);
        let mut lanes = [0f32; 16];
        for (p, &v) in t.iter().enumerate() {
            lanes[p % 16] += v;
        }
        let mut h = 8;
        while h > 0 {
            for l in 0..h {
                lanes[l] += lanes[l + h];
            }
            h /= 2;
        }
        let exact = t.iter().fold(0f64, |a, &v| a + v as f64);
        let n = hw as f32;
        let byte = |m: f32| ind_quant(m, s_out, z_out);
        let folded = (1.0f64 / (hw as f64 * s_out as f64)) as f32;
        let got = [
            byte(acc / n),
            byte(acc * (1.0f64 / hw as f64) as f32),
            byte(lanes[0] / n),
            byte((exact / hw as f64) as f32),
            ((acc * folded).round_ties_even() + z_out).clamp(0.0, 255.0),
        ];
        for (r, &q) in got.iter().enumerate() {
            let y = dequant(q, s_out, z_out);
            if y.to_bits() != case.expect[ch].to_bits() {
                if r == 0 {
                    println!("qfuse: channel {ch}: {y} vs compiled {}", case.expect[ch]);
                }
                misses[r] += 1;
            }
        }
    }
    check_separation("tail_div", &case, &rules, &misses);
}
