//! The CPU reference path: plain loops, wide accumulators, the epilogue from
//! [`crate::quant`]. It is the oracle the GPU is tested against, so it stays
//! obviously correct rather than fast. Each op's CPU loop lives in its
//! module under [`crate::ops`] (and runs from [`crate::Model::run_cpu`]);
//! the conv/linear layer's, used on its own, is re-exported here.

pub use crate::ops::conv::{conv2d_accumulators, float_conv2d, run_layer};
