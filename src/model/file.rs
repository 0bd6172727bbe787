//! The model file: one safetensors file whose `qfuse` metadata entry is the
//! graph as JSON (`docs/MODEL_FORMAT.md`). Generic over the ops: each op's
//! module declares its attributes and parses and writes them
//! ([`crate::ops::FileOp`], [`crate::ops::OpKind::write`]).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use serde_json::{json, Map, Value as Json};

use super::TensorInfo;
use super::{check_inputs_decl, check_outputs, infer_node, topo_order, DType, Model, Node};
use crate::error::{Error, Result};
use crate::ops::{self, Attrs, NodeWriter, ParseCx, Tensors};
use crate::quant::Engine;

/// The newest format version this build reads, and the one it writes when a
/// model needs it (version 2: a conv2d/linear may carry a `clamp`).
pub const FORMAT_VERSION: u64 = 2;
/// The oldest format version this build reads (and writes, when a model
/// needs nothing newer).
pub const MIN_FORMAT_VERSION: u64 = 1;

/// Keys every node has; not attributes.
const NODE_KEYS: &[&str] = &["name", "op", "inputs"];

impl Model {
    /// Reads a model file: qfuse's own format, or an int8 ONNX model (by the
    /// `.onnx` extension or by its content; external data files are read from
    /// the model's folder), converted by [`crate::onnx::to_model`] to run with
    /// ONNX Runtime's arithmetic.
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Model> {
        let p = path.as_ref();
        let bytes = std::fs::read(p).map_err(|source| {
            // A bundled model's name is not a path: say where it is instead.
            let name = p.to_str().unwrap_or("");
            let name = name.strip_prefix(crate::bundled::PREFIX).unwrap_or(name);
            let source = if source.kind() == std::io::ErrorKind::NotFound
                && crate::bundled::NAMES.contains(&name)
            {
                std::io::Error::new(
                    source.kind(),
                    format!(
                        "{source}; {name:?} names a bundled model, which is not a file: \
                         qfuse::bundled::by_name({name:?}) loads it (`bundled:{name}` on \
                         the command line)"
                    ),
                )
            } else {
                source
            };
            Error::Io {
                path: p.display().to_string(),
                source,
            }
        })?;
        let in_file = |e: Error| Error::File {
            path: p.display().to_string(),
            source: Box::new(e),
        };
        let onnx = |bytes: &[u8]| {
            let dir = p.parent().unwrap_or(std::path::Path::new("."));
            crate::onnx::OnnxGraph::from_bytes_with_dir(bytes, dir)
                .and_then(|g| crate::onnx::to_model(&g))
                .map_err(in_file)
        };
        // An ONNX file by its extension, or by its content.
        if p.extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
        {
            return onnx(&bytes);
        }
        match Self::from_bytes(&bytes) {
            Ok(m) => Ok(m),
            Err(_) if crate::onnx::OnnxGraph::sniff(&bytes) => onnx(&bytes),
            Err(e) => Err(in_file(e)),
        }
    }

    /// Parses and validates a model file's bytes: the nodes are sorted,
    /// parsed (each by its op's module) and inferred once, in dependency
    /// order.
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
        if !version
            .as_u64()
            .is_some_and(|v| (MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&v))
        {
            return Err(Error::Model(format!(
                "format_version {version} is not supported: this qfuse reads version {MIN_FORMAT_VERSION} to version {FORMAT_VERSION}"
            )));
        }
        let version = version.as_u64().expect("checked");
        let pytorch_engine = Engine::parse(top("engine")?.as_str().unwrap_or("?"))
            .map_err(|e| Error::Model(format!("\"engine\": {e}")))?;
        let engine = pytorch_engine.requant();
        let inputs = parse_inputs(top("inputs")?)?;
        let outputs: Vec<String> = top("outputs")?
            .as_array()
            .and_then(|o| o.iter().map(|x| x.as_str().map(String::from)).collect())
            .ok_or_else(|| Error::Model("\"outputs\" must be a list of names".into()))?;
        let raw = top("nodes")?
            .as_array()
            .ok_or_else(|| Error::Model("\"nodes\" must be a list".into()))?;
        let mut heads: Vec<(&Map<String, Json>, &str, Vec<String>)> = Vec::with_capacity(raw.len());
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
            heads.push((a, name, ins));
        }
        let mut infos = check_inputs_decl(&inputs)?;
        let names: HashSet<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
        let edges: Vec<(&str, &[String])> =
            heads.iter().map(|(_, n, i)| (*n, i.as_slice())).collect();
        let order = topo_order(&names, &edges)?;
        let tensors = Tensors {
            st,
            used: RefCell::new(HashSet::new()),
        };
        let mut nodes = Vec::with_capacity(heads.len());
        for idx in order {
            let (a, name, ins) = &heads[idx];
            let node = parse_node(a, name, ins, &infos, (version, pytorch_engine), &tensors)?;
            let ins_info: Vec<&TensorInfo> = ins.iter().map(|i| &infos[i]).collect();
            let info = infer_node(&node, &ins_info, engine)?;
            infos.insert(node.name.clone(), info);
            nodes.push(node);
        }
        let used = tensors.used.into_inner();
        let mut extra: Vec<String> = tensors
            .st
            .names()
            .into_iter()
            .filter(|n| !used.contains(*n))
            .map(String::from)
            .collect();
        if !extra.is_empty() {
            extra.sort();
            return Err(Error::Model(format!("tensors {extra:?} belong to no node")));
        }
        check_outputs(&outputs, &infos)?;
        Model::from_parts(engine, inputs, outputs, nodes, infos).with_pytorch_engine(pytorch_engine)
    }

    /// Serializes the model to the file format, in the oldest format version
    /// that holds it.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut tensors: Vec<ops::FileTensor> = Vec::new();
        let mut version = MIN_FORMAT_VERSION;
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for n in &self.nodes {
            let kind = n.op.kind();
            let mut w = NodeWriter {
                node: &n.name,
                attrs: Map::new(),
                tensors: &mut tensors,
                version: MIN_FORMAT_VERSION,
            };
            w.put("name", json!(n.name));
            w.put("op", json!(kind.name()));
            w.put("inputs", json!(n.inputs));
            kind.write(&mut w);
            version = version.max(w.version);
            nodes.push(Json::Object(w.attrs));
        }
        let header = json!({
            "format": "qfuse",
            "format_version": version,
            "engine": self.pytorch_engine.name(),
            "inputs": self.inputs.iter().map(|(n, i)| match i.dtype {
                DType::F32 => json!({"name": n, "shape": i.shape}),
                DType::QUInt8(q) => json!({"name": n, "shape": i.shape, "dtype": q.dtype_name(), "scale": q.scale as f64, "zero_point": q.true_zero_point()}),
            }).collect::<Vec<_>>(),
            "outputs": self.outputs,
            "nodes": nodes,
        });
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
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

/// The header's model inputs.
fn parse_inputs(v: &Json) -> Result<Vec<(String, TensorInfo)>> {
    let mut inputs = Vec::new();
    for i in v
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
            Some("quint8" | "qint8") => {
                let map = i.as_object().expect("an object: it has a name");
                DType::QUInt8(
                    Attrs { map }
                        .qparams()
                        .map_err(|e| Error::Model(format!("model input {name:?}: {e}")))?,
                )
            }
            Some(d) => {
                return Err(Error::Model(format!(
                    "model input {name:?}: dtype {d:?} (known: float32, quint8, qint8)"
                )))
            }
        };
        inputs.push((name.to_string(), TensorInfo { shape, dtype }));
    }
    Ok(inputs)
}

/// One node of the file: its op's module parses the attributes it declares;
/// any other attribute is an error naming the node and the attribute.
fn parse_node(
    a: &Map<String, Json>,
    name: &str,
    ins: &[String],
    infos: &HashMap<String, TensorInfo>,
    (version, pytorch_engine): (u64, Engine),
    tensors: &Tensors<'_>,
) -> Result<Node> {
    let op_name = a
        .get("op")
        .and_then(Json::as_str)
        .ok_or_else(|| Error::Model("no \"op\"".into()).in_node(name, "?"))?;
    let in_node = |e: Error| e.in_node(name, op_name);
    let f = ops::file_op(op_name).ok_or_else(|| {
        let known: Vec<&str> = ops::FILE_OPS
            .iter()
            .flat_map(|f| f.iter().map(|o| o.name))
            .collect();
        in_node(Error::Model(format!(
            "unknown op (known: {})",
            known.join(", ")
        )))
    })?;
    // Ops that keep their input's qparams may state them; they must agree.
    let echo = !f.attributes.contains(&"scale");
    for k in a.keys() {
        let k = k.as_str();
        let known = NODE_KEYS.contains(&k)
            || f.attributes.contains(&k)
            || (echo && (k == "scale" || k == "zero_point"))
            || (k == "dtype" && (echo || f.attributes.contains(&"scale")));
        if !known {
            return Err(in_node(Error::Model(format!(
                "unknown attribute {k:?} ({op_name} takes {})",
                if f.attributes.is_empty() {
                    "none".to_string()
                } else {
                    f.attributes.join(", ")
                }
            ))));
        }
    }
    let inputs: Vec<&TensorInfo> = ins.iter().map(|i| &infos[i]).collect();
    let attrs = Attrs { map: a };
    let cx = ParseCx {
        node: name,
        version,
        engine: pytorch_engine.requant(),
        pytorch_engine,
        inputs: inputs.clone(),
        tensors,
    };
    let op = (f.parse)(&attrs, &cx).map_err(in_node)?;
    if echo && (a.contains_key("scale") || a.contains_key("zero_point")) {
        let q = attrs.qparams().map_err(in_node)?;
        let have = inputs.first().and_then(|x| x.qparams());
        if have != Some(q) {
            return Err(in_node(Error::Model(format!(
                "states output qparams {q:?}, but this op keeps its input's {have:?}"
            ))));
        }
    }
    Ok(Node {
        name: name.to_string(),
        op,
        inputs: ins.to_vec(),
    })
}
