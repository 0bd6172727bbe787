//! The operators of a graph, one module per op family. Each module owns,
//! for its ops: the attributes and their file form, shape inference and
//! validation, the host-computed constants (lowering: multipliers, tables,
//! clamps computed once, as data), the CPU loop that consumes those
//! constants, and, in its `gpu.rs`, the GPU side that uploads them and
//! records the dispatches. [`crate::model`] (validation, the CPU run, the
//! file) and [`crate::gpu::GpuModel`] are generic drivers over that
//! interface (`OpKind`, `Lowered`, and `gpu::node`'s `Upload` and `GpuNode`).
//!
//! | module | ops |
//! | --- | --- |
//! | [`quantize`] | `quantize`, `dequantize` |
//! | [`conv`] | `conv2d`, `linear` |
//! | [`binary`] | `add`, `binary`, `mul` |
//! | [`pool`] | `max_pool2d` (also of an f32 tensor), `avg_pool2d`, `adaptive_avg_pool2d`, `mean`, `inductor_avg_pool2d` |
//! | [`table`] | `relu`, `relu6`, `hardtanh`, `hardswish`, `lut`, `lut_split` |
//! | [`shape`] | `flatten`, `reshape`, `cat` |
//! | [`host`] | `host_float` (float ops after the last dequantize, on the host) |
//! | [`ort`] | `global_avg_pool`, `avg_pool_requant`, `softmax` (ONNX Runtime's rules) |
//! | [`gather`] | `gather` |
//! | [`resize`] | `resize` (ONNX Runtime's bilinear Resize) |
//! | [`chanlut`] | `channel_lut` |
//! | [`inductor`] | `inductor_gate_mul`, `inductor_hardswish` (Inductor's C++ on f32 tensors, engine `inductor_x86`) |
//! | [`xnnpack`] | (ExecuTorch XNNPACK's rules as tables for `binary`, `lut`, conv/linear clamps; `mean` under the engine `xnnpack`) |
//!
//! Registration is in this file: the [`Op`] variant, its arm in
//! `Op::kind`, and the family's `FileOp` table in `FILE_OPS`.
//!
//! The scalar rules shared by several ops (PyTorch's two dequantizes, the
//! quantize rule, ATen's vector/scalar split) are here too; each op's rules
//! are stated in `tests/data/ops/README.md`.

use std::cell::RefCell;
use std::collections::HashSet;

use serde_json::{Map, Value as Json};

use crate::error::{Error, Result};
use crate::gpu::node::Upload;
use crate::layer::QLayer;
use crate::model::{TensorInfo, Value};
use crate::quant::{Activation, QParams, Requant};

pub mod binary;
pub mod chanlut;
pub mod conv;
pub mod gather;
pub mod host;
pub mod inductor;
pub mod ort;
pub mod pool;
pub mod qsoftmax;
pub mod quantize;
pub mod resize;
pub mod shape;
pub mod table;
pub mod xnnpack;

pub use binary::{
    ort_add_table, ort_mul_table, pytorch_mul_table, qnnpack_add_elem, qnnpack_add_params,
    transpose_table, BINARY_TABLE_LEN,
};
pub use ort::{
    channel_mean_f32, quantize_div, requantize_table_div, softmax_table, xnn_avg_pool_f32,
    OrtPool2d,
};
pub use pool::{
    adaptive_path, adaptive_window, avg_pool2d_path, cascade_sum, cascade_sum_ilp4, div_round_even,
    mean_f32_path, mean_sum_direct, qnnpack_avg_mult, AvgPath, AvgPoolOpts, Pool2d, AVG_NHWC_SPLIT,
    SUM_VEC,
};
pub use quantize::{requantize_table, requantize_table_vector};
pub use shape::{cat_tables, is_channels_last_trivially, ort_cat_tables};
pub use table::{
    apply_tables, apply_tables_nhwc, hardswish_tables, hardtanh_table, onnx_table, relu_table,
};
pub use xnnpack::{
    xnnpack_add_params, xnnpack_add_table, xnnpack_bias_i32, xnnpack_clamp_table, xnnpack_mean,
    xnnpack_mean_thresholds, xnnpack_merged_clamp_table, xnnpack_mul_table, xnnpack_quantize_bound,
};

// ---------------------------------------------------------------------------
// The op enum (user-facing) and its registration.

/// A graph operation. Each variant's attributes, rules, CPU loop and GPU side
/// live in its family's module (see the [module docs](self)).
#[derive(Clone, Debug)]
pub enum Op {
    /// float32 to quint8 with these qparams, as PyTorch's
    /// `quantize_per_tensor`: `clamp(rint(x * (1/scale)) + zero_point, 0, 255)`;
    /// under `Requant::OnnxRuntime` ORT's rule Q, `rint(x / scale)` (a true
    /// division) instead.
    Quantize(QParams),
    /// quint8 to float32 (`real = (q - zero_point) * scale`).
    Dequantize,
    /// A fused quantized conv2d over `[C, H, W]` (see [`QLayer`]).
    Conv2d(Box<QLayer>),
    /// A fused quantized linear over `[F]`.
    Linear(Box<QLayer>),
    /// Quantized elementwise sum of two quint8 tensors of one shape (no
    /// broadcasting), by the engine's rule (`quantized::add`).
    Add {
        /// Apply ReLU to the sum (`quantized::add_relu`).
        relu: bool,
        /// The output's qparams.
        out: QParams,
    },
    /// Max pooling; the output keeps the input's qparams.
    MaxPool2d(Pool2d),
    /// Average pooling; the output keeps the input's qparams.
    AvgPool2d(Pool2d, AvgPoolOpts),
    /// Adaptive average pooling to this output `[H, W]`; keeps the qparams.
    AdaptiveAvgPool2d([usize; 2]),
    /// Mean over dims [2, 3].
    Mean {
        /// Output `[C, 1, 1]` per sample instead of `[C]`.
        keepdim: bool,
    },
    /// `max(x, 0)` on the quantized values (clamp at the zero point).
    Relu,
    /// `clamp(x, 0, 6)`, with the bounds quantized by the input's qparams.
    Relu6,
    /// `clamp(x, min, max)`, with the bounds quantized by the input's
    /// qparams; both finite, `min <= max`.
    Hardtanh {
        /// Lower bound, in float units.
        min: f32,
        /// Upper bound, in float units.
        max: f32,
    },
    /// `x * relu6(x + 3) / 6`, requantized to these output qparams.
    Hardswish(QParams),
    /// `flatten(start_dim=1)`.
    Flatten,
    /// Reshape to a per-sample shape.
    Reshape(Vec<usize>),
    /// Concatenation along channels, requantized to these qparams (under
    /// `Requant::OnnxRuntime` by QLinearConcat's rule).
    Cat(QParams),
    /// A float op after the last dequantize, run on the host after readback
    /// (see [`host`]).
    HostFloat(host::HostFn),
    /// QLinearGlobalAveragePool (ONNX Runtime only): `[C, H, W]` to
    /// `[C, 1, 1]`, `sat(rint(f32(Σq - zp·N) * (x_scale / (y_scale * N))) + zp_y)`.
    GlobalAvgPool {
        /// The output's qparams.
        out: QParams,
    },
    /// QLinearAveragePool (ONNX Runtime only): f32 window sums of the
    /// dequantized taps, divided by the count, requantized with the zero
    /// point added before rounding.
    AvgPoolRequant {
        /// The window (ONNX's begin/end pads and `ceil_mode`).
        pool: ort::OrtPool2d,
        /// Divide by the whole kernel instead of the taps inside the input.
        count_include_pad: bool,
        /// The output's qparams.
        out: QParams,
    },
    /// QLinearSoftmax (ONNX Runtime only; opset 13: one axis): ORT's table form.
    Softmax {
        /// The per-sample dimension the softmax runs over (0 is the first
        /// dimension after the batch).
        axis: usize,
        /// The output's qparams (only `floor(1 / scale)` and the zero point enter).
        out: QParams,
    },
    /// Two quantized tensors (quint8 or qint8) through a 65,536-entry table:
    /// output byte = `table[a_byte * 256 + b_byte]` (stored bytes: uint8
    /// images for qint8), input 1 broadcast into input 0's shape (numpy,
    /// right-aligned; see [`binary`]). The output has input 0's per-sample
    /// shape and qparams `out`. Tables: [`binary::ort_add_table`],
    /// [`binary::ort_mul_table`].
    Binary {
        /// 65,536 output bytes, indexed by `a * 256 + b`.
        table: std::sync::Arc<Vec<u8>>,
        /// The output's qparams.
        out: QParams,
    },
    /// PyTorch's quantized elementwise product of two quint8 tensors
    /// (`quantized::mul` / `mul_relu`, every engine), input 1 broadcast into
    /// input 0 as for [`Op::Binary`] (e.g. `[C, H, W] x [C, 1, 1]`).
    Mul {
        /// Apply ReLU to the product (`quantized::mul_relu`).
        relu: bool,
        /// The output's qparams.
        out: QParams,
    },
    /// A 256-entry lookup table: output byte = `table[input byte]` (the
    /// stored byte: the uint8 image for qint8), same shape, output qparams
    /// `out` (which may be signed: the table then holds uint8 images). Any
    /// input qparams. Built by a converter from an elementwise function (e.g.
    /// [`table::onnx_table`]).
    Lut {
        /// Output byte per input byte.
        table: Box<[u8; 256]>,
        /// The output's qparams.
        out: QParams,
    },
    /// Two 256-entry lookup tables split as ATen's elementwise quantized
    /// kernels split a tensor: elements `[0, n - n % 64)` of the flat tensor
    /// of `n` elements, in PyTorch's memory order (NHWC for a channels-last
    /// tensor, e.g. a conv output), take `table` (the vector body), the rest
    /// `tail` (the scalar tail). Otherwise as [`Op::Lut`]. For PyTorch ops
    /// whose vector and scalar code round a byte differently (the exporter
    /// computes both tables with PyTorch).
    LutSplit {
        /// Output byte per input byte, vector body.
        table: Box<[u8; 256]>,
        /// Output byte per input byte, scalar tail.
        tail: Box<[u8; 256]>,
        /// The output's qparams.
        out: QParams,
    },
    /// A byte gather (see [`gather`]): output element `i` (row-major over
    /// the per-sample `shape`, rank 1 to 3) is element `index[i]` of the
    /// concatenation, in input order, of the inputs' per-sample row-major
    /// elements. One or more inputs, all quantized with the same qparams,
    /// which the output keeps. Built by [`gather::transpose_index`],
    /// [`gather::slice_index`], [`gather::take_index`],
    /// [`gather::concat_index`], [`gather::split_index`].
    Gather {
        /// The output's per-sample shape.
        shape: Vec<usize>,
        /// One entry per output element.
        index: std::sync::Arc<Vec<u32>>,
    },
    /// ONNX Runtime's bilinear `Resize` of H and W (see [`resize`]).
    Resize(resize::Resize),
    /// One 256-entry lookup table per channel (see [`chanlut`]): output byte
    /// = `tables[c * 256 + input byte]`, `c` the element's index along dim 0
    /// of the per-sample shape (`[C, H, W]`, `[C, H]` or `[C]`), stored bytes
    /// (uint8 images for qint8). Same shape, output qparams `out` (may be
    /// signed). PyTorch's quantized `batch_norm2d` (+ relu) and `prelu`, ONNX
    /// Runtime's float `BatchNormalization` (and `Add`/`Sub`/`Mul`/`Div` with a
    /// per-channel constant) between DQ and Q ([`chanlut::ort_channel_tables`]).
    ChannelLut {
        /// `C * 256` output bytes, channel-major.
        tables: std::sync::Arc<Vec<u8>>,
        /// The output's qparams.
        out: QParams,
    },
    /// PyTorch's quantized softmax (`quantized::softmax`, `nnq.Softmax`):
    /// QNNPACK's integer softargmax under engine qnnpack with output qparams
    /// (1/256, 0), else ATen's float softmax (see
    /// [`qsoftmax`]).
    QSoftmax {
        /// The per-sample dimension the softmax runs over (0 is the first
        /// dimension after the batch).
        dim: usize,
        /// The output's qparams.
        out: QParams,
        /// ATen's intra-op thread count (`torch.get_num_threads()`) where
        /// PyTorch ran the model: needed only by ATen's float path over a dim
        /// other than the last, whose thread split picks the positions that
        /// take glibc's `expf` (see [`qsoftmax`]).
        threads: Option<usize>,
    },
    /// ExecuTorch's portable `avg_pool2d` kernel (f32, on the dequantized
    /// input) between two XNNPACK partitions, quantized to `out` (engine
    /// `xnnpack` only; see [`ort`] and tests/data/pt2e/README.md).
    PortableAvgPool2d {
        /// The window (PyTorch's; no dilation).
        pool: Pool2d,
        /// `count_include_pad`, `divisor_override`.
        opts: AvgPoolOpts,
        /// The output's qparams (may be signed).
        out: QParams,
    },
    /// XNNPACK's f32 global average of per-channel f32 values of the input
    /// bytes, quantized to `out` (engine `xnnpack` only; `[C, H, W]` to
    /// `[C, 1, 1]`; see [`ort::channel_mean_f32`]): what ExecuTorch runs for
    /// a float `batch_norm [-> relu] -> mean` between a dequantize and a
    /// quantize (densenet's tail).
    XnnpackChannelMean {
        /// `C * 256` f32 values, channel-major, indexed by the stored byte.
        values: std::sync::Arc<Vec<f32>>,
        /// The output's qparams (may be signed).
        out: QParams,
    },
    /// XNNPACK's f32 average pooling of the dequantized input (no ceil_mode;
    /// padding excluded from the divisor), quantized to `out` (engine
    /// `xnnpack` only; see [`ort::xnn_avg_pool_f32`]): what ExecuTorch runs
    /// for a delegated float `avg_pool2d` between a dequantize and a quantize
    /// (densenet's transitions).
    XnnpackAvgPool2d {
        /// The window (PyTorch's; no dilation, no ceil_mode).
        pool: Pool2d,
        /// The output's qparams (may be signed).
        out: QParams,
    },
    /// Inductor's squeeze-excitation product (engine `inductor_x86` only; see
    /// [`inductor`]): input 0 f32 `[C, H, W]`, input 1 f32 `[C, 1, 1]` or
    /// `[C]` (the gate's input), output quint8 `[C, H, W]`
    /// `quantize(f32(gate(v[c]) * x[c, h, w]))` by Inductor's generated C++.
    InductorGateMul {
        /// The gate applied to input 1.
        gate: inductor::InductorGate,
        /// The output's qparams (quint8).
        out: QParams,
    },
    /// Inductor's `hardswish -> quantize_per_tensor` on an f32 tensor (engine
    /// `inductor_x86` only; see [`inductor`]): output quint8, same shape.
    InductorHardswish {
        /// The output's qparams (quint8).
        out: QParams,
    },
    /// Inductor's sum of two **f32** tensors of one shape (engine
    /// `inductor_x86` only; see [`inductor`]): `quantize(f32(a + b))`, output
    /// quint8 (an `add` of two float values, e.g. max pools of relu'd f32
    /// conv outputs, that X86InductorQuantizer leaves unquantized).
    InductorAdd {
        /// The output's qparams (quint8).
        out: QParams,
    },
    /// Inductor's average pool of an **f32** tensor (`[C, H, W]`, e.g. a
    /// conv's f32 output or an f32 max pool of one), quantized to `out`
    /// (engine `inductor_x86` only; see [`pool`]'s `float.rs`): per output the
    /// taps summed in f32 in row-major order, `/ f32(count)`,
    /// `clamp(rint(v * f32(1/s)) + z)` (inception_v3's branch pools).
    InductorAvgPool2d {
        /// The window (PyTorch's; no dilation).
        pool: Pool2d,
        /// `count_include_pad`, `divisor_override`.
        opts: AvgPoolOpts,
        /// The output's qparams (quint8).
        out: QParams,
    },
}

impl Op {
    /// The op's implementation: one arm per variant, into its family's module.
    pub(crate) fn kind(&self) -> Box<dyn OpKind<'_> + '_> {
        match self {
            Op::Quantize(q) => Box::new(quantize::Quantize(*q)),
            Op::Dequantize => Box::new(quantize::Dequantize),
            Op::Conv2d(l) | Op::Linear(l) => Box::new(conv::Conv(l)),
            Op::Add { relu, out } => Box::new(binary::Add {
                relu: *relu,
                out: *out,
            }),
            Op::MaxPool2d(p) => Box::new(pool::PoolOp::Max(*p)),
            Op::AvgPool2d(p, o) => Box::new(pool::PoolOp::Avg(*p, *o)),
            Op::AdaptiveAvgPool2d(s) => Box::new(pool::PoolOp::Adaptive(*s)),
            Op::Mean { keepdim } => Box::new(pool::PoolOp::Mean { keepdim: *keepdim }),
            Op::Relu => Box::new(table::TableOp::Relu),
            Op::Relu6 => Box::new(table::TableOp::Relu6),
            Op::Hardtanh { min, max } => Box::new(table::TableOp::Hardtanh(*min, *max)),
            Op::Hardswish(q) => Box::new(table::TableOp::Hardswish(*q)),
            Op::Flatten => Box::new(shape::ShapeOp::Flatten),
            Op::Reshape(s) => Box::new(shape::ShapeOp::Reshape(s)),
            Op::Cat(q) => Box::new(shape::ShapeOp::Cat(*q)),
            Op::HostFloat(f) => Box::new(host::HostOp(f)),
            Op::GlobalAvgPool { out } => Box::new(ort::OrtOp::GlobalAvg(*out)),
            Op::AvgPoolRequant {
                pool,
                count_include_pad,
                out,
            } => Box::new(ort::OrtOp::AvgPool(*pool, *count_include_pad, *out)),
            Op::Softmax { axis, out } => Box::new(ort::OrtOp::Softmax(*axis, *out)),
            Op::Binary { table, out } => Box::new(binary::Binary { table, out: *out }),
            Op::Mul { relu, out } => Box::new(binary::Mul {
                relu: *relu,
                out: *out,
            }),
            Op::Lut { table, out } => Box::new(table::TableOp::Lut(table, *out)),
            Op::LutSplit { table, tail, out } => {
                Box::new(table::TableOp::LutSplit(table, tail, *out))
            }
            Op::Gather { shape, index } => Box::new(gather::Gather { shape, index }),
            Op::Resize(r) => Box::new(*r),
            Op::ChannelLut { tables, out } => Box::new(chanlut::ChannelLut { tables, out: *out }),
            Op::QSoftmax { dim, out, threads } => Box::new(qsoftmax::QSoftmax {
                dim: *dim,
                out: *out,
                threads: *threads,
            }),
            Op::PortableAvgPool2d { pool, opts, out } => Box::new(ort::PortableAvgPool {
                pool: *pool,
                opts: *opts,
                out: *out,
            }),
            Op::XnnpackChannelMean { values, out } => {
                Box::new(ort::XnnpackChannelMean { values, out: *out })
            }
            Op::XnnpackAvgPool2d { pool, out } => Box::new(ort::XnnpackAvgPool {
                pool: *pool,
                out: *out,
            }),
            Op::InductorGateMul { gate, out } => Box::new(inductor::GateMul {
                gate: *gate,
                out: *out,
            }),
            Op::InductorHardswish { out } => Box::new(inductor::Hardswish { out: *out }),
            Op::InductorAdd { out } => Box::new(inductor::Add { out: *out }),
            Op::InductorAvgPool2d { pool, opts, out } => Box::new(pool::InductorAvgPool {
                pool: *pool,
                opts: *opts,
                out: *out,
            }),
        }
    }

    /// The op's name in the model file.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }
}

/// The file form of every op, by family: name, declared attributes, parser.
pub(crate) const FILE_OPS: &[&[FileOp]] = &[
    quantize::FILE_OPS,
    conv::FILE_OPS,
    binary::FILE_OPS,
    pool::FILE_OPS,
    table::FILE_OPS,
    shape::FILE_OPS,
    host::FILE_OPS,
    ort::FILE_OPS,
    gather::FILE_OPS,
    resize::FILE_OPS,
    chanlut::FILE_OPS,
    qsoftmax::FILE_OPS,
    inductor::FILE_OPS,
    pool::F32_FILE_OPS,
];

/// The file-form entry of op `name`.
pub(crate) fn file_op(name: &str) -> Option<&'static FileOp> {
    FILE_OPS
        .iter()
        .flat_map(|f| f.iter())
        .find(|f| f.name == name)
}

// ---------------------------------------------------------------------------
// The interface.

/// How many inputs an op takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arity {
    Exactly(usize),
    AtLeast(usize),
}

impl Arity {
    /// An error saying what the op takes, if `n` inputs do not fit.
    pub(crate) fn check(self, n: usize) -> Result<()> {
        let (ok, k, at_least) = match self {
            Arity::Exactly(k) => (n == k, k, ""),
            Arity::AtLeast(k) => (n >= k, k, "at least "),
        };
        if ok {
            return Ok(());
        }
        let s = if k == 1 { "" } else { "s" };
        Err(Error::config(
            "inputs",
            format!("takes {at_least}{k} input{s}, got {n}"),
        ))
    }
}

/// Where an op's output lives on the GPU (see [`crate::plan::Placement`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Storage {
    /// A planned buffer of its own.
    Buffer,
    /// The same bytes as input 0 (the packed layout does not change).
    Alias,
    /// Not on the GPU: input 0's bytes, dequantized on the host after readback.
    Host,
}

/// What lowering sees: the engine, the node's inputs' and output's infos
/// (one sample each: no batch dimension) and their memory formats in PyTorch.
pub(crate) struct Signature<'s> {
    pub engine: Requant,
    pub inputs: Vec<&'s TensorInfo>,
    /// Per input: whether PyTorch holds it channels-last (see
    /// [`crate::memory_format`]); the pools, `mean` and `cat` pick their
    /// kernel (and rounding) by it.
    pub channels_last: Vec<bool>,
    pub output: &'s TensorInfo,
}

impl Signature<'_> {
    /// Input `i`'s qparams (validated to be quantized by inference).
    pub fn q_in(&self, i: usize) -> Result<QParams> {
        self.inputs[i]
            .qparams()
            .ok_or_else(|| Error::dtype("input", "float32 where quint8 is needed"))
    }
}

/// One op, as the drivers see it. Implemented by a small view of the [`Op`]
/// variant in the family's module; `'a` is the borrow of the variant's data
/// (a conv borrows its [`QLayer`]).
pub(crate) trait OpKind<'a> {
    /// The op's name in the model file.
    fn name(&self) -> &'static str;
    /// How many inputs it takes.
    fn arity(&self) -> Arity {
        Arity::Exactly(1)
    }
    /// Output info (one sample's shape, dtype and qparams) from the input
    /// infos, validating the op against them. The drivers checked the arity.
    fn infer(&self, engine: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo>;
    /// The file form: attributes (and tensors) of this node.
    fn write(&self, w: &mut NodeWriter);
    /// The host constants, computed once: what the CPU loop and the GPU
    /// upload both consume.
    fn lower(&self, sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>>;
    /// Where its output lives on the GPU. Default: a planned buffer of its own.
    fn storage(&self, _ins: &[&TensorInfo], _out: &TensorInfo) -> Storage {
        Storage::Buffer
    }
    /// Whether its GPU side reads a [`Storage::Host`] input (a dequantize
    /// kept on the host), i.e. is a quantize that becomes a requantize table.
    fn reads_dequantized(&self) -> bool {
        false
    }
    /// Whether it runs on the host after readback, on float32 values (a
    /// [`host`] op): it may read a host-side dequantize, and only model
    /// outputs may depend on it.
    fn runs_on_host(&self) -> bool {
        false
    }
    /// Weight bytes as held on the GPU (int8 and epilogue records) and as the
    /// float layer would need (f32).
    fn weight_bytes(&self) -> (usize, usize) {
        (0, 0)
    }
    /// If the op clamps each byte to `[lo, hi]` of the input's scale (and
    /// nothing else), those bounds for input qparams `q`.
    fn byte_clamp(&self, _q: QParams) -> Result<Option<(i32, i32)>> {
        Ok(None)
    }
    /// This op with its output further clamped to the bytes `[lo, hi]`, if it
    /// can fold such a clamp into its own epilogue.
    fn with_clamp(&self, _lo: i32, _hi: i32) -> Result<Option<Op>> {
        Ok(None)
    }
}

/// An op's lowered constants: the CPU reference consumes them here, and the
/// GPU side ([`Upload`], in the family's `gpu.rs`) uploads them.
pub(crate) trait Lowered: Upload {
    /// Runs the op on the CPU on batched inputs (NCHW, or `[N, K]`).
    fn run_cpu(&self, io: &CpuIo<'_>) -> Result<Value>;
}

/// A node's batched inputs and output info for [`Lowered::run_cpu`].
pub(crate) struct CpuIo<'v> {
    pub batch: usize,
    pub inputs: Vec<&'v Value>,
    /// One sample's output info.
    pub output: &'v TensorInfo,
}

impl<'v> CpuIo<'v> {
    /// Input `i` as quint8 bytes, its batched shape and its qparams.
    pub fn q(&self, i: usize) -> Result<(&'v [u8], &'v [usize], QParams)> {
        match self.inputs[i] {
            Value::Q { data, shape, q } => Ok((data, shape, *q)),
            Value::F32 { .. } => Err(Error::dtype(
                format!("input {i}"),
                "float32 where quint8 is needed",
            )),
        }
    }
    /// Input `i` as float32 data.
    pub fn f32(&self, i: usize) -> Result<&'v [f32]> {
        match self.inputs[i] {
            Value::F32 { data, .. } => Ok(data),
            Value::Q { .. } => Err(Error::dtype(
                format!("input {i}"),
                "quint8 where float32 is needed",
            )),
        }
    }
    /// The batched output shape.
    pub fn out_shape(&self) -> Vec<usize> {
        self.output.batched(self.batch)
    }
    /// A quantized output with the node's output qparams.
    pub fn q_out(&self, data: Vec<u8>) -> Result<Value> {
        let q = self
            .output
            .qparams()
            .ok_or_else(|| Error::dtype("output", "float32 where quint8 is needed"))?;
        crate::layout::check_data_len(data.len(), &self.out_shape())?;
        Ok(Value::Q {
            data,
            shape: self.out_shape(),
            q,
        })
    }
}

// ---------------------------------------------------------------------------
// The file form.

/// One op's file form: its name, the attributes it declares (any other
/// attribute on such a node is an error), and its parser.
pub(crate) struct FileOp {
    pub name: &'static str,
    pub attributes: &'static [&'static str],
    pub parse: fn(&Attrs<'_>, &ParseCx<'_>) -> Result<Op>,
}

/// A tensor for the model file: name, dtype, shape, little-endian bytes.
pub(crate) type FileTensor = (String, safetensors::Dtype, Vec<usize>, Vec<u8>);

/// Typed access to the file's tensors, recording which ones were used.
pub(crate) struct Tensors<'a> {
    pub st: safetensors::SafeTensors<'a>,
    pub used: RefCell<HashSet<String>>,
}

impl Tensors<'_> {
    /// Tensor `name`'s bytes and shape, checking its dtype (and shape).
    pub fn get(
        &self,
        name: &str,
        dtype: safetensors::Dtype,
        shape: Option<&[usize]>,
    ) -> Result<(Vec<u8>, Vec<usize>)> {
        let t = self
            .st
            .tensor(name)
            .map_err(|_| Error::Model(format!("tensor {name:?} is missing")))?;
        if t.dtype() != dtype {
            return Err(Error::Model(format!(
                "tensor {name:?} has dtype {:?}, expected {dtype:?}",
                t.dtype()
            )));
        }
        if let Some(s) = shape {
            if t.shape() != s {
                return Err(Error::Model(format!(
                    "tensor {name:?} has shape {:?}, expected {s:?}",
                    t.shape()
                )));
            }
        }
        self.used.borrow_mut().insert(name.to_string());
        Ok((t.data().to_vec(), t.shape().to_vec()))
    }
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (d, _) = self.get(name, safetensors::Dtype::F32, Some(shape))?;
        Ok(d.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
    pub fn i32(&self, name: &str, shape: &[usize]) -> Result<Vec<i32>> {
        let (d, _) = self.get(name, safetensors::Dtype::I32, Some(shape))?;
        Ok(d.chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

/// What a parser may look at besides the node's attributes.
pub(crate) struct ParseCx<'a> {
    pub node: &'a str,
    /// The file's format version.
    pub version: u64,
    /// The model's arithmetic (what the non-conv ops follow).
    #[allow(dead_code)]
    pub engine: Requant,
    /// The engine the file records (chooses a conv/linear's default rule).
    pub pytorch_engine: crate::quant::Engine,
    /// Infos of the node's inputs (in order; parsing follows the graph).
    pub inputs: Vec<&'a TensorInfo>,
    pub tensors: &'a Tensors<'a>,
}

impl ParseCx<'_> {
    /// Input 0's qparams.
    pub fn q_in(&self) -> Result<QParams> {
        let x = self
            .inputs
            .first()
            .ok_or_else(|| Error::Model("needs an input".into()))?;
        x.qparams().ok_or_else(|| {
            Error::dtype(
                "input",
                "float32; this op takes a quantized (quint8) tensor",
            )
        })
    }
}

/// A node's attributes in the file, with typed getters whose errors name the
/// attribute.
pub(crate) struct Attrs<'a> {
    pub map: &'a Map<String, Json>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Model(msg.into())
}

impl Attrs<'_> {
    pub fn get(&self, key: &str) -> Result<&Json> {
        self.map
            .get(key)
            .ok_or_else(|| bad(format!("missing attribute {key:?}")))
    }
    pub fn opt(&self, key: &str) -> Option<&Json> {
        self.map.get(key)
    }
    pub fn usize(&self, key: &str) -> Result<usize> {
        as_usize(self.get(key)?, key)
    }
    pub fn pair(&self, key: &str) -> Result<[usize; 2]> {
        let v = self.get(key)?;
        match v.as_array().map(|x| x.as_slice()) {
            Some([h, w]) => {
                let p = [as_usize(h, key)?, as_usize(w, key)?];
                check_window(key, p)?;
                Ok(p)
            }
            _ => Err(bad(format!("{key:?} must be [h, w], got {v}"))),
        }
    }
    pub fn bool(&self, key: &str) -> Result<bool> {
        let v = self.get(key)?;
        v.as_bool()
            .ok_or_else(|| bad(format!("{key:?} must be true or false, got {v}")))
    }
    pub fn f32(&self, key: &str) -> Result<f32> {
        let v = self.get(key)?;
        v.as_f64()
            .map(|x| x as f32)
            .ok_or_else(|| bad(format!("{key:?} must be a number, got {v}")))
    }
    /// `scale` and `zero_point`: quint8 qparams.
    pub fn qparams(&self) -> Result<QParams> {
        let s = self.get("scale")?;
        let z = self.get("zero_point")?;
        let scale = s
            .as_f64()
            .ok_or_else(|| bad(format!("scale must be a number, got {s}")))?;
        let zp = z
            .as_i64()
            .ok_or_else(|| bad(format!("zero_point must be an integer, got {z}")))?;
        if !(scale.is_finite() && scale > 0.0 && (scale as f32) > 0.0 && (scale as f32).is_finite())
        {
            return Err(bad(format!("scale {scale} must be a finite positive f32")));
        }
        let signed = match self.map.get("dtype").map(|v| v.as_str()) {
            None | Some(Some("quint8")) => false,
            Some(Some("qint8")) => true,
            Some(_) => {
                return Err(bad(format!(
                    "dtype {} must be \"quint8\" or \"qint8\"",
                    self.map["dtype"]
                )))
            }
        };
        if signed {
            if !(-128..=127).contains(&zp) {
                return Err(bad(format!(
                    "zero_point {zp} is outside qint8's range -128..=127"
                )));
            }
            return QParams::new_i8(scale as f32, zp as i32);
        }
        if !(0..=255).contains(&zp) {
            return Err(bad(format!(
                "zero_point {zp} is outside quint8's range 0..=255"
            )));
        }
        QParams::new(scale as f32, zp as i32)
    }
    /// `scale`, `zero_point` and optional `signed` (default false): quint8
    /// qparams, or qint8 when `signed` is true, whose `zero_point` is then the
    /// int8 zero point (`-128..=127`; held as the image, see [`QParams`]).
    pub fn qparams_signed(&self) -> Result<QParams> {
        let signed = match self.opt("signed") {
            None => false,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| bad(format!("\"signed\" must be true or false, got {v}")))?,
        };
        if !signed {
            return self.qparams();
        }
        let s = self.get("scale")?;
        let z = self.get("zero_point")?;
        let scale = s
            .as_f64()
            .ok_or_else(|| bad(format!("scale must be a number, got {s}")))?;
        let zp = z
            .as_i64()
            .ok_or_else(|| bad(format!("zero_point must be an integer, got {z}")))?;
        if !(scale.is_finite() && scale > 0.0 && (scale as f32) > 0.0 && (scale as f32).is_finite())
        {
            return Err(bad(format!("scale {scale} must be a finite positive f32")));
        }
        if !(-128..=127).contains(&zp) {
            return Err(bad(format!(
                "zero_point {zp} is outside qint8's range -128..=127"
            )));
        }
        QParams::new_i8(scale as f32, zp as i32)
    }
    pub fn activation(&self) -> Result<Activation> {
        let v = self.get("activation")?;
        Activation::parse(v.as_str().unwrap_or(""))
    }
}

/// An error naming op `op` unless the model's engine is `want`: the op
/// `what` (e.g. "follows ONNX Runtime's rule"), which only that engine runs.
pub(crate) fn require_engine(op: &str, engine: Requant, want: Requant, what: &str) -> Result<()> {
    if engine != want {
        return Err(Error::config(
            op,
            format!(
                "{what}; the model's engine is {:?} (needs {:?})",
                engine.name(),
                want.name()
            ),
        ));
    }
    Ok(())
}

/// Checks a window parameter (kernel, stride, padding, dilation, output size)
/// against [`crate::model::MAX_WINDOW`].
pub(crate) fn check_window(what: &str, v: [usize; 2]) -> Result<()> {
    if v.iter().any(|&d| d > crate::model::MAX_WINDOW) {
        return Err(Error::config(
            what,
            format!(
                "{v:?} exceeds the bound {} (docs/MODEL_FORMAT.md, \"Bounds\")",
                crate::model::MAX_WINDOW
            ),
        ));
    }
    Ok(())
}

/// A zero-filled vector of `len` elements, allocated fallibly: an
/// [`Error::TooLarge`] naming `what` instead of an abort.
pub(crate) fn try_vec<T: Clone>(len: usize, fill: T, what: &str) -> Result<Vec<T>> {
    let mut v = try_with_capacity(len, what)?;
    v.resize(len, fill);
    Ok(v)
}

/// An empty vector with room for `len` elements, allocated fallibly.
pub(crate) fn try_with_capacity<T>(len: usize, what: &str) -> Result<Vec<T>> {
    let too_large = || Error::TooLarge {
        what: format!("{what} (bytes, host memory)"),
        needed: (len as u64).saturating_mul(std::mem::size_of::<T>() as u64),
        limit: isize::MAX as u64,
    };
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| too_large())?;
    Ok(v)
}

/// `a * b * ...` with overflow as an [`Error::TooLarge`] naming `what`.
pub(crate) fn checked_product(what: &str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::TooLarge {
            what: format!("{what} {dims:?} (elements)"),
            needed: u64::MAX,
            limit: usize::MAX as u64,
        })
}

fn as_usize(v: &Json, key: &str) -> Result<usize> {
    v.as_u64()
        .map(|x| x as usize)
        .ok_or_else(|| bad(format!("{key:?} must be a non-negative integer, got {v}")))
}

/// Collects one node's file form.
pub(crate) struct NodeWriter<'a> {
    pub node: &'a str,
    pub attrs: Map<String, Json>,
    pub tensors: &'a mut Vec<FileTensor>,
    /// The lowest format version that can hold what was written.
    pub version: u64,
}

impl NodeWriter<'_> {
    /// Marks the file as needing format version `v` (a newer attribute).
    pub fn require_version(&mut self, v: u64) {
        self.version = self.version.max(v);
    }
    pub fn put(&mut self, key: &str, v: Json) {
        self.attrs.insert(key.into(), v);
    }
    pub fn put_qparams(&mut self, q: QParams) {
        self.put("scale", serde_json::json!(q.scale as f64));
        self.put("zero_point", serde_json::json!(q.true_zero_point()));
        if q.signed {
            // qint8: the file holds the int8 zero point.
            self.put("dtype", serde_json::json!("qint8"));
        }
    }
    /// [`Self::put_qparams`] for qparams that may be signed: a qint8 one is
    /// written with its int8 zero point and `"signed": true`.
    pub fn put_qparams_signed(&mut self, q: QParams) {
        self.put("scale", serde_json::json!(q.scale as f64));
        self.put("zero_point", serde_json::json!(q.true_zero_point()));
        if q.signed {
            self.put("signed", serde_json::json!(true));
        }
    }
}

// ---------------------------------------------------------------------------
// Scalar rules shared by several ops.

/// ATen's elementwise quantized kernels run the first `n - n % 64` elements of
/// a flat tensor through the vectorized lambda and the rest through the scalar
/// one; for `add` and `hardswish` under fbgemm the two round differently.
pub const VEC_SPLIT: usize = 64;

/// Number of leading elements of an `n`-element tensor that take ATen's vector path.
pub fn n_vec(n: usize) -> usize {
    n - n % VEC_SPLIT
}

/// Scalar-path dequantize: `s * f32(q - zp)`.
#[inline]
pub fn dequant_scalar(q: u8, p: QParams) -> f32 {
    p.scale * (q as i32 - p.zero_point) as f32
}

/// Vector-path dequantize: `fma(s, f32(q), s * f32(-zp))`, one rounding for
/// the multiply-add.
#[inline]
pub fn dequant_vector(q: u8, p: QParams) -> f32 {
    let premul = p.scale * (-p.zero_point) as f32;
    p.scale.mul_add(q as f32, premul)
}

/// Rule Q with `inv = 1/s` (see [`crate::quant::quantize_with_inv`]).
pub use crate::quant::quantize_with_inv as quantize_inv;

/// `(n, c, h, w)` of a batched NCHW input, all >= 1, for ops that need 4 dimensions.
pub(crate) fn dims4(shape: &[usize], what: &str) -> Result<(usize, usize, usize, usize)> {
    match *shape {
        [n, c, h, w] if n > 0 && c > 0 && h > 0 && w > 0 => Ok((n, c, h, w)),
        _ => Err(Error::shape(
            what,
            format!("input shape {shape:?}: expected [N, C, H, W], all >= 1"),
        )),
    }
}

/// Checks that input 0 is quantized; its qparams.
pub(crate) fn quantized(x: &TensorInfo) -> Result<QParams> {
    x.qparams().ok_or_else(|| {
        Error::dtype(
            "input",
            "float32; this op takes a quantized (quint8) tensor",
        )
    })
}

/// Same shape and dtype as `x`, another shape.
pub(crate) fn keep(x: &TensorInfo, shape: Vec<usize>) -> TensorInfo {
    TensorInfo {
        shape,
        dtype: x.dtype,
    }
}
