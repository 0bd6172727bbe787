//! The GPU activation layout (NHWC4). The functions live in the neutral
//! [`crate::layout`] module, which the CPU reference uses too.

pub use crate::layout::{nchw, pack, unpack, words};
