//! Plain-loop reference of ONNX Runtime's integer rules for the lowered
//! QuantizeLinear, DequantizeLinear, Conv, MatMul and Gemm ops
//! (`tests/data/onnx/README.md`): the test oracle for those ops, and the
//! constant folding of Q/DQ of constants. Not fast; not the GPU path.
//!
//! - Q: `y = sat(rint(x / s) + zp)` (a true f32 division).
//! - DQ: `y = f32(q - zp) * s`.
//! - Conv/MatMul/Gemm: `acc = Σ (x - zp_x)(w - zp_w) + bias` in i32 (exact;
//!   an overflow of i32 is an error), then `sat(rint(f32(acc) * m) + zp_y)`
//!   with the host multiplier `m`, or `f32(acc) * s` for float output, or the
//!   i32 accumulator itself.

use super::lower::{Lowered, ValueKind};
use super::qop::{AccOut, QAxis, QOp, QType, QWeights, ShapeOp};
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
pub fn eval_op(op: &QOp, inputs: &[&Tensor], at: &str) -> Result<Tensor> {
    let x = inputs.first().ok_or_else(|| bad(at, "no input"))?;
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
        QOp::Shape(ShapeOp::Reshape { .. } | ShapeOp::Flatten { .. } | ShapeOp::Identity) => {
            Ok((*x).clone())
        }
        other => Err(unsupported(
            at,
            format!(
                "the reference evaluates Quantize, Dequantize, Conv, MatMul and Gemm, not {}",
                other.kind()
            ),
        )),
    }
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
        let mut y = eval_op(&n.op, &ins, &n.name)?;
        if let (QOp::Shape(_), Some(s)) = (&n.op, &l.values[n.outputs[0]].shape) {
            y.dims = s.clone();
        }
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
