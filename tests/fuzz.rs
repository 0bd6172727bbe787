//! A seeded, in-repo fuzzer over the model file: mutants of valid files (the
//! bundled digits model and one file of each op in `tests/data/ops/`) go
//! through load + CPU run + GPU run. Every mutant must give an error or a
//! valid run, never a panic (each runs under `catch_unwind`) and never an
//! abort (allocations are size-checked before they are made, so an abort
//! would kill this test). Where both runs succeed, the GPU output must equal
//! the CPU reference bit for bit. `tests/data/fuzz/` holds every crash the
//! fuzzer found, run again by `fuzz_corpus_regressions`.
//!
//! `QFUSE_FUZZ_EXECS` sets the number of mutants (default 3000), `QFUSE_FUZZ_SEED`
//! the seed, and `QFUSE_FUZZ_SAVE=dir` saves each crashing mutant there.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use qfuse::model::{DType, Model, Value};
use qfuse::{GpuContext, GpuModel};
use serde_json::Value as Json;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The seed files: the bundled digits model, and the same model with a
/// branch after `conv3` ([32, 4, 4]) through every other op.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let digits = qfuse::bundled::DIGITS_MODEL_BYTES.to_vec();
    let (mut outer, data) = split(&digits).unwrap();
    let mut g: Json =
        serde_json::from_str(outer["__metadata__"]["qfuse"].as_str().unwrap()).unwrap();
    let extra = serde_json::json!([
        {"name": "ap", "op": "avg_pool2d", "inputs": ["conv3"], "kernel_size": [3, 3], "stride": [1, 1],
         "padding": [1, 1], "ceil_mode": true, "count_include_pad": false, "divisor_override": null},
        {"name": "mp", "op": "max_pool2d", "inputs": ["conv3"], "kernel_size": [3, 3], "stride": [2, 2],
         "padding": [1, 1], "dilation": [1, 1], "ceil_mode": false},
        {"name": "ad", "op": "add", "inputs": ["conv3", "ap"], "activation": "relu", "scale": 0.06, "zero_point": 3},
        {"name": "hs", "op": "hardswish", "inputs": ["ad"], "scale": 0.05, "zero_point": 10},
        {"name": "r6", "op": "relu6", "inputs": ["hs"]},
        {"name": "ht", "op": "hardtanh", "inputs": ["r6"], "min_val": -1.0, "max_val": 2.0},
        {"name": "rl", "op": "relu", "inputs": ["ht"]},
        {"name": "ct", "op": "cat", "inputs": ["rl", "conv3"], "dim": 1, "scale": 0.05, "zero_point": 0},
        {"name": "aap", "op": "adaptive_avg_pool2d", "inputs": ["ct"], "output_size": [3, 2]},
        {"name": "mn", "op": "mean", "inputs": ["aap"], "dims": [2, 3], "keepdim": true},
        {"name": "dq2", "op": "dequantize", "inputs": ["mn"]},
        {"name": "rs", "op": "reshape", "inputs": ["mp"], "shape": [16, 8]},
        {"name": "dq3", "op": "dequantize", "inputs": ["rs"]}
    ]);
    g["nodes"]
        .as_array_mut()
        .unwrap()
        .extend(extra.as_array().unwrap().iter().cloned());
    g["outputs"] = serde_json::json!(["dequantize_7", "dq2", "dq3"]);
    outer["__metadata__"]["qfuse"] = Json::String(g.to_string());
    let all_ops = join(&outer, data);
    vec![
        ("digits".to_string(), digits.clone()),
        ("all_ops".to_string(), all_ops),
    ]
}

/// Values that break shape arithmetic.
fn interesting(rng: &mut Rng) -> Json {
    let ints: &[i128] = &[
        0,
        1,
        2,
        3,
        7,
        100,
        255,
        4096,
        1 << 15,
        256,
        65535,
        65536,
        65537,
        1 << 20,
        1 << 23,
        (1 << 23) + 1,
        1 << 24,
        1_000_000_000,
        (1 << 31) - 1,
        1 << 31,
        (1 << 32) - 1,
        1 << 32,
        (1 << 32) + 1,
        1 << 62,
        (1 << 63) - 1,
        1 << 63,
        (1 << 64) - 1,
        -1,
        -2,
        -(1 << 31),
        -(1 << 63),
    ];
    match rng.below(12) {
        0 => serde_json::json!(1e300),
        1 => serde_json::json!(0.5),
        2 => serde_json::json!(-1e-30),
        _ => {
            let v = ints[rng.below(ints.len())];
            if v < 0 {
                serde_json::json!(v as i64)
            } else {
                serde_json::json!(v as u64)
            }
        }
    }
}

/// Pointers (JSON paths) to every number, and every array, in `v`.
fn paths(v: &Json, at: String, nums: &mut Vec<String>, arrays: &mut Vec<String>) {
    match v {
        Json::Number(_) => nums.push(at),
        Json::Array(a) => {
            arrays.push(at.clone());
            for (i, x) in a.iter().enumerate() {
                paths(x, format!("{at}/{i}"), nums, arrays);
            }
        }
        Json::Object(m) => {
            for (k, x) in m {
                paths(
                    x,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    nums,
                    arrays,
                );
            }
        }
        _ => {}
    }
}

/// The safetensors header and the data after it.
fn split(bytes: &[u8]) -> Option<(Json, &[u8])> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let h = serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    Some((h, &bytes[8 + n..]))
}

fn join(header: &Json, data: &[u8]) -> Vec<u8> {
    let mut h = header.to_string().into_bytes();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

/// One mutant of `seed`.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let Some((mut outer, data)) = split(seed) else {
        return seed.to_vec();
    };
    let mut inner: Json = outer["__metadata__"]["qfuse"]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Json::Null);
    let kind = rng.below(20);
    match kind {
        // numbers of the qfuse graph (1 to 3 of them)
        0..=11 => {
            for _ in 0..1 + rng.below(3) {
                let (mut nums, mut arrays) = (Vec::new(), Vec::new());
                paths(&inner, String::new(), &mut nums, &mut arrays);
                if nums.is_empty() {
                    break;
                }
                let p = &nums[rng.below(nums.len())];
                *inner.pointer_mut(p).unwrap() = interesting(rng);
            }
        }
        // arrays of the qfuse graph: drop, duplicate or empty
        12..=13 => {
            let (mut nums, mut arrays) = (Vec::new(), Vec::new());
            paths(&inner, String::new(), &mut nums, &mut arrays);
            if !arrays.is_empty() {
                let p = arrays[rng.below(arrays.len())].clone();
                let a = inner.pointer_mut(&p).unwrap().as_array_mut().unwrap();
                match rng.below(3) {
                    0 if !a.is_empty() => {
                        let i = rng.below(a.len());
                        a.remove(i);
                    }
                    1 if !a.is_empty() => {
                        let i = rng.below(a.len());
                        let x = a[i].clone();
                        a.insert(i, x);
                    }
                    _ => a.clear(),
                }
            }
        }
        // the safetensors header's own numbers (shapes, offsets)
        14..=15 => {
            let (mut nums, mut arrays) = (Vec::new(), Vec::new());
            paths(&outer, String::new(), &mut nums, &mut arrays);
            if !nums.is_empty() {
                let p = &nums[rng.below(nums.len())];
                *outer.pointer_mut(p).unwrap() = interesting(rng);
            }
            return join(&outer, data);
        }
        // byte flips anywhere
        16..=17 => {
            let mut b = seed.to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(b.len());
                b[at] ^= 1 << rng.below(8);
            }
            return b;
        }
        // truncation
        _ => {
            let mut b = seed.to_vec();
            b.truncate(rng.below(b.len()));
            return b;
        }
    }
    outer["__metadata__"]["qfuse"] = Json::String(inner.to_string());
    join(&outer, data)
}

/// Elements of all the model's tensors for one sample (saturating).
fn total_elements(m: &Model) -> usize {
    let mut t = 0usize;
    let names = m
        .inputs()
        .iter()
        .map(|(n, _)| n.clone())
        .chain(m.nodes().iter().map(|n| n.name.clone()));
    for n in names {
        let e = m
            .info(&n)
            .unwrap()
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .unwrap_or(usize::MAX);
        t = t.saturating_add(e);
    }
    t
}

/// The largest model (elements of all its tensors) the fuzzer runs
/// (`QFUSE_FUZZ_MAX_ELEMS`, default 2^20).
fn max_elements() -> usize {
    std::env::var("QFUSE_FUZZ_MAX_ELEMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 20)
}

/// Seeded inputs of batch 1.
fn inputs(m: &Model, rng: &mut Rng) -> Vec<Value> {
    m.inputs()
        .iter()
        .map(|(_, info)| {
            let n = info.numel();
            let shape = info.batched(1);
            match info.dtype {
                DType::F32 => Value::F32 {
                    data: (0..n)
                        .map(|_| (rng.below(2001) as f32 - 1000.0) / 250.0)
                        .collect(),
                    shape,
                },
                DType::QUInt8(q) => Value::Q {
                    data: (0..n).map(|_| rng.below(256) as u8).collect(),
                    shape,
                    q,
                },
            }
        })
        .collect()
}

#[derive(Default, Debug)]
struct Stats {
    execs: usize,
    loaded: usize,
    cpu_runs: usize,
    gpu_runs: usize,
    gpu_compared: usize,
}

/// Runs one file: load, CPU run, GPU run. `Err` describes a crash (a panic
/// or a GPU/CPU mismatch); errors returned by qfuse are fine.
fn exec(
    bytes: &[u8],
    gpu: Option<&GpuContext>,
    rng: &mut Rng,
    st: &mut Stats,
) -> Result<(), String> {
    st.execs += 1;
    let r = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
        let Ok(m) = Model::from_bytes(bytes) else {
            return Ok(());
        };
        st.loaded += 1;
        // Running is bounded by the model's own tensors; keep the fuzzer fast.
        if total_elements(&m) > max_elements() {
            return Ok(());
        }
        let x = inputs(&m, rng);
        let cpu = m.run_cpu(&x);
        st.cpu_runs += 1;
        if let Some(ctx) = gpu {
            let Ok(g) = GpuModel::new(ctx, &m) else {
                return Ok(());
            };
            let out = g.run(ctx, &x);
            st.gpu_runs += 1;
            if let (Ok(c), Ok(o)) = (&cpu, &out) {
                st.gpu_compared += 1;
                if c != o {
                    return Err(format!("GPU and CPU outputs differ: {c:?} vs {o:?}")
                        .chars()
                        .take(600)
                        .collect());
                }
            }
        }
        Ok(())
    }));
    match r {
        Ok(r) => r,
        Err(p) => Err(format!(
            "panic: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}

fn gpu_context() -> Option<GpuContext> {
    if std::env::var("QFUSE_FUZZ_GPU").is_ok_and(|v| v == "0") {
        println!("fuzz: QFUSE_FUZZ_GPU=0: the GPU runs are skipped");
        return None;
    }
    match GpuContext::new() {
        Ok(c) => Some(c),
        Err(e) => {
            println!("fuzz: no GPU adapter ({e}); the GPU runs are skipped");
            None
        }
    }
}

#[test]
fn fuzz_model_file() {
    let execs: usize = std::env::var("QFUSE_FUZZ_EXECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("QFUSE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9f5e_d00d);
    let save = std::env::var("QFUSE_FUZZ_SAVE").ok().map(PathBuf::from);
    let gpu = gpu_context();
    let seeds = seeds();
    println!(
        "fuzz: seed {seed}, {execs} mutants of {} seed files",
        seeds.len()
    );
    let mut rng = Rng(seed);
    let mut st = Stats::default();
    let mut crashes = Vec::new();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let start = std::time::Instant::now();
    for i in 0..execs {
        let (name, s) = &seeds[i % seeds.len()];
        let mut b = mutate(s, &mut rng);
        // Now and then, mutate a mutant again.
        if rng.below(4) == 0 {
            b = mutate(&b, &mut rng);
        }
        // The GPU runs only on some mutants (lavapipe is slow).
        let g = if i % 2 == 0 { gpu.as_ref() } else { None };
        if let Err(e) = exec(&b, g, &mut rng, &mut st) {
            if let Some(dir) = &save {
                std::fs::create_dir_all(dir).unwrap();
                std::fs::write(dir.join(format!("crash_{i:05}_{name}.safetensors")), &b).unwrap();
            }
            crashes.push(format!("mutant {i} of {name}: {e}"));
        }
    }
    std::panic::set_hook(hook);
    println!(
        "fuzz: {} execs ({} loaded, {} CPU runs, {} GPU runs, {} GPU==CPU comparisons) in {:.1} s; {} crashes",
        st.execs,
        st.loaded,
        st.cpu_runs,
        st.gpu_runs,
        st.gpu_compared,
        start.elapsed().as_secs_f64(),
        crashes.len()
    );
    for c in crashes.iter().take(20) {
        println!("  {c}");
    }
    assert!(
        st.loaded > execs / 20,
        "too few mutants load: the fuzzer tests little"
    );
    assert!(crashes.is_empty(), "{} crashes", crashes.len());
}

/// Every crash the fuzzer found, kept as a file: each gives an error or a
/// valid run, never a panic.
#[test]
fn fuzz_corpus_regressions() {
    let dir = data_dir().join("fuzz");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .filter(|p| {
            // QFUSE_FUZZ_ONLY=name: one file (to see an abort's cause)
            std::env::var("QFUSE_FUZZ_ONLY").map_or(true, |o| {
                p.file_stem().is_some_and(|s| s.to_string_lossy() == o)
            })
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    let gpu = gpu_context();
    let mut st = Stats::default();
    let mut rng = Rng(1);
    let mut failures = Vec::new();
    for f in &files {
        let b = std::fs::read(f).unwrap();
        if let Err(e) = exec(&b, gpu.as_ref(), &mut rng, &mut st) {
            failures.push(format!("{}: {e}", f.display()));
        }
        // Each of these files crashed (a panic, an abort, or GPU != CPU
        // after a wrapped size) before the bounds: now each is rejected at
        // load, by an error naming the bound.
        let name = f.file_name().unwrap().to_string_lossy();
        match catch_unwind(|| Model::from_bytes(&b)) {
            Ok(Err(e)) => {
                let root = e.root_cause();
                let typed = matches!(
                    root,
                    qfuse::Error::Config { .. }
                        | qfuse::Error::TooLarge { .. }
                        | qfuse::Error::Shape { .. }
                );
                println!("{name}: {e}");
                if !typed {
                    failures.push(format!("{name}: untyped error {root:?}"));
                }
            }
            Ok(Ok(_)) => failures.push(format!("{name}: loads")),
            Err(_) => failures.push(format!("{name}: load panicked")),
        }
    }
    println!("fuzz corpus: {} files, {:?}", files.len(), st);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn fuzz_rejoin_keeps_seeds_valid() {
    for (name, s) in seeds() {
        let (h, d) = split(&s).unwrap();
        let b = join(&h, d);
        if let Err(e) = Model::from_bytes(&b).and_then(|m| {
            let x = inputs(&m, &mut Rng(3));
            m.run_cpu(&x)
        }) {
            panic!("{name}: {e}");
        }
    }
}

/// The hand-made crash cases of issue #12 (shape arithmetic that overflowed,
/// tables sized by a huge window), as edits of the all-ops seed: `(file
/// name, JSON pointer into the qfuse graph, new value)`.
fn corpus_cases() -> Vec<(&'static str, Vec<(&'static str, Json)>)> {
    use serde_json::json;
    vec![
        (
            "conv_padding_1e9",
            vec![(
                "/nodes/1/padding",
                json!([1_000_000_000u64, 1_000_000_000u64]),
            )],
        ),
        (
            "conv_padding_2p31",
            vec![("/nodes/1/padding", json!([1u64 << 31, 1u64 << 31]))],
        ),
        (
            "conv_padding_2p62",
            vec![("/nodes/1/padding", json!([1u64 << 62, 1u64 << 62]))],
        ),
        (
            "conv_padding_2p63_wraps",
            vec![("/nodes/1/padding", json!([1u64 << 63, 1u64 << 63]))],
        ),
        (
            "conv_padding_2p14_large_output",
            vec![("/nodes/1/padding", json!([1u64 << 14, 1u64 << 14]))],
        ),
        (
            "conv_stride_2p32",
            vec![("/nodes/2/stride", json!([1u64 << 32, 1]))],
        ),
        (
            "conv_dilation_2p40",
            vec![("/nodes/2/dilation", json!([1u64 << 40, 1]))],
        ),
        (
            "conv_groups_2p63",
            vec![("/nodes/1/groups", json!(1u64 << 63))],
        ),
        (
            "conv_groups_2p62",
            vec![("/nodes/2/groups", json!(1u64 << 62))],
        ),
        (
            "max_pool_kernel_2p31",
            vec![
                ("/nodes/3/kernel_size", json!([1u64 << 31, 1u64 << 31])),
                ("/nodes/3/padding", json!([1u64 << 30, 1u64 << 30])),
            ],
        ),
        (
            "max_pool_kernel_2p16",
            vec![
                ("/nodes/3/kernel_size", json!([1u64 << 16, 1u64 << 16])),
                ("/nodes/3/padding", json!([1u64 << 15, 1u64 << 15])),
            ],
        ),
        (
            "max_pool_padding_2p63",
            vec![("/nodes/3/padding", json!([1u64 << 63, 1u64 << 63]))],
        ),
        (
            "avg_pool_kernel_2p16_table",
            vec![
                ("/nodes/11/kernel_size", json!([1u64 << 16, 1u64 << 16])),
                ("/nodes/11/padding", json!([1u64 << 15, 1u64 << 15])),
            ],
        ),
        (
            "avg_pool_divisor_2p40",
            vec![("/nodes/11/divisor_override", json!(1u64 << 40))],
        ),
        (
            "avg_pool_divisor_2p31",
            vec![("/nodes/11/divisor_override", json!(1u64 << 31))],
        ),
        (
            "adaptive_output_2p31",
            vec![("/nodes/5/output_size", json!([1u64 << 31, 1u64 << 31]))],
        ),
        (
            "adaptive_output_2p16",
            vec![("/nodes/5/output_size", json!([1u64 << 16, 1u64 << 16]))],
        ),
        (
            "adaptive_output_1e9",
            vec![("/nodes/19/output_size", json!([1_000_000_000u64, 1]))],
        ),
        (
            "reshape_wrapping_product",
            vec![("/nodes/22/shape", json!([(1u64 << 63) + 8, 2, 16]))],
        ),
        (
            "reshape_2p32",
            vec![("/nodes/22/shape", json!([1u64 << 32, 1u64 << 32]))],
        ),
        (
            "input_shape_2p40",
            vec![("/inputs/0/shape", json!([1, 1u64 << 40, 1u64 << 40]))],
        ),
        (
            "input_shape_2p63",
            vec![("/inputs/0/shape", json!([1u64 << 63, 2, 8]))],
        ),
        (
            "input_shape_2p31_f32",
            vec![("/inputs/0/shape", json!([1, 1u64 << 16, 1u64 << 15]))],
        ),
    ]
}

/// The hand-made cases in `tests/data/fuzz/` are exactly what
/// [`corpus_cases`] makes from the all-ops seed model (so the committed files
/// and their description here cannot drift apart). To rewrite them after
/// changing a case: `QFUSE_BLESS=1 cargo test --release --test fuzz
/// hand_made_corpus_matches`.
#[test]
fn hand_made_corpus_matches_its_description() {
    let (_, seed) = seeds().into_iter().find(|(n, _)| n == "all_ops").unwrap();
    let (mut outer, data) = split(&seed).unwrap();
    let g0: Json = serde_json::from_str(outer["__metadata__"]["qfuse"].as_str().unwrap()).unwrap();
    let dir = data_dir().join("fuzz");
    let bless = std::env::var_os("QFUSE_BLESS").is_some();
    let mut n = 0;
    for (name, edits) in corpus_cases() {
        let mut g = g0.clone();
        for (p, v) in edits {
            *g.pointer_mut(p).unwrap_or_else(|| panic!("{name}: no {p}")) = v;
        }
        outer["__metadata__"]["qfuse"] = Json::String(g.to_string());
        let bytes = join(&outer, data);
        let path = dir.join(format!("{name}.safetensors"));
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else {
            let committed = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (QFUSE_BLESS=1 writes it)", path.display()));
            assert!(
                committed == bytes,
                "{}: differs from corpus_cases()'s {name:?} (QFUSE_BLESS=1 rewrites it)",
                path.display()
            );
        }
        n += 1;
    }
    assert!(n >= 20, "only {n} hand-made cases");
}

/// The bounds hold for layers built in Rust too: sizes that used to wrap
/// give typed errors.
#[test]
fn geometry_bounds_are_typed_errors() {
    use qfuse::Conv2dGeometry;
    let g = Conv2dGeometry::new(1, 1, [3, 3]).padding([1 << 63, 1]);
    let e = g.validate().unwrap_err();
    assert!(matches!(e, qfuse::Error::Config { .. }), "{e:?}");
    assert!(e.to_string().contains("65536"), "{e}");
    // output_hw itself never wraps, even unvalidated
    let e = g.output_hw(8, 8).unwrap_err();
    assert!(matches!(e, qfuse::Error::Config { .. }), "{e:?}");
    let g = Conv2dGeometry::new(1, 1, [3, 3]).dilation([1 << 40, 1]);
    assert!(g.validate().is_err());
    assert!(g.output_hw(8, 8).is_err());
    // the largest allowed padding works
    let g = Conv2dGeometry::new(1, 1, [1, 1]).padding([1 << 16, 0]);
    g.validate().unwrap();
    assert_eq!(g.output_hw(1, 1).unwrap(), ((1 << 17) + 1, 1));
}
