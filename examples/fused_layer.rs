//! A float Conv2d + BatchNorm2d + ReLU layer, fused and quantized as
//! PyTorch's `convert_fx` would, run as one int8 dispatch on the default GPU
//! adapter, and checked against the CPU reference (bit for bit) and against
//! the float layer.
//!
//!     cargo run --release --example fused_layer

use qfuse::quant::{default_activation_spec, ObserverSpec};
use qfuse::{
    Activation, BatchNorm, Conv2dGeometry, FloatConv2d, GpuContext, GpuLayer, GpuTensor, QParams,
    Requant,
};

/// A small deterministic generator, so the example prints the same numbers every run.
struct Lcg(u64);
impl Lcg {
    fn uniform(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        // Irwin-Hall approximation: good enough for example data.
        (0..12).map(|_| self.uniform()).sum::<f32>() - 6.0
    }
}

fn observe(spec: &ObserverSpec, xs: &[f32]) -> qfuse::Result<QParams> {
    let (lo, hi) = xs
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    let (scale, zp) = spec.qparams(lo, hi)?;
    QParams::new(scale, zp)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = Lcg(42);
    let (cin, cout, h, w) = (32, 64, 56, 56);
    let geom = Conv2dGeometry::new(cin, cout, [3, 3]).padding([1, 1]);
    let fan_in = (cin * 9) as f32;
    let float_layer = FloatConv2d {
        geometry: geom,
        weight: (0..geom.weight_len())
            .map(|_| rng.normal() / fan_in.sqrt())
            .collect(),
        bias: Some((0..cout).map(|_| 0.1 * rng.normal()).collect()),
        batchnorm: Some(BatchNorm {
            gamma: (0..cout).map(|_| 0.5 + rng.uniform()).collect(),
            beta: (0..cout).map(|_| 0.2 * rng.normal()).collect(),
            running_mean: (0..cout).map(|_| 0.1 * rng.normal()).collect(),
            running_var: (0..cout).map(|_| 0.5 + rng.uniform()).collect(),
            eps: 1e-5,
        }),
        activation: Activation::Relu,
    };
    let shape = [1, cin, h, w];
    let x: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| rng.normal())
        .collect();

    // Calibrate as a MinMax observer would (fbgemm: reduce_range activations).
    let rule = Requant::Fbgemm;
    let spec = default_activation_spec(rule);
    let (fw, fb) = float_layer.fused_weight_bias()?;
    let (y_float, out_shape) = qfuse::cpu::float_conv2d(&geom, &fw, &fb, true, &x, &shape)?;
    let in_q = observe(&spec, &x)?;
    let out_q = observe(&spec, &y_float)?;
    let layer = float_layer.quantize(in_q, out_q, rule)?;

    let ctx = GpuContext::new()?;
    println!("adapter: {}", ctx.report());
    let gpu_layer = GpuLayer::new(&ctx, &layer)?; // int8 weights uploaded once
    let xq = in_q.quantize_slice(&x);
    let x_gpu = GpuTensor::upload(&ctx, &xq, &shape, in_q)?;
    let t = std::time::Instant::now();
    let y_gpu = gpu_layer.run(&ctx, &x_gpu)?.download(&ctx)?;
    let gpu_ms = t.elapsed().as_secs_f64() * 1e3;
    let (y_cpu, _) = qfuse::cpu::run_layer(&layer, &xq, &shape)?;

    let same = y_gpu.iter().zip(&y_cpu).filter(|(a, b)| a == b).count();
    let max_err = y_gpu
        .iter()
        .zip(&y_float)
        .map(|(&q, &f)| (out_q.dequantize(q) - f).abs())
        .fold(0f32, f32::max);
    let (int8_bytes, f32_bytes) = layer.weight_bytes();
    println!("layer: Conv2d({cin}, {cout}, 3x3, padding 1) + BatchNorm2d + ReLU, fused; input {shape:?} -> {out_shape:?}");
    println!(
        "qparams: input {in_q:?}, output {out_q:?}, {} per-channel weight scales",
        layer.weight_scale().len()
    );
    println!(
        "GPU vs CPU reference: {same} of {} outputs equal bit for bit",
        y_cpu.len()
    );
    println!(
        "int8 vs float layer: max |error| {max_err:.5} = {:.2} output steps (scale {:.5})",
        max_err / out_q.scale,
        out_q.scale
    );
    println!(
        "weight memory: int8 {int8_bytes} bytes vs f32 {f32_bytes} bytes ({:.3}x)",
        int8_bytes as f64 / f32_bytes as f64
    );
    println!("one fused dispatch (including upload-free run and readback): {gpu_ms:.1} ms");
    if same != y_cpu.len() {
        return Err(format!("GPU and CPU differ on {} outputs", y_cpu.len() - same).into());
    }
    Ok(())
}
