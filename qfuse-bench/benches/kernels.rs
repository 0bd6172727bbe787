//! Criterion benches of the fused int8 kernel (through `GpuLayer`) and the
//! f32 baselines, tiled and simple (untiled), each as 3 dispatches and as 1
//! fused, on a few layer shapes. Kept short for software adapters. Each iteration is one encode + submit + wait.
//!
//!     cargo bench -p qfuse-bench --bench kernels

use criterion::{criterion_group, criterion_main, Criterion};
use qfuse::{Conv2dGeometry, GpuContext, GpuTensor};
use qfuse_bench::{build_layer, f32_bytes, int8_bytes, random_buffer, Act, F32Mode, Lcg, Op};

fn kernels(c: &mut Criterion) {
    let ctx = match GpuContext::new() {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("no GPU adapter, skipping the kernel benches: {e}");
            return;
        }
    };
    let mut rng = Lcg(7);
    let shapes: [(&str, Conv2dGeometry, [usize; 4]); 3] = [
        (
            "conv3x3_64_28x28",
            Conv2dGeometry::new(64, 64, [3, 3]).padding([1, 1]),
            [1, 64, 28, 28],
        ),
        (
            "conv1x1_256_512_14x14",
            Conv2dGeometry::new(256, 512, [1, 1]),
            [1, 256, 14, 14],
        ),
        (
            "dw3x3_96_28x28",
            Conv2dGeometry::new(96, 96, [3, 3])
                .padding([1, 1])
                .groups(96),
            [1, 96, 28, 28],
        ),
    ];
    let mut group = c.benchmark_group("layer");
    group
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    for (name, geometry, in_shape) in shapes {
        let op = Op::Conv {
            name: name.into(),
            geometry,
            act: Act::Relu,
            linear: false,
        };
        let l = build_layer(&ctx, &op, &mut rng).expect("layer");
        let out_shape = l.int8.layer().output_shape(&in_shape).unwrap();
        let x8 = GpuTensor::from_buffer(
            random_buffer(&ctx, int8_bytes(&in_shape), false, &mut rng),
            &in_shape,
            l.int8.layer().input(),
        )
        .unwrap();
        let y8 = random_buffer(&ctx, int8_bytes(&out_shape), false, &mut rng);
        group.bench_function(format!("{name}/int8_fused"), |b| {
            b.iter(|| {
                let mut enc = ctx.device.create_command_encoder(&Default::default());
                l.int8.encode(&ctx, &mut enc, &x8, &y8).unwrap();
                ctx.submit_and_wait(enc).unwrap();
            })
        });
        let xf = random_buffer(&ctx, f32_bytes(&in_shape), true, &mut rng);
        let yf = random_buffer(&ctx, f32_bytes(&out_shape), true, &mut rng);
        for (mode, what) in [
            (F32Mode::TiledUnfused, "f32_tiled_conv_bn_relu"),
            (F32Mode::TiledFused, "f32_tiled_fused"),
            (F32Mode::Unfused, "f32_simple_conv_bn_relu"),
            (F32Mode::Fused, "f32_simple_fused"),
        ] {
            group.bench_function(format!("{name}/{what}"), |b| {
                b.iter(|| {
                    let mut enc = ctx.device.create_command_encoder(&Default::default());
                    l.f32
                        .encode(&ctx, &mut enc, mode, &xf, &in_shape, &yf)
                        .unwrap();
                    ctx.submit_and_wait(enc).unwrap();
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
