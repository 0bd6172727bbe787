//! Fused, quantized conv2d and linear layers on the host: geometry, fusion of
//! float Conv+BN(+ReLU) / Linear(+ReLU), and the int8 layer both the CPU
//! reference and the GPU run.

use crate::error::{Error, Result};
use crate::model::MAX_CHANNELS;
use crate::quant::{self, Activation, BatchNorm, Epilogue, QParams, Requant, WeightScheme};

/// Shape and hyper-parameters of a 2-D convolution (PyTorch's `Conv2d`).
/// A linear layer is the 1x1 convolution of a 1x1 image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeometry {
    /// Input channels `C` (>= 1, a multiple of `groups`).
    pub in_channels: usize,
    /// Output channels `O` (>= 1, a multiple of `groups`).
    pub out_channels: usize,
    /// Kernel size `[kh, kw]`, each >= 1.
    pub kernel: [usize; 2],
    /// Step between output positions `[sh, sw]`, in input pixels, each >= 1.
    pub stride: [usize; 2],
    /// Symmetric zero padding per dimension, `[ph, pw]`.
    pub padding: [usize; 2],
    /// Spacing between kernel taps `[dh, dw]`, in input pixels, each >= 1.
    pub dilation: [usize; 2],
    /// Channel groups (1: dense; `in_channels`: depthwise); must divide both
    /// channel counts.
    pub groups: usize,
}

impl Conv2dGeometry {
    /// A convolution with stride 1, no padding, dilation 1, one group.
    pub fn new(in_channels: usize, out_channels: usize, kernel: [usize; 2]) -> Self {
        Conv2dGeometry {
            in_channels,
            out_channels,
            kernel,
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }
    /// Returns the geometry with the stride `[sh, sw]` set (checked by
    /// [`Conv2dGeometry::validate`], not here).
    pub fn stride(mut self, s: [usize; 2]) -> Self {
        self.stride = s;
        self
    }
    /// Returns the geometry with the zero padding `[ph, pw]` set (checked by
    /// [`Conv2dGeometry::validate`], not here).
    pub fn padding(mut self, p: [usize; 2]) -> Self {
        self.padding = p;
        self
    }
    /// Returns the geometry with the dilation `[dh, dw]` set (checked by
    /// [`Conv2dGeometry::validate`], not here).
    pub fn dilation(mut self, d: [usize; 2]) -> Self {
        self.dilation = d;
        self
    }
    /// Returns the geometry with the number of groups set (checked by
    /// [`Conv2dGeometry::validate`], not here).
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }

    /// The geometry of `Linear(in_features, out_features)`.
    pub fn linear(in_features: usize, out_features: usize) -> Self {
        Self::new(in_features, out_features, [1, 1])
    }

    /// Input channels per group.
    pub fn cin_per_group(&self) -> usize {
        self.in_channels / self.groups.max(1)
    }
    /// Output channels per group.
    pub fn cout_per_group(&self) -> usize {
        self.out_channels / self.groups.max(1)
    }
    /// Length of one output channel's reduction: `C/groups * kh * kw`.
    pub fn reduction_len(&self) -> usize {
        self.cin_per_group() * self.kernel[0] * self.kernel[1]
    }
    /// Number of weight elements, `O * C/groups * kh * kw`.
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.reduction_len()
    }

    /// Checks the hyper-parameters on their own.
    pub fn validate(&self) -> Result<()> {
        let g = self;
        if g.in_channels == 0 || g.out_channels == 0 {
            return Err(Error::config(
                "conv2d",
                format!(
                    "channels must be >= 1 (in {}, out {})",
                    g.in_channels, g.out_channels
                ),
            ));
        }
        if g.groups == 0
            || !g.in_channels.is_multiple_of(g.groups)
            || !g.out_channels.is_multiple_of(g.groups)
        {
            return Err(Error::config(
                "conv2d groups",
                format!(
                    "groups {} must divide in_channels {} and out_channels {}",
                    g.groups, g.in_channels, g.out_channels
                ),
            ));
        }
        for (name, v) in [
            ("kernel", g.kernel),
            ("stride", g.stride),
            ("dilation", g.dilation),
        ] {
            if v[0] == 0 || v[1] == 0 {
                return Err(Error::config(
                    "conv2d",
                    format!("{name} {v:?} must be >= 1 in both dimensions"),
                ));
            }
        }
        for (name, v) in [
            ("kernel", g.kernel),
            ("stride", g.stride),
            ("dilation", g.dilation),
            ("padding", g.padding),
        ] {
            crate::ops::check_window(&format!("conv2d {name}"), v)?;
        }
        if g.in_channels > MAX_CHANNELS || g.out_channels > MAX_CHANNELS {
            return Err(Error::config(
                "conv2d",
                format!(
                    "channels (in {}, out {}) exceed the bound {MAX_CHANNELS}",
                    g.in_channels, g.out_channels
                ),
            ));
        }
        // Keep everything well inside u32 for the GPU and i32 for the
        // accumulator (the operands are bounded above, so this cannot overflow).
        let k = g.reduction_len() as u64;
        if k * 128 * 128 + 255 * 128 * k >= i32::MAX as u64 {
            return Err(Error::config(
                "conv2d",
                format!("reduction length {k} is too long for an exact i32 accumulator"),
            ));
        }
        Ok(())
    }

    /// Output height and width for an `h x w` input.
    pub fn output_hw(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let too_large = || {
            Error::config(
                "conv2d",
                format!(
                    "{h}x{w} input with kernel {:?}, dilation {:?}, padding {:?}: the sizes overflow",
                    self.kernel, self.dilation, self.padding
                ),
            )
        };
        let span = |i: usize| {
            self.kernel[i]
                .checked_sub(1)
                .and_then(|k| self.dilation[i].checked_mul(k))
                .and_then(|s| s.checked_add(1))
                .ok_or_else(too_large)
        };
        let padded = |x: usize, i: usize| {
            self.padding[i]
                .checked_mul(2)
                .and_then(|p| p.checked_add(x))
                .ok_or_else(too_large)
        };
        if self.stride.contains(&0) {
            return Err(Error::config("conv2d", "stride must be >= 1"));
        }
        let (ph, pw) = (padded(h, 0)?, padded(w, 1)?);
        let (span0, span1) = (span(0)?, span(1)?);
        let span = |i: usize| if i == 0 { span0 } else { span1 };
        if ph < span(0) || pw < span(1) {
            return Err(Error::shape(
                "conv2d input",
                format!(
                    "{h}x{w} input padded to {ph}x{pw} is smaller than the dilated {}x{} kernel",
                    span(0),
                    span(1)
                ),
            ));
        }
        Ok((
            (ph - span(0)) / self.stride[0] + 1,
            (pw - span(1)) / self.stride[1] + 1,
        ))
    }
}

/// A float `Conv2d` (optionally followed by `BatchNorm2d` and ReLU), before
/// fusion. Weight in PyTorch's `[O, C/groups, kh, kw]` layout.
#[derive(Clone, Debug)]
pub struct FloatConv2d {
    /// Channels, kernel and hyper-parameters.
    pub geometry: Conv2dGeometry,
    /// `O * C/groups * kh * kw` weights, `[O, C/groups, kh, kw]` row-major.
    pub weight: Vec<f32>,
    /// One bias per output channel, or none (zero).
    pub bias: Option<Vec<f32>>,
    /// The `BatchNorm2d` that follows, folded into weight and bias.
    pub batchnorm: Option<BatchNorm>,
    /// The fused activation after the (folded) conv.
    pub activation: Activation,
}

/// A float `Linear` (optionally followed by ReLU). Weight `[out, in]`.
#[derive(Clone, Debug)]
pub struct FloatLinear {
    /// Input features `K` (>= 1).
    pub in_features: usize,
    /// Output features `O` (>= 1).
    pub out_features: usize,
    /// `O * K` weights, `[O, K]` row-major.
    pub weight: Vec<f32>,
    /// One bias per output feature, or none (zero).
    pub bias: Option<Vec<f32>>,
    /// The fused activation after the linear.
    pub activation: Activation,
}

impl FloatConv2d {
    /// Folds the BatchNorm (if any) into weight and bias, with PyTorch's formula.
    /// Returns the fused float weight and bias (zeros if there was no bias).
    pub fn fused_weight_bias(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        self.geometry.validate()?;
        check_len(
            "conv2d weight",
            self.weight.len(),
            self.geometry.weight_len(),
        )?;
        if let Some(b) = &self.bias {
            check_len("conv2d bias", b.len(), self.geometry.out_channels)?;
        }
        match &self.batchnorm {
            Some(bn) => {
                check_len(
                    "batchnorm channels",
                    bn.gamma.len(),
                    self.geometry.out_channels,
                )?;
                quant::fold_batchnorm(&self.weight, self.bias.as_deref(), bn)
            }
            None => Ok((
                self.weight.clone(),
                self.bias
                    .clone()
                    .unwrap_or_else(|| vec![0.0; self.geometry.out_channels]),
            )),
        }
    }

    /// Fuses and quantizes this layer as PyTorch's `convert_fx` does: BN folded,
    /// weights qint8 symmetric per channel (fbgemm) or per tensor (qnnpack).
    pub fn quantize(&self, input: QParams, output: QParams, rule: Requant) -> Result<QLayer> {
        let (w, b) = self.fused_weight_bias()?;
        let (qw, scales) =
            quant::quantize_weight(&w, self.geometry.out_channels, default_weight_scheme(rule))?;
        QLayer::new(
            LayerKind::Conv2d,
            self.geometry,
            qw,
            scales,
            b,
            input,
            output,
            self.activation,
            rule,
        )
    }
}

impl FloatLinear {
    /// Quantizes this layer as PyTorch's `convert_fx` does.
    pub fn quantize(&self, input: QParams, output: QParams, rule: Requant) -> Result<QLayer> {
        let g = Conv2dGeometry::linear(self.in_features, self.out_features);
        g.validate()?;
        check_len("linear weight", self.weight.len(), g.weight_len())?;
        let b = match &self.bias {
            Some(b) => {
                check_len("linear bias", b.len(), self.out_features)?;
                b.clone()
            }
            None => vec![0.0; self.out_features],
        };
        let (qw, scales) =
            quant::quantize_weight(&self.weight, self.out_features, default_weight_scheme(rule))?;
        QLayer::new(
            LayerKind::Linear,
            g,
            qw,
            scales,
            b,
            input,
            output,
            self.activation,
            rule,
        )
    }
}

/// PyTorch's default weight quantization for an engine's qconfig.
pub fn default_weight_scheme(rule: Requant) -> WeightScheme {
    match rule {
        Requant::Fbgemm
        | Requant::OnnxRuntime
        | Requant::Onednn
        | Requant::Xnnpack
        | Requant::InductorX86 => WeightScheme::PerChannel,
        Requant::Qnnpack => WeightScheme::PerTensor,
    }
}

fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::shape(
            what,
            format!("has {got} elements, expected {want}"),
        ));
    }
    Ok(())
}

/// Conv2d or linear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// A 2-D convolution over NCHW input `[N, C, H, W]`.
    Conv2d,
    /// A linear layer over `[N, K]` (run as a 1x1 convolution of a 1x1 image).
    Linear,
}

/// A fused, quantized conv2d or linear layer: int8 weights (zero point 0),
/// the float bias and qparams it was made from, and its epilogue.
///
/// The parts are read through accessors: the epilogue is computed from the
/// others when the layer is built ([`QLayer::new`]), so they cannot be
/// changed on their own.
#[derive(Clone, Debug)]
pub struct QLayer {
    pub(crate) kind: LayerKind,
    pub(crate) geometry: Conv2dGeometry,
    pub(crate) weight: Vec<i8>,
    pub(crate) weight_scale: Vec<f32>,
    pub(crate) bias: Vec<f32>,
    pub(crate) input: QParams,
    pub(crate) output: QParams,
    pub(crate) activation: Activation,
    pub(crate) requant: Requant,
    pub(crate) epilogue: Epilogue,
    /// The int32 bias in accumulator units, where the layer was given one
    /// (ONNX files: [`QLayer::with_int_bias`]); `bias` then holds it
    /// dequantized (`bias_i32 * input.scale * weight_scale`), for display only.
    pub(crate) bias_i32: Option<Vec<i32>>,
}

impl QLayer {
    /// Conv2d or linear.
    pub fn kind(&self) -> LayerKind {
        self.kind
    }
    /// Channels, kernel and hyper-parameters (a linear layer's is
    /// [`Conv2dGeometry::linear`]).
    pub fn geometry(&self) -> &Conv2dGeometry {
        &self.geometry
    }
    /// The int8 weights in PyTorch's layout: `[O, C/groups, kh, kw]` or `[O, K]`.
    pub fn weight(&self) -> &[i8] {
        &self.weight
    }
    /// Per output channel weight scales (per-tensor weights repeat one value).
    pub fn weight_scale(&self) -> &[f32] {
        &self.weight_scale
    }
    /// The float bias (zeros if the layer has none).
    pub fn bias(&self) -> &[f32] {
        &self.bias
    }
    /// The input qparams the layer was quantized for.
    pub fn input(&self) -> QParams {
        self.input
    }
    /// The output qparams.
    pub fn output(&self) -> QParams {
        self.output
    }
    /// The fused activation.
    pub fn activation(&self) -> Activation {
        self.activation
    }
    /// The requantization rule (the engine's).
    pub fn requant(&self) -> Requant {
        self.requant
    }
    /// The requantization epilogue (the lowered constants).
    pub fn epilogue(&self) -> &Epilogue {
        &self.epilogue
    }

    /// Builds and validates a layer from quantized parts (as stored by PyTorch).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: LayerKind,
        geometry: Conv2dGeometry,
        weight: Vec<i8>,
        weight_scale: Vec<f32>,
        bias: Vec<f32>,
        input: QParams,
        output: QParams,
        activation: Activation,
        requant: Requant,
    ) -> Result<Self> {
        geometry.validate()?;
        if kind == LayerKind::Linear && (geometry.kernel != [1, 1] || geometry.groups != 1) {
            return Err(Error::config(
                "linear",
                "a linear layer has a 1x1 kernel and one group",
            ));
        }
        check_len("weight", weight.len(), geometry.weight_len())?;
        check_len("weight scales", weight_scale.len(), geometry.out_channels)?;
        check_len("bias", bias.len(), geometry.out_channels)?;
        let epilogue = Epilogue::new(requant, input, &weight_scale, &bias, output, activation)?;
        Ok(QLayer {
            kind,
            geometry,
            weight,
            weight_scale,
            bias,
            input,
            output,
            activation,
            requant,
            epilogue,
            bias_i32: None,
        })
    }

    /// A layer with an int32 bias already in accumulator units, as ONNX files
    /// hold it, computed with ONNX Runtime's epilogue
    /// ([`Epilogue::from_int_bias`]: `sat(rint(f32(acc + bias) * m) + zp)`,
    /// `m = (input.scale * weight_scale) / output.scale`); the output may be
    /// qint8. The clamp is the output type's full range.
    #[allow(clippy::too_many_arguments)]
    pub fn with_int_bias(
        kind: LayerKind,
        geometry: Conv2dGeometry,
        weight: Vec<i8>,
        weight_scale: Vec<f32>,
        bias_i32: Vec<i32>,
        input: QParams,
        output: QParams,
    ) -> Result<Self> {
        Self::with_int_bias_rule(
            kind,
            geometry,
            weight,
            weight_scale,
            bias_i32,
            input,
            output,
            Requant::OnnxRuntime,
        )
    }

    /// [`QLayer::with_int_bias`] under the rule set `rule`, which must be one
    /// whose conv/linear epilogue is this one: [`Requant::OnnxRuntime`] or
    /// [`Requant::Xnnpack`] (ExecuTorch's XNNPACK delegate: the int32 bias
    /// ExecuTorch serialized, see [`crate::ops::xnnpack_bias_i32`];
    /// XNNPACK's `rint(min(f32(acc) * m, hi - zp)) + zp`, then `max(y, lo)`
    /// is this clamp). Clamp bounds (a fused relu, a merged clamp) are set
    /// with [`QLayer::with_clamp`] on the output bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn with_int_bias_rule(
        kind: LayerKind,
        geometry: Conv2dGeometry,
        weight: Vec<i8>,
        weight_scale: Vec<f32>,
        bias_i32: Vec<i32>,
        input: QParams,
        output: QParams,
        rule: Requant,
    ) -> Result<Self> {
        if !matches!(rule, Requant::OnnxRuntime | Requant::Xnnpack) {
            return Err(Error::config(
                "requant",
                format!(
                    "an int32-bias layer follows onnxruntime's or xnnpack's epilogue, not {:?}",
                    rule.name()
                ),
            ));
        }
        geometry.validate()?;
        if kind == LayerKind::Linear && (geometry.kernel != [1, 1] || geometry.groups != 1) {
            return Err(Error::config(
                "linear",
                "a linear layer has a 1x1 kernel and one group",
            ));
        }
        check_len("weight", weight.len(), geometry.weight_len())?;
        check_len("weight scales", weight_scale.len(), geometry.out_channels)?;
        check_len("bias", bias_i32.len(), geometry.out_channels)?;
        let epilogue = Epilogue::from_int_bias(input, &weight_scale, &bias_i32, output, 0, 255)?;
        let bias = bias_i32
            .iter()
            .zip(&weight_scale)
            .map(|(&b, &s)| b as f32 * (input.scale * s))
            .collect();
        Ok(QLayer {
            kind,
            geometry,
            weight,
            weight_scale,
            bias,
            input,
            output,
            activation: Activation::None,
            requant: rule,
            epilogue,
            bias_i32: Some(bias_i32),
        })
    }

    /// The int32 bias the layer was built with ([`QLayer::with_int_bias`]),
    /// if any.
    pub fn bias_i32(&self) -> Option<&[i32]> {
        self.bias_i32.as_deref()
    }

    /// Like [`QLayer::new`], also checking PyTorch's weight zero points: qfuse
    /// supports symmetric weights only, so each must be 0.
    #[allow(clippy::too_many_arguments)]
    pub fn from_pytorch(
        kind: LayerKind,
        geometry: Conv2dGeometry,
        weight: Vec<i8>,
        weight_scale: Vec<f32>,
        weight_zero_point: &[i32],
        bias: Vec<f32>,
        input: QParams,
        output: QParams,
        activation: Activation,
        requant: Requant,
    ) -> Result<Self> {
        if let Some((o, zp)) = weight_zero_point.iter().enumerate().find(|(_, z)| **z != 0) {
            return Err(Error::Unsupported(format!(
                "weight zero point {zp} on output channel {o}: only symmetric weights (zero point 0) are supported"
            )));
        }
        check_len(
            "weight zero points",
            weight_zero_point.len(),
            geometry.out_channels,
        )?;
        Self::new(
            kind,
            geometry,
            weight,
            weight_scale,
            bias,
            input,
            output,
            activation,
            requant,
        )
    }

    /// The output bytes the epilogue clamps to, `(lo, hi)`: the fused
    /// activation's bounds, or narrower where a standalone clamp (relu6,
    /// hardtanh) was folded in ([`crate::model::fuse_activations`]).
    pub fn clamp(&self) -> (i32, i32) {
        (self.epilogue.lo, self.epilogue.hi)
    }

    /// The clamp the layer's activation alone gives: `(zp_out, 255)` for
    /// ReLU, `(0, 255)` for none.
    pub fn activation_clamp(&self) -> (i32, i32) {
        (
            crate::ops::conv::activation_lo(self.activation, self.output.zero_point),
            255,
        )
    }

    /// The same layer with its output clamped to the bytes `[lo, hi]`
    /// (replacing the activation's bounds): what folding a relu6 or hardtanh
    /// into the epilogue gives. Needs `0 <= lo <= hi <= 255`.
    pub fn with_clamp(&self, lo: i32, hi: i32) -> Result<QLayer> {
        if !(0 <= lo && lo <= hi && hi <= 255) {
            return Err(Error::config(
                "clamp",
                format!("[{lo}, {hi}] must satisfy 0 <= lo <= hi <= 255"),
            ));
        }
        let mut l = self.clone();
        (l.epilogue.lo, l.epilogue.hi) = (lo, hi);
        Ok(l)
    }

    /// The same layer with oneDNN multiplying the accumulator by the input
    /// scale itself (Inductor's calls, engine `inductor_x86`) rather than by
    /// PyTorch eager's reciprocal round trip of it
    /// ([`quant::Epilogue::with_src_scale`]); other rules are unchanged.
    pub fn with_plain_src_scale(&self) -> QLayer {
        let mut l = self.clone();
        l.epilogue = self.epilogue.with_src_scale(self.input.scale);
        l
    }

    /// The same layer with oneDNN's `sum` post-op: a second input, of the
    /// output's shape and quantized with `sum`, added in f32 before the
    /// requantization ([`quant::EpilogueForm::OnednnSum`]). Needs the
    /// [`Requant::Onednn`] rule.
    pub fn with_sum(&self, sum: QParams) -> Result<QLayer> {
        let mut l = self.clone();
        l.epilogue = self.epilogue.with_sum(sum)?;
        Ok(l)
    }

    /// The same layer (oneDNN's, with a sum input ([`QLayer::with_sum`]) or
    /// without) followed by a global average and Inductor's quantize to the
    /// layer's output qparams ([`quant::EpilogueForm::OnednnSumPool`],
    /// [`quant::EpilogueForm::OnednnPool`]; output `[O, 1, 1]`). The layer's
    /// relu becomes oneDNN's relu post-op before the average.
    pub fn with_global_pool(&self) -> Result<QLayer> {
        let mut l = self.clone();
        l.epilogue = self
            .epilogue
            .with_global_pool(self.activation == Activation::Relu)?;
        Ok(l)
    }

    /// The same layer with oneDNN's `hardswish` eltwise post-op before the
    /// output quantization ([`quant::EpilogueForm::OnednnHardswish`]; Inductor's
    /// `conv -> hardswish -> q`). Needs the [`Requant::Onednn`] rule, no sum input
    /// and no fused activation.
    pub fn with_hardswish(&self) -> Result<QLayer> {
        self.with_eltwise("hardswish", Epilogue::with_hardswish)
    }

    /// This layer with the epilogue `make` gives (oneDNN's eltwise post-op
    /// `name`); refused on a layer with a fused relu.
    fn with_eltwise(&self, name: &str, make: fn(&Epilogue) -> Result<Epilogue>) -> Result<QLayer> {
        if self.activation != Activation::None {
            return Err(Error::config(
                name,
                format!("a layer with a fused relu cannot also have oneDNN's {name} post-op"),
            ));
        }
        let mut l = self.clone();
        l.epilogue = make(&self.epilogue)?;
        Ok(l)
    }

    /// Whether the layer has oneDNN's `hardswish` post-op ([`QLayer::with_hardswish`]).
    pub fn hardswish(&self) -> bool {
        matches!(
            self.epilogue.form,
            quant::EpilogueForm::OnednnHardswish { .. }
        )
    }

    /// The same layer (oneDNN's, one input, optionally with its hardswish or
    /// swish post-op) with an **f32** output: oneDNN's f32 value with its post-op
    /// ([`quant::EpilogueForm::OnednnFloat`]; Inductor's
    /// `qconv_pointwise(..., torch.float32, ...)`); with a sum input
    /// ([`QLayer::with_sum`]) the sum's f32 value
    /// ([`quant::EpilogueForm::OnednnSumFloat`]). The layer's relu becomes
    /// oneDNN's relu post-op; a folded clamp other than the relu's is refused.
    pub fn with_float_output(&self) -> Result<QLayer> {
        if self.clamp() != self.activation_clamp() {
            return Err(Error::config(
                "output",
                "a float32 output cannot hold a folded relu6/hardtanh clamp",
            ));
        }
        let post = match self.activation {
            Activation::None => quant::OnednnPost::None,
            Activation::Relu => quant::OnednnPost::Relu,
        };
        let mut l = self.clone();
        l.epilogue = self.epilogue.with_float_output(post)?;
        Ok(l)
    }

    /// Whether the layer writes f32 values ([`QLayer::with_float_output`]).
    pub fn float_output(&self) -> bool {
        matches!(
            self.epilogue.form,
            quant::EpilogueForm::OnednnFloat { .. } | quant::EpilogueForm::OnednnSumFloat { .. }
        )
    }

    /// The post-op of a layer with an f32 output.
    pub fn float_post(&self) -> Option<quant::OnednnPost> {
        match self.epilogue.form {
            quant::EpilogueForm::OnednnFloat { post, .. } => Some(post),
            quant::EpilogueForm::OnednnSumFloat { relu, .. } => Some(if relu {
                quant::OnednnPost::Relu
            } else {
                quant::OnednnPost::None
            }),
            _ => None,
        }
    }

    /// The same layer with oneDNN's `swish` eltwise post-op before the
    /// output quantization ([`quant::EpilogueForm::OnednnSwish`]; Inductor's
    /// `conv -> silu -> q`). Needs the [`Requant::Onednn`] rule, no sum input
    /// and no fused activation.
    pub fn with_swish(&self) -> Result<QLayer> {
        self.with_eltwise("swish", Epilogue::with_swish)
    }

    /// Whether the layer has oneDNN's `swish` post-op ([`QLayer::with_swish`]).
    pub fn swish(&self) -> bool {
        matches!(self.epilogue.form, quant::EpilogueForm::OnednnSwish { .. })
    }

    /// Whether the layer ends in a global average ([`QLayer::with_global_pool`]).
    pub fn global_pool(&self) -> bool {
        matches!(
            self.epilogue.form,
            quant::EpilogueForm::OnednnSumPool { .. } | quant::EpilogueForm::OnednnPool { .. }
        )
    }

    /// The second addend's qparams, if the layer has oneDNN's `sum` post-op
    /// ([`QLayer::with_sum`]).
    pub fn sum_input(&self) -> Option<QParams> {
        match self.epilogue.form {
            quant::EpilogueForm::OnednnSum {
                sum_scale,
                sum_zero_point,
                sum_offset,
                ..
            }
            | quant::EpilogueForm::OnednnSumFloat {
                sum_scale,
                sum_zero_point,
                sum_offset,
                ..
            } => Some(QParams {
                scale: sum_scale,
                zero_point: sum_zero_point + sum_offset,
                signed: sum_offset != 0,
            }),
            quant::EpilogueForm::OnednnSumPool {
                sum_scale,
                sum_zero_point,
                ..
            } => Some(QParams {
                scale: sum_scale,
                zero_point: sum_zero_point,
                signed: false,
            }),
            _ => None,
        }
    }

    /// Output shape `[N, O, OH, OW]` (or `[N, O]` for linear) for an input shape,
    /// checking that the input fits the layer.
    pub fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        let g = &self.geometry;
        match (self.kind, input_shape) {
            (LayerKind::Linear, &[n, k]) => {
                if n == 0 || k != g.in_channels {
                    return Err(Error::shape(
                        "linear input",
                        format!("got {input_shape:?}, expected [N >= 1, {}]", g.in_channels),
                    ));
                }
                Ok(vec![n, g.out_channels])
            }
            (LayerKind::Conv2d, &[n, c, h, w]) => {
                if n == 0 || c != g.in_channels || h == 0 || w == 0 {
                    return Err(Error::shape(
                        "conv2d input",
                        format!(
                            "got {input_shape:?}, expected [N >= 1, {}, H >= 1, W >= 1]",
                            g.in_channels
                        ),
                    ));
                }
                let (oh, ow) = g.output_hw(h, w)?;
                Ok(vec![n, g.out_channels, oh, ow])
            }
            (LayerKind::Linear, _) => Err(Error::shape(
                "linear input",
                format!("got {input_shape:?}, expected 2 dimensions [N, K]"),
            )),
            (LayerKind::Conv2d, _) => Err(Error::shape(
                "conv2d input",
                format!("got {input_shape:?}, expected 4 dimensions [N, C, H, W]"),
            )),
        }
    }

    /// `Σw` per output channel (for the GPU's signed-input fold).
    pub fn weight_sums(&self) -> Vec<i32> {
        let k = self.geometry.reduction_len();
        self.weight
            .chunks(k)
            .map(|c| c.iter().map(|&w| w as i32).sum())
            .collect()
    }

    /// Weight bytes as stored on the GPU (int8) and as the f32 layer would need.
    pub fn weight_bytes(&self) -> (usize, usize) {
        let params = self.weight.len();
        let per_channel =
            self.geometry.out_channels * std::mem::size_of::<quant::ChannelEpilogue>();
        (
            params + per_channel,
            4 * (params + self.geometry.out_channels),
        )
    }
}
