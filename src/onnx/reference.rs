//! Plain-loop reference of ONNX Runtime 1.32's rules (`tests/data/onnx/README.md`)
//! for every lowered [`QOp`] except `FloatTail`: the test oracle (every
//! supported committed case reproduces ORT bit for bit through it) and the
//! constant folding of Q/DQ of constants. Not fast; not the GPU path; the op
//! modules own the production arithmetic.
//!
//! - Q: `y = sat(rint(x / s) + zp)` (a true f32 division). DQ: `y = f32(q - zp) * s`.
//! - Conv/MatMul/Gemm: `acc = Σ (x - zp_x)(w - zp_w) + bias` in i32 (exact;
//!   an overflow of i32 is an error), then `sat(rint(f32(acc) * m) + zp_y)`
//!   with the host multiplier `m`, or `f32(acc) * s` for float output, or the
//!   i32 accumulator itself.
//! - Add: the FMA form with ORT's role swap; Mul: the non-FMA form.
//! - GlobalAvgPool, AvgPool, MaxPool, Concat, tables (Sigmoid with MLAS's FMA
//!   logistic, LeakyRelu, HardSigmoid, Relu, requantization), Softmax (ORT's
//!   table form), shape ops: as the README writes them.

use super::lower::{Lowered, ValueKind};
use super::qop::{AccOut, QAxis, QOp, QType, QWeights, ShapeOp, TableKind, Q};
use super::tensor::{ElemType, Tensor, TensorData};
use super::{bad, unsupported};
use crate::error::Result;

fn ints(t: &Tensor) -> Option<Vec<i32>> {
    match &t.data {
        TensorData::U8(v) => Some(v.iter().map(|&x| x as i32).collect()),
        TensorData::I8(v) => Some(v.iter().map(|&x| x as i32).collect()),
        TensorData::I32(v) => Some(v.clone()),
        _ => None,
    }
}

/// Index of the per-axis parameter for flat element `i` of a tensor of shape `dims`.
fn axis_index(dims: &[usize], axis: Option<usize>, i: usize) -> usize {
    match axis {
        None => 0,
        Some(a) => {
            let inner: usize = dims[a + 1..].iter().product();
            (i / inner.max(1)) % dims[a].max(1)
        }
    }
}

fn from_i32(v: Vec<i32>, ty: ElemType) -> TensorData {
    match ty {
        ElemType::U8 => TensorData::U8(v.into_iter().map(|x| x as u8).collect()),
        ElemType::I8 => TensorData::I8(v.into_iter().map(|x| x as i8).collect()),
        _ => TensorData::I32(v),
    }
}

fn range(ty: ElemType) -> (i32, i32) {
    match ty {
        ElemType::U8 => (0, 255),
        ElemType::I8 => (-128, 127),
        _ => (i32::MIN, i32::MAX),
    }
}

/// Rule Q on a float tensor.
pub fn quantize(x: &Tensor, q: &QAxis) -> Result<Tensor> {
    let v = x
        .as_f32()
        .ok_or_else(|| bad("QuantizeLinear", "input is not float"))?;
    let (lo, hi) = range(q.dtype);
    let out = v
        .iter()
        .enumerate()
        .map(|(i, &f)| {
            let c = axis_index(&x.dims, q.axis, i);
            let r = (f / q.scales[c]).round_ties_even() + q.zero_points[c] as f32;
            r.clamp(lo as f32, hi as f32) as i32
        })
        .collect();
    Ok(Tensor {
        dims: x.dims.clone(),
        data: from_i32(out, q.dtype),
    })
}

/// Rule DQ on a quantized (or int32) tensor.
pub fn dequantize(x: &Tensor, q: &QAxis) -> Result<Tensor> {
    let v = ints(x).ok_or_else(|| bad("DequantizeLinear", "input is not quantized"))?;
    let out = v
        .iter()
        .enumerate()
        .map(|(i, &qv)| {
            let c = axis_index(&x.dims, q.axis, i);
            (qv.wrapping_sub(q.zero_points[c])) as f32 * q.scales[c]
        })
        .collect();
    Ok(Tensor {
        dims: x.dims.clone(),
        data: TensorData::F32(out),
    })
}

/// The requantization epilogue (or the float / int32 output).
fn epilogue(acc: i64, ch: usize, out: &AccOut, at: &str) -> Result<Epi> {
    let acc = i32::try_from(acc).map_err(|_| bad(at, "int32 accumulator overflow"))?;
    Ok(match out {
        AccOut::Int32 => Epi::I(acc),
        AccOut::Float { scales } => {
            Epi::F(acc as f32 * scales[if scales.len() == 1 { 0 } else { ch }])
        }
        AccOut::Requant { y, multipliers } => {
            let m = multipliers[if multipliers.len() == 1 { 0 } else { ch }];
            let v = (acc as f32 * m).round_ties_even() as i64 + y.zero_point as i64;
            Epi::I(v.clamp(y.dtype.min() as i64, y.dtype.max() as i64) as i32)
        }
    })
}

enum Epi {
    I(i32),
    F(f32),
}

fn collect(v: Vec<Epi>, dims: Vec<usize>, out: &AccOut) -> Tensor {
    let data = match out {
        AccOut::Float { .. } => TensorData::F32(
            v.into_iter()
                .map(|e| match e {
                    Epi::F(f) => f,
                    Epi::I(i) => i as f32,
                })
                .collect(),
        ),
        _ => {
            let ty = match out {
                AccOut::Requant { y, .. } => match y.dtype {
                    QType::U8 => ElemType::U8,
                    QType::I8 => ElemType::I8,
                },
                _ => ElemType::I32,
            };
            from_i32(
                v.into_iter()
                    .map(|e| match e {
                        Epi::I(i) => i,
                        Epi::F(f) => f as i32,
                    })
                    .collect(),
                ty,
            )
        }
    };
    Tensor { dims, data }
}

fn wzp(w: &QWeights, o: usize) -> i32 {
    w.zero_points[if w.zero_points.len() == 1 { 0 } else { o }]
}

/// Evaluate one lowered Conv / MatMul / Gemm / Quantize / Dequantize /
/// Reshape / Flatten op on `inputs`. `at` names it in errors.
pub fn eval_op(
    op: &QOp,
    inputs: &[&Tensor],
    out_shape: Option<&[usize]>,
    at: &str,
) -> Result<Tensor> {
    let x = inputs.first().ok_or_else(|| bad(at, "no input"))?;
    let need_shape = || out_shape.ok_or_else(|| unsupported(at, "output shape unknown"));
    match op {
        QOp::Quantize { y } => quantize(x, y),
        QOp::Dequantize { x: q } => dequantize(x, q),
        QOp::Conv {
            x: xq,
            w,
            bias,
            geom,
            out,
        } => {
            let xv = ints(x).ok_or_else(|| bad(at, "input is not quantized"))?;
            let d = &x.dims;
            if d.len() != 4 {
                return Err(bad(at, "input is not NCHW"));
            }
            let (n, c, h, wd) = (d[0], d[1], d[2], d[3]);
            if xv.len() != n * c * h * wd {
                return Err(bad(at, "input size disagrees with its dims"));
            }
            let (o, cg, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3]);
            let g = geom.groups;
            if c != cg * g {
                return Err(bad(at, "channel count"));
            }
            let eh = geom.dilation[0] * (kh - 1) + 1;
            let ew = geom.dilation[1] * (kw - 1) + 1;
            let oh = (h + geom.pads[0] + geom.pads[2] - eh) / geom.stride[0] + 1;
            let ow = (wd + geom.pads[1] + geom.pads[3] - ew) / geom.stride[1] + 1;
            let og = o / g;
            let mut res = Vec::with_capacity(n * o * oh * ow);
            for b in 0..n {
                for oc in 0..o {
                    let gi = oc / og;
                    let zw = wzp(w, oc);
                    for y in 0..oh {
                        for xo in 0..ow {
                            let mut acc: i64 = bias.as_ref().map_or(0, |bv| bv[oc] as i64);
                            for ci in 0..cg {
                                let cin = gi * cg + ci;
                                for ky in 0..kh {
                                    let iy = (y * geom.stride[0] + ky * geom.dilation[0]) as isize
                                        - geom.pads[0] as isize;
                                    if iy < 0 || iy >= h as isize {
                                        continue;
                                    }
                                    for kx in 0..kw {
                                        let ix = (xo * geom.stride[1] + kx * geom.dilation[1])
                                            as isize
                                            - geom.pads[1] as isize;
                                        if ix < 0 || ix >= wd as isize {
                                            continue;
                                        }
                                        let xv = xv
                                            [((b * c + cin) * h + iy as usize) * wd + ix as usize]
                                            - xq.zero_point;
                                        let wv = w.data[((oc * cg + ci) * kh + ky) * kw + kx]
                                            as i32
                                            - zw;
                                        acc += (xv as i64) * (wv as i64);
                                    }
                                }
                            }
                            res.push(epilogue(acc, oc, out, at)?);
                        }
                    }
                }
            }
            Ok(collect(res, vec![n, o, oh, ow], out))
        }
        QOp::MatMul { a, w, out } => {
            let av = ints(x).ok_or_else(|| bad(at, "input is not quantized"))?;
            let (nn, kk) = (w.shape[0], w.shape[1]);
            if x.dims.last() != Some(&kk) {
                return Err(bad(at, "K mismatch"));
            }
            let rows = av.len() / kk.max(1);
            if rows * kk != av.len() {
                return Err(bad(at, "input size disagrees with its dims"));
            }
            let mut res = Vec::with_capacity(rows * nn);
            for r in 0..rows {
                for col in 0..nn {
                    let zw = wzp(w, col);
                    let mut acc: i64 = 0;
                    for i in 0..kk {
                        acc += ((av[r * kk + i] - a.zero_point) as i64)
                            * ((w.data[col * kk + i] as i32 - zw) as i64);
                    }
                    res.push(epilogue(acc, col, out, at)?);
                }
            }
            let mut dims = x.dims.clone();
            let l = dims.len();
            dims[l - 1] = nn;
            Ok(collect(res, dims, out))
        }
        QOp::Gemm {
            a,
            trans_a,
            w,
            bias,
            out,
            ..
        } => {
            let av = ints(x).ok_or_else(|| bad(at, "input is not quantized"))?;
            let (nn, kk) = (w.shape[0], w.shape[1]);
            if x.dims.len() != 2 {
                return Err(bad(at, "A is not 2-D"));
            }
            let (m, ka) = if *trans_a {
                (x.dims[1], x.dims[0])
            } else {
                (x.dims[0], x.dims[1])
            };
            if ka != kk || av.len() != m * kk {
                return Err(bad(at, "A does not match the weights"));
            }
            let at_ = |r: usize, i: usize| {
                if *trans_a {
                    av[i * m + r]
                } else {
                    av[r * kk + i]
                }
            };
            let mut res = Vec::with_capacity(m * nn);
            for r in 0..m {
                for col in 0..nn {
                    let zw = wzp(w, col);
                    let mut acc: i64 = bias.as_ref().map_or(0, |b| b[col] as i64);
                    for i in 0..kk {
                        acc += ((at_(r, i) - a.zero_point) as i64)
                            * ((w.data[col * kk + i] as i32 - zw) as i64);
                    }
                    res.push(epilogue(acc, col, out, at)?);
                }
            }
            Ok(collect(res, vec![m, nn], out))
        }
        QOp::Table { kind, x: xq, y } => {
            let t = table(kind, xq, y);
            map_bytes(x, xq.dtype, |b| t[b as usize], y.dtype)
        }
        QOp::ChannelFloat { x: xq, y, f, relu } => {
            // element by element in f32, as ORT's float kernels compute
            let c = x.dims.get(1).copied().unwrap_or(1);
            if let Some(fc) = f.channels() {
                if x.dims.len() < 2 || c != fc {
                    return Err(bad(
                        at,
                        format!(
                            "input dims {:?}: channel dim 1 must have {fc} entries",
                            x.dims
                        ),
                    ));
                }
            }
            let plane: usize = x.dims.iter().skip(2).product();
            let q: Vec<i32> = match (&x.data, xq.dtype) {
                (TensorData::U8(v), QType::U8) => v.iter().map(|&b| b as i32).collect(),
                (TensorData::I8(v), QType::I8) => v.iter().map(|&b| b as i32).collect(),
                _ => return Err(bad(at, "input type differs from the DequantizeLinear's")),
            };
            let out = q
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let d = xq.scale * (v - xq.zero_point) as f32;
                    let mut r = f.apply((i / plane.max(1)) % c.max(1), d);
                    if *relu {
                        r = r.max(0.0);
                    }
                    sat(
                        (r / y.scale).round_ties_even() + y.zero_point as f32,
                        y.dtype,
                    )
                })
                .collect();
            Ok(Tensor {
                dims: x.dims.clone(),
                data: from_i32(out, elem(y.dtype)),
            })
        }
        QOp::Concat {
            axis,
            inputs: qs,
            y,
        } => {
            let mut parts = Vec::new();
            for (t, q) in inputs.iter().zip(qs) {
                if q.scale == y.scale && q.zero_point == y.zero_point {
                    parts.push((*t).clone());
                } else {
                    let tb = table(&TableKind::Requantize, q, y);
                    parts.push(map_bytes(t, q.dtype, |b| tb[b as usize], y.dtype)?);
                }
            }
            concat(&parts, *axis, at)
        }
        QOp::MaxPool { geom, .. } => {
            let os = need_shape()?;
            let v = ints(x).ok_or_else(|| bad(at, "input is not quantized"))?;
            let (n, c, h, w) = dims4(&x.dims, at)?;
            let (oh, ow) = (os[2], os[3]);
            let mut out = Vec::with_capacity(n * c * oh * ow);
            for p in 0..n * c {
                for y in 0..oh {
                    for xo in 0..ow {
                        let mut m = i32::MIN;
                        for ky in 0..geom.kernel[0] {
                            let iy = (y * geom.stride[0] + ky * geom.dilation[0]) as isize
                                - geom.pads[0] as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..geom.kernel[1] {
                                let ix = (xo * geom.stride[1] + kx * geom.dilation[1]) as isize
                                    - geom.pads[1] as isize;
                                if ix >= 0 && ix < w as isize {
                                    m = m.max(v[(p * h + iy as usize) * w + ix as usize]);
                                }
                            }
                        }
                        out.push(m);
                    }
                }
            }
            Ok(Tensor {
                dims: os.to_vec(),
                data: from_i32(out, x.elem_type()),
            })
        }
        QOp::GlobalAvgPool {
            x: xq,
            y,
            channels_last,
        } => {
            let (t, back) = to_nchw(x, *channels_last);
            let v = ints(&t).ok_or_else(|| bad(at, "input is not quantized"))?;
            let (nc, sp) = (t.dims[0] * t.dims[1], t.dims[2..].iter().product::<usize>());
            let scale = xq.scale / (y.scale * sp as f32);
            let mut out = Vec::with_capacity(nc);
            for p in 0..nc {
                let sum: i64 = v[p * sp..(p + 1) * sp].iter().map(|&q| q as i64).sum();
                let acc = sum - xq.zero_point as i64 * sp as i64;
                out.push(requant(acc, scale, y, at)?);
            }
            let mut dims = t.dims[..2].to_vec();
            dims.extend(std::iter::repeat_n(1, t.dims.len() - 2));
            let r = Tensor {
                dims,
                data: from_i32(out, elem(y.dtype)),
            };
            Ok(if back { from_nchw(&r) } else { r })
        }
        QOp::AvgPool {
            x: xq,
            y,
            geom,
            count_include_pad,
            channels_last,
        } => {
            let os = need_shape()?;
            let (t, back) = to_nchw(x, *channels_last);
            let v = ints(&t).ok_or_else(|| bad(at, "input is not quantized"))?;
            let (n, c, h, w) = dims4(&t.dims, at)?;
            let (oh, ow) = if back { (os[1], os[2]) } else { (os[2], os[3]) };
            let d: Vec<f32> = v
                .iter()
                .map(|&q| xq.scale * (q - xq.zero_point) as f32)
                .collect();
            let mut out = Vec::with_capacity(n * c * oh * ow);
            for p in 0..n * c {
                for oy in 0..oh {
                    let hs = (oy * geom.stride[0]) as isize - geom.pads[0] as isize;
                    let he = (hs + geom.kernel[0] as isize).min(h as isize);
                    let hs = hs.max(0);
                    for ox in 0..ow {
                        let ws = (ox * geom.stride[1]) as isize - geom.pads[1] as isize;
                        let we = (ws + geom.kernel[1] as isize).min(w as isize);
                        let ws = ws.max(0);
                        let mut acc = 0f32;
                        for iy in hs..he {
                            for ix in ws..we {
                                acc += d[(p * h + iy as usize) * w + ix as usize];
                            }
                        }
                        let cnt = if *count_include_pad {
                            geom.kernel[0] * geom.kernel[1]
                        } else {
                            ((he - hs).max(0) * (we - ws).max(0)) as usize
                        };
                        let v = acc / cnt as f32;
                        let r = (v / y.scale + y.zero_point as f32).round_ties_even();
                        out.push(r.clamp(y.dtype.min() as f32, y.dtype.max() as f32) as i32);
                    }
                }
            }
            let r = Tensor {
                dims: vec![n, c, oh, ow],
                data: from_i32(out, elem(y.dtype)),
            };
            Ok(if back { from_nchw(&r) } else { r })
        }
        QOp::Add { a, b, y } | QOp::Mul { a, b, y } => {
            let is_add = matches!(op, QOp::Add { .. });
            let bt = inputs.get(1).ok_or_else(|| bad(at, "B is missing"))?;
            let os = broadcast_shape(&x.dims, &bt.dims, at)?;
            let (mut av, mut bv) = (
                broadcast_to(x, &os).ok_or_else(|| bad(at, "A is not quantized"))?,
                broadcast_to(bt, &os).ok_or_else(|| bad(at, "B is not quantized"))?,
            );
            let (mut qa, mut qb) = (*a, *b);
            // ORT hands the kernel the varying input as A
            if binary_mode(&x.dims, &bt.dims) == Mode::ScalarA {
                std::mem::swap(&mut av, &mut bv);
                std::mem::swap(&mut qa, &mut qb);
            }
            let out: Vec<i32> = if is_add {
                let (ra, rb) = (qa.scale / y.scale, qb.scale / y.scale);
                let fixed = y.zero_point as f32
                    - ra.mul_add(qa.zero_point as f32, rb * qb.zero_point as f32);
                av.iter()
                    .zip(&bv)
                    .map(|(&p, &q)| {
                        let v = (p as f32).mul_add(ra, (q as f32).mul_add(rb, fixed));
                        sat(v.round_ties_even(), y.dtype)
                    })
                    .collect()
            } else {
                let r = (qa.scale * qb.scale) / y.scale;
                av.iter()
                    .zip(&bv)
                    .map(|(&p, &q)| {
                        let prod = (p - qa.zero_point) as i64 * (q - qb.zero_point) as i64;
                        let v = prod as f32 * r + y.zero_point as f32;
                        sat(v.round_ties_even(), y.dtype)
                    })
                    .collect()
            };
            Ok(Tensor {
                dims: os,
                data: from_i32(out, elem(y.dtype)),
            })
        }
        QOp::Softmax {
            x: xq,
            y,
            axis,
            opset13,
        } => softmax(x, xq, y, *axis, *opset13, at),
        QOp::Resize {
            x: xq,
            y,
            truncate,
            size,
            scales,
            coord,
            mode,
        } => resize_linear(x, xq, y, *truncate, *size, *scales, (*coord, *mode), at),
        QOp::Shape(sop) => {
            let os = need_shape()?.to_vec();
            match sop {
                ShapeOp::Transpose { perm } => {
                    let r = x.dims.len();
                    let p: Vec<usize> = match perm {
                        Some(p) => p.iter().map(|&a| a.rem_euclid(r as i64) as usize).collect(),
                        None => (0..r).rev().collect(),
                    };
                    let idx = gather_index(&x.dims, &os, |o| {
                        let mut i = vec![0; r];
                        for (k, &pk) in p.iter().enumerate() {
                            i[pk] = o[k];
                        }
                        i
                    });
                    Ok(take(x, &idx, os))
                }
                ShapeOp::Slice {
                    starts,
                    axes,
                    steps,
                    ..
                } => {
                    let r = x.dims.len();
                    let mut st = vec![0i64; r];
                    let mut sp = vec![1i64; r];
                    for i in 0..starts.len() {
                        let a = axes
                            .as_ref()
                            .map_or(i as i64, |a| a[i])
                            .rem_euclid(r as i64) as usize;
                        let d = x.dims[a] as i64;
                        let step = steps.as_ref().map_or(1, |s| s[i]);
                        let s0 = if starts[i] < 0 {
                            starts[i] + d
                        } else {
                            starts[i]
                        };
                        st[a] = if step > 0 {
                            s0.clamp(0, d)
                        } else {
                            s0.clamp(0, d - 1)
                        };
                        sp[a] = step;
                    }
                    let idx = gather_index(&x.dims, &os, |o| {
                        (0..r)
                            .map(|k| (st[k] + o[k] as i64 * sp[k]) as usize)
                            .collect()
                    });
                    Ok(take(x, &idx, os))
                }
                ShapeOp::Gather {
                    indices,
                    indices_shape,
                    axis,
                } => {
                    let r = x.dims.len();
                    let a = axis.rem_euclid(r as i64) as usize;
                    let ni = indices_shape.len();
                    let idx = gather_index(&x.dims, &os, |o| {
                        let mut flat = 0usize;
                        for k in 0..ni {
                            flat = flat * indices_shape[k] + o[a + k];
                        }
                        let j = indices[flat];
                        let j = if j < 0 { j + x.dims[a] as i64 } else { j } as usize;
                        let mut i = o[..a].to_vec();
                        i.push(j);
                        i.extend(&o[a + ni..]);
                        i
                    });
                    Ok(take(x, &idx, os))
                }
                ShapeOp::AxisMap { maps, fill } => {
                    // the source of each output element; None where a map
                    // entry is -1 (Pad mode constant: the fill value)
                    let total: usize = os.iter().product();
                    let mut o = vec![0usize; os.len()];
                    let mut idx: Vec<Option<usize>> = Vec::with_capacity(total);
                    for _ in 0..total {
                        let mut flat = Some(0usize);
                        for (k, (&ok, &d)) in o.iter().zip(&x.dims).enumerate() {
                            let i = match maps.get(k) {
                                Some(Some(m)) => usize::try_from(m[ok]).ok(),
                                _ => Some(ok),
                            };
                            flat = flat.zip(i).map(|(f, i)| f * d + i);
                        }
                        idx.push(flat);
                        for k in (0..os.len()).rev() {
                            o[k] += 1;
                            if o[k] < os[k] {
                                break;
                            }
                            o[k] = 0;
                        }
                    }
                    if idx.iter().all(Option::is_some) {
                        let idx: Vec<usize> = idx.into_iter().flatten().collect();
                        return Ok(take(x, &idx, os));
                    }
                    let f = fill.ok_or_else(|| bad(at, "a padded element without a fill value"))?;
                    let v =
                        ints(x).ok_or_else(|| bad(at, "Pad mode constant of a float tensor"))?;
                    let out = idx.iter().map(|i| i.map_or(f, |i| v[i])).collect();
                    Ok(Tensor {
                        dims: os,
                        data: from_i32(out, x.elem_type()),
                    })
                }
                _ => Ok(Tensor {
                    dims: os,
                    data: x.data.clone(),
                }),
            }
        }
        QOp::FloatTail { op_type, .. } => Err(unsupported(
            at,
            format!("the reference does not run float tail ops ({op_type})"),
        )),
    }
}

fn elem(t: QType) -> ElemType {
    match t {
        QType::U8 => ElemType::U8,
        QType::I8 => ElemType::I8,
    }
}

fn sat(v: f32, t: QType) -> i32 {
    v.clamp(t.min() as f32, t.max() as f32) as i32
}

/// `sat(rint(f32(acc) * m) + zp)`
fn requant(acc: i64, m: f32, y: &Q, at: &str) -> Result<i32> {
    let acc = i32::try_from(acc).map_err(|_| bad(at, "int32 accumulator overflow"))?;
    let v = (acc as f32 * m).round_ties_even() as i64 + y.zero_point as i64;
    Ok(v.clamp(y.dtype.min() as i64, y.dtype.max() as i64) as i32)
}

/// FMA rational logistic of MLAS (x86-64 FMA3 kernel, Eigen's constants; the
/// f64 decimals rounded to f32 as the numpy reference does).
fn logistic(x: f32) -> f32 {
    let c = |v: f64| v as f32;
    let x = x.clamp(-18.0, 18.0);
    let x2 = x * x;
    let mut p = x2.mul_add(c(4.37031012579801e-11), c(1.15627324459942e-07));
    for a in [
        6.08574864600143e-05,
        8.51377133304701e-03,
        2.48287947061529e-01,
    ] {
        p = x2.mul_add(p, c(a));
    }
    let mut q = x2.mul_add(c(6.10247389755681e-13), c(5.76102136993427e-09));
    for b in [
        6.29106785017040e-06,
        1.70198817374094e-03,
        1.16817656904453e-01,
        9.93151921023180e-01,
    ] {
        q = x2.mul_add(q, c(b));
    }
    let p = x * p;
    (p / q + 0.5).max(0.0)
}

/// The 256-entry table of a [`QOp::Table`], indexed by the input byte's bit pattern.
pub fn table(kind: &TableKind, x: &Q, y: &Q) -> [i32; 256] {
    let mut t = [0i32; 256];
    for (b, e) in t.iter_mut().enumerate() {
        let q = match x.dtype {
            QType::U8 => b as i32,
            QType::I8 => b as u8 as i8 as i32,
        };
        let d = x.scale * (q - x.zero_point) as f32;
        let f = match kind {
            TableKind::Sigmoid => logistic(d),
            TableKind::LeakyRelu { alpha } => {
                if d >= 0.0 {
                    d
                } else {
                    alpha * d
                }
            }
            TableKind::HardSigmoid { alpha, beta } => (alpha * d + beta).clamp(0.0, 1.0),
            TableKind::Relu => d.max(0.0),
            TableKind::Requantize => d,
        };
        *e = sat(
            (f / y.scale).round_ties_even() + y.zero_point as f32,
            y.dtype,
        );
    }
    t
}

fn map_bytes(x: &Tensor, xt: QType, f: impl Fn(u8) -> i32, yt: QType) -> Result<Tensor> {
    let bytes: Vec<u8> = match (&x.data, xt) {
        (TensorData::U8(v), QType::U8) => v.clone(),
        (TensorData::I8(v), QType::I8) => v.iter().map(|&b| b as u8).collect(),
        _ => return Err(bad("table", "input type differs from the table's")),
    };
    Ok(Tensor {
        dims: x.dims.clone(),
        data: from_i32(bytes.into_iter().map(f).collect(), elem(yt)),
    })
}

fn dims4(d: &[usize], at: &str) -> Result<(usize, usize, usize, usize)> {
    match d {
        [n, c, h, w] => Ok((*n, *c, *h, *w)),
        _ => Err(bad(at, format!("input {d:?} is not 4-D"))),
    }
}

/// NHWC -> NCHW copy when `cl`; returns whether to convert back.
fn to_nchw(x: &Tensor, cl: bool) -> (Tensor, bool) {
    if !cl {
        return (x.clone(), false);
    }
    let r = x.dims.len();
    let mut os = vec![x.dims[0], x.dims[r - 1]];
    os.extend(&x.dims[1..r - 1]);
    let idx = gather_index(&x.dims, &os, |o| {
        let mut i = vec![o[0]];
        i.extend(&o[2..]);
        i.push(o[1]);
        i
    });
    (take(x, &idx, os), true)
}

fn from_nchw(x: &Tensor) -> Tensor {
    let r = x.dims.len();
    let mut os = vec![x.dims[0]];
    os.extend(&x.dims[2..]);
    os.push(x.dims[1]);
    let idx = gather_index(&x.dims, &os, |o| {
        let mut i = vec![o[0], o[r - 1]];
        i.extend(&o[1..r - 1]);
        i
    });
    take(x, &idx, os)
}

/// For each output position (row-major over `os`), the flat input index that
/// `src` (output multi-index -> input multi-index) names.
fn gather_index(
    in_dims: &[usize],
    os: &[usize],
    src: impl Fn(&[usize]) -> Vec<usize>,
) -> Vec<usize> {
    let total: usize = os.iter().product();
    let mut o = vec![0usize; os.len()];
    let mut res = Vec::with_capacity(total);
    for _ in 0..total {
        let i = src(&o);
        res.push(i.iter().zip(in_dims).fold(0, |acc, (&v, &d)| acc * d + v));
        for k in (0..os.len()).rev() {
            o[k] += 1;
            if o[k] < os[k] {
                break;
            }
            o[k] = 0;
        }
    }
    res
}

fn take(x: &Tensor, idx: &[usize], dims: Vec<usize>) -> Tensor {
    let data = match &x.data {
        TensorData::F32(v) => TensorData::F32(idx.iter().map(|&i| v[i]).collect()),
        TensorData::U8(v) => TensorData::U8(idx.iter().map(|&i| v[i]).collect()),
        TensorData::I8(v) => TensorData::I8(idx.iter().map(|&i| v[i]).collect()),
        TensorData::I32(v) => TensorData::I32(idx.iter().map(|&i| v[i]).collect()),
        TensorData::I64(v) => TensorData::I64(idx.iter().map(|&i| v[i]).collect()),
    };
    Tensor { dims, data }
}

fn concat(parts: &[Tensor], axis: i64, at: &str) -> Result<Tensor> {
    let r = parts[0].dims.len();
    let a = axis.rem_euclid(r as i64) as usize;
    let outer: usize = parts[0].dims[..a].iter().product();
    let mut dims = parts[0].dims.clone();
    dims[a] = parts.iter().map(|p| p.dims[a]).sum();
    let mut out = Vec::new();
    let vals: Vec<Vec<i32>> = parts
        .iter()
        .map(|p| ints(p).ok_or_else(|| bad(at, "input is not quantized")))
        .collect::<Result<_>>()?;
    for o in 0..outer {
        for (p, v) in parts.iter().zip(&vals) {
            let run: usize = p.dims[a..].iter().product();
            out.extend_from_slice(&v[o * run..(o + 1) * run]);
        }
    }
    Ok(Tensor {
        dims,
        data: from_i32(out, parts[0].elem_type()),
    })
}

fn broadcast_shape(a: &[usize], b: &[usize], at: &str) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let db = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            if da == db || db == 1 {
                Ok(da)
            } else if da == 1 {
                Ok(db)
            } else {
                Err(bad(at, "shapes do not broadcast"))
            }
        })
        .collect()
}

fn broadcast_to(x: &Tensor, os: &[usize]) -> Option<Vec<i32>> {
    let v = ints(x)?;
    let r = os.len();
    let pad = r - x.dims.len();
    let idx = gather_index(
        &std::iter::repeat_n(1, pad)
            .chain(x.dims.iter().copied())
            .collect::<Vec<_>>(),
        os,
        |o| {
            (0..r)
                .map(|k| {
                    if k < pad || x.dims[k - pad] == 1 {
                        0
                    } else {
                        o[k]
                    }
                })
                .collect()
        },
    );
    Some(idx.iter().map(|&i| v[i]).collect())
}

#[derive(PartialEq)]
enum Mode {
    ScalarA,
    Other,
}

/// Whether ORT's broadcast loop sees A as the single value over the innermost
/// run (then it swaps the roles so that the varying input is A).
fn binary_mode(sa: &[usize], sb: &[usize]) -> Mode {
    let n = sa.len().max(sb.len());
    let pad = |s: &[usize]| -> Vec<usize> {
        std::iter::repeat_n(1, n - s.len())
            .chain(s.iter().copied())
            .collect()
    };
    let (sa, sb) = (pad(sa), pad(sb));
    let (pa, pb): (usize, usize) = (sa.iter().product(), sb.iter().product());
    if pb == 1 && pa != 1 {
        return Mode::Other;
    }
    if pa == 1 && pb != 1 {
        return Mode::ScalarA;
    }
    if sa == sb {
        return Mode::Other;
    }
    let mut i = n as isize - 1;
    while i >= 0 && sa[i as usize] == sb[i as usize] {
        i -= 1;
    }
    let i = i.max(0) as usize;
    if sb[i] == 1 && sb[i..].iter().all(|&d| d == 1) {
        return Mode::Other;
    }
    if sa[i] == 1 && sa[i..].iter().all(|&d| d == 1) {
        return Mode::ScalarA;
    }
    Mode::Other
}

/// ORT's bilinear Resize of an NCHW tensor's H and W (`UpsampleBilinear`):
/// f32 weights, `((c11*X11 + c21*X21) + c12*X12) + c22*X22`, truncated
/// (`truncate`, true values) or rule Q of the dequantized interpolation.
#[allow(clippy::too_many_arguments)]
fn resize_linear(
    x: &Tensor,
    xq: &Q,
    y: &Q,
    truncate: bool,
    size: [usize; 2],
    scales: [f32; 2],
    (coord, mode): (crate::ops::resize::Coord, crate::ops::resize::ResizeMode),
    at: &str,
) -> Result<Tensor> {
    let v = ints(x).ok_or_else(|| bad(at, "input is not quantized"))?;
    let [n, c, h, w] = x.dims[..] else {
        return Err(bad(at, "input is not NCHW"));
    };
    let [oh, ow] = size;
    let ty = crate::ops::resize::axis_taps(coord, scales[0], oh, h);
    let tx = crate::ops::resize::axis_taps(coord, scales[1], ow, w);
    let val = |q: i32| {
        if truncate {
            q as f32
        } else {
            (q - xq.zero_point) as f32 * xq.scale
        }
    };
    let mut out = Vec::with_capacity(n * c * oh * ow);
    for plane in v.chunks(h * w) {
        for (oy, a) in ty.iter().enumerate() {
            for (ox, b) in tx.iter().enumerate() {
                let f = if oh == h && ow == w {
                    val(plane[oy * w + ox])
                } else if let crate::ops::resize::ResizeMode::Cubic(ca) = mode {
                    // ORT's ResizeBiCubic: rows from 0, then the column
                    let (fy, cy) = crate::ops::resize::cubic_taps(coord, scales[0], oh, h, ca)[oy];
                    let (fx, cx) = crate::ops::resize::cubic_taps(coord, scales[1], ow, w, ca)[ox];
                    let mut res = 0f32;
                    for (i, cyi) in cy.iter().enumerate() {
                        let yy = (fy - 1 + i as i64).clamp(0, h as i64 - 1) as usize;
                        let mut row = 0f32;
                        for (k, cxk) in cx.iter().enumerate() {
                            let xx = (fx - 1 + k as i64).clamp(0, w as i64 - 1) as usize;
                            row += (cxk / 1.0) * val(plane[yy * w + xx]);
                        }
                        res += row * cyi / 1.0;
                    }
                    res
                } else {
                    let x11 = val(plane[a.i1 * w + b.i1]);
                    let x21 = val(plane[a.i1 * w + b.i2]);
                    let x12 = val(plane[a.i2 * w + b.i1]);
                    let x22 = val(plane[a.i2 * w + b.i2]);
                    b.d2 * a.d2 * x11 + b.d1 * a.d2 * x21 + b.d2 * a.d1 * x12 + b.d1 * a.d1 * x22
                };
                out.push(if truncate {
                    sat(f.trunc(), y.dtype)
                } else {
                    let r = (f / y.scale).round_ties_even() as i64 + y.zero_point as i64;
                    r.clamp(y.dtype.min() as i64, y.dtype.max() as i64) as i32
                });
            }
        }
    }
    Ok(Tensor {
        dims: vec![n, c, oh, ow],
        data: from_i32(out, elem(y.dtype)),
    })
}

fn softmax(x: &Tensor, xq: &Q, y: &Q, axis: i64, opset13: bool, at: &str) -> Result<Tensor> {
    let v = ints(x).ok_or_else(|| bad(at, "input is not quantized"))?;
    let r = x.dims.len();
    let a = axis.rem_euclid(r as i64) as usize;
    let signed = xq.dtype == QType::I8;
    // rows of D values: the reduced axis moved last (opset 13), or everything from `axis` on
    let (d, perm_back): (usize, Option<Vec<usize>>) = if opset13 {
        (
            x.dims[a],
            Some((0..r).filter(|&k| k != a).chain([a]).collect()),
        )
    } else {
        (x.dims[a..].iter().product(), None)
    };
    let (rows_v, moved_dims) = match &perm_back {
        Some(p) => {
            let md: Vec<usize> = p.iter().map(|&k| x.dims[k]).collect();
            let idx = gather_index(&x.dims, &md, |o| {
                let mut i = vec![0; r];
                for (k, &pk) in p.iter().enumerate() {
                    i[pk] = o[k];
                }
                i
            });
            (idx.iter().map(|&i| v[i]).collect::<Vec<i32>>(), md)
        }
        None => (v.clone(), x.dims.clone()),
    };
    let xs = xq.scale as f64;
    let shift = (((f32::MAX / d as f32) as f64).ln() - 5.0).max(0.0) / xs;
    let mut t = [0f32; 256];
    for i in 0..256usize {
        let val = ((i as f64 - 255.0 + shift) * xs).exp() as f32;
        let idx = if signed {
            (i as i32 - 128) as u8 as usize
        } else {
            i
        };
        t[idx] = val;
    }
    let yscale = (1.0f32 / y.scale).floor();
    let cap = if signed { 127 } else { 255 };
    let mut out = vec![0i32; rows_v.len()];
    for (row, o) in rows_v.chunks(d.max(1)).zip(out.chunks_mut(d.max(1))) {
        let m = row.iter().copied().max().unwrap_or(0);
        let vals: Vec<f32> = row
            .iter()
            .map(|&q| {
                let i = if signed {
                    ((127 - m + q) as u32 & 0xff) as usize
                } else {
                    (255 - m + q) as usize
                };
                t[i]
            })
            .collect();
        let mut sum = 0f32;
        for &e in &vals {
            sum += e;
        }
        for (dst, &e) in o.iter_mut().zip(&vals) {
            let q = ((e * yscale) / sum).round_ties_even() as i64 + y.zero_point as i64;
            *dst = q.min(cap) as i32;
        }
    }
    let data = from_i32(out, elem(y.dtype));
    let moved = Tensor {
        dims: moved_dims.clone(),
        data,
    };
    Ok(match perm_back {
        None => moved,
        Some(p) => {
            // moved[.., a last] -> original layout
            let idx = gather_index(&moved_dims, &x.dims, |o| p.iter().map(|&k| o[k]).collect());
            take(&moved, &idx, x.dims.clone())
        }
    })
}

/// Run a lowered program whose ops [`eval_op`] covers; `inputs` in the order
/// of [`Lowered::inputs`]. Returns the graph outputs.
pub fn run(l: &Lowered, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    if inputs.len() != l.inputs.len() {
        return Err(bad(
            "inputs",
            format!(
                "{} inputs given, the model has {}",
                inputs.len(),
                l.inputs.len()
            ),
        ));
    }
    let mut env: Vec<Option<Tensor>> = l.values.iter().map(|v| v.constant.clone()).collect();
    for (&id, t) in l.inputs.iter().zip(inputs) {
        let want = match l.values[id].kind {
            ValueKind::Float => ElemType::F32,
            ValueKind::Quant {
                dtype: QType::U8, ..
            } => ElemType::U8,
            ValueKind::Quant {
                dtype: QType::I8, ..
            } => ElemType::I8,
            ValueKind::Int32 => ElemType::I32,
            ValueKind::Int64 => ElemType::I64,
        };
        let count = t.dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let want_shape = &l.values[id].shape;
        if count != Some(t.len()) || want_shape.as_ref().is_some_and(|s| *s != t.dims) {
            return Err(bad(
                format!("input '{}'", l.values[id].name),
                format!(
                    "shape {:?} with {} values; the model wants {want_shape:?}",
                    t.dims,
                    t.len()
                ),
            ));
        }
        if t.elem_type() != want {
            return Err(bad(
                format!("input '{}'", l.values[id].name),
                format!("{} given, {} expected", t.elem_type().name(), want.name()),
            ));
        }
        env[id] = Some(t.clone());
    }
    for n in &l.nodes {
        let ins: Vec<&Tensor> = n
            .inputs
            .iter()
            .map(|&v| {
                env[v]
                    .as_ref()
                    .ok_or_else(|| bad(&n.name, "input not computed"))
            })
            .collect::<Result<_>>()?;
        let out_shape = l.values[n.outputs[0]].shape.as_deref();
        let y = eval_op(&n.op, &ins, out_shape, &n.name)?;
        env[n.outputs[0]] = Some(y);
    }
    l.outputs
        .iter()
        .map(|&o| {
            env[o]
                .clone()
                .ok_or_else(|| bad(format!("output '{}'", l.values[o].name), "not computed"))
        })
        .collect()
}
