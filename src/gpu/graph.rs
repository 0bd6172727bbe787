//! Whole models on the GPU: constants uploaded once, activations in planned,
//! reused buffers, and one command encoder and one queue submit per
//! inference. A generic driver: each node's lowered constants are uploaded
//! and its dispatches recorded by its op's module (`src/ops/*/gpu.rs`,
//! through [`super::node`]).

use std::collections::HashMap;
use std::sync::Mutex;

use super::node::{GpuInput, GpuIo, GpuNode, UploadCx};
use super::{ConvVariant, Dispatch, GpuContext};
use crate::error::{Error, Result};
use crate::layer::QLayer;
use crate::layout::{self, nchw4};
use crate::model::{DType, Model, Value};
use crate::plan::{self, MemoryPlan, Placement, Placements};

/// Buffers and recorded dispatches for one batch size: one run at a time
/// uses one instance (its bind groups bind these very buffers).
struct Prepared {
    batch: usize,
    buffers: Vec<wgpu::Buffer>,
    /// Per model input: the buffer its data is written to, and whether it is f32.
    inputs: Vec<(wgpu::Buffer, bool)>,
    dispatches: Vec<Dispatch>,
    /// Per model output: (buffer, bytes to read, staging buffer).
    outputs: Vec<(usize, u64, wgpu::Buffer)>,
    /// Bytes of the activation, float32 input and staging buffers.
    bytes: u64,
}

/// The default of [`GpuModel::set_memory_limit`]: 256 MiB of idle
/// per-batch-size buffers.
pub const DEFAULT_MEMORY_LIMIT: u64 = 256 << 20;

/// The pool of [`Prepared`] instances: idle ones by batch size, with the
/// tick of their last use for LRU eviction.
struct Pool {
    idle: HashMap<usize, Vec<(u64, Prepared)>>,
    /// Bytes of every instance, idle or in use.
    held: u64,
    /// Bytes of idle instances.
    idle_bytes: u64,
    tick: u64,
    limit: u64,
    /// Testing knob: a lower storage-binding limit for batch splitting.
    binding_limit: Option<u64>,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            idle: HashMap::new(),
            held: 0,
            idle_bytes: 0,
            tick: 0,
            limit: DEFAULT_MEMORY_LIMIT,
            binding_limit: None,
        }
    }
}

impl Pool {
    /// Drops least recently used idle instances until the idle bytes fit
    /// the limit, keeping the instance used at tick `keep`.
    fn evict(&mut self, keep: Option<u64>) {
        while self.idle_bytes > self.limit {
            let oldest = self
                .idle
                .iter()
                .flat_map(|(&b, v)| v.iter().enumerate().map(move |(i, (t, _))| (*t, b, i)))
                .filter(|&(t, _, _)| Some(t) != keep)
                .min();
            let Some((_, b, i)) = oldest else { break };
            let v = self.idle.get_mut(&b).expect("listed");
            let (_, p) = v.swap_remove(i);
            if v.is_empty() {
                self.idle.remove(&b);
            }
            self.idle_bytes -= p.bytes;
            self.held -= p.bytes;
            for buf in p.buffers.iter().chain(p.outputs.iter().map(|o| &o.2)) {
                buf.destroy();
            }
        }
    }
}

/// A run's instance, taken from the pool; given back by [`Lease::give_back`]
/// after a run that succeeded, dropped (and its bytes released) otherwise.
struct Lease<'a> {
    pool: &'a Mutex<Pool>,
    prep: Option<Prepared>,
}

impl Lease<'_> {
    fn get(&self) -> &Prepared {
        self.prep.as_ref().expect("held until given back")
    }
    fn give_back(mut self) {
        let p = self.prep.take().expect("held until given back");
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.tick += 1;
        let t = pool.tick;
        pool.idle_bytes += p.bytes;
        pool.idle.entry(p.batch).or_default().push((t, p));
        pool.evict(Some(t));
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.prep.take() {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            pool.held -= p.bytes;
        }
    }
}

/// A model whose weights and tables live on the GPU.
///
/// # Threads
/// `GpuModel` is `Send + Sync`, and [`GpuModel::run`] takes `&self`: any
/// number of threads may run one model at once (with one shared
/// [`GpuContext`]), and each call gets exactly its own result. The weights
/// and tables are read-only after [`GpuModel::new`]; everything a run writes
/// (its input, activation and readback buffers, and the dispatches bound to
/// them) belongs to one instance for its batch size, which the run takes
/// from a pool and gives back when it has read its outputs; when every
/// instance of that batch size is busy, a new one is built. No lock is held
/// while the GPU works: each thread submits its own command buffer and
/// waits for that submission only, so runs overlap where the device allows.
/// (wgpu's error scopes are per thread, and the split-K scratch buffers a
/// layer shares between instances are ordered by the queue.)
///
/// # Memory
/// Instances stay in the pool for reuse. [`GpuModel::memory_bytes`] reports
/// what they hold; idle instances beyond [`GpuModel::set_memory_limit`]
/// (default [`DEFAULT_MEMORY_LIMIT`], 256 MiB) are freed, least recently used
/// first, so a server with dynamic batching stays bounded: at most the limit
/// plus the instances in use plus the one last used.
///
/// # Large batches
/// A batch whose largest tensor does not fit one storage binding
/// (`max_storage_buffer_binding_size`, `max_buffer_size`) runs in pieces of
/// the largest batch that fits, concatenated; the result is the same bit
/// for bit as one run, except for models with a node that rounds by ATen's
/// vector/scalar split over the whole tensor (`add` or `hardswish` under
/// fbgemm, when a sample's element count is not a multiple of 64): those
/// are refused with [`Error::TooLarge`] naming the tensor, the limit and the
/// largest batch that fits.
pub struct GpuModel {
    model: Model,
    place: Placements,
    nodes: Vec<Box<dyn GpuNode>>,
    pool: Mutex<Pool>,
    /// Per sample, the largest tensor on the GPU (name, bytes).
    largest: (String, u64),
    /// The first node whose results depend on the batch size, if any.
    dependent: Option<String>,
}

impl GpuModel {
    /// Uploads every layer's weights and every op's tables once; each
    /// conv/linear runs the variant [`ConvVariant::choose_on`] picks (the
    /// tensor-core kernel where the context offers it).
    pub fn new(ctx: &GpuContext, model: &Model) -> Result<Self> {
        Self::with_variants(ctx, model, &|l| ConvVariant::choose_on(ctx, l))
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
                gpu_f32: n
                    .inputs
                    .iter()
                    .map(|i| {
                        let r = place.root(i);
                        place.get(r) == Some(&Placement::Buffer)
                            && model.info(r).expect("validated").dtype == DType::F32
                    })
                    .collect(),
            };
            // Validation and out-of-memory errors of the uploads are returned.
            let node = ctx.scoped("uploading", || lowered.upload(&cx));
            nodes.push(node.map_err(in_node)?);
        }
        let largest = largest_per_sample(&model, &place)?;
        let dependent = dependent_node(&model, &nodes);
        Ok(GpuModel {
            model,
            place,
            nodes,
            pool: Mutex::default(),
            largest,
            dependent,
        })
    }

    /// The model as it runs: the one given, with standalone activations
    /// fused into the layers before them ([`crate::model::fuse_activations`]).
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The activation memory plan used for batch size `batch`.
    pub fn plan(&self, _ctx: &GpuContext, batch: usize) -> Result<MemoryPlan> {
        plan::plan_placed(&self.model, &self.place, batch)
    }

    /// Bytes of weights and tables held on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        self.nodes.iter().map(|n| n.bytes()).sum()
    }

    /// Bytes of the per-batch-size buffers (activations, float32 inputs,
    /// readback staging) the model holds now, idle or in use; weights are
    /// [`GpuModel::weight_bytes`].
    pub fn memory_bytes(&self) -> u64 {
        self.lock_pool().held
    }

    /// The most bytes of idle per-batch-size buffers kept for reuse
    /// (default [`DEFAULT_MEMORY_LIMIT`]); past it the least recently used
    /// idle instances are freed (the one used last is always kept, so a
    /// batch larger than the limit is not rebuilt on every run). 0 keeps
    /// only that one.
    pub fn set_memory_limit(&self, bytes: u64) {
        let mut pool = self.lock_pool();
        pool.limit = bytes;
        let keep = pool.tick;
        pool.evict(Some(keep));
    }

    /// The current [`GpuModel::set_memory_limit`].
    pub fn memory_limit(&self) -> u64 {
        self.lock_pool().limit
    }

    /// For tests: pretend the device binds at most `bytes` per storage
    /// buffer when deciding how to split a batch (`None`: the device's own
    /// limit). The device still checks its real limits.
    #[doc(hidden)]
    pub fn set_binding_limit_for_testing(&self, bytes: Option<u64>) {
        self.lock_pool().binding_limit = bytes;
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes an idle instance for `batch` from the pool, or builds one
    /// (outside the lock, so other threads keep running).
    fn take(&self, ctx: &GpuContext, batch: usize) -> Result<Lease<'_>> {
        {
            let mut pool = self.lock_pool();
            if let Some(v) = pool.idle.get_mut(&batch) {
                let (_, p) = v.pop().expect("no empty lists");
                if v.is_empty() {
                    pool.idle.remove(&batch);
                }
                pool.idle_bytes -= p.bytes;
                return Ok(Lease {
                    pool: &self.pool,
                    prep: Some(p),
                });
            }
        }
        let p = self.build(ctx, batch)?;
        self.lock_pool().held += p.bytes;
        Ok(Lease {
            pool: &self.pool,
            prep: Some(p),
        })
    }

    /// The effective storage-binding limit and, per sample, the largest
    /// tensor (name and bytes) that must fit one binding.
    fn largest_tensor(&self, ctx: &GpuContext) -> (u64, &str, u64) {
        let l = ctx.limits();
        let mut limit = l.max_storage_buffer_binding_size.min(l.max_buffer_size);
        if let Some(b) = self.lock_pool().binding_limit {
            limit = limit.min(b);
        }
        (limit, &self.largest.0, self.largest.1)
    }

    /// The first node whose results depend on the batch size (ATen's vector
    /// split over the whole tensor), if any.
    fn batch_dependent_node(&self) -> Option<&str> {
        self.dependent.as_deref()
    }

    /// The largest batch whose every tensor fits one storage binding of
    /// this device, and whether a larger batch may be run in pieces of it
    /// (bit for bit the same as one run).
    pub fn max_batch(&self, ctx: &GpuContext) -> Result<(usize, bool)> {
        let (limit, _, per) = self.largest_tensor(ctx);
        let fit = limit
            .checked_div(per)
            .map_or(usize::MAX, |f| usize::try_from(f).unwrap_or(usize::MAX));
        Ok((fit, self.batch_dependent_node().is_none()))
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
            let ri = m.info(r).expect("validated");
            let words = if ri.dtype == DType::F32 {
                layout::f32_words(&ri.batched(n))?
            } else {
                layout::words(&ri.batched(n))?
            };
            let bytes = words as u64 * 4;
            let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("qfuse output"),
                size: bytes.max(4),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            outputs.push((b, bytes, staging));
        }
        let bytes = buffers.iter().map(|b| b.size()).sum::<u64>()
            + f32_inputs.values().map(|b| b.size()).sum::<u64>()
            + outputs.iter().map(|o| o.2.size()).sum::<u64>();
        Ok(Prepared {
            batch: n,
            buffers,
            inputs,
            dispatches,
            outputs,
            bytes,
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
        let (limit, tensor, per) = self.largest_tensor(ctx);
        let dependent = self.batch_dependent_node();
        let mut piece = n;
        if per.saturating_mul(n as u64) > limit {
            let fit = (limit / per.max(1)) as usize;
            let too_large = |why: String| Error::TooLarge {
                what: format!("tensor {tensor:?} at batch {n} ({per} bytes a sample; {why})"),
                needed: per.saturating_mul(n as u64),
                limit,
            };
            if fit == 0 {
                return Err(too_large("not even one sample fits".into()));
            }
            if let Some(node) = dependent {
                return Err(too_large(format!(
                    "the largest batch that fits is {fit}; not split, because node {node:?} \
                     rounds by ATen's vector/scalar split over the whole batch (fbgemm), so \
                     pieces would round differently: run batches of at most {fit}"
                )));
            }
            piece = fit;
        }
        loop {
            match self.run_pieces(ctx, inputs, n, piece, timed) {
                // A limit other than the binding size (dispatch grid, split-K
                // scratch): smaller pieces, where that is exact.
                Err(e) if piece > 1 && dependent.is_none() && is_too_large(&e) => piece /= 2,
                r => return r,
            }
        }
    }

    /// Batch `n` in pieces of `piece` samples, concatenated (GPU times summed).
    fn run_pieces(
        &self,
        ctx: &GpuContext,
        inputs: &[Value],
        n: usize,
        piece: usize,
        timed: bool,
    ) -> Result<(Vec<Value>, Option<f64>)> {
        if piece >= n {
            return self.run_batch(ctx, inputs, n, timed);
        }
        let mut outs: Vec<Value> = Vec::new();
        let mut total_ns = Some(0.0);
        let mut start = 0;
        while start < n {
            let len = piece.min(n - start);
            let part: Vec<Value> = inputs.iter().map(|v| slice_batch(v, start, len)).collect();
            let (o, ns) = self.run_batch(ctx, &part, len, timed)?;
            total_ns = total_ns.zip(ns).map(|(a, b)| a + b);
            if outs.is_empty() {
                outs = o;
            } else {
                for (acc, v) in outs.iter_mut().zip(o) {
                    append_batch(acc, v);
                }
            }
            start += len;
        }
        Ok((outs, if timed { total_ns } else { None }))
    }

    /// One inference of batch `n` on one pooled instance.
    fn run_batch(
        &self,
        ctx: &GpuContext,
        inputs: &[Value],
        n: usize,
        timed: bool,
    ) -> Result<(Vec<Value>, Option<f64>)> {
        let lease = self.take(ctx, n)?;
        let prep = lease.get();
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
            let index = ctx.submit(enc);
            let mut reads: Vec<(&wgpu::Buffer, u64)> =
                prep.outputs.iter().map(|(_, b, s)| (s, *b)).collect();
            if let Some((_, _, staging)) = &timer {
                reads.push((staging, 16));
            }
            let mut raws = ctx.read_staging(index, &reads)?;
            let gpu_ns = match &timer {
                Some(_) => {
                    let raw = raws.pop().expect("timestamps read");
                    let a = u64::from_le_bytes(raw[0..8].try_into().expect("8 bytes"));
                    let b = u64::from_le_bytes(raw[8..16].try_into().expect("8 bytes"));
                    let ns = b.wrapping_sub(a) as f64 * ctx.queue.get_timestamp_period() as f64;
                    // A driver that writes zeros or nonsense gets no GPU time.
                    (b > a && ns < 1e13).then_some(ns)
                }
                None => None,
            };
            let mut outs = Vec::with_capacity(prep.outputs.len());
            for (o, raw) in self.model.outputs().iter().zip(raws) {
                let r = self.place.root(o);
                let ri = self.model.info(r).expect("validated");
                let shape = self.model.info(o).expect("validated").batched(n);
                let Some(q) = ri.qparams() else {
                    // An f32 tensor computed on the GPU (NHWC4F words), then
                    // the float ops after it on the host, in order.
                    let mut v =
                        layout::unpack_f32(bytemuck::cast_slice(&raw), &nchw4(&ri.batched(n)))?;
                    for (f, in_shape) in self.host_chain(o) {
                        v = crate::ops::host::HostLowered::apply(f, &v, in_shape);
                    }
                    outs.push(Value::F32 { data: v, shape });
                    continue;
                };
                let data = layout::unpack(bytemuck::cast_slice(&raw), &nchw4(&ri.batched(n)))?;
                outs.push(match self.model.info(o).expect("validated").dtype {
                    DType::F32 => {
                        // Dequantize, then the float ops run on the host
                        // after readback, in order.
                        let chain = self.host_chain(o);
                        let mut v = q.dequantize_slice(&data);
                        for (f, in_shape) in chain {
                            v = crate::ops::host::HostLowered::apply(f, &v, in_shape);
                        }
                        Value::F32 { data: v, shape }
                    }
                    DType::QUInt8(q) => Value::Q { data, shape, q },
                });
            }
            Ok((outs, gpu_ns))
        })
        .inspect(|_| lease.give_back())
    }
}

impl GpuModel {
    /// The host float ops between output `o` and the dequantize it reads
    /// (first to last), each with its input's per-sample shape.
    fn host_chain(&self, o: &str) -> Vec<(&crate::ops::host::HostFn, &[usize])> {
        let m = &self.model;
        let mut chain = Vec::new();
        let mut at = o;
        while let Some(node) = m.nodes().iter().find(|n| n.name == at) {
            let crate::ops::Op::HostFloat(f) = &node.op else {
                break;
            };
            let x = &node.inputs[0];
            chain.push((f, m.info(x).expect("validated").shape.as_slice()));
            at = x;
        }
        chain.reverse();
        chain
    }
}

/// Per sample, the model's largest tensor on the GPU (name and bytes): what
/// must fit one storage binding.
fn largest_per_sample(m: &Model, place: &Placements) -> Result<(String, u64)> {
    let mut best = (String::new(), 0u64);
    let mut consider = |name: &str, bytes: u64| {
        if bytes > best.1 {
            best = (name.to_string(), bytes);
        }
    };
    for (name, info) in m.inputs() {
        if info.dtype == DType::F32 {
            consider(name, info.numel() as u64 * 4);
        }
    }
    for name in m
        .inputs()
        .iter()
        .map(|(n, _)| n.as_str())
        .chain(m.nodes().iter().map(|n| n.name.as_str()))
    {
        if place.get(name) == Some(&Placement::Buffer) {
            let info = m.info(name).expect("validated");
            if info.dtype != DType::F32 {
                consider(name, layout::words(&info.batched(1))? as u64 * 4);
            } else {
                // An f32 tensor computed on the GPU.
                consider(name, layout::f32_words(&info.batched(1))? as u64 * 4);
            }
        }
    }
    Ok(best)
}

/// The first node whose results depend on the batch size: one that rounds
/// by ATen's vector split over the whole tensor, on a sample whose element
/// count is not a multiple of [`crate::ops::VEC_SPLIT`].
fn dependent_node(m: &Model, nodes: &[Box<dyn GpuNode>]) -> Option<String> {
    m.nodes()
        .iter()
        .zip(nodes)
        .find(|(n, g)| {
            g.vec_split()
                && n.inputs.first().is_some_and(|i| {
                    !m.info(i)
                        .expect("validated")
                        .numel()
                        .is_multiple_of(crate::ops::VEC_SPLIT)
                })
        })
        .map(|(n, _)| n.name.clone())
}

/// Whether an error is (or a node failed with) [`Error::TooLarge`].
fn is_too_large(e: &Error) -> bool {
    match e {
        Error::TooLarge { .. } => true,
        Error::Node { source, .. } => is_too_large(source),
        _ => false,
    }
}

/// Samples `start..start + len` of a batched value.
fn slice_batch(v: &Value, start: usize, len: usize) -> Value {
    let shape = v.shape();
    let row: usize = shape[1..].iter().product();
    let mut s = shape.to_vec();
    s[0] = len;
    let r = start * row..(start + len) * row;
    match v {
        Value::F32 { data, .. } => Value::F32 {
            data: data[r].to_vec(),
            shape: s,
        },
        Value::Q { data, q, .. } => Value::Q {
            data: data[r].to_vec(),
            shape: s,
            q: *q,
        },
    }
}

/// Appends the samples of `more` to `acc` (same type and sample shape).
fn append_batch(acc: &mut Value, more: Value) {
    match (acc, more) {
        (Value::F32 { data, shape }, Value::F32 { data: d, shape: s }) => {
            data.extend(d);
            shape[0] += s[0];
        }
        (
            Value::Q { data, shape, .. },
            Value::Q {
                data: d, shape: s, ..
            },
        ) => {
            data.extend(d);
            shape[0] += s[0];
        }
        _ => unreachable!("one model output has one dtype"),
    }
}
