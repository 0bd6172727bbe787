//! Reading an ONNX model: protobuf decoding, opset check, initializers,
//! `Constant` folding, value infos, topological order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::RangeInclusive;
use std::path::Path;

use prost::Message;

use super::proto;
use super::tensor::{decode_tensor, ElemType, Tensor, TensorData};
use super::{bad, unsupported};
use crate::error::{Error, Result};

/// The opset versions of the default ONNX domain qfuse reads.
pub const DEFAULT_OPSETS: RangeInclusive<i64> = 13..=21;

/// The Microsoft contrib domain (QGemm, QLinearAdd, ...).
pub(crate) const MS_DOMAIN: &str = "com.microsoft";

/// One dimension of a declared shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    /// A known size.
    Known(usize),
    /// A named symbolic size (`dim_param`, e.g. a dynamic batch).
    Param(String),
    /// Neither given.
    Unknown,
}

/// A graph input, output or `value_info` entry: name, element type and shape
/// as declared in the file.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    /// Tensor name.
    pub name: String,
    /// `TensorProto.DataType` code (0 when not given).
    pub elem_code: i32,
    /// Declared shape, None when the file gives no shape (unknown rank).
    pub shape: Option<Vec<Dim>>,
}

impl ValueInfo {
    /// The element type, or an error naming the value and the type.
    pub fn elem(&self) -> Result<ElemType> {
        ElemType::from_onnx(self.elem_code, &format!("tensor '{}'", self.name))
    }

    /// The shape if every dimension is known.
    pub fn known_shape(&self) -> Option<Vec<usize>> {
        self.shape.as_ref().and_then(|s| {
            s.iter()
                .map(|d| match d {
                    Dim::Known(n) => Some(*n),
                    _ => None,
                })
                .collect()
        })
    }
}

/// A node attribute.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// `f`
    Float(f32),
    /// `i`
    Int(i64),
    /// `s` (bytes; ONNX strings are UTF-8 by convention)
    String(Vec<u8>),
    /// `t`
    Tensor(Tensor),
    /// `floats`
    Floats(Vec<f32>),
    /// `ints`
    Ints(Vec<i64>),
    /// `strings`
    Strings(Vec<Vec<u8>>),
    /// A kind qfuse does not read (graph, sparse tensor, type proto, ...); the
    /// name of the kind.
    Other(&'static str),
}

/// A node of the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The node's name (often empty).
    pub name: String,
    /// `op_type`.
    pub op_type: String,
    /// Domain: "" for the default ONNX domain (also written "ai.onnx"),
    /// "com.microsoft" for the contrib ops.
    pub domain: String,
    /// Input names ("" for an omitted optional input).
    pub inputs: Vec<String>,
    /// Output names.
    pub outputs: Vec<String>,
    /// Attributes by name.
    pub attrs: BTreeMap<String, Attr>,
    /// Position of the node in the file (0-based).
    pub index: usize,
}

impl Node {
    /// How errors name the node: `node 'name' (Conv)`, or without a name
    /// `node #3 (Conv -> y)`.
    pub fn describe(&self) -> String {
        let op = if self.domain.is_empty() {
            self.op_type.clone()
        } else {
            format!("{}::{}", self.domain, self.op_type)
        };
        if self.name.is_empty() {
            let out = self.outputs.first().map(String::as_str).unwrap_or("");
            format!("node #{} ({op} -> {out})", self.index)
        } else {
            format!("node '{}' ({op})", self.name)
        }
    }

    /// Integer attribute with a default.
    pub fn attr_int(&self, name: &str, default: i64) -> Result<i64> {
        match self.attrs.get(name) {
            None => Ok(default),
            Some(Attr::Int(v)) => Ok(*v),
            Some(_) => Err(bad(
                self.describe(),
                format!("attribute {name} is not an integer"),
            )),
        }
    }

    /// Float attribute with a default.
    pub fn attr_float(&self, name: &str, default: f32) -> Result<f32> {
        match self.attrs.get(name) {
            None => Ok(default),
            Some(Attr::Float(v)) => Ok(*v),
            Some(_) => Err(bad(
                self.describe(),
                format!("attribute {name} is not a float"),
            )),
        }
    }

    /// Integer-list attribute (None when absent).
    pub fn attr_ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v.clone())),
            Some(_) => Err(bad(
                self.describe(),
                format!("attribute {name} is not a list of integers"),
            )),
        }
    }

    /// String attribute (None when absent).
    pub fn attr_str(&self, name: &str) -> Result<Option<String>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::String(v)) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
            Some(_) => Err(bad(
                self.describe(),
                format!("attribute {name} is not a string"),
            )),
        }
    }

    /// Input `i` if present and not empty.
    pub fn input(&self, i: usize) -> Option<&str> {
        self.inputs
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// A parsed ONNX model: the main graph with its constants, in topological order.
#[derive(Clone, Debug, PartialEq)]
pub struct OnnxGraph {
    /// `ModelProto.ir_version`.
    pub ir_version: i64,
    /// Opset of the default ONNX domain (13 to 21).
    pub opset: i64,
    /// Opset of `com.microsoft`, if imported.
    pub ms_opset: Option<i64>,
    /// `producer_name` and `producer_version`.
    pub producer: String,
    /// Graph inputs fed at run time (initializers also listed as inputs, as
    /// older exporters write them, are constants and not in this list).
    pub inputs: Vec<ValueInfo>,
    /// Graph outputs.
    pub outputs: Vec<ValueInfo>,
    /// Initializers and the values of `Constant` nodes, by name.
    pub initializers: HashMap<String, Tensor>,
    /// The nodes in topological order (`Constant` nodes folded away).
    pub nodes: Vec<Node>,
    /// `value_info` entries by name (intermediate shapes, where the file has them).
    pub value_info: HashMap<String, ValueInfo>,
}

impl OnnxGraph {
    /// Load `path`; external data files are looked up in the model's folder.
    pub fn load(path: impl AsRef<Path>) -> Result<OnnxGraph> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        Self::decode(&bytes, Some(dir))
    }

    /// Parse a model held in memory. A model with external data needs
    /// [`OnnxGraph::load`] (the data files are found next to it).
    pub fn from_bytes(bytes: &[u8]) -> Result<OnnxGraph> {
        Self::decode(bytes, None)
    }

    /// Parse a model held in memory whose external data files lie in `dir`.
    pub fn from_bytes_with_dir(bytes: &[u8], dir: &Path) -> Result<OnnxGraph> {
        Self::decode(bytes, Some(dir))
    }

    /// True when `bytes` look like an ONNX `ModelProto` (decodes, has a graph
    /// and an opset import). For picking the loader by content.
    pub fn sniff(bytes: &[u8]) -> bool {
        // field 1 (ir_version, varint) comes first in every writer's output
        bytes.first() == Some(&0x08)
            && proto::ModelProto::decode(bytes)
                .map(|m| m.graph.is_some() && !m.opset_import.is_empty())
                .unwrap_or(false)
    }

    fn decode(bytes: &[u8], dir: Option<&Path>) -> Result<OnnxGraph> {
        let model = proto::ModelProto::decode(bytes).map_err(|e| {
            bad(
                "protobuf",
                format!(
                    "cannot decode the ModelProto ({} bytes): {e} (truncated or not an ONNX file?)",
                    bytes.len()
                ),
            )
        })?;
        let ir_version = model.ir_version.unwrap_or(0);
        if ir_version < 3 {
            return Err(unsupported(
                "ModelProto.ir_version",
                format!("IR version {ir_version}; qfuse reads IR version 3 and later (with opset imports)"),
            ));
        }
        let mut opset = None;
        let mut ms_opset = None;
        let mut other_domains = HashSet::new();
        for imp in &model.opset_import {
            let domain = imp.domain.as_deref().unwrap_or("");
            let version = imp.version.unwrap_or(0);
            match domain {
                "" | "ai.onnx" => opset = Some(version),
                MS_DOMAIN => ms_opset = Some(version),
                d => {
                    other_domains.insert(d.to_string());
                }
            }
        }
        let opset = opset.ok_or_else(|| {
            bad(
                "ModelProto.opset_import",
                "no opset imported for the default ONNX domain",
            )
        })?;
        if !DEFAULT_OPSETS.contains(&opset) {
            return Err(unsupported(
                "ModelProto.opset_import",
                format!(
                    "opset {opset} of the default ONNX domain; qfuse reads opsets {} to {}",
                    DEFAULT_OPSETS.start(),
                    DEFAULT_OPSETS.end()
                ),
            ));
        }
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| bad("ModelProto.graph", "the model has no graph"))?;
        if !graph.sparse_initializer.is_empty() {
            return Err(unsupported(
                format!(
                    "sparse initializer '{}'",
                    graph.sparse_initializer[0]
                        .values
                        .as_ref()
                        .and_then(|v| v.name.clone())
                        .unwrap_or_default()
                ),
                "sparse initializers",
            ));
        }

        let mut initializers = HashMap::new();
        for t in &graph.initializer {
            let name = t.name.clone().unwrap_or_default();
            let at = format!("initializer '{name}'");
            if name.is_empty() {
                return Err(bad(at, "initializer without a name"));
            }
            let tensor = decode_tensor(t, &at, dir)?;
            if initializers.insert(name, tensor).is_some() {
                return Err(bad(at, "two initializers with this name"));
            }
        }

        let value_info_of = |v: &proto::ValueInfoProto| -> Result<ValueInfo> {
            let name = v.name.clone().unwrap_or_default();
            if name.is_empty() {
                return Err(bad("ValueInfoProto", "value without a name"));
            }
            let (elem_code, shape) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                Some(proto::type_proto::Value::TensorType(tt)) => (
                    tt.elem_type.unwrap_or(0),
                    tt.shape.as_ref().map(|s| {
                        s.dim
                            .iter()
                            .map(|d| match &d.value {
                                Some(proto::tensor_shape_proto::dimension::Value::DimValue(n)) => {
                                    usize::try_from(*n).map(Dim::Known).unwrap_or(Dim::Unknown)
                                }
                                Some(proto::tensor_shape_proto::dimension::Value::DimParam(p)) => {
                                    Dim::Param(p.clone())
                                }
                                None => Dim::Unknown,
                            })
                            .collect()
                    }),
                ),
                Some(_) => {
                    return Err(unsupported(
                        format!("tensor '{name}'"),
                        "a value that is not a tensor (sequence, map, optional, sparse)",
                    ))
                }
                None => (0, None),
            };
            Ok(ValueInfo {
                name,
                elem_code,
                shape,
            })
        };

        let mut inputs = Vec::new();
        for v in &graph.input {
            let vi = value_info_of(v)?;
            // an initializer listed as a graph input (IR < 4 style): a constant
            if !initializers.contains_key(&vi.name) {
                inputs.push(vi);
            }
        }
        let outputs = graph
            .output
            .iter()
            .map(value_info_of)
            .collect::<Result<Vec<_>>>()?;
        let mut value_info = HashMap::new();
        for v in &graph.value_info {
            let vi = value_info_of(v)?;
            value_info.insert(vi.name.clone(), vi);
        }

        // nodes; Constant nodes become initializers
        let mut nodes = Vec::new();
        for (index, n) in graph.node.iter().enumerate() {
            let node = decode_node(n, index, dir)?;
            match node.domain.as_str() {
                "" => {}
                MS_DOMAIN if ms_opset.is_some() => {}
                d => {
                    let why = if d == MS_DOMAIN || other_domains.contains(d) {
                        if d == MS_DOMAIN {
                            "domain com.microsoft is used but not imported".to_string()
                        } else {
                            format!("operator domain {d:?}; qfuse reads the default ONNX domain and com.microsoft")
                        }
                    } else {
                        format!("domain {d:?} is not imported by the model")
                    };
                    return Err(if other_domains.contains(d) {
                        unsupported(node.describe(), why)
                    } else {
                        bad(node.describe(), why)
                    });
                }
            }
            if node.op_type == "Constant" && node.domain.is_empty() {
                let out = node
                    .outputs
                    .first()
                    .filter(|o| !o.is_empty())
                    .ok_or_else(|| bad(node.describe(), "Constant without an output"))?
                    .clone();
                let t = constant_value(&node)?;
                if initializers.insert(out, t).is_some() {
                    return Err(bad(
                        node.describe(),
                        "its output name is already an initializer",
                    ));
                }
                continue;
            }
            nodes.push(node);
        }

        let nodes = topo_sort(nodes, &inputs, &initializers)?;
        let defined: HashSet<&str> = inputs
            .iter()
            .map(|v| v.name.as_str())
            .chain(initializers.keys().map(String::as_str))
            .chain(
                nodes
                    .iter()
                    .flat_map(|n| n.outputs.iter().map(String::as_str)),
            )
            .collect();
        for o in &outputs {
            if !defined.contains(o.name.as_str()) {
                return Err(bad(
                    format!("graph output '{}'", o.name),
                    "no node, input or initializer produces it",
                ));
            }
        }

        Ok(OnnxGraph {
            ir_version,
            opset,
            ms_opset,
            producer: format!(
                "{} {}",
                model.producer_name.as_deref().unwrap_or(""),
                model.producer_version.as_deref().unwrap_or("")
            )
            .trim()
            .to_string(),
            inputs,
            outputs,
            initializers,
            nodes,
            value_info,
        })
    }
}

fn decode_node(n: &proto::NodeProto, index: usize, dir: Option<&Path>) -> Result<Node> {
    let domain = match n.domain.as_deref().unwrap_or("") {
        "ai.onnx" => String::new(),
        d => d.to_string(),
    };
    let mut node = Node {
        name: n.name.clone().unwrap_or_default(),
        op_type: n.op_type.clone().unwrap_or_default(),
        domain,
        inputs: n.input.clone(),
        outputs: n.output.clone(),
        attrs: BTreeMap::new(),
        index,
    };
    if node.op_type.is_empty() {
        return Err(bad(node.describe(), "node without an op_type"));
    }
    if node.outputs.iter().all(|o| o.is_empty()) {
        return Err(bad(node.describe(), "node without outputs"));
    }
    for a in &n.attribute {
        let name = a.name.clone().unwrap_or_default();
        let desc = node.describe();
        let at = || format!("{desc}, attribute '{name}'");
        if a.ref_attr_name.is_some() {
            return Err(unsupported(at(), "attribute reference (function bodies)"));
        }
        use proto::attribute_proto::AttributeType as T;
        let ty = a.r#type.and_then(|t| T::try_from(t).ok());
        let value = match ty {
            Some(T::Float) => Attr::Float(a.f.unwrap_or(0.0)),
            Some(T::Int) => Attr::Int(a.i.unwrap_or(0)),
            Some(T::String) => Attr::String(a.s.clone().unwrap_or_default()),
            Some(T::Tensor) => Attr::Tensor(decode_tensor(
                a.t.as_ref()
                    .ok_or_else(|| bad(at(), "tensor attribute without a tensor"))?,
                &at(),
                dir,
            )?),
            Some(T::Floats) => Attr::Floats(a.floats.clone()),
            Some(T::Ints) => Attr::Ints(a.ints.clone()),
            Some(T::Strings) => Attr::Strings(a.strings.clone()),
            Some(T::Graph) | Some(T::Graphs) => Attr::Other("graph"),
            Some(T::SparseTensor) | Some(T::SparseTensors) => Attr::Other("sparse tensor"),
            Some(T::TypeProto) | Some(T::TypeProtos) => Attr::Other("type proto"),
            Some(T::Tensors) => Attr::Other("tensors"),
            Some(T::Undefined) | None => {
                // old writers leave `type` out: take the field that is set
                if let Some(f) = a.f {
                    Attr::Float(f)
                } else if let Some(i) = a.i {
                    Attr::Int(i)
                } else if let Some(s) = &a.s {
                    Attr::String(s.clone())
                } else if !a.ints.is_empty() {
                    Attr::Ints(a.ints.clone())
                } else if !a.floats.is_empty() {
                    Attr::Floats(a.floats.clone())
                } else if let Some(t) = &a.t {
                    Attr::Tensor(decode_tensor(t, &at(), dir)?)
                } else {
                    return Err(bad(at(), "attribute without a type or a value"));
                }
            }
        };
        if node.attrs.insert(name.clone(), value).is_some() {
            return Err(bad(at(), "attribute given twice"));
        }
    }
    Ok(node)
}

/// The value of a `Constant` node.
fn constant_value(node: &Node) -> Result<Tensor> {
    let mut it = node.attrs.iter();
    let (name, a) = match (it.next(), it.next()) {
        (Some(x), None) => x,
        _ => {
            return Err(bad(
                node.describe(),
                "a Constant needs exactly one value attribute",
            ))
        }
    };
    Ok(match (name.as_str(), a) {
        ("value", Attr::Tensor(t)) => t.clone(),
        ("value_float", Attr::Float(f)) => Tensor {
            dims: vec![],
            data: TensorData::F32(vec![*f]),
        },
        ("value_floats", Attr::Floats(f)) => Tensor {
            dims: vec![f.len()],
            data: TensorData::F32(f.clone()),
        },
        ("value_int", Attr::Int(i)) => Tensor {
            dims: vec![],
            data: TensorData::I64(vec![*i]),
        },
        ("value_ints", Attr::Ints(i)) => Tensor {
            dims: vec![i.len()],
            data: TensorData::I64(i.clone()),
        },
        (other, _) => {
            return Err(unsupported(
                node.describe(),
                format!("Constant with attribute {other}"),
            ))
        }
    })
}

/// Kahn's algorithm, keeping the file's order among ready nodes; checks that
/// every input is defined and every name produced once.
fn topo_sort(
    nodes: Vec<Node>,
    inputs: &[ValueInfo],
    initializers: &HashMap<String, Tensor>,
) -> Result<Vec<Node>> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for v in inputs {
        if producer.insert(&v.name, usize::MAX).is_some() {
            return Err(bad(format!("graph input '{}'", v.name), "listed twice"));
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        for o in n.outputs.iter().filter(|o| !o.is_empty()) {
            if initializers.contains_key(o) || producer.insert(o, i).is_some() {
                return Err(bad(
                    n.describe(),
                    format!(
                        "output '{o}' is already produced by another node, input or initializer"
                    ),
                ));
            }
        }
    }
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut missing = vec![0usize; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        let mut seen = HashSet::new();
        for inp in n.inputs.iter().filter(|s| !s.is_empty()) {
            if initializers.contains_key(inp) {
                continue;
            }
            match producer.get(inp.as_str()) {
                Some(&usize::MAX) => {}
                Some(&p) => {
                    if seen.insert(p) {
                        deps[p].push(i);
                        missing[i] += 1;
                    }
                }
                None => {
                    return Err(bad(
                        n.describe(),
                        format!(
                            "input '{inp}' is not produced by any node, graph input or \
                             initializer (missing initializer?)"
                        ),
                    ))
                }
            }
        }
    }
    let mut ready: std::collections::BTreeSet<usize> =
        (0..nodes.len()).filter(|&i| missing[i] == 0).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &j in &deps[i] {
            missing[j] -= 1;
            if missing[j] == 0 {
                ready.insert(j);
            }
        }
    }
    if order.len() != nodes.len() {
        let stuck = (0..nodes.len()).find(|&i| missing[i] > 0).unwrap_or(0);
        return Err(bad(
            nodes[stuck].describe(),
            "the graph has a cycle through this node",
        ));
    }
    let mut slots: Vec<Option<Node>> = nodes.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}
