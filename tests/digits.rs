//! The bundled digits model: qfuse's GPU and CPU outputs equal PyTorch's int8
//! outputs bit for bit for every held-out test image, and top-1 is identical.

mod common;

use std::path::Path;

use common::{first_mismatch_bits, gpu};
use qfuse::{GpuModel, Value};

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/digits")
        .join(name)
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |b, (i, &v)| if v > row[b] { i } else { b })
}

fn check(got: &[f32], want: &[f32], labels: &[i64], what: &str) {
    if let Some(m) = first_mismatch_bits(got, want) {
        panic!("{what}: differs from PyTorch's int8 output at {m}");
    }
    let top: Vec<usize> = got.chunks(10).map(argmax).collect();
    let want_top: Vec<usize> = want.chunks(10).map(argmax).collect();
    assert_eq!(top, want_top);
    let correct = top
        .iter()
        .zip(labels)
        .filter(|(p, &l)| **p as i64 == l)
        .count();
    println!(
        "{what}: {} images, all logits bit-exact, accuracy {:.4}",
        labels.len(),
        correct as f64 / labels.len() as f64
    );
    assert!(correct * 10 > labels.len() * 9, "accuracy collapsed");
}

#[test]
fn bundled_model_equals_pytorch_int8_on_cpu_and_gpu() {
    let model = qfuse::bundled::digits_model().unwrap();
    let (images, shape) = qfuse::npy::read_f32(data("test_images.npy")).unwrap();
    let (want, wshape) = qfuse::npy::read_f32(data("int8_logits.npy")).unwrap();
    let (labels, _) = qfuse::npy::read_i64(data("test_labels.npy")).unwrap();
    assert_eq!(wshape, vec![shape[0], 10]);
    assert!(images.iter().any(|&x| x != 0.0));
    let input = vec![Value::F32 {
        data: images.clone(),
        shape: shape.clone(),
    }];

    let cpu = model.run_cpu(&input).unwrap();
    check(&cpu[0].to_f32(), &want, &labels, "CPU");

    let ctx = gpu();
    let g = GpuModel::new(&ctx, &model).unwrap();
    let out = g.run(&ctx, &input).unwrap();
    check(&out[0].to_f32(), &want, &labels, "GPU batch 360");
    // Batch 1 too, image by image for a few.
    for i in [0usize, 17, 359] {
        let one = vec![Value::F32 {
            data: images[i * 64..(i + 1) * 64].to_vec(),
            shape: vec![1, 1, 8, 8],
        }];
        let o = g.run(&ctx, &one).unwrap();
        assert!(
            first_mismatch_bits(&o[0].to_f32(), &want[i * 10..(i + 1) * 10]).is_none(),
            "image {i} at batch 1"
        );
    }
}
