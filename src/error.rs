//! The one error type of qfuse.

use thiserror::Error;

/// Everything that can go wrong in qfuse. Every variant names what was wrong,
/// so that `to_string()` is a complete, one-line explanation.
#[derive(Debug, Error)]
pub enum Error {
    /// A tensor's shape does not fit what the operation needs.
    #[error("shape mismatch in {what}: {detail}")]
    Shape {
        /// What was being checked (a layer, a tensor, an argument), by name.
        what: String,
        /// The shapes found and what was expected.
        detail: String,
    },

    /// A layer's configuration is invalid (groups, stride, kernel, ...).
    #[error("invalid {what}: {detail}")]
    Config {
        /// What was being checked (a layer, a tensor, an argument), by name.
        what: String,
        /// Which value is wrong and the rule it breaks.
        detail: String,
    },

    /// Quantization parameters are out of range (scale not finite and
    /// positive, zero point outside the dtype's range, ...).
    #[error("bad quantization parameters for {what}: {detail}")]
    QParams {
        /// What was being checked (a layer, a tensor, an argument), by name.
        what: String,
        /// The offending scale or zero point and its allowed range.
        detail: String,
    },

    /// Something this version of qfuse does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// A tensor, table, allocation or dispatch is larger than a limit allows:
    /// the adapter's, or a model-file bound (`docs/MODEL_FORMAT.md`,
    /// "Bounds"), or the host's memory (a failed fallible allocation).
    #[error("too large: {what} needs {needed} but the limit is {limit}")]
    TooLarge {
        /// The buffer, dispatch or workgroup that is too large.
        what: String,
        /// What it needs, in the unit of the limit (bytes, workgroups,
        /// invocations).
        needed: u64,
        /// The adapter's limit (a `wgpu::Limits` field or a kernel bound).
        limit: u64,
    },

    /// No GPU adapter could be found or opened.
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),

    /// The GPU failed (device lost, validation error, mapping failed).
    #[error("GPU error: {0}")]
    Gpu(String),

    /// A tensor has the wrong element type for what reads it (float32 where
    /// quint8 is needed, or the other way round).
    #[error("dtype mismatch in {what}: {detail}")]
    DType {
        /// What was being checked (a layer, a tensor, an argument), by name.
        what: String,
        /// The element type found and the one expected.
        detail: String,
    },

    /// A float value that must be finite is not (a NaN or an infinity in a
    /// model input).
    #[error("{what}: element {index} is {value} (not finite)")]
    NonFinite {
        /// The tensor that holds the value.
        what: String,
        /// The flat (row-major) index of the first non-finite element.
        index: usize,
        /// That element (NaN or an infinity).
        value: f32,
    },

    /// An exact integer accumulator left the range of the type that holds
    /// it (PyTorch's i32 accumulator of a conv/linear).
    #[error("accumulator overflow in {what}: {detail}")]
    Overflow {
        /// What was being checked (a layer, a tensor, an argument), by name.
        what: String,
        /// Where the accumulator overflowed and its value.
        detail: String,
    },

    /// A model file or graph is invalid as a whole (its header, names,
    /// references, cycles, tensors that belong to no node).
    #[error("bad model file: {0}")]
    Model(String),

    /// One node of a graph is invalid or failed; `source` is the typed cause.
    #[error("node {node:?} ({op}): {source}")]
    Node {
        /// The node's name in the graph.
        node: String,
        /// The node's op name in the model file (`conv2d`, `add`, ...).
        op: String,
        /// The error the node raised.
        #[source]
        source: Box<Error>,
    },

    /// An error while reading or writing the model file at `path`.
    #[error("{path}: {source}")]
    File {
        /// The model file's path as given.
        path: String,
        /// What was wrong in it.
        #[source]
        source: Box<Error>,
    },

    /// An ONNX model is malformed or inconsistent; `at` names the node, tensor or field.
    #[error("bad ONNX model, {at}: {detail}")]
    Onnx {
        /// Where: the node (`node 'conv' (QLinearConv)`), tensor or field.
        at: String,
        /// What is wrong there.
        detail: String,
    },

    /// An ONNX model uses something qfuse does not run; `at` names the node, tensor or field.
    #[error("unsupported ONNX model, {at}: {detail}")]
    OnnxUnsupported {
        /// Where: the node, tensor or field.
        at: String,
        /// What is not supported, and what to do instead where there is a way.
        detail: String,
    },

    /// An I/O error, with the path it happened on.
    #[error("{path}: {source}")]
    Io {
        /// The path being read or written.
        path: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with qfuse's [`Error`](enum@Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The innermost error, past the [`Error::File`] and [`Error::Node`]
    /// wrappers that say where it happened.
    pub fn root_cause(&self) -> &Error {
        match self {
            Error::Node { source, .. } | Error::File { source, .. } => source.root_cause(),
            e => e,
        }
    }
    /// Wraps an error as happening in node `node` (op `op`); an error that
    /// already names a node is kept as is.
    pub(crate) fn in_node(self, node: &str, op: &str) -> Self {
        match self {
            e @ Error::Node { .. } => e,
            e => Error::Node {
                node: node.to_string(),
                op: op.to_string(),
                source: Box::new(e),
            },
        }
    }
    pub(crate) fn dtype(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::DType {
            what: what.into(),
            detail: detail.into(),
        }
    }
    pub(crate) fn shape(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Shape {
            what: what.into(),
            detail: detail.into(),
        }
    }
    pub(crate) fn config(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Config {
            what: what.into(),
            detail: detail.into(),
        }
    }
    pub(crate) fn qparams(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::QParams {
            what: what.into(),
            detail: detail.into(),
        }
    }
}
