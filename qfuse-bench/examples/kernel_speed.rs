//! Quick wall-clock speed check of the kernels (not a formal benchmark): a
//! 512x512x512 int8 GEMM (linear, batch 512) and two ResNet-like 3x3 convs,
//! with the one-word-per-invocation kernel (`Words`) against the tiled
//! presets (and, with `--depthwise`, a depthwise conv with `Gather` against
//! `Depthwise`). Prints int8 ops/s (2*M*N*K) and the speed-up over `Words`.
//!
//!     cargo run --release --example kernel_speed [-- --runs 5] [--tile TM,TN,KT ...] [--only-custom] [--depthwise]

use std::time::Instant;

use qfuse::gpu::{ConvVariant, TileConfig};
use qfuse::layer::LayerKind;
use qfuse::{
    Activation, Conv2dGeometry, GpuContext, GpuLayer, GpuTensor, QLayer, QParams, Requant,
};
use qfuse_bench::Lcg;

struct Shape {
    name: &'static str,
    kind: LayerKind,
    geom: Conv2dGeometry,
    input: Vec<usize>,
}

fn layer(s: &Shape) -> qfuse::Result<QLayer> {
    let mut rng = Lcg(0x1234_5678);
    let g = s.geom;
    let w: Vec<i8> = (0..g.weight_len()).map(|_| rng.next_u32() as i8).collect();
    let k = g.reduction_len() as f32;
    let (s_in, s_w) = (0.02, 0.01);
    QLayer::new(
        s.kind,
        g,
        w,
        vec![s_w; g.out_channels],
        vec![0.1; g.out_channels],
        QParams::new(s_in, 128)?,
        QParams::new(s_in * s_w * 128.0 * 40.0 * k.sqrt(), 128)?,
        Activation::Relu,
        Requant::Fbgemm,
    )
}

fn time(
    ctx: &GpuContext,
    l: &QLayer,
    v: ConvVariant,
    x: &GpuTensor,
    runs: usize,
) -> qfuse::Result<f64> {
    let g = GpuLayer::with_variant(ctx, l, v)?;
    let out_shape = l.output_shape(x.shape())?;
    let out = GpuTensor::empty(ctx, &out_shape, l.output())?;
    let once = || -> qfuse::Result<()> {
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        g.encode(ctx, &mut enc, x, out.buffer())?;
        ctx.submit_and_wait(enc)
    };
    once()?; // compile + warm up
    let t = Instant::now();
    for _ in 0..runs {
        once()?;
    }
    Ok(t.elapsed().as_secs_f64() / runs as f64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut runs = 5;
    let mut tiles: Vec<TileConfig> = TileConfig::PRESETS.to_vec();
    let mut depthwise = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--runs" => {
                runs = args
                    .get(i + 1)
                    .and_then(|s| s.parse().ok())
                    .ok_or("--runs needs a number")?;
                i += 1;
            }
            "--tile" => {
                let v: Vec<u32> = args
                    .get(i + 1)
                    .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
                    .unwrap_or_default();
                if v.len() != 3 {
                    return Err("--tile expects TM,TN,KT".into());
                }
                tiles.push(TileConfig::new(v[0], v[1], v[2]));
                i += 1;
            }
            "--only-custom" => tiles.retain(|t| !TileConfig::PRESETS.contains(t)),
            "--depthwise" => depthwise = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
        i += 1;
    }
    let ctx = GpuContext::new()?;
    println!("adapter: {}", ctx.report());
    let mut shapes = vec![
        Shape {
            name: "linear 512x512x512",
            kind: LayerKind::Linear,
            geom: Conv2dGeometry::linear(512, 512),
            input: vec![512, 512],
        },
        Shape {
            name: "conv 1x64x56x56 -> 64, 3x3",
            kind: LayerKind::Conv2d,
            geom: Conv2dGeometry::new(64, 64, [3, 3]).padding([1, 1]),
            input: vec![1, 64, 56, 56],
        },
        Shape {
            name: "conv 1x256x14x14 -> 256, 3x3",
            kind: LayerKind::Conv2d,
            geom: Conv2dGeometry::new(256, 256, [3, 3]).padding([1, 1]),
            input: vec![1, 256, 14, 14],
        },
        Shape {
            name: "linear 1x512 -> 512",
            kind: LayerKind::Linear,
            geom: Conv2dGeometry::linear(512, 512),
            input: vec![1, 512],
        },
    ];
    if depthwise {
        shapes.push(Shape {
            name: "depthwise 1x256x28x28, 3x3",
            kind: LayerKind::Conv2d,
            geom: Conv2dGeometry::new(256, 256, [3, 3])
                .padding([1, 1])
                .groups(256),
            input: vec![1, 256, 28, 28],
        });
    }
    for s in &shapes {
        let l = layer(s)?;
        let out = l.output_shape(&s.input)?;
        let m = out[0] * out.get(2).unwrap_or(&1) * out.get(3).unwrap_or(&1);
        let ops =
            2.0 * m as f64 * l.geometry().out_channels as f64 * l.geometry().reduction_len() as f64;
        let data: Vec<u8> = (0..s.input.iter().product::<usize>())
            .map(|i| (i * 37 % 251) as u8)
            .collect();
        let x = GpuTensor::upload(&ctx, &data, &s.input, l.input())?;
        let mut variants: Vec<ConvVariant> = ConvVariant::candidates(&l)
            .into_iter()
            .filter(|v| !matches!(v, ConvVariant::Tiled(_)))
            .collect();
        if l.geometry().groups == 1 {
            variants.extend(tiles.iter().map(|&t| ConvVariant::Tiled(Some(t))));
        }
        let chosen = ConvVariant::choose(&l, &ctx.limits(), ctx.device_type());
        println!(
            "\n{} (M={m}, N={}, K={}; {:.3e} ops), default {:?}",
            s.name,
            l.geometry().out_channels,
            l.geometry().reduction_len(),
            ops,
            chosen
        );
        let mut base = None;
        for v in variants {
            let secs = time(&ctx, &l, v, &x, runs)?;
            let base = *base.get_or_insert(secs);
            println!(
                "  {:<70} {:>8.2} ms {:>8.2e} ops/s  x{:.2}",
                format!("{v:?}"),
                secs * 1e3,
                ops / secs,
                base / secs
            );
        }
    }
    Ok(())
}
