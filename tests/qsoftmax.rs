//! `qsoftmax` (PyTorch's quantized softmax): PyTorch's vectors
//! (`tests/data/qsoftmax`, `tools/gen_qsoftmax_ops.py`, made on an Intel Xeon
//! with AVX-512 VNNI, torch 2.15) reproduced bit for bit on the CPU and the
//! GPU — QNNPACK's integer softargmax (engine qnnpack, output (1/256, 0): any
//! dim, contiguous and channels-last inputs) and ATen's float path over the
//! last dim (fbgemm, x86, qnnpack with other output qparams); GPU == CPU on
//! seeded random data; the file round trip. ATen's path over a dim other
//! than the last (`atendim_*`, recorded at 1 to 16 intra-op threads) is
//! checked on its f32 softmax too (Sleef's and glibc's `expf` by ATen's
//! thread split); without a thread count it is a typed error.

mod common;

use std::path::Path;

use common::{first_mismatch, first_mismatch_bits, gpu, Rng, TensorFile};
use qfuse::model::{DType, Model, Node, Op, TensorInfo, Value};
use qfuse::{Error, QParams, Requant};

fn model(
    engine: Requant,
    shape: &[usize],
    dim: usize,
    qi: QParams,
    qo: QParams,
) -> qfuse::Result<Model> {
    model_t(engine, shape, dim, qi, qo, None)
}

fn model_t(
    engine: Requant,
    shape: &[usize],
    dim: usize,
    qi: QParams,
    qo: QParams,
    threads: Option<usize>,
) -> qfuse::Result<Model> {
    Model::new(
        engine,
        vec![(
            "x".into(),
            TensorInfo {
                shape: shape.to_vec(),
                dtype: DType::QUInt8(qi),
            },
        )],
        vec!["y".into()],
        vec![Node {
            name: "y".into(),
            op: Op::QSoftmax {
                dim,
                out: qo,
                threads,
            },
            inputs: vec!["x".into()],
        }],
    )
}

fn bytes_of(v: &Value) -> &[u8] {
    match v {
        Value::Q { data, .. } => data,
        Value::F32 { .. } => panic!("float output"),
    }
}

struct Case {
    name: String,
    engine: Requant,
    shape: Vec<usize>,
    dim: usize,
    qi: QParams,
    qo: QParams,
    input: Vec<u8>,
    output: Vec<u8>,
    /// `atendim_*`: ATen's thread count and its f32 softmax.
    threads: Option<usize>,
    floats: Option<Vec<f32>>,
}

impl Case {
    fn model(&self) -> Model {
        model_t(
            self.engine,
            &self.shape[1..],
            self.dim,
            self.qi,
            self.qo,
            self.threads,
        )
        .unwrap()
    }
}

fn vectors() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/qsoftmax");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let f = TensorFile::open(p);
            let s = f.meta("spec");
            let shape: Vec<usize> = serde_json::from_value(s["shape"].clone()).unwrap();
            let d = s["dim"].as_i64().unwrap();
            let d = if d < 0 { d + shape.len() as i64 } else { d } as usize;
            let engine = match s["engine"].as_str().unwrap() {
                "qnnpack" => Requant::Qnnpack,
                _ => Requant::Fbgemm,
            };
            Case {
                name: p.file_name().unwrap().to_string_lossy().into_owned(),
                engine,
                dim: d - 1,
                qi: QParams::new(
                    s["input_scale"].as_f64().unwrap() as f32,
                    s["input_zero_point"].as_i64().unwrap() as i32,
                )
                .unwrap(),
                qo: QParams::new(
                    s["output_scale"].as_f64().unwrap() as f32,
                    s["output_zero_point"].as_i64().unwrap() as i32,
                )
                .unwrap(),
                input: f.u8("input"),
                output: f.u8("output"),
                threads: s["threads"].as_u64().map(|t| t as usize),
                floats: f.has("softmax_f32").then(|| f.f32("softmax_f32")),
                shape,
            }
        })
        .collect()
}

fn input_of(c: &Case) -> Vec<Value> {
    vec![Value::Q {
        data: c.input.clone(),
        shape: c.shape.clone(),
        q: c.qi,
    }]
}

#[test]
fn qsoftmax_pytorch_vectors_cpu() {
    let cases = vectors();
    assert!(cases.len() >= 40, "only {} vectors", cases.len());
    let (mut qnnpack, mut aten) = (0, 0);
    for c in &cases {
        // (a row of one element is 1.0 everywhere)
        assert!(
            c.shape[c.dim + 1] == 1 || c.output.iter().any(|&b| b != c.output[0]),
            "{}: constant output",
            c.name
        );
        let got = c.model().run_cpu(&input_of(c)).unwrap();
        if let Some(mm) = first_mismatch(bytes_of(&got[0]), &c.output) {
            panic!("{} (shape {:?}, dim {}): {mm}", c.name, c.shape, c.dim);
        }
        if c.name.starts_with("qnnpack") {
            qnnpack += 1;
        } else {
            aten += 1;
        }
    }
    assert!(
        qnnpack >= 9 && aten >= 60,
        "{qnnpack} qnnpack, {aten} aten cases"
    );
}

/// [outer, len, inner] of a batched NCHW shape for a softmax over `dim`
/// (an index into the whole shape).
fn split3(shape: &[usize], dim: usize) -> [usize; 3] {
    [
        shape[..dim].iter().product(),
        shape[dim],
        shape[dim + 1..].iter().product(),
    ]
}

#[test]
fn qsoftmax_aten_other_dim_floats() {
    // ATen's f32 softmax over a dim other than the last, as recorded at the
    // case's thread count, bit for bit; and the rule's two parts matter: the
    // same inputs with Sleef's expf everywhere (a 16-wide vector step
    // everywhere), or at another thread count, give other floats.
    let cases: Vec<Case> = vectors()
        .into_iter()
        .filter(|c| c.floats.is_some())
        .collect();
    assert!(cases.len() >= 25, "only {} atendim cases", cases.len());
    let (mut split_matters, mut threads_seen) = (0, std::collections::BTreeSet::new());
    for c in &cases {
        let want = c.floats.as_ref().unwrap();
        let t = c.threads.expect("atendim case without threads");
        threads_seen.insert(t);
        let geo = split3(&c.shape, c.dim + 1);
        let got = qfuse::ops::qsoftmax::aten_dim_floats(&c.input, c.qi, geo, t);
        if let Some(mm) = first_mismatch_bits(&got, want) {
            panic!(
                "{} (shape {:?}, dim {}, {t} threads): f32 softmax: {mm}",
                c.name, c.shape, c.dim
            );
        }
        for other in [1, 2, 3, 64] {
            if other != t
                && qfuse::ops::qsoftmax::aten_dim_floats(&c.input, c.qi, geo, other) != got
            {
                split_matters += 1;
                break;
            }
        }
    }
    assert!(threads_seen.len() >= 5, "thread counts {threads_seen:?}");
    assert!(
        split_matters >= 5,
        "only {split_matters} cases where the thread split changes the floats"
    );
}

#[test]
fn qsoftmax_pytorch_vectors_gpu() {
    let ctx = gpu();
    for c in &vectors() {
        let g = qfuse::GpuModel::new(&ctx, &c.model()).unwrap();
        let got = g.run(&ctx, &input_of(c)).unwrap();
        if let Some(mm) = first_mismatch(bytes_of(&got[0]), &c.output) {
            panic!("{} (shape {:?}, dim {}): GPU: {mm}", c.name, c.shape, c.dim);
        }
    }
}

#[test]
fn qsoftmax_gpu_equals_cpu_random() {
    let ctx = gpu();
    for seed in 0..24u64 {
        let seed = 4100 + seed;
        println!("seed {seed}");
        let mut rng = Rng(seed);
        let shape = match seed % 3 {
            0 => vec![rng.range(1, 40)],
            1 => vec![rng.range(1, 6), rng.range(1, 40)],
            _ => vec![rng.range(1, 7), rng.range(1, 5), rng.range(1, 35)],
        };
        let qnn = seed % 2 == 0;
        let (engine, qo, dim) = if qnn {
            (
                Requant::Qnnpack,
                QParams::new(1.0 / 256.0, 0).unwrap(),
                rng.range(0, shape.len() - 1),
            )
        } else {
            (
                Requant::Fbgemm,
                QParams::new(0.003 + rng.f32().abs() * 0.01, rng.range(0, 30) as i32).unwrap(),
                rng.range(0, shape.len() - 1),
            )
        };
        // ATen's path over another dim: thread counts 1 to 9
        let threads = (!qnn && dim + 1 != shape.len()).then(|| rng.range(1, 9));
        let qi = QParams::new(0.01 + rng.f32().abs() * 0.2, rng.range(0, 255) as i32).unwrap();
        let m = model_t(engine, &shape, dim, qi, qo, threads).unwrap();
        let n = rng.range(1, 4);
        let numel: usize = shape.iter().product();
        let data = rng.bytes(n * numel);
        let mut bshape = vec![n];
        bshape.extend(&shape);
        let input = [Value::Q {
            data,
            shape: bshape.clone(),
            q: qi,
        }];
        let cpu = m.run_cpu(&input).unwrap();
        let g = qfuse::GpuModel::new(&ctx, &m).unwrap();
        let got = g.run(&ctx, &input).unwrap();
        if let Some(mm) = first_mismatch(bytes_of(&got[0]), bytes_of(&cpu[0])) {
            panic!(
                "seed {seed}, shape {bshape:?}, dim {dim}, {engine:?}, threads {threads:?}: {mm}"
            );
        }
    }
}

#[test]
fn qsoftmax_round_trip() {
    let qi = QParams::new(0.05, 7).unwrap();
    let qo = QParams::new(1.0 / 256.0, 0).unwrap();
    let m = model(Requant::Qnnpack, &[5, 3, 4], 0, qi, qo).unwrap();
    let bytes = m.to_bytes().unwrap();
    let m2 = Model::from_bytes(&bytes).unwrap();
    assert_eq!(m2.to_bytes().unwrap(), bytes, "save(load(save(m))) changed");
    let input = [Value::Q {
        data: Rng(5).bytes(2 * 60),
        shape: vec![2, 5, 3, 4],
        q: qi,
    }];
    assert_eq!(m.run_cpu(&input).unwrap(), m2.run_cpu(&input).unwrap());
}

#[test]
fn qsoftmax_aten_rule_needs_threads_for_inner_dims() {
    let qi = QParams::new(0.05, 7).unwrap();
    let qo = QParams::new(1.0 / 256.0, 0).unwrap();
    // ATen's path (fbgemm; qnnpack with other output qparams) over dim 0 of [C, H, W]
    for (engine, q) in [
        (Requant::Fbgemm, qo),
        (Requant::Qnnpack, QParams::new(0.01, 3).unwrap()),
    ] {
        let e = model(engine, &[5, 3, 4], 0, qi, q).unwrap_err();
        assert!(matches!(e.root_cause(), Error::Config { .. }), "{e:?}");
        assert!(e.to_string().contains("not the last"), "{e}");
    }
    // with the thread count PyTorch ran with, ATen's path over dim 0 is exact
    for t in [1, 4] {
        model_t(Requant::Fbgemm, &[5, 3, 4], 0, qi, qo, Some(t)).unwrap();
    }
    // a file with threads 0 is refused by name
    let mut m = model_t(Requant::Fbgemm, &[5, 3, 4], 0, qi, qo, Some(2)).unwrap();
    let bytes = m.to_bytes().unwrap();
    let key = bytes
        .windows(7)
        .position(|w| w == b"threads")
        .expect("threads not written");
    let m2 = Model::from_bytes(&bytes).unwrap();
    assert_eq!(
        m2.to_bytes().unwrap(),
        bytes,
        "threads lost in the round trip"
    );
    // the same file with threads 0 (same length: the header stays valid)
    let mut bad = bytes.clone();
    let two = key + bad[key..].iter().position(|&b| b == b'2').unwrap();
    bad[two] = b'0';
    let e = Model::from_bytes(&bad).unwrap_err();
    assert!(e.to_string().contains("threads"), "{e}");
    m = m2;
    drop(m);
    // a dim past the shape
    let e = model(Requant::Qnnpack, &[5, 3], 2, qi, qo).unwrap_err();
    assert!(e.to_string().contains("not a dimension"), "{e}");
    // qnnpack over dim 0 is fine, fbgemm over the last dim too
    model(Requant::Qnnpack, &[5, 3, 4], 0, qi, qo).unwrap();
    model(Requant::Fbgemm, &[5, 3, 4], 2, qi, qo).unwrap();
}

#[test]
fn qsoftmax_aten_split_reaches_the_bytes() {
    // A crafted case where Sleef's and glibc's expf give different output
    // bytes, so the GPU must pick each position's exp as ATen's thread split
    // does: per-sample [2, 1, 20], softmax over dim 0 (inner 20): with one
    // thread positions 0..16 take the vector step (Sleef), 16..20 the scalar
    // tail (glibc); with 3 threads (chunks of 14 over 2 samples) all of them
    // take the tail. Channel 0 holds the max byte, channel 1 byte `b`.
    use qfuse::ops::qsoftmax::{glibc_expf, sleef_expf_u10};
    let qi = QParams::new(0.0625, 0).unwrap();
    let (m, b) = (
        255u8,
        (0..255u8)
            .find(|&b| {
                let d = 0.0625 * b as f32 - 0.0625 * 255.0;
                let (s, g) = (sleef_expf_u10(d), glibc_expf(d));
                s / (1.0 + s) != g / (1.0 + g)
            })
            .expect("no argument where the two expf differ"),
    );
    let d = 0.0625 * b as f32 - 0.0625 * 255.0;
    let fs = sleef_expf_u10(d) / (1.0 + sleef_expf_u10(d));
    let fg = glibc_expf(d) / (1.0 + glibc_expf(d));
    // an output scale whose 1/s puts a rounding boundary between fs and fg
    let mut s_out = fs.max(fg) / 200.5;
    let mut found = None;
    for _ in 0..4096 {
        let inv = 1.0f32 / s_out;
        let (a, c) = ((fs * inv).round_ties_even(), (fg * inv).round_ties_even());
        if a != c && a < 250.0 {
            found = Some(s_out);
            break;
        }
        s_out = f32::from_bits(s_out.to_bits() + 1);
    }
    let qo = QParams::new(found.expect("no separating output scale"), 0).unwrap();
    let mut data = Vec::new();
    for _ in 0..2 {
        data.extend(std::iter::repeat_n(m, 20));
        data.extend(std::iter::repeat_n(b, 20));
    }
    let input = [Value::Q {
        data,
        shape: vec![2, 2, 1, 20],
        q: qi,
    }];
    let ctx = gpu();
    for threads in [1usize, 3] {
        let mdl = model_t(Requant::Fbgemm, &[2, 1, 20], 0, qi, qo, Some(threads)).unwrap();
        let cpu = mdl.run_cpu(&input).unwrap();
        let y = bytes_of(&cpu[0]);
        // sample 0, channel 1: positions 0..16 and 16..20
        let (vec_byte, tail_byte) = (y[20], y[36]);
        if threads == 1 {
            assert_ne!(
                vec_byte, tail_byte,
                "the crafted case does not separate Sleef from glibc"
            );
        } else {
            assert_eq!(
                vec_byte, tail_byte,
                "3 threads: every position is in a tail"
            );
        }
        let g = qfuse::GpuModel::new(&ctx, &mdl).unwrap();
        let got = g.run(&ctx, &input).unwrap();
        if let Some(mm) = first_mismatch(bytes_of(&got[0]), y) {
            panic!("{threads} threads: GPU vs CPU: {mm}");
        }
    }
}

/// `glibc_expf` against glibc 2.36's own `expf` (`__expf_fma`) on 68,362
/// arguments from -0 down to -110, recorded by `tools/gen_glibc_expf.py`
/// (every 16411th f32 bit pattern, the argument where glibc's SSE2 and FMA
/// variants differ, the range's edges). The whole range was compared once on
/// the recording machine: all 1,121,714,177 arguments equal.
#[test]
fn glibc_expf_equals_recorded_glibc() {
    use qfuse::ops::qsoftmax::glibc_expf;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/qsoftmax/glibc_expf.bin");
    let raw = std::fs::read(&path).unwrap();
    assert_eq!(raw.len() % 8, 0, "{}: not u32 pairs", path.display());
    let word = |i: usize| u32::from_le_bytes(raw[i..i + 4].try_into().unwrap());
    let n = raw.len() / 8;
    assert!(n > 60_000, "only {n} recorded arguments");
    let mut fma_arg = false;
    for k in 0..n {
        let (x, y) = (word(8 * k), word(8 * k + 4));
        fma_arg |= x == 0xc27c_65d9;
        let got = glibc_expf(f32::from_bits(x)).to_bits();
        assert_eq!(
            got,
            y,
            "glibc_expf({:e} = {x:#010x}): got {got:#010x}, glibc {y:#010x}",
            f32::from_bits(x)
        );
    }
    assert!(fma_arg, "the SSE2/FMA argument is not recorded");
}
