//! `resize`: ONNX Runtime's `Resize` of the H and W axes of a quantized
//! `[C, H, W]` tensor, mode `linear` (bit-exact with ORT 1.32's CPU kernel
//! `UpsampleBilinear` in `upsample.h`, float weights; described below) or
//! mode `cubic` (`ResizeBiCubic`, rule requantize only: see [`cubic_coeffs`],
//! [`cubic_taps`] and `docs/MODEL_FORMAT.md`); and PyTorch's quantized
//! bilinear upsampling, mode `torch_bilinear` (ATen's two kernels, rule
//! round: see [`ResizeMode::TorchBilinear`], [`torch_scale`], [`torch_taps`],
//! `tests/data/upsample/README.md`).
//!
//! Per output axis (`o` outputs from `d` inputs, f32 `scale`): the source
//! coordinate `v` is `f32(o_idx)` when `scale == 1`, else the
//! `coordinate_transformation_mode`'s f32 formula (`half_pixel`:
//! `(x + 0.5) / s - 0.5`, `pytorch_half_pixel`: the same, 0 when `o == 1`,
//! `asymmetric`: `x / s`, `align_corners`: `x * f32(d - 1) / f32(o - 1)`, 0
//! when `o == 1`), clamped to `[0, d - 1]`; `i1 = trunc(v)`,
//! `i2 = min(i1 + 1, d - 1)`, `d1 = |v - i1|`, `d2 = |v - i2|`, both 0.5 when
//! `i1 == i2`. Output `= (((dx2*dy2)*X11 + (dx1*dy2)*X21) + (dx2*dy1)*X12) +
//! (dx1*dy1)*X22` in f32, left to right, no fused multiply-add, where `X11`
//! is the input at `(y1, x1)`, `X21` at `(y1, x2)`, `X12` at `(y2, x1)`,
//! `X22` at `(y2, x2)`. When the output size equals the input size on both
//! axes ORT copies the input (no arithmetic).
//!
//! Two rules for the values `X` and the result:
//! - [`ResizeRule::Truncate`]: ORT's Resize on the uint8/int8 tensor itself
//!   (a QOperator graph): `X` is the stored **true** value (`byte - offset`),
//!   the result is truncated toward zero (`static_cast<T>(float)`) and keeps
//!   the input's qparams. Truncation toward zero is not symmetric under the
//!   qint8 image shift, so it runs on true values.
//! - [`ResizeRule::Requantize`]: a QDQ `DQ -> Resize -> Q`, which ORT 1.32
//!   does not fuse for mode linear: `X = f32(q - zp) * s` (rule DQ), the
//!   result is quantized by rule Q (`sat(rint(v / s_out) + zp_out)`, a true
//!   division) to the output's qparams.
//!
//! The GPU kernel (`shaders/resize.wgsl`) multiplies in integer arithmetic
//! on f32 bit patterns (correctly rounded, so no multiply can be contracted
//! into an add) and divides with the float prelude's `fdiv`
//! (`shaders/float.wgsl`); mode torch_bilinear computes every product, sum
//! and fused multiply-add with the prelude's integer-exact `fmul_exact`,
//! `fadd_exact` and `ffma`.

pub(crate) mod gpu;

use serde_json::json;

use crate::error::{Error, Result};
use crate::model::{DType, TensorInfo, Value};
use crate::quant::{QParams, Requant};

use super::{quantized, Attrs, CpuIo, FileOp, Lowered, NodeWriter, Op, OpKind, ParseCx, Signature};

pub use gpu::ResizeParams;

pub(crate) const FILE_OPS: &[FileOp] = &[FileOp {
    name: "resize",
    attributes: &[
        "size",
        "scales",
        "coordinate_transformation_mode",
        "rule",
        "mode",
        "cubic_coeff_a",
        "scale",
        "zero_point",
        "layout",
        "lanes",
    ],
    parse: parse_resize,
}];

/// The largest output size along H or W.
pub const MAX_RESIZE: usize = 1 << 16;

/// ONNX's `coordinate_transformation_mode`s that qfuse runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coord {
    /// `(x + 0.5) / scale - 0.5`.
    HalfPixel,
    /// `half_pixel`, but 0 for an output of length 1.
    PytorchHalfPixel,
    /// `x / scale`.
    Asymmetric,
    /// `x * (in - 1) / (out - 1)`, 0 for an output of length 1.
    AlignCorners,
}

impl Coord {
    /// The ONNX attribute value.
    pub fn name(self) -> &'static str {
        match self {
            Coord::HalfPixel => "half_pixel",
            Coord::PytorchHalfPixel => "pytorch_half_pixel",
            Coord::Asymmetric => "asymmetric",
            Coord::AlignCorners => "align_corners",
        }
    }
    /// Parses an ONNX attribute value; `None` for modes qfuse does not run.
    pub fn parse(s: &str) -> Option<Coord> {
        Some(match s {
            "half_pixel" => Coord::HalfPixel,
            "pytorch_half_pixel" => Coord::PytorchHalfPixel,
            "asymmetric" => Coord::Asymmetric,
            "align_corners" => Coord::AlignCorners,
            _ => return None,
        })
    }
    /// ORT's source coordinate of output index `x` (`upsamplebase.h`), f32.
    pub fn source(self, x: usize, scale: f32, out_len: usize, in_len: usize) -> f32 {
        let xf = x as f32;
        match self {
            Coord::HalfPixel => (xf + 0.5) / scale - 0.5,
            Coord::PytorchHalfPixel if out_len > 1 => (xf + 0.5) / scale - 0.5,
            Coord::PytorchHalfPixel => 0.0,
            Coord::Asymmetric => xf / scale,
            Coord::AlignCorners if out_len == 1 => 0.0,
            Coord::AlignCorners => xf * (in_len as f32 - 1.0) / (out_len as f32 - 1.0),
        }
    }
}

/// How the interpolated value becomes a byte (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeRule {
    /// ORT's Resize on the quantized tensor: true values, truncation toward
    /// zero, the input's qparams.
    Truncate,
    /// ORT's DQ -> Resize (float) -> Q.
    Requantize,
    /// PyTorch's quantized upsampling (mode [`ResizeMode::TorchBilinear`]
    /// only): `sat(rint(v - f32(zp)) + zp)` on true values, the input's
    /// qparams.
    Round,
}

impl ResizeRule {
    fn name(self) -> &'static str {
        match self {
            ResizeRule::Truncate => "truncate",
            ResizeRule::Requantize => "requantize",
            ResizeRule::Round => "round",
        }
    }
}

/// A bilinear resize of H and W (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Resize {
    /// Output `[H, W]`, each in `1..=MAX_RESIZE`.
    pub size: [usize; 2],
    /// ORT's f32 scales for H and W (the `scales` input, or
    /// `f32(out) / f32(in)` when the model gives `sizes`), finite and > 0.
    pub scales: [f32; 2],
    /// The coordinate transformation.
    pub coord: Coord,
    /// How the interpolated value becomes a byte.
    pub rule: ResizeRule,
    /// The output's qparams (the input's under [`ResizeRule::Truncate`]).
    pub out: QParams,
    /// Linear, or cubic (only under [`ResizeRule::Requantize`]).
    pub mode: ResizeMode,
}

/// The interpolation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ResizeMode {
    /// ORT's `UpsampleBilinear` (the module docs).
    Linear,
    /// ORT's `ResizeBiCubic` with this `cubic_coeff_a` (see [`cubic_coeffs`]).
    Cubic(f32),
    /// PyTorch's quantized bilinear upsampling (ATen's
    /// `upsample_bilinear2d` of a quantized tensor; the rules are in
    /// [`torch_taps`] and `docs/MODEL_FORMAT.md`): rule [`ResizeRule::Round`],
    /// coordinate transformation [`Coord::AlignCorners`] or
    /// [`Coord::HalfPixel`] (PyTorch's `scale * (x + 0.5) - 0.5`, 0 when
    /// negative), and `scales` holding ATen's per-axis f32 scale
    /// ([`torch_scale`]: input step per output step, not ORT's out/in).
    TorchBilinear {
        /// The input was channels-last (`is_contiguous(channels_last)`,
        /// every quantized conv output): ATen's NHWC kernel, with FMA;
        /// false: the contiguous NCHW kernel, no FMA.
        channels_last: bool,
        /// The NHWC kernel's vector width (8: ATen's AVX2 kernel): channels
        /// below `lanes * floor(C / lanes)` take the vector formula.
        lanes: u32,
    },
    /// PyTorch's FLOAT bilinear upsampling between a dequantize and a
    /// `quantize_per_tensor` (FX's `dq -> nn.Upsample -> q`; rules in
    /// [`torch_float_taps`], `tests/data/upsample/README.md` and
    /// `tools/torch_float_upsample_rules.py`): rule [`ResizeRule::Requantize`]
    /// with PyTorch's quantize (`sat(rint(v * f32(1 / s_out)) + zp_out)`),
    /// coordinates as [`ResizeMode::TorchBilinear`], `scales` ATen's.
    TorchBilinearFloat {
        /// ATen's `cpu_upsample_linear_channels_last` kernel (taken when the
        /// input is channels-last with C > 3, or OH + OW <= 128, or one
        /// thread and C == 3); false: `upsample_generic_Nd_kernel_impl`.
        channels_last: bool,
        /// The channels-last kernel's vector width (8 measured).
        lanes: u32,
    },
}

/// The taps of one axis under ATen's float bilinear rule
/// (`compute_source_index_and_lambda<float>`): an axis whose output length
/// equals its input's takes `(x, x, 1, 0)`; else `v` as in [`torch_taps`]
/// (`fused`: the channels-last kernel), `i0 = min(floor(v), in - 1)`,
/// `l1 = clamp(v - i0, 0, 1)`, `l0 = 1 - l1`. `None` when `v` is not finite.
pub fn torch_float_taps(
    align_corners: bool,
    scale: f32,
    out_len: usize,
    in_len: usize,
    fused: bool,
) -> Option<Vec<TorchTap>> {
    (0..out_len)
        .map(|x| {
            if out_len == in_len {
                return Some(TorchTap {
                    i0: x,
                    i1: x,
                    l0: 1.0,
                    l1: 0.0,
                });
            }
            let d = x as f32;
            let v = if align_corners {
                scale * d
            } else {
                let v = if fused {
                    scale.mul_add(d + 0.5, -0.5)
                } else {
                    scale * (d + 0.5) - 0.5
                };
                if v < 0.0 {
                    0.0
                } else {
                    v
                }
            };
            if !(v.is_finite() && v >= 0.0) {
                return None;
            }
            let i0 = (v.floor() as usize).min(in_len - 1);
            let l1 = (v - i0 as f32).clamp(0.0, 1.0);
            Some(TorchTap {
                i0,
                i1: if i0 + 1 < in_len { i0 + 1 } else { i0 },
                l0: 1.0 - l1,
                l1,
            })
        })
        .collect()
}

/// ATen's per-axis scale (`area_pixel_compute_scale<float>`): the source
/// step per output index. `align_corners`: `f32(in - 1) / f32(out - 1)` (0
/// when `out == 1`); else `f32(1 / scale_factor)` (the reciprocal in f64)
/// when the op is given a scale factor, else `f32(in) / f32(out)`.
pub fn torch_scale(
    in_len: usize,
    out_len: usize,
    align_corners: bool,
    scale_factor: Option<f64>,
) -> f32 {
    if align_corners {
        if out_len > 1 {
            (in_len as f32 - 1.0) / (out_len as f32 - 1.0)
        } else {
            0.0
        }
    } else if let Some(s) = scale_factor.filter(|s| *s > 0.0) {
        (1.0 / s) as f32
    } else {
        in_len as f32 / out_len as f32
    }
}

/// One output index's taps under PyTorch's bilinear rule: source indices
/// `i0` and `i1` (`i0 + 1`, or `i0` on the last row/column) and their f32
/// weights `l0 = 1 - l1`, `l1 = v - i0`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TorchTap {
    /// `trunc(v)`.
    pub i0: usize,
    /// `i0 + 1` when `i0 < in - 1`, else `i0`.
    pub i1: usize,
    /// The weight of `i0`.
    pub l0: f32,
    /// The weight of `i1`.
    pub l1: f32,
}

/// The taps of one axis under PyTorch's rule (ATen's
/// `area_pixel_compute_source_index<float>`, then `h1 = trunc(v)`,
/// `l1 = v - h1`, `l0 = 1 - l1`, all f32): `align_corners`:
/// `v = scale * f32(x)`; else `v = scale * (f32(x) + 0.5) - 0.5`, 0 when
/// negative, computed as `fma(scale, x + 0.5, -0.5)` (one rounding,
/// `f32::mul_add`) when `fused` (the channels-last kernel is compiled with
/// FMA contraction), else as a product then a difference. `None` when a
/// source index is at or past `in_len` (a scale that does not fit the
/// sizes).
pub fn torch_taps(
    align_corners: bool,
    scale: f32,
    out_len: usize,
    in_len: usize,
    fused: bool,
) -> Option<Vec<TorchTap>> {
    (0..out_len)
        .map(|x| {
            let d = x as f32;
            let v = if align_corners {
                scale * d
            } else {
                let v = if fused {
                    scale.mul_add(d + 0.5, -0.5)
                } else {
                    scale * (d + 0.5) - 0.5
                };
                if v < 0.0 {
                    0.0
                } else {
                    v
                }
            };
            if !(v.is_finite() && v >= 0.0 && v < in_len as f32) {
                return None;
            }
            let i0 = (v as usize).min(in_len - 1);
            let l1 = v - i0 as f32;
            Some(TorchTap {
                i0,
                i1: if i0 + 1 < in_len { i0 + 1 } else { i0 },
                l0: 1.0 - l1,
                l1,
            })
        })
        .collect()
}

/// ORT's cubic coefficients (`GetCubicCoeffs`, Keys) of the fraction `s`, in f32.
pub fn cubic_coeffs(s: f32, a: f32) -> [f32; 4] {
    let s = s.abs();
    let t0 = s + 1.0;
    let t2 = 1.0 - s;
    let t3 = 2.0 - s;
    [
        ((a * t0 - 5.0 * a) * t0 + 8.0 * a) * t0 - 4.0 * a,
        ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0,
        ((a + 2.0) * t2 - (a + 3.0)) * t2 * t2 + 1.0,
        ((a * t3 - 5.0 * a) * t3 + 8.0 * a) * t3 - 4.0 * a,
    ]
}

/// One output index's cubic taps: `floor(v)` and the four coefficients of
/// inputs `floor(v) - 1 ..= floor(v) + 2` (clamped to the axis when read).
pub fn cubic_taps(
    coord: Coord,
    scale: f32,
    out_len: usize,
    in_len: usize,
    a: f32,
) -> Vec<(i64, [f32; 4])> {
    (0..out_len)
        .map(|x| {
            let v = if scale == 1.0 {
                x as f32
            } else {
                coord.source(x, scale, out_len, in_len)
            };
            let f = v.floor();
            (f as i64, cubic_coeffs(v - f, a))
        })
        .collect()
}

fn parse_resize(a: &Attrs<'_>, _: &ParseCx<'_>) -> Result<Op> {
    let v = a.get("scales")?;
    let scales: [f32; 2] = v
        .as_array()
        .and_then(|s| {
            let s: Option<Vec<f32>> = s.iter().map(|d| d.as_f64().map(|d| d as f32)).collect();
            s?.try_into().ok()
        })
        .ok_or_else(|| Error::Model(format!("\"scales\" must be [h, w] numbers, got {v}")))?;
    let v = a.get("size")?;
    let size: [usize; 2] = v
        .as_array()
        .and_then(|s| {
            let s: Option<Vec<usize>> = s.iter().map(|d| d.as_u64().map(|d| d as usize)).collect();
            s?.try_into().ok()
        })
        .ok_or_else(|| Error::Model(format!("\"size\" must be [h, w] sizes, got {v}")))?;
    let c = a.get("coordinate_transformation_mode")?;
    let coord = c.as_str().and_then(Coord::parse).ok_or_else(|| {
        Error::Model(format!(
            "coordinate_transformation_mode {c} is not one of \"half_pixel\", \
             \"pytorch_half_pixel\", \"asymmetric\", \"align_corners\""
        ))
    })?;
    let r = a.get("rule")?;
    let rule = match r.as_str() {
        Some("truncate") => ResizeRule::Truncate,
        Some("requantize") => ResizeRule::Requantize,
        Some("round") => ResizeRule::Round,
        _ => {
            return Err(Error::Model(format!(
                "rule {r} is not \"truncate\", \"requantize\" or \"round\""
            )))
        }
    };
    let mode = match a.get("mode")?.as_str() {
        Some("linear") => ResizeMode::Linear,
        Some("cubic") => ResizeMode::Cubic(a.f32("cubic_coeff_a")?),
        Some("torch_bilinear") => {
            let l = a.get("layout")?;
            let channels_last = match l.as_str() {
                Some("channels_last") => true,
                Some("contiguous") => false,
                _ => {
                    return Err(Error::Model(format!(
                        "layout {l} is not \"channels_last\" or \"contiguous\""
                    )))
                }
            };
            let n = a.get("lanes")?;
            let lanes = n
                .as_u64()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| Error::Model(format!("lanes {n} must be an integer in 1..=64")))?;
            ResizeMode::TorchBilinear {
                channels_last,
                lanes: lanes as u32,
            }
        }
        Some("torch_bilinear_float") => {
            let (channels_last, lanes) = parse_torch_kernel(a)?;
            ResizeMode::TorchBilinearFloat {
                channels_last,
                lanes,
            }
        }
        _ => {
            return Err(Error::Model(format!(
                "mode {} is not \"linear\", \"cubic\", \"torch_bilinear\" or \
                 \"torch_bilinear_float\"",
                a.get("mode")?
            )))
        }
    };
    Ok(Op::Resize(Resize {
        size,
        scales,
        coord,
        rule,
        out: a.qparams()?,
        mode,
    }))
}

/// The `layout` and `lanes` attributes of mode torch_bilinear_float.
fn parse_torch_kernel(a: &Attrs<'_>) -> Result<(bool, u32)> {
    let l = a.get("layout")?;
    let channels_last = match l.as_str() {
        Some("channels_last") => true,
        Some("contiguous") => false,
        _ => {
            return Err(Error::Model(format!(
                "layout {l} is not \"channels_last\" or \"contiguous\""
            )))
        }
    };
    let n = a.get("lanes")?;
    let lanes = n
        .as_u64()
        .filter(|n| (1..=64).contains(n))
        .ok_or_else(|| Error::Model(format!("lanes {n} must be an integer in 1..=64")))?;
    Ok((channels_last, lanes as u32))
}

/// One output index's source rows/columns and weights (ORT's
/// `SetupUpsampleBilinear`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tap {
    /// The first source index.
    pub i1: usize,
    /// The second source index (`min(i1 + 1, in - 1)`).
    pub i2: usize,
    /// `|v - i1|`: the weight of `i2`.
    pub d1: f32,
    /// `|v - i2|`: the weight of `i1`.
    pub d2: f32,
}

/// The taps of one axis: `out_len` outputs from `in_len` inputs.
pub fn axis_taps(coord: Coord, scale: f32, out_len: usize, in_len: usize) -> Vec<Tap> {
    (0..out_len)
        .map(|x| {
            let v = if scale == 1.0 {
                x as f32
            } else {
                coord.source(x, scale, out_len, in_len)
            };
            let v = v.min(in_len as f32 - 1.0).max(0.0);
            let i1 = (v as usize).min(in_len - 1);
            let i2 = (i1 + 1).min(in_len - 1);
            let (d1, d2) = if i1 == i2 {
                (0.5, 0.5)
            } else {
                ((v - i1 as f32).abs(), (v - i2 as f32).abs())
            };
            Tap { i1, i2, d1, d2 }
        })
        .collect()
}

/// Every nonzero weight is at least 2^-40 (with input scales in
/// [2^-40, 2^40] every product on the GPU is then normal; see `resize.wgsl`).
fn check_taps(taps: &[Tap], axis: &str) -> Result<()> {
    let tiny = 2f32.powi(-40);
    for (i, t) in taps.iter().enumerate() {
        for d in [t.d1, t.d2] {
            if d != 0.0 && d < tiny {
                return Err(Error::config(
                    "resize",
                    format!("the {axis} weight {d:e} of output {i} is below 2^-40 (not supported)"),
                ));
            }
        }
    }
    Ok(())
}

impl Resize {
    fn check(&self, x: &TensorInfo) -> Result<QParams> {
        let q = quantized(x)?;
        let [_, h, w] = x.shape[..] else {
            return Err(Error::shape(
                "resize",
                format!("needs a [C, H, W] input, got {:?}", x.shape),
            ));
        };
        if h == 0 || w == 0 {
            return Err(Error::shape(
                "resize input",
                format!("{:?} has an empty axis", x.shape),
            ));
        }
        for (k, &o) in self.size.iter().enumerate() {
            if !(1..=MAX_RESIZE).contains(&o) {
                return Err(Error::shape(
                    "resize",
                    format!(
                        "output size {:?}: each of H, W must be in 1..={MAX_RESIZE} (axis {k} is {o})",
                        self.size
                    ),
                ));
            }
        }
        if let ResizeMode::TorchBilinear { .. } = self.mode {
            return self.check_torch(q, h, w);
        }
        if let ResizeMode::TorchBilinearFloat { .. } = self.mode {
            return self.check_torch_float(q, h, w);
        }
        if self.rule == ResizeRule::Round {
            return Err(Error::config(
                "resize",
                "rule \"round\" runs only with mode \"torch_bilinear\"",
            ));
        }
        for s in self.scales {
            if !(s.is_finite() && s > 0.0) {
                return Err(Error::config(
                    "resize",
                    format!("scales {:?} must be finite and > 0", self.scales),
                ));
            }
        }
        self.out.validate("resize output")?;
        if self.out.signed != q.signed {
            return Err(Error::dtype(
                "resize output",
                format!(
                    "{}, the input is {}: ONNX Runtime's Resize keeps the type",
                    self.out.dtype_name(),
                    q.dtype_name()
                ),
            ));
        }
        match self.rule {
            ResizeRule::Truncate if self.out != q => {
                return Err(Error::QParams {
                    what: "resize output".into(),
                    detail: format!(
                        "{:?} differ from the input's {q:?}: rule \"truncate\" keeps the input's qparams",
                        self.out
                    ),
                })
            }
            ResizeRule::Requantize if !(2f32.powi(-40)..=2f32.powi(40)).contains(&q.scale) => {
                return Err(Error::qparams(
                    "resize input",
                    format!("scale {:e} is outside [2^-40, 2^40]", q.scale),
                ))
            }
            _ => {}
        }
        if self.rule == ResizeRule::Requantize && self.out.scale < 2f32.powi(-40) {
            return Err(Error::qparams(
                "resize output",
                format!("scale {:e} is below 2^-40", self.out.scale),
            ));
        }
        match self.mode {
            ResizeMode::Linear => {
                check_taps(&self.taps(0, h), "H")?;
                check_taps(&self.taps(1, w), "W")?;
            }
            ResizeMode::Cubic(a) => {
                if self.rule != ResizeRule::Requantize {
                    return Err(Error::config(
                        "resize",
                        "mode cubic runs only under rule \"requantize\" (ORT's cubic on the \
                         bytes casts out-of-range values: not supported)",
                    ));
                }
                if !(a.is_finite() && a.abs() <= 16.0) {
                    return Err(Error::config(
                        "resize",
                        format!("cubic_coeff_a {a} must be finite, at most 16 in magnitude"),
                    ));
                }
                for (axis, d, k) in [("H", h, 0), ("W", w, 1)] {
                    let taps = cubic_taps(self.coord, self.scales[k], self.size[k], d, a);
                    if taps.iter().any(|(f, _)| f.unsigned_abs() > 1 << 24) {
                        return Err(Error::config(
                            "resize",
                            format!("a {axis} source coordinate is out of range"),
                        ));
                    }
                }
            }
            ResizeMode::TorchBilinear { .. } | ResizeMode::TorchBilinearFloat { .. } => {}
        }
        Ok(q)
    }

    /// The checks the two PyTorch bilinear modes share: `lanes`, the rule
    /// each runs under, PyTorch's coordinate modes, finite scales.
    fn check_torch_common(&self, mode: &str, lanes: u32, rule: ResizeRule) -> Result<()> {
        if !(1..=64).contains(&lanes) {
            return Err(Error::config(
                "resize",
                format!("lanes {lanes} must be in 1..=64"),
            ));
        }
        if self.rule != rule {
            return Err(Error::config(
                "resize",
                format!(
                    "mode {mode} runs under rule {:?}, got {:?}",
                    rule.name(),
                    self.rule.name()
                ),
            ));
        }
        if !matches!(self.coord, Coord::AlignCorners | Coord::HalfPixel) {
            return Err(Error::config(
                "resize",
                format!(
                    "mode {mode} takes coordinate_transformation_mode \"align_corners\" \
                     or \"half_pixel\" (PyTorch's), got {:?}",
                    self.coord.name()
                ),
            ));
        }
        for s in self.scales {
            if !(s.is_finite() && s >= 0.0) {
                return Err(Error::config(
                    "resize",
                    format!("scales {:?} must be finite and >= 0", self.scales),
                ));
            }
        }
        Ok(())
    }

    /// The checks of mode torch_bilinear_float (after the shape checks).
    fn check_torch_float(&self, q: QParams, h: usize, w: usize) -> Result<QParams> {
        let ResizeMode::TorchBilinearFloat { lanes, .. } = self.mode else {
            unreachable!("check_torch_float of another mode")
        };
        self.check_torch_common("torch_bilinear_float", lanes, ResizeRule::Requantize)?;
        self.out.validate("resize output")?;
        let inv = 1.0 / self.out.scale;
        if !(inv.is_finite() && inv > 0.0) {
            return Err(Error::qparams(
                "resize output",
                format!(
                    "scale {:e}: its f32 reciprocal is not finite",
                    self.out.scale
                ),
            ));
        }
        for (axis, k, d) in [("H", 0, h), ("W", 1, w)] {
            if self.torch_taps(k, d).is_none() {
                return Err(Error::config(
                    "resize",
                    format!(
                        "scale {:e} on {axis} ({d} -> {}) gives a source index that is not finite",
                        self.scales[k], self.size[k]
                    ),
                ));
            }
        }
        Ok(q)
    }

    /// The checks of mode torch_bilinear (after the shape checks).
    fn check_torch(&self, q: QParams, h: usize, w: usize) -> Result<QParams> {
        let ResizeMode::TorchBilinear { lanes, .. } = self.mode else {
            unreachable!("check_torch of another mode")
        };
        self.check_torch_common("torch_bilinear", lanes, ResizeRule::Round)?;
        if self.out != q {
            return Err(Error::QParams {
                what: "resize output".into(),
                detail: format!(
                    "{:?} differ from the input's {q:?}: PyTorch's upsampling keeps the input's qparams",
                    self.out
                ),
            });
        }
        for (axis, k, d) in [("H", 0, h), ("W", 1, w)] {
            if self.torch_taps(k, d).is_none() {
                return Err(Error::config(
                    "resize",
                    format!(
                        "scale {:e} on {axis} ({d} -> {}) gives a source index past the input",
                        self.scales[k], self.size[k]
                    ),
                ));
            }
        }
        Ok(q)
    }

    fn torch_taps(&self, axis: usize, in_len: usize) -> Option<Vec<TorchTap>> {
        if let ResizeMode::TorchBilinearFloat { channels_last, .. } = self.mode {
            return torch_float_taps(
                self.coord == Coord::AlignCorners,
                self.scales[axis],
                self.size[axis],
                in_len,
                channels_last,
            );
        }
        let ResizeMode::TorchBilinear { channels_last, .. } = self.mode else {
            return None;
        };
        torch_taps(
            self.coord == Coord::AlignCorners,
            self.scales[axis],
            self.size[axis],
            in_len,
            channels_last,
        )
    }

    fn taps(&self, axis: usize, in_len: usize) -> Vec<Tap> {
        axis_taps(self.coord, self.scales[axis], self.size[axis], in_len)
    }
}

impl<'a> OpKind<'a> for Resize {
    fn name(&self) -> &'static str {
        "resize"
    }
    fn infer(&self, engine: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo> {
        let torch = matches!(
            self.mode,
            ResizeMode::TorchBilinear { .. } | ResizeMode::TorchBilinearFloat { .. }
        );
        if torch && engine == Requant::OnnxRuntime {
            return Err(Error::config(
                "resize",
                "mode torch_bilinear follows PyTorch's (ATen's) kernel; the model's engine is \
                 \"onnxruntime\"",
            ));
        }
        if !torch {
            super::require_engine(
                "resize",
                engine,
                Requant::OnnxRuntime,
                "follows ONNX Runtime's rule",
            )?;
        }
        self.check(ins[0])?;
        Ok(TensorInfo {
            shape: vec![ins[0].shape[0], self.size[0], self.size[1]],
            dtype: DType::QUInt8(self.out),
        })
    }
    fn write(&self, w: &mut NodeWriter) {
        w.put("size", json!(self.size));
        w.put(
            "scales",
            json!([self.scales[0] as f64, self.scales[1] as f64]),
        );
        w.put("coordinate_transformation_mode", json!(self.coord.name()));
        w.put("rule", json!(self.rule.name()));
        match self.mode {
            ResizeMode::Linear => w.put("mode", json!("linear")),
            ResizeMode::Cubic(a) => {
                w.put("mode", json!("cubic"));
                w.put("cubic_coeff_a", json!(a as f64));
            }
            ResizeMode::TorchBilinear {
                channels_last,
                lanes,
            } => {
                w.put("mode", json!("torch_bilinear"));
                let l = if channels_last {
                    "channels_last"
                } else {
                    "contiguous"
                };
                w.put("layout", json!(l));
                w.put("lanes", json!(lanes));
            }
            ResizeMode::TorchBilinearFloat {
                channels_last,
                lanes,
            } => {
                w.put("mode", json!("torch_bilinear_float"));
                let l = if channels_last {
                    "channels_last"
                } else {
                    "contiguous"
                };
                w.put("layout", json!(l));
                w.put("lanes", json!(lanes));
            }
        }
        w.put_qparams(self.out);
    }
    fn lower(&self, sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
        let x = sig.inputs[0];
        let q = self.check(x)?;
        let (c, h, w) = (x.shape[0], x.shape[1], x.shape[2]);
        let [oh, ow] = self.size;
        let mut tab: Vec<u32> = Vec::with_capacity(4 * (oh + ow) + 256);
        let mut torch = 0u32;
        let mut body = 0u32;
        match self.mode {
            ResizeMode::TorchBilinear {
                channels_last,
                lanes,
            } => {
                let (Some(ty), Some(tx)) = (self.torch_taps(0, h), self.torch_taps(1, w)) else {
                    unreachable!("checked by check_torch")
                };
                for t in ty.iter().chain(&tx) {
                    tab.extend([t.i0 as u32, t.i1 as u32, t.l0.to_bits(), t.l1.to_bits()]);
                }
                torch = if channels_last { 2 } else { 1 };
                if channels_last {
                    body = (lanes as usize * (c / lanes as usize)) as u32;
                }
            }
            ResizeMode::TorchBilinearFloat {
                channels_last,
                lanes,
            } => {
                let (Some(ty), Some(tx)) = (self.torch_taps(0, h), self.torch_taps(1, w)) else {
                    unreachable!("checked by check_torch_float")
                };
                for t in ty.iter().chain(&tx) {
                    tab.extend([t.i0 as u32, t.i1 as u32, t.l0.to_bits(), t.l1.to_bits()]);
                }
                torch = if channels_last { 4 } else { 3 };
                if channels_last {
                    body = (lanes as usize * (c / lanes as usize)) as u32;
                }
            }
            ResizeMode::Linear => {
                for t in self.taps(0, h).iter().chain(&self.taps(1, w)) {
                    tab.extend([t.i1 as u32, t.i2 as u32, t.d1.to_bits(), t.d2.to_bits()]);
                }
            }
            ResizeMode::Cubic(a) => {
                let ty = cubic_taps(self.coord, self.scales[0], oh, h, a);
                let tx = cubic_taps(self.coord, self.scales[1], ow, w, a);
                for (f, c) in ty.iter().chain(&tx) {
                    tab.push(*f as i32 as u32);
                    tab.extend(c.iter().map(|v| v.to_bits()));
                }
            }
        }
        // true values for truncate and round (PyTorch's f32(stored int))
        let truncate = self.rule != ResizeRule::Requantize;
        tab.extend((0..256).map(|b: i32| {
            if truncate {
                ((b - q.offset()) as f32).to_bits()
            } else {
                ((b - q.zero_point) as f32 * q.scale).to_bits()
            }
        }));
        let p = ResizeParams {
            c: c as u32,
            h: h as u32,
            w: w as u32,
            c4: c.div_ceil(4) as u32,
            oh: oh as u32,
            ow: ow as u32,
            total: 0,
            requant: (!truncate) as u32,
            // ATen's contiguous kernel copies equal sizes; its NHWC one computes
            copy: (oh == h && ow == w && torch == 1) as u32,
            cubic: matches!(self.mode, ResizeMode::Cubic(_)) as u32,
            torch,
            body,
            pad: 0,
            // mode torch_bilinear_float: PyTorch's quantize multiplies by f32(1 / s)
            s_out: if torch >= 3 {
                (1.0 / self.out.scale).to_bits()
            } else {
                self.out.scale.to_bits()
            },
            zp_out: self.out.zero_point,
            offset: self.out.offset(),
        };
        Ok(Box::new(ResizeLowered { p, tab }))
    }
}

/// The constants shared by the CPU loop and `resize.wgsl`: the uniforms and
/// the table (u32 words): per output row `[y1, y2, dy1, dy2]`, per output
/// column `[x1, x2, dx1, dx2]` (weights as f32 bits), then the 256 values
/// `X` of the stored bytes (f32 bits: true values, or dequantized).
pub(crate) struct ResizeLowered {
    pub p: ResizeParams,
    pub tab: Vec<u32>,
}

impl ResizeLowered {
    fn f(&self, i: usize) -> f32 {
        f32::from_bits(self.tab[i])
    }

    /// The byte of value `v` by the op's rule.
    fn finish(&self, v: f32) -> u8 {
        let p = &self.p;
        if p.requant != 0 {
            super::ort::quantize_div(v, f32::from_bits(p.s_out), p.zp_out)
        } else {
            // static_cast<T>: toward zero (a convex combination: in range)
            let t = v.trunc().clamp(-(p.offset as f32), (255 - p.offset) as f32);
            (t as i32 + p.offset) as u8
        }
    }

    /// One output of channel `c`'s plane under PyTorch's bilinear rule.
    fn torch_at(&self, plane: &[u8], oy: usize, ox: usize, c: usize) -> u8 {
        let p = &self.p;
        let (w, oh) = (p.w as usize, p.oh as usize);
        if p.copy != 0 {
            return plane[oy * w + ox];
        }
        let t0 = 4 * (oh + p.ow as usize);
        let xv = |iy: u32, ix: u32| self.f(t0 + plane[iy as usize * w + ix as usize] as usize);
        let (ty, tx) = (4 * oy, 4 * (oh + ox));
        let (y0, y1) = (self.tab[ty], self.tab[ty + 1]);
        let (h0, h1) = (self.f(ty + 2), self.f(ty + 3));
        let (x0, x1) = (self.tab[tx], self.tab[tx + 1]);
        let (w0, w1) = (self.f(tx + 2), self.f(tx + 3));
        let (p00, p01, p10, p11) = (xv(y0, x0), xv(y0, x1), xv(y1, x0), xv(y1, x1));
        // Rust never contracts `a * b + c`: each product is rounded
        if p.torch >= 3 {
            let r = if p.torch == 3 {
                // generic kernel: t0 * h0 + t1 * h1, each contracted
                let t0 = p00.mul_add(w0, p01 * w1);
                let t1 = p10.mul_add(w0, p11 * w1);
                t0.mul_add(h0, t1 * h1)
            } else {
                let (w00, w01, w10, w11) = (h0 * w0, h0 * w1, h1 * w0, h1 * w1);
                if (c as u32) < p.body {
                    p00.mul_add(w00, p01.mul_add(w01, p11.mul_add(w11, p10 * w10)))
                } else {
                    p11.mul_add(w11, p10.mul_add(w10, p00.mul_add(w00, p01 * w01)))
                }
            };
            // quantize_per_tensor: rint(r * f32(1 / s)) + zp, saturated
            // clamped first so an overflow to infinity saturates without an i64 overflow
            let k = (r * f32::from_bits(p.s_out))
                .round_ties_even()
                .clamp(-1024.0, 1024.0) as i64;
            return (k + p.zp_out as i64).clamp(0, 255) as u8;
        }
        let r = if p.torch == 1 {
            let a = w0 * p00 + w1 * p01;
            let b = w0 * p10 + w1 * p11;
            h0 * a + h1 * b
        } else if (c as u32) < p.body {
            let a = w1.mul_add(p01, w0 * p00);
            let b = w1.mul_add(p11, w0 * p10);
            h1.mul_add(b, h0 * a)
        } else {
            let a = w0.mul_add(p00, w1 * p01);
            let b = w0.mul_add(p10, w1 * p11);
            h0.mul_add(a, h1 * b)
        };
        let zp = p.zp_out - p.offset;
        let k = (r - zp as f32).round_ties_even() as i32;
        ((k + zp).clamp(-p.offset, 255 - p.offset) + p.offset) as u8
    }

    /// One output of one channel plane.
    fn at(&self, plane: &[u8], oy: usize, ox: usize) -> u8 {
        let p = &self.p;
        let (w, oh) = (p.w as usize, p.oh as usize);
        let e = if p.cubic != 0 { 5 } else { 4 };
        let xv = |b: u8| self.f(e * (oh + p.ow as usize) + b as usize);
        if p.copy != 0 {
            let b = plane[oy * w + ox];
            return if p.requant != 0 {
                self.finish(xv(b))
            } else {
                b
            };
        }
        if p.cubic != 0 {
            // ORT's ResizeBiCubic: rows first, each from 0, then the column
            let (ty, tx) = (5 * oy, 5 * (oh + ox));
            let (fy, fx) = (self.tab[ty] as i32 as i64, self.tab[tx] as i32 as i64);
            let (h, wl) = (p.h as i64, w as i64);
            let mut res = 0f32;
            for i in 0..4 {
                let yy = (fy - 1 + i as i64).clamp(0, h - 1) as usize;
                let mut row = 0f32;
                for k in 0..4 {
                    let xx = (fx - 1 + k as i64).clamp(0, wl - 1) as usize;
                    row += self.f(tx + 1 + k) * xv(plane[yy * w + xx]);
                }
                res += row * self.f(ty + 1 + i);
            }
            return self.finish(res);
        }
        let (ty, tx) = (4 * oy, 4 * (oh + ox));
        let (y1, y2) = (self.tab[ty] as usize, self.tab[ty + 1] as usize);
        let (dy1, dy2) = (self.f(ty + 2), self.f(ty + 3));
        let (x1, x2) = (self.tab[tx] as usize, self.tab[tx + 1] as usize);
        let (dx1, dx2) = (self.f(tx + 2), self.f(tx + 3));
        let x11 = xv(plane[y1 * w + x1]);
        let x21 = xv(plane[y1 * w + x2]);
        let x12 = xv(plane[y2 * w + x1]);
        let x22 = xv(plane[y2 * w + x2]);
        let v = dx2 * dy2 * x11 + dx1 * dy2 * x21 + dx2 * dy1 * x12 + dx1 * dy1 * x22;
        self.finish(v)
    }
}

impl Lowered for ResizeLowered {
    fn run_cpu(&self, io: &CpuIo<'_>) -> Result<Value> {
        let (x, shape, _) = io.q(0)?;
        let p = &self.p;
        let (c, h, w) = (p.c as usize, p.h as usize, p.w as usize);
        crate::layout::check_data_len(x.len(), shape)?;
        let sample = c * h * w;
        if shape.len() != 4 || shape[1..].iter().product::<usize>() != sample {
            return Err(Error::shape(
                "resize input",
                format!("{shape:?}, lowered for [N, {c}, {h}, {w}]"),
            ));
        }
        let (oh, ow) = (p.oh as usize, p.ow as usize);
        let len = super::checked_product("resize output", &io.out_shape())?;
        let mut y = super::try_vec(len, 0u8, "resize output")?;
        for (k, (out, plane)) in y.chunks_mut(oh * ow).zip(x.chunks(h * w)).enumerate() {
            for oy in 0..oh {
                for ox in 0..ow {
                    out[oy * ow + ox] = if p.torch != 0 {
                        self.torch_at(plane, oy, ox, k % c)
                    } else {
                        self.at(plane, oy, ox)
                    };
                }
            }
        }
        io.q_out(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_follow_orts_setup() {
        // half_pixel 4 -> 8: v = (x + 0.5) / 2 - 0.5, clamped
        let t = axis_taps(Coord::HalfPixel, 2.0, 8, 4);
        assert_eq!((t[0].i1, t[0].i2, t[0].d1, t[0].d2), (0, 1, 0.0, 1.0));
        assert_eq!((t[1].i1, t[1].i2, t[1].d1, t[1].d2), (0, 1, 0.25, 0.75));
        assert_eq!((t[7].i1, t[7].i2, t[7].d1, t[7].d2), (3, 3, 0.5, 0.5));
        // align_corners 3 -> 5: v = x * 2 / 4
        let t = axis_taps(Coord::AlignCorners, 5.0 / 3.0, 5, 3);
        assert_eq!((t[1].i1, t[1].d1, t[1].d2), (0, 0.5, 0.5));
        assert_eq!((t[4].i1, t[4].i2), (2, 2));
        // scale 1: the index itself
        let t = axis_taps(Coord::Asymmetric, 1.0, 3, 3);
        assert_eq!((t[2].i1, t[2].i2, t[2].d1), (2, 2, 0.5));
    }
}
