#!/usr/bin/env python3
"""Generate test vectors for PyTorch 2 export (pt2e) int8 models as ExecuTorch's
XNNPACK backend runs them.

Each case is a small seeded model, quantized with ExecuTorch's XNNPACKQuantizer
(torchao pt2e: prepare_pt2e, calibration, convert_pt2e), exported, lowered with
`to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])`, turned
into an ExecuTorch program and run with ExecuTorch's own runtime (Python
bindings). For every case `OUT/<case>/` gets:

  case.json        versions, CPU, the model's quantized graph as a small IR
                   (one entry per fused int8 op, with every quantization
                   parameter), which ops ExecuTorch delegated to XNNPACK and
                   which it left to its portable kernels
  input_<i>.npy    f32 model inputs (NCHW / [N, K])
  output_<i>.npy   f32 outputs of the ExecuTorch runtime (bit-exact reference)
  output_q_<i>.npy the int8 values behind output_<i> (output = dequantize(output_q),
                   checked bit for bit here)
  n<k>_*.npy       per IR node: int8 weights, f32 weight scales, f32 bias, the
                   int32 bias ExecuTorch serialized for XNNPACK, f32 float weights

`tools/pt2e/check_pt2e_ops.py` recomputes every output from these files with
numpy only. Rules: tests/data/pt2e/README.md.

Usage:  python3 tools/pt2e/gen_pt2e_ops.py tests/data/pt2e/xnnpack [--only a,b] [--list]
        python3 tools/pt2e/gen_pt2e_ops.py /tmp/nets --nets   (resnet18, mobilenet_v2; not committed)
Needs:  tools/pt2e/requirements.txt (torch, torchao, executorch, numpy)
"""
import argparse, json, os, platform, shutil, sys, warnings

warnings.filterwarnings("ignore")
import logging

logging.disable(logging.WARNING)

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, convert_pt2e
from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
    XNNPACKQuantizer,
    get_symmetric_quantization_config,
)
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import to_edge_transform_and_lower
from executorch.runtime import Runtime
import executorch.backends.xnnpack.operators.quant_params as et_quant_params

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_pt2e_ops as ref  # noqa: E402  (numpy rules, used to mine discriminating inputs)

qd = torch.ops.quantized_decomposed
aten = torch.ops.aten

# ------------------------------------------------------------------ recording
# ExecuTorch quantizes conv/linear biases to int32 while it serializes the
# XNNPACK graph (QuantParams.quantize_tensor). Record exactly what it wrote.
_SERIALIZED = []
_orig_quantize_tensor = et_quant_params.QuantParams.quantize_tensor


def _record_quantize_tensor(self, tensor):
    out = _orig_quantize_tensor(self, tensor)
    _SERIALIZED.append((tensor.detach().clone(), out.detach().clone()))
    return out


et_quant_params.QuantParams.quantize_tensor = _record_quantize_tensor


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def cpu_flags():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                fl = line.split(":", 1)[1].split()
                keep = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                        "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_int8"]
                return [f for f in keep if f in fl]
    except OSError:
        pass
    return []


def versions():
    import executorch.version as ev
    import torchao

    return {
        "torch": torch.__version__,
        "torchao": torchao.__version__,
        "executorch": ev.__version__,
        "executorch_git": ev.git_version,
        "numpy": np.__version__,
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "machine": platform.machine(),
    }


# ------------------------------------------------------------------ models

class Fn(nn.Module):
    """A model given by a forward function over named submodules."""

    def __init__(self, fwd, **mods):
        super().__init__()
        for k, v in mods.items():
            setattr(self, k, v)
        self._fwd = fwd

    def forward(self, *xs):
        return self._fwd(self, *xs)


def pow2_weights(g, shape, exps, scale_mult=None):
    """Float weights w = n * 2^-e (n integer, |n| <= 127) with max |n| = 127 in every
    output channel, so the symmetric observer's scale is exactly 2^-e (or
    scale_mult * 2^-e) and quantization is exact. Used by the tie cases."""
    o = shape[0]
    n = torch.randint(-8, 9, shape, generator=g).double()  # small: keeps acc * m inside the int8 range
    w = torch.empty(shape, dtype=torch.float64)
    for c in range(o):
        nc = n[c].flatten()
        nc[int(torch.randint(0, nc.numel(), (1,), generator=g))] = 127 * (1 if c % 2 else -1)
        m = 1.0 if scale_mult is None else scale_mult[c % len(scale_mult)]
        w[c] = (nc * m * 2.0 ** -exps[c % len(exps)]).reshape(shape[1:])
    return w.float()


def net_cases():
    """whole torchvision networks (random weights, 64x64 input): not in the committed
    vectors (3-12 MB each); `--nets OUT` makes them for a one-off check"""
    import torchvision

    cases = {}
    for name in ("resnet18", "mobilenet_v2"):
        ctor = getattr(torchvision.models, name)
        cases[name] = dict(build=lambda c=ctor: c(num_classes=10), in_shapes=[(1, 3, 64, 64)], per_channel=True,
                           seed=5, calib=3, override=None, input_fn=None, spread=1.0)
    return cases


def make_cases():
    """name -> dict(model, inputs, calib, per_channel, override)
    override: list of (q index in graph order, scale, zp) applied after convert_pt2e
    (used to force exact .5 ties in requantization)."""
    cases = {}

    def add(name, build, in_shapes, per_channel=(True, False), seed=0, calib=4,
            override=None, input_fn=None, spread=1.0):
        for pc in per_channel:
            nm = name + ("_pc" if pc else "_pt") if len(per_channel) > 1 else name
            cases[nm] = dict(build=build, in_shapes=in_shapes, per_channel=pc,
                             seed=seed + (0 if pc else 1000), calib=calib,
                             override=override, input_fn=input_fn, spread=spread)

    conv = lambda *a, **k: nn.Conv2d(*a, **k)
    # --- conv2d variants
    add("conv3x3", lambda: Fn(lambda s, x: s.c(x), c=conv(3, 8, 3, padding=1)), [(1, 3, 9, 9)], seed=1)
    add("conv_relu", lambda: Fn(lambda s, x: torch.relu(s.c(x)), c=conv(4, 8, 3, padding=1)), [(2, 4, 7, 7)], seed=2)
    add("conv_nobias", lambda: Fn(lambda s, x: s.c(x), c=conv(5, 6, 3, bias=False)), [(1, 5, 8, 8)], seed=3)
    add("conv_depthwise", lambda: Fn(lambda s, x: s.c(x), c=conv(8, 8, 3, padding=1, groups=8)), [(1, 8, 9, 9)], seed=4)
    add("conv_depthwise_relu_s2", lambda: Fn(lambda s, x: torch.relu(s.c(x)), c=conv(6, 6, 3, stride=2, padding=1, groups=6)),
        [(1, 6, 11, 11)], seed=5)
    add("conv_dw_mult2", lambda: Fn(lambda s, x: s.c(x), c=conv(4, 8, 5, padding=2, groups=4)), [(1, 4, 8, 8)], seed=6)
    add("conv_grouped", lambda: Fn(lambda s, x: s.c(x), c=conv(8, 12, 3, padding=1, groups=4)), [(1, 8, 7, 7)], seed=7)
    add("conv_strided", lambda: Fn(lambda s, x: s.c(x), c=conv(4, 6, 3, stride=2, padding=1)), [(1, 4, 10, 9)], seed=8)
    add("conv_dilated", lambda: Fn(lambda s, x: s.c(x), c=conv(4, 6, 3, dilation=2, padding=2)), [(1, 4, 9, 9)], seed=9)
    add("conv_asym", lambda: Fn(lambda s, x: s.c(x), c=conv(3, 5, (3, 5), stride=(2, 1), padding=(1, 2))),
        [(1, 3, 9, 8)], seed=10)
    add("conv1x1_wide", lambda: Fn(lambda s, x: s.c(x), c=conv(64, 24, 1)), [(1, 64, 5, 5)], seed=11)
    add("conv_k7_big_acc", lambda: Fn(lambda s, x: s.c(x), c=conv(32, 8, 7, padding=3)), [(1, 32, 8, 8)], seed=12)
    def conv_bn():
        c, bn = conv(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        with torch.no_grad():
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.3, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
        return Fn(lambda s, x: torch.relu(s.bn(s.c(x))), c=c, bn=bn)

    add("conv_bn_relu", conv_bn, [(1, 3, 8, 8)], seed=13)  # prepare_pt2e folds the BatchNorm
    # --- linear
    add("linear", lambda: Fn(lambda s, x: s.l(x), l=nn.Linear(32, 10)), [(3, 32)], seed=20)
    add("linear_relu", lambda: Fn(lambda s, x: torch.relu(s.l(x)), l=nn.Linear(48, 16)), [(2, 48)], seed=21)
    add("linear_nobias", lambda: Fn(lambda s, x: s.l(x), l=nn.Linear(20, 7, bias=False)), [(1, 20)], seed=22)
    # --- conv -> shared-qparam ops / other ops
    add("add_convs", lambda: Fn(lambda s, x: s.a(x) + s.b(x), a=conv(3, 6, 1), b=conv(3, 6, 3, padding=1)),
        [(1, 3, 6, 6)], seed=30)
    add("add_relu_convs", lambda: Fn(lambda s, x: torch.relu(s.a(x) + s.b(x)), a=conv(3, 6, 1), b=conv(3, 6, 3, padding=1)),
        [(1, 3, 6, 6)], seed=31)
    add("add_inputs", lambda: Fn(lambda s, x, y: x + y), [(1, 4, 5, 7), (1, 4, 5, 7)], per_channel=(True,), seed=32)
    add("add_relu_inputs", lambda: Fn(lambda s, x, y: torch.relu(x + y)), [(2, 3, 6, 5), (2, 3, 6, 5)],
        per_channel=(True,), seed=33)
    add("mul_inputs", lambda: Fn(lambda s, x, y: x * y), [(1, 4, 6, 7), (1, 4, 6, 7)], per_channel=(True,), seed=36)
    add("mul_relu_convs", lambda: Fn(lambda s, x: torch.relu(s.a(x) * s.b(x)), a=conv(3, 6, 1), b=conv(3, 6, 3, padding=1)),
        [(1, 3, 6, 6)], seed=37)
    add("cat2", lambda: Fn(lambda s, x: torch.cat([s.a(x), s.b(x)], 1), a=conv(3, 4, 1), b=conv(3, 5, 3, padding=1)),
        [(1, 3, 6, 6)], seed=34)
    add("cat3", lambda: Fn(lambda s, x: torch.cat([s.a(x), torch.relu(s.b(x)), s.c(x)], 1),
                           a=conv(3, 2, 1), b=conv(3, 3, 1), c=conv(3, 4, 3, padding=1)), [(1, 3, 5, 5)], seed=35)
    add("maxpool2", lambda: Fn(lambda s, x: F.max_pool2d(s.c(x), 2), c=conv(3, 6, 1)), [(1, 3, 8, 8)], seed=40)
    add("maxpool3s2p1", lambda: Fn(lambda s, x: F.max_pool2d(s.c(x), 3, 2, 1), c=conv(3, 6, 3, padding=1)),
        [(1, 3, 9, 9)], seed=41)
    add("maxpool_ceil", lambda: Fn(lambda s, x: F.max_pool2d(s.c(x), 3, 2, 0, ceil_mode=True), c=conv(3, 5, 1)),
        [(1, 3, 8, 8)], seed=42)
    add("maxpool_dilated", lambda: Fn(lambda s, x: F.max_pool2d(s.c(x), 3, 1, 1, dilation=2), c=conv(3, 5, 1)),
        [(1, 3, 9, 9)], seed=43)
    add("maxpool_relu", lambda: Fn(lambda s, x: torch.relu(F.max_pool2d(s.c(x), 2)), c=conv(3, 6, 1)),
        [(1, 3, 8, 8)], seed=44)
    add("adaptive_avgpool1", lambda: Fn(lambda s, x: F.adaptive_avg_pool2d(s.c(x), 1), c=conv(3, 8, 3, padding=1)),
        [(2, 3, 7, 7)], seed=50)
    add("mean_hw", lambda: Fn(lambda s, x: s.c(x).mean([2, 3], keepdim=True), c=conv(3, 8, 1)), [(1, 3, 6, 5)], seed=51)
    add("adaptive_avgpool2_portable", lambda: Fn(lambda s, x: F.adaptive_avg_pool2d(s.c(x), 2), c=conv(3, 6, 1)),
        [(1, 3, 7, 6)], seed=52)
    add("hardtanh", lambda: Fn(lambda s, x: F.hardtanh(s.c(x), -0.5, 0.75), c=conv(3, 6, 3, padding=1)),
        [(1, 3, 6, 6)], seed=60)
    add("hardtanh06", lambda: Fn(lambda s, x: F.hardtanh(s.c(x), 0.0, 6.0), c=conv(3, 6, 3, padding=1)),
        [(1, 3, 6, 6)], seed=61, spread=5.0)
    add("relu6_float_tail", lambda: Fn(lambda s, x: F.relu6(s.c(x)), c=conv(3, 6, 3, padding=1)),
        [(1, 3, 6, 6)], seed=62, spread=5.0)
    add("relu6_requant", lambda: Fn(lambda s, x: s.d(F.relu6(s.c(x))), c=conv(3, 6, 3, padding=1), d=conv(6, 4, 1)),
        [(1, 3, 6, 6)], seed=63, spread=5.0)
    add("relu6_requant_cat", lambda: Fn(lambda s, x: (lambda r: torch.cat([r, r], 1))(F.relu6(s.c(x))), c=conv(3, 6, 3, padding=1)),
        [(1, 3, 6, 6)], seed=64, spread=5.0)
    add("add_relu6_requant", lambda: Fn(lambda s, x, y: s.d(F.relu6(x + y)), d=conv(4, 3, 1)),
        [(1, 4, 5, 5), (1, 4, 5, 5)], per_channel=(True,), seed=65, spread=3.0)
    add("maxpool_relu6_requant", lambda: Fn(lambda s, x: s.d(F.relu6(F.max_pool2d(s.c(x), 2))), c=conv(3, 6, 3, padding=1),
                                            d=conv(6, 4, 1)), [(1, 3, 8, 8)], per_channel=(True,), seed=66, spread=5.0)
    add("flatten_linear", lambda: Fn(lambda s, x: s.l(torch.flatten(s.c(x), 1)), c=conv(3, 4, 3, padding=1),
                                     l=nn.Linear(64, 10)), [(2, 3, 4, 4)], seed=70)
    def block_fwd(s, x):  # a small residual network: every pattern of resnet18 once
        p = F.max_pool2d(torch.relu(s.c0(x)), 3, 2, 1)
        r = torch.relu(s.c2(torch.relu(s.c1(p))) + p)
        return s.fc(torch.flatten(F.adaptive_avg_pool2d(r, 1), 1))

    add("block", lambda: Fn(block_fwd, c0=conv(3, 8, 3, stride=2, padding=1), c1=conv(8, 8, 3, padding=1),
                            c2=conv(8, 8, 3, padding=1), fc=nn.Linear(8, 5)), [(1, 3, 16, 16)], seed=80)

    # --- exact ties: qparams forced to powers of two after convert_pt2e
    # conv: si = 2^-5, ws = 2^-7 or 3*2^-9 (per channel), so = 2^-11 -> m = 0.5 / 0.375
    def conv_tie(pc, relu=False):
        def build():
            g = torch.Generator().manual_seed(90)
            c = conv(4, 6, 3, padding=1)
            with torch.no_grad():
                c.weight.copy_(pow2_weights(g, (6, 4, 3, 3), [7], scale_mult=[1.0, 3 / 4] if pc else [1.0]))
                c.bias.copy_((torch.randint(-300, 300, (6,), generator=g).double() * 2.0 ** -12 * 0.75).float())
            if relu:
                return Fn(lambda s, x: torch.relu(s.c(x)), c=c)
            return Fn(lambda s, x: s.c(x), c=c)
        return build

    for pc in (True, False):
        cases["conv_tie" + ("_pc" if pc else "_pt")] = dict(
            build=conv_tie(pc), in_shapes=[(1, 4, 6, 6)], per_channel=pc, seed=91, calib=4,
            override=[(0, 2.0 ** -5, 3), (1, 2.0 ** -11, -7)], input_fn="smallgrid", spread=1.0)
    cases["conv_relu_tie"] = dict(
        build=conv_tie(True, relu=True), in_shapes=[(1, 4, 6, 6)], per_channel=True, seed=92, calib=4,
        override=[(0, 2.0 ** -5, -4), (1, 2.0 ** -11, 0)], input_fn="smallgrid", spread=1.0)
    cases["linear_tie"] = dict(
        build=lambda: (lambda g: Fn(lambda s, x: s.l(x), l=_lin_pow2(g)))(torch.Generator().manual_seed(93)),
        in_shapes=[(4, 24)], per_channel=True, seed=93, calib=4,
        override=[(0, 2.0 ** -5, 1), (1, 2.0 ** -10, 5)], input_fn="smallgrid", spread=1.0)
    # quantize: inputs exactly half-way between steps
    cases["quantize_tie"] = dict(
        build=lambda: Fn(lambda s, x: s.c(x), c=conv(3, 4, 1)), in_shapes=[(1, 3, 8, 8)], per_channel=True,
        seed=94, calib=4, override=[(0, 2.0 ** -4, 5)], input_fn="halfsteps", spread=1.0)
    # add: sa/so = sb/so = 1/2 -> every odd sum of (a-za)+(b-zb) is a tie
    cases["add_tie"] = dict(
        build=lambda: Fn(lambda s, x, y: x + y), in_shapes=[(1, 4, 6, 6), (1, 4, 6, 6)], per_channel=True,
        seed=95, calib=4, override=[(0, 2.0 ** -5, 3), (1, 2.0 ** -5, -6), (2, 2.0 ** -4, 1)], input_fn="grid",
        spread=1.0)
    # mul: sa = sb = 2^-4, so = 2^-5 -> scale 2^-3, products near zero: p/8 ties at p = 4 mod 8
    cases["mul_tie"] = dict(
        build=lambda: Fn(lambda s, x, y: x * y), in_shapes=[(1, 4, 6, 6), (1, 4, 6, 6)], per_channel=True,
        seed=105, calib=4, override=[(0, 2.0 ** -4, 3), (1, 2.0 ** -4, -2), (2, 2.0 ** -5, 1)], input_fn="smallgrid",
        spread=1.0)
    cases["add_tie_ratio"] = dict(
        build=lambda: Fn(lambda s, x, y: x + y), in_shapes=[(1, 3, 7, 7), (1, 3, 7, 7)], per_channel=True,
        seed=96, calib=4, override=[(0, 3 * 2.0 ** -7, 0), (1, 2.0 ** -5, 7), (2, 2.0 ** -4, -2)],
        input_fn="grid", spread=1.0)
    # mean over 2x2 and 4x4 with shared qparams: sum/4, sum/16 land on .5 often
    for nm, hw, zp in (("mean_tie_2x2", (2, 2), 3), ("mean_tie_4x4", (4, 4), -5)):
        cases[nm] = dict(
            build=lambda: Fn(lambda s, x, y: (x + y).mean([2, 3], keepdim=True)),
            in_shapes=[(1, 16, hw[0], hw[1])] * 2, per_channel=True, seed=97, calib=4,
            override=[(0, 2.0 ** -5, 0), (1, 2.0 ** -5, 0), (2, 2.0 ** -5, zp), (3, 2.0 ** -5, zp)], input_fn="grid",
            spread=1.0)
    # hardtanh bounds that fall exactly half-way between steps (min/scale = -16.5, max/scale = 20.5)
    # with an odd zero point: separates rint(val/scale + zp) from rint(val/scale) + zp
    cases["hardtanh_tie"] = dict(
        build=lambda: Fn(lambda s, x: F.hardtanh(s.c(x), -16.5 * 2.0 ** -5, 20.5 * 2.0 ** -5), c=conv(3, 6, 3, padding=1)),
        in_shapes=[(1, 3, 6, 6)], per_channel=True, seed=98, calib=4,
        override=[(1, 2.0 ** -5, 3), (2, 2.0 ** -5, 3)], input_fn=None, spread=1.0)
    # mined inputs / parameters: keep the ones whose output changes when a rule is replaced by
    # a plausible alternative (tools/pt2e/check_pt2e_ops.py --mutate ...)
    for pc in (True, False):
        cases["conv_bias_mined" + ("_pc" if pc else "_pt")] = dict(
            build=lambda: Fn(lambda s, x: s.c(x), c=conv(3, 64, 1)), in_shapes=[(1, 3, 4, 4)], per_channel=pc,
            seed=101 + pc, calib=4, override=None, input_fn=None, tweak=tweak_bias, spread=1.0)
    cases["add_mined"] = dict(
        build=lambda: Fn(lambda s, x, y: x + y), in_shapes=[(1, 1, 1, 1024), (1, 1, 1, 1024)], per_channel=True,
        seed=103, calib=4, override=None, tweak=tweak_add_qparams, input_fn="mine", mine=mine_add, spread=1.0)
    cases["add_relu_mined"] = dict(
        build=lambda: Fn(lambda s, x, y: torch.relu(x + y)), in_shapes=[(1, 1, 1, 1024), (1, 1, 1, 1024)],
        per_channel=True, seed=104, calib=4, override=None, tweak=tweak_add_qparams, input_fn="mine",
        mine=mine_add, spread=1.0)
    return cases


# ------------------------------------------------------------------ mining

def _qrows_to_float(q, s, z):
    """floats that quantize exactly to q under the quantize rule"""
    x = ((q.astype(np.float64) - z) * s).astype(np.float32)
    assert np.array_equal(ref.quantize(x, s, z), q), "mined input does not round-trip"
    return x


def _with_mut(mut, fn):
    old = ref.MUT
    ref.MUT = mut
    try:
        return fn()
    finally:
        ref.MUT = old


def mine_add(walker, qps, g, size=1024, random_pairs=64):
    nd = [n for n in walker.nodes if n["op"] == "add"][0]
    (sa, sb), (za, zb) = nd["input_scales"], nd["input_zero_points"]
    a, b = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128), indexing="ij")
    a, b = a.ravel().astype(np.int64), b.ravel().astype(np.int64)
    base = ref.add(a, b, nd)
    diff = np.zeros(a.size, dtype=bool)
    for mut in ("add_half_away", "add_shift21", "add_float"):
        diff |= _with_mut(mut, lambda: ref.add(a, b, nd)) != base
    rng = np.random.default_rng(int(torch.randint(0, 2 ** 31, (1,), generator=g)))
    idx = np.flatnonzero(diff)[:size - random_pairs]
    idx = np.concatenate([idx, rng.integers(0, a.size, size - len(idx))])
    print(f"    mined {int(diff.sum())} discriminating pairs of {a.size}, kept {len(idx)}")
    xa = _qrows_to_float(a[idx], sa, za).reshape(1, 1, 1, -1)
    xb = _qrows_to_float(b[idx], sb, zb).reshape(1, 1, 1, -1)
    return [torch.from_numpy(xa), torch.from_numpy(xb)]


def tweak_add_qparams(cm, g, tries=300):
    """choose add qparams (f32 scales, signed zero points) under which the most input
    pairs separate XNNPACK's add from its alternatives (QNNPACK shift, f32 add)"""
    rng = np.random.default_rng(int(torch.randint(0, 2 ** 31, (1,), generator=g)))
    a, b = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128), indexing="ij")
    a, b = a.ravel().astype(np.int64), b.ravel().astype(np.int64)
    relu = any(n.op == "call_function" and n.target == aten.relu.default for n in cm.graph.nodes)
    best = (-1, None)
    for _ in range(tries):
        so = float(np.float32(10 ** rng.uniform(-2.5, -1)))
        sa = float(np.float32(so * 10 ** rng.uniform(-0.7, 0.5)))
        sb = float(np.float32(so * 10 ** rng.uniform(-0.7, 0.5)))
        za, zb, zo = (int(v) for v in rng.integers(-40, 40, 3))
        nd = dict(input_scales=[sa, sb], input_zero_points=[za, zb], output_scale=so, output_zero_point=zo,
                  activation="relu" if relu else "none")
        base = ref.add(a, b, nd)
        n = sum(int((_with_mut(m, lambda: ref.add(a, b, nd)) != base).sum()) for m in ("add_shift21", "add_float"))
        if n > best[0]:
            best = (n, [(0, sa, za), (1, sb, zb), (2, so, zo)])
    override_qparams(cm, best[1])
    print(f"    add qparams {best[1]}: {best[0]} pair/alternative disagreements")


def tweak_bias(cm, g):
    """replace the conv bias by floats whose int32 quantization differs between the
    per-channel (f32) and per-tensor (f64) bias rules"""
    conv_node = [n for n in cm.graph.nodes if n.op == "call_function" and n.target == aten.conv2d.default][0]
    xdq, wdq, bnode = conv_node.args[0], conv_node.args[1], conv_node.args[2]
    si = float(xdq.args[1])
    pc = wdq.target == DQ_C
    ws = _t(cm, wdq.args[1]).float().numpy() if pc else np.array([float(wdq.args[1])], dtype=np.float32)
    if not pc:
        # the two rules can only differ if f32(1 / f32(ws * si)) != f32(1 / (ws * si in f64)):
        # nudge the input scale by a few ulps until they do
        w0 = float(ws[0])
        while np.float32(1.0) / np.float32(np.float32(w0) * np.float32(si)) == np.float32(1.0 / (w0 * si)):
            si = float(np.nextafter(np.float32(si), np.float32(1.0)))
        q = xdq.args[0]
        override_qparams(cm, [([n for n in cm.graph.nodes if n.op == "call_function" and n.target == Q_T].index(q),
                               si, int(xdq.args[2]))])
        print(f"    input scale set to {si!r} so that the per-tensor and per-channel bias rules differ")
    o = _t(cm, bnode).numel()
    ws = np.resize(ws, o).astype(np.float32)
    rng = np.random.default_rng(int(torch.randint(0, 2 ** 31, (1,), generator=g)))
    out = np.zeros(o, dtype=np.float32)
    found = 0
    for c in range(o):
        bs = float(np.float32(ws[c]) * np.float32(si))
        ks = rng.integers(-20000, 20000, 4000) + 0.5
        cand = (ks * bs).astype(np.float32)
        cand = np.concatenate([np.nextafter(cand, np.float32(np.inf)), cand, np.nextafter(cand, np.float32(-np.inf))])
        w1 = np.full(cand.size, ws[c], dtype=np.float32)
        r_pc = ref.bias_i32_rule(cand, w1, si, True)
        r_pt = ref.bias_i32_rule(cand, w1, si, False)
        d = np.flatnonzero(r_pc != r_pt)
        if d.size and c % 4 != 3:  # every 4th channel keeps an ordinary bias
            out[c] = cand[d[0]]
            found += 1
        else:
            out[c] = cand[0]
    with torch.no_grad():
        _attr(cm, bnode.target).copy_(torch.from_numpy(out))
    print(f"    {found} of {o} biases separate the per-channel and per-tensor bias rules")


def _attr(gm, target):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _lin_pow2(g):
    l = nn.Linear(24, 6)
    with torch.no_grad():
        l.weight.copy_(pow2_weights(g, (6, 24), [6, 7], scale_mult=[1.0, 3 / 4, 5 / 8]))
        l.bias.copy_((torch.randint(-500, 500, (6,), generator=g).double() * 2.0 ** -11).float())
    return l


# ------------------------------------------------------------------ graph walk

Q_T = qd.quantize_per_tensor.default
DQ_T = qd.dequantize_per_tensor.default
DQ_C = qd.dequantize_per_channel.default
ACTS = {aten.relu.default: "relu", aten.relu_.default: "relu"}
FUSABLE = {aten.conv2d.default, aten.linear.default, aten.add.Tensor, aten.add_.Tensor, aten.mul.Tensor}


def _t(gm, node):
    """tensor behind a get_attr node"""
    obj = gm
    for part in node.target.split("."):
        obj = getattr(obj, part)
    return obj.detach()


def pair(v, n=2):
    if isinstance(v, (list, tuple)):
        return [int(a) for a in v] if len(v) == n else [int(v[0])] * n
    return [int(v)] * n


class Walker:
    """Turns a convert_pt2e graph into a list of int8 ops (the IR in case.json).

    Patterns recognised (what qfuse's exporter must recognise too):
      x(f32) -> quantize_per_tensor                          => quantize
      dq(a) -> conv2d(dq(a), dequantize_per_channel|per_tensor(w_int8), bias_f32)
            [-> relu] -> quantize_per_tensor                  => conv2d (+relu)
      dq(a) -> linear(...) [-> relu] -> q                      => linear (+relu)
      dq(a), dq(b) -> add [-> relu] -> q                       => add (+relu)
      dq(a) -> relu | hardtanh -> q (same qparams)             => clamp
      dq(a) -> max_pool2d -> q (same qparams)                  => max_pool2d
      dq(a) -> mean([2,3], keepdim) | adaptive_avg_pool2d(1) -> q => mean_hw
      dq(a) -> adaptive_avg_pool2d(k>1) -> q                   => adaptive_avg_pool2d
      dq(a_i) -> cat -> q (all same qparams)                   => cat
      dq(a) -> flatten | view | reshape -> q                    => reshape
      q -> dequantize_per_tensor -> graph output               => dequantize
      dq(a) -> relu6 -> graph output (float)                   => f32_clamp
    """

    def __init__(self, gm):
        self.gm = gm
        self.nodes = []
        self.val = {}  # fx node -> IR value name
        self.qp = {}  # IR value name -> (scale, zp) for int8 values
        self.shape = {}
        self.n = 0
        self.inputs = []

    def new_val(self, node, kind):
        name = f"v{len(self.val)}"
        self.val[node] = name
        return name

    def src_of_dq(self, dq):
        assert dq.target == DQ_T, f"expected dequantize_per_tensor, got {dq.target}"
        q = dq.args[0]
        return self.val[q], float(dq.args[1]), int(dq.args[2])

    def weight(self, wdq):
        if wdq.target == DQ_C:
            wq = _t(self.gm, wdq.args[0])
            scale = _t(self.gm, wdq.args[1]).float()
            zp = _t(self.gm, wdq.args[2])
            assert int(wdq.args[3]) == 0
            per_channel = True
        elif wdq.target == DQ_T:
            src = wdq.args[0]
            wq = _t(self.gm, src)
            scale = torch.full((wq.shape[0],), float(wdq.args[1]), dtype=torch.float32)
            zp = torch.full((wq.shape[0],), int(wdq.args[2]), dtype=torch.int64)
            per_channel = False
        else:
            raise ValueError(f"weight not from a dequantize node: {wdq.target}")
        assert wq.dtype == torch.int8 and (zp == 0).all(), "weights must be symmetric int8"
        return wq, scale, per_channel, (int(wdq.args[-3]), int(wdq.args[-2]))

    def run(self):
        g = self.gm.graph
        for node in g.nodes:
            if node.op == "placeholder":
                name = self.new_val(node, "f32")
                self.inputs.append(name)
                self.shape[name] = list(node.meta["val"].shape)
            elif node.op == "call_function" and node.target == Q_T:
                self.on_quantize(node)
            elif node.op == "output":
                outs = node.args[0]
                outs = outs if isinstance(outs, (list, tuple)) else [outs]
                self.outputs = [self.on_output(o) for o in outs]
        return self

    def emit(self, op, ins, out, **kw):
        d = dict(id=len(self.nodes), op=op, inputs=ins, output=out)
        d.update(kw)
        self.nodes.append(d)
        return d

    def on_quantize(self, q):
        src = q.args[0]
        scale, zp = float(q.args[1]), int(q.args[2])
        assert (int(q.args[3]), int(q.args[4]), q.args[5]) == (-128, 127, torch.int8), q.args
        out = self.new_val(q, "q")
        self.qp[out] = (scale, zp)
        self.shape[out] = list(src.meta["val"].shape)
        oq = dict(output_scale=scale, output_zero_point=zp)
        if src.op == "placeholder":
            self.emit("quantize", [self.val[src]], out, **oq)
            return
        act = "none"
        hard = None
        op = src
        if src.target in ACTS and src.args[0].op == "call_function" and src.args[0].target in FUSABLE \
                and len(src.args[0].users) == 1:
            act, op = ACTS[src.target], src.args[0]
        t = op.target
        if t == aten.conv2d.default or t == aten.linear.default:
            x, wdq = op.args[0], op.args[1]
            bias = op.args[2] if len(op.args) > 2 else None
            a, s_in, z_in = self.src_of_dq(x)
            wq, wscale, pc, (wmin, wmax) = self.weight(wdq)
            k = len(self.nodes)
            arrays = {
                f"n{k}_weight_q": wq.numpy().astype(np.int8),
                f"n{k}_weight_scale": wscale.numpy().astype(np.float32),
            }
            if bias is not None:
                arrays[f"n{k}_bias"] = _t(self.gm, bias).float().numpy()
            stack = op.meta.get("nn_module_stack") or {}
            module = list(stack.values())[-1][0] if stack else None
            kw = dict(input_scale=s_in, input_zero_point=z_in, activation=act, weight_per_channel=pc, module=module,
                      weight_qmin=wmin, weight_qmax=wmax, has_bias=bias is not None, arrays=arrays)
            if t == aten.conv2d.default:
                a_ = list(op.args) + [None] * (7 - len(op.args))
                kw.update(stride=pair(a_[3] or 1), padding=pair(a_[4] or 0), dilation=pair(a_[5] or 1),
                          groups=int(a_[6] or 1))
                self.emit("conv2d", [a], out, **kw, **oq)
            else:
                self.emit("linear", [a], out, **kw, **oq)
        elif t in (aten.add.Tensor, aten.add_.Tensor):
            (a, sa, za), (b, sb, zb) = self.src_of_dq(op.args[0]), self.src_of_dq(op.args[1])
            self.emit("add", [a, b], out, input_scales=[sa, sb], input_zero_points=[za, zb], activation=act, **oq)
        elif t == aten.relu6.default:
            # XNNPACKQuantizer leaves relu6 in float: dq -> relu6 (f32) -> q with the
            # consumer's qparams. ExecuTorch lowers it to an XNNPACK clamp from one
            # int8 tensor to another with different qparams.
            a, s_in, z_in = self.src_of_dq(op.args[0])
            self.emit("clamp", [a], out, min=0.0, max=6.0, input_scale=s_in, input_zero_point=z_in,
                      source="relu6 (float in the pt2e graph)", **oq)
        elif t == aten.mul.Tensor:
            (a, sa, za), (b, sb, zb) = self.src_of_dq(op.args[0]), self.src_of_dq(op.args[1])
            self.emit("mul", [a, b], out, input_scales=[sa, sb], input_zero_points=[za, zb], activation=act, **oq)
        elif t in (aten.relu.default, aten.relu_.default, aten.hardtanh.default, aten.hardtanh_.default):
            a, s_in, z_in = self.src_of_dq(op.args[0])
            if t in (aten.relu.default, aten.relu_.default):
                lo, hi = 0.0, float("inf")
            else:
                lo = float(op.args[1]) if len(op.args) > 1 else -1.0
                hi = float(op.args[2]) if len(op.args) > 2 else 1.0
            self.emit("clamp", [a], out, min=lo, max=hi, input_scale=s_in, input_zero_point=z_in, **oq)
        elif t == aten.max_pool2d.default:
            a, s_in, z_in = self.src_of_dq(op.args[0])
            a_ = list(op.args) + [None] * (6 - len(op.args))
            k = pair(a_[1])
            self.emit("max_pool2d", [a], out, kernel=k, stride=pair(a_[2]) if a_[2] else k,
                      padding=pair(a_[3] or 0), dilation=pair(a_[4] or 1), ceil_mode=bool(a_[5] or False),
                      input_scale=s_in, input_zero_point=z_in, **oq)
        elif t == aten.mean.dim or (t == aten.adaptive_avg_pool2d.default and pair(op.args[1]) == [1, 1]):
            a, s_in, z_in = self.src_of_dq(op.args[0])
            if t == aten.mean.dim:
                dims = sorted(int(d) % 4 for d in op.args[1])
                assert dims == [2, 3] and op.args[2], "only mean over [2, 3] with keepdim"
            self.emit("mean_hw", [a], out, source=str(t), input_scale=s_in, input_zero_point=z_in, **oq)
        elif t == aten.adaptive_avg_pool2d.default:
            a, s_in, z_in = self.src_of_dq(op.args[0])
            self.emit("adaptive_avg_pool2d", [a], out, output_size=pair(op.args[1]), input_scale=s_in,
                      input_zero_point=z_in, **oq)
        elif t == aten.cat.default:
            srcs = [self.src_of_dq(x) for x in op.args[0]]
            dim = int(op.args[1]) if len(op.args) > 1 else 0
            self.emit("cat", [s[0] for s in srcs], out, dim=dim, input_scales=[s[1] for s in srcs],
                      input_zero_points=[s[2] for s in srcs], **oq)
        elif t in (aten.flatten.using_ints, aten.view.default, aten.reshape.default, aten.dropout.default):
            # dropout: identity in eval (the installed quantizer shares its qparams)
            a, s_in, z_in = self.src_of_dq(op.args[0])
            self.emit("reshape", [a], out, shape=list(op.meta["val"].shape), input_scale=s_in,
                      input_zero_point=z_in, **oq)
        else:
            raise NotImplementedError(f"no int8 pattern for {t}")

    def on_output(self, o):
        if o.target == DQ_T:
            a, s, z = self.src_of_dq(o)
            out = self.new_val(o, "f32")
            self.emit("dequantize", [a], out, input_scale=s, input_zero_point=z)
            return out
        if o.target in (aten.relu6.default, aten.hardtanh.default):
            inner = self.on_output(o.args[0])
            out = self.new_val(o, "f32")
            lo, hi = (0.0, 6.0) if o.target == aten.relu6.default else (float(o.args[1]), float(o.args[2]))
            self.emit("f32_clamp", [inner], out, min=lo, max=hi)
            return out
        raise NotImplementedError(f"graph output from {o.target}")


# ------------------------------------------------------------------ one case

def gen_inputs(g, shapes, qps, mode, spread):
    xs = []
    for i, shp in enumerate(shapes):
        if mode in ("grid", "halfsteps", "smallgrid") and qps is not None:
            s, z = qps[i]
            k = torch.randint(-128, 128, shp, generator=g).double()
            if mode == "smallgrid":  # q within z +- 6: conv/linear results stay inside the int8 range
                k = (z + torch.randint(-6, 7, shp, generator=g)).double()
            off = 0.5 if mode == "halfsteps" else 0.0
            x = (k - z + off) * s
            if mode == "halfsteps":  # a few values outside the range too
                x = torch.where(torch.rand(shp, generator=g) < 0.05, x * 1.5, x)
            xs.append(x.float())
        else:
            xs.append((torch.randn(shp, generator=g) * spread).float())
    return xs


def override_qparams(cm, override):
    """Set the (scale, zp) of the i-th quantize_per_tensor node (graph order) and of
    every dequantize_per_tensor that reads it."""
    qs = [n for n in cm.graph.nodes if n.op == "call_function" and n.target == Q_T]
    for idx, scale, zp in override:
        q = qs[idx]
        q.args = (q.args[0], float(scale), int(zp)) + tuple(q.args[3:])
        for u in list(q.users):
            if u.target == DQ_T:
                u.args = (u.args[0], float(scale), int(zp)) + tuple(u.args[3:])
    cm.recompile()


def _op_name(target):
    import re

    s = str(target)
    m = re.match(r"<EdgeOpOverload: ([^>]+)>", s)
    return m.group(1) if m else getattr(target, "__name__", s)


def lowered_ops(low):
    """edge ops inside XNNPACK delegates and outside them (portable kernels)"""
    gm = low.exported_program().graph_module
    inside, outside = [], []
    for n in gm.graph.nodes:
        if n.op != "call_function":
            continue
        name = _op_name(n.target)
        if "executorch_call_delegate" in name:
            lm = getattr(gm, n.args[0].target)
            for m in lm.original_module.graph.nodes:
                if m.op == "call_function":
                    inside.append(_op_name(m.target))
        elif "getitem" not in name:
            outside.append(name)
    return inside, outside


def run_case(name, spec, outdir):
    torch.manual_seed(spec["seed"])
    g = torch.Generator().manual_seed(spec["seed"])
    model = spec["build"]().eval()
    shapes = spec["in_shapes"]
    override = spec["override"]
    calib = [gen_inputs(g, shapes, None, "randn", spec["spread"]) for _ in range(spec["calib"])]
    example = tuple(calib[0])
    gm = torch.export.export(model, example).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=spec["per_channel"]))
    pm = prepare_pt2e(gm, quantizer)
    for c in calib:
        pm(*c)
    cm = convert_pt2e(pm)
    if override:
        override_qparams(cm, override)
    # inputs to record
    qps = None
    if spec.get("tweak"):
        spec["tweak"](cm, g)
    if spec["input_fn"] in ("grid", "halfsteps", "smallgrid", "mine"):
        qs = [n for n in cm.graph.nodes if n.op == "call_function" and n.target == Q_T and n.args[0].op == "placeholder"]
        qps = [(float(q.args[1]), int(q.args[2])) for q in qs]
    walker = Walker(cm).run()
    if spec["input_fn"] == "mine":
        xs = spec["mine"](walker, qps, g)
    else:
        xs = gen_inputs(g, shapes, qps, spec["input_fn"] or "randn", spec["spread"])
    ep = torch.export.export(cm, tuple(xs))
    del _SERIALIZED[:]
    low = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
    inside, outside = lowered_ops(low)
    prog = low.to_executorch()
    rt = Runtime.get()
    program = rt.load_program(prog.buffer)  # keep alive while the method runs
    method = program.load_method("forward")
    outs = method.execute([x.clone() for x in xs])
    outs = [o.clone() for o in outs]
    del method, program
    eager = cm(*xs)
    eager = eager if isinstance(eager, (list, tuple)) else [eager]

    # serialized int32 biases, matched to conv/linear nodes by recomputing each
    # with ExecuTorch's own QuantParams (bias scale = weight_scale * input_scale)
    biases = [(t, q) for t, q in _SERIALIZED if q.dtype == torch.int32]
    os.makedirs(outdir, exist_ok=True)
    used = set()
    for k, nd in enumerate(walker.nodes):
        arrays = nd.pop("arrays", {})
        if nd["op"] in ("conv2d", "linear") and nd["has_bias"]:
            b = torch.from_numpy(arrays[f"n{k}_bias"])
            hits = [i for i, (t, q) in enumerate(biases) if i not in used and t.shape == b.shape and torch.equal(t, b)]
            assert hits, f"{name}: serialized bias of node {k} not found"
            # equal float biases (e.g. zeros): prefer the one the rule predicts, else the first
            want = ref.bias_i32_rule(arrays[f"n{k}_bias"], arrays[f"n{k}_weight_scale"], nd["input_scale"],
                                     nd["weight_per_channel"])
            pick = [i for i in hits if np.array_equal(biases[i][1].numpy().astype(np.int64), want)] or hits
            used.add(pick[0])
            arrays[f"n{k}_bias_i32"] = biases[pick[0]][1].numpy().astype(np.int32)
        for key, arr in arrays.items():
            np.save(os.path.join(outdir, key + ".npy"), arr)
        nd["arrays"] = sorted(arrays)
    n_bias = sum(1 for nd in walker.nodes if nd["op"] in ("conv2d", "linear") and nd["has_bias"])
    assert n_bias == len(biases), f"{name}: {len(biases)} serialized biases for {n_bias} biased layers"

    # float weights (for the weight-quantization rule)
    for k, nd in enumerate(walker.nodes):
        if nd.get("module"):
            mod = model.get_submodule(nd["module"])
            w = mod.weight.detach().float()
            if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) and not (
                    nd["module"] == "c" and hasattr(model, "bn")):
                continue  # folded with a BatchNorm we do not track: no float weight to record
            if nd["module"] == "c" and hasattr(model, "bn"):  # prepare_pt2e folded the BatchNorm
                bn = model.bn
                w, _ = torch.nn.utils.fusion.fuse_conv_bn_weights(
                    mod.weight, mod.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
                w = w.detach().float()
            w = w.numpy()
            np.save(os.path.join(outdir, f"n{k}_weight_f32.npy"), w)
            nd["arrays"].append(f"n{k}_weight_f32")

    out_meta = []
    for i, (x) in enumerate(xs):
        np.save(os.path.join(outdir, f"input_{i}.npy"), x.numpy())
    for i, o in enumerate(outs):
        o = o.contiguous()
        np.save(os.path.join(outdir, f"output_{i}.npy"), o.numpy())
        # recover the int8 tensor behind a dequantized output and check it
        last = [nd for nd in walker.nodes if nd["output"] == walker.outputs[i]][0]
        info = dict(name=walker.outputs[i], op=last["op"])
        if last["op"] == "dequantize":
            s, z = last["input_scale"], last["input_zero_point"]
            q = np.clip(np.rint(o.numpy().astype(np.float64) / s) + z, -128, 127).astype(np.int8)
            back = (np.float32(s) * (q.astype(np.int32) - z).astype(np.float32)).astype(np.float32)
            assert np.array_equal(back.view(np.int32), o.numpy().view(np.int32)), f"{name}: output {i} not a dequantized int8"
            np.save(os.path.join(outdir, f"output_q_{i}.npy"), q)
            info["int8"] = f"output_q_{i}.npy"
            e = eager[i].detach().numpy()
            eq = np.clip(np.rint(e.astype(np.float64) / s) + z, -128, 127)
            info["eager_pytorch_equal_fraction"] = float(np.mean(eq == q))
        out_meta.append(info)

    case = dict(
        name=name,
        per_channel_weights=spec["per_channel"],
        qparams_overridden=bool(override),
        input_kind=spec["input_fn"] or "randn",
        versions=versions(),
        inputs=[dict(name=walker.inputs[i], file=f"input_{i}.npy", shape=list(x.shape)) for i, x in enumerate(xs)],
        outputs=out_meta,
        nodes=walker.nodes,
        shapes=walker.shape,
        delegated_ops=sorted(set(inside)),
        portable_ops=sorted(set(outside)),
    )
    for nd in case["nodes"]:
        nd["backend"] = "xnnpack"
        if nd["op"] == "adaptive_avg_pool2d" and any("adaptive_avg_pool2d" in o for o in outside):
            nd["backend"] = "portable"
    with open(os.path.join(outdir, "case.json"), "w") as f:
        json.dump(case, f, indent=1)
    return case


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--only", default="")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--nets", action="store_true", help="make the whole-network cases (resnet18, mobilenet_v2) instead")
    args = ap.parse_args()
    cases = net_cases() if args.nets else make_cases()
    if args.list:
        print("\n".join(cases))
        return
    names = [n for n in cases if not args.only or n in args.only.split(",")]
    for n in names:
        d = os.path.join(args.out, n)
        if os.path.isdir(d):
            shutil.rmtree(d)
        c = run_case(n, cases[n], d)
        fr = [o.get("eager_pytorch_equal_fraction") for o in c["outputs"]]
        print(f"{n}: {len(c['nodes'])} ops, portable={c['portable_ops']}, eager-equal={fr}", flush=True)


if __name__ == "__main__":
    main()
