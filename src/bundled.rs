//! The model shipped with the crate: a small CNN trained on scikit-learn's
//! handwritten digits (8x8 images), quantized by PyTorch's `convert_fx`
//! (fbgemm) and exported with `tools/qfuse_export.py`
//! (`tools/train_digits.py` makes it).

use crate::error::Result;
use crate::model::Model;

/// The model file's bytes.
pub const DIGITS_MODEL_BYTES: &[u8] = include_bytes!("../models/digits.safetensors");

/// The bundled digits classifier: input `x` float32 `[N, 1, 8, 8]` (pixels
/// scaled to [0, 1]), output float32 logits `[N, 10]`.
pub fn digits_model() -> Result<Model> {
    Model::from_bytes(DIGITS_MODEL_BYTES)
}
