//! Building a quantized model from float layers and calibration data, the way
//! PyTorch's FX flow does it: fuse Conv+BN(+ReLU) and Linear(+ReLU), run the
//! float network on calibration batches with an observer on every tensor that
//! gets its own qparams, then convert.
//!
//! Observers: [`ObserverKind::MinMax`] and [`ObserverKind::MovingAverageMinMax`]
//! compute PyTorch's qparams exactly (f32 arithmetic in PyTorch's order);
//! [`ObserverKind::Histogram`] follows `HistogramObserver`'s algorithm (2048
//! bins, histograms combined by upsampling when the range grows, the L2
//! non-linear range search), partly in f64. The float network runs on the
//! CPU with convolutions summed as PyTorch's oneDNN sums them, so observed
//! ranges are PyTorch's to the bit: `tests/calibration.rs` checks MinMax end to
//! end (exact), Histogram (identical on the test network) and
//! MovingAverageMinMax (exact but for one ulp of the linear head's scale).

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::layer::{FloatConv2d, FloatLinear};
use crate::model::{DType, Model, Node, Op, TensorInfo};
use crate::ops::{self, AvgPoolOpts, Pool2d};
use crate::quant::{default_activation_spec, Activation, ObserverSpec, QParams, Requant};

/// A float op of the network being built.
#[derive(Clone, Debug)]
pub enum FloatOp {
    /// Conv2d with its BatchNorm and ReLU fused (see [`FloatConv2d`]).
    Conv2d(FloatConv2d),
    /// Linear with its ReLU fused (see [`FloatLinear`]); reads `[N, F]`.
    Linear(FloatLinear),
    /// Elementwise sum of two tensors of one shape; observed (its output
    /// gets its own qparams).
    Add {
        /// Apply ReLU to the sum (PyTorch's `add_relu`).
        relu: bool,
    },
    /// Max pooling over NCHW (see [`Pool2d`]); keeps its input's qparams.
    MaxPool2d(Pool2d),
    /// Average pooling over NCHW; keeps its input's qparams.
    AvgPool2d(Pool2d, AvgPoolOpts),
    /// Adaptive average pooling to this `[H, W]` output size.
    AdaptiveAvgPool2d([usize; 2]),
    /// Mean over the spatial dims (2 and 3) of NCHW.
    Mean {
        /// Keep them as size-1 dims (`[N, C, 1, 1]`) instead of `[N, C]`.
        keepdim: bool,
    },
    /// `max(x, 0)`.
    Relu,
    /// `clamp(x, 0, 6)`.
    Relu6,
    /// `clamp(x, min, max)`.
    Hardtanh {
        /// Lower bound, in float units.
        min: f32,
        /// Upper bound, in float units (`min <= max`).
        max: f32,
    },
    /// `x * relu6(x + 3) / 6`; observed.
    Hardswish,
    /// `flatten(start_dim=1)`: `[N, ...]` to `[N, product]`.
    Flatten,
    /// Reshape to this per-sample shape (the batch dim is kept in front).
    Reshape(Vec<usize>),
    /// Concatenation of all inputs along channels (dim 1); observed.
    Cat,
}

/// Which observer chooses activation qparams.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ObserverKind {
    /// The running min and max of every batch (PyTorch's `MinMaxObserver`).
    MinMax,
    /// PyTorch's default averaging constant is 0.01.
    MovingAverageMinMax {
        /// Weight of each new batch's min/max, in (0, 1]: after the first
        /// batch, `min += c * (batch_min - min)` (likewise for max).
        averaging_constant: f32,
    },
    /// PyTorch's default is 2048 bins.
    Histogram {
        /// Number of histogram bins over the observed range.
        bins: usize,
    },
}

/// A float network under construction.
#[derive(Clone, Debug)]
pub struct ModelBuilder {
    engine: Requant,
    input: (String, Vec<usize>),
    nodes: Vec<(String, FloatOp, Vec<String>)>,
    output: Option<String>,
}

/// Running statistics of one observed tensor.
#[derive(Clone, Debug)]
pub struct Observer {
    kind: ObserverKind,
    min: f32,
    max: f32,
    seen: bool,
    hist: Vec<f64>,
}

impl Observer {
    /// An observer that has seen nothing yet; [`Observer::qparams`] needs at
    /// least one [`Observer::observe`] with a finite value first.
    pub fn new(kind: ObserverKind) -> Self {
        Observer {
            kind,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            seen: false,
            hist: Vec::new(),
        }
    }

    /// Records one batch.
    pub fn observe(&mut self, xs: &[f32]) {
        let (lo, hi) = xs
            .iter()
            .filter(|x| x.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        if lo > hi {
            return;
        }
        match self.kind {
            ObserverKind::MinMax => {
                self.min = self.min.min(lo);
                self.max = self.max.max(hi);
            }
            ObserverKind::MovingAverageMinMax {
                averaging_constant: c,
            } => {
                if !self.seen {
                    (self.min, self.max) = (lo, hi);
                } else {
                    self.min = self.min + c * (lo - self.min);
                    self.max = self.max + c * (hi - self.max);
                }
            }
            ObserverKind::Histogram { bins } => self.observe_histogram(xs, lo, hi, bins),
        }
        self.seen = true;
    }

    fn histc(xs: &[f32], bins: usize, lo: f32, hi: f32) -> Vec<f64> {
        let mut h = vec![0.0; bins];
        for &x in xs.iter().filter(|x| x.is_finite()) {
            if x < lo || x > hi {
                continue;
            }
            let b = if hi > lo {
                (((x - lo) as f64 / (hi - lo) as f64) * bins as f64) as usize
            } else {
                0
            };
            h[b.min(bins - 1)] += 1.0;
        }
        h
    }

    fn observe_histogram(&mut self, xs: &[f32], lo: f32, hi: f32, bins: usize) {
        if !self.seen {
            (self.min, self.max) = (lo, hi);
            self.hist = Self::histc(xs, bins, lo, hi);
            return;
        }
        let (new_min, new_max) = (self.min.min(lo), self.max.max(hi));
        let update = Self::histc(xs, bins, new_min, new_max);
        if new_min == self.min && new_max == self.max {
            for (a, b) in self.hist.iter_mut().zip(&update) {
                *a += b;
            }
            return;
        }
        let combined = if self.min == self.max {
            let total: f64 = self.hist.iter().sum();
            let mut t = Self::histc(&[self.min], bins, new_min, new_max);
            t.iter_mut().for_each(|v| *v *= total);
            t
        } else {
            // Upsample the old histogram 16x and re-bin its midpoints.
            let up = 16usize;
            let (omin, omax) = (self.min as f64, self.max as f64);
            let bin = (omax - omin) / (bins * up) as f64;
            let mut t = vec![0.0; bins];
            let width = (new_max as f64 - new_min as f64) / bins as f64;
            for i in 0..bins * up {
                let mid = omin + (omax - omin) * i as f64 / (bins * up) as f64 + 0.5 * bin;
                let b = if width > 0.0 {
                    ((mid - new_min as f64) / width).floor()
                } else {
                    0.0
                };
                let b = (b.max(0.0) as usize).min(bins - 1);
                t[b] += self.hist[i / up] / up as f64;
            }
            t
        };
        self.hist = combined.iter().zip(&update).map(|(a, b)| a + b).collect();
        (self.min, self.max) = (new_min, new_max);
    }

    /// The observed range: min/max, or the histogram search's choice.
    pub fn range(&self) -> (f32, f32) {
        match self.kind {
            ObserverKind::Histogram { bins } if self.seen => self.histogram_search(bins),
            _ => (self.min, self.max),
        }
    }

    fn l2_error(&self, bins: usize, start: usize, end: usize) -> f64 {
        let bin_width = (self.max as f64 - self.min as f64) / bins as f64;
        let dst_bins = 256.0;
        let dst = bin_width * (end - start + 1) as f64 / dst_bins;
        if dst == 0.0 {
            return 0.0;
        }
        let norm = |b: f64, e: f64, d: f64| d * (e * e * e - b * b * b) / 3.0;
        let mut total = 0.0;
        for (i, &h) in self.hist.iter().enumerate() {
            let density = h / bin_width;
            let b = (i as f64 - start as f64) * bin_width;
            let e = b + bin_width;
            let db = (b / dst).floor().clamp(0.0, dst_bins - 1.0);
            let de = (e / dst).floor().clamp(0.0, dst_bins - 1.0);
            total += norm(b - (db + 0.5) * dst, dst / 2.0, density);
            total += (de - db - 1.0) * norm(-dst / 2.0, dst / 2.0, density);
            total += norm(-dst / 2.0, e - (de * dst + dst / 2.0), density);
        }
        total
    }

    fn histogram_search(&self, bins: usize) -> (f32, f32) {
        let total: f64 = self.hist.iter().sum();
        let csum: Vec<f64> = self
            .hist
            .iter()
            .scan(0.0, |s, &h| {
                *s += h;
                Some(*s)
            })
            .collect();
        let step = 1e-5;
        let (mut alpha, mut beta) = (0.0f64, 1.0f64);
        let (mut start, mut end) = (0usize, bins - 1);
        let mut norm_min = f64::INFINITY;
        while alpha < beta {
            let (na, nb) = (alpha + step, beta - step);
            let (mut l, mut r) = (start, end);
            while l < end && csum[l] < na * total {
                l += 1;
            }
            while r > start && csum[r] > nb * total {
                r -= 1;
            }
            let (mut ns, mut ne) = (start, end);
            if l - start > end - r {
                ns = l;
                alpha = na;
            } else {
                ne = r;
                beta = nb;
            }
            if ns == start && ne == end {
                continue;
            }
            let n = self.l2_error(bins, ns, ne);
            if n > norm_min {
                break;
            }
            norm_min = n;
            (start, end) = (ns, ne);
        }
        let w = (self.max - self.min) / bins as f32;
        (self.min + w * start as f32, self.min + w * (end + 1) as f32)
    }

    /// qparams for a target spec (PyTorch's `_calculate_qparams`).
    pub fn qparams(&self, spec: ObserverSpec) -> Result<QParams> {
        if !self.seen {
            return Err(Error::Config {
                what: "observer".into(),
                detail: "saw no finite data during calibration".into(),
            });
        }
        let (lo, hi) = self.range();
        let (scale, zp) = spec.qparams(lo, hi)?;
        QParams::new(scale, zp)
    }
}

/// Does this op get qparams of its own (an observer after it)?
fn observed(op: &FloatOp) -> bool {
    matches!(
        op,
        FloatOp::Conv2d(_)
            | FloatOp::Linear(_)
            | FloatOp::Add { .. }
            | FloatOp::Hardswish
            | FloatOp::Cat
    )
}

type FTensor = (Vec<f32>, Vec<usize>);

fn float_pool(x: &FTensor, p: &Pool2d, avg: Option<&AvgPoolOpts>) -> Result<FTensor> {
    let [n, c, h, w] = x.1[..] else {
        return Err(Error::shape("pool", format!("{:?} is not NCHW", x.1)));
    };
    let (oh, ow) = p.out_hw(h, w)?;
    let mut y = Vec::with_capacity(n * c * oh * ow);
    for plane in x.0.chunks(h * w) {
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut m, mut s, mut cnt) = (f32::NEG_INFINITY, 0f32, 0usize);
                for ky in 0..p.kernel[0] {
                    for kx in 0..p.kernel[1] {
                        let iy =
                            (oy * p.stride[0] + ky * p.dilation[0]) as i64 - p.padding[0] as i64;
                        let ix =
                            (ox * p.stride[1] + kx * p.dilation[1]) as i64 - p.padding[1] as i64;
                        if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                            continue;
                        }
                        let v = plane[iy as usize * w + ix as usize];
                        m = m.max(v);
                        s += v;
                        cnt += 1;
                    }
                }
                y.push(match avg {
                    None => m,
                    Some(o) => {
                        let hs = (oy * p.stride[0]) as i64 - p.padding[0] as i64;
                        let ws = (ox * p.stride[1]) as i64 - p.padding[1] as i64;
                        let he = (hs + p.kernel[0] as i64).min((h + p.padding[0]) as i64);
                        let we = (ws + p.kernel[1] as i64).min((w + p.padding[1]) as i64);
                        let pool = ((he - hs) * (we - ws)) as usize;
                        s / o.divisor_override.unwrap_or(if o.count_include_pad {
                            pool
                        } else {
                            cnt
                        }) as f32
                    }
                });
            }
        }
    }
    Ok((y, vec![n, c, oh, ow]))
}

fn adaptive(x: &FTensor, [oh, ow]: [usize; 2]) -> Result<FTensor> {
    let [n, c, h, w] = x.1[..] else {
        return Err(Error::shape(
            "adaptive_avg_pool2d",
            format!("{:?} is not NCHW", x.1),
        ));
    };
    let mut y = Vec::new();
    for plane in x.0.chunks(h * w) {
        for oy in 0..oh {
            let (hs, he) = ops::adaptive_window(oy, h, oh);
            for ox in 0..ow {
                let (ws, we) = ops::adaptive_window(ox, w, ow);
                let s: f32 = (hs..he)
                    .flat_map(|iy| (ws..we).map(move |ix| (iy, ix)))
                    .map(|(iy, ix)| plane[iy * w + ix])
                    .sum();
                y.push(s / ((he - hs) * (we - ws)) as f32);
            }
        }
    }
    Ok((y, vec![n, c, oh, ow]))
}

impl ModelBuilder {
    /// A network with one float32 input of per-sample shape `input_shape`
    /// (`[C, H, W]` or `[F]`), to be converted for `engine`.
    pub fn new(engine: Requant, input_name: &str, input_shape: &[usize]) -> Self {
        ModelBuilder {
            engine,
            input: (input_name.to_string(), input_shape.to_vec()),
            nodes: Vec::new(),
            output: None,
        }
    }

    /// Adds an op reading `inputs`; returns its name (to use as a later input).
    pub fn op(&mut self, name: &str, op: FloatOp, inputs: &[&str]) -> String {
        self.nodes.push((
            name.to_string(),
            op,
            inputs.iter().map(|s| s.to_string()).collect(),
        ));
        name.to_string()
    }
    /// Adds a [`FloatOp::Conv2d`] named `name` reading `input`; returns `name`.
    pub fn conv2d(&mut self, name: &str, input: &str, layer: FloatConv2d) -> String {
        self.op(name, FloatOp::Conv2d(layer), &[input])
    }
    /// Adds a [`FloatOp::Linear`] named `name` reading `input`; returns `name`.
    pub fn linear(&mut self, name: &str, input: &str, layer: FloatLinear) -> String {
        self.op(name, FloatOp::Linear(layer), &[input])
    }
    /// Adds `a + b` (then ReLU if `relu`) named `name`; returns `name`.
    pub fn add(&mut self, name: &str, a: &str, b: &str, relu: bool) -> String {
        self.op(name, FloatOp::Add { relu }, &[a, b])
    }
    /// Marks the network's output (dequantized to float32 in the model).
    pub fn output(&mut self, name: &str) {
        self.output = Some(name.to_string());
    }

    fn out_name(&self) -> Result<&str> {
        self.output
            .as_deref()
            .or(self.nodes.last().map(|n| n.0.as_str()))
            .ok_or_else(|| Error::Model("the network is empty".into()))
    }

    /// Runs the float network (BatchNorm folded, as PyTorch evaluates the fused
    /// modules during calibration) and returns every tensor.
    pub fn run_float_all(&self, x: &[f32], shape: &[usize]) -> Result<HashMap<String, FTensor>> {
        let mut env: HashMap<String, FTensor> = HashMap::new();
        if shape.len() != self.input.1.len() + 1 || shape[1..] != self.input.1[..] {
            return Err(Error::shape(
                "float input",
                format!("{shape:?} does not match [N, {:?}]", self.input.1),
            ));
        }
        crate::layout::check_data_len(x.len(), shape)?;
        env.insert(self.input.0.clone(), (x.to_vec(), shape.to_vec()));
        for (name, op, inputs) in &self.nodes {
            let get = |i: usize| -> Result<&FTensor> {
                inputs.get(i).and_then(|n| env.get(n)).ok_or_else(|| {
                    Error::Model(format!("node {name:?}: input {i} is not defined before it"))
                })
            };
            let x = get(0)?;
            let map = |f: &dyn Fn(f32) -> f32| {
                (x.0.iter().map(|&v| f(v)).collect::<Vec<_>>(), x.1.clone())
            };
            let y: FTensor = match op {
                FloatOp::Conv2d(c) => {
                    let (w, b) = c.fused_weight_bias()?;
                    crate::cpu::float_conv2d(
                        &c.geometry,
                        &w,
                        &b,
                        c.activation == Activation::Relu,
                        &x.0,
                        &x.1,
                    )?
                }
                FloatOp::Linear(l) => {
                    let g = crate::layer::Conv2dGeometry::linear(l.in_features, l.out_features);
                    let b = l.bias.clone().unwrap_or_else(|| vec![0.0; l.out_features]);
                    crate::cpu::float_conv2d(
                        &g,
                        &l.weight,
                        &b,
                        l.activation == Activation::Relu,
                        &x.0,
                        &x.1,
                    )?
                }
                FloatOp::Add { relu } => {
                    let b = get(1)?;
                    if b.1 != x.1 {
                        return Err(Error::shape("add", format!("{:?} + {:?}", x.1, b.1)));
                    }
                    let s: Vec<f32> =
                        x.0.iter()
                            .zip(&b.0)
                            .map(|(p, q)| if *relu { (p + q).max(0.0) } else { p + q })
                            .collect();
                    (s, x.1.clone())
                }
                FloatOp::MaxPool2d(p) => float_pool(x, p, None)?,
                FloatOp::AvgPool2d(p, o) => float_pool(x, p, Some(o))?,
                FloatOp::AdaptiveAvgPool2d(s) => adaptive(x, *s)?,
                FloatOp::Mean { keepdim } => {
                    let (n, c) = (x.1[0], x.1[1]);
                    let hw: usize = x.1[2..].iter().product();
                    let m =
                        x.0.chunks(hw)
                            .map(|p| p.iter().sum::<f32>() / hw as f32)
                            .collect();
                    (
                        m,
                        if *keepdim {
                            vec![n, c, 1, 1]
                        } else {
                            vec![n, c]
                        },
                    )
                }
                FloatOp::Relu => map(&|v| v.max(0.0)),
                FloatOp::Relu6 => map(&|v| v.clamp(0.0, 6.0)),
                FloatOp::Hardtanh { min, max } => map(&|v| v.clamp(*min, *max)),
                FloatOp::Hardswish => map(&|v| v * (v + 3.0).clamp(0.0, 6.0) / 6.0),
                FloatOp::Flatten => (x.0.clone(), vec![x.1[0], x.1[1..].iter().product()]),
                FloatOp::Reshape(s) => (
                    x.0.clone(),
                    std::iter::once(x.1[0]).chain(s.iter().copied()).collect(),
                ),
                FloatOp::Cat => {
                    let ins: Vec<&FTensor> = (0..inputs.len()).map(get).collect::<Result<_>>()?;
                    let n = x.1[0];
                    let per: Vec<usize> = ins.iter().map(|t| t.0.len() / n).collect();
                    let mut y = Vec::new();
                    for b in 0..n {
                        for (t, &p) in ins.iter().zip(&per) {
                            y.extend_from_slice(&t.0[b * p..(b + 1) * p]);
                        }
                    }
                    let mut s = x.1.clone();
                    s[1] = ins.iter().map(|t| t.1[1]).sum();
                    (y, s)
                }
            };
            env.insert(name.clone(), y);
        }
        Ok(env)
    }

    /// Runs the float network and returns its output.
    pub fn run_float(&self, x: &[f32], shape: &[usize]) -> Result<FTensor> {
        let mut env = self.run_float_all(x, shape)?;
        let out = self.out_name()?.to_string();
        env.remove(&out)
            .ok_or_else(|| Error::Model(format!("output {out:?} is not a node")))
    }

    /// Calibrates on `batches` (float32 NCHW, each `(data, shape)`) with the
    /// given observer and converts: returns the quantized model, whose output
    /// is the dequantized network output.
    pub fn calibrate(&self, batches: &[FTensor], kind: ObserverKind) -> Result<Model> {
        if batches.is_empty() {
            return Err(Error::Config {
                what: "calibration".into(),
                detail: "needs at least one batch".into(),
            });
        }
        // As in PyTorch's FX flow, ops that keep their input's qparams (pools,
        // mean, relu, relu6, hardtanh, flatten, reshape) share their input's
        // observer: it sees their outputs too, in execution order.
        let mut key: HashMap<&str, &str> =
            HashMap::from([(self.input.0.as_str(), self.input.0.as_str())]);
        for (name, op, inputs) in &self.nodes {
            let k = if observed(op) {
                name.as_str()
            } else {
                key.get(inputs[0].as_str())
                    .copied()
                    .unwrap_or(inputs[0].as_str())
            };
            key.insert(name, k);
        }
        let mut obs: HashMap<String, Observer> = HashMap::new();
        for (x, s) in batches {
            let env = self.run_float_all(x, s)?;
            let order = std::iter::once(self.input.0.as_str())
                .chain(self.nodes.iter().map(|n| n.0.as_str()));
            for name in order {
                obs.entry(key[name].to_string())
                    .or_insert_with(|| Observer::new(kind))
                    .observe(&env[name].0);
            }
        }
        self.convert(&|name| obs[name].qparams(default_activation_spec(self.engine)))
    }

    /// Converts with given qparams per observed tensor (the input and every
    /// conv/linear/add/hardswish/cat output).
    pub fn convert(&self, qparams_of: &dyn Fn(&str) -> Result<QParams>) -> Result<Model> {
        let rule = self.engine;
        let xin = &self.input.0;
        let qx = format!("{xin}_q");
        let mut nodes = vec![Node {
            name: qx.clone(),
            op: Op::Quantize(qparams_of(xin)?),
            inputs: vec![xin.clone()],
        }];
        let rename = |n: &str| if n == xin { qx.clone() } else { n.to_string() };
        // qparams of each quantized tensor, to quantize layers for their inputs.
        let mut q: HashMap<String, QParams> = HashMap::from([(qx.clone(), qparams_of(xin)?)]);
        for (name, op, inputs) in &self.nodes {
            let ins: Vec<String> = inputs.iter().map(|i| rename(i)).collect();
            let q0 = *q.get(&ins[0]).ok_or_else(|| {
                Error::Model(format!(
                    "node {name:?}: input {:?} is not defined before it",
                    inputs[0]
                ))
            })?;
            let out_q = if observed(op) { qparams_of(name)? } else { q0 };
            let op = match op {
                FloatOp::Conv2d(c) => Op::Conv2d(Box::new(c.quantize(q0, out_q, rule)?)),
                FloatOp::Linear(l) => Op::Linear(Box::new(l.quantize(q0, out_q, rule)?)),
                FloatOp::Add { relu } => Op::Add {
                    relu: *relu,
                    out: out_q,
                },
                FloatOp::MaxPool2d(p) => Op::MaxPool2d(*p),
                FloatOp::AvgPool2d(p, o) => Op::AvgPool2d(*p, *o),
                FloatOp::AdaptiveAvgPool2d(s) => Op::AdaptiveAvgPool2d(*s),
                FloatOp::Mean { keepdim } => Op::Mean { keepdim: *keepdim },
                FloatOp::Relu => Op::Relu,
                FloatOp::Relu6 => Op::Relu6,
                FloatOp::Hardtanh { min, max } => Op::Hardtanh {
                    min: *min,
                    max: *max,
                },
                FloatOp::Hardswish => Op::Hardswish(out_q),
                FloatOp::Flatten => Op::Flatten,
                FloatOp::Reshape(s) => Op::Reshape(s.clone()),
                FloatOp::Cat => Op::Cat(out_q),
            };
            q.insert(name.clone(), out_q);
            nodes.push(Node {
                name: name.clone(),
                op,
                inputs: ins,
            });
        }
        let out = self.out_name()?.to_string();
        let deq = format!("{out}_dequant");
        nodes.push(Node {
            name: deq.clone(),
            op: Op::Dequantize,
            inputs: vec![out],
        });
        Model::new(
            rule,
            vec![(
                xin.clone(),
                TensorInfo {
                    shape: self.input.1.clone(),
                    dtype: DType::F32,
                },
            )],
            vec![deq],
            nodes,
        )
    }
}
