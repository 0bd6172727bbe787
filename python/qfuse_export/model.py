"""Reference reader and validator for qfuse model files (docs/MODEL_FORMAT.md).

Usage (`qfuse-model` once `pip install ./python` installed the package;
`python3 tools/qfuse_model.py` in a checkout; `python -m qfuse_export.model`):
    qfuse-model MODEL.safetensors [MODEL2 ...] [--quiet]

Loads each file, checks the `qfuse` JSON header and the tensors against
docs/MODEL_FORMAT.md (format versions 1 and 2), sorts the graph topologically, infers
every node's shape for one sample, and prints a summary table. Exits 1 with
a message naming the file and node on the first problem.

Python API:
    m = load(path)          # -> Model(header, tensors, order, shapes, qparams)
    validate(header, tensors) -> (order, shapes, qparams)   # raises FormatError

Needs numpy and safetensors only (no torch).
"""
import argparse
import json
import math
import sys

import numpy as np

# The first fill entry of a gather index: entry GATHER_FILL + b (b in 0..=255) writes the stored
# byte b instead of reading an input (qfuse::ops::gather::FILL).
GATHER_FILL = 0xFFFF_FE00

FORMAT_VERSION = 2
# Versions this reader accepts (2 adds the optional conv2d/linear `clamp`).
FORMAT_VERSIONS = (1, 2)
# the header's engine; x86 and onednn compute the non-conv ops with fbgemm's rules
ENGINES = ("fbgemm", "qnnpack", "x86", "onednn", "xnnpack", "inductor_x86")
RULES = ("fbgemm", "qnnpack", "onednn", "xnnpack", "inductor_x86")  # a conv/linear node's requant
# rules whose conv/linear hold an int32 bias `NAME.bias_i32` instead of `NAME.bias`
INT_BIAS_RULES = ("onnxruntime", "xnnpack")

# op -> (min inputs, max inputs (None = unbounded), required attrs, optional attrs, qparams: "given"|"input"|"float"|"none")
OPS = {
    "quantize": (1, 1, ["scale", "zero_point"], ["dtype"], "given"),
    "dequantize": (1, 1, [], [], "float"),
    # conv2d/linear with "output": "float32" (oneDNN's f32 output, requant "onednn") have no scale/zero_point
    "conv2d": (1, 2, ["stride", "padding", "dilation", "groups", "activation", "scale", "zero_point"], ["requant", "clamp", "dtype", "global_avg_pool", "eltwise", "output"], "given"),
    "linear": (1, 1, ["activation", "scale", "zero_point"], ["requant", "clamp", "dtype", "eltwise", "output"], "given"),
    "add": (2, 2, ["activation", "scale", "zero_point"], [], "given"),
    "max_pool2d": (1, 1, ["kernel_size", "stride", "padding", "dilation", "ceil_mode"], [], "input"),
    "avg_pool2d": (1, 1, ["kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"], [], "input"),
    "adaptive_avg_pool2d": (1, 1, ["output_size"], [], "input"),
    "mean": (1, 1, ["dims", "keepdim"], [], "input"),
    "relu": (1, 1, [], [], "input"),
    "relu6": (1, 1, [], [], "input"),
    "hardtanh": (1, 1, ["min_val", "max_val"], [], "input"),
    "hardswish": (1, 1, ["scale", "zero_point"], [], "given"),
    "flatten": (1, 1, ["start_dim", "end_dim"], [], "input"),
    "reshape": (1, 1, ["shape"], [], "input"),
    "cat": (2, None, ["dim", "scale", "zero_point"], ["dtype"], "given"),
    "mul": (2, 2, ["activation", "scale", "zero_point"], [], "given"),
    "binary": (2, 2, ["scale", "zero_point"], ["dtype"], "given"),
    "lut": (1, 1, ["table", "scale", "zero_point"], ["signed"], "given"),
    "lut_split": (1, 1, ["table", "tail_table", "scale", "zero_point"], ["signed"], "given"),
    "gather": (1, None, ["shape"], [], "input"),
    "channel_lut": (1, 1, ["scale", "zero_point"], ["signed"], "given"),
    # this reader checks modes torch_bilinear (PyTorch's quantized bilinear upsampling) and
    # torch_bilinear_float (FX's dequantize -> float bilinear -> quantize); the ONNX modes
    # linear/cubic come from ONNX files
    "resize": (1, 1, ["size", "scales", "coordinate_transformation_mode", "rule", "mode", "scale", "zero_point"],
               ["layout", "lanes", "cubic_coeff_a"], "given"),
    "qsoftmax": (1, 1, ["dim", "scale", "zero_point"], ["dtype", "threads"], "given"),
    # engine xnnpack: ExecuTorch's portable avg_pool2d, quantized to the given qparams
    "portable_avg_pool2d": (1, 1, ["kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                                   "divisor_override", "scale", "zero_point"], ["signed"], "given"),
    # engine xnnpack: XNNPACK's f32 global average of per-channel f32 values of the bytes
    "xnnpack_channel_mean": (1, 1, ["scale", "zero_point"], ["signed"], "given"),
    # engine xnnpack: XNNPACK's f32 average pooling of the dequantized input (no ceil_mode)
    "xnnpack_avg_pool2d": (1, 1, ["kernel_size", "stride", "padding", "scale", "zero_point"], ["signed"], "given"),
    # engine inductor_x86: Inductor's C++ on two f32 tensors [C, H, W] and [C, 1, 1] / [C]:
    # quantize(gate(input 1) * input 0), gate "hardsigmoid" or "sigmoid"
    "inductor_gate_mul": (2, 2, ["gate", "scale", "zero_point"], [], "given"),
    # engine inductor_x86: Inductor's C++ hardswish of an f32 tensor, quantized
    "inductor_hardswish": (1, 1, ["scale", "zero_point"], [], "given"),
    # engine inductor_x86: Inductor's C++ sum of two f32 tensors of one shape, quantized
    "inductor_add": (2, 2, ["scale", "zero_point"], [], "given"),
    # engine inductor_x86: Inductor's average pool of an f32 tensor (a conv's f32 output, an f32
    # max_pool2d of one), quantized to the given qparams; max_pool2d of an f32 tensor is f32
    "inductor_avg_pool2d": (1, 1, ["kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                                   "divisor_override", "scale", "zero_point"], [], "given"),
    # float ops after the last dequantize (engine xnnpack writes fn "clip")
    "host_float": (1, 1, ["fn"], ["min", "max", "input_scale", "input_zero_point", "activation", "scale",
                                  "zero_point", "shape"], "float"),
}
# "input's" ops may carry explicit qparams equal to their input's (MODEL_FORMAT.md).
COMMON_KEYS = {"name", "op", "inputs"}


class FormatError(Exception):
    pass


class Model:
    def __init__(self, header, tensors, order, shapes, qparams):
        self.header = header
        self.tensors = tensors
        self.order = order  # node dicts, topologically sorted
        self.shapes = shapes  # name -> per-sample shape (tuple), inputs included
        self.qparams = qparams  # name -> (scale, zero_point) or None for float32

    @property
    def engine(self):
        return self.header["engine"]

    def summary(self):
        lines = []
        for i in self.header["inputs"]:
            lines.append(f"  input  {i['name']:<28} {'':<20} {str(list(self.shapes[i['name']])):<18} float32")
        for n in self.order:
            qp = self.qparams[n["name"]]
            q = "float32" if qp is None else f"s={qp[0]:.6g} zp={qp[1]}"
            extra = ""
            if n["op"] == "conv2d":
                w = self.tensors[n["name"] + ".weight"]
                extra = f" w{list(w.shape)} s{n['stride']} p{n['padding']} g{n['groups']} {n['activation']}"
            elif n["op"] in ("linear", "add", "mul"):
                extra = f" {n['activation']}"
            lines.append(f"  {n['op']:<20} {n['name']:<28} {str(list(self.shapes[n['name']])):<18} {q}{extra}")
        return "\n".join(lines)


def _err(ctx, msg):
    raise FormatError(f"{ctx}: {msg}")


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _pair(ctx, node, key, minimum=None):
    v = node[key]
    if not (isinstance(v, list) and len(v) == 2 and all(_is_int(x) for x in v)):
        _err(ctx, f"`{key}` must be [h, w] (two integers), got {v!r}")
    if minimum is not None and any(x < minimum for x in v):
        _err(ctx, f"`{key}` entries must be >= {minimum}, got {v!r}")
    return v


def _check_qparams(ctx, node):
    s, z = node["scale"], node["zero_point"]
    if not (_is_num(s) and s > 0):
        _err(ctx, f"`scale` must be a positive finite number, got {s!r}")
    if "dtype" in node:
        if node["dtype"] not in ("quint8", "qint8"):
            _err(ctx, f"`dtype` must be \"quint8\" or \"qint8\", got {node['dtype']!r}")
        if node["dtype"] == "qint8":
            if not (_is_int(z) and -128 <= z <= 127):
                _err(ctx, f"`zero_point` must be an integer in [-128, 127] (qint8), got {z!r}")
            return (float(s), int(z))
    if node.get("signed", False) is not False:
        # lut only: a qint8 output, with its int8 zero point
        if node["signed"] is not True:
            _err(ctx, f"`signed` must be true or false, got {node['signed']!r}")
        if not (_is_int(z) and -128 <= z <= 127):
            _err(ctx, f"`zero_point` must be an integer in [-128, 127] (qint8), got {z!r}")
        return (float(s), int(z))
    if not (_is_int(z) and 0 <= z <= 255):
        _err(ctx, f"`zero_point` must be an integer in [0, 255] (quint8), got {z!r}")
    return (float(s), int(z))


def _pool_out(size, k, s, p, d, ceil_mode):
    # PyTorch's pooling_output_shape
    num = size + 2 * p - d * (k - 1) - 1
    if ceil_mode:
        o = -(-num // s) + 1
        if (o - 1) * s >= size + p:
            o -= 1
    else:
        o = num // s + 1
    return o


def _infer(ctx, node, in_shapes, tensors):
    op = node["op"]
    x = in_shapes[0]
    if op == "host_float" and node.get("fn") == "onednn_linear":
        w = tensors[node["name"] + ".weight"]
        if int(np.prod(x)) != w.shape[1]:
            _err(ctx, f"onednn_linear input must have {w.shape[1]} values per sample, got {list(x)}")
        return (w.shape[0],)
    if op == "host_float" and node.get("fn") == "table_mean":
        t = tensors[node["name"] + ".table"]
        if len(x) != 3 or x[0] != t.shape[0]:
            _err(ctx, f"table_mean input must be [C, H, W] per sample with C = {t.shape[0]}, got {list(x)}")
        return (t.shape[0], 1, 1)
    if op == "host_float" and node.get("fn") == "reshape":
        shp = tuple(int(v) for v in node["shape"])
        if int(np.prod(shp)) != int(np.prod(x)):
            _err(ctx, f"host reshape of {list(x)} to {list(shp)}")
        return shp
    if op in ("quantize", "dequantize", "relu", "relu6", "hardtanh", "hardswish", "lut", "lut_split", "host_float",
              "inductor_hardswish"):
        return x
    if op == "inductor_add":
        if tuple(in_shapes[1]) != tuple(x):
            _err(ctx, f"inductor_add: inputs of shapes {list(x)} and {list(in_shapes[1])} (one shape expected)")
        return x
    if op == "inductor_gate_mul":
        g = tuple(in_shapes[1])
        if len(x) != 3 or g not in ((x[0], 1, 1), (x[0],)):
            _err(ctx, f"inductor_gate_mul: input 0 must be [C, H, W] and input 1 [C, 1, 1] or [C], "
                      f"got {list(x)} and {list(g)}")
        return x
    if op == "conv2d":
        if len(x) != 3:
            _err(ctx, f"conv2d input must be [C, H, W] per sample, got {list(x)}")
        w = tensors[node["name"] + ".weight"]
        o, cg, kh, kw = w.shape
        g = node["groups"]
        if x[0] != cg * g:
            _err(ctx, f"input has {x[0]} channels, weight expects {cg} x groups {g}")
        if o % g:
            _err(ctx, f"out channels {o} not divisible by groups {g}")
        st, pd, dl = node["stride"], node["padding"], node["dilation"]
        oh = (x[1] + 2 * pd[0] - dl[0] * (kh - 1) - 1) // st[0] + 1
        ow = (x[2] + 2 * pd[1] - dl[1] * (kw - 1) - 1) // st[1] + 1
        if oh < 1 or ow < 1:
            _err(ctx, f"output would be empty ({oh}x{ow})")
        if len(in_shapes) == 2:
            # oneDNN's sum post-op: the second input is added (onednn rule only)
            if node.get("requant") != "onednn":
                _err(ctx, "a second (sum) input needs \"requant\": \"onednn\"")
            if tuple(in_shapes[1]) != (o, oh, ow):
                _err(ctx, f"sum input (input 1) is {list(in_shapes[1])}, the output {[o, oh, ow]}")
        if "eltwise" in node and (node["eltwise"] not in ("hardswish", "swish") or
                                  node.get("requant") != "onednn" or len(in_shapes) != 1 or
                                  node.get("activation") != "none"):
            _err(ctx, "`eltwise` must be \"hardswish\" or \"swish\" (oneDNN's post-ops) on a one-input "
                      "\"onednn\" layer without activation")
        if node.get("global_avg_pool", False):
            # with a sum input (a resnet's end) or without (mnasnet's): onednn rule only
            if node.get("requant") != "onednn":
                _err(ctx, "`global_avg_pool` needs \"requant\": \"onednn\"")
            return (o, 1, 1)
        return (o, oh, ow)
    if op == "linear":
        w = tensors[node["name"] + ".weight"]
        if len(x) != 1 or x[0] != w.shape[1]:
            _err(ctx, f"linear input must be [{w.shape[1]}] per sample, got {list(x)}")
        return (w.shape[0],)
    if op == "add":
        if in_shapes[0] != in_shapes[1]:
            _err(ctx, f"add inputs differ in shape: {list(in_shapes[0])} vs {list(in_shapes[1])}")
        return x
    if op in ("mul", "binary"):
        # input 1 broadcasts into input 0 (numpy, aligned on the right)
        b = in_shapes[1]
        if len(b) > len(x) or any(d not in (1, e) for d, e in zip(b[::-1], x[::-1])):
            _err(ctx, f"input 1 {list(b)} does not broadcast into input 0 {list(x)}")
        return x
    if op in ("max_pool2d", "avg_pool2d", "portable_avg_pool2d", "xnnpack_avg_pool2d", "inductor_avg_pool2d"):
        if len(x) != 3:
            _err(ctx, f"{op} input must be [C, H, W], got {list(x)}")
        k, s, p = node["kernel_size"], node["stride"], node["padding"]
        d = node["dilation"] if op == "max_pool2d" else [1, 1]
        for i in range(2):
            if p[i] * 2 > (k[i] - 1) * d[i] + 1:
                _err(ctx, f"padding {p} must be at most half of kernel_size {k}")
        cm = node.get("ceil_mode", False)
        oh = _pool_out(x[1], k[0], s[0], p[0], d[0], cm)
        ow = _pool_out(x[2], k[1], s[1], p[1], d[1], cm)
        if oh < 1 or ow < 1:
            _err(ctx, f"output would be empty ({oh}x{ow})")
        return (x[0], oh, ow)
    if op == "adaptive_avg_pool2d":
        if len(x) != 3:
            _err(ctx, f"input must be [C, H, W], got {list(x)}")
        return (x[0],) + tuple(node["output_size"])
    if op == "mean":
        if len(x) != 3:
            _err(ctx, f"input must be [C, H, W], got {list(x)}")
        return (x[0], 1, 1) if node["keepdim"] else (x[0],)
    if op == "flatten":
        return (int(np.prod(x)),)
    if op == "reshape":
        shp = tuple(node["shape"])
        if int(np.prod(shp)) != int(np.prod(x)):
            _err(ctx, f"cannot reshape {list(x)} to {list(shp)}")
        return shp
    if op == "channel_lut":
        if not 1 <= len(x) <= 3:
            _err(ctx, f"channel_lut input must be [C], [C, H] or [C, H, W] per sample, got {list(x)}")
        t = tensors[node["name"] + ".tables"]
        if t.dtype != np.uint8 or t.shape != (x[0], 256):
            _err(ctx, f"`{node['name']}.tables` must be U8 [{x[0]}, 256], got {t.dtype} {list(t.shape)}")
        return x
    if op == "xnnpack_channel_mean":
        if len(x) != 3:
            _err(ctx, f"xnnpack_channel_mean input must be [C, H, W] per sample, got {list(x)}")
        t = tensors[node["name"] + ".values"]
        if t.dtype != np.float32 or t.shape != (x[0], 256):
            _err(ctx, f"`{node['name']}.values` must be F32 [{x[0]}, 256], got {t.dtype} {list(t.shape)}")
        return (x[0], 1, 1)
    if op == "resize":
        if len(x) != 3:
            _err(ctx, f"resize input must be [C, H, W], got {list(x)}")
        return (x[0],) + tuple(node["size"])
    if op == "qsoftmax":
        if not 1 <= len(x) <= 3:
            _err(ctx, f"qsoftmax input must be [C], [C, H] or [C, H, W] per sample, got {list(x)}")
        d = node["dim"]
        if not isinstance(d, int) or isinstance(d, bool) or not 0 <= d < len(x):
            _err(ctx, f"qsoftmax dim {d!r} is not a dimension of the per-sample shape {list(x)}")
        t = node.get("threads")
        if t is not None and (not isinstance(t, int) or isinstance(t, bool) or t < 1):
            _err(ctx, f"qsoftmax threads {t!r} must be an integer >= 1")
        return x
    if op == "gather":
        shp = tuple(node["shape"])
        idx = tensors[node["name"] + ".index"]
        if idx.dtype != np.uint32 or idx.shape != (int(np.prod(shp)),):
            _err(ctx, f"`{node['name']}.index` must be uint32 [{int(np.prod(shp))}], got {idx.dtype} {list(idx.shape)}")
        total = sum(int(np.prod(s)) for s in in_shapes)
        # fill entries GATHER_FILL + b write the stored byte b (src/ops/gather/mod.rs FILL)
        reads = idx[(idx < GATHER_FILL) | (idx >= GATHER_FILL + 256)]
        if reads.size and int(reads.max()) >= total:
            _err(ctx, f"index entry {int(reads.max())} is out of range for the {total} input elements "
                      f"(and not a fill entry {GATHER_FILL} + byte)")
        if total >= GATHER_FILL:
            _err(ctx, f"the inputs hold {total} elements per sample, at most {GATHER_FILL - 1} are addressable")
        return shp
    if op == "cat":
        d = node["dim"] - 1
        for s in in_shapes[1:]:
            if len(s) != len(x) or any(a != b for i, (a, b) in enumerate(zip(s, x)) if i != d):
                _err(ctx, f"cat inputs do not match outside dim {node['dim']}: {[list(t) for t in in_shapes]}")
        return x[:d] + (sum(s[d] for s in in_shapes),) + x[d + 1:]
    raise AssertionError(op)


def validate(header, tensors):
    """Check a parsed header and its tensors; return (order, shapes, qparams)."""
    if not isinstance(header, dict):
        raise FormatError("header: the `qfuse` metadata must be a JSON object")
    if header.get("format") != "qfuse":
        raise FormatError(f"header: `format` must be \"qfuse\", got {header.get('format')!r}")
    ver = header.get("format_version")
    if ver not in FORMAT_VERSIONS:
        raise FormatError(f"header: format_version {ver!r} is not supported (this reader knows versions {FORMAT_VERSIONS})")
    allowed_top = {"format", "format_version", "engine", "inputs", "outputs", "nodes"}
    for k in header:
        if k not in allowed_top:
            raise FormatError(f"header: unknown key `{k}`")
    if header.get("engine") not in ENGINES:
        raise FormatError(f"header: `engine` must be one of {ENGINES}, got {header.get('engine')!r}")
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise FormatError("header: `inputs` must be a non-empty list")
    shapes, qparams = {}, {}
    for i, inp in enumerate(inputs):
        ctx = f"inputs[{i}]"
        if not isinstance(inp, dict) or set(inp) != {"name", "shape"}:
            _err(ctx, f"must be {{\"name\", \"shape\"}}, got {inp!r}")
        if not isinstance(inp["name"], str) or not inp["name"]:
            _err(ctx, "`name` must be a non-empty string")
        shp = inp["shape"]
        if not (isinstance(shp, list) and shp and all(_is_int(v) and v >= 1 for v in shp)):
            _err(ctx, f"`shape` must be a non-empty list of positive integers, got {shp!r}")
        if inp["name"] in shapes:
            _err(ctx, f"duplicate input name {inp['name']!r}")
        shapes[inp["name"]] = tuple(shp)
        qparams[inp["name"]] = None
    nodes = header.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise FormatError("header: `nodes` must be a non-empty list")
    by_name = {}
    for i, n in enumerate(nodes):
        ctx = f"nodes[{i}]"
        if not isinstance(n, dict):
            _err(ctx, "must be an object")
        name = n.get("name")
        if not isinstance(name, str) or not name:
            _err(ctx, "`name` must be a non-empty string")
        ctx = f"node {name!r} (nodes[{i}])"
        if name in by_name or name in shapes:
            _err(ctx, "name is not unique (or equals an input name)")
        op = n.get("op")
        if op not in OPS:
            _err(ctx, f"unknown op {op!r}")
        lo, hi, req, opt, qkind = OPS[op]
        ins = n.get("inputs")
        if not (isinstance(ins, list) and all(isinstance(s, str) for s in ins)):
            _err(ctx, "`inputs` must be a list of names")
        if len(ins) < lo or (hi is not None and len(ins) > hi):
            _err(ctx, f"{op} takes {lo}{'' if hi == lo else ' or more' if hi is None else '-%d' % hi} inputs, got {len(ins)}")
        extra_ok = {"scale", "zero_point"} if qkind == "input" else set()
        for k in n:
            if k not in COMMON_KEYS and k not in req and k not in opt and k not in extra_ok:
                _err(ctx, f"unknown key `{k}` for op {op}")
        float_out = op in ("conv2d", "linear") and "output" in n
        if float_out and (n["output"] != "float32" or "scale" in n or "zero_point" in n or
                          n.get("requant") != "onednn" or len(ins) not in (1, 2) or "clamp" in n or
                          n.get("global_avg_pool", False) or (len(ins) == 2 and "eltwise" in n)):
            _err(ctx, "`output` must be \"float32\" on a \"onednn\" layer (one input, or two: oneDNN's sum "
                      "without an eltwise post-op) without scale, zero_point, clamp or global_avg_pool")
        for k in req:
            if k not in n and not (float_out and k in ("scale", "zero_point")):
                _err(ctx, f"missing key `{k}` for op {op}")
        if ("scale" in n) != ("zero_point" in n):
            _err(ctx, "`scale` and `zero_point` must come together")
        by_name[name] = (i, n)

    # attribute checks
    for name, (i, n) in by_name.items():
        ctx = f"node {name!r} (nodes[{i}], {n['op']})"
        op = n["op"]
        if "scale" in n:
            _check_qparams(ctx, n)
        if "activation" in n:
            ok = ("none", "relu")
            if n["activation"] not in ok:
                _err(ctx, f"`activation` must be one of {ok}, got {n['activation']!r}")
        if "requant" in n and n["requant"] not in RULES:
            _err(ctx, f"`requant` must be one of {RULES}, got {n['requant']!r}")
        if "clamp" in n:
            c = n["clamp"]
            if ver < 2:
                _err(ctx, "`clamp` needs format_version 2")
            if not (isinstance(c, list) and len(c) == 2 and all(_is_int(v) for v in c) and 0 <= c[0] <= c[1] <= 255):
                _err(ctx, f"`clamp` must be [lo, hi] with 0 <= lo <= hi <= 255, got {c!r}")
        if op == "conv2d":
            _pair(ctx, n, "stride", 1); _pair(ctx, n, "padding", 0); _pair(ctx, n, "dilation", 1)
            if not (_is_int(n["groups"]) and n["groups"] >= 1):
                _err(ctx, f"`groups` must be a positive integer, got {n['groups']!r}")
        elif op == "max_pool2d":
            _pair(ctx, n, "kernel_size", 1); _pair(ctx, n, "stride", 1); _pair(ctx, n, "padding", 0); _pair(ctx, n, "dilation", 1)
            if not isinstance(n["ceil_mode"], bool):
                _err(ctx, "`ceil_mode` must be a boolean")
        elif op in ("avg_pool2d", "inductor_avg_pool2d"):
            _pair(ctx, n, "kernel_size", 1); _pair(ctx, n, "stride", 1); _pair(ctx, n, "padding", 0)
            for k in ("ceil_mode", "count_include_pad"):
                if not isinstance(n[k], bool):
                    _err(ctx, f"`{k}` must be a boolean")
            d = n["divisor_override"]
            if d is not None and not (_is_int(d) and d >= 1):
                _err(ctx, f"`divisor_override` must be null or a positive integer, got {d!r}")
        elif op == "adaptive_avg_pool2d":
            _pair(ctx, n, "output_size", 1)
        elif op in ("lut", "lut_split"):
            for key in ("table", "tail_table") if op == "lut_split" else ("table",):
                t = n[key]
                if not (isinstance(t, list) and len(t) == 256 and all(_is_int(v) and 0 <= v <= 255 for v in t)):
                    _err(ctx, f"`{key}` must be a list of 256 integers in [0, 255], got {str(t)[:60]}")
        elif op == "mean":
            if n["dims"] != [2, 3]:
                _err(ctx, f"`dims` must be [2, 3], got {n['dims']!r}")
            if not isinstance(n["keepdim"], bool):
                _err(ctx, "`keepdim` must be a boolean")
        elif op == "hardtanh":
            if not (_is_num(n["min_val"]) and _is_num(n["max_val"]) and n["min_val"] <= n["max_val"]):
                _err(ctx, f"`min_val`/`max_val` must be numbers with min <= max, got {n['min_val']!r}, {n['max_val']!r}")
        elif op == "flatten":
            if n["start_dim"] != 1 or n["end_dim"] != -1:
                _err(ctx, f"flatten supports start_dim 1, end_dim -1 only, got {n['start_dim']!r}, {n['end_dim']!r}")
        elif op == "reshape":
            s = n["shape"]
            if not (isinstance(s, list) and 1 <= len(s) <= 3 and all(_is_int(v) and v >= 1 for v in s)):
                _err(ctx, f"`shape` must be a list of 1 to 3 positive integers (no -1, no batch dim), got {s!r}")
        elif op == "gather":
            s = n["shape"]
            if not (isinstance(s, list) and 1 <= len(s) <= 3 and all(_is_int(v) and v >= 1 for v in s)):
                _err(ctx, f"`shape` must be a list of 1 to 3 positive integers (no batch dim), got {s!r}")
        elif op == "resize":
            _pair(ctx, n, "size", 1)
            sc = n["scales"]
            if not (isinstance(sc, list) and len(sc) == 2 and all(_is_num(v) and math.isfinite(v) and v >= 0 for v in sc)):
                _err(ctx, f"`scales` must be two finite numbers >= 0, got {sc!r}")
            if n["mode"] not in ("torch_bilinear", "torch_bilinear_float"):
                _err(ctx, f"this reader knows resize modes \"torch_bilinear\" and \"torch_bilinear_float\" "
                          f"only, got {n['mode']!r}")
            want_rule = "round" if n["mode"] == "torch_bilinear" else "requantize"
            if n["rule"] != want_rule:
                _err(ctx, f"mode {n['mode']} needs rule \"{want_rule}\", got {n['rule']!r}")
            if n["coordinate_transformation_mode"] not in ("align_corners", "half_pixel"):
                _err(ctx, "mode torch_bilinear needs coordinate_transformation_mode \"align_corners\" or "
                          f"\"half_pixel\", got {n['coordinate_transformation_mode']!r}")
            if n.get("layout") not in ("channels_last", "contiguous"):
                _err(ctx, f"`layout` must be \"channels_last\" or \"contiguous\", got {n.get('layout')!r}")
            if not (_is_int(n.get("lanes")) and 1 <= n["lanes"] <= 64):
                _err(ctx, f"`lanes` must be an integer in 1..=64, got {n.get('lanes')!r}")
        elif op == "cat":
            if not (_is_int(n["dim"]) and n["dim"] >= 1):
                _err(ctx, f"`dim` must be an integer >= 1 (the batch dim 0 cannot be concatenated), got {n['dim']!r}")

    # tensors
    expected = {}
    for name, (i, n) in by_name.items():
        if n["op"] in ("conv2d", "linear"):
            bias = "bias_i32" if n.get("requant") in INT_BIAS_RULES else "bias"
            for suffix in ("weight", "weight_scale", "weight_zero_point", bias):
                expected[f"{name}.{suffix}"] = (name, i, n)
        if n["op"] == "binary":
            expected[f"{name}.table"] = (name, i, n)
        if n["op"] == "gather":
            expected[f"{name}.index"] = (name, i, n)
        if n["op"] == "host_float" and n.get("fn") == "onednn_linear":
            for suffix in ("weight", "weight_scale", "bias"):
                expected[f"{name}.{suffix}"] = (name, i, n)
        if n["op"] == "channel_lut":
            expected[f"{name}.tables"] = (name, i, n)
        if n["op"] == "xnnpack_channel_mean":
            expected[f"{name}.values"] = (name, i, n)
        if n["op"] == "host_float" and n.get("fn") == "table_mean":
            expected[f"{name}.table"] = (name, i, n)
    for k in tensors:
        if k not in expected:
            raise FormatError(f"tensor {k!r}: not allowed (no conv2d/linear/binary/gather/channel_lut/xnnpack_channel_mean/host_float node owns it)")
    for k, (name, i, n) in expected.items():
        ctx = f"node {name!r} (nodes[{i}], {n['op']})"
        if k not in tensors:
            _err(ctx, f"missing tensor {k!r}")
    for name, (i, n) in by_name.items():
        if n["op"] == "binary":
            t = tensors[name + ".table"]
            if t.dtype != np.uint8 or t.shape != (65536,):
                _err(f"node {name!r} (nodes[{i}], binary)",
                     f"`{name}.table` must be U8 [65536], got {t.dtype} {list(t.shape)}")
        if n["op"] not in ("conv2d", "linear"):
            continue
        ctx = f"node {name!r} (nodes[{i}], {n['op']})"
        w = tensors[name + ".weight"]
        ws = tensors[name + ".weight_scale"]
        wz = tensors[name + ".weight_zero_point"]
        bname = "bias_i32" if n.get("requant") in INT_BIAS_RULES else "bias"
        b = tensors[name + "." + bname]
        bdt = np.int32 if bname == "bias_i32" else np.float32
        rank = 4 if n["op"] == "conv2d" else 2
        if w.dtype != np.int8 or w.ndim != rank:
            _err(ctx, f"`{name}.weight` must be I8 of rank {rank}, got {w.dtype} {list(w.shape)}")
        o = w.shape[0]
        for t, tn, dt in ((ws, "weight_scale", np.float32), (wz, "weight_zero_point", np.int32), (b, bname, bdt)):
            if t.dtype != dt or t.shape != (o,):
                _err(ctx, f"`{name}.{tn}` must be {np.dtype(dt).name} [{o}], got {t.dtype} {list(t.shape)}")
        if not (np.all(np.isfinite(ws)) and np.all(ws > 0)):
            _err(ctx, "weight_scale must be positive and finite")
        if np.any(wz != 0):
            _err(ctx, "weight_zero_point must be all 0 (symmetric weights)")
        if bname == "bias" and not np.all(np.isfinite(b)):
            _err(ctx, "bias must be finite")
        if n["op"] == "conv2d" and o % n["groups"]:
            _err(ctx, f"out channels {o} not divisible by groups {n['groups']}")

    # names and topological order
    known = set(shapes)
    for name, (i, n) in by_name.items():
        for s in n["inputs"]:
            if s not in by_name and s not in known:
                _err(f"node {name!r} (nodes[{i}])", f"input {s!r} is neither a model input nor a node")
    order, state = [], {}

    def visit(name, stack):
        st = state.get(name)
        if st == 2:
            return
        if st == 1:
            raise FormatError(f"graph has a cycle through {' -> '.join(stack + [name])}")
        state[name] = 1
        for s in by_name[name][1]["inputs"]:
            if s in by_name:
                visit(s, stack + [name])
        state[name] = 2
        order.append(by_name[name][1])

    for name in sorted(by_name, key=lambda k: by_name[k][0]):
        visit(name, [])

    # types, qparams, shapes
    for n in order:
        name, op = n["name"], n["op"]
        ctx = f"node {name!r} ({op})"
        in_q = [qparams[s] for s in n["inputs"]]
        if op == "host_float":
            if in_q[0] is not None:
                _err(ctx, f"input {n['inputs'][0]!r} must be float32 (a dequantize's output), it is quantized")
            if n["fn"] == "onednn_linear":
                w, ws, b = (tensors.get(f"{name}.{k}") for k in ("weight", "weight_scale", "bias"))
                if w is None or w.dtype != np.int8 or w.ndim != 2 or ws is None or b is None or \
                        ws.shape != (w.shape[0],) or b.shape != (w.shape[0],) or \
                        not (_is_num(n.get("input_scale")) and n["input_scale"] > 0) or \
                        not (_is_int(n.get("input_zero_point")) and 0 <= n["input_zero_point"] <= 255) or \
                        n.get("activation", "none") not in ("none", "relu"):
                    _err(ctx, "host_float onednn_linear: needs I8 weight [O, K], F32 weight_scale and bias [O], "
                              "input_scale > 0, input_zero_point in 0..=255, activation none/relu")
            elif n["fn"] == "table_mean":
                t = tensors.get(f"{name}.table")
                if t is None or t.dtype != np.float32 or t.ndim != 2 or t.shape[1] != 256 or \
                        not np.all(np.isfinite(t)) or \
                        not (_is_num(n.get("input_scale")) and n["input_scale"] > 0) or \
                        not (_is_int(n.get("input_zero_point")) and 0 <= n["input_zero_point"] <= 255) or \
                        not (_is_num(n.get("scale")) and n["scale"] > 0) or \
                        not (_is_int(n.get("zero_point")) and 0 <= n["zero_point"] <= 255):
                    _err(ctx, "host_float table_mean: needs a finite F32 table [C, 256], input_scale > 0, "
                              "input_zero_point in 0..=255, scale > 0, zero_point in 0..=255")
            elif n["fn"] == "reshape":
                if not (isinstance(n.get("shape"), list) and 1 <= len(n["shape"]) <= 3 and
                        all(_is_int(v) and v >= 1 for v in n["shape"])):
                    _err(ctx, f"host_float reshape: shape must be 1 to 3 sizes >= 1, got {n.get('shape')!r}")
            elif n["fn"] != "clip" or not (_is_num(n.get("min")) and _is_num(n.get("max")) and n["min"] <= n["max"]):
                _err(ctx, f"host_float: this reader knows fn \"clip\" (and \"onednn_linear\") with numbers min <= max, got {n!r}")
        elif op == "quantize":
            if in_q[0] is not None:
                _err(ctx, f"input {n['inputs'][0]!r} must be float32, it is quantized")
        elif op == "max_pool2d" and in_q[0] is None:
            if header["engine"] != "inductor_x86":
                _err(ctx, f"input {n['inputs'][0]!r} is float32: an f32 max_pool2d needs engine inductor_x86")
        elif op == "inductor_avg_pool2d":
            if in_q[0] is not None:
                _err(ctx, f"input {n['inputs'][0]!r} must be float32 (a conv's f32 output), it is quantized")
            if header["engine"] != "inductor_x86":
                _err(ctx, "inductor_avg_pool2d needs engine inductor_x86")
        elif op in ("inductor_gate_mul", "inductor_hardswish", "inductor_add"):
            for s, q in zip(n["inputs"], in_q):
                if q is not None:
                    _err(ctx, f"input {s!r} must be float32 (a conv's f32 output), it is quantized")
            if op == "inductor_gate_mul" and n["gate"] not in ("hardsigmoid", "sigmoid"):
                _err(ctx, f"`gate` must be \"hardsigmoid\" or \"sigmoid\", got {n['gate']!r}")
        else:
            for s, q in zip(n["inputs"], in_q):
                if q is None:
                    _err(ctx, f"input {s!r} must be quint8, it is float32")
        if op == "resize" and n.get("mode") == "torch_bilinear" \
                and (float(n["scale"]), int(n["zero_point"])) != in_q[0]:
            _err(ctx, f"resize output qparams {(n['scale'], n['zero_point'])} differ from the input's {in_q[0]}")
        if op == "gather" and any(q != in_q[0] for q in in_q):
            _err(ctx, f"inputs must share qparams, got {in_q}")
        kind = OPS[op][4]
        if op in ("conv2d", "linear") and n.get("output") == "float32":
            kind = "float"
        if kind == "given":
            qparams[name] = (float(n["scale"]), int(n["zero_point"]))
        elif kind == "input":
            qparams[name] = in_q[0]
            if "scale" in n and (float(n["scale"]), int(n["zero_point"])) != in_q[0]:
                _err(ctx, f"explicit output qparams {(n['scale'], n['zero_point'])} differ from the input's {in_q[0]}")
        else:
            qparams[name] = None
        shapes[name] = tuple(_infer(ctx, n, [shapes[s] for s in n["inputs"]], tensors))

    outs = header.get("outputs")
    if not (isinstance(outs, list) and outs and all(isinstance(s, str) for s in outs)):
        raise FormatError("header: `outputs` must be a non-empty list of names")
    for s in outs:
        if s not in by_name and s not in shapes:
            raise FormatError(f"header: output {s!r} is neither a node nor an input")
    return order, shapes, qparams


def read_raw(path):
    """Return (header dict, {name: np.ndarray}) without validation."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    with safe_open(path, framework="numpy") as f:
        meta = f.metadata() or {}
    if "qfuse" not in meta:
        raise FormatError(f"{path}: safetensors metadata has no `qfuse` key (keys: {sorted(meta)})")
    extra = sorted(k for k in meta if k != "qfuse")
    if extra:
        raise FormatError(f"{path}: metadata must hold only the `qfuse` key, also has {extra}")
    try:
        header = json.loads(meta["qfuse"])
    except json.JSONDecodeError as e:
        raise FormatError(f"{path}: `qfuse` metadata is not valid JSON: {e}")
    return header, load_file(path)


def load(path):
    header, tensors = read_raw(path)
    try:
        order, shapes, qparams = validate(header, tensors)
    except FormatError as e:
        raise FormatError(f"{path}: {e}")
    return Model(header, tensors, order, shapes, qparams)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="See docs/MODEL_FORMAT.md for the format.")
    ap.add_argument("models", nargs="+", help="qfuse .safetensors files")
    ap.add_argument("--quiet", "-q", action="store_true", help="print only one OK line per file")
    a = ap.parse_args(argv)
    rc = 0
    for p in a.models:
        try:
            m = load(p)
        except FormatError as e:
            print(f"INVALID {e}", file=sys.stderr)
            rc = 1
            continue
        nparam = sum(int(t.size) for t in m.tensors.values())
        print(f"OK {p}: engine={m.engine} nodes={len(m.order)} tensors={len(m.tensors)} ({nparam} values) "
              f"outputs={[(o, list(m.shapes[o])) for o in m.header['outputs']]}")
        if not a.quiet:
            print(m.summary())
    return rc


if __name__ == "__main__":
    sys.exit(main())
