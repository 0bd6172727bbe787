//! Pooling of **f32** tensors (engine `inductor_x86`): what Inductor's C++
//! computes where X86InductorQuantizer leaves a pool's input in float
//! (torchvision inception_v3's branch pools read the float `max_pool2d` of
//! `relu(conv)` and float `cat`s of `relu(conv)` outputs: oneDNN's f32 conv
//! outputs). Rules measured in tests/data/pt2e/README.md ("Average pools of
//! f32 tensors"):
//!
//! - `max_pool2d` of an f32 tensor: the largest tap of each window (taps in
//!   the padding are skipped: Inductor's masked `-inf`), an f32 output. Max
//!   is exact; qfuse picks the tap with the largest value under IEEE's total
//!   order (so `+0.0` over `-0.0`; a NaN tap with its sign bit clear wins).
//! - `inductor_avg_pool2d` (f32 in, quint8 out): per output the window's taps
//!   inside the input summed in f32 in **row-major** order from `0.0` (the
//!   C++ adds the taps in the padding as masked loads of `0.0`, which change
//!   no sum but the sign of a zero), `v = sum / f32(count)` (a division),
//!   `y = clamp(rint(f32(v * f32(1/s))) + z, 0, 255)`. `count`:
//!   `divisor_override`, else per dimension `min(i0 + k, L + p) - i0`
//!   (`count_include_pad`) or the taps inside the input, multiplied. The
//!   same arithmetic as Inductor's pool of a dequantized u8 tensor
//!   ([`super::super::ort::inductor_pool_lowered`]) with the f32 values in
//!   place of the dequantized bytes.
//!
//! The CPU loop below and `pool_f32.wgsl` read the same uniforms. On the GPU
//! the input is NHWC4F words (an f32 tensor computed on the GPU) or an NCHW
//! float32 model input; the sum, division and product are exact IEEE
//! operations in integer code (`float.wgsl`: `fadd_exact`, `fdiv`,
//! `fmul_exact`), so no driver's contraction or flush of subnormals can move
//! a result.

use crate::error::{Error, Result};
use crate::model::{DType, TensorInfo, Value};
use crate::quant::{QParams, Requant};

use super::super::{Attrs, CpuIo, FileOp, Lowered, NodeWriter, Op, OpKind, ParseCx, Signature};
use super::{check_pool_window, inductor_window_check, real_window, AvgPoolOpts, Pool2d, PoolOp};

pub(crate) const FILE_OPS: &[FileOp] = &[FileOp {
    name: "inductor_avg_pool2d",
    attributes: &[
        "kernel_size",
        "stride",
        "padding",
        "ceil_mode",
        "count_include_pad",
        "divisor_override",
        "scale",
        "zero_point",
    ],
    parse: |a: &Attrs<'_>, _: &ParseCx<'_>| {
        let (pool, opts) = super::parse_avg_window(a)?;
        Ok(Op::InductorAvgPool2d {
            pool,
            opts,
            out: a.qparams()?,
        })
    },
}];

/// The uniform block of `pool_f32.wgsl` (`total` is set per batch).
#[doc(hidden)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct F32PoolParams {
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub c4: u32,
    pub oh: u32,
    pub ow: u32,
    /// Invocations: output f32 words (max) or output u32 words (avg).
    pub total: u32,
    pub kh: u32,
    pub kw: u32,
    pub sh: u32,
    pub sw: u32,
    pub ph: u32,
    pub pw: u32,
    pub dh: u32,
    pub dw: u32,
    /// avg: count_include_pad.
    pub cip: u32,
    /// avg: divisor_override, 0 for none.
    pub div: u32,
    /// avg: the output's zero point.
    pub zp: i32,
    /// avg: `f32(1/s)` of the output's scale.
    pub inv: f32,
    pub pad: u32,
}

/// `pool_f32.wgsl`'s `MODE` override.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum F32PoolMode {
    /// f32 max pooling, f32 out (one output word per invocation).
    Max = 0,
    /// Inductor's average pool, quantized (four channels per invocation).
    Avg = 1,
}

/// A lowered f32 pool: the uniforms the CPU loop and the shader read.
pub(crate) struct F32PoolLowered {
    pub p: F32PoolParams,
    pub mode: F32PoolMode,
}

/// IEEE's total order of f32 bit patterns as an unsigned key.
pub fn f32_order_key(bits: u32) -> u32 {
    if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// One dimension of an average pool's window: the taps `[start, end)` inside
/// the input and the divisor's factor (`count_include_pad`: the window
/// clipped to the padded input; else the taps inside).
pub fn avg_window(
    o: usize,
    len: usize,
    k: usize,
    s: usize,
    p: usize,
    cip: bool,
) -> (usize, usize, usize) {
    let i0 = (o * s) as i64 - p as i64;
    let i1 = (i0 + k as i64).min((len + p) as i64);
    let (c0, c1) = (i0.max(0), i1.min(len as i64).max(i0.max(0)));
    let factor = if cip { i1 - i0 } else { c1 - c0 };
    (c0 as usize, c1 as usize, factor as usize)
}

/// Inductor's f32 average of one window of `plane` (`[H, W]` row-major),
/// before the quantize: the taps summed in row-major order from `0.0`,
/// divided by `f32(count)`.
pub fn inductor_avg_f32(
    plane: &[f32],
    w: usize,
    rows: (usize, usize),
    cols: (usize, usize),
    count: usize,
) -> f32 {
    let mut sum = 0f32;
    for iy in rows.0..rows.1 {
        for ix in cols.0..cols.1 {
            sum += plane[iy * w + ix];
        }
    }
    sum / count as f32
}

impl F32PoolLowered {
    fn max_at(&self, plane: &[f32], oy: usize, ox: usize) -> f32 {
        let p = &self.p;
        let (h, w) = (p.h as i64, p.w as i64);
        let y0 = (oy as i64) * p.sh as i64 - p.ph as i64;
        let x0 = (ox as i64) * p.sw as i64 - p.pw as i64;
        let mut best = f32::NEG_INFINITY.to_bits();
        let mut key = f32_order_key(best);
        for ky in 0..p.kh as i64 {
            let iy = y0 + ky * p.dh as i64;
            if !(0..h).contains(&iy) {
                continue;
            }
            for kx in 0..p.kw as i64 {
                let ix = x0 + kx * p.dw as i64;
                if !(0..w).contains(&ix) {
                    continue;
                }
                let v = plane[(iy * w + ix) as usize].to_bits();
                let k = f32_order_key(v);
                if k > key {
                    best = v;
                    key = k;
                }
            }
        }
        f32::from_bits(best)
    }

    fn avg_at(&self, plane: &[f32], oy: usize, ox: usize) -> u8 {
        let p = &self.p;
        let cip = p.cip != 0;
        let (h, w) = (p.h as usize, p.w as usize);
        let (y0, y1, fh) = avg_window(oy, h, p.kh as usize, p.sh as usize, p.ph as usize, cip);
        let (x0, x1, fw) = avg_window(ox, w, p.kw as usize, p.sw as usize, p.pw as usize, cip);
        let count = if p.div != 0 { p.div as usize } else { fh * fw };
        let v = inductor_avg_f32(plane, w, (y0, y1), (x0, x1), count);
        crate::quant::quantize_with_inv(v, p.inv, p.zp)
    }
}

impl Lowered for F32PoolLowered {
    fn run_cpu(&self, io: &CpuIo<'_>) -> Result<Value> {
        let x = io.f32(0)?;
        let p = &self.p;
        let (c, h, w) = (p.c as usize, p.h as usize, p.w as usize);
        let (oh, ow) = (p.oh as usize, p.ow as usize);
        if x.len() != io.batch * c * h * w {
            return Err(Error::shape(
                "input",
                format!(
                    "{} values, lowered for [{}, {c}, {h}, {w}]",
                    x.len(),
                    io.batch
                ),
            ));
        }
        let planes = x.chunks(h * w);
        match self.mode {
            F32PoolMode::Max => {
                let mut y = super::super::try_vec(io.batch * c * oh * ow, 0f32, "output")?;
                for (out, plane) in y.chunks_mut(oh * ow).zip(planes) {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            out[oy * ow + ox] = self.max_at(plane, oy, ox);
                        }
                    }
                }
                Ok(Value::F32 {
                    data: y,
                    shape: io.out_shape(),
                })
            }
            F32PoolMode::Avg => {
                let mut y = super::super::try_vec(io.batch * c * oh * ow, 0u8, "output")?;
                for (out, plane) in y.chunks_mut(oh * ow).zip(planes) {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            out[oy * ow + ox] = self.avg_at(plane, oy, ox);
                        }
                    }
                }
                io.q_out(y)
            }
        }
    }
}

fn params(x: &TensorInfo, out: &TensorInfo, pool: &Pool2d) -> F32PoolParams {
    let (c, h, w) = crate::layout::chw_u32(&x.shape);
    let (_, oh, ow) = crate::layout::chw_u32(&out.shape);
    F32PoolParams {
        c,
        h,
        w,
        c4: c.div_ceil(4),
        oh,
        ow,
        kh: pool.kernel[0] as u32,
        kw: pool.kernel[1] as u32,
        sh: pool.stride[0] as u32,
        sw: pool.stride[1] as u32,
        ph: pool.padding[0] as u32,
        pw: pool.padding[1] as u32,
        dh: pool.dilation[0] as u32,
        dw: pool.dilation[1] as u32,
        ..Default::default()
    }
}

/// The `[C, H, W]` of an f32 pool input, and the checks every f32 pool shares.
fn f32_chw(name: &str, x: &TensorInfo) -> Result<[usize; 3]> {
    if x.dtype != DType::F32 {
        return Err(Error::dtype(
            "input",
            format!("{}; {name} takes a float32 tensor", x.dtype.name()),
        ));
    }
    let [c, h, w] = x.shape[..] else {
        return Err(Error::shape(
            name,
            format!("needs a [C, H, W] input, got {:?}", x.shape),
        ));
    };
    if c == 0 || h == 0 || w == 0 || h > 0xffff || w > 0xffff {
        return Err(Error::shape(
            name,
            format!("input {c}x{h}x{w}: sizes from 1, H and W at most 65535"),
        ));
    }
    Ok([c, h, w])
}

/// `max_pool2d` of a float32 tensor: an f32 output of the same channels.
pub(crate) fn max_infer(p: &Pool2d, x: &TensorInfo) -> Result<TensorInfo> {
    let [c, h, w] = f32_chw("max_pool2d", x)?;
    let what = format!("a window (kernel {:?})", p.kernel);
    check_pool_window("max_pool2d", real_window(p, h, w), &what)?;
    let (oh, ow) = p.out_hw_nonempty("max_pool2d", h, w)?;
    Ok(TensorInfo {
        shape: vec![c, oh, ow],
        dtype: DType::F32,
    })
}

pub(crate) fn max_lowered<'a>(sig: &Signature<'_>, p: &Pool2d) -> Result<Box<dyn Lowered + 'a>> {
    Ok(Box::new(F32PoolLowered {
        p: params(sig.inputs[0], sig.output, p),
        mode: F32PoolMode::Max,
    }))
}

/// `inductor_avg_pool2d` ([`Op::InductorAvgPool2d`], engine `inductor_x86`
/// only): Inductor's average pool of an f32 tensor, quantized to `out` (see
/// the module docs).
pub(crate) struct InductorAvgPool {
    pub pool: Pool2d,
    pub opts: AvgPoolOpts,
    pub out: QParams,
}

impl<'a> OpKind<'a> for InductorAvgPool {
    fn name(&self) -> &'static str {
        "inductor_avg_pool2d"
    }
    fn infer(&self, engine: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo> {
        let name = self.name();
        super::super::require_engine(
            name,
            engine,
            Requant::InductorX86,
            "is Inductor's C++ on an f32 tensor",
        )?;
        let [c, h, w] = f32_chw(name, ins[0])?;
        self.out.validate(&format!("{name} output"))?;
        if self.out.signed {
            return Err(Error::config(
                name,
                "output must be quint8 (X86InductorQuantizer's activations)",
            ));
        }
        let p = &self.pool;
        if p.dilation != [1, 1] {
            return Err(Error::config(name, "dilation must be [1, 1]"));
        }
        match self.opts.divisor_override {
            Some(0) => return Err(Error::config(name, "divisor_override must be >= 1")),
            Some(d) => check_pool_window(name, d, "divisor_override")?,
            None => {}
        }
        let what = format!("a window (kernel {:?})", p.kernel);
        check_pool_window(name, real_window(p, h, w), &what)?;
        inductor_window_check(&PoolOp::Avg(*p, self.opts), h, w)?;
        let (oh, ow) = p.out_hw_nonempty(name, h, w)?;
        Ok(TensorInfo {
            shape: vec![c, oh, ow],
            dtype: DType::QUInt8(self.out),
        })
    }
    fn write(&self, w: &mut NodeWriter) {
        super::write_avg_window(w, &self.pool, &self.opts);
        w.put_qparams(self.out);
    }
    fn lower(&self, sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
        let mut p = params(sig.inputs[0], sig.output, &self.pool);
        p.cip = self.opts.count_include_pad as u32;
        p.div = self.opts.divisor_override.unwrap_or(0) as u32;
        p.zp = self.out.zero_point;
        p.inv = self.out.inv_scale();
        Ok(Box::new(F32PoolLowered {
            p,
            mode: F32PoolMode::Avg,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_key_is_ieee_total_order() {
        let vals = [
            f32::NEG_INFINITY,
            -3.5,
            -f32::MIN_POSITIVE,
            -1e-45,
            -0.0,
            0.0,
            1e-45,
            1.0,
            f32::INFINITY,
        ];
        for a in vals.windows(2) {
            assert!(
                f32_order_key(a[0].to_bits()) < f32_order_key(a[1].to_bits()),
                "{a:?}"
            );
        }
    }

    #[test]
    fn windows_match_inductor_counts() {
        // 3x3 / 1 / 1 over 7: every window counts 3 taps with the padding
        // (count_include_pad), 2 at the borders without it.
        assert_eq!(avg_window(0, 7, 3, 1, 1, true), (0, 2, 3));
        assert_eq!(avg_window(0, 7, 3, 1, 1, false), (0, 2, 2));
        assert_eq!(avg_window(6, 7, 3, 1, 1, true), (5, 7, 3));
        // ceil_mode: 3 / 2 / 1 over 6 (outputs 0..=3): the last window starts
        // at 5, clipped to the padded input 7: factor 2, 1 tap inside.
        assert_eq!(avg_window(3, 6, 3, 2, 1, true), (5, 6, 2));
        assert_eq!(avg_window(3, 6, 3, 2, 1, false), (5, 6, 1));
    }
}
