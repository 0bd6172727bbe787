#!/usr/bin/env python3
"""Export a PyTorch-quantized int8 network to a qfuse model file.

Python API (the main way to use this tool):

    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx, convert_fx
    import qfuse_export                      # tools/ on sys.path

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

Command line:
    qfuse_export.py --demo OUT.safetensors   export a small demo CNN (FX mode)
    qfuse_export.py --list-ops               print the PyTorch ops understood
The format is described in docs/MODEL_FORMAT.md; tools/qfuse_model.py checks
a written file.
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
except ImportError as _e:  # let --help work without the Python deps
    if __name__ == "__main__" and any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    raise ImportError(f"{_e}; qfuse_export needs torch, numpy, safetensors: "
                      f"pip install -r tools/requirements.txt") from _e
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
import torch.ao.nn.quantized as nnq
import torch.ao.nn.intrinsic.quantized as nniq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qfuse_model  # noqa: E402

FORMAT_VERSION = 1


class ExportError(Exception):
    pass


# ---------------------------------------------------------------- recording

class _Info:
    """What one FX node produced when the model ran on example_input."""

    __slots__ = ("is_tensor", "quantized", "shape", "dtype", "scale", "zero_point", "value", "channels_last")

    def __init__(self, v):
        self.is_tensor = isinstance(v, torch.Tensor)
        self.quantized = False
        # held channels-last only (a 4-D tensor that is not also contiguous)
        self.channels_last = (self.is_tensor and v.dim() == 4 and not v.is_contiguous()
                              and v.is_contiguous(memory_format=torch.channels_last))
        self.shape = self.dtype = self.scale = self.zero_point = None
        self.value = None
        if self.is_tensor:
            self.shape = tuple(v.shape)
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


# ---------------------------------------------------------------- helpers

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
_IDENTITY_METHODS = ("contiguous", "detach")
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


def float_fn_table(fn, in_scale, in_zp, out_scale, out_zp, engine):
    """torch_table of quantize(fn(dequantize(x))) (a float function between a
    dequantize and a quantize)."""
    return torch_table(lambda x: torch.quantize_per_tensor(fn(x.dequantize()), out_scale, out_zp, torch.quint8),
                       in_scale, in_zp, engine)


# ---------------------------------------------------------------- exporter

class _Exporter:
    def __init__(self, gm, infos, engine):
        self.gm = gm
        self.info = infos
        self.engine = engine
        self.nodes = []  # JSON node dicts
        self.tensors = {}
        self.env = {}  # fx node -> ("q"|"f", name) for tensors, ("c", value) for constants
        self.deq_src = {}  # name of a dequantize node -> name of its quint8 input
        self.names = set()
        self.inputs = []
        self.observed = {}  # exported name -> (per-sample shape, qparams or None)
        self.pos = {n: i for i, n in enumerate(gm.graph.nodes)}

    # -- errors
    def fail(self, node, msg):
        raise ExportError(
            f"node #{self.pos[node]} {node.name!r} (op={node.op}, target={_target_str(node.target)}): {msg}")

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

    def qin(self, node, a, what="input"):
        """Name of a quint8 tensor operand."""
        if not isinstance(a, torch.fx.Node):
            self.fail(node, f"{what} must be a tensor, got constant {a!r}")
        kind, v = self.env[a]
        if kind == "q":
            return v
        if kind == "g":
            self.fail(node, f"{what} {a.name!r} is a float function of a dequantized tensor "
                            f"({v[2]}); qfuse computes it only when it is quantized next (as a `lut`)")
        if kind == "f":
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

    # -- shape ops (work on quint8 directly, or are moved in front of a dequantize)
    def shape_op(self, node, src, op, **attrs):
        kind, v = self.env[src] if isinstance(src, torch.fx.Node) else ("c", src)
        inf_in, inf_out = self.info[src], self.info[node]
        if inf_out.shape[0] != inf_in.shape[0]:
            self.fail(node, f"changes the batch dimension ({list(inf_in.shape)} -> {list(inf_out.shape)}); "
                            f"qfuse models are batch-agnostic")
        if op == "reshape":
            attrs = {"shape": [int(s) for s in inf_out.shape[1:]]}
        if kind == "q":
            self.check_qout(node)
            self.env[node] = ("q", self.emit(node, op, [v], **attrs))
        elif kind == "f" and v in self.deq_src:
            # reshape(dequantize(q)) == dequantize(reshape(q)) exactly
            qname = self.emit(node, op, [self.deq_src[v]], name=node.name + "_q", observed=False, **attrs)
            self.observed[qname] = (inf_out.shape[1:], self.observed[self.deq_src[v]][1])
            dname = self.emit(node, "dequantize", [qname])
            self.deq_src[dname] = qname
            self.env[node] = ("f", dname)
        else:
            self.fail(node, "input is a float tensor that does not come straight from a dequantize")

    def flatten(self, node, src, start_dim, end_dim):
        nd = len(self.info[src].shape)
        s = start_dim + nd if start_dim < 0 else start_dim
        e = end_dim + nd if end_dim < 0 else end_dim
        if s == 0:
            self.fail(node, "flatten over the batch dimension (start_dim=0) is not supported")
        if s == 1 and e == nd - 1:
            self.shape_op(node, src, "flatten", start_dim=1, end_dim=-1)
        else:
            self.shape_op(node, src, "reshape")

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
            if not isinstance(x, torch.fx.Node) or self.env[x][0] == "c":
                self.fail(node, f"model output {x!r} is not a tensor")
            if self.env[x][0] == "g":
                self.fail(node, f"model output {x.name!r} is a float function ({self.env[x][1][2]}) of a "
                                f"dequantized tensor; qfuse computes such functions only when they are "
                                f"quantized again (as a `lut`)")
            names.append(self.env[x][1])
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
            kind, v = self.value(node, x)
            if kind not in ("f", "g"):
                self.fail(node, "input must be a float32 tensor")
            if self.const(node, dt, "dtype") != torch.quint8:
                self.fail(node, f"quantizes to {dt}; qfuse supports quint8 activations only")
            self.check_qout(node)
            qp = self.given_qparams(node, self.const(node, s, "scale"), self.const(node, z, "zero_point"))
            self.quantize_to(node, kind, v, qp)
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
            names = [self.qin(node, x, f"input {i}") for i, x in enumerate(xs)]
            self.check_qout(node)
            inf = self.info[node]
            if t is _qop("cat"):
                qp = self.given_qparams(node, self.const(node, _arg(node, 1, "scale"), "scale"),
                                        self.const(node, _arg(node, 2, "zero_point"), "zero_point"))
            else:  # torch.cat on quantized tensors: output takes the first input's qparams
                qp = {"scale": inf.scale, "zero_point": inf.zero_point}
            nd = len(inf.shape)
            dim = dim + nd if dim < 0 else dim
            if dim == 0:
                self.fail(node, "cat along the batch dimension is not supported")
            if len(names) < 2:
                self.fail(node, "cat of fewer than 2 tensors is not supported")
            self.env[node] = ("q", self.emit(node, "cat", names, dim=int(dim), **qp))
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
        elif t is torch.mean:
            self.mean(node, a[0], _arg(node, 1, "dim"), _arg(node, 2, "keepdim", False))
        elif t is torch.flatten:
            self.flatten(node, a[0], self.const(node, _arg(node, 1, "start_dim", 0), "start_dim"),
                         self.const(node, _arg(node, 2, "end_dim", -1), "end_dim"))
        elif t is torch.reshape:
            self.shape_op(node, a[0], "reshape")
        elif t in (operator.getitem, getattr, operator.add, operator.mul, operator.floordiv, operator.sub) \
                and self.nontensor(node):
            pass
        else:
            self.fail(node, "unsupported function")

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
            self.shape_op(node, a[0], "reshape")
        elif m in _IDENTITY_METHODS:
            self.identity(node, a[0])
        elif m in ("size", "dim") and self.nontensor(node):
            pass
        else:
            self.fail(node, "unsupported method")

    def call_module(self, node):
        mod = self.gm.get_submodule(node.target)
        x = node.args[0] if node.args else None
        if isinstance(mod, (nniq.ConvReLU2d, nnq.Conv2d)):
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
            kind, v = self.value(node, x)
            if kind not in ("f", "g"):
                self.fail(node, "input must be a float32 tensor")
            if mod.dtype != torch.quint8:
                self.fail(node, f"quantizes to {mod.dtype}; qfuse supports quint8 activations only")
            self.check_qout(node)
            qp = self.given_qparams(node, mod.scale.item(), mod.zero_point.item())
            self.quantize_to(node, kind, v, qp)
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
        elif type(mod) is nn.Flatten:
            self.flatten(node, x, mod.start_dim, mod.end_dim)
        elif type(mod) in _IDENTITY_MODULES:
            self.identity(node, x)
        else:
            self.fail(node, f"unsupported module {type(mod).__module__}.{type(mod).__qualname__}")

    # -- op helpers
    def dequantize(self, node, x):
        src = self.qin(node, x)
        name = self.emit(node, "dequantize", [src])
        self.deq_src[name] = src
        return ("f", name)

    def quantize_to(self, node, kind, v, qp):
        """A quantize of a float tensor, or of a pending float function of a
        dequantized tensor (then a `lut` on the quint8 source)."""
        if kind == "f":
            self.env[node] = ("q", self.emit(node, "quantize", [v], **qp))
            return
        src, fn, what = v
        sq = self.observed[src][1]
        table, tail, s, z = float_fn_table(fn, sq[0], sq[1], qp["scale"], qp["zero_point"], self.engine)
        if (s, z) != (qp["scale"], qp["zero_point"]):
            self.fail(node, f"table qparams ({s}, {z}) differ from the quantize's {qp}")
        self.check_positions(node, table, tail, f"dequantize -> {what} -> quantize")
        self.env[node] = ("q", self.emit(node, "lut", [src], name=node.name, table=table, **qp))

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
        if kind == "q":
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
        keep = {f"{n['name']}.{s}" for n in self.nodes for s in ("weight", "weight_scale", "weight_zero_point", "bias")}
        self.tensors = {k: v for k, v in self.tensors.items() if k in keep}


def _fetch_attr(gm, target):
    obj = gm
    for p in target.split("."):
        obj = getattr(obj, p)
    return obj


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


def build(model, example_input, engine=None, x86_cpu="auto"):
    """Return (header dict, tensors dict) without writing a file."""
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
            if n["op"] in ("conv2d", "linear"):
                n["requant"] = layer_rule(engine, n["op"], n.get("groups", 1), x86_cpu)
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
    """Write `model` (convert_fx GraphModule or eager quantized module) to `path`. Returns the header.
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
call_function torch.ops.quantized.add / add_relu     -> add (FX and eager FloatFunctional)
call_function torch.ops.quantized.mul / mul_relu     -> mul (FX x * y, torch.mul; eager QFunctional.mul;
                                                        input 1 may broadcast, e.g. [N,C,H,W] x [N,C,1,1])
call_function torch.ops.quantized.cat, torch.cat     -> cat
call_function torch.ops.quantized.hardswish, call_module nnq.Hardswish -> hardswish
call_module nn.ReLU, F.relu, torch.relu(_) on quint8, x.relu() -> relu
call_module nn.ReLU6 / nnq.ReLU6, F.relu6            -> relu6
call_module nn.Hardtanh, F.hardtanh                  -> hardtanh
nn.MaxPool2d, F.max_pool2d                           -> max_pool2d
nn.AvgPool2d, F.avg_pool2d (torch._C._nn.avg_pool2d) -> avg_pool2d
nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d          -> adaptive_avg_pool2d
x.mean((2,3)), torch.mean(x, [2,3], keepdim)         -> mean
torch.flatten, x.flatten, nn.Flatten                 -> flatten (start_dim 1) or reshape
x.reshape, x.view, torch.reshape                     -> reshape (shape from the recorded run)
  (flatten/reshape/view of a dequantize output is moved before the dequantize)
call_function torch.ops.quantized.add / mul (x, scalar), add_scalar / mul_scalar -> lut
call_function torch.ops.quantized.leaky_relu / elu, nnq.LeakyReLU / nnq.ELU -> lut
nn.Sigmoid / torch.sigmoid / x.sigmoid(), nn.Hardsigmoid / F.hardsigmoid on quint8 -> lut
dequantize -> SiLU / Sigmoid / Hardsigmoid / LeakyReLU / ELU (float) -> quantize -> lut
  (every lut table is computed by PyTorch itself, on each of the 256 bytes; lut_split
  where ATen's vector body and scalar tail round a byte differently)
nn.Identity, nn.Dropout, nnq.Dropout, .contiguous()  -> removed
F.dropout / quantized.dropout (training=False), torchvision stochastic_depth (eval) -> removed
x.size(), x.shape[i], int arithmetic                 -> evaluated, not exported
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


if __name__ == "__main__":
    sys.exit(main())
