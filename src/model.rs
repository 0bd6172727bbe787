//! Whole quantized networks: a DAG of ops with named inputs and outputs,
//! validation and shape inference (once, when a model is built or loaded),
//! the CPU reference run, and the activation-fusion pass. The model file is
//! in [`file`] (safetensors + JSON graph, `docs/MODEL_FORMAT.md`). Everything
//! op-specific is in the op's module under [`crate::ops`]; this module is
//! the generic driver.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::error::{Error, Result};
use crate::ops::{CpuIo, Signature};
use crate::quant::{Engine, QParams, Requant};

mod file;

pub use crate::ops::Op;
pub use file::{FORMAT_VERSION, MIN_FORMAT_VERSION};

/// The largest kernel size, stride, dilation, padding and pooling output
/// size a model may have in any dimension (2^16). Real networks stay far
/// below it; the bound keeps every shape computation exact.
pub const MAX_WINDOW: usize = 1 << 16;

/// The most bytes one sample of any tensor of a model may take (2^31): each
/// tensor's inferred shape is checked against it, with checked arithmetic,
/// when a model is built or loaded.
pub const MAX_SAMPLE_BYTES: usize = 1 << 31;

/// The most channels (conv/linear in or out channels, features) a layer may
/// have (2^24).
pub const MAX_CHANNELS: usize = 1 << 24;

/// Checks one tensor's per-sample shape against [`MAX_SAMPLE_BYTES`] (with
/// checked arithmetic; `elem` bytes per element).
pub(crate) fn check_tensor_size(what: &str, shape: &[usize], elem: usize) -> Result<()> {
    let bytes = shape
        .iter()
        .try_fold(elem, |a, &d| a.checked_mul(d))
        .unwrap_or(usize::MAX);
    if bytes > MAX_SAMPLE_BYTES {
        return Err(Error::TooLarge {
            what: format!("{what} of shape {shape:?} (bytes of one sample)"),
            needed: bytes as u64,
            limit: MAX_SAMPLE_BYTES as u64,
        });
    }
    Ok(())
}

impl TensorInfo {
    /// Bytes of one element on the host.
    fn elem_bytes(&self) -> usize {
        match self.dtype {
            DType::F32 => 4,
            DType::QUInt8(_) => 1,
        }
    }
}

/// Element type of a tensor in the graph.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DType {
    /// IEEE float32 (a model input, or a dequantized output).
    F32,
    /// 8-bit affine quantized, with its scale and zero point: quint8, or
    /// qint8 held as uint8 images when `QParams::signed` (see [`QParams`]).
    QUInt8(QParams),
}

impl DType {
    /// `"float32"`, `"quint8"` or `"qint8"`.
    pub fn name(&self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::QUInt8(q) => q.dtype_name(),
        }
    }
}

/// Shape (one sample's: no batch dimension) and dtype of a tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Per-sample shape, e.g. `[C, H, W]` or `[F]` (the batch size is chosen
    /// per run).
    pub shape: Vec<usize>,
    /// Element type, with the qparams of a quantized tensor.
    pub dtype: DType,
}

impl TensorInfo {
    /// The qparams of a quint8 tensor; `None` for float32.
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

/// One node: an op, the tensors it reads, and its name (= its output's name).
#[derive(Clone, Debug)]
pub struct Node {
    /// Unique in the model; other nodes and the outputs refer to the node's
    /// output tensor by it.
    pub name: String,
    /// What the node computes.
    pub op: Op,
    /// Names of the tensors it reads (model inputs or earlier nodes), in the
    /// op's argument order.
    pub inputs: Vec<String>,
}

/// A host tensor passed into or out of a model.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A float32 tensor.
    F32 {
        /// The elements, row-major (NCHW for images);
        /// `data.len()` is the product of `shape`.
        data: Vec<f32>,
        /// Full shape, batch dimension first (`[N, C, H, W]`, `[N, F]`).
        shape: Vec<usize>,
    },
    /// A quantized tensor: `real = (data[i] - q.zero_point) * q.scale`. For
    /// a qint8 tensor (`q.signed`) `data` holds the uint8 images `v + 128` of
    /// the int8 values `v` (and `q.zero_point` is the image's);
    /// [`Value::q_i8`] gives the int8 values.
    Q {
        /// The quantized elements, row-major (NCHW for images);
        /// `data.len()` is the product of `shape`.
        data: Vec<u8>,
        /// Full shape, batch dimension first.
        shape: Vec<usize>,
        /// Scale and zero point of every element.
        q: QParams,
    },
}

impl Value {
    /// The full shape, batch dimension first.
    pub fn shape(&self) -> &[usize] {
        match self {
            Value::F32 { shape, .. } | Value::Q { shape, .. } => shape,
        }
    }
    /// `"float32"`, `"quint8"` or `"qint8"`.
    pub fn dtype_name(&self) -> &'static str {
        match self {
            Value::F32 { .. } => "float32",
            Value::Q { q, .. } => q.dtype_name(),
        }
    }
    /// The int8 values of a qint8 tensor (its bytes minus 128) with its int8
    /// zero point; `None` for float32 and quint8 tensors.
    pub fn q_i8(&self) -> Option<(Vec<i8>, i32)> {
        match self {
            Value::Q { data, q, .. } if q.signed => Some((
                data.iter().map(|&b| (b ^ 0x80) as i8).collect(),
                q.true_zero_point(),
            )),
            _ => None,
        }
    }
    /// A qint8 tensor from int8 values and their int8 qparams (`q` from
    /// [`QParams::new_i8`]).
    pub fn from_i8(data: &[i8], shape: Vec<usize>, q: QParams) -> Value {
        debug_assert!(q.signed);
        Value::Q {
            data: data.iter().map(|&v| (v as u8) ^ 0x80).collect(),
            shape,
            q,
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

/// A validated quantized network: inputs, topologically sorted nodes,
/// outputs, and every tensor's inferred shape and dtype. Its parts are read
/// through accessors; a model is changed only by building a new one
/// ([`Model::new`], [`Model::from_bytes`], [`fuse_activations`]), so a
/// `Model` is always valid.
#[derive(Clone, Debug)]
pub struct Model {
    engine: Requant,
    /// The PyTorch engine the model was converted with, as the file records
    /// it (`x86` computes with fbgemm's arithmetic: `engine` is then `Fbgemm`).
    pytorch_engine: Engine,
    inputs: Vec<(String, TensorInfo)>,
    outputs: Vec<String>,
    nodes: Vec<Node>,
    infos: HashMap<String, TensorInfo>,
    /// The tensors PyTorch holds channels-last, from the graph as built or
    /// loaded ([`crate::memory_format::channels_last_tensors`]); kept by
    /// [`fuse_activations`], whose folded clamps do not change PyTorch's layouts.
    channels_last: HashSet<String>,
}

impl Model {
    /// A model from validated, sorted parts; its engine recorded as the
    /// arithmetic's own ([`Model::with_pytorch_engine`] changes it) and its
    /// memory formats derived from the graph.
    pub(crate) fn from_parts(
        engine: Requant,
        inputs: Vec<(String, TensorInfo)>,
        outputs: Vec<String>,
        nodes: Vec<Node>,
        infos: HashMap<String, TensorInfo>,
    ) -> Model {
        let mut m = Model {
            engine,
            pytorch_engine: Engine::from(engine),
            inputs,
            outputs,
            nodes,
            infos,
            channels_last: HashSet::new(),
        };
        m.channels_last = crate::memory_format::channels_last_tensors(&m);
        m
    }
}

/// Checks the model inputs' declarations; their infos by name.
fn check_inputs_decl(inputs: &[(String, TensorInfo)]) -> Result<HashMap<String, TensorInfo>> {
    if inputs.is_empty() {
        return Err(Error::Model("the model has no inputs".into()));
    }
    let mut infos = HashMap::with_capacity(inputs.len());
    for (name, info) in inputs {
        if let Some(q) = info.qparams() {
            q.validate(&format!("model input {name:?}"))?;
        }
        if info.shape.is_empty() || info.shape.len() > 3 || info.shape.contains(&0) {
            return Err(Error::Model(format!(
                "model input {name:?}: shape {:?} must have 1 to 3 dimensions, all >= 1",
                info.shape
            )));
        }
        check_tensor_size(
            &format!("model input {name:?}"),
            &info.shape,
            info.elem_bytes(),
        )?;
        if infos.insert(name.clone(), info.clone()).is_some() {
            return Err(Error::Model(format!(
                "model input name {name:?} is used twice"
            )));
        }
    }
    Ok(infos)
}

/// The topological order of nodes given as `(name, inputs)`: Kahn's
/// algorithm, iterative, keeping file order among ready nodes. Rejects
/// duplicate names, names that are neither a model input nor a node
/// (dangling references) and cycles.
pub(crate) fn topo_order<'a>(
    model_inputs: &HashSet<&str>,
    nodes: &[(&'a str, &'a [String])],
) -> Result<Vec<usize>> {
    let mut by_name: HashMap<&str, usize> = HashMap::with_capacity(nodes.len());
    for (i, (n, _)) in nodes.iter().enumerate() {
        if model_inputs.contains(n) || by_name.insert(n, i).is_some() {
            return Err(Error::Model(format!("node name {n:?} is used twice")));
        }
    }
    let mut indeg = vec![0usize; nodes.len()];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (j, (n, ins)) in nodes.iter().enumerate() {
        for i in ins.iter() {
            match by_name.get(i.as_str()) {
                Some(&k) => {
                    indeg[j] += 1;
                    users[k].push(j);
                }
                None if model_inputs.contains(i.as_str()) => {}
                None => {
                    return Err(Error::Model(format!(
                        "node {n:?}: input {i:?} is neither a model input nor a node (dangling reference)"
                    )))
                }
            }
        }
    }
    let mut ready: BTreeSet<usize> = (0..nodes.len()).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop_first() {
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
            .filter(|&i| indeg[i] > 0)
            .map(|i| nodes[i].0)
            .collect();
        return Err(Error::Model(format!(
            "the graph has a cycle through nodes {stuck:?}"
        )));
    }
    Ok(order)
}

/// Output info of a node given its inputs' infos (validating them), with
/// errors naming the node.
pub(crate) fn infer_node(node: &Node, ins: &[&TensorInfo], engine: Requant) -> Result<TensorInfo> {
    let kind = node.op.kind();
    kind.arity()
        .check(ins.len())
        .and_then(|()| kind.infer(engine, ins))
        .and_then(|info| {
            check_tensor_size("output", &info.shape, info.elem_bytes())?;
            Ok(info)
        })
        .map_err(|e| e.in_node(&node.name, kind.name()))
}

/// Checks that every output names a tensor.
fn check_outputs(outputs: &[String], infos: &HashMap<String, TensorInfo>) -> Result<()> {
    if outputs.is_empty() {
        return Err(Error::Model("the model has no outputs".into()));
    }
    for o in outputs {
        if !infos.contains_key(o) {
            return Err(Error::Model(format!(
                "output {o:?} is neither a model input nor a node"
            )));
        }
    }
    Ok(())
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
        if engine == Requant::Onednn {
            return Err(Error::Model(
                "\"onednn\" is a conv/linear requantization rule, not a model's arithmetic: \
                 build the model with Requant::Fbgemm (what PyTorch's x86 and onednn engines \
                 compute the other ops with) and give its layers Requant::Onednn"
                    .into(),
            ));
        }
        let mut infos = check_inputs_decl(&inputs)?;
        let names: HashSet<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
        let edges: Vec<(&str, &[String])> = nodes
            .iter()
            .map(|n| (n.name.as_str(), n.inputs.as_slice()))
            .collect();
        let order = topo_order(&names, &edges)?;
        let mut slots: Vec<Option<Node>> = nodes.into_iter().map(Some).collect();
        let mut sorted = Vec::with_capacity(slots.len());
        for i in order {
            let n = slots[i].take().expect("each index once");
            let ins: Vec<&TensorInfo> = n.inputs.iter().map(|i| &infos[i]).collect();
            let info = infer_node(&n, &ins, engine)?;
            infos.insert(n.name.clone(), info);
            sorted.push(n);
        }
        check_outputs(&outputs, &infos)?;
        Ok(Model::from_parts(engine, inputs, outputs, sorted, infos))
    }

    /// The quantized engine whose arithmetic the non-conv ops follow.
    pub fn engine(&self) -> Requant {
        self.engine
    }
    /// The PyTorch engine the model was converted with, as its file records
    /// it (by default the one named like [`Model::engine`]).
    pub fn pytorch_engine(&self) -> Engine {
        self.pytorch_engine
    }
    /// Records the PyTorch engine the model was converted with (written to
    /// the model file); it must compute with this model's arithmetic
    /// ([`Engine::requant`] equal to [`Model::engine`]), else an error.
    pub fn with_pytorch_engine(mut self, e: Engine) -> Result<Model> {
        if e.requant() != self.engine {
            return Err(Error::Model(format!(
                "engine {:?} computes with {} arithmetic, the model with {}",
                e.name(),
                e.requant().name(),
                self.engine.name()
            )));
        }
        self.pytorch_engine = e;
        Ok(self)
    }
    /// Whether PyTorch holds tensor `name` channels-last (see
    /// [`crate::memory_format`]); some kernels round differently then.
    pub fn is_channels_last(&self, name: &str) -> bool {
        self.channels_last.contains(name)
    }
    /// The model inputs, in the order [`Model::run_cpu`] takes them.
    pub fn inputs(&self) -> &[(String, TensorInfo)] {
        &self.inputs
    }
    /// The names of the tensors the model returns, in order.
    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }
    /// The nodes, in topological order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Shape and dtype of any tensor (model input or node output).
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.infos.get(name)
    }

    /// What lowering a node sees: the engine, its inputs' and output's infos
    /// and which inputs PyTorch holds channels-last.
    pub(crate) fn signature(&self, node: &Node) -> Signature<'_> {
        Signature {
            engine: self.engine,
            inputs: node.inputs.iter().map(|i| &self.infos[i]).collect(),
            channels_last: node
                .inputs
                .iter()
                .map(|i| self.is_channels_last(i))
                .collect(),
            output: &self.infos[&node.name],
        }
    }

    /// Int8 weight bytes (weights plus per-channel epilogue records, as held on
    /// the GPU) and the bytes the same layers take in f32 (weights + bias).
    pub fn weight_bytes(&self) -> (usize, usize) {
        self.nodes.iter().fold((0, 0), |(a, b), n| {
            let (i, f) = n.op.kind().weight_bytes();
            (a + i, b + f)
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
    /// [`Model::outputs`]. Each node is lowered (its constants computed) and
    /// run by its op's CPU loop.
    pub fn run_cpu(&self, inputs: &[Value]) -> Result<Vec<Value>> {
        let n = self.check_inputs(inputs)?;
        let mut env: HashMap<&str, Value> = HashMap::with_capacity(self.nodes.len() + inputs.len());
        for ((name, _), v) in self.inputs.iter().zip(inputs) {
            env.insert(name, v.clone());
        }
        for node in &self.nodes {
            let kind = node.op.kind();
            let in_node = |e: Error| e.in_node(&node.name, kind.name());
            let lowered = kind.lower(&self.signature(node)).map_err(in_node)?;
            let io = CpuIo {
                batch: n,
                inputs: node.inputs.iter().map(|i| &env[i.as_str()]).collect(),
                output: &self.infos[&node.name],
            };
            let v = lowered.run_cpu(&io).map_err(in_node)?;
            env.insert(&node.name, v);
        }
        Ok(self
            .outputs
            .iter()
            .map(|o| env[o.as_str()].clone())
            .collect())
    }
}

/// Folds each op that only clamps bytes (`relu`, `relu6`, `hardtanh`) into
/// the op it reads when that op can absorb a clamp (a conv2d/linear epilogue)
/// and nothing else reads it. The result is bit-identical: a clamp of an
/// already clamped byte is one clamp with both bounds clamped,
/// `clamp(clamp(x, lo, hi), a, b) = clamp(x, clamp(lo, a, b), clamp(hi, a, b))`.
/// The folded op becomes an identity reshape (no dispatch on the GPU). The
/// new clamp is part of the layer, and of its file form (`clamp`), so the
/// fused model saves and loads with the same outputs. PyTorch's `convert_fx`
/// leaves ReLU6 after a conv as its own op; this saves a pass over the tensor
/// and the tensor itself. Tensor infos do not change, so the model is not
/// validated again.
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
    let index: HashMap<&str, usize> = model
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    for j in 0..nodes.len() {
        let [src] = &nodes[j].inputs[..] else {
            continue;
        };
        let Some(q) = model.info(src).and_then(|t| t.qparams()) else {
            continue;
        };
        let Some((a, b)) = nodes[j].op.kind().byte_clamp(q)? else {
            continue;
        };
        let Some(&i) = index.get(src.as_str()) else {
            continue;
        };
        if readers.get(src.as_str()) != Some(&1) {
            continue;
        }
        let Some(op) = nodes[i].op.kind().with_clamp(a, b)? else {
            continue;
        };
        let shape = model.info(src).expect("validated").shape.clone();
        nodes[i].op = op;
        nodes[j].op = Op::Reshape(shape);
    }
    Ok(Model {
        engine: model.engine,
        pytorch_engine: model.pytorch_engine,
        inputs: model.inputs.clone(),
        outputs: model.outputs.clone(),
        nodes,
        infos: model.infos.clone(),
        channels_last: model.channels_last.clone(),
    })
}
