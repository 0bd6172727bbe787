//! # qfuse
//!
//! Fused int8 quantized neural-network layers on any GPU through wgpu, bit for
//! bit equal to PyTorch's quantized engine.
//!
//! - [`quant`]: the quantization rules (qparams, observers, quantize, the epilogue).
//! - [`layer`]: fusing float Conv+BN(+ReLU) and Linear(+ReLU) into int8 layers.
//! - [`cpu`] and [`ops`]: the plain-loop CPU reference (the oracle).
//! - [`model`]: whole networks, the model file, the CPU run; [`plan`]: the
//!   activation memory plan; [`builder`]: calibration and conversion from
//!   float layers; [`bundled`]: the digits model shipped with the crate.
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

pub mod builder;
pub mod bundled;
pub mod cpu;
pub mod error;
pub mod gpu;
pub mod layer;
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
pub use quant::{Activation, BatchNorm, QParams, Requant};
