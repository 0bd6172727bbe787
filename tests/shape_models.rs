//! Exported PyTorch models whose shape ops became `gather` nodes
//! (`tests/data/shapes`, see its README): qfuse's CPU and GPU outputs equal
//! PyTorch's int8 outputs bit for bit. Covers chunk, split, transpose,
//! permute, cat on W, H and C, ShuffleNetV2's channel shuffle and an
//! nn.Flatten on the float input.

mod common;

use std::path::{Path, PathBuf};

use common::{first_mismatch_bits, gpu};
use qfuse::{GpuModel, Model, Value};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/shapes")
}

#[test]
fn exported_shape_models_equal_pytorch_on_cpu_and_gpu() {
    let cases = std::fs::read_to_string(dir().join("cases.txt")).unwrap();
    let cases: Vec<&str> = cases.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(cases.len(), 3);
    let ctx = gpu();
    let mut gathers = 0;
    for name in cases {
        let model = Model::load(dir().join(format!("{name}.safetensors"))).unwrap();
        gathers += model
            .nodes()
            .iter()
            .filter(|n| n.op.name() == "gather")
            .count();
        let (x, shape) = qfuse::npy::read_f32(dir().join(format!("{name}.input.npy"))).unwrap();
        let (want, wshape) =
            qfuse::npy::read_f32(dir().join(format!("{name}.expected.npy"))).unwrap();
        assert!(
            want.iter().any(|&v| v != want[0]),
            "{name}: constant output"
        );
        let input = vec![Value::F32 { data: x, shape }];
        let cpu = model.run_cpu(&input).unwrap();
        assert_eq!(cpu[0].shape(), wshape.as_slice(), "{name}");
        if let Some(m) = first_mismatch_bits(&cpu[0].to_f32(), &want) {
            panic!("{name}: the CPU differs from PyTorch at {m}");
        }
        let g = GpuModel::new(&ctx, &model).unwrap();
        let out = g.run(&ctx, &input).unwrap();
        if let Some(m) = first_mismatch_bits(&out[0].to_f32(), &want) {
            panic!("{name}: the GPU differs from PyTorch at {m}");
        }
        println!("{name}: {} outputs bit-exact on CPU and GPU", want.len());
    }
    assert!(gathers >= 12, "only {gathers} gather nodes");
}
