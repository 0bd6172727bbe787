"""Export a PyTorch-quantized int8 network to a qfuse model file.

Python API (the main way to use this tool; `pip install ./python` in a qfuse
checkout installs the package `qfuse_export`):

    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx, convert_fx
    import qfuse_export

    torch.backends.quantized.engine = "fbgemm"   # BEFORE prepare/convert
    prepared = prepare_fx(model.eval(), get_default_qconfig_mapping("fbgemm"), (x,))
    prepared(calibration_batch)                  # calibrate
    quantized = convert_fx(prepared)
    qfuse_export.export(quantized, x, "model.safetensors")

`export(model, example_input, path, engine=None)` accepts
  * the torch.fx.GraphModule returned by convert_fx, or
  * an eager-mode quantized nn.Module (QuantStub/DeQuantStub, fuse_modules,
    prepare, convert; FloatFunctional add/add_relu/mul/cat). It is traced with
    torch.fx.symbolic_trace, so its forward must be traceable (no
    data-dependent control flow).
  * a pt2e model: the GraphModule returned by torchao's convert_pt2e (quantized
    with ExecuTorch's XNNPACKQuantizer) or a torch.export.ExportedProgram of it.
    It is exported for ExecuTorch's XNNPACK delegate (engine "xnnpack", the only
    engine for pt2e models and their default; torch.backends.quantized.engine
    plays no part): qfuse_export.pt2e lists the patterns it maps.
`example_input` is one tensor or a tuple of tensors (float32, with a batch
dimension). The model is run on it once: every node's shape and output
quantization parameters are recorded and checked against the exported graph.
`engine` defaults to torch.backends.quantized.engine and must be "fbgemm",
"qnnpack", "x86" (PyTorch's default on x86 CPUs) or "onednn": the engine that
was active when the model was converted (it packs the weights and fixes the
requantization rule). PyTorch's x86 engine computes every op as fbgemm does,
except that on a Linux CPU with AVX-512 VNNI it packs conv2d layers with
groups <= 100 for oneDNN, whose requantization differs near ties; "onednn"
packs every conv2d and linear for oneDNN. For these two engines the exporter
writes each conv2d/linear node's rule (`"requant": "onednn"` or `"fbgemm"`)
as PyTorch runs it on the CPU named by `x86_cpu`: "auto" (default: this
machine, i.e. the one that converted and validated the model), "vnni" (a
Linux CPU with AVX-512 VNNI) or "no-vnni" (any other CPU, or not Linux).

Weights, biases and quantization parameters are copied exactly as PyTorch
stored them (weight().int_repr(), q_per_channel_scales(), bias(), scale,
zero_point); nothing is re-quantized. A node the format cannot express raises
ExportError naming the op, the target and the node's position in the graph.

Command line (`qfuse-export` once installed, `python -m qfuse_export`, or
`tools/qfuse_export.py` in a checkout):
    qfuse-export --demo OUT.safetensors   export a small demo CNN (FX mode)
    qfuse-export --list-ops               print the PyTorch ops understood
The format is described in docs/MODEL_FORMAT.md; `qfuse-model FILE`
(qfuse_export.model, tools/qfuse_model.py in a checkout) checks a written file.
"""
import argparse
import json
import operator
import os
import sys
import warnings

try:
    import numpy as np
    import torch
except ImportError as _e:  # qfuse_export.cli() still answers --help
    raise ImportError(f"{_e}; qfuse_export needs torch, numpy, safetensors: pip install ./python "
                      f"(or pip install -r tools/requirements.txt) in a qfuse checkout") from _e
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
import torch.ao.nn.quantized as nnq
import torch.ao.nn.intrinsic.quantized as nniq

from . import model as qfuse_model  # noqa: E402

FORMAT_VERSION = 1


class ExportError(Exception):
    pass


# ---------------------------------------------------------------- recording

def _contiguous_strides(shape):
    st, acc = [], 1
    for d in reversed(shape):
        st.append(acc)
        acc *= int(d)
    return tuple(reversed(st))


class _Info:
    """What one FX node produced when the model ran on example_input."""

    __slots__ = ("is_tensor", "quantized", "shape", "dtype", "scale", "zero_point", "value", "channels_last",
                 "stride")

    def __init__(self, v):
        self.is_tensor = isinstance(v, torch.Tensor)
        self.quantized = False
        # held channels-last only (a 4-D tensor that is not also contiguous)
        self.channels_last = (self.is_tensor and v.dim() == 4 and not v.is_contiguous()
                              and v.is_contiguous(memory_format=torch.channels_last))
        self.shape = self.dtype = self.scale = self.zero_point = None
        self.value = self.stride = None
        if self.is_tensor:
            self.shape = tuple(v.shape)
            self.stride = tuple(v.stride()) if v.layout == torch.strided else None
            self.dtype = v.dtype
            self.quantized = v.is_quantized
            if v.is_quantized:
                if v.qscheme() != torch.per_tensor_affine:
                    self.scale = None
                else:
                    self.scale = float(v.q_scale())
                    self.zero_point = int(v.q_zero_point())
        else:
            self.value = v


class _Recorder(torch.fx.Interpreter):
    def __init__(self, gm):
        super().__init__(gm)
        self.info = {}

    def run_node(self, n):
        out = super().run_node(n)
        # metadata is taken at once: later in-place ops may change the tensor
        self.info[n] = _Info(out)
        return out


# ---------------------------------------------------------------- views

class _View:
    """A quantized tensor that only moves the bytes of exported ones: `idx`
    (int64, shaped as one sample of the tensor, any rank) holds, per element,
    its position in the concatenation of the per-sample elements of `bases`
    (exported quint8 names, in order; `sizes` their per-sample element
    counts). All bases share the qparams `q`. A chain of shape ops composes
    into one view, written as one `gather` node (or nothing, or a `reshape`)
    when a compute op, an output or a dequantize needs it. `natural`, if set,
    emits the op PyTorch ran instead (a channel `cat`, whose memory format
    qfuse tracks), used unless the view was folded into another one."""

    __slots__ = ("bases", "sizes", "idx", "q", "node", "natural", "name")

    def __init__(self, bases, sizes, idx, q, node, natural=None):
        self.bases, self.sizes, self.idx, self.q = list(bases), list(sizes), idx, q
        self.node, self.natural, self.name = node, natural, None

    def derive(self, idx, node):
        return _View(self.bases, self.sizes, idx, self.q, node)


class _Renamed:
    """An fx node under another name (for the nodes a moved shape op emits)."""

    def __init__(self, node, name):
        self.node, self.name = node, name

    def __getattr__(self, k):
        return getattr(self.node, k)


def _merge_views(views, node):
    """The views' bases merged (each name once) and each view's idx remapped to them."""
    bases, sizes, start = [], [], {}
    for v in views:
        for b, n in zip(v.bases, v.sizes):
            if b not in start:
                start[b] = sum(sizes)
                bases.append(b)
                sizes.append(n)
    idxs = []
    for v in views:
        offs = np.cumsum([0] + v.sizes)
        k = np.searchsorted(offs, v.idx, side="right") - 1
        new = np.array([start[b] for b in v.bases], np.int64)
        idxs.append(v.idx - offs[k] + new[k])
    return bases, sizes, idxs


# ---------------------------------------------------------------- helpers

def _cl_strides(sizes, strides):
    """c10's is_channels_last_strides_2d for a 4-D tensor: what suggest_memory_format says."""
    if strides is None or strides[1] == 0:
        return False
    m = 0
    for d in (1, 3, 2, 0):
        if strides[d] < m:
            return False
        if d == 0 and m == strides[1]:
            return False
        m = strides[d] * (sizes[d] if sizes[d] > 1 else 1)
    return True


def _cl_contiguous(sizes, strides):
    """c10's compute_channels_last_contiguous_2d: tensor.is_contiguous(channels_last)."""
    if strides is None or len(sizes) != 4:
        return False
    expected = 1
    for d in (1, 3, 2, 0):
        if sizes[d] != 1:
            if strides[d] != expected:
                return False
            expected *= sizes[d]
    return True


def _arg(node, i, name, default=None, required=False):
    """Positional-or-keyword argument of an FX node."""
    if i is not None and len(node.args) > i:
        return node.args[i]
    if name in node.kwargs:
        return node.kwargs[name]
    if required:
        raise KeyError(name)
    return default


def _pair(v):
    if isinstance(v, (list, tuple)):
        if len(v) == 1:
            return [int(v[0]), int(v[0])]
        if len(v) != 2:
            raise ValueError(f"expected 1 or 2 values, got {v!r}")
        return [int(v[0]), int(v[1])]
    return [int(v), int(v)]


def _target_str(t):
    if isinstance(t, str):
        return t
    name = getattr(t, "__name__", None)
    if name:
        for prefix, ns in (("torch", torch), ("torch.nn.functional", F), ("torch._C._nn", torch._C._nn),
                           ("operator", operator)):
            if getattr(ns, name, None) is t:
                return f"{prefix}.{name}"
    mod = getattr(t, "__module__", None) or ""
    name = getattr(t, "__qualname__", None) or getattr(t, "__name__", None) or repr(t)
    if isinstance(t, torch._ops.OpOverloadPacket) or isinstance(t, torch._ops.OpOverload):
        return f"torch.ops.{t}"
    return f"{mod}.{name}" if mod else name


def _is_fn(t, *cands):
    return any(t is c for c in cands if c is not None)


_qops = torch.ops.quantized
_AVG_POOL_FNS = (F.avg_pool2d, torch._C._nn.avg_pool2d, getattr(torch, "avg_pool2d", None))
_MAX_POOL_FNS = (F.max_pool2d, torch.max_pool2d, getattr(F, "_max_pool2d", None))
_ADAPT_FNS = (F.adaptive_avg_pool2d, torch._C._nn.adaptive_avg_pool2d)
_RELU_FNS = (F.relu, torch.relu, torch.relu_, getattr(F, "relu_", None))
_RELU6_FNS = (F.relu6, getattr(torch._C._nn, "relu6", None))
_HARDTANH_FNS = (F.hardtanh, torch._C._nn.hardtanh, getattr(F, "hardtanh_", None))
_SHAPE_METHODS = ("flatten", "reshape", "view")
_IDENTITY_METHODS = ("contiguous", "detach", "clone")
_IDENTITY_FNS = (torch.clone,)
_TRANSPOSE_FNS = (torch.transpose, getattr(torch, "swapaxes", None), getattr(torch, "swapdims", None))
_TRANSPOSE_METHODS = ("transpose", "swapaxes", "swapdims")
_IDENTITY_MODULES = (nn.Identity, nn.Dropout, nnq.Dropout)


def _qop(name):
    return getattr(_qops, name, None)


_SIGMOID_FNS = (torch.sigmoid, F.sigmoid, getattr(torch.special, "expit", None))
_HARDSIGMOID_FNS = (F.hardsigmoid, torch._C._nn.hardsigmoid)
_SILU_FNS = (F.silu, torch._C._nn.silu)
_LEAKY_FNS = (F.leaky_relu, torch._C._nn.leaky_relu)
_ELU_FNS = (F.elu, torch._C._nn.elu)
_DROPOUT_FNS = (F.dropout, torch.dropout, F.dropout2d, F.alpha_dropout, F.feature_alpha_dropout)
try:
    import torchvision.ops as _tvops
    _STOCHASTIC_DEPTH_FNS = (_tvops.stochastic_depth, getattr(_tvops.stochastic_depth, "__wrapped__", None))
    _STOCHASTIC_DEPTH_MODULES = (_tvops.StochasticDepth,)
except ImportError:  # torchvision is optional
    _STOCHASTIC_DEPTH_FNS = ()
    _STOCHASTIC_DEPTH_MODULES = ()

# Float functions PyTorch leaves between a dequantize and a quantize (SiLU under
# convert_fx) or that a model applies to a dequantized tensor: elementwise, and
# (checked against ATen's vector and scalar paths, tests/data/ops/README.md) the
# same function of the input byte at every position, so DQ -> f -> Q is a `lut`.
_FLOAT_UNARY_MODULES = {nn.SiLU: lambda m: F.silu, nn.Sigmoid: lambda m: torch.sigmoid,
                        nn.Hardsigmoid: lambda m: F.hardsigmoid,
                        nn.LeakyReLU: lambda m: (lambda x: F.leaky_relu(x, m.negative_slope)),
                        nn.ELU: lambda m: (lambda x: F.elu(x, m.alpha))}


def torch_table(fn, scale, zero_point, engine):
    """The 256-entry table of an elementwise quantized op, computed by PyTorch
    itself: `fn` applied to quint8 tensors with qparams (scale, zero_point)
    holding every byte, under quantized engine `engine`. Returns
    (table, tail_table, output scale, output zero point): `table` from one
    tensor of the 256 bytes (every element on ATen's vector path: 256 is a
    multiple of its 64-element quantized and 16/32-element float steps),
    `tail_table` from tensors of 8 elements (every element on the scalar path).
    Where they differ the op rounds by position (tests/data/ops/README.md)."""
    prev = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    mk = lambda b: torch._make_per_tensor_quantized_tensor(  # noqa: E731
        torch.tensor(b, dtype=torch.uint8).reshape(1, len(b), 1, 1), float(scale), int(zero_point))
    try:
        with torch.no_grad():
            y = fn(mk(list(range(256))))
            tails = [fn(mk(list(range(a, a + 8)))) for a in range(0, 256, 8)]
    finally:
        torch.backends.quantized.engine = prev
    for t in [y] + tails:
        if not (isinstance(t, torch.Tensor) and t.is_quantized and t.dtype == torch.quint8
                and t.qscheme() == torch.per_tensor_affine and t.shape == (1, t.numel(), 1, 1)):
            raise ExportError(f"table op did not give a per-tensor quint8 tensor of the input's shape: {t!r}")
        if (float(t.q_scale()), int(t.q_zero_point())) != (float(y.q_scale()), int(y.q_zero_point())):
            raise ExportError("table op gave qparams that depend on the input's values")
    table = [int(v) for v in y.int_repr().reshape(-1).tolist()]
    tail = [int(v) for t in tails for v in t.int_repr().reshape(-1).tolist()]
    return table, tail, float(y.q_scale()), int(y.q_zero_point())


def torch_channel_tables(fn, channels, rank, scale, zero_point, engine):
    """The per-channel 256-entry tables of a per-channel elementwise quantized op
    (quantized BatchNorm2d / BNReLU2d, PReLU), computed by PyTorch itself: `fn`
    applied under `engine` to a quint8 tensor with qparams (scale, zero_point) of
    `channels` channels (dim 1) and rank `rank`, every channel holding every byte.
    ATen's batch norm walks each pixel's channels, the first C - C mod 64 on its
    (AVX-512) vector path and the rest on its scalar path: which path a value takes
    depends on its channel alone, the same here as in the model, so the tables are
    exact for any batch and memory format (tests/data/chanlut/README.md).
    Returns (tables: C*256 bytes, channel-major; output scale; output zero point)."""
    prev = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    b = torch.arange(256, dtype=torch.uint8).repeat(channels, 1)  # [C, 256]
    if rank == 4:
        b = b.reshape(1, channels, 16, 16)
    elif rank == 3:
        b = b.reshape(1, channels, 256)
    else:
        b = b.t().contiguous()  # [256, C]
    try:
        with torch.no_grad():
            y = fn(torch._make_per_tensor_quantized_tensor(b, float(scale), int(zero_point)))
    finally:
        torch.backends.quantized.engine = prev
    if not (isinstance(y, torch.Tensor) and y.is_quantized and y.dtype == torch.quint8
            and y.qscheme() == torch.per_tensor_affine and tuple(y.shape) == tuple(b.shape)):
        raise ExportError(f"per-channel table op did not give a per-tensor quint8 tensor of the input's shape: {y!r}")
    r = y.int_repr()
    r = r.t() if rank == 2 else r.reshape(channels, 256)
    return [int(v) for v in r.reshape(-1).tolist()], float(y.q_scale()), int(y.q_zero_point())


def float_fn_table(fn, in_scale, in_zp, out_scale, out_zp, engine):
    """torch_table of quantize(fn(dequantize(x))) (a float function between a
    dequantize and a quantize)."""
    return torch_table(lambda x: torch.quantize_per_tensor(fn(x.dequantize()), out_scale, out_zp, torch.quint8),
                       in_scale, in_zp, engine)


# ---------------------------------------------------------------- exporter

# What to do instead, for ops qfuse's format cannot express (yet).
_LATER = ("export only the part of the model before it (run the rest in PyTorch on the dequantized "
          "output), or replace it with a supported op (docs/MODEL_FORMAT.md lists them)")
_HINTS = [
    (("BNReLU", "BatchNorm", "batch_norm"),
     "qfuse has no standalone quantized BatchNorm2d yet: fold it into a preceding conv (conv -> bn [-> relu], "
     "fused by prepare_fx / fuse_modules), or " + _LATER),
    (("PReLU", "prelu"), "qfuse has no PReLU yet: " + _LATER),
    (("ConvTranspose", "conv_transpose"), "qfuse has no transposed convolution yet: " + _LATER),
    (("Upsample", "upsample", "interpolate"), "qfuse has no upsampling yet: " + _LATER),
]


def _unsupported_hint(what):
    for keys, hint in _HINTS:
        if any(k in what for k in keys):
            return hint
    return "qfuse's format has no op for it: " + _LATER


class _Exporter:
    def __init__(self, gm, infos, engine):
        self.gm = gm
        self.info = infos
        self.engine = engine
        self.nodes = []  # JSON node dicts
        self.tensors = {}
        self.env = {}  # fx node -> ("q"|"f", name) for tensors, ("c", value) for constants
        self.deq_src = {}  # name of a dequantize node -> name of its quint8 input
        self.deq_view = {}  # name of a dequantize node -> the view its input materializes
        self.names = set()
        self.inputs = []
        self.observed = {}  # exported name -> (per-sample shape, qparams or None)
        self.deconv = {}  # conv2d node name of a ConvTranspose2d -> its geometry (rule fixed in build)
        self.pos = {n: i for i, n in enumerate(gm.graph.nodes)}

    # -- errors
    def fail(self, node, msg):
        node = getattr(node, "node", node)  # a _Renamed
        raise ExportError(
            f"node #{self.pos.get(node, '?')} {node.name!r} (op={node.op}, target={_target_str(node.target)}): {msg}")

    # -- names
    def fresh(self, base):
        name, k = base, 1
        while name in self.names:
            name = f"{base}_{k}"
            k += 1
        self.names.add(name)
        return name

    def emit(self, node, op, inputs, name=None, observed=True, **attrs):
        name = self.fresh(name or node.name)
        d = {"name": name, "op": op, "inputs": list(inputs)}
        d.update(attrs)
        self.nodes.append(d)
        if observed:
            inf = self.info[node]
            q = (inf.scale, inf.zero_point) if inf.quantized else None
            self.observed[name] = (inf.shape[1:], q)
        return name

    # -- operand access
    def value(self, node, a):
        if isinstance(a, torch.fx.Node):
            return self.env[a]
        return ("c", a)

    def const(self, node, a, what):
        kind, v = self.value(node, a)
        if kind != "c":
            self.fail(node, f"{what} must be a constant, got the tensor {v!r}")
        if isinstance(v, torch.Tensor):
            if v.numel() != 1:
                self.fail(node, f"{what} must be a scalar, got a tensor of shape {list(v.shape)}")
            v = v.item()
        return v

    def const_list(self, node, v):
        if isinstance(v, (list, tuple)):
            return [int(self.const(node, x, "size")) for x in v]
        return int(self.const(node, v, "split size"))

    def qin(self, node, a, what="input"):
        """Name of a quint8 tensor operand."""
        if not isinstance(a, torch.fx.Node):
            self.fail(node, f"{what} must be a tensor, got constant {a!r}")
        kind, v = self.env[a]
        if kind == "q":
            return v
        if kind == "v":
            return self.materialize(v)
        if kind == "gu":
            self.fail(node, f"{what} {a.name!r} is a float bilinear upsampling of a dequantized tensor; "
                            f"qfuse computes it only when it is quantized next")
        if kind == "g":
            self.fail(node, f"{what} {a.name!r} is a float function of a dequantized tensor "
                            f"({v[2]}); qfuse computes it only when it is quantized next (as a `lut`)")
        if kind in ("f", "fr"):
            self.fail(node, f"{what} {a.name!r} is a float32 tensor: PyTorch runs this op in float "
                            f"(between dequantize and quantize), which qfuse does not support. "
                            f"Use a form that convert_fx quantizes (e.g. nn.ReLU / F.relu instead of torch.relu).")
        self.fail(node, f"{what} {a.name!r} is not a tensor (value {v!r})")

    def check_qout(self, node):
        inf = self.info[node]
        if not inf.is_tensor or not inf.quantized:
            self.fail(node, "expected a quantized tensor output when run on example_input")
        if inf.dtype != torch.quint8:
            self.fail(node, f"output dtype is {inf.dtype}; qfuse supports quint8 activations only")
        if inf.scale is None:
            self.fail(node, "output is not per-tensor affine quantized")

    def given_qparams(self, node, scale, zp):
        scale, zp = float(scale), int(zp)
        inf = self.info[node]
        if (scale, zp) != (inf.scale, inf.zero_point):
            self.fail(node, f"declared output qparams ({scale}, {zp}) differ from the observed "
                            f"({inf.scale}, {inf.zero_point})")
        return {"scale": scale, "zero_point": zp}

    # -- weights
    def conv_transpose(self, node, mod, x):
        """nnq.ConvTranspose2d -> gather (zero-point fill) + conv2d; see conv_transpose_index."""
        if type(mod) is not nnq.ConvTranspose2d:
            self.fail(node, f"unsupported transposed conv module {type(mod).__name__}")
        if self.engine not in ("fbgemm", "qnnpack", "x86"):
            self.fail(node, f"ConvTranspose2d under engine {self.engine!r} is not supported "
                            f"(measured for fbgemm, qnnpack and x86)")
        if mod.padding_mode != "zeros":
            self.fail(node, f"padding_mode {mod.padding_mode!r} is not supported (only 'zeros')")
        src = self.qin(node, x)
        self.check_qout(node)
        shape = list(self.info[x].shape[1:])
        if len(shape) != 3:
            self.fail(node, f"ConvTranspose2d input must be [N, C, H, W], got {list(self.info[x].shape)}")
        k, s, p = _pair(mod.kernel_size), _pair(mod.stride), _pair(mod.padding)
        op, d, g = _pair(mod.output_padding), _pair(mod.dilation), int(mod.groups)
        w = mod.weight()
        if w.dtype != torch.qint8:
            self.fail(node, f"weight dtype {w.dtype}; qfuse needs qint8 weights")
        cin, og = w.shape[0], w.shape[1]
        cout = og * g
        qs = w.qscheme()
        if qs in (torch.per_channel_affine, torch.per_channel_symmetric):
            # PyTorch runs per-channel transposed convs on qnnpack only, and there with groups 1
            # (fbgemm/x86: "Per Channel Quantization is currently disabled for transposed conv";
            # qnnpack with groups > 1 fails to create the op)
            if self.engine != "qnnpack" or g != 1 or w.q_per_channel_axis() != 1:
                self.fail(node, f"per-channel ConvTranspose2d weights (axis {w.q_per_channel_axis()}, groups {g}) "
                                f"under engine {self.engine!r}: only qnnpack with groups 1 and axis 1 runs them")
            ws = w.q_per_channel_scales().numpy().astype(np.float32)
            wz = w.q_per_channel_zero_points().numpy().astype(np.int32)
        elif qs in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            ws = np.full(cout, w.q_scale(), np.float32)
            wz = np.full(cout, w.q_zero_point(), np.int32)
        else:
            self.fail(node, f"weight qscheme {qs} is not supported")
        if np.any(wz != 0):
            self.fail(node, "weight zero points are not all 0 (qfuse needs symmetric weights)")
        b = mod.bias()
        bias = np.zeros(cout, np.float32) if b is None else b.detach().numpy().astype(np.float32).copy()
        fill = int(self.info[x].zero_point)
        try:
            gshape, idx = conv_transpose_index(shape, k, s, p, op, d, fill)
        except ExportError as e:
            self.fail(node, str(e))
        gname = self.emit(node, "gather", [src], name=f"{node.name}_dilate", observed=False, shape=gshape)
        self.tensors[f"{gname}.index"] = np.ascontiguousarray(idx)
        self.observed[gname] = (gshape, (self.info[x].scale, self.info[x].zero_point))
        qp = self.given_qparams(node, mod.scale, mod.zero_point)
        name = self.emit(node, "conv2d", [gname], stride=[1, 1], padding=[0, 0], dilation=d, groups=g,
                         activation="none", **qp)
        # the rule (x86: oneDNN or fbgemm) is fixed in build(), which knows x86_cpu
        # the weight is written in build(), once the rule is known (x86/oneDNN scrambles it)
        self.deconv[name] = {"cin": cin, "cout": cout, "kernel": k, "stride": s, "padding": p,
                             "output_padding": op, "dilation": d, "groups": g, "node": node.name,
                             "weight": w.int_repr().numpy().astype(np.int8)}
        self.tensors[f"{name}.weight_scale"] = np.ascontiguousarray(ws)
        self.tensors[f"{name}.weight_zero_point"] = np.ascontiguousarray(wz)
        self.tensors[f"{name}.bias"] = np.ascontiguousarray(bias)
        self.env[node] = ("q", name)

    def add_weights(self, node, name, layer, kind):
        w = layer.weight()
        if w.dtype != torch.qint8:
            self.fail(node, f"weight dtype {w.dtype}; qfuse needs qint8 weights")
        qs = w.qscheme()
        o = w.shape[0]
        if qs in (torch.per_channel_affine, torch.per_channel_symmetric):
            if w.q_per_channel_axis() != 0:
                self.fail(node, f"per-channel weight axis is {w.q_per_channel_axis()}, must be 0")
            ws = w.q_per_channel_scales().numpy().astype(np.float32)
            wz = w.q_per_channel_zero_points().numpy().astype(np.int32)
        elif qs in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            ws = np.full(o, w.q_scale(), np.float32)
            wz = np.full(o, w.q_zero_point(), np.int32)
        else:
            self.fail(node, f"weight qscheme {qs} is not supported")
        if np.any(wz != 0):
            self.fail(node, "weight zero points are not all 0 (qfuse needs symmetric weights)")
        b = layer.bias()
        if b is None:
            bias = np.zeros(o, np.float32)
        else:
            if b.dtype != torch.float32:
                self.fail(node, f"bias dtype {b.dtype}, expected float32")
            bias = b.detach().numpy().astype(np.float32).copy()
        self.tensors[f"{name}.weight"] = np.ascontiguousarray(w.int_repr().numpy().astype(np.int8))
        self.tensors[f"{name}.weight_scale"] = np.ascontiguousarray(ws)
        self.tensors[f"{name}.weight_zero_point"] = np.ascontiguousarray(wz)
        self.tensors[f"{name}.bias"] = np.ascontiguousarray(bias)

    # -- shape ops: views of quint8 tensors (see _View), or moved in front of a dequantize
    def as_view(self, node, a):
        """The quint8 operand `a` as a view (an exported tensor is the identity view of itself)."""
        kind, v = self.env[a]
        if kind == "v":
            return v
        if kind != "q":
            self.qin(node, a)  # fails with the reason
        return self.name_view(node, v)

    def name_view(self, node, v):
        """The identity view of the exported quint8 tensor `v`."""
        shape, q = self.observed[v]
        n = int(np.prod(shape))
        return _View([v], [n], np.arange(n, dtype=np.int64).reshape(shape), q, node)

    def materialize(self, v):
        """The exported name of a view: its base, a reshape of it, the natural op, or a gather."""
        if v.name is not None:
            return v.name
        shape = tuple(int(d) for d in v.idx.shape)
        flat = v.idx.reshape(-1)
        identity = len(v.bases) == 1 and flat.size == v.sizes[0] and np.array_equal(flat, np.arange(flat.size))
        if v.natural is not None:
            v.name = v.natural()
        elif identity and tuple(self.observed[v.bases[0]][0]) == shape:
            v.name = v.bases[0]
        elif not 1 <= len(shape) <= 3:
            self.fail(v.node, f"the result has per-sample shape {list(shape)}: qfuse tensors have 1 to 3 "
                              f"dimensions besides the batch (a shape op chain is folded into one gather "
                              f"only up to the next op that is not a shape op)")
        elif identity:
            v.name = self.emit(v.node, "reshape", v.bases, observed=False, shape=list(shape))
        else:
            v.name = self.emit(v.node, "gather", v.bases, observed=False, shape=list(shape))
            fx = getattr(v.node, "node", v.node)
            if fx in self.info and self.info[fx].channels_last:
                warnings.warn(
                    f"{v.name!r}: PyTorch holds this tensor channels-last (e.g. a cat off the channels of "
                    f"conv outputs); qfuse takes a gather's output as contiguous, so a mean, avg_pool2d or "
                    f"channel cat reading it may round as PyTorch's contiguous kernels do, not its "
                    f"channels-last ones (docs/MODEL_FORMAT.md, memory format)")
            self.tensors[f"{v.name}.index"] = np.ascontiguousarray(flat.astype(np.uint32))
        self.observed[v.name] = (shape, v.q)
        return v.name

    def sample_dim(self, node, src, d, what="dim"):
        """A torch dim of `src` (batch included, may be negative) as a per-sample axis."""
        nd = len(self.info[src].shape)
        d = int(self.const(node, d, what)) if isinstance(d, torch.fx.Node) else int(d)
        d = d + nd if d < 0 else d
        if not 0 <= d < nd:
            self.fail(node, f"{what} {d} is out of range for a {nd}-D tensor")
        if d == 0:
            self.fail(node, f"{what} 0 is the batch dimension: qfuse models are batch-agnostic")
        return d - 1

    def shape_op(self, node, src, fn, tuple_out=False):
        """Applies `fn` (per-sample idx -> idx, or a list of them with tuple_out) to the quint8 tensor
        `src`, or to the quint8 source of a float tensor that comes straight from a dequantize (the op
        is moved in front of the dequantize: exact, the dequantize is elementwise), or records a
        reshape of a float model input (done after its quantize)."""
        if not isinstance(src, torch.fx.Node):
            self.fail(node, f"input must be a tensor, got constant {src!r}")
        kind, v = self.env[src]
        inf_in, inf_out = self.info[src], self.info[node]
        outs_inf = [self.info_of(node, i) for i in range(len(inf_out.value))] if tuple_out else [inf_out]
        for o in outs_inf:
            if o.shape[0] != inf_in.shape[0]:
                self.fail(node, f"changes the batch dimension ({list(inf_in.shape)} -> {list(o.shape)}); "
                                f"qfuse models are batch-agnostic")
        if kind in ("q", "v"):
            self.check_qout(node) if not tuple_out else None
            view = self.as_view(node, src)
            res = fn(view.idx)
            res = res if tuple_out else [res]
            views = []
            for r, o in zip(res, outs_inf):
                if tuple(r.shape) != tuple(o.shape[1:]):
                    self.fail(node, f"internal: view shape {list(r.shape)} != PyTorch's {list(o.shape[1:])}")
                views.append(view.derive(r, node))
            self.env[node] = ("t", [("v", w) for w in views]) if tuple_out else ("v", views[0])
        elif kind == "f" and v in self.deq_src:
            # a view of the dequantize's input folds into the gathers written here (the dequantize
            # and that input's own gather are pruned when nothing else reads them)
            view = self.deq_view.get(v) or self.name_view(node, self.deq_src[v])
            res = fn(view.idx)
            res = res if tuple_out else [res]
            outs = []
            for i, (r, o) in enumerate(zip(res, outs_inf)):
                if tuple(r.shape) != tuple(o.shape[1:]):
                    self.fail(node, f"internal: view shape {list(r.shape)} != PyTorch's {list(o.shape[1:])}")
                qname = self.materialize(_View(view.bases, view.sizes, r, view.q,
                                               _Renamed(node, f"{node.name}_{i}_q" if tuple_out else f"{node.name}_q")))
                dname = self.emit(node, "dequantize", [qname], observed=False,
                                  name=f"{node.name}_{i}" if tuple_out else None)
                self.observed[dname] = (tuple(r.shape), None)
                self.deq_src[dname] = qname
                outs.append(("f", dname))
            self.env[node] = ("t", outs) if tuple_out else outs[0]
        elif kind in ("f", "fr") and not tuple_out and self.is_input(v):
            # a reshape of a float model input: moved after its quantize (elementwise)
            base = v[0] if kind == "fr" else v
            shape = tuple(int(d) for d in inf_out.shape[1:])
            ishape = tuple(int(d) for d in inf_in.shape[1:])
            r = fn(np.arange(int(np.prod(ishape)), dtype=np.int64).reshape(ishape))
            if not np.array_equal(r.reshape(-1), np.arange(r.size)):
                self.fail(node, "only reshapes of a float model input are supported (before its quantize)")
            self.env[node] = ("fr", (base, shape))
        elif kind == "g":
            self.fail(node, f"a shape op on a float function ({v[2]}) of a dequantized tensor is not "
                            f"supported: apply it before the dequantize or after the next quantize")
        else:
            self.fail(node, "input is a float tensor that does not come straight from a dequantize")

    def is_input(self, v):
        name = v[0] if isinstance(v, tuple) else v
        return any(i["name"] == name for i in self.inputs)

    def info_of(self, node, i):
        """The recorded info of element i of a tuple-valued node."""
        return _Info(self.info[node].value[i])

    def reshape(self, node, src):
        shape = tuple(int(d) for d in self.info[node].shape[1:])
        self.shape_op(node, src, lambda idx: idx.reshape(shape))

    def flatten(self, node, src, start_dim, end_dim):
        nd = len(self.info[src].shape)
        s = start_dim + nd if start_dim < 0 else start_dim
        if s == 0:
            self.fail(node, "flatten over the batch dimension (start_dim=0) is not supported")
        self.reshape(node, src)

    def tensor_getitem(self, node, src, key):
        """x[:, ...] with slices (any step), integers and Ellipsis after a full batch slice."""
        key = key if isinstance(key, tuple) else (key,)

        def c(v):
            return None if v is None else int(self.const(node, v, "index")) if isinstance(v, torch.fx.Node) else int(v)

        parts = []
        for k in key:
            if isinstance(k, slice):
                parts.append(slice(c(k.start), c(k.stop), c(k.step)))
            elif k is Ellipsis:
                parts.append(Ellipsis)
            elif isinstance(k, (int, torch.fx.Node)) and not isinstance(k, bool):
                parts.append(c(k))
            else:
                self.fail(node, f"indexing with {k!r} is not supported (only slices, integers and ...)")
        if not parts or parts[0] is Ellipsis and len(parts) > 1 or parts[0] != slice(None, None, None) \
                and parts[0] is not Ellipsis:
            self.fail(node, "indexing must keep the whole batch dimension (x[:, ...])")
        rest = tuple(parts[1:]) if parts[0] is not Ellipsis else ()
        self.shape_op(node, src, lambda idx: idx[rest])

    def transpose(self, node, src, d0, d1):
        a, b = self.sample_dim(node, src, d0, "dim0"), self.sample_dim(node, src, d1, "dim1")
        self.shape_op(node, src, lambda idx: np.swapaxes(idx, a, b))

    def permute(self, node, src, dims):
        if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
            dims = dims[0]
        nd = len(self.info[src].shape)
        dims = [int(self.const(node, d, "dims")) if isinstance(d, torch.fx.Node) else int(d) for d in dims]
        dims = [d + nd if d < 0 else d for d in dims]
        if sorted(dims) != list(range(nd)):
            self.fail(node, f"dims {dims} are not a permutation of {nd} dimensions")
        if dims[0] != 0:
            self.fail(node, "permute moves the batch dimension: qfuse models are batch-agnostic")
        perm = [d - 1 for d in dims[1:]]
        self.shape_op(node, src, lambda idx: np.transpose(idx, perm))

    def split(self, node, src, sizes, dim, chunks=None):
        """chunk (chunks=n) or split (sizes: int or list)."""
        a = self.sample_dim(node, src, dim)
        n = self.info[src].shape[a + 1]
        if chunks is not None:
            step = -(-n // int(chunks))
            bounds = list(range(step, n, step))
        elif isinstance(sizes, int):
            bounds = list(range(int(sizes), n, int(sizes)))
        else:
            bounds = list(np.cumsum([int(x) for x in sizes])[:-1])
        self.shape_op(node, src, lambda idx: np.split(idx, bounds, axis=a), tuple_out=True)

    def cat(self, node, xs, dim, qp, explicit):
        """torch.cat / quantized::cat: a view when every input has the output's qparams (any dim);
        else the requantizing `cat` op (channels only)."""
        nd = len(self.info[node].shape)
        d = dim + nd if dim < 0 else dim
        if d == 0:
            self.fail(node, "cat along the batch dimension is not supported")
        out_q = (qp["scale"], qp["zero_point"])
        views = [self.as_view(node, x) for x in xs]
        if d != 1:
            # ATen's cat off the channels dequantizes every input, concatenates in float and
            # quantizes with the output's qparams: a dequantize -> quantize pair per input whose
            # qparams differ (exact: both elementwise, the same formulas as qfuse's ops).
            for i, w in enumerate(views):
                if w.q != out_q:
                    src = self.materialize(w)
                    dq = self.emit(node, "dequantize", [src], name=f"{node.name}_in{i}_f", observed=False)
                    self.observed[dq] = (self.observed[src][0], None)
                    rq = self.emit(node, "quantize", [dq], name=f"{node.name}_in{i}_q", observed=False, **qp)
                    self.observed[rq] = (self.observed[src][0], out_q)
                    views[i] = self.name_view(node, rq)
        if all(v.q == out_q for v in views):
            bases, sizes, idxs = _merge_views(views, node)
            idx = np.concatenate(idxs, axis=d - 1)
            v = _View(bases, sizes, idx, out_q, node)
            if d == 1 and len(xs) >= 2:
                # PyTorch's channel cat: exported as `cat` (its memory format matters downstream)
                # unless a shape op folds it into a gather.
                v.natural = lambda: self.emit(node, "cat", [self.materialize(w) for w in views], observed=False,
                                              dim=1, **qp)
            self.env[node] = ("v", v)
            return
        if d != 1:
            self.fail(node, f"cat along dim {d} of inputs with other qparams than the output's "
                            f"({[w.q for w in views]} -> {out_q}) is not supported (only along the channels)")
        if len(xs) < 2:
            self.fail(node, "cat of fewer than 2 tensors is not supported")
        names = [self.materialize(w) for w in views]
        self.env[node] = ("q", self.emit(node, "cat", names, dim=1, **qp))

    def identity(self, node, src):
        self.env[node] = self.env[src]

    # -- main dispatch
    def run(self, example_inputs):
        ph = 0
        for node in self.gm.graph.nodes:
            op = node.op
            if op == "placeholder":
                x = example_inputs[ph]
                ph += 1
                if x.dtype != torch.float32:
                    self.fail(node, f"model inputs must be float32, got {x.dtype}")
                name = self.fresh(node.name)
                self.inputs.append({"name": name, "shape": [int(s) for s in x.shape[1:]]})
                self.env[node] = ("f", name)
                self.observed[name] = (tuple(x.shape[1:]), None)
            elif op == "get_attr":
                self.env[node] = ("c", self.info[node].value if not self.info[node].is_tensor
                                  else _fetch_attr(self.gm, node.target))
            elif op == "output":
                self.outputs = self.output_names(node)
            elif op == "call_module":
                self.call_module(node)
            elif op == "call_function":
                self.call_function(node)
            elif op == "call_method":
                self.call_method(node)
            else:
                self.fail(node, "unsupported FX node kind")

    def output_names(self, node):
        a = node.args[0]
        flat = list(a) if isinstance(a, (tuple, list)) else [a]
        names = []
        for x in flat:
            if isinstance(x, torch.fx.Node) and self.env[x][0] == "g":
                self.fail(node, f"model output {x.name!r} is a float function ({self.env[x][1][2]}) of a "
                                f"dequantized tensor; qfuse computes such functions only when they are "
                                f"quantized again (as a `lut`)")
            if not isinstance(x, torch.fx.Node) or self.env[x][0] not in ("q", "v", "f"):
                self.fail(node, f"model output {x!r} is not a tensor")
            names.append(self.qin(node, x) if self.env[x][0] == "v" else self.env[x][1])
        return names

    def nontensor(self, node):
        """Shape arithmetic (x.size(0), x.shape[0], ...): keep the value, export nothing."""
        inf = self.info[node]
        if inf.is_tensor:
            return False
        self.env[node] = ("c", inf.value)
        return True

    def call_function(self, node):
        t = node.target
        a = node.args
        if t is torch.quantize_per_tensor:
            x, s, z, dt = (_arg(node, 0, "input"), _arg(node, 1, "scale"), _arg(node, 2, "zero_point"),
                           _arg(node, 3, "dtype"))
            if self.const(node, dt, "dtype") != torch.quint8:
                self.fail(node, f"quantizes to {dt}; qfuse supports quint8 activations only")
            self.quantize(node, x, self.const(node, s, "scale"), self.const(node, z, "zero_point"))
        elif t is torch.dequantize:
            self.env[node] = self.dequantize(node, a[0])
        elif _is_fn(t, _qop("add"), _qop("add_scalar"), _qop("mul"), _qop("mul_scalar")) \
                and not isinstance(_arg(node, 1, "qb", _arg(node, 1, "b")), torch.fx.Node):
            # quantized add/mul of a Python scalar (FX x + c, FloatFunctional.add_scalar /
            # mul_scalar): output qparams derived by the kernel from the input's
            c = float(self.const(node, _arg(node, 1, "qb", _arg(node, 1, "b")), "scalar"))
            fn = _qop("add") if _is_fn(t, _qop("add"), _qop("add_scalar")) else _qop("mul")
            self.table_op(node, _arg(node, 0, "qa"), lambda x: fn(x, c))
        elif _is_fn(t, _qop("add"), _qop("add_relu")):
            x = self.qin(node, _arg(node, 0, "qa"), "first input")
            y = self.qin(node, _arg(node, 1, "qb"), "second input")
            s, z = _arg(node, 2, "scale"), _arg(node, 3, "zero_point")
            self.check_qout(node)
            qp = self.given_qparams(node, self.const(node, s, "scale"), self.const(node, z, "zero_point"))
            act = "relu" if t is _qop("add_relu") else "none"
            self.env[node] = ("q", self.emit(node, "add", [x, y], activation=act, **qp))
        elif _is_fn(t, _qop("mul"), _qop("mul_relu")):
            an, bn = _arg(node, 0, "qa"), _arg(node, 1, "qb")
            x = self.qin(node, an, "first input")
            y = self.qin(node, bn, "second input")
            s, z = _arg(node, 2, "scale"), _arg(node, 3, "zero_point")
            self.check_qout(node)
            qp = self.given_qparams(node, self.const(node, s, "scale"), self.const(node, z, "zero_point"))
            out = list(self.info[node].shape)
            sa, sb = list(self.info[an].shape), list(self.info[bn].shape)
            if sa != out:
                # quantized.mul is symmetric (integer product, f32 sa*sb): qfuse's mul
                # broadcasts its second input into the first, so the full-shape one goes first
                x, y, sa, sb = y, x, sb, sa
            if sa != out:
                self.fail(node, f"mul of shapes {sa} and {sb}: neither has the output's shape {out} "
                                f"(qfuse broadcasts one input into the other)")
            if len(sb) != len(sa) or sb[0] != sa[0]:
                self.fail(node, f"mul of shapes {sa} and {sb}: the inputs must have the same rank and "
                                f"batch size (broadcasting over the batch is not supported)")
            act = "relu" if t is _qop("mul_relu") else "none"
            self.env[node] = ("q", self.emit(node, "mul", [x, y], activation=act, **qp))
        elif _is_fn(t, _qop("cat"), torch.cat, torch.concat, getattr(torch, "concatenate", None)):
            xs = _arg(node, 0, "tensors" if t is not _qop("cat") else "qx")
            if t is _qop("cat"):
                dim = self.const(node, _arg(node, 3, "dim", 0), "dim")
            else:
                dim = self.const(node, _arg(node, 1, "dim", 0), "dim")
            for i, x in enumerate(xs):
                if not isinstance(x, torch.fx.Node) or self.env[x][0] not in ("q", "v"):
                    self.qin(node, x, f"input {i}")  # fails with the reason
            self.check_qout(node)
            inf = self.info[node]
            if t is _qop("cat"):
                qp = self.given_qparams(node, self.const(node, _arg(node, 1, "scale"), "scale"),
                                        self.const(node, _arg(node, 2, "zero_point"), "zero_point"))
            else:  # torch.cat on quantized tensors: output takes the first input's qparams
                qp = {"scale": inf.scale, "zero_point": inf.zero_point}
            self.cat(node, list(xs), int(dim), qp, t is _qop("cat"))
        elif _is_fn(t, *_SIGMOID_FNS) or _is_fn(t, *_HARDSIGMOID_FNS) or _is_fn(t, *_SILU_FNS) \
                or _is_fn(t, *_LEAKY_FNS) or _is_fn(t, *_ELU_FNS):
            self.elementwise_fn(node, t)
        elif _is_fn(t, _qop("leaky_relu")):
            slope = float(self.const(node, _arg(node, 1, "negative_slope", 0.01), "negative_slope"))
            s, z = (self.const(node, _arg(node, 3, "output_scale"), "output_scale"),
                    self.const(node, _arg(node, 4, "output_zero_point"), "output_zero_point"))
            self.table_op(node, _arg(node, 0, "qx"),
                          lambda x: _qop("leaky_relu")(x, slope, False, float(s), int(z)))
        elif _is_fn(t, _qop("elu")):
            s, z = (self.const(node, _arg(node, 1, "output_scale"), "output_scale"),
                    self.const(node, _arg(node, 2, "output_zero_point"), "output_zero_point"))
            alpha = float(self.const(node, _arg(node, 3, "alpha", 1.0), "alpha"))
            scl = float(self.const(node, _arg(node, 4, "scale", 1.0), "scale"))
            iscl = float(self.const(node, _arg(node, 5, "input_scale", 1.0), "input_scale"))
            self.table_op(node, _arg(node, 0, "self"),
                          lambda x: _qop("elu")(x, float(s), int(z), alpha, scl, iscl), elu=True)
        elif _is_fn(t, _qop("dropout"), *_DROPOUT_FNS, *_STOCHASTIC_DEPTH_FNS):
            self.dropout(node)
        elif t is _qop("hardswish"):
            x = self.qin(node, _arg(node, 0, "input"))
            self.check_qout(node)
            qp = self.given_qparams(node, self.const(node, _arg(node, 1, "output_scale"), "output_scale"),
                                    self.const(node, _arg(node, 2, "output_zero_point"), "output_zero_point"))
            self.env[node] = ("q", self.emit(node, "hardswish", [x], **qp))
        elif _is_fn(t, *_RELU_FNS):
            self.unary(node, "relu")
        elif _is_fn(t, *_RELU6_FNS):
            self.unary(node, "relu6")
        elif _is_fn(t, *_HARDTANH_FNS):
            lo = float(self.const(node, _arg(node, 1, "min_val", -1.0), "min_val"))
            hi = float(self.const(node, _arg(node, 2, "max_val", 1.0), "max_val"))
            self.unary(node, "hardtanh", min_val=lo, max_val=hi)
        elif _is_fn(t, *_MAX_POOL_FNS):
            k = self.const(node, _arg(node, 1, "kernel_size"), "kernel_size")
            s = self.const(node, _arg(node, 2, "stride"), "stride")
            self.maxpool(node, a[0], k, s, self.const(node, _arg(node, 3, "padding", 0), "padding"),
                         self.const(node, _arg(node, 4, "dilation", 1), "dilation"),
                         self.const(node, _arg(node, 5, "ceil_mode", False), "ceil_mode"),
                         self.const(node, _arg(node, 6, "return_indices", False), "return_indices"))
        elif _is_fn(t, *_AVG_POOL_FNS):
            g = lambda i, n, d: self.const(node, _arg(node, i, n, d), n)  # noqa: E731
            self.avgpool(node, a[0], g(1, "kernel_size", None), g(2, "stride", None), g(3, "padding", 0),
                         g(4, "ceil_mode", False), g(5, "count_include_pad", True), g(6, "divisor_override", None))
        elif _is_fn(t, *_ADAPT_FNS):
            self.adaptive(node, a[0])
        elif t is F.interpolate:
            g = lambda i, n, d: self.const(node, _arg(node, i, n, d), n)  # noqa: E731
            self.upsample(node, a[0], g(2, "scale_factor", None), g(3, "mode", "nearest"),
                          g(5, "recompute_scale_factor", None), g(6, "antialias", False),
                          g(4, "align_corners", None))
        elif t is torch.mean:
            self.mean(node, a[0], _arg(node, 1, "dim"), _arg(node, 2, "keepdim", False))
        elif t is torch.flatten:
            self.flatten(node, a[0], self.const(node, _arg(node, 1, "start_dim", 0), "start_dim"),
                         self.const(node, _arg(node, 2, "end_dim", -1), "end_dim"))
        elif t is torch.reshape:
            self.reshape(node, a[0])
        elif _is_fn(t, *_TRANSPOSE_FNS):
            self.transpose(node, a[0], _arg(node, 1, "dim0"), _arg(node, 2, "dim1"))
        elif t is torch.permute:
            self.permute(node, a[0], [_arg(node, 1, "dims")])
        elif t is torch.chunk:
            self.split(node, a[0], None, _arg(node, 2, "dim", 0), chunks=self.const(node, _arg(node, 1, "chunks"), "chunks"))
        elif t is torch.split:
            self.split(node, a[0], self.const_list(node, _arg(node, 1, "split_size_or_sections")), _arg(node, 2, "dim", 0))
        elif _is_fn(t, *_IDENTITY_FNS):
            self.identity(node, a[0])
        elif t is operator.getitem and isinstance(a[0], torch.fx.Node) and self.env.get(a[0], ("",))[0] == "t":
            self.env[node] = self.env[a[0]][1][a[1]]
        elif t is operator.getitem and self.info[node].is_tensor and self.info[a[0]].is_tensor:
            self.tensor_getitem(node, a[0], a[1])
        elif t in (operator.getitem, getattr, operator.add, operator.mul, operator.floordiv, operator.sub) \
                and self.nontensor(node):
            pass
        else:
            self.fail(node, "unsupported function; " + _unsupported_hint(_target_str(t)))

    def call_method(self, node):
        m = node.target
        a = node.args
        if m == "dequantize":
            self.env[node] = self.dequantize(node, a[0])
        elif m in ("relu", "relu_"):
            self.unary(node, "relu")
        elif m in ("sigmoid", "sigmoid_"):
            self.elementwise_fn(node, torch.sigmoid)
        elif m == "mean":
            self.mean(node, a[0], _arg(node, 1, "dim"), _arg(node, 2, "keepdim", False))
        elif m == "flatten":
            self.flatten(node, a[0], self.const(node, _arg(node, 1, "start_dim", 0), "start_dim"),
                         self.const(node, _arg(node, 2, "end_dim", -1), "end_dim"))
        elif m in ("reshape", "view"):
            self.reshape(node, a[0])
        elif m in _TRANSPOSE_METHODS:
            self.transpose(node, a[0], _arg(node, 1, "dim0"), _arg(node, 2, "dim1"))
        elif m == "permute":
            self.permute(node, a[0], list(a[1:]) or [_arg(node, None, "dims")])
        elif m == "chunk":
            self.split(node, a[0], None, _arg(node, 2, "dim", 0), chunks=self.const(node, _arg(node, 1, "chunks"), "chunks"))
        elif m == "split":
            self.split(node, a[0], self.const_list(node, _arg(node, 1, "split_size")), _arg(node, 2, "dim", 0))
        elif m in _IDENTITY_METHODS:
            self.identity(node, a[0])
        elif m in ("size", "dim") and self.nontensor(node):
            pass
        else:
            self.fail(node, f"unsupported method {m!r}; " + _unsupported_hint(str(m)))

    def call_module(self, node):
        mod = self.gm.get_submodule(node.target)
        x = node.args[0] if node.args else None
        if isinstance(mod, nnq.ConvTranspose2d):
            self.conv_transpose(node, mod, x)
        elif isinstance(mod, (nniq.ConvReLU2d, nnq.Conv2d)):
            if type(mod) not in (nniq.ConvReLU2d, nnq.Conv2d):
                self.fail(node, f"unsupported conv module {type(mod).__name__}")
            if mod.padding_mode != "zeros":
                self.fail(node, f"padding_mode {mod.padding_mode!r} is not supported (only 'zeros')")
            if isinstance(mod.padding, str):
                self.fail(node, f"string padding {mod.padding!r} is not supported")
            src = self.qin(node, x)
            self.check_qout(node)
            qp = self.given_qparams(node, mod.scale, mod.zero_point)
            name = self.emit(node, "conv2d", [src], stride=_pair(mod.stride), padding=_pair(mod.padding),
                             dilation=_pair(mod.dilation), groups=int(mod.groups),
                             activation="relu" if isinstance(mod, nniq.ConvReLU2d) else "none", **qp)
            self.add_weights(node, name, mod, "conv2d")
            self.env[node] = ("q", name)
        elif isinstance(mod, (nniq.LinearReLU, nnq.Linear)):
            if type(mod) not in (nniq.LinearReLU, nnq.Linear):
                self.fail(node, f"unsupported linear module {type(mod).__name__}")
            src = self.qin(node, x)
            if len(self.info[x].shape) != 2:
                self.fail(node, f"linear input must be 2-D [N, K], got {list(self.info[x].shape)}")
            self.check_qout(node)
            qp = self.given_qparams(node, mod.scale, mod.zero_point)
            name = self.emit(node, "linear", [src], activation="relu" if isinstance(mod, nniq.LinearReLU) else "none",
                             **qp)
            self.add_weights(node, name, mod, "linear")
            self.env[node] = ("q", name)
        elif isinstance(mod, nnq.Quantize):
            if mod.dtype != torch.quint8:
                self.fail(node, f"quantizes to {mod.dtype}; qfuse supports quint8 activations only")
            self.quantize(node, x, mod.scale.item(), mod.zero_point.item())
        elif isinstance(mod, nnq.DeQuantize):
            self.env[node] = self.dequantize(node, x)
        elif isinstance(mod, nnq.Hardswish):
            src = self.qin(node, x)
            self.check_qout(node)
            qp = self.given_qparams(node, mod.scale, mod.zero_point)
            self.env[node] = ("q", self.emit(node, "hardswish", [src], **qp))
        elif type(mod) is nnq.LeakyReLU:
            slope = float(mod.negative_slope)
            s_, z_ = float(mod.scale), int(mod.zero_point)
            self.table_op(node, x, lambda t: _qop("leaky_relu")(t, slope, False, s_, z_))
        elif type(mod) is nnq.ELU:
            alpha, s_, z_ = float(mod.alpha), float(mod.scale), int(mod.zero_point)
            self.table_op(node, x, lambda t: _qop("elu")(t, s_, z_, alpha, 1.0, 1.0), elu=True)
        elif type(mod) in (nnq.BatchNorm2d, nniq.BNReLU2d, nnq.PReLU):
            self.channel_table_op(node, x, mod)
        elif type(mod) is nnq.Softmax:
            self.softmax(node, x, mod.dim, mod.scale, mod.zero_point)
        elif type(mod) in _FLOAT_UNARY_MODULES:
            self.elementwise_fn(node, _FLOAT_UNARY_MODULES[type(mod)](mod))
        elif type(mod) in _STOCHASTIC_DEPTH_MODULES:
            if mod.training and mod.p > 0:
                self.fail(node, "StochasticDepth in training mode (call model.eval())")
            self.identity(node, x)
        elif isinstance(mod, (nn.ReLU6, nnq.ReLU6)):
            self.unary(node, "relu6")
        elif type(mod) is nn.Hardtanh:
            self.unary(node, "hardtanh", min_val=float(mod.min_val), max_val=float(mod.max_val))
        elif type(mod) is nn.ReLU:
            self.unary(node, "relu")
        elif type(mod) is nn.MaxPool2d:
            self.maxpool(node, x, mod.kernel_size, mod.stride, mod.padding, mod.dilation, mod.ceil_mode,
                         mod.return_indices)
        elif type(mod) is nn.AvgPool2d:
            self.avgpool(node, x, mod.kernel_size, mod.stride, mod.padding, mod.ceil_mode, mod.count_include_pad,
                         mod.divisor_override)
        elif type(mod) is nn.AdaptiveAvgPool2d:
            self.adaptive(node, x)
        elif isinstance(mod, nn.Upsample):  # UpsamplingNearest2d / UpsamplingBilinear2d too
            self.upsample(node, x, mod.scale_factor, mod.mode, mod.recompute_scale_factor, False,
                          mod.align_corners)
        elif type(mod) is nn.Flatten:
            self.flatten(node, x, mod.start_dim, mod.end_dim)
        elif type(mod) in _IDENTITY_MODULES:
            self.identity(node, x)
        else:
            self.fail(node, f"unsupported module {type(mod).__module__}.{type(mod).__qualname__}; "
                            + _unsupported_hint(type(mod).__name__))

    # -- op helpers
    def quantize(self, node, x, scale, zp):
        """A quantize of a float tensor; of a reshaped float model input (the
        reshape moves after the quantize); or of a pending float function of a
        dequantized tensor (then a `lut` on the quint8 source)."""
        kind, v = self.value(node, x)
        if kind not in ("f", "fr", "g", "gu"):
            self.fail(node, "input must be a float32 tensor")
        self.check_qout(node)
        qp = self.given_qparams(node, scale, zp)
        if kind == "gu":
            src, attrs = v
            self.env[node] = ("q", self.emit(node, "resize", [src], **attrs, **qp))
            return
        if kind == "f":
            self.env[node] = ("q", self.emit(node, "quantize", [v], **qp))
            return
        if kind == "g":
            src, fn, what = v
            sq = self.observed[src][1]
            table, tail, s, z = float_fn_table(fn, sq[0], sq[1], qp["scale"], qp["zero_point"], self.engine)
            if (s, z) != (qp["scale"], qp["zero_point"]):
                self.fail(node, f"table qparams ({s}, {z}) differ from the quantize's {qp}")
            self.check_positions(node, table, tail, f"dequantize -> {what} -> quantize")
            self.env[node] = ("q", self.emit(node, "lut", [src], name=node.name, table=table, **qp))
            return
        # quantize(reshape(x)) == reshape(quantize(x)): the model input keeps its shape
        base, shape = v
        qname = self.emit(node, "quantize", [base], name=node.name + "_in", observed=False, **qp)
        self.observed[qname] = (tuple(self.observed[base][0]), (qp["scale"], qp["zero_point"]))
        self.env[node] = ("q", self.emit(node, "reshape", [qname], shape=list(shape)))

    def dequantize(self, node, x):
        src = self.qin(node, x)
        name = self.emit(node, "dequantize", [src])
        self.deq_src[name] = src
        if self.env[x][0] == "v":
            self.deq_view[name] = self.env[x][1]
        return ("f", name)

    def check_positions(self, node, table, tail, what):
        """A float function between dequantize and quantize is a `lut` when it gives
        each byte the same result on ATen's vector path and its scalar tail (the
        float kernel splits at another step than the quantized ones, so a
        `lut_split` would not match)."""
        if table == tail:
            return
        bad = [b for b in range(256) if table[b] != tail[b]]
        self.fail(node, f"{what}: with these qparams PyTorch rounds input byte(s) {bad[:8]} differently in "
                        f"ATen's vector body (-> {[table[b] for b in bad[:8]]}) and its scalar tail "
                        f"(-> {[tail[b] for b in bad[:8]]}); qfuse has no exact form for this float op here")

    def softmax(self, node, x, dim, scale, zp):
        """nnq.Softmax (quantized::softmax) -> qsoftmax. PyTorch runs QNNPACK's integer
        softargmax when the engine is qnnpack and the output qparams are exactly (1/256, 0)
        (FX's fixed qparams), any dim; else dequantize -> at::softmax -> quantize; over a
        dim other than the last ATen's result depends on its thread count, which is recorded
        (`threads`: torch.get_num_threads() of the exporting process; tests/data/ops/README.md,
        "qsoftmax")."""
        src = self.qin(node, x)
        self.check_qout(node)
        qp = self.given_qparams(node, scale, zp)
        shape = [int(d) for d in self.info[x].shape]
        if dim is None:
            self.fail(node, "Softmax with dim=None (PyTorch's legacy implicit dim): give the dim explicitly")
        nd = len(shape)
        if not 2 <= nd <= 4:
            self.fail(node, f"softmax input must have 2 to 4 dimensions ([N, ...]), got {shape}")
        d = int(dim)
        if not -nd <= d < nd:
            self.fail(node, f"softmax dim {d} is out of range for the input shape {shape}")
        d %= nd
        if d == 0:
            self.fail(node, "softmax over the batch dimension: qfuse runs each sample on its own")
        qnnpack = self.engine == "qnnpack" and qp["scale"] == 2.0 ** -8 and qp["zero_point"] == 0
        extra = {}
        if not qnnpack and d != nd - 1:
            # ATen's _vec_softmax over another dim: which positions take Sleef's expf
            # (16-wide vector steps) and which glibc's (the scalar tail) follows ATen's
            # thread split, so the file records this process's intra-op thread count
            extra["threads"] = int(torch.get_num_threads())
        inf = self.info[node]
        if qnnpack and nd >= 3 and inf.stride is not None and not (
                self.info[node].channels_last or inf.stride == _contiguous_strides(inf.shape)):
            # QNNPACK's kernel over a dim whose stride is not 1 returns a permuted view:
            # neither contiguous nor channels-last, which qfuse's layout rules do not model
            for u in node.users:
                if not (u.op == "output" or (u.op == "call_method" and u.target == "dequantize") or
                        (u.op == "call_module" and isinstance(self.gm.get_submodule(u.target),
                                                              (nnq.DeQuantize,)))):
                    self.fail(node, f"quantized softmax over dim {d} under qnnpack leaves a permuted "
                                    f"tensor (strides {inf.stride}), and {u.name!r} reads it; qfuse models "
                                    "contiguous and channels-last tensors only (dequantize it first)")
        name = self.emit(node, "qsoftmax", [src], dim=d - 1, **qp, **extra)
        self.env[node] = ("q", name)

    def channel_table_op(self, node, x, fn):
        """A quantized per-channel elementwise op (quantized BatchNorm2d / BNReLU2d,
        PReLU): a `channel_lut` whose tables PyTorch computes (torch_channel_tables)."""
        src = self.qin(node, x)
        self.check_qout(node)
        shape = [int(d) for d in self.info[x].shape]
        if not 2 <= len(shape) <= 4:
            self.fail(node, f"input must be [N, C], [N, C, L] or [N, C, H, W], got {shape}")
        if isinstance(fn, (nnq.BatchNorm2d, nniq.BNReLU2d)) and len(shape) != 4:
            self.fail(node, f"quantized batch_norm2d takes a 4-D input, got {shape}")
        sq = self.observed[src][1]
        tables, s, z = torch_channel_tables(fn, shape[1], len(shape), sq[0], sq[1], self.engine)
        inf = self.info[node]
        if (s, z) != (inf.scale, inf.zero_point):
            self.fail(node, f"table qparams ({s}, {z}) differ from the observed ({inf.scale}, {inf.zero_point})")
        name = self.emit(node, "channel_lut", [src], scale=s, zero_point=z)
        self.tensors[f"{name}.tables"] = np.ascontiguousarray(np.asarray(tables, dtype=np.uint8).reshape(shape[1], 256))
        self.env[node] = ("q", name)

    def table_op(self, node, x, fn, elu=False):
        """A quantized elementwise op on quint8 whose result depends on the byte
        alone (and its position: ATen's vector body or scalar tail): a `lut`, or a
        `lut_split` where the two differ, whose tables PyTorch computes (torch_table)."""
        src = self.qin(node, x)
        self.check_qout(node)
        sq = self.observed[src][1]
        table, tail, s, z = torch_table(fn, sq[0], sq[1], self.engine)
        inf = self.info[node]
        if (s, z) != (inf.scale, inf.zero_point):
            self.fail(node, f"table qparams ({s}, {z}) differ from the observed ({inf.scale}, {inf.zero_point})")
        if elu and self.info[x].channels_last:
            # quantized.elu allocates a contiguous output: on a channels-last input
            # (a conv output) TensorIterator cannot vectorize, every element takes
            # the scalar path, and the result is contiguous. Written as lut(tail)
            # -> flatten -> reshape, which qfuse tracks as contiguous (same bytes).
            shape = [int(d) for d in self.info[node].shape[1:]]
            name = self.emit(node, "lut", [src], name=node.name + "_lut", observed=False,
                             table=tail, scale=s, zero_point=z)
            self.observed[name] = (tuple(shape), (s, z))
            flat = self.emit(node, "flatten", [name], name=node.name + "_nchw", observed=False,
                             start_dim=1, end_dim=-1)
            self.observed[flat] = ((int(np.prod(shape)),), (s, z))
            self.env[node] = ("q", self.emit(node, "reshape", [flat], shape=shape))
        elif table == tail:
            self.env[node] = ("q", self.emit(node, "lut", [src], table=table, scale=s, zero_point=z))
        else:
            # ATen's vector body and scalar tail round some byte differently
            self.env[node] = ("q", self.emit(node, "lut_split", [src], table=table, tail_table=tail,
                                             scale=s, zero_point=z))

    def elementwise_fn(self, node, fn):
        """sigmoid / hardsigmoid / silu / leaky_relu / elu (functions or float modules):
        on quint8, PyTorch's quantized kernel (a `lut`); on a dequantized tensor, a
        float function kept pending until the next quantize."""
        x = node.args[0] if node.args else node.kwargs.get("input")
        if node.op == "call_function":
            # bind the constant arguments of F.leaky_relu / F.elu
            t = node.target
            if _is_fn(t, *_LEAKY_FNS):
                slope = float(self.const(node, _arg(node, 1, "negative_slope", 0.01), "negative_slope"))
                fn = lambda v, f_=t, a_=slope: f_(v, a_)  # noqa: E731
            elif _is_fn(t, *_ELU_FNS):
                alpha = float(self.const(node, _arg(node, 1, "alpha", 1.0), "alpha"))
                fn = lambda v, f_=t, a_=alpha: f_(v, a_)  # noqa: E731
        if not isinstance(x, torch.fx.Node):
            self.fail(node, f"input must be a tensor, got {x!r}")
        kind, v = self.env[x]
        what = _target_str(node.target) if node.op != "call_module" else type(
            self.gm.get_submodule(node.target)).__name__
        if kind in ("q", "v"):
            if (node.op == "call_function" and (_is_fn(node.target, *_LEAKY_FNS) or _is_fn(node.target, *_ELU_FNS))) \
                    or (node.op == "call_module" and type(self.gm.get_submodule(node.target)) in (nn.LeakyReLU, nn.ELU)):
                # F.leaky_relu / F.elu applied to a quint8 tensor keep its qparams and round by
                # ATen's vector/scalar split (tests/data/ops/README.md): not a single table
                self.fail(node, f"{what} on a quint8 tensor rounds differently in ATen's vector body and "
                                f"tail; convert_fx emits quantized.leaky_relu / quantized.elu instead")
            self.table_op(node, x, fn)
        elif kind == "f" and v in self.deq_src:
            self.env[node] = ("g", (self.deq_src[v], fn, what))
        elif kind == "g":
            src, f0, w0 = v
            self.env[node] = ("g", (src, lambda t, f0=f0, f1=fn: f1(f0(t)), f"{what}({w0})"))
        else:
            self.fail(node, "input is a float tensor that does not come straight from a dequantize")

    def dropout(self, node):
        """Dropout / stochastic depth in eval mode: the identity."""
        x = node.args[0] if node.args else node.kwargs.get("input")
        training = _arg(node, 2, "training", None)
        if node.target is _qop("dropout"):
            training = _arg(node, 2, "training", False)
        elif _is_fn(node.target, *_STOCHASTIC_DEPTH_FNS):
            training = _arg(node, 3, "training", True)
        elif training is None:
            training = True
        if isinstance(training, torch.fx.Node) or bool(training):
            p = _arg(node, 1, "p", 0.5)
            if not (isinstance(p, (int, float)) and p == 0):
                self.fail(node, "dropout / stochastic depth with training=True (export an eval-mode model)")
        i, o = self.info[x], self.info[node]
        if i.quantized and (i.scale, i.zero_point) != (o.scale, o.zero_point):
            self.fail(node, f"dropout changes the qparams ({i.scale}, {i.zero_point}) -> ({o.scale}, {o.zero_point})")
        self.identity(node, x)

    def unary(self, node, op, **attrs):
        src = self.qin(node, node.args[0] if node.args else node.kwargs["input"])
        self.check_qout(node)
        self.same_qparams(node, node.args[0])
        self.env[node] = ("q", self.emit(node, op, [src], **attrs))

    def same_qparams(self, node, src):
        i, o = self.info[src], self.info[node]
        if (i.scale, i.zero_point) != (o.scale, o.zero_point):
            self.fail(node, f"output qparams ({o.scale}, {o.zero_point}) differ from the input's "
                            f"({i.scale}, {i.zero_point}); the format keeps the input's for this op")

    def maxpool(self, node, x, k, s, p, d, ceil, ret_idx):
        if ret_idx:
            self.fail(node, "return_indices=True is not supported")
        src = self.qin(node, x)
        if len(self.info[x].shape) != 4:
            self.fail(node, "input must be 4-D NCHW")
        self.check_qout(node)
        self.same_qparams(node, x)
        k = _pair(k)
        s = k if s is None or (isinstance(s, (list, tuple)) and len(s) == 0) else _pair(s)
        self.env[node] = ("q", self.emit(node, "max_pool2d", [src], kernel_size=k, stride=s, padding=_pair(p),
                                         dilation=_pair(d), ceil_mode=bool(ceil)))

    def avgpool(self, node, x, k, s, p, ceil, cip, div):
        src = self.qin(node, x)
        if len(self.info[x].shape) != 4:
            self.fail(node, "input must be 4-D NCHW")
        self.check_qout(node)
        self.same_qparams(node, x)
        k = _pair(k)
        s = k if s is None or (isinstance(s, (list, tuple)) and len(s) == 0) else _pair(s)
        self.env[node] = ("q", self.emit(node, "avg_pool2d", [src], kernel_size=k, stride=s, padding=_pair(p),
                                         ceil_mode=bool(ceil), count_include_pad=bool(cip),
                                         divisor_override=None if div is None else int(div)))

    def adaptive(self, node, x):
        src = self.qin(node, x)
        if len(self.info[x].shape) != 4:
            self.fail(node, "input must be 4-D NCHW")
        self.check_qout(node)
        self.same_qparams(node, x)
        out = self.info[node].shape
        self.env[node] = ("q", self.emit(node, "adaptive_avg_pool2d", [src], output_size=[int(out[2]), int(out[3])]))

    def upsample(self, node, x, scale_factor, mode, recompute, antialias, align_corners=None):
        """F.interpolate / nn.Upsample of a quint8 tensor. Mode nearest: a gather (ATen's
        UpSampleNearest2d: per axis src = dst if out == in, dst >> 1 if out == 2 in, else
        min(floor(f32(dst) * scale), in - 1) with scale = f32(1 / scale_factor) when the op gets
        the scale factor, else f32(in) / f32(out)). A 1x1 input with C > 1 is both contiguous and
        channels-last: ATen then writes NHWC bytes into an NCHW output, reproduced here.
        Mode bilinear: `resize` mode torch_bilinear (see bilinear()); of a 1x1 input every
        output is the input byte (a constant interpolates to itself), so it is the same gather.
        (tools/torch_upsample_rules.py checks these rules.)"""
        if mode == "bilinear" and not antialias and self.env.get(x, (None,))[0] == "f" \
                and self.env[x][1] in self.deq_src:
            # FX leaves an nn.Upsample(bilinear) module in float: dequantize -> float
            # upsample_bilinear2d -> quantize (to the next quantize's qparams)
            return self.float_bilinear(node, x, scale_factor, recompute, bool(align_corners))
        if mode not in ("nearest", "bilinear"):
            self.fail(node, f"upsampling mode {mode!r} on a quantized tensor is not supported (only "
                            f"'nearest' and 'bilinear')")
        if antialias:
            self.fail(node, "antialias upsampling is not supported")
        ish, osh = list(self.info[x].shape), list(self.info[node].shape)
        if len(ish) != 4:
            self.fail(node, f"upsampling of a {len(ish)}-D tensor: only 2-D (NCHW) is supported")
        sf = None
        if scale_factor is not None and not recompute:
            sf = list(scale_factor) if isinstance(scale_factor, (tuple, list)) else [scale_factor] * 2
        f32 = np.float32

        def src(i, o, sc):
            if o == i:
                return np.arange(o)
            if o == 2 * i:
                return np.arange(o) >> 1
            s = f32(1.0 / float(sc)) if sc is not None and float(sc) > 0 else f32(i) / f32(o)
            return np.minimum(np.floor(np.arange(o).astype(f32) * s).astype(np.int64), i - 1)

        # ATen's nearest kernel takes the NHWC path when the input is_contiguous(channels_last)
        # (a 1x1 map always is) and allocates the output in input.suggest_memory_format(), which
        # for a 1x1 map depends on its strides (c10's is_channels_last_strides_2d): NCHW strides
        # give an NCHW output filled in NHWC order.
        scrambled = ish[2] == 1 and ish[3] == 1 and ish[1] > 1 and not _cl_strides(ish, self.info[x].stride)
        if mode == "bilinear" and not (ish[2] == 1 and ish[3] == 1):
            return self.bilinear(node, x, sf, bool(align_corners))
        if mode == "bilinear":
            hi = np.zeros(osh[2], np.int64)
            wi = np.zeros(osh[3], np.int64)
        else:
            hi = src(ish[2], osh[2], sf[0] if sf else None)
            wi = src(ish[3], osh[3], sf[1] if sf else None)
        c = ish[1]

        def fn(idx):
            if scrambled:
                flat = idx.reshape(-1)
                return flat[np.arange(c * osh[2] * osh[3]) % c].reshape(c, osh[2], osh[3])
            return idx[:, hi][:, :, wi]

        self.shape_op(node, x, fn)

    def float_bilinear(self, node, x, scale_factor, recompute, align_corners):
        """F.interpolate(bilinear) of a dequantized quint8 tensor, pending until the quantize
        that follows: ATen's FLOAT kernel (tools/torch_float_upsample_rules.py), exported as
        `resize` mode torch_bilinear_float with that quantize's qparams. Records the kernel
        ATen picks (upsample_bilinear2d_kernel_impl_float): the channels-last one when the
        float input is_contiguous(channels_last) with C > 3, or OH + OW <= 128, or one thread
        and C == 3 (torch.get_num_threads() now); else the generic one."""
        ish, osh = list(self.info[x].shape), list(self.info[node].shape)
        if len(ish) != 4:
            self.fail(node, f"upsampling of a {len(ish)}-D tensor: only 2-D (NCHW) is supported")
        sf = None
        if scale_factor is not None and not recompute:
            sf = list(scale_factor) if isinstance(scale_factor, (tuple, list)) else [scale_factor] * 2
        cap = torch.backends.cpu.get_cpu_capability()
        if cap not in ("AVX2", "AVX512"):
            self.fail(node, f"float bilinear upsampling: ATen's vector width on CPU capability {cap!r} is "
                            f"not measured (only AVX2/AVX512: 8 lanes)")
        f32 = np.float32

        def scale(i, o, s):
            if align_corners:
                return f32(i - 1) / f32(o - 1) if o > 1 else f32(0)
            if s is not None and float(s) > 0:
                return f32(1.0 / float(s))
            return f32(i) / f32(o)

        cl_in = _cl_contiguous(ish, self.info[x].stride)
        c = ish[1]
        use_cl = (cl_in and c > 3) or osh[2] + osh[3] <= 128 or (torch.get_num_threads() == 1 and c == 3)
        attrs = dict(size=[int(osh[2]), int(osh[3])],
                     scales=[float(scale(ish[2], osh[2], sf[0] if sf else None)),
                             float(scale(ish[3], osh[3], sf[1] if sf else None))],
                     coordinate_transformation_mode="align_corners" if align_corners else "half_pixel",
                     rule="requantize", mode="torch_bilinear_float",
                     layout="channels_last" if use_cl else "contiguous", lanes=8)
        self.env[node] = ("gu", (self.deq_src[self.env[x][1]], attrs))

    def bilinear(self, node, x, sf, align_corners):
        """Bilinear upsampling of a quint8 tensor -> resize, mode torch_bilinear (ATen's
        upsample_bilinear2d of a quantized tensor; docs/MODEL_FORMAT.md). Records ATen's f32
        scale per axis (area_pixel_compute_scale<float>), align_corners, and which kernel ATen
        ran: the NHWC one (FMA, 8-lane vector body) when the input is_contiguous(channels_last)
        (every quantized conv output), else the contiguous NCHW one (no FMA)."""
        src = self.qin(node, x)
        self.check_qout(node)
        self.same_qparams(node, x)
        ish, osh = list(self.info[x].shape), list(self.info[node].shape)
        cl = _cl_contiguous(ish, self.info[x].stride)
        lanes = 8
        if cl:
            cap = torch.backends.cpu.get_cpu_capability()
            if cap not in ("AVX2", "AVX512"):
                self.fail(node, f"bilinear upsampling of a channels-last tensor: ATen's vector width on "
                                f"CPU capability {cap!r} is not measured (only AVX2/AVX512: 8 lanes)")
        f32 = np.float32

        def scale(i, o, s):
            if align_corners:
                return f32(i - 1) / f32(o - 1) if o > 1 else f32(0)
            if s is not None and float(s) > 0:
                return f32(1.0 / float(s))
            return f32(i) / f32(o)

        scales = [scale(ish[2], osh[2], sf[0] if sf else None), scale(ish[3], osh[3], sf[1] if sf else None)]
        inf = self.info[node]
        self.env[node] = ("q", self.emit(
            node, "resize", [src], size=[int(osh[2]), int(osh[3])], scales=[float(v) for v in scales],
            coordinate_transformation_mode="align_corners" if align_corners else "half_pixel",
            rule="round", mode="torch_bilinear", layout="channels_last" if cl else "contiguous",
            lanes=lanes, scale=inf.scale, zero_point=inf.zero_point))

    def mean(self, node, x, dims, keepdim):
        src = self.qin(node, x)
        dims = self.const(node, dims, "dim") if isinstance(dims, torch.fx.Node) else dims
        keepdim = bool(self.const(node, keepdim, "keepdim"))
        nd = len(self.info[x].shape)
        if dims is None or nd != 4:
            self.fail(node, "only mean over dims (2, 3) of a 4-D tensor is supported")
        dims = sorted(int(d) + nd if int(d) < 0 else int(d) for d in (dims if isinstance(dims, (list, tuple)) else [dims]))
        if dims != [2, 3]:
            self.fail(node, f"only mean over dims (2, 3) is supported, got {dims}")
        self.check_qout(node)
        self.same_qparams(node, x)
        self.env[node] = ("q", self.emit(node, "mean", [src], dims=[2, 3], keepdim=keepdim))

    # -- finish
    def prune(self):
        by = {n["name"]: n for n in self.nodes}
        live, stack = set(), list(self.outputs)
        while stack:
            s = stack.pop()
            if s in live or s not in by:
                continue
            live.add(s)
            stack.extend(by[s]["inputs"])
        self.nodes = [n for n in self.nodes if n["name"] in live]
        used = {s for n in self.nodes for s in n["inputs"]} | set(self.outputs)
        for i in self.inputs:
            if i["name"] not in used:
                raise ExportError(f"model input {i['name']!r} is not used by any output")
        keep = {f"{n['name']}.{s}" for n in self.nodes
                for s in ("weight", "weight_scale", "weight_zero_point", "bias", "index", "tables")}
        self.tensors = {k: v for k, v in self.tensors.items() if k in keep}


def _fetch_attr(gm, target):
    obj = gm
    for p in target.split("."):
        obj = getattr(obj, p)
    return obj



# -- transposed convolution: a gather (the input dilated by the stride, zero-point fill bytes
# between and around) followed by an ordinary conv2d (weight flipped, in/out channels swapped)

GATHER_FILL = qfuse_model.GATHER_FILL


def conv_transpose_index(shape, kernel, stride, padding, output_padding, dilation, fill):
    """(out_shape, index) of the gather that turns a per-sample [C, H, W] input of ConvTranspose2d into
    the input of the equal ordinary conv2d (stride 1, padding 0, same dilation and groups): the input
    dilated by the stride, padded by dilation * (kernel - 1) - padding (+ output_padding at the end;
    a negative pad crops), the new elements the fill entry of byte `fill` (the input zero point)
    (qfuse::ops::gather::conv_transpose_index)."""
    c, h, w = shape
    axes = []
    for a, n in enumerate((h, w)):
        k, s, p, op, d = kernel[a], stride[a], padding[a], output_padding[a], dilation[a]
        begin = d * (k - 1) - p
        length = (n - 1) * s + 1 + 2 * begin + op
        if length < d * (k - 1) + 1:
            raise ExportError(f"conv_transpose2d: input {list(shape)} gives an empty output")
        v = np.arange(length, dtype=np.int64) - begin
        ok = (v >= 0) & (v % s == 0) & (v // s < n)
        axes.append(np.where(ok, v // s, -1))
    ys, xs = axes
    src = (np.arange(c, dtype=np.int64)[:, None, None] * (h * w) + ys[None, :, None] * w + xs[None, None, :])
    ok = (ys[None, :, None] >= 0) & (xs[None, None, :] >= 0)
    idx = np.where(ok, src, GATHER_FILL + int(fill)).astype(np.uint32)
    return [c, len(ys), len(xs)], idx.reshape(-1)


def conv_transpose_weight(w, groups):
    """ConvTranspose2d's int8 weight [Cin, Cout/groups, kh, kw] as the equal conv2d's
    [Cout, Cin/groups, kh, kw]: in/out channels swapped per group, the kernel flipped
    (qfuse::ops::conv::conv_transpose_weight)."""
    cin, og, kh, kw = w.shape
    w = w.reshape(groups, cin // groups, og, kh, kw).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(w.reshape(groups * og, cin // groups, kh, kw)[:, :, ::-1, ::-1])


def onednn_deconv_weight(w, groups):
    """The weight PyTorch's x86 engine actually runs a quantized ConvTranspose2d with when it hands it to
    oneDNN (torch 2.15, measured): per group, the [Cin/g, Cout/g, kh, kw] block read as
    [Cout/g, Cin/g, kh, kw] and transposed, twice (R T R T; kernel planes move whole). The identity
    when Cin/g == Cout/g or either is 1; otherwise PyTorch's result is not the float layer's, and qfuse
    reproduces PyTorch's."""
    cin, og, kh, kw = w.shape
    cg = cin // groups
    out = []
    for i in range(groups):
        a = w[i * cg:(i + 1) * cg]
        for _ in range(2):
            a = np.ascontiguousarray(a.reshape(og, cg, kh, kw).transpose(1, 0, 2, 3))
        out.append(a)
    return np.ascontiguousarray(np.concatenate(out, 0))

def fbgemm_direct_deconv(cin, cout, kernel, stride, padding, dilation, groups):
    """Whether fbgemm runs this transposed conv through its direct-convolution path
    (fbgemm's takeDirectConvPath: kernel height 2, width <= 6, groups 1, channels multiples of 8,
    stride 1 or 2, padding 0, dilation 1), whose results are not the exact integer sums (measured:
    off by up to 200 output steps in torch 2.15) and which qfuse does not reproduce."""
    return (groups == 1 and cin % 8 == 0 and cout % 8 == 0 and kernel[0] == 2 and kernel[1] <= 6
            and all(s in (1, 2) for s in stride) and tuple(padding) == (0, 0) and tuple(dilation) == (1, 1))


def onednn_deconv_holes(kernel, stride, dilation):
    """Whether some output rows/columns of a transposed conv receive no kernel tap (stride >
    dilation * (kernel - 1) + 1). PyTorch's x86 engine on oneDNN (torch 2.15, measured) leaves such rows
    uninitialized (arbitrary bytes in the output), so there is nothing to reproduce."""
    return any(s > d * (k - 1) + 1 for k, s, d in zip(kernel, stride, dilation))

def deconv_rule(engine, groups, output_padding, vnni):
    """The requantization rule PyTorch runs a quantized ConvTranspose2d with: qnnpack's or fbgemm's own;
    x86 hands it to oneDNN (onednn_utils::should_use_onednn_quant: AVX-512 VNNI, groups <= 100,
    symmetric weight, output_padding all 0), else fbgemm."""
    if engine == "x86":
        return "onednn" if vnni and groups <= 100 and all(v == 0 for v in output_padding) else "fbgemm"
    return engine


def cpu_has_avx512_vnni():
    """Whether PyTorch's x86 engine hands convs to oneDNN here
    (onednn_utils::should_use_onednn_quant: Linux and cpuinfo's AVX-512 VNNI)."""
    if not sys.platform.startswith("linux"):
        return False
    f = getattr(torch.cpu, "_is_vnni_supported", None)  # cpuinfo, as PyTorch's dispatch asks
    if f is not None:
        return bool(f())
    try:
        with open("/proc/cpuinfo") as f:
            return "avx512_vnni" in f.read()
    except OSError:
        return False


def layer_rule(engine, op, groups, x86_cpu="auto"):
    """The requantization rule PyTorch runs a conv2d / linear with
    (onednn_utils::should_use_onednn_quant for x86): "onednn" or the engine's own."""
    if x86_cpu not in ("auto", "vnni", "no-vnni"):
        raise ExportError(f"x86_cpu must be 'auto', 'vnni' or 'no-vnni', got {x86_cpu!r}")
    if engine == "onednn":
        return "onednn"
    if engine == "x86":
        vnni = cpu_has_avx512_vnni() if x86_cpu == "auto" else x86_cpu == "vnni"
        return "onednn" if op == "conv2d" and groups <= 100 and vnni else "fbgemm"
    return engine


def _build_pt2e(model, example_inputs, engine):
    """A pt2e model (convert_pt2e's GraphModule or a torch.export.ExportedProgram of it) for
    ExecuTorch's XNNPACK delegate: qfuse_export.pt2e."""
    from . import pt2e, pt2e_inductor

    if isinstance(model, torch.export.ExportedProgram):
        gm = model.module()
    else:
        gm = model
    inductor = pt2e_inductor.is_inductor_x86(gm)
    if engine is None:
        engine = "inductor_x86" if inductor else "xnnpack"
    if engine != ("inductor_x86" if inductor else "xnnpack"):
        raise ExportError(f"pt2e model: engine {engine!r} is not supported for this model; pt2e models are "
                          f"exported for ExecuTorch's XNNPACK delegate (engine 'xnnpack', XNNPACKQuantizer, "
                          f"int8 activations) or torch.compile's Inductor on x86 (engine 'inductor_x86', "
                          f"X86InductorQuantizer, uint8 activations); this one has "
                          f"{'uint8' if inductor else 'int8'} activations")

    def fail(node, msg):
        if node is None:
            raise ExportError(f"pt2e export: {msg}")
        op = f"{node.op} {node.target}" if isinstance(node, torch.fx.Node) else str(node)
        raise ExportError(f"pt2e export: node {node.name!r} ({op}): {msg}")

    def warn(msg):
        warnings.warn(f"pt2e export: {msg}")

    try:
        build = pt2e_inductor.build_inductor if inductor else pt2e.build_xnnpack
        inputs, outputs, nodes, tensors, observed = build(gm, example_inputs, fail, warn)
    except ValueError as e:
        raise ExportError(f"pt2e export: {e}") from e
    version = 2 if any("clamp" in n for n in nodes) or \
        (inductor and any(n["op"] == "host_float" for n in nodes)) else 1
    header = {
        "format": "qfuse",
        "format_version": version,
        "engine": engine,
        "inputs": inputs,
        "outputs": outputs,
        "nodes": nodes,
    }
    try:
        _, shapes, _ = qfuse_model.validate(header, tensors)
    except qfuse_model.FormatError as e:
        raise ExportError(f"exported graph is invalid: {e}") from e
    for name, shp in observed.items():
        if name in shapes and tuple(shapes[name]) != tuple(shp):
            raise ExportError(f"node {name!r}: format shape {list(shapes[name])} != PyTorch's {list(shp)}")
    return header, tensors


def build(model, example_input, engine=None, x86_cpu="auto"):
    """Return (header dict, tensors dict) without writing a file."""
    example_inputs = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    from . import pt2e

    if pt2e.is_pt2e(model):
        # pt2e: ExecuTorch's XNNPACK arithmetic; torch.backends.quantized.engine plays no part
        return _build_pt2e(model, example_inputs, engine)
    if engine is None:
        engine = torch.backends.quantized.engine
    if engine not in ("fbgemm", "qnnpack", "x86", "onednn"):
        raise ExportError(
            f"quantized engine {engine!r} is not supported: qfuse reproduces 'fbgemm', 'qnnpack', 'x86' and "
            f"'onednn'. Set torch.backends.quantized.engine BEFORE prepare/convert (the weights are packed for "
            f"the engine active at convert time), and export with that engine.")
    if torch.backends.quantized.engine != engine:
        warnings.warn(f"exporting for engine {engine!r} while torch.backends.quantized.engine is "
                      f"{torch.backends.quantized.engine!r}; the recorded run uses the latter")
    example_inputs = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    if isinstance(model, torch.fx.GraphModule):
        gm = model
    else:
        try:
            gm = torch.fx.symbolic_trace(model)
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"could not trace the eager model with torch.fx.symbolic_trace: {e}") from e
    gm.eval()
    rec = _Recorder(gm)
    with torch.no_grad():
        rec.run(*example_inputs)
    ex = _Exporter(gm, rec.info, engine)
    ex.run(example_inputs)
    ex.prune()
    if engine in ("x86", "onednn"):
        # Record each layer's rule as PyTorch runs it on the chosen CPU (qfuse's
        # default for a node without one is the AVX-512 VNNI routing).
        for n in ex.nodes:
            if n["op"] in ("conv2d", "linear") and n["name"] not in ex.deconv:
                n["requant"] = layer_rule(engine, n["op"], n.get("groups", 1), x86_cpu)
    for n in ex.nodes:
        dc = ex.deconv.get(n["name"])
        if dc is None:
            continue
        vnni = engine == "x86" and (cpu_has_avx512_vnni() if x86_cpu == "auto" else x86_cpu == "vnni")
        rule = deconv_rule(engine, dc["groups"], dc["output_padding"], vnni)
        if rule == "fbgemm" and fbgemm_direct_deconv(dc["cin"], dc["cout"], dc["kernel"], dc["stride"],
                                                     dc["padding"], dc["dilation"], dc["groups"]):
            raise ExportError(
                f"node {dc['node']!r} (ConvTranspose2d {dc['cin']}->{dc['cout']}, kernel {dc['kernel']}, stride "
                f"{dc['stride']}, padding {dc['padding']}): engine {engine!r} runs it through fbgemm's direct "
                f"transposed-conv path (kernel height 2, width <= 6, groups 1, channels multiples of 8, stride 1 "
                f"or 2, padding 0, dilation 1), whose outputs are not the exact integer result; qfuse does not "
                f"reproduce it (use qnnpack, x86 on an AVX-512 VNNI CPU without output_padding, or another shape)")
        if rule == "onednn" and onednn_deconv_holes(dc["kernel"], dc["stride"], dc["dilation"]):
            raise ExportError(
                f"node {dc['node']!r} (ConvTranspose2d, kernel {dc['kernel']}, stride {dc['stride']}, dilation "
                f"{dc['dilation']}): the stride leaves output rows that no kernel tap reaches, and PyTorch's x86 "
                f"engine (oneDNN) leaves those rows uninitialized (arbitrary bytes); qfuse cannot reproduce it "
                f"(use fbgemm or qnnpack, or a kernel covering the stride)")
        if engine != "fbgemm" or rule != "fbgemm":
            n["requant"] = rule
        w = dc["weight"]
        if rule == "onednn":
            w = onednn_deconv_weight(w, dc["groups"])
        ex.tensors[f"{n['name']}.weight"] = conv_transpose_weight(w, dc["groups"])
    header = {
        "format": "qfuse",
        "format_version": FORMAT_VERSION,
        "engine": engine,
        "inputs": ex.inputs,
        "outputs": ex.outputs,
        "nodes": ex.nodes,
    }
    # Check the result against the format, and its shapes / qparams against the recorded run.
    try:
        _, shapes, qparams = qfuse_model.validate(header, ex.tensors)
    except qfuse_model.FormatError as e:
        raise ExportError(f"exported graph is invalid: {e}") from e
    for name, (shp, q) in ex.observed.items():
        if name not in shapes:
            continue  # pruned
        if tuple(shapes[name]) != tuple(shp):
            raise ExportError(f"node {name!r}: format shape {list(shapes[name])} != PyTorch's {list(shp)}")
        if qparams[name] != q:
            raise ExportError(f"node {name!r}: format qparams {qparams[name]} != PyTorch's {q}")
    return header, ex.tensors


def export(model, example_input, path, engine=None, x86_cpu="auto"):
    """Write `model` (convert_fx GraphModule, eager quantized module, or a pt2e model: convert_pt2e's
    GraphModule or a torch.export.ExportedProgram of it, engine "xnnpack") to `path`. Returns the header.
    `x86_cpu` ("auto", "vnni", "no-vnni"): which CPU's routing x86 conv layers record (module doc)."""
    from safetensors.numpy import save_file

    header, tensors = build(model, example_input, engine, x86_cpu)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    save_file(tensors, path, metadata={"qfuse": json.dumps(header)})
    return header


def ops_used(model, example_input=None):
    """List of (op, target) strings in a GraphModule's graph (debug helper)."""
    gm = model if isinstance(model, torch.fx.GraphModule) else torch.fx.symbolic_trace(model)
    out = []
    for n in gm.graph.nodes:
        if n.op == "call_module":
            m = gm.get_submodule(n.target)
            out.append(f"call_module {type(m).__module__}.{type(m).__qualname__}")
        elif n.op in ("call_function", "call_method"):
            out.append(f"{n.op} {_target_str(n.target)}")
        else:
            out.append(n.op)
    return out


SUPPORTED = """\
call_function torch.quantize_per_tensor            -> quantize (quint8)
call_method   dequantize / torch.dequantize / nnq.DeQuantize -> dequantize
call_module   nnq.Quantize (eager QuantStub)         -> quantize
call_module   nniq.ConvReLU2d, nnq.Conv2d            -> conv2d (activation relu/none)
call_module   nniq.LinearReLU, nnq.Linear            -> linear
call_module   nnq.ConvTranspose2d                     -> gather (input dilated with zero-point fill) +
  conv2d (weight flipped, channels swapped); fbgemm, qnnpack, x86 (oneDNN or fbgemm as PyTorch routes it;
  refused: fbgemm's direct path, oneDNN with output rows no kernel tap reaches, engine onednn)
call_function torch.ops.quantized.add / add_relu     -> add (FX and eager FloatFunctional)
call_function torch.ops.quantized.mul / mul_relu     -> mul (FX x * y, torch.mul; eager QFunctional.mul;
                                                        input 1 may broadcast, e.g. [N,C,H,W] x [N,C,1,1])
call_function torch.ops.quantized.cat, torch.cat     -> cat (channels, inputs requantized), or
  gather (any dim) when every input has the output's qparams
call_function torch.ops.quantized.hardswish, call_module nnq.Hardswish -> hardswish
call_module nn.ReLU, F.relu, torch.relu(_) on quint8, x.relu() -> relu
call_module nn.ReLU6 / nnq.ReLU6, F.relu6            -> relu6
call_module nn.Hardtanh, F.hardtanh                  -> hardtanh
nn.MaxPool2d, F.max_pool2d                           -> max_pool2d
nn.Upsample, F.interpolate (mode nearest)            -> gather
nn.Upsample, F.interpolate (mode bilinear, align_corners either way)
                                                     -> resize (mode torch_bilinear; a 1x1 input: gather)
dequantize -> nn.Upsample / F.interpolate (bilinear, float: FX's module) -> quantize
                                                     -> resize (mode torch_bilinear_float, the quantize's qparams)
nn.AvgPool2d, F.avg_pool2d (torch._C._nn.avg_pool2d) -> avg_pool2d
nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d          -> adaptive_avg_pool2d
x.mean((2,3)), torch.mean(x, [2,3], keepdim)         -> mean
torch.flatten, x.flatten, nn.Flatten                 -> flatten (start_dim 1) or reshape
x.reshape, x.view, torch.reshape                     -> reshape (shape from the recorded run)
x[:, a:b:s, i, ...] (slices, integers, Ellipsis; batch kept),
torch.transpose, x.transpose, torch.permute, x.permute,
  torch.chunk, x.chunk, torch.split, x.split         -> gather (one per chunk)
  (a chain of these shape ops, torch.cat of equal qparams included, is folded into one
  gather from its sources to the shape the next op needs: e.g. ShuffleNet's channel shuffle
  x.view(b, g, c/g, h, w).transpose(1, 2).contiguous().view(b, c, h, w); intermediate
  shapes may have any rank)
  (shape ops on a dequantize output are moved before the dequantize; a reshape/flatten of a
  float model input is moved after its quantize)
call_function torch.ops.quantized.add / mul (x, scalar), add_scalar / mul_scalar -> lut
call_function torch.ops.quantized.leaky_relu / elu, nnq.LeakyReLU / nnq.ELU -> lut
nn.Sigmoid / torch.sigmoid / x.sigmoid(), nn.Hardsigmoid / F.hardsigmoid on quint8 -> lut
dequantize -> SiLU / Sigmoid / Hardsigmoid / LeakyReLU / ELU (float) -> quantize -> lut
  (every lut table is computed by PyTorch itself, on each of the 256 bytes; lut_split
  where ATen's vector body and scalar tail round a byte differently)
nnq.BatchNorm2d, nniq.BNReLU2d (quantized::batch_norm2d / batch_norm2d_relu), nnq.PReLU
  (quantized::prelu, per-channel or single weight) -> channel_lut (tables computed by PyTorch)
nnq.Softmax (quantized::softmax; FX: nn.Softmax)    -> qsoftmax (engine qnnpack with output (1/256, 0):
  QNNPACK's integer kernel, any dim; otherwise ATen's float path, any dim: over a dim other
  than the last the file records torch.get_num_threads(), which ATen's result depends on)
nn.Identity, nn.Dropout, nnq.Dropout, .contiguous(), .clone() -> removed
F.dropout / quantized.dropout (training=False), torchvision stochastic_depth (eval) -> removed
x.size(), x.shape[i], int arithmetic                 -> evaluated, not exported
pt2e (convert_pt2e GraphModule / ExportedProgram, XNNPACKQuantizer): engine "xnnpack",
  the patterns listed in qfuse_export.pt2e (conv2d, linear, add, mul, clamps, max_pool2d,
  mean / adaptive_avg_pool2d, cat, flatten / view / reshape, dropout)
"""


def _demo_model():
    class Demo(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(8)
            self.relu1 = nn.ReLU()
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
            self.bn2 = nn.BatchNorm2d(8)
            self.relu2 = nn.ReLU()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            x = self.relu1(self.bn1(self.conv1(x)))
            x = self.relu2(self.bn2(self.conv2(x)) + x)
            return self.fc(torch.flatten(self.pool(x), 1))

    return Demo()


def demo(path, engine="fbgemm", seed=0):
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.manual_seed(seed)
    torch.backends.quantized.engine = engine
    m = _demo_model().eval()
    x = torch.rand(4, 1, 8, 8)
    p = prepare_fx(m, get_default_qconfig_mapping(engine), (x,))
    for _ in range(4):
        p(torch.rand(8, 1, 8, 8))
    q = convert_fx(p)
    return export(q, x, path, engine=engine)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Export PyTorch-quantized int8 models to the qfuse format (docs/MODEL_FORMAT.md).",
        epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", metavar="OUT", help="export a small demo CNN (FX graph mode, random weights) to OUT")
    ap.add_argument("--engine", default="fbgemm", choices=["fbgemm", "qnnpack", "x86", "onednn"],
                    help="engine for --demo")
    ap.add_argument("--list-ops", action="store_true", help="print the PyTorch ops the exporter understands")
    a = ap.parse_args(argv)
    if a.list_ops:
        print(SUPPORTED, end="")
        return 0
    if a.demo:
        warnings.filterwarnings("ignore")
        h = demo(a.demo, a.engine)
        print(f"wrote {a.demo}: {len(h['nodes'])} nodes, engine {h['engine']}")
        return 0
    ap.print_help()
    return 0

