//! Inductor's average pools on u8 tensors (`dq -> avg_pool2d / adaptive_avg_pool2d
//! -> q`, equal qparams, as X86InductorQuantizer leaves them), bit for bit with
//! torch.compile, without Python: `tests/data/pt2e/inductor_x86_pool/<case>`
//! (recorded by `tools/pt2e/gen_inductor_pool.py` on an Intel Xeon with AVX-512
//! VNNI, torch 2.15). Each case is built as `quantize -> avg_pool2d /
//! adaptive_avg_pool2d` under the engine `inductor_x86` and run on the CPU, the
//! GPU and through the model file. A reference written here applies the rule
//! and four alternatives (reciprocal multiply, column-major sum, exact integer
//! sum, zero point before rounding); the recorded inputs put windows on exact
//! .5 ties, where the alternatives miss the bytes `case.json` records.

mod common;

use std::path::PathBuf;

use common::npy_u8;
use common::pair;
use qfuse::model::{DType, Node, TensorInfo};
use qfuse::ops::{AvgPoolOpts, Op, Pool2d};
use qfuse::{GpuModel, Model, QParams, Requant, Value};
use serde_json::Value as Json;

const POOL: &str = "tests/data/pt2e/inductor_x86_pool";

struct Case {
    name: String,
    j: Json,
    q: QParams,
    op: Op,
    shape: Vec<usize>,
    x: Vec<u8>,
    expect: Vec<u8>,
    /// Per output row / column: taps `[start, end)` and the divisor's factor.
    rows: Vec<(usize, usize, usize)>,
    cols: Vec<(usize, usize, usize)>,
    div: Option<usize>,
}

/// ATen's / Inductor's windows of `avg_pool2d` along one dimension.
fn avg_windows(
    len: usize,
    k: usize,
    s: usize,
    p: usize,
    ceil: bool,
    cip: bool,
) -> Vec<(usize, usize, usize)> {
    let num = len + 2 * p - k + if ceil { s - 1 } else { 0 };
    let mut o = num / s + 1;
    if ceil && (o - 1) * s >= len + p {
        o -= 1;
    }
    (0..o)
        .map(|j| {
            let i0 = (j * s) as i64 - p as i64;
            let i1 = (i0 + k as i64).min((len + p) as i64);
            let (c0, c1) = (i0.max(0), i1.min(len as i64));
            let f = if cip { i1 - i0 } else { c1 - c0 };
            (c0 as usize, c1 as usize, f as usize)
        })
        .collect()
}

/// PyTorch's adaptive windows `[floor(o L / O), ceil((o + 1) L / O))`.
fn adaptive_windows(len: usize, out: usize) -> Vec<(usize, usize, usize)> {
    (0..out)
        .map(|o| {
            let (s, e) = (o * len / out, ((o + 1) * len).div_ceil(out));
            (s, e, e - s)
        })
        .collect()
}

fn cases() -> Vec<Case> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(POOL)
        .unwrap_or_else(|e| panic!("{POOL}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").is_file())
        .collect();
    dirs.sort();
    let v: Vec<Case> = dirs
        .iter()
        .map(|d| {
            let j: Json =
                serde_json::from_str(&std::fs::read_to_string(d.join("case.json")).unwrap())
                    .unwrap();
            let q = QParams::new(
                j["scale"].as_f64().unwrap() as f32,
                j["zero_point"].as_i64().unwrap() as i32,
            )
            .unwrap();
            let (shape, x) = npy_u8(&d.join("x_u8.npy"));
            let (_, expect) = npy_u8(&d.join("output_u8.npy"));
            let (h, w) = (shape[2], shape[3]);
            let (op, rows, cols, div) = if j["op"] == "avg_pool2d" {
                let pool = Pool2d {
                    kernel: pair(&j["kernel"]),
                    stride: pair(&j["stride"]),
                    padding: pair(&j["padding"]),
                    dilation: [1, 1],
                    ceil_mode: j["ceil_mode"].as_bool().unwrap(),
                };
                let opts = AvgPoolOpts {
                    count_include_pad: j["count_include_pad"].as_bool().unwrap(),
                    divisor_override: j["divisor_override"].as_u64().map(|d| d as usize),
                };
                let win = |i: usize, len: usize| {
                    avg_windows(
                        len,
                        pool.kernel[i],
                        pool.stride[i],
                        pool.padding[i],
                        pool.ceil_mode,
                        opts.count_include_pad,
                    )
                };
                let (rows, cols) = (win(0, h), win(1, w));
                (Op::AvgPool2d(pool, opts), rows, cols, opts.divisor_override)
            } else {
                assert_eq!(j["op"], "adaptive_avg_pool2d");
                let o = pair(&j["output_size"]);
                (
                    Op::AdaptiveAvgPool2d(o),
                    adaptive_windows(h, o[0]),
                    adaptive_windows(w, o[1]),
                    None,
                )
            };
            Case {
                name: j["name"].as_str().unwrap().to_string(),
                j,
                q,
                op,
                shape,
                x,
                expect,
                rows,
                cols,
                div,
            }
        })
        .collect();
    assert_eq!(v.len(), 10, "the recorded pools of {POOL}");
    v
}

fn model(c: &Case) -> Model {
    let info = TensorInfo {
        shape: c.shape[1..].to_vec(),
        dtype: DType::F32,
    };
    Model::new(
        Requant::InductorX86,
        vec![("x".into(), info)],
        vec!["y".into()],
        vec![
            Node {
                name: "xq".into(),
                op: Op::Quantize(c.q),
                inputs: vec!["x".into()],
            },
            Node {
                name: "y".into(),
                op: c.op.clone(),
                inputs: vec!["xq".into()],
            },
        ],
    )
    .unwrap_or_else(|e| panic!("{}: {e}", c.name))
}

fn input(c: &Case) -> Value {
    Value::F32 {
        data: c.q.dequantize_slice(&c.x),
        shape: c.shape.clone(),
    }
}

/// Bytes of `got` that differ from the compiled output (first printed).
fn mismatches(c: &Case, what: &str, got: &[u8]) -> usize {
    assert_eq!(got.len(), c.expect.len(), "{} ({what})", c.name);
    let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i] != c.expect[i]).collect();
    if let Some(&i) = bad.first() {
        println!(
            "{} ({what}): {} of {} bytes differ; first at {i}: {} vs compiled {}",
            c.name,
            bad.len(),
            got.len(),
            got[i],
            c.expect[i]
        );
    }
    bad.len()
}

fn q_bytes(v: &[Value]) -> Vec<u8> {
    assert_eq!(v.len(), 1);
    match &v[0] {
        Value::Q { data, .. } => data.clone(),
        other => panic!("a float output: {other:?}"),
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Alt {
    Rule,
    Reciprocal,
    ColumnMajor,
    ExactSum,
    ZpBefore,
}

/// The pool by `alt`, computed here from the case's windows.
fn reference(c: &Case, alt: Alt) -> Vec<u8> {
    let (n, ch, h, w) = (c.shape[0], c.shape[1], c.shape[2], c.shape[3]);
    let (s, z) = (c.q.scale, c.q.zero_point);
    let inv = 1.0f32 / s;
    let mut y = Vec::new();
    for plane in c.x.chunks(h * w).take(n * ch) {
        let deq = |iy: usize, ix: usize| (plane[iy * w + ix] as i32 - z) as f32 * s;
        for &(h0, h1, fh) in &c.rows {
            for &(w0, w1, fw) in &c.cols {
                let count = c.div.unwrap_or(fh * fw) as f32;
                let mut sum = 0f32;
                if alt == Alt::ColumnMajor {
                    for ix in w0..w1 {
                        for iy in h0..h1 {
                            sum += deq(iy, ix);
                        }
                    }
                } else {
                    for iy in h0..h1 {
                        for ix in w0..w1 {
                            sum += deq(iy, ix);
                        }
                    }
                }
                if alt == Alt::ExactSum {
                    let mut k = 0i64;
                    for iy in h0..h1 {
                        for ix in w0..w1 {
                            k += plane[iy * w + ix] as i64 - z as i64;
                        }
                    }
                    sum = k as f32 * s;
                }
                let v = if alt == Alt::Reciprocal {
                    sum * (1.0 / count)
                } else {
                    sum / count
                };
                let t = v * inv;
                let r = if alt == Alt::ZpBefore {
                    (t + z as f32).round_ties_even()
                } else {
                    t.round_ties_even() + z as f32
                };
                y.push(r.clamp(0.0, 255.0) as u8);
            }
        }
    }
    y
}

#[test]
fn inductor_pools_separate_the_rule_from_its_alternatives() {
    let mut separated = [0usize; 4];
    for c in cases() {
        assert_eq!(
            mismatches(&c, "reference rule", &reference(&c, Alt::Rule)),
            0
        );
        for (k, (alt, key)) in [
            (Alt::Reciprocal, "reciprocal"),
            (Alt::ColumnMajor, "column_major"),
            (Alt::ExactSum, "exact_sum"),
            (Alt::ZpBefore, "zp_before"),
        ]
        .into_iter()
        .enumerate()
        {
            let bad = mismatches(&c, key, &reference(&c, alt));
            // the count the generator measured against the compiled output
            assert_eq!(
                bad as u64,
                c.j["alternatives"][key].as_u64().unwrap(),
                "{}: {key}",
                c.name
            );
            if c.name.ends_with("_tie") {
                assert!(bad > 0, "{}: {key} not separated", c.name);
            }
            separated[k] += bad;
        }
    }
    println!("alternatives' mismatching bytes (reciprocal, column-major, exact sum, zp before): {separated:?}");
}

#[test]
fn inductor_pools_on_cpu_equal_torch_compile() {
    for c in cases() {
        let m = model(&c);
        let got = q_bytes(&m.run_cpu(&[input(&c)]).unwrap());
        assert_eq!(mismatches(&c, "cpu", &got), 0);
        // the file form: avg_pool2d / adaptive_avg_pool2d under engine inductor_x86
        let back = Model::from_bytes(&m.to_bytes().unwrap()).unwrap();
        assert_eq!(back.engine(), Requant::InductorX86);
        let got = q_bytes(&back.run_cpu(&[input(&c)]).unwrap());
        assert_eq!(mismatches(&c, "cpu, model file", &got), 0);
    }
}

#[test]
fn inductor_pools_on_gpu_equal_torch_compile() {
    let ctx = common::gpu();
    for c in cases() {
        let g = GpuModel::new(&ctx, &model(&c)).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let got = q_bytes(&g.run(&ctx, &[input(&c)]).unwrap());
        assert_eq!(mismatches(&c, "gpu", &got), 0);
    }
}

#[test]
fn inductor_pools_refuse_atens_fallbacks() {
    // past 25 taps Inductor calls ATen's kernels (not measured): refused,
    // naming the engine; the same sizes within 25 taps, or kernel == stride,
    // are accepted
    let q = QParams::new(0.05, 3).unwrap();
    let build = |shape: Vec<usize>, op: Op| {
        Model::new(
            Requant::InductorX86,
            vec![(
                "x".into(),
                TensorInfo {
                    shape,
                    dtype: DType::F32,
                },
            )],
            vec!["y".into()],
            vec![
                Node {
                    name: "xq".into(),
                    op: Op::Quantize(q),
                    inputs: vec!["x".into()],
                },
                Node {
                    name: "y".into(),
                    op,
                    inputs: vec!["xq".into()],
                },
            ],
        )
    };
    let avg = |k: usize, s: usize| {
        Op::AvgPool2d(
            Pool2d {
                kernel: [k, k],
                stride: [s, s],
                padding: [0, 0],
                dilation: [1, 1],
                ceil_mode: false,
            },
            AvgPoolOpts {
                count_include_pad: true,
                divisor_override: None,
            },
        )
    };
    for (shape, op) in [
        (vec![2, 40, 40], Op::AdaptiveAvgPool2d([3, 3])),
        (vec![2, 20, 20], avg(6, 2)),
    ] {
        let name = format!("{op:?}");
        let e = build(shape, op)
            .err()
            .unwrap_or_else(|| panic!("{name} accepted"));
        assert!(
            e.to_string().contains("inductor_x86") && e.to_string().contains("fallback"),
            "{name}: {e}"
        );
    }
    for (shape, op) in [
        (vec![2, 40, 40], Op::AdaptiveAvgPool2d([4, 4])),
        (vec![2, 20, 20], Op::AdaptiveAvgPool2d([7, 6])),
        (vec![2, 20, 20], avg(6, 6)),
        (vec![2, 20, 20], avg(5, 2)),
    ] {
        let name = format!("{op:?}");
        build(shape, op).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
