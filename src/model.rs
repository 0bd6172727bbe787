//! Whole quantized networks: a DAG of ops with named inputs and outputs, the
//! model file (safetensors + JSON graph, `docs/MODEL_FORMAT.md`), validation,
//! shape inference, the CPU reference run and the activation memory plan.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Map, Value as Json};

use crate::error::{Error, Result};
use crate::layer::{Conv2dGeometry, LayerKind, QLayer};
use crate::ops::{self, AvgPoolOpts, Pool2d};
use crate::quant::{Activation, QParams, Requant};

/// The format version this build reads and writes.
pub const FORMAT_VERSION: u64 = 1;

/// Element type of a tensor in the graph.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DType {
    F32,
    QUInt8(QParams),
}

/// Shape (one sample's: no batch dimension) and dtype of a tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl DType {
    /// `"float32"` or `"quint8"`.
    pub fn name(&self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::QUInt8(_) => "quint8",
        }
    }
}

impl TensorInfo {
    pub fn qparams(&self) -> Option<QParams> {
        match self.dtype {
            DType::QUInt8(q) => Some(q),
            DType::F32 => None,
        }
    }
    /// Elements of one sample.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Shape with the batch dimension in front.
    pub fn batched(&self, n: usize) -> Vec<usize> {
        std::iter::once(n)
            .chain(self.shape.iter().copied())
            .collect()
    }
}

/// A graph operation.
#[derive(Clone, Debug)]
pub enum Op {
    Quantize(QParams),
    Dequantize,
    Conv2d(Box<QLayer>),
    Linear(Box<QLayer>),
    Add {
        relu: bool,
        out: QParams,
    },
    MaxPool2d(Pool2d),
    AvgPool2d(Pool2d, AvgPoolOpts),
    AdaptiveAvgPool2d([usize; 2]),
    /// Mean over dims [2, 3].
    Mean {
        keepdim: bool,
    },
    Relu,
    Relu6,
    Hardtanh {
        min: f32,
        max: f32,
    },
    Hardswish(QParams),
    /// `flatten(start_dim=1)`.
    Flatten,
    /// Reshape to a per-sample shape.
    Reshape(Vec<usize>),
    /// Concatenation along channels, requantized to these qparams.
    Cat(QParams),
}

impl Op {
    /// The op's name in the model file.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Quantize(_) => "quantize",
            Op::Dequantize => "dequantize",
            Op::Conv2d(_) => "conv2d",
            Op::Linear(_) => "linear",
            Op::Add { .. } => "add",
            Op::MaxPool2d(_) => "max_pool2d",
            Op::AvgPool2d(..) => "avg_pool2d",
            Op::AdaptiveAvgPool2d(_) => "adaptive_avg_pool2d",
            Op::Mean { .. } => "mean",
            Op::Relu => "relu",
            Op::Relu6 => "relu6",
            Op::Hardtanh { .. } => "hardtanh",
            Op::Hardswish(_) => "hardswish",
            Op::Flatten => "flatten",
            Op::Reshape(_) => "reshape",
            Op::Cat(_) => "cat",
        }
    }
}

/// One node: an op, the tensors it reads, and its name (= its output's name).
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<String>,
}

/// A host tensor passed into or out of a model.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    F32 {
        data: Vec<f32>,
        shape: Vec<usize>,
    },
    Q {
        data: Vec<u8>,
        shape: Vec<usize>,
        q: QParams,
    },
}

impl Value {
    /// `"float32"` or `"quint8"`.
    pub fn dtype_name(&self) -> &'static str {
        match self {
            Value::F32 { .. } => "float32",
            Value::Q { .. } => "quint8",
        }
    }
    pub fn shape(&self) -> &[usize] {
        match self {
            Value::F32 { shape, .. } | Value::Q { shape, .. } => shape,
        }
    }
    /// The float data (dequantized if quantized).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Value::F32 { data, .. } => data.clone(),
            Value::Q { data, q, .. } => q.dequantize_slice(data),
        }
    }
}

/// A quantized network: inputs, topologically sorted nodes, outputs.
#[derive(Clone, Debug)]
pub struct Model {
    /// The quantized engine whose arithmetic the non-conv ops follow.
    pub engine: Requant,
    pub inputs: Vec<(String, TensorInfo)>,
    pub outputs: Vec<String>,
    /// In topological order.
    pub nodes: Vec<Node>,
    infos: HashMap<String, TensorInfo>,
}

fn model_err(node: &str, op: &str, msg: impl std::fmt::Display) -> Error {
    Error::Model(format!("node {node:?} ({op}): {msg}"))
}

/// Output info of a node given its inputs' infos (validating them).
fn infer(node: &Node, ins: &[&TensorInfo], engine: Requant) -> Result<TensorInfo> {
    let op = node.op.name();
    let err = |m: String| model_err(&node.name, op, m);
    let want_inputs = match &node.op {
        Op::Add { .. } => 2..=2,
        Op::Cat(_) => 1..=usize::MAX,
        _ => 1..=1,
    };
    if !want_inputs.contains(&ins.len()) {
        return Err(err(format!(
            "takes {} inputs, got {}",
            if ins.len() < 2 { "1" } else { "2" },
            ins.len()
        )));
    }
    let x = ins[0];
    let q_in = || {
        x.qparams().ok_or_else(|| {
            err("input is float32; this op takes a quantized (quint8) tensor".into())
        })
    };
    let four = |what: &str| -> Result<(usize, usize, usize)> {
        match *x.shape {
            [c, h, w] => Ok((c, h, w)),
            _ => Err(err(format!(
                "{what} needs a [C, H, W] input, got {:?}",
                x.shape
            ))),
        }
    };
    let keep = |shape: Vec<usize>| -> Result<TensorInfo> {
        Ok(TensorInfo {
            shape,
            dtype: x.dtype,
        })
    };
    match &node.op {
        Op::Quantize(q) => {
            if x.qparams().is_some() {
                return Err(err("input is already quantized".into()));
            }
            Ok(TensorInfo {
                shape: x.shape.clone(),
                dtype: DType::QUInt8(*q),
            })
        }
        Op::Dequantize => {
            q_in()?;
            Ok(TensorInfo {
                shape: x.shape.clone(),
                dtype: DType::F32,
            })
        }
        Op::Conv2d(l) | Op::Linear(l) => {
            let q = q_in()?;
            if q != l.input {
                return Err(err(format!(
                    "input qparams {q:?} differ from the layer's {:?}",
                    l.input
                )));
            }
            let out = l
                .output_shape(&x.batched(1))
                .map_err(|e| err(e.to_string()))?;
            Ok(TensorInfo {
                shape: out[1..].to_vec(),
                dtype: DType::QUInt8(l.output),
            })
        }
        Op::Add { relu, out } => {
            let (qa, qb) = (
                q_in()?,
                ins[1]
                    .qparams()
                    .ok_or_else(|| err("second input is float32".into()))?,
            );
            if x.shape != ins[1].shape {
                return Err(err(format!(
                    "input shapes differ: {:?} and {:?} (no broadcasting)",
                    x.shape, ins[1].shape
                )));
            }
            if engine == Requant::Qnnpack {
                ops::qnnpack_add_params(qa, qb, *out, *relu).map_err(|e| err(e.to_string()))?;
            }
            Ok(TensorInfo {
                shape: x.shape.clone(),
                dtype: DType::QUInt8(*out),
            })
        }
        Op::MaxPool2d(p) | Op::AvgPool2d(p, _) => {
            q_in()?;
            let (c, h, w) = four(op)?;
            if matches!(node.op, Op::AvgPool2d(..)) && p.dilation != [1, 1] {
                return Err(err("dilation must be [1, 1]".into()));
            }
            if let Op::AvgPool2d(_, o) = &node.op {
                if o.divisor_override == Some(0) {
                    return Err(err("divisor_override must be >= 1".into()));
                }
            }
            let (oh, ow) = p.out_hw(h, w).map_err(|e| err(e.to_string()))?;
            if oh == 0 || ow == 0 {
                return Err(err(format!("output would be empty ({oh}x{ow})")));
            }
            keep(vec![c, oh, ow])
        }
        Op::AdaptiveAvgPool2d([oh, ow]) => {
            q_in()?;
            let (c, _, _) = four(op)?;
            if *oh == 0 || *ow == 0 {
                return Err(err("output_size must be >= 1".into()));
            }
            keep(vec![c, *oh, *ow])
        }
        Op::Mean { keepdim } => {
            q_in()?;
            let (c, _, _) = four(op)?;
            keep(if *keepdim { vec![c, 1, 1] } else { vec![c] })
        }
        Op::Relu | Op::Relu6 => {
            q_in()?;
            keep(x.shape.clone())
        }
        Op::Hardtanh { min, max } => {
            q_in()?;
            if !(min.is_finite() && max.is_finite() && min <= max) {
                return Err(err(format!(
                    "min_val {min} and max_val {max} must be finite with min <= max"
                )));
            }
            keep(x.shape.clone())
        }
        Op::Hardswish(out) => {
            q_in()?;
            Ok(TensorInfo {
                shape: x.shape.clone(),
                dtype: DType::QUInt8(*out),
            })
        }
        Op::Flatten => {
            q_in()?;
            keep(vec![x.numel()])
        }
        Op::Reshape(s) => {
            q_in()?;
            if s.iter().product::<usize>() != x.numel() || s.is_empty() || s.len() > 3 {
                return Err(err(format!("cannot reshape {:?} to {s:?}", x.shape)));
            }
            keep(s.clone())
        }
        Op::Cat(out) => {
            for (i, t) in ins.iter().enumerate() {
                if t.qparams().is_none() {
                    return Err(err(format!("input {i} is float32")));
                }
                if t.shape.len() != x.shape.len()
                    || t.shape.is_empty()
                    || t.shape[1..] != x.shape[1..]
                {
                    return Err(err(format!(
                        "input {i} has shape {:?}, input 0 {:?}: only dim 1 may differ",
                        t.shape, x.shape
                    )));
                }
            }
            let mut s = x.shape.clone();
            s[0] = ins.iter().map(|t| t.shape[0]).sum();
            Ok(TensorInfo {
                shape: s,
                dtype: DType::QUInt8(*out),
            })
        }
    }
}

impl Model {
    /// Validates a graph: unique names, every input resolves, no cycles, every
    /// op's inputs fit it. Sorts the nodes topologically and infers every
    /// tensor's shape and qparams.
    pub fn new(
        engine: Requant,
        inputs: Vec<(String, TensorInfo)>,
        outputs: Vec<String>,
        nodes: Vec<Node>,
    ) -> Result<Model> {
        let mut infos: HashMap<String, TensorInfo> = HashMap::new();
        if inputs.is_empty() {
            return Err(Error::Model("the model has no inputs".into()));
        }
        for (name, info) in &inputs {
            if let Some(q) = info.qparams() {
                q.validate(&format!("model input {name:?}"))?;
            }
            if info.shape.is_empty() || info.shape.len() > 3 || info.shape.contains(&0) {
                return Err(Error::Model(format!(
                    "model input {name:?}: shape {:?} must have 1 to 3 dimensions, all >= 1",
                    info.shape
                )));
            }
            if infos.insert(name.clone(), info.clone()).is_some() {
                return Err(Error::Model(format!(
                    "model input name {name:?} is used twice"
                )));
            }
        }
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            if infos.contains_key(&n.name) || by_name.insert(&n.name, i).is_some() {
                return Err(model_err(&n.name, n.op.name(), "its name is used twice"));
            }
        }
        for n in &nodes {
            for i in &n.inputs {
                if !infos.contains_key(i) && !by_name.contains_key(i.as_str()) {
                    return Err(model_err(
                        &n.name,
                        n.op.name(),
                        format!("input {i:?} is neither a model input nor a node"),
                    ));
                }
            }
        }
        // Kahn's algorithm, keeping file order among ready nodes.
        let mut indeg: Vec<usize> = nodes
            .iter()
            .map(|n| {
                n.inputs
                    .iter()
                    .filter(|i| by_name.contains_key(i.as_str()))
                    .count()
            })
            .collect();
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
        for (j, n) in nodes.iter().enumerate() {
            for i in &n.inputs {
                if let Some(&k) = by_name.get(i.as_str()) {
                    users[k].push(j);
                }
            }
        }
        let mut ready: std::collections::BTreeSet<usize> =
            (0..nodes.len()).filter(|&i| indeg[i] == 0).collect();
        let mut order = Vec::with_capacity(nodes.len());
        while let Some(&i) = ready.iter().next() {
            ready.remove(&i);
            order.push(i);
            for &u in &users[i] {
                indeg[u] -= 1;
                if indeg[u] == 0 {
                    ready.insert(u);
                }
            }
        }
        if order.len() != nodes.len() {
            let stuck: Vec<&str> = (0..nodes.len())
                .filter(|i| !order.contains(i))
                .map(|i| nodes[i].name.as_str())
                .collect();
            return Err(Error::Model(format!(
                "the graph has a cycle through nodes {stuck:?}"
            )));
        }
        let sorted: Vec<Node> = order.into_iter().map(|i| nodes[i].clone()).collect();
        for n in &sorted {
            let ins: Vec<&TensorInfo> = n.inputs.iter().map(|i| &infos[i]).collect();
            let info = infer(n, &ins, engine)?;
            infos.insert(n.name.clone(), info);
        }
        if outputs.is_empty() {
            return Err(Error::Model("the model has no outputs".into()));
        }
        for o in &outputs {
            if !infos.contains_key(o) {
                return Err(Error::Model(format!(
                    "output {o:?} is neither a model input nor a node"
                )));
            }
        }
        Ok(Model {
            engine,
            inputs,
            outputs,
            nodes: sorted,
            infos,
        })
    }

    /// Shape and dtype of any tensor (model input or node output).
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.infos.get(name)
    }

    /// Int8 weight bytes (weights plus per-channel epilogue records, as held on
    /// the GPU) and the bytes the same layers take in f32 (weights + bias).
    pub fn weight_bytes(&self) -> (usize, usize) {
        self.nodes.iter().fold((0, 0), |(a, b), n| match &n.op {
            Op::Conv2d(l) | Op::Linear(l) => {
                let (i, f) = l.weight_bytes();
                (a + i, b + f)
            }
            _ => (a, b),
        })
    }

    /// Checks inputs against the model and returns the batch size.
    pub fn check_inputs(&self, inputs: &[Value]) -> Result<usize> {
        if inputs.len() != self.inputs.len() {
            return Err(Error::shape(
                "model inputs",
                format!(
                    "{} given, the model takes {}",
                    inputs.len(),
                    self.inputs.len()
                ),
            ));
        }
        let mut batch = None;
        for ((name, info), v) in self.inputs.iter().zip(inputs) {
            let s = v.shape();
            if s.len() != info.shape.len() + 1 || s[1..] != info.shape[..] || s[0] == 0 {
                return Err(Error::shape(
                    format!("model input {name:?}"),
                    format!(
                        "got {s:?}, expected [N, {}]",
                        info.shape
                            .iter()
                            .map(|d| d.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            match (v, info.dtype) {
                (Value::F32 { data, .. }, DType::F32) => {
                    crate::layout::check_data_len(data.len(), s)?;
                    if let Some(i) = data.iter().position(|x| !x.is_finite()) {
                        return Err(Error::NonFinite {
                            what: format!("model input {name:?}"),
                            index: i,
                            value: data[i],
                        });
                    }
                }
                (Value::Q { data, q, .. }, DType::QUInt8(want)) => {
                    crate::layout::check_data_len(data.len(), s)?;
                    if *q != want {
                        return Err(Error::qparams(
                            format!("model input {name:?}"),
                            format!("got {q:?}, the model expects {want:?}"),
                        ));
                    }
                }
                (v, _) => {
                    return Err(Error::dtype(
                        format!("model input {name:?}"),
                        format!(
                            "got {}, the model takes {}",
                            v.dtype_name(),
                            info.dtype.name()
                        ),
                    ))
                }
            }
            if *batch.get_or_insert(s[0]) != s[0] {
                return Err(Error::shape(
                    "model inputs",
                    "inputs have different batch sizes",
                ));
            }
        }
        Ok(batch.unwrap_or(1))
    }

    /// Runs the model on the CPU reference path (the oracle for the GPU run).
    /// Inputs in the order of [`Model::inputs`]; outputs in the order of
    /// [`Model::outputs`].
    pub fn run_cpu(&self, inputs: &[Value]) -> Result<Vec<Value>> {
        let n = self.check_inputs(inputs)?;
        let mut env: HashMap<&str, Value> = HashMap::new();
        for ((name, _), v) in self.inputs.iter().zip(inputs) {
            env.insert(name, v.clone());
        }
        for node in &self.nodes {
            let info = &self.infos[&node.name];
            let shape = info.batched(n);
            let q_of = |i: usize| -> (&[u8], &[usize], QParams) {
                match &env[node.inputs[i].as_str()] {
                    Value::Q { data, shape, q } => (data, shape, *q),
                    Value::F32 { .. } => unreachable!("validated: quantized input"),
                }
            };
            let out_q = info.qparams();
            let data: Vec<u8> = match &node.op {
                Op::Quantize(q) => match &env[node.inputs[0].as_str()] {
                    Value::F32 { data, .. } => q.quantize_slice(data),
                    Value::Q { .. } => unreachable!("validated: float input"),
                },
                Op::Dequantize => {
                    let (x, _, q) = q_of(0);
                    env.insert(
                        &node.name,
                        Value::F32 {
                            data: q.dequantize_slice(x),
                            shape,
                        },
                    );
                    continue;
                }
                Op::Conv2d(l) | Op::Linear(l) => crate::cpu::run_layer(l, q_of(0).0, q_of(0).1)?.0,
                Op::Add { relu, out } => {
                    let ((a, s, qa), (b, _, qb)) = (q_of(0), q_of(1));
                    ops::add(self.engine, a, qa, b, qb, s, *relu, *out)?
                }
                Op::MaxPool2d(p) => ops::max_pool2d(self.engine, q_of(0).0, q_of(0).1, p)?.0,
                Op::AvgPool2d(p, o) => {
                    ops::avg_pool2d(self.engine, q_of(0).0, q_of(0).1, q_of(0).2, p, o)?.0
                }
                Op::AdaptiveAvgPool2d(s) => {
                    ops::adaptive_avg_pool2d(self.engine, q_of(0).0, q_of(0).1, q_of(0).2, *s)?.0
                }
                Op::Mean { .. } => ops::mean_hw(self.engine, q_of(0).0, q_of(0).1, q_of(0).2)?,
                Op::Relu => {
                    let t = ops::relu_table(q_of(0).2);
                    q_of(0).0.iter().map(|&v| t[v as usize]).collect()
                }
                Op::Relu6 | Op::Hardtanh { .. } => {
                    let (lo, hi) = match node.op {
                        Op::Hardtanh { min, max } => (min, max),
                        _ => (0.0, 6.0),
                    };
                    let t = ops::hardtanh_table(q_of(0).2, lo, hi)?;
                    q_of(0).0.iter().map(|&v| t[v as usize]).collect()
                }
                Op::Hardswish(out) => {
                    let (x, _, q) = q_of(0);
                    let (tv, ts) = ops::hardswish_tables(self.engine, q, *out);
                    ops::apply_tables(x, &tv, &ts, ops::n_vec(x.len()))
                }
                Op::Flatten | Op::Reshape(_) => q_of(0).0.to_vec(),
                Op::Cat(out) => {
                    let ins: Vec<(&[u8], &[usize], QParams)> =
                        (0..node.inputs.len()).map(q_of).collect();
                    ops::cat(&ins, *out)?.0
                }
            };
            let q = out_q.expect("quantized output");
            env.insert(&node.name, Value::Q { data, shape, q });
        }
        Ok(self
            .outputs
            .iter()
            .map(|o| env[o.as_str()].clone())
            .collect())
    }
}

// ---------------------------------------------------------------------------
// The model file.

fn attr<'a>(node: &str, op: &str, a: &'a Map<String, Json>, key: &str) -> Result<&'a Json> {
    a.get(key)
        .ok_or_else(|| model_err(node, op, format!("missing attribute {key:?}")))
}

fn as_usize(node: &str, op: &str, v: &Json, key: &str) -> Result<usize> {
    v.as_u64().map(|x| x as usize).ok_or_else(|| {
        model_err(
            node,
            op,
            format!("{key:?} must be a non-negative integer, got {v}"),
        )
    })
}

fn pair(node: &str, op: &str, a: &Map<String, Json>, key: &str) -> Result<[usize; 2]> {
    let v = attr(node, op, a, key)?;
    match v.as_array().map(|x| x.as_slice()) {
        Some([h, w]) => Ok([as_usize(node, op, h, key)?, as_usize(node, op, w, key)?]),
        _ => Err(model_err(
            node,
            op,
            format!("{key:?} must be [h, w], got {v}"),
        )),
    }
}

fn qparams_attr(node: &str, op: &str, a: &Map<String, Json>) -> Result<QParams> {
    let s = attr(node, op, a, "scale")?;
    let z = attr(node, op, a, "zero_point")?;
    let scale = s
        .as_f64()
        .ok_or_else(|| model_err(node, op, format!("scale must be a number, got {s}")))?;
    let zp = z
        .as_i64()
        .ok_or_else(|| model_err(node, op, format!("zero_point must be an integer, got {z}")))?;
    if !(scale.is_finite() && scale > 0.0 && (scale as f32) > 0.0 && (scale as f32).is_finite()) {
        return Err(model_err(
            node,
            op,
            format!("scale {scale} must be a finite positive f32"),
        ));
    }
    if !(0..=255).contains(&zp) {
        return Err(model_err(
            node,
            op,
            format!("zero_point {zp} is outside quint8's range 0..=255"),
        ));
    }
    QParams::new(scale as f32, zp as i32).map_err(|e| model_err(node, op, e.to_string()))
}

fn bool_attr(node: &str, op: &str, a: &Map<String, Json>, key: &str) -> Result<bool> {
    let v = attr(node, op, a, key)?;
    v.as_bool()
        .ok_or_else(|| model_err(node, op, format!("{key:?} must be true or false, got {v}")))
}

fn f32_attr(node: &str, op: &str, a: &Map<String, Json>, key: &str) -> Result<f32> {
    let v = attr(node, op, a, key)?;
    v.as_f64()
        .map(|x| x as f32)
        .ok_or_else(|| model_err(node, op, format!("{key:?} must be a number, got {v}")))
}

fn activation_attr(node: &str, op: &str, a: &Map<String, Json>) -> Result<Activation> {
    let v = attr(node, op, a, "activation")?;
    Activation::parse(v.as_str().unwrap_or("")).map_err(|e| model_err(node, op, e.to_string()))
}

/// Typed access to the file's tensors, with errors naming the tensor.
struct Tensors<'a>(safetensors::SafeTensors<'a>);

impl Tensors<'_> {
    fn get(
        &self,
        node: &str,
        name: &str,
        dtype: safetensors::Dtype,
        shape: Option<&[usize]>,
    ) -> Result<(Vec<u8>, Vec<usize>)> {
        let t = self
            .0
            .tensor(name)
            .map_err(|_| model_err(node, "tensor", format!("tensor {name:?} is missing")))?;
        if t.dtype() != dtype {
            return Err(model_err(
                node,
                "tensor",
                format!(
                    "tensor {name:?} has dtype {:?}, expected {dtype:?}",
                    t.dtype()
                ),
            ));
        }
        if let Some(s) = shape {
            if t.shape() != s {
                return Err(model_err(
                    node,
                    "tensor",
                    format!("tensor {name:?} has shape {:?}, expected {s:?}", t.shape()),
                ));
            }
        }
        Ok((t.data().to_vec(), t.shape().to_vec()))
    }
    fn f32(&self, node: &str, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (d, _) = self.get(node, name, safetensors::Dtype::F32, Some(shape))?;
        Ok(d.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
    fn i32(&self, node: &str, name: &str, shape: &[usize]) -> Result<Vec<i32>> {
        let (d, _) = self.get(node, name, safetensors::Dtype::I32, Some(shape))?;
        Ok(d.chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

fn parse_layer(
    name: &str,
    op: &str,
    a: &Map<String, Json>,
    t: &Tensors,
    input: &TensorInfo,
    engine: Requant,
    used: &mut HashSet<String>,
) -> Result<QLayer> {
    let q_in = input.qparams().ok_or_else(|| {
        model_err(
            name,
            op,
            "input is float32; conv2d/linear take a quantized tensor",
        )
    })?;
    let out = qparams_attr(name, op, a)?;
    let act = activation_attr(name, op, a)?;
    let rule = match a.get("requant") {
        Some(v) => Requant::parse(v.as_str().unwrap_or(""))
            .map_err(|e| model_err(name, op, e.to_string()))?,
        None => engine,
    };
    let wname = format!("{name}.weight");
    let (w, wshape) = t.get(name, &wname, safetensors::Dtype::I8, None)?;
    let (kind, geom) = if op == "conv2d" {
        let [o, cg, kh, kw] = wshape[..] else {
            return Err(model_err(
                name,
                op,
                format!("tensor {wname:?} has shape {wshape:?}, expected [O, C/groups, kh, kw]"),
            ));
        };
        let groups = as_usize(name, op, attr(name, op, a, "groups")?, "groups")?;
        let g = Conv2dGeometry::new(cg * groups, o, [kh, kw])
            .stride(pair(name, op, a, "stride")?)
            .padding(pair(name, op, a, "padding")?)
            .dilation(pair(name, op, a, "dilation")?)
            .groups(groups);
        (LayerKind::Conv2d, g)
    } else {
        let [o, k] = wshape[..] else {
            return Err(model_err(
                name,
                op,
                format!("tensor {wname:?} has shape {wshape:?}, expected [O, K]"),
            ));
        };
        (LayerKind::Linear, Conv2dGeometry::linear(k, o))
    };
    let o = geom.out_channels;
    let scales = t.f32(name, &format!("{name}.weight_scale"), &[o])?;
    let zps = t.i32(name, &format!("{name}.weight_zero_point"), &[o])?;
    let bias = t.f32(name, &format!("{name}.bias"), &[o])?;
    for s in ["weight", "weight_scale", "weight_zero_point", "bias"] {
        used.insert(format!("{name}.{s}"));
    }
    let w: Vec<i8> = w.into_iter().map(|b| b as i8).collect();
    QLayer::from_pytorch(kind, geom, w, scales, &zps, bias, q_in, out, act, rule)
        .map_err(|e| model_err(name, op, e))
}

fn node_json(node: &Node) -> Json {
    let mut m = Map::new();
    m.insert("name".into(), json!(node.name));
    m.insert("op".into(), json!(node.op.name()));
    m.insert("inputs".into(), json!(node.inputs));
    let put_q = |m: &mut Map<String, Json>, q: &QParams| {
        m.insert("scale".into(), json!(q.scale as f64));
        m.insert("zero_point".into(), json!(q.zero_point));
    };
    let pool = |m: &mut Map<String, Json>, p: &Pool2d| {
        m.insert("kernel_size".into(), json!(p.kernel));
        m.insert("stride".into(), json!(p.stride));
        m.insert("padding".into(), json!(p.padding));
        m.insert("ceil_mode".into(), json!(p.ceil_mode));
    };
    match &node.op {
        Op::Quantize(q) | Op::Hardswish(q) | Op::Cat(q) => {
            put_q(&mut m, q);
            if matches!(node.op, Op::Cat(_)) {
                m.insert("dim".into(), json!(1));
            }
        }
        Op::Conv2d(l) | Op::Linear(l) => {
            put_q(&mut m, &l.output);
            m.insert("activation".into(), json!(l.activation.name()));
            m.insert("requant".into(), json!(l.requant.name()));
            if l.kind == LayerKind::Conv2d {
                let g = &l.geometry;
                m.insert("stride".into(), json!(g.stride));
                m.insert("padding".into(), json!(g.padding));
                m.insert("dilation".into(), json!(g.dilation));
                m.insert("groups".into(), json!(g.groups));
            }
        }
        Op::Add { relu, out } => {
            put_q(&mut m, out);
            m.insert(
                "activation".into(),
                json!(if *relu { "relu" } else { "none" }),
            );
        }
        Op::MaxPool2d(p) => {
            pool(&mut m, p);
            m.insert("dilation".into(), json!(p.dilation));
        }
        Op::AvgPool2d(p, o) => {
            pool(&mut m, p);
            m.insert("count_include_pad".into(), json!(o.count_include_pad));
            m.insert("divisor_override".into(), json!(o.divisor_override));
        }
        Op::AdaptiveAvgPool2d(s) => {
            m.insert("output_size".into(), json!(s));
        }
        Op::Mean { keepdim } => {
            m.insert("dims".into(), json!([2, 3]));
            m.insert("keepdim".into(), json!(keepdim));
        }
        Op::Hardtanh { min, max } => {
            m.insert("min_val".into(), json!(*min as f64));
            m.insert("max_val".into(), json!(*max as f64));
        }
        Op::Flatten => {
            m.insert("start_dim".into(), json!(1));
            m.insert("end_dim".into(), json!(-1));
        }
        Op::Reshape(s) => {
            m.insert("shape".into(), json!(s));
        }
        Op::Dequantize | Op::Relu | Op::Relu6 => {}
    }
    Json::Object(m)
}

impl Model {
    /// Reads a model file.
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Model> {
        let p = path.as_ref();
        let bytes = std::fs::read(p).map_err(|source| Error::Io {
            path: p.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes).map_err(|e| Error::File {
            path: p.display().to_string(),
            source: Box::new(e),
        })
    }

    /// Parses and validates a model file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| Error::Model(format!("not a valid safetensors file: {e}")))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::Model(format!("not a valid safetensors header: {e}")))?;
        let header = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("qfuse"))
            .ok_or_else(|| {
                Error::Model(
                    "the safetensors header has no \"qfuse\" metadata entry: not a qfuse model"
                        .into(),
                )
            })?;
        let h: Json = serde_json::from_str(header)
            .map_err(|e| Error::Model(format!("the qfuse header is not valid JSON: {e}")))?;
        let top = |k: &str| {
            h.get(k)
                .ok_or_else(|| Error::Model(format!("the qfuse header has no {k:?}")))
        };
        if top("format")?.as_str() != Some("qfuse") {
            return Err(Error::Model(format!(
                "\"format\" is {}, expected \"qfuse\"",
                top("format")?
            )));
        }
        let version = top("format_version")?;
        if version.as_u64() != Some(FORMAT_VERSION) {
            return Err(Error::Model(format!("format_version {version} is not supported: this qfuse reads version {FORMAT_VERSION}")));
        }
        let engine = Requant::parse(top("engine")?.as_str().unwrap_or("?"))
            .map_err(|e| Error::Model(format!("\"engine\": {e}")))?;
        let mut inputs = Vec::new();
        for i in top("inputs")?
            .as_array()
            .ok_or_else(|| Error::Model("\"inputs\" must be a list".into()))?
        {
            let name = i
                .get("name")
                .and_then(Json::as_str)
                .ok_or_else(|| Error::Model(format!("model input {i} has no name")))?;
            let shape: Vec<usize> = i
                .get("shape")
                .and_then(Json::as_array)
                .and_then(|s| {
                    s.iter()
                        .map(|d| d.as_u64().map(|d| d as usize))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| {
                    Error::Model(format!(
                        "model input {name:?} needs a \"shape\" of non-negative integers"
                    ))
                })?;
            let dtype = match i.get("dtype").and_then(Json::as_str) {
                None | Some("float32") => DType::F32,
                Some("quint8") => {
                    DType::QUInt8(qparams_attr(name, "input", i.as_object().unwrap())?)
                }
                Some(d) => {
                    return Err(Error::Model(format!(
                        "model input {name:?}: dtype {d:?} (known: float32, quint8)"
                    )))
                }
            };
            inputs.push((name.to_string(), TensorInfo { shape, dtype }));
        }
        let outputs: Vec<String> = top("outputs")?
            .as_array()
            .and_then(|o| o.iter().map(|x| x.as_str().map(String::from)).collect())
            .ok_or_else(|| Error::Model("\"outputs\" must be a list of names".into()))?;
        let raw = top("nodes")?
            .as_array()
            .ok_or_else(|| Error::Model("\"nodes\" must be a list".into()))?;
        // Parse nodes in dependency order: conv/linear need their input's qparams.
        let mut parsed: Vec<Option<Node>> = vec![None; raw.len()];
        let mut names = Vec::new();
        for (idx, r) in raw.iter().enumerate() {
            let a = r
                .as_object()
                .ok_or_else(|| Error::Model(format!("node #{idx} is not an object")))?;
            let name = a
                .get("name")
                .and_then(Json::as_str)
                .ok_or_else(|| Error::Model(format!("node #{idx} has no name")))?;
            let ins: Vec<String> = a
                .get("inputs")
                .and_then(Json::as_array)
                .and_then(|v| v.iter().map(|x| x.as_str().map(String::from)).collect())
                .ok_or_else(|| {
                    Error::Model(format!("node {name:?}: \"inputs\" must be a list of names"))
                })?;
            names.push((name.to_string(), ins));
        }
        // A provisional model without layers gives the topological order and
        // catches dangling names and cycles with clear messages.
        let placeholder: Vec<Node> = names
            .iter()
            .map(|(n, i)| Node {
                name: n.clone(),
                op: Op::Relu,
                inputs: i.clone(),
            })
            .collect();
        let order = topo_order(&inputs, &placeholder)?;
        let mut infos: HashMap<String, TensorInfo> = inputs.iter().cloned().collect();
        let tensors = Tensors(st);
        let mut used = HashSet::new();
        for idx in order {
            let a = raw[idx].as_object().unwrap();
            let (name, ins) = &names[idx];
            let op_name = a
                .get("op")
                .and_then(Json::as_str)
                .ok_or_else(|| model_err(name, "?", "no \"op\""))?;
            let op_s = op_name;
            let input0 = infos
                .get(&ins.first().cloned().unwrap_or_default())
                .cloned();
            let need_in = || {
                input0
                    .clone()
                    .ok_or_else(|| model_err(name, op_s, "needs an input"))
            };
            let op = match op_name {
                "quantize" => Op::Quantize(qparams_attr(name, op_s, a)?),
                "dequantize" => Op::Dequantize,
                "conv2d" => Op::Conv2d(Box::new(parse_layer(
                    name,
                    op_s,
                    a,
                    &tensors,
                    &need_in()?,
                    engine,
                    &mut used,
                )?)),
                "linear" => Op::Linear(Box::new(parse_layer(
                    name,
                    op_s,
                    a,
                    &tensors,
                    &need_in()?,
                    engine,
                    &mut used,
                )?)),
                "add" => Op::Add {
                    relu: activation_attr(name, op_s, a)? == Activation::Relu,
                    out: qparams_attr(name, op_s, a)?,
                },
                "max_pool2d" | "avg_pool2d" => {
                    let p = Pool2d {
                        kernel: pair(name, op_s, a, "kernel_size")?,
                        stride: pair(name, op_s, a, "stride")?,
                        padding: pair(name, op_s, a, "padding")?,
                        dilation: if op_name == "max_pool2d" {
                            pair(name, op_s, a, "dilation")?
                        } else {
                            [1, 1]
                        },
                        ceil_mode: bool_attr(name, op_s, a, "ceil_mode")?,
                    };
                    if op_name == "max_pool2d" {
                        Op::MaxPool2d(p)
                    } else {
                        let d = attr(name, op_s, a, "divisor_override")?;
                        let divisor_override = if d.is_null() {
                            None
                        } else {
                            Some(as_usize(name, op_s, d, "divisor_override")?)
                        };
                        Op::AvgPool2d(
                            p,
                            AvgPoolOpts {
                                count_include_pad: bool_attr(name, op_s, a, "count_include_pad")?,
                                divisor_override,
                            },
                        )
                    }
                }
                "adaptive_avg_pool2d" => Op::AdaptiveAvgPool2d(pair(name, op_s, a, "output_size")?),
                "mean" => {
                    let dims = attr(name, op_s, a, "dims")?;
                    if *dims != json!([2, 3]) && *dims != json!([-2, -1]) {
                        return Err(model_err(
                            name,
                            op_s,
                            format!("dims {dims} is not supported (only [2, 3])"),
                        ));
                    }
                    Op::Mean {
                        keepdim: bool_attr(name, op_s, a, "keepdim")?,
                    }
                }
                "relu" => Op::Relu,
                "relu6" => Op::Relu6,
                "hardtanh" => Op::Hardtanh {
                    min: f32_attr(name, op_s, a, "min_val")?,
                    max: f32_attr(name, op_s, a, "max_val")?,
                },
                "hardswish" => Op::Hardswish(qparams_attr(name, op_s, a)?),
                "flatten" => {
                    let s = a.get("start_dim").and_then(Json::as_i64).unwrap_or(1);
                    let e = a.get("end_dim").and_then(Json::as_i64).unwrap_or(-1);
                    if s != 1 || e != -1 {
                        return Err(model_err(
                            name,
                            op_s,
                            format!(
                                "flatten({s}, {e}) is not supported (only start_dim 1, end_dim -1)"
                            ),
                        ));
                    }
                    Op::Flatten
                }
                "reshape" => {
                    let v = attr(name, op_s, a, "shape")?;
                    let s: Vec<usize> = v
                        .as_array()
                        .and_then(|s| s.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
                        .ok_or_else(|| {
                            model_err(
                                name,
                                op_s,
                                format!("\"shape\" must be a list of sizes, got {v}"),
                            )
                        })?;
                    Op::Reshape(s)
                }
                "cat" => {
                    let d = attr(name, op_s, a, "dim")?;
                    if d.as_i64() != Some(1) {
                        return Err(model_err(
                            name,
                            op_s,
                            format!("cat along dim {d} is not supported (only dim 1)"),
                        ));
                    }
                    Op::Cat(qparams_attr(name, op_s, a)?)
                }
                other => return Err(model_err(name, other, "unknown op")),
            };
            let node = Node {
                name: name.clone(),
                op,
                inputs: ins.clone(),
            };
            // Ops that keep their input's qparams may state them; they must agree.
            if let (Some(x), true) = (
                &input0,
                a.contains_key("scale")
                    && !matches!(
                        op_name,
                        "quantize" | "conv2d" | "linear" | "add" | "hardswish" | "cat"
                    ),
            ) {
                let q = qparams_attr(name, op_s, a)?;
                if x.qparams() != Some(q) {
                    return Err(model_err(
                        name,
                        op_s,
                        format!(
                            "states output qparams {q:?}, but this op keeps its input's {:?}",
                            x.qparams()
                        ),
                    ));
                }
            }
            let ins_info: Vec<&TensorInfo> = ins.iter().map(|i| &infos[i]).collect();
            let info = infer(&node, &ins_info, engine)?;
            infos.insert(name.clone(), info);
            parsed[idx] = Some(node);
        }
        let extra: Vec<String> = tensors
            .0
            .names()
            .into_iter()
            .filter(|n| !used.contains(*n))
            .map(String::from)
            .collect();
        if !extra.is_empty() {
            return Err(Error::Model(format!(
                "tensors {extra:?} belong to no conv2d/linear node"
            )));
        }
        Model::new(
            engine,
            inputs,
            outputs,
            parsed
                .into_iter()
                .map(|n| n.expect("every node parsed"))
                .collect(),
        )
    }

    /// Serializes the model to the file format.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let header = json!({
            "format": "qfuse",
            "format_version": FORMAT_VERSION,
            "engine": self.engine.name(),
            "inputs": self.inputs.iter().map(|(n, i)| match i.dtype {
                DType::F32 => json!({"name": n, "shape": i.shape}),
                DType::QUInt8(q) => json!({"name": n, "shape": i.shape, "dtype": "quint8", "scale": q.scale as f64, "zero_point": q.zero_point}),
            }).collect::<Vec<_>>(),
            "outputs": self.outputs,
            "nodes": self.nodes.iter().map(node_json).collect::<Vec<_>>(),
        });
        let mut data: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for n in &self.nodes {
            if let Op::Conv2d(l) | Op::Linear(l) = &n.op {
                let g = &l.geometry;
                let o = g.out_channels;
                let wshape = if l.kind == LayerKind::Conv2d {
                    vec![o, g.cin_per_group(), g.kernel[0], g.kernel[1]]
                } else {
                    vec![o, g.in_channels]
                };
                let f = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
                data.push((
                    format!("{}.weight", n.name),
                    safetensors::Dtype::I8,
                    wshape,
                    l.weight.iter().map(|&w| w as u8).collect(),
                ));
                data.push((
                    format!("{}.weight_scale", n.name),
                    safetensors::Dtype::F32,
                    vec![o],
                    f(&l.weight_scale),
                ));
                data.push((
                    format!("{}.weight_zero_point", n.name),
                    safetensors::Dtype::I32,
                    vec![o],
                    vec![0u8; 4 * o],
                ));
                data.push((
                    format!("{}.bias", n.name),
                    safetensors::Dtype::F32,
                    vec![o],
                    f(&l.bias),
                ));
            }
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = data
            .iter()
            .map(|(n, d, s, b)| {
                Ok((
                    n.clone(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b)
                        .map_err(|e| Error::Model(e.to_string()))?,
                ))
            })
            .collect::<Result<_>>()?;
        let meta = HashMap::from([("qfuse".to_string(), header.to_string())]);
        safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::Model(format!("serializing: {e}")))
    }

    /// Writes the model file.
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let p = path.as_ref();
        std::fs::write(p, self.to_bytes()?).map_err(|source| Error::Io {
            path: p.display().to_string(),
            source,
        })
    }
}

/// Topological order of nodes (indices), rejecting dangling names and cycles.
fn topo_order(inputs: &[(String, TensorInfo)], nodes: &[Node]) -> Result<Vec<usize>> {
    let input_names: HashSet<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        if input_names.contains(n.name.as_str()) || by_name.insert(&n.name, i).is_some() {
            return Err(Error::Model(format!(
                "node name {:?} is used twice",
                n.name
            )));
        }
    }
    for n in nodes {
        for i in &n.inputs {
            if !input_names.contains(i.as_str()) && !by_name.contains_key(i.as_str()) {
                return Err(Error::Model(format!("node {:?}: input {i:?} is neither a model input nor a node (dangling reference)", n.name)));
            }
        }
    }
    let mut state = vec![0u8; nodes.len()]; // 0 new, 1 on stack, 2 done
    let mut order = Vec::new();
    fn visit(
        i: usize,
        nodes: &[Node],
        by_name: &HashMap<&str, usize>,
        state: &mut [u8],
        order: &mut Vec<usize>,
    ) -> Result<()> {
        match state[i] {
            2 => return Ok(()),
            1 => {
                return Err(Error::Model(format!(
                    "the graph has a cycle through node {:?}",
                    nodes[i].name
                )))
            }
            _ => {}
        }
        state[i] = 1;
        for inp in &nodes[i].inputs {
            if let Some(&j) = by_name.get(inp.as_str()) {
                visit(j, nodes, by_name, state, order)?;
            }
        }
        state[i] = 2;
        order.push(i);
        Ok(())
    }
    for i in 0..nodes.len() {
        visit(i, nodes, &by_name, &mut state, &mut order)?;
    }
    Ok(order)
}

/// Folds each standalone `relu`, `relu6` or `hardtanh` that is the only reader
/// of a conv2d/linear output into that layer's epilogue clamp. The result is
/// bit-identical: a clamp of an already clamped byte is one clamp with both
/// bounds clamped, `clamp(clamp(x, lo, hi), a, b) = clamp(x, clamp(lo, a, b),
/// clamp(hi, a, b))`. The folded op becomes an identity reshape (no dispatch on
/// the GPU). PyTorch's `convert_fx` leaves ReLU6 after a conv as its own op;
/// this saves a pass over the tensor and the tensor itself.
pub fn fuse_activations(model: &Model) -> Result<Model> {
    let mut nodes = model.nodes.clone();
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for n in &model.nodes {
        for i in &n.inputs {
            *readers.entry(i.as_str()).or_default() += 1;
        }
    }
    for o in &model.outputs {
        *readers.entry(o.as_str()).or_default() += 1;
    }
    let index: HashMap<String, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), i))
        .collect();
    for j in 0..nodes.len() {
        let q = match model.info(&nodes[j].inputs[0]).and_then(|t| t.qparams()) {
            Some(q) => q,
            None => continue,
        };
        let table = match nodes[j].op {
            Op::Relu => ops::relu_table(q),
            Op::Relu6 => ops::hardtanh_table(q, 0.0, 6.0)?,
            Op::Hardtanh { min, max } => ops::hardtanh_table(q, min, max)?,
            _ => continue,
        };
        let src = nodes[j].inputs[0].clone();
        let Some(&i) = index.get(&src) else { continue };
        if readers.get(src.as_str()) != Some(&1) {
            continue;
        }
        let (a, b) = (table[0] as i32, table[255] as i32);
        match &mut nodes[i].op {
            Op::Conv2d(l) | Op::Linear(l) => {
                let e = &mut l.epilogue;
                (e.lo, e.hi) = (e.lo.clamp(a, b), e.hi.clamp(a, b));
            }
            _ => continue,
        }
        let shape = model.info(&src).expect("validated").shape.clone();
        nodes[j].op = Op::Reshape(shape);
    }
    Model::new(
        model.engine,
        model.inputs.clone(),
        model.outputs.clone(),
        nodes,
    )
}
