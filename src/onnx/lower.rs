//! From the fused node list (see `fuse.rs`) to [`QOp`] descriptors, with
//! validation (types, qparams, shapes) and the float-op policy: a float op is
//! allowed only at the graph's tail (only graph outputs depend on it); a float
//! convolution/matmul ORT did not fuse, or a float op between quantized ops, is
//! refused with an error naming the node.

use std::collections::{HashMap, HashSet};

use super::fuse::{fuse, WNode, PASS_THROUGH, WEIGHT_AXIS};
use super::graph::{Attr, Dim, OnnxGraph, MS_DOMAIN};
use super::qop::{
    AccOut, BnParams, ChannelFn, ConvGeom, FloatBinOp, PoolGeom, QAxis, QOp, QType, QWeights,
    ShapeOp, TableKind, Q,
};
use super::reference;
use super::tensor::{ElemType, Tensor, TensorData};
use super::{bad, unsupported};
use crate::error::Result;

/// Index of a value in [`Lowered::values`].
pub type ValueId = usize;

/// What a value holds.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueKind {
    /// float32
    Float,
    /// Quantized bytes. `q`: the qparams its producer gives it (a Quantize or a
    /// quantized op's output; per tensor or per axis), None where the model
    /// does not say (a uint8/int8 graph input or constant of a QOperator file).
    Quant {
        /// uint8 or int8
        dtype: QType,
        /// qparams from the producer
        q: Option<QAxis>,
    },
    /// int32 (ConvInteger/MatMulInteger outputs, constants)
    Int32,
    /// int64 (constants, inputs)
    Int64,
}

/// A tensor of the lowered program.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    /// Its name in the ONNX file (or a name the lowering made).
    pub name: String,
    /// Type and qparams.
    pub kind: ValueKind,
    /// Shape, when every dimension is known.
    pub shape: Option<Vec<usize>>,
    /// The data of a constant operand (e.g. a constant input of QLinearAdd).
    pub constant: Option<Tensor>,
}

impl Value {
    /// Per-tensor qparams from the producer, if any.
    pub fn q(&self) -> Option<Q> {
        match &self.kind {
            ValueKind::Quant { dtype, q: Some(qa) } if qa.axis.is_none() => Some(Q {
                scale: qa.scales[0],
                zero_point: qa.zero_points[0],
                dtype: *dtype,
            }),
            _ => None,
        }
    }
}

/// One op of the lowered program.
#[derive(Clone, Debug, PartialEq)]
pub struct QNode {
    /// The ONNX node it comes from (how errors name it).
    pub name: String,
    /// What it computes.
    pub op: QOp,
    /// Input values (see each [`QOp`] variant for their order).
    pub inputs: Vec<ValueId>,
    /// Output values.
    pub outputs: Vec<ValueId>,
    /// The node types ONNX Runtime executes for it (`QLinearConv`, or
    /// `DequantizeLinear HardSigmoid QuantizeLinear` for a float group).
    pub ort_kernels: Vec<String>,
}

/// A lowered ONNX model: ops in topological order over a table of values.
#[derive(Clone, Debug, PartialEq)]
pub struct Lowered {
    /// Every tensor.
    pub values: Vec<Value>,
    /// Graph inputs, in the file's order.
    pub inputs: Vec<ValueId>,
    /// Graph outputs, in the file's order.
    pub outputs: Vec<ValueId>,
    /// The graph outputs' names in the file (a value reached through Identity
    /// keeps its own name in `values`).
    pub output_names: Vec<String>,
    /// The ops, in topological order.
    pub nodes: Vec<QNode>,
}

impl Lowered {
    /// The node types ONNX Runtime runs for this program, sorted, layout
    /// Transposes left out (what `tools/onnx/check_onnx_ops.py` compares).
    pub fn kernel_signature(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .nodes
            .iter()
            .flat_map(|n| n.ort_kernels.iter().cloned())
            .filter(|k| k != "Transpose")
            .collect();
        v.sort();
        v
    }

    /// One line per op: kind, ONNX node, shapes.
    pub fn summary(&self) -> String {
        let shape = |v: ValueId| match &self.values[v].shape {
            Some(s) => format!("{s:?}"),
            None => "?".into(),
        };
        self.nodes
            .iter()
            .map(|n| {
                let ins: Vec<String> = n.inputs.iter().map(|&v| shape(v)).collect();
                let outs: Vec<String> = n.outputs.iter().map(|&v| shape(v)).collect();
                format!(
                    "{:<13} {} {} -> {}  [{}]",
                    n.op.kind(),
                    n.name,
                    ins.join(" "),
                    outs.join(" "),
                    n.ort_kernels.join(" ")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl OnnxGraph {
    /// Make ONNX Runtime's QDQ fusion decisions and lower the graph to quantized
    /// op descriptors. Errors name the node and the problem.
    pub fn lower(&self) -> Result<Lowered> {
        let fused = fuse(self)?;
        let l = Lowerer {
            g: self,
            extra: fused.extra,
            folded: HashMap::new(),
            nodes: fused.nodes,
            values: Vec::new(),
            ids: HashMap::new(),
            out: Vec::new(),
            gout: self.outputs.iter().map(|o| o.name.clone()).collect(),
            consumers: HashMap::new(),
            tail: Vec::new(),
            reaches_q: Vec::new(),
            float_head: HashSet::new(),
            float_pad: false,
        };
        l.run()
    }
}

/// Float ops that may run after readback at the graph's tail.
const FLOAT_TAIL: [&str; 17] = [
    "Relu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "Tanh",
    "Softmax",
    "LogSoftmax",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Flatten",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "ArgMax",
];

struct Lowerer<'a> {
    g: &'a OnnxGraph,
    extra: HashMap<String, Tensor>,
    folded: HashMap<String, Tensor>,
    nodes: Vec<WNode>,
    values: Vec<Value>,
    ids: HashMap<String, ValueId>,
    out: Vec<QNode>,
    gout: HashSet<String>,
    consumers: HashMap<String, Vec<usize>>,
    tail: Vec<bool>,
    reaches_q: Vec<bool>,
    /// Float values a graph input becomes through shape ops only (a Flatten
    /// or Reshape `quantize_static` leaves in front of the first
    /// QuantizeLinear): the converter moves these shape ops after the
    /// (elementwise) QuantizeLinear.
    float_head: HashSet<String>,
    /// A Pad being lowered is the float Pad of a `DQ -> Pad -> Q` group
    /// (its constant_value is a float).
    float_pad: bool,
}

/// Float shape ops that may read a float graph input ahead of its
/// QuantizeLinear (see `Lowerer::float_head`).
const FLOAT_HEAD: [&str; 4] = ["Flatten", "Reshape", "Squeeze", "Unsqueeze"];

fn qtype(e: ElemType) -> Option<QType> {
    match e {
        ElemType::U8 => Some(QType::U8),
        ElemType::I8 => Some(QType::I8),
        _ => None,
    }
}

fn elem_of(t: QType) -> ElemType {
    match t {
        QType::U8 => ElemType::U8,
        QType::I8 => ElemType::I8,
    }
}

fn kind_of(e: ElemType) -> ValueKind {
    match e {
        ElemType::F32 => ValueKind::Float,
        ElemType::U8 => ValueKind::Quant {
            dtype: QType::U8,
            q: None,
        },
        ElemType::I8 => ValueKind::Quant {
            dtype: QType::I8,
            q: None,
        },
        ElemType::I32 => ValueKind::Int32,
        ElemType::I64 => ValueKind::Int64,
    }
}

fn per_tensor(q: Q) -> QAxis {
    QAxis {
        scales: vec![q.scale],
        zero_points: vec![q.zero_point],
        axis: None,
        dtype: elem_of(q.dtype),
    }
}

fn k(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

impl<'a> Lowerer<'a> {
    fn konst(&self, name: &str) -> Option<&Tensor> {
        self.folded
            .get(name)
            .or_else(|| self.extra.get(name))
            .or_else(|| self.g.initializers.get(name))
    }

    fn run(mut self) -> Result<Lowered> {
        for (i, n) in self.nodes.iter().enumerate() {
            for inp in n.inputs.iter().filter(|s| !s.is_empty()) {
                let v = self.consumers.entry(inp.clone()).or_default();
                if v.last() != Some(&i) {
                    v.push(i);
                }
            }
        }
        let mut inputs = Vec::new();
        for vi in &self.g.inputs {
            let e = vi.elem()?;
            let shape = vi.known_shape();
            if let Some(s) = &shape {
                let at = format!("graph input '{}'", vi.name);
                super::tensor::checked_count(s, &at)?;
            }
            if e == ElemType::F32 {
                self.float_head.insert(vi.name.clone());
            }
            let id = self.push_value(&vi.name, kind_of(e), shape, None);
            inputs.push(id);
        }
        self.mark_tail();
        let absorbed = self.find_tables();
        for i in 0..self.nodes.len() {
            if absorbed.contains_key(&i) {
                continue;
            }
            self.lower_node(i, &absorbed)?;
        }
        let mut outputs = Vec::new();
        for o in &self.g.outputs {
            let id = match self.ids.get(&o.name) {
                Some(&id) => id,
                None => {
                    return Err(unsupported(
                        format!("graph output '{}'", o.name),
                        "a constant graph output",
                    ))
                }
            };
            outputs.push(id);
        }
        Ok(Lowered {
            output_names: self.g.outputs.iter().map(|o| o.name.clone()).collect(),
            values: self.values,
            inputs,
            outputs,
            nodes: self.out,
        })
    }

    // ------------------------------------------------------------ values

    fn push_value(
        &mut self,
        name: &str,
        kind: ValueKind,
        shape: Option<Vec<usize>>,
        constant: Option<Tensor>,
    ) -> ValueId {
        let id = self.values.len();
        self.values.push(Value {
            name: name.to_string(),
            kind,
            shape,
            constant,
        });
        self.ids.insert(name.to_string(), id);
        id
    }

    /// The value named `name` (a constant becomes a constant value).
    fn value(&mut self, name: Option<&str>, at: &str, what: &str) -> Result<ValueId> {
        let name = name.ok_or_else(|| bad(at, format!("{what} is missing")))?;
        if let Some(&id) = self.ids.get(name) {
            return Ok(id);
        }
        if let Some(t) = self.konst(name).cloned() {
            let kind = kind_of(t.elem_type());
            let shape = Some(t.dims.clone());
            return Ok(self.push_value(name, kind, shape, Some(t)));
        }
        Err(bad(
            at,
            format!("{what} '{name}' is used before any node produces it"),
        ))
    }

    /// A new output value; its shape is checked against the shape the model
    /// declares for it (graph output or value_info), where both are known.
    fn output(
        &mut self,
        name: &str,
        kind: ValueKind,
        shape: Option<Vec<usize>>,
        at: &str,
    ) -> Result<ValueId> {
        let declared = self
            .g
            .value_info
            .get(name)
            .or_else(|| self.g.outputs.iter().find(|o| o.name == name));
        if let (Some(decl), Some(shape)) = (declared.and_then(|d| d.shape.as_ref()), &shape) {
            let agrees = decl.len() == shape.len()
                && decl.iter().zip(shape).all(|(d, &s)| match d {
                    Dim::Known(n) => *n == s,
                    _ => true,
                });
            if !agrees {
                let decl: Vec<String> = decl
                    .iter()
                    .map(|d| match d {
                        Dim::Known(n) => n.to_string(),
                        Dim::Param(p) => p.clone(),
                        Dim::Unknown => "?".into(),
                    })
                    .collect();
                return Err(bad(
                    at,
                    format!(
                        "output '{name}' has shape {shape:?} from its inputs but the model \
                         declares [{}]",
                        decl.join(", ")
                    ),
                ));
            }
        }
        Ok(self.push_value(name, kind, shape, None))
    }

    fn shape(&self, v: ValueId) -> Option<Vec<usize>> {
        self.values[v].shape.clone()
    }

    /// The quantized type of value `v`, or an error saying it is not quantized.
    fn quant(&self, v: ValueId, at: &str, what: &str) -> Result<QType> {
        match &self.values[v].kind {
            ValueKind::Quant { dtype, .. } => Ok(*dtype),
            k => Err(bad(
                at,
                format!(
                    "{what} '{}' is {} but this op reads uint8/int8",
                    self.values[v].name,
                    kind_name(k)
                ),
            )),
        }
    }

    // ------------------------------------------------------------ constants

    fn f32_scalar(&self, name: Option<&str>, at: &str, what: &str) -> Result<f32> {
        let name = name.ok_or_else(|| bad(at, format!("{what} is missing")))?;
        let t = self.konst(name).ok_or_else(|| {
            unsupported(at, format!("{what} '{name}' is not a constant initializer"))
        })?;
        let v = match &t.data {
            TensorData::F32(v) => v,
            d => {
                return Err(bad(
                    at,
                    format!("{what} '{name}' is {}, not float", d.elem_type().name()),
                ))
            }
        };
        if v.len() != 1 {
            return Err(unsupported(
                at,
                format!(
                    "{what} '{name}' has {} values; one (per tensor) expected",
                    v.len()
                ),
            ));
        }
        check_scale(v[0], at, what)?;
        Ok(v[0])
    }

    /// A scalar zero point of type `ty` (0 when absent).
    fn zp_scalar(&self, name: Option<&str>, ty: ElemType, at: &str, what: &str) -> Result<i32> {
        let Some(name) = name else { return Ok(0) };
        let t = self.konst(name).ok_or_else(|| {
            unsupported(at, format!("{what} '{name}' is not a constant initializer"))
        })?;
        if t.elem_type() != ty {
            return Err(bad(
                at,
                format!(
                    "{what} '{name}' is {} but the tensor it belongs to is {}",
                    t.elem_type().name(),
                    ty.name()
                ),
            ));
        }
        if t.len() != 1 {
            return Err(unsupported(
                at,
                format!(
                    "{what} '{name}' has {} values; one (per tensor) expected",
                    t.len()
                ),
            ));
        }
        Ok(t.data.to_i64().map(|v| v[0] as i32).unwrap_or(0))
    }

    fn q_of(
        &self,
        scale: Option<&str>,
        zp: Option<&str>,
        ty: QType,
        at: &str,
        what: &str,
    ) -> Result<Q> {
        Ok(Q {
            scale: self.f32_scalar(scale, at, &format!("{what} scale"))?,
            zero_point: self.zp_scalar(zp, elem_of(ty), at, &format!("{what} zero point"))?,
            dtype: ty,
        })
    }

    /// The type an output zero point gives (the input type when absent);
    /// ORT's kernels want it equal to the input type.
    fn out_type(&self, zp: Option<&str>, in_ty: QType, at: &str) -> Result<QType> {
        let Some(z) = zp else { return Ok(in_ty) };
        let t = self
            .konst(z)
            .ok_or_else(|| unsupported(at, format!("output zero point '{z}' is not a constant")))?;
        let ty = qtype(t.elem_type()).ok_or_else(|| {
            unsupported(
                at,
                format!("output zero point of type {}", t.elem_type().name()),
            )
        })?;
        if ty != in_ty {
            return Err(unsupported(
                at,
                format!(
                    "output type {} differs from the input type {} (ONNX Runtime's kernel \
                     takes one type)",
                    elem_of(ty).name(),
                    elem_of(in_ty).name()
                ),
            ));
        }
        Ok(ty)
    }

    /// Constant weights with their scales and zero points; `out_axis` is the
    /// output-channel axis of the file's layout (0 for conv, 1 for MatMul's
    /// `[K, N]`). Returned in the file's layout.
    fn weights(
        &self,
        w: Option<&str>,
        ws: Option<&str>,
        wz: Option<&str>,
        out_axis: usize,
        at: &str,
    ) -> Result<QWeights> {
        let wname = w.ok_or_else(|| bad(at, "the weight input is missing"))?;
        let wt = self.konst(wname).ok_or_else(|| {
            unsupported(
                at,
                format!(
                    "weight '{wname}' is not a constant initializer (a product of two \
                     activations is not supported)"
                ),
            )
        })?;
        let shape = wt.dims.clone();
        let n_out = *shape
            .get(out_axis)
            .ok_or_else(|| bad(at, format!("weight '{wname}' has rank {}", shape.len())))?;
        let scales: Vec<f32> = match ws {
            None => vec![1.0],
            Some(sn) => match self.konst(sn).map(|t| &t.data) {
                Some(TensorData::F32(v)) => v.clone(),
                Some(d) => {
                    return Err(bad(
                        at,
                        format!("weight scale '{sn}' is {}, not float", d.elem_type().name()),
                    ))
                }
                None => {
                    return Err(unsupported(
                        at,
                        format!("weight scale '{sn}' is not a constant initializer"),
                    ))
                }
            },
        };
        if scales.len() != 1 && scales.len() != n_out {
            return Err(bad(
                at,
                format!("{} weight scales for {n_out} output channels", scales.len()),
            ));
        }
        for &sc in &scales {
            check_scale(sc, at, "weight scale")?;
        }
        let zps: Vec<i64> = match wz {
            None => vec![0],
            Some(zn) => {
                let t = self.konst(zn).ok_or_else(|| {
                    unsupported(at, format!("weight zero point '{zn}' is not a constant"))
                })?;
                if t.elem_type() != wt.elem_type() {
                    return Err(bad(
                        at,
                        format!(
                            "weight zero point is {} but the weight is {}",
                            t.elem_type().name(),
                            wt.elem_type().name()
                        ),
                    ));
                }
                t.data.to_i64().unwrap_or_default()
            }
        };
        if zps.is_empty() || (zps.len() != 1 && zps.len() != n_out) {
            return Err(bad(
                at,
                format!(
                    "{} weight zero points for {n_out} output channels",
                    zps.len()
                ),
            ));
        }
        let (data, zero_points) = match &wt.data {
            TensorData::I8(v) => (v.clone(), zps.iter().map(|&z| z as i32).collect()),
            TensorData::U8(v) => {
                if zps.iter().any(|&z| z != 128) {
                    let z: Vec<i64> = zps.iter().copied().take(4).collect();
                    return Err(unsupported(
                        at,
                        format!(
                            "uint8 weights with zero point {z:?} (not 128): qfuse takes int8 \
                             weights (quantize_static weight_type=QInt8); uint8 weights only \
                             with zero point 128, which are int8 weights with zero point 0"
                        ),
                    ));
                }
                (
                    v.iter().map(|&x| (x as i32 - 128) as i8).collect(),
                    vec![0; zps.len()],
                )
            }
            d => {
                return Err(unsupported(
                    at,
                    format!("weights of type {}", d.elem_type().name()),
                ))
            }
        };
        Ok(QWeights {
            data,
            shape,
            scales,
            zero_points,
        })
    }

    /// An int32 bias of `n` values (per output channel); `[1, n]` and a
    /// single value (broadcast) are accepted for Gemm's C.
    fn bias(&self, name: Option<&str>, n: usize, gemm: bool, at: &str) -> Result<Option<Vec<i32>>> {
        let Some(b) = name else { return Ok(None) };
        let t = self
            .konst(b)
            .ok_or_else(|| unsupported(at, format!("bias '{b}' is not a constant initializer")))?;
        let v = t.as_i32().ok_or_else(|| {
            bad(
                at,
                format!("bias '{b}' is {}, not int32", t.elem_type().name()),
            )
        })?;
        let ok_shape = t.dims == [n] || (gemm && t.dims == [1, n]);
        if ok_shape {
            return Ok(Some(v.to_vec()));
        }
        if gemm && v.len() == 1 {
            return Ok(Some(vec![v[0]; n]));
        }
        Err(if gemm && t.dims.len() == 2 {
            unsupported(
                at,
                format!(
                    "C of shape {:?}; qfuse takes a bias per output column ([{n}])",
                    t.dims
                ),
            )
        } else {
            bad(
                at,
                format!(
                    "bias '{b}' has shape {:?} but there are {n} output channels",
                    t.dims
                ),
            )
        })
    }

    fn ints_const(&self, name: Option<&str>, at: &str, what: &str) -> Result<Option<Vec<i64>>> {
        let Some(n) = name else { return Ok(None) };
        let t = self.konst(n).ok_or_else(|| {
            unsupported(at, format!("{what} '{n}' is not a constant initializer"))
        })?;
        match &t.data {
            TensorData::I64(v) => Ok(Some(v.clone())),
            TensorData::I32(v) => Ok(Some(v.iter().map(|&x| x as i64).collect())),
            d => Err(bad(
                at,
                format!(
                    "{what} '{n}' is {}, not an integer tensor",
                    d.elem_type().name()
                ),
            )),
        }
    }

    /// QuantizeLinear / DequantizeLinear qparams (per tensor or per axis).
    fn qaxis(
        &self,
        n: &WNode,
        rank: Option<usize>,
        is_q: bool,
        in_elem: Option<ElemType>,
    ) -> Result<QAxis> {
        let at = n.origin.as_str();
        if let Some(Attr::Int(b)) = n.attrs.get("block_size") {
            if *b != 0 {
                return Err(unsupported(at, "blocked quantization (block_size)"));
            }
        }
        let sname = n
            .input(1)
            .ok_or_else(|| bad(at, "the scale input is missing"))?;
        let st = self.konst(sname).ok_or_else(|| {
            unsupported(at, format!("scale '{sname}' is not a constant initializer"))
        })?;
        let scales = st.as_f32().ok_or_else(|| {
            bad(
                at,
                format!("scale '{sname}' is {}, not float", st.elem_type().name()),
            )
        })?;
        if st.dims.len() > 1 || scales.is_empty() {
            return Err(bad(
                at,
                format!("scale of shape {:?}: a scalar or 1-D expected", st.dims),
            ));
        }
        for &sc in scales {
            check_scale(sc, at, "scale")?;
        }
        let (zps, dtype): (Vec<i64>, ElemType) = match n.input(2) {
            Some(z) => {
                let t = self.konst(z).ok_or_else(|| {
                    unsupported(
                        at,
                        format!("zero point '{z}' is not a constant initializer"),
                    )
                })?;
                // equal shapes, or one value each ([] against [1], which ORT accepts)
                if t.dims != st.dims && !(t.len() == 1 && scales.len() == 1) {
                    return Err(bad(
                        at,
                        format!(
                            "zero point shape {:?} differs from scale shape {:?}",
                            t.dims, st.dims
                        ),
                    ));
                }
                (t.data.to_i64().unwrap_or_default(), t.elem_type())
            }
            None => {
                let ty = if is_q {
                    match n.attrs.get("output_dtype") {
                        None | Some(Attr::Int(0)) | Some(Attr::Int(2)) => ElemType::U8,
                        Some(Attr::Int(3)) => ElemType::I8,
                        Some(a) => {
                            return Err(unsupported(at, format!("output_dtype {a:?}")));
                        }
                    }
                } else {
                    in_elem.unwrap_or(ElemType::U8)
                };
                (vec![0; scales.len()], ty)
            }
        };
        let dtype_ok = match dtype {
            ElemType::U8 | ElemType::I8 => true,
            ElemType::I32 => !is_q,
            _ => false,
        };
        if !dtype_ok {
            return Err(unsupported(
                at,
                format!("quantized type {} (uint8 and int8 supported)", dtype.name()),
            ));
        }
        if dtype == ElemType::I32 && zps.iter().any(|&z| z != 0) {
            return Err(bad(at, "int32 DequantizeLinear with a non-zero zero point"));
        }
        if zps.len() != scales.len() {
            return Err(bad(at, "zero point and scale lengths differ"));
        }
        let axis = if st.dims.len() == 1 && scales.len() > 1 {
            let a = n.attrs.get("axis").map_or(Ok(1), |a| match a {
                Attr::Int(v) => Ok(*v),
                _ => Err(bad(at, "attribute axis is not an integer")),
            })?;
            let a = match rank {
                Some(r) => norm_axis(a, r, at)?,
                None if a >= 0 => a as usize,
                None => {
                    return Err(unsupported(
                        at,
                        "a negative quantization axis on a tensor of unknown rank",
                    ))
                }
            };
            Some(a)
        } else {
            None
        };
        Ok(QAxis {
            scales: scales.to_vec(),
            zero_points: zps.iter().map(|&z| z as i32).collect(),
            axis,
            dtype,
        })
    }

    // ------------------------------------------------------------ patterns

    /// DQ -> (Relu | HardSigmoid | Sigmoid)? -> Q groups ORT runs in float that
    /// are functions of the input byte: lowered as tables. Returns the nodes
    /// absorbed into a table, keyed by index, with the DQ index that starts it.
    fn find_tables(&mut self) -> HashMap<usize, usize> {
        let mut absorbed = HashMap::new();
        for d in 0..self.nodes.len() {
            let dq = &self.nodes[d];
            if !(dq.op == "DequantizeLinear" && dq.domain.is_empty()) {
                continue;
            }
            if dq.input(0).is_none_or(|x| self.konst(x).is_some()) {
                continue;
            }
            let single = |name: &str| -> Option<usize> {
                if self.gout.contains(name) {
                    return None;
                }
                match self.consumers.get(name).map(Vec::as_slice) {
                    Some([c]) => Some(*c),
                    _ => None,
                }
            };
            let Some(c) = single(&dq.outputs[0]) else {
                continue;
            };
            let cn = &self.nodes[c];
            let is_q = |n: &WNode| n.op == "QuantizeLinear" && n.domain.is_empty();
            let mut relu_after_bn = None;
            let (f, q) = if is_q(cn) {
                (None, c)
            } else if cn.domain.is_empty() && self.channel_fn(cn, &dq.outputs[0], None).is_some() {
                // DQ -> BatchNormalization or Add/Sub/Mul/Div with a per-channel constant
                // (-> Relu) -> Q: per channel a function of the byte
                match single(&cn.outputs[0]) {
                    Some(q) if is_q(&self.nodes[q]) => (Some(c), q),
                    Some(r)
                        if self.nodes[r].op == "Relu"
                            && self.nodes[r].domain.is_empty()
                            && self.nodes[r].input(0) == Some(cn.outputs[0].as_str()) =>
                    {
                        match single(&self.nodes[r].outputs[0]) {
                            Some(q) if is_q(&self.nodes[q]) => {
                                relu_after_bn = Some(r);
                                (Some(c), q)
                            }
                            _ => continue,
                        }
                    }
                    _ => continue,
                }
            } else if cn.domain.is_empty()
                && (matches!(cn.op.as_str(), "Relu" | "HardSigmoid" | "Sigmoid")
                    || PASS_THROUGH.contains(&cn.op.as_str())
                    || cn.op == "Pad")
                && cn.input(0) == Some(dq.outputs[0].as_str())
            {
                match single(&cn.outputs[0]) {
                    Some(q) if is_q(&self.nodes[q]) => (Some(c), q),
                    _ => continue,
                }
            } else {
                continue;
            };
            let per_tensor = |n: &WNode| {
                n.input(1)
                    .and_then(|s| self.konst(s))
                    .is_some_and(|t| t.len() == 1)
                    && n.input(2)
                        .is_none_or(|z| self.konst(z).is_some_and(|t| t.len() == 1))
            };
            if !per_tensor(dq) || !per_tensor(&self.nodes[q]) {
                continue;
            }
            if let Some(f) = f {
                absorbed.insert(f, d);
            }
            if let Some(r) = relu_after_bn {
                absorbed.insert(r, d);
            }
            absorbed.insert(q, d);
        }
        absorbed
    }

    /// For every node: true if it is a float op that may run at the tail (only
    /// such ops depend on it). The fused nodes are in topological order, so one
    /// pass from the end decides (no recursion).
    fn mark_tail(&mut self) {
        let mut tail = vec![false; self.nodes.len()];
        for i in (0..self.nodes.len()).rev() {
            let n = &self.nodes[i];
            tail[i] = n.domain.is_empty()
                && FLOAT_TAIL.contains(&n.op.as_str())
                && n.outputs.iter().all(|o| {
                    self.consumers
                        .get(o)
                        .is_none_or(|cs| cs.iter().all(|&c| c > i && tail[c]))
                });
        }
        self.tail = tail;
        let mut reaches_q = vec![false; self.nodes.len()];
        for i in (0..self.nodes.len()).rev() {
            reaches_q[i] = self.nodes[i].outputs.iter().any(|o| {
                self.consumers.get(o).is_some_and(|cs| {
                    cs.iter()
                        .any(|&c| c <= i || reaches_q[c] || self.nodes[c].op == "QuantizeLinear")
                })
            });
        }
        self.reaches_q = reaches_q;
    }

    // ------------------------------------------------------------ nodes

    fn emit(
        &mut self,
        n: &WNode,
        op: QOp,
        inputs: Vec<ValueId>,
        outputs: Vec<ValueId>,
        kernels: Vec<String>,
    ) {
        self.out.push(QNode {
            name: n.origin.clone(),
            op,
            inputs,
            outputs,
            ort_kernels: kernels,
        });
    }

    fn lower_node(&mut self, i: usize, absorbed: &HashMap<usize, usize>) -> Result<()> {
        let n = self.nodes[i].clone();
        let at = n.origin.clone();
        let at = at.as_str();
        if n.outputs.iter().skip(1).any(|o| !o.is_empty())
            && !matches!(n.op.as_str(), "MaxPool" | "Split")
        {
            // only MaxPool's optional Indices is checked below; others have one output
            if n.domain.is_empty() && !FLOAT_TAIL.contains(&n.op.as_str()) {
                return Err(unsupported(at, "a node with several outputs"));
            }
        }
        let out0 = n.outputs[0].clone();
        match (n.domain.as_str(), n.op.as_str()) {
            ("", "QuantizeLinear") => {
                let x = self.value(n.input(0), at, "input")?;
                if self.values[x].kind != ValueKind::Float {
                    return Err(bad(at, format!("input is {}, not float", kind_name(&self.values[x].kind))));
                }
                let shape = self.shape(x);
                let y = self.qaxis(&n, shape.as_ref().map(Vec::len), true, None)?;
                check_axis_len(&y, &shape, at)?;
                let dtype = qtype(y.dtype).unwrap_or(QType::U8);
                let kind = ValueKind::Quant {
                    dtype,
                    q: Some(y.clone()),
                };
                if let Some(c) = self.values[x].constant.clone() {
                    let t = reference::quantize(&c, &y)?;
                    self.folded.insert(out0, t);
                    return Ok(());
                }
                let o = self.output(&out0, kind, shape, at)?;
                self.emit(&n, QOp::Quantize { y }, vec![x], vec![o], k(&["QuantizeLinear"]));
            }
            ("", "DequantizeLinear") => {
                let x = self.value(n.input(0), at, "input")?;
                let in_elem = match &self.values[x].kind {
                    ValueKind::Quant { dtype, .. } => elem_of(*dtype),
                    ValueKind::Int32 => ElemType::I32,
                    k => return Err(bad(at, format!("input is {}, not a quantized type", kind_name(k)))),
                };
                let shape = self.shape(x);
                let xq = self.qaxis(&n, shape.as_ref().map(Vec::len), false, Some(in_elem))?;
                if xq.dtype != in_elem {
                    return Err(bad(
                        at,
                        format!("zero point is {} but the input is {}", xq.dtype.name(), in_elem.name()),
                    ));
                }
                check_axis_len(&xq, &shape, at)?;
                if let Some(c) = self.values[x].constant.clone() {
                    let t = reference::dequantize(&c, &xq)?;
                    self.folded.insert(out0, t);
                    return Ok(());
                }
                if absorbed.values().any(|&d| d == i) {
                    return self.table(i, absorbed, x, xq);
                }
                let o = self.output(&out0, ValueKind::Float, shape, at)?;
                self.emit(&n, QOp::Dequantize { x: xq }, vec![x], vec![o], k(&["DequantizeLinear"]));
            }
            ("" | MS_DOMAIN, "QLinearConv") => self.conv(&n, false)?,
            ("", "ConvInteger") => self.conv(&n, true)?,
            ("", "QLinearMatMul") => self.matmul(&n, false)?,
            ("", "MatMulInteger") => self.matmul(&n, true)?,
            (MS_DOMAIN, "QGemm") => self.gemm(&n)?,
            (MS_DOMAIN, "QLinearAdd" | "QLinearMul") => self.binary(&n)?,
            (MS_DOMAIN, "QLinearGlobalAveragePool" | "QLinearAveragePool") => self.avgpool(&n)?,
            (MS_DOMAIN, "QLinearConcat") => self.concat(&n)?,
            (MS_DOMAIN, "QLinearSigmoid" | "QLinearLeakyRelu" | "QLinearSoftmax") => self.unary(&n)?,
            ("", "Identity") => {
                let x = self.value(n.input(0), at, "input")?;
                self.ids.insert(out0, x);
            }
            ("", "Resize")
                if self.is_quant_input(&n)
                    && attr_s(&n, "mode", "nearest").map_or(true, |m| m != "nearest") =>
            {
                self.resize_on_bytes(&n)?
            }
            ("", op) if (PASS_THROUGH.contains(&op)) && self.is_quant_input(&n) => {
                if op == "MaxPool" {
                    self.maxpool(&n)?
                } else {
                    self.shape_op(&n)?
                }
            }
            ("", "Split") if self.is_quant_input(&n) => self.split_op(&n)?,
            ("", op @ ("Conv" | "MatMul" | "Gemm")) => {
                return Err(unsupported(
                    at,
                    format!("ORT runs this {op} in float; not supported ({})", self.float_reason(i)),
                ))
            }
            ("", op @ ("Resize" | "Split" | "Expand" | "Tile" | "GatherElements" | "Pad"))
                if !self.tail[i] =>
            {
                return Err(unsupported(
                    at,
                    format!(
                        "{op} in a quantized graph is not supported (ORT runs it on the \
                         quantized values or in float depending on its qparams; no vectors \
                         cover it)"
                    ),
                ))
            }
            ("", op) if FLOAT_TAIL.contains(&op) || KNOWN_FLOAT.contains(&op) => {
                let head = !self.tail[i]
                    && FLOAT_HEAD.contains(&op)
                    && n.input(0).is_some_and(|x| self.float_head.contains(x));
                if head {
                    self.float_head.insert(out0.clone());
                }
                if !self.tail[i] && !head {
                    return Err(unsupported(
                        at,
                        if self.reaches_q[i] {
                            format!(
                                "ORT runs this {op} in float between quantized ops (it is not \
                                 part of a quantized pattern); only float ops at the graph's \
                                 tail are run (on the CPU after readback): a float result \
                                 that is quantized again depends on ORT's float kernel \
                                 (summation order, vectorized math), which qfuse does not \
                                 reproduce bit for bit"
                            )
                        } else {
                            format!(
                                "float {op} at the graph's tail: qfuse runs only {} there",
                                FLOAT_TAIL.join(", ")
                            )
                        },
                    ));
                }
                let mut ins = Vec::new();
                for (j, name) in n.inputs.iter().enumerate() {
                    if name.is_empty() {
                        continue;
                    }
                    let v = self.value(Some(name), at, "input")?;
                    if matches!(self.values[v].kind, ValueKind::Quant { .. }) && j == 0 {
                        return Err(unsupported(
                            at,
                            format!("float {op} at the graph's tail reads quantized bytes"),
                        ));
                    }
                    ins.push(v);
                }
                let mut outs = Vec::new();
                for o in n.outputs.iter().filter(|o| !o.is_empty()) {
                    let kind = if op == "ArgMax" { ValueKind::Int64 } else { ValueKind::Float };
                    outs.push(self.output(o, kind, None, at)?);
                }
                let op_type = op.to_string();
                self.emit(
                    &n,
                    QOp::FloatTail {
                        op_type: op_type.clone(),
                        attrs: n.attrs.clone(),
                    },
                    ins,
                    outs,
                    vec![op_type],
                );
            }
            ("", op) => {
                return Err(unsupported(
                    at,
                    format!("operator {op} is not supported (not an op of quantized ONNX models qfuse reads)"),
                ))
            }
            (d, op) => {
                return Err(unsupported(at, format!("operator {d}::{op} is not supported")))
            }
        }
        Ok(())
    }

    fn is_quant_input(&mut self, n: &WNode) -> bool {
        match n.input(0) {
            Some(x) => match self.value(Some(x), "", "") {
                Ok(v) => matches!(self.values[v].kind, ValueKind::Quant { .. }),
                Err(_) => false,
            },
            None => false,
        }
    }

    /// Why ORT left the Conv/MatMul/Gemm at node `i` in float.
    fn float_reason(&self, i: usize) -> String {
        let n = &self.nodes[i];
        let producer = |name: Option<&str>| -> Option<&WNode> {
            let name = name?;
            self.nodes
                .iter()
                .find(|m| m.outputs.iter().any(|o| o == name))
        };
        let dq = |k: usize| producer(n.input(k)).filter(|p| p.op == "DequantizeLinear");
        let (Some(dx), Some(_dw)) = (dq(0), dq(1)) else {
            return "its inputs are not DequantizeLinear outputs".into();
        };
        let zp_ty = |m: &WNode| {
            m.input(2)
                .and_then(|z| self.konst(z))
                .map(|t| t.elem_type())
        };
        if zp_ty(dx) == Some(ElemType::I8) {
            return "int8 activations: ORT on x86-64 fuses Conv/MatMul with uint8 activations \
                    only, and turns an int8 QuantizeLinear -> DequantizeLinear pair into uint8 \
                    only when the QuantizeLinear has a single consumer"
                .into();
        }
        let cs = self
            .consumers
            .get(&n.outputs[0])
            .cloned()
            .unwrap_or_default();
        if let [c] = cs.as_slice() {
            let c = &self.nodes[*c];
            if matches!(c.op.as_str(), "Relu" | "Clip") {
                return format!(
                    "its {} is not absorbed by the QuantizeLinear (zero point not the type's \
                     minimum, or the clip range narrower than the quantized range), so ORT \
                     runs the convolution and the {} in float (FusedConv)",
                    c.op, c.op
                );
            }
            if c.op == "QuantizeLinear" {
                if zp_ty(c) == Some(ElemType::I8) {
                    return "int8 output: its QuantizeLinear feeds several nodes, so ORT keeps \
                            it int8, and on x86-64 ORT fuses Conv/MatMul with uint8 activations \
                            only"
                        .into();
                }
                return "not fused by ORT (bias not int32, or weight type)".into();
            }
        }
        "its output is not read by exactly one QuantizeLinear".into()
    }

    /// The values of a constant f32 tensor, or of a DequantizeLinear of a
    /// constant (`quantize_static` quantizes BatchNormalization's scale and
    /// bias: ORT computes `f32(q - zp) * s` for them, as here).
    fn const_f32(&self, name: &str) -> Option<Vec<f32>> {
        if let Some(t) = self.konst(name) {
            return match &t.data {
                TensorData::F32(v) => Some(v.clone()),
                _ => None,
            };
        }
        let p = self.nodes.iter().find(|n| {
            n.domain.is_empty()
                && n.op == "DequantizeLinear"
                && n.outputs.first().map(String::as_str) == Some(name)
        })?;
        let c = self.konst(p.input(0)?)?;
        let xq = self
            .qaxis(p, Some(c.dims.len()), false, Some(c.elem_type()))
            .ok()?;
        match reference::dequantize(c, &xq).ok()?.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The constant parameters of an inference `BatchNormalization` reading
    /// `input` (one output, `training_mode` 0, four constant f32 vectors of one
    /// length), or None.
    fn bn_params(&self, n: &WNode, input: &str) -> Option<BnParams> {
        if n.input(0) != Some(input)
            || n.outputs.iter().skip(1).any(|o| !o.is_empty())
            || matches!(n.attrs.get("training_mode"), Some(Attr::Int(v)) if *v != 0)
        {
            return None;
        }
        let f = |i: usize| self.const_f32(n.input(i)?);
        let p = BnParams {
            scale: f(1)?,
            bias: f(2)?,
            mean: f(3)?,
            var: f(4)?,
        };
        let c = p.scale.len();
        (c > 0 && [&p.bias, &p.mean, &p.var].iter().all(|v| v.len() == c)).then_some(p)
    }

    /// The float per-channel function of `n` reading `input` (the output of
    /// a DequantizeLinear): an inference `BatchNormalization`, or
    /// `Add`/`Sub`/`Mul`/`Div` whose other operand is a constant f32 tensor of
    /// one value or one per channel (every dimension 1 but the channel dim 1,
    /// right-aligned against the input's rank `rank`; unknown: at most one
    /// dimension above 1), or None.
    fn channel_fn(&self, n: &WNode, input: &str, rank: Option<usize>) -> Option<ChannelFn> {
        if !n.domain.is_empty() {
            return None;
        }
        if n.op == "BatchNormalization" {
            let params = self.bn_params(n, input)?;
            let eps = attr_f(n, "epsilon", 1e-5).ok()?;
            return Some(ChannelFn::BatchNorm { params, eps });
        }
        let op = match n.op.as_str() {
            "Add" => FloatBinOp::Add,
            "Sub" => FloatBinOp::Sub,
            "Mul" => FloatBinOp::Mul,
            "Div" => FloatBinOp::Div,
            _ => return None,
        };
        if n.inputs.len() != 2 || n.outputs.iter().skip(1).any(|o| !o.is_empty()) {
            return None;
        }
        let const_first = n.input(1) == Some(input);
        if !const_first && n.input(0) != Some(input) {
            return None;
        }
        let kname = n.input(if const_first { 0 } else { 1 })?;
        if kname == input {
            return None;
        }
        let k = self.konst(kname)?;
        let TensorData::F32(kv) = &k.data else {
            return None;
        };
        let ok = match rank {
            Some(rank) if k.dims.len() <= rank => {
                // right-aligned: dimension i of the constant is input dimension i + off
                let off = rank - k.dims.len();
                k.dims
                    .iter()
                    .enumerate()
                    .all(|(i, &d)| d == 1 || i + off == 1)
            }
            Some(_) => false,
            None => k.dims.iter().filter(|&&d| d > 1).count() <= 1,
        };
        (ok && !kv.is_empty()).then(|| ChannelFn::Binary {
            op,
            k: kv.clone(),
            const_first,
        })
    }

    /// DQ -> per-channel float op (-> Relu) -> Q (`members`: the absorbed
    /// nodes after DQ `d`, in order) as one [`QOp::ChannelFloat`].
    fn channel_float(&mut self, d: usize, members: &[usize], x: ValueId, xq: QAxis) -> Result<()> {
        let dq = self.nodes[d].clone();
        let fnode = self.nodes[members[0]].clone();
        let q = self.nodes[*members.last().unwrap_or(&d)].clone();
        let relu = members.len() == 3;
        let at = fnode.origin.clone();
        let shape = self.shape(x);
        let f = self
            .channel_fn(&fnode, &dq.outputs[0], shape.as_ref().map(Vec::len))
            .ok_or_else(|| {
                unsupported(
                    at.as_str(),
                    format!(
                        "{}: ORT runs it in float between quantized ops, and its constant operand \
                         does not broadcast per channel (dim 1) over the input's shape {shape:?}",
                        fnode.op
                    ),
                )
            })?;
        let xt =
            qtype(xq.dtype).ok_or_else(|| unsupported(at.as_str(), "int32 input to a float op"))?;
        let xqq = Q {
            scale: xq.scales[0],
            zero_point: xq.zero_points[0],
            dtype: xt,
        };
        if let (Some(s), Some(c)) = (&shape, f.channels()) {
            if s.len() < 2 || s[1] != c {
                return Err(unsupported(
                    at.as_str(),
                    format!("{} of {c} channels on an input of shape {s:?}", fnode.op),
                ));
            }
        }
        let yq = self.qaxis(&q, shape.as_ref().map(Vec::len), true, None)?;
        let yt = qtype(yq.dtype).unwrap_or(QType::U8);
        let y = Q {
            scale: yq.scales[0],
            zero_point: yq.zero_points[0],
            dtype: yt,
        };
        let mut kern = vec!["DequantizeLinear", fnode.op.as_str()];
        if relu {
            kern.push("Relu");
        }
        kern.push("QuantizeLinear");
        let kern = k(&kern);
        let o = self.output(
            &q.outputs[0],
            ValueKind::Quant {
                dtype: yt,
                q: Some(yq),
            },
            shape,
            &q.origin,
        )?;
        self.emit(
            &fnode,
            QOp::ChannelFloat {
                x: xqq,
                y,
                f: std::sync::Arc::new(f),
                relu,
            },
            vec![x],
            vec![o],
            kern,
        );
        Ok(())
    }

    fn table(
        &mut self,
        d: usize,
        absorbed: &HashMap<usize, usize>,
        x: ValueId,
        xq: QAxis,
    ) -> Result<()> {
        let dq = self.nodes[d].clone();
        let at = dq.origin.clone();
        let members: Vec<usize> = {
            let mut m: Vec<usize> = absorbed
                .iter()
                .filter(|(_, &s)| s == d)
                .map(|(&k, _)| k)
                .collect();
            m.sort();
            m
        };
        if let Some(&b) = members.first() {
            let dq_out = self.nodes[d].outputs[0].clone();
            if self.channel_fn(&self.nodes[b], &dq_out, None).is_some() {
                return self.channel_float(d, &members, x, xq);
            }
        }
        let q = self.nodes[*members.last().unwrap_or(&d)].clone();
        let f = if members.len() == 2 {
            Some(self.nodes[members[0]].clone())
        } else {
            None
        };
        let xt =
            qtype(xq.dtype).ok_or_else(|| unsupported(at.as_str(), "int32 input to a float op"))?;
        let xqq = Q {
            scale: xq.scales[0],
            zero_point: xq.zero_points[0],
            dtype: xt,
        };
        // a data-movement op (the pass-through list) between a DQ and a Q with other
        // qparams: ORT runs DQ, the op in float, Q. The op only moves values (MaxPool:
        // the max commutes with DQ, scale > 0), so it runs on the bytes, followed by a
        // requantization table: the same values.
        if let Some(fnode) = f.as_ref().filter(|f| {
            f.op == "Resize" && attr_s(f, "mode", "nearest").map_or(true, |m| m != "nearest")
        }) {
            // DQ -> Resize (linear) -> Q: ORT 1.32 runs the Resize in float
            let s = self
                .shape(x)
                .ok_or_else(|| unsupported(at.as_str(), "Resize of an input of unknown shape"))?;
            let yq = self.qaxis(&q, Some(s.len()), true, None)?;
            if yq.axis.is_some() || yq.scales.len() != 1 {
                return Err(unsupported(
                    fnode.origin.as_str(),
                    "Resize (linear) followed by a per-axis QuantizeLinear",
                ));
            }
            let y = Q {
                scale: yq.scales[0],
                zero_point: yq.zero_points[0],
                dtype: qtype(yq.dtype).unwrap_or(QType::U8),
            };
            let (op, os) = resize_linear(self, fnode, &s, fnode.origin.as_str(), (xqq, y, false))?;
            let o = self.output(
                &q.outputs[0],
                ValueKind::Quant {
                    dtype: y.dtype,
                    q: Some(yq),
                },
                Some(os),
                &fnode.origin,
            )?;
            let fnode = fnode.clone();
            self.emit(
                &fnode,
                op,
                vec![x],
                vec![o],
                k(&["DequantizeLinear", "Resize", "QuantizeLinear"]),
            );
            return Ok(());
        }
        let (x, shape) = match &f {
            Some(fnode) if PASS_THROUGH.contains(&fnode.op.as_str()) || fnode.op == "Pad" => {
                let mut moved = fnode.clone();
                moved.inputs[0] = self.values[x].name.clone();
                if fnode.op == "MaxPool" {
                    self.maxpool(&moved)?
                } else {
                    self.float_pad = true;
                    let r = self.shape_op(&moved);
                    self.float_pad = false;
                    r?
                }
                if let Some(last) = self.out.last_mut() {
                    last.ort_kernels = k(&["DequantizeLinear", fnode.op.as_str()]);
                }
                let id = self.ids[&fnode.outputs[0]];
                (id, self.shape(id))
            }
            _ => (x, self.shape(x)),
        };
        let yq = self.qaxis(&q, shape.as_ref().map(Vec::len), true, None)?;
        let yt = qtype(yq.dtype).unwrap_or(QType::U8);
        let y = Q {
            scale: yq.scales[0],
            zero_point: yq.zero_points[0],
            dtype: yt,
        };
        if let Some(fnode) = f.as_ref().filter(|f| f.op == "Pad") {
            self.check_pad_fill(fnode, &xqq, &y)?;
        }
        let (kind, kern, node) = match &f {
            None => (
                TableKind::Requantize,
                k(&["DequantizeLinear", "QuantizeLinear"]),
                &q,
            ),
            Some(fnode) if PASS_THROUGH.contains(&fnode.op.as_str()) || fnode.op == "Pad" => {
                (TableKind::Requantize, k(&["QuantizeLinear"]), &q)
            }
            Some(fnode) => {
                let kind = match fnode.op.as_str() {
                    "Relu" => TableKind::Relu,
                    "Sigmoid" => TableKind::Sigmoid,
                    _ => TableKind::HardSigmoid {
                        alpha: attr_f(fnode, "alpha", 0.2)?,
                        beta: attr_f(fnode, "beta", 0.5)?,
                    },
                };
                (
                    kind,
                    k(&["DequantizeLinear", fnode.op.as_str(), "QuantizeLinear"]),
                    fnode,
                )
            }
        };
        let node = node.clone();
        let o = self.output(
            &q.outputs[0],
            ValueKind::Quant {
                dtype: yt,
                q: Some(yq),
            },
            shape,
            &node.origin,
        )?;
        self.emit(
            &node,
            QOp::Table { kind, x: xqq, y },
            vec![x],
            vec![o],
            kern,
        );
        Ok(())
    }

    /// The quantized input, its qparams and the constant int8 weights of a
    /// `ConvInteger`/`MatMulInteger` (`integer`: inputs x, w, x_zp, w_zp; the
    /// input's scale is 1) or a `QLinearConv`/`QLinearMatMul` (x, x_scale,
    /// x_zp, w, w_scale, w_zp), the weights' channel axis checked to be
    /// `axis`. `name` names the input in errors ("x", "A").
    fn operands(
        &mut self,
        n: &WNode,
        integer: bool,
        axis: usize,
        name: &str,
    ) -> Result<(ValueId, Q, QWeights)> {
        let at = n.origin.as_str();
        let x = self.value(n.input(0), at, &format!("input {name}"))?;
        let xt = self.quant(x, at, &format!("input {name}"))?;
        let (xs, xz, w, ws, wz) = if integer {
            (None, n.input(2), n.input(1), None, n.input(3))
        } else {
            (n.input(1), n.input(2), n.input(3), n.input(4), n.input(5))
        };
        let xq = if integer {
            Q {
                scale: 1.0,
                zero_point: self.zp_scalar(xz, elem_of(xt), at, &format!("{name} zero point"))?,
                dtype: xt,
            }
        } else {
            self.q_of(xs, xz, xt, at, name)?
        };
        let w = self.weights(w, ws, wz, axis, at)?;
        check_weight_axis(n, &w, axis, at)?;
        Ok((x, xq, w))
    }

    fn conv(&mut self, n: &WNode, integer: bool) -> Result<()> {
        let at = n.origin.as_str();
        let (x, xq, w) = self.operands(n, integer, 0, "x")?;
        if w.shape.len() != 4 {
            return Err(unsupported(
                at,
                format!(
                    "convolution with {} spatial dimensions; qfuse runs 2-D convolutions",
                    w.shape.len().saturating_sub(2)
                ),
            ));
        }
        if w.zero_points.iter().any(|&z| z != w.zero_points[0]) {
            return Err(unsupported(
                at,
                "per-channel weight zero points that differ (ORT's QLinearConv requires them equal)",
            ));
        }
        let (o, cg, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3]);
        let groups = attr_i(n, "group", 1)?;
        let groups = usize::try_from(groups)
            .ok()
            .filter(|&g| g > 0)
            .ok_or_else(|| bad(at, format!("group {groups}")))?;
        if o % groups != 0 || o == 0 || cg == 0 || kh == 0 || kw == 0 {
            return Err(bad(
                at,
                format!("weights {:?} do not fit group {groups}", w.shape),
            ));
        }
        if let Some(ks) = attr_ints(n, "kernel_shape")? {
            if ks != [kh as i64, kw as i64] {
                return Err(bad(
                    at,
                    format!("kernel_shape {ks:?} but the weights are {:?}", w.shape),
                ));
            }
        }
        let xshape = self.shape(x);
        if let Some(s) = &xshape {
            if s.len() != 4 {
                return Err(bad(at, format!("input of shape {s:?}: NCHW expected")));
            }
            if s[1] != cg * groups {
                return Err(bad(
                    at,
                    format!(
                        "input has {} channels but the weights {:?} with group {groups} need {}",
                        s[1],
                        w.shape,
                        cg * groups
                    ),
                ));
            }
        }
        let stride = pair(n, "strides", at)?;
        let dilation = pair(n, "dilations", at)?;
        let pads = resolve_pads(n, [kh, kw], stride, dilation, xshape.as_deref(), at)?;
        let geom = ConvGeom {
            kernel: [kh, kw],
            stride,
            pads,
            dilation,
            groups,
        };
        let bias_name = if integer { None } else { n.input(8) };
        let bias = self.bias(bias_name, o, false, at)?;
        let (out, kind, kern) =
            self.acc_out(n, integer, &xq, &w.scales, ["ConvInteger", "QLinearConv"])?;
        let oshape = match &xshape {
            Some(s) => {
                let oh = conv_out(s[2], kh, stride[0], pads[0], pads[2], dilation[0], at)?;
                let ow = conv_out(s[3], kw, stride[1], pads[1], pads[3], dilation[1], at)?;
                Some(vec![s[0], o, oh, ow])
            }
            None => None,
        };
        let y = self.output(&n.outputs[0], kind, oshape, at)?;
        self.emit(
            n,
            QOp::Conv {
                x: xq,
                w,
                bias,
                geom,
                out,
            },
            vec![x],
            vec![y],
            k(&[kern]),
        );
        Ok(())
    }

    /// A constant-mode Pad in a `DQ -> Pad -> Q` group pads the input's bytes
    /// with `Q_x(c)` (the op just emitted), which the requantization then
    /// maps to `Q_y(DQ_x(Q_x(c)))`; ORT pads with `c` in float, giving
    /// `Q_y(c)`. Equal for c = 0 and for equal qparams; otherwise checked.
    fn check_pad_fill(&self, pad: &WNode, x: &Q, y: &Q) -> Result<()> {
        let at = pad.origin.as_str();
        let fill = match self.out.last().map(|q| &q.op) {
            Some(QOp::Shape(ShapeOp::AxisMap { fill: Some(f), .. })) => *f,
            _ => return Ok(()),
        };
        let c = match pad.input(2).and_then(|c| self.konst(c)) {
            Some(t) => t.as_f32().map_or(0.0, |v| v[0]),
            None => 0.0,
        };
        let byte = (fill & 0xff) as usize;
        let got = super::reference::table(&TableKind::Requantize, x, y)[byte];
        let want = ((c / y.scale).round_ties_even() + y.zero_point as f32)
            .clamp(y.dtype.min() as f32, y.dtype.max() as f32) as i32;
        if got != want {
            return Err(unsupported(
                at,
                format!(
                    "Pad constant {c} between qparams (scale {}, zero point {}) and (scale {}, zero point {}): \
                     no input byte requantizes to ORT's padding value {want}",
                    x.scale, x.zero_point, y.scale, y.zero_point
                ),
            ));
        }
        Ok(())
    }

    /// The output side of QLinearConv/QLinearMatMul (y_scale and
    /// y_zero_point at inputs 6 and 7: requantized with the multipliers
    /// `(x_scale * w_scale) / y_scale`) or of ConvInteger/MatMulInteger (the
    /// int32 accumulator); `names` is (integer, QLinear) for the kernel.
    fn acc_out(
        &mut self,
        n: &WNode,
        integer: bool,
        xq: &Q,
        w_scales: &[f32],
        names: [&'static str; 2],
    ) -> Result<(AccOut, ValueKind, &'static str)> {
        if integer {
            return Ok((AccOut::Int32, ValueKind::Int32, names[0]));
        }
        let at = n.origin.as_str();
        let yt = self.out_type(n.input(7), xq.dtype, at)?;
        let y = self.q_of(n.input(6), n.input(7), yt, at, "y")?;
        let multipliers = w_scales.iter().map(|&s| (xq.scale * s) / y.scale).collect();
        Ok((
            AccOut::Requant { y, multipliers },
            ValueKind::Quant {
                dtype: yt,
                q: Some(per_tensor(y)),
            },
            names[1],
        ))
    }

    fn matmul(&mut self, n: &WNode, integer: bool) -> Result<()> {
        let at = n.origin.as_str();
        let (a, aq, w) = self.operands(n, integer, 1, "A")?;
        if w.shape.len() != 2 {
            return Err(unsupported(
                at,
                format!("B of shape {:?}; qfuse takes a 2-D constant B", w.shape),
            ));
        }
        let (kk, nn) = (w.shape[0], w.shape[1]);
        let w = transpose_kn(w);
        let ashape = self.shape(a);
        let oshape = match &ashape {
            Some(s) if s.is_empty() => return Err(bad(at, "A is a scalar")),
            Some(s) => {
                if s[s.len() - 1] != kk {
                    return Err(bad(
                        at,
                        format!("A of shape {s:?} does not match B of shape [{kk}, {nn}]"),
                    ));
                }
                let mut o = s.clone();
                if o.len() == 1 {
                    o = vec![nn];
                } else {
                    let l = o.len();
                    o[l - 1] = nn;
                }
                Some(o)
            }
            None => None,
        };
        let (out, kind, kern) = self.acc_out(
            n,
            integer,
            &aq,
            &w.scales,
            ["MatMulInteger", "QLinearMatMul"],
        )?;
        let y = self.output(&n.outputs[0], kind, oshape, at)?;
        self.emit(
            n,
            QOp::MatMul { a: aq, w, out },
            vec![a],
            vec![y],
            k(&[kern]),
        );
        Ok(())
    }

    fn gemm(&mut self, n: &WNode) -> Result<()> {
        let at = n.origin.as_str();
        let a = self.value(n.input(0), at, "input A")?;
        let at_ = self.quant(a, at, "input A")?;
        let aq = self.q_of(n.input(1), n.input(2), at_, at, "A")?;
        let trans_a = attr_i(n, "transA", 0)? != 0;
        let trans_b = attr_i(n, "transB", 0)? != 0;
        let alpha = attr_f(n, "alpha", 1.0)?;
        if n.input(6).is_some() && attr_f(n, "beta", 1.0)? != 1.0 {
            return Err(unsupported(at, "Gemm with beta != 1 and a bias"));
        }
        let w = self.weights(
            n.input(3),
            n.input(4),
            n.input(5),
            if trans_b { 0 } else { 1 },
            at,
        )?;
        check_weight_axis(n, &w, if trans_b { 0 } else { 1 }, at)?;
        if w.shape.len() != 2 {
            return Err(bad(at, format!("B of shape {:?}: 2-D expected", w.shape)));
        }
        let w = if trans_b { w } else { transpose_kn(w) };
        let (nn, kk) = (w.shape[0], w.shape[1]);
        let bias = self.bias(n.input(6), nn, true, at)?;
        let ashape = self.shape(a);
        let oshape = match &ashape {
            Some(s) => {
                if s.len() != 2 {
                    return Err(bad(at, format!("A of shape {s:?}: 2-D expected")));
                }
                let (m, ka) = if trans_a { (s[1], s[0]) } else { (s[0], s[1]) };
                if ka != kk {
                    return Err(bad(
                        at,
                        format!("A of shape {s:?} (transA {trans_a}) does not match B's K = {kk}"),
                    ));
                }
                Some(vec![m, nn])
            }
            None => None,
        };
        let s: Vec<f32> = w.scales.iter().map(|&bs| (alpha * aq.scale) * bs).collect();
        let (out, kind) = if n.input(7).is_some() {
            let yt = self.out_type(n.input(8), at_, at)?;
            let y = self.q_of(n.input(7), n.input(8), yt, at, "y")?;
            let multipliers = s.iter().map(|&v| v / y.scale).collect();
            (
                AccOut::Requant { y, multipliers },
                ValueKind::Quant {
                    dtype: yt,
                    q: Some(per_tensor(y)),
                },
            )
        } else {
            if n.input(8).is_some() {
                return Err(bad(at, "y_zero_point without y_scale"));
            }
            (AccOut::Float { scales: s }, ValueKind::Float)
        };
        let y = self.output(&n.outputs[0], kind, oshape, at)?;
        self.emit(
            n,
            QOp::Gemm {
                a: aq,
                trans_a,
                w,
                bias,
                alpha,
                out,
            },
            vec![a],
            vec![y],
            k(&["QGemm"]),
        );
        Ok(())
    }

    fn binary(&mut self, n: &WNode) -> Result<()> {
        let at = n.origin.as_str();
        let a = self.value(n.input(0), at, "input A")?;
        let b = self.value(n.input(3), at, "input B")?;
        let ta = self.quant(a, at, "input A")?;
        let tb = self.quant(b, at, "input B")?;
        if ta != tb {
            return Err(bad(at, "A and B have different types"));
        }
        let aq = self.q_of(n.input(1), n.input(2), ta, at, "A")?;
        let bq = self.q_of(n.input(4), n.input(5), tb, at, "B")?;
        let yt = self.out_type(n.input(7), ta, at)?;
        let y = self.q_of(n.input(6), n.input(7), yt, at, "C")?;
        let shape = match (self.shape(a), self.shape(b)) {
            (Some(sa), Some(sb)) => Some(broadcast(&sa, &sb, at)?),
            _ => None,
        };
        let o = self.output(
            &n.outputs[0],
            ValueKind::Quant {
                dtype: yt,
                q: Some(per_tensor(y)),
            },
            shape,
            at,
        )?;
        let (op, kern) = if n.op == "QLinearAdd" {
            (QOp::Add { a: aq, b: bq, y }, "QLinearAdd")
        } else {
            (QOp::Mul { a: aq, b: bq, y }, "QLinearMul")
        };
        self.emit(n, op, vec![a, b], vec![o], k(&[kern]));
        Ok(())
    }

    fn unary_qparams(&mut self, n: &WNode) -> Result<(ValueId, Q, Q)> {
        let at = n.origin.as_str();
        let x = self.value(n.input(0), at, "input X")?;
        let xt = self.quant(x, at, "input X")?;
        let xq = self.q_of(n.input(1), n.input(2), xt, at, "X")?;
        let yt = self.out_type(n.input(4), xt, at)?;
        let yq = self.q_of(n.input(3), n.input(4), yt, at, "Y")?;
        Ok((x, xq, yq))
    }

    fn avgpool(&mut self, n: &WNode) -> Result<()> {
        let at = n.origin.as_str();
        let (x, xq, y) = self.unary_qparams(n)?;
        let cl = attr_i(n, "channels_last", 0)? != 0;
        let xshape = self.shape(x);
        // NCHW view of the shape
        let nchw = xshape.as_ref().map(|s| {
            if cl && s.len() >= 3 {
                let mut v = vec![s[0], s[s.len() - 1]];
                v.extend(&s[1..s.len() - 1]);
                v
            } else {
                s.clone()
            }
        });
        if let Some(s) = &nchw {
            if s.len() < 3 {
                return Err(bad(at, format!("input of shape {s:?}: rank >= 3 expected")));
            }
        }
        let to_layout = |v: Vec<usize>| -> Vec<usize> {
            if cl {
                let mut o = vec![v[0]];
                o.extend(&v[2..]);
                o.push(v[1]);
                o
            } else {
                v
            }
        };
        let yv = ValueKind::Quant {
            dtype: y.dtype,
            q: Some(per_tensor(y)),
        };
        if n.op == "QLinearGlobalAveragePool" {
            let oshape = nchw.map(|s| {
                let mut o = vec![s[0], s[1]];
                o.extend(std::iter::repeat_n(1, s.len() - 2));
                to_layout(o)
            });
            let o = self.output(&n.outputs[0], yv, oshape, at)?;
            self.emit(
                n,
                QOp::GlobalAvgPool {
                    x: xq,
                    y,
                    channels_last: cl,
                },
                vec![x],
                vec![o],
                k(&["QLinearGlobalAveragePool"]),
            );
            return Ok(());
        }
        let ks = attr_ints(n, "kernel_shape")?.ok_or_else(|| bad(at, "kernel_shape is missing"))?;
        if ks.len() != 2 {
            return Err(unsupported(
                at,
                format!("{}-D pooling; qfuse pools 2-D", ks.len()),
            ));
        }
        let kernel = [
            pos(ks[0], at, "kernel_shape")?,
            pos(ks[1], at, "kernel_shape")?,
        ];
        let stride = pair(n, "strides", at)?;
        if let Some(s) = &nchw {
            if s.len() != 4 {
                return Err(unsupported(
                    at,
                    format!("input of shape {s:?}: 2-D pooling expected"),
                ));
            }
        }
        let pads = resolve_pads(n, kernel, stride, [1, 1], nchw.as_deref(), at)?;
        let ceil = attr_i(n, "ceil_mode", 0)? != 0;
        let cip = attr_i(n, "count_include_pad", 0)? != 0;
        let geom = PoolGeom {
            kernel,
            stride,
            pads,
            dilation: [1, 1],
            ceil_mode: ceil,
        };
        if let Some(s) = &nchw {
            if s[2..] == kernel && pads == [0; 4] {
                // ORT computes a whole-image window without padding as QLinearGlobalAveragePool
                let o = self.output(
                    &n.outputs[0],
                    yv,
                    Some(to_layout(vec![s[0], s[1], 1, 1])),
                    at,
                )?;
                self.emit(
                    n,
                    QOp::GlobalAvgPool {
                        x: xq,
                        y,
                        channels_last: cl,
                    },
                    vec![x],
                    vec![o],
                    k(&["QLinearAveragePool"]),
                );
                return Ok(());
            }
        }
        let oshape = match &nchw {
            Some(s) => Some(to_layout(vec![
                s[0],
                s[1],
                pool_out(s[2], kernel[0], stride[0], pads[0], pads[2], 1, ceil, at)?,
                pool_out(s[3], kernel[1], stride[1], pads[1], pads[3], 1, ceil, at)?,
            ])),
            None => None,
        };
        let o = self.output(&n.outputs[0], yv, oshape, at)?;
        self.emit(
            n,
            QOp::AvgPool {
                x: xq,
                y,
                geom,
                count_include_pad: cip,
                channels_last: cl,
            },
            vec![x],
            vec![o],
            k(&["QLinearAveragePool"]),
        );
        Ok(())
    }

    fn maxpool(&mut self, n: &WNode) -> Result<()> {
        let at = n.origin.as_str();
        let x = self.value(n.input(0), at, "input")?;
        let xt = self.quant(x, at, "input")?;
        if n.outputs.get(1).is_some_and(|o| !o.is_empty()) {
            return Err(unsupported(at, "MaxPool's Indices output"));
        }
        let ks = attr_ints(n, "kernel_shape")?.ok_or_else(|| bad(at, "kernel_shape is missing"))?;
        if ks.len() != 2 {
            return Err(unsupported(
                at,
                format!("{}-D pooling; qfuse pools 2-D", ks.len()),
            ));
        }
        let kernel = [
            pos(ks[0], at, "kernel_shape")?,
            pos(ks[1], at, "kernel_shape")?,
        ];
        let stride = pair(n, "strides", at)?;
        let dilation = pair(n, "dilations", at)?;
        let xshape = self.shape(x);
        if let Some(s) = &xshape {
            if s.len() != 4 {
                return Err(bad(at, format!("input of shape {s:?}: NCHW expected")));
            }
        }
        let pads = resolve_pads(n, kernel, stride, dilation, xshape.as_deref(), at)?;
        let ceil = attr_i(n, "ceil_mode", 0)? != 0;
        let oshape = match &xshape {
            Some(s) => Some(vec![
                s[0],
                s[1],
                pool_out(
                    s[2],
                    kernel[0],
                    stride[0],
                    pads[0],
                    pads[2],
                    dilation[0],
                    ceil,
                    at,
                )?,
                pool_out(
                    s[3],
                    kernel[1],
                    stride[1],
                    pads[1],
                    pads[3],
                    dilation[1],
                    ceil,
                    at,
                )?,
            ]),
            None => None,
        };
        let kind = self.values[x].kind.clone();
        let o = self.output(&n.outputs[0], kind, oshape, at)?;
        self.emit(
            n,
            QOp::MaxPool {
                geom: PoolGeom {
                    kernel,
                    stride,
                    pads,
                    dilation,
                    ceil_mode: ceil,
                },
                dtype: xt,
            },
            vec![x],
            vec![o],
            k(&["MaxPool"]),
        );
        Ok(())
    }

    fn concat(&mut self, n: &WNode) -> Result<()> {
        let at = n.origin.as_str();
        let axis = match n.attrs.get("axis") {
            Some(Attr::Int(a)) => *a,
            _ => return Err(bad(at, "axis is missing")),
        };
        if n.inputs.len() < 5 || !(n.inputs.len() - 2).is_multiple_of(3) {
            return Err(bad(
                at,
                format!(
                    "{} inputs: Y scale, Y zero point, then (X, scale, zero point) triples",
                    n.inputs.len()
                ),
            ));
        }
        let mut ins = Vec::new();
        let mut qs = Vec::new();
        let mut ty = None;
        for t in 0..(n.inputs.len() - 2) / 3 {
            let j = 2 + 3 * t;
            let x = self.value(n.input(j), at, "input")?;
            let xt = self.quant(x, at, "input")?;
            if ty.is_some_and(|t| t != xt) {
                return Err(bad(at, "inputs of different types"));
            }
            ty = Some(xt);
            qs.push(self.q_of(n.input(j + 1), n.input(j + 2), xt, at, "input")?);
            ins.push(x);
        }
        let xt = ty.unwrap_or(QType::U8);
        let yt = self.out_type(n.input(1), xt, at)?;
        let y = self.q_of(n.input(0), n.input(1), yt, at, "Y")?;
        let shapes: Option<Vec<Vec<usize>>> = ins.iter().map(|&v| self.shape(v)).collect();
        let oshape = match shapes {
            Some(ss) => Some(concat_shape(&ss, axis, at)?),
            None => None,
        };
        let o = self.output(
            &n.outputs[0],
            ValueKind::Quant {
                dtype: yt,
                q: Some(per_tensor(y)),
            },
            oshape,
            at,
        )?;
        self.emit(
            n,
            QOp::Concat {
                axis,
                inputs: qs,
                y,
            },
            ins,
            vec![o],
            k(&["QLinearConcat"]),
        );
        Ok(())
    }

    fn unary(&mut self, n: &WNode) -> Result<()> {
        let at = n.origin.as_str();
        let (x, xq, y) = self.unary_qparams(n)?;
        let shape = self.shape(x);
        let op = match n.op.as_str() {
            "QLinearSigmoid" => QOp::Table {
                kind: TableKind::Sigmoid,
                x: xq,
                y,
            },
            "QLinearLeakyRelu" => QOp::Table {
                kind: TableKind::LeakyRelu {
                    alpha: attr_f(n, "alpha", 0.01)?,
                },
                x: xq,
                y,
            },
            _ => {
                let opset = match n.attrs.get("opset") {
                    Some(Attr::Int(o)) => *o,
                    _ => return Err(bad(at, "QLinearSoftmax without its opset attribute")),
                };
                let axis = attr_i(n, "axis", if opset < 13 { 1 } else { -1 })?;
                if let Some(s) = &shape {
                    norm_axis(axis, s.len(), at)?;
                }
                QOp::Softmax {
                    x: xq,
                    y,
                    axis,
                    opset13: opset >= 13,
                }
            }
        };
        let o = self.output(
            &n.outputs[0],
            ValueKind::Quant {
                dtype: y.dtype,
                q: Some(per_tensor(y)),
            },
            shape,
            at,
        )?;
        self.emit(n, op, vec![x], vec![o], vec![n.op.clone()]);
        Ok(())
    }

    /// A Resize (mode linear) on a uint8/int8 tensor (QOperator): ORT's
    /// bilinear kernel on the bytes, truncated; the input's qparams.
    fn resize_on_bytes(&mut self, n: &WNode) -> Result<()> {
        let at = n.origin.as_str();
        let x = self.value(n.input(0), at, "input")?;
        let kind = self.values[x].kind.clone();
        let q = match &kind {
            ValueKind::Quant { dtype, q: Some(q) } if q.axis.is_none() && q.scales.len() == 1 => {
                Q {
                    scale: q.scales[0],
                    zero_point: q.zero_points[0],
                    dtype: *dtype,
                }
            }
            _ => {
                return Err(unsupported(
                    at,
                    "Resize (linear) of a tensor without per-tensor qparams",
                ))
            }
        };
        let s = self
            .shape(x)
            .ok_or_else(|| unsupported(at, "Resize of an input of unknown shape"))?;
        let (op, os) = resize_linear(self, n, &s, at, (q, q, true))?;
        let o = self.output(&n.outputs[0], kind, Some(os), at)?;
        self.emit(n, op, vec![x], vec![o], vec![n.op.clone()]);
        Ok(())
    }

    fn shape_op(&mut self, n: &WNode) -> Result<()> {
        let at = n.origin.as_str();
        let x = self.value(n.input(0), at, "input")?;
        let xs = self.shape(x);
        let (op, oshape) = match n.op.as_str() {
            "Reshape" => {
                let shape = self
                    .ints_const(n.input(1), at, "shape")?
                    .ok_or_else(|| bad(at, "the shape input is missing"))?;
                let allowzero = attr_i(n, "allowzero", 0)? != 0;
                let o = match &xs {
                    Some(s) => Some(reshape(s, &shape, allowzero, at)?),
                    None => None,
                };
                (ShapeOp::Reshape { shape, allowzero }, o)
            }
            "Flatten" => {
                let axis = attr_i(n, "axis", 1)?;
                let o = match &xs {
                    Some(s) => {
                        let a = if axis < 0 {
                            axis + s.len() as i64
                        } else {
                            axis
                        };
                        if a < 0 || a > s.len() as i64 {
                            return Err(bad(at, format!("axis {axis} for rank {}", s.len())));
                        }
                        let a = a as usize;
                        Some(vec![s[..a].iter().product(), s[a..].iter().product()])
                    }
                    None => None,
                };
                (ShapeOp::Flatten { axis }, o)
            }
            "Transpose" => {
                let perm = attr_ints(n, "perm")?;
                let o = match &xs {
                    Some(s) => {
                        let p: Vec<i64> = perm
                            .clone()
                            .unwrap_or_else(|| (0..s.len() as i64).rev().collect());
                        let mut seen = vec![false; s.len()];
                        let mut o = Vec::new();
                        if p.len() != s.len() {
                            return Err(bad(at, format!("perm {p:?} for rank {}", s.len())));
                        }
                        for &a in &p {
                            let a = norm_axis(a, s.len(), at)?;
                            if std::mem::replace(&mut seen[a], true) {
                                return Err(bad(at, format!("perm {p:?} repeats an axis")));
                            }
                            o.push(s[a]);
                        }
                        Some(o)
                    }
                    None => None,
                };
                (ShapeOp::Transpose { perm }, o)
            }
            "Squeeze" => {
                let axes = self.ints_const(n.input(1), at, "axes")?;
                let o = match &xs {
                    Some(s) => {
                        let mut drop = vec![false; s.len()];
                        match &axes {
                            Some(ax) => {
                                for &a in ax {
                                    let a = norm_axis(a, s.len(), at)?;
                                    if s[a] != 1 {
                                        return Err(bad(
                                            at,
                                            format!("squeezing axis {a} of size {}", s[a]),
                                        ));
                                    }
                                    drop[a] = true;
                                }
                            }
                            None => {
                                for (d, &v) in drop.iter_mut().zip(s) {
                                    *d = v == 1;
                                }
                            }
                        }
                        Some(
                            s.iter()
                                .zip(&drop)
                                .filter(|(_, &d)| !d)
                                .map(|(&v, _)| v)
                                .collect(),
                        )
                    }
                    None => None,
                };
                (ShapeOp::Squeeze { axes }, o)
            }
            "Unsqueeze" => {
                let axes = self
                    .ints_const(n.input(1), at, "axes")?
                    .ok_or_else(|| bad(at, "the axes input is missing"))?;
                let o = match &xs {
                    Some(s) => {
                        let r = s.len() + axes.len();
                        let mut ins = vec![false; r];
                        for &a in &axes {
                            let a = norm_axis(a, r, at)?;
                            if std::mem::replace(&mut ins[a], true) {
                                return Err(bad(at, "axes repeat"));
                            }
                        }
                        let mut it = s.iter();
                        Some(
                            ins.iter()
                                .map(|&i| if i { 1 } else { *it.next().unwrap_or(&1) })
                                .collect(),
                        )
                    }
                    None => None,
                };
                (ShapeOp::Unsqueeze { axes }, o)
            }
            "Slice" => {
                let starts = self
                    .ints_const(n.input(1), at, "starts")?
                    .ok_or_else(|| bad(at, "starts is missing"))?;
                let ends = self
                    .ints_const(n.input(2), at, "ends")?
                    .ok_or_else(|| bad(at, "ends is missing"))?;
                let axes = self.ints_const(n.input(3), at, "axes")?;
                let steps = self.ints_const(n.input(4), at, "steps")?;
                if ends.len() != starts.len()
                    || axes.as_ref().is_some_and(|a| a.len() != starts.len())
                    || steps.as_ref().is_some_and(|a| a.len() != starts.len())
                {
                    return Err(bad(at, "starts, ends, axes and steps of different lengths"));
                }
                let o = match &xs {
                    Some(s) => Some(slice_shape(
                        s,
                        &starts,
                        &ends,
                        axes.as_deref(),
                        steps.as_deref(),
                        at,
                    )?),
                    None => None,
                };
                (
                    ShapeOp::Slice {
                        starts,
                        ends,
                        axes,
                        steps,
                    },
                    o,
                )
            }
            "Pad" => {
                let s = xs
                    .as_ref()
                    .ok_or_else(|| unsupported(at, "Pad of an input of unknown shape"))?;
                let xq = match &self.values[x].kind {
                    ValueKind::Quant { dtype, q } => Some((*dtype, q.clone())),
                    _ => None,
                };
                let (maps, fill) = pad_maps(self, n, s, xq, at)?;
                let o = s
                    .iter()
                    .zip(&maps)
                    .map(|(&d, m)| m.as_ref().map_or(d, Vec::len))
                    .collect();
                (ShapeOp::AxisMap { maps, fill }, Some(o))
            }
            "Resize" => {
                let s = xs
                    .as_ref()
                    .ok_or_else(|| unsupported(at, "Resize of an input of unknown shape"))?;
                let maps = resize_maps(self, n, s, at)?;
                let o = s
                    .iter()
                    .zip(&maps)
                    .map(|(&d, m)| m.as_ref().map_or(d, Vec::len))
                    .collect();
                (ShapeOp::AxisMap { maps, fill: None }, Some(o))
            }
            _ => {
                // Gather
                let it = n
                    .input(1)
                    .and_then(|i| self.konst(i))
                    .ok_or_else(|| unsupported(at, "indices that are not a constant"))?
                    .clone();
                let indices = it
                    .data
                    .to_i64()
                    .filter(|_| matches!(it.elem_type(), ElemType::I32 | ElemType::I64))
                    .ok_or_else(|| bad(at, "indices are not int32/int64"))?;
                let axis = attr_i(n, "axis", 0)?;
                let o = match &xs {
                    Some(s) => {
                        let a = norm_axis(axis, s.len(), at)?;
                        for &i in &indices {
                            if i < -(s[a] as i64) || i >= s[a] as i64 {
                                return Err(bad(
                                    at,
                                    format!("index {i} out of range for axis of size {}", s[a]),
                                ));
                            }
                        }
                        let mut o = s[..a].to_vec();
                        o.extend(&it.dims);
                        o.extend(&s[a + 1..]);
                        Some(o)
                    }
                    None => None,
                };
                (
                    ShapeOp::Gather {
                        indices,
                        indices_shape: it.dims.clone(),
                        axis,
                    },
                    o,
                )
            }
        };
        let kind = self.values[x].kind.clone();
        let o = self.output(&n.outputs[0], kind, oshape, at)?;
        self.emit(n, QOp::Shape(op), vec![x], vec![o], vec![n.op.clone()]);
        Ok(())
    }
}

impl Lowerer<'_> {
    /// ONNX Split on quantized bytes (ORT's QDQ Split rule, or a Split of a
    /// quantized tensor): one [`ShapeOp::Slice`] node per output.
    fn split_op(&mut self, n: &WNode) -> Result<()> {
        let at = n.origin.as_str();
        let x = self.value(n.input(0), at, "input")?;
        let s = self
            .shape(x)
            .ok_or_else(|| unsupported(at, "Split of an input of unknown shape"))?;
        let axis = attr_i(n, "axis", 0)?;
        let a = norm_axis(axis, s.len(), at)?;
        let d = s[a] as i64;
        let k = n.outputs.len() as i64;
        let sizes: Vec<i64> = match (
            self.ints_const(n.input(1), at, "split")?,
            attr_ints(n, "split")?,
        ) {
            (Some(v), _) | (None, Some(v)) => v,
            (None, None) => {
                let parts = attr_i(n, "num_outputs", k)?;
                if parts != k || parts < 1 {
                    return Err(bad(at, format!("num_outputs {parts} for {k} outputs")));
                }
                // ONNX: equal parts of ceil(d / parts), the last one smaller
                let c = (d + parts - 1) / parts;
                (0..parts).map(|j| (d - j * c).clamp(0, c)).collect()
            }
        };
        if sizes.len() as i64 != k || sizes.iter().any(|&v| v < 0) || sizes.iter().sum::<i64>() != d
        {
            return Err(bad(
                at,
                format!("split {sizes:?} into {k} outputs of an axis of size {d}"),
            ));
        }
        let kind = self.values[x].kind.clone();
        let mut start = 0i64;
        for (o, &len) in n.outputs.iter().zip(&sizes) {
            if len == 0 {
                return Err(unsupported(at, format!("an empty Split output '{o}'")));
            }
            let mut os = s.clone();
            os[a] = len as usize;
            let y = self.output(o, kind.clone(), Some(os), at)?;
            let op = ShapeOp::Slice {
                starts: vec![start],
                ends: vec![start + len],
                axes: Some(vec![a as i64]),
                steps: None,
            };
            // ORT runs one Split kernel for all the outputs
            let kern = if start == 0 {
                vec![n.op.clone()]
            } else {
                vec![]
            };
            self.emit(n, QOp::Shape(op), vec![x], vec![y], kern);
            start += len;
        }
        Ok(())
    }
}

fn attr_s(n: &WNode, name: &str, default: &str) -> Result<String> {
    match n.attrs.get(name) {
        None => Ok(default.into()),
        Some(Attr::String(v)) => Ok(String::from_utf8_lossy(v).into_owned()),
        Some(_) => Err(bad(&n.origin, format!("attribute {name} is not a string"))),
    }
}

/// Per-axis source maps (`None`: the axis is kept), as in `ShapeOp::AxisMap`.
type AxisMaps = Vec<Option<Vec<i64>>>;

/// Pad of a tensor of shape `s` as per-axis source maps, and for mode
/// constant the fill value in the tensor's own type (map entries -1). ORT runs
/// `DQ -> Pad -> Q` in float; with equal qparams that is the same bytes, with
/// others a requantization follows (as for the other movement ops). `xq`: the
/// input's type and qparams when it is quantized. The constant is a float in a
/// QDQ group (`self.float_pad`: quantized here with the input's qparams by
/// rule Q; absent means 0.0), or a byte of the input's type on a quantized Pad.
fn pad_maps(
    l: &Lowerer<'_>,
    n: &WNode,
    s: &[usize],
    xq: Option<(QType, Option<QAxis>)>,
    at: &str,
) -> Result<(AxisMaps, Option<i32>)> {
    let mode = attr_s(n, "mode", "constant")?;
    let fill = if mode == "constant" {
        let Some((xt, q)) = xq else {
            return Err(unsupported(at, "Pad mode constant of a float tensor"));
        };
        let c = n.input(2).map(|c| {
            l.konst(c)
                .ok_or_else(|| unsupported(at, "a constant_value that is not a constant"))
        });
        let c = c.transpose()?;
        if c.is_some_and(|c| c.len() != 1) {
            return Err(bad(at, "constant_value has more than one element"));
        }
        Some(match c.map(|c| &c.data) {
            Some(TensorData::U8(v)) if xt == QType::U8 && !l.float_pad => v[0] as i32,
            Some(TensorData::I8(v)) if xt == QType::I8 && !l.float_pad => v[0] as i32,
            None if !l.float_pad => 0,
            Some(TensorData::F32(_)) | None => {
                let c = c.and_then(|c| c.as_f32()).map_or(0.0, |v| v[0]);
                let q = q.filter(|q| q.scales.len() == 1).ok_or_else(|| {
                    unsupported(
                        at,
                        "Pad mode constant of a tensor without per-tensor qparams",
                    )
                })?;
                // rule Q: sat(rint(c / s) + zp)
                ((c / q.scales[0]).round_ties_even() + q.zero_points[0] as f32)
                    .clamp(xt.min() as f32, xt.max() as f32) as i32
            }
            Some(d) => {
                return Err(unsupported(
                    at,
                    format!(
                        "constant_value of type {:?} for a Pad of {xt:?} values",
                        d.elem_type()
                    ),
                ))
            }
        })
    } else {
        None
    };
    if mode != "edge" && mode != "reflect" && mode != "constant" {
        return Err(unsupported(at, format!("Pad mode {mode}")));
    }
    if n.input(3).is_some() {
        return Err(unsupported(at, "Pad with the axes input"));
    }
    let r = s.len();
    let pads = l
        .ints_const(n.input(1), at, "pads")?
        .or(attr_ints(n, "pads")?)
        .ok_or_else(|| bad(at, "pads are missing"))?;
    if pads.len() != 2 * r {
        return Err(bad(at, format!("pads {pads:?} for rank {r}")));
    }
    let mut maps = Vec::with_capacity(r);
    for k in 0..r {
        let (d, b, e) = (s[k] as i64, pads[k], pads[k + r]);
        let o = d + b + e;
        if !(1..=1 << 20).contains(&o) || (mode == "reflect" && (b >= d || e >= d)) {
            return Err(bad(
                at,
                format!("{mode} pads {b}, {e} of axis {k} (size {d})"),
            ));
        }
        let m: Vec<i64> = (0..o)
            .map(|j| {
                let i = j - b;
                if mode == "constant" {
                    if (0..d).contains(&i) {
                        i
                    } else {
                        -1
                    }
                } else if mode == "edge" {
                    i.clamp(0, d - 1)
                } else if i < 0 {
                    -i
                } else if i > d - 1 {
                    2 * (d - 1) - i
                } else {
                    i
                }
            })
            .collect();
        let identity = m.len() as i64 == d && m.iter().enumerate().all(|(j, &v)| v == j as i64);
        maps.push((!identity).then_some(m));
    }
    Ok((maps, fill))
}

/// A Resize's constant scales or sizes for an input of shape `s`, as ORT
/// takes them: `(scales, output sizes)`, the sizes `trunc(f32(scale) * d)`
/// from scales, the scales `f32(o) / f32(d)` from sizes.
fn resize_scales(
    l: &Lowerer<'_>,
    n: &WNode,
    s: &[usize],
    at: &str,
) -> Result<(Vec<f32>, Vec<i64>)> {
    let r = s.len();
    let scales: Option<Vec<f32>> = match n.input(2) {
        Some(nm) => {
            let t = l
                .konst(nm)
                .ok_or_else(|| unsupported(at, format!("scales '{nm}' is not a constant")))?;
            let v = t
                .as_f32()
                .ok_or_else(|| bad(at, "scales are not float"))?
                .to_vec();
            (!v.is_empty()).then_some(v)
        }
        None => None,
    };
    let sizes = l.ints_const(n.input(3), at, "sizes")?;
    let (scales, out): (Vec<f32>, Vec<i64>) = match (scales, sizes) {
        (Some(sc), None) if sc.len() == r => {
            let out = sc
                .iter()
                .zip(s)
                .map(|(&c, &d)| (c * d as f32) as i64)
                .collect();
            (sc, out)
        }
        (None, Some(sz)) if sz.len() == r => (
            sz.iter()
                .zip(s)
                .map(|(&o, &d)| o as f32 / d as f32)
                .collect(),
            sz,
        ),
        _ => {
            return Err(bad(
                at,
                format!("Resize needs constant scales or sizes of rank {r}"),
            ))
        }
    };
    Ok((scales, out))
}

/// Resize mode linear of an NCHW tensor of shape `s` (batch included): the
/// lowered op, ORT's bilinear kernel (see [`crate::ops::resize`]); refuses
/// cubic, antialias, other axes than H and W, and the coordinate
/// transformations qfuse does not run, naming the node.
fn resize_linear(
    l: &Lowerer<'_>,
    n: &WNode,
    s: &[usize],
    at: &str,
    (x, y, truncate): (Q, Q, bool),
) -> Result<(QOp, Vec<usize>)> {
    let mode = attr_s(n, "mode", "nearest")?;
    let mode = match mode.as_str() {
        "linear" => crate::ops::resize::ResizeMode::Linear,
        "cubic" if !truncate => {
            crate::ops::resize::ResizeMode::Cubic(attr_f(n, "cubic_coeff_a", -0.75)?)
        }
        "cubic" => {
            return Err(unsupported(
                at,
                "Resize mode cubic on a uint8/int8 tensor (ORT casts out-of-range values; \
                 supported between DequantizeLinear and QuantizeLinear)",
            ))
        }
        _ => {
            return Err(unsupported(
                at,
                format!(
                    "Resize mode {mode} on quantized values (nearest, linear, cubic are supported)"
                ),
            ))
        }
    };
    for (k, v) in [("antialias", 0), ("exclude_outside", 0)] {
        if attr_i(n, k, 0)? != v {
            return Err(unsupported(at, format!("Resize (linear/cubic) with {k}")));
        }
    }
    if n.attrs.contains_key("axes") {
        return Err(unsupported(at, "Resize with the axes attribute"));
    }
    if attr_s(n, "keep_aspect_ratio_policy", "stretch")? != "stretch" {
        return Err(unsupported(
            at,
            "Resize with a keep_aspect_ratio_policy other than stretch",
        ));
    }
    let ctm = attr_s(n, "coordinate_transformation_mode", "half_pixel")?;
    let coord = crate::ops::resize::Coord::parse(&ctm).ok_or_else(|| {
        unsupported(
            at,
            format!("Resize (linear) coordinate_transformation_mode {ctm}"),
        )
    })?;
    if s.len() != 4 {
        return Err(unsupported(
            at,
            format!("Resize (linear) of a rank-{} tensor (NCHW only)", s.len()),
        ));
    }
    let (scales, out) = resize_scales(l, n, s, at)?;
    if scales[0] != 1.0 || scales[1] != 1.0 || out[0] != s[0] as i64 || out[1] != s[1] as i64 {
        return Err(unsupported(
            at,
            format!("Resize (linear) with scales {scales:?}: only H and W may change"),
        ));
    }
    let max = crate::ops::resize::MAX_RESIZE as i64;
    for k in 2..4 {
        if !((1..=max).contains(&out[k]) && scales[k].is_finite() && scales[k] > 0.0) {
            return Err(bad(
                at,
                format!(
                    "Resize of axis {k} (size {}) to {} (scale {})",
                    s[k], out[k], scales[k]
                ),
            ));
        }
    }
    let size = [out[2] as usize, out[3] as usize];
    let op = QOp::Resize {
        x,
        y,
        truncate,
        size,
        scales: [scales[2], scales[3]],
        coord,
        mode,
    };
    Ok((op, vec![s[0], s[1], size[0], size[1]]))
}

/// Resize (mode nearest) of a tensor of shape `s` as per-axis source maps, with
/// ORT's f32 arithmetic (`upsamplebase.h`: the output size, the coordinate
/// transformation and the nearest rounding, clamped to the axis).
fn resize_maps(l: &Lowerer<'_>, n: &WNode, s: &[usize], at: &str) -> Result<Vec<Option<Vec<i64>>>> {
    let mode = attr_s(n, "mode", "nearest")?;
    if mode != "nearest" {
        return Err(unsupported(
            at,
            format!(
                "Resize mode {mode} on quantized values (ORT interpolates the bytes in its own \
                 integer/float kernel; only mode nearest is supported)"
            ),
        ));
    }
    let ctm = attr_s(n, "coordinate_transformation_mode", "half_pixel")?;
    let nm = attr_s(n, "nearest_mode", "round_prefer_floor")?;
    for (k, v) in [("antialias", 0), ("exclude_outside", 0)] {
        if attr_i(n, k, 0)? != v {
            return Err(unsupported(at, format!("Resize with {k}")));
        }
    }
    if n.attrs.contains_key("axes") {
        return Err(unsupported(at, "Resize with the axes attribute"));
    }
    if attr_s(n, "keep_aspect_ratio_policy", "stretch")? != "stretch" {
        return Err(unsupported(
            at,
            "Resize with a keep_aspect_ratio_policy other than stretch",
        ));
    }
    let r = s.len();
    let (scales, out) = resize_scales(l, n, s, at)?;
    let mut maps = Vec::with_capacity(r);
    for k in 0..r {
        let (d, o, c) = (s[k] as i64, out[k], scales[k]);
        if !(1..=1 << 20).contains(&o) || c <= 0.0 {
            return Err(bad(at, format!("Resize of axis {k} (size {d}) to {o}")));
        }
        let mut m = Vec::with_capacity(o as usize);
        for x in 0..o {
            let xf = x as f32;
            let orig = match ctm.as_str() {
                "half_pixel" => (xf + 0.5) / c - 0.5,
                "pytorch_half_pixel" if o > 1 => (xf + 0.5) / c - 0.5,
                "pytorch_half_pixel" => 0.0,
                "asymmetric" => xf / c,
                "align_corners" if o == 1 => 0.0,
                "align_corners" => xf * (d as f32 - 1.0) / (o as f32 - 1.0),
                other => {
                    return Err(unsupported(
                        at,
                        format!("Resize coordinate_transformation_mode {other}"),
                    ))
                }
            };
            let i = match nm.as_str() {
                "round_prefer_floor" if orig == (orig as i64) as f32 + 0.5 => orig.floor() as i64,
                "round_prefer_floor" | "round_prefer_ceil" => orig.round() as i64,
                "floor" => orig.floor() as i64,
                "ceil" => orig.ceil() as i64,
                other => {
                    return Err(unsupported(at, format!("Resize nearest_mode {other}")));
                }
            };
            m.push(i.clamp(0, d - 1));
        }
        let identity = m.len() as i64 == d && m.iter().enumerate().all(|(j, &v)| v == j as i64);
        maps.push((!identity).then_some(m));
    }
    Ok(maps)
}

/// Default-domain ops that are known and run in float (refused unless at the tail).
const KNOWN_FLOAT: [&str; 16] = [
    "ReduceMean",
    "AveragePool",
    "GlobalAveragePool",
    "MaxPool",
    "Concat",
    "LeakyRelu",
    "Resize",
    "Pad",
    "Split",
    "Expand",
    "Tile",
    "Slice",
    "Gather",
    "GatherElements",
    "BatchNormalization",
    "HardSwish",
];

fn kind_name(k: &ValueKind) -> &'static str {
    match k {
        ValueKind::Float => "float",
        ValueKind::Quant {
            dtype: QType::U8, ..
        } => "uint8",
        ValueKind::Quant {
            dtype: QType::I8, ..
        } => "int8",
        ValueKind::Int32 => "int32",
        ValueKind::Int64 => "int64",
    }
}

/// A fused QDQ Conv/MatMul/Gemm with per-channel weight scales: the weight
/// DequantizeLinear's axis must be the output-channel axis `want` of the file's
/// weight layout.
fn check_weight_axis(n: &WNode, w: &QWeights, want: usize, at: &str) -> Result<()> {
    if let Some(Attr::Int(a)) = n.attrs.get(WEIGHT_AXIS) {
        let r = w.shape.len() as i64;
        let a2 = if *a < 0 { a + r } else { *a };
        if a2 != want as i64 {
            return Err(unsupported(
                at,
                format!(
                    "per-channel weight scales along axis {a} of the weight {:?}; the output \
                     channels are axis {want}",
                    w.shape
                ),
            ));
        }
    }
    Ok(())
}

fn check_scale(s: f32, at: &str, what: &str) -> Result<()> {
    if s.is_finite() && s > 0.0 {
        Ok(())
    } else {
        Err(bad(at, format!("{what} {s} is not finite and positive")))
    }
}

fn check_axis_len(q: &QAxis, shape: &Option<Vec<usize>>, at: &str) -> Result<()> {
    if let (Some(a), Some(s)) = (q.axis, shape) {
        if s.get(a) != Some(&q.scales.len()) {
            return Err(bad(
                at,
                format!(
                    "{} scales along axis {a} of a tensor of shape {s:?}",
                    q.scales.len()
                ),
            ));
        }
    }
    Ok(())
}

fn norm_axis(a: i64, rank: usize, at: &str) -> Result<usize> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if v < 0 || v >= r {
        return Err(bad(at, format!("axis {a} out of range for rank {rank}")));
    }
    Ok(v as usize)
}

fn attr_i(n: &WNode, name: &str, default: i64) -> Result<i64> {
    match n.attrs.get(name) {
        None => Ok(default),
        Some(Attr::Int(v)) => Ok(*v),
        Some(_) => Err(bad(
            &n.origin,
            format!("attribute {name} is not an integer"),
        )),
    }
}

fn attr_f(n: &WNode, name: &str, default: f32) -> Result<f32> {
    match n.attrs.get(name) {
        None => Ok(default),
        Some(Attr::Float(v)) => Ok(*v),
        Some(_) => Err(bad(&n.origin, format!("attribute {name} is not a float"))),
    }
}

fn attr_ints(n: &WNode, name: &str) -> Result<Option<Vec<i64>>> {
    match n.attrs.get(name) {
        None => Ok(None),
        Some(Attr::Ints(v)) => Ok(Some(v.clone())),
        Some(_) => Err(bad(
            &n.origin,
            format!("attribute {name} is not a list of integers"),
        )),
    }
}

fn pos(v: i64, at: &str, what: &str) -> Result<usize> {
    usize::try_from(v)
        .ok()
        .filter(|&x| x > 0 && x <= 1 << 20)
        .ok_or_else(|| bad(at, format!("{what} value {v}")))
}

/// A 2-element attribute of positive values (default [1, 1]).
fn pair(n: &WNode, name: &str, at: &str) -> Result<[usize; 2]> {
    match attr_ints(n, name)? {
        None => Ok([1, 1]),
        Some(v) if v.len() == 2 => Ok([pos(v[0], at, name)?, pos(v[1], at, name)?]),
        Some(v) => Err(bad(at, format!("{name} {v:?}: two values expected"))),
    }
}

/// Explicit pads `[top, left, bottom, right]` from `pads` / `auto_pad`.
fn resolve_pads(
    n: &WNode,
    kernel: [usize; 2],
    stride: [usize; 2],
    dil: [usize; 2],
    xshape: Option<&[usize]>,
    at: &str,
) -> Result<[usize; 4]> {
    let auto = match n.attrs.get("auto_pad") {
        None => "NOTSET".to_string(),
        Some(Attr::String(s)) => String::from_utf8_lossy(s).into_owned(),
        Some(_) => return Err(bad(at, "auto_pad is not a string")),
    };
    match auto.as_str() {
        "NOTSET" | "" => match attr_ints(n, "pads")? {
            None => Ok([0; 4]),
            Some(p) if p.len() == 4 => {
                let mut o = [0usize; 4];
                for (d, &v) in o.iter_mut().zip(&p) {
                    *d = usize::try_from(v)
                        .ok()
                        .filter(|&x| x <= 1 << 20)
                        .ok_or_else(|| bad(at, format!("pads {p:?}")))?;
                }
                Ok(o)
            }
            Some(p) => Err(bad(at, format!("pads {p:?}: four values expected"))),
        },
        "VALID" => Ok([0; 4]),
        "SAME_UPPER" | "SAME_LOWER" => {
            let s = xshape.ok_or_else(|| {
                unsupported(at, format!("auto_pad {auto} with an input of unknown size"))
            })?;
            let mut o = [0usize; 4];
            for i in 0..2 {
                let len = *s.get(2 + i).ok_or_else(|| bad(at, "input is not NCHW"))?;
                let out = len.div_ceil(stride[i]);
                let eff = dil[i] * (kernel[i] - 1) + 1;
                let total = (out.saturating_sub(1) * stride[i] + eff).saturating_sub(len);
                let (b, e) = if auto == "SAME_UPPER" {
                    (total / 2, total - total / 2)
                } else {
                    (total - total / 2, total / 2)
                };
                o[i] = b;
                o[i + 2] = e;
            }
            Ok(o)
        }
        a => Err(bad(at, format!("auto_pad {a:?}"))),
    }
}

/// ONNX convolution output size: a pooling window without `ceil_mode`.
fn conv_out(
    len: usize,
    k: usize,
    s: usize,
    pb: usize,
    pe: usize,
    d: usize,
    at: &str,
) -> Result<usize> {
    pool_out(len, k, s, pb, pe, d, false, at)
}

/// ONNX pooling output size; with `ceil_mode`, ORT drops a last window that
/// starts in the end padding.
#[allow(clippy::too_many_arguments)]
fn pool_out(
    len: usize,
    k: usize,
    s: usize,
    pb: usize,
    pe: usize,
    d: usize,
    ceil: bool,
    at: &str,
) -> Result<usize> {
    let eff = d * (k - 1) + 1;
    let padded = len + pb + pe;
    if padded < eff {
        return Err(bad(
            at,
            format!("kernel {k} (dilation {d}) is larger than the padded input {padded}"),
        ));
    }
    let mut o = if ceil {
        (padded - eff).div_ceil(s) + 1
    } else {
        (padded - eff) / s + 1
    };
    if ceil && (o - 1) * s >= len + pb {
        o -= 1;
    }
    Ok(o)
}

fn broadcast(a: &[usize], b: &[usize], at: &str) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut o = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        o[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(bad(at, format!("shapes {a:?} and {b:?} do not broadcast")));
        };
    }
    Ok(o)
}

fn concat_shape(ss: &[Vec<usize>], axis: i64, at: &str) -> Result<Vec<usize>> {
    let r = ss[0].len();
    let a = norm_axis(axis, r, at)?;
    let mut o = ss[0].clone();
    for s in &ss[1..] {
        if s.len() != r || s.iter().enumerate().any(|(i, &d)| i != a && d != ss[0][i]) {
            return Err(bad(
                at,
                format!(
                    "inputs of shapes {:?} and {s:?} do not concatenate on axis {axis}",
                    ss[0]
                ),
            ));
        }
        o[a] += s[a];
    }
    Ok(o)
}

fn reshape(s: &[usize], target: &[i64], allowzero: bool, at: &str) -> Result<Vec<usize>> {
    let total: usize = s.iter().product();
    let mut o = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            0 if !allowzero => o.push(*s.get(i).ok_or_else(|| {
                bad(
                    at,
                    format!("shape {target:?}: 0 copies a dimension the input lacks"),
                )
            })?),
            -1 => {
                if infer.replace(i).is_some() {
                    return Err(bad(at, format!("shape {target:?} has two -1")));
                }
                o.push(1);
            }
            t if t >= 0 => o.push(t as usize),
            t => return Err(bad(at, format!("shape {target:?}: dimension {t}"))),
        }
    }
    let known = o
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(at, "shape overflows"))?;
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(bad(at, format!("cannot reshape {s:?} to {target:?}")));
        }
        o[i] = total / known;
    } else if known != total {
        return Err(bad(
            at,
            format!("cannot reshape {s:?} ({total} values) to {target:?}"),
        ));
    }
    Ok(o)
}

fn slice_shape(
    s: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
    at: &str,
) -> Result<Vec<usize>> {
    let mut o = s.to_vec();
    for i in 0..starts.len() {
        let a = norm_axis(axes.map_or(i as i64, |a| a[i]), s.len(), at)?;
        let step = steps.map_or(1, |st| st[i]);
        if step == 0 {
            return Err(bad(at, "slice step 0"));
        }
        let d = s[a] as i128;
        let step = step as i128;
        let clampi = |v: i128, lo: i128, hi: i128| v.max(lo).min(hi);
        let fix = |v: i64| if v < 0 { v as i128 + d } else { v as i128 };
        let (st, en) = if step > 0 {
            (clampi(fix(starts[i]), 0, d), clampi(fix(ends[i]), 0, d))
        } else {
            (
                clampi(fix(starts[i]), 0, d - 1),
                clampi(fix(ends[i]), -1, d - 1),
            )
        };
        let n = if step > 0 {
            if en > st {
                (en - st + step - 1) / step
            } else {
                0
            }
        } else if st > en {
            (st - en - step - 1) / (-step)
        } else {
            0
        };
        o[a] = n as usize;
    }
    Ok(o)
}

/// `[K, N]` weights (MatMul's B) to `[N, K]`, scales and zero points per N unchanged.
fn transpose_kn(w: QWeights) -> QWeights {
    let (kk, nn) = (w.shape[0], w.shape[1]);
    let mut data = vec![0i8; w.data.len()];
    for r in 0..kk {
        for c in 0..nn {
            data[c * kk + r] = w.data[r * nn + c];
        }
    }
    QWeights {
        data,
        shape: vec![nn, kk],
        scales: w.scales,
        zero_points: w.zero_points,
    }
}
