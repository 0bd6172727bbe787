//! Classifies the held-out handwritten digits on the GPU with the bundled
//! int8 model (trained and quantized in PyTorch, exported to qfuse), and
//! compares with PyTorch's own float and int8 results.
//!
//!     cargo run --release --example digits

use std::path::Path;
use std::time::Instant;

use qfuse::{GpuContext, GpuModel, Value};

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |b, (i, &v)| if v > row[b] { i } else { b })
}

fn accuracy(logits: &[f32], labels: &[i64]) -> f64 {
    let ok = logits
        .chunks(10)
        .zip(labels)
        .filter(|(r, &l)| argmax(r) as i64 == l)
        .count();
    ok as f64 / labels.len() as f64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/digits");
    let (images, shape) = qfuse::npy::read_f32(dir.join("test_images.npy"))?;
    let (labels, _) = qfuse::npy::read_i64(dir.join("test_labels.npy"))?;
    let (torch_float, _) = qfuse::npy::read_f32(dir.join("float_logits.npy"))?;
    let (torch_int8, _) = qfuse::npy::read_f32(dir.join("int8_logits.npy"))?;
    let n = shape[0];

    let model = qfuse::bundled::digits_model()?;
    let ctx = GpuContext::new()?;
    println!("adapter: {}", ctx.report());
    let gpu = GpuModel::new(&ctx, &model)?; // int8 weights uploaded once
    let input = vec![Value::F32 {
        data: images.clone(),
        shape: shape.clone(),
    }];

    let gpu_out = gpu.run(&ctx, &input)?[0].to_f32();
    let cpu_out = model.run_cpu(&input)?[0].to_f32();

    // Throughput: whole test set as one batch, and one image at a time.
    let reps = 20;
    let t = Instant::now();
    for _ in 0..reps {
        gpu.run(&ctx, &input)?;
    }
    let batched = (reps * n) as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..n {
        let one = vec![Value::F32 {
            data: images[i * 64..(i + 1) * 64].to_vec(),
            shape: vec![1, 1, 8, 8],
        }];
        gpu.run(&ctx, &one)?;
    }
    let single = n as f64 / t.elapsed().as_secs_f64();

    let bits = |a: &[f32]| {
        a.iter()
            .zip(&torch_int8)
            .filter(|(x, y)| x.to_bits() == y.to_bits())
            .count()
    };
    println!("digits test set: {n} images of 8x8, 10 classes");
    println!("accuracy  PyTorch float {:.4} | PyTorch int8 {:.4} | qfuse int8 GPU {:.4} | qfuse int8 CPU {:.4}",
        accuracy(&torch_float, &labels), accuracy(&torch_int8, &labels), accuracy(&gpu_out, &labels), accuracy(&cpu_out, &labels));
    println!(
        "bit-exact logits vs PyTorch int8: GPU {} / {}, CPU {} / {}",
        bits(&gpu_out),
        torch_int8.len(),
        bits(&cpu_out),
        torch_int8.len()
    );
    println!("speed on this adapter: {batched:.0} images/s at batch {n}, {single:.0} images/s at batch 1 (including upload and readback)");
    let (wi, wf) = model.weight_bytes();
    let plan = gpu.plan(&ctx, n)?;
    println!(
        "weight memory: int8 {wi} B vs f32 {wf} B ({:.3}x)",
        wi as f64 / wf as f64
    );
    println!(
        "activation memory (batch {n}): planned peak int8 {} B vs f32 {} B ({:.3}x); without reuse int8 {} B",
        plan.peak_bytes,
        plan.f32_peak_bytes,
        plan.peak_bytes as f64 / plan.f32_peak_bytes as f64,
        plan.total_bytes
    );
    if bits(&gpu_out) != torch_int8.len() {
        return Err("GPU output differs from PyTorch's int8 output".into());
    }
    Ok(())
}
