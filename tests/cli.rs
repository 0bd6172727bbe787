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

// ---- names, shapes, pieces, bad .npy input, atomic output, adapters ----

fn qfuse_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qfuse"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run qfuse")
}

fn fresh_dir(name: &str) -> PathBuf {
    let d = tmp(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn failed_with(o: &Output, needles: &[&str]) -> String {
    let e = stderr(o);
    assert!(!o.status.success(), "succeeded: {e}");
    assert_eq!(
        e.lines().filter(|l| l.starts_with("qfuse: error:")).count(),
        1,
        "one error line: {e}"
    );
    for n in needles {
        assert!(e.contains(n), "stderr lacks {n:?}: {e}");
    }
    e
}

#[test]
fn info_prints_shapes_with_the_batch_dimension() {
    let o = qfuse(&["info", "bundled:digits"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "N is the batch size",
        "input  x                        [N, 1, 8, 8] float32",
        "[N, 16, 8, 8] quint8",
        "[N, 10] float32",
        "activations (batch N = 1)",
    ] {
        assert!(s.contains(needle), "info output lacks {needle:?}:\n{s}");
    }
    let o = qfuse(&["info", "bundled:digits", "--batch", "360"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("activations (batch N = 360)"));
    // Batch 0: says N must be >= 1 (a usage error, exit code 2).
    let o = qfuse(&["info", "bundled:digits", "--batch", "0"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("the batch size N must be >= 1"), "{e}");
    // A batch whose sizes overflow: an error, not a wrapped size.
    let o = qfuse(&["info", "bundled:digits", "--batch", "18446744073709551615"]);
    failed_with(
        &o,
        &["batch 18446744073709551615 makes the activations larger than"],
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains("planned peak"));
    let o = qfuse(&["info", "bundled:digits", "--batch", "1152921504606846976"]);
    failed_with(&o, &["makes the activations larger than"]);
}

#[test]
fn bundled_model_names_are_unambiguous() {
    // `bundled:digits` is the bundled model wherever it runs, even beside a
    // `digits/` folder; the bare `digits` there is the folder, and the error
    // says how to name the bundled model.
    let d = fresh_dir("names-folder");
    std::fs::create_dir(d.join("digits")).unwrap();
    let o = qfuse_in(&d, &["info", "bundled:digits"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("[N, 1, 8, 8]"));
    assert!(!stderr(&o).contains("note:"), "{}", stderr(&o));
    let o = qfuse_in(&d, &["info", "digits"]);
    failed_with(
        &o,
        &[
            "digits: a folder, not a model file",
            "qfuse: hint:",
            "`bundled:digits`",
        ],
    );
    // A file named `digits` is loaded as the file, with a note.
    let d = fresh_dir("names-file");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/digits.safetensors"),
        d.join("digits"),
    )
    .unwrap();
    let o = qfuse_in(&d, &["info", "digits"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o)
            .contains("note: loading the file \"digits\" (the bundled model is `bundled:digits`)"),
        "{}",
        stderr(&o)
    );
    // Nothing named `digits`: the bundled model, with a note.
    let d = fresh_dir("names-none");
    let o = qfuse_in(&d, &["info", "digits"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("so \"digits\" is the bundled model (write `bundled:digits`"),
        "{}",
        stderr(&o)
    );
    // Unknown bundled names and missing files say what exists.
    failed_with(
        &qfuse_in(&d, &["info", "bundled:nope"]),
        &["no bundled model named \"nope\"; the bundled models are: digits"],
    );
    failed_with(
        &qfuse_in(&d, &["info", "nope.safetensors"]),
        &["nope.safetensors", "qfuse: hint:", "bundled:digits"],
    );
}

/// Runs `bundled:digits` on the test images; returns the output and stderr.
fn run_digits(extra: &[&str], out: &Path) -> (Vec<f32>, String) {
    let images = data("test_images.npy");
    let mut args = vec![
        "run",
        "bundled:digits",
        "--input",
        &images,
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = qfuse(&args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    (read_f32(out), stderr(&o))
}

#[test]
fn run_in_pieces_is_bit_exact_and_says_where_and_how_long() {
    let want = read_f32(Path::new(&data("int8_logits.npy")));
    for (extra, place) in [
        (&["--batch-size", "7"][..], "on the GPU ("),
        (
            &["--batch-size", "7", "--cpu"][..],
            "on the CPU reference path",
        ),
        (&["--batch-size", "1000"][..], "on the GPU ("),
    ] {
        let (got, e) = run_digits(extra, &tmp("pieces.npy"));
        assert_eq!(got.len(), want.len());
        let first = got
            .iter()
            .zip(&want)
            .position(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(first, None, "{extra:?}: first difference from PyTorch");
        assert!(e.contains("qfuse: running 360 samples on "), "{e}");
        if !extra.contains(&"--cpu") {
            // The adapter, with its backend and whether it has the packed dot product.
            assert!(e.contains("packed int8 dot product"), "{e}");
        }
        let pieces = if extra[1] == "7" {
            "52 batches of up to 7"
        } else {
            "1 batch of up to 360"
        };
        assert!(
            e.contains("wrote ")
                && e.contains("[360, 10] float32; 360 samples in ")
                && e.contains(" samples/s; ")
                && e.contains(pieces)
                && e.contains(place),
            "{e}"
        );
    }
    let o = qfuse(&[
        "run",
        "bundled:digits",
        "--input",
        "x",
        "--output",
        "y",
        "--batch-size",
        "0",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("the batch size N must be >= 1"));
}

#[test]
fn huge_finite_inputs_run_the_same_on_gpu_and_cpu() {
    // Values near f32::MAX quantize to 0 or 255 on both paths, the same way.
    let mut x = vec![0.25f32; 4 * 64];
    for (i, v) in x.iter_mut().enumerate() {
        *v = match i % 5 {
            0 => 3.4e38,
            1 => -3.4e38,
            2 => f32::MAX,
            3 => -f32::MAX,
            _ => (i % 17) as f32 / 16.0,
        };
    }
    let input = tmp("huge.npy");
    qfuse::npy::write_f32(&input, &x, &[4, 1, 8, 8]).unwrap();
    let mut outs = vec![];
    for cpu in [false, true] {
        let out = tmp(if cpu { "huge_cpu.npy" } else { "huge_gpu.npy" });
        let mut args = vec![
            "run",
            "bundled:digits",
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ];
        if cpu {
            args.push("--cpu");
        }
        let o = qfuse(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        outs.push(read_f32(&out));
    }
    assert_eq!(outs[0].len(), 40);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&outs[0]), bits(&outs[1]), "GPU vs CPU");
}

#[test]
fn bad_npy_input_names_the_file_and_the_element() {
    let d = fresh_dir("bad-npy");
    let out = d.join("out.npy");
    let o = out.to_str().unwrap();
    let run = |input: &Path| {
        qfuse(&[
            "run",
            "bundled:digits",
            "--input",
            input.to_str().unwrap(),
            "--output",
            o,
        ])
    };
    // Trailing bytes after the array.
    let trailing = d.join("trailing.npy");
    qfuse::npy::write_f32(&trailing, &[0.5; 2 * 64], &[2, 1, 8, 8]).unwrap();
    let mut bytes = std::fs::read(&trailing).unwrap();
    bytes.extend_from_slice(&[0u8; 12]);
    std::fs::write(&trailing, bytes).unwrap();
    failed_with(
        &run(&trailing),
        &[
            "trailing.npy",
            "12 bytes of trailing data after the [2, 1, 8, 8] array",
        ],
    );
    // Truncated data.
    let short = d.join("short.npy");
    qfuse::npy::write_f32(&short, &[0.5; 2 * 64], &[2, 1, 8, 8]).unwrap();
    let bytes = std::fs::read(&short).unwrap();
    std::fs::write(&short, &bytes[..bytes.len() - 4]).unwrap();
    failed_with(&run(&short), &["short.npy", "truncated", "needs 512 bytes"]);
    // Non-finite values: the element's flat index and its index.
    for (bad, name) in [
        (f32::NAN, "NaN"),
        (f32::INFINITY, "inf"),
        (f32::NEG_INFINITY, "-inf"),
    ] {
        let nan = d.join("nonfinite.npy");
        let mut x = vec![0.5f32; 3 * 64];
        x[64 + 8 * 2 + 5] = bad;
        qfuse::npy::write_f32(&nan, &x, &[3, 1, 8, 8]).unwrap();
        failed_with(
            &run(&nan),
            &[
                "nonfinite.npy",
                &format!("element 85 (index [1, 0, 2, 5]) is {name}"),
                "finite",
            ],
        );
    }
    // The same in pieces: the index is the element's in the file.
    let nan = d.join("nonfinite.npy");
    let o2 = qfuse(&[
        "run",
        "bundled:digits",
        "--input",
        nan.to_str().unwrap(),
        "--output",
        o,
        "--batch-size",
        "1",
        "--cpu",
    ]);
    failed_with(&o2, &["element 85 (index [1, 0, 2, 5])"]);
    // N = 0.
    let empty = d.join("empty.npy");
    qfuse::npy::write_f32(&empty, &[], &[0, 1, 8, 8]).unwrap();
    failed_with(
        &run(&empty),
        &[
            "empty.npy",
            "holds no sample: N must be >= 1",
            "[N, 1, 8, 8]",
        ],
    );
    // No output file from any of these, not even a temporary one.
    let left: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("out.npy"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // An existing output stays as it was when a run fails.
    qfuse::npy::write_f32(&out, &[1.0, 2.0], &[2]).unwrap();
    failed_with(&run(&empty), &["N must be >= 1"]);
    assert_eq!(read_f32(&out), [1.0, 2.0]);
    // An output folder that does not exist: the error names the output.
    failed_with(
        &qfuse(&[
            "run",
            "bundled:digits",
            "--input",
            &data("test_images.npy"),
            "--output",
            d.join("no/such/dir/y.npy").to_str().unwrap(),
            "--cpu",
        ]),
        &["no/such/dir/y.npy"],
    );
}

#[test]
fn a_killed_run_leaves_no_partial_output() {
    let d = fresh_dir("killed");
    let input = d.join("big.npy");
    let n = 20_000;
    let x: Vec<f32> = (0..n * 64).map(|i| (i % 17) as f32 / 16.0).collect();
    qfuse::npy::write_f32(&input, &x, &[n, 1, 8, 8]).unwrap();
    let out = d.join("out.npy");
    let mut child = Command::new(env!("CARGO_BIN_EXE_qfuse"))
        .args([
            "run",
            "bundled:digits",
            "--cpu",
            "--batch-size",
            "16",
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the run has written part of its output (to the temporary
    // file), then kill it.
    let tmp_file = d.join(format!(".out.npy.{}.tmp", child.id()));
    let t = std::time::Instant::now();
    let header = 128;
    loop {
        let len = std::fs::metadata(&tmp_file).map(|m| m.len()).unwrap_or(0);
        if len > header {
            break;
        }
        assert!(
            t.elapsed().as_secs() < 120,
            "no partial output in {tmp_file:?} after 120 s"
        );
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.exists(), "a killed run left {out:?}");
}

#[test]
fn adapter_errors_name_the_bad_value_and_each_adapter_with_its_backend() {
    let with_env = |vars: &[(&str, &str)], args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_qfuse"));
        c.args(args);
        for (k, v) in vars {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let o = with_env(&[("WGPU_BACKEND", "bogus")], &["adapters"]);
    failed_with(
        &o,
        &[
            "WGPU_BACKEND",
            "\"bogus\"",
            "is not a backend",
            "vulkan",
            "metal",
            "dx12",
            "gl",
        ],
    );
    let o = with_env(&[("WGPU_BACKEND", "vulkan,bogus")], &["adapters"]);
    failed_with(&o, &["\"bogus\" (in WGPU_BACKEND=\"vulkan,bogus\")"]);
    // Adapters exist here (the GPU tests need one): each is listed with its
    // backend, and there is no install advice.
    let o = with_env(&[("WGPU_ADAPTER_NAME", "nonexistent")], &["adapters"]);
    let e = failed_with(
        &o,
        &[
            "WGPU_ADAPTER_NAME=\"nonexistent\" matches no adapter",
            "The adapters wgpu finds: ",
        ],
    );
    assert!(
        ["[Vulkan, ", "[Metal, ", "[Dx12, ", "[Gl, "]
            .iter()
            .any(|b| e.contains(b)),
        "{e}"
    );
    assert!(!e.contains("apt-get") && !e.contains(".ci/run"), "{e}");
    // Hiding every driver: install advice, or (where a driver hides some
    // other way) the list of what remains, never both.
    let o = with_env(
        &[
            ("VK_ICD_FILENAMES", "/nonexistent/icd.json"),
            ("VK_DRIVER_FILES", "/nonexistent/icd.json"),
            ("__EGL_VENDOR_LIBRARY_FILENAMES", "/nonexistent/egl.json"),
        ],
        &["adapters"],
    );
    let e = failed_with(&o, &["no GPU adapter"]);
    assert_ne!(
        e.contains("mesa-vulkan-drivers"),
        e.contains("The adapters wgpu finds: "),
        "{e}"
    );
}

#[test]
fn no_xdg_runtime_dir_noise() {
    // libwayland, asked by Mesa's Vulkan device-select layer, complains when
    // XDG_RUNTIME_DIR is unset; qfuse gives itself a private one then, and
    // removes it at exit.
    let child = Command::new(env!("CARGO_BIN_EXE_qfuse"))
        .env_remove("XDG_RUNTIME_DIR")
        .args(["adapters"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let o = child.wait_with_output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{e}");
    assert!(!e.contains("XDG_RUNTIME_DIR"), "{e}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("chosen: "));
    assert!(!std::env::temp_dir()
        .join(format!("qfuse-runtime-{pid}"))
        .exists());
}
