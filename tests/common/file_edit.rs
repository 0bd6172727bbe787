//! Editing a model file's bytes: for the tests of bad files.

use std::collections::HashMap;

use qfuse::model::Model;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;

/// Re-serializes a model file after editing its header JSON and its tensors.
pub fn rewrite(
    bytes: &[u8],
    edit_header: impl FnOnce(&mut Json),
    edit_tensors: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>),
) -> Vec<u8> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(bytes).unwrap();
    let mut header: Json =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()["qfuse"]).unwrap();
    edit_header(&mut header);
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            (
                n.to_string(),
                t.dtype(),
                t.shape().to_vec(),
                t.data().to_vec(),
            )
        })
        .collect();
    edit_tensors(&mut tensors);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(
        views,
        Some(HashMap::from([("qfuse".to_string(), header.to_string())])),
    )
    .unwrap()
}

pub fn load_err(bytes: &[u8]) -> String {
    match Model::from_bytes(bytes) {
        Ok(_) => panic!("a bad file loaded"),
        Err(e) => e.to_string(),
    }
}

pub fn node_mut<'a>(h: &'a mut Json, name: &str) -> &'a mut Json {
    h["nodes"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|n| n["name"] == name)
        .unwrap()
}
