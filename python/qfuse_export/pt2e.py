"""Export pt2e int8 models (torchao `prepare_pt2e` / `convert_pt2e`) for
ExecuTorch's XNNPACK delegate as qfuse `"engine": "xnnpack"` files.

    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, convert_pt2e
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    gm = torch.export.export(model.eval(), (x,)).module()
    q = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    p = prepare_pt2e(gm, q); p(calibration_batch); cm = convert_pt2e(p)
    qfuse_export.export(cm, x, "model.safetensors")     # or torch.export.export(cm, (x,))

The numbers are those of ExecuTorch's runtime with the XNNPACK delegate
(`to_edge_transform_and_lower(..., [XnnpackPartitioner()])`), not those of the
converted graph run eagerly (a float simulation). Rules:
tests/data/pt2e/README.md; file forms: docs/MODEL_FORMAT.md, "Engine xnnpack".

Recognised (each pattern ends in a quantize_per_tensor; `dq(a)` is a
dequantize_per_tensor of an int8 tensor; `.default` and `.tensor` overloads):
  x (f32 graph input) -> q                                   quantize
  conv2d(dq(a), dq_per_channel|dq_per_tensor(w int8), b) [-> relu | hardtanh] -> q
                                                             conv2d (requant xnnpack, bias_i32, clamp)
  linear(...) [-> relu | hardtanh] -> q                      linear
  add / add_ (dq(a), dq(b)) [-> relu] -> q                   binary (XNNPACK's add table)
  mul(dq(a), dq(b)) [-> relu] -> q                           binary (XNNPACK's mul table)
  relu / relu_ / hardtanh / hardtanh_ / relu6 (dq(a)) -> q   merged into the conv/linear/max pool
                                                             before it (XNNPACK's merge_clamps), else lut
  max_pool2d(dq(a)) -> q                                     max_pool2d
  mean(dq(a), [2, 3] / [-2, -1], keepdim=True), adaptive_avg_pool2d(dq(a), 1) -> q   mean
  adaptive_avg_pool2d(dq(a), k > 1) -> q                     adaptive_avg_pool2d (ExecuTorch's portable kernel)
  avg_pool2d(dq(a), ...) -> q                                portable_avg_pool2d (ExecuTorch's portable kernel)
  avg_pool2d(dq(a), ...) -> q, delegated (no ceil_mode, ...)  xnnpack_avg_pool2d (XNNPACK's f32 average pooling)
  batch_norm(dq(a)) (eval) [-> relu / relu6 / hardtanh] -> q  channel_lut (XNNPACK's f32 1x1 depthwise conv)
  adaptive_avg_pool2d(batch_norm(dq(a)) [-> relu ...], 1) / mean(keepdim) [-> flatten] -> q
                                                             xnnpack_channel_mean (XNNPACK's f32 global average)
  cat([dq(a_i)], 1) -> q (equal qparams)                     cat
  flatten / view / reshape / dropout (eval) / transpose / permute / split / chunk (dq(a)) -> q
                                                             composed into one view per consumer:
                                                             removed, reshape / flatten or gather
  sigmoid / tanh / hardswish / hardsigmoid / silu / gelu / leaky_relu chains (dq(a)) -> q
                                                             lut (XNNPACK's table of the chain)
  dq(a) -> graph output                                      dequantize
  dq(a) -> relu6 / hardtanh / relu -> graph output (float)   dequantize + host_float clip
Anything else raises ExportError naming the node and its op.
"""
import operator

import numpy as np
import torch
import torch.fx

from . import xnnpack_rules as xr

aten = torch.ops.aten


def _init_ops():
    """The op overloads, resolved when a pt2e model is exported: the quantized_decomposed ops
    are registered by torchao (or torch.ao), which made the model."""
    global Q_T, DQ_T, DQ_C, RELU, HARDTANH, RELU6, CONV, LINEAR, ADD, MUL, FUSABLE, RESHAPE, DROPOUT, UNARY, MOVE, SPLIT
    global BN, BN_NATIVE, AVG_POOL
    try:
        qd = torch.ops.quantized_decomposed
        Q_T = (qd.quantize_per_tensor.default, qd.quantize_per_tensor.tensor)
        DQ_T = (qd.dequantize_per_tensor.default, qd.dequantize_per_tensor.tensor)
        DQ_C = (qd.dequantize_per_channel.default,)
    except AttributeError as e:
        raise ValueError(f"the quantized_decomposed ops are not registered (import torchao first): {e}") from e
    RELU = (aten.relu.default, aten.relu_.default)
    HARDTANH = (aten.hardtanh.default, aten.hardtanh_.default)
    RELU6 = (aten.relu6.default,) + ((aten.relu6_.default,) if hasattr(aten, "relu6_") else ())
    CONV = (aten.conv2d.default,)
    LINEAR = (aten.linear.default,)
    ADD = (aten.add.Tensor, aten.add_.Tensor)
    MUL = (aten.mul.Tensor, aten.mul_.Tensor)
    BN = _have("batch_norm.default")
    BN_NATIVE = _have("_native_batch_norm_legit_no_training.default")
    AVG_POOL = _have("avg_pool2d.default")
    FUSABLE = CONV + LINEAR + ADD + MUL
    RESHAPE = _have("flatten.using_ints", "view.default", "reshape.default", "_unsafe_view.default")
    DROPOUT = _have("dropout.default", "dropout_.default", "clone.default", "contiguous.default")
    MOVE = _have("transpose.int", "permute.default")
    SPLIT = _have("split.Tensor", "split_with_sizes.default", "chunk.default")
    UNARY = {}
    for fn in xr.UNARY_FNS:
        for op in _have(f"{fn}.default", f"{fn}_.default"):
            UNARY[op] = fn


def _have(*names):
    """the aten overloads of this torch among `names`"""
    out = []
    for n in names:
        op, overload = n.split(".")
        try:
            out.append(getattr(getattr(aten, op), overload))
        except AttributeError:
            pass
    return tuple(out)


# nodes that compute nothing the exporter must map
IGNORED = ("_assert_tensor_metadata", "_assert_scalar", "sym_size", "sym_constrain_range",
           "_guards_fn", "getitem")


def is_pt2e(model):
    """A torch.export.ExportedProgram, or a GraphModule holding quantized_decomposed q/dq nodes."""
    if isinstance(model, torch.export.ExportedProgram):
        return True
    if isinstance(model, torch.fx.GraphModule):
        return any(n.op == "call_function" and str(n.target).startswith("quantized_decomposed.")
                   for n in model.graph.nodes)
    return False


class _Recorder(torch.fx.Interpreter):
    """Runs the pt2e graph once, keeping every node's value (shapes, scalar qparams of
    `.tensor` overloads, int8 weights)."""

    def __init__(self, gm):
        super().__init__(gm)
        self.val = {}

    def run_node(self, n):
        r = super().run_node(n)
        self.val[n] = r
        return r


def _pair(v, n=2):
    if isinstance(v, (list, tuple)):
        return [int(a) for a in v] if len(v) == n else [int(v[0])] * n
    return [int(v)] * n


class _Walker:
    def __init__(self, gm, val, fail):
        self.gm = gm
        self.v = val
        self.fail = fail
        self.ir = []          # int8 op list (tests/data/pt2e/README.md case.json IR)
        self.name = {}        # fx node -> qfuse value name
        self.qp = {}          # qfuse value name -> (scale f32, int8 zp)
        self.shape = {}       # qfuse value name -> per-sample shape
        self.inputs = []
        self.outputs = []
        self.covered = set()
        self.views = {}       # value name -> (base value, int64 index of per-sample shape)

    # -- values
    def scalar(self, node, a, what):
        if isinstance(a, torch.fx.Node):
            t = self.v.get(a)
            if not isinstance(t, torch.Tensor) or t.numel() != 1:
                self.fail(node, f"{what} is not a scalar")
            self.covered.add(a)
            return t.item()
        return a

    def qargs(self, node):
        """(scale, zp, qmin, qmax, dtype) of a quantize/dequantize_per_tensor node"""
        a = list(node.args) + [None] * 6
        s = float(np.float32(self.scalar(node, a[1], "scale")))
        z = int(self.scalar(node, a[2], "zero_point"))
        lo, hi, dt = a[3], a[4], a[5]
        lo = node.kwargs.get("quant_min", lo)
        hi = node.kwargs.get("quant_max", hi)
        dt = node.kwargs.get("dtype", dt)
        return s, z, int(lo), int(hi), dt

    def check_act(self, node, q):
        s, z, lo, hi, dt = q
        if dt == torch.uint8:
            self.fail(node, "uint8 activations (X86InductorQuantizer?): qfuse exports pt2e models for "
                            "ExecuTorch's XNNPACK (XNNPACKQuantizer, int8 activations) only")
        if (lo, hi, dt) != (-128, 127, torch.int8):
            self.fail(node, f"activation range [{lo}, {hi}] {dt}: only int8 [-128, 127] is supported")
        return s, z

    def dq(self, user, dq, virtual=False):
        """(qfuse value, scale, zp) behind a dequantize_per_tensor input of `user` (a view is
        written out as a gather / reshape first unless `virtual`)"""
        if isinstance(dq, torch.fx.Node) and dq.op == "call_function" and dq.target in UNARY:
            self.fail(user, f"reads the float output of {UNARY[dq.target]} ({dq.name}) directly (XNNPACKQuantizer "
                            f"does not quantize that edge; e.g. a squeeze-excitation pool of a hardswish / silu "
                            f"output): ExecuTorch runs {user.target} in f32 on it, which qfuse does not reproduce")
        if isinstance(dq, torch.fx.Node) and dq.op == "call_function" and dq.target not in DQ_T and \
                dq.target not in Q_T and any(isinstance(a, torch.fx.Node) for a in dq.args):
            self.fail(user, f"reads the float output of {dq.target} ({dq.name}) directly: a chain of float ops "
                            f"between a dequantize and a quantize that ExecuTorch computes in f32, which qfuse "
                            f"does not reproduce (mapped float chains: unary ops, a batch norm [+ relu] alone "
                            f"or under a global average pool)")
        if not (isinstance(dq, torch.fx.Node) and dq.op == "call_function" and dq.target in DQ_T):
            what = dq.target if isinstance(dq, torch.fx.Node) else type(dq).__name__
            self.fail(user, f"input {getattr(dq, 'name', dq)} ({what}) is not a dequantize_per_tensor: "
                            f"a float input to an int8 op")
        src = dq.args[0]
        if src not in self.name or self.name[src] not in self.qp:
            self.fail(dq, f"dequantizes {getattr(src, 'name', src)}, which is not an int8 tensor the "
                          f"exporter produced")
        s, z = self.check_act(dq, self.qargs(dq))
        a = self.name[src]
        if (np.float32(s), z) != (np.float32(self.qp[a][0]), self.qp[a][1]):
            self.fail(dq, f"dequantizes with ({s}, {z}) a tensor quantized with {self.qp[a]}")
        self.covered.add(dq)
        if not virtual:
            a = self.materialize(user, a)
        return a, s, z

    def view_of(self, a):
        """(base, index) of a value: a view of an exported tensor, or the tensor itself"""
        if a in self.views:
            return self.views[a]
        return a, np.arange(int(np.prod(self.shape[a])), dtype=np.int64).reshape(self.shape[a])

    def materialize(self, user, a):
        """the exported name of a value that may be a view (a chain of shape ops with shared
        qparams): its base, a reshape of it, or one gather of its bytes"""
        if a not in self.views:
            return a
        base, idx = self.views.pop(a)
        shape = list(idx.shape)
        flat = idx.reshape(-1)
        n_base = int(np.prod(self.shape[base]))
        identity = flat.size == n_base and np.array_equal(flat, np.arange(n_base))
        if identity and shape == list(self.shape[base]):
            self.emit("identity", [base], a)
        elif not 1 <= len(shape) <= 3:
            self.fail(user, f"reads a tensor of per-sample shape {shape} (from shape ops): qfuse tensors have 1 "
                            f"to 3 dimensions besides the batch")
        elif identity:
            self.emit("reshape", [base], a, shape=shape)
        else:
            self.emit("gather", [base], a, shape=shape, index=flat.astype(np.uint32))
        return a

    def weight(self, user, wdq):
        if not (isinstance(wdq, torch.fx.Node) and wdq.target in DQ_C + DQ_T):
            self.fail(user, "the weight is not an int8 tensor behind a dequantize_per_channel / "
                            "dequantize_per_tensor (a float layer: was it quantized?)")
        wq = self.v[wdq.args[0]]
        if not isinstance(wq, torch.Tensor) or wq.dtype != torch.int8:
            self.fail(wdq, "the weight is not an int8 tensor")
        o = wq.shape[0]
        if wdq.target in DQ_C:
            a = list(wdq.args)
            scale = self.v[a[1]] if isinstance(a[1], torch.fx.Node) else torch.as_tensor(a[1])
            zp = self.v[a[2]] if isinstance(a[2], torch.fx.Node) else torch.as_tensor(a[2])
            if int(a[3]) != 0:
                self.fail(wdq, f"per-channel weight along axis {a[3]}: only axis 0 (output channels)")
            scale = scale.to(torch.float32).reshape(-1)
            zp = zp.reshape(-1)
            pc = True
        else:
            s, z, _, _, _ = self.qargs(wdq)
            scale = torch.full((o,), s, dtype=torch.float32)
            zp = torch.full((o,), z, dtype=torch.int64)
            pc = False
        if scale.numel() != o or bool((zp != 0).any()):
            self.fail(wdq, "weights must be symmetric (zero points 0), one scale per output channel")
        self.covered.update([wdq, wdq.args[0]])
        return wq.numpy().astype(np.int8), scale.numpy().astype(np.float32), pc

    def const(self, user, node):
        if node is None:
            return None
        t = self.v.get(node)
        if not isinstance(t, torch.Tensor) or t.dtype != torch.float32:
            self.fail(user, f"bias {getattr(node, 'name', node)} is not a float32 constant")
        self.covered.add(node)
        return t.detach().numpy().astype(np.float32)

    def per_sample(self, node):
        t = self.v[node]
        return list(t.shape[1:])

    def emit(self, op, ins, out, **kw):
        d = dict(id=len(self.ir), op=op, inputs=ins, output=out)
        d.update(kw)
        self.ir.append(d)
        return d

    # -- walk
    def run(self):
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                t = self.v.get(node)
                if not isinstance(t, torch.Tensor) or t.dtype != torch.float32:
                    raise ValueError(f"graph input {node.name}: only float32 tensor inputs are supported")
                self.name[node] = node.name
                self.inputs.append((node.name, list(t.shape[1:])))
                self.shape[node.name] = list(t.shape[1:])
            elif node.op == "call_function" and node.target in Q_T:
                self.on_quantize(node)
            elif node.op == "output":
                outs = node.args[0]
                outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
                self.outputs = [self.on_output(o) for o in outs]
        for node in self.gm.graph.nodes:
            if node.op in ("call_function", "call_method") and node not in self.covered:
                t = str(node.target)
                if any(k in t for k in IGNORED) or not node.users and node.target in DQ_T:
                    continue
                if node.op == "call_function" and node.target in DQ_T and \
                        all(u in self.covered for u in node.users):
                    continue
                self.fail(node, f"op {t} is not supported for pt2e/XNNPACK export (or not between a "
                                f"dequantize and a quantize)")
        return self

    def quantize_head(self, q):
        """The start of on_quantize: records q's tensor (name, qparams, per-sample shape) and
        returns (its source node, its name, its qparams as layer keywords), or None once the
        quantize of a graph input is emitted."""
        src = q.args[0]
        s, z = self.check_act(q, self.qargs(q))
        out = q.name
        self.name[q] = out
        self.qp[out] = (s, z)
        self.shape[out] = self.per_sample(q)
        self.covered.add(q)
        oq = dict(output_scale=s, output_zero_point=z)
        if not isinstance(src, torch.fx.Node):
            self.fail(q, "quantizes a constant")
        if src.op == "placeholder":
            self.emit("quantize", [self.name[src]], out, **oq)
            return None
        return src, out, oq

    def on_quantize(self, q):
        head = self.quantize_head(q)
        if head is None:
            return
        src, out, oq = head
        s, z = self.qp[out]
        act = None
        op = src
        if (src.op == "call_function" and src.target in RELU + HARDTANH + RELU6
                and isinstance(src.args[0], torch.fx.Node) and self.bn_of(src.args[0]) is not None
                and len(src.args[0].users) == 1):
            # batch_norm -> relu / hardtanh: the float clamp of XNNPACK's f32 depthwise conv
            act = self.fuse_bn_act(src)
            op = src.args[0]
        elif (src.op == "call_function" and src.target in RELU + HARDTANH
                and isinstance(src.args[0], torch.fx.Node) and src.args[0].op == "call_function"
                and src.args[0].target in FUSABLE and len(src.args[0].users) == 1):
            # an activation fused into its producer (one annotated pattern, no q/dq between)
            if src.target in RELU:
                act = (0.0, float("inf"))
            else:
                act = (float(src.args[1]) if len(src.args) > 1 else -1.0,
                       float(src.args[2]) if len(src.args) > 2 else 1.0)
            self.covered.add(src)
            op = src.args[0]
        if op.op != "call_function":
            self.fail(op, f"{op.op} {op.target} feeding a quantize is not supported")
        if self.bn_of(op) is not None:
            self.on_batch_norm(self.bn_of(op), op, out, oq, act)
            return
        if act is None and self.bn_pool(op) is not None:
            self.on_bn_mean(op, out, oq)
            return
        t = op.target
        self.covered.add(op)
        if t in UNARY or self.is_shape_op(op):
            self.on_float_chain(op, out, oq)
            return
        if t in CONV + LINEAR:
            x, wdq = op.args[0], op.args[1]
            bias = op.args[2] if len(op.args) > 2 else op.kwargs.get("bias")
            a, s_in, z_in = self.dq(op, x)
            wq, ws, pc = self.weight(op, wdq)
            b = self.const(op, bias)
            kw = dict(input_scale=s_in, input_zero_point=z_in, weight_q=wq, weight_scale=ws, per_channel=pc,
                      bias=b, src=op, **oq)
            if act is not None:
                kw.update(act_min=act[0], act_max=act[1])
            if t in CONV:
                a_ = list(op.args) + [None] * (7 - len(op.args))
                if isinstance(a_[4], str):
                    self.fail(op, f"conv2d padding {a_[4]!r} (string padding) is not supported")
                kw.update(stride=_pair(a_[3] or 1), padding=_pair(a_[4] or 0), dilation=_pair(a_[5] or 1),
                          groups=int(a_[6] or 1))
                self.emit("conv2d", [a], out, **kw)
            else:
                if len(self.shape[a]) != 1:
                    self.fail(op, f"linear on a per-sample shape {self.shape[a]}: only [N, K] inputs")
                self.emit("linear", [a], out, **kw)
        elif t in ADD + MUL:
            if len(op.args) < 2 or not all(isinstance(v, torch.fx.Node) for v in op.args[:2]) or \
                    op.kwargs.get("alpha", 1) != 1:
                self.fail(op, f"{t} must have two int8 tensor inputs (no scalar operand, no alpha)")
            (a, sa, za), (b, sb, zb) = self.dq(op, op.args[0]), self.dq(op, op.args[1])
            if act is not None and act != (0.0, float("inf")):
                self.fail(src, "add/mul fused with hardtanh: not supported (relu only)")
            if self.shape[a] != self.shape[b]:
                # qfuse's binary broadcasts input 1 into input 0 (numpy rules, aligned on the right);
                # add and mul are symmetric, so the full-shape input goes first
                def into(small, big):
                    return len(small) <= len(big) and all(d in (1, e) for d, e in zip(small[::-1], big[::-1]))
                if into(self.shape[a], self.shape[b]) and not into(self.shape[b], self.shape[a]):
                    (a, sa, za), (b, sb, zb) = (b, sb, zb), (a, sa, za)
                if not into(self.shape[b], self.shape[a]) or self.shape[a] != self.shape[out]:
                    self.fail(op, f"{t} inputs of shapes {self.shape[a]} and {self.shape[b]}: only one input "
                                  f"broadcasting into the other")
            self.emit("add" if t in ADD else "mul", [a, b], out, input_scales=[sa, sb],
                      input_zero_points=[za, zb], activation="relu" if act else "none", **oq)
        elif t in RELU + HARDTANH + RELU6:
            a, s_in, z_in = self.dq(op, op.args[0])
            if t in RELU:
                lo, hi = 0.0, float("inf")
            elif t in RELU6:
                lo, hi = 0.0, 6.0
            else:
                lo = float(op.args[1]) if len(op.args) > 1 else float(op.kwargs.get("min_val", -1.0))
                hi = float(op.args[2]) if len(op.args) > 2 else float(op.kwargs.get("max_val", 1.0))
            self.emit("clamp", [a], out, min=lo, max=hi, input_scale=s_in, input_zero_point=z_in, **oq)
        elif t == aten.max_pool2d.default:
            a, s_in, z_in = self.dq(op, op.args[0])
            a_ = list(op.args) + [None] * (6 - len(op.args))
            k = _pair(a_[1])
            self.same(op, (s_in, z_in), (s, z))
            self.emit("max_pool2d", [a], out, kernel=k, stride=_pair(a_[2]) if a_[2] else k,
                      padding=_pair(a_[3] or 0), dilation=_pair(a_[4] or 1), ceil_mode=bool(a_[5] or False),
                      input_scale=s_in, input_zero_point=z_in, **oq)
        elif t == aten.mean.dim or (t == aten.adaptive_avg_pool2d.default and _pair(op.args[1]) == [1, 1]):
            a, s_in, z_in = self.dq(op, op.args[0])
            if len(self.shape[a]) != 3:
                self.fail(op, f"mean of a per-sample shape {self.shape[a]}: only [C, H, W]")
            if t == aten.mean.dim:
                dims = sorted(int(d) % 4 for d in op.args[1])
                keep = op.args[2] if len(op.args) > 2 else op.kwargs.get("keepdim", False)
                if dims != [2, 3]:
                    self.fail(op, f"mean over {list(op.args[1])}: only over [2, 3]")
                if not keep:
                    # not delegated (XNNPACK's partitioner takes mean.dim only with keepdim):
                    # ExecuTorch's portable mean.out (f32 sum in row-major order, / f32(H*W)), the
                    # portable adaptive_avg_pool2d rule for one 1x1 window; then the [C] view
                    self.same(op, (s_in, z_in), (s, z))
                    pooled = f"{out}__pool"
                    self.qp[pooled] = (s, z)
                    self.shape[pooled] = [self.shape[a][0], 1, 1]
                    self.emit("adaptive_avg_pool2d", [a], pooled, output_size=[1, 1], input_scale=s_in,
                              input_zero_point=z_in, **oq)
                    self.views[out] = (pooled, np.arange(self.shape[a][0], dtype=np.int64))
                    return
            self.same(op, (s_in, z_in), (s, z))
            self.emit("mean_hw", [a], out, input_scale=s_in, input_zero_point=z_in, **oq)
        elif t == aten.adaptive_avg_pool2d.default:
            a, s_in, z_in = self.dq(op, op.args[0])
            self.same(op, (s_in, z_in), (s, z))
            self.emit("adaptive_avg_pool2d", [a], out, output_size=_pair(op.args[1]), input_scale=s_in,
                      input_zero_point=z_in, **oq)
        elif t in AVG_POOL:
            # not delegated (XNNPACK's partitioner takes avg_pool2d only in f32): ExecuTorch's
            # portable kernel on the dequantized input, then the next partition's quantize
            # (README "ExecuTorch portable kernels"); the quantizer gives it its own output qparams
            a, s_in, z_in = self.dq(op, op.args[0])
            a_ = list(op.args) + [None] * (7 - len(op.args))
            names = ["input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                     "divisor_override"]
            arg = {k: (a_[i] if a_[i] is not None else op.kwargs.get(k)) for i, k in enumerate(names)}
            if len(self.shape[a]) != 3:
                self.fail(op, f"avg_pool2d of a per-sample shape {self.shape[a]}: only [C, H, W]")
            k = _pair(arg["kernel_size"])
            div = arg["divisor_override"]
            cip = True if arg["count_include_pad"] is None else bool(arg["count_include_pad"])
            pad = _pair(arg["padding"] or 0)
            stride = _pair(arg["stride"]) if arg["stride"] else k
            if not arg["ceil_mode"] and not (cip and any(pad)) and div in (None, k[0] * k[1]):
                # executorch AvgPoolingConfig: then XNNPACK runs it, between its qs8 -> f32 and
                # f32 -> qs8 converts: its f32 average pooling (padding never in the divisor;
                # README "avg_pool2d (XNNPACK)"), densenet's transitions
                if any(p >= kk for p, kk in zip(pad, k)):
                    self.fail(op, f"avg_pool2d {k} with padding {pad}: padding must be smaller than the kernel")
                self.emit("xnn_avg_pool2d", [a], out, kernel=k, stride=stride, padding=pad, input_scale=s_in,
                          input_zero_point=z_in, **oq)
                return
            self.emit("avg_pool2d", [a], out, kernel=k, stride=_pair(arg["stride"]) if arg["stride"] else k,
                      padding=pad, ceil_mode=bool(arg["ceil_mode"] or False), count_include_pad=cip,
                      divisor_override=None if div is None else int(div), input_scale=s_in, input_zero_point=z_in,
                      **oq)
        elif t == aten.cat.default:
            srcs = [self.dq(op, x) for x in op.args[0]]
            dim = int(op.args[1]) if len(op.args) > 1 else int(op.kwargs.get("dim", 0))
            nd = len(self.shape[srcs[0][0]]) + 1
            if dim % nd != 1:
                self.fail(op, f"cat along dim {dim}: only the channels (dim 1)")
            for _, si, zi in srcs:
                self.same(op, (si, zi), (s, z))
            if len(srcs) == 1:
                # torch.cat([x]) (densenet's first layer of each block): a copy, same qparams
                self.emit("identity", [srcs[0][0]], out)
            else:
                self.emit("cat", [x[0] for x in srcs], out, dim=1, **oq)
        else:
            self.fail(op, f"op {t} is not supported for pt2e/XNNPACK export")

    def bn_of(self, n):
        """the batch norm node behind `n` (an aten batch_norm, or getitem 0 of a
        _native_batch_norm_legit_no_training), else None"""
        if not (isinstance(n, torch.fx.Node) and n.op == "call_function"):
            return None
        if n.target in BN:
            return n
        if n.target == operator.getitem and n.args[1] == 0 and isinstance(n.args[0], torch.fx.Node) \
                and n.args[0].op == "call_function" and n.args[0].target in BN_NATIVE:
            return n.args[0]
        return None

    def fuse_bn_act(self, src):
        """the float bounds of `relu / relu6 / hardtanh(batch_norm)`"""
        self.covered.add(src)
        if src.target in RELU:
            return 0.0, float("inf")
        if src.target in RELU6:
            return 0.0, 6.0
        return (float(src.args[1]) if len(src.args) > 1 else float(src.kwargs.get("min_val", -1.0)),
                float(src.args[2]) if len(src.args) > 2 else float(src.kwargs.get("max_val", 1.0)))

    def bn_args(self, bn, op):
        """(input value, s_in, z_in, mean, var, gamma, beta, eps) of a batch norm (eval) node"""
        self.covered.update([bn, op])
        a_ = list(bn.args)
        if bn.target in BN:
            names = ["input", "weight", "bias", "running_mean", "running_var", "training", "momentum", "eps"]
        else:
            names = ["input", "weight", "bias", "running_mean", "running_var", "momentum", "eps"]
        arg = {k: (a_[i] if i < len(a_) else bn.kwargs.get(k)) for i, k in enumerate(names)}
        if arg.get("training"):
            self.fail(bn, "batch_norm in training mode")
        a, s_in, z_in = self.dq(bn, arg["input"])
        if not 1 <= len(self.shape[a]) <= 3:
            self.fail(bn, f"batch_norm on a per-sample shape {self.shape[a]}: only [C], [C, L] or [C, H, W]")
        c = self.shape[a][0]

        def param(k, required):
            n = arg[k]
            if n is None and not required:
                return None
            t = self.v.get(n) if isinstance(n, torch.fx.Node) else None
            if not isinstance(t, torch.Tensor) or t.dtype != torch.float32 or t.numel() != c:
                self.fail(bn, f"batch_norm {k} is not a float32 constant of {c} values (ExecuTorch "
                              f"decomposes only static batch norms)")
            self.covered.add(n)
            return t.detach().reshape(-1).numpy().astype(np.float32)

        mean, var = param("running_mean", True), param("running_var", True)
        gamma, beta = param("weight", False), param("bias", False)
        eps = arg["eps"]
        if isinstance(eps, torch.fx.Node):
            self.fail(bn, "batch_norm eps is not a constant")
        return a, s_in, z_in, mean, var, gamma, beta, float(eps)

    def on_batch_norm(self, bn, op, out, oq, act):
        """dq(a) -> batch_norm (eval) [-> relu / hardtanh] -> q: ExecuTorch's XNNPACK partitioner
        decomposes the batch norm into an f32 1x1 depthwise convolution (DecomposeBatchNorm), run
        by XNNPACK in f32 between its qs8 -> f32 and f32 -> qs8 converts: per channel an
        elementwise map of the input byte, one 256-entry table per channel (channel_lut;
        xnnpack_rules.batch_norm_tables; README "batch norm")."""
        a, s_in, z_in, mean, var, gamma, beta, eps = self.bn_args(bn, op)
        lo, hi = act if act is not None else (-np.inf, np.inf)
        tables = xr.batch_norm_tables(mean, var, gamma, beta, eps, s_in, z_in, oq["output_scale"],
                                      oq["output_zero_point"], lo, hi)
        self.emit("batch_norm", [a], out, tables=tables, input_scale=s_in, input_zero_point=z_in, **oq)

    def bn_pool(self, n):
        """(pool, activation or None, batch norm, batch norm output) when `n` is a global average
        pool (adaptive_avg_pool2d(1) / mean over H, W) of `[relu / relu6 / hardtanh](batch_norm(dq))`,
        each read only by the next: densenet's tail, which XNNPACKQuantizer leaves in float"""
        if not (isinstance(n, torch.fx.Node) and n.op == "call_function"):
            return None
        if n.target == aten.adaptive_avg_pool2d.default:
            if _pair(n.args[1]) != [1, 1]:
                return None
        elif n.target != aten.mean.dim:
            return None
        src = n.args[0]
        if not isinstance(src, torch.fx.Node) or len(src.users) != 1:
            return None
        act = None
        if src.op == "call_function" and src.target in RELU + HARDTANH + RELU6:
            act, src = src, src.args[0]
            if not isinstance(src, torch.fx.Node) or len(src.users) != 1:
                return None
        bn = self.bn_of(src)
        return None if bn is None else (n, act, bn, src)

    def on_bn_mean(self, pool, out, oq):
        """dq(a) -> batch_norm [-> relu / relu6 / hardtanh] -> adaptive_avg_pool2d(1) / mean(keepdim)
        [-> shape ops] -> q, all in float between the dequantize and the quantize (densenet's
        `norm5 -> relu -> adaptive_avg_pool2d -> flatten`): XNNPACK runs the batch norm as its f32
        depthwise conv (+ clamp), the pool as its f32 global average (static_mean: one sequential
        f32 sum per channel in row-major pixel order, times f32(1.0f / N)) and converts to qs8:
        `xnnpack_channel_mean` over the per-byte f32 values (README "batch norm + mean"). Emits
        the [C, 1, 1] int8 value `out`."""
        pool, act, bn, bn_out = self.bn_pool(pool)
        if pool.target == aten.mean.dim:
            dims = sorted(int(d) % 4 for d in pool.args[1])
            keep = pool.args[2] if len(pool.args) > 2 else pool.kwargs.get("keepdim", False)
            if dims != [2, 3]:
                self.fail(pool, f"mean over {list(pool.args[1])}: only over [2, 3]")
            if not keep:
                self.fail(pool, "a float mean without keepdim of a batch norm: ExecuTorch runs it with its "
                                "portable mean kernel (not XNNPACK's global average), which is not mapped; use "
                                "keepdim=True or adaptive_avg_pool2d")
        self.covered.add(pool)
        lo, hi = -np.inf, np.inf
        if act is not None:
            lo, hi = self.fuse_bn_act(act)
        a, s_in, z_in, mean, var, gamma, beta, eps = self.bn_args(bn, bn_out)
        if len(self.shape[a]) != 3:
            self.fail(pool, f"global average of a per-sample shape {self.shape[a]}: only [C, H, W]")
        values = xr.batch_norm_values(mean, var, gamma, beta, eps, s_in, z_in, lo, hi)
        self.qp[out] = (oq["output_scale"], oq["output_zero_point"])
        self.shape[out] = [self.shape[a][0], 1, 1]
        self.emit("batch_norm_mean", [a], out, values=values, input_scale=s_in, input_zero_point=z_in, **oq)
        return out

    def is_shape_op(self, n):
        return n.op == "call_function" and (n.target in RESHAPE + DROPOUT + MOVE or (
            n.target == operator.getitem and isinstance(n.args[0], torch.fx.Node) and n.args[0].target in SPLIT))

    def move(self, m, idx):
        """the per-sample index after shape op `m`"""
        t = m.target
        nd = idx.ndim + 1
        if t in DROPOUT:
            if t not in (aten.clone.default, aten.contiguous.default):
                train = m.args[2] if len(m.args) > 2 else m.kwargs.get("train", False)
                if train:
                    self.fail(m, "dropout in training mode")
            return idx
        if t in RESHAPE:
            full = list(self.v[m].shape)
            if full[0] != self.v[m.args[0]].shape[0] or int(np.prod(full[1:])) != idx.size:
                self.fail(m, f"reshape to {full} moves elements across the batch dimension")
            return idx.reshape(full[1:])
        if t == aten.transpose.int:
            d0, d1 = int(m.args[1]) % nd, int(m.args[2]) % nd
            if 0 in (d0, d1) and d0 != d1:
                self.fail(m, "transpose of the batch dimension")
            return np.swapaxes(idx, d0 - 1, d1 - 1) if d0 != d1 else idx
        if t == aten.permute.default:
            dims = [int(d) % nd for d in m.args[1]]
            if dims[0] != 0:
                self.fail(m, "permute of the batch dimension")
            return np.transpose(idx, [d - 1 for d in dims[1:]])
        sp, k = m.args[0], int(m.args[1])
        dim = sp.args[2] if len(sp.args) > 2 else sp.kwargs.get("dim", 0)
        dim = int(dim) % nd
        if dim == 0:
            self.fail(sp, "split along the batch dimension")
        n = idx.shape[dim - 1]
        if sp.target == aten.chunk.default:
            c = -(-n // int(sp.args[1]))
            sizes = [min(c, n - i) for i in range(0, n, c)]
        elif isinstance(sp.args[1], int):
            sizes = [min(int(sp.args[1]), n - i) for i in range(0, n, int(sp.args[1]))]
        else:
            sizes = [int(v) for v in sp.args[1]]
        start = sum(sizes[:k])
        return np.take(idx, np.arange(start, start + sizes[k]), axis=dim - 1)

    def on_float_chain(self, op, out, oq):
        """dq(a) -> a chain of float unary ops (sigmoid, hardswish, ...) and shape ops (view,
        transpose, chunk, dropout, ...) in any order -> q. Unary ops are elementwise and shape
        ops move bytes, so the chain is one 256-entry table (XNNPACK runs such a unary chain as
        a LUT, xnn_subgraph_fuse_unary_quantized_into_lut; the f32 values are the same when it
        does not fuse) on the source, then one view of it, written as a gather / reshape when a
        compute op reads it (ShuffleNet's channel shuffle view(b, g, c/g, h, w) ->
        transpose(1, 2) -> contiguous -> view(b, c, h, w) -> chunk). Shape ops alone between
        equal qparams need no table; between different qparams the table requantizes."""
        fns, moves = [], []
        n = op
        while isinstance(n, torch.fx.Node) and n.op == "call_function" and (n.target in UNARY or
                                                                              self.is_shape_op(n)):
            self.covered.add(n)
            if n.target in UNARY:
                fn = UNARY[n.target]
                param = None
                if fn == "leaky_relu":
                    param = float(n.args[1]) if len(n.args) > 1 else float(n.kwargs.get("negative_slope", 0.01))
                if fn == "gelu":
                    approx = n.kwargs.get("approximate", n.args[1] if len(n.args) > 1 else "none")
                    if approx != "none":
                        self.fail(n, f"gelu(approximate={approx!r}): only the erf form is supported")
                fns.append((fn, param))
            else:
                moves.append(n)
                if n.target == operator.getitem:
                    self.covered.add(n.args[0])
                    n = n.args[0]
            n = n.args[0]
        s, z = oq["output_scale"], oq["output_zero_point"]
        if not fns and self.bn_pool(n) is not None:
            # densenet's tail: batch_norm -> relu -> pool in float, then flatten
            a, s_in, z_in = self.on_bn_mean(n, f"{out}__mean", oq), s, z
        else:
            a, s_in, z_in = self.dq(op, n, virtual=True)
        base, idx = self.view_of(a)
        for m in reversed(moves):
            idx = self.move(m, idx)
        if list(idx.shape) != list(self.shape[out]):
            self.fail(op, f"shape ops give {list(idx.shape)}, PyTorch {self.shape[out]}")
        if fns or (np.float32(s_in), z_in) != (np.float32(s), z):
            lut = f"{out}__lut"
            self.qp[lut] = (s, z)
            self.shape[lut] = list(self.shape[base])
            self.emit("unary", [base], lut, chain=fns[::-1], input_scale=s_in, input_zero_point=z_in, **oq)
            base = lut
        self.views[out] = (base, np.ascontiguousarray(idx))

    def same(self, op, qi, qo):
        if (np.float32(qi[0]), qi[1]) != (np.float32(qo[0]), qo[1]):
            self.fail(op, f"input qparams {qi} differ from output qparams {qo} (XNNPACKQuantizer shares "
                          f"them for this op)")

    def on_output(self, o):
        if not isinstance(o, torch.fx.Node):
            self.fail(None, f"graph output {o!r} is not a tensor")
        if o.target in DQ_T:
            a, s, z = self.dq(o, o)
            out = o.name
            self.emit("dequantize", [a], out)
            return out
        if o.target in RELU6 + HARDTANH + RELU:
            self.covered.add(o)
            inner = self.on_output(o.args[0])
            if o.target in RELU6:
                lo, hi = 0.0, 6.0
            elif o.target in RELU:
                lo, hi = 0.0, float("inf")
            else:
                lo, hi = float(o.args[1]), float(o.args[2])
            self.emit("f32_clamp", [inner], o.name, min=lo, max=hi)
            return o.name
        self.fail(o, f"graph output from op {o.target}: outputs must be dequantized int8 tensors")


def merge_clamps(ir):
    """XNNPACK's optimize_common_subgraphs_merge_clamps (README "clamp"): a clamp whose input
    is produced by a conv2d / linear / max_pool2d read by nothing else is removed; the producer
    writes the clamp's output tensor (its qparams) with bounds
    [min(max(p_lo, c_lo), c_hi), min(max(p_hi, c_lo), c_hi)]."""
    users = {}
    for n in ir:
        for v in n["inputs"]:
            users[v] = users.get(v, 0) + 1
    by_out = {n["output"]: n for n in ir}
    keep = []
    for n in ir:
        p = by_out.get(n["inputs"][0]) if n["op"] == "clamp" else None
        if p is not None and p["op"] in ("conv2d", "linear", "max_pool2d") and users[n["inputs"][0]] == 1:
            plo, phi = p.get("act_min", -np.inf), p.get("act_max", np.inf)
            p["act_min"] = min(max(plo, n["min"]), n["max"])
            p["act_max"] = min(max(phi, n["min"]), n["max"])
            if p["op"] == "max_pool2d" and (np.float32(n["output_scale"]), n["output_zero_point"]) != \
                    (np.float32(p["output_scale"]), p["output_zero_point"]):
                p["reinterpreted"] = True
            p["output"] = n["output"]
            p["output_scale"], p["output_zero_point"] = n["output_scale"], n["output_zero_point"]
            by_out[n["output"]] = p
            continue
        keep.append(n)
    return keep


def build_xnnpack(gm, example_inputs, fail, warn):
    """The qfuse header pieces (inputs, outputs, nodes, tensors) of a pt2e graph."""
    _init_ops()
    rec = _Recorder(gm)
    with torch.no_grad():
        rec.run(*example_inputs)
    w = _Walker(gm, rec.val, fail).run()
    ir = merge_clamps(w.ir)
    nodes, tensors = [], {}
    # names by position and op (the same for convert_pt2e's GraphModule and an ExportedProgram
    # of it, whose fx names differ)
    canon = {}
    for k, nd in enumerate(ir):
        canon[nd["output"]] = f"{nd['op'].replace('_hw', '')}_{k}"
    alias = {}

    def nm(v):
        v = canon.get(v, v)
        return alias.get(v, v)

    def qkeys(s, z):
        return {"scale": float(s), "zero_point": int(z), "dtype": "qint8"}

    for nd in ir:
        op, out = nd["op"], canon[nd["output"]]
        ins = [nm(v) for v in nd["inputs"]]
        if op == "identity":
            alias[out] = ins[0]
            continue
        node = {"name": out, "op": None, "inputs": ins}
        if op == "quantize":
            node.update(op="quantize", **qkeys(nd["output_scale"], nd["output_zero_point"]))
        elif op == "dequantize":
            node.update(op="dequantize")
        elif op in ("conv2d", "linear"):
            so, zo = nd["output_scale"], nd["output_zero_point"]
            wq, ws = nd["weight_q"], nd["weight_scale"]
            o = wq.shape[0]
            b = nd["bias"] if nd["bias"] is not None else None
            if b is not None and b.shape != (o,):
                fail(nd["src"], f"bias of shape {list(b.shape)} for {o} output channels")
            b32 = xr.bias_i32(b, ws, nd["input_scale"], nd["per_channel"]) if b is not None \
                else np.zeros(o, dtype=np.int32)
            node.update(op=op)
            if op == "conv2d":
                node.update(stride=nd["stride"], padding=nd["padding"], dilation=nd["dilation"],
                            groups=nd["groups"])
            node.update(activation="none", requant="xnnpack", **qkeys(so, zo))
            lo, hi = -128, 127
            if "act_min" in nd:
                lo, hi = xr.quantize_bound(nd["act_min"], so, zo), xr.quantize_bound(nd["act_max"], so, zo)
            if (lo, hi) != (-128, 127):
                node["clamp"] = [lo + 128, hi + 128]
            tensors[f"{out}.weight"] = np.ascontiguousarray(wq)
            tensors[f"{out}.weight_scale"] = np.ascontiguousarray(ws, dtype=np.float32)
            tensors[f"{out}.weight_zero_point"] = np.zeros(o, dtype=np.int32)
            tensors[f"{out}.bias_i32"] = np.ascontiguousarray(b32, dtype=np.int32)
        elif op in ("add", "mul"):
            (sa, sb), (za, zb) = nd["input_scales"], nd["input_zero_points"]
            so, zo = nd["output_scale"], nd["output_zero_point"]
            lo = xr.quantize_bound(0.0, so, zo) if nd["activation"] == "relu" else -128
            fn = xr.add_table if op == "add" else xr.mul_table
            try:
                t = fn(sa, za, sb, zb, so, zo, lo, 127)
            except ValueError as e:
                fail(None, f"{op} {out}: {e}")
            node.update(op="binary", **qkeys(so, zo))
            tensors[f"{out}.table"] = t
        elif op == "clamp":
            t = xr.clamp_table(nd["input_scale"], nd["input_zero_point"], nd["output_scale"],
                               nd["output_zero_point"], nd["min"], nd["max"])
            node.update(op="lut", table=t, scale=float(nd["output_scale"]), zero_point=int(nd["output_zero_point"]),
                        signed=True)
        elif op == "unary":
            t = xr.unary_table(nd["chain"], nd["input_scale"], nd["input_zero_point"], nd["output_scale"],
                               nd["output_zero_point"])
            node.update(op="lut", table=t, scale=float(nd["output_scale"]), zero_point=int(nd["output_zero_point"]),
                        signed=True)
        elif op == "max_pool2d":
            node.update(op="max_pool2d", kernel_size=nd["kernel"], stride=nd["stride"], padding=nd["padding"],
                        dilation=nd["dilation"], ceil_mode=nd["ceil_mode"])
            if "act_min" in nd:
                if nd.get("reinterpreted"):
                    warn(f"{out}: a max pool followed by a clamp with new qparams (e.g. relu6): XNNPACK merges "
                         f"the clamp and reads the pool's int8 values with the clamp's qparams (wrong values, "
                         f"reproduced as ExecuTorch computes them)")
                pooled = f"{out}.pool"
                node["name"] = pooled
                nodes.append(node)
                node = {"name": out, "op": "lut", "inputs": [pooled],
                        "table": xr.merged_clamp_table(nd["output_scale"], nd["output_zero_point"],
                                                       nd["act_min"], nd["act_max"]),
                        "scale": float(nd["output_scale"]), "zero_point": int(nd["output_zero_point"]),
                        "signed": True}
        elif op == "batch_norm":
            node.update(op="channel_lut", scale=float(nd["output_scale"]), zero_point=int(nd["output_zero_point"]),
                        signed=True)
            tensors[f"{out}.tables"] = np.ascontiguousarray(nd["tables"], dtype=np.uint8)
        elif op == "batch_norm_mean":
            node.update(op="xnnpack_channel_mean", scale=float(nd["output_scale"]),
                        zero_point=int(nd["output_zero_point"]), signed=True)
            tensors[f"{out}.values"] = np.ascontiguousarray(nd["values"], dtype=np.float32)
        elif op == "mean_hw":
            node.update(op="mean", dims=[2, 3], keepdim=True)
        elif op == "adaptive_avg_pool2d":
            node.update(op="adaptive_avg_pool2d", output_size=nd["output_size"])
        elif op == "xnn_avg_pool2d":
            node.update(op="xnnpack_avg_pool2d", kernel_size=nd["kernel"], stride=nd["stride"],
                        padding=nd["padding"], scale=float(nd["output_scale"]),
                        zero_point=int(nd["output_zero_point"]), signed=True)
        elif op == "avg_pool2d":
            node.update(op="portable_avg_pool2d", kernel_size=nd["kernel"], stride=nd["stride"],
                        padding=nd["padding"], ceil_mode=nd["ceil_mode"], count_include_pad=nd["count_include_pad"],
                        divisor_override=nd["divisor_override"], scale=float(nd["output_scale"]),
                        zero_point=int(nd["output_zero_point"]), signed=True)
        elif op == "cat":
            node.update(op="cat", dim=1, **qkeys(nd["output_scale"], nd["output_zero_point"]))
        elif op == "gather":
            node.update(op="gather", shape=nd["shape"])
            tensors[f"{out}.index"] = np.ascontiguousarray(nd["index"], dtype=np.uint32)
        elif op == "reshape":
            shp = nd["shape"]
            if len(shp) == 1:
                node.update(op="flatten", start_dim=1, end_dim=-1)
            else:
                node.update(op="reshape", shape=shp)
        elif op == "f32_clamp":
            node.update(op="host_float", fn="clip", min=float(nd["min"]),
                        max=float(nd["max"]) if np.isfinite(nd["max"]) else float(np.finfo(np.float32).max))
        else:
            raise AssertionError(op)
        nodes.append(node)
    inputs = [{"name": n, "shape": s} for n, s in w.inputs]
    outputs = [nm(o) for o in w.outputs]
    observed = {}
    for v, shp in w.shape.items():
        if v in canon:
            observed[nm(v)] = shp
    return inputs, outputs, nodes, tensors, observed
