//! Pooling and mean: `max_pool2d`, `avg_pool2d`, `adaptive_avg_pool2d`,
//! `mean` over H and W, each following the PyTorch kernel a call lands in
//! (rules in `tests/data/ops/README.md`). Lowering computes, once, the
//! uniforms of `pool.wgsl` ([`PoolParams`]: window, path, multipliers) and
//! the table of reciprocals of the window sizes; the CPU loop below reads
//! exactly those constants, as the kernel does.

mod float;
mod gpu;

pub use float::{avg_window, f32_order_key, inductor_avg_f32, F32PoolParams};
pub(crate) use float::{InductorAvgPool, FILE_OPS as F32_FILE_OPS};

use serde_json::json;

use crate::error::{Error, Result};
use crate::model::{TensorInfo, Value};
use crate::quant::Requant;

use super::{
    dims4, keep, quantized, Attrs, CpuIo, FileOp, Lowered, NodeWriter, Op, OpKind, ParseCx,
    Signature,
};

pub(crate) const FILE_OPS: &[FileOp] = &[
    FileOp {
        name: "max_pool2d",
        attributes: &["kernel_size", "stride", "padding", "dilation", "ceil_mode"],
        parse: |a: &Attrs<'_>, _: &ParseCx<'_>| {
            Ok(Op::MaxPool2d(Pool2d {
                kernel: a.pair("kernel_size")?,
                stride: a.pair("stride")?,
                padding: a.pair("padding")?,
                dilation: a.pair("dilation")?,
                ceil_mode: a.bool("ceil_mode")?,
            }))
        },
    },
    FileOp {
        name: "avg_pool2d",
        attributes: &[
            "kernel_size",
            "stride",
            "padding",
            "ceil_mode",
            "count_include_pad",
            "divisor_override",
        ],
        parse: |a: &Attrs<'_>, _: &ParseCx<'_>| {
            let (p, o) = parse_avg_window(a)?;
            Ok(Op::AvgPool2d(p, o))
        },
    },
    FileOp {
        name: "adaptive_avg_pool2d",
        attributes: &["output_size"],
        parse: |a: &Attrs<'_>, _: &ParseCx<'_>| Ok(Op::AdaptiveAvgPool2d(a.pair("output_size")?)),
    },
    FileOp {
        name: "mean",
        attributes: &["dims", "keepdim"],
        parse: |a: &Attrs<'_>, _: &ParseCx<'_>| {
            let dims = a.get("dims")?;
            if *dims != json!([2, 3]) && *dims != json!([-2, -1]) {
                return Err(Error::Unsupported(format!(
                    "mean over dims {dims} (only [2, 3])"
                )));
            }
            Ok(Op::Mean {
                keepdim: a.bool("keepdim")?,
            })
        },
    },
];

/// An average pool's window and options from a node's attributes
/// (`kernel_size`, `stride`, `padding`, `ceil_mode`, `count_include_pad`,
/// `divisor_override`; no dilation): `avg_pool2d`, `portable_avg_pool2d`,
/// `inductor_avg_pool2d`.
pub(crate) fn parse_avg_window(a: &Attrs<'_>) -> Result<(Pool2d, AvgPoolOpts)> {
    let p = Pool2d {
        kernel: a.pair("kernel_size")?,
        stride: a.pair("stride")?,
        padding: a.pair("padding")?,
        dilation: [1, 1],
        ceil_mode: a.bool("ceil_mode")?,
    };
    let divisor_override = if a.get("divisor_override")?.is_null() {
        None
    } else {
        Some(a.usize("divisor_override")?)
    };
    Ok((
        p,
        AvgPoolOpts {
            count_include_pad: a.bool("count_include_pad")?,
            divisor_override,
        },
    ))
}

/// Writes a pool's `kernel_size`, `stride`, `padding` and `ceil_mode`.
pub(crate) fn write_window(w: &mut NodeWriter, p: &Pool2d) {
    w.put("kernel_size", json!(p.kernel));
    w.put("stride", json!(p.stride));
    w.put("padding", json!(p.padding));
    w.put("ceil_mode", json!(p.ceil_mode));
}

/// Writes what [`parse_avg_window`] reads.
pub(crate) fn write_avg_window(w: &mut NodeWriter, p: &Pool2d, o: &AvgPoolOpts) {
    write_window(w, p);
    w.put("count_include_pad", json!(o.count_include_pad));
    w.put("divisor_override", json!(o.divisor_override));
}

/// Pooling hyper-parameters (`[h, w]` each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2d {
    /// Window size, each >= 1.
    pub kernel: [usize; 2],
    /// Step between windows, in input pixels, each >= 1 (PyTorch's default
    /// is the kernel size; the model file stores it explicitly).
    pub stride: [usize; 2],
    /// Implicit padding on both sides, at most half the kernel. Max pooling
    /// pads with -inf, average pooling with zeros.
    pub padding: [usize; 2],
    /// Spacing between window taps, each >= 1 (max pooling only; average
    /// pooling needs 1).
    pub dilation: [usize; 2],
    /// Round the output size up instead of down (a last, partial window
    /// that starts inside the input or its left padding is kept).
    pub ceil_mode: bool,
}

impl Pool2d {
    /// ATen's `pooling_output_shape` for one dimension.
    pub fn out_len(&self, len: usize, i: usize) -> Result<usize> {
        let (k, s, p, d) = (
            self.kernel[i] as i64,
            self.stride[i] as i64,
            self.padding[i] as i64,
            self.dilation[i] as i64,
        );
        for (name, v) in [
            ("kernel_size", self.kernel),
            ("stride", self.stride),
            ("padding", self.padding),
            ("dilation", self.dilation),
        ] {
            super::check_window(&format!("pool2d {name}"), v)?;
        }
        if k < 1 || s < 1 || d < 1 {
            return Err(Error::config(
                "pool2d",
                format!(
                    "kernel {:?}, stride {:?}, dilation {:?} must be >= 1",
                    self.kernel, self.stride, self.dilation
                ),
            ));
        }
        if 2 * p > k {
            return Err(Error::config(
                "pool2d",
                format!(
                    "padding {:?} must be at most half the kernel {:?}",
                    self.padding, self.kernel
                ),
            ));
        }
        let l = len as i64;
        let num = l + 2 * p - d * (k - 1) - 1 + if self.ceil_mode { s - 1 } else { 0 };
        if num < 0 {
            return Err(Error::shape(
                "pool2d input",
                format!(
                    "size {len} is smaller than the (dilated) kernel {:?}",
                    self.kernel
                ),
            ));
        }
        let mut o = num / s + 1;
        if self.ceil_mode && (o - 1) * s >= l + p {
            o -= 1;
        }
        Ok(o as usize)
    }

    /// The output `(height, width)` for an `h x w` input; errors as
    /// [`Pool2d::out_len`].
    pub fn out_hw(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        Ok((self.out_len(h, 0)?, self.out_len(w, 1)?))
    }

    /// [`Pool2d::out_hw`], and an error naming `op` if the output is empty.
    pub(crate) fn out_hw_nonempty(&self, op: &str, h: usize, w: usize) -> Result<(usize, usize)> {
        let (oh, ow) = self.out_hw(h, w)?;
        if oh == 0 || ow == 0 {
            return Err(Error::shape(
                op,
                format!("output would be empty ({oh}x{ow})"),
            ));
        }
        Ok((oh, ow))
    }
}

/// The most elements a pooling window (clipped to the padded input; for
/// `adaptive_avg_pool2d` its largest window, for `mean` the H x W plane) may
/// hold, and the largest `divisor_override`: 2^23, so that the i32 sum of a
/// window stays exact and `f32` counts it exactly. The lowered tables of
/// reciprocals have one entry per window size, so they stay within a few
/// times this bound, and a window's work is bounded too.
pub const MAX_POOL_DIVISOR: usize = 1 << 23;

fn check_pool_window(op: &str, window: usize, what: &str) -> Result<()> {
    if window > MAX_POOL_DIVISOR {
        return Err(Error::config(
            op,
            format!("{what} of {window} elements exceeds the bound {MAX_POOL_DIVISOR}"),
        ));
    }
    Ok(())
}

/// The elements of the largest window of `p` over an `h x w` input: the
/// kernel clipped to the padded input (saturating).
pub(crate) fn real_window(p: &Pool2d, h: usize, w: usize) -> usize {
    let dim =
        |i: usize, len: usize| p.kernel[i].min(len.saturating_add(p.padding[i].saturating_mul(2)));
    dim(0, h).saturating_mul(dim(1, w))
}

/// `avg_pool2d` options beyond the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvgPoolOpts {
    /// Divide by the whole window, padding included, rather than by the
    /// taps inside the input (PyTorch's default: true).
    pub count_include_pad: bool,
    /// Divide every window by this (>= 1) instead.
    pub divisor_override: Option<usize>,
}

/// Which of PyTorch's average-pooling kernels a call lands in (the values
/// are `pool.wgsl`'s path constants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AvgPath {
    /// QNNPACK average pooling: divisor always kh*kw, `m = s / (s * kh*kw)`.
    Qnnpack,
    /// ATen's channels-last kernel (a channels-last input: a conv's output,
    /// or any tensor with C == 1 or H == W == 1).
    Nhwc,
    /// ATen's NCHW kernel: the zero point is added before rounding.
    Nchw,
}

/// Channels below this take the NHWC average kernel's vector path (AVX512 build).
pub const AVG_NHWC_SPLIT: usize = 16;

/// Which kernel PyTorch runs `avg_pool2d` with under `engine` for a `c x h x w`
/// input: QNNPACK's own (qnnpack, floor mode), else ATen's NHWC kernel for a
/// channels-last input (`channels_last`: PyTorch holds it so, see
/// [`crate::memory_format`]), one channel or a 1x1 image, else ATen's NCHW kernel.
pub fn avg_pool2d_path(
    engine: Requant,
    ceil_mode: bool,
    c: usize,
    h: usize,
    w: usize,
    channels_last: bool,
) -> AvgPath {
    if engine == Requant::Qnnpack && !ceil_mode {
        AvgPath::Qnnpack
    } else if channels_last || c == 1 || (h == 1 && w == 1) {
        AvgPath::Nhwc
    } else {
        AvgPath::Nchw
    }
}

/// Row (or column) `i` of an adaptive pool's windows: `[floor(i*L/o), ceil((i+1)*L/o))`.
pub fn adaptive_window(i: usize, len: usize, out: usize) -> (usize, usize) {
    (i * len / out, ((i + 1) * len).div_ceil(out))
}

/// Which of PyTorch's kernels an `adaptive_avg_pool2d` call lands in
/// (`channels_last` as for [`avg_pool2d_path`]).
pub fn adaptive_path(
    engine: Requant,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    channels_last: bool,
) -> AvgPath {
    if engine == Requant::Qnnpack
        && h.is_multiple_of(oh)
        && w.is_multiple_of(ow)
        && !(oh == h && ow == w)
    {
        AvgPath::Qnnpack
    } else if channels_last || c == 1 || (h == 1 && w == 1) {
        AvgPath::Nhwc
    } else {
        AvgPath::Nchw
    }
}

/// The multiplier `s / (s * f32(k))` of QNNPACK's average pooling.
pub fn qnnpack_avg_mult(scale: f32, k: usize) -> f32 {
    scale / (scale * k as f32)
}

/// Round-half-to-even of `sum / n` for non-negative integers, exactly (what
/// `rint(f32(sum) / f32(n))` gives while `sum < 2^24` and `n < 2^15`).
pub fn div_round_even(sum: u32, n: u32) -> u32 {
    let t = 2 * sum as u64 + n as u64;
    let d = 2 * n as u64;
    let mut y = t / d;
    if t.is_multiple_of(d) && y % 2 == 1 {
        y -= 1;
    }
    y as u32
}

/// Whether fbgemm's mean over `n` positions takes the exact integer rounding
/// ([`div_round_even`], equal to `rint(f32(Σq) / f32(n))` there): `n < 2^15`
/// and `255 n < 2^24`. The GPU runs only these sizes.
pub fn mean_is_exact_int(n: usize) -> bool {
    n < 1 << 15 && n * 255 < 1 << 24
}

/// ATen sums an f32 tensor over H and W of a channels-last input with vectors
/// of this many floats (its AVX2 kernel, also on AVX512 CPUs).
pub const SUM_VEC: usize = 8;

/// Whether ATen's channels-last f32 sum adds channel `ch` of `c` with
/// [`cascade_sum`] directly (`true`) or with [`cascade_sum_ilp4`]: channels in
/// whole groups of 4 vectors (or, when `c < SUM_VEC`, of 4 scalars) go direct.
pub fn mean_sum_direct(c: usize, ch: usize) -> bool {
    let group = if c >= SUM_VEC { 4 * SUM_VEC } else { 4 };
    ch < c - c % group
}

/// ATen's `multi_row_sum` for one column of `n` f32 values `get(0..n)`: a
/// running sum per chunk of `2^p` values (`p = max(4, ceil_log2(n) / 4)`),
/// chunk sums carried up through 3 more levels, the levels added at the end.
pub fn cascade_sum(n: usize, get: impl Fn(usize) -> f32) -> f32 {
    let ceil_log2 = if n <= 2 {
        1
    } else {
        usize::BITS - (n - 1).leading_zeros()
    };
    let p = 4.max(ceil_log2 / 4);
    let step = 1usize << p;
    let mut acc = [0f32; 4];
    let mut i = 0;
    while i + step <= n {
        for _ in 0..step {
            acc[0] += get(i);
            i += 1;
        }
        for j in 1..4 {
            acc[j] += acc[j - 1];
            acc[j - 1] = 0.0;
            if i & ((step - 1) << (j as u32 * p)) != 0 {
                break;
            }
        }
    }
    while i < n {
        acc[0] += get(i);
        i += 1;
    }
    acc[0] + acc[1] + acc[2] + acc[3]
}

/// ATen's `row_sum`: four interleaved [`cascade_sum`]s (values `4i + k`), the
/// `n % 4` last values added to the first, then the four added in order.
pub fn cascade_sum_ilp4(n: usize, get: impl Fn(usize) -> f32) -> f32 {
    let m = n / 4;
    let mut part: [f32; 4] = std::array::from_fn(|k| cascade_sum(m, |i| get(4 * i + k)));
    for i in 4 * m..n {
        part[0] += get(i);
    }
    part[0] + part[1] + part[2] + part[3]
}

/// Whether `mean` takes PyTorch's f32 path (fbgemm/x86 on an input that is not
/// contiguous: channels-last with C > 1 and H*W > 1) rather than its integer
/// fast path.
pub fn mean_f32_path(engine: Requant, c: usize, hw: usize, channels_last: bool) -> bool {
    engine == Requant::Fbgemm && channels_last && c > 1 && hw > 1
}

/// `mean`'s path (`PoolParams::mean_path`, `pool.wgsl`'s `mean_hw`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MeanPath {
    /// fbgemm/x86 on a contiguous input: the integer fast path.
    Int = 0,
    /// QNNPACK's: `rint((Σq - n zp) * m) + zp`.
    Qnnpack = 1,
    /// fbgemm/x86 on a channels-last input ([`mean_f32_path`]): dequantize,
    /// f32 sum in ATen's order, divide, requantize.
    F32 = 2,
}

/// The most taps of a window Inductor unrolls (`unroll_reductions_threshold`
/// in its `avg_pool2d` / `adaptive_avg_pool2d` lowerings): past it, an
/// `avg_pool2d` whose kernel differs from its stride and an
/// `adaptive_avg_pool2d` whose windows vary call ATen's kernel instead
/// (Inductor's fallback), whose arithmetic was not measured.
pub const INDUCTOR_POOL_UNROLL: usize = 25;

/// Refuses, under the inductor_x86 engine, the average pools Inductor hands
/// to ATen (see [`INDUCTOR_POOL_UNROLL`]) and inputs too large for the
/// windows' packing (`start | end << 16`).
fn inductor_window_check(op: &PoolOp, h: usize, w: usize) -> Result<()> {
    let name = op.name();
    if h > 0xffff || w > 0xffff {
        return Err(Error::shape(
            name,
            format!("input {h}x{w}: under the inductor_x86 engine H and W are at most 65535"),
        ));
    }
    let fallback = match op {
        PoolOp::Avg(p, _) => {
            let taps = p.kernel[0].saturating_mul(p.kernel[1]);
            taps > INDUCTOR_POOL_UNROLL && p.kernel != p.stride
        }
        PoolOp::Adaptive([oh, ow]) if *oh > 0 && *ow > 0 => {
            // Inductor's h_kernel_max * w_kernel_max
            let kmax = (h + oh - 1)
                .div_ceil(*oh)
                .saturating_mul((w + ow - 1).div_ceil(*ow));
            !(h.is_multiple_of(*oh) && w.is_multiple_of(*ow)) && kmax > INDUCTOR_POOL_UNROLL
        }
        _ => false,
    };
    if fallback {
        return Err(Error::config(
            name,
            format!(
                "under the inductor_x86 engine: a window of more than {INDUCTOR_POOL_UNROLL} \
                 taps here makes Inductor call ATen's kernel (its fallback), whose arithmetic \
                 was not measured (input {h}x{w})"
            ),
        ));
    }
    Ok(())
}

/// A pooling node.
pub(crate) enum PoolOp {
    Max(Pool2d),
    Avg(Pool2d, AvgPoolOpts),
    Adaptive([usize; 2]),
    /// Mean over dims [2, 3].
    Mean {
        keepdim: bool,
    },
}

impl<'a> OpKind<'a> for PoolOp {
    fn name(&self) -> &'static str {
        match self {
            PoolOp::Max(_) => "max_pool2d",
            PoolOp::Avg(..) => "avg_pool2d",
            PoolOp::Adaptive(_) => "adaptive_avg_pool2d",
            PoolOp::Mean { .. } => "mean",
        }
    }
    fn infer(&self, engine: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo> {
        let x = ins[0];
        // max_pool2d of an f32 tensor (Inductor's float max pool of oneDNN's
        // f32 conv outputs): an f32 output (`float.rs`).
        if let (PoolOp::Max(p), crate::model::DType::F32) = (self, x.dtype) {
            if engine != Requant::InductorX86 {
                return Err(Error::config(
                    "max_pool2d",
                    "of a float32 tensor needs the inductor_x86 engine (Inductor's f32 max pool of \
                     oneDNN's f32 conv outputs)",
                ));
            }
            return float::max_infer(p, x);
        }
        quantized(x)?;
        if engine == Requant::Xnnpack && matches!(self, PoolOp::Avg(..)) {
            return Err(Error::config(
                self.name(),
                "has no rule under the xnnpack engine (XNNPACK delegates average pooling \
                 only as `mean`, ExecuTorch runs adaptive_avg_pool2d in its portable kernel)",
            ));
        }
        // Inductor's average pools (avg_pool2d, adaptive_avg_pool2d) of a u8
        // tensor: its C++ on the dequantized values, ExecuTorch portable's
        // arithmetic (tests/data/pt2e/README.md, "Inductor x86 graphs");
        // `mean` was not measured.
        if engine == Requant::InductorX86 && matches!(self, PoolOp::Mean { .. }) {
            return Err(Error::config(
                self.name(),
                "has no measured rule under the inductor_x86 engine (Inductor's float \
                 mean was not reproduced; tests/data/pt2e/README.md)",
            ));
        }
        let [c, h, w] = x.shape[..] else {
            return Err(Error::shape(
                self.name(),
                format!("needs a [C, H, W] input, got {:?}", x.shape),
            ));
        };
        if engine == Requant::InductorX86 {
            inductor_window_check(self, h, w)?;
        }
        match self {
            PoolOp::Max(p) | PoolOp::Avg(p, _) => {
                if let PoolOp::Avg(_, o) = self {
                    if p.dilation != [1, 1] {
                        return Err(Error::config("avg_pool2d", "dilation must be [1, 1]"));
                    }
                    if o.divisor_override == Some(0) {
                        return Err(Error::config("avg_pool2d", "divisor_override must be >= 1"));
                    }
                    let d = o.divisor_override.unwrap_or(0);
                    check_pool_window("avg_pool2d", d, "divisor_override")?;
                }
                {
                    let what = format!("a window (kernel {:?})", p.kernel);
                    check_pool_window(self.name(), real_window(p, h, w), &what)?;
                }
                let (oh, ow) = p.out_hw_nonempty(self.name(), h, w)?;
                Ok(keep(x, vec![c, oh, ow]))
            }
            PoolOp::Adaptive([oh, ow]) => {
                super::check_window("adaptive_avg_pool2d output_size", [*oh, *ow])?;
                if *oh == 0 || *ow == 0 {
                    return Err(Error::config(
                        "adaptive_avg_pool2d",
                        "output_size must be >= 1",
                    ));
                }
                // The lowered table is (largest window + 1)^2 entries.
                let window = (h.div_ceil(*oh) + 2).saturating_mul(w.div_ceil(*ow) + 2);
                check_pool_window("adaptive_avg_pool2d", window, "a window (with its table)")?;
                Ok(keep(x, vec![c, *oh, *ow]))
            }
            PoolOp::Mean { keepdim } => {
                check_pool_window("mean", h.saturating_mul(w), "an H x W plane")?;
                Ok(keep(x, if *keepdim { vec![c, 1, 1] } else { vec![c] }))
            }
        }
    }
    fn write(&self, w: &mut NodeWriter) {
        match self {
            PoolOp::Max(p) => {
                write_window(w, p);
                w.put("dilation", json!(p.dilation));
            }
            PoolOp::Avg(p, o) => write_avg_window(w, p, o),
            PoolOp::Adaptive(s) => w.put("output_size", json!(s)),
            PoolOp::Mean { keepdim } => {
                w.put("dims", json!([2, 3]));
                w.put("keepdim", json!(keepdim));
            }
        }
    }
    fn lower(&self, sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
        if let (PoolOp::Max(p), crate::model::DType::F32) = (self, sig.inputs[0].dtype) {
            return float::max_lowered(sig, p);
        }
        match (sig.engine, self) {
            (Requant::Xnnpack, PoolOp::Mean { .. }) => {
                return super::ort::xnnpack_mean_lowered(sig)
            }
            (Requant::Xnnpack, PoolOp::Adaptive(_)) => {
                return super::ort::portable_adaptive_lowered(sig)
            }
            (Requant::InductorX86, PoolOp::Adaptive(_)) => {
                return super::ort::inductor_pool_lowered(sig, None)
            }
            (Requant::InductorX86, PoolOp::Avg(p, o)) => {
                return super::ort::inductor_pool_lowered(sig, Some((*p, *o)))
            }
            _ => {}
        }
        Ok(Box::new(lower(
            sig.engine,
            self,
            sig.inputs[0],
            sig.output,
            sig.channels_last[0],
        )?))
    }
}

/// The uniform block of `pool.wgsl` (`total` is set per batch).
#[doc(hidden)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PoolParams {
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub c4: u32,
    pub oh: u32,
    pub ow: u32,
    pub total: u32,
    pub path: u32,
    pub kh: u32,
    pub kw: u32,
    pub sh: u32,
    pub sw: u32,
    pub ph: u32,
    pub pw: u32,
    pub dh: u32,
    pub dw: u32,
    pub zp: i32,
    pub clamp_taps: u32,
    pub cip: u32,
    pub div_override: u32,
    pub nhwc_split: u32,
    pub m: f32,
    pub tab_w: u32,
    pub tab_half: u32,
    /// mean: 0 integer fast path, 1 qnnpack, 2 f32 (fbgemm/x86 on a
    /// channels-last input); see `MeanPath`.
    pub mean_path: u32,
    pub opaque: u32,
    /// mean, f32 path: channels below this sum directly ([`cascade_sum`]),
    /// the rest interleaved by 4 ([`cascade_sum_ilp4`]).
    pub mean_split: u32,
    /// mean, f32 path: the input scale.
    pub scale: f32,
    /// mean, f32 path: `1/scale`.
    pub inv: f32,
    pub pad0: u32,
    pub pad1: u32,
    pub pad2: u32,
}

/// `pool.wgsl`'s `MODE` override.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PoolMode {
    Max = 0,
    Avg = 1,
    Adaptive = 2,
    Mean = 3,
}

/// A pooling node's constants, shared by the CPU loop and `pool.wgsl`: the
/// uniforms, the mode, and the table of multipliers indexed by window size
/// (`tab`; see each mode).
pub(crate) struct PoolLowered {
    pub p: PoolParams,
    pub mode: PoolMode,
    pub tab: Vec<f32>,
    /// fbgemm mean on its integer path: whether the exact integer rounding
    /// applies (the GPU runs only then; see [`mean_is_exact_int`]).
    pub mean_exact: bool,
}

/// `channels_last`: PyTorch holds the input channels-last (a conv's output;
/// see [`crate::memory_format`]).
fn lower(
    engine: Requant,
    op: &PoolOp,
    x: &TensorInfo,
    out: &TensorInfo,
    channels_last: bool,
) -> Result<PoolLowered> {
    let (c, h, w) = crate::layout::chw_u32(&x.shape);
    let (_, oh, ow) = crate::layout::chw_u32(&out.shape);
    let q = quantized(x)?;
    let mut p = PoolParams {
        c,
        h,
        w,
        c4: c.div_ceil(4),
        oh,
        ow,
        zp: q.zero_point,
        ..Default::default()
    };
    let mut tab = vec![0f32; 1];
    let set_window = |p: &mut PoolParams, pl: &Pool2d| {
        (p.kh, p.kw, p.sh, p.sw) = (
            pl.kernel[0] as u32,
            pl.kernel[1] as u32,
            pl.stride[0] as u32,
            pl.stride[1] as u32,
        );
        (p.ph, p.pw, p.dh, p.dw) = (
            pl.padding[0] as u32,
            pl.padding[1] as u32,
            pl.dilation[0] as u32,
            pl.dilation[1] as u32,
        );
    };
    // avg_pool2d: tab[df] is the multiplier of divisor df; on the NHWC path
    // the second half (from tab_half) holds the tail channels' `1/(1/m)`.
    let avg = |p: &mut PoolParams, tab: &mut Vec<f32>, pl: &Pool2d, o: &AvgPoolOpts| {
        set_window(p, pl);
        let path = avg_pool2d_path(
            engine,
            pl.ceil_mode,
            c as usize,
            h as usize,
            w as usize,
            channels_last,
        );
        p.path = path as u32;
        p.cip = o.count_include_pad as u32;
        p.div_override = o.divisor_override.unwrap_or(0) as u32;
        p.m = qnnpack_avg_mult(q.scale, pl.kernel[0] * pl.kernel[1]);
        p.nhwc_split = c - c % AVG_NHWC_SPLIT as u32;
        // The largest divisor a window can have: the kernel clipped to the
        // padded input (checked against MAX_POOL_DIVISOR at inference).
        let max_df = real_window(pl, h as usize, w as usize).max(o.divisor_override.unwrap_or(0));
        let recip = |df: usize| {
            if df == 0 {
                0.0
            } else {
                (1.0f64 / df as f64) as f32
            }
        };
        *tab = (0..=max_df).map(recip).collect();
        if path == AvgPath::Nhwc {
            p.tab_half = (max_df + 1) as u32;
            let tail: Vec<f32> = (0..=max_df)
                .map(|df| {
                    if df == 0 {
                        0.0
                    } else {
                        1.0 / (1.0 / (1.0 / df as f32))
                    }
                })
                .collect();
            *tab = (0..=max_df)
                .map(|df| if df == 0 { 0.0 } else { 1.0 / df as f32 })
                .chain(tail)
                .collect();
        }
    };
    let mut mean_exact = true;
    let mode = match op {
        PoolOp::Max(pl) => {
            set_window(&mut p, pl);
            p.clamp_taps = (engine == Requant::Qnnpack && !pl.ceil_mode) as u32;
            PoolMode::Max
        }
        PoolOp::Avg(pl, o) => {
            avg(&mut p, &mut tab, pl, o);
            PoolMode::Avg
        }
        PoolOp::Adaptive([aoh, aow]) => {
            let path = adaptive_path(
                engine,
                c as usize,
                h as usize,
                w as usize,
                *aoh,
                *aow,
                channels_last,
            );
            if path == AvgPath::Qnnpack {
                // exactly QNNPACK's avg_pool2d with kernel = stride = (H/oh, W/ow)
                let k = [h as usize / aoh, w as usize / aow];
                let pl = Pool2d {
                    kernel: k,
                    stride: k,
                    padding: [0, 0],
                    dilation: [1, 1],
                    ceil_mode: false,
                };
                avg(
                    &mut p,
                    &mut tab,
                    &pl,
                    &AvgPoolOpts {
                        count_include_pad: true,
                        divisor_override: None,
                    },
                );
                PoolMode::Avg
            } else {
                // tab[kh * tab_w + kw]: the multiplier of a kh x kw window
                p.path = path as u32;
                let kh_max = (h as usize).div_ceil(*aoh) + 1;
                let kw_max = (w as usize).div_ceil(*aow) + 1;
                p.tab_w = (kw_max + 1) as u32;
                tab = vec![0f32; (kh_max + 1) * (kw_max + 1)];
                for kh in 1..=kh_max {
                    for kw in 1..=kw_max {
                        tab[kh * (kw_max + 1) + kw] = if path == AvgPath::Nhwc {
                            let m = 1.0 / (kh * kw) as f32;
                            1.0 / (1.0 / m)
                        } else {
                            (1.0 / kh as f32) / kw as f32
                        };
                    }
                }
                PoolMode::Adaptive
            }
        }
        PoolOp::Mean { .. } => {
            let hw = (h * w) as usize;
            mean_exact = engine == Requant::Qnnpack || mean_is_exact_int(hw);
            p.mean_path = if engine == Requant::Qnnpack {
                MeanPath::Qnnpack
            } else {
                MeanPath::Int
            } as u32;
            p.m = qnnpack_avg_mult(q.scale, hw);
            if mean_f32_path(engine, c as usize, hw, channels_last) {
                p.mean_path = MeanPath::F32 as u32;
                p.mean_split = (0..c)
                    .find(|&ch| !mean_sum_direct(c as usize, ch as usize))
                    .unwrap_or(c);
                (p.scale, p.inv) = (q.scale, q.inv_scale());
            }
            PoolMode::Mean
        }
    };
    Ok(PoolLowered {
        p,
        mode,
        tab,
        mean_exact,
    })
}

impl PoolLowered {
    /// `max_pool2d` of one output (`pool.wgsl`'s `max_pool`): taps outside
    /// the image are skipped, or clamped into it (QNNPACK).
    fn max_pool(&self, plane: &[u8], oy: usize, ox: usize) -> i32 {
        let p = &self.p;
        let (h, w) = (p.h as i64, p.w as i64);
        let mut m = 0;
        for ky in 0..p.kh as i64 {
            for kx in 0..p.kw as i64 {
                let mut iy = oy as i64 * p.sh as i64 + ky * p.dh as i64 - p.ph as i64;
                let mut ix = ox as i64 * p.sw as i64 + kx * p.dw as i64 - p.pw as i64;
                if p.clamp_taps != 0 {
                    iy = iy.clamp(0, h - 1);
                    ix = ix.clamp(0, w - 1);
                } else if iy < 0 || ix < 0 || iy >= h || ix >= w {
                    continue;
                }
                m = m.max(plane[(iy * w + ix) as usize] as i32);
            }
        }
        m
    }

    /// `avg_pool2d` of one output (`pool.wgsl`'s `avg_pool`).
    fn avg_pool(&self, plane: &[u8], ch: usize, oy: usize, ox: usize) -> i32 {
        let p = &self.p;
        let (h, w) = (p.h as i64, p.w as i64);
        let mut hs = oy as i64 * p.sh as i64 - p.ph as i64;
        let mut ws = ox as i64 * p.sw as i64 - p.pw as i64;
        let mut he = (hs + p.kh as i64).min(h + p.ph as i64);
        let mut we = (ws + p.kw as i64).min(w + p.pw as i64);
        let pool_size = ((he - hs) * (we - ws)) as usize;
        (hs, ws, he, we) = (hs.max(0), ws.max(0), he.min(h), we.min(w));
        let mut acc = 0i32;
        for iy in hs..he {
            for ix in ws..we {
                acc += plane[(iy * w + ix) as usize] as i32 - p.zp;
            }
        }
        let size = ((he - hs).max(0) * (we - ws).max(0)) as usize;
        let mut df = if p.cip != 0 { pool_size } else { size };
        if p.div_override != 0 {
            df = p.div_override as usize;
        }
        if p.path == AvgPath::Qnnpack as u32 {
            return (acc as f32 * p.m).round_ties_even() as i32 + p.zp;
        }
        if p.path == AvgPath::Nhwc as u32 {
            let half = if (ch as u32) < p.nhwc_split {
                0
            } else {
                p.tab_half as usize
            };
            return (acc as f32 * self.tab[df + half]).round_ties_even() as i32 + p.zp;
        }
        // NCHW: two roundings, product then + zp.
        (acc as f32 * self.tab[df] + p.zp as f32).round_ties_even() as i32
    }

    /// `adaptive_avg_pool2d` of one output (`pool.wgsl`'s `adaptive_pool`).
    fn adaptive_pool(&self, plane: &[u8], oy: usize, ox: usize) -> i32 {
        let p = &self.p;
        let (h, w) = (p.h as usize, p.w as usize);
        let (hs, he) = adaptive_window(oy, h, p.oh as usize);
        let (ws, we) = adaptive_window(ox, w, p.ow as usize);
        let mut sum = 0i32;
        for iy in hs..he {
            for ix in ws..we {
                sum += plane[iy * w + ix] as i32;
            }
        }
        let (kh, kw) = (he - hs, we - ws);
        let r = self.tab[kh * p.tab_w as usize + kw];
        if p.path == AvgPath::Nhwc as u32 {
            let acc = sum - p.zp * (kh * kw) as i32;
            return (acc as f32 * r).round_ties_even() as i32 + p.zp;
        }
        (sum as f32 * r).round_ties_even() as i32
    }

    /// `mean` over one channel plane (`pool.wgsl`'s `mean_hw`): the mean rule.
    fn mean(&self, plane: &[u8], ch: usize) -> i32 {
        let p = &self.p;
        let n = plane.len();
        if p.mean_path == MeanPath::F32 as u32 {
            // dequantize (one rounding), f32 sum in ATen's order, divide,
            // quantize (rule Q)
            let get = |i: usize| p.scale * (plane[i] as i32 - p.zp) as f32;
            let sum = if (ch as u32) < p.mean_split {
                cascade_sum(n, get)
            } else {
                cascade_sum_ilp4(n, get)
            };
            return crate::quant::quantize_with_inv(sum / n as f32, p.inv, p.zp) as i32;
        }
        let sum: u32 = plane.iter().map(|&v| v as u32).sum();
        if p.mean_path == MeanPath::Qnnpack as u32 {
            let acc = sum as i32 - p.zp * n as i32;
            return (acc as f32 * p.m).round_ties_even() as i32 + p.zp;
        }
        if self.mean_exact {
            // rint(f32(sum) / f32(n)) exactly, in integers
            div_round_even(sum, n as u32) as i32
        } else {
            (sum as f32 / n as f32).round_ties_even().clamp(0.0, 255.0) as i32
        }
    }
}

impl Lowered for PoolLowered {
    fn run_cpu(&self, io: &CpuIo<'_>) -> Result<Value> {
        let (x, shape, _) = io.q(0)?;
        let (_, c, h, w) = dims4(shape, "pool input")?;
        let p = &self.p;
        if (c, h, w) != (p.c as usize, p.h as usize, p.w as usize) {
            return Err(Error::shape(
                "pool input",
                format!("{shape:?}, lowered for [N, {}, {}, {}]", p.c, p.h, p.w),
            ));
        }
        crate::layout::check_data_len(x.len(), shape)?;
        let (oh, ow) = (p.oh as usize, p.ow as usize);
        let len = super::checked_product("pool output", &[x.len() / (h * w), oh, ow])?;
        let mut y = super::try_with_capacity(len, "pool output")?;
        for (pi, plane) in x.chunks(h * w).enumerate() {
            let ch = pi % c;
            for oy in 0..oh {
                for ox in 0..ow {
                    let v = match self.mode {
                        PoolMode::Max => self.max_pool(plane, oy, ox),
                        PoolMode::Avg => self.avg_pool(plane, ch, oy, ox),
                        PoolMode::Adaptive => self.adaptive_pool(plane, oy, ox),
                        PoolMode::Mean => self.mean(plane, ch),
                    };
                    y.push(v.clamp(0, 255) as u8);
                }
            }
        }
        io.q_out(y)
    }
}

#[cfg(test)]
mod tests {
    use super::div_round_even;

    /// The fbgemm mean's integer rounding equals `rint(f32(sum) / f32(n))`
    /// wherever the GPU and the CPU use it (`n < 2^15`, `255 n < 2^24`): the
    /// result can only differ next to a rounding boundary `(k + 1/2) n`, so
    /// every sum within 2 of each boundary, for every n, is checked.
    #[test]
    fn integer_mean_rounding_equals_f32_division() {
        let mut checked = 0u64;
        for n in 1u32..(1 << 15) {
            if !super::mean_is_exact_int(n as usize) {
                break;
            }
            for k2 in 0..=511u64 {
                let centre = (k2 * n as u64) / 2;
                for s in centre.saturating_sub(2)..=centre + 2 {
                    if s > 255 * n as u64 {
                        continue;
                    }
                    let s = s as u32;
                    let want = (s as f32 / n as f32).round_ties_even() as u32;
                    assert_eq!(div_round_even(s, n), want, "sum {s}, n {n}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 10_000_000, "{checked}");
    }
}
