//! The model shipped with the crate: a small CNN trained on scikit-learn's
//! handwritten digits (8x8 images), quantized by PyTorch's `convert_fx`
//! (fbgemm) and exported with `tools/qfuse_export.py`
//! (`tools/train_digits.py` makes it).
//!
//! In Rust, [`digits_model`] loads it ([`crate::Model::load`] takes file
//! paths only). On the command line it is `bundled:digits` (see [`by_name`]).

use crate::error::{Error, Result};
use crate::model::Model;

/// The model file's bytes.
pub const DIGITS_MODEL_BYTES: &[u8] = include_bytes!("../models/digits.safetensors");

/// The digits model's input shape without the batch dimension: one channel
/// of 8x8 pixels scaled to [0, 1]. A batch of `n` images is `[n, 1, 8, 8]`.
pub const DIGITS_INPUT_SHAPE: [usize; 3] = [1, 8, 8];

/// The digits model's number of classes (its output is `[n, 10]` logits).
pub const DIGITS_CLASSES: usize = 10;

/// The bundled digits classifier: input `x` float32 `[N, 1, 8, 8]` (pixels
/// scaled to [0, 1]), output float32 logits `[N, 10]`.
pub fn digits_model() -> Result<Model> {
    Model::from_bytes(DIGITS_MODEL_BYTES)
}

/// The names of the bundled models.
pub const NAMES: &[&str] = &["digits"];

/// The prefix that names a bundled model where a file path could also stand
/// (the command line's MODEL argument): `bundled:digits`.
pub const PREFIX: &str = "bundled:";

/// A bundled model by name (`"digits"`, without the [`PREFIX`]).
pub fn by_name(name: &str) -> Result<Model> {
    match name {
        "digits" => digits_model(),
        _ => Err(Error::Model(format!(
            "no bundled model named {name:?}; the bundled models are: {}",
            NAMES.join(", ")
        ))),
    }
}

/// The README's code blocks, compiled and run as doctests (`cargo test
/// --doc`), so that its first example stays a working program.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
