//! The CPU reference path: plain loops, wide accumulators, the epilogue from
//! [`crate::quant`]. It is the oracle the GPU is tested against, so it stays
//! obviously correct rather than fast.

use crate::error::{Error, Result};
use crate::layer::{LayerKind, QLayer};
use crate::layout::check_data_len;

/// Exact i64 accumulators `acc[n][o][oy][ox] = Σ (x - x_zp) * w` of a conv2d
/// over a quint8 NCHW input; padded positions hold the real value 0.
pub fn conv2d_accumulators(
    layer: &QLayer,
    x: &[u8],
    shape: &[usize],
) -> Result<(Vec<i64>, Vec<usize>)> {
    let out_shape = layer.output_shape(shape)?;
    check_data_len(x.len(), shape)?;
    let g = &layer.geometry;
    let (n, c, h, w) = match *shape {
        [n, k] => (n, k, 1, 1),
        [n, c, h, w] => (n, c, h, w),
        _ => unreachable!("output_shape checked the rank"),
    };
    let (oh, ow) = if layer.kind == LayerKind::Linear {
        (1, 1)
    } else {
        (out_shape[2], out_shape[3])
    };
    let (o, cg, og) = (g.out_channels, g.cin_per_group(), g.cout_per_group());
    let [kh, kw] = g.kernel;
    let zp = layer.input.zero_point as i64;
    let mut acc = vec![0i64; n * o * oh * ow];
    for b in 0..n {
        for oc in 0..o {
            let grp = oc / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut sum = 0i64;
                    for ci in 0..cg {
                        let ch = grp * cg + ci;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * g.stride[0] + ky * g.dilation[0]) as isize
                                    - g.padding[0] as isize;
                                let ix = (ox * g.stride[1] + kx * g.dilation[1]) as isize
                                    - g.padding[1] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue; // padding: the real value 0
                                }
                                let xv = x[((b * c + ch) * h + iy as usize) * w + ix as usize]
                                    as i64
                                    - zp;
                                let wv = layer.weight[((oc * cg + ci) * kh + ky) * kw + kx] as i64;
                                sum += xv * wv;
                            }
                        }
                    }
                    acc[((b * o + oc) * oh + oy) * ow + ox] = sum;
                }
            }
        }
    }
    Ok((acc, out_shape))
}

/// Runs a fused quantized conv2d or linear layer on the CPU: accumulate
/// exactly, then requantize each output with the layer's epilogue.
/// `x` is quint8 in NCHW (or `[N, K]`) order; returns the output and its shape.
pub fn run_layer(layer: &QLayer, x: &[u8], shape: &[usize]) -> Result<(Vec<u8>, Vec<usize>)> {
    let (acc, out_shape) = conv2d_accumulators(layer, x, shape)?;
    let o = layer.geometry.out_channels;
    let spatial: usize = out_shape[2..].iter().product();
    let mut y = Vec::with_capacity(acc.len());
    for (i, &a) in acc.iter().enumerate() {
        let oc = (i / spatial) % o;
        let a32 = i32::try_from(a).map_err(|_| Error::Overflow {
            what: "conv2d/linear".into(),
            detail: format!(
                "output element {i} accumulates to {a}, outside i32 (PyTorch's accumulator)"
            ),
        })?;
        y.push(layer.epilogue.apply(oc, a32));
    }
    Ok((y, out_shape))
}

/// A float conv2d (or linear, as a 1x1 conv of a 1x1 image) in plain f32
/// loops, followed by the activation: the unquantized layer, for measuring
/// how close the int8 layer comes. `weight` is `[O, C/groups, kh, kw]`.
pub fn float_conv2d(
    geom: &crate::layer::Conv2dGeometry,
    weight: &[f32],
    bias: &[f32],
    relu: bool,
    x: &[f32],
    shape: &[usize],
) -> Result<(Vec<f32>, Vec<usize>)> {
    geom.validate()?;
    let (n, c, h, w) = crate::layout::nchw(shape)?;
    check_data_len(x.len(), shape)?;
    if c != geom.in_channels {
        return Err(Error::shape(
            "conv2d input",
            format!("{c} channels, the layer has {}", geom.in_channels),
        ));
    }
    let (oh, ow) = geom.output_hw(h, w)?;
    let (o, cg, og) = (
        geom.out_channels,
        geom.cin_per_group(),
        geom.cout_per_group(),
    );
    let [kh, kw] = geom.kernel;
    let mut y = vec![0f32; n * o * oh * ow];
    for b in 0..n {
        for oc in 0..o {
            let grp = oc / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    // Summed as PyTorch's float conv (oneDNN) sums on x86: fused
                    // multiply-adds, kernel taps outer, input channels inner, the
                    // bias added last. This matters only for calibration, where a
                    // tensor's observed min/max must be PyTorch's to the bit.
                    let mut s = 0f32;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * geom.stride[0] + ky * geom.dilation[0]) as isize
                                - geom.padding[0] as isize;
                            let ix = (ox * geom.stride[1] + kx * geom.dilation[1]) as isize
                                - geom.padding[1] as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            for ci in 0..cg {
                                let xv = x
                                    [((b * c + grp * cg + ci) * h + iy as usize) * w + ix as usize];
                                s = xv.mul_add(weight[((oc * cg + ci) * kh + ky) * kw + kx], s);
                            }
                        }
                    }
                    let v = s + bias[oc];
                    y[((b * o + oc) * oh + oy) * ow + ox] = if relu { v.max(0.0) } else { v };
                }
            }
        }
    }
    let out_shape = if shape.len() == 2 {
        vec![n, o]
    } else {
        vec![n, o, oh, ow]
    };
    Ok((y, out_shape))
}
