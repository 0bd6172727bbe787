//! The GPU path: one [`GpuContext`] owns the device, the queue and a pipeline
//! cache; [`GpuTensor`] holds packed 8-bit activations; [`GpuLayer`] is a fused
//! int8 conv2d/linear whose weights were uploaded once.

mod context;
mod conv;
pub mod layout;
mod tensor;

pub use context::{AdapterReport, GpuContext, Kernel};
pub use conv::{pack_weights, ConvParams, ConvVariant, GpuLayer, TileConfig};
pub use tensor::GpuTensor;
