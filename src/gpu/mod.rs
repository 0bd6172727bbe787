//! The GPU path: one [`GpuContext`] owns the device, the queue and a pipeline
//! cache; [`GpuTensor`] holds packed 8-bit activations; [`GpuLayer`] is a fused
//! int8 conv2d/linear whose weights were uploaded once.

mod context;
mod conv;
mod graph;
pub mod layout;
pub(crate) mod node;
mod tensor;

pub use context::{AdapterReport, CustomKernel, Dispatch, GpuContext, Kernel};
pub use conv::{
    dispatch_size, pack_weights, splitk_for_shape, ConvParams, ConvVariant, GpuLayer, TileConfig,
    SPLITK_MAX_SPLITS,
};
pub use graph::{GpuModel, DEFAULT_MEMORY_LIMIT};

/// The uniform blocks of the op kernels (checked against the WGSL in tests).
pub mod ops_params {
    pub use super::node::LutParams;
    pub use crate::ops::binary::AddParams;
    pub use crate::ops::pool::PoolParams;
    pub use crate::ops::quantize::QuantizeParams;
}
pub use tensor::GpuTensor;
