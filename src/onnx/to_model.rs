//! An ONNX model as a qfuse [`Model`]: the lowered program ([`Lowered`]) mapped
//! op by op onto qfuse's ops, computed with ONNX Runtime's arithmetic
//! ([`Requant::OnnxRuntime`]; rules in `tests/data/onnx/README.md`).
//!
//! ONNX tensors carry the batch as their first dimension; qfuse's tensors are
//! per sample. Dimension 0 of every graph input is taken as the batch (a
//! symbolic `N` or a fixed size), and ops that would mix samples (a reshape,
//! transpose, slice, concat or softmax over dimension 0) are refused. int8
//! activations are qint8 tensors (held as uint8 images, see [`QParams`]).

use std::collections::HashMap;

use super::{
    unsupported, AccOut, Dim, Lowered, OnnxGraph, QAxis, QNode, QOp, QType, QWeights, ShapeOp,
    ValueId, ValueKind, Q,
};
use crate::error::Result;
use crate::layer::{Conv2dGeometry, LayerKind, QLayer};
use crate::model::{infer_node, DType, Model, Node, TensorInfo};
use crate::ops::Op;
use crate::quant::{QParams, Requant};

/// The qfuse model of an ONNX graph: each lowered op mapped onto qfuse ops
/// computed with ONNX Runtime's arithmetic ([`Requant::OnnxRuntime`]).
pub fn to_model(g: &OnnxGraph) -> Result<Model> {
    let l = g.lower()?;
    Converter::new(g, &l)?.run()
}

/// qfuse qparams of an ONNX activation's per-tensor qparams.
pub fn qparams(q: &Q) -> Result<QParams> {
    match q.dtype {
        QType::U8 => QParams::new(q.scale, q.zero_point),
        QType::I8 => QParams::new_i8(q.scale, q.zero_point),
    }
}

struct Converter<'a> {
    l: &'a Lowered,
    /// The default domain's opset.
    opset: i64,
    /// The qfuse tensor (name) holding each lowered value, once produced.
    name: HashMap<ValueId, String>,
    infos: HashMap<String, TensorInfo>,
    inputs: Vec<(String, TensorInfo)>,
    nodes: Vec<Node>,
    /// Float values that are a float graph input reshaped by shape ops ahead
    /// of its QuantizeLinear (`quantize_static` leaves a Flatten there): the
    /// graph input's qfuse name and the value's per-sample shape. The
    /// reshape moves after the QuantizeLinear, which is elementwise, so the
    /// bytes are the same.
    head: HashMap<ValueId, (String, Vec<usize>)>,
    /// Quantized values a chain of shape ops gives a per-sample shape qfuse
    /// tensors do not have (rank 0 or above 3, e.g. ShuffleNet's channel
    /// shuffle `[2, C/2, H, W]`): the source tensor, the shape, and the
    /// gather index into the source (None: a plain reshape). The next shape
    /// op composes with it; any other reader is refused.
    view: HashMap<ValueId, View>,
}

/// See [`Converter::view`].
type View = (String, Vec<usize>, Option<std::sync::Arc<Vec<u32>>>);

/// Float shape ops that may reshape a float graph input ahead of its
/// QuantizeLinear.
const FLOAT_HEAD: [&str; 4] = ["Flatten", "Reshape", "Squeeze", "Unsqueeze"];

/// The ONNX node named in errors.
fn at(n: &QNode) -> String {
    n.name.clone()
}

impl<'a> Converter<'a> {
    fn new(g: &'a OnnxGraph, l: &'a Lowered) -> Result<Self> {
        let mut c = Converter {
            l,
            opset: g.opset,
            name: HashMap::new(),
            infos: HashMap::new(),
            inputs: Vec::new(),
            nodes: Vec::new(),
            head: HashMap::new(),
            view: HashMap::new(),
        };
        for &id in &l.inputs {
            let v = &l.values[id];
            let vi = g
                .inputs
                .iter()
                .find(|vi| vi.name == v.name)
                .expect("a lowered input is a graph input");
            let where_ = format!("graph input '{}'", v.name);
            let dims = vi
                .shape
                .as_ref()
                .ok_or_else(|| unsupported(&where_, "no shape declared"))?;
            if dims.len() < 2 || dims.len() > 4 {
                return Err(unsupported(
                    &where_,
                    format!(
                        "rank {}: qfuse takes [N, C, H, W], [N, C, L] or [N, K] inputs (dimension 0 is the batch){}",
                        dims.len(),
                        if dims.len() < 2 {
                            "; a one-element operand of QLinearAdd/QLinearMul runs when it is a constant (an initializer), as a table"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            let mut shape = Vec::new();
            for (i, d) in dims.iter().enumerate().skip(1) {
                match d {
                    Dim::Known(n) if *n >= 1 => shape.push(*n),
                    _ => {
                        return Err(unsupported(
                            &where_,
                            format!("dimension {i} is not a fixed size (only dimension 0, the batch, may be symbolic)"),
                        ))
                    }
                }
            }
            let dtype = match &v.kind {
                ValueKind::Float => DType::F32,
                ValueKind::Quant { dtype, q } => {
                    let q = match q {
                        Some(q) => per_tensor(q, *dtype, &where_)?,
                        // A QOperator file states an input's qparams where it
                        // is read: take the first reader's.
                        // No reader states any: only byte-moving ops read it
                        // (a MaxPool, a reshape), whose result does not depend
                        // on them; scale 1, zero point 0.
                        None => qparams(&stated_by_readers(l, id, 0).unwrap_or(Q {
                            scale: 1.0,
                            zero_point: 0,
                            dtype: *dtype,
                        }))
                        .map_err(|e| unsupported(&where_, e.to_string()))?,
                    };
                    DType::QUInt8(q)
                }
                _ => {
                    return Err(unsupported(
                        &where_,
                        "an integer input (qfuse takes float32, uint8 or int8)",
                    ))
                }
            };
            let info = TensorInfo { shape, dtype };
            c.name.insert(id, v.name.clone());
            c.infos.insert(v.name.clone(), info.clone());
            c.inputs.push((v.name.clone(), info));
        }
        Ok(c)
    }

    fn run(mut self) -> Result<Model> {
        for n in &self.l.nodes {
            self.node(n)?;
        }
        let mut outputs = Vec::new();
        for &id in &self.l.outputs {
            let v = &self.l.values[id];
            let name = self.name.get(&id).ok_or_else(|| {
                unsupported(
                    format!("graph output '{}'", v.name),
                    "not computed by a supported op",
                )
            })?;
            outputs.push(name.clone());
        }
        Model::new(Requant::OnnxRuntime, self.inputs, outputs, self.nodes)
    }

    /// The qfuse tensor holding value `id`, and its info.
    fn input(&self, n: &QNode, i: usize) -> Result<(String, TensorInfo)> {
        let id = *n
            .inputs
            .get(i)
            .ok_or_else(|| super::bad(at(n), format!("input {i} is missing")))?;
        let v = &self.l.values[id];
        if let (Some((src, shape)), None) = (self.head.get(&id), self.name.get(&id)) {
            return Err(unsupported(
                at(n),
                format!(
                    "input '{}' is the float graph input '{src}' reshaped to per-sample {shape:?} ahead of its QuantizeLinear; qfuse moves such a reshape after the QuantizeLinear and runs nothing else on it",
                    v.name
                ),
            ));
        }
        if let (Some((_, shape, _)), None) = (self.view.get(&id), self.name.get(&id)) {
            return Err(unsupported(
                at(n),
                format!(
                    "input '{}' has per-sample shape {shape:?}: qfuse tensors have 1 to 3 dimensions besides the batch (only shape ops may pass through other ranks)",
                    v.name
                ),
            ));
        }
        if v.constant.is_some() {
            return Err(unsupported(
                at(n),
                format!("input '{}' is a constant tensor (qfuse takes constant operands only as weights)", v.name),
            ));
        }
        let name = self.name.get(&id).ok_or_else(|| {
            unsupported(
                at(n),
                format!("input '{}' is not computed by a supported op", v.name),
            )
        })?;
        Ok((name.clone(), self.infos[name].clone()))
    }

    /// Adds a node computing output value 0 of `n`.
    fn push(&mut self, n: &QNode, op: Op, inputs: Vec<String>) -> Result<()> {
        let out = n.outputs[0];
        let name = self.l.values[out].name.clone();
        self.push_named(n, name.clone(), op, inputs)?;
        self.name.insert(out, name);
        Ok(())
    }

    /// Adds a node computing an intermediate of `n` (a requantize table, a
    /// transpose around an NHWC op): named after `n`'s output and `what`,
    /// unique among the model's tensors.
    fn aux(&mut self, n: &QNode, what: &str, op: Op, inputs: Vec<String>) -> Result<String> {
        let base = format!("{}/{what}", self.l.values[n.outputs[0]].name);
        let mut name = base.clone();
        let mut k = 1;
        while self.infos.contains_key(&name) || self.l.values.iter().any(|v| v.name == name) {
            k += 1;
            name = format!("{base}_{k}");
        }
        self.push_named(n, name.clone(), op, inputs)?;
        Ok(name)
    }

    fn push_named(&mut self, n: &QNode, name: String, op: Op, inputs: Vec<String>) -> Result<()> {
        let node = Node {
            name: name.clone(),
            op,
            inputs,
        };
        let ins: Vec<&TensorInfo> = node.inputs.iter().map(|i| &self.infos[i]).collect();
        // The error names the ONNX node once (not also the qfuse node, which
        // is named after the ONNX node's output).
        let info = infer_node(&node, &ins, Requant::OnnxRuntime)
            .map_err(|e| unsupported(at(n), e.root_cause().to_string()))?;
        self.infos.insert(name, info);
        self.nodes.push(node);
        Ok(())
    }

    /// The per-tensor qparams `q` an op states for its input `i`, checked
    /// against the producer's.
    fn check_in_q(&self, n: &QNode, info: &TensorInfo, q: &Q) -> Result<QParams> {
        let want = qparams(q).map_err(|e| unsupported(at(n), e.to_string()))?;
        match info.qparams() {
            Some(have) if have == want => Ok(want),
            Some(have) => Err(unsupported(
                at(n),
                format!(
                    "reads its input with qparams (scale {}, zero point {}, {}) but the producer gives (scale {}, zero point {}, {})",
                    want.scale, want.true_zero_point(), want.dtype_name(),
                    have.scale, have.true_zero_point(), have.dtype_name()
                ),
            )),
            None => Err(unsupported(at(n), "a float input where a quantized one is needed")),
        }
    }

    fn node(&mut self, n: &QNode) -> Result<()> {
        match &n.op {
            QOp::Quantize { y } => {
                if let Some((src, shape)) = self.head.get(&n.inputs[0]).cloned() {
                    let q = per_tensor_axis(y, &at(n))?;
                    let x = self.aux(n, "quantize", Op::Quantize(q), vec![src])?;
                    return self.push(n, Op::Reshape(shape), vec![x]);
                }
                let (x, info) = self.input(n, 0)?;
                if info.dtype != DType::F32 {
                    return Err(unsupported(at(n), "QuantizeLinear of a quantized tensor"));
                }
                let q = per_tensor_axis(y, &at(n))?;
                self.push(n, Op::Quantize(q), vec![x])
            }
            QOp::Dequantize { x: qa } => {
                let (x, info) = self.input(n, 0)?;
                let Some(have) = info.qparams() else {
                    return Err(unsupported(at(n), "DequantizeLinear of a float tensor"));
                };
                let want = per_tensor_axis(qa, &at(n))?;
                if want != have {
                    return Err(unsupported(
                        at(n),
                        "DequantizeLinear with qparams other than its input's producer's",
                    ));
                }
                self.push(n, Op::Dequantize, vec![x])
            }
            QOp::Conv {
                x: xq,
                w,
                bias,
                geom,
                out,
            } => {
                let (x, info) = self.input(n, 0)?;
                let q_in = self.check_in_q(n, &info, xq)?;
                let (y, mults) = requant_out(n, out)?;
                let [o, cg, kh, kw] = w.shape[..] else {
                    return Err(super::bad(at(n), "conv weights are not 4-D"));
                };
                let [t, l, b, r] = geom.pads;
                if t != b || l != r {
                    return Err(unsupported(
                        at(n),
                        format!(
                            "asymmetric padding {:?} (qfuse pads both sides alike)",
                            geom.pads
                        ),
                    ));
                }
                let g = Conv2dGeometry::new(cg * geom.groups, o, [kh, kw])
                    .stride(geom.stride)
                    .padding([t, l])
                    .dilation(geom.dilation)
                    .groups(geom.groups);
                let layer =
                    self.layer(n, LayerKind::Conv2d, g, w, bias.as_deref(), q_in, y, mults)?;
                self.push(n, Op::Conv2d(Box::new(layer)), vec![x])
            }
            QOp::MatMul { a, w, out } => {
                let (x, info) = self.input(n, 0)?;
                let q_in = self.check_in_q(n, &info, a)?;
                let (y, mults) = requant_out(n, out)?;
                self.linear(n, x, &info, w, None, q_in, y, mults)
            }
            QOp::Gemm {
                a,
                trans_a,
                w,
                bias,
                alpha,
                out,
            } => {
                if *trans_a {
                    return Err(unsupported(at(n), "Gemm with transA=1"));
                }
                if *alpha != 1.0 {
                    return Err(unsupported(
                        at(n),
                        format!("Gemm with alpha {alpha} (qfuse takes alpha 1)"),
                    ));
                }
                let (x, info) = self.input(n, 0)?;
                let q_in = self.check_in_q(n, &info, a)?;
                if let AccOut::Float { scales } = out {
                    return self.float_gemm(n, x, &info, w, bias.as_deref(), q_in, scales);
                }
                let (y, mults) = requant_out(n, out)?;
                self.linear(n, x, &info, w, bias.as_deref(), q_in, y, mults)
            }
            QOp::MaxPool { geom, .. } => {
                let (x, info) = self.input(n, 0)?;
                if info.qparams().is_none() {
                    return Err(unsupported(
                        at(n),
                        "MaxPool of a float tensor outside a QDQ group",
                    ));
                }
                let [t, l, b, r] = geom.pads;
                if t != b || l != r {
                    return Err(unsupported(
                        at(n),
                        format!("asymmetric padding {:?}", geom.pads),
                    ));
                }
                let p = crate::ops::Pool2d {
                    kernel: geom.kernel,
                    stride: geom.stride,
                    padding: [t, l],
                    dilation: geom.dilation,
                    ceil_mode: geom.ceil_mode,
                };
                self.push(n, Op::MaxPool2d(p), vec![x])
            }
            QOp::Shape(s) => self.shape_op(n, s),
            QOp::Table { kind, x: xq, y } => {
                let (x, info) = self.input(n, 0)?;
                let q_in = self.check_in_q(n, &info, xq)?;
                let y = qparams(y).map_err(|e| unsupported(at(n), e.to_string()))?;
                let table = Box::new(crate::ops::onnx_table(kind, q_in, y));
                self.push(n, Op::Lut { table, out: y }, vec![x])
            }
            QOp::ChannelFloat { x: xq, y, f, relu } => {
                let (x, info) = self.input(n, 0)?;
                let q_in = self.check_in_q(n, &info, xq)?;
                let y = qparams(y).map_err(|e| unsupported(at(n), e.to_string()))?;
                let c = info.shape.first().copied().unwrap_or(1);
                if f.channels().is_some_and(|fc| fc != c) || info.shape.is_empty() {
                    return Err(unsupported(
                        at(n),
                        format!(
                            "a per-channel float op of {:?} channels on a per-sample shape {:?}",
                            f.channels(),
                            info.shape
                        ),
                    ));
                }
                let tables = crate::ops::chanlut::ort_channel_tables(q_in, y, c, *relu, |ch, v| {
                    f.apply(ch, v)
                });
                self.push(
                    n,
                    Op::ChannelLut {
                        tables: std::sync::Arc::new(tables),
                        out: y,
                    },
                    vec![x],
                )
            }
            QOp::Add { a, b, y } | QOp::Mul { a, b, y } if self.constant_operand(n).is_some() => {
                self.binary_const(n, a, b, y)
            }
            QOp::Add { a, b, y } | QOp::Mul { a, b, y } => {
                let (xa, ia) = self.input(n, 0)?;
                let (xb, ib) = self.input(n, 1)?;
                let qa = self.check_in_q(n, &ia, a)?;
                let qb = self.check_in_q(n, &ib, b)?;
                let y = qparams(y).map_err(|e| unsupported(at(n), e.to_string()))?;
                let add = matches!(n.op, QOp::Add { .. });
                let table = |p: QParams, q: QParams| {
                    if add {
                        crate::ops::ort_add_table(p, q, y)
                    } else {
                        crate::ops::ort_mul_table(p, q, y)
                    }
                };
                let full = |s: &[usize]| {
                    std::iter::once(1)
                        .chain(s.iter().copied())
                        .collect::<Vec<_>>()
                };
                // ORT hands its kernel the varying input as "A"; qfuse
                // broadcasts input 1 into input 0.
                let (ins, t) = if ort_swaps(&full(&ia.shape), &full(&ib.shape)) {
                    (vec![xb, xa], table(qb, qa))
                } else {
                    (vec![xa, xb], table(qa, qb))
                };
                self.push(
                    n,
                    Op::Binary {
                        table: std::sync::Arc::new(t),
                        out: y,
                    },
                    ins,
                )
            }
            QOp::GlobalAvgPool {
                x: xq,
                y,
                channels_last,
            } => {
                let (x, info) = self.input(n, 0)?;
                self.check_in_q(n, &info, xq)?;
                let y = qparams(y).map_err(|e| unsupported(at(n), e.to_string()))?;
                self.pool(n, x, &info, *channels_last, Op::GlobalAvgPool { out: y })
            }
            QOp::AvgPool {
                x: xq,
                y,
                geom,
                count_include_pad,
                channels_last,
            } => {
                let (x, info) = self.input(n, 0)?;
                self.check_in_q(n, &info, xq)?;
                let y = qparams(y).map_err(|e| unsupported(at(n), e.to_string()))?;
                let pool = crate::ops::OrtPool2d {
                    kernel: geom.kernel,
                    stride: geom.stride,
                    pads: geom.pads,
                    ceil_mode: geom.ceil_mode,
                };
                let op = Op::AvgPoolRequant {
                    pool,
                    count_include_pad: *count_include_pad,
                    out: y,
                };
                self.pool(n, x, &info, *channels_last, op)
            }
            QOp::Resize {
                x: xq,
                y,
                truncate,
                size,
                scales,
                coord,
                mode,
            } => {
                let (x, info) = self.input(n, 0)?;
                self.check_in_q(n, &info, xq)?;
                let out = qparams(y).map_err(|e| unsupported(at(n), e.to_string()))?;
                let rule = if *truncate {
                    crate::ops::resize::ResizeRule::Truncate
                } else {
                    crate::ops::resize::ResizeRule::Requantize
                };
                let op = crate::ops::resize::Resize {
                    size: *size,
                    scales: *scales,
                    coord: *coord,
                    rule,
                    out,
                    mode: *mode,
                };
                self.push(n, Op::Resize(op), vec![x])
            }
            QOp::Softmax {
                x: xq,
                y,
                axis,
                opset13,
            } => {
                let (x, info) = self.input(n, 0)?;
                self.check_in_q(n, &info, xq)?;
                let y = qparams(y).map_err(|e| unsupported(at(n), e.to_string()))?;
                let r = info.shape.len() as i64 + 1;
                let a = if *axis < 0 { axis + r } else { *axis };
                if a <= 0 || a >= r {
                    return Err(unsupported(
                        at(n),
                        format!("Softmax over axis {axis} (the batch)"),
                    ));
                }
                if !opset13 && a != r - 1 {
                    // Opset < 13: the softmax runs over the flattened axes
                    // from `a` on (ORT's QLinearSoftmax takes D = the product
                    // of those dimensions): reshape, softmax over the last
                    // axis, reshape back. Reshapes move no bytes.
                    let lead = &info.shape[..(a - 1) as usize];
                    let d: usize = info.shape[(a - 1) as usize..].iter().product();
                    let mut flat = lead.to_vec();
                    flat.push(d);
                    let last = flat.len() - 1;
                    let f = self.aux(n, "flat", Op::Reshape(flat), vec![x])?;
                    let s = self.aux(n, "softmax", Op::Softmax { axis: last, out: y }, vec![f])?;
                    return self.push(n, Op::Reshape(info.shape.clone()), vec![s]);
                }
                self.push(
                    n,
                    Op::Softmax {
                        axis: (a - 1) as usize,
                        out: y,
                    },
                    vec![x],
                )
            }
            QOp::Concat { axis, inputs, y } => {
                let mut names = Vec::new();
                let mut shapes = Vec::new();
                let mut qs = Vec::new();
                for (i, q) in inputs.iter().enumerate() {
                    let (x, info) = self.input(n, i)?;
                    qs.push(self.check_in_q(n, &info, q)?);
                    names.push(x);
                    shapes.push(info.shape);
                }
                let y = qparams(y).map_err(|e| unsupported(at(n), e.to_string()))?;
                let r = shapes[0].len() as i64 + 1;
                let a = if *axis < 0 { axis + r } else { *axis };
                if a <= 0 || a >= r {
                    return Err(unsupported(
                        at(n),
                        format!("Concat along axis {axis} (dimension 0 is the batch)"),
                    ));
                }
                if a == 1 {
                    return self.push(n, Op::Cat(y), names);
                }
                // Another axis: each input whose qparams differ from the
                // output's is requantized first (ORT's rule Q table, as
                // QLinearConcat does), then one gather concatenates.
                let mut moved = Vec::new();
                for (i, (x, q)) in names.into_iter().zip(qs).enumerate() {
                    if q.scale == y.scale && q.zero_point == y.zero_point {
                        moved.push(x);
                    } else {
                        let table = Box::new(crate::ops::requantize_table_div(q, y));
                        moved.push(self.aux(
                            n,
                            &format!("requantize{i}"),
                            Op::Lut { table, out: y },
                            vec![x],
                        )?);
                    }
                }
                let (shape, index) = crate::ops::gather::concat_index(&shapes, a - 1)
                    .map_err(|e| unsupported(at(n), e.to_string()))?;
                self.push(
                    n,
                    Op::Gather {
                        shape,
                        index: std::sync::Arc::new(index),
                    },
                    moved,
                )
            }
            QOp::FloatTail { op_type, attrs } => match self.head_source(n, op_type) {
                Some(src) => self.float_head(n, op_type, attrs, src),
                None => self.float_tail(n, op_type, attrs),
            },
        }
    }

    /// A float op after the last dequantize: run on the host after readback.
    fn float_tail(
        &mut self,
        n: &QNode,
        op_type: &str,
        attrs: &std::collections::BTreeMap<String, super::Attr>,
    ) -> Result<()> {
        use super::Attr;
        use crate::ops::host::HostFn;
        let (x, info) = self.input(n, 0)?;
        if info.dtype != DType::F32 {
            return Err(unsupported(
                at(n),
                format!("float {op_type} of a quantized tensor"),
            ));
        }
        let int = |k: &str, d: i64| match attrs.get(k) {
            Some(Attr::Int(v)) => *v,
            _ => d,
        };
        let per_axis = |a: i64| -> Result<usize> {
            let r = info.shape.len() as i64 + 1;
            let a = if a < 0 { a + r } else { a };
            if a <= 0 || a >= r {
                return Err(unsupported(
                    at(n),
                    format!("{op_type} over axis {a} (the batch, or out of range)"),
                ));
            }
            Ok((a - 1) as usize)
        };
        let konst = |i: usize| -> Option<&super::Tensor> {
            n.inputs
                .get(i)
                .and_then(|&v| self.l.values[v].constant.as_ref())
        };
        let scalar = |i: usize| -> Result<Option<f32>> {
            match konst(i).map(|t| &t.data) {
                None => Ok(None),
                Some(super::TensorData::F32(v)) if v.len() == 1 => Ok(Some(v[0])),
                Some(_) => Err(unsupported(
                    at(n),
                    format!("{op_type} input {i} is not a float scalar constant"),
                )),
            }
        };
        let f = match op_type {
            "Relu" => HostFn::Relu,
            "Sigmoid" => HostFn::Sigmoid,
            "Tanh" => HostFn::Tanh,
            "Clip" => {
                let (lo, hi) = match (attrs.get("min"), attrs.get("max")) {
                    (Some(Attr::Float(a)), Some(Attr::Float(b))) => (*a, *b),
                    _ => (
                        scalar(1)?.unwrap_or(f32::NEG_INFINITY),
                        scalar(2)?.unwrap_or(f32::INFINITY),
                    ),
                };
                HostFn::Clip { min: lo, max: hi }
            }
            "Softmax" | "LogSoftmax" => {
                let opset13 = self.opset >= 13;
                let axis = per_axis(int("axis", if opset13 { -1 } else { 1 }))?;
                HostFn::Softmax {
                    axis,
                    to_end: !opset13,
                    log: op_type == "LogSoftmax",
                }
            }
            "Flatten" => {
                let a = int("axis", 1);
                if a == 1 || a == -(info.shape.len() as i64 + 1) + 1 {
                    HostFn::Reshape(vec![info.numel()])
                } else {
                    return Err(unsupported(at(n), format!("float Flatten at axis {a}")));
                }
            }
            "Reshape" => {
                let Some(super::TensorData::I64(shape)) = konst(1).map(|t| &t.data) else {
                    return Err(unsupported(at(n), "float Reshape to a shape that is not a constant"));
                };
                HostFn::Reshape(per_sample_reshape(n, &info.shape, shape, int("allowzero", 0) != 0)?)
            }
            other => {
                return Err(unsupported(
                    at(n),
                    format!("float {other} after the last dequantize (qfuse runs Relu, Clip, Sigmoid, Tanh, Softmax, LogSoftmax, Flatten and Reshape there)"),
                ))
            }
        };
        self.push(n, Op::HostFloat(f), vec![x])
    }

    #[allow(clippy::too_many_arguments)]
    fn layer(
        &self,
        n: &QNode,
        kind: LayerKind,
        g: Conv2dGeometry,
        w: &QWeights,
        bias: Option<&[i32]>,
        q_in: QParams,
        y: QParams,
        mults: &[f32],
    ) -> Result<QLayer> {
        let o = g.out_channels;
        if w.zero_points.iter().any(|&z| z != 0) {
            return Err(unsupported(
                at(n),
                "weights with a non-zero zero point (qfuse takes symmetric int8 weights)",
            ));
        }
        let scales = match w.scales.len() {
            1 => vec![w.scales[0]; o],
            k if k == o => w.scales.clone(),
            k => {
                return Err(super::bad(
                    at(n),
                    format!("{k} weight scales for {o} output channels"),
                ))
            }
        };
        let bias = bias.map_or_else(|| vec![0; o], |b| b.to_vec());
        let l = QLayer::with_int_bias(kind, g, w.data.clone(), scales, bias, q_in, y)
            .map_err(|e| unsupported(at(n), e.to_string()))?;
        // The multipliers are the lowering's (ORT's order); the layer computed
        // its own the same way: they must agree.
        for (ch, c) in l.epilogue().channels().iter().enumerate() {
            let m = mults[if mults.len() == 1 { 0 } else { ch }];
            if c.mult.to_bits() != m.to_bits() {
                return Err(super::bad(
                    at(n),
                    format!(
                        "output channel {ch}: multiplier {} where ONNX Runtime computes {m}",
                        c.mult
                    ),
                ));
            }
        }
        Ok(l)
    }

    #[allow(clippy::too_many_arguments)]
    fn linear(
        &mut self,
        n: &QNode,
        x: String,
        info: &TensorInfo,
        w: &QWeights,
        bias: Option<&[i32]>,
        q_in: QParams,
        y: QParams,
        mults: &[f32],
    ) -> Result<()> {
        let [o, k] = w.shape[..] else {
            return Err(super::bad(at(n), "matmul weights are not 2-D"));
        };
        if let [m, kk] = info.shape[..] {
            if kk == k {
                // [N, M, K] x [K, O]: the rows as the spatial positions of a
                // 1x1 conv over K channels (the same integer sums and
                // epilogue), between two transposes
                use crate::ops::gather::transpose_index;
                use std::sync::Arc;
                let to_unsupported = |e: crate::Error| unsupported(at(n), e.to_string());
                let (_, t_in) = transpose_index(&[m, k], &[1, 0]).map_err(to_unsupported)?;
                let xt = self.aux(
                    n,
                    "rows_as_positions",
                    Op::Gather {
                        shape: vec![k, m, 1],
                        index: Arc::new(t_in),
                    },
                    vec![x],
                )?;
                let g = Conv2dGeometry::new(k, o, [1, 1]);
                let layer = self.layer(n, LayerKind::Conv2d, g, w, bias, q_in, y, mults)?;
                let c = self.aux(n, "matmul", Op::Conv2d(Box::new(layer)), vec![xt])?;
                let (_, t_out) = transpose_index(&[o, m], &[1, 0]).map_err(to_unsupported)?;
                return self.push(
                    n,
                    Op::Gather {
                        shape: vec![m, o],
                        index: Arc::new(t_out),
                    },
                    vec![c],
                );
            }
        }
        if info.shape != [k] {
            return Err(unsupported(
                at(n),
                format!(
                    "input of shape [N, {}]: qfuse's linear layers take [N, K] or [N, M, K] inputs (K = {k})",
                    info.shape
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let g = Conv2dGeometry::linear(k, o);
        let layer = self.layer(n, LayerKind::Linear, g, w, bias, q_in, y, mults)?;
        self.push(n, Op::Linear(Box::new(layer)), vec![x])
    }

    /// QGemm with a float output (no y_scale): a dequantize, then ORT's
    /// integer product and scaling on the host after readback
    /// ([`crate::ops::host::OrtLinear`]); only model outputs may read it.
    #[allow(clippy::too_many_arguments)]
    fn float_gemm(
        &mut self,
        n: &QNode,
        x: String,
        info: &TensorInfo,
        w: &QWeights,
        bias: Option<&[i32]>,
        q_in: QParams,
        scales: &[f32],
    ) -> Result<()> {
        let [o, k] = w.shape[..] else {
            return Err(super::bad(at(n), "matmul weights are not 2-D"));
        };
        if info.shape != [k] {
            return Err(unsupported(
                at(n),
                format!(
                    "input of per-sample shape {:?}: a float-output QGemm takes [N, K] (K = {k})",
                    info.shape
                ),
            ));
        }
        if w.zero_points.iter().any(|&z| z != 0) {
            return Err(unsupported(
                at(n),
                format!("weight zero points {:?} (qfuse takes 0)", w.zero_points),
            ));
        }
        let scale = match scales.len() {
            1 => vec![scales[0]; o],
            l if l == o => scales.to_vec(),
            l => return Err(super::bad(at(n), format!("{l} scales for {o} outputs"))),
        };
        let bias = bias.map_or_else(|| vec![0; o], <[i32]>::to_vec);
        let lin = crate::ops::host::OrtLinear::new(w.data.clone(), bias, scale, q_in)
            .map_err(|e| unsupported(at(n), e.to_string()))?;
        let d = self.aux(n, "dequantize", Op::Dequantize, vec![x])?;
        self.push(
            n,
            Op::HostFloat(crate::ops::host::HostFn::OrtLinear(std::sync::Arc::new(
                lin,
            ))),
            vec![d],
        )
    }

    fn shape_op(&mut self, n: &QNode, s: &ShapeOp) -> Result<()> {
        use std::sync::Arc;
        let id = n.inputs[0];
        let (x, per, first): View = match self.view.get(&id) {
            Some(v) if !self.name.contains_key(&id) => v.clone(),
            _ => {
                let (x, info) = self.input(n, 0)?;
                if info.qparams().is_none() {
                    return Err(unsupported(
                        at(n),
                        "a shape op on a float tensor outside a QDQ group",
                    ));
                }
                (x, info.shape, None)
            }
        };
        let r = per.len() as i64 + 1;
        let to_unsupported = |e: crate::Error| unsupported(at(n), e.to_string());
        let (shape, then): (Vec<usize>, Option<Vec<u32>>) = match s {
            ShapeOp::Transpose { perm } => {
                let perm: Vec<i64> = perm.clone().unwrap_or_else(|| (0..r).rev().collect());
                if perm.first() != Some(&0) || perm.len() as i64 != r {
                    return Err(unsupported(
                        at(n),
                        format!("Transpose by {perm:?} (dimension 0, the batch, must stay first)"),
                    ));
                }
                let p: Vec<usize> = perm[1..].iter().map(|&d| (d - 1).max(0) as usize).collect();
                let (shape, index) =
                    crate::ops::gather::transpose_index(&per, &p).map_err(to_unsupported)?;
                (shape, Some(index))
            }
            ShapeOp::Slice {
                starts,
                ends,
                axes,
                steps,
            } => {
                let axes: Vec<i64> = axes
                    .clone()
                    .unwrap_or_else(|| (0..starts.len() as i64).collect());
                let steps: Vec<i64> = steps.clone().unwrap_or_else(|| vec![1; starts.len()]);
                let (mut s2, mut e2, mut a2, mut t2) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for j in 0..starts
                    .len()
                    .min(ends.len())
                    .min(axes.len())
                    .min(steps.len())
                {
                    let a = if axes[j] < 0 { axes[j] + r } else { axes[j] };
                    if a == 0 {
                        // The whole batch (0 to the end, step 1) is the only slice of it.
                        if starts[j] == 0 && steps[j] == 1 && ends[j] >= i32::MAX as i64 {
                            continue;
                        }
                        return Err(unsupported(
                            at(n),
                            format!(
                                "Slice of dimension 0 (the batch) from {} to {} step {}",
                                starts[j], ends[j], steps[j]
                            ),
                        ));
                    }
                    if a < 0 || a >= r {
                        return Err(super::bad(
                            at(n),
                            format!("Slice axis {} for rank {r}", axes[j]),
                        ));
                    }
                    s2.push(starts[j]);
                    e2.push(ends[j]);
                    a2.push(a - 1);
                    t2.push(steps[j]);
                }
                let (shape, index) = crate::ops::gather::slice_index(&per, &s2, &e2, &a2, &t2)
                    .map_err(to_unsupported)?;
                (shape, Some(index))
            }
            ShapeOp::Gather {
                indices,
                indices_shape,
                axis,
            } => {
                let a = if *axis < 0 { axis + r } else { *axis };
                if a <= 0 || a >= r {
                    return Err(unsupported(
                        at(n),
                        format!("Gather along axis {axis} (dimension 0 is the batch)"),
                    ));
                }
                let (shape, index) =
                    crate::ops::gather::take_index(&per, a - 1, indices, indices_shape)
                        .map_err(to_unsupported)?;
                (shape, Some(index))
            }
            ShapeOp::AxisMap { maps, fill } => {
                if maps.len() as i64 != r || maps.first().is_some_and(Option::is_some) {
                    return Err(unsupported(
                        at(n),
                        "a Resize or Pad of dimension 0 (the batch)",
                    ));
                }
                if let Some(f) = fill {
                    // Pad mode constant: one map with fill entries (the
                    // stored byte: the uint8 image of an int8 value)
                    let signed = self.infos[&x].qparams().is_some_and(|q| q.signed);
                    let stored = if signed { f + 128 } else { *f };
                    let stored = u8::try_from(stored).map_err(|_| {
                        super::bad(at(n), format!("Pad fill value {f} out of range"))
                    })?;
                    let (shape, index) =
                        axis_map_index(&per, &maps[1..], crate::ops::gather::fill_entry(stored))
                            .map_err(to_unsupported)?;
                    (shape, Some(index))
                } else {
                    // one gather per mapped axis, folded into one map
                    let mut cur = per.clone();
                    let mut index: Option<Vec<u32>> = None;
                    for (k, m) in maps.iter().enumerate().skip(1) {
                        let Some(m) = m else { continue };
                        let (shape, t) =
                            crate::ops::gather::take_index(&cur, k as i64 - 1, m, &[m.len()])
                                .map_err(to_unsupported)?;
                        index = Some(match index {
                            None => t,
                            Some(f) => {
                                crate::ops::gather::compose_index(&f, &t).map_err(to_unsupported)?
                            }
                        });
                        cur = shape;
                    }
                    match index {
                        Some(i) => (cur, Some(i)),
                        None => (cur, None),
                    }
                }
            }
            s => (self.reshaped(n, &per, s)?, None),
        };
        // out[i] = source[first[then[i]]]
        let index = match (first, then) {
            (f, None) => f,
            (None, Some(t)) => Some(Arc::new(t)),
            (Some(f), Some(t)) => Some(Arc::new(
                crate::ops::gather::compose_index(&f, &t).map_err(to_unsupported)?,
            )),
        };
        if shape.is_empty() || shape.len() > 3 {
            // a view: the next shape op composes with it
            self.view.insert(n.outputs[0], (x, shape, index));
            return Ok(());
        }
        let op = match index {
            Some(index) => Op::Gather { shape, index },
            None if matches!(s, ShapeOp::Flatten { .. }) && shape.len() == 1 => Op::Flatten,
            None => Op::Reshape(shape),
        };
        self.push(n, op, vec![x])
    }

    /// Which input (0 or 1) of a binary op is a constant tensor, if one is.
    fn constant_operand(&self, n: &QNode) -> Option<usize> {
        (0..2).find(|&i| {
            n.inputs
                .get(i)
                .is_some_and(|&v| self.l.values[v].constant.is_some())
        })
    }

    /// QLinearAdd / QLinearMul with a constant operand of one element: a
    /// 256-entry table over the other input, the row (or column) of ORT's
    /// binary table at the constant's byte. ORT hands its kernel the varying
    /// input as "A" (the role swap), so the table is built in that order.
    fn binary_const(&mut self, n: &QNode, a: &Q, b: &Q, y: &Q) -> Result<()> {
        let c = self.constant_operand(n).expect("checked");
        let v = 1 - c;
        let cv = &self.l.values[n.inputs[c]];
        let t = cv.constant.as_ref().expect("checked");
        let byte = match &t.data {
            super::TensorData::U8(d) if d.len() == 1 => d[0],
            super::TensorData::I8(d) if d.len() == 1 => (d[0] as u8) ^ 0x80,
            _ => {
                return Err(unsupported(
                    at(n),
                    format!(
                        "constant input '{}' of shape {:?}: qfuse takes a constant operand of one uint8/int8 element (as a table); a larger constant is not a qfuse input",
                        cv.name, t.dims
                    ),
                ))
            }
        };
        let (x, info) = self.input(n, v)?;
        let (qa, qb) = if c == 1 { (a, b) } else { (b, a) };
        let qv = self.check_in_q(n, &info, qa)?;
        let qc = qparams(qb).map_err(|e| unsupported(at(n), e.to_string()))?;
        if matches!(t.data, super::TensorData::I8(_)) != qc.signed {
            return Err(unsupported(
                at(n),
                format!(
                    "constant input '{}' is not of its zero point's type",
                    cv.name
                ),
            ));
        }
        if t.dims.len() > info.shape.len() + 1 {
            return Err(unsupported(
                at(n),
                format!(
                    "constant input '{}' of rank {} broadcasts the output beyond its input's rank",
                    cv.name,
                    t.dims.len()
                ),
            ));
        }
        let y = qparams(y).map_err(|e| unsupported(at(n), e.to_string()))?;
        let add = matches!(n.op, QOp::Add { .. });
        // (ORT's "A", ORT's "B"): the varying input is A unless both have
        // one element per sample and ORT keeps the file's order.
        let full_v: Vec<usize> = std::iter::once(1)
            .chain(info.shape.iter().copied())
            .collect();
        let (fa, fb) = if c == 1 {
            (full_v.clone(), t.dims.clone())
        } else {
            (t.dims.clone(), full_v.clone())
        };
        let swap = ort_swaps(&fa, &fb);
        // the varying input plays ORT's A when (c == 1) == !swap
        let v_is_a = (c == 1) != swap;
        let (pa, pb) = if v_is_a { (qv, qc) } else { (qc, qv) };
        let full = if add {
            crate::ops::ort_add_table(pa, pb, y)
        } else {
            crate::ops::ort_mul_table(pa, pb, y)
        };
        let table: Box<[u8; 256]> = Box::new(std::array::from_fn(|x| {
            if v_is_a {
                full[x * 256 + byte as usize]
            } else {
                full[byte as usize * 256 + x]
            }
        }));
        self.push(n, Op::Lut { table, out: y }, vec![x])
    }

    /// A pooling op `op` of NCHW tensors on `x`; an NHWC (`channels_last`)
    /// input is transposed to CHW first and the result back to HWC (bytes
    /// move; the pool computes the same as ORT's NHWC kernel).
    fn pool(
        &mut self,
        n: &QNode,
        x: String,
        info: &TensorInfo,
        channels_last: bool,
        op: Op,
    ) -> Result<()> {
        if !channels_last {
            return self.push(n, op, vec![x]);
        }
        let transpose = |shape: &[usize], perm: &[usize]| -> Result<Op> {
            let (shape, index) = crate::ops::gather::transpose_index(shape, perm)
                .map_err(|e| unsupported(at(n), e.to_string()))?;
            Ok(Op::Gather {
                shape,
                index: std::sync::Arc::new(index),
            })
        };
        if info.shape.len() != 3 {
            return Err(unsupported(
                at(n),
                format!(
                    "an NHWC pool of a tensor of per-sample shape {:?} (not [H, W, C])",
                    info.shape
                ),
            ));
        }
        let chw = self.aux(n, "to_nchw", transpose(&info.shape, &[2, 0, 1])?, vec![x])?;
        let pooled = self.aux(n, "pool", op, vec![chw])?;
        let shape = self.infos[&pooled].shape.clone();
        self.push(n, transpose(&shape, &[1, 2, 0])?, vec![pooled])
    }

    /// The per-sample shape a reshaping shape op (Identity, Flatten, Reshape,
    /// Squeeze, Unsqueeze) gives a tensor of per-sample shape `per`.
    fn reshaped(&self, n: &QNode, per: &[usize], s: &ShapeOp) -> Result<Vec<usize>> {
        let numel: usize = per.iter().product();
        let r = per.len() as i64 + 1;
        Ok(match s {
            ShapeOp::Identity => per.to_vec(),
            ShapeOp::Flatten { axis } => {
                let a = if *axis < 0 { axis + r } else { *axis };
                if a == 1 {
                    vec![numel]
                } else if a >= 2 && a <= r {
                    let a = (a - 1) as usize;
                    let lead: usize = per[..a].iter().product();
                    vec![lead, numel / lead.max(1)]
                } else {
                    return Err(unsupported(
                        at(n),
                        format!("Flatten at axis {axis} (merges the batch)"),
                    ));
                }
            }
            ShapeOp::Reshape { shape, allowzero } => per_sample_reshape(n, per, shape, *allowzero)?,
            ShapeOp::Squeeze { axes } => {
                let mut keep = vec![true; per.len()];
                match axes {
                    None => {
                        for (i, &d) in per.iter().enumerate() {
                            keep[i] = d != 1;
                        }
                    }
                    Some(ax) => {
                        for &a in ax {
                            let a = if a < 0 { a + r } else { a };
                            if a <= 0 || a >= r || per[(a - 1) as usize] != 1 {
                                return Err(unsupported(at(n), format!("Squeeze of axis {a}")));
                            }
                            keep[(a - 1) as usize] = false;
                        }
                    }
                }
                let shape: Vec<usize> = per
                    .iter()
                    .zip(&keep)
                    .filter(|(_, k)| **k)
                    .map(|(d, _)| *d)
                    .collect();
                if shape.is_empty() {
                    vec![1]
                } else {
                    shape
                }
            }
            ShapeOp::Unsqueeze { axes } => {
                let r = (per.len() + axes.len()) as i64 + 1;
                let mut ax: Vec<usize> = Vec::new();
                for &a in axes {
                    let a = if a < 0 { a + r } else { a };
                    if a <= 0 || a >= r {
                        return Err(unsupported(at(n), format!("Unsqueeze at axis {a}")));
                    }
                    ax.push((a - 1) as usize);
                }
                let mut shape = Vec::new();
                let mut it = per.iter();
                for i in 0..per.len() + ax.len() {
                    if ax.contains(&i) {
                        shape.push(1);
                    } else {
                        shape.push(*it.next().expect("counted"));
                    }
                }
                shape
            }
            other => return Err(unsupported(at(n), format!("{other:?} is not a reshape"))),
        })
    }

    /// The float graph input (its qfuse name) and the per-sample shape that
    /// the float shape op `n` reshapes ahead of a QuantizeLinear, if it does.
    fn head_source(&self, n: &QNode, op_type: &str) -> Option<(String, Vec<usize>)> {
        if !FLOAT_HEAD.contains(&op_type) || !feeds_quantize(self.l, *n.outputs.first()?, 0) {
            return None;
        }
        let id = *n.inputs.first()?;
        if let Some(h) = self.head.get(&id) {
            return Some(h.clone());
        }
        if !self.l.inputs.contains(&id) {
            return None;
        }
        let name = self.name.get(&id)?;
        let info = &self.infos[name];
        (info.dtype == DType::F32).then(|| (name.clone(), info.shape.clone()))
    }

    /// A float shape op ahead of a QuantizeLinear (see [`Converter::head`]):
    /// records the reshaped per-sample shape; the QuantizeLinear adds it.
    fn float_head(
        &mut self,
        n: &QNode,
        op_type: &str,
        attrs: &std::collections::BTreeMap<String, super::Attr>,
        (src, per): (String, Vec<usize>),
    ) -> Result<()> {
        use super::Attr;
        let ints_in = |i: usize| -> Option<Vec<i64>> {
            let t = n
                .inputs
                .get(i)
                .and_then(|&v| self.l.values[v].constant.as_ref())?;
            match &t.data {
                super::TensorData::I64(v) => Some(v.clone()),
                _ => None,
            }
        };
        let int = |k: &str, d: i64| match attrs.get(k) {
            Some(Attr::Int(v)) => *v,
            _ => d,
        };
        let ints = |k: &str| match attrs.get(k) {
            Some(Attr::Ints(v)) => Some(v.clone()),
            _ => None,
        };
        let s = match op_type {
            "Flatten" => ShapeOp::Flatten {
                axis: int("axis", 1),
            },
            "Reshape" => ShapeOp::Reshape {
                shape: ints_in(1).ok_or_else(|| {
                    unsupported(at(n), "float Reshape to a shape that is not a constant")
                })?,
                allowzero: int("allowzero", 0) != 0,
            },
            "Squeeze" => ShapeOp::Squeeze {
                axes: ints("axes").or_else(|| ints_in(1)),
            },
            _ => ShapeOp::Unsqueeze {
                axes: ints("axes")
                    .or_else(|| ints_in(1))
                    .ok_or_else(|| unsupported(at(n), "float Unsqueeze without constant axes"))?,
            },
        };
        let shape = self.reshaped(n, &per, &s)?;
        self.head.insert(n.outputs[0], (src, shape));
        Ok(())
    }
}

/// Whether value `id` is read by a QuantizeLinear, directly or through float
/// shape ops (see [`FLOAT_HEAD`]).
fn feeds_quantize(l: &Lowered, id: ValueId, depth: usize) -> bool {
    depth <= 64
        && l.nodes
            .iter()
            .filter(|n| n.inputs.first() == Some(&id))
            .any(|n| match &n.op {
                QOp::Quantize { .. } => true,
                QOp::FloatTail { op_type, .. } if FLOAT_HEAD.contains(&op_type.as_str()) => n
                    .outputs
                    .first()
                    .is_some_and(|&o| feeds_quantize(l, o, depth + 1)),
                _ => false,
            })
}

/// Whether ONNX Runtime swaps the roles of a binary op's inputs (full shapes):
/// its kernel takes the varying input as "A".
fn ort_swaps(sa: &[usize], sb: &[usize]) -> bool {
    let r = sa.len().max(sb.len());
    let pad = |s: &[usize]| {
        let mut v = vec![1; r - s.len()];
        v.extend_from_slice(s);
        v
    };
    let (sa, sb) = (pad(sa), pad(sb));
    let (pa, pb): (usize, usize) = (sa.iter().product(), sb.iter().product());
    if pb == 1 && pa != 1 {
        return false;
    }
    if pa == 1 && pb != 1 {
        return true;
    }
    if sa == sb {
        return false;
    }
    let mut i = r as isize - 1;
    while i >= 0 && sa[i as usize] == sb[i as usize] {
        i -= 1;
    }
    let i = i.max(0) as usize;
    if sb[i..].iter().all(|&d| d == 1) {
        return false;
    }
    sa[i..].iter().all(|&d| d == 1)
}

/// The qparams the readers of value `id` state for it: the first reader that
/// states any, looking through MaxPool and shape ops (which keep their
/// input's qparams) to their readers.
fn stated_by_readers(l: &Lowered, id: ValueId, depth: usize) -> Option<Q> {
    if depth > 64 {
        return None;
    }
    l.nodes
        .iter()
        .filter(|n| n.inputs.contains(&id))
        .find_map(|n| {
            stated_q(n, id).or_else(|| match n.op {
                QOp::MaxPool { .. } | QOp::Shape(_) => {
                    stated_by_readers(l, *n.outputs.first()?, depth + 1)
                }
                _ => None,
            })
        })
}

/// The per-tensor qparams node `n` states for its input value `id`, if any.
fn stated_q(n: &QNode, id: ValueId) -> Option<Q> {
    let i = n.inputs.iter().position(|&v| v == id)?;
    match (&n.op, i) {
        (QOp::Conv { x, .. }, 0) => Some(*x),
        (QOp::MatMul { a, .. } | QOp::Gemm { a, .. }, 0) => Some(*a),
        (QOp::Add { a, .. } | QOp::Mul { a, .. }, 0) => Some(*a),
        (QOp::Add { b, .. } | QOp::Mul { b, .. }, 1) => Some(*b),
        (
            QOp::GlobalAvgPool { x, .. }
            | QOp::AvgPool { x, .. }
            | QOp::Table { x, .. }
            | QOp::ChannelFloat { x, .. }
            | QOp::Softmax { x, .. }
            | QOp::Resize { x, .. },
            0,
        ) => Some(*x),
        (QOp::Concat { inputs, .. }, i) => inputs.get(i).copied(),
        (QOp::Dequantize { x }, 0) if x.axis.is_none() && x.scales.len() == 1 => Some(Q {
            scale: x.scales[0],
            zero_point: x.zero_points[0],
            dtype: match x.dtype {
                super::ElemType::U8 => QType::U8,
                super::ElemType::I8 => QType::I8,
                _ => return None,
            },
        }),
        _ => None,
    }
}

/// The per-sample target of an ONNX Reshape whose dimension 0 is the batch.
fn per_sample_reshape(
    n: &QNode,
    per: &[usize],
    shape: &[i64],
    allowzero: bool,
) -> Result<Vec<usize>> {
    let bad_batch = || {
        unsupported(
            at(n),
            format!("Reshape to {shape:?}: dimension 0 must stay the batch (0 or -1 there)"),
        )
    };
    let (&first, rest) = shape.split_first().ok_or_else(bad_batch)?;
    let numel: usize = per.iter().product();
    match first {
        0 if !allowzero => {}
        -1 if !rest.contains(&-1) => {}
        1 => {} // a model exported at batch 1 states it; it stays the batch
        _ => return Err(bad_batch()),
    }
    let mut out = Vec::with_capacity(rest.len());
    let mut infer = None;
    for (i, &d) in rest.iter().enumerate() {
        match d {
            0 if !allowzero => out.push(*per.get(i).ok_or_else(bad_batch)?),
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            d if d >= 1 => out.push(d as usize),
            _ => return Err(unsupported(at(n), format!("Reshape to {shape:?}"))),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        if known == 0 || !numel.is_multiple_of(known) {
            return Err(unsupported(
                at(n),
                format!("Reshape of {per:?} to {shape:?}"),
            ));
        }
        out[i] = numel / known;
    }
    if out.iter().product::<usize>() != numel {
        return Err(unsupported(
            at(n),
            format!("Reshape of per-sample {per:?} to {shape:?}: the sizes differ"),
        ));
    }
    Ok(out)
}

/// The output qparams and multipliers of a conv/matmul with a quantized output.
fn requant_out<'o>(n: &QNode, out: &'o AccOut) -> Result<(QParams, &'o [f32])> {
    match out {
        AccOut::Requant { y, multipliers } => Ok((
            qparams(y).map_err(|e| unsupported(at(n), e.to_string()))?,
            multipliers,
        )),
        AccOut::Int32 => Err(unsupported(
            at(n),
            "an int32 output (ConvInteger/MatMulInteger): qfuse's layers requantize to 8 bits; these ops come from dynamic quantization (quantize_dynamic: activation qparams computed at run time), which qfuse does not run; quantize the model with quantize_static",
        )),
        AccOut::Float { .. } => Err(unsupported(
            at(n),
            "a float output (QGemm without y_scale): qfuse's layers requantize to 8 bits",
        )),
    }
}

fn per_tensor(q: &QAxis, dtype: QType, at: &str) -> Result<QParams> {
    if q.axis.is_some() || q.scales.len() != 1 {
        return Err(unsupported(at, "per-axis qparams on an activation"));
    }
    qparams(&Q {
        scale: q.scales[0],
        zero_point: q.zero_points[0],
        dtype,
    })
    .map_err(|e| unsupported(at, e.to_string()))
}

fn per_tensor_axis(q: &QAxis, at: &str) -> Result<QParams> {
    let dtype = match q.dtype {
        super::ElemType::U8 => QType::U8,
        super::ElemType::I8 => QType::I8,
        e => {
            return Err(unsupported(
                at,
                format!("{e:?} activations (qfuse takes uint8 and int8)"),
            ))
        }
    };
    per_tensor(q, dtype, at)
}

/// The gather index of a per-axis map over a per-sample shape `per` (`maps[k]`
/// for axis `k`; `None` keeps the axis), with `-1` entries giving `fill`.
fn axis_map_index(
    per: &[usize],
    maps: &[Option<Vec<i64>>],
    fill: u32,
) -> Result<(Vec<usize>, Vec<u32>)> {
    let os: Vec<usize> = per
        .iter()
        .zip(maps)
        .map(|(&d, m)| m.as_ref().map_or(d, Vec::len))
        .collect();
    let total = crate::ops::checked_product("padded tensor", &os)?;
    let mut index = Vec::with_capacity(total);
    let mut o = vec![0usize; os.len()];
    for _ in 0..total {
        let mut flat = Some(0u64);
        for (k, (&ok, &d)) in o.iter().zip(per).enumerate() {
            let i = match &maps[k] {
                Some(m) => u64::try_from(m[ok]).ok().filter(|&i| i < d as u64),
                None => Some(ok as u64),
            };
            flat = flat.zip(i).map(|(f, i)| f * d as u64 + i);
        }
        index.push(match flat {
            Some(f) => u32::try_from(f)
                .ok()
                .filter(|&f| f < crate::ops::gather::FILL)
                .ok_or_else(|| crate::Error::TooLarge {
                    what: "a padded tensor's gather index".into(),
                    needed: f,
                    limit: u64::from(crate::ops::gather::FILL),
                })?,
            None => fill,
        });
        for k in (0..os.len()).rev() {
            o[k] += 1;
            if o[k] < os[k] {
                break;
            }
            o[k] = 0;
        }
    }
    Ok((os, index))
}
