//! Whole models on the GPU: constants uploaded once, activations in planned,
//! reused buffers, and one command encoder and one queue submit per inference.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use super::{ConvVariant, Dispatch, GpuContext, GpuLayer, Kernel};
use crate::error::{Error, Result};
use crate::layer::QLayer;
use crate::layout::{self, nchw4};
use crate::model::{DType, Model, Op, TensorInfo, Value};
use crate::ops::{self, AvgPath};
use crate::plan::{self, MemoryPlan, Placement};
use crate::quant::{QParams, Requant};

const WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct QuantizeParams {
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub c4: u32,
    pub total: u32,
    pub zp: i32,
    pub inv: f32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LutParams {
    pub oc: u32,
    pub oh: u32,
    pub ow: u32,
    pub oc4: u32,
    pub ic: u32,
    pub ih: u32,
    pub iw: u32,
    pub ic4: u32,
    pub c_off: u32,
    pub c_len: u32,
    pub split: u32,
    pub by_channel: u32,
    pub total: u32,
    pub merge: u32,
    pub pad0: u32,
    pub pad1: u32,
}

impl LutParams {
    /// Output `(c, h, w)`, input `(c, h, w)`, output words, the output channel
    /// range `(offset, count)` this input fills, the second table's split and
    /// whether it counts input channels (a concatenation: other bytes of shared
    /// words are kept) or flat NCHW elements.
    fn new(
        o: (u32, u32, u32),
        i: (u32, u32, u32),
        total: u32,
        (c_off, c_len): (u32, u32),
        split: u32,
        cat: bool,
    ) -> Self {
        LutParams {
            oc: o.0,
            oh: o.1,
            ow: o.2,
            oc4: o.0.div_ceil(4),
            ic: i.0,
            ih: i.1,
            iw: i.2,
            ic4: i.0.div_ceil(4),
            c_off,
            c_len,
            split,
            by_channel: cat as u32,
            total,
            merge: cat as u32,
            pad0: 0,
            pad1: 0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AddParams {
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub c4: u32,
    pub total: u32,
    pub split: u32,
    pub qnnpack: u32,
    pub relu: u32,
    pub inv: f32,
    pub zo: i32,
    pub lo: i32,
    pub shift: u32,
    pub ma: i32,
    pub mb: i32,
    pub za: i32,
    pub zb: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PoolParams {
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub c4: u32,
    pub oh: u32,
    pub ow: u32,
    pub total: u32,
    pub path: u32,
    pub kh: u32,
    pub kw: u32,
    pub sh: u32,
    pub sw: u32,
    pub ph: u32,
    pub pw: u32,
    pub dh: u32,
    pub dw: u32,
    pub zp: i32,
    pub clamp_taps: u32,
    pub cip: u32,
    pub div_override: u32,
    pub nhwc_split: u32,
    pub m: f32,
    pub tab_w: u32,
    pub tab_half: u32,
    pub qnnpack_mean: u32,
    pub opaque: u32,
    pub pad0: u32,
    pub pad1: u32,
}

fn chw(info: &TensorInfo) -> (u32, u32, u32) {
    match *info.shape {
        [c] => (c as u32, 1, 1),
        [c, h] => (c as u32, h as u32, 1),
        [c, h, w] => (c as u32, h as u32, w as u32),
        _ => (1, 1, 1),
    }
}

fn storage(ctx: &GpuContext, label: &str, bytes: &[u8]) -> wgpu::Buffer {
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytes,
            usage: wgpu::BufferUsages::STORAGE,
        })
}

fn table_buffer(ctx: &GpuContext, a: &[u8; 256], b: &[u8; 256]) -> wgpu::Buffer {
    let t: Vec<u32> = a.iter().chain(b.iter()).map(|&v| v as u32).collect();
    storage(ctx, "qfuse table", bytemuck::cast_slice(&t))
}

/// Constants a node keeps on the GPU for every batch size.
enum NodeGpu {
    None,
    Conv(GpuLayer),
    /// One table pair (and whether the second applies from ATen's vector split).
    Table(wgpu::Buffer, bool),
    Cat(Vec<(wgpu::Buffer, u32)>),
    Add(wgpu::Buffer),
    Pool(wgpu::Buffer, PoolParams, u32),
}

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
    place: HashMap<String, Placement>,
    nodes: Vec<NodeGpu>,
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
        let fused = crate::model::fuse_activations(model)?;
        let model = &fused;
        let place = plan::placements(model)?;
        let engine = model.engine;
        let mut nodes = Vec::with_capacity(model.nodes.len());
        for n in &model.nodes {
            let info = model.info(&n.name).expect("validated");
            let in_q = |i: usize| model.info(&n.inputs[i]).and_then(|t| t.qparams());
            let g = match &n.op {
                Op::Conv2d(l) | Op::Linear(l) => {
                    NodeGpu::Conv(GpuLayer::with_variant(ctx, l, variant(l))?)
                }
                Op::Quantize(to) => match model.nodes.iter().find(|d| d.name == n.inputs[0]) {
                    // dequantize -> quantize: one requantize table.
                    Some(d) if matches!(d.op, Op::Dequantize) => {
                        let from = model
                            .info(&d.inputs[0])
                            .and_then(|t| t.qparams())
                            .expect("validated");
                        let t = ops::requantize_table(from, *to);
                        NodeGpu::Table(table_buffer(ctx, &t, &t), false)
                    }
                    _ => NodeGpu::None,
                },
                Op::Relu => {
                    let t = ops::relu_table(in_q(0).expect("validated"));
                    NodeGpu::Table(table_buffer(ctx, &t, &t), false)
                }
                Op::Relu6 | Op::Hardtanh { .. } => {
                    let (lo, hi) = if let Op::Hardtanh { min, max } = n.op {
                        (min, max)
                    } else {
                        (0.0, 6.0)
                    };
                    let t = ops::hardtanh_table(in_q(0).expect("validated"), lo, hi)?;
                    NodeGpu::Table(table_buffer(ctx, &t, &t), false)
                }
                Op::Hardswish(out) => {
                    let (tv, ts) = ops::hardswish_tables(engine, in_q(0).expect("validated"), *out);
                    NodeGpu::Table(table_buffer(ctx, &tv, &ts), engine == Requant::Fbgemm)
                }
                // Same layout: an alias of its input, nothing to upload or run.
                Op::Flatten | Op::Reshape(_) if place[&n.name] != Placement::Buffer => {
                    NodeGpu::None
                }
                Op::Flatten | Op::Reshape(_) => {
                    let id: [u8; 256] = std::array::from_fn(|v| v as u8);
                    NodeGpu::Table(table_buffer(ctx, &id, &id), false)
                }
                Op::Cat(out) => {
                    let shapes: Vec<Vec<usize>> = n
                        .inputs
                        .iter()
                        .map(|i| model.info(i).expect("validated").batched(1))
                        .collect();
                    let qs: Vec<QParams> = (0..n.inputs.len())
                        .map(|i| in_q(i).expect("validated"))
                        .collect();
                    let tables = ops::cat_tables(&shapes, &qs, *out);
                    NodeGpu::Cat(
                        tables
                            .iter()
                            .map(|(a, b, split)| (table_buffer(ctx, a, b), *split as u32))
                            .collect(),
                    )
                }
                Op::Add { out, .. } => {
                    let (qa, qb) = (in_q(0).expect("validated"), in_q(1).expect("validated"));
                    let _ = out;
                    let mut t: Vec<f32> = Vec::with_capacity(1024);
                    for q in [qa, qb] {
                        t.extend((0..256).map(|v| ops::dequant_vector(v as u8, q)));
                        t.extend((0..256).map(|v| ops::dequant_scalar(v as u8, q)));
                    }
                    NodeGpu::Add(storage(ctx, "qfuse add tables", bytemuck::cast_slice(&t)))
                }
                Op::MaxPool2d(_)
                | Op::AvgPool2d(..)
                | Op::AdaptiveAvgPool2d(_)
                | Op::Mean { .. } => {
                    let x = model.info(&n.inputs[0]).expect("validated");
                    let (p, mode, tab) = pool_setup(engine, &n.op, x, info)?;
                    NodeGpu::Pool(
                        storage(ctx, "qfuse pool table", bytemuck::cast_slice(&tab)),
                        p,
                        mode,
                    )
                }
                Op::Dequantize => NodeGpu::None,
            };
            nodes.push(g);
        }
        Ok(GpuModel {
            model: model.clone(),
            place,
            nodes,
            prepared: Mutex::default(),
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The activation memory plan used for batch size `batch`.
    pub fn plan(&self, ctx: &GpuContext, batch: usize) -> Result<MemoryPlan> {
        Ok(self.prepare(ctx, batch)?.plan.clone())
    }

    /// Bytes of weights and tables held on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| match n {
                NodeGpu::Conv(l) => l.gpu_weight_bytes(),
                NodeGpu::Table(b, _) | NodeGpu::Add(b) | NodeGpu::Pool(b, ..) => b.size(),
                NodeGpu::Cat(v) => v.iter().map(|(b, _)| b.size()).sum(),
                NodeGpu::None => 0,
            })
            .sum()
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
        let plan = plan::plan(m, n)?;
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
        let buf_of = |name: &str| -> usize { plan.assignment[plan::root(m, &self.place, name)] };
        let mut inputs = Vec::new();
        let mut f32_inputs: HashMap<&str, wgpu::Buffer> = HashMap::new();
        for (name, info) in &m.inputs {
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
                inputs.push((buffers[buf_of(name)].clone(), false));
            }
        }
        let mut dispatches = Vec::new();
        for (node, g) in m.nodes.iter().zip(&self.nodes) {
            let info = m.info(&node.name).expect("validated");
            if self.place[&node.name] != Placement::Buffer {
                continue; // aliases and host-side dequantizes record nothing
            }
            let out = &buffers[buf_of(&node.name)];
            let x_info = m.info(&node.inputs[0]).expect("validated");
            let x_buf = || buffers[buf_of(&node.inputs[0])].clone();
            let (oc, oh, ow) = chw(info);
            let words = (n as u32) * oh * ow * oc.div_ceil(4);
            match (&node.op, g) {
                (Op::Conv2d(_) | Op::Linear(_), NodeGpu::Conv(l)) => {
                    dispatches.extend(l.dispatch(
                        ctx,
                        &x_buf(),
                        &x_info.batched(n),
                        x_info.qparams().expect("validated"),
                        out,
                    )?);
                }
                (Op::Quantize(q), NodeGpu::None) => {
                    let (c, h, w) = chw(x_info);
                    let p = QuantizeParams {
                        c,
                        h,
                        w,
                        c4: c.div_ceil(4),
                        total: words,
                        zp: q.zero_point,
                        inv: q.inv_scale(),
                        pad: 0,
                    };
                    let x = &f32_inputs[node.inputs[0].as_str()];
                    dispatches.push(ctx.dispatch(
                        Kernel::Quantize,
                        &[("WG", WG as f64)],
                        bytemuck::bytes_of(&p),
                        &[x, out],
                        words,
                        WG,
                    )?);
                }
                (_, NodeGpu::Table(t, vec_split)) => {
                    // A requantize reads the dequantize's input.
                    let src = plan::root(m, &self.place, &node.inputs[0]);
                    let src_info = m.info(src).expect("validated");
                    let (ic, ih, iw) = chw(src_info);
                    let numel = n * src_info.numel();
                    let split = if *vec_split {
                        ops::n_vec(numel) as u32
                    } else {
                        u32::MAX
                    };
                    let p =
                        LutParams::new((oc, oh, ow), (ic, ih, iw), words, (0, oc), split, false);
                    let src_buf = &buffers[plan.assignment[src]];
                    dispatches.push(ctx.dispatch(
                        Kernel::Lut,
                        &[("WG", WG as f64)],
                        bytemuck::bytes_of(&p),
                        &[src_buf, t, out],
                        words,
                        WG,
                    )?);
                }
                (Op::Cat(_), NodeGpu::Cat(tables)) => {
                    let mut off = 0;
                    for (inp, (t, split)) in node.inputs.iter().zip(tables) {
                        let ii = m.info(inp).expect("validated");
                        let (ic, ih, iw) = chw(ii);
                        let p = LutParams::new(
                            (oc, oh, ow),
                            (ic, ih, iw),
                            words,
                            (off, ic),
                            *split,
                            true,
                        );
                        let src = &buffers[buf_of(inp)];
                        dispatches.push(ctx.dispatch(
                            Kernel::Lut,
                            &[("WG", WG as f64)],
                            bytemuck::bytes_of(&p),
                            &[src, t, out],
                            words,
                            WG,
                        )?);
                        off += ic;
                    }
                }
                (Op::Add { relu, out: qo }, NodeGpu::Add(t)) => {
                    let (qa, qb) = (
                        x_info.qparams().expect("validated"),
                        m.info(&node.inputs[1])
                            .and_then(|i| i.qparams())
                            .expect("validated"),
                    );
                    let (c, h, w) = chw(x_info);
                    let numel = n * x_info.numel();
                    let mut p = AddParams {
                        c,
                        h,
                        w,
                        c4: c.div_ceil(4),
                        total: words,
                        split: ops::n_vec(numel) as u32,
                        qnnpack: 0,
                        relu: *relu as u32,
                        inv: 1.0 / qo.scale,
                        zo: qo.zero_point,
                        lo: if *relu { qo.zero_point } else { 0 },
                        shift: 0,
                        ma: 0,
                        mb: 0,
                        za: qa.zero_point,
                        zb: qb.zero_point,
                    };
                    if m.engine == Requant::Qnnpack {
                        let (ma, mb, shift) = ops::qnnpack_add_params(qa, qb, *qo, *relu)?;
                        p.qnnpack = 1;
                        (p.ma, p.mb, p.shift) = (ma, mb, shift);
                    }
                    let b = &buffers[buf_of(&node.inputs[1])];
                    dispatches.push(ctx.dispatch(
                        Kernel::Add,
                        &[("WG", WG as f64)],
                        bytemuck::bytes_of(&p),
                        &[&x_buf(), b, t, out],
                        words,
                        WG,
                    )?);
                }
                (_, NodeGpu::Pool(t, p0, mode)) => {
                    let mut p = *p0;
                    p.total = words;
                    dispatches.push(ctx.dispatch(
                        Kernel::Pool,
                        &[("WG", WG as f64), ("MODE", *mode as f64)],
                        bytemuck::bytes_of(&p),
                        &[&x_buf(), t, out],
                        words,
                        WG,
                    )?);
                }
                (op, _) => {
                    return Err(Error::Unsupported(format!(
                        "node {:?}: {} on the GPU",
                        node.name,
                        op.name()
                    )))
                }
            }
        }
        let mut outputs = Vec::new();
        for o in &m.outputs {
            let r = plan::root(m, &self.place, o);
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
            for (o, (_, bytes, staging)) in self.model.outputs.iter().zip(&prep.outputs) {
                let raw = ctx.map_read(staging, *bytes)?;
                let r = plan::root(&self.model, &self.place, o);
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

/// Uniforms, mode and host table of a pooling node (mirrors src/ops.rs).
fn pool_setup(
    engine: Requant,
    op: &Op,
    x: &TensorInfo,
    out: &TensorInfo,
) -> Result<(PoolParams, u32, Vec<f32>)> {
    let (c, h, w) = chw(x);
    let (_, oh, ow) = chw(out);
    let q = x.qparams().expect("validated");
    let mut p = PoolParams {
        c,
        h,
        w,
        c4: c.div_ceil(4),
        oh,
        ow,
        zp: q.zero_point,
        ..Default::default()
    };
    let mut tab = vec![0f32; 1];
    let set_window = |p: &mut PoolParams, pl: &ops::Pool2d| {
        (p.kh, p.kw, p.sh, p.sw) = (
            pl.kernel[0] as u32,
            pl.kernel[1] as u32,
            pl.stride[0] as u32,
            pl.stride[1] as u32,
        );
        (p.ph, p.pw, p.dh, p.dw) = (
            pl.padding[0] as u32,
            pl.padding[1] as u32,
            pl.dilation[0] as u32,
            pl.dilation[1] as u32,
        );
    };
    let avg = |p: &mut PoolParams, tab: &mut Vec<f32>, pl: &ops::Pool2d, o: &ops::AvgPoolOpts| {
        set_window(p, pl);
        let path = ops::avg_pool2d_path(engine, pl.ceil_mode, c as usize, h as usize, w as usize);
        p.path = path as u32;
        p.cip = o.count_include_pad as u32;
        p.div_override = o.divisor_override.unwrap_or(0) as u32;
        p.m = ops::qnnpack_avg_mult(q.scale, pl.kernel[0] * pl.kernel[1]);
        p.nhwc_split = c - c % ops::AVG_NHWC_SPLIT as u32;
        let max_df = (pl.kernel[0] * pl.kernel[1]).max(o.divisor_override.unwrap_or(0));
        let recip = |df: usize| {
            if df == 0 {
                0.0
            } else {
                (1.0f64 / df as f64) as f32
            }
        };
        *tab = (0..=max_df).map(recip).collect();
        if path == AvgPath::Nhwc {
            p.tab_half = (max_df + 1) as u32;
            let tail: Vec<f32> = (0..=max_df)
                .map(|df| {
                    if df == 0 {
                        0.0
                    } else {
                        1.0 / (1.0 / (1.0 / df as f32))
                    }
                })
                .collect();
            *tab = (0..=max_df)
                .map(|df| if df == 0 { 0.0 } else { 1.0 / df as f32 })
                .chain(tail)
                .collect();
        }
    };
    let mode = match op {
        Op::MaxPool2d(pl) => {
            set_window(&mut p, pl);
            p.clamp_taps = (engine == Requant::Qnnpack && !pl.ceil_mode) as u32;
            0
        }
        Op::AvgPool2d(pl, o) => {
            avg(&mut p, &mut tab, pl, o);
            1
        }
        Op::AdaptiveAvgPool2d([aoh, aow]) => {
            let path = ops::adaptive_path(engine, c as usize, h as usize, w as usize, *aoh, *aow);
            if path == AvgPath::Qnnpack {
                let k = [h as usize / aoh, w as usize / aow];
                let pl = ops::Pool2d {
                    kernel: k,
                    stride: k,
                    padding: [0, 0],
                    dilation: [1, 1],
                    ceil_mode: false,
                };
                avg(
                    &mut p,
                    &mut tab,
                    &pl,
                    &ops::AvgPoolOpts {
                        count_include_pad: true,
                        divisor_override: None,
                    },
                );
                1
            } else {
                p.path = path as u32;
                let kh_max = (h as usize).div_ceil(*aoh) + 1;
                let kw_max = (w as usize).div_ceil(*aow) + 1;
                p.tab_w = (kw_max + 1) as u32;
                tab = vec![0f32; (kh_max + 1) * (kw_max + 1)];
                for kh in 1..=kh_max {
                    for kw in 1..=kw_max {
                        tab[kh * (kw_max + 1) + kw] = if path == AvgPath::Nhwc {
                            let m = 1.0 / (kh * kw) as f32;
                            1.0 / (1.0 / m)
                        } else {
                            (1.0 / kh as f32) / kw as f32
                        };
                    }
                }
                2
            }
        }
        Op::Mean { .. } => {
            let hw = (h * w) as usize;
            if engine == Requant::Fbgemm && (hw >= 1 << 15 || hw * 255 >= 1 << 24) {
                return Err(Error::Unsupported(format!(
                    "mean over {h}x{w} = {hw} positions on the GPU (exact up to 32767)"
                )));
            }
            p.qnnpack_mean = (engine == Requant::Qnnpack) as u32;
            p.m = ops::qnnpack_avg_mult(q.scale, hw);
            3
        }
        _ => unreachable!("pool_setup on a non-pool op"),
    };
    Ok((p, mode, tab))
}
