//! The one error type of qfuse.

use thiserror::Error;

/// Everything that can go wrong in qfuse. Every variant names what was wrong,
/// so that `to_string()` is a complete, one-line explanation.
#[derive(Debug, Error)]
pub enum Error {
    /// A tensor's shape does not fit what the operation needs.
    #[error("shape mismatch in {what}: {detail}")]
    Shape { what: String, detail: String },

    /// A layer's configuration is invalid (groups, stride, kernel, ...).
    #[error("invalid {what}: {detail}")]
    Config { what: String, detail: String },

    /// Quantization parameters are out of range (scale not finite and
    /// positive, zero point outside the dtype's range, ...).
    #[error("bad quantization parameters for {what}: {detail}")]
    QParams { what: String, detail: String },

    /// Something this version of qfuse does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// A tensor or a dispatch is larger than the adapter allows.
    #[error("too large for the adapter: {what} needs {needed} but the limit is {limit}")]
    TooLarge {
        what: String,
        needed: u64,
        limit: u64,
    },

    /// No GPU adapter could be found or opened.
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),

    /// The GPU failed (device lost, validation error, mapping failed).
    #[error("GPU error: {0}")]
    Gpu(String),

    /// A model file or tensor file could not be read or is invalid.
    #[error("bad model file: {0}")]
    Model(String),

    /// An ONNX model is malformed or inconsistent; `at` names the node, tensor or field.
    #[error("bad ONNX model, {at}: {detail}")]
    Onnx { at: String, detail: String },

    /// An ONNX model uses something qfuse does not run; `at` names the node, tensor or field.
    #[error("unsupported ONNX model, {at}: {detail}")]
    OnnxUnsupported { at: String, detail: String },

    /// An I/O error, with the path it happened on.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with qfuse's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
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
