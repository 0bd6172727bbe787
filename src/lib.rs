//! # qfuse
//!
//! Fused int8 quantized neural-network layers on any GPU through wgpu, bit for
//! bit equal to PyTorch's quantized engine.
//!
//! - [`quant`]: the quantization rules (qparams, observers, quantize, the epilogue).
//! - [`layer`]: fusing float Conv+BN(+ReLU) and Linear(+ReLU) into int8 layers.
//! - [`ops`]: one module per op family (attributes and file form, shape
//!   inference, constants lowered once, the CPU reference loop, the GPU
//!   side); [`cpu`]: the conv/linear reference on its own (the oracle);
//!   [`memory_format`]: which tensors PyTorch holds channels-last.
//! - [`layout`]: shapes and the NHWC4 GPU layout (shared by CPU and GPU).
//! - [`model`]: whole networks (validation, the CPU run, fusion), the model
//!   file; [`plan`]: the activation memory plan; [`builder`]: calibration and
//!   conversion from float layers; [`bundled`]: the digits model shipped
//!   with the crate.
//! - [`gpu`]: the context (device, queue, pipeline cache), GPU tensors, fused
//!   layers and whole models on the GPU.
//! - [`npy`]: `.npy` input and output.
//!
//! ```no_run
//! use qfuse::{GpuContext, GpuModel, Value};
//! let model = qfuse::bundled::digits_model()?;
//! let ctx = GpuContext::new()?;
//! let gpu = GpuModel::new(&ctx, &model)?;
//! let x = Value::F32 { data: vec![0.5; 64], shape: vec![1, 1, 8, 8] };
//! let logits = gpu.run(&ctx, &[x.clone()])?;
//! assert_eq!(logits, model.run_cpu(&[x])?); // bit for bit
//! # Ok::<(), qfuse::Error>(())
//! ```

#![warn(missing_docs)]

pub mod builder;
pub mod bundled;
pub mod cpu;
pub mod error;
pub mod gpu;
pub mod layer;
pub mod layout;
pub mod memory_format;
pub mod model;
pub mod npy;
pub mod onnx;
pub mod ops;
pub mod plan;
pub mod quant;

pub use error::{Error, Result};
pub use gpu::{GpuContext, GpuLayer, GpuModel, GpuTensor};
pub use layer::{Conv2dGeometry, FloatConv2d, FloatLinear, LayerKind, QLayer};
pub use model::{Model, Value};
pub use quant::{Activation, BatchNorm, Engine, QParams, Requant};
