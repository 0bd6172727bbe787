//! The activation memory plan: which tensors live in which reusable GPU
//! buffer, by liveness, so that the GPU holds as few tensors at once as the
//! graph allows.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::model::{DType, Model, Op, TensorInfo};

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

/// True when two per-sample shapes have the same NHWC4 layout.
pub fn same_layout(a: &[usize], b: &[usize]) -> bool {
    let chw = |s: &[usize]| match *s {
        [c] => (c, 1, 1),
        [c, h, w] => (c, h, w),
        [c, h] => (c, h, 1),
        _ => (0, 0, 0),
    };
    let (x, y) = (chw(a), chw(b));
    x == y || (x.1 == 1 && x.2 == 1 && y.1 == 1 && y.2 == 1 && x.0 == y.0)
}

/// Placement of every tensor of the model (inputs and node outputs).
pub fn placements(model: &Model) -> Result<HashMap<String, Placement>> {
    let mut p = HashMap::new();
    for (name, info) in &model.inputs {
        p.insert(
            name.clone(),
            if info.dtype == DType::F32 {
                Placement::Host
            } else {
                Placement::Buffer
            },
        );
    }
    let mut users: HashMap<&str, Vec<&str>> = HashMap::new();
    for n in &model.nodes {
        for i in &n.inputs {
            users.entry(i.as_str()).or_default().push(n.op.name());
        }
    }
    for n in &model.nodes {
        let place = match &n.op {
            Op::Dequantize => {
                if let Some(u) = users
                    .get(n.name.as_str())
                    .and_then(|u| u.iter().find(|&&op| op != "quantize"))
                {
                    return Err(Error::Unsupported(format!(
                        "node {:?}: a dequantize feeding {u:?} (on the GPU a dequantize must be a model output or feed a quantize)",
                        n.name
                    )));
                }
                Placement::Host
            }
            Op::Flatten | Op::Reshape(_) => {
                let src = &n.inputs[0];
                let a = &model.info(src).expect("validated").shape;
                let b = &model.info(&n.name).expect("validated").shape;
                if same_layout(a, b) {
                    Placement::Alias(src.clone())
                } else {
                    Placement::Buffer
                }
            }
            _ => Placement::Buffer,
        };
        p.insert(n.name.clone(), place);
    }
    Ok(p)
}

/// The buffer plan for one batch size.
#[derive(Clone, Debug)]
pub struct MemoryPlan {
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
    pub f32_total_bytes: u64,
}

/// The storage root of a tensor (following aliases and dequantizes to the
/// buffer whose bytes they read).
pub fn root<'a>(model: &'a Model, place: &'a HashMap<String, Placement>, name: &'a str) -> &'a str {
    match place.get(name) {
        Some(Placement::Alias(src)) => root(model, place, src),
        Some(Placement::Host) => match model.nodes.iter().find(|n| n.name == name) {
            Some(n) if matches!(n.op, Op::Dequantize) => root(model, place, &n.inputs[0]),
            _ => name,
        },
        _ => name,
    }
}

fn int8_bytes(info: &TensorInfo, n: usize) -> u64 {
    let (c, h, w) = match *info.shape {
        [c] => (c, 1, 1),
        [c, h] => (c, h, 1),
        [c, h, w] => (c, h, w),
        _ => (1, 1, 1),
    };
    (n * h * w * c.div_ceil(4) * 4) as u64
}

fn f32_bytes(info: &TensorInfo, n: usize) -> u64 {
    (n * info.numel() * 4) as u64
}

/// Greedy best-fit assignment of tensors to buffers in execution order.
fn assign(
    order: &[(String, usize, usize)],
    size: &dyn Fn(&str) -> u64,
    steps: usize,
) -> (Vec<u64>, HashMap<String, usize>) {
    let mut buffers: Vec<u64> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut assignment = HashMap::new();
    for s in 0..=steps {
        for (name, _, _) in order.iter().filter(|t| t.1 == s) {
            let need = size(name);
            // Best fit among free buffers; else grow the largest free one; else a new one.
            let fit = free
                .iter()
                .enumerate()
                .filter(|(_, &b)| buffers[b] >= need)
                .min_by_key(|(_, &b)| buffers[b])
                .map(|(i, _)| i);
            let slot = match fit {
                Some(i) => free.swap_remove(i),
                None => match free
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, &b)| buffers[b])
                    .map(|(i, _)| i)
                {
                    Some(i) => {
                        let b = free.swap_remove(i);
                        buffers[b] = need;
                        b
                    }
                    None => {
                        buffers.push(need);
                        buffers.len() - 1
                    }
                },
            };
            assignment.insert(name.clone(), slot);
        }
        for (name, _, _) in order.iter().filter(|t| t.2 == s) {
            free.push(assignment[name]);
        }
    }
    (buffers, assignment)
}

/// Plans the activation buffers of `model` for batch size `batch`.
pub fn plan(model: &Model, batch: usize) -> Result<MemoryPlan> {
    if batch == 0 {
        return Err(Error::shape("batch", "must be >= 1"));
    }
    let place = placements(model)?;
    let steps = model.nodes.len() + 1;
    let mut life: HashMap<String, (usize, usize)> = HashMap::new();
    for (name, _) in &model.inputs {
        if place[name] == Placement::Buffer {
            life.insert(name.clone(), (0, 0));
        }
    }
    for (i, n) in model.nodes.iter().enumerate() {
        for inp in &n.inputs {
            let r = root(model, &place, inp).to_string();
            if let Some(l) = life.get_mut(&r) {
                l.1 = l.1.max(i + 1);
            }
        }
        if place[&n.name] == Placement::Buffer {
            life.insert(n.name.clone(), (i + 1, i + 1));
        }
    }
    for o in &model.outputs {
        let r = root(model, &place, o).to_string();
        if let Some(l) = life.get_mut(&r) {
            l.1 = steps;
        }
    }
    let mut order: Vec<(String, usize, usize)> =
        life.iter().map(|(k, &(a, b))| (k.clone(), a, b)).collect();
    order.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    let info = |n: &str| model.info(n).expect("validated").clone();
    let (buffers, assignment) = assign(&order, &|n| int8_bytes(&info(n), batch), steps);
    let (fbuf, _) = assign(&order, &|n| f32_bytes(&info(n), batch), steps);
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
