//! ONNX Runtime 1.32's QDQ graph rewrites (CPU execution provider, x86-64,
//! default `ORT_ENABLE_ALL`), in the order and with the conditions of
//! `tests/data/onnx/README.md` ("How ORT turns a QDQ model into kernels") and
//! `tools/onnx/check_onnx_ops.py::fuse_qdq`, whose fused graphs match the
//! kernels ORT ran for every committed case:
//!
//! 1. EnsureUniqueDQForNodeUnit: a DQ read by several nodes is duplicated.
//! 2. ReluQuantFusion: `Relu -> Q` with the Q zero point at the type minimum: Relu dropped.
//! 3. ClipQuantFusion: `Clip -> Q` whose quantized range lies inside the clip: Clip dropped.
//! 4. WeightBiasQuantization: a float Conv/Gemm bias becomes int32 `rint(b / (xs*ws))`.
//! 5. QDQS8ToU8: a single-consumer int8 `Q -> DQ` pair becomes uint8, zero point + 128.
//! 6. Selector/action fusion of `DQ -> op -> Q` groups into QLinear* kernels, and
//!    Q/DQ dropped around pass-through ops with equal qparams.
//!
//! The result is a list of nodes in which fused groups appear as their
//! QOperator equivalents (QLinearConv, com.microsoft::QGemm, ...).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::graph::{Attr, OnnxGraph, MS_DOMAIN};
use super::tensor::{ElemType, Tensor, TensorData};
use super::{bad, unsupported};
use crate::error::Result;

/// A node of the graph being rewritten.
#[derive(Clone, Debug)]
pub(crate) struct WNode {
    pub op: String,
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: BTreeMap<String, Attr>,
    /// How errors name it: the ONNX node it comes from (for a fused group,
    /// the group's op node).
    pub origin: String,
}

impl WNode {
    pub fn input(&self, i: usize) -> Option<&str> {
        self.inputs
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
    fn is(&self, op: &str) -> bool {
        self.op == op && self.domain.is_empty()
    }
}

/// The rewritten graph: nodes plus the constants the rewrites added.
pub(crate) struct Fused {
    pub nodes: Vec<WNode>,
    pub extra: HashMap<String, Tensor>,
}

/// Attribute the fusion adds to a fused Conv/MatMul/Gemm: the per-channel
/// weight DequantizeLinear's axis.
pub(crate) const WEIGHT_AXIS: &str = "qfuse.weight_axis";

/// The pass-through ops of the checker (DQ -> op -> Q with equal scalar qparams
/// runs on the quantized bytes).
pub(crate) const PASS_THROUGH: [&str; 9] = [
    "Reshape",
    "Flatten",
    "Transpose",
    "MaxPool",
    "Squeeze",
    "Unsqueeze",
    "Slice",
    "Gather",
    "Resize",
];

struct Fuser<'a> {
    g: &'a OnnxGraph,
    extra: HashMap<String, Tensor>,
    gout: HashSet<String>,
    nodes: Vec<WNode>,
    names: HashSet<String>,
}

/// Apply ORT's rewrites to `g`'s nodes.
pub(crate) fn fuse(g: &OnnxGraph) -> Result<Fused> {
    let nodes: Vec<WNode> = g
        .nodes
        .iter()
        .map(|n| WNode {
            op: n.op_type.clone(),
            domain: n.domain.clone(),
            inputs: n.inputs.clone(),
            outputs: n.outputs.clone(),
            attrs: n.attrs.clone(),
            origin: n.describe(),
        })
        .collect();
    let mut names: HashSet<String> = g.initializers.keys().cloned().collect();
    names.extend(g.inputs.iter().map(|v| v.name.clone()));
    names.extend(nodes.iter().flat_map(|n| n.outputs.iter().cloned()));
    let mut f = Fuser {
        g,
        extra: HashMap::new(),
        gout: g.outputs.iter().map(|o| o.name.clone()).collect(),
        nodes,
        names,
    };
    f.unique_dq();
    f.relu_quant();
    f.clip_quant()?;
    f.weight_bias()?;
    f.s8_to_u8();
    f.select()?;
    f.dead_code();
    Ok(Fused {
        nodes: f.nodes,
        extra: f.extra,
    })
}

impl<'a> Fuser<'a> {
    fn konst(&self, name: &str) -> Option<&Tensor> {
        self.extra
            .get(name)
            .or_else(|| self.g.initializers.get(name))
    }

    fn consumers(&self, name: &str) -> Vec<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.inputs.iter().any(|i| i == name))
            .map(|(i, _)| i)
            .collect()
    }

    fn producer(&self, name: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.outputs.iter().any(|o| o == name))
    }

    fn fresh(&mut self, base: &str) -> String {
        let mut s = base.to_string();
        while self.names.contains(&s) {
            s.push('_');
        }
        self.names.insert(s.clone());
        s
    }

    /// A constant of exactly one element: its integer value and type.
    fn scalar_int(&self, name: Option<&str>) -> Option<(i64, ElemType)> {
        let t = self.konst(name?)?;
        if t.len() != 1 {
            return None;
        }
        Some((t.data.to_i64()?[0], t.elem_type()))
    }

    /// 1. EnsureUniqueDQForNodeUnit
    fn unique_dq(&mut self) {
        let mut i = 0;
        while i < self.nodes.len() {
            if !self.nodes[i].is("DequantizeLinear") {
                i += 1;
                continue;
            }
            let out = self.nodes[i].outputs[0].clone();
            let cs = self.consumers(&out);
            let in_gout = self.gout.contains(&out);
            if cs.len() <= 1 && (cs.is_empty() || !in_gout) {
                i += 1;
                continue;
            }
            let rewire: Vec<usize> = if in_gout { cs } else { cs[1..].to_vec() };
            let mut dups = Vec::new();
            for (k, &c) in rewire.iter().enumerate() {
                let name = self.fresh(&format!("{out}__dup{}", k + 1));
                let mut dup = self.nodes[i].clone();
                dup.outputs = vec![name.clone()];
                for inp in self.nodes[c].inputs.iter_mut() {
                    if *inp == out {
                        *inp = name.clone();
                    }
                }
                dups.push(dup);
            }
            let n = dups.len();
            for (k, d) in dups.into_iter().enumerate() {
                self.nodes.insert(i + 1 + k, d);
            }
            i += 1 + n;
        }
    }

    /// 2. ReluQuantFusion
    fn relu_quant(&mut self) {
        let mut i = 0;
        while i < self.nodes.len() {
            let n = &self.nodes[i];
            if !n.is("Relu") || n.input(0).is_none() || self.gout.contains(&n.outputs[0]) {
                i += 1;
                continue;
            }
            let cs = self.consumers(&n.outputs[0]);
            let ok = cs.len() == 1 && {
                let q = &self.nodes[cs[0]];
                q.is("QuantizeLinear")
                    && q.inputs.len() >= 3
                    && match self.scalar_int(q.input(2)) {
                        Some((z, ElemType::U8)) => z == 0,
                        Some((z, ElemType::I8)) => z == -128,
                        _ => false,
                    }
            };
            if ok {
                let src = n.inputs[0].clone();
                self.nodes[cs[0]].inputs[0] = src;
                self.nodes.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// 3. ClipQuantFusion
    fn clip_quant(&mut self) -> Result<()> {
        let mut i = 0;
        while i < self.nodes.len() {
            let n = &self.nodes[i];
            if !n.is("Clip") || n.input(0).is_none() || self.gout.contains(&n.outputs[0]) {
                i += 1;
                continue;
            }
            let cs = self.consumers(&n.outputs[0]);
            if cs.len() != 1 {
                i += 1;
                continue;
            }
            let q = &self.nodes[cs[0]];
            if !q.is("QuantizeLinear") || q.inputs.len() != 3 {
                i += 1;
                continue;
            }
            let bound = |k: usize, default: f32| -> Option<f32> {
                match n.input(k) {
                    None => Some(default),
                    Some(name) => {
                        let t = self.konst(name)?;
                        match &t.data {
                            TensorData::F32(v) if v.len() == 1 => Some(v[0]),
                            _ => None,
                        }
                    }
                }
            };
            let (mn, mx) = match (bound(1, -f32::MAX), bound(2, f32::MAX)) {
                (Some(a), Some(b)) => (a, b),
                _ => {
                    i += 1;
                    continue;
                }
            };
            // scale and zero point: constants of rank 0 (as the checker requires)
            let s = q.input(1).and_then(|s| self.konst(s));
            let z = q.input(2).and_then(|z| self.konst(z));
            let (s, z) = match (s, z) {
                (Some(s), Some(z)) if s.dims.is_empty() && z.dims.is_empty() => (s, z),
                _ => {
                    i += 1;
                    continue;
                }
            };
            let s = match &s.data {
                TensorData::F32(v) => v[0],
                _ => {
                    i += 1;
                    continue;
                }
            };
            let (qlo, qhi, zv) = match &z.data {
                TensorData::U8(v) => (0i32, 255i32, v[0] as i32),
                TensorData::I8(v) => (-128, 127, v[0] as i32),
                _ => {
                    i += 1;
                    continue;
                }
            };
            let lower = s * ((qlo - zv) as f32);
            let upper = s * ((qhi - zv) as f32);
            if f32::EPSILON < mn - lower || f32::EPSILON < upper - mx {
                i += 1;
                continue;
            }
            let src = n.inputs[0].clone();
            self.nodes[cs[0]].inputs[0] = src;
            self.nodes.remove(i);
        }
        Ok(())
    }

    /// 4. WeightBiasQuantization
    fn weight_bias(&mut self) -> Result<()> {
        let mut i = 0;
        while i < self.nodes.len() {
            let n = &self.nodes[i];
            let is_cg = n.is("Conv") || n.is("Gemm");
            let bname = match (is_cg, n.input(2)) {
                (true, Some(b)) => b.to_string(),
                _ => {
                    i += 1;
                    continue;
                }
            };
            let b = match self.konst(&bname) {
                Some(Tensor {
                    dims,
                    data: TensorData::F32(v),
                }) if dims.len() == 1 => v.clone(),
                _ => {
                    i += 1;
                    continue;
                }
            };
            let d0 = n.input(0).and_then(|x| self.producer(x));
            let d0 = match d0 {
                Some(p) if self.nodes[p].is("DequantizeLinear") => p,
                _ => {
                    i += 1;
                    continue;
                }
            };
            let xs = match self.nodes[d0].input(1).and_then(|s| self.konst(s)) {
                Some(Tensor {
                    dims,
                    data: TensorData::F32(v),
                }) if dims.is_empty() => v[0],
                _ => {
                    i += 1;
                    continue;
                }
            };
            let origin = n.origin.clone();
            let d1 = n.input(1).and_then(|x| self.producer(x));
            let d1 = match d1 {
                Some(p) if self.nodes[p].is("DequantizeLinear") => p,
                _ => {
                    return Err(unsupported(
                        origin,
                        "a float weight with a float bias behind a DequantizeLinear input \
                         (ORT's WeightBiasQuantization needs a quantized weight)",
                    ))
                }
            };
            // a single path to a Q through Relu/Clip
            let mut cur = i;
            let reaches_q = loop {
                let out = &self.nodes[cur].outputs[0];
                let cs = self.consumers(out);
                if cs.len() != 1 || self.gout.contains(out) {
                    break false;
                }
                let c = &self.nodes[cs[0]];
                if c.is("QuantizeLinear") {
                    break true;
                }
                if !(c.is("Relu") || c.is("Clip")) {
                    break false;
                }
                cur = cs[0];
            };
            if !reaches_q {
                i += 1;
                continue;
            }
            let ws: Vec<f32> = match self.nodes[d1].input(1).and_then(|s| self.konst(s)) {
                Some(Tensor {
                    data: TensorData::F32(v),
                    ..
                }) if !v.is_empty() => v.clone(),
                _ => {
                    return Err(unsupported(
                        origin,
                        "the weight's DequantizeLinear has a non-constant or non-float scale",
                    ))
                }
            };
            // one scale (any rank) broadcasts, as numpy does in the checker
            let per_channel = ws.len() > 1;
            if per_channel && ws.len() != b.len() {
                return Err(bad(
                    origin,
                    format!(
                        "float bias has {} values but the weight has {} per-channel scales",
                        b.len(),
                        ws.len()
                    ),
                ));
            }
            let bs: Vec<f32> = ws.iter().map(|&w| xs * w).collect();
            let mut bq = Vec::with_capacity(b.len());
            for (k, &bv) in b.iter().enumerate() {
                let s = if per_channel { bs[k] } else { bs[0] };
                let r = (bv / s).round_ties_even();
                if !(r >= i32::MIN as f32 && r < 2147483648.0) {
                    return Err(unsupported(
                        origin,
                        format!("float bias {bv} / scale {s} does not fit in int32"),
                    ));
                }
                bq.push(r as i32);
            }
            let nm = self.fresh(&format!("{bname}__int32"));
            let nm_s = self.fresh(&format!("{nm}_scale"));
            let nm_dq = self.fresh(&format!("{nm}_dq"));
            let nb = bq.len();
            self.extra.insert(
                nm.clone(),
                Tensor {
                    dims: vec![nb],
                    data: TensorData::I32(bq),
                },
            );
            let (sdims, sdata) = if per_channel {
                (vec![bs.len()], bs)
            } else {
                (vec![], vec![bs[0]])
            };
            self.extra.insert(
                nm_s.clone(),
                Tensor {
                    dims: sdims,
                    data: TensorData::F32(sdata),
                },
            );
            let mut attrs = BTreeMap::new();
            if per_channel {
                attrs.insert("axis".to_string(), Attr::Int(0));
            }
            let dq = WNode {
                op: "DequantizeLinear".into(),
                domain: String::new(),
                inputs: vec![nm, nm_s],
                outputs: vec![nm_dq.clone()],
                attrs,
                origin: origin.clone(),
            };
            self.nodes[i].inputs[2] = nm_dq;
            self.nodes.insert(i, dq);
            i += 2;
        }
        Ok(())
    }

    /// 5. QDQS8ToU8
    fn s8_to_u8(&mut self) {
        for qi in 0..self.nodes.len() {
            let q = &self.nodes[qi];
            if !q.is("QuantizeLinear") || q.inputs.len() != 3 || self.gout.contains(&q.outputs[0]) {
                continue;
            }
            let cs = self.consumers(&q.outputs[0]);
            if cs.len() != 1 {
                continue;
            }
            let dq = &self.nodes[cs[0]];
            if !dq.is("DequantizeLinear") || dq.inputs.len() != 3 {
                continue;
            }
            let (qz, dz) = match (self.scalar_int(q.input(2)), self.scalar_int(dq.input(2))) {
                (Some(a), Some(b)) => (a, b),
                _ => continue,
            };
            if qz.1 != ElemType::I8 || dz.1 != ElemType::I8 || qz.0 != dz.0 {
                continue;
            }
            let nm = self.fresh(&format!("{}__u8zp", self.nodes[qi].outputs[0]));
            self.extra.insert(
                nm.clone(),
                Tensor {
                    dims: vec![],
                    data: TensorData::U8(vec![(qz.0 + 128) as u8]),
                },
            );
            self.nodes[qi].inputs[2] = nm.clone();
            self.nodes[cs[0]].inputs[2] = nm;
        }
    }

    /// The quantized type a Q or DQ node works in: its zero point's type
    /// (uint8 when it has none, as the checker and ONNX's default); None for a
    /// non-constant zero point.
    fn zp_type(&self, n: &WNode) -> Option<ElemType> {
        match n.input(2) {
            Some(z) => self.konst(z).map(|t| t.elem_type()),
            None => Some(ElemType::U8),
        }
    }

    fn dq_of(&self, name: Option<&str>) -> Option<usize> {
        let p = self.producer(name?)?;
        self.nodes[p].is("DequantizeLinear").then_some(p)
    }

    fn single_q(&self, name: &str) -> Option<usize> {
        if self.gout.contains(name) {
            return None;
        }
        let cs = self.consumers(name);
        (cs.len() == 1 && self.nodes[cs[0]].is("QuantizeLinear")).then(|| cs[0])
    }

    fn scalar_const(&self, name: Option<&str>) -> bool {
        name.and_then(|n| self.konst(n))
            .is_some_and(|t| t.len() == 1)
    }

    fn scalar_f32(&self, name: Option<&str>) -> Option<f32> {
        match &self.konst(name?)?.data {
            TensorData::F32(v) if v.len() == 1 => Some(v[0]),
            _ => None,
        }
    }

    /// The fused node keeps the weight DQ's quantization axis (ONNX default 1)
    /// when its scales are per channel, for the lowering to check that it is
    /// the output-channel axis.
    fn with_weight_axis(
        &self,
        mut attrs: BTreeMap<String, Attr>,
        dw: usize,
    ) -> BTreeMap<String, Attr> {
        let d = &self.nodes[dw];
        if d.input(1)
            .and_then(|s| self.konst(s))
            .is_some_and(|t| t.len() > 1)
        {
            let axis = match d.attrs.get("axis") {
                Some(Attr::Int(a)) => *a,
                _ => 1,
            };
            attrs.insert(WEIGHT_AXIS.into(), Attr::Int(axis));
        }
        attrs
    }

    /// 6. QDQSelectorActionTransformer
    fn select(&mut self) -> Result<()> {
        let mut removed: HashSet<usize> = HashSet::new();
        let mut out = Vec::with_capacity(self.nodes.len());
        for ni in 0..self.nodes.len() {
            if removed.contains(&ni) {
                continue;
            }
            let n = &self.nodes[ni];
            let ins_dq: Vec<Option<usize>> = (0..n.inputs.len())
                .map(|k| self.dq_of(n.input(k)))
                .collect();
            let dq = |k: usize| ins_dq.get(k).copied().flatten();
            let has = |k: usize| n.input(k).is_some();
            let mut fused: Option<(WNode, usize)> = None;
            let mut also_removed: Vec<usize> = Vec::new();
            let op = n.op.as_str();
            let fusable = [
                "Conv",
                "MatMul",
                "Gemm",
                "Add",
                "Mul",
                "AveragePool",
                "GlobalAveragePool",
                "LeakyRelu",
                "Sigmoid",
                "Softmax",
                "Concat",
            ];
            let dq_in =
                |p: usize, k: usize| self.nodes[p].inputs.get(k).cloned().unwrap_or_default();
            if n.domain.is_empty() && fusable.contains(&op) {
                let q = self.single_q(&n.outputs[0]);
                let mk = |op: &str, domain: &str, inputs: Vec<String>, q: usize, attrs| WNode {
                    op: op.into(),
                    domain: domain.into(),
                    inputs,
                    outputs: self.nodes[q].outputs.clone(),
                    attrs,
                    origin: n.origin.clone(),
                };
                match (op, q) {
                    ("Conv", Some(q)) => {
                        if let (Some(dx), Some(dw)) = (dq(0), dq(1)) {
                            if !has(2) || dq(2).is_some() {
                                let xt = self.zp_type(&self.nodes[dx]);
                                let wt = self.zp_type(&self.nodes[dw]);
                                let yt = self.zp_type(&self.nodes[q]);
                                let bias_ok = !has(2)
                                    || dq(2)
                                        .and_then(|d| self.nodes[d].input(0))
                                        .and_then(|b| self.konst(b))
                                        .is_some_and(|t| t.elem_type() == ElemType::I32);
                                if xt == yt
                                    && xt == Some(ElemType::U8)
                                    && matches!(wt, Some(ElemType::U8 | ElemType::I8))
                                    && bias_ok
                                {
                                    let mut ins = vec![
                                        dq_in(dx, 0),
                                        dq_in(dx, 1),
                                        dq_in(dx, 2),
                                        dq_in(dw, 0),
                                        dq_in(dw, 1),
                                        dq_in(dw, 2),
                                        dq_in(q, 1),
                                        dq_in(q, 2),
                                    ];
                                    if let Some(db) = dq(2) {
                                        ins.push(dq_in(db, 0));
                                    }
                                    let attrs = self.with_weight_axis(n.attrs.clone(), dw);
                                    fused = Some((mk("QLinearConv", "", ins, q, attrs), q));
                                }
                            }
                        }
                    }
                    ("MatMul", Some(q)) => {
                        if let (Some(da), Some(db)) = (dq(0), dq(1)) {
                            let xt = self.zp_type(&self.nodes[da]);
                            let wt = self.zp_type(&self.nodes[db]);
                            let yt = self.zp_type(&self.nodes[q]);
                            if xt == yt
                                && xt == Some(ElemType::U8)
                                && matches!(wt, Some(ElemType::U8 | ElemType::I8))
                            {
                                let ins = vec![
                                    dq_in(da, 0),
                                    dq_in(da, 1),
                                    dq_in(da, 2),
                                    dq_in(db, 0),
                                    dq_in(db, 1),
                                    dq_in(db, 2),
                                    dq_in(q, 1),
                                    dq_in(q, 2),
                                ];
                                let attrs = self.with_weight_axis(BTreeMap::new(), db);
                                fused = Some((mk("QLinearMatMul", "", ins, q, attrs), q));
                            }
                        }
                    }
                    ("Gemm", Some(q)) => {
                        if let (Some(da), Some(db)) = (dq(0), dq(1)) {
                            if !has(2) || dq(2).is_some() {
                                let c = dq(2).map(|d| dq_in(d, 0)).unwrap_or_default();
                                let ins = vec![
                                    dq_in(da, 0),
                                    dq_in(da, 1),
                                    dq_in(da, 2),
                                    dq_in(db, 0),
                                    dq_in(db, 1),
                                    dq_in(db, 2),
                                    c,
                                    dq_in(q, 1),
                                    dq_in(q, 2),
                                ];
                                let attrs = self.with_weight_axis(n.attrs.clone(), db);
                                fused = Some((mk("QGemm", MS_DOMAIN, ins, q, attrs), q));
                            }
                        }
                    }
                    ("Add" | "Mul", Some(q)) => {
                        if let (Some(da), Some(db)) = (dq(0), dq(1)) {
                            let ta = self.zp_type(&self.nodes[da]);
                            let tb = self.zp_type(&self.nodes[db]);
                            let ty = self.zp_type(&self.nodes[q]);
                            if ta == tb && tb == ty {
                                let ins = vec![
                                    dq_in(da, 0),
                                    dq_in(da, 1),
                                    dq_in(da, 2),
                                    dq_in(db, 0),
                                    dq_in(db, 1),
                                    dq_in(db, 2),
                                    dq_in(q, 1),
                                    dq_in(q, 2),
                                ];
                                let name = format!("QLinear{op}");
                                fused = Some((mk(&name, MS_DOMAIN, ins, q, BTreeMap::new()), q));
                            }
                        }
                    }
                    (
                        "AveragePool" | "GlobalAveragePool" | "LeakyRelu" | "Sigmoid" | "Softmax",
                        Some(q),
                    ) => {
                        if let Some(d) = dq(0) {
                            if self.zp_type(&self.nodes[d]) == self.zp_type(&self.nodes[q]) {
                                let mut attrs = n.attrs.clone();
                                if op == "Softmax" {
                                    attrs.entry("axis".into()).or_insert(Attr::Int(-1));
                                    attrs.insert("opset".into(), Attr::Int(13));
                                }
                                let ins = vec![
                                    dq_in(d, 0),
                                    dq_in(d, 1),
                                    dq_in(d, 2),
                                    dq_in(q, 1),
                                    dq_in(q, 2),
                                ];
                                let name = format!("QLinear{op}");
                                fused = Some((mk(&name, MS_DOMAIN, ins, q, attrs), q));
                            }
                        }
                    }
                    ("Concat", Some(q)) => {
                        let all: Option<Vec<usize>> = (0..n.inputs.len()).map(dq).collect();
                        if let Some(ds) = all {
                            let mut types: HashSet<Option<ElemType>> =
                                ds.iter().map(|&d| self.zp_type(&self.nodes[d])).collect();
                            types.insert(self.zp_type(&self.nodes[q]));
                            if types.len() == 1 && !ds.is_empty() {
                                let mut ins = vec![dq_in(q, 1), dq_in(q, 2)];
                                for &d in &ds {
                                    ins.extend([dq_in(d, 0), dq_in(d, 1), dq_in(d, 2)]);
                                }
                                fused = Some((
                                    mk("QLinearConcat", MS_DOMAIN, ins, q, n.attrs.clone()),
                                    q,
                                ));
                            }
                        }
                    }
                    _ => {}
                }
            } else if op == "Split" && n.domain.is_empty() && dq(0).is_some() {
                // ORT's Split rule: DQ -> Split -> Q on every output, all with the
                // DQ's scalar scale and zero point: the Split runs on the bytes.
                let d = dq(0).unwrap_or_default();
                let qs: Option<Vec<usize>> = n.outputs.iter().map(|o| self.single_q(o)).collect();
                if let Some(qs) = qs.filter(|qs| !qs.is_empty()) {
                    let dn = &self.nodes[d];
                    let ok = qs.iter().all(|&q| {
                        let qn = &self.nodes[q];
                        self.scalar_const(dn.input(1))
                            && self.scalar_const(qn.input(1))
                            && dn.input(2).is_some()
                            && qn.input(2).is_some()
                            && self.scalar_const(dn.input(2))
                            && self.scalar_const(qn.input(2))
                            && self.scalar_f32(dn.input(1)).is_some()
                            && self.scalar_f32(dn.input(1)) == self.scalar_f32(qn.input(1))
                            && self.zp_type(dn) == self.zp_type(qn)
                            && self.scalar_int(dn.input(2)) == self.scalar_int(qn.input(2))
                    });
                    if ok {
                        let mut ins = vec![dq_in(d, 0)];
                        ins.extend(n.inputs[1..].iter().cloned());
                        let node = WNode {
                            op: n.op.clone(),
                            domain: n.domain.clone(),
                            inputs: ins,
                            outputs: qs
                                .iter()
                                .map(|&q| self.nodes[q].outputs[0].clone())
                                .collect(),
                            attrs: n.attrs.clone(),
                            origin: n.origin.clone(),
                        };
                        also_removed.extend(&qs[1..]);
                        fused = Some((node, qs[0]));
                    }
                }
            } else if PASS_THROUGH.contains(&op)
                && dq(0).is_some()
                // ORT 1.32 keeps DQ -> Resize -> Q in float unless the mode is nearest
                && (op != "Resize"
                    || n.attrs
                        .get("mode")
                        .is_none_or(|m| matches!(m, Attr::String(s) if s == b"nearest")))
            {
                let d = dq(0).unwrap_or_default();
                if let Some(q) = self.single_q(&n.outputs[0]) {
                    let dn = &self.nodes[d];
                    let qn = &self.nodes[q];
                    let ok = self.scalar_const(dn.input(1))
                        && self.scalar_const(qn.input(1))
                        && dn.input(2).is_some()
                        && qn.input(2).is_some()
                        && self.scalar_const(dn.input(2))
                        && self.scalar_const(qn.input(2))
                        && self.scalar_f32(dn.input(1)).is_some()
                        && self.scalar_f32(dn.input(1)) == self.scalar_f32(qn.input(1))
                        && self.scalar_int(dn.input(2)) == self.scalar_int(qn.input(2))
                        && (op != "MaxPool"
                            || self.scalar_f32(qn.input(1)).is_some_and(|s| s > 0.0));
                    if ok {
                        let mut ins = vec![dq_in(d, 0)];
                        ins.extend(n.inputs[1..].iter().cloned());
                        let node = WNode {
                            op: n.op.clone(),
                            domain: n.domain.clone(),
                            inputs: ins,
                            outputs: qn.outputs.clone(),
                            attrs: n.attrs.clone(),
                            origin: n.origin.clone(),
                        };
                        fused = Some((node, q));
                    }
                }
            }
            match fused {
                Some((node, q)) => {
                    removed.insert(q);
                    removed.extend(also_removed);
                    out.push(node);
                }
                None => out.push(n.clone()),
            }
        }
        self.nodes = out;
        Ok(())
    }

    /// Drop nodes none of whose outputs is read (the DQs folded into fused nodes).
    fn dead_code(&mut self) {
        loop {
            let mut used: HashSet<&str> = self.gout.iter().map(String::as_str).collect();
            for n in &self.nodes {
                used.extend(n.inputs.iter().map(String::as_str));
            }
            let keep: Vec<bool> = self
                .nodes
                .iter()
                .map(|n| n.outputs.iter().any(|o| used.contains(o.as_str())))
                .collect();
            if keep.iter().all(|&k| k) {
                return;
            }
            let mut it = keep.into_iter();
            self.nodes.retain(|_| it.next().unwrap_or(true));
        }
    }
}
