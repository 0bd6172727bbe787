//! `gather`: a generic byte gather, the data movement of every shape op that
//! is not a plain reshape (transpose, permute, slice, ONNX `Gather` with
//! constant indices, split/chunk, concatenation on any axis, and chains of
//! them folded into one map).
//!
//! Output element `i` (row-major over the node's per-sample `shape`) is
//! element `index[i]` of the concatenation, in input order, of the inputs'
//! per-sample row-major (NCHW) elements. Every input is quantized with the
//! same qparams, which the output keeps: bytes move, nothing is computed, so
//! the result is exact by construction. The map applies to each sample of
//! the batch.
//!
//! **Fill entries.** An index entry `FILL + b` (see [`FILL`], `b` in
//! `0..=255`) reads no input: the output element is the byte `b` (a stored
//! byte: the uint8 image of the output's qparams, so for a qint8 tensor the
//! int8 value plus 128). [`fill_entry`] makes one; [`fill_byte`] reads one
//! back. This is how a gather writes constants: the zero-point bytes a
//! transposed convolution inserts between input elements
//! ([`conv_transpose_index`]), or the constant of a constant-mode pad. Entries
//! from `FILL + 256` up are invalid, and the inputs of a gather together hold
//! fewer than `FILL` elements per sample.
//!
//! The index builders ([`transpose_index`], [`slice_index`], [`take_index`],
//! [`concat_index`], [`split_index`], [`compose_index`],
//! [`conv_transpose_index`]) work on per-sample shapes of any rank and return
//! `(out_shape, index)`.

use std::sync::Arc;

use serde_json::json;

use crate::error::{Error, Result};
use crate::model::{TensorInfo, Value};
use crate::quant::Requant;

use super::{Arity, Attrs, CpuIo, FileOp, Lowered, NodeWriter, Op, OpKind, ParseCx, Signature};

mod gpu;

#[doc(hidden)]
pub use gpu::GatherParams;

pub(crate) const FILE_OPS: &[FileOp] = &[FileOp {
    name: "gather",
    attributes: &["shape"],
    parse: parse_gather,
}];

/// The first fill entry of a gather index: the entry `FILL + b` (`b` in
/// `0..=255`) makes its output element the stored byte `b` instead of reading
/// an input. `0xFFFF_FE00`; entries `0xFFFF_FF00..=0xFFFF_FFFF` are invalid.
pub const FILL: u32 = 0xFFFF_FE00;

/// The index entry that writes the stored byte `b`: `FILL + b`.
pub const fn fill_entry(b: u8) -> u32 {
    FILL + b as u32
}

/// The byte a fill entry writes, or `None` for an entry that reads an input.
pub const fn fill_byte(entry: u32) -> Option<u8> {
    if entry >= FILL && entry < FILL + 256 {
        Some((entry - FILL) as u8)
    } else {
        None
    }
}

fn parse_gather(a: &Attrs<'_>, cx: &ParseCx<'_>) -> Result<Op> {
    let v = a.get("shape")?;
    let shape: Vec<usize> = v
        .as_array()
        .and_then(|s| s.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
        .ok_or_else(|| Error::Model(format!("\"shape\" must be a list of sizes, got {v}")))?;
    check_shape(&shape)?;
    let n = super::checked_product("gather output", &shape)?;
    crate::model::check_tensor_size("gather output", &shape, 1)?;
    let name = format!("{}.index", cx.node);
    let (bytes, _) = cx.tensors.get(&name, safetensors::Dtype::U32, Some(&[n]))?;
    let index = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Op::Gather {
        shape,
        index: Arc::new(index),
    })
}

/// A per-sample output shape: rank 1 to 3, every dimension at least 1.
fn check_shape(shape: &[usize]) -> Result<()> {
    if shape.is_empty() || shape.len() > 3 || shape.contains(&0) {
        return Err(Error::shape(
            "gather",
            format!(
                "output shape {shape:?}: a per-sample shape has 1 to 3 dimensions, each at least 1"
            ),
        ));
    }
    Ok(())
}

/// The `gather` op's view of [`Op::Gather`].
pub(crate) struct Gather<'a> {
    pub shape: &'a [usize],
    pub index: &'a Arc<Vec<u32>>,
}

impl<'a> OpKind<'a> for Gather<'a> {
    fn name(&self) -> &'static str {
        "gather"
    }
    fn arity(&self) -> Arity {
        Arity::AtLeast(1)
    }
    fn infer(&self, _: Requant, ins: &[&TensorInfo]) -> Result<TensorInfo> {
        let q = ins[0]
            .qparams()
            .ok_or_else(|| Error::dtype("gather input 0", "float32 where quint8 is needed"))?;
        let mut total = 0usize;
        for (i, t) in ins.iter().enumerate() {
            match t.qparams() {
                None => {
                    return Err(Error::dtype(
                        format!("gather input {i}"),
                        "float32 where quint8 is needed",
                    ))
                }
                Some(qi) if qi != q => {
                    return Err(Error::QParams {
                        what: format!("gather input {i}"),
                        detail: format!(
                            "{qi:?} differ from input 0's {q:?}: every input of a gather has the same qparams"
                        ),
                    })
                }
                _ => {}
            }
            total = total
                .checked_add(t.numel())
                .ok_or_else(|| Error::shape("gather", "the inputs' elements overflow"))?;
        }
        check_shape(self.shape)?;
        let n = super::checked_product("gather output", self.shape)?;
        if self.index.len() != n {
            return Err(Error::shape(
                "gather index",
                format!(
                    "{} entries for output shape {:?} ({n} expected)",
                    self.index.len(),
                    self.shape
                ),
            ));
        }
        if let Some((i, &v)) = self
            .index
            .iter()
            .enumerate()
            .find(|(_, &v)| v as usize >= total && fill_byte(v).is_none())
        {
            return Err(Error::config(
                "gather index",
                format!(
                    "entry {i} is {v}, out of range for the {total} elements of the inputs {:?} \
                     (and not a fill entry gather::FILL + byte = {FILL}..={})",
                    ins.iter().map(|t| &t.shape).collect::<Vec<_>>(),
                    FILL + 255
                ),
            ));
        }
        if total >= FILL as usize {
            return Err(Error::TooLarge {
                what: "gather inputs (elements of one sample, below the fill entries)".into(),
                needed: total as u64,
                limit: FILL as u64 - 1,
            });
        }
        Ok(TensorInfo {
            shape: self.shape.to_vec(),
            dtype: ins[0].dtype,
        })
    }
    fn write(&self, w: &mut NodeWriter) {
        w.put("shape", json!(self.shape));
        let name = format!("{}.index", w.node);
        w.tensors.push((
            name,
            safetensors::Dtype::U32,
            vec![self.index.len()],
            self.index.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
    }
    fn lower(&self, sig: &Signature<'_>) -> Result<Box<dyn Lowered + 'a>> {
        Ok(Box::new(GatherLowered {
            index: Arc::clone(self.index),
            in_shapes: sig.inputs.iter().map(|t| t.shape.clone()).collect(),
            out_shape: self.shape.to_vec(),
        }))
    }
}

/// A gather's constants: the index, and the shapes the GPU table is built
/// from (in [`gpu`], when uploaded).
pub(crate) struct GatherLowered {
    index: Arc<Vec<u32>>,
    in_shapes: Vec<Vec<usize>>,
    out_shape: Vec<usize>,
}

impl Lowered for GatherLowered {
    fn run_cpu(&self, io: &CpuIo<'_>) -> Result<Value> {
        let ins = (0..io.inputs.len())
            .map(|i| io.q(i))
            .collect::<Result<Vec<_>>>()?;
        let n = io.batch;
        let per: Vec<usize> = ins
            .iter()
            .map(|(x, _, _)| x.len().checked_div(n).unwrap_or(0))
            .collect();
        let total: usize = per.iter().sum();
        let len = super::checked_product("gather output", &io.out_shape())?;
        let mut y = super::try_with_capacity(len, "gather output")?;
        let mut sample: Vec<u8> = super::try_with_capacity(total, "gather input sample")?;
        for b in 0..n {
            sample.clear();
            for ((x, _, _), &p) in ins.iter().zip(&per) {
                sample.extend_from_slice(&x[b * p..(b + 1) * p]);
            }
            for &i in self.index.iter() {
                if let Some(b) = fill_byte(i) {
                    y.push(b);
                    continue;
                }
                let v = *sample.get(i as usize).ok_or_else(|| {
                    Error::config(
                        "gather index",
                        format!("entry {i} is out of range for {total} input elements"),
                    )
                })?;
                y.push(v);
            }
        }
        io.q_out(y)
    }
}

// ---------------------------------------------------------------------------
// Index builders.

fn elements(shape: &[usize], what: &str) -> Result<usize> {
    let n = super::checked_product(what, shape)?;
    if n >= FILL as usize {
        return Err(Error::TooLarge {
            what: format!("{what} of shape {shape:?} (elements a u32 index addresses)"),
            needed: n as u64,
            limit: FILL as u64 - 1,
        });
    }
    Ok(n)
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for k in (0..shape.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1] * shape[k + 1];
    }
    s
}

/// `axis` (negative counts from the end) as an index into a rank-`rank` shape.
fn norm_axis(axis: i64, rank: usize, what: &str) -> Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a >= rank as i64 {
        return Err(Error::config(
            what,
            format!("axis {axis} is out of range for rank {rank}"),
        ));
    }
    Ok(a as usize)
}

/// The index of a map given per output dimension as the input offsets its
/// coordinate adds: output element at coordinates `o` reads input element
/// `sum_k offs[k][o[k]]`.
fn separable(out_shape: Vec<usize>, offs: &[Vec<usize>]) -> Result<(Vec<usize>, Vec<u32>)> {
    let n = elements(&out_shape, "gather output")?;
    let mut index: Vec<u32> = super::try_with_capacity(n, "gather index")?;
    if n == 0 {
        return Ok((out_shape, index));
    }
    let rank = out_shape.len();
    let mut o = vec![0usize; rank];
    loop {
        let v: usize = (0..rank).map(|k| offs[k][o[k]]).sum();
        index.push(v as u32);
        // Next coordinate, row-major.
        let mut k = rank;
        loop {
            if k == 0 {
                return Ok((out_shape, index));
            }
            k -= 1;
            o[k] += 1;
            if o[k] < out_shape[k] {
                break;
            }
            o[k] = 0;
        }
    }
}

/// `transpose(perm)`: output dimension `k` is input dimension `perm[k]`.
pub fn transpose_index(shape: &[usize], perm: &[usize]) -> Result<(Vec<usize>, Vec<u32>)> {
    elements(shape, "transpose input")?;
    let mut seen = vec![false; shape.len()];
    let mut dup = |p: usize| p >= shape.len() || std::mem::replace(&mut seen[p], true);
    if perm.len() != shape.len() || perm.iter().any(|&p| dup(p)) {
        return Err(Error::config(
            "transpose",
            format!(
                "perm {perm:?} is not a permutation of the {} dimensions of {shape:?}",
                shape.len()
            ),
        ));
    }
    let st = strides(shape);
    let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let offs: Vec<Vec<usize>> = perm
        .iter()
        .map(|&p| (0..shape[p]).map(|j| j * st[p]).collect())
        .collect();
    separable(out, &offs)
}

/// ONNX `Slice` with constant `starts`, `ends`, `axes` and `steps` (empty
/// `axes`: `0..starts.len()`; empty `steps`: all 1). Negative starts and ends
/// count from the end of their dimension; out-of-range values are clamped
/// (`[0, dim]` for a positive step, `[-1, dim - 1]` for a negative one), as
/// ONNX says. A step of 0 or a repeated axis is an error; so is an empty
/// result.
pub fn slice_index(
    shape: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: &[i64],
    steps: &[i64],
) -> Result<(Vec<usize>, Vec<u32>)> {
    elements(shape, "slice input")?;
    let rank = shape.len();
    let axes: Vec<i64> = if axes.is_empty() {
        (0..starts.len() as i64).collect()
    } else {
        axes.to_vec()
    };
    let steps: Vec<i64> = if steps.is_empty() {
        vec![1; starts.len()]
    } else {
        steps.to_vec()
    };
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(Error::config(
            "slice",
            format!(
                "starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} differ in length"
            ),
        ));
    }
    // Per dimension: (start, step, count), the default being the whole dim.
    let mut dims: Vec<(i64, i64, usize)> = shape.iter().map(|&d| (0, 1, d)).collect();
    let mut done = vec![false; rank];
    for j in 0..starts.len() {
        let a = norm_axis(axes[j], rank, "slice")?;
        if done[a] {
            return Err(Error::config(
                "slice",
                format!("axis {} is repeated in {axes:?}", axes[j]),
            ));
        }
        done[a] = true;
        let d = shape[a] as i64;
        let step = steps[j];
        if step == 0 {
            return Err(Error::config(
                "slice",
                format!("step 0 on axis {}", axes[j]),
            ));
        }
        let wrap = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        let (s, e) = (wrap(starts[j]), wrap(ends[j]));
        let (s, e) = if step > 0 {
            (s.clamp(0, d), e.clamp(0, d))
        } else {
            (s.clamp(0, d - 1), e.clamp(-1, d - 1))
        };
        let count = if step > 0 {
            if e > s {
                ((e - s) as u64).div_ceil(step as u64)
            } else {
                0
            }
        } else if s > e {
            ((s - e) as u64).div_ceil(step.unsigned_abs())
        } else {
            0
        };
        dims[a] = (s, step, count as usize);
    }
    let out: Vec<usize> = dims.iter().map(|d| d.2).collect();
    if out.contains(&0) {
        return Err(Error::shape(
            "slice",
            format!("slicing {shape:?} gives the empty shape {out:?}"),
        ));
    }
    let st = strides(shape);
    let offs: Vec<Vec<usize>> = dims
        .iter()
        .enumerate()
        .map(|(k, &(s, step, c))| {
            (0..c as i64)
                .map(|j| (s + j * step) as usize * st[k])
                .collect()
        })
        .collect();
    separable(out, &offs)
}

/// ONNX `Gather` with constant `indices` of shape `indices_shape` along
/// `axis` (negative counts from the end): the output shape is
/// `shape[..axis] ++ indices_shape ++ shape[axis + 1..]`. Negative indices
/// count from the end of the axis; others out of range are an error.
pub fn take_index(
    shape: &[usize],
    axis: i64,
    indices: &[i64],
    indices_shape: &[usize],
) -> Result<(Vec<usize>, Vec<u32>)> {
    elements(shape, "gather input")?;
    let a = norm_axis(axis, shape.len(), "gather")?;
    if super::checked_product("gather indices", indices_shape)? != indices.len() {
        return Err(Error::shape(
            "gather indices",
            format!("{} indices for shape {indices_shape:?}", indices.len()),
        ));
    }
    let d = shape[a] as i64;
    let idx: Vec<usize> = indices
        .iter()
        .map(|&i| {
            let w = if i < 0 { i + d } else { i };
            if (0..d).contains(&w) {
                Ok(w as usize)
            } else {
                Err(Error::config(
                    "gather indices",
                    format!("index {i} is out of range for axis {axis} of size {d}"),
                ))
            }
        })
        .collect::<Result<_>>()?;
    // View the input as [outer, d, inner] and the output as
    // [outer, indices..., inner], i.e. [outer, k, inner].
    let outer: usize = shape[..a].iter().product();
    let inner: usize = shape[a + 1..].iter().product();
    let out: Vec<usize> = shape[..a]
        .iter()
        .chain(indices_shape)
        .chain(&shape[a + 1..])
        .copied()
        .collect();
    let offs = vec![
        (0..outer).map(|o| o * shape[a] * inner).collect(),
        idx.iter().map(|&j| j * inner).collect(),
        (0..inner).collect(),
    ];
    let (_, index) = separable(vec![outer, idx.len(), inner], &offs)?;
    elements(&out, "gather output")?;
    Ok((out, index))
}

/// Concatenation of tensors of `shapes` (one rank, equal but for `axis`)
/// along `axis` (negative counts from the end); the index reads the
/// concatenation of the inputs in order.
pub fn concat_index(shapes: &[Vec<usize>], axis: i64) -> Result<(Vec<usize>, Vec<u32>)> {
    let first = shapes
        .first()
        .ok_or_else(|| Error::config("concat", "no inputs"))?;
    let a = norm_axis(axis, first.len(), "concat")?;
    let mut base = 0usize;
    let mut size = 0usize;
    // Per position along the axis: the input element offset of its slab.
    let mut slab: Vec<(usize, usize, usize)> = Vec::new(); // (input base, j, input axis size)
    for (i, s) in shapes.iter().enumerate() {
        if s.len() != first.len()
            || s.iter()
                .zip(first)
                .enumerate()
                .any(|(k, (x, y))| k != a && x != y)
        {
            return Err(Error::shape(
                "concat",
                format!(
                    "input {i} has shape {s:?}, input 0 {first:?}: only axis {axis} may differ"
                ),
            ));
        }
        let n = elements(s, "concat input")?;
        for j in 0..s[a] {
            slab.push((base, j, s[a]));
        }
        size += s[a];
        base = base
            .checked_add(n)
            .filter(|&b| b < FILL as usize)
            .ok_or_else(|| Error::TooLarge {
                what: "concat inputs (elements a u32 index addresses)".into(),
                needed: u64::MAX,
                limit: FILL as u64 - 1,
            })?;
    }
    let mut out = first.clone();
    out[a] = size;
    let outer: usize = first[..a].iter().product();
    let inner: usize = first[a + 1..].iter().product();
    let n = elements(&out, "concat output")?;
    let mut index: Vec<u32> = super::try_with_capacity(n, "concat index")?;
    for o in 0..outer {
        for &(b, j, d) in &slab {
            let start = b + (o * d + j) * inner;
            index.extend((start..start + inner).map(|v| v as u32));
        }
    }
    Ok((out, index))
}

/// Elements `start..start + len` of `axis` (negative counts from the end):
/// one output of a split or chunk.
pub fn split_index(
    shape: &[usize],
    axis: i64,
    start: usize,
    len: usize,
) -> Result<(Vec<usize>, Vec<u32>)> {
    let a = norm_axis(axis, shape.len(), "split")?;
    if len == 0 || start.checked_add(len).is_none_or(|e| e > shape[a]) {
        return Err(Error::config(
            "split",
            format!(
                "elements {start}..{} of axis {axis} (size {}) of {shape:?}",
                start.saturating_add(len),
                shape[a]
            ),
        ));
    }
    slice_index(
        shape,
        &[start as i64],
        &[(start + len) as i64],
        &[a as i64],
        &[1],
    )
}

/// The index of `then` applied to the result of `first` (a chain of two
/// gathers folded into one): `out[i] = first[then[i]]`; a fill entry of
/// `then` stays itself, and one of `first` is copied like any entry.
pub fn compose_index(first: &[u32], then: &[u32]) -> Result<Vec<u32>> {
    then.iter()
        .enumerate()
        .map(|(i, &j)| {
            if fill_byte(j).is_some() {
                return Ok(j);
            }
            first.get(j as usize).copied().ok_or_else(|| {
                Error::config(
                    "gather index",
                    format!(
                        "entry {i} is {j}, out of range for the {} elements of the first map",
                        first.len()
                    ),
                )
            })
        })
        .collect()
}

/// The input of the ordinary convolution that equals a transposed one
/// (PyTorch's `ConvTranspose2d` with these `kernel`, `stride`, `padding`,
/// `output_padding` and `dilation`, each `[h, w]`) on a per-sample `[C, H, W]`
/// input: the input dilated by the stride (`stride - 1` fill bytes between
/// neighbours) and padded by `dilation * (kernel - 1) - padding` fill bytes
/// on each side, plus `output_padding` more at the end (a negative pad crops).
/// `fill` is the input's zero-point byte, so that the inserted elements are
/// the real value 0 and the convolution's integer sums are exact. A conv2d
/// with stride 1, padding 0, the same dilation and groups, and the weight of
/// [`crate::ops::conv::conv_transpose_weight`] over this map gives
/// `ConvTranspose2d`'s output, `(H - 1) * stride - 2 * padding + dilation *
/// (kernel - 1) + output_padding + 1` per dimension.
///
/// The map's output holds about `stride^2` times the input's elements: memory
/// grows with it on large inputs.
pub fn conv_transpose_index(
    shape: &[usize],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    output_padding: [usize; 2],
    dilation: [usize; 2],
    fill: u8,
) -> Result<(Vec<usize>, Vec<u32>)> {
    let [c, h, w] = shape[..] else {
        return Err(Error::shape(
            "conv_transpose2d input",
            format!("per-sample shape {shape:?}, expected [C, H, W]"),
        ));
    };
    elements(shape, "conv_transpose2d input")?;
    let dims = [h, w];
    let mut offs: Vec<Vec<usize>> = vec![(0..c).map(|ch| ch * h * w).collect()];
    let mut out = vec![c];
    for a in 0..2 {
        let (k, s, p, op, d) = (
            kernel[a],
            stride[a],
            padding[a],
            output_padding[a],
            dilation[a],
        );
        if k == 0 || s == 0 || d == 0 || op >= s.max(d) {
            return Err(Error::config(
                "conv_transpose2d",
                format!(
                    "kernel {kernel:?}, stride {stride:?}, dilation {dilation:?}, output_padding \
                     {output_padding:?}: sizes must be at least 1 and output_padding smaller \
                     than stride or dilation"
                ),
            ));
        }
        let reach = d * (k - 1);
        // Positions of the dilated, padded axis: begin pad, then the input.
        let begin = reach as i64 - p as i64;
        let len = (dims[a] as i64 - 1) * s as i64 + 1 + 2 * begin + op as i64;
        if len < reach as i64 + 1 {
            return Err(Error::config(
                "conv_transpose2d",
                format!(
                    "input {shape:?} with kernel {kernel:?}, stride {stride:?}, padding \
                     {padding:?}, output_padding {output_padding:?}, dilation {dilation:?} \
                     gives an empty output"
                ),
            ));
        }
        let stride_in = if a == 0 { w } else { 1 };
        offs.push(
            (0..len)
                .map(|y| {
                    let v = y - begin;
                    if v >= 0 && v % s as i64 == 0 && ((v / s as i64) as usize) < dims[a] {
                        (v / s as i64) as usize * stride_in
                    } else {
                        usize::MAX
                    }
                })
                .collect(),
        );
        out.push(len as usize);
    }
    let n = elements(&out, "conv_transpose2d dilated input")?;
    let mut index: Vec<u32> = super::try_with_capacity(n, "gather index")?;
    for &oc in &offs[0] {
        for &oy in &offs[1] {
            for &ox in &offs[2] {
                index.push(if oy == usize::MAX || ox == usize::MAX {
                    fill_entry(fill)
                } else {
                    (oc + oy + ox) as u32
                });
            }
        }
    }
    Ok((out, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_2x3() {
        // [[0 1 2] [3 4 5]] transposed.
        let (s, i) = transpose_index(&[2, 3], &[1, 0]).unwrap();
        assert_eq!(s, vec![3, 2]);
        assert_eq!(i, vec![0, 3, 1, 4, 2, 5]);
        // A 3-D permutation: out[c][a][b] = in[a][b][c] on [2, 2, 2].
        let (s, i) = transpose_index(&[2, 2, 2], &[2, 0, 1]).unwrap();
        assert_eq!(s, vec![2, 2, 2]);
        assert_eq!(i, vec![0, 2, 4, 6, 1, 3, 5, 7]);
        let (s, i) = transpose_index(&[1, 2, 3], &[0, 2, 1]).unwrap();
        assert_eq!(s, vec![1, 3, 2]);
        assert_eq!(i, vec![0, 3, 1, 4, 2, 5]);
        assert!(transpose_index(&[2, 3], &[0, 0]).is_err());
        assert!(transpose_index(&[2, 3], &[0]).is_err());
        assert!(transpose_index(&[2, 3], &[0, 2]).is_err());
    }

    #[test]
    fn slice_cases() {
        // [0..10): 1..8 step 3 -> 1 4 7
        let (s, i) = slice_index(&[10], &[1], &[8], &[0], &[3]).unwrap();
        assert_eq!((s, i), (vec![3], vec![1, 4, 7]));
        // Negative start/end, clamped end, default axes and steps.
        let (s, i) = slice_index(&[10], &[-3], &[i64::MAX], &[], &[]).unwrap();
        assert_eq!((s, i), (vec![3], vec![7, 8, 9]));
        // Reverse: start -1, end -(big) -> whole axis backwards.
        let (s, i) = slice_index(&[4], &[-1], &[i64::MIN], &[0], &[-1]).unwrap();
        assert_eq!((s, i), (vec![4], vec![3, 2, 1, 0]));
        // Negative step 2 from a clamped start.
        let (s, i) = slice_index(&[5], &[100], &[0], &[0], &[-2]).unwrap();
        assert_eq!((s, i), (vec![2], vec![4, 2]));
        // 2-D, negative axis: columns 1..3 of a [2, 4].
        let (s, i) = slice_index(&[2, 4], &[1], &[3], &[-1], &[1]).unwrap();
        assert_eq!((s, i), (vec![2, 2], vec![1, 2, 5, 6]));
        // Two axes at once on [3, 3, 2]: rows 1.., columns ..1.
        let (s, i) = slice_index(&[3, 3, 2], &[1, 0], &[3, 1], &[0, 2], &[1, 1]).unwrap();
        assert_eq!((s, i), (vec![2, 3, 1], vec![6, 8, 10, 12, 14, 16]));
        // Empty, zero step, repeated axis, bad axis, ragged lists.
        assert!(slice_index(&[4], &[3], &[1], &[0], &[1]).is_err());
        assert!(slice_index(&[4], &[0], &[4], &[0], &[0]).is_err());
        assert!(slice_index(&[4, 4], &[0, 0], &[1, 1], &[0, -2], &[1, 1]).is_err());
        assert!(slice_index(&[4], &[0], &[1], &[1], &[1]).is_err());
        assert!(slice_index(&[4], &[0], &[1, 2], &[0], &[1]).is_err());
    }

    #[test]
    fn take_cases() {
        // [3, 2] = [[0 1] [2 3] [4 5]], take rows [2, 0] -> [[4 5] [0 1]].
        let (s, i) = take_index(&[3, 2], 0, &[2, 0], &[2]).unwrap();
        assert_eq!((s, i), (vec![2, 2], vec![4, 5, 0, 1]));
        // Axis -1 with a negative index and a 2-D indices tensor.
        let (s, i) = take_index(&[2, 3], -1, &[-1, 0, 1, 1], &[2, 2]).unwrap();
        assert_eq!(s, vec![2, 2, 2]);
        assert_eq!(i, vec![2, 0, 1, 1, 5, 3, 4, 4]);
        // A scalar index removes the axis.
        let (s, i) = take_index(&[2, 3, 2], 1, &[1], &[]).unwrap();
        assert_eq!((s, i), (vec![2, 2], vec![2, 3, 8, 9]));
        assert!(take_index(&[3], 0, &[3], &[1]).is_err());
        assert!(take_index(&[3], 0, &[-4], &[1]).is_err());
        assert!(take_index(&[3], 1, &[0], &[1]).is_err());
        assert!(take_index(&[3], 0, &[0, 1], &[3]).is_err());
    }

    #[test]
    fn concat_cases() {
        // [2, 1] ++ [2, 2] on axis 1: [[a0 b0 b1] [a1 b2 b3]], b at offset 2.
        let (s, i) = concat_index(&[vec![2, 1], vec![2, 2]], 1).unwrap();
        assert_eq!((s, i), (vec![2, 3], vec![0, 2, 3, 1, 4, 5]));
        // Axis 0 is plain concatenation.
        let (s, i) = concat_index(&[vec![1, 2], vec![2, 2]], 0).unwrap();
        assert_eq!((s, i), (vec![3, 2], vec![0, 1, 2, 3, 4, 5]));
        // Three inputs along the last axis (-1) of [1, 2, 1]-shaped tensors.
        let (s, i) = concat_index(&[vec![1, 2, 1], vec![1, 2, 1], vec![1, 2, 1]], -1).unwrap();
        assert_eq!((s, i), (vec![1, 2, 3], vec![0, 2, 4, 1, 3, 5]));
        assert!(concat_index(&[vec![2, 1], vec![3, 2]], 1).is_err());
        assert!(concat_index(&[vec![2, 1], vec![2]], 0).is_err());
        assert!(concat_index(&[], 0).is_err());
    }

    #[test]
    fn split_and_compose() {
        // Second half of the channels of [4, 1, 2].
        let (s, i) = split_index(&[4, 1, 2], 0, 2, 2).unwrap();
        assert_eq!((s, i), (vec![2, 1, 2], vec![4, 5, 6, 7]));
        // Middle column of [2, 3].
        let (s, i) = split_index(&[2, 3], -1, 1, 1).unwrap();
        assert_eq!((s, i), (vec![2, 1], vec![1, 4]));
        assert!(split_index(&[2, 3], 1, 2, 2).is_err());
        assert!(split_index(&[2, 3], 1, 0, 0).is_err());
        // Transposing twice is the identity.
        let (s1, a) = transpose_index(&[2, 3], &[1, 0]).unwrap();
        let (_, b) = transpose_index(&s1, &[1, 0]).unwrap();
        assert_eq!(compose_index(&a, &b).unwrap(), vec![0, 1, 2, 3, 4, 5]);
        assert!(compose_index(&a, &[6]).is_err());
        // Fill entries pass through a composition.
        assert_eq!(
            compose_index(&[5, fill_entry(9)], &[fill_entry(3), 1, 0]).unwrap(),
            vec![fill_entry(3), fill_entry(9), 5]
        );
    }

    #[test]
    fn fill_entries() {
        assert_eq!(FILL, 0xFFFF_FE00);
        assert_eq!(fill_entry(0), FILL);
        assert_eq!(fill_entry(255), 0xFFFF_FEFF);
        assert_eq!(fill_byte(fill_entry(77)), Some(77));
        assert_eq!(fill_byte(FILL - 1), None);
        assert_eq!(fill_byte(FILL + 256), None);
        assert_eq!(fill_byte(u32::MAX), None);
    }

    #[test]
    fn conv_transpose_maps() {
        let f = fill_entry(7);
        // [1, 2, 2], kernel 2, stride 2, padding 0: dilate to 3x3, pad 1 each side.
        let (s, i) =
            conv_transpose_index(&[1, 2, 2], [2, 2], [2, 2], [0, 0], [0, 0], [1, 1], 7).unwrap();
        assert_eq!(s, vec![1, 5, 5]);
        #[rustfmt::skip]
        assert_eq!(i, vec![
            f, f, f, f, f,
            f, 0, f, 1, f,
            f, f, f, f, f,
            f, 2, f, 3, f,
            f, f, f, f, f,
        ]);
        // Kernel 3, stride 2, padding 1, output_padding 1 on a [2, 1, 2]:
        // H: 1 -> pad 1 + 1 + 1 + op 1 = 4; W: 2 -> 3 + 2 + 1 = 6.
        let (s, i) =
            conv_transpose_index(&[2, 1, 2], [3, 3], [2, 2], [1, 1], [1, 1], [1, 1], 7).unwrap();
        assert_eq!(s, vec![2, 4, 6]);
        assert_eq!(&i[6..12], &[f, 0, f, 1, f, f]);
        assert_eq!(&i[24 + 6..24 + 12], &[f, 2, f, 3, f, f]);
        assert!(i[..6].iter().chain(&i[12..24]).all(|&e| e == f));
        // Padding beyond the kernel's reach crops: kernel 1, padding 1 on [1, 3, 3].
        let (s, i) =
            conv_transpose_index(&[1, 3, 3], [1, 1], [1, 1], [1, 1], [0, 0], [1, 1], 0).unwrap();
        assert_eq!((s, i), (vec![1, 1, 1], vec![4]));
        // Bad geometry: output_padding >= stride and dilation; empty output.
        assert!(
            conv_transpose_index(&[1, 2, 2], [2, 2], [1, 1], [0, 0], [1, 1], [1, 1], 0).is_err()
        );
        assert!(
            conv_transpose_index(&[1, 1, 1], [1, 1], [1, 1], [1, 1], [0, 0], [1, 1], 0).is_err()
        );
        assert!(conv_transpose_index(&[2, 2], [1, 1], [1, 1], [0, 0], [0, 0], [1, 1], 0).is_err());
    }
}
