//! ONNX Runtime's own quantized ops (rules in `tests/data/onnx/README.md`):
//! `global_avg_pool` (QLinearGlobalAveragePool), `avg_pool_requant`
//! (QLinearAveragePool) and `softmax` (QLinearSoftmax), plus ORT's rule Q for
//! `quantize` on the GPU. They exist only under [`Requant::OnnxRuntime`].
//! Lowering computes, once, the uniforms of `shaders/ort.wgsl`
//! ([`OrtParams`]) and its table (dequantized bytes, or softmax's
//! exponentials); the CPU loop below reads exactly those constants, with
//! Rust's correctly rounded f32 `/` where the kernel runs its integer `fdiv`.
//!
//! qint8 tensors are uint8 images (see [`QParams`]): the pools dequantize
//! `byte - zero_point` (the same on images), QLinearAveragePool adds the
//! **true** output zero point before rounding and stores `result + 128`,
//! softmax depends only on `max - x` and adds the zero point after rounding.

pub(crate) mod gpu;

use std::sync::Arc;

use serde_json::json;

use crate::error::{Error, Result};
use crate::model::{DType, TensorInfo, Value};
use crate::quant::{QParams, Requant};

use super::{
    check_window, dims4, quantized, Attrs, CpuIo, FileOp, Lowered, NodeWriter, Op, OpKind, ParseCx,
    Signature,
};

pub use gpu::OrtParams;

use super::pool::{AvgPoolOpts, Pool2d, MAX_POOL_DIVISOR};

pub(crate) const FILE_OPS: &[FileOp] = &[
    FileOp {
        name: "global_avg_pool",
        attributes: &["scale", "zero_point"],
        parse: |a: &Attrs<'_>, _: &ParseCx<'_>| Ok(Op::GlobalAvgPool { out: a.qparams()? }),
    },
    FileOp {
        name: "avg_pool_requant",
        attributes: &[
            "kernel_size",
            "stride",
            "pads",
            "ceil_mode",
            "count_include_pad",
            "scale",
            "zero_point",
        ],
        parse: |a: &Attrs<'_>, _: &ParseCx<'_>| {
            let v = a.get("pads")?;
            let pads: [usize; 4] = v
                .as_array()
                .and_then(|p| {
                    let p: Option<Vec<usize>> =
                        p.iter().map(|d| d.as_u64().map(|d| d as usize)).collect();
                    p?.try_into().ok()
                })
                .ok_or_else(|| {
                    Error::Model(format!(
                        "\"pads\" must be [top, left, bottom, right], got {v}"
                    ))
                })?;
            Ok(Op::AvgPoolRequant {
                pool: OrtPool2d {
                    kernel: a.pair("kernel_size")?,
                    stride: a.pair("stride")?,
                    pads,
                    ceil_mode: a.bool("ceil_mode")?,
                },
                count_include_pad: a.bool("count_include_pad")?,
                out: a.qparams()?,
            })
        },
    },
    FileOp {
        name: "softmax",
        attributes: &["axis", "scale", "zero_point"],
        parse: |a: &Attrs<'_>, _: &ParseCx<'_>| {
            Ok(Op::Softmax {
                axis: a.usize("axis")?,
                out: a.qparams()?,
            })
        },
    },
    FileOp {
        name: "portable_avg_pool2d",
        attributes: &[
            "kernel_size",
            "stride",
            "padding",
            "ceil_mode",
            "count_include_pad",
            "divisor_override",
            "scale",
            "zero_point",
            "signed",
        ],
        parse: |a: &Attrs<'_>, _: &ParseCx<'_>| {
            let (pool, opts) = super::pool::parse_avg_window(a)?;
            Ok(Op::PortableAvgPool2d {
                pool,
                opts,
                out: a.qparams_signed()?,
            })
        },
    },
    FileOp {
        name: "xnnpack_channel_mean",
        attributes: &["scale", "zero_point", "signed"],
        parse: |a: &Attrs<'_>, cx: &ParseCx<'_>| {
            let c = cx
                .inputs
                .first()
                .and_then(|x| x.shape.first())
                .copied()
                .ok_or_else(|| {
                    Error::shape(
                        "xnnpack_channel_mean",
                        "needs a [C, H, W] input; the channel is dim 0 of the per-sample shape",
                    )
                })?;
            let values = cx.tensors.f32(&format!("{}.values", cx.node), &[c, 256])?;
            Ok(Op::XnnpackChannelMean {
                values: Arc::new(values),
                out: a.qparams_signed()?,
            })
        },
    },
    FileOp {
        name: "xnnpack_avg_pool2d",
        attributes: &[
            "kernel_size",
            "stride",
            "padding",
            "scale",
            "zero_point",
            "signed",
        ],
        parse: |a: &Attrs<'_>, _: &ParseCx<'_>| {
            Ok(Op::XnnpackAvgPool2d {
                pool: Pool2d {
                    kernel: a.pair("kernel_size")?,
                    stride: a.pair("stride")?,
                    padding: a.pair("padding")?,
                    dilation: [1, 1],
                    ceil_mode: false,
                },
                out: a.qparams_signed()?,
            })
        },
    },
];

/// The window of ONNX's 2-D average pooling: begin and end pads per
/// dimension, `ceil_mode` with ONNX Runtime's rule (a last window starting
/// in the end padding is dropped). No dilation (QLinearAveragePool has none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrtPool2d {
    /// `[kh, kw]`, each >= 1.
    pub kernel: [usize; 2],
    /// `[sh, sw]`, each >= 1.
    pub stride: [usize; 2],
    /// `[top, left, bottom, right]` (ONNX's order: begins, then ends), each
    /// smaller than the kernel along its dimension.
    pub pads: [usize; 4],
    /// Round the output size up (ONNX `ceil_mode`).
    pub ceil_mode: bool,
}

impl OrtPool2d {
    /// ONNX's output length along dimension `i` (0: H, 1: W) of a `len` input.
    pub fn out_len(&self, len: usize, i: usize) -> Result<usize> {
        let (k, s) = (self.kernel[i], self.stride[i]);
        let (pb, pe) = (self.pads[i], self.pads[i + 2]);
        let padded = len + pb + pe;
        if padded < k {
            return Err(Error::shape(
                "avg_pool_requant input",
                format!(
                    "size {len} (padded {padded}) is smaller than the kernel {:?}",
                    self.kernel
                ),
            ));
        }
        let mut o = if self.ceil_mode {
            (padded - k).div_ceil(s) + 1
        } else {
            (padded - k) / s + 1
        };
        if self.ceil_mode && (o - 1) * s >= len + pb {
            o -= 1;
        }
        Ok(o)
    }

    /// Checks the window: kernel and stride >= 1, pads smaller than the
    /// kernel (as ONNX Runtime requires), every value within
    /// [`crate::model::MAX_WINDOW`].
    pub fn validate(&self) -> Result<()> {
        check_window("avg_pool_requant kernel_size", self.kernel)?;
        check_window("avg_pool_requant stride", self.stride)?;
        check_window("avg_pool_requant pads", [self.pads[0], self.pads[1]])?;
        check_window("avg_pool_requant pads", [self.pads[2], self.pads[3]])?;
        if self.kernel.contains(&0) || self.stride.contains(&0) {
            return Err(Error::config(
                "avg_pool_requant",
                format!(
                    "kernel {:?} and stride {:?} must be >= 1",
                    self.kernel, self.stride
                ),
            ));
        }
        for i in 0..4 {
            if self.pads[i] >= self.kernel[i % 2] {
                return Err(Error::config(
                    "avg_pool_requant",
                    format!(
                        "pads {:?} must be smaller than the kernel {:?}",
                        self.pads, self.kernel
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// ORT's rule Q: `sat(rint(x / scale) + zero_point)`, a true f32 division;
/// the byte is the image for qint8 (`zero_point` is the image's). Values
/// past i32 saturate; NaN maps to the zero point.
#[inline]
pub fn quantize_div(x: f32, scale: f32, zero_point: i32) -> u8 {
    let r = (x / scale).round_ties_even();
    let r = if r.is_nan() {
        0
    } else {
        r.clamp(-2_147_483_648.0, 2_147_483_520.0) as i64
    };
    (r + zero_point as i64).clamp(0, 255) as u8
}

/// ORT's requantization table: `t[b] = Q(DQ(b))` with rule DQ
/// `f32(b - zp_from) * s_from` and rule Q (divide), indexed by stored bytes.
pub fn requantize_table_div(from: QParams, to: QParams) -> [u8; 256] {
    std::array::from_fn(|b| {
        quantize_div(
            (b as i32 - from.zero_point) as f32 * from.scale,
            to.scale,
            to.zero_point,
        )
    })
}

/// QLinearSoftmax's table for input scale `x_scale` and a reduced length
/// `d_len`, indexed by `d = max - x` (0..=255), identical for uint8 and
/// int8 (ORT's own tables, indexed by `255 - m + x` and `(127 - m + x) mod
/// 256`, hold this value at those places): `shift = max(0, ln(f32(FLT_MAX /
/// D)) - 5) / x_scale` and `t(d) = f32(exp((shift - d) * x_scale))`, in f64.
pub fn softmax_table(x_scale: f32, d_len: usize) -> [f32; 256] {
    let xs = x_scale as f64;
    let shift = (((f32::MAX / d_len as f32) as f64).ln() - 5.0).max(0.0) / xs;
    std::array::from_fn(|d| {
        let i = 255 - d;
        ((i as f64 - 255.0 + shift) * xs).exp() as f32
    })
}

/// `ort.wgsl`'s `MODE` override.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OrtMode {
    Quantize = 0,
    GlobalAvg = 1,
    AvgPool = 2,
    Softmax = 3,
    /// XNNPACK's mean over H, W ([`crate::ops::xnnpack`]; engine `xnnpack`).
    XnnMean = 4,
    /// ExecuTorch's portable `adaptive_avg_pool2d` on dequantized values,
    /// quantized by XNNPACK (engine `xnnpack`).
    PortableAdaptive = 5,
    /// XNNPACK's f32 global average of per-channel f32 values of the bytes
    /// (`xnnpack_channel_mean`, engine `xnnpack`).
    XnnChannelMean = 6,
    /// XNNPACK's f32 average pooling of the dequantized bytes
    /// (`xnnpack_avg_pool2d`, engine `xnnpack`).
    XnnAvgPool = 7,
}

/// One of ORT's ops.
pub(crate) enum OrtOp {
    GlobalAvg(QParams),
    AvgPool(OrtPool2d, bool, QParams),
    Softmax(usize, QParams),
}

fn need_ort(engine: Requant, op: &str) -> Result<()> {
    super::require_engine(
        op,
        engine,
        Requant::OnnxRuntime,
        "follows ONNX Runtime's rule",
    )?;
    Ok(())
}

/// XNNPACK's `mean` over H, W (the pool op `mean` under
/// [`Requant::Xnnpack`]), on this module's kernel: the CPU applies the rule
/// (`p.m` = inv, `p.bits` = the f32 bits of zp', `p.zp_in` / `p.offset` = the
/// input / output type offsets); the GPU counts the thresholds of
/// [`crate::ops::xnnpack_mean_thresholds`] at or below the byte sum.
pub(crate) fn xnnpack_mean_lowered<'a>(sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
    let x = sig.inputs[0];
    let q = sig.q_in(0)?;
    let out = sig.output.qparams().unwrap_or(q);
    let (c, h, w) = crate::layout::chw_u32(&x.shape);
    let (_, oh, ow) = crate::layout::chw_u32(&sig.output.shape);
    let n = (h * w) as usize;
    let (inv, zpp) = crate::ops::xnnpack::xnnpack_mean_params(q, out, n);
    let p = OrtParams {
        c,
        h,
        w,
        c4: c.div_ceil(4),
        oh,
        ow,
        zp_in: q.offset(),
        offset: out.offset(),
        m: inv,
        bits: zpp.to_bits(),
        ..Default::default()
    };
    let tab = crate::ops::xnnpack_mean_thresholds(n, q, out);
    Ok(Box::new(OrtLowered {
        p,
        mode: OrtMode::XnnMean,
        tab,
    }))
}

/// `adaptive_avg_pool2d` under [`Requant::Xnnpack`]: what ExecuTorch runs
/// between two XNNPACK partitions, its portable f32 kernel
/// (`op__adaptive_avg_pool2d.cpp`) on the dequantized input, then XNNPACK's
/// quantize (README "ExecuTorch portable kernels"): windows
/// `[floor(f32(o*L) / f32(O)), ceil(f32((o+1)*L) / f32(O)))`, `sum` in f32
/// from 0 over the window's rows then columns of `f32(q - z) * s`,
/// `v = sum / f32(count)`, `y = sat(rint(v * f32(1/s)) + z)` (the output
/// keeps the input's qparams). Table: the 256 dequantized bytes, then per
/// output row and per output column `start | end << 16`, then per output row
/// and per output column the divisor's factor (here the window's length;
/// `count = f32(factor_row * factor_col)`, or `p.kh` when not 0).
pub(crate) fn portable_adaptive_lowered<'a>(sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
    let x = sig.inputs[0];
    let q = sig.q_in(0)?;
    check_dequant_scale("adaptive_avg_pool2d", q)?;
    let (c, h, w) = crate::layout::chw_u32(&x.shape);
    let (_, oh, ow) = crate::layout::chw_u32(&sig.output.shape);
    if h > 0xffff || w > 0xffff {
        // the windows are packed as start | end << 16
        return Err(Error::shape(
            "adaptive_avg_pool2d input",
            format!("{h}x{w}: under the xnnpack engine H and W are at most 65535"),
        ));
    }
    let mut tab: Vec<u32> = (0..256)
        .map(|b| ((b - q.zero_point) as f32 * q.scale).to_bits())
        .collect();
    let window = |o: u32, len: u32, n: u32| {
        let s = ((o * len) as f32 / n as f32).floor() as u32;
        let e = (((o + 1) * len) as f32 / n as f32).ceil() as u32;
        s | (e.min(len) << 16)
    };
    tab.extend((0..oh).map(|o| window(o, h, oh)));
    tab.extend((0..ow).map(|o| window(o, w, ow)));
    // the divisor's factors: each window's length
    let len = |i: usize| (tab[i] >> 16) - (tab[i] & 0xffff);
    let factors: Vec<u32> = (256..256 + (oh + ow) as usize).map(len).collect();
    tab.extend(factors);
    let p = OrtParams {
        c,
        h,
        w,
        c4: c.div_ceil(4),
        oh,
        ow,
        zp_out: q.zero_point,
        m: q.inv_scale(),
        ..Default::default()
    };
    Ok(Box::new(OrtLowered {
        p,
        mode: OrtMode::PortableAdaptive,
        tab,
    }))
}

/// QLinearGlobalAveragePool's multiplier `x_scale / (y_scale * f32(N))`;
/// ORT refuses one below 2^-32 or from 256 on.
pub fn global_avg_scale(x: QParams, y: QParams, n: usize) -> Result<f32> {
    let m = x.scale / (y.scale * n as f32);
    if !(m >= 2f32.powi(-32) && m < 256.0) {
        return Err(Error::qparams(
            "global_avg_pool",
            format!(
                "x_scale / (y_scale * N) = {:e} / ({:e} * {n}) = {m:e} is outside [2^-32, 256), which ONNX Runtime refuses",
                x.scale, y.scale
            ),
        ));
    }
    Ok(m)
}

impl<'a> OpKind<'a> for OrtOp {
    fn name(&self) -> &'static str {
        match self {
            OrtOp::GlobalAvg(_) => "global_avg_pool",
            OrtOp::AvgPool(..) => "avg_pool_requant",
            OrtOp::Softmax(..) => "softmax",
        }
    }
    fn infer(&self, engine: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo> {
        let name = self.name();
        need_ort(engine, name)?;
        let x = ins[0];
        let q = quantized(x)?;
        let out = match self {
            OrtOp::GlobalAvg(o) | OrtOp::AvgPool(_, _, o) | OrtOp::Softmax(_, o) => *o,
        };
        out.validate(&format!("{name} output"))?;
        if out.signed != q.signed {
            return Err(Error::dtype(
                format!("{name} output"),
                format!(
                    "{}, the input is {}: ONNX Runtime's op has one type for both",
                    out.dtype_name(),
                    q.dtype_name()
                ),
            ));
        }
        let shape = match self {
            OrtOp::GlobalAvg(o) => {
                let [c, h, w] = x.shape[..] else {
                    return Err(Error::shape(
                        name,
                        format!("needs a [C, H, W] input, got {:?}", x.shape),
                    ));
                };
                let n = h.saturating_mul(w);
                check_window_elems(name, n, "an H x W plane")?;
                global_avg_scale(q, *o, n)?;
                vec![c, 1, 1]
            }
            OrtOp::AvgPool(pl, ..) => {
                let [c, h, w] = x.shape[..] else {
                    return Err(Error::shape(
                        name,
                        format!("needs a [C, H, W] input, got {:?}", x.shape),
                    ));
                };
                pl.validate()?;
                let window = pl.kernel[0].saturating_mul(pl.kernel[1]);
                check_window_elems(name, window, "a window")?;
                // the GPU sums f32 values that stay normal (see ort.wgsl)
                check_dequant_scale(name, q)?;
                let (oh, ow) = (pl.out_len(h, 0)?, pl.out_len(w, 1)?);
                vec![c, oh, ow]
            }
            OrtOp::Softmax(axis, _) => {
                if *axis >= x.shape.len() {
                    return Err(Error::config(
                        name,
                        format!(
                            "axis {axis} is not a dimension of the per-sample shape {:?}",
                            x.shape
                        ),
                    ));
                }
                x.shape.clone()
            }
        };
        Ok(TensorInfo {
            shape,
            dtype: DType::QUInt8(out),
        })
    }
    fn write(&self, w: &mut NodeWriter) {
        match self {
            OrtOp::GlobalAvg(o) => w.put_qparams(*o),
            OrtOp::AvgPool(pl, cip, o) => {
                w.put("kernel_size", json!(pl.kernel));
                w.put("stride", json!(pl.stride));
                w.put("pads", json!(pl.pads));
                w.put("ceil_mode", json!(pl.ceil_mode));
                w.put("count_include_pad", json!(cip));
                w.put_qparams(*o);
            }
            OrtOp::Softmax(axis, o) => {
                w.put("axis", json!(axis));
                w.put_qparams(*o);
            }
        }
    }
    fn lower(&self, sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
        let x = sig.inputs[0];
        let q = sig.q_in(0)?;
        let (c, h, w) = crate::layout::chw_u32(&x.shape);
        let (_, oh, ow) = crate::layout::chw_u32(&sig.output.shape);
        let mut p = OrtParams {
            c,
            h,
            w,
            c4: c.div_ceil(4),
            oh,
            ow,
            zp_in: q.zero_point,
            ..Default::default()
        };
        let mut tab = vec![0u32; 1];
        let mode = match self {
            OrtOp::GlobalAvg(o) => {
                p.m = global_avg_scale(q, *o, (h * w) as usize)?;
                p.zp_out = o.zero_point;
                OrtMode::GlobalAvg
            }
            OrtOp::AvgPool(pl, cip, o) => {
                (p.kh, p.kw) = (pl.kernel[0] as u32, pl.kernel[1] as u32);
                (p.sh, p.sw) = (pl.stride[0] as u32, pl.stride[1] as u32);
                (p.pt, p.pl) = (pl.pads[0] as u32, pl.pads[1] as u32);
                p.cip = *cip as u32;
                p.bits = o.scale.to_bits();
                p.zp_out = o.true_zero_point();
                p.offset = o.offset();
                tab = (0..256)
                    .map(|b| (q.scale * (b - q.zero_point) as f32).to_bits())
                    .collect();
                OrtMode::AvgPool
            }
            OrtOp::Softmax(axis, o) => {
                p.axis = *axis as u32;
                p.zp_out = o.zero_point;
                let n = [c, h, w][*axis] as usize;
                let t = softmax_table(q.scale, n);
                let yscale = (1.0f32 / o.scale).floor();
                tab = t
                    .iter()
                    .map(|v| v.to_bits())
                    .chain(t.iter().map(|v| (v * yscale).to_bits()))
                    .collect();
                OrtMode::Softmax
            }
        };
        Ok(Box::new(OrtLowered { p, mode, tab }))
    }
}

fn check_window_elems(op: &str, n: usize, what: &str) -> Result<()> {
    let max = super::pool::MAX_POOL_DIVISOR;
    if n > max {
        return Err(Error::config(
            op,
            format!("{what} of {n} elements exceeds the bound {max}"),
        ));
    }
    Ok(())
}

/// The dequantized bytes and every sum of them stay normal f32 (or zero) on
/// the GPU when the input scale is in `[2^-100, 2^100]`.
/// ExecuTorch's window of output `o` along one dimension of length `len` in
/// its portable `avg_pool2d` (`kernel_reduction_then_map_2d`): `i0 = o*s - p`,
/// `i1 = min(i0 + k, len + p)`, the taps `[max(i0, 0), min(i1, len))`, and
/// the divisor's factor `i1 - i0` (count_include_pad) or the taps' count.
fn portable_pool_window(o: usize, len: usize, k: usize, s: usize, p: usize, cip: bool) -> [u32; 2] {
    let i0 = (o * s) as i64 - p as i64;
    let i1 = (i0 + k as i64).min((len + p) as i64);
    let (c0, c1) = (i0.max(0), i1.min(len as i64));
    let factor = if cip { i1 - i0 } else { (c1 - c0).max(0) };
    [(c0 as u32) | ((c1.max(c0) as u32) << 16), factor as u32]
}

/// `portable_avg_pool2d` ([`Op::PortableAvgPool2d`], engine `xnnpack` only):
/// ExecuTorch's portable `avg_pool2d` kernel on the dequantized input,
/// quantized by XNNPACK's (or the portable) quantize to `out`
/// (tests/data/pt2e/README.md "ExecuTorch portable kernels"): per output the
/// taps of [`portable_pool_window`] summed in f32 in row-major order
/// (`f32(q - z) * s` each), `v = sum / f32(count)` with `count` the product
/// of the two factors or `divisor_override`, `y = sat(rint(v * f32(1/s_out))
/// + z_out)`. Lowered to `ort.wgsl` mode 5 with these windows and factors.
pub(crate) struct PortableAvgPool {
    pub pool: Pool2d,
    pub opts: AvgPoolOpts,
    pub out: QParams,
}

impl<'a> OpKind<'a> for PortableAvgPool {
    fn name(&self) -> &'static str {
        "portable_avg_pool2d"
    }
    fn infer(&self, engine: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo> {
        let name = self.name();
        super::require_engine(
            name,
            engine,
            Requant::Xnnpack,
            "is ExecuTorch's portable kernel under the XNNPACK delegate",
        )?;
        let x = ins[0];
        let q = quantized(x)?;
        self.out.validate(&format!("{name} output"))?;
        check_dequant_scale(name, q)?;
        let [c, h, w] = x.shape[..] else {
            return Err(Error::shape(
                name,
                format!("needs a [C, H, W] input, got {:?}", x.shape),
            ));
        };
        let p = &self.pool;
        if p.dilation != [1, 1] {
            return Err(Error::config(name, "dilation must be [1, 1]"));
        }
        match self.opts.divisor_override {
            Some(0) => return Err(Error::config(name, "divisor_override must be >= 1")),
            Some(d) if d > MAX_POOL_DIVISOR => {
                return Err(Error::config(
                    name,
                    format!("divisor_override {d} exceeds the bound {MAX_POOL_DIVISOR}"),
                ))
            }
            _ => {}
        }
        let window = super::pool::real_window(p, h, w);
        if window > MAX_POOL_DIVISOR {
            return Err(Error::config(
                name,
                format!("a window of {window} elements exceeds the bound {MAX_POOL_DIVISOR}"),
            ));
        }
        if h > 0xffff || w > 0xffff {
            // the windows are packed as start | end << 16
            return Err(Error::shape(
                name,
                format!("input {h}x{w}: H and W are at most 65535"),
            ));
        }
        let (oh, ow) = p.out_hw_nonempty(name, h, w)?;
        Ok(TensorInfo {
            shape: vec![c, oh, ow],
            dtype: DType::QUInt8(self.out),
        })
    }
    fn write(&self, w: &mut NodeWriter) {
        super::pool::write_avg_window(w, &self.pool, &self.opts);
        w.put_qparams_signed(self.out);
    }
    fn lower(&self, sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
        let x = sig.inputs[0];
        let q = sig.q_in(0)?;
        let (c, h, w) = crate::layout::chw_u32(&x.shape);
        let (_, oh, ow) = crate::layout::chw_u32(&sig.output.shape);
        let p = &self.pool;
        let cip = self.opts.count_include_pad;
        let win = |o: u32, i: usize, len: u32| {
            portable_pool_window(
                o as usize,
                len as usize,
                p.kernel[i],
                p.stride[i],
                p.padding[i],
                cip,
            )
        };
        let rows: Vec<[u32; 2]> = (0..oh).map(|o| win(o, 0, h)).collect();
        let cols: Vec<[u32; 2]> = (0..ow).map(|o| win(o, 1, w)).collect();
        windowed_pool_lowered(
            self.name(),
            &format!("{:?}", self.pool),
            q,
            self.out,
            [c, h, w, oh, ow],
            &rows,
            &cols,
            self.opts.divisor_override.unwrap_or(0) as u32,
        )
    }
}

/// `xnnpack_channel_mean` ([`Op::XnnpackChannelMean`], engine `xnnpack`
/// only): what ExecuTorch's XNNPACK delegate computes for
/// `dq -> (per-channel f32 map, e.g. batch_norm [-> relu]) -> mean over H, W
/// -> q`, left in float by XNNPACKQuantizer (densenet's tail
/// `norm5 -> relu -> adaptive_avg_pool2d(1)`): each byte `b` of channel `c`
/// becomes the f32 `values[c][b]` (the exporter's table:
/// `xnnpack_rules.batch_norm_values`), XNNPACK's f32 global average pooling
/// (`static_mean` -> `f32-rdsum` 7p7x, every x86 and scalar kernel the same
/// per channel: `((0 + v_0) + v_1) + ...` over the pixels in row-major
/// order, then `* f32(1.0f / N)`) and XNNPACK's f32 -> qs8 convert
/// `sat(rint(f32(m * f32(1/s_out))) + z_out)` ([`channel_mean_f32`],
/// tests/data/pt2e/README.md "batch norm + mean"). Output `[C, 1, 1]`.
/// Lowered to `ort.wgsl` mode 6 with the values as the table.
pub(crate) struct XnnpackChannelMean<'a> {
    pub values: &'a Arc<Vec<f32>>,
    pub out: QParams,
}

impl<'a> OpKind<'a> for XnnpackChannelMean<'a> {
    fn name(&self) -> &'static str {
        "xnnpack_channel_mean"
    }
    fn infer(&self, engine: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo> {
        let name = self.name();
        super::require_engine(
            name,
            engine,
            Requant::Xnnpack,
            "is XNNPACK's f32 global average",
        )?;
        let x = ins[0];
        quantized(x)?;
        self.out.validate(&format!("{name} output"))?;
        check_dequant_scale(&format!("{name} output"), self.out)?;
        let [c, h, w] = x.shape[..] else {
            return Err(Error::shape(
                name,
                format!("needs a [C, H, W] input, got {:?}", x.shape),
            ));
        };
        if h * w == 0 || h * w > 1 << 24 {
            return Err(Error::shape(
                name,
                format!("input {h}x{w}: 1 to 2^24 pixels per channel"),
            ));
        }
        if c.checked_mul(256) != Some(self.values.len()) {
            return Err(Error::shape(
                format!("{name} values"),
                format!(
                    "{} values for an input of {c} channels: {c} x 256 expected",
                    self.values.len()
                ),
            ));
        }
        // a GPU may flush subnormals in f32 arithmetic; XNNPACK does not
        if let Some(i) = self
            .values
            .iter()
            .position(|v| !v.is_finite() || v.is_subnormal())
        {
            return Err(Error::config(
                format!("{name} values"),
                format!(
                    "value {} (channel {}, byte {}) is not finite or subnormal: only 0 and normal f32 values are supported",
                    self.values[i],
                    i / 256,
                    i % 256
                ),
            ));
        }
        Ok(TensorInfo {
            shape: vec![c, 1, 1],
            dtype: DType::QUInt8(self.out),
        })
    }
    fn write(&self, w: &mut NodeWriter) {
        w.put_qparams_signed(self.out);
        let c = self.values.len() / 256;
        w.tensors.push((
            format!("{}.values", w.node),
            safetensors::Dtype::F32,
            vec![c, 256],
            self.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
    }
    fn lower(&self, sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
        let x = sig.inputs[0];
        let (c, h, w) = crate::layout::chw_u32(&x.shape);
        let n = (h * w) as f32;
        let p = OrtParams {
            c,
            h,
            w,
            c4: c.div_ceil(4),
            oh: 1,
            ow: 1,
            bits: (1.0f32 / n).to_bits(),
            zp_out: self.out.zero_point,
            m: self.out.inv_scale(),
            ..Default::default()
        };
        Ok(Box::new(OrtLowered {
            p,
            mode: OrtMode::XnnChannelMean,
            tab: self.values.iter().map(|v| v.to_bits()).collect(),
        }))
    }
}

/// XNNPACK's f32 mean of one channel's plane of bytes through `value`
/// (`f32-rdsum` on this CPU: one accumulator per channel, the pixels added
/// in row-major order from 0.0, then one product by `inv_n = f32(1.0f /
/// f32(N))`; `N = plane.len()`).
pub fn channel_mean_f32(value: impl Fn(u8) -> f32, plane: &[u8], inv_n: f32) -> f32 {
    let mut sum = 0f32;
    for &b in plane {
        sum += value(b); // f32 addition commutes: XNNPACK's `row + acc`
    }
    sum * inv_n
}

/// `ort.wgsl` mode 5 ([`OrtMode::PortableAdaptive`]) for host windows:
/// `rows` / `cols` hold per output row / column `start | end << 16` and the
/// divisor's factor; `div_override` (when not 0) replaces the product of the
/// factors. Input `q`, output `out`; `dims` = `[c, h, w, oh, ow]`.
#[allow(clippy::too_many_arguments)]
fn windowed_pool_lowered<'a>(
    name: &str,
    what: &str,
    q: QParams,
    out: QParams,
    dims: [u32; 5],
    rows: &[[u32; 2]],
    cols: &[[u32; 2]],
    div_override: u32,
) -> Result<Box<dyn Lowered + 'a>> {
    let [c, h, w, oh, ow] = dims;
    for r in rows.iter().chain(cols) {
        if r[0] & 0xffff >= r[0] >> 16 {
            return Err(Error::config(
                name,
                format!("a window holds no input tap ({what})"),
            ));
        }
    }
    let mut tab: Vec<u32> = (0..256)
        .map(|b| ((b - q.zero_point) as f32 * q.scale).to_bits())
        .collect();
    tab.extend(rows.iter().map(|r| r[0]));
    tab.extend(cols.iter().map(|r| r[0]));
    tab.extend(rows.iter().map(|r| r[1]));
    tab.extend(cols.iter().map(|r| r[1]));
    let params = OrtParams {
        c,
        h,
        w,
        c4: c.div_ceil(4),
        oh,
        ow,
        kh: div_override,
        zp_out: out.zero_point,
        m: out.inv_scale(),
        ..Default::default()
    };
    Ok(Box::new(OrtLowered {
        p: params,
        mode: OrtMode::PortableAdaptive,
        tab,
    }))
}

/// Inductor's `avg_pool2d` (`pool`: the window and options) or
/// `adaptive_avg_pool2d` (`pool` = None; the output size is the signature's)
/// under [`Requant::InductorX86`]: the C++ Inductor generates for `dq -> pool
/// -> q` with equal qparams (tests/data/pt2e/README.md, "Inductor x86
/// graphs"), the same operations as ExecuTorch's portable kernels: per output
/// an f32 sum of `f32(q - z) * s` over the window's taps in row-major order
/// (taps in the padding or outside an adaptive window are masked loads of
/// `0.0`, which leave the sum unchanged), `v = sum / f32(count)` (a division,
/// also by a constant divisor on the CPU), `y = sat(rint(v * f32(1/s)) + z)`.
/// avg_pool2d: `count` = `divisor_override`, else the window clipped to the
/// padded input (count_include_pad) or to the input; adaptive: windows
/// `[floor(o L / O), ceil((o + 1) L / O))` in integers, `count` their size.
pub(crate) fn inductor_pool_lowered<'a>(
    sig: &Signature<'_>,
    pool: Option<(Pool2d, AvgPoolOpts)>,
) -> Result<Box<dyn Lowered + 'a>> {
    let x = sig.inputs[0];
    let q = sig.q_in(0)?;
    let name = if pool.is_some() {
        "avg_pool2d"
    } else {
        "adaptive_avg_pool2d"
    };
    check_dequant_scale(name, q)?;
    let (c, h, w) = crate::layout::chw_u32(&x.shape);
    let (_, oh, ow) = crate::layout::chw_u32(&sig.output.shape);
    if h > 0xffff || w > 0xffff {
        // the windows are packed as start | end << 16
        return Err(Error::shape(
            name,
            format!("input {h}x{w}: under the inductor_x86 engine H and W are at most 65535"),
        ));
    }
    let (rows, cols, div, what): (Vec<[u32; 2]>, Vec<[u32; 2]>, u32, String) = match pool {
        Some((p, o)) => {
            let win = |i: usize, len: u32, n: u32| -> Vec<[u32; 2]> {
                (0..n)
                    .map(|o_| {
                        portable_pool_window(
                            o_ as usize,
                            len as usize,
                            p.kernel[i],
                            p.stride[i],
                            p.padding[i],
                            o.count_include_pad,
                        )
                    })
                    .collect()
            };
            (
                win(0, h, oh),
                win(1, w, ow),
                o.divisor_override.unwrap_or(0) as u32,
                format!("{p:?}"),
            )
        }
        None => {
            let win = |len: u32, n: u32| -> Vec<[u32; 2]> {
                (0..n)
                    .map(|o_| {
                        let (s, e) =
                            super::pool::adaptive_window(o_ as usize, len as usize, n as usize);
                        [s as u32 | (e as u32) << 16, (e - s) as u32]
                    })
                    .collect()
            };
            (win(h, oh), win(w, ow), 0, format!("output {oh}x{ow}"))
        }
    };
    windowed_pool_lowered(name, &what, q, q, [c, h, w, oh, ow], &rows, &cols, div)
}

/// `xnnpack_avg_pool2d` ([`Op::XnnpackAvgPool2d`], engine `xnnpack` only):
/// what ExecuTorch's XNNPACK delegate computes for a float `avg_pool2d`
/// (no ceil_mode; padding not counted in the divisor) between a dequantize
/// and a quantize (densenet's transitions): XNNPACK's qs8 -> f32 convert
/// `f32(q - z) * s`, its f32 average pooling ([`xnn_avg_pool_f32`]) and its
/// f32 -> qs8 convert `sat(rint(f32(v * f32(1/s_out))) + z_out)`
/// (tests/data/pt2e/README.md "avg_pool2d (XNNPACK)"). Lowered to `ort.wgsl`
/// mode 7 with the dequantized bytes as the table.
pub(crate) struct XnnpackAvgPool {
    pub pool: Pool2d,
    pub out: QParams,
}

impl<'a> OpKind<'a> for XnnpackAvgPool {
    fn name(&self) -> &'static str {
        "xnnpack_avg_pool2d"
    }
    fn infer(&self, engine: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo> {
        let name = self.name();
        super::require_engine(
            name,
            engine,
            Requant::Xnnpack,
            "is XNNPACK's f32 average pooling",
        )?;
        let x = ins[0];
        let q = quantized(x)?;
        self.out.validate(&format!("{name} output"))?;
        // the dequantized bytes and their sums are 0 or >= 2^-113 (normal),
        // and so is a sum times 1/window (>= 2^-23): no subnormal meets the GPU
        if !(2f32.powi(-90)..=2f32.powi(100)).contains(&q.scale) {
            return Err(Error::qparams(
                format!("{name} input"),
                format!("scale {:e} is outside [2^-90, 2^100]", q.scale),
            ));
        }
        let [c, h, w] = x.shape[..] else {
            return Err(Error::shape(
                name,
                format!("needs a [C, H, W] input, got {:?}", x.shape),
            ));
        };
        let p = &self.pool;
        if p.dilation != [1, 1] || p.ceil_mode {
            return Err(Error::config(
                name,
                "dilation must be [1, 1] and ceil_mode false (XNNPACK's pooling)",
            ));
        }
        let window = p.kernel[0].saturating_mul(p.kernel[1]);
        if window > MAX_POOL_DIVISOR {
            return Err(Error::config(
                name,
                format!("a window of {window} elements exceeds the bound {MAX_POOL_DIVISOR}"),
            ));
        }
        if (0..2).any(|i| p.padding[i] >= p.kernel[i]) {
            return Err(Error::config(
                name,
                format!(
                    "padding {:?} must be smaller than the kernel {:?}",
                    p.padding, p.kernel
                ),
            ));
        }
        let (oh, ow) = p.out_hw_nonempty(name, h, w)?;
        Ok(TensorInfo {
            shape: vec![c, oh, ow],
            dtype: DType::QUInt8(self.out),
        })
    }
    fn write(&self, w: &mut NodeWriter) {
        let p = &self.pool;
        w.put("kernel_size", json!(p.kernel));
        w.put("stride", json!(p.stride));
        w.put("padding", json!(p.padding));
        w.put_qparams_signed(self.out);
    }
    fn lower(&self, sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
        let x = sig.inputs[0];
        let q = sig.q_in(0)?;
        let (c, h, w) = crate::layout::chw_u32(&x.shape);
        let (_, oh, ow) = crate::layout::chw_u32(&sig.output.shape);
        let p = &self.pool;
        let tab: Vec<u32> = (0..256)
            .map(|b| ((b - q.zero_point) as f32 * q.scale).to_bits())
            .collect();
        let params = OrtParams {
            c,
            h,
            w,
            c4: c.div_ceil(4),
            oh,
            ow,
            kh: p.kernel[0] as u32,
            kw: p.kernel[1] as u32,
            sh: p.stride[0] as u32,
            sw: p.stride[1] as u32,
            pt: p.padding[0] as u32,
            pl: p.padding[1] as u32,
            zp_out: self.out.zero_point,
            m: self.out.inv_scale(),
            ..Default::default()
        };
        Ok(Box::new(OrtLowered {
            p: params,
            mode: OrtMode::XnnAvgPool,
            tab,
        }))
    }
}

/// XNNPACK's f32 average pooling (`xnn_f32_avgpool_minmax_ukernel_9p__*`
/// at 92a7ad50, every x86 and the scalar kernel alike) of one output: the
/// window's taps in the indirection order (column-major: `t = kx * kh + ky`;
/// a tap in the padding reads XNNPACK's zero buffer, `+0.0`; `tap(ky, kx)`
/// gives `None` there), in passes of 9 (a last pass's missing taps `+0.0`),
/// each pass `s = ((i2+i3)+(i4+i5)) + (((i0+i1)+i8)+(i6+i7))` and
/// `acc = acc + s` from `+0.0`, then `acc * f32(1.0f / n)` with `n` the
/// number of taps inside the input (the pooling size when unpadded).
pub fn xnn_avg_pool_f32(kh: usize, kw: usize, tap: impl Fn(usize, usize) -> Option<f32>) -> f32 {
    let k = kh * kw;
    let mut acc = 0f32;
    let mut n = 0u32;
    let mut t0 = 0;
    while t0 < k {
        let mut i = [0f32; 9];
        for (j, v) in i.iter_mut().enumerate() {
            let t = t0 + j;
            if t < k {
                if let Some(x) = tap(t % kh, t / kh) {
                    *v = x;
                    n += 1;
                }
            }
        }
        let s018 = (i[0] + i[1]) + i[8];
        let s23 = i[2] + i[3];
        let s45 = i[4] + i[5];
        let s67 = i[6] + i[7];
        acc += (s23 + s45) + (s018 + s67);
        t0 += 9;
    }
    acc * (1.0f32 / n as f32)
}

fn check_dequant_scale(op: &str, q: QParams) -> Result<()> {
    if !(2f32.powi(-100)..=2f32.powi(100)).contains(&q.scale) {
        return Err(Error::qparams(
            format!("{op} input"),
            format!("scale {:e} is outside [2^-100, 2^100]", q.scale),
        ));
    }
    Ok(())
}

/// The constants of ORT's ops, shared by the CPU loop and `ort.wgsl`: the
/// uniforms, the mode, and the table (f32 bit patterns; see each mode).
pub(crate) struct OrtLowered {
    pub p: OrtParams,
    pub mode: OrtMode,
    pub tab: Vec<u32>,
}

impl OrtLowered {
    fn tab(&self, i: usize) -> f32 {
        f32::from_bits(self.tab[i])
    }

    /// QLinearGlobalAveragePool of one channel plane.
    fn global_avg(&self, plane: &[u8]) -> u8 {
        let p = &self.p;
        let sum: i64 = plane.iter().map(|&b| b as i64).sum();
        let acc = (sum - p.zp_in as i64 * plane.len() as i64) as i32;
        let r = (acc as f32 * p.m).round_ties_even();
        (r as i64 + p.zp_out as i64).clamp(0, 255) as u8
    }

    /// ExecuTorch's portable adaptive average of one output, quantized by
    /// XNNPACK's rule (see [`portable_adaptive_lowered`]).
    fn portable_adaptive(&self, plane: &[u8], oy: usize, ox: usize) -> u8 {
        let p = &self.p;
        let (ry, rx) = (self.tab[256 + oy], self.tab[256 + p.oh as usize + ox]);
        let (h0, h1) = ((ry & 0xffff) as usize, (ry >> 16) as usize);
        let (w0, w1) = ((rx & 0xffff) as usize, (rx >> 16) as usize);
        let w = p.w as usize;
        let mut sum = 0f32;
        for iy in h0..h1 {
            for ix in w0..w1 {
                sum += self.tab(plane[iy * w + ix] as usize);
            }
        }
        let (oh, ow) = (p.oh as usize, p.ow as usize);
        let count = if p.kh != 0 {
            p.kh
        } else {
            self.tab[256 + oh + ow + oy] * self.tab[256 + 2 * oh + ow + ox]
        };
        let v = sum / count as f32;
        crate::quant::quantize_with_inv(v, p.m, p.zp_out)
    }

    /// XNNPACK's f32 average pooling of one output, then its convert.
    fn xnn_avg_pool(&self, plane: &[u8], oy: usize, ox: usize) -> u8 {
        let p = &self.p;
        let (h, w) = (p.h as i64, p.w as i64);
        let y0 = (oy * p.sh as usize) as i64 - p.pt as i64;
        let x0 = (ox * p.sw as usize) as i64 - p.pl as i64;
        let v = xnn_avg_pool_f32(p.kh as usize, p.kw as usize, |ky, kx| {
            let (iy, ix) = (y0 + ky as i64, x0 + kx as i64);
            ((0..h).contains(&iy) && (0..w).contains(&ix))
                .then(|| self.tab(plane[(iy * w + ix) as usize] as usize))
        });
        crate::quant::quantize_with_inv(v, p.m, p.zp_out)
    }

    /// QLinearAveragePool of one output.
    fn avg_pool(&self, plane: &[u8], oy: usize, ox: usize) -> u8 {
        let p = &self.p;
        let (h, w) = (p.h as i64, p.w as i64);
        let hs0 = (oy * p.sh as usize) as i64 - p.pt as i64;
        let ws0 = (ox * p.sw as usize) as i64 - p.pl as i64;
        let (he, we) = ((hs0 + p.kh as i64).min(h), (ws0 + p.kw as i64).min(w));
        let (hs, ws) = (hs0.max(0), ws0.max(0));
        let mut sum = 0f32;
        for iy in hs..he {
            for ix in ws..we {
                sum += self.tab(plane[(iy * w + ix) as usize] as usize);
            }
        }
        let taps = ((he - hs).max(0) * (we - ws).max(0)) as u32;
        let count = if p.cip != 0 { p.kh * p.kw } else { taps };
        let v = sum / count as f32;
        let r = (v / f32::from_bits(p.bits) + p.zp_out as f32).round_ties_even();
        let lo = -p.offset as f32;
        let hi = (255 - p.offset) as f32;
        (r.clamp(lo, hi) as i32 + p.offset) as u8
    }

    /// QLinearSoftmax of every row of one sample `[c, h, w]` along `p.axis`.
    fn softmax(&self, x: &[u8], y: &mut [u8]) {
        let p = &self.p;
        let (c, h, w) = (p.c as usize, p.h as usize, p.w as usize);
        let (n, stride) = match p.axis {
            0 => (c, h * w),
            1 => (h, w),
            _ => (w, 1),
        };
        for start in 0..c * h * w {
            // the first element of each row: index 0 along the axis
            if (start / stride) % n != 0 {
                continue;
            }
            let at = |k: usize| x[start + k * stride] as usize;
            let m = (0..n).map(at).max().unwrap_or(0);
            let mut sum = 0f32;
            for k in 0..n {
                sum += self.tab(m - at(k));
            }
            for k in 0..n {
                let q = (self.tab(256 + m - at(k)) / sum).round_ties_even();
                let v = if q >= 4194304.0 {
                    255
                } else {
                    (q as i32 + p.zp_out).min(255)
                };
                y[start + k * stride] = v as u8;
            }
        }
    }
}

impl Lowered for OrtLowered {
    fn run_cpu(&self, io: &CpuIo<'_>) -> Result<Value> {
        let (x, shape, _) = io.q(0)?;
        let p = &self.p;
        let (c, h, w) = (p.c as usize, p.h as usize, p.w as usize);
        crate::layout::check_data_len(x.len(), shape)?;
        let sample = c * h * w;
        if shape.len() < 2 || shape[1..].iter().product::<usize>() != sample {
            return Err(Error::shape(
                "input",
                format!("{shape:?}, lowered for [N, {c}, {h}, {w}]"),
            ));
        }
        let len = super::checked_product("output", &io.out_shape())?;
        let mut y = super::try_vec(len, 0u8, "output")?;
        match self.mode {
            OrtMode::Quantize => {
                return Err(Error::Unsupported(
                    "ort quantize runs through the quantize op".into(),
                ))
            }
            OrtMode::GlobalAvg => {
                for (o, plane) in y.iter_mut().zip(x.chunks(h * w)) {
                    *o = self.global_avg(plane);
                }
            }
            OrtMode::PortableAdaptive => {
                let (oh, ow) = (p.oh as usize, p.ow as usize);
                for (out, plane) in y.chunks_mut(oh * ow).zip(x.chunks(h * w)) {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            out[oy * ow + ox] = self.portable_adaptive(plane, oy, ox);
                        }
                    }
                }
            }
            OrtMode::XnnChannelMean => {
                let inv_n = f32::from_bits(p.bits);
                for (k, (o, plane)) in y.iter_mut().zip(x.chunks(h * w)).enumerate() {
                    let t = &self.tab[(k % c) * 256..][..256];
                    let v = channel_mean_f32(|b| f32::from_bits(t[b as usize]), plane, inv_n);
                    *o = crate::quant::quantize_with_inv(v, p.m, p.zp_out);
                }
            }
            OrtMode::XnnAvgPool => {
                let (oh, ow) = (p.oh as usize, p.ow as usize);
                for (out, plane) in y.chunks_mut(oh * ow).zip(x.chunks(h * w)) {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            out[oy * ow + ox] = self.xnn_avg_pool(plane, oy, ox);
                        }
                    }
                }
            }
            OrtMode::XnnMean => {
                for (o, plane) in y.iter_mut().zip(x.chunks(h * w)) {
                    let sum: u64 = plane.iter().map(|&b| b as u64).sum();
                    *o = crate::ops::xnnpack::mean_byte_raw(
                        sum,
                        h * w,
                        p.zp_in,
                        p.m,
                        f32::from_bits(p.bits),
                        p.offset,
                    );
                }
            }
            OrtMode::AvgPool => {
                let (_, _, _, _) = dims4(shape, "avg_pool_requant input")?;
                let (oh, ow) = (p.oh as usize, p.ow as usize);
                for (out, plane) in y.chunks_mut(oh * ow).zip(x.chunks(h * w)) {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            out[oy * ow + ox] = self.avg_pool(plane, oy, ox);
                        }
                    }
                }
            }
            OrtMode::Softmax => {
                for (out, xs) in y.chunks_mut(sample).zip(x.chunks(sample)) {
                    self.softmax(xs, out);
                }
            }
        }
        io.q_out(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table form of the softmax equals ORT's own two tables (uint8 and
    /// int8 indexing) as `src/onnx/reference.rs` builds them.
    #[test]
    fn softmax_table_is_orts_for_both_types() {
        for (xs, d) in [(0.05f32, 10usize), (0.3, 1000), (1.7, 3), (0.001, 1)] {
            let t = softmax_table(xs, d);
            let x = xs as f64;
            let shift = (((f32::MAX / d as f32) as f64).ln() - 5.0).max(0.0) / x;
            let mut tu = [0f32; 256];
            let mut ts = [0f32; 256];
            for i in 0..256usize {
                let v = ((i as f64 - 255.0 + shift) * x).exp() as f32;
                tu[i] = v;
                ts[(i as i32 - 128) as u8 as usize] = v;
            }
            for m in 0..256i32 {
                for xv in 0..=m {
                    let d = (m - xv) as usize;
                    assert_eq!(t[d].to_bits(), tu[(255 - m + xv) as usize].to_bits());
                    // int8: true values m - 128, xv - 128
                    let (mt, xt) = (m - 128, xv - 128);
                    let i = ((127 - mt + xt) as u32 & 0xff) as usize;
                    assert_eq!(t[d].to_bits(), ts[i].to_bits());
                }
            }
        }
    }

    #[test]
    fn window_sizes_are_onnx() {
        let p = OrtPool2d {
            kernel: [2, 2],
            stride: [2, 2],
            pads: [0, 0, 0, 0],
            ceil_mode: true,
        };
        assert_eq!(p.out_len(7, 0).unwrap(), 4);
        let p = OrtPool2d {
            kernel: [3, 3],
            stride: [2, 2],
            pads: [1, 1, 1, 1],
            ceil_mode: false,
        };
        assert_eq!(p.out_len(7, 0).unwrap(), 4);
        assert_eq!(p.out_len(8, 1).unwrap(), 4);
        let bad = OrtPool2d {
            pads: [3, 0, 0, 0],
            ..p
        };
        assert!(matches!(bad.validate(), Err(Error::Config { .. })));
    }
}
