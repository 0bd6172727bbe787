//! The qfuse benchmark harness, behind `cargo run --release --example bench`
//! (see `BENCHMARKS.md`): adapter ceilings, per-layer int8-fused vs f32
//! (unfused and fused) timings, memory, and end to end a ResNet-18 and a
//! MobileNetV2, both as real networks through [`qfuse::GpuModel`] and as
//! chains of their conv/linear layers.
//!
//! It is a separate crate of the workspace (not published) and uses only
//! qfuse's public API: the int8 layers run through [`qfuse::GpuLayer`] (so
//! whichever kernel the library picks is what gets measured), the real
//! networks through [`qfuse::builder::ModelBuilder`] and
//! [`qfuse::GpuModel`], and its own WGSL kernels (`shaders/`: the adapter
//! ceilings and the f32 baseline) through [`qfuse::gpu::CustomKernel`] and
//! the context's pipeline cache.
//!
//! Timing: GPU timestamp queries around each sample where the device has
//! `TIMESTAMP_QUERY_INSIDE_ENCODERS`, wall clock (encode + submit + wait)
//! otherwise; a warm-up run first; the median of repeated runs, repeated
//! until a time budget is spent (at least `min_runs`).
//!
//! - [`timing`]: [`measure`] (one encoder per sample) and [`measure_model`].
//! - [`ceilings`]: the adapter's int8 / f32 / copy ceilings.
//! - [`networks`]: ResNet-18 and MobileNetV2, described once as a [`Network`]
//!   graph; the float network for `ModelBuilder` and the activation plan of
//!   the conv chain both come from it.
//! - [`layers`]: one conv/linear layer as int8 ([`qfuse::GpuLayer`]) and f32
//!   twins: tiled (`shaders/conv2d_f32_tiled.wgsl`, the like-for-like
//!   baseline) and simple untiled (`shaders/conv2d_f32.wgsl`).
//! - [`peaks`]: the chip's specified peaks (table by adapter name, or the
//!   command line) and the measured SM clock.
//! - [`threads`]: images/s with 1, 2, 4, 8 threads sharing one `GpuModel`.
//! - [`report`]: [`run`] and the [`Report`] (JSON and Markdown).

pub mod ceilings;
pub mod layers;
pub mod networks;
pub mod peaks;
pub mod report;
mod rng;
mod text;
pub mod threads;
pub mod timing;

pub use ceilings::{measure_ceilings, CeilParams, CeilingForm, Ceilings};
pub use layers::{
    build_layer, build_layer_with, default_variant, kernel_at, packed_dot_variant, random_buffer,
    runs_coop, BenchLayer, F32Layer, F32Mode, F32Params, F32_TILED_KERNEL,
};
pub use networks::{
    f32_bytes, int8_bytes, mobilenet_v2, plan, random_images, resnet18, Act, GlobalPool, Network,
    Op, Plan, RealNet, Step,
};
pub use peaks::{ClockStats, PeakOverrides, SpecPeaks};
pub use report::{
    run, BenchConfig, ChainPackedDot, PackedDotLayer, Report, COOP_EMULATED_LABEL, COOP_LABEL,
    PACKED_DOT_LABEL,
};
pub use rng::Lcg;
pub use threads::{measure_threads, ThreadPoint, ThreadsResult};
pub use timing::{has_encoder_timestamps, measure, measure_model, Timing, TimingOpts};
