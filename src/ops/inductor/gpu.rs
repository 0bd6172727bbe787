//! `inductor_gate_mul` / `inductor_hardswish` on the GPU: one `inductor.wgsl`
//! pass (one invocation per packed NHWC4 output word) over the f32 inputs as
//! the GPU holds f32 tensors (NHWC, channels padded to a multiple of 4, one
//! f32 per word; see the shader's header).

use super::{InductorLowered, Mode};
use crate::error::{Error, Result};
use crate::gpu::node::{GpuIo, GpuNode, Upload, UploadCx, WG};
use crate::gpu::{Dispatch, GpuContext, Kernel};

/// The uniform block of `inductor.wgsl` (`total` is set per batch).
#[doc(hidden)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct InductorParams {
    /// Channels of the output (and of both inputs).
    pub c: u32,
    pub h: u32,
    pub w: u32,
    /// `ceil(c / 4)`: output words per pixel (f32 words per pixel: `4 * c4`).
    pub c4: u32,
    /// Output words.
    pub total: u32,
    /// The output's zero point.
    pub zp_out: i32,
    /// `f32(1 / s_out)` as bits.
    pub inv_bits: u32,
    pub pad0: u32,
}

impl InductorParams {
    /// The uniforms for an output of per-sample `(c, h, w)`, quantized to
    /// `out`, `total` output words.
    pub fn new(
        (c, h, w): (u32, u32, u32),
        out: crate::quant::QParams,
        total: u32,
    ) -> InductorParams {
        InductorParams {
            c,
            h,
            w,
            c4: c.div_ceil(4),
            total,
            zp_out: out.zero_point,
            inv_bits: (1.0f32 / out.scale).to_bits(),
            pad0: 0,
        }
    }
}

/// `inductor.wgsl`'s MODE of a lowered op (0 hardsigmoid gate, 1 sigmoid
/// gate, 2 hardswish).
#[doc(hidden)]
pub fn inductor_mode(gate: Option<super::InductorGate>) -> u32 {
    match gate {
        Some(g) => Mode::Gate(g).code(),
        None => Mode::Hardswish.code(),
    }
}

struct InductorNode {
    mode: u32,
    out: crate::quant::QParams,
}

impl Upload for InductorLowered {
    fn upload(&self, cx: &UploadCx<'_>) -> Result<Box<dyn GpuNode>> {
        if let Some(i) = cx.gpu_f32.iter().position(|&g| !g) {
            return Err(Error::Unsupported(format!(
                "{} on the GPU: input {i} is a float32 model input or a host-side dequantize; \
                 the GPU reads only an f32 tensor computed on the GPU (a conv/linear with \
                 \"output\": \"float32\"), run this model on the CPU",
                self.mode.op_name()
            )));
        }
        Ok(Box::new(InductorNode {
            mode: self.mode.code(),
            out: self.out,
        }))
    }
}

impl GpuNode for InductorNode {
    fn record(&self, ctx: &GpuContext, io: &GpuIo<'_>) -> Result<Vec<Dispatch>> {
        let words = io.words();
        let p = InductorParams::new(io.out_chw(), self.out, words);
        let x = io.inputs[0].buf;
        // hardswish has no second input: its binding reads x (unused); add's
        // second input has x's layout.
        let v = io.inputs.get(1).map_or(x, |i| i.buf);
        Ok(vec![ctx.dispatch(
            Kernel::Inductor,
            &[("WG", WG as f64), ("MODE", self.mode as f64)],
            bytemuck::bytes_of(&p),
            &[x, v, io.output],
            words,
            WG,
        )?])
    }
}
