#!/usr/bin/env python3
"""Generate test vectors for PyTorch's quantized (quint8) operators other than
conv2d / linear, exactly as FX graph mode (`convert_fx`) emits them.

Every output is produced by PyTorch itself (CPU, quantized engine `fbgemm` or
`qnnpack`, selected with `torch.backends.quantized.engine`). One case per
file: `OUT/<op>_<seed>_<i>.safetensors`. `tools/check_ops.py` recomputes every
output from the rules in `tests/data/ops/README.md`.

Usage:  python3 tools/gen_ops.py OUT [--seed N] [--count-per-op N] [--ops a,b]
            [--engines fbgemm,qnnpack,x86] [--prefix P] [--producer conv2d] [--tie-maps]
Needs:  torch, numpy, safetensors

--producer identity: adversarial bytes (vector body and tail round them
differently) passed through a 1x1 identity conv, so that they sit in both parts
of a channels-last tensor's memory order (hardswish and the table ops).
--producer conv2d: the op's input is the output of a quantized conv2d (run
under fbgemm), i.e. a channels-last tensor as in a real model, instead of a
quantize of a contiguous float tensor (ops: max_pool2d, avg_pool2d,
adaptive_avg_pool2d, mean, relu, hardswish). --tie-maps: mean over 2x2 and 4x4
maps only (even H*W: exact ties of the integer mean are frequent); --big-maps:
mean over maps of 256 to 2560 positions.

What convert_fx emits (checked with torch 2.15, both engines):
  quantize      torch.quantize_per_tensor(x, scale, zp, torch.quint8)
  dequantize    x.dequantize()
  add           torch.ops.quantized.add(a, b, scale, zp)
  add_relu      torch.ops.quantized.add_relu(a, b, scale, zp)
  max_pool2d    torch.nn.functional.max_pool2d(qx, ...)   (nn.MaxPool2d kept)
  avg_pool2d    torch.nn.functional.avg_pool2d(qx, ...)   (nn.AvgPool2d kept)
  adaptive_avg_pool2d  F.adaptive_avg_pool2d(qx, size)   (module kept)
  mean          qx.mean([2, 3], keepdim=...)
  relu          F.relu(qx);  relu6: F.relu6(qx) / nn.ReLU6;  hardtanh: F.hardtanh
  hardswish     torch.ops.quantized.hardswish(qx, scale, zp) / nnq.Hardswish
  cat           torch.cat([qa, qb, ...], 1)  (FX makes all qparams equal; the
                output takes input 0's qparams) -- also generated here with
                torch.ops.quantized.cat(xs, 1, scale, zp) and differing qparams.
  mul           torch.ops.quantized.mul(a, b, scale, zp) (FX `x * y`, torch.mul;
                eager QFunctional.mul); b the same shape as a or broadcast:
                [N, C, 1, 1] (squeeze-excitation), [N, 1, 1, 1], [N, 1, H, W];
                a sometimes channels-last (a conv output in a real model)
  mul_relu      torch.ops.quantized.mul_relu(a, b, scale, zp) (FX fuses mul + relu)
  hardsigmoid   F.hardsigmoid(qx) / nn.Hardsigmoid (output qparams 1/256, 0)
  sigmoid       torch.sigmoid(qx) / nn.Sigmoid (output qparams 1/256, 0)
  silu          quantize_per_tensor(F.silu(qx.dequantize()), s, zp)  (FX leaves SiLU in float)
  leaky_relu    torch.ops.quantized.leaky_relu(qx, slope, False, s, zp) / nnq.LeakyReLU
  elu           torch.ops.quantized.elu(qx, s, zp, alpha) / nnq.ELU
  add_scalar    torch.ops.quantized.add_scalar(qx, c) (FX x + c, FloatFunctional.add_scalar)
  mul_scalar    torch.ops.quantized.mul_scalar(qx, c) (FX x * c, FloatFunctional.mul_scalar)
  conv_transpose2d  torch.ao.nn.quantized.ConvTranspose2d (FX convert_fx and eager convert of
                nn.ConvTranspose2d): random kernel, stride, padding, output_padding, dilation,
                groups, bias; per-tensor weights (per-channel, axis 1, on qnnpack with groups 1,
                the only engine and groups PyTorch runs them with); configurations qfuse refuses
                (fbgemm's direct path; x86/oneDNN with rows no kernel tap reaches) are not drawn
  (these seven also store `table` and `tail_table`: qfuse_export.torch_table, the
  tables the exporter writes as a `lut` node; they differ where ATen's vector
  body and scalar tail round a byte differently -- `adversarial` cases put such
  bytes in both parts)
"""
import argparse, json, os, random, warnings

warnings.filterwarnings("ignore")
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file

OPS = ["quantize", "dequantize", "add", "add_relu", "max_pool2d", "avg_pool2d",
       "adaptive_avg_pool2d", "mean", "relu", "relu6", "hardtanh", "hardswish", "cat",
       "mul", "mul_relu",
       # table ops the exporter writes as `lut` nodes (tables computed by PyTorch)
       "hardsigmoid", "sigmoid", "silu", "leaky_relu", "elu", "add_scalar", "mul_scalar",
       # a layer: qfuse runs it as gather (zero-point fill) + conv2d
       "conv_transpose2d"]
LUT_OPS = ("hardsigmoid", "sigmoid", "silu", "leaky_relu", "elu", "add_scalar", "mul_scalar")
ENGINES = ["fbgemm", "qnnpack"]
PER_CHANNEL = False  # --per-channel


def f32(v):
    return float(np.float32(v))


def rand_scale(rng, lo=-3.5, hi=0.3):
    # scales as the observers produce them: f32 values
    return f32(10 ** rng.uniform(lo, hi))


def rand_zp(rng):
    r = rng.random()
    if r < 0.2:
        return 0
    if r < 0.35:
        return 255
    if r < 0.45:
        return 128
    return rng.randint(1, 254)


def rand_shape(rng, big=False):
    n = rng.choice([1, 1, 2, 3, 4])
    c = rng.choice([1, 3, 5, 6, 7, 9, 13, 17] + ([24, 33] if big else []))
    h = rng.choice([1, 2, 3, 4, 5, 7, 8, 9, 11, 12, 16])
    w = rng.choice([1, 2, 3, 5, 6, 7, 8, 10, 13, 15])
    while n * c * h * w > 3000:
        c = max(1, c // 2)
        n = max(1, n - 1)
    return n, c, h, w


def float_for(g, shape, scale, zp, spread=1.15):
    """Random floats spanning (a bit beyond) the representable range of (scale, zp),
    plus some values exactly on and half-way between quantization steps."""
    lo, hi = (0 - zp) * scale, (255 - zp) * scale
    mid, half = (lo + hi) / 2, (hi - lo) / 2 * spread
    x = (torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1) * half + mid
    k = torch.randint(-zp - 3, 258 - zp, shape, generator=g).double()
    sel = torch.rand(*shape, generator=g)
    x = torch.where(sel < 0.15, k * scale, x)
    x = torch.where((sel >= 0.15) & (sel < 0.3), (k + 0.5) * scale, x)
    return x.float().contiguous()


def _rules():
    # the numpy rules of check_ops.py (same folder), used only to pick inputs that
    # separate the vector (FMA) and scalar code paths; outputs always come from torch
    import importlib, sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    return importlib.import_module("check_ops")


def adversarial_add(rng, relu):
    """qparams and (a, b) pairs for which the fbgemm vector path (FMA dequantize)
    and the scalar path (plain dequantize) give different outputs."""
    C = _rules()
    a = np.arange(256, dtype=np.int64).repeat(256)
    b = np.tile(np.arange(256, dtype=np.int64), 256)
    for _ in range(400):
        sa = rand_scale(rng, -3, 0)
        sb = f32(sa * 10 ** rng.uniform(-1.3, 1.3))
        so = f32((sa + sb) * rng.uniform(0.4, 1.6))
        za, zb, zo = rand_zp(rng), rand_zp(rng), rand_zp(rng)
        def rule(deq):
            c = deq(a, sa, za) + deq(b, sb, zb)
            if relu:
                c = np.maximum(c, np.float32(0))
            return C.quantize_val(c, C.inv(so), zo)
        idx = np.nonzero(rule(C.deq_vec) != rule(C.deq_scalar))[0]
        if idx.size:
            return sa, sb, so, za, zb, zo, a[idx], b[idx]
    return None


def adversarial_hardswish(rng):
    C = _rules()
    x = np.arange(256, dtype=np.int64)
    for _ in range(4000):
        s, z = rand_scale(rng, -2.5, -0.6), rand_zp(rng)
        so, zo = rand_scale(rng, -2.5, -0.6), rand_zp(rng)
        outs = []
        for deq in (C.deq_vec, C.deq_scalar):
            xf = deq(x, s, z)
            x2 = np.minimum(np.maximum(xf + np.float32(3), np.float32(0)), np.float32(6))
            outs.append(C.quantize_val(((xf * x2).astype(np.float32) / np.float32(6)).astype(np.float32), C.inv(so), zo))
        idx = np.nonzero(outs[0] != outs[1])[0]
        if idx.size:
            return s, z, so, zo, x[idx]
    return None


def place(rng, n, base, special):
    """put `special` values at random positions, both in the vector part [0, n - n%64)
    and in the scalar tail"""
    out = base.copy()
    v = (n // 64) * 64
    for lo, hi in ((0, v), (v, n)):
        if hi > lo:
            k = min(hi - lo, 6)
            pos = rng.sample(range(lo, hi), k)
            for p_ in pos:
                out[p_] = special[rng.randrange(len(special))]
    return out


def q(x, scale, zp):
    return torch.quantize_per_tensor(x, scale, zp, torch.quint8)


PRODUCER_OPS = ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "mean", "relu", "hardswish") + LUT_OPS


def lut_fn(op, spec):
    """The PyTorch call of a table op (as convert_fx / eager convert emit it),
    on a quint8 tensor; its constants are in spec."""
    if op == "hardsigmoid":
        return F.hardsigmoid
    if op == "sigmoid":
        return torch.sigmoid
    if op == "silu":  # convert_fx leaves SiLU in float: dequantize -> silu -> quantize
        so, zo = spec["output_scale"], spec["output_zero_point"]
        return lambda x: torch.quantize_per_tensor(F.silu(x.dequantize()), so, zo, torch.quint8)
    if op == "leaky_relu":
        return lambda x: torch.ops.quantized.leaky_relu(x, spec["negative_slope"], False,
                                                        spec["output_scale"], spec["output_zero_point"])
    if op == "elu":
        return lambda x: torch.ops.quantized.elu(x, spec["output_scale"], spec["output_zero_point"],
                                                 spec["alpha"], 1.0, 1.0)
    if op == "add_scalar":
        return lambda x: torch.ops.quantized.add_scalar(x, spec["scalar"])
    if op == "mul_scalar":
        return lambda x: torch.ops.quantized.mul_scalar(x, spec["scalar"])
    raise ValueError(op)


def lut_spec(rng, op, spec):
    """Random constants and output qparams of a table op."""
    if op in ("leaky_relu", "elu", "silu"):
        spec["output_scale"] = rand_scale(rng, -2.5, -0.6)
        spec["output_zero_point"] = rand_zp(rng)
    if op == "leaky_relu":
        spec["negative_slope"] = f32(rng.choice([0.01, 0.1, 0.2, rng.uniform(0.001, 0.9)]))
    if op == "elu":
        spec["alpha"] = f32(rng.choice([1.0, rng.uniform(0.1, 2.0)]))
    if op in ("add_scalar", "mul_scalar"):
        spec["scalar"] = f32(rng.choice([rng.uniform(-3, 3), rng.uniform(-0.2, 0.2), 1.5, -1.0, 0.0]))


def lut_tables(op, spec, s, z, engine):
    import qfuse_export
    table, tail, so, zo = qfuse_export.torch_table(lut_fn(op, spec), s, z, engine)
    return np.array(table, np.uint8), np.array(tail, np.uint8), so, zo


def split_possible(op, engine):
    """Whether the op's vector body and scalar tail can round a byte differently
    (ATen kernels with an FMA dequantize or a vectorized exp; not QNNPACK's
    lookup tables, not the integer add/mul of a scalar; float SiLU never did in
    our searches)."""
    if op in ("hardsigmoid", "sigmoid"):
        return engine != "qnnpack"
    return op in ("leaky_relu", "elu")


def adversarial_lut(rng, op, engine, tries=3000):
    """qparams (and constants) whose vector-path and tail tables differ, with those bytes."""
    for _ in range(tries):
        spec = {}
        lut_spec(rng, op, spec)
        s, z = rand_scale(rng, -2.5, -0.3), rand_zp(rng)
        table, tail, _, _ = lut_tables(op, spec, s, z, engine)
        idx = np.nonzero(table != tail)[0]
        if idx.size:
            return spec, s, z, list(idx)
    return None


def cpu_has_vnni():
    try:
        with open("/proc/cpuinfo") as f:
            return "avx512_vnni" in f.read()
    except OSError:
        return False


def conv_producer(rng, g, shape, spec, t):
    """A quantized conv2d (fbgemm) whose output has `shape`: channels-last, as every
    quantized conv output in PyTorch. Returns the output; records the conv."""
    n, c, h, w = shape
    cin, k = rng.choice([1, 2, 3, 5, 8]), rng.choice([1, 3])
    s_in, z_in = rand_scale(rng, -2.5, -0.5), rand_zp(rng)
    x = float_for(g, (n, cin, h, w), s_in, z_in)
    wf = torch.randn(c, cin, k, k, generator=g) / (cin * k * k) ** 0.5
    bf = torch.randn(c, generator=g) * 0.3
    xq = q(x, s_in, z_in)
    yf = F.conv2d(xq.dequantize(), wf, bf, padding=k // 2)
    lo, hi = min(float(yf.min()), 0.0), max(float(yf.max()), 0.0)
    so = f32(max((hi - lo) / 255, 1e-6) * rng.uniform(0.8, 1.2))
    zo = int(min(max(round(-lo / so), 0), 255))
    prev = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    conv = torch.ao.nn.quantized.Conv2d(cin, c, k, padding=k // 2)
    amax = wf.abs().amax(dim=(1, 2, 3)).clamp(min=1e-6)
    ws = (amax / 127.5).double()
    wq = torch.quantize_per_channel(wf, ws, torch.zeros(c, dtype=torch.long), 0, torch.qint8)
    conv.set_weight_bias(wq, bf)
    conv.scale, conv.zero_point = so, zo
    y = conv(xq)
    torch.backends.quantized.engine = prev
    assert y.is_contiguous(memory_format=torch.channels_last)
    spec["producer"] = {"op": "conv2d", "requant": "fbgemm", "kernel": [k, k], "padding": [k // 2, k // 2],
                        "input_scale": s_in, "input_zero_point": z_in}
    t["conv_input"] = xq.int_repr().numpy()
    t["conv.weight"] = wq.int_repr().numpy().astype(np.int8)
    t["conv.weight_scale"] = wq.q_per_channel_scales().numpy().astype(np.float32)
    t["conv.bias"] = bf.numpy().astype(np.float32)
    return y


def identity_conv_producer(xb, s, z, spec, t):
    """A quantized 1x1 conv2d (fbgemm) with identity weights (scale 1.0, bias 0)
    and input and output qparams (s, z): its output holds exactly the bytes xb
    (NCHW), channels-last as every quantized conv output. Lets a case put chosen
    bytes at chosen positions of a channels-last tensor."""
    n, c, h, w = xb.shape
    xb = np.ascontiguousarray(xb.astype(np.uint8))
    xq = torch._make_per_tensor_quantized_tensor(torch.from_numpy(xb), s, z)
    prev = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    conv = torch.ao.nn.quantized.Conv2d(c, c, 1)
    wq = torch.quantize_per_channel(torch.eye(c).reshape(c, c, 1, 1), torch.ones(c, dtype=torch.float64),
                                    torch.zeros(c, dtype=torch.long), 0, torch.qint8)
    conv.set_weight_bias(wq, torch.zeros(c))
    conv.scale, conv.zero_point = s, z
    y = conv(xq)
    torch.backends.quantized.engine = prev
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y.int_repr(), xq.int_repr()), "identity conv changed the bytes"
    spec["producer"] = {"op": "conv2d", "requant": "fbgemm", "kernel": [1, 1], "padding": [0, 0],
                        "input_scale": s, "input_zero_point": z, "identity": True}
    spec.update(input_scale=s, input_zero_point=z, shape=list(xb.shape), input_layout="channels_last",
                adversarial=True)
    t["conv_input"] = xb.astype(np.uint8)
    t["conv.weight"] = wq.int_repr().numpy().astype(np.int8)
    t["conv.weight_scale"] = np.ones(c, np.float32)
    t["conv.bias"] = np.zeros(c, np.float32)
    t["float_input"] = y.dequantize().contiguous().numpy()
    t["input"] = y.int_repr().contiguous().numpy()
    return y


def place_nhwc(rng, shape, base, special):
    """`place` over the NHWC memory order of an NCHW tensor: special values in
    both the vector part and the scalar tail of the channels-last tensor."""
    n, c, h, w = shape
    flat_nhwc = base.reshape(n, c, h, w).transpose(0, 2, 3, 1).reshape(-1)
    out = place(rng, flat_nhwc.size, flat_nhwc, special)
    return out.reshape(n, h, w, c).transpose(0, 3, 1, 2).copy()


def make_case(rng, g, op, engine, producer=None, tie_maps=False):
    torch.backends.quantized.engine = engine
    spec = {"op": op, "engine": engine, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_avx512_vnni": cpu_has_vnni(), "torch_version": torch.__version__}
    t = {}

    def one_input(shape=None, scale=None, zp=None):
        shape = shape or rand_shape(rng)
        if producer == "conv2d":
            if op not in PRODUCER_OPS:
                raise ValueError(f"--producer conv2d: not for {op}")
            xq = conv_producer(rng, g, shape, spec, t)
            spec.update(input_scale=float(xq.q_scale()), input_zero_point=int(xq.q_zero_point()),
                        shape=list(shape), input_layout="channels_last")
            t["float_input"] = xq.dequantize().contiguous().numpy()
            t["input"] = xq.int_repr().contiguous().numpy()
            return xq
        scale = scale if scale is not None else rand_scale(rng)
        zp = zp if zp is not None else rand_zp(rng)
        x = float_for(g, shape, scale, zp)
        xq = q(x, scale, zp)
        spec.update(input_scale=scale, input_zero_point=zp, shape=list(shape))
        t["float_input"] = x.numpy()
        t["input"] = xq.int_repr().numpy()
        return xq

    def out_q(y):
        spec.update(output_scale=float(y.q_scale()), output_zero_point=int(y.q_zero_point()))
        t["output"] = y.int_repr().numpy()

    if op == "quantize":
        shape = rand_shape(rng)
        scale, zp = rand_scale(rng, -4, 1), rand_zp(rng)
        x = float_for(g, shape, scale, zp, spread=1.4)
        spec.update(shape=list(shape), output_scale=scale, output_zero_point=zp)
        t["float_input"] = x.numpy()
        t["output"] = q(x, scale, zp).int_repr().numpy()
    elif op == "dequantize":
        xq = one_input()
        t["output"] = xq.dequantize().numpy()
    elif op in ("add", "add_relu") and engine in ("fbgemm", "x86") and producer != "identity" \
            and rng.random() < 0.5 \
            and (adv := adversarial_add(rng, op == "add_relu")) is not None:
        sa, sb, so, za, zb, zo, pa, pb = adv
        if op == "add_relu" and zo == 255:
            zo = 254
        n_, c_ = rng.choice([1, 2, 3]), rng.choice([3, 5, 7])
        h_, w_ = rng.choice([5, 7, 9]), rng.choice([6, 9, 11])
        shape = (n_, c_, h_, w_)
        n = n_ * c_ * h_ * w_
        pair = np.stack([pa, pb], 1)
        base_a = torch.randint(0, 256, (n,), generator=g).numpy()
        base_b = torch.randint(0, 256, (n,), generator=g).numpy()
        idx = place(rng, n, np.full(n, -1), list(range(len(pa))))
        ia = np.where(idx >= 0, pair[np.maximum(idx, 0), 0], base_a)
        ib = np.where(idx >= 0, pair[np.maximum(idx, 0), 1], base_b)
        # float inputs exactly on the quantization grid, so quantize_per_tensor gives ia / ib
        a = torch.from_numpy(((ia - za) * np.float64(sa)).astype(np.float32).reshape(shape))
        b = torch.from_numpy(((ib - zb) * np.float64(sb)).astype(np.float32).reshape(shape))
        qa, qb = q(a, sa, za), q(b, sb, zb)
        fn = torch.ops.quantized.add if op == "add" else torch.ops.quantized.add_relu
        y = fn(qa, qb, so, zo)
        spec.update(shape=list(shape), input_scale=[sa, sb], input_zero_point=[za, zb], adversarial=True)
        t.update(float_input_0=a.numpy(), float_input_1=b.numpy(),
                 input_0=qa.int_repr().numpy(), input_1=qb.int_repr().numpy())
        out_q(y)
    elif op in ("add", "add_relu") and producer == "identity":
        # adversarial pairs in the vector body and the tail of the NHWC order;
        # each input channels-last (through a 1x1 identity conv) or contiguous:
        # both channels-last (the split counts NHWC order), or one of each
        # (every element on the scalar path)
        adv = None
        while adv is None:
            adv = adversarial_add(rng, op == "add_relu")
        sa, sb, so, za, zb, zo, pa, pb = adv
        if op == "add_relu" and zo == 255:
            zo = 254
        shape = (rng.choice([1, 2]), rng.choice([3, 5, 9]), rng.choice([5, 7]), rng.choice([6, 9]))
        idx = place_nhwc(rng, shape, np.full(shape, -1), list(range(len(pa))))
        ia = np.where(idx >= 0, pa[np.maximum(idx, 0)], torch.randint(0, 256, shape, generator=g).numpy())
        ib = np.where(idx >= 0, pb[np.maximum(idx, 0)], torch.randint(0, 256, shape, generator=g).numpy())
        layouts = rng.choice([["channels_last", "channels_last"]] * 2 + [["channels_last", "contiguous"],
                                                                          ["contiguous", "channels_last"]])
        qs = []
        for i, (xb, s_, z_) in enumerate(((ia, sa, za), (ib, sb, zb))):
            if layouts[i] == "channels_last":
                sp, tt = {}, {}
                y = identity_conv_producer(xb, s_, z_, sp, tt)
                spec["producer" if i == 0 else "producer_1"] = sp["producer"]
                sfx, pre = ("", "conv") if i == 0 else ("_1", "conv1")
                t["conv_input" + sfx] = tt["conv_input"]
                for k_ in ("weight", "weight_scale", "bias"):
                    t[f"{pre}.{k_}"] = tt[f"conv.{k_}"]
            else:
                y = torch._make_per_tensor_quantized_tensor(torch.from_numpy(xb.astype(np.uint8)), s_, z_)
            qs.append(y)
            t[f"float_input_{i}"] = y.dequantize().contiguous().numpy()
            t[f"input_{i}"] = y.int_repr().contiguous().numpy()
        fn = torch.ops.quantized.add if op == "add" else torch.ops.quantized.add_relu
        spec.update(shape=list(shape), input_scale=[sa, sb], input_zero_point=[za, zb], adversarial=True,
                    input_layouts=layouts)
        if layouts[0] == "channels_last":
            spec["input_layout"] = "channels_last"
        out_q(fn(qs[0], qs[1], so, zo))
    elif op == "hardswish" and producer == "identity":
        adv = None
        while adv is None:
            adv = adversarial_hardswish(rng)
        s, z, so, zo, special = adv
        shape = (rng.choice([1, 2]), rng.choice([3, 5, 9]), rng.choice([5, 7]), rng.choice([6, 9]))
        xi = place_nhwc(rng, shape, torch.randint(0, 256, shape, generator=g).numpy(), list(special))
        y = identity_conv_producer(xi, s, z, spec, t)
        out_q(torch.ops.quantized.hardswish(y, so, zo))
    elif op == "hardswish" and engine in ("fbgemm", "x86") and producer is None and rng.random() < 0.5 \
            and (adv := adversarial_hardswish(rng)) is not None:
        s, z, so, zo, special = adv
        shape = (rng.choice([1, 2]), rng.choice([3, 5]), rng.choice([5, 7]), rng.choice([6, 9]))
        n = int(np.prod(shape))
        base = torch.randint(0, 256, (n,), generator=g).numpy()
        xi = place(rng, n, base, list(special))
        x = torch.from_numpy(((xi - z) * np.float64(s)).astype(np.float32).reshape(shape))
        xq = q(x, s, z)
        spec.update(input_scale=s, input_zero_point=z, shape=list(shape), adversarial=True)
        t["float_input"] = x.numpy()
        t["input"] = xq.int_repr().numpy()
        out_q(torch.ops.quantized.hardswish(xq, so, zo))
    elif op in ("add", "add_relu"):
        shape = rand_shape(rng, big=True)
        sa = rand_scale(rng, -3, 0)
        sb = f32(sa * 10 ** rng.uniform(-1.3, 1.3))  # qnnpack needs in/out scale ratios in [2^-14, 2^8)
        if rng.random() < 0.2:
            sb = sa
        za, zb = rand_zp(rng), rand_zp(rng)
        a = float_for(g, shape, sa, za)
        b = float_for(g, shape, sb, zb)
        qa, qb = q(a, sa, za), q(b, sb, zb)
        so = f32((sa + sb) * rng.uniform(0.4, 1.6))
        zo = rand_zp(rng)
        if op == "add_relu" and zo == 255:
            zo = 254  # qnnpack rejects an empty [zp, 255] output range
        fn = torch.ops.quantized.add if op == "add" else torch.ops.quantized.add_relu
        y = fn(qa, qb, so, zo)
        spec.update(shape=list(shape), input_scale=[sa, sb], input_zero_point=[za, zb])
        t.update(float_input_0=a.numpy(), float_input_1=b.numpy(),
                 input_0=qa.int_repr().numpy(), input_1=qb.int_repr().numpy())
        out_q(y)
    elif op == "max_pool2d":
        k = (rng.choice([1, 2, 3, 3, 4]), rng.choice([1, 2, 3, 5]))
        if k == (1, 1):
            k = (2, 2)
        s = (rng.choice([1, 2, 2, 3]), rng.choice([1, 2, 3]))
        d = (rng.choice([1, 1, 2]), rng.choice([1, 1, 2]))
        p = (rng.randint(0, k[0] // 2), rng.randint(0, k[1] // 2))
        ceil = rng.random() < 0.4
        n, c, h, w = rand_shape(rng)
        h, w = max(h, (k[0] - 1) * d[0] + 1), max(w, (k[1] - 1) * d[1] + 1)
        xq = one_input((n, c, h, w))
        y = F.max_pool2d(xq, list(k), list(s), list(p), list(d), ceil_mode=ceil)
        spec.update(kernel=list(k), stride=list(s), padding=list(p), dilation=list(d), ceil_mode=ceil)
        out_q(y)
    elif op == "avg_pool2d":
        k = (rng.choice([1, 2, 3, 3, 5]), rng.choice([2, 3, 4]))
        s = (rng.choice([1, 2, 3]), rng.choice([1, 2]))
        p = (rng.randint(0, k[0] // 2), rng.randint(0, k[1] // 2))
        ceil = rng.random() < 0.35
        cip = rng.random() < 0.5
        div = rng.choice([None, None, None, 3, 7])
        n, c, h, w = rand_shape(rng)
        h, w = max(h, k[0]), max(w, k[1])
        if rng.random() < 0.2:
            c = 1  # C == 1: the NCHW tensor is also channels-last contiguous -> NHWC kernel
        xq = one_input((n, c, h, w))
        y = F.avg_pool2d(xq, list(k), list(s), list(p), ceil_mode=ceil, count_include_pad=cip,
                         divisor_override=div)
        spec.update(kernel=list(k), stride=list(s), padding=list(p), ceil_mode=ceil,
                    count_include_pad=cip, divisor_override=div)
        out_q(y)
    elif op == "adaptive_avg_pool2d":
        n, c, h, w = rand_shape(rng)
        h, w = max(h, 2), max(w, 2)
        if rng.random() < 0.2:
            c = 1  # C == 1: the NCHW tensor is also channels-last contiguous -> NHWC kernel
        r = rng.random()
        if r < 0.25:
            o = (1, 1)
        elif r < 0.5:  # divisible: the qnnpack engine takes its own path
            dh = [x for x in range(1, h + 1) if h % x == 0 and x < h] or [1]
            dw = [x for x in range(1, w + 1) if w % x == 0 and x < w] or [1]
            o = (rng.choice(dh), rng.choice(dw))
        else:
            o = (rng.randint(1, h), rng.randint(1, w))
        xq = one_input((n, c, h, w))
        y = F.adaptive_avg_pool2d(xq, list(o))
        spec.update(output_size=list(o))
        out_q(y)
    elif op == "mean":
        shape = rand_shape(rng)
        if tie_maps == "big":
            n_, c_ = rng.choice([1, 2]), rng.choice([3, 8, 9, 33, 40])
            shape = (n_, c_) + rng.choice([(17, 19), (16, 16), (33, 33), (40, 40), (7, 64)])
        elif tie_maps:
            n_, c_ = rng.choice([1, 2]), rng.choice([2, 3, 4, 5, 8, 9, 16, 17, 32, 33, 40, 70])
            hw = rng.choice([2, 4])
            shape = (n_, c_, hw, hw)
        xq = one_input(shape)
        keep = rng.random() < 0.5
        if producer and (shape[1] == 1 or shape[2] * shape[3] == 1):
            # PyTorch 2.15 (fbgemm/x86) raises on mean(keepdim=False) of a
            # channels-last tensor that is also contiguous ("required rank 4 tensor")
            keep = True
        y = xq.mean([2, 3], keepdim=keep)
        spec.update(dim=[2, 3], keepdim=keep)
        out_q(y)
    elif op == "relu":
        xq = one_input()
        out_q(F.relu(xq))
    elif op == "relu6":
        # scales large enough that 6.0 lies inside the representable range sometimes
        xq = one_input(scale=rand_scale(rng, -2, -0.5))
        out_q(F.relu6(xq) if rng.random() < 0.5 else torch.nn.ReLU6()(xq))
    elif op == "hardtanh":
        xq = one_input(scale=rand_scale(rng, -2.5, -0.5))
        mn = f32(rng.uniform(-3, 0.5))
        mx = f32(mn + rng.uniform(0.1, 4))
        if rng.random() < 0.3:
            mn, mx = -1.0, 1.0
        out_q(F.hardtanh(xq, mn, mx))
        spec.update(min_val=mn, max_val=mx)
    elif op == "hardswish":
        xq = one_input(scale=rand_scale(rng, -2.5, -0.6))
        so, zo = rand_scale(rng, -2.5, -0.6), rand_zp(rng)
        if rng.random() < 0.5:
            y = torch.ops.quantized.hardswish(xq, so, zo)
        else:
            m = torch.ao.nn.quantized.Hardswish(so, zo)
            y = m(xq)
        out_q(y)
    elif op == "cat":
        n, _, h, w = rand_shape(rng)
        if rng.random() < 0.2:
            h = w = 1  # every input channels-last contiguous -> qcat_nhwc_kernel
        k = rng.choice([2, 2, 3])
        api = "torch.cat" if rng.random() < 0.3 else "quantized.cat"
        xs, scales, zps = [], [], []
        for j in range(k):
            c = rng.choice([1, 2, 3, 5, 8, 13, 16, 17, 40, 77])
            s, z = rand_scale(rng, -3, 0), rand_zp(rng)
            if j > 0 and rng.random() < 0.25:
                s, z = scales[0], zps[0]
            x = float_for(g, (n, c, h, w), s, z)
            xq = q(x, s, z)
            t[f"float_input_{j}"] = x.numpy()
            t[f"input_{j}"] = xq.int_repr().numpy()
            xs.append(xq); scales.append(s); zps.append(z)
        if api == "torch.cat":
            y = torch.cat(xs, 1)
        else:
            so, zo = f32(max(scales) * rng.uniform(0.5, 1.5)), rand_zp(rng)
            if rng.random() < 0.2:
                so, zo = scales[0], zps[0]
            y = torch.ops.quantized.cat(xs, 1, so, zo)
        spec.update(api=api, dim=1, num_inputs=k, input_scale=scales, input_zero_point=zps)
        out_q(y)
    elif op in ("mul", "mul_relu"):
        n, c, h, w = rand_shape(rng, big=True)
        form = rng.choice(["same", "channel", "channel", "scalar", "plane"])
        sb_shape = {"same": (n, c, h, w), "channel": (n, c, 1, 1), "scalar": (n, 1, 1, 1),
                    "plane": (n, 1, h, w)}[form]
        layout = "channels_last" if rng.random() < 0.4 else None
        for _ in range(50):  # redraw qparams/data until the output has some spread
            sa, sb = rand_scale(rng, -3, 0), rand_scale(rng, -3, 0)
            za, zb = rand_zp(rng), rand_zp(rng)
            a = float_for(g, (n, c, h, w), sa, za)
            b = float_for(g, sb_shape, sb, zb)
            qa, qb = q(a, sa, za), q(b, sb, zb)
            if layout:
                qa = qa.contiguous(memory_format=torch.channels_last)
            # output scale around the product's range: some outputs saturate
            so = f32(sa * sb * 255 * 10 ** rng.uniform(-0.8, 0.5))
            zo = rand_zp(rng)
            if op == "mul_relu" and zo > 200:
                zo = rng.randint(0, 200)
            fn = torch.ops.quantized.mul if op == "mul" else torch.ops.quantized.mul_relu
            y = fn(qa, qb, so, zo)
            if len(np.unique(y.int_repr().numpy())) >= min(8, y.numel() // 2):
                break
        assert list(y.shape) == [n, c, h, w]
        spec.update(shape=list((n, c, h, w)), input_shapes=[[n, c, h, w], list(sb_shape)],
                    broadcast=form, input_scale=[sa, sb], input_zero_point=[za, zb])
        if layout:
            spec["input_layout"] = layout
        t.update(float_input_0=a.numpy(), float_input_1=b.numpy(),
                 input_0=qa.int_repr().contiguous().numpy(), input_1=qb.int_repr().numpy())
        spec.update(output_scale=float(y.q_scale()), output_zero_point=int(y.q_zero_point()))
        t["output"] = y.int_repr().contiguous().numpy()
    elif op in LUT_OPS and producer == "identity":
        adv = adversarial_lut(rng, op, engine, tries=20000)
        if adv is None:
            raise ValueError(f"{op} ({engine}): no qparams found whose vector and tail tables differ")
        extra, s, z, special = adv
        spec.update(extra)
        shape = (rng.choice([1, 2]), rng.choice([3, 5, 9]), rng.choice([5, 7]), rng.choice([6, 9]))
        xi = place_nhwc(rng, shape, torch.randint(0, 256, shape, generator=g).numpy(), special)
        xq = identity_conv_producer(xi, s, z, spec, t)
        y = lut_fn(op, spec)(xq)
        table, tail, so, zo = lut_tables(op, spec, s, z, engine)
        assert (so, zo) == (float(y.q_scale()), int(y.q_zero_point()))
        t["table"], t["tail_table"] = table, tail
        out_q(y)
    elif op in LUT_OPS:
        adv = None
        if producer is None and split_possible(op, engine) and rng.random() < 0.4:
            adv = adversarial_lut(rng, op, engine)
        if adv is not None:
            extra, s, z, special = adv
            spec.update(extra)
            shape = (rng.choice([1, 2]), rng.choice([3, 5]), rng.choice([5, 7]), rng.choice([6, 9]))
            n = int(np.prod(shape))
            base = torch.randint(0, 256, (n,), generator=g).numpy()
            xi = place(rng, n, base, special)
            x = torch.from_numpy(((xi - z) * np.float64(s)).astype(np.float32).reshape(shape))
            xq = q(x, s, z)
            spec.update(input_scale=s, input_zero_point=z, shape=list(shape), adversarial=True)
            t["float_input"] = x.numpy()
            t["input"] = xq.int_repr().numpy()
        else:
            lut_spec(rng, op, spec)
            xq = one_input(scale=rand_scale(rng, -2.5, -0.3))
        y = lut_fn(op, spec)(xq)
        table, tail, so, zo = lut_tables(op, spec, float(xq.q_scale()), int(xq.q_zero_point()), engine)
        assert (so, zo) == (float(y.q_scale()), int(y.q_zero_point()))
        t["table"], t["tail_table"] = table, tail
        out_q(y)
    elif op == "conv_transpose2d":
        conv_transpose_case(rng, g, engine, spec, t)
    else:
        raise ValueError(op)
    return spec, t


def conv_transpose_case(rng, g, engine, spec, t):
    """A quantized ConvTranspose2d under `engine`, with the rule PyTorch runs it with
    (qfuse_export.exporter.deconv_rule: x86 hands it to oneDNN on a VNNI CPU unless output_padding is
    nonzero, else fbgemm)."""
    from qfuse_export import exporter as qe
    vnni = cpu_has_vnni()
    while True:
        groups = rng.choice([1, 1, 1, 2, 3])
        cin, cout = groups * rng.randint(1, 4), groups * rng.randint(1, 4)
        if rng.random() < 0.2:
            cin, cout = 8 * groups, 8 * rng.choice([1, 2]) * groups  # multiples of 8 per group
        k = [rng.randint(1, 4), rng.randint(1, 4)]
        s = [rng.choice([1, 2, 2, 3]), rng.choice([1, 2, 2])]
        d = [rng.choice([1, 1, 2]), rng.choice([1, 1, 2])]
        p = [rng.randint(0, d[a] * (k[a] - 1)) for a in range(2)]
        op = [rng.randint(0, max(s[a], d[a]) - 1) if rng.random() < 0.5 else 0 for a in range(2)]
        if PER_CHANNEL and (engine != "qnnpack" or groups != 1):
            continue
        per_channel = engine == "qnnpack" and groups == 1 and (PER_CHANNEL or rng.random() < 0.5)
        bias = rng.random() < 0.7
        h, w = rng.randint(2, 7), rng.randint(2, 7)
        out = [(n - 1) * s[a] - 2 * p[a] + d[a] * (k[a] - 1) + op[a] + 1 for a, n in enumerate((h, w))]
        rule = qe.deconv_rule(engine, groups, op, vnni)
        if min(out) < 1 or (rule == "fbgemm" and qe.fbgemm_direct_deconv(cin, cout, k, s, p, d, groups)) \
                or (rule == "onednn" and qe.onednn_deconv_holes(k, s, d)):
            continue
        break
    torch.backends.quantized.engine = engine
    xs, xz = rand_scale(rng, -3.5, -1.0), rand_zp(rng)
    x = float_for(g, (2, cin, h, w), xs, xz)
    xq = q(x, xs, xz)
    wf = torch.randn(cin, cout // groups, *k, generator=g) * 0.3
    if per_channel:
        sc = (wf.abs().amax(dim=(0, 2, 3)) / 127).clamp_min(1e-4)
        wq = torch.quantize_per_channel(wf, sc.double(), torch.zeros(cout, dtype=torch.long), 1, torch.qint8)
        ws = wq.q_per_channel_scales().numpy().astype(np.float32)
    else:
        wq = torch.quantize_per_tensor(wf, max(float(wf.abs().max()) / 127, 1e-4), 0, torch.qint8)
        ws = np.full(cout, wq.q_scale(), np.float32)
    bf = torch.randn(cout, generator=g) * 0.5 if bias else None
    yf = F.conv_transpose2d(xq.dequantize(), wq.dequantize(), bf, s, p, op, groups, d)
    lo, hi = min(float(yf.min()), 0.0), max(float(yf.max()), 0.0)
    so = f32(max(hi - lo, 1e-3) / 255 * (0.8 + 0.4 * rng.random()))
    zo = int(min(255, max(0, round(-lo / so))))
    m = torch.ao.nn.quantized.ConvTranspose2d(cin, cout, k, stride=s, padding=p, output_padding=op,
                                              groups=groups, dilation=d, bias=bias)
    m.set_weight_bias(wq, bf)
    m.scale, m.zero_point = so, zo
    y = m(xq)
    spec.update(input_scale=xs, input_zero_point=xz, shape=[2, cin, h, w], kernel=k, stride=s, padding=p,
                output_padding=op, dilation=d, groups=groups, out_channels=cout, bias=bias,
                per_channel=per_channel, requant=rule)
    t["float_input"] = x.numpy()
    t["input"] = xq.int_repr().numpy()
    t["weight"] = wq.int_repr().numpy().astype(np.int8)
    t["weight_scale"] = ws
    t["bias"] = (bf if bias else torch.zeros(cout)).numpy().astype(np.float32)
    spec.update(output_scale=float(y.q_scale()), output_zero_point=int(y.q_zero_point()))
    t["output"] = y.int_repr().numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count-per-op", type=int, default=10, help="cases per op per engine")
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--engines", default=",".join(ENGINES), help="fbgemm, qnnpack, x86 (cases alternate)")
    ap.add_argument("--prefix", default="", help="prepended to every case name")
    ap.add_argument("--producer", choices=["conv2d", "identity"],
                    help="the op's input comes from a quantized conv2d (identity: a 1x1 identity conv "
                         "passing chosen adversarial bytes, channels-last; hardswish and the table ops)")
    ap.add_argument("--tie-maps", action="store_true", help="mean: 2x2 and 4x4 maps only")
    ap.add_argument("--big-maps", action="store_true",
                    help="mean: maps of 256 to 2560 positions (ATen's f32 sum cascades over several levels)")
    ap.add_argument("--per-channel", action="store_true",
                    help="conv_transpose2d: per-channel weights only (engine qnnpack, groups 1)")
    a = ap.parse_args()
    global PER_CHANNEL
    PER_CHANNEL = a.per_channel
    engines = a.engines.split(",")
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(1)  # results do not depend on it for these sizes; keep runs reproducible
    total = 0
    for op in a.ops.split(","):
        rng = random.Random(f"{a.seed}-{op}")
        g = torch.Generator().manual_seed(a.seed * 1000 + OPS.index(op))
        for i in range(a.count_per_op * len(engines)):
            engine = engines[i % len(engines)]
            spec, tensors = make_case(rng, g, op, engine, a.producer, "big" if a.big_maps else a.tie_maps)
            name = f"{a.prefix}{op}_{a.seed}_{i:03d}"
            spec["name"] = name
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                      os.path.join(a.out, name + ".safetensors"),
                      metadata={"case": json.dumps(spec, sort_keys=True)})
            total += 1
    print(f"wrote {total} cases to {a.out}")


if __name__ == "__main__":
    main()
