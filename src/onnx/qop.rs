//! The quantized-op descriptors an ONNX model lowers to. They say *what* ONNX
//! Runtime computes (operands, qparams, host-side multipliers in ORT's order);
//! the arithmetic rules are in `tests/data/onnx/README.md`.

use super::graph::Attr;
use std::collections::BTreeMap;

/// Quantized element type of an activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QType {
    /// uint8, range [0, 255]
    U8,
    /// int8, range [-128, 127]
    I8,
}

impl QType {
    /// Smallest value of the type.
    pub fn min(self) -> i32 {
        match self {
            QType::U8 => 0,
            QType::I8 => -128,
        }
    }
    /// Largest value of the type.
    pub fn max(self) -> i32 {
        match self {
            QType::U8 => 255,
            QType::I8 => 127,
        }
    }
    /// True for int8.
    pub fn signed(self) -> bool {
        self == QType::I8
    }
}

/// Per-tensor quantization parameters of an activation: `real = scale * (q - zero_point)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Q {
    /// Scale (finite, > 0).
    pub scale: f32,
    /// Zero point, within the range of `dtype`.
    pub zero_point: i32,
    /// Element type.
    pub dtype: QType,
}

/// Quantization parameters of QuantizeLinear / DequantizeLinear: per tensor
/// (`axis` None, one scale) or per axis (one scale and zero point per index
/// along `axis`).
#[derive(Clone, Debug, PartialEq)]
pub struct QAxis {
    /// One scale, or one per index along `axis`.
    pub scales: Vec<f32>,
    /// Same length as `scales`.
    pub zero_points: Vec<i32>,
    /// The axis (non-negative) for per-axis parameters.
    pub axis: Option<usize>,
    /// The quantized type: uint8 or int8 (and int32 for a DequantizeLinear of
    /// int32 values).
    pub dtype: super::ElemType,
}

/// Constant int8 weights of Conv / MatMul / Gemm.
#[derive(Clone, Debug, PartialEq)]
pub struct QWeights {
    /// Values, row-major in `shape`.
    pub data: Vec<i8>,
    /// Conv: `[O, C/groups, kh, kw]`. MatMul and Gemm: `[N, K]` (output-channel
    /// major, like a Linear layer's weight; ONNX's `[K, N]` B transposed).
    pub shape: Vec<usize>,
    /// One scale, or one per output channel (`O` / `N`).
    pub scales: Vec<f32>,
    /// Same length as `scales`. Zero for the weights `quantize_static` writes.
    /// (uint8 weights with zero point 128 arrive here as int8 with zero point 0.)
    pub zero_points: Vec<i32>,
}

/// What Conv / MatMul / Gemm do with the int32 accumulator
/// (`acc = Σ (x - zp_x)·(w - zp_w)` plus the int32 bias, if any).
#[derive(Clone, Debug, PartialEq)]
pub enum AccOut {
    /// QLinearConv, QLinearMatMul, QGemm with y_scale: `y = sat(rint(f32(acc) * m) + zp_y)`,
    /// `m` per output channel (one value when per tensor), computed on the host
    /// in ORT's order: `(x_scale * w_scale) / y_scale`, for QGemm
    /// `((alpha * a_scale) * b_scale) / y_scale`.
    Requant {
        /// Output qparams.
        y: Q,
        /// Multipliers, one or one per output channel.
        multipliers: Vec<f32>,
    },
    /// ConvInteger / MatMulInteger: the int32 accumulator is the output.
    Int32,
    /// QGemm without y_scale: `y = f32(acc) * s`, `s = (alpha * a_scale) * b_scale` (f32).
    Float {
        /// One or one per output channel.
        scales: Vec<f32>,
    },
}

/// 2-D convolution geometry (ONNX attributes resolved: `auto_pad` turned into pads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    /// `[kh, kw]`
    pub kernel: [usize; 2],
    /// `[sh, sw]`
    pub stride: [usize; 2],
    /// `[top, left, bottom, right]` (ONNX order: begins then ends)
    pub pads: [usize; 4],
    /// `[dh, dw]`
    pub dilation: [usize; 2],
    /// Groups (C and O are multiples of it).
    pub groups: usize,
}

/// 2-D pooling geometry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    /// `[kh, kw]`
    pub kernel: [usize; 2],
    /// `[sh, sw]`
    pub stride: [usize; 2],
    /// `[top, left, bottom, right]`
    pub pads: [usize; 4],
    /// `[dh, dw]` (MaxPool; 1 for average pooling)
    pub dilation: [usize; 2],
    /// ONNX `ceil_mode` (with ORT's rule: a last window starting in the end
    /// padding is dropped).
    pub ceil_mode: bool,
}

/// The elementwise function of a 256-entry table op: `t[q] = Q_y(f(DQ_x(q)))`
/// with rule Q (divide) and rule DQ, `f` as ORT computes it in f32.
#[derive(Clone, Debug, PartialEq)]
pub enum TableKind {
    /// QLinearSigmoid, or a float DQ -> Sigmoid -> Q group: MLAS's FMA logistic.
    Sigmoid,
    /// QLinearLeakyRelu: `d >= 0 ? d : alpha * d`.
    LeakyRelu {
        /// f32 slope (ONNX default 0.01)
        alpha: f32,
    },
    /// A float DQ -> HardSigmoid -> Q group: `max(0, min(1, alpha*d + beta))`
    /// (multiply, round, add, round; no FMA).
    HardSigmoid {
        /// f32 (ONNX default 0.2)
        alpha: f32,
        /// f32 (ONNX default 0.5)
        beta: f32,
    },
    /// A float DQ -> Relu -> Q group ORT does not fold (the Q zero point is not
    /// the type minimum): `max(d, 0)`.
    Relu,
    /// A DQ -> Q pair with nothing between (e.g. after ORT removed a Relu or
    /// Clip): requantization, `f(d) = d`.
    Requantize,
}

/// A shape op on quantized bytes (a QDQ pass-through or a QOperator model's
/// plain op on uint8/int8); input and output share their qparams. Attributes
/// as in ONNX (constant inputs resolved).
#[derive(Clone, Debug, PartialEq)]
pub enum ShapeOp {
    /// Reshape to `shape` (ONNX semantics: 0 copies, -1 infers, unless `allowzero`).
    Reshape {
        /// target shape
        shape: Vec<i64>,
        /// ONNX `allowzero`
        allowzero: bool,
    },
    /// Flatten at `axis` (may be negative).
    Flatten {
        /// ONNX axis
        axis: i64,
    },
    /// Transpose by `perm` (None: reverse).
    Transpose {
        /// permutation
        perm: Option<Vec<i64>>,
    },
    /// Squeeze `axes` (None: every 1).
    Squeeze {
        /// axes
        axes: Option<Vec<i64>>,
    },
    /// Unsqueeze at `axes`.
    Unsqueeze {
        /// axes
        axes: Vec<i64>,
    },
    /// Slice (ONNX semantics).
    Slice {
        /// starts
        starts: Vec<i64>,
        /// ends
        ends: Vec<i64>,
        /// axes (None: 0..starts.len())
        axes: Option<Vec<i64>>,
        /// steps (None: all 1)
        steps: Option<Vec<i64>>,
    },
    /// Gather constant `indices` along `axis`.
    Gather {
        /// indices (shape `indices_shape`)
        indices: Vec<i64>,
        /// shape of the indices tensor
        indices_shape: Vec<usize>,
        /// axis
        axis: i64,
    },
    /// Identity.
    Identity,
    /// A per-axis gather (Resize nearest, Pad): output element `[i_0, i_1, ...]` is
    /// input element `[maps[0][i_0], maps[1][i_1], ...]`; `None` keeps the axis.
    /// A map entry `-1` (Pad mode constant) makes the element `fill` instead.
    AxisMap {
        /// one source map per axis (`None`: the axis is kept as it is)
        maps: Vec<Option<Vec<i64>>>,
        /// The value of the elements a `-1` entry selects, in the tensor's own
        /// type (uint8 0..=255 or int8 -128..=127).
        fill: Option<i32>,
    },
}

/// One lowered op. Inputs and outputs are [`super::ValueId`]s in the
/// [`super::QNode`] that holds it; constant operands (weights, biases) are in
/// the op itself. `x`/`a`/`b` qparams are what the op assumes for its inputs
/// (in a QOperator file each consumer states them; they normally equal the
/// producer's output qparams).
#[derive(Clone, Debug, PartialEq)]
pub enum QOp {
    /// QuantizeLinear: float -> uint8/int8, `y = sat(rint(x / s) + zp)` (a true division).
    Quantize {
        /// output qparams (per tensor or per axis)
        y: QAxis,
    },
    /// DequantizeLinear: uint8/int8/int32 -> float, `y = f32(q - zp) * s`.
    Dequantize {
        /// input qparams (per tensor or per axis)
        x: QAxis,
    },
    /// QLinearConv / ConvInteger / a fused QDQ Conv (NCHW, 2-D). Input 0: x.
    /// (ConvInteger and MatMulInteger: `out` is `Int32`, the scales in `x`/`w`
    /// are 1.0 and unused.)
    Conv {
        /// input qparams
        x: Q,
        /// weights `[O, C/groups, kh, kw]`
        w: QWeights,
        /// int32 bias, one per output channel, added to the accumulator
        bias: Option<Vec<i32>>,
        /// geometry
        geom: ConvGeom,
        /// epilogue
        out: AccOut,
    },
    /// QLinearMatMul / MatMulInteger / a fused QDQ MatMul: `A[..., M, K] x W^T`
    /// with constant weights `w` `[N, K]`. Input 0: A.
    MatMul {
        /// A's qparams
        a: Q,
        /// weights `[N, K]`
        w: QWeights,
        /// epilogue
        out: AccOut,
    },
    /// com.microsoft QGemm / a fused QDQ Gemm: `op(A)[M, K] x W^T + C`, weights
    /// `w` `[N, K]` (transB resolved), C an int32 bias per output column.
    /// Input 0: A.
    Gemm {
        /// A's qparams
        a: Q,
        /// A is `[K, M]` and transposed first (`transA`).
        trans_a: bool,
        /// weights `[N, K]`
        w: QWeights,
        /// int32 C, one per output column (a scalar C broadcast to N)
        bias: Option<Vec<i32>>,
        /// `alpha` (already inside the multipliers/scales of `out`)
        alpha: f32,
        /// epilogue
        out: AccOut,
    },
    /// com.microsoft QLinearAdd (ORT's x86 FMA form, role swap for a broadcast
    /// input). Inputs: A, B (either may be a constant value), numpy broadcasting.
    Add {
        /// A's qparams
        a: Q,
        /// B's qparams
        b: Q,
        /// output qparams
        y: Q,
    },
    /// com.microsoft QLinearMul (non-FMA form). Inputs: A, B.
    Mul {
        /// A's qparams
        a: Q,
        /// B's qparams
        b: Q,
        /// output qparams
        y: Q,
    },
    /// com.microsoft QLinearGlobalAveragePool, or a QLinearAveragePool whose
    /// kernel is the whole image without padding (ORT computes it this way).
    GlobalAvgPool {
        /// input qparams
        x: Q,
        /// output qparams
        y: Q,
        /// NHWC input (`channels_last`)
        channels_last: bool,
    },
    /// com.microsoft QLinearAveragePool (f32 window sums; 2-D).
    AvgPool {
        /// input qparams
        x: Q,
        /// output qparams
        y: Q,
        /// geometry
        geom: PoolGeom,
        /// ONNX `count_include_pad`
        count_include_pad: bool,
        /// NHWC input
        channels_last: bool,
    },
    /// MaxPool on quantized bytes (2-D; padding never a candidate).
    MaxPool {
        /// geometry
        geom: PoolGeom,
        /// element type
        dtype: QType,
    },
    /// com.microsoft QLinearConcat: inputs copied when their qparams equal
    /// `y`'s, else mapped by a 256-entry table. Inputs: one per entry of `inputs`.
    Concat {
        /// ONNX axis (may be negative)
        axis: i64,
        /// qparams of each input
        inputs: Vec<Q>,
        /// output qparams
        y: Q,
    },
    /// A 256-entry lookup table (QLinearSigmoid, QLinearLeakyRelu, and the float
    /// DQ -> f -> Q groups ORT leaves, which are functions of the input byte).
    Table {
        /// the function
        kind: TableKind,
        /// input qparams
        x: Q,
        /// output qparams
        y: Q,
    },
    /// A float per-channel elementwise op ORT runs between a DequantizeLinear
    /// and a QuantizeLinear ([`ChannelFn`]: `BatchNormalization`, or
    /// `Add`/`Sub`/`Mul`/`Div` with a constant of one value or one per channel),
    /// optionally followed by a float `Relu`: per channel (dim 1) a function of
    /// the byte, a `channel_lut`.
    ChannelFloat {
        /// input qparams
        x: Q,
        /// output qparams
        y: Q,
        /// the float function of channel and value
        f: std::sync::Arc<ChannelFn>,
        /// a float `Relu` follows
        relu: bool,
    },
    /// com.microsoft QLinearSoftmax (ORT's table form; only `floor(1/y_scale)`
    /// and `y.zero_point` of `y` enter).
    Softmax {
        /// input qparams
        x: Q,
        /// output qparams
        y: Q,
        /// ONNX axis (may be negative)
        axis: i64,
        /// `opset` attribute >= 13: softmax over `axis` alone; below 13 over
        /// all axes from `axis` on.
        opset13: bool,
    },
    /// A shape op on quantized bytes.
    Shape(ShapeOp),
    /// A float op at the graph's tail (after every quantized op: only graph
    /// outputs depend on it), to run on the CPU after readback. Inputs are float
    /// values (or constants). Not covered by the bit-exact rules.
    FloatTail {
        /// ONNX op type
        op_type: String,
        /// its attributes
        attrs: BTreeMap<String, Attr>,
    },
    /// Resize mode linear of H and W of an NCHW tensor (ORT's bilinear
    /// kernel, see [`crate::ops::resize`]): on the bytes with truncation
    /// (`truncate`, a QOperator Resize: `y` = `x`), or DQ -> float -> Q.
    Resize {
        /// input qparams
        x: Q,
        /// output qparams
        y: Q,
        /// ORT's Resize on the quantized tensor itself
        truncate: bool,
        /// output `[H, W]`
        size: [usize; 2],
        /// ORT's f32 scales for H and W
        scales: [f32; 2],
        /// the coordinate transformation
        coord: crate::ops::resize::Coord,
        /// linear or cubic
        mode: crate::ops::resize::ResizeMode,
    },
}

impl QOp {
    /// A short name of the op kind (for listings and tests).
    pub fn kind(&self) -> &'static str {
        match self {
            QOp::Quantize { .. } => "Quantize",
            QOp::Dequantize { .. } => "Dequantize",
            QOp::Conv { .. } => "Conv",
            QOp::MatMul { .. } => "MatMul",
            QOp::Gemm { .. } => "Gemm",
            QOp::Add { .. } => "Add",
            QOp::Mul { .. } => "Mul",
            QOp::GlobalAvgPool { .. } => "GlobalAvgPool",
            QOp::AvgPool { .. } => "AvgPool",
            QOp::MaxPool { .. } => "MaxPool",
            QOp::Concat { .. } => "Concat",
            QOp::Table { .. } => "Table",
            QOp::ChannelFloat { .. } => "ChannelFloat",
            QOp::Softmax { .. } => "Softmax",
            QOp::Shape(_) => "Shape",
            QOp::FloatTail { .. } => "FloatTail",
            QOp::Resize { .. } => "Resize",
        }
    }
}

/// The constant per-channel inputs of a `BatchNormalization`.
#[derive(Clone, Debug, PartialEq)]
pub struct BnParams {
    /// `scale` (gamma)
    pub scale: Vec<f32>,
    /// `B` (beta)
    pub bias: Vec<f32>,
    /// `input_mean`
    pub mean: Vec<f32>,
    /// `input_var`
    pub var: Vec<f32>,
}

impl BnParams {
    /// ORT's folded `(a, b)` of channel `c`: `inv = 1 / sqrt(var + eps)`,
    /// `a = inv * scale`, `b = bias - mean * a` (f32, each op rounded).
    pub fn folded(&self, c: usize, eps: f32) -> (f32, f32) {
        let inv = 1.0 / (self.var[c] + eps).sqrt();
        let a = inv * self.scale[c];
        (a, self.bias[c] - self.mean[c] * a)
    }
}

/// A float binary op with a constant operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatBinOp {
    /// `Add`
    Add,
    /// `Sub`
    Sub,
    /// `Mul`
    Mul,
    /// `Div`
    Div,
}

/// The float function of a [`QOp::ChannelFloat`], as ORT's CPU kernels compute
/// it in f32 (checked against ORT 1.32: `tests/data/onnx/ops`, `qdq_batchnorm_*`,
/// `qdq_chconst_*`).
#[derive(Clone, Debug, PartialEq)]
pub enum ChannelFn {
    /// Inference `BatchNormalization`: `v * a + b` with ORT's folded `(a, b)`
    /// ([`BnParams::folded`]; a multiply and an add, no fused multiply-add).
    BatchNorm {
        /// the per-channel inputs
        params: BnParams,
        /// `epsilon`
        eps: f32,
    },
    /// `v op k` (`k op v` when `const_first`), one IEEE f32 operation; `k` has
    /// one value or one per channel.
    Binary {
        /// the op
        op: FloatBinOp,
        /// the constant (1 or C values)
        k: Vec<f32>,
        /// the constant is the first operand
        const_first: bool,
    },
}

impl ChannelFn {
    /// Its channel count, when it has one value per channel.
    pub fn channels(&self) -> Option<usize> {
        match self {
            ChannelFn::BatchNorm { params, .. } => Some(params.scale.len()),
            ChannelFn::Binary { k, .. } => (k.len() > 1).then_some(k.len()),
        }
    }
    /// The function at channel `c` of the dequantized value `v`.
    pub fn apply(&self, c: usize, v: f32) -> f32 {
        match self {
            ChannelFn::BatchNorm { params, eps } => {
                let (a, b) = params.folded(c, *eps);
                v * a + b
            }
            ChannelFn::Binary { op, k, const_first } => {
                let k = k[if k.len() == 1 { 0 } else { c }];
                let (l, r) = if *const_first { (k, v) } else { (v, k) };
                match op {
                    FloatBinOp::Add => l + r,
                    FloatBinOp::Sub => l - r,
                    FloatBinOp::Mul => l * r,
                    FloatBinOp::Div => l / r,
                }
            }
        }
    }
}
