//! Whole models on the GPU.
use super::GpuContext;
use crate::error::{Error, Result};
use crate::model::{Model, Value};

pub struct GpuModel {}

impl GpuModel {
    pub fn new(_ctx: &GpuContext, _model: &Model) -> Result<Self> {
        Err(Error::Unsupported("not yet".into()))
    }
    pub fn run(&self, _ctx: &GpuContext, _inputs: &[Value]) -> Result<Vec<Value>> {
        Err(Error::Unsupported("not yet".into()))
    }
}
