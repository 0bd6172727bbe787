//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod file_edit;

use std::path::Path;

use qfuse::GpuContext;
use safetensors::{Dtype, SafeTensors};

/// The GPU context for tests. Panics with instructions when there is no
/// adapter: a GPU test must never pass without running on one.
pub fn gpu() -> GpuContext {
    match GpuContext::new() {
        Ok(ctx) => {
            eprintln!("GPU adapter: {}", ctx.report());
            ctx
        }
        Err(e) => panic!("this test needs a GPU adapter and found none: {e}"),
    }
}

/// One safetensors file: its JSON metadata entry and typed tensor access.
pub struct TensorFile {
    pub bytes: Vec<u8>,
}

impl TensorFile {
    pub fn open(path: &Path) -> TensorFile {
        TensorFile {
            bytes: std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }
    pub fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("valid safetensors")
    }
    pub fn meta(&self, key: &str) -> serde_json::Value {
        let (_, m) = SafeTensors::read_metadata(&self.bytes).expect("header");
        let s = m
            .metadata()
            .as_ref()
            .and_then(|m| m.get(key))
            .unwrap_or_else(|| panic!("no metadata key {key}"))
            .clone();
        serde_json::from_str(&s).expect("metadata JSON")
    }
    pub fn has(&self, name: &str) -> bool {
        self.st().tensor(name).is_ok()
    }
    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.st()
            .tensor(name)
            .unwrap_or_else(|_| panic!("no tensor {name}"))
            .shape()
            .to_vec()
    }
    fn raw(&self, name: &str, dtype: Dtype) -> Vec<u8> {
        let st = self.st();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("no tensor {name}"));
        assert_eq!(t.dtype(), dtype, "dtype of {name}");
        t.data().to_vec()
    }
    pub fn f32(&self, name: &str) -> Vec<f32> {
        self.raw(name, Dtype::F32)
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    pub fn i32(&self, name: &str) -> Vec<i32> {
        self.raw(name, Dtype::I32)
            .chunks(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    pub fn u8(&self, name: &str) -> Vec<u8> {
        self.raw(name, Dtype::U8)
    }
    pub fn i8(&self, name: &str) -> Vec<i8> {
        self.raw(name, Dtype::I8)
            .into_iter()
            .map(|b| b as i8)
            .collect()
    }
}

/// Index and values of the first difference between two slices, if any.
pub fn first_mismatch<T: PartialEq + Copy + std::fmt::Debug>(
    got: &[T],
    want: &[T],
) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!("length {} vs {}", got.len(), want.len()));
    }
    got.iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .map(|i| format!("index {i}: got {:?}, want {:?}", got[i], want[i]))
}

/// Float comparison by bits (so -0.0 != 0.0 and NaN == NaN of the same bits).
pub fn first_mismatch_bits(got: &[f32], want: &[f32]) -> Option<String> {
    let g: Vec<u32> = got.iter().map(|x| x.to_bits()).collect();
    let w: Vec<u32> = want.iter().map(|x| x.to_bits()).collect();
    first_mismatch(&g, &w).map(|m| {
        let i: usize = m
            .split(':')
            .next()
            .unwrap()
            .trim_start_matches("index ")
            .parse()
            .unwrap_or(0);
        if i < got.len() && i < want.len() {
            format!("index {i}: got {:e}, want {:e}", got[i], want[i])
        } else {
            m
        }
    })
}

/// A small deterministic generator (SplitMix64) for seeded random tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.range(0, xs.len() - 1)]
    }
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
    pub fn i8s(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.next_u64() as i8).collect()
    }
}

/// A `.npy` array: its element type, shape and little-endian bytes.
pub struct Npy {
    pub descr: String,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads a C-order `.npy` file of f4, i4, i1 or u1 elements.
pub fn npy(path: &Path) -> Npy {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..6], b"\x93NUMPY", "{}", path.display());
    let (hlen, start) = if b[6] == 1 {
        (u16::from_le_bytes([b[8], b[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
    };
    let h = std::str::from_utf8(&b[start..start + hlen]).unwrap();
    assert!(h.contains("'fortran_order': False"), "{}", path.display());
    let descr = h
        .split("'descr': '")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    let shape: Vec<usize> = h
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let data = b[start + hlen..].to_vec();
    let size = match descr {
        "<f4" | "<i4" => 4,
        "|i1" | "|u1" => 1,
        d => panic!("{}: dtype {d}", path.display()),
    };
    assert_eq!(data.len(), shape.iter().product::<usize>() * size);
    Npy {
        descr: descr.to_string(),
        shape,
        data,
    }
}

impl Npy {
    pub fn f32(&self) -> Vec<f32> {
        assert_eq!(self.descr, "<f4");
        self.data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    pub fn i32(&self) -> Vec<i32> {
        assert_eq!(self.descr, "<i4");
        self.data
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    pub fn i8(&self) -> Vec<i8> {
        assert_eq!(self.descr, "|i1");
        self.data.iter().map(|&b| b as i8).collect()
    }
    pub fn u8(&self) -> Vec<u8> {
        assert_eq!(self.descr, "|u1");
        self.data.clone()
    }
}

/// A `.npy` file's shape and raw data bytes.
pub fn npy_raw(path: &Path) -> (Vec<usize>, Vec<u8>) {
    let a = npy(path);
    (a.shape, a.data)
}

/// A uint8 `.npy` file's shape and bytes.
pub fn npy_u8(path: &Path) -> (Vec<usize>, Vec<u8>) {
    let a = npy(path);
    assert_eq!(a.descr, "|u1", "{}: not uint8", path.display());
    (a.shape, a.data)
}

/// `x (f32) -> quantize(the layer's input qparams) -> layer`, the layer's
/// output the model's (`"y"`), under the engine `inductor_x86`.
pub fn quantize_conv_model(layer: qfuse::QLayer, in_shape: &[usize]) -> qfuse::Model {
    use qfuse::model::{DType, Node, TensorInfo};
    use qfuse::ops::Op;
    let qi = layer.input();
    let op = match layer.kind() {
        qfuse::LayerKind::Conv2d => Op::Conv2d(Box::new(layer)),
        qfuse::LayerKind::Linear => Op::Linear(Box::new(layer)),
    };
    let node = |name: &str, op: Op, input: &str| Node {
        name: name.into(),
        op,
        inputs: vec![input.into()],
    };
    qfuse::Model::new(
        qfuse::Requant::InductorX86,
        vec![(
            "x".into(),
            TensorInfo {
                shape: in_shape.to_vec(),
                dtype: DType::F32,
            },
        )],
        vec!["y".into()],
        vec![node("xq", Op::Quantize(qi), "x"), node("y", op, "xq")],
    )
    .unwrap()
}

/// A `[h, w]` pair of a case file.
pub fn pair(j: &serde_json::Value) -> [usize; 2] {
    [
        j[0].as_u64().unwrap() as usize,
        j[1].as_u64().unwrap() as usize,
    ]
}

/// A float32 tensor's info of this per-sample shape.
pub fn f32_info(shape: &[usize]) -> qfuse::model::TensorInfo {
    qfuse::model::TensorInfo {
        shape: shape.to_vec(),
        dtype: qfuse::model::DType::F32,
    }
}

/// A graph node.
pub fn node(name: &str, op: qfuse::ops::Op, inputs: &[&str]) -> qfuse::model::Node {
    qfuse::model::Node {
        name: name.into(),
        op,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
    }
}

/// A model with one input and the oracle's f32 output (e.g. torch.compile's),
/// compared bit for bit by [`check_oracle`].
pub struct OracleCase {
    pub name: String,
    pub model: qfuse::Model,
    pub input: qfuse::Value,
    pub expect: Vec<f32>,
}

/// Runs every case with `run` (on `device`) and compares its one output with
/// the oracle's, bit for bit; prints each failing case's first mismatch and
/// the counts, then panics if any failed or an oracle output is all zeros.
pub fn check_oracle(
    device: &str,
    cases: Vec<OracleCase>,
    run: &dyn Fn(&OracleCase) -> Vec<qfuse::Value>,
) {
    let (mut pass, mut fail) = (0, 0);
    for c in cases {
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
