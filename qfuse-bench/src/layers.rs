//! One conv/linear layer of a benchmark network in both forms: fused int8
//! through [`GpuLayer`], and the f32 baseline (`shaders/conv2d_f32.wgsl`:
//! conv, BatchNorm and ReLU as up to three dispatches, or one fused).

use qfuse::gpu::{dispatch_size, layout, CustomKernel};
use qfuse::{
    Activation, BatchNorm, Conv2dGeometry, Error, FloatConv2d, FloatLinear, GpuContext, GpuLayer,
    QLayer, QParams, Requant, Result,
};
use wgpu::util::DeviceExt;

use crate::networks::{f32_bytes, Op};
use crate::rng::Lcg;

/// `shaders/conv2d_f32.wgsl`: the float baseline (f32 conv, batchnorm, relu; NHWC).
pub const F32_KERNEL: CustomKernel<'static> = CustomKernel {
    name: "conv2d_f32.wgsl",
    source: include_str!("../shaders/conv2d_f32.wgsl"),
};

/// Uniform block of `shaders/conv2d_f32.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct F32Params {
    pub n: u32,
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub o: u32,
    pub o4: u32,
    pub oh: u32,
    pub ow: u32,
    pub kh: u32,
    pub kw: u32,
    pub stride_h: u32,
    pub stride_w: u32,
    pub pad_h: u32,
    pub pad_w: u32,
    pub cg: u32,
    pub og: u32,
    pub total: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

/// One conv/linear layer in both forms.
pub struct BenchLayer {
    pub name: String,
    pub geometry: Conv2dGeometry,
    pub linear: bool,
    pub relu: bool,
    pub has_bn: bool,
    pub int8: GpuLayer,
    pub f32: F32Layer,
}

/// The float layer on the GPU: raw weights + BN (unfused) and folded weights (fused).
pub struct F32Layer {
    geometry: Conv2dGeometry,
    relu: bool,
    has_bn: bool,
    w_raw: wgpu::Buffer,
    b_raw: wgpu::Buffer,
    bn: wgpu::Buffer,
    w_fused: wgpu::Buffer,
    b_fused: wgpu::Buffer,
    dummy: wgpu::Buffer,
    /// Parameter count of the fused float layer (weights + bias).
    pub params: usize,
}

fn storage(ctx: &GpuContext, data: &[f32]) -> wgpu::Buffer {
    let mut v = data.to_vec();
    while v.len() < 4 || !v.len().is_multiple_of(4) {
        v.push(0.0);
    }
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("qfuse f32"),
            contents: bytemuck::cast_slice(&v),
            usage: wgpu::BufferUsages::STORAGE,
        })
}

/// `[O, C/g, kh, kw]` to `[kh][kw][C/g][O]`.
fn to_khwco(g: &Conv2dGeometry, w: &[f32]) -> Vec<f32> {
    let (o, cg, [kh, kw]) = (g.out_channels, g.cin_per_group(), g.kernel);
    let mut out = vec![0f32; w.len()];
    for oc in 0..o {
        for ci in 0..cg {
            for ky in 0..kh {
                for kx in 0..kw {
                    out[((ky * kw + kx) * cg + ci) * o + oc] =
                        w[((oc * cg + ci) * kh + ky) * kw + kx];
                }
            }
        }
    }
    out
}

/// Which f32 kernel to record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum F32Mode {
    /// Conv, then BatchNorm, then ReLU: up to 3 dispatches.
    Unfused,
    /// One dispatch: BN folded into the weights, ReLU in the epilogue.
    Fused,
}

impl F32Layer {
    /// Number of dispatches a mode records.
    pub fn dispatches(&self, mode: F32Mode) -> usize {
        match mode {
            F32Mode::Fused => 1,
            F32Mode::Unfused => 1 + self.has_bn as usize + self.relu as usize,
        }
    }

    fn params(&self, in_shape: &[usize]) -> Result<(F32Params, Vec<usize>)> {
        let g = &self.geometry;
        let (n, c, h, w) = layout::nchw(in_shape)?;
        if !g.out_channels.is_multiple_of(4) {
            return Err(Error::Config {
                what: "f32 baseline".into(),
                detail: "output channels must be a multiple of 4".into(),
            });
        }
        let (oh, ow) = g.output_hw(h, w)?;
        let o4 = g.out_channels / 4;
        let p = F32Params {
            n: n as u32,
            c: c as u32,
            h: h as u32,
            w: w as u32,
            o: g.out_channels as u32,
            o4: o4 as u32,
            oh: oh as u32,
            ow: ow as u32,
            kh: g.kernel[0] as u32,
            kw: g.kernel[1] as u32,
            stride_h: g.stride[0] as u32,
            stride_w: g.stride[1] as u32,
            pad_h: g.padding[0] as u32,
            pad_w: g.padding[1] as u32,
            cg: g.cin_per_group() as u32,
            og: g.cout_per_group() as u32,
            total: (n * oh * ow * o4) as u32,
            ..Default::default()
        };
        let out = if in_shape.len() == 2 {
            vec![n, g.out_channels]
        } else {
            vec![n, g.out_channels, oh, ow]
        };
        Ok((p, out))
    }

    /// Records the layer (NHWC f32 `input` of logical NCHW shape `in_shape`
    /// into `output`).
    pub fn encode(
        &self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        mode: F32Mode,
        input: &wgpu::Buffer,
        in_shape: &[usize],
        output: &wgpu::Buffer,
    ) -> Result<()> {
        let (p, out_shape) = self.params(in_shape)?;
        if output.size() < f32_bytes(&out_shape) {
            return Err(Error::Shape {
                what: "f32 output buffer".into(),
                detail: format!("{} bytes for {out_shape:?}", output.size()),
            });
        }
        let uniform = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("qfuse f32 params"),
                contents: bytemuck::bytes_of(&p),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let (gx, gy) = dispatch_size(ctx, p.total.div_ceil(64))?;
        let fused = mode == F32Mode::Fused;
        let mut dispatch = |op: u32,
                            relu: bool,
                            x: &wgpu::Buffer,
                            w: &wgpu::Buffer,
                            ch: &wgpu::Buffer|
         -> Result<()> {
            let pipeline = ctx.custom_pipeline(
                F32_KERNEL,
                &[("WG", 64.0), ("OP", op as f64), ("RELU", relu as u8 as f64)],
            )?;
            let bind = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("qfuse f32"),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: uniform.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: x.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: w.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: ch.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 4,
                        resource: output.as_entire_binding(),
                    },
                ],
            });
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("qfuse f32"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(gx, gy, 1);
            Ok(())
        };
        if fused {
            dispatch(0, self.relu, input, &self.w_fused, &self.b_fused)?;
        } else {
            dispatch(0, false, input, &self.w_raw, &self.b_raw)?;
            if self.has_bn {
                dispatch(1, false, &self.dummy, &self.dummy, &self.bn)?;
            }
            if self.relu {
                dispatch(2, false, &self.dummy, &self.dummy, &self.dummy)?;
            }
        }
        Ok(())
    }
}

/// Builds a layer with random weights and BatchNorm, quantized (fbgemm rule)
/// for the int8 path and kept in f32 for the baseline.
pub fn build_layer(ctx: &GpuContext, op: &Op, rng: &mut Lcg) -> Result<BenchLayer> {
    let Op::Conv {
        name,
        geometry: g,
        linear,
        ..
    } = op
    else {
        return Err(Error::Config {
            what: "bench layer".into(),
            detail: "not a conv/linear step".into(),
        });
    };
    let (g, relu, linear) = (*g, op.relu(), *linear);
    let fan_in = g.reduction_len() as f32;
    let weight: Vec<f32> = (0..g.weight_len())
        .map(|_| rng.normal() / fan_in.sqrt())
        .collect();
    let o = g.out_channels;
    let act = if relu {
        Activation::Relu
    } else {
        Activation::None
    };
    let input = QParams::new(0.04, 3)?;
    let output = QParams::new(0.05, if relu { 0 } else { 128 })?;
    let (qlayer, w_raw, b_raw, bn, w_f, b_f, has_bn): (QLayer, _, _, _, _, _, _) = if linear {
        let bias: Vec<f32> = (0..o).map(|_| 0.1 * rng.normal()).collect();
        let fl = FloatLinear {
            in_features: g.in_channels,
            out_features: o,
            weight: weight.clone(),
            bias: Some(bias.clone()),
            activation: act,
        };
        let q = fl.quantize(input, output, Requant::Fbgemm)?;
        (
            q,
            weight.clone(),
            bias.clone(),
            vec![0f32; 2 * o],
            weight,
            bias,
            false,
        )
    } else {
        let bnp = BatchNorm {
            gamma: (0..o).map(|_| 0.5 + rng.uniform()).collect(),
            beta: (0..o).map(|_| 0.2 * rng.normal()).collect(),
            running_mean: (0..o).map(|_| 0.1 * rng.normal()).collect(),
            running_var: (0..o).map(|_| 0.5 + rng.uniform()).collect(),
            eps: 1e-5,
        };
        let fc = FloatConv2d {
            geometry: g,
            weight: weight.clone(),
            bias: None,
            batchnorm: Some(bnp.clone()),
            activation: act,
        };
        let q = fc.quantize(input, output, Requant::Fbgemm)?;
        let (wf, bf) = fc.fused_weight_bias()?;
        let scale: Vec<f32> = (0..o)
            .map(|c| bnp.gamma[c] / (bnp.running_var[c] + bnp.eps).sqrt())
            .collect();
        let shift: Vec<f32> = (0..o)
            .map(|c| bnp.beta[c] - bnp.running_mean[c] * scale[c])
            .collect();
        let mut bn = scale;
        bn.extend(shift);
        (q, weight, vec![0f32; o], bn, wf, bf, true)
    };
    let f = F32Layer {
        geometry: g,
        relu,
        has_bn,
        w_raw: storage(ctx, &to_khwco(&g, &w_raw)),
        b_raw: storage(ctx, &b_raw),
        bn: storage(ctx, &bn),
        w_fused: storage(ctx, &to_khwco(&g, &w_f)),
        b_fused: storage(ctx, &b_f),
        dummy: storage(ctx, &[0.0; 4]),
        params: g.weight_len() + o,
    };
    let int8 = GpuLayer::new(ctx, &qlayer)?;
    Ok(BenchLayer {
        name: name.clone(),
        geometry: g,
        linear,
        relu,
        has_bn,
        int8,
        f32: f,
    })
}

impl BenchLayer {
    /// Multiply-accumulates for a batch of `n` at input `in_shape` (per image).
    pub fn macs(&self, n: usize, in_shape: &[usize]) -> u64 {
        let g = &self.geometry;
        let (oh, ow) = if self.linear {
            (1, 1)
        } else {
            g.output_hw(in_shape[1], in_shape[2]).unwrap()
        };
        (n * oh * ow * g.out_channels * g.reduction_len()) as u64
    }
    /// `s` (per image) with the batch `n` in front.
    pub fn full_shape(&self, n: usize, s: &[usize]) -> Vec<usize> {
        let mut v = vec![n];
        v.extend_from_slice(s);
        v
    }
}

/// A storage buffer of `bytes` random bytes (or uniform f32 in [-1, 1]).
pub fn random_buffer(ctx: &GpuContext, bytes: u64, f32_data: bool, rng: &mut Lcg) -> wgpu::Buffer {
    let words = (bytes.max(16) / 4) as usize;
    let data: Vec<u32> = if f32_data {
        (0..words)
            .map(|_| (rng.uniform() * 2.0 - 1.0).to_bits())
            .collect()
    } else {
        (0..words).map(|_| rng.next_u32()).collect()
    };
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("qfuse bench activations"),
            contents: bytemuck::cast_slice(&data),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        })
}
