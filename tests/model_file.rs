//! The model file: a round trip keeps every bit, and each kind of bad file is
//! an error that says what is wrong (never a panic).

mod common;

use common::file_edit::{load_err as err_of, node_mut as node, rewrite};
use qfuse::model::{Model, Value};
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value as Json};

fn digits_bytes() -> Vec<u8> {
    qfuse::bundled::DIGITS_MODEL_BYTES.to_vec()
}

#[test]
fn round_trip_keeps_every_bit() {
    let m = qfuse::bundled::digits_model().unwrap();
    let bytes = m.to_bytes().unwrap();
    let m2 = Model::from_bytes(&bytes).unwrap();
    assert_eq!(
        m2.to_bytes().unwrap(),
        bytes,
        "serialize(load(serialize(m))) changed"
    );
    let x: Vec<f32> = (0..2 * 64).map(|i| (i % 17) as f32 / 16.0).collect();
    let input = vec![Value::F32 {
        data: x,
        shape: vec![2, 1, 8, 8],
    }];
    let (a, b) = (m.run_cpu(&input).unwrap(), m2.run_cpu(&input).unwrap());
    assert_eq!(a, b);
    // through the file system too
    let p = std::env::temp_dir().join(format!(
        "qfuse-roundtrip-{}.safetensors",
        std::process::id()
    ));
    m.save(&p).unwrap();
    assert_eq!(Model::load(&p).unwrap().run_cpu(&input).unwrap(), a);
    std::fs::remove_file(p).unwrap();
}

#[test]
fn truncated_file() {
    let b = digits_bytes();
    for cut in [0, 7, 100, b.len() / 2, b.len() - 1] {
        let e = err_of(&b[..cut]);
        assert!(e.contains("not a valid safetensors"), "cut at {cut}: {e}");
    }
}

#[test]
fn corrupted_header_bytes() {
    let mut b = digits_bytes();
    b[12] ^= 0x55; // inside the JSON header
    let e = err_of(&b);
    assert!(e.contains("bad model file"), "{e}");
    let mut b = digits_bytes();
    b[0] = 0xff; // header length
    assert!(err_of(&b).contains("not a valid safetensors"));
}

#[test]
fn wrong_dtype() {
    let b = rewrite(
        &digits_bytes(),
        |_| {},
        |t| {
            let w = t.iter_mut().find(|t| t.0 == "conv1.weight").unwrap();
            w.1 = Dtype::U8;
        },
    );
    let e = err_of(&b);
    assert!(
        e.contains("conv1") && e.contains("dtype U8, expected I8"),
        "{e}"
    );
}

#[test]
fn missing_tensor() {
    let b = rewrite(
        &digits_bytes(),
        |_| {},
        |t| t.retain(|t| t.0 != "conv2.bias"),
    );
    let e = err_of(&b);
    assert!(e.contains("\"conv2.bias\" is missing"), "{e}");
}

#[test]
fn extra_tensor() {
    let b = rewrite(
        &digits_bytes(),
        |_| {},
        |t| t.push(("stray".into(), Dtype::F32, vec![1], vec![0; 4])),
    );
    assert!(err_of(&b).contains("stray"));
}

#[test]
fn dangling_node() {
    let b = rewrite(
        &digits_bytes(),
        |h| node(h, "conv2")["inputs"] = json!(["nope"]),
        |_| {},
    );
    let e = err_of(&b);
    assert!(
        e.contains("conv2") && e.contains("\"nope\"") && e.contains("dangling"),
        "{e}"
    );
}

#[test]
fn cycle() {
    let b = rewrite(
        &digits_bytes(),
        |h| node(h, "conv1")["inputs"] = json!(["conv2"]),
        |_| {},
    );
    let e = err_of(&b);
    assert!(e.contains("cycle"), "{e}");
}

#[test]
fn bad_qparams() {
    for (field, v, needle) in [
        ("scale", json!(-1.0), "scale -1"),
        ("scale", json!(0.0), "scale 0"),
        ("zero_point", json!(300), "zero_point 300"),
        ("scale", json!("x"), "must be a number"),
    ] {
        let b = rewrite(
            &digits_bytes(),
            |h| node(h, "conv2")[field] = v.clone(),
            |_| {},
        );
        let e = err_of(&b);
        assert!(
            e.contains("conv2") && e.contains(needle),
            "{field}={v}: {e}"
        );
    }
    // a per-channel weight scale that is not positive
    let b = rewrite(
        &digits_bytes(),
        |_| {},
        |t| {
            let s = t.iter_mut().find(|t| t.0 == "conv1.weight_scale").unwrap();
            s.3[0..4].copy_from_slice(&(-0.5f32).to_le_bytes());
        },
    );
    let e = err_of(&b);
    assert!(
        e.contains("conv1") && e.contains("weight scale of output channel 0"),
        "{e}"
    );
    // qparams stated on an op that keeps its input's, disagreeing
    let b = rewrite(
        &digits_bytes(),
        |h| {
            let n = node(h, "pool");
            n["scale"] = json!(0.5);
            n["zero_point"] = json!(3);
        },
        |_| {},
    );
    assert!(err_of(&b).contains("keeps its input's"));
}

#[test]
fn unknown_or_misspelled_attributes_name_node_and_attribute() {
    for (n, key) in [
        ("conv2", "strid"),
        ("pool", "ceil_mod"),
        ("fc", "activaton"),
    ] {
        let b = rewrite(&digits_bytes(), |h| node(h, n)[key] = json!(1), |_| {});
        let e = err_of(&b);
        assert!(
            e.contains(&format!("{n:?}")) && e.contains(&format!("unknown attribute {key:?}")),
            "{n}.{key}: {e}"
        );
    }
    // An op without attributes says so.
    let b = rewrite(
        &digits_bytes(),
        |h| {
            let nodes = h["nodes"].as_array_mut().unwrap();
            let d = nodes.iter_mut().find(|n| n["op"] == "dequantize").unwrap();
            d["scael"] = json!(0.5);
        },
        |_| {},
    );
    let e = err_of(&b);
    assert!(
        e.contains("unknown attribute \"scael\" (dequantize takes none)"),
        "{e}"
    );
}

#[test]
fn clamp_attribute_is_checked() {
    for (clamp, needle) in [
        (json!([10, 5]), "0 <= lo <= hi <= 255"),
        (json!([0, 256]), "0 <= lo <= hi <= 255"),
        (json!([1]), "must be [lo, hi]"),
        (json!("relu6"), "must be [lo, hi]"),
    ] {
        let b = rewrite(
            &digits_bytes(),
            |h| {
                h["format_version"] = json!(2);
                node(h, "conv2")["clamp"] = clamp.clone();
            },
            |_| {},
        );
        let e = err_of(&b);
        assert!(e.contains("conv2") && e.contains(needle), "{clamp}: {e}");
    }
    // A version 1 file cannot carry one (a version 1 reader would ignore it).
    let b = rewrite(
        &digits_bytes(),
        |h| node(h, "conv2")["clamp"] = json!([0, 7]),
        |_| {},
    );
    assert!(err_of(&b).contains("needs format_version 2"));
    // A valid clamp loads, narrows the outputs, and is written back.
    let b = rewrite(
        &digits_bytes(),
        |h| {
            h["format_version"] = json!(2);
            node(h, "conv2")["clamp"] = json!([0, 7]);
        },
        |_| {},
    );
    let m = Model::from_bytes(&b).unwrap();
    let again = m.to_bytes().unwrap();
    assert_eq!(
        Model::from_bytes(&again).unwrap().to_bytes().unwrap(),
        again
    );
    assert!(String::from_utf8_lossy(&again).contains("\\\"clamp\\\":[0,7]"));
    let x = vec![Value::F32 {
        data: (0..64).map(|i| (i % 9) as f32 / 8.0).collect(),
        shape: vec![1, 1, 8, 8],
    }];
    let plain = qfuse::bundled::digits_model().unwrap();
    assert_ne!(m.run_cpu(&x).unwrap(), plain.run_cpu(&x).unwrap());
}

#[test]
fn unknown_format_version() {
    let b = rewrite(&digits_bytes(), |h| h["format_version"] = json!(99), |_| {});
    let e = err_of(&b);
    assert!(
        e.contains("format_version 99") && e.contains("version 1"),
        "{e}"
    );
}

#[test]
fn wrong_shapes_and_ops() {
    let b = rewrite(
        &digits_bytes(),
        |_| {},
        |t| {
            let w = t.iter_mut().find(|t| t.0 == "conv2.weight").unwrap();
            w.2 = vec![32, 8, 3, 3]; // C/groups 8 but the input has 16 channels
            w.3.truncate(32 * 8 * 9);
        },
    );
    let e = err_of(&b);
    assert!(e.contains("conv2"), "{e}");
    let b = rewrite(
        &digits_bytes(),
        |h| node(h, "pool")["op"] = json!("frobnicate"),
        |_| {},
    );
    assert!(err_of(&b).contains("unknown op"));
    let b = rewrite(&digits_bytes(), |h| h["engine"] = json!("dnnl"), |_| {});
    assert!(err_of(&b).contains("engine"));
    let b = rewrite(&digits_bytes(), |h| h["engine"] = json!("mkldnn"), |_| {});
    assert!(err_of(&b).contains("engine"));
    let b = rewrite(
        &digits_bytes(),
        |h| h["outputs"] = json!(["nothing"]),
        |_| {},
    );
    assert!(err_of(&b).contains("\"nothing\""));
}

#[test]
fn not_a_model() {
    let b = rewrite(&digits_bytes(), |h| *h = json!({}), |_| {});
    assert!(err_of(&b).contains("no \"format\""));
    assert!(Model::load("/no/such/model.safetensors")
        .unwrap_err()
        .to_string()
        .contains("/no/such/model.safetensors"));
}

/// Seeded random corruptions of a valid file (flipped bytes anywhere, and
/// edits of the JSON header's numbers) load as errors or as valid models,
/// never as a panic.
#[test]
fn random_corruptions_never_panic() {
    let good = digits_bytes();
    let mut state = 0x5eed_u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let (mut errors, mut loaded) = (0, 0);
    for i in 0..400 {
        let mut b = good.clone();
        let flips = 1 + next() % 4;
        for _ in 0..flips {
            // Half the flips land in the header, where the JSON lives.
            let limit = if i % 2 == 0 {
                2000.min(b.len())
            } else {
                b.len()
            };
            let at = (next() as usize) % limit;
            b[at] ^= 1 << (next() % 8);
        }
        match std::panic::catch_unwind(|| Model::from_bytes(&b)) {
            Ok(Ok(m)) => {
                loaded += 1;
                // A model that loads must also run (or fail cleanly) on the CPU.
                let x = vec![Value::F32 {
                    data: vec![0.5; 64],
                    shape: vec![1, 1, 8, 8],
                }];
                let _ = std::panic::catch_unwind(|| m.run_cpu(&x))
                    .unwrap_or_else(|_| panic!("case {i}: run_cpu panicked"));
            }
            Ok(Err(_)) => errors += 1,
            Err(_) => panic!("case {i}: loading a corrupted file panicked"),
        }
    }
    println!("400 corrupted files: {errors} rejected with an error, {loaded} still valid (flips in weight bytes)");
    assert!(errors > 100);
}

/// `x86` (PyTorch's default engine on x86) loads, computes its non-conv ops
/// with fbgemm's arithmetic and its conv2d layers (groups <= 100, no
/// `"requant"` in the file) with oneDNN's epilogue, which on this input gives
/// the same outputs as the fbgemm file (they differ only very near ties), and
/// saves as `x86` again.
#[test]
fn x86_engine_round_trips_with_fbgemm_arithmetic() {
    let fb = digits_bytes();
    let b = rewrite(&fb, |h| h["engine"] = json!("x86"), |_| {});
    let m = Model::from_bytes(&b).unwrap();
    assert_eq!(m.engine(), qfuse::Requant::Fbgemm);
    assert_eq!(m.pytorch_engine(), qfuse::Engine::X86);
    let saved = m.to_bytes().unwrap();
    let (_, meta) = SafeTensors::read_metadata(&saved).unwrap();
    let header: Json = serde_json::from_str(&meta.metadata().as_ref().unwrap()["qfuse"]).unwrap();
    assert_eq!(header["engine"], "x86");
    assert_eq!(
        Model::from_bytes(&saved).unwrap().to_bytes().unwrap(),
        saved
    );
    let x: Vec<f32> = (0..3 * 64)
        .map(|i| ((i * 7) % 23) as f32 / 11.0 - 0.5)
        .collect();
    let input = vec![Value::F32 {
        data: x,
        shape: vec![3, 1, 8, 8],
    }];
    let want = Model::from_bytes(&fb).unwrap().run_cpu(&input).unwrap();
    assert_eq!(m.run_cpu(&input).unwrap(), want);
    // fuse_activations keeps the engine
    let f = qfuse::model::fuse_activations(&m).unwrap();
    assert_eq!(f.pytorch_engine(), qfuse::Engine::X86);
    // an engine that does not compute with the model's arithmetic is refused
    let e = Model::from_bytes(&fb)
        .unwrap()
        .with_pytorch_engine(qfuse::Engine::Qnnpack)
        .unwrap_err()
        .to_string();
    assert!(e.contains("qnnpack"), "{e}");
}

fn layer_rules(m: &Model) -> Vec<qfuse::Requant> {
    m.nodes()
        .iter()
        .filter_map(|n| match &n.op {
            qfuse::model::Op::Conv2d(l) | qfuse::model::Op::Linear(l) => Some(l.requant()),
            _ => None,
        })
        .collect()
}

/// Which rule each conv/linear of an `x86` or `onednn` file follows
/// (`Engine::layer_rule`, PyTorch's dispatch on a Linux CPU with AVX-512
/// VNNI): x86 gives conv2d with groups <= 100 oneDNN's rule and linear
/// fbgemm's; a node's own `"requant"` wins (the exporter writes it, for the
/// CPU the model was exported on); onednn gives every layer oneDNN's rule;
/// the rules survive a save and load; `onednn` is never a model's arithmetic.
#[test]
fn x86_and_onednn_engines_route_conv_and_linear_rules() {
    use qfuse::{Engine, Requant};
    let fb = digits_bytes();
    let (o, f) = (Requant::Onednn, Requant::Fbgemm);
    let x86 = Model::from_bytes(&rewrite(&fb, |h| h["engine"] = json!("x86"), |_| {})).unwrap();
    assert_eq!(layer_rules(&x86), [o, o, o, f]);
    let saved = x86.to_bytes().unwrap();
    assert_eq!(
        layer_rules(&Model::from_bytes(&saved).unwrap()),
        [o, o, o, f]
    );
    // what the exporter writes on a CPU without VNNI: every rule fbgemm's
    let novnni = rewrite(
        &fb,
        |h| {
            h["engine"] = json!("x86");
            for n in h["nodes"].as_array_mut().unwrap() {
                if n["op"] == "conv2d" || n["op"] == "linear" {
                    n["requant"] = json!("fbgemm");
                }
            }
        },
        |_| {},
    );
    let m = Model::from_bytes(&novnni).unwrap();
    assert_eq!(layer_rules(&m), [f, f, f, f]);
    assert_eq!(m.pytorch_engine(), Engine::X86);
    let od = Model::from_bytes(&rewrite(&fb, |h| h["engine"] = json!("onednn"), |_| {})).unwrap();
    assert_eq!(layer_rules(&od), [o, o, o, o]);
    assert_eq!((od.engine(), od.pytorch_engine()), (f, Engine::Onednn));
    // a fbgemm file may name oneDNN's rule per node
    let one = rewrite(&fb, |h| h["nodes"][1]["requant"] = json!("onednn"), |_| {});
    assert_eq!(
        layer_rules(&Model::from_bytes(&one).unwrap())
            .iter()
            .filter(|&&r| r == o)
            .count(),
        1
    );
    assert_eq!(Engine::X86.layer_rule(true, 100), o);
    assert_eq!(Engine::X86.layer_rule(true, 101), f);
    assert_eq!(Engine::X86.layer_rule(false, 1), f);
    assert_eq!(Engine::Onednn.layer_rule(true, 144), o);
    assert_eq!(Engine::Fbgemm.layer_rule(true, 1), f);
    assert_eq!(Engine::Qnnpack.layer_rule(true, 1), Requant::Qnnpack);
    let e = Model::new(Requant::Onednn, vec![], vec![], vec![])
        .unwrap_err()
        .to_string();
    assert!(e.contains("onednn"), "{e}");
}
