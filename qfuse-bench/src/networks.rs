//! The two benchmark networks, ResNet-18 and MobileNetV2 (torchvision
//! layouts), each described once as a [`Network`]: a graph of conv/linear,
//! pool and add steps with per-image tensor shapes. From it come
//!
//! - the real float network for [`ModelBuilder`] ([`Network::float_network`]),
//!   which the benchmark calibrates, converts and runs through `GpuModel`;
//! - the per-layer table and the conv chain (its conv/linear steps), and the
//!   conv chain's activation buffers ([`plan`], over the whole graph).

use qfuse::builder::{FloatOp, ModelBuilder};
use qfuse::ops::Pool2d;
use qfuse::{Activation, BatchNorm, Conv2dGeometry, FloatConv2d, FloatLinear, GpuTensor, Requant};
use serde::Serialize;

use crate::rng::Lcg;

/// The activation after a conv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None,
    /// Fused into the conv (PyTorch fuses Conv+BN+ReLU).
    Relu,
    /// ReLU6. The real network keeps it as its own op after the conv, as
    /// quantized PyTorch does; the per-layer table and the conv chain run it
    /// as the conv's fused ReLU (the clamp at 6 lives in the output qparams).
    Relu6,
}

/// How a network reduces its last feature map to a vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalPool {
    /// `AdaptiveAvgPool2d(1)` then `flatten` (torchvision's ResNet).
    AvgPoolFlatten,
    /// `x.mean([2, 3])` (torchvision's quantizable MobileNetV2).
    Mean,
}

/// One step of a network graph.
#[derive(Clone, Debug)]
pub enum Op {
    /// Conv2d + BatchNorm (+ activation), or Linear (+ bias) when `linear`.
    Conv {
        name: String,
        geometry: Conv2dGeometry,
        act: Act,
        linear: bool,
    },
    /// Max pooling.
    MaxPool { name: String, pool: Pool2d },
    /// Global average pooling to `[C]`.
    GlobalPool { name: String, how: GlobalPool },
    /// Residual add of the two inputs (+ ReLU).
    Add { name: String, relu: bool },
}

impl Op {
    /// Whether a conv step ends in a (fused) ReLU or ReLU6.
    pub fn relu(&self) -> bool {
        matches!(
            self,
            Op::Conv {
                act: Act::Relu | Act::Relu6,
                ..
            }
        )
    }
}

#[derive(Clone, Debug)]
pub struct Step {
    pub op: Op,
    pub inputs: Vec<usize>,
    pub output: usize,
}

/// A network: tensors (per-image shapes, `[C, H, W]` or `[K]`) and steps in
/// execution order. Tensor 0 is the input image; step `i` writes a new
/// tensor (`output`), so tensors after the input are in step order.
#[derive(Clone, Debug)]
pub struct Network {
    pub name: String,
    pub resolution: usize,
    pub tensors: Vec<Vec<usize>>,
    pub steps: Vec<Step>,
}

impl Network {
    fn new(name: &str, c: usize, res: usize) -> Self {
        Network {
            name: name.into(),
            resolution: res,
            tensors: vec![vec![c, res, res]],
            steps: vec![],
        }
    }
    fn push(&mut self, op: Op, inputs: Vec<usize>, shape: Vec<usize>) -> usize {
        self.tensors.push(shape);
        let output = self.tensors.len() - 1;
        self.steps.push(Step { op, inputs, output });
        output
    }
    /// A `k`x`k` conv with padding `k / 2` and BatchNorm.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        x: usize,
        cout: usize,
        k: usize,
        stride: usize,
        groups: usize,
        act: Act,
    ) -> usize {
        let s = self.tensors[x].clone();
        let g = Conv2dGeometry::new(s[0], cout, [k, k])
            .stride([stride, stride])
            .padding([k / 2, k / 2])
            .groups(groups);
        let (oh, ow) = g.output_hw(s[1], s[2]).unwrap();
        self.push(
            Op::Conv {
                name: name.into(),
                geometry: g,
                act,
                linear: false,
            },
            vec![x],
            vec![cout, oh, ow],
        )
    }
    fn max_pool(&mut self, name: &str, x: usize, k: usize, stride: usize, pad: usize) -> usize {
        let s = self.tensors[x].clone();
        let o = |d: usize| (d + 2 * pad - k) / stride + 1;
        let pool = Pool2d {
            kernel: [k, k],
            stride: [stride, stride],
            padding: [pad, pad],
            dilation: [1, 1],
            ceil_mode: false,
        };
        self.push(
            Op::MaxPool {
                name: name.into(),
                pool,
            },
            vec![x],
            vec![s[0], o(s[1]), o(s[2])],
        )
    }
    fn global_pool(&mut self, name: &str, x: usize, how: GlobalPool) -> usize {
        let c = self.tensors[x][0];
        self.push(
            Op::GlobalPool {
                name: name.into(),
                how,
            },
            vec![x],
            vec![c],
        )
    }
    fn add(&mut self, name: &str, a: usize, b: usize, relu: bool) -> usize {
        let s = self.tensors[a].clone();
        self.push(
            Op::Add {
                name: name.into(),
                relu,
            },
            vec![a, b],
            s,
        )
    }
    fn linear(&mut self, name: &str, x: usize, out: usize) -> usize {
        let k = self.tensors[x][0];
        self.push(
            Op::Conv {
                name: name.into(),
                geometry: Conv2dGeometry::linear(k, out),
                act: Act::None,
                linear: true,
            },
            vec![x],
            vec![out],
        )
    }

    /// The real float network for [`ModelBuilder`] (fbgemm rule), with random
    /// weights from `seed`: each conv with BatchNorm (He init) and its ReLU
    /// fused, ReLU6 as its own op named `<conv>.relu6`, pools and adds as
    /// their float ops, the linear head with a bias.
    pub fn float_network(&self, seed: u64) -> RealNet {
        let mut b = ModelBuilder::new(Requant::Fbgemm, "x", &self.tensors[0]);
        let mut rng = Lcg(seed);
        let mut f32_params = 0;
        // The builder's name of each tensor.
        let mut names = vec!["x".to_string()];
        for st in &self.steps {
            let x = names[st.inputs[0]].clone();
            let out = match &st.op {
                Op::Conv {
                    name,
                    geometry: g,
                    linear: true,
                    ..
                } => {
                    let (k, o) = (g.in_channels, g.out_channels);
                    let sd = 1.0 / (k as f32).sqrt();
                    let layer = FloatLinear {
                        in_features: k,
                        out_features: o,
                        weight: (0..k * o).map(|_| rng.normal() * sd).collect(),
                        bias: Some((0..o).map(|_| 0.1 * rng.normal()).collect()),
                        activation: Activation::None,
                    };
                    f32_params += k * o + o;
                    b.linear(name, &x, layer)
                }
                Op::Conv {
                    name,
                    geometry: g,
                    act,
                    ..
                } => {
                    let cout = g.out_channels;
                    let r = &mut rng;
                    let sd = (2.0 / g.reduction_len() as f32).sqrt();
                    let layer = FloatConv2d {
                        geometry: *g,
                        weight: (0..g.weight_len()).map(|_| r.normal() * sd).collect(),
                        bias: None,
                        batchnorm: Some(BatchNorm {
                            gamma: (0..cout).map(|_| 0.5 + r.uniform()).collect(),
                            beta: (0..cout).map(|_| 0.2 * r.normal()).collect(),
                            running_mean: (0..cout).map(|_| 0.1 * r.normal()).collect(),
                            running_var: (0..cout).map(|_| 0.5 + r.uniform()).collect(),
                            eps: 1e-5,
                        }),
                        activation: if *act == Act::Relu {
                            Activation::Relu
                        } else {
                            Activation::None
                        },
                    };
                    f32_params += g.weight_len() + cout;
                    let y = b.conv2d(name, &x, layer);
                    if *act == Act::Relu6 {
                        b.op(&format!("{name}.relu6"), FloatOp::Relu6, &[&y])
                    } else {
                        y
                    }
                }
                Op::MaxPool { name, pool } => b.op(name, FloatOp::MaxPool2d(*pool), &[&x]),
                Op::GlobalPool {
                    name,
                    how: GlobalPool::AvgPoolFlatten,
                } => {
                    let p = b.op(name, FloatOp::AdaptiveAvgPool2d([1, 1]), &[&x]);
                    b.op("flatten", FloatOp::Flatten, &[&p])
                }
                Op::GlobalPool {
                    name,
                    how: GlobalPool::Mean,
                } => b.op(name, FloatOp::Mean { keepdim: false }, &[&x]),
                Op::Add { name, relu } => b.add(name, &x, &names[st.inputs[1]], *relu),
            };
            debug_assert_eq!(names.len(), st.output);
            names.push(out);
        }
        RealNet {
            builder: b,
            f32_weight_bytes: 4 * f32_params as u64,
        }
    }
}

/// ResNet-18 (torchvision layout) at `res`x`res`: 7x7/2 stem + BN + ReLU,
/// 3x3/2 max pool, basic blocks (two 3x3 convs with BN, a 1x1/2 conv + BN
/// downsample where the shape changes, residual add + ReLU), global average
/// pool, flatten, linear 512 -> 1000.
pub fn resnet18(res: usize) -> Network {
    let mut b = Network::new("resnet18", 3, res);
    let mut x = b.conv("conv1", 0, 64, 7, 2, 1, Act::Relu);
    x = b.max_pool("maxpool", x, 3, 2, 1);
    let mut cin = 64;
    for (li, &(cout, stride)) in [(64, 1), (128, 2), (256, 2), (512, 2)].iter().enumerate() {
        for blk in 0..2 {
            let s = if blk == 0 { stride } else { 1 };
            let n = format!("layer{}.{blk}", li + 1);
            let short = if s != 1 || cin != cout {
                b.conv(&format!("{n}.downsample"), x, cout, 1, s, 1, Act::None)
            } else {
                x
            };
            let a = b.conv(&format!("{n}.conv1"), x, cout, 3, s, 1, Act::Relu);
            let c = b.conv(&format!("{n}.conv2"), a, cout, 3, 1, 1, Act::None);
            x = b.add(&format!("{n}.add"), c, short, true);
            cin = cout;
        }
    }
    x = b.global_pool("avgpool", x, GlobalPool::AvgPoolFlatten);
    b.linear("fc", x, 1000);
    b
}

/// MobileNetV2 (torchvision layout, width 1.0) at `res`x`res`: conv + BN +
/// ReLU6; inverted residuals (1x1 expand + ReLU6, 3x3 depthwise + ReLU6, 1x1
/// project, residual add where the shape allows); 1x1 320 -> 1280 + ReLU6;
/// mean over H and W; linear 1280 -> 1000.
pub fn mobilenet_v2(res: usize) -> Network {
    let mut b = Network::new("mobilenet_v2", 3, res);
    let mut x = b.conv("features.0", 0, 32, 3, 2, 1, Act::Relu6);
    let mut cin = 32;
    let mut idx = 1;
    for &(t, c, n, s) in &[
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ] {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            let hidden = cin * t;
            let name = format!("features.{idx}");
            let mut h = x;
            if t != 1 {
                h = b.conv(&format!("{name}.expand"), h, hidden, 1, 1, 1, Act::Relu6);
            }
            h = b.conv(
                &format!("{name}.dw"),
                h,
                hidden,
                3,
                stride,
                hidden,
                Act::Relu6,
            );
            h = b.conv(&format!("{name}.project"), h, c, 1, 1, 1, Act::None);
            x = if stride == 1 && cin == c {
                b.add(&format!("{name}.add"), h, x, false)
            } else {
                h
            };
            cin = c;
            idx += 1;
        }
    }
    x = b.conv("features.18", x, 1280, 1, 1, 1, Act::Relu6);
    x = b.global_pool("pool", x, GlobalPool::Mean);
    b.linear("classifier", x, 1000);
    b
}

/// A float network for [`ModelBuilder`] and its f32 weight bytes (BN folded:
/// weights + one bias per output channel).
pub struct RealNet {
    pub builder: ModelBuilder,
    pub f32_weight_bytes: u64,
}

/// A random float32 NCHW batch (roughly standard normal).
pub fn random_images(rng: &mut Lcg, n: usize, res: usize) -> (Vec<f32>, Vec<usize>) {
    (
        (0..n * 3 * res * res).map(|_| rng.normal()).collect(),
        vec![n, 3, res, res],
    )
}

// ---------------------------------------------------------------------------
// The conv chain's activation plan

/// Buffer assignment for a network's activations: tensors whose lifetimes
/// do not overlap share a buffer. An output never shares with its inputs.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Buffer index of each tensor.
    pub tensor_buffer: Vec<usize>,
    /// Size of each buffer in bytes.
    pub buffer_bytes: Vec<u64>,
    /// Sum of the buffer sizes: the planned peak activation memory.
    pub planned_bytes: u64,
    /// The most bytes of tensors alive at once (a lower bound for any plan).
    pub max_live_bytes: u64,
}

/// Plans the activation buffers of `net` at batch `n`, `bytes(shape)` giving
/// a tensor's size (shape with the batch dimension first).
pub fn plan(net: &Network, n: usize, bytes: &dyn Fn(&[usize]) -> u64) -> Plan {
    let nt = net.tensors.len();
    let size: Vec<u64> = net
        .tensors
        .iter()
        .map(|s| {
            let mut full = vec![n];
            full.extend_from_slice(s);
            bytes(&full)
        })
        .collect();
    // Last step that reads each tensor (the network output lives to the end).
    let mut last = vec![0usize; nt];
    for (i, st) in net.steps.iter().enumerate() {
        for &t in &st.inputs {
            last[t] = i;
        }
    }
    last[net.steps.last().map_or(0, |s| s.output)] = usize::MAX;
    // Step 0 holds the input; step i + 1 runs `net.steps[i]`.
    let mut lifetimes: Vec<qfuse::plan::Lifetime> = size
        .iter()
        .map(|&bytes| qfuse::plan::Lifetime {
            def: 0,
            last: usize::MAX,
            bytes,
        })
        .collect();
    for (i, st) in net.steps.iter().enumerate() {
        lifetimes[st.output].def = i + 1;
    }
    for (t, l) in lifetimes.iter_mut().enumerate() {
        if last[t] != usize::MAX && net.steps.iter().any(|st| st.inputs.contains(&t)) {
            l.last = last[t] + 1;
        }
    }
    let (buffer_bytes, tensor_buffer) = qfuse::plan::assign_buffers(&lifetimes);
    // The most bytes alive at once: after each step's output is allocated,
    // before its last-read inputs are released.
    let max_live = (0..=net.steps.len())
        .map(|s| {
            lifetimes
                .iter()
                .filter(|l| l.def <= s && (l.last == usize::MAX || l.last >= s))
                .map(|l| l.bytes)
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0);
    let planned_bytes = buffer_bytes.iter().sum();
    Plan {
        tensor_buffer,
        buffer_bytes,
        planned_bytes,
        max_live_bytes: max_live,
    }
}

/// Bytes of an int8 activation (packed NHWC4).
pub fn int8_bytes(shape: &[usize]) -> u64 {
    GpuTensor::gpu_bytes(shape).unwrap()
}
/// Bytes of an f32 activation.
pub fn f32_bytes(shape: &[usize]) -> u64 {
    4 * shape.iter().product::<usize>() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_have_the_right_size() {
        let r = resnet18(224);
        let convs = r
            .steps
            .iter()
            .filter(|s| matches!(s.op, Op::Conv { .. }))
            .count();
        assert_eq!(convs, 21); // 20 convs + fc
        let m = mobilenet_v2(224);
        let convs = m
            .steps
            .iter()
            .filter(|s| matches!(s.op, Op::Conv { .. }))
            .count();
        assert_eq!(convs, 53); // 52 convs + classifier
        assert_eq!(r.tensors.last().unwrap(), &vec![1000]);
    }

    #[test]
    fn plan_reuses_buffers() {
        let net = resnet18(224);
        let p = plan(&net, 1, &|s| 4 * s.iter().product::<usize>() as u64);
        // conv1 output (64x112x112) and the pooled tensor are alive together.
        let c1 = 4 * 64 * 112 * 112u64;
        assert!(p.max_live_bytes >= c1 + c1 / 4);
        assert!(p.planned_bytes >= p.max_live_bytes);
        assert!(p.planned_bytes < 3 * c1, "{p:?}");
        // No tensor shares a buffer with an input of the step that writes it.
        for st in &net.steps {
            for &i in &st.inputs {
                assert_ne!(p.tensor_buffer[i], p.tensor_buffer[st.output]);
            }
        }
    }
}
