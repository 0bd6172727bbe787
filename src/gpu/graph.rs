//! Whole models on the GPU: constants uploaded once, activations in planned,
//! reused buffers, and one command encoder and one queue submit per
//! inference. A generic driver: each node's lowered constants are uploaded
//! and its dispatches recorded by its op's module (`src/ops/*/gpu.rs`,
//! through [`super::node`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::node::{GpuInput, GpuIo, GpuNode, UploadCx};
use super::{ConvVariant, Dispatch, GpuContext};
use crate::error::{Error, Result};
use crate::layer::QLayer;
use crate::layout::{self, nchw4};
use crate::model::{DType, Model, Value};
use crate::plan::{self, MemoryPlan, Placement, Placements};

/// Buffers and recorded dispatches for one batch size.
struct Prepared {
    plan: MemoryPlan,
    buffers: Vec<wgpu::Buffer>,
    /// Per model input: the buffer its data is written to, and whether it is f32.
    inputs: Vec<(wgpu::Buffer, bool)>,
    dispatches: Vec<Dispatch>,
    /// Per model output: (buffer, bytes to read, staging buffer).
    outputs: Vec<(usize, u64, wgpu::Buffer)>,
}

/// A model whose weights and tables live on the GPU.
pub struct GpuModel {
    model: Model,
    place: Placements,
    nodes: Vec<Box<dyn GpuNode>>,
    prepared: Mutex<HashMap<usize, Arc<Prepared>>>,
}

impl GpuModel {
    /// Uploads every layer's weights and every op's tables once; each
    /// conv/linear runs the variant [`ConvVariant::choose`] picks.
    pub fn new(ctx: &GpuContext, model: &Model) -> Result<Self> {
        let (limits, device) = (ctx.limits(), ctx.device_type());
        Self::with_variants(ctx, model, &|l| ConvVariant::choose(l, &limits, device))
    }

    /// [`GpuModel::new`] with each conv/linear layer's kernel variant chosen
    /// by `variant` (for tests and benchmarks: e.g. split-K everywhere).
    pub fn with_variants(
        ctx: &GpuContext,
        model: &Model,
        variant: &dyn Fn(&QLayer) -> ConvVariant,
    ) -> Result<Self> {
        // Standalone relu/relu6/hardtanh after a conv become its epilogue clamp.
        let model = crate::model::fuse_activations(model)?;
        let place = Placements::new(&model)?;
        let mut nodes = Vec::with_capacity(model.nodes().len());
        for n in model.nodes() {
            let kind = n.op.kind();
            let in_node = |e: Error| e.in_node(&n.name, kind.name());
            let lowered = kind.lower(&model.signature(n)).map_err(in_node)?;
            let cx = UploadCx {
                ctx,
                variant,
                stored: n
                    .inputs
                    .iter()
                    .map(|i| model.info(place.root(i)).expect("validated"))
                    .collect(),
                placement: place.get(&n.name).expect("placed"),
            };
            // Validation and out-of-memory errors of the uploads are returned.
            let node = ctx.scoped("uploading", || lowered.upload(&cx));
            nodes.push(node.map_err(in_node)?);
        }
        Ok(GpuModel {
            model,
            place,
            nodes,
            prepared: Mutex::default(),
        })
    }

    /// The model as it runs: the one given, with standalone activations
    /// fused into the layers before them ([`crate::model::fuse_activations`]).
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The activation memory plan used for batch size `batch`.
    pub fn plan(&self, ctx: &GpuContext, batch: usize) -> Result<MemoryPlan> {
        Ok(self.prepare(ctx, batch)?.plan.clone())
    }

    /// Bytes of weights and tables held on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        self.nodes.iter().map(|n| n.bytes()).sum()
    }

    fn prepare(&self, ctx: &GpuContext, batch: usize) -> Result<Arc<Prepared>> {
        if let Some(p) = self.prepared.lock().unwrap().get(&batch) {
            return Ok(p.clone());
        }
        let p = Arc::new(self.build(ctx, batch)?);
        self.prepared.lock().unwrap().insert(batch, p.clone());
        Ok(p)
    }

    fn build(&self, ctx: &GpuContext, n: usize) -> Result<Prepared> {
        let m = &self.model;
        let plan = plan::plan_placed(m, &self.place, n)?;
        let mut buffers = Vec::with_capacity(plan.buffers.len());
        for &b in &plan.buffers {
            ctx.check_storage_size("activation buffer", b)?;
            buffers.push(ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("qfuse activations"),
                size: b.max(4),
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let mut inputs = Vec::new();
        let mut f32_inputs: HashMap<&str, wgpu::Buffer> = HashMap::new();
        for (name, info) in m.inputs() {
            if info.dtype == DType::F32 {
                let bytes = (n * info.numel() * 4) as u64;
                ctx.check_storage_size("model input", bytes)?;
                let b = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("qfuse f32 input"),
                    size: bytes.max(4),
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                f32_inputs.insert(name, b.clone());
                inputs.push((b, true));
            } else {
                inputs.push((buffers[plan.assignment[name.as_str()]].clone(), false));
            }
        }
        // The buffer holding a tensor's bytes: its root's planned buffer, or
        // a float32 model input's own.
        let buffer_of = |name: &str| -> Result<&wgpu::Buffer> {
            let r = self.place.root(name);
            match (plan.assignment.get(r), f32_inputs.get(r)) {
                (Some(&b), _) => Ok(&buffers[b]),
                (None, Some(b)) => Ok(b),
                (None, None) => Err(Error::Unsupported(format!(
                    "tensor {name:?} has no GPU buffer"
                ))),
            }
        };
        let mut dispatches = Vec::new();
        for (node, g) in m.nodes().iter().zip(&self.nodes) {
            if self.place.get(&node.name) != Some(&Placement::Buffer) {
                continue; // aliases and host-side dequantizes record nothing
            }
            let kind = node.op.kind();
            let in_node = |e: Error| e.in_node(&node.name, kind.name());
            let info = |i: &str| m.info(i).expect("validated");
            let io = GpuIo {
                batch: n,
                inputs: node
                    .inputs
                    .iter()
                    .map(|i| {
                        Ok(GpuInput {
                            buf: buffer_of(i)?,
                            info: info(i),
                            stored: info(self.place.root(i)),
                        })
                    })
                    .collect::<Result<_>>()
                    .map_err(in_node)?,
                output: buffer_of(&node.name).map_err(in_node)?,
                out: info(&node.name),
            };
            dispatches.extend(g.record(ctx, &io).map_err(in_node)?);
        }
        let mut outputs = Vec::new();
        for o in m.outputs() {
            let r = self.place.root(o);
            let Some(&b) = plan.assignment.get(r) else {
                return Err(Error::Unsupported(format!(
                    "output {o:?} is a float32 model input: nothing runs on the GPU for it"
                )));
            };
            let bytes = layout::words(&m.info(r).expect("validated").batched(n))? as u64 * 4;
            let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("qfuse output"),
                size: bytes.max(4),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            outputs.push((b, bytes, staging));
        }
        Ok(Prepared {
            plan,
            buffers,
            inputs,
            dispatches,
            outputs,
        })
    }

    /// Runs one inference: inputs in the order of [`Model::inputs`] (float32
    /// NCHW, or quint8 for quantized model inputs), outputs in the order of
    /// [`Model::outputs`]. One command encoder, one queue submit.
    pub fn run(&self, ctx: &GpuContext, inputs: &[Value]) -> Result<Vec<Value>> {
        Ok(self.run_inner(ctx, inputs, false)?.0)
    }

    /// [`GpuModel::run`], plus the GPU time of the model's compute pass in
    /// nanoseconds, from timestamp queries written at the pass's start and
    /// end, where the device has `TIMESTAMP_QUERY` (else `None`). The time
    /// covers every dispatch of the inference, not the input upload or the
    /// output readback.
    pub fn run_timed(
        &self,
        ctx: &GpuContext,
        inputs: &[Value],
    ) -> Result<(Vec<Value>, Option<f64>)> {
        self.run_inner(ctx, inputs, true)
    }

    fn run_inner(
        &self,
        ctx: &GpuContext,
        inputs: &[Value],
        timed: bool,
    ) -> Result<(Vec<Value>, Option<f64>)> {
        let n = self.model.check_inputs(inputs)?;
        let prep = self.prepare(ctx, n)?;
        let timer = (timed
            && ctx
                .device
                .features()
                .contains(wgpu::Features::TIMESTAMP_QUERY))
        .then(|| {
            let qs = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("qfuse model timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("qfuse model timestamps"),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("qfuse model timestamps"),
                size: 16,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            (qs, resolve, staging)
        });
        ctx.scoped("model run", || {
            for ((buf, is_f32), v) in prep.inputs.iter().zip(inputs) {
                match (v, is_f32) {
                    (Value::F32 { data, .. }, true) => {
                        ctx.queue.write_buffer(buf, 0, bytemuck::cast_slice(data))
                    }
                    (Value::Q { data, shape, .. }, false) => ctx.queue.write_buffer(
                        buf,
                        0,
                        bytemuck::cast_slice(&layout::pack(data, &nchw4(shape))?),
                    ),
                    _ => return Err(Error::dtype("model input", "float32 vs quint8")),
                }
            }
            let mut enc = ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("qfuse inference"),
                });
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("qfuse model"),
                    timestamp_writes: timer.as_ref().map(|(qs, ..)| {
                        wgpu::ComputePassTimestampWrites {
                            query_set: qs,
                            beginning_of_pass_write_index: Some(0),
                            end_of_pass_write_index: Some(1),
                        }
                    }),
                });
                for d in &prep.dispatches {
                    d.record(&mut pass);
                }
            }
            for (b, bytes, staging) in &prep.outputs {
                enc.copy_buffer_to_buffer(&prep.buffers[*b], 0, staging, 0, *bytes);
            }
            if let Some((qs, resolve, staging)) = &timer {
                enc.resolve_query_set(qs, 0..2, resolve, 0);
                enc.copy_buffer_to_buffer(resolve, 0, staging, 0, 16);
            }
            ctx.submit_and_wait(enc)?;
            let gpu_ns = match &timer {
                Some((_, _, staging)) => {
                    let raw = ctx.map_read(staging, 16)?;
                    let a = u64::from_le_bytes(raw[0..8].try_into().expect("8 bytes"));
                    let b = u64::from_le_bytes(raw[8..16].try_into().expect("8 bytes"));
                    let ns = b.wrapping_sub(a) as f64 * ctx.queue.get_timestamp_period() as f64;
                    // A driver that writes zeros or nonsense gets no GPU time.
                    (b > a && ns < 1e13).then_some(ns)
                }
                None => None,
            };
            let mut outs = Vec::with_capacity(prep.outputs.len());
            for (o, (_, bytes, staging)) in self.model.outputs().iter().zip(&prep.outputs) {
                let raw = ctx.map_read(staging, *bytes)?;
                let r = self.place.root(o);
                let ri = self.model.info(r).expect("validated");
                let q = ri.qparams().expect("quantized");
                let data = layout::unpack(bytemuck::cast_slice(&raw), &nchw4(&ri.batched(n)))?;
                let shape = self.model.info(o).expect("validated").batched(n);
                outs.push(match self.model.info(o).expect("validated").dtype {
                    DType::F32 => Value::F32 {
                        data: q.dequantize_slice(&data),
                        shape,
                    },
                    DType::QUInt8(q) => Value::Q { data, shape, q },
                });
            }
            Ok((outs, gpu_ns))
        })
    }
}
