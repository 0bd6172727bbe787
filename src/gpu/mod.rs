//! The GPU path: one [`GpuContext`] owns the device, the queue and a pipeline
//! cache; [`GpuTensor`] holds packed 8-bit activations; [`GpuLayer`] is a fused
//! int8 conv2d/linear whose weights were uploaded once.

mod context;
mod conv;
mod graph;
pub mod layout;
pub(crate) mod node;
mod tensor;
pub mod tune;

pub use context::{AdapterReport, CustomKernel, Dispatch, GpuContext, Kernel};
pub use context::{ShaderChecks, COOPERATIVE_MATRIX_ENV, SHADER_CHECKS_ENV};
pub use conv::{
    dispatch_size, splitk_for_shape, ConvVariant, GpuLayer, TileConfig, COOP_CHUNK, COOP_KC,
    COOP_MIN_ROWS, COOP_TC, COOP_TM, COOP_WG, COOP_WORKGROUP_BYTES, GEMV_MAX_ROWS,
    SPLITK_MAX_SPLITS,
};
pub use graph::{GpuModel, DEFAULT_MEMORY_LIMIT};
pub use tune::{tune_candidates, TuneKey, AUTOTUNE_ENV, TUNE_CACHE_ENV};

/// Not public API: the `#[repr(C)]` uniform blocks of the kernels, reachable
/// only so that `tests/shaders.rs` can check their sizes against the WGSL
/// declarations. They change with the shaders, without notice.
#[doc(hidden)]
pub mod __internal {
    pub use super::conv::ConvParams;
    pub use super::conv::{coop_limit_data, coop_self_check};
    pub use super::node::LutParams;
    pub use crate::ops::binary::AddParams;
    pub use crate::ops::binary::BinaryParams;
    pub use crate::ops::chanlut::ChannelLutParams;
    pub use crate::ops::gather::GatherParams;
    pub use crate::ops::inductor::InductorParams;
    pub use crate::ops::ort::OrtParams;
    pub use crate::ops::pool::F32PoolParams;
    pub use crate::ops::pool::PoolParams;
    pub use crate::ops::qsoftmax::QSoftmaxParams;
    pub use crate::ops::quantize::QuantizeParams;
}
pub use tensor::GpuTensor;
