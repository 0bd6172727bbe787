//! PyTorch's memory format of each quantized tensor of a model.
//!
//! Some of ATen's quantized kernels take another path, which rounds
//! differently, when their input is channels-last: `mean` over H and W under
//! fbgemm/x86 (f32 mean instead of the integer fast path), `avg_pool2d` and
//! `adaptive_avg_pool2d` (the NHWC kernels) and `cat` (the NHWC copy kernel).
//! In PyTorch every quantized conv2d output is channels-last; the model's
//! inputs (and `quantize` of them) are contiguous; the other ops keep their
//! (first) input's format, except as listed in [`channels_last_tensors`]
//! (checked with PyTorch 2.15 under fbgemm, qnnpack, x86 and onednn).

use std::collections::HashSet;

use crate::model::{Model, Op};
use crate::quant::Requant;

/// A per-sample shape `[C, H, W]` whose contiguous and channels-last strides
/// coincide (C == 1, or H == W == 1), and any shape that is not `[C, H, W]`.
pub fn both_formats(sample_shape: &[usize]) -> bool {
    match *sample_shape {
        [c, h, w] => c == 1 || (h == 1 && w == 1),
        _ => true,
    }
}

/// Names of the tensors PyTorch holds channels-last (strides of NHWC):
/// - `conv2d` outputs;
/// - `cat` when every input is channels-last or [`both_formats`] (ATen's NHWC
///   cat, whose output is channels-last);
/// - `relu6` / `hardtanh` under qnnpack give a contiguous tensor (QNNPACK's
///   clamp); `mean`, `linear`, `flatten` and a `reshape` to another shape too;
/// - `qsoftmax` is channels-last only under QNNPACK's kernel over C of a
///   channels-last input (its output takes the input's strides); ATen's path
///   gives a contiguous tensor (QNNPACK's over C of a contiguous input or over
///   H gives permuted strides, neither format: the exporter refuses a
///   layout-dependent op after it);
/// - `gather` gives a contiguous tensor (PyTorch's views that it stands for,
///   a channel slice or a permute, are not channels-last; `.contiguous()`
///   after them makes them contiguous);
/// - every other op (quantize, dequantize, add, the pools, relu, hardswish, a
///   same-shape reshape) keeps its first input's format.
///
/// A tensor in neither set is contiguous (NCHW). Tensors whose shape is
/// [`both_formats`] are both, whatever this says.
pub fn channels_last_tensors(model: &Model) -> HashSet<String> {
    let mut cl: HashSet<String> = HashSet::new();
    let shape = |name: &str| {
        model
            .info(name)
            .map(|i| i.shape.clone())
            .unwrap_or_default()
    };
    for n in model.nodes() {
        let first = n.inputs.first().is_some_and(|i| cl.contains(i));
        let is_cl = match &n.op {
            Op::Conv2d(_) => true,
            Op::Linear(_) | Op::Flatten | Op::Mean { .. } | Op::Gather { .. } => false,
            Op::Relu6 | Op::Hardtanh { .. } => first && model.engine() != Requant::Qnnpack,
            Op::Cat(_) => n
                .inputs
                .iter()
                .all(|i| cl.contains(i) || both_formats(&shape(i))),
            Op::Reshape(s) => first && n.inputs.first().is_some_and(|i| shape(i) == *s),
            Op::QSoftmax { dim, out, .. } => {
                let x = n.inputs.first().and_then(|i| model.info(i));
                let qnn = x.and_then(|x| x.qparams()).is_some_and(|q| {
                    crate::ops::qsoftmax::softmax_rule(model.engine(), q, *out).ok()
                        == Some(crate::ops::qsoftmax::SoftmaxRule::Qnnpack)
                });
                first && qnn && *dim == 0
            }
            _ => first,
        };
        if is_cl {
            cl.insert(n.name.clone());
        }
    }
    cl
}
