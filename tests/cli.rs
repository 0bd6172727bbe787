//! The `qfuse` command on the bundled model: each subcommand works, and bad
//! input (missing file, wrong shape, not .npy, wrong dtype) is one clear line
//! on stderr and a non-zero exit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn qfuse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qfuse"))
        .args(args)
        .output()
        .expect("run qfuse")
}

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/digits")
        .join(name)
        .display()
        .to_string()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qfuse-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn expect_error(args: &[&str], needle: &str) {
    let o = qfuse(args);
    let e = stderr(&o);
    assert!(!o.status.success(), "{args:?} succeeded");
    assert!(
        e.contains("qfuse: error:") && e.contains(needle),
        "{args:?}: stderr {e:?} lacks {needle:?}"
    );
    assert_eq!(
        e.lines().filter(|l| l.starts_with("qfuse: error:")).count(),
        1,
        "one error line: {e}"
    );
}

fn read_f32(p: &Path) -> Vec<f32> {
    qfuse::npy::read_f32(p).unwrap().0
}

#[test]
fn info_prints_nodes_weights_and_plan() {
    let o = qfuse(&["info", "digits"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "conv2d",
        "max_pool2d",
        "linear",
        "quint8 scale",
        "weights: int8",
        "planned peak int8",
    ] {
        assert!(s.contains(needle), "info output lacks {needle:?}:\n{s}");
    }
    // The file path works too.
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/digits.safetensors");
    assert!(qfuse(&["info", model.to_str().unwrap()]).status.success());
}

#[test]
fn run_on_gpu_and_cpu_gives_pytorchs_int8_output() {
    let want = read_f32(Path::new(&data("int8_logits.npy")));
    for cpu in [false, true] {
        let out = tmp(if cpu { "cpu.npy" } else { "gpu.npy" });
        let images = data("test_images.npy");
        let mut args = vec![
            "run",
            "digits",
            "--input",
            &images,
            "--output",
            out.to_str().unwrap(),
        ];
        if cpu {
            args.push("--cpu");
        }
        let o = Command::new(env!("CARGO_BIN_EXE_qfuse"))
            .args(&args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let got = read_f32(&out);
        assert_eq!(got.len(), want.len());
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{} output differs from PyTorch",
            if cpu { "CPU" } else { "GPU" }
        );
    }
}

#[test]
fn adapters_lists_and_chooses() {
    let o = qfuse(&["adapters"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.contains("chosen:") && s.contains("packed int8 dot product"),
        "{s}"
    );
}

#[test]
fn bad_input_is_one_clear_error() {
    let out = tmp("never.npy");
    let o = out.to_str().unwrap();
    expect_error(
        &[
            "run",
            "digits",
            "--input",
            "/no/such/file.npy",
            "--output",
            o,
        ],
        "No such file",
    );
    expect_error(
        &[
            "run",
            "/no/such/model.safetensors",
            "--input",
            &data("test_images.npy"),
            "--output",
            o,
        ],
        "model.safetensors",
    );
    expect_error(
        &[
            "run",
            "digits",
            "--input",
            &data("test_labels.npy"),
            "--output",
            o,
        ],
        "expected float32",
    );
    let not_npy = tmp("not.npy");
    std::fs::write(&not_npy, b"hello, not an array").unwrap();
    expect_error(
        &[
            "run",
            "digits",
            "--input",
            not_npy.to_str().unwrap(),
            "--output",
            o,
        ],
        "not a .npy file",
    );
    let wrong = tmp("wrong_shape.npy");
    qfuse::npy::write_f32(&wrong, &[0.5; 2 * 3 * 8 * 8], &[2, 3, 8, 8]).unwrap();
    expect_error(
        &[
            "run",
            "digits",
            "--input",
            wrong.to_str().unwrap(),
            "--output",
            o,
        ],
        "expected [N, 1, 8, 8]",
    );
    expect_error(
        &[
            "info",
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("Cargo.toml")
                .to_str()
                .unwrap(),
        ],
        "bad model file",
    );
    assert!(!out.exists());
}
