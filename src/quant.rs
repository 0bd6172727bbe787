//! The quantization rules, in one place, used by both the CPU reference and
//! the GPU path: qparams, how observers choose them, quantize/dequantize,
//! BatchNorm folding, weight quantization and the requantization epilogue.
//!
//! Every function follows PyTorch's arithmetic to the letter (see
//! `tests/data/conformance/README.md`): IEEE f32 unless stated, rounding to
//! nearest with ties to even, divisions done once on the host.

use crate::error::{Error, Result};

/// `torch.finfo(torch.float32).eps`, the floor PyTorch's observers put under a scale.
pub const F32_EPS: f32 = f32::EPSILON;

/// Scale and zero point of an 8-bit affine quantized activation:
/// `real = (q - zero_point) * scale`.
///
/// A tensor is quint8 (`signed == false`) or qint8 (`signed == true`). qfuse
/// holds both as bytes in `0..=255`: a qint8 value `v` (in `-128..=127`, zero
/// point `z`) is held as its **uint8 image** `v + 128`, with zero point
/// `z + 128`. `zero_point` is always the image's (`0..=255`); every rule that
/// depends only on `q - zero_point` and saturates to the type's range is the
/// same on the image, and the ops whose rule is not (a zero point added before
/// rounding, as in some of ONNX Runtime's kernels) read
/// [`QParams::true_zero_point`]. Values cross the API as
/// images too ([`crate::Value::Q`]); [`crate::Value::q_i8`] gives the int8
/// values back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QParams {
    /// Float units per quantized step; finite and > 0 in a valid value
    /// ([`QParams::new`] checks it, the fields alone do not).
    pub scale: f32,
    /// The byte that represents 0.0, in `0..=255` (for qint8, the int8 zero
    /// point + 128).
    pub zero_point: i32,
    /// qint8 (held as uint8 images, see above) instead of quint8.
    pub signed: bool,
}

impl QParams {
    /// Checked constructor of quint8 qparams: the scale must be finite and
    /// positive, the zero point in `0..=255`.
    pub fn new(scale: f32, zero_point: i32) -> Result<Self> {
        let q = QParams {
            scale,
            zero_point,
            signed: false,
        };
        q.validate("activation")?;
        Ok(q)
    }

    /// Checked constructor of qint8 qparams from the int8 zero point (in
    /// `-128..=127`); held as the uint8 image (`zero_point + 128`).
    pub fn new_i8(scale: f32, zero_point: i32) -> Result<Self> {
        if !(-128..=127).contains(&zero_point) {
            return Err(Error::qparams(
                "activation",
                format!("zero point {zero_point} is outside qint8's range -128..=127"),
            ));
        }
        let q = QParams {
            scale,
            zero_point: zero_point + 128,
            signed: true,
        };
        q.validate("activation")?;
        Ok(q)
    }

    /// The zero point in the tensor's own type: `zero_point - 128` for qint8.
    pub fn true_zero_point(&self) -> i32 {
        if self.signed {
            self.zero_point - 128
        } else {
            self.zero_point
        }
    }

    /// The type's offset: a stored byte `b` is the value `b - offset()`
    /// (128 for qint8, 0 for quint8).
    pub fn offset(&self) -> i32 {
        if self.signed {
            128
        } else {
            0
        }
    }

    /// `"qint8"` or `"quint8"`.
    pub fn dtype_name(&self) -> &'static str {
        if self.signed {
            "qint8"
        } else {
            "quint8"
        }
    }

    /// Checks the qparams of a quint8 tensor, naming `what` in the error.
    pub fn validate(&self, what: &str) -> Result<()> {
        check_scale(what, self.scale)?;
        if !(0..=255).contains(&self.zero_point) {
            let msg = if self.signed {
                format!(
                    "zero point {} is outside qint8's range -128..=127",
                    self.zero_point - 128
                )
            } else {
                format!(
                    "zero point {} is outside quint8's range 0..=255",
                    self.zero_point
                )
            };
            return Err(Error::qparams(what, msg));
        }
        // 1/scale must be finite too: quantize multiplies by it.
        if !(1.0 / self.scale).is_finite() {
            return Err(Error::qparams(
                what,
                format!("scale {:e} is too small: 1/scale overflows f32", self.scale),
            ));
        }
        Ok(())
    }

    /// `1/scale`, computed once in f32 as PyTorch does.
    pub fn inv_scale(&self) -> f32 {
        1.0 / self.scale
    }

    /// `q = clamp(rint(x * (1/scale)) + zero_point, 0, 255)`.
    pub fn quantize(&self, x: f32) -> u8 {
        quantize_with_inv(x, self.inv_scale(), self.zero_point)
    }

    /// Quantizes a whole slice.
    pub fn quantize_slice(&self, xs: &[f32]) -> Vec<u8> {
        let inv = self.inv_scale();
        xs.iter()
            .map(|&x| quantize_with_inv(x, inv, self.zero_point))
            .collect()
    }

    /// `real = f32(q - zero_point) * scale`: the integer difference, converted
    /// exactly, times the scale in one f32 multiplication (as PyTorch's CPU
    /// dequantize computes it).
    pub fn dequantize(&self, q: u8) -> f32 {
        (q as i32 - self.zero_point) as f32 * self.scale
    }

    /// Dequantizes a whole slice.
    pub fn dequantize_slice(&self, qs: &[u8]) -> Vec<f32> {
        qs.iter().map(|&q| self.dequantize(q)).collect()
    }
}

fn check_scale(what: &str, scale: f32) -> Result<()> {
    if !scale.is_finite() || scale <= 0.0 {
        return Err(Error::qparams(
            what,
            format!("scale {scale} must be finite and > 0"),
        ));
    }
    Ok(())
}

/// The quantize rule with a precomputed `inv = 1/scale`:
/// `clamp(i32(rint(x * inv)) + zero_point, 0, 255)`; the zero point is added
/// after rounding, values past i32 clip first (as ATen's cast does), and NaN
/// maps to the zero point.
#[inline]
pub fn quantize_with_inv(x: f32, inv: f32, zero_point: i32) -> u8 {
    let r = (x * inv).round_ties_even();
    let r = if r.is_nan() {
        0
    } else {
        r.clamp(-2_147_483_648.0, 2_147_483_520.0) as i64
    };
    (r + zero_point as i64).clamp(0, 255) as u8
}

/// 8-bit quantized types an observer can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QDtype {
    /// Unsigned 8-bit (activations).
    QUInt8,
    /// Signed 8-bit (weights).
    QInt8,
}

/// How an observer maps a range to qparams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QScheme {
    /// Zero point chosen so that `[min, max]` (widened to contain 0) fills the range.
    Affine,
    /// Zero point in the middle; scale from `max(|min|, |max|)`.
    Symmetric,
}

/// An observer's target: dtype, scheme and whether the range is reduced by
/// one bit (fbgemm's activations use `reduce_range=True`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObserverSpec {
    /// The quantized type whose range the qparams fill.
    pub dtype: QDtype,
    /// Affine or symmetric mapping of the observed range.
    pub scheme: QScheme,
    /// Use half the range (`0..=127` for quint8), as fbgemm does to keep
    /// its 16-bit intermediate sums from saturating.
    pub reduce_range: bool,
}

impl ObserverSpec {
    /// `(quant_min, quant_max)` as PyTorch's `_calculate_qmin_qmax`.
    pub fn qrange(&self) -> (i32, i32) {
        match (self.dtype, self.reduce_range) {
            (QDtype::QUInt8, false) => (0, 255),
            (QDtype::QUInt8, true) => (0, 127),
            (QDtype::QInt8, false) => (-128, 127),
            (QDtype::QInt8, true) => (-64, 63),
        }
    }

    /// PyTorch's `_ObserverBase._calculate_qparams(min_val, max_val)` for one
    /// (min, max) pair: the range is widened to contain 0 (so that 0 is exactly
    /// representable), the scale floored at `eps`, the zero point rounded ties
    /// to even and clamped into the range.
    pub fn qparams(&self, min_val: f32, max_val: f32) -> Result<(f32, i32)> {
        if !(min_val.is_finite() && max_val.is_finite()) || min_val > max_val {
            return Err(Error::qparams(
                "observer",
                format!("min {min_val} and max {max_val} must be finite with min <= max"),
            ));
        }
        let (qmin, qmax) = self.qrange();
        let min_neg = min_val.min(0.0);
        let max_pos = max_val.max(0.0);
        match self.scheme {
            QScheme::Symmetric => {
                let amax = (-min_neg).max(max_pos);
                let scale = (amax / ((qmax - qmin) as f32 / 2.0)).max(F32_EPS);
                let zp = match self.dtype {
                    QDtype::QUInt8 => 128,
                    QDtype::QInt8 => 0,
                };
                Ok((scale, zp))
            }
            QScheme::Affine => {
                let scale = ((max_pos - min_neg) / (qmax - qmin) as f32).max(F32_EPS);
                let zp = qmin - (min_neg / scale).round_ties_even() as i32;
                Ok((scale, zp.clamp(qmin, qmax)))
            }
        }
    }
}

/// The activation observer target of PyTorch's default qconfig for `engine`.
pub fn default_activation_spec(engine: Requant) -> ObserverSpec {
    ObserverSpec {
        dtype: QDtype::QUInt8,
        scheme: QScheme::Affine,
        reduce_range: matches!(engine, Requant::Fbgemm),
    }
}

/// BatchNorm2d parameters in eval mode.
#[derive(Clone, Debug)]
pub struct BatchNorm {
    /// Per-channel scale (PyTorch's `weight`), one per output channel.
    pub gamma: Vec<f32>,
    /// Per-channel shift (PyTorch's `bias`).
    pub beta: Vec<f32>,
    /// The running mean subtracted in eval mode.
    pub running_mean: Vec<f32>,
    /// The running variance (>= 0) divided by in eval mode.
    pub running_var: Vec<f32>,
    /// Added to the variance before the square root (PyTorch's default 1e-5).
    pub eps: f32,
}

/// Folds a BatchNorm into the preceding conv's weight `[O, ...]` and bias, as
/// PyTorch's `fuse_conv_bn_weights`: `r = 1/sqrt(var + eps)`,
/// `w' = w * (gamma * r)`, `b' = (b - mean) * r * gamma + beta`, in f32, left
/// to right.
pub fn fold_batchnorm(
    weight: &[f32],
    bias: Option<&[f32]>,
    bn: &BatchNorm,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let o = bn.gamma.len();
    for (name, v) in [
        ("beta", &bn.beta),
        ("running_mean", &bn.running_mean),
        ("running_var", &bn.running_var),
    ] {
        if v.len() != o {
            return Err(Error::shape(
                "batchnorm",
                format!("{name} has {} channels, gamma has {o}", v.len()),
            ));
        }
    }
    if o == 0 || !weight.len().is_multiple_of(o) {
        return Err(Error::shape(
            "batchnorm",
            format!(
                "weight of {} values is not divisible into {o} channels",
                weight.len()
            ),
        ));
    }
    if let Some(b) = bias {
        if b.len() != o {
            return Err(Error::shape(
                "batchnorm",
                format!("bias has {} channels, batchnorm has {o}", b.len()),
            ));
        }
    }
    let per = weight.len() / o;
    let mut w = Vec::with_capacity(weight.len());
    let mut b = Vec::with_capacity(o);
    for c in 0..o {
        let r = 1.0 / (bn.running_var[c] + bn.eps).sqrt();
        let f = bn.gamma[c] * r;
        w.extend(weight[c * per..(c + 1) * per].iter().map(|&x| x * f));
        let b0 = bias.map_or(0.0, |b| b[c]);
        b.push((b0 - bn.running_mean[c]) * r * bn.gamma[c] + bn.beta[c]);
    }
    Ok((w, b))
}

/// How weights are quantized: one scale per output channel or one for all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightScheme {
    /// One scale per output channel (PyTorch's default for conv and linear).
    PerChannel,
    /// One scale for the whole weight tensor.
    PerTensor,
}

/// Quantizes a float weight `[O, ...]` to qint8, symmetric, zero point 0:
/// `amax = max(-min(min(w), 0), max(max(w), 0))`, `scale = max(amax / 127.5, eps)`,
/// `q = clamp(rint(w * (1/scale)), -128, 127)`. Returns the int8 weight and
/// one scale per output channel (repeated for per-tensor).
pub fn quantize_weight(
    weight: &[f32],
    out_channels: usize,
    scheme: WeightScheme,
) -> Result<(Vec<i8>, Vec<f32>)> {
    if out_channels == 0 || !weight.len().is_multiple_of(out_channels) {
        return Err(Error::shape(
            "weight",
            format!(
                "{} values do not split into {out_channels} output channels",
                weight.len()
            ),
        ));
    }
    if let Some(i) = weight.iter().position(|x| !x.is_finite()) {
        return Err(Error::qparams(
            "weight",
            format!("element {i} is {} (not finite)", weight[i]),
        ));
    }
    let spec = ObserverSpec {
        dtype: QDtype::QInt8,
        scheme: QScheme::Symmetric,
        reduce_range: false,
    };
    let per = weight.len() / out_channels;
    let min_max = |s: &[f32]| {
        s.iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
                (lo.min(x), hi.max(x))
            })
    };
    let scales: Vec<f32> = match scheme {
        WeightScheme::PerTensor => {
            let (lo, hi) = min_max(weight);
            vec![spec.qparams(lo, hi)?.0; out_channels]
        }
        WeightScheme::PerChannel => weight
            .chunks(per)
            .map(|c| {
                let (lo, hi) = min_max(c);
                spec.qparams(lo, hi).map(|q| q.0)
            })
            .collect::<Result<_>>()?,
    };
    let mut q = Vec::with_capacity(weight.len());
    for (c, chunk) in weight.chunks(per).enumerate() {
        let inv = 1.0 / scales[c];
        q.extend(
            chunk
                .iter()
                .map(|&x| (x * inv).round_ties_even().clamp(-128.0, 127.0) as i8),
        );
    }
    Ok((q, scales))
}

/// Which requantization rule a conv/linear layer follows: that of PyTorch's
/// `fbgemm` engine (float bias added to the f32 accumulator) or `qnnpack`
/// (bias quantized to i32 and added to the integer accumulator).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Requant {
    /// fbgemm (x86 servers): f32 bias on the f32-scaled accumulator; the
    /// default.
    #[default]
    Fbgemm,
    /// qnnpack (ARM, mobile): i32 bias, then one float multiplier.
    Qnnpack,
    /// ONNX Runtime's CPU execution provider (x86-64), for models loaded from
    /// ONNX files (`tests/data/onnx/README.md`): the conv/matmul epilogue is
    /// qnnpack's form with the int32 bias read from the file; quantize divides
    /// by the scale; the other ops have their own ops and rules.
    OnnxRuntime,
    /// oneDNN (what PyTorch's `x86` engine runs a conv2d with at most 100
    /// groups through on a Linux CPU with AVX-512 VNNI, and the `onednn`
    /// engine every conv2d and linear): a conv/linear rule only, never a
    /// model's ([`Model::new`](crate::model::Model::new) refuses it there; the
    /// other ops of such models follow fbgemm). Per output channel
    /// `v = f32(f32(f32(acc) * s_in) * s_w) + bias`, then
    /// `y = clamp(rint(f32(v * f32(1/s_out)) + f32(zp_out)))`: the zero point
    /// is added in f32 **before** rounding ([`EpilogueForm::Onednn`]).
    Onednn,
    /// ExecuTorch's XNNPACK delegate (pt2e models, `XNNPACKQuantizer`;
    /// rules in `tests/data/pt2e/README.md`): conv/linear take the int32
    /// bias ExecuTorch serialized ([`QLayer::with_int_bias_rule`](crate::layer::QLayer::with_int_bias_rule))
    /// and qnnpack's fp32 epilogue on int8; quantize multiplies by `f32(1/s)`;
    /// `mean` follows XNNPACK's global average pooling (the zero point enters
    /// as a float correction); add, mul and clamps are tables
    /// ([`crate::ops::xnnpack`]).
    Xnnpack,
    /// PyTorch 2 export models quantized with torchao's `X86InductorQuantizer`
    /// and compiled by `torch.compile` (Inductor, freezing) on an x86 CPU with
    /// AVX-512 VNNI (rules: `tests/data/pt2e/README.md`, "Inductor x86").
    /// As a model's arithmetic: quantize `rint(x * f32(1/s)) + zp` (Inductor's
    /// C++), dequantize `f32(q - zp) * s`, add/clamps as exporter tables,
    /// max pool on bytes; the ops whose float formula was not measured are
    /// refused. As a conv/linear rule: oneDNN wrote **f32** (`v` of
    /// [`Requant::Onednn`]) and Inductor's C++ quantized it after a float
    /// relu / max pool: `y = clamp(rint(f32(v * f32(1/s_out))) + zp_out)`,
    /// the zero point added **after** rounding ([`EpilogueForm::OnednnF32`]).
    /// A conv whose output oneDNN quantizes itself is [`Requant::Onednn`].
    InductorX86,
}

impl Requant {
    /// The rule's name as the model file stores it (a conv/linear node's
    /// `"requant"`): `"fbgemm"`, `"qnnpack"`, `"onnxruntime"` or `"onednn"`.
    pub fn name(self) -> &'static str {
        match self {
            Requant::Fbgemm => "fbgemm",
            Requant::Qnnpack => "qnnpack",
            Requant::OnnxRuntime => "onnxruntime",
            Requant::Onednn => "onednn",
            Requant::Xnnpack => "xnnpack",
            Requant::InductorX86 => "inductor_x86",
        }
    }
    /// The inverse of [`Requant::name`]; any other string is
    /// [`Error::Unsupported`].
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "fbgemm" => Ok(Requant::Fbgemm),
            "qnnpack" => Ok(Requant::Qnnpack),
            "onnxruntime" => Ok(Requant::OnnxRuntime),
            "onednn" => Ok(Requant::Onednn),
            "xnnpack" => Ok(Requant::Xnnpack),
            "inductor_x86" => Ok(Requant::InductorX86),
            _ => Err(Error::Unsupported(format!(
                "requantization rule {s:?} (known: fbgemm, qnnpack, onnxruntime, onednn, xnnpack, inductor_x86)"
            ))),
        }
    }
}

/// A PyTorch quantized engine (`torch.backends.quantized.engine`) as a model
/// file records it: the engine the model was converted with. `fbgemm` and
/// `qnnpack` models run with that engine's arithmetic. `x86` (PyTorch's default
/// engine on x86 CPUs) computes every op as fbgemm does, except conv2d with at
/// most 100 groups on a Linux CPU with AVX-512 VNNI, which it hands to oneDNN
/// ([`Requant::Onednn`]); `onednn` runs every conv2d and linear through oneDNN.
/// A conv/linear node without its own `"requant"` gets [`Engine::layer_rule`]
/// (for `x86`: the VNNI CPU's routing); the exporter writes each node's rule
/// as PyTorch ran it on the exporting CPU (README, "Engines").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Engine {
    /// `fbgemm`: fbgemm's arithmetic ([`Requant::Fbgemm`]).
    #[default]
    Fbgemm,
    /// `qnnpack`: QNNPACK's arithmetic ([`Requant::Qnnpack`]).
    Qnnpack,
    /// `x86`: fbgemm's arithmetic ([`Requant::Fbgemm`]), and by default
    /// oneDNN's epilogue for conv2d with at most 100 groups.
    X86,
    /// Not a PyTorch engine: a model loaded from an ONNX file, computed with
    /// ONNX Runtime's arithmetic ([`Requant::OnnxRuntime`]).
    OnnxRuntime,
    /// `onednn`: every conv2d and linear by oneDNN's epilogue
    /// ([`Requant::Onednn`]), the other ops by fbgemm's arithmetic.
    Onednn,
    /// Not a PyTorch engine: a pt2e model lowered by ExecuTorch to its
    /// XNNPACK delegate, computed with XNNPACK's arithmetic
    /// ([`Requant::Xnnpack`]).
    Xnnpack,
    /// Not a PyTorch quantized engine: a pt2e model quantized with
    /// `X86InductorQuantizer` and compiled by Inductor (freezing) on an
    /// AVX-512 VNNI CPU ([`Requant::InductorX86`]); conv/linear layers default
    /// to [`Requant::Onednn`] (oneDNN's u8 output).
    InductorX86,
}

impl Engine {
    /// The engine's name in PyTorch and in the model file.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Fbgemm => "fbgemm",
            Engine::Qnnpack => "qnnpack",
            Engine::X86 => "x86",
            Engine::OnnxRuntime => "onnxruntime",
            Engine::Onednn => "onednn",
            Engine::Xnnpack => "xnnpack",
            Engine::InductorX86 => "inductor_x86",
        }
    }
    /// The engine named `s`; unknown names are an [`Error::Unsupported`]
    /// naming the engines qfuse knows.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "fbgemm" => Ok(Engine::Fbgemm),
            "qnnpack" => Ok(Engine::Qnnpack),
            "x86" => Ok(Engine::X86),
            "onnxruntime" => Ok(Engine::OnnxRuntime),
            "onednn" => Ok(Engine::Onednn),
            "xnnpack" => Ok(Engine::Xnnpack),
            "inductor_x86" => Ok(Engine::InductorX86),
            _ => Err(Error::Unsupported(format!(
                "quantized engine {s:?} (known: fbgemm, qnnpack, x86, onednn, onnxruntime, xnnpack, inductor_x86)"
            ))),
        }
    }
    /// The arithmetic qfuse computes the engine's models with (all ops but
    /// the conv/linear epilogues, see [`Engine::layer_rule`]).
    pub fn requant(self) -> Requant {
        match self {
            Engine::Qnnpack => Requant::Qnnpack,
            Engine::Fbgemm | Engine::X86 | Engine::Onednn => Requant::Fbgemm,
            Engine::OnnxRuntime => Requant::OnnxRuntime,
            Engine::Xnnpack => Requant::Xnnpack,
            Engine::InductorX86 => Requant::InductorX86,
        }
    }
    /// The requantization rule of a conv2d (`conv == true`, with `groups`)
    /// or linear layer that does not name its own: PyTorch's dispatch
    /// (`onednn_utils::should_use_onednn_quant`) on a Linux CPU with AVX-512
    /// VNNI: `x86` hands conv2d with `groups <= 100` to oneDNN, linear and
    /// the other convs to fbgemm; `onednn` hands every conv2d and linear to
    /// oneDNN; the other engines use their own rule.
    pub fn layer_rule(self, conv: bool, groups: usize) -> Requant {
        match self {
            Engine::X86 if conv && groups <= 100 => Requant::Onednn,
            Engine::Onednn | Engine::InductorX86 => Requant::Onednn,
            e => e.requant(),
        }
    }
}

impl From<Requant> for Engine {
    fn from(r: Requant) -> Engine {
        match r {
            Requant::Fbgemm => Engine::Fbgemm,
            Requant::Qnnpack => Engine::Qnnpack,
            Requant::OnnxRuntime => Engine::OnnxRuntime,
            Requant::Onednn => Engine::Onednn,
            Requant::Xnnpack => Engine::Xnnpack,
            Requant::InductorX86 => Engine::InductorX86,
        }
    }
}

/// The activation fused into a layer's epilogue (a clamp on the output).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Activation {
    /// No activation: the output is clamped to the full `0..=255` only.
    #[default]
    None,
    /// ReLU: the output is clamped below at its zero point.
    Relu,
}

impl Activation {
    /// The name the model file stores: `"none"` or `"relu"`.
    pub fn name(self) -> &'static str {
        match self {
            Activation::None => "none",
            Activation::Relu => "relu",
        }
    }
    /// The inverse of [`Activation::name`]; any other string is
    /// [`Error::Unsupported`].
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Activation::None),
            "relu" => Ok(Activation::Relu),
            _ => Err(Error::Unsupported(format!(
                "activation {s:?} (known: none, relu)"
            ))),
        }
    }
}

/// The input scale oneDNN multiplies the accumulator by when PyTorch runs a
/// conv/linear from its oneDNN-packed weights (the `x86` engine's convs on
/// AVX-512 VNNI CPUs, the `onednn` engine): PyTorch hands ideep the reciprocal
/// `f32(1.0 / s)` (computed in f64, `ideep::scale_t(1, 1.0/input_scale)`), and
/// ideep inverts it back for oneDNN (`s = 1.0 / s`, again in f64, stored as
/// f32). The round trip is not the identity: for about one f32 scale in six
/// it lands one ulp away from `s`, and that ulp moves outputs near a .5 tie
/// (conformance `onednn_src_*`; found in torchvision's resnext101_64x4d under
/// x86). Inductor's `onednn.qconv2d_pointwise` passes the scale itself
/// ([`EpilogueForm::OnednnF32`] uses `s`).
pub fn onednn_src_scale(s: f32) -> f32 {
    let ideep = (1.0f64 / s as f64) as f32;
    (1.0f64 / ideep as f64) as f32
}

/// One output channel's requantization constants, laid out as the WGSL
/// `Chan` struct in `shaders/` (12 bytes). Under [`EpilogueForm::Onednn`],
/// `bias_f32` is the float bias itself and `mult` the weight scale.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ChannelEpilogue {
    /// Integer bias added to the i32 accumulator (qnnpack's rounded bias, plus,
    /// on the GPU, the fold of the activation shift; 0 for fbgemm on the CPU).
    pub bias_i32: i32,
    /// Float bias in accumulator units, added after conversion (fbgemm; 0 for qnnpack).
    pub bias_f32: f32,
    /// `(input_scale * weight_scale) / output_scale` (qnnpack: `* (1 / output_scale)`).
    pub mult: f32,
}

/// How an epilogue turns an accumulator into an output byte (with `c` the
/// output channel's [`ChannelEpilogue`], `zp` the output zero point; every
/// operation one IEEE f32 rounding, ties to even).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum EpilogueForm {
    /// fbgemm, qnnpack, ONNX Runtime:
    /// `y = clamp(rint((f32(acc + c.bias_i32) + c.bias_f32) * c.mult) + zp, lo, hi)`.
    #[default]
    Scaled,
    /// oneDNN ([`Requant::Onednn`]), in this order, no fused multiply-add:
    /// `a = f32(acc + c.bias_i32)`, `v = f32(f32(a * input_scale) * c.mult) + c.bias_f32`,
    /// `y = clamp(rint(f32(v * inv_output_scale) + f32(zp_true)) + offset, lo, hi)`,
    /// where `zp_true = zp - offset` is the zero point in the output's own type
    /// (the zero point is added in f32 before rounding, so the image shift of a
    /// qint8 output is not).
    Onednn {
        /// The input scale as oneDNN receives it from PyTorch:
        /// [`onednn_src_scale`] of the input's scale (a reciprocal round trip).
        input_scale: f32,
        /// `1/output_scale`, one f32 division. (PyTorch hands ideep
        /// `f32(1/s)`, ideep hands oneDNN its reciprocal and oneDNN multiplies
        /// by the reciprocal of that: three correctly rounded reciprocals,
        /// which give the first one back.)
        inv_output_scale: f32,
        /// The output type's offset ([`QParams::offset`]).
        offset: i32,
    },
    /// oneDNN's f32 output quantized by Inductor's C++
    /// ([`Requant::InductorX86`]), no fused multiply-add:
    /// `a = f32(acc + c.bias_i32)`, `v = f32(f32(a * input_scale) * c.mult) + c.bias_f32`,
    /// `y = clamp(rint(f32(v * inv_output_scale)) + zp, lo, hi)` (the zero
    /// point added after rounding; a fused relu is `max(v, 0)`, the same as
    /// the clamp at `zp`).
    OnednnF32 {
        /// The input scale.
        input_scale: f32,
        /// `1/output_scale`, one f32 division (Inductor's `f32(1.0 / s)` in
        /// f64 is the same number).
        inv_output_scale: f32,
    },
    /// oneDNN's conv with a `sum` post-op (Inductor's `qconv2d_pointwise.binary`
    /// for `conv(dq(x)) + dq(a) [-> relu] -> q`, X86InductorQuantizer's residual
    /// add; measured in `tests/data/pt2e/README.md`): the conv's second input
    /// `a` (same shape as the output, qparams `sum_scale`, `sum_zero_point`)
    /// is added by oneDNN's fused multiply-add before the output scale
    /// (oneDNN 3.13's brgemm and jit int8 conv kernels: src and weight scales,
    /// bias, the sum post-op as `vfmadd231ps` with the sum scale itself, relu,
    /// then the multiplication by `1/output_scale`):
    /// `v` as under [`EpilogueForm::Onednn`],
    /// `t = fma(f32(a - sum_zero_point), sum_scale, v)` rounded once,
    /// `u = f32(t * inv_output_scale)` (relu: `max(t, 0)`, the same as the clamp at `zp`),
    /// `y = clamp(rint(f32(u + f32(zp_true))) + offset, lo, hi)`
    /// (the zero point added before rounding, as for `Onednn`; measured with
    /// torch.compile, `tests/data/pt2e/README.md` "Sum convs").
    OnednnSum {
        /// The input scale.
        input_scale: f32,
        /// `1/output_scale`, one f32 division.
        inv_output_scale: f32,
        /// The output type's offset ([`QParams::offset`]).
        offset: i32,
        /// The second addend's scale.
        sum_scale: f32,
        /// The second addend's true zero point (in its own type).
        sum_zero_point: i32,
        /// The second addend's offset ([`QParams::offset`]).
        sum_offset: i32,
    },
    /// oneDNN's conv with a `sum` post-op and an **f32** output, averaged
    /// over H, W and quantized by Inductor's C++ (the end of a torchvision
    /// resnet under X86InductorQuantizer: `relu(conv(dq(x)) + dq(a))` read by
    /// `adaptive_avg_pool2d(1)` then a quantize; tests/data/pt2e/README.md):
    /// per output pixel `t = f32(v + d)` as under [`EpilogueForm::OnednnSum`]
    /// (`relu`: `max(t, 0)`), per channel `S` the f32 sum of `t` over the
    /// pixels in row-major order from 0, `m = f32(S / f32(H*W))`,
    /// `y = clamp(rint(f32(m * inv_output_scale)) + zp, lo, hi)` (zero point
    /// after rounding). The layer's output is `[O, 1, 1]`; uint8 only.
    OnednnSumPool {
        /// The input scale.
        input_scale: f32,
        /// `1/output_scale` (of the quantize after the pool).
        inv_output_scale: f32,
        /// The second addend's scale.
        sum_scale: f32,
        /// The second addend's zero point (uint8).
        sum_zero_point: i32,
        /// oneDNN's relu post-op after the sum, before the pool.
        relu: bool,
    },
    /// oneDNN's conv with a `hardswish` eltwise post-op and a quantized
    /// output (Inductor's `qconv_pointwise(..., 'hardswish')` for
    /// `conv -> hardswish -> q` under X86InductorQuantizer; oneDNN 3.13's
    /// `jit_uni_eltwise_injector`, alpha `f32(1/6)`, beta `0.5`, measured in
    /// `tests/data/pt2e/README.md`): `v` as under [`EpilogueForm::Onednn`],
    /// `h = max(min(f32(f32(v * f32(1/6)) + 0.5), 1), 0)`, `e = f32(h * v)`,
    /// `y = clamp(rint(f32(e * inv_output_scale) + f32(zp_true)) + offset, lo, hi)`;
    /// no fused multiply-add.
    OnednnHardswish {
        /// The input scale.
        input_scale: f32,
        /// `1/output_scale`, one f32 division.
        inv_output_scale: f32,
        /// The output type's offset ([`QParams::offset`]).
        offset: i32,
    },
    /// oneDNN's plain conv (one input, [`EpilogueForm::Onednn`]'s `v`) with
    /// an **f32** output, averaged over H, W and quantized by Inductor's C++
    /// (mnasnet's end under X86InductorQuantizer: `relu(conv(dq(x)))` read by
    /// `mean([2, 3])` then a quantize; tests/data/pt2e/README.md): per output
    /// pixel `v = f32(f32(f32(acc) * input_scale) * ws) + b` (`relu`:
    /// `max(v, 0)`), then the pool and quantize of
    /// [`EpilogueForm::OnednnSumPool`]: per channel `S` the f32 sum of the
    /// pixels in row-major order from 0, `m = f32(S / f32(H*W))`,
    /// `y = clamp(rint(f32(m * inv_output_scale)) + zp, lo, hi)`. Output
    /// `[O, 1, 1]`; uint8 only.
    OnednnPool {
        /// The input scale (Inductor's plain calls: the scale itself).
        input_scale: f32,
        /// `1/output_scale` (of the quantize after the pool).
        inv_output_scale: f32,
        /// oneDNN's relu post-op, before the pool.
        relu: bool,
    },
    /// oneDNN's conv with a `swish` eltwise post-op (alpha 1) and a quantized
    /// output (Inductor's `qconv_pointwise(..., 'swish')` for
    /// `conv -> silu -> q` under X86InductorQuantizer, efficientnet; measured
    /// in `tests/data/pt2e/README.md`): `v` as under [`EpilogueForm::Onednn`],
    /// `e = onednn_swish(v)` ([`onednn_swish`]),
    /// `y = clamp(rint(f32(e * inv_output_scale) + f32(zp_true)) + offset, lo, hi)`.
    OnednnSwish {
        /// The input scale.
        input_scale: f32,
        /// `1/output_scale`, one f32 division.
        inv_output_scale: f32,
        /// The output type's offset ([`QParams::offset`]).
        offset: i32,
    },
    /// oneDNN's conv with an **f32** output (Inductor's
    /// `qconv_pointwise(..., torch.float32, post_op)` where the conv's
    /// output is read unquantized, e.g. by a squeeze-excitation `mul`;
    /// tests/data/pt2e/README.md): `a = f32(acc + c.bias_i32)`,
    /// `v = f32(f32(a * input_scale) * c.mult) + c.bias_f32`, then the
    /// post-op, no fused multiply-add. No output qparams, no clamp.
    OnednnFloat {
        /// The input scale (Inductor's plain calls: the scale itself).
        input_scale: f32,
        /// oneDNN's eltwise post-op.
        post: OnednnPost,
    },
    /// oneDNN's conv with a `sum` post-op and an **f32** output (Inductor's
    /// `qconv2d_pointwise.binary(..., torch.float32, 'sum', ...)`: the
    /// pattern Inductor falls back to when it may not write the sum into the
    /// addend's u8 buffer, i.e. the addend is the conv's own input or another
    /// op still reads it; Inductor's C++ dequantizes the addend and quantizes
    /// the result; measured in `tests/data/pt2e/README.md`):
    /// `v` as under [`EpilogueForm::OnednnFloat`],
    /// `d = f32(f32(a - sum_zero_point) * sum_scale)` (Inductor's dequantize),
    /// `t = f32(v + d)` (oneDNN's sum with scale 1: one addition, no fused
    /// multiply-add), relu: `max(t, 0)`. No output qparams, no clamp; the
    /// output is `t`, which a `quantize` node reads.
    OnednnSumFloat {
        /// The input scale (the scale itself).
        input_scale: f32,
        /// The second addend's scale.
        sum_scale: f32,
        /// The second addend's true zero point (in its own type).
        sum_zero_point: i32,
        /// The second addend's offset ([`QParams::offset`]).
        sum_offset: i32,
        /// oneDNN's relu post-op after the sum.
        relu: bool,
    },
}

/// oneDNN's eltwise post-op on a conv's f32 value, for a conv with an
/// **f32** output ([`EpilogueForm::OnednnFloat`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnednnPost {
    /// No post-op: `v` itself.
    #[default]
    None,
    /// `max(v, 0)`.
    Relu,
    /// [`onednn_hardswish`].
    Hardswish,
    /// [`onednn_swish`].
    Swish,
}

impl OnednnPost {
    /// The post-op on one value.
    #[inline]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            OnednnPost::None => v,
            // `v < 0 ? 0 : v` (-0 stays -0, as on the GPU).
            OnednnPost::Relu => {
                if v < 0.0 {
                    0.0
                } else {
                    v
                }
            }
            OnednnPost::Hardswish => onednn_hardswish(v),
            OnednnPost::Swish => onednn_swish(v),
        }
    }
    /// Its number in the GPU uniform block (`common.wgsl`'s `onednn_post`).
    pub fn code(self) -> u32 {
        match self {
            OnednnPost::None => 0,
            OnednnPost::Relu => 1,
            OnednnPost::Hardswish => 2,
            OnednnPost::Swish => 3,
        }
    }
}

/// oneDNN's `hardswish` eltwise (x64 JIT injector, alpha `f32(1/6)`, beta
/// `0.5` as PyTorch's `ideep::attr_t::fuse_hardswish()` passes them):
/// `x * max(min(f32(f32(x * alpha) + beta), 1), 0)`, each step one f32
/// rounding (Rust never contracts `a * b + c`).
#[inline]
pub fn onednn_hardswish(x: f32) -> f32 {
    let t = x * (1.0f32 / 6.0) + 0.5;
    t.clamp(0.0, 1.0) * x
}

/// oneDNN's `exp` of the x64 JIT eltwise injector (`exp_compute_vector_fwd`,
/// oneDNN 3.13): `x` clamped to `[0xc2aeac50, 0x42b17218]` (below the low
/// bound the result is 0), `fx = f32(f32(x * log2(e)) + 0.5)`, `k = floor(fx)`,
/// `r = fma(-k, ln2, x)`, the polynomial `p = fma(p, r, c)` from `0x3c07cfce`
/// over `c` = `0x3d2b9d0d, 0x3e2aad40, 0x3efffee3, 0x3f7ffffb, 1.0`,
/// `2^(k-1)` built from the exponent bits (`k = -126` gives the bits 0, i.e.
/// +0), `f32(f32(p * 2^(k-1)) * 2)`.
pub fn onednn_exp(x: f32) -> f32 {
    let b = f32::from_bits;
    let under = x < b(0xc2ae_ac50);
    let x = x.min(b(0x42b1_7218)).max(b(0xc2ae_ac50));
    // Rust never contracts `a * b + c` into a fused multiply-add.
    let fx = x * b(0x3fb8_aa3b) + 0.5;
    let k = fx.floor();
    let r = (-k).mul_add(b(0x3f31_7218), x);
    let mut p = b(0x3c07_cfce);
    for c in [
        0x3d2b_9d0d,
        0x3e2a_ad40,
        0x3eff_fee3,
        0x3f7f_fffb,
        0x3f80_0000,
    ] {
        p = p.mul_add(r, b(c));
    }
    let n = (k - 1.0) as i32;
    let pw = if under {
        0.0
    } else {
        b((n.wrapping_add(127) as u32) << 23)
    };
    (p * pw) * 2.0
}

/// oneDNN's `swish` eltwise with alpha 1 (x64 JIT injector,
/// `swish_compute_vector_fwd`, oneDNN 3.13, PyTorch's
/// `ideep::attr_t::fuse_swish()`): `s = logistic(f32(x * 1))`, `e = f32(s * x)`,
/// `logistic(x)`: `t = onednn_exp(-|x|)` ([`onednn_exp`]),
/// `y = f32(t / f32(t + 1))` (a correctly rounded division), `x` negative
/// (sign bit) ? `y` : `f32(1 - y)`. Bit-exact with oneDNN's f32 output on
/// `tests/data/pt2e/inductor_x86_eltwise/swish_f32` (the correctly rounded
/// silu and `f32(x * sigmoid(x))` are not).
pub fn onednn_swish(x: f32) -> f32 {
    let t = onednn_exp(f32::from_bits(x.to_bits() | 0x8000_0000));
    let y = t / (t + 1.0);
    let s = if x.is_sign_negative() { y } else { 1.0 - y };
    s * x
}

/// The fused epilogue of a conv/linear layer, as data: per output channel
/// constants ([`ChannelEpilogue`]), the output zero point, the clamp and the
/// form ([`EpilogueForm`]). Under [`EpilogueForm::Scaled`]
/// `y = clamp(rint((f32(acc + bias_i32) + bias_f32) * mult) + zp, lo, hi)`:
/// add the integer bias, convert exactly to f32, add the float bias,
/// multiply, round ties to even, add the output zero point, clamp (the fused
/// activation). The CPU reference calls [`Epilogue::apply`]; the WGSL kernels
/// do the same steps on the same constants.
#[derive(Clone, Debug, PartialEq)]
pub struct Epilogue {
    pub(crate) channels: Vec<ChannelEpilogue>,
    pub(crate) zero_point: i32,
    pub(crate) lo: i32,
    pub(crate) hi: i32,
    pub(crate) form: EpilogueForm,
}

impl Epilogue {
    /// Per output channel constants.
    pub fn channels(&self) -> &[ChannelEpilogue] {
        &self.channels
    }
    /// The output zero point.
    pub fn zero_point(&self) -> i32 {
        self.zero_point
    }
    /// The output bytes the clamp keeps, `(lo, hi)` (`0 <= lo <= hi <= 255`).
    pub fn clamp(&self) -> (i32, i32) {
        (self.lo, self.hi)
    }
    /// How the constants are applied.
    pub fn form(&self) -> EpilogueForm {
        self.form
    }

    /// Builds the epilogue from the layer's quantization: input scale, per-channel
    /// weight scales, the float bias, the output qparams, the activation and the rule.
    /// Each quotient is computed once here in f32 (`atw = s_in * s_w`,
    /// `mult = atw / s_out` (qnnpack: `atw * (1/s_out)`), fbgemm's `bias / atw`, qnnpack's
    /// `rint(bias * (1/atw))`; oneDNN's `1/s_out`).
    pub fn new(
        rule: Requant,
        input: QParams,
        weight_scales: &[f32],
        bias: &[f32],
        output: QParams,
        act: Activation,
    ) -> Result<Self> {
        input.validate("input")?;
        output.validate("output")?;
        if bias.len() != weight_scales.len() {
            return Err(Error::shape(
                "bias",
                format!(
                    "{} values for {} output channels",
                    bias.len(),
                    weight_scales.len()
                ),
            ));
        }
        let mut channels = Vec::with_capacity(bias.len());
        for (o, (&sw, &b)) in weight_scales.iter().zip(bias).enumerate() {
            check_scale(&format!("weight scale of output channel {o}"), sw)?;
            if !b.is_finite() {
                return Err(Error::qparams(
                    "bias",
                    format!("output channel {o} has bias {b} (not finite)"),
                ));
            }
            let atw = input.scale * sw;
            // QNNPACK (PyTorch's generate_requantization_scales) multiplies by
            // the f32 reciprocal of the output scale; the quotient differs by
            // one ulp for some qparams (conformance `qnnpack_mult_tie_*`).
            let mult = match rule {
                Requant::Qnnpack => atw * (1.0f32 / output.scale),
                _ => atw / output.scale,
            };
            let bq = b / atw;
            if atw == 0.0 || !mult.is_finite() || mult == 0.0 || !bq.is_finite() {
                return Err(Error::qparams(
                    format!("output channel {o}"),
                    format!("input scale {} x weight scale {sw} / output scale {} is not a usable f32 multiplier", input.scale, output.scale),
                ));
            }
            let (bias_i32, bias_f32) = match rule {
                Requant::Fbgemm => (0, bq),
                // XNNPACK: ExecuTorch's per-channel bias rule is qnnpack's
                // (per-tensor weights need the f64 rule:
                // ops::xnnpack_bias_i32 and QLayer::with_int_bias_rule).
                Requant::Qnnpack | Requant::Xnnpack => {
                    // The bias quantized to qint32 like any tensor: times the
                    // f32 reciprocal of its scale, not divided by it.
                    let r = (b * (1.0 / atw)).round_ties_even();
                    if r.abs() >= 2_147_483_520.0 {
                        return Err(Error::qparams(
                            "bias",
                            format!("output channel {o}: bias/scale {r} overflows i32"),
                        ));
                    }
                    (r as i32, 0.0)
                }
                Requant::OnnxRuntime => {
                    // ORT's WeightBiasQuantization of a float bias:
                    // rint(bias / (x_scale * w_scale)), a true division.
                    if bq.round_ties_even().abs() >= 2_147_483_520.0 {
                        return Err(Error::qparams(
                            "bias",
                            format!("output channel {o}: bias/scale {bq} overflows i32"),
                        ));
                    }
                    (bq.round_ties_even() as i32, 0.0)
                }
                Requant::Onednn | Requant::InductorX86 => {
                    // oneDNN scales the accumulator (input scale, then weight
                    // scale) and adds the float bias itself.
                    channels.push(ChannelEpilogue {
                        bias_i32: 0,
                        bias_f32: b,
                        mult: sw,
                    });
                    continue;
                }
            };
            channels.push(ChannelEpilogue {
                bias_i32,
                bias_f32,
                mult,
            });
        }
        let lo = crate::ops::conv::activation_lo(act, output.zero_point);
        let form = match rule {
            Requant::Onednn => EpilogueForm::Onednn {
                input_scale: onednn_src_scale(input.scale),
                inv_output_scale: output.inv_scale(),
                offset: output.offset(),
            },
            Requant::InductorX86 => EpilogueForm::OnednnF32 {
                input_scale: input.scale,
                inv_output_scale: output.inv_scale(),
            },
            _ => EpilogueForm::Scaled,
        };
        Ok(Epilogue {
            channels,
            zero_point: output.zero_point,
            lo,
            hi: 255,
            form,
        })
    }

    /// An epilogue from an int32 bias already in accumulator units (as ONNX
    /// files hold it): per output channel `mult = (input.scale * w_scale) /
    /// output.scale` (ONNX Runtime's order), `bias_i32` as given, no float
    /// bias; the output clamped to the bytes `[lo, hi]` (for qint8 outputs, the
    /// images of the int8 bounds).
    pub fn from_int_bias(
        input: QParams,
        weight_scales: &[f32],
        bias: &[i32],
        output: QParams,
        lo: i32,
        hi: i32,
    ) -> Result<Self> {
        input.validate("input")?;
        output.validate("output")?;
        if bias.len() != weight_scales.len() {
            return Err(Error::shape(
                "bias",
                format!(
                    "{} values for {} output channels",
                    bias.len(),
                    weight_scales.len()
                ),
            ));
        }
        if !(0 <= lo && lo <= hi && hi <= 255) {
            return Err(Error::qparams(
                "clamp",
                format!("[{lo}, {hi}] is not a byte range"),
            ));
        }
        let mut channels = Vec::with_capacity(bias.len());
        for (o, (&sw, &b)) in weight_scales.iter().zip(bias).enumerate() {
            check_scale(&format!("weight scale of output channel {o}"), sw)?;
            let mult = (input.scale * sw) / output.scale;
            if !mult.is_finite() || mult == 0.0 {
                return Err(Error::qparams(
                    format!("output channel {o}"),
                    format!("input scale {} x weight scale {sw} / output scale {} is not a usable f32 multiplier", input.scale, output.scale),
                ));
            }
            channels.push(ChannelEpilogue {
                bias_i32: b,
                bias_f32: 0.0,
                mult,
            });
        }
        Ok(Epilogue {
            channels,
            zero_point: output.zero_point,
            lo,
            hi,
            form: EpilogueForm::Scaled,
        })
    }

    /// This epilogue ([`EpilogueForm::Onednn`]) with oneDNN multiplying by
    /// `input_scale` itself instead of [`onednn_src_scale`] of it: Inductor's
    /// `onednn.qconv_pointwise` / `qlinear_pointwise` (engine `inductor_x86`)
    /// hand oneDNN the scale with no reciprocal round trip (measured on
    /// torchvision resnext50_32x4d, `tests/data/pt2e/README.md`). Any other
    /// form is returned unchanged.
    pub fn with_src_scale(&self, input_scale: f32) -> Epilogue {
        let mut e = self.clone();
        if let EpilogueForm::Onednn {
            inv_output_scale,
            offset,
            ..
        } = self.form
        {
            e.form = EpilogueForm::Onednn {
                input_scale,
                inv_output_scale,
                offset,
            };
        }
        e
    }

    /// This epilogue (oneDNN's, [`EpilogueForm::Onednn`]) with oneDNN's `sum`
    /// post-op reading a second addend quantized with `sum`
    /// ([`EpilogueForm::OnednnSum`]); any other form is [`Error::Unsupported`].
    pub fn with_sum(&self, sum: QParams) -> Result<Epilogue> {
        sum.validate("sum input")?;
        let EpilogueForm::Onednn {
            input_scale,
            inv_output_scale,
            offset,
        } = self.form
        else {
            return Err(Error::Unsupported(format!(
                "a conv/linear with a second (sum) input needs the onednn rule, the layer has {:?}",
                self.form
            )));
        };
        let mut e = self.clone();
        e.form = EpilogueForm::OnednnSum {
            input_scale,
            inv_output_scale,
            offset,
            sum_scale: sum.scale,
            sum_zero_point: sum.true_zero_point(),
            sum_offset: sum.offset(),
        };
        Ok(e)
    }

    /// This epilogue turned into one that ends in a global average: from
    /// [`EpilogueForm::OnednnSum`] (uint8) [`EpilogueForm::OnednnSumPool`],
    /// from [`EpilogueForm::Onednn`] (uint8, one input)
    /// [`EpilogueForm::OnednnPool`]: f32 output, `relu`, then the global
    /// average and Inductor's quantize to the epilogue's output qparams.
    pub fn with_global_pool(&self, relu: bool) -> Result<Epilogue> {
        let form = match self.form {
            EpilogueForm::OnednnSum {
                input_scale,
                inv_output_scale,
                offset: 0,
                sum_scale,
                sum_zero_point,
                sum_offset: 0,
                ..
            } => EpilogueForm::OnednnSumPool {
                input_scale,
                inv_output_scale,
                sum_scale,
                sum_zero_point,
                relu,
            },
            EpilogueForm::Onednn {
                input_scale,
                inv_output_scale,
                offset: 0,
            } => EpilogueForm::OnednnPool {
                input_scale,
                inv_output_scale,
                relu,
            },
            _ => {
                return Err(Error::Unsupported(format!(
                    "a global average after a conv needs a uint8 conv under the onednn rule (with or without a sum input), the layer has {:?}",
                    self.form
                )))
            }
        };
        let mut e = self.clone();
        e.form = form;
        Ok(e)
    }

    /// This epilogue (oneDNN's, [`EpilogueForm::Onednn`]) with oneDNN's
    /// `hardswish` eltwise post-op before the output quantization
    /// ([`EpilogueForm::OnednnHardswish`]); any other form is
    /// [`Error::Unsupported`].
    pub fn with_hardswish(&self) -> Result<Epilogue> {
        self.with_eltwise("hardswish", |input_scale, inv_output_scale, offset| {
            EpilogueForm::OnednnHardswish {
                input_scale,
                inv_output_scale,
                offset,
            }
        })
    }

    /// This epilogue (oneDNN's, one input) with an **f32** output
    /// ([`EpilogueForm::OnednnFloat`]): from [`EpilogueForm::Onednn`] with
    /// `post` ([`OnednnPost::None`] or [`OnednnPost::Relu`]: the layer's
    /// relu), from [`EpilogueForm::OnednnHardswish`] / [`EpilogueForm::OnednnSwish`]
    /// with its post-op (then `post` must be [`OnednnPost::None`]). Any other form is
    /// [`Error::Unsupported`].
    pub fn with_float_output(&self, post: OnednnPost) -> Result<Epilogue> {
        let form = match (self.form, post) {
            (EpilogueForm::Onednn { input_scale, .. }, _) => EpilogueForm::OnednnFloat { input_scale, post },
            (
                EpilogueForm::OnednnSum {
                    input_scale,
                    sum_scale,
                    sum_zero_point,
                    sum_offset,
                    ..
                },
                OnednnPost::None | OnednnPost::Relu,
            ) => EpilogueForm::OnednnSumFloat {
                input_scale,
                sum_scale,
                sum_zero_point,
                sum_offset,
                relu: post == OnednnPost::Relu,
            },
            (EpilogueForm::OnednnHardswish { input_scale, .. }, OnednnPost::None) => {
                EpilogueForm::OnednnFloat {
                    input_scale,
                    post: OnednnPost::Hardswish,
                }
            }
            (EpilogueForm::OnednnSwish { input_scale, .. }, OnednnPost::None) => {
                EpilogueForm::OnednnFloat {
                    input_scale,
                    post: OnednnPost::Swish,
                }
            }
            _ => {
                return Err(Error::Unsupported(format!(
                    "an f32 output needs a conv/linear under the onednn rule (one input with at most one post-op, or a sum input with at most a relu), the layer has {:?} with {post:?}",
                    self.form
                )))
            }
        };
        let mut e = self.clone();
        e.form = form;
        Ok(e)
    }

    /// Under [`EpilogueForm::OnednnFloat`]: output channel `o`'s f32 value
    /// from its exact accumulator (post-op applied); under
    /// [`EpilogueForm::OnednnSumFloat`] the same with the addend at its zero
    /// point (the real value 0; [`Epilogue::pool_value`] takes the addend);
    /// under any other form 0.
    #[inline]
    pub fn float_value(&self, o: usize, acc: i32) -> f32 {
        if let EpilogueForm::OnednnSumFloat {
            sum_zero_point,
            sum_offset,
            ..
        } = self.form
        {
            return self.pool_value(o, acc, (sum_zero_point + sum_offset) as u8);
        }
        let EpilogueForm::OnednnFloat { input_scale, post } = self.form else {
            return 0.0;
        };
        let c = &self.channels[o];
        // Rust never contracts `a * b + c` into a fused multiply-add.
        let a = acc.wrapping_add(c.bias_i32) as f32;
        post.apply((a * input_scale) * c.mult + c.bias_f32)
    }

    /// This epilogue (oneDNN's, [`EpilogueForm::Onednn`]) with oneDNN's
    /// `swish` eltwise post-op before the output quantization
    /// ([`EpilogueForm::OnednnSwish`]); any other form is
    /// [`Error::Unsupported`].
    pub fn with_swish(&self) -> Result<Epilogue> {
        self.with_eltwise("swish", |input_scale, inv_output_scale, offset| {
            EpilogueForm::OnednnSwish {
                input_scale,
                inv_output_scale,
                offset,
            }
        })
    }

    /// [`EpilogueForm::Onednn`]'s constants into the form `make` builds
    /// (oneDNN's eltwise post-op `name` before the output quantization).
    fn with_eltwise(
        &self,
        name: &str,
        make: fn(f32, f32, i32) -> EpilogueForm,
    ) -> Result<Epilogue> {
        let EpilogueForm::Onednn {
            input_scale,
            inv_output_scale,
            offset,
        } = self.form
        else {
            return Err(Error::Unsupported(format!(
                "oneDNN's {name} post-op needs a conv/linear under the onednn rule with one input, the layer has {:?}",
                self.form
            )));
        };
        let mut e = self.clone();
        e.form = make(input_scale, inv_output_scale, offset);
        Ok(e)
    }

    /// Under [`EpilogueForm::OnednnSumPool`] / [`EpilogueForm::OnednnPool`] /
    /// [`EpilogueForm::OnednnSumFloat`]: one output pixel's f32 value (relu
    /// applied; before any average) from channel `o`'s exact accumulator and
    /// the addend's stored byte `a` (ignored without a sum input); under any
    /// other form 0.
    #[inline]
    pub fn pool_value(&self, o: usize, acc: i32, a: u8) -> f32 {
        let c = &self.channels[o];
        // The input scale, the addend's scale and stored zero point (its
        // offset included; None without an addend), the relu.
        let (input_scale, sum, relu) = match self.form {
            EpilogueForm::OnednnSumPool {
                input_scale,
                sum_scale,
                sum_zero_point,
                relu,
                ..
            } => (input_scale, Some((sum_scale, sum_zero_point)), relu),
            EpilogueForm::OnednnSumFloat {
                input_scale,
                sum_scale,
                sum_zero_point,
                sum_offset,
                relu,
            } => (
                input_scale,
                Some((sum_scale, sum_zero_point + sum_offset)),
                relu,
            ),
            EpilogueForm::OnednnPool {
                input_scale, relu, ..
            } => (input_scale, None, relu),
            _ => return 0.0,
        };
        let x = acc.wrapping_add(c.bias_i32) as f32;
        let v = (x * input_scale) * c.mult + c.bias_f32;
        let t = match sum {
            Some((sa, za)) => v + (a as i32 - za) as f32 * sa,
            None => v,
        };
        if relu {
            t.max(0.0)
        } else {
            t
        }
    }

    /// Under [`EpilogueForm::OnednnSumPool`] / [`EpilogueForm::OnednnPool`]:
    /// the output byte of a channel whose `count` pixel values summed (in
    /// order, from 0) to `sum`.
    #[inline]
    pub fn pool_quantize(&self, sum: f32, count: usize) -> u8 {
        let inv = match self.form {
            EpilogueForm::OnednnSumPool {
                inv_output_scale, ..
            }
            | EpilogueForm::OnednnPool {
                inv_output_scale, ..
            } => inv_output_scale,
            _ => 0.0,
        };
        let m = sum / count as f32;
        let r = (m * inv).round_ties_even().clamp(
            (self.lo - self.zero_point) as f32,
            (self.hi - self.zero_point) as f32,
        );
        (r as i32 + self.zero_point) as u8
    }

    /// Requantizes output channel `o`'s exact accumulator plus the stored byte
    /// `a` of the second addend ([`EpilogueForm::OnednnSum`]); under any other
    /// form `a` is ignored ([`Epilogue::apply`]).
    #[inline]
    pub fn apply_sum(&self, o: usize, acc: i32, a: u8) -> u8 {
        let EpilogueForm::OnednnSum {
            input_scale,
            inv_output_scale,
            offset,
            sum_scale,
            sum_zero_point,
            sum_offset,
        } = self.form
        else {
            return self.apply(o, acc);
        };
        let c = &self.channels[o];
        // Rust never contracts `a * b + c` into a fused multiply-add: the
        // one fused multiply-add (oneDNN's sum post-op) is `mul_add`.
        let x = acc.wrapping_add(c.bias_i32) as f32;
        let v = (x * input_scale) * c.mult + c.bias_f32;
        let d = (a as i32 - sum_offset - sum_zero_point) as f32;
        let u = d.mul_add(sum_scale, v) * inv_output_scale;
        let r = (u + (self.zero_point - offset) as f32).round_ties_even();
        let r = r.clamp((self.lo - offset) as f32, (self.hi - offset) as f32);
        (r as i32 + offset) as u8
    }

    /// Requantizes output channel `o`'s exact accumulator to 8 bits.
    #[inline]
    pub fn apply(&self, o: usize, acc: i32) -> u8 {
        if let EpilogueForm::OnednnSum {
            sum_zero_point,
            sum_offset,
            ..
        } = self.form
        {
            // The second addend at its zero point (the real value 0).
            return self.apply_sum(o, acc, (sum_zero_point + sum_offset) as u8);
        }
        if let EpilogueForm::OnednnSumPool { sum_zero_point, .. } = self.form {
            // One pixel, the addend at its zero point.
            return self.pool_quantize(self.pool_value(o, acc, sum_zero_point as u8), 1);
        }
        if let EpilogueForm::OnednnPool { .. } = self.form {
            return self.pool_quantize(self.pool_value(o, acc, 0), 1);
        }
        let c = &self.channels[o];
        if let EpilogueForm::Onednn {
            input_scale,
            inv_output_scale,
            offset,
        } = self.form
        {
            // Rust never contracts `a * b + c` into a fused multiply-add.
            let a = acc.wrapping_add(c.bias_i32) as f32;
            let v = (a * input_scale) * c.mult + c.bias_f32;
            let r = (v * inv_output_scale + (self.zero_point - offset) as f32).round_ties_even();
            let r = r.clamp((self.lo - offset) as f32, (self.hi - offset) as f32);
            return (r as i32 + offset) as u8;
        }
        if let EpilogueForm::OnednnHardswish {
            input_scale,
            inv_output_scale,
            offset,
        } = self.form
        {
            let a = acc.wrapping_add(c.bias_i32) as f32;
            let v = onednn_hardswish((a * input_scale) * c.mult + c.bias_f32);
            let r = (v * inv_output_scale + (self.zero_point - offset) as f32).round_ties_even();
            let r = r.clamp((self.lo - offset) as f32, (self.hi - offset) as f32);
            return (r as i32 + offset) as u8;
        }
        if let EpilogueForm::OnednnSwish {
            input_scale,
            inv_output_scale,
            offset,
        } = self.form
        {
            let a = acc.wrapping_add(c.bias_i32) as f32;
            let v = onednn_swish((a * input_scale) * c.mult + c.bias_f32);
            let r = (v * inv_output_scale + (self.zero_point - offset) as f32).round_ties_even();
            let r = r.clamp((self.lo - offset) as f32, (self.hi - offset) as f32);
            return (r as i32 + offset) as u8;
        }
        if let EpilogueForm::OnednnF32 {
            input_scale,
            inv_output_scale,
        } = self.form
        {
            let a = acc.wrapping_add(c.bias_i32) as f32;
            let v = (a * input_scale) * c.mult + c.bias_f32;
            let r = (v * inv_output_scale).round_ties_even();
            let r = r.clamp(
                (self.lo - self.zero_point) as f32,
                (self.hi - self.zero_point) as f32,
            );
            return (r as i32 + self.zero_point) as u8;
        }
        let v = acc.wrapping_add(c.bias_i32) as f32 + c.bias_f32;
        let r = (v * c.mult).round_ties_even();
        // Clamp in the float domain (both bounds are integers), then shift.
        let r = r.clamp(
            (self.lo - self.zero_point) as f32,
            (self.hi - self.zero_point) as f32,
        );
        (r as i32 + self.zero_point) as u8
    }

    /// The same epilogue for a kernel that accumulates over activations shifted
    /// to signed bytes (`x - 128`, as `dot4I8Packed` needs): since
    /// `Σ(x - zp)·w = Σ(x - 128)·w + (128 - zp)·Σw`, the constant
    /// `(128 - zp)·Σw` of each output channel is folded into its integer bias.
    /// `weight_sums[o]` is `Σw` over output channel `o`'s weights.
    pub fn shifted_for_signed_input(&self, input_zero_point: i32, weight_sums: &[i32]) -> Epilogue {
        let mut e = self.clone();
        for (c, &s) in e.channels.iter_mut().zip(weight_sums) {
            c.bias_i32 = c
                .bias_i32
                .wrapping_add((128 - input_zero_point).wrapping_mul(s));
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observer_affine_matches_pytorch_formula() {
        let s = ObserverSpec {
            dtype: QDtype::QUInt8,
            scheme: QScheme::Affine,
            reduce_range: false,
        };
        let (scale, zp) = s.qparams(-1.0, 3.0).unwrap();
        assert_eq!(scale, 4.0f32 / 255.0);
        assert_eq!(zp, 0 - (-1.0f32 / scale).round_ties_even() as i32);
        // a range that does not contain 0 is widened to contain it
        let (scale, zp) = s.qparams(2.0, 3.0).unwrap();
        assert_eq!((scale, zp), (3.0f32 / 255.0, 0));
        // all-zero range: the eps floor
        let (scale, zp) = s.qparams(0.0, 0.0).unwrap();
        assert_eq!((scale, zp), (F32_EPS, 0));
        let r = ObserverSpec {
            reduce_range: true,
            ..s
        };
        assert_eq!(r.qparams(-1.0, 1.0).unwrap().0, 2.0f32 / 127.0);
        assert!(s.qparams(f32::NAN, 1.0).is_err());
    }

    #[test]
    fn onednn_src_scale_is_pytorchs_reciprocal_round_trip() {
        // resnext101_64x4d (x86 engine) layer3.21.conv1's input scale: the
        // round trip moves it by one ulp (one output there was a .5 tie).
        let s = f32::from_bits(0.053523306f32.to_bits());
        let rt = onednn_src_scale(s);
        assert_eq!(rt, f32::from_bits(s.to_bits() - 1), "{s:e} -> {rt:e}");
        // powers of two and many scales come back unchanged
        assert_eq!(onednn_src_scale(0.125), 0.125);
        assert_eq!(onednn_src_scale(0.5), 0.5);
        // the oneDNN epilogue carries the round-tripped scale, Inductor's the scale itself
        let (i, o) = (QParams::new(s, 3).unwrap(), QParams::new(0.08, 7).unwrap());
        let e = Epilogue::new(Requant::Onednn, i, &[0.01], &[0.2], o, Activation::Relu).unwrap();
        assert!(matches!(e.form(), EpilogueForm::Onednn { input_scale, .. } if input_scale == rt));
        let e = Epilogue::new(
            Requant::InductorX86,
            i,
            &[0.01],
            &[0.2],
            o,
            Activation::Relu,
        )
        .unwrap();
        assert!(
            matches!(e.form(), EpilogueForm::OnednnF32 { input_scale, .. } if input_scale == s)
        );
    }

    #[test]
    fn observer_symmetric() {
        let s = ObserverSpec {
            dtype: QDtype::QInt8,
            scheme: QScheme::Symmetric,
            reduce_range: false,
        };
        assert_eq!(s.qparams(-2.0, 1.0).unwrap(), (2.0f32 / 127.5, 0));
        let u = ObserverSpec {
            dtype: QDtype::QUInt8,
            ..s
        };
        assert_eq!(u.qparams(-2.0, 1.0).unwrap(), (2.0f32 / 127.5, 128));
    }

    #[test]
    fn quantize_rounds_ties_to_even_and_clamps() {
        let q = QParams::new(0.5, 10).unwrap();
        assert_eq!(q.quantize(0.25), 10); // 0.5 -> 0 (even)
        assert_eq!(q.quantize(0.75), 12); // 1.5 -> 2
        assert_eq!(q.quantize(-100.0), 0);
        assert_eq!(q.quantize(1000.0), 255);
        assert_eq!(q.dequantize(12), 1.0);
    }

    #[test]
    fn bad_qparams_are_errors() {
        assert!(QParams::new(0.0, 0).is_err());
        assert!(QParams::new(f32::NAN, 0).is_err());
        assert!(QParams::new(-1.0, 0).is_err());
        assert!(QParams::new(1.0, 256).is_err());
        assert!(QParams::new(1.0, -1).is_err());
        assert!(QParams::new(1e-45, 0).is_err());
    }

    #[test]
    fn epilogue_rules() {
        let inp = QParams::new(0.5, 3).unwrap();
        let out = QParams::new(0.25, 100).unwrap();
        let e = Epilogue::new(Requant::Fbgemm, inp, &[0.5], &[0.3], out, Activation::Relu).unwrap();
        // atw = .25, bias/atw = 1.2, mult = 1
        assert_eq!(e.apply(0, 10), (11.2f32).round_ties_even() as u8 + 100);
        assert_eq!(e.apply(0, -1000), 100); // relu clamp at zp
        let q =
            Epilogue::new(Requant::Qnnpack, inp, &[0.5], &[0.3], out, Activation::None).unwrap();
        assert_eq!(q.channels[0].bias_i32, 1);
        assert_eq!(q.apply(0, -1000), 0);
        assert_eq!(q.apply(0, 1000), 255);
        let s = q.shifted_for_signed_input(3, &[7]);
        assert_eq!(s.channels[0].bias_i32, 1 + 125 * 7);
    }

    #[test]
    fn onednn_adds_the_zero_point_before_rounding() {
        // s_in * s_w / s_out = 2^-4 * 2^-7 * 2^10 = 1/2: odd accumulators are ties
        let inp = QParams::new(0.0625, 0).unwrap();
        let out = QParams::new(2f32.powi(-10), 101).unwrap();
        let ws = [2f32.powi(-7)];
        let e = Epilogue::new(Requant::Onednn, inp, &ws, &[0.0], out, Activation::None).unwrap();
        let fb = Epilogue::new(Requant::Fbgemm, inp, &ws, &[0.0], out, Activation::None).unwrap();
        // rint(0.5 + 101) = 102 (even); fbgemm: rint(0.5) + 101 = 101
        assert_eq!((e.apply(0, 1), fb.apply(0, 1)), (102, 101));
        assert_eq!((e.apply(0, 3), fb.apply(0, 3)), (102, 103));
        // t = 0.5 + 2^-20: f32(t + 200) = 200.5 (the 2^-20 is lost), rint = 200;
        // the zero point added after rounding would give 201
        let out = QParams::new(2f32.powi(-10), 200).unwrap();
        let b = [2f32.powi(-30)];
        let e = Epilogue::new(Requant::Onednn, inp, &ws, &b, out, Activation::Relu).unwrap();
        assert_eq!(e.apply(0, 1), 200);
        assert_eq!(e.apply(0, -1000), 200); // relu: clamped at the zero point
        assert_eq!(e.apply(0, 1_000_000), 255);
        // a qint8 output adds its true zero point, not its image's: with
        // zero point 0 (image 128), t = 0.5 + 2^-20 is exact, rint = 1 (image
        // 129); f32(t + 128) = 128.5 would round to 128
        let out8 = QParams::new_i8(2f32.powi(-10), 0).unwrap();
        let e8 = Epilogue::new(Requant::Onednn, inp, &ws, &b, out8, Activation::None).unwrap();
        assert_eq!(e8.apply(0, 1), 129);
        assert_eq!(e8.apply(0, -1_000_000), 0);
    }

    #[test]
    fn qnnpack_bias_is_quantized_with_the_reciprocal() {
        // atw = 0.5 * 0.0048507247 = 0.0024253624: bias / atw = -204.5 exactly
        // (rounds to -204), bias * (1/atw) = -204.50002 (rounds to -205, PyTorch's).
        let inp = QParams::new(0.5, 0).unwrap();
        let out = QParams::new(1.0, 0).unwrap();
        let (sw, b) = (0.0048507247f32, -0.4959866f32);
        assert_eq!((b / (0.5 * sw)).round_ties_even(), -204.0);
        let q = Epilogue::new(Requant::Qnnpack, inp, &[sw], &[b], out, Activation::None).unwrap();
        assert_eq!(q.channels[0].bias_i32, -205);
    }

    #[test]
    fn qnnpack_multiplier_uses_the_reciprocal() {
        // torchvision mobilenet_v2 (FX, qnnpack), features.2.conv.2: acc + bias =
        // -6418; (s_in * s_w) / s_out gives -75.49999 (-> -75, byte 21), QNNPACK's
        // (s_in * s_w) * (1 / s_out) is one ulp larger: -75.5 (-> -76, byte 20,
        // PyTorch's output).
        let inp = QParams::new(0.0062543526, 128).unwrap();
        let out = QParams::new(0.0060735065, 96).unwrap();
        let sw = [0.011423635f32];
        let q = Epilogue::new(Requant::Qnnpack, inp, &sw, &[0.0], out, Activation::None).unwrap();
        assert_eq!(q.apply(0, -6418), 20);
        let f = Epilogue::new(Requant::Fbgemm, inp, &sw, &[0.0], out, Activation::None).unwrap();
        assert_eq!(f.apply(0, -6418), 21);
    }
}
