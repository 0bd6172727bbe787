//! `conv2d` and `linear`: the fused int8 layer ([`QLayer`]). Its lowered
//! constants are the layer's [`crate::quant::Epilogue`] (per output channel
//! integer bias, float bias and multiplier, and the clamp), computed once
//! when the layer is built; the CPU loop here accumulates exactly and applies
//! it, and the GPU side (`gpu.rs`, over [`crate::gpu::GpuLayer`]) uploads the
//! packed weights and the same epilogue records.

mod gpu;

use serde_json::json;

use crate::error::{Error, Result};
use crate::layer::{Conv2dGeometry, LayerKind, QLayer};
use crate::layout::check_data_len;
use crate::model::{DType, TensorInfo, Value};
use crate::quant::{Activation, Requant};

use super::{
    quantized, Arity, Attrs, CpuIo, FileOp, Lowered, NodeWriter, Op, OpKind, ParseCx, Signature,
};

pub(crate) const FILE_OPS: &[FileOp] = &[
    FileOp {
        name: "conv2d",
        attributes: &[
            "stride",
            "padding",
            "dilation",
            "groups",
            "activation",
            "scale",
            "zero_point",
            "requant",
            "clamp",
            "global_avg_pool",
            "eltwise",
            "output",
        ],
        parse: |a, cx| parse_layer(LayerKind::Conv2d, a, cx),
    },
    FileOp {
        name: "linear",
        attributes: &[
            "activation",
            "scale",
            "zero_point",
            "requant",
            "clamp",
            "eltwise",
            "output",
        ],
        parse: |a, cx| parse_layer(LayerKind::Linear, a, cx),
    },
];

/// A conv2d or linear node.
pub(crate) struct Conv<'a>(pub &'a QLayer);

impl<'a> OpKind<'a> for Conv<'a> {
    fn name(&self) -> &'static str {
        match self.0.kind {
            LayerKind::Conv2d => "conv2d",
            LayerKind::Linear => "linear",
        }
    }
    fn arity(&self) -> Arity {
        // oneDNN's sum post-op reads a second addend.
        Arity::Exactly(if self.0.sum_input().is_some() { 2 } else { 1 })
    }
    fn infer(&self, _: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo> {
        let l = self.0;
        let x = ins[0];
        let q = quantized(x)?;
        if q != l.input {
            return Err(Error::qparams(
                "input",
                format!("qparams {q:?} differ from the layer's {:?}", l.input),
            ));
        }
        let out = l.output_shape(&x.batched(1))?;
        if let Some(sq) = l.sum_input() {
            let a = ins[1];
            let qa = quantized(a)?;
            if qa != sq {
                return Err(Error::qparams(
                    "sum input (input 1)",
                    format!("qparams {qa:?} differ from the layer's sum post-op {sq:?}"),
                ));
            }
            if a.shape != out[1..] {
                return Err(Error::shape(
                    "sum input (input 1)",
                    format!(
                        "per-sample shape {:?}, the conv's output is {:?}",
                        a.shape,
                        &out[1..]
                    ),
                ));
            }
        }
        let shape = if l.global_pool() {
            vec![out[1], 1, 1]
        } else {
            out[1..].to_vec()
        };
        Ok(TensorInfo {
            shape,
            dtype: if l.float_output() {
                DType::F32
            } else {
                DType::QUInt8(l.output)
            },
        })
    }
    fn write(&self, w: &mut NodeWriter) {
        let l = self.0;
        match l.float_post() {
            // An f32 output: no output qparams; the relu is the activation.
            Some(post) => {
                w.put("output", json!("float32"));
                match post {
                    crate::quant::OnednnPost::Hardswish => w.put("eltwise", json!("hardswish")),
                    crate::quant::OnednnPost::Swish => w.put("eltwise", json!("swish")),
                    _ => {}
                }
                w.require_version(FLOAT_OUTPUT_VERSION);
            }
            None => w.put_qparams(l.output),
        }
        if l.global_pool() {
            w.put("global_avg_pool", json!(true));
        }
        if l.hardswish() {
            w.put("eltwise", json!("hardswish"));
        }
        if l.swish() {
            w.put("eltwise", json!("swish"));
        }
        w.put("activation", json!(l.activation.name()));
        w.put("requant", json!(l.requant.name()));
        let g = &l.geometry;
        if l.kind == LayerKind::Conv2d {
            w.put("stride", json!(g.stride));
            w.put("padding", json!(g.padding));
            w.put("dilation", json!(g.dilation));
            w.put("groups", json!(g.groups));
        }
        if l.clamp() != l.activation_clamp() {
            // A folded relu6/hardtanh (format version 2).
            let (lo, hi) = l.clamp();
            w.put("clamp", json!([lo, hi]));
            w.require_version(2);
        }
        let o = g.out_channels;
        let wshape = if l.kind == LayerKind::Conv2d {
            vec![o, g.cin_per_group(), g.kernel[0], g.kernel[1]]
        } else {
            vec![o, g.in_channels]
        };
        let f = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let name = w.node.to_string();
        w.tensors.push((
            format!("{name}.weight"),
            safetensors::Dtype::I8,
            wshape,
            l.weight.iter().map(|&w| w as u8).collect(),
        ));
        w.tensors.push((
            format!("{name}.weight_scale"),
            safetensors::Dtype::F32,
            vec![o],
            f(&l.weight_scale),
        ));
        w.tensors.push((
            format!("{name}.weight_zero_point"),
            safetensors::Dtype::I32,
            vec![o],
            vec![0u8; 4 * o],
        ));
        match &l.bias_i32 {
            // ONNX Runtime's layers: the int32 bias as the file gave it.
            Some(b) => w.tensors.push((
                format!("{name}.bias_i32"),
                safetensors::Dtype::I32,
                vec![o],
                b.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )),
            None => w.tensors.push((
                format!("{name}.bias"),
                safetensors::Dtype::F32,
                vec![o],
                f(&l.bias),
            )),
        }
    }
    fn lower(&self, _: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
        Ok(Box::new(ConvLowered(self.0)))
    }
    fn weight_bytes(&self) -> (usize, usize) {
        self.0.weight_bytes()
    }
    fn with_clamp(&self, lo: i32, hi: i32) -> Result<Option<Op>> {
        // clamp(clamp(x, a, b), lo, hi) = clamp(x, clamp(a, lo, hi), clamp(b, lo, hi))
        let (a, b) = self.0.clamp();
        let l = Box::new(self.0.with_clamp(a.clamp(lo, hi), b.clamp(lo, hi))?);
        Ok(Some(match self.0.kind {
            LayerKind::Conv2d => Op::Conv2d(l),
            LayerKind::Linear => Op::Linear(l),
        }))
    }
}

/// The lowered conv/linear: the layer itself (its epilogue holds the constants).
pub(crate) struct ConvLowered<'a>(pub &'a QLayer);

impl Lowered for ConvLowered<'_> {
    fn run_cpu(&self, io: &CpuIo<'_>) -> Result<Value> {
        let (x, shape, _) = io.q(0)?;
        if self.0.float_output() {
            let (data, shape) = match self.0.sum_input() {
                Some(_) => {
                    let (a, ashape, _) = io.q(1)?;
                    run_layer_sum_float(self.0, x, shape, a, ashape)?
                }
                None => run_layer_float(self.0, x, shape)?,
            };
            return Ok(Value::F32 { data, shape });
        }
        if self.0.global_pool() {
            if self.0.sum_input().is_none() {
                return io.q_out(run_layer_pool(self.0, x, shape, None)?.0);
            }
            let (a, ashape, _) = io.q(1)?;
            return io.q_out(run_layer_sum_pool(self.0, x, shape, a, ashape)?.0);
        }
        if self.0.sum_input().is_some() {
            let (a, ashape, _) = io.q(1)?;
            return io.q_out(run_layer_sum(self.0, x, shape, a, ashape)?.0);
        }
        io.q_out(run_layer(self.0, x, shape)?.0)
    }
}

/// The format version that holds a conv/linear's `"output": "float32"`.
pub(crate) const FLOAT_OUTPUT_VERSION: u64 = 2;

fn parse_layer(kind: LayerKind, a: &Attrs<'_>, cx: &ParseCx<'_>) -> Result<Op> {
    let q_in = cx.q_in()?;
    // `"output": "float32"`: oneDNN's f32 output (no output qparams).
    let float_output = match a.opt("output") {
        None => false,
        Some(v) if v.as_str() == Some("float32") => {
            if a.opt("scale").is_some() || a.opt("zero_point").is_some() {
                return Err(Error::Model(
                    "\"output\": \"float32\" with output \"scale\"/\"zero_point\" (a float output has no qparams)".into(),
                ));
            }
            true
        }
        Some(v) => {
            return Err(Error::Model(format!(
                "\"output\" must be \"float32\" (or absent: quantized), got {v}"
            )))
        }
    };
    let out = if float_output {
        crate::quant::QParams::new(1.0, 0)?
    } else {
        a.qparams()?
    };
    let act = a.activation()?;
    let name = cx.node;
    let t = cx.tensors;
    let wname = format!("{name}.weight");
    let (w, wshape) = t.get(&wname, safetensors::Dtype::I8, None)?;
    let geom = if kind == LayerKind::Conv2d {
        let [o, cg, kh, kw] = wshape[..] else {
            return Err(Error::Model(format!(
                "tensor {wname:?} has shape {wshape:?}, expected [O, C/groups, kh, kw]"
            )));
        };
        let groups = a.usize("groups")?;
        let cin = cg
            .checked_mul(groups)
            .filter(|&c| c <= crate::model::MAX_CHANNELS)
            .ok_or_else(|| {
                Error::config(
                    "conv2d",
                    format!(
                        "groups {groups} x {cg} input channels per group exceed the bound {}",
                        crate::model::MAX_CHANNELS
                    ),
                )
            })?;
        Conv2dGeometry::new(cin, o, [kh, kw])
            .stride(a.pair("stride")?)
            .padding(a.pair("padding")?)
            .dilation(a.pair("dilation")?)
            .groups(groups)
    } else {
        let [o, k] = wshape[..] else {
            return Err(Error::Model(format!(
                "tensor {wname:?} has shape {wshape:?}, expected [O, K]"
            )));
        };
        Conv2dGeometry::linear(k, o)
    };
    // A node's own rule, else the engine's routing (x86: oneDNN for conv2d
    // with groups <= 100, see Engine::layer_rule).
    let rule = match a.opt("requant") {
        Some(v) => Requant::parse(v.as_str().unwrap_or(""))?,
        None => cx
            .pytorch_engine
            .layer_rule(kind == LayerKind::Conv2d, geom.groups),
    };
    let o = geom.out_channels;
    let scales = t.f32(&format!("{name}.weight_scale"), &[o])?;
    let zps = t.i32(&format!("{name}.weight_zero_point"), &[o])?;
    let w: Vec<i8> = w.into_iter().map(|b| b as i8).collect();
    let mut l = if matches!(rule, Requant::OnnxRuntime | Requant::Xnnpack) {
        if let Some((o, zp)) = zps.iter().enumerate().find(|(_, z)| **z != 0) {
            return Err(Error::Unsupported(format!(
                "weight zero point {zp} on output channel {o}: only symmetric weights are supported"
            )));
        }
        if act != crate::quant::Activation::None {
            return Err(Error::Model(format!(
                "an {} layer has no fused activation (its bounds are its \"clamp\")",
                rule.name()
            )));
        }
        let bias = t.i32(&format!("{name}.bias_i32"), &[o])?;
        QLayer::with_int_bias_rule(kind, geom, w, scales, bias, q_in, out, rule)?
    } else {
        let bias = t.f32(&format!("{name}.bias"), &[o])?;
        QLayer::from_pytorch(kind, geom, w, scales, &zps, bias, q_in, out, act, rule)?
    };
    if let Some(v) = a.opt("clamp") {
        if cx.version < 2 {
            return Err(Error::Model(
                "\"clamp\" needs format_version 2 (a version 1 reader would ignore it)".into(),
            ));
        }
        let pair = v
            .as_array()
            .filter(|c| c.len() == 2)
            .and_then(|c| Some((c[0].as_i64()?, c[1].as_i64()?)));
        let Some((lo, hi)) = pair else {
            return Err(Error::Model(format!(
                "\"clamp\" must be [lo, hi] (output bytes), got {v}"
            )));
        };
        let byte = |x: i64| i32::try_from(x).unwrap_or(-1);
        l = l.with_clamp(byte(lo), byte(hi))?;
    }
    // Inductor's qconv/qlinear calls, plain and with a sum input: oneDNN
    // multiplies by the input scale itself (no reciprocal round trip as in
    // PyTorch's eager x86/onednn engines; tests/data/pt2e/README.md "Input
    // scale", inductor_x86_models/sum_src_scale_*).
    if cx.pytorch_engine == crate::quant::Engine::InductorX86 {
        l = l.with_plain_src_scale();
    }
    // oneDNN's eltwise post-op before its output quantization (Inductor's
    // `qconv_pointwise(..., 'hardswish' | 'swish')`).
    if let Some(v) = a.opt("eltwise") {
        match v.as_str() {
            Some("hardswish") if cx.inputs.len() == 1 => l = l.with_hardswish()?,
            Some("swish") if cx.inputs.len() == 1 => l = l.with_swish()?,
            Some(e @ ("hardswish" | "swish")) => {
                return Err(Error::Model(format!(
                    "\"eltwise\": \"{e}\" on a conv2d with a second (sum) input"
                )))
            }
            _ => {
                return Err(Error::Unsupported(format!(
                    "\"eltwise\" {v} (known: \"hardswish\", \"swish\", oneDNN's post-ops under the onednn rule)"
                )))
            }
        }
    }
    // A second input: oneDNN's sum post-op, reading that input's qparams.
    if cx.inputs.len() == 2 {
        let sq = cx.inputs[1]
            .qparams()
            .ok_or_else(|| Error::dtype("sum input (input 1) of a conv2d/linear", "float32"))?;
        l = l.with_sum(sq)?;
    }
    if let Some(v) = a.opt("global_avg_pool") {
        match v.as_bool() {
            Some(false) => {}
            // With a second input: oneDNN's sum post-op then the average
            // (a resnet's end); with one: a plain conv's f32 output averaged
            // (mnasnet's end). Both under the onednn rule.
            Some(true) if kind == LayerKind::Conv2d => l = l.with_global_pool()?,
            Some(true) => {
                return Err(Error::Model(
                    "\"global_avg_pool\" needs a conv2d (a linear has no pixels to average)".into(),
                ))
            }
            None => {
                return Err(Error::Model(format!(
                    "\"global_avg_pool\" must be a boolean, got {v}"
                )))
            }
        }
    }
    if float_output {
        if l.global_pool() {
            return Err(Error::Model(
                "\"output\": \"float32\" on a conv2d with a global average".into(),
            ));
        }
        if l.requant != Requant::Onednn {
            return Err(Error::Unsupported(format!(
                "\"output\": \"float32\" under the {} rule (only oneDNN's f32 output, \"requant\": \"onednn\", is measured)",
                l.requant.name()
            )));
        }
        l = l.with_float_output()?;
    }
    Ok(match kind {
        LayerKind::Conv2d => Op::Conv2d(Box::new(l)),
        LayerKind::Linear => Op::Linear(Box::new(l)),
    })
}

/// The conv2d weight `[out_channels, in_channels / groups, kh, kw]` that
/// makes an ordinary convolution over [`crate::ops::gather::conv_transpose_index`]'s
/// map equal a transposed convolution of weight `weight`, PyTorch's
/// `ConvTranspose2d` layout `[in_channels, out_channels / groups, kh, kw]`:
/// in and out channels swapped within each group, the kernel flipped in both
/// spatial dimensions. Per-output-channel weight scales keep their order.
pub fn conv_transpose_weight(
    weight: &[i8],
    in_channels: usize,
    out_per_group: usize,
    groups: usize,
    kernel: [usize; 2],
) -> Result<Vec<i8>> {
    let [kh, kw] = kernel;
    let n = [in_channels, out_per_group, kh, kw]
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d));
    if groups == 0 || !in_channels.is_multiple_of(groups) || n != Some(weight.len()) {
        return Err(Error::shape(
            "conv_transpose2d weight",
            format!(
                "{} values for [{in_channels}, {out_per_group}, {kh}, {kw}] in {groups} groups",
                weight.len()
            ),
        ));
    }
    let cg = in_channels / groups;
    let mut out = vec![0i8; weight.len()];
    for g in 0..groups {
        for ci in 0..cg {
            for o in 0..out_per_group {
                for y in 0..kh {
                    for x in 0..kw {
                        let src = (((g * cg + ci) * out_per_group + o) * kh + y) * kw + x;
                        let dst = (((g * out_per_group + o) * cg + ci) * kh + (kh - 1 - y)) * kw
                            + (kw - 1 - x);
                        out[dst] = weight[src];
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The weight PyTorch's x86 engine (torch 2.15) actually computes a quantized
/// `ConvTranspose2d` with when it hands it to oneDNN (AVX-512 VNNI CPU,
/// groups <= 100, output_padding 0), in the same `[in_channels, out_channels /
/// groups, kh, kw]` layout as `weight`: per group, the `[Cin/g, Cout/g]`
/// matrix of kernel planes read as `[Cout/g, Cin/g]` and transposed, twice.
/// The identity when `Cin/g == Cout/g` or either is 1; otherwise PyTorch's
/// output is not the float layer's, and this reproduces it (measured, see
/// `tests/data/ops/README.md`). Feed the result to [`conv_transpose_weight`].
pub fn onednn_conv_transpose_weight(
    weight: &[i8],
    in_channels: usize,
    out_per_group: usize,
    groups: usize,
    kernel: [usize; 2],
) -> Result<Vec<i8>> {
    // Validates the shape (and gives the same error as conv_transpose_weight).
    conv_transpose_weight(weight, in_channels, out_per_group, groups, kernel)?;
    let (cg, og, kk) = (in_channels / groups, out_per_group, kernel[0] * kernel[1]);
    let mut w = weight.to_vec();
    let block = cg * og * kk;
    for g in 0..groups {
        for _ in 0..2 {
            let a = w[g * block..(g + 1) * block].to_vec();
            // a as [og][cg] planes, transposed to [cg][og]
            for c in 0..cg {
                for o in 0..og {
                    let (dst, src) = ((c * og + o) * kk, (o * cg + c) * kk);
                    w[g * block + dst..g * block + dst + kk].copy_from_slice(&a[src..src + kk]);
                }
            }
        }
    }
    Ok(w)
}

/// The default activation of a layer, as a clamp: `relu` clamps at the output
/// zero point.
pub(crate) fn activation_lo(act: Activation, zero_point: i32) -> i32 {
    match act {
        Activation::Relu => zero_point,
        Activation::None => 0,
    }
}

// ---------------------------------------------------------------------------
// The CPU reference: plain loops, wide accumulators, the layer's epilogue.

/// Exact i64 accumulators `acc[n][o][oy][ox] = Σ (x - x_zp) * w` of a conv2d
/// over a quint8 NCHW input; padded positions hold the real value 0.
pub fn conv2d_accumulators(
    layer: &QLayer,
    x: &[u8],
    shape: &[usize],
) -> Result<(Vec<i64>, Vec<usize>)> {
    let out_shape = layer.output_shape(shape)?;
    check_data_len(x.len(), shape)?;
    let g = &layer.geometry;
    let (n, c, h, w) = match *shape {
        [n, k] => (n, k, 1, 1),
        [n, c, h, w] => (n, c, h, w),
        _ => unreachable!("output_shape checked the rank"),
    };
    let (oh, ow) = if layer.kind == LayerKind::Linear {
        (1, 1)
    } else {
        (out_shape[2], out_shape[3])
    };
    let (o, cg, og) = (g.out_channels, g.cin_per_group(), g.cout_per_group());
    let [kh, kw] = g.kernel;
    let zp = layer.input.zero_point as i64;
    let len = super::checked_product("conv2d/linear output", &[n, o, oh, ow])?;
    let mut acc = super::try_vec(len, 0i64, "conv2d/linear accumulators")?;
    for b in 0..n {
        for oc in 0..o {
            let grp = oc / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut sum = 0i64;
                    for ci in 0..cg {
                        let ch = grp * cg + ci;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * g.stride[0] + ky * g.dilation[0]) as isize
                                    - g.padding[0] as isize;
                                let ix = (ox * g.stride[1] + kx * g.dilation[1]) as isize
                                    - g.padding[1] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue; // padding: the real value 0
                                }
                                let xv = x[((b * c + ch) * h + iy as usize) * w + ix as usize]
                                    as i64
                                    - zp;
                                let wv = layer.weight[((oc * cg + ci) * kh + ky) * kw + kx] as i64;
                                sum += xv * wv;
                            }
                        }
                    }
                    acc[((b * o + oc) * oh + oy) * ow + ox] = sum;
                }
            }
        }
    }
    Ok((acc, out_shape))
}

/// Runs a fused quantized conv2d or linear layer on the CPU: accumulate
/// exactly, then requantize each output with the layer's epilogue.
/// `x` is quint8 in NCHW (or `[N, K]`) order; returns the output and its shape.
pub fn run_layer(layer: &QLayer, x: &[u8], shape: &[usize]) -> Result<(Vec<u8>, Vec<usize>)> {
    map_accumulators(layer, x, shape, |oc, a| layer.epilogue.apply(oc, a))
}

/// [`run_layer`] for a layer with an f32 output
/// ([`QLayer::with_float_output`]): each output is the epilogue's f32 value
/// ([`crate::quant::Epilogue::float_value`]).
pub fn run_layer_float(
    layer: &QLayer,
    x: &[u8],
    shape: &[usize],
) -> Result<(Vec<f32>, Vec<usize>)> {
    map_accumulators(layer, x, shape, |oc, a| layer.epilogue.float_value(oc, a))
}

/// The layer's exact accumulators, each (with its output channel) through
/// `f`; an accumulator outside i32 (the engines' accumulator) is an error.
fn map_accumulators<T>(
    layer: &QLayer,
    x: &[u8],
    shape: &[usize],
    f: impl Fn(usize, i32) -> T,
) -> Result<(Vec<T>, Vec<usize>)> {
    let (acc, out_shape) = conv2d_accumulators(layer, x, shape)?;
    let o = layer.geometry.out_channels;
    let spatial: usize = out_shape[2..].iter().product();
    let mut y = super::try_with_capacity(acc.len(), "conv2d/linear output")?;
    for (i, &a) in acc.iter().enumerate() {
        let oc = (i / spatial) % o;
        let a32 = i32::try_from(a).map_err(|_| Error::Overflow {
            what: "conv2d/linear".into(),
            detail: format!(
                "output element {i} accumulates to {a}, outside i32 (PyTorch's accumulator)"
            ),
        })?;
        y.push(f(oc, a32));
    }
    Ok((y, out_shape))
}

/// [`run_layer`] for a layer with oneDNN's `sum` post-op
/// ([`QLayer::with_sum`]): `a` (shape `a_shape`, the output's) is the second
/// addend, added by the epilogue ([`crate::quant::Epilogue::apply_sum`]).
pub fn run_layer_sum(
    layer: &QLayer,
    x: &[u8],
    shape: &[usize],
    a: &[u8],
    a_shape: &[usize],
) -> Result<(Vec<u8>, Vec<usize>)> {
    map_sum_accumulators(layer, x, shape, a, a_shape, |oc, acc, ab| {
        layer.epilogue.apply_sum(oc, acc, ab)
    })
}

/// [`run_layer_sum`] for a layer with oneDNN's `sum` post-op and an f32
/// output ([`crate::quant::EpilogueForm::OnednnSumFloat`]): each output is
/// the sum's f32 value ([`crate::quant::Epilogue::pool_value`]).
pub fn run_layer_sum_float(
    layer: &QLayer,
    x: &[u8],
    shape: &[usize],
    a: &[u8],
    a_shape: &[usize],
) -> Result<(Vec<f32>, Vec<usize>)> {
    map_sum_accumulators(layer, x, shape, a, a_shape, |oc, acc, ab| {
        layer.epilogue.pool_value(oc, acc, ab)
    })
}

/// The layer's exact accumulators, each with its output channel and the
/// addend's byte at the same position, through `f`.
fn map_sum_accumulators<T>(
    layer: &QLayer,
    x: &[u8],
    shape: &[usize],
    a: &[u8],
    a_shape: &[usize],
    f: impl Fn(usize, i32, u8) -> T,
) -> Result<(Vec<T>, Vec<usize>)> {
    let (acc, out_shape) = conv2d_accumulators(layer, x, shape)?;
    if a_shape != out_shape.as_slice() || a.len() != acc.len() {
        return Err(Error::shape(
            "sum input (input 1)",
            format!("shape {a_shape:?}, the conv's output is {out_shape:?}"),
        ));
    }
    let o = layer.geometry.out_channels;
    let spatial: usize = out_shape[2..].iter().product();
    let mut y = super::try_with_capacity(acc.len(), "conv2d/linear output")?;
    for (i, (&s, &ab)) in acc.iter().zip(a).enumerate() {
        let oc = (i / spatial) % o;
        let a32 = i32::try_from(s).map_err(|_| Error::Overflow {
            what: "conv2d/linear".into(),
            detail: format!(
                "output element {i} accumulates to {s}, outside i32 (the engine's accumulator)"
            ),
        })?;
        y.push(f(oc, a32, ab));
    }
    Ok((y, out_shape))
}

/// [`run_layer_sum`] for a layer ending in a global average
/// ([`QLayer::with_global_pool`]): output `[N, O, 1, 1]`.
pub fn run_layer_sum_pool(
    layer: &QLayer,
    x: &[u8],
    shape: &[usize],
    a: &[u8],
    a_shape: &[usize],
) -> Result<(Vec<u8>, Vec<usize>)> {
    run_layer_pool(layer, x, shape, Some((a, a_shape)))
}

/// A layer ending in a global average ([`QLayer::with_global_pool`]), with
/// its sum addend (`Some`, [`quant::EpilogueForm::OnednnSumPool`]) or
/// without ([`quant::EpilogueForm::OnednnPool`]): output `[N, O, 1, 1]`.
///
/// [`quant::EpilogueForm::OnednnSumPool`]: crate::quant::EpilogueForm::OnednnSumPool
/// [`quant::EpilogueForm::OnednnPool`]: crate::quant::EpilogueForm::OnednnPool
pub fn run_layer_pool(
    layer: &QLayer,
    x: &[u8],
    shape: &[usize],
    addend: Option<(&[u8], &[usize])>,
) -> Result<(Vec<u8>, Vec<usize>)> {
    if layer.sum_input().is_some() != addend.is_some() {
        return Err(Error::config(
            "conv2d with a global average",
            format!(
                "the layer has {} sum input, the call {}",
                if layer.sum_input().is_some() {
                    "a"
                } else {
                    "no"
                },
                if addend.is_some() {
                    "gives one"
                } else {
                    "none"
                }
            ),
        ));
    }
    let (acc, out_shape) = conv2d_accumulators(layer, x, shape)?;
    if let Some((a, a_shape)) = addend {
        if a_shape != out_shape.as_slice() || a.len() != acc.len() {
            return Err(Error::shape(
                "sum input (input 1)",
                format!("shape {a_shape:?}, the conv's output is {out_shape:?}"),
            ));
        }
    }
    let (n, o) = (out_shape[0], out_shape[1]);
    let hw: usize = out_shape[2..].iter().product();
    let mut y = Vec::with_capacity(n * o);
    for (i, plane) in acc.chunks(hw).enumerate() {
        let oc = i % o;
        let ap = addend.map(|(a, _)| &a[i * hw..(i + 1) * hw]);
        let mut sum = 0f32;
        for (k, &s) in plane.iter().enumerate() {
            let ab = ap.map_or(0, |a| a[k]);
            let a32 = i32::try_from(s).map_err(|_| Error::Overflow {
                what: "conv2d".into(),
                detail: format!("an accumulator of {s} is outside i32 (the engine's)"),
            })?;
            sum += layer.epilogue.pool_value(oc, a32, ab);
        }
        y.push(layer.epilogue.pool_quantize(sum, hw));
    }
    Ok((y, vec![n, o, 1, 1]))
}

/// A float conv2d (or linear, as a 1x1 conv of a 1x1 image) in plain f32
/// loops, followed by the activation: the unquantized layer, for measuring
/// how close the int8 layer comes. `weight` is `[O, C/groups, kh, kw]`.
pub fn float_conv2d(
    geom: &Conv2dGeometry,
    weight: &[f32],
    bias: &[f32],
    relu: bool,
    x: &[f32],
    shape: &[usize],
) -> Result<(Vec<f32>, Vec<usize>)> {
    geom.validate()?;
    let (n, c, h, w) = crate::layout::nchw(shape)?;
    check_data_len(x.len(), shape)?;
    if c != geom.in_channels {
        return Err(Error::shape(
            "conv2d input",
            format!("{c} channels, the layer has {}", geom.in_channels),
        ));
    }
    let (oh, ow) = geom.output_hw(h, w)?;
    let (o, cg, og) = (
        geom.out_channels,
        geom.cin_per_group(),
        geom.cout_per_group(),
    );
    let [kh, kw] = geom.kernel;
    let len = super::checked_product("conv2d output", &[n, o, oh, ow])?;
    let mut y = super::try_vec(len, 0f32, "conv2d output")?;
    for b in 0..n {
        for oc in 0..o {
            let grp = oc / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    // Summed as PyTorch's float conv (oneDNN) sums on x86: fused
                    // multiply-adds, kernel taps outer, input channels inner, the
                    // bias added last. This matters only for calibration, where a
                    // tensor's observed min/max must be PyTorch's to the bit.
                    let mut s = 0f32;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * geom.stride[0] + ky * geom.dilation[0]) as isize
                                - geom.padding[0] as isize;
                            let ix = (ox * geom.stride[1] + kx * geom.dilation[1]) as isize
                                - geom.padding[1] as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            for ci in 0..cg {
                                let xv = x
                                    [((b * c + grp * cg + ci) * h + iy as usize) * w + ix as usize];
                                s = xv.mul_add(weight[((oc * cg + ci) * kh + ky) * kw + kx], s);
                            }
                        }
                    }
                    let v = s + bias[oc];
                    y[((b * o + oc) * oh + oy) * ow + ox] = if relu { v.max(0.0) } else { v };
                }
            }
        }
    }
    let out_shape = if shape.len() == 2 {
        vec![n, o]
    } else {
        vec![n, o, oh, ow]
    };
    Ok((y, out_shape))
}

#[cfg(test)]
mod conv_transpose_tests {
    use super::*;

    #[test]
    fn transposed_weights() {
        // Cin 2, Cout 3, groups 1, kernel 1x2: w[i][o][0][x] = 10 i + 2 o + x.
        let w: Vec<i8> = (0..2)
            .flat_map(|i| (0..3).flat_map(move |o| (0..2).map(move |x| 10 * i + 2 * o + x)))
            .collect();
        let c = conv_transpose_weight(&w, 2, 3, 1, [1, 2]).unwrap();
        // c[o][i][0][x] = w[i][o][0][1 - x]
        for o in 0..3 {
            for i in 0..2 {
                for x in 0..2 {
                    assert_eq!(c[(o * 2 + i) * 2 + x], (10 * i + 2 * o + 1 - x) as i8);
                }
            }
        }
        // Two groups of Cin/g 1, Cout/g 2: w [2, 2, 1, 1] = [a b | c d] -> [a, b, c, d]
        let c = conv_transpose_weight(&[1, 2, 3, 4], 2, 2, 2, [1, 1]).unwrap();
        assert_eq!(c, vec![1, 2, 3, 4]);
        assert!(conv_transpose_weight(&[1, 2, 3], 2, 2, 2, [1, 1]).is_err());
        assert!(conv_transpose_weight(&[1, 2, 3, 4], 3, 2, 2, [1, 1]).is_err());
        // oneDNN's scramble: identity for square or single-channel groups,
        // else per group [Cin/g, Cout/g] read as [Cout/g, Cin/g], transposed, twice.
        let sq: Vec<i8> = (0..8).collect();
        assert_eq!(
            onednn_conv_transpose_weight(&sq, 2, 2, 1, [1, 2]).unwrap(),
            sq
        );
        assert_eq!(
            onednn_conv_transpose_weight(&sq, 4, 2, 4, [1, 1]).unwrap(),
            sq
        );
        // [2, 3] = [[1 2 -1] [-3 -2 2]] -> [[1 -2 -3] [-1 2 2]] (measured on torch 2.15 x86)
        assert_eq!(
            onednn_conv_transpose_weight(&[1, 2, -1, -3, -2, 2], 2, 3, 1, [1, 1]).unwrap(),
            vec![1, -2, -3, -1, 2, 2]
        );
    }
}
