//! Whole torchvision models quantized by ONNX Runtime's `quantize_static`
//! (made by `tools/onnx/zoo_onnx.py`'s recipe; too large to commit): each
//! lowers to the kernel types of the numpy reference's fused graph recorded in
//! `tests/data/onnx/zoo_matrix.json`, or, where ORT runs float ops between
//! quantized ones (int8-activation QDQ convolutions, shufflenet's ReduceMean),
//! is refused naming such a node. A tool run by hand from a checkout (it needs
//! the models and ORT's outputs, which CI does not have):
//!
//! ```sh
//! cargo run --release --example onnx_zoo -- /tmp/zoo
//! QFUSE_ONNX_ZOO_OUT=/tmp/zoo_out cargo run --release --example onnx_zoo -- /tmp/zoo
//! ```
//!
//! Files `<model>_<QDQ|QOperator>_<u8|s8>_<pc|pt>.onnx`; with `QFUSE_ONNX_ZOO_OUT`
//! (ORT's `<tag>.input.npy` / `<tag>.output.npy`) the reference also runs each
//! lowered model and must equal ORT bit for bit. Panics (exit code 101) on the
//! first model that does not.

use std::path::{Path, PathBuf};

use qfuse::onnx::{reference, OnnxGraph};

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .or_else(|| std::env::var("QFUSE_ONNX_ZOO_DIR").ok())
            .expect("usage: onnx_zoo ZOO_DIR (or QFUSE_ONNX_ZOO_DIR)"),
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx/zoo_matrix.json");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("zoo_matrix.json"))
            .expect("json");
    let (mut lowered, mut refused) = (0, 0);
    for r in m["results"].as_array().expect("results") {
        let tag = format!(
            "{}_{}_{}_{}",
            r["model"].as_str().expect("model"),
            r["format"].as_str().expect("format"),
            r["act"].as_str().expect("act"),
            if r["per_channel"].as_bool().expect("pc") {
                "pc"
            } else {
                "pt"
            }
        );
        let reference: std::collections::BTreeSet<String> = r["reference_ops"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let float_between = reference.contains("ReduceMean");
        let float_conv = r["reference"].as_str().unwrap_or("").contains("float Conv");
        let t0 = std::time::Instant::now();
        let result = OnnxGraph::load(dir.join(format!("{tag}.onnx"))).and_then(|g| g.lower());
        let ms = t0.elapsed().as_millis();
        match result {
            Ok(l) => {
                assert!(
                    !float_between && !float_conv,
                    "{tag}: lowered, but ORT runs float ops there"
                );
                let mut got: std::collections::BTreeSet<String> =
                    l.kernel_signature().into_iter().collect();
                let mut want = reference.clone();
                got.remove("Transpose");
                want.remove("Transpose");
                assert_eq!(got, want, "{tag}");
                // QFUSE_ONNX_ZOO_OUT: ORT's output on zoo_onnx.py's test image
                // (<tag>.input.npy, <tag>.output.npy), where available
                let mut exact = String::new();
                if let Ok(out) = std::env::var("QFUSE_ONNX_ZOO_OUT") {
                    let out = PathBuf::from(out);
                    let x =
                        qfuse::npy::read_tensor(out.join(format!("{tag}.input.npy"))).expect("npy");
                    let want = qfuse::npy::read_tensor(out.join(format!("{tag}.output.npy")))
                        .expect("npy");
                    let t1 = std::time::Instant::now();
                    let y = reference::run(&l, &[x]).unwrap_or_else(|e| panic!("{tag}: {e}"));
                    let (g, w) = (y[0].bits(), want.bits());
                    let diff = (0..w.len()).filter(|&i| g[i] != w[i]).count();
                    assert_eq!(diff, 0, "{tag}: {diff}/{} outputs differ from ORT", w.len());
                    exact = format!(
                        ", reference bit-exact with ORT ({} ms)",
                        t1.elapsed().as_millis()
                    );
                }
                println!(
                    "{tag}: {} ops, {ms} ms{exact}: {}",
                    l.nodes.len(),
                    got.into_iter().collect::<Vec<_>>().join(" ")
                );
                lowered += 1;
            }
            Err(e) => {
                // the refusal names a float node ORT really runs in float there
                let msg = e.to_string();
                let op = msg
                    .split("ORT runs this ")
                    .nth(1)
                    .and_then(|t| t.split(" in float").next())
                    .unwrap_or("");
                let ort_float: Vec<&str> = r["ort_ops"]
                    .as_array()
                    .expect("ort_ops")
                    .iter()
                    .filter_map(|v| v.as_str())
                    .filter(|o| !o.contains("::") || o.starts_with("com.microsoft.nchwc::"))
                    .map(|o| o.rsplit("::").next().unwrap_or(o))
                    .collect();
                let ok = if float_conv {
                    ort_float.contains(&op)
                } else {
                    float_between && op == "ReduceMean"
                };
                assert!(
                    ok,
                    "{tag}: unexpected error: {msg} (ORT's float ops {ort_float:?})"
                );
                println!("{tag}: refused ({ms} ms): {msg}");
                refused += 1;
            }
        }
    }
    println!("{lowered} lowered, {refused} refused");
    assert_eq!(lowered + refused, 48);
}
