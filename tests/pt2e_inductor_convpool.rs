//! Inductor's global average of a plain conv's f32 output (mnasnet's end under
//! X86InductorQuantizer: `relu(conv(dq(x))) -> mean([2, 3]) -> q -> linear`;
//! `quant::EpilogueForm::OnednnPool`), recorded by `tools/pt2e/gen_inductor_convpool.py`
//! in `tests/data/pt2e/inductor_x86_convpool/<case>` from torch.compile (Inductor,
//! freezing) on an Intel Xeon with AVX-512 VNNI (torch 2.15, torchao 0.18):
//!
//! - the exported model equals the compiled output bit for bit on the CPU and the GPU;
//! - the pooled bytes (`pooled.npy`, recovered by the generator from the identity
//!   head after the mean) equal qfuse's pooled conv on the CPU and the GPU, and the
//!   rule recomputed here from the conv's exact accumulators;
//! - the close alternatives of the rule (the average by the reciprocal
//!   `S * f32(1/HW)`, the pixels summed reversed, column-major or pairwise, the
//!   input scale's reciprocal round trip) each change the number of pooled bytes
//!   `case.json` records, at least one over the cases: the vectors separate them.

mod common;

use std::path::{Path, PathBuf};

use qfuse::model::Node;
use qfuse::ops::Op;
use qfuse::{GpuModel, Model, QLayer, Requant, Value};
use serde_json::Value as Json;

const ROOT: &str = "tests/data/pt2e/inductor_x86_convpool";
const ALTS: [&str; 5] = [
    "reciprocal",
    "reversed",
    "column_major",
    "pairwise",
    "src_round_trip",
];

fn dirs() -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(ROOT)
        .unwrap_or_else(|e| panic!("{ROOT}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").is_file())
        .collect();
    v.sort();
    assert_eq!(v.len(), 3, "the recorded cases of {ROOT}");
    v
}

fn input(d: &Path) -> Value {
    let (data, shape) = qfuse::npy::read_f32(d.join("input.npy")).unwrap();
    Value::F32 { data, shape }
}

fn pooled(d: &Path) -> Vec<u8> {
    let b = std::fs::read(d.join("pooled.npy")).unwrap();
    assert_eq!(&b[..6], b"\x93NUMPY");
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    let h = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
    assert!(h.contains("'|u1'"), "{h}");
    b[10 + hlen..].to_vec()
}

/// The model's nodes up to the pooled conv, and that conv's layer and node.
fn prefix(m: &Model) -> (Vec<Node>, QLayer, Node) {
    let k = m
        .nodes()
        .iter()
        .position(|n| matches!(&n.op, Op::Conv2d(l) if l.global_pool()))
        .expect("a conv2d with a global average");
    let Op::Conv2d(l) = &m.nodes()[k].op else {
        unreachable!()
    };
    assert!(l.sum_input().is_none(), "a plain conv (no sum input)");
    (m.nodes()[..k].to_vec(), (**l).clone(), m.nodes()[k].clone())
}

fn sub_model(m: &Model, nodes: Vec<Node>, out: &str) -> Model {
    Model::new(
        m.engine(),
        m.inputs().to_vec(),
        vec![out.to_string()],
        nodes,
    )
    .unwrap()
}

fn q_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::Q { data, .. } => data.clone(),
        Value::F32 { .. } => panic!("a float value"),
    }
}

/// The pooled bytes by the rule or an alternative, from the conv input bytes.
fn pool_by(l: &QLayer, x: &[u8], shape: &[usize], alt: &str) -> Vec<u8> {
    let (acc, os) = qfuse::ops::conv::conv2d_accumulators(l, x, shape).unwrap();
    let (o, h, w) = (os[1], os[2], os[3]);
    let e = l.epilogue();
    let s_rt = qfuse::quant::onednn_src_scale(l.input().scale);
    let mut y = Vec::new();
    for (i, plane) in acc.chunks(h * w).enumerate() {
        let oc = i % o;
        let t: Vec<f32> = plane
            .iter()
            .map(|&a| {
                if alt == "src_round_trip" {
                    let c = &e.channels()[oc];
                    let x = (a as i32).wrapping_add(c.bias_i32) as f32;
                    ((x * s_rt) * c.mult + c.bias_f32).max(0.0)
                } else {
                    e.pool_value(oc, a as i32, 0)
                }
            })
            .collect();
        let order: Vec<usize> = match alt {
            "reversed" => (0..h * w).rev().collect(),
            "column_major" => (0..w)
                .flat_map(|c| (0..h).map(move |r| r * w + c))
                .collect(),
            _ => (0..h * w).collect(),
        };
        let s = if alt == "pairwise" {
            let mut v = t.clone();
            while v.len() > 1 {
                let mut n: Vec<f32> = v
                    .chunks(2)
                    .filter(|p| p.len() == 2)
                    .map(|p| p[0] + p[1])
                    .collect();
                if v.len() % 2 == 1 {
                    n.push(*v.last().unwrap());
                }
                v = n;
            }
            v[0]
        } else {
            order.iter().fold(0f32, |s, &k| s + t[k])
        };
        if alt == "reciprocal" {
            // the average by the reciprocal: pool_quantize of f32(S * f32(1/HW)) over one pixel
            let m = s * (1.0 / (h * w) as f32);
            y.push(e.pool_quantize(m, 1));
        } else {
            y.push(e.pool_quantize(s, h * w));
        }
    }
    y
}

#[test]
fn inductor_pool_models_equal_torch_compile_on_cpu_and_gpu() {
    let ctx = common::gpu();
    let mut n = 0;
    for d in dirs() {
        let m = Model::load(d.join("model.safetensors")).unwrap();
        assert_eq!(m.engine(), Requant::InductorX86);
        let (expect, _) = qfuse::npy::read_f32(d.join("output.npy")).unwrap();
        let x = input(&d);
        let cpu = m.run_cpu(std::slice::from_ref(&x)).unwrap();
        let g = GpuModel::new(&ctx, &m).unwrap();
        let gpu = g.run(&ctx, std::slice::from_ref(&x)).unwrap();
        for (dev, y) in [("cpu", &cpu[0]), ("gpu", &gpu[0])] {
            let y = y.to_f32();
            assert_eq!(y.len(), expect.len());
            let bad: Vec<usize> = (0..y.len())
                .filter(|&i| y[i].to_bits() != expect[i].to_bits())
                .collect();
            assert!(
                bad.is_empty(),
                "{d:?} [{dev}]: {} of {} differ, first at {}: {} vs compiled {}",
                bad.len(),
                y.len(),
                bad[0],
                y[bad[0]],
                expect[bad[0]]
            );
        }
        // the round trip through the model file keeps the pooled conv
        let m2 = Model::from_bytes(&m.to_bytes().unwrap()).unwrap();
        assert_eq!(m2.run_cpu(std::slice::from_ref(&x)).unwrap(), cpu, "{d:?}");
        n += 1;
    }
    assert_eq!(n, 3);
}

#[test]
fn inductor_pool_rule_and_its_alternatives_on_the_pooled_bytes() {
    let ctx = common::gpu();
    let mut separated = [0usize; ALTS.len()];
    for d in dirs() {
        let m = Model::load(d.join("model.safetensors")).unwrap();
        let case: Json =
            serde_json::from_str(&std::fs::read_to_string(d.join("case.json")).unwrap()).unwrap();
        let want = pooled(&d);
        let x = input(&d);
        let (nodes, l, conv) = prefix(&m);
        // qfuse's pooled conv (CPU and GPU) gives the compiled model's pooled bytes
        let mut upto = nodes.clone();
        upto.push(conv.clone());
        let pm = sub_model(&m, upto, &conv.name);
        let cpu = q_bytes(&pm.run_cpu(std::slice::from_ref(&x)).unwrap()[0]);
        let gpu = q_bytes(
            &GpuModel::new(&ctx, &pm)
                .unwrap()
                .run(&ctx, std::slice::from_ref(&x))
                .unwrap()[0],
        );
        assert_eq!(cpu, want, "{d:?}: CPU pooled bytes");
        assert_eq!(gpu, want, "{d:?}: GPU pooled bytes");
        // the rule and the alternatives from the conv's exact accumulators
        let xm = sub_model(&m, nodes, &conv.inputs[0]);
        let xv = xm.run_cpu(std::slice::from_ref(&x)).unwrap().remove(0);
        let (xb, xs) = (q_bytes(&xv), xv.shape().to_vec());
        assert_eq!(pool_by(&l, &xb, &xs, "rule"), want, "{d:?}: the rule");
        for (k, alt) in ALTS.iter().enumerate() {
            let got = pool_by(&l, &xb, &xs, alt);
            let diff = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            let rec = case["alternatives_pooled_bytes_differing"][alt]
                .as_u64()
                .unwrap() as usize;
            println!(
                "{}: {alt} changes {diff} of {} pooled bytes",
                d.display(),
                want.len()
            );
            assert_eq!(diff, rec, "{d:?}: {alt} (case.json records {rec})");
            separated[k] += diff;
        }
    }
    for (k, alt) in ALTS.iter().enumerate() {
        assert!(
            separated[k] > 0,
            "no recorded case separates the rule from {alt}"
        );
    }
}
