//! # qfuse
//!
//! Fused int8 quantized neural-network layers on any GPU through wgpu, bit for
//! bit equal to PyTorch's quantized engine.
//!
//! - [`quant`]: the quantization rules (qparams, observers, quantize, the epilogue).
//! - [`layer`]: fusing float Conv+BN(+ReLU) and Linear(+ReLU) into int8 layers.
//! - [`cpu`]: the plain-loop CPU reference (the oracle).
//! - [`gpu`]: the context and the WGSL kernels.

/// Benchmark harness used by `examples/bench.rs` and `benches/` (not part of the stable API).
#[doc(hidden)]
pub mod bench;
pub mod builder;
pub mod bundled;
pub mod cpu;
pub mod error;
pub mod gpu;
pub mod layer;
pub mod model;
pub mod npy;
pub mod ops;
pub mod plan;
pub mod quant;

pub use error::{Error, Result};
pub use gpu::{GpuContext, GpuLayer, GpuModel, GpuTensor};
pub use layer::{Conv2dGeometry, FloatConv2d, FloatLinear, LayerKind, QLayer};
pub use model::{Model, Value};
pub use quant::{Activation, BatchNorm, QParams, Requant};
