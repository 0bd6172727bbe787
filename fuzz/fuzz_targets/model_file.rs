//! Any bytes as a model file: loading gives a model or an error, and a model
//! that loads (and is small) runs on the CPU reference or fails with an
//! error, never a panic or an abort. Seed the corpus with
//! `models/digits.safetensors` and `tests/data/fuzz/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qfuse::model::{DType, Model, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Model::from_bytes(data) else {
        return;
    };
    let small = m
        .inputs()
        .iter()
        .all(|(_, i)| i.numel() <= 1 << 16)
        && m.nodes()
            .iter()
            .all(|n| m.info(&n.name).is_some_and(|i| i.numel() <= 1 << 20));
    if !small {
        return;
    }
    let x: Vec<Value> = m
        .inputs()
        .iter()
        .map(|(_, i)| match i.dtype {
            DType::F32 => Value::F32 {
                data: (0..i.numel()).map(|k| (k % 7) as f32 / 3.0 - 1.0).collect(),
                shape: i.batched(1),
            },
            DType::QUInt8(q) => Value::Q {
                data: (0..i.numel()).map(|k| (k * 37 % 256) as u8).collect(),
                shape: i.batched(1),
                q,
            },
        })
        .collect();
    let _ = m.run_cpu(&x);
});
