//! The activation memory plan: which tensors live in which reusable GPU
//! buffer, by liveness, so that the GPU holds as few tensors at once as the
//! graph allows.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::model::{DType, Model, TensorInfo};
use crate::ops::Storage;

/// Where a tensor of the graph lives on the GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// In a planned buffer of its own.
    Buffer,
    /// The same bytes as another tensor (a flatten/reshape that leaves the
    /// NHWC4 layout unchanged, e.g. `[C, 1, 1]` -> `[C]`).
    Alias(String),
    /// Not on the GPU: a float32 model input (uploaded to its own buffer) or
    /// a dequantize (done on the host after readback, or fused with the
    /// quantize that follows it into one requantize table).
    Host,
}

pub use crate::layout::same_layout;

/// Where every tensor of a model lives on the GPU, and the storage root of
/// each (computed once, in topological order: following an alias or a
/// host-side dequantize is a lookup, not a walk).
#[derive(Clone, Debug)]
pub struct Placements {
    place: HashMap<String, Placement>,
    root: HashMap<String, String>,
}

impl Placements {
    /// Placement of every tensor of the model (inputs and node outputs), as
    /// each op declares it.
    pub fn new(model: &Model) -> Result<Self> {
        let mut place = HashMap::with_capacity(model.nodes().len() + model.inputs().len());
        let mut root: HashMap<String, String> = HashMap::with_capacity(place.capacity());
        for (name, info) in model.inputs() {
            place.insert(
                name.clone(),
                if info.dtype == DType::F32 {
                    Placement::Host
                } else {
                    Placement::Buffer
                },
            );
            root.insert(name.clone(), name.clone());
        }
        let mut host_float = std::collections::HashSet::new();
        for n in model.nodes() {
            let kind = n.op.kind();
            if kind.runs_on_host() {
                host_float.insert(n.name.as_str());
            } else if let Some(i) = n.inputs.iter().find(|i| host_float.contains(i.as_str())) {
                return Err(Error::Unsupported(format!(
                    "node {i:?}: a float op run on the host after readback feeds {:?} (only model outputs may depend on one)",
                    n.name
                )));
            }
            let ins: Vec<&TensorInfo> = n
                .inputs
                .iter()
                .map(|i| model.info(i).expect("validated"))
                .collect();
            let out = model.info(&n.name).expect("validated");
            for i in &n.inputs {
                let from_host_op = place.get(i) == Some(&Placement::Host)
                    && !model.inputs().iter().any(|(m, _)| m == i);
                if from_host_op && !kind.reads_dequantized() && !kind.runs_on_host() {
                    return Err(Error::Unsupported(format!(
                        "node {i:?}: a dequantize feeding {:?} (on the GPU a dequantize must be a model output or feed a quantize)",
                        kind.name()
                    )));
                }
            }
            let (p, r) = match kind.storage(&ins, out) {
                Storage::Buffer => (Placement::Buffer, n.name.clone()),
                Storage::Alias => (
                    Placement::Alias(n.inputs[0].clone()),
                    root[&n.inputs[0]].clone(),
                ),
                Storage::Host => (Placement::Host, root[&n.inputs[0]].clone()),
            };
            place.insert(n.name.clone(), p);
            root.insert(n.name.clone(), r);
        }
        Ok(Placements { place, root })
    }

    /// The placement of tensor `name`.
    pub fn get(&self, name: &str) -> Option<&Placement> {
        self.place.get(name)
    }

    /// The storage root of a tensor: following aliases and host-side
    /// dequantizes to the tensor whose buffer holds its bytes.
    pub fn root<'a>(&'a self, name: &'a str) -> &'a str {
        self.root.get(name).map_or(name, |r| r.as_str())
    }

    /// Every tensor's placement.
    pub fn map(&self) -> &HashMap<String, Placement> {
        &self.place
    }
}

/// Placement of every tensor of the model (inputs and node outputs).
pub fn placements(model: &Model) -> Result<HashMap<String, Placement>> {
    Ok(Placements::new(model)?.place)
}

/// The buffer plan for one batch size.
#[derive(Clone, Debug)]
pub struct MemoryPlan {
    /// The batch size the byte counts are for.
    pub batch: usize,
    /// Size in bytes of each reusable activation buffer.
    pub buffers: Vec<u64>,
    /// Tensor name -> buffer index, for every tensor placed in a buffer.
    pub assignment: HashMap<String, usize>,
    /// Tensor name -> the steps `(first, last)` it is alive (step 0 holds the
    /// model inputs, step i+1 runs node i, the last step reads the outputs).
    pub lifetimes: HashMap<String, (usize, usize)>,
    /// Bytes of the planned int8 (packed NHWC4) buffers: the peak activation memory.
    pub peak_bytes: u64,
    /// Bytes of all planned tensors if each had its own buffer.
    pub total_bytes: u64,
    /// The same plan with f32 tensors (4 bytes per element, no packing).
    pub f32_peak_bytes: u64,
    /// Bytes of all planned tensors in f32 if each had its own buffer.
    pub f32_total_bytes: u64,
}

/// Bytes of a planned tensor on the GPU: packed NHWC4 bytes, or NHWC4F
/// words for a float32 tensor computed on the GPU.
fn int8_bytes(info: &TensorInfo, n: usize) -> u64 {
    let (c, h, w) = crate::layout::chw(&info.shape);
    let per = if info.dtype == DType::F32 { 16 } else { 4 };
    (n * h * w * c.div_ceil(4) * per) as u64
}

fn f32_bytes(info: &TensorInfo, n: usize) -> u64 {
    (n * info.numel() * 4) as u64
}

/// One tensor for [`assign_buffers`]: defined (written) at step `def`, last
/// read at step `last`, `bytes` large.
#[derive(Clone, Copy, Debug)]
pub struct Lifetime {
    /// The step that writes the tensor.
    pub def: usize,
    /// The last step that reads it (`>= def`); its buffer is free after it.
    pub last: usize,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Greedy best-fit assignment of tensors to reusable buffers, in execution
/// order: at each step the tensors defined there take a free buffer (the
/// smallest that fits; else the largest free one, grown; else a new one), in
/// slice order, and only then are the tensors last read there released, so
/// an output never shares a buffer with its own inputs. Returns the buffer
/// sizes and each tensor's buffer.
pub fn assign_buffers(tensors: &[Lifetime]) -> (Vec<u64>, Vec<usize>) {
    let mut buffers: Vec<u64> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut slot = vec![usize::MAX; tensors.len()];
    // A tensor that lives to the end may say so with `last: usize::MAX`.
    let last_step = tensors
        .iter()
        .flat_map(|t| [t.def, t.last])
        .filter(|&s| s != usize::MAX)
        .max()
        .unwrap_or(0);
    // The tensors defined and last read at each step, in slice order.
    let mut defined: Vec<Vec<usize>> = vec![Vec::new(); last_step + 1];
    let mut released: Vec<Vec<usize>> = vec![Vec::new(); last_step + 1];
    for (i, t) in tensors.iter().enumerate() {
        defined[t.def].push(i);
        if t.last != usize::MAX {
            released[t.last].push(i);
        }
    }
    for s in 0..=last_step {
        for &i in &defined[s] {
            let t = &tensors[i];
            let fit = free
                .iter()
                .enumerate()
                .filter(|(_, &b)| buffers[b] >= t.bytes)
                .min_by_key(|(_, &b)| buffers[b])
                .map(|(i, _)| i);
            let pick = fit.or_else(|| {
                free.iter()
                    .enumerate()
                    .max_by_key(|(_, &b)| buffers[b])
                    .map(|(i, _)| i)
            });
            slot[i] = match pick {
                Some(f) => {
                    let b = free.swap_remove(f);
                    buffers[b] = buffers[b].max(t.bytes);
                    b
                }
                None => {
                    buffers.push(t.bytes);
                    buffers.len() - 1
                }
            };
        }
        for &i in &released[s] {
            free.push(slot[i]);
        }
    }
    (buffers, slot)
}

/// Plans the activation buffers of `model` for batch size `batch`.
pub fn plan(model: &Model, batch: usize) -> Result<MemoryPlan> {
    plan_placed(model, &Placements::new(model)?, batch)
}

/// [`plan`] with the placements already computed.
pub fn plan_placed(model: &Model, place: &Placements, batch: usize) -> Result<MemoryPlan> {
    if batch == 0 {
        return Err(Error::shape("batch", "must be >= 1"));
    }
    // Every size below is at most 16 bytes per element of all tensors (an
    // f32 tensor on the GPU with its channels padded to 4: at most 4 words
    // per element): check once that it fits, so no size wraps.
    let f32_sum = model
        .inputs()
        .iter()
        .map(|(_, i)| i)
        .chain(model.nodes().iter().filter_map(|n| model.info(&n.name)))
        .try_fold(0usize, |acc, i| {
            i.numel()
                .checked_mul(batch)?
                .checked_mul(16)?
                .checked_add(acc)
        });
    if f32_sum.is_none() {
        return Err(Error::config(
            "batch",
            format!(
                "batch {batch} makes the activations larger than {} bytes",
                usize::MAX
            ),
        ));
    }
    let steps = model.nodes().len() + 1;
    let mut life: HashMap<String, (usize, usize)> = HashMap::new();
    for (name, _) in model.inputs() {
        if place.get(name) == Some(&Placement::Buffer) {
            life.insert(name.clone(), (0, 0));
        }
    }
    for (i, n) in model.nodes().iter().enumerate() {
        for inp in &n.inputs {
            if let Some(l) = life.get_mut(place.root(inp)) {
                l.1 = l.1.max(i + 1);
            }
        }
        if place.get(&n.name) == Some(&Placement::Buffer) {
            life.insert(n.name.clone(), (i + 1, i + 1));
        }
    }
    for o in model.outputs() {
        if let Some(l) = life.get_mut(place.root(o)) {
            l.1 = steps;
        }
    }
    let mut order: Vec<(String, usize, usize)> =
        life.iter().map(|(k, &(a, b))| (k.clone(), a, b)).collect();
    order.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    let info = |n: &str| model.info(n).expect("validated").clone();
    let lifetimes = |bytes: &dyn Fn(&str) -> u64| -> Vec<Lifetime> {
        order
            .iter()
            .map(|(n, def, last)| Lifetime {
                def: *def,
                last: *last,
                bytes: bytes(n),
            })
            .collect()
    };
    let (buffers, slots) = assign_buffers(&lifetimes(&|n| int8_bytes(&info(n), batch)));
    let (fbuf, _) = assign_buffers(&lifetimes(&|n| f32_bytes(&info(n), batch)));
    let assignment: HashMap<String, usize> = order
        .iter()
        .zip(slots)
        .map(|((n, _, _), b)| (n.clone(), b))
        .collect();
    let total_bytes = order
        .iter()
        .map(|(n, _, _)| int8_bytes(&info(n), batch))
        .sum();
    let f32_total_bytes = order
        .iter()
        .map(|(n, _, _)| f32_bytes(&info(n), batch))
        .sum();
    Ok(MemoryPlan {
        batch,
        peak_bytes: buffers.iter().sum(),
        f32_peak_bytes: fbuf.iter().sum(),
        buffers,
        assignment,
        lifetimes: life,
        total_bytes,
        f32_total_bytes,
    })
}
