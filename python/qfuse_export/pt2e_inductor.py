"""Export pt2e models quantized with torchao's `X86InductorQuantizer` as qfuse
`"engine": "inductor_x86"` files: the numbers of the converted model compiled by
`torch.compile` (Inductor, `torch._inductor.config.freezing = True`, the torchao x86
lowerings registered) on an x86 CPU with AVX-512 VNNI. Rules:
tests/data/pt2e/README.md, "Inductor x86 (oneDNN) account" and "Inductor x86 graphs".

Recognised (uint8 activations [0, 255], int8 per-channel symmetric weights):
  x (f32 graph input) -> q                                  quantize (Inductor: rint(x * f32(1/s)) + z)
  conv2d/linear(dq(a), dq_per_channel(w), b) [-> relu | hardtanh] -> q
        oneDNN writes u8:                                   conv2d/linear, requant "onednn" (+ clamp)
  conv2d(dq(a), dq_per_channel(w), b) -> hardswish -> q  conv2d, requant "onednn", "eltwise": "hardswish"
        (oneDNN's hardswish post-op, u8 output)
  conv2d(dq(a), dq_per_channel(w), b) -> silu -> q       conv2d, requant "onednn", "eltwise": "swish"
        (oneDNN's swish post-op, u8 output)
  conv2d(...) [-> relu | hardtanh] -> max_pool2d [-> flatten] -> q (float max pool between the conv and q)
        oneDNN writes f32, Inductor's C++ pools and quantizes: conv2d, requant "inductor_x86"
        (+ clamp), then max_pool2d on bytes (exact: quantize is monotone)
  conv2d(dq(x)) + dq(a) [-> relu] -> q (either order)       conv2d with inputs [x, a], requant "onednn":
        oneDNN's sum post-op (qconv2d_pointwise.binary)     t = fma(a - za, sa, v), relu, u = f32(t * inv),
                                                            rint(u + zo) (zero point before rounding)
        (when a is the conv's own input or an op     conv2d with inputs [x, a], "output": "float32"
        that is not an ancestor still reads it:      (t = f32(v + f32((a - za) * sa)), relu), then quantize
        oneDNN writes f32, Inductor quantizes)
  relu(conv2d(dq(x)) + dq(a)) -> adaptive_avg_pool2d(1) [-> flatten] -> q (a resnet's end: oneDNN writes
        f32, Inductor's C++ averages and quantizes)         conv2d with inputs [x, a], "global_avg_pool"
  [relu(]conv2d(dq(x))[)] -> mean([2, 3]) / adaptive_avg_pool2d(1) [-> flatten / dropout] -> q
        (mnasnet's end: oneDNN writes f32, Inductor's C++  conv2d with one input, "global_avg_pool"
        averages and quantizes)                             (EpilogueForm::OnednnPool)
  adaptive_avg_pool2d(dq(a), 1) / mean(dq(a), [2, 3]) -> q (equal qparams)
                                                            adaptive_avg_pool2d [1, 1] (+ reshape)
  avg_pool2d(dq(a)) / adaptive_avg_pool2d(dq(a), any) -> q (equal qparams)
                                                            avg_pool2d / adaptive_avg_pool2d (Inductor's C++:
                                                            row-major f32 sum, / f32(count), rint(v * f32(1/s)) + z;
                                                            ATen fallbacks past 25 taps refused)
  linear/conv [-> relu] -> dropout (eval) -> q              the dropout dropped
  dq -> flatten [-> dropout] -> q with other qparams        reshape + lut (dequantize-quantize table)
  max_pool2d(dq(a)) -> q (equal qparams)                    max_pool2d (quantized.max_pool2d on u8)
  cat([dq(a_i)], 1) -> q (equal qparams)                    cat
  flatten / view / reshape (dq(a)) -> q (equal qparams)     flatten / reshape
  dq(a) -> graph output                                     dequantize
  dq(a) -> flatten / view [-> dropout] -> graph output      reshape (on the bytes) + dequantize
  linear(dq(a), w, b) [-> relu] -> graph output (oneDNN writes f32)
                                                            dequantize + host_float "onednn_linear"
                                                            (exact, on the host)
  float regions: cat / view / transpose / contiguous / chunk items / max_pool2d / relu / hardtanh over
  dequantized bytes and f32 conv outputs -> q (ShuffleNet's channel shuffle, GoogLeNet's pools of cats)
                                                            each source quantized on its own (lut, or a conv with
                                                            requant "inductor_x86"), one gather, max_pool2d on bytes
  dq -> batch_norm (eval) [-> relu | hardtanh] -> q (also through cat)
                                                            channel_lut (Inductor's eval decomposition)
  dq -> batch_norm / relu chain -> adaptive_avg_pool2d(1) / mean([2, 3]) [-> flatten] -> q (DenseNet's tail)
                                                            dequantize + host_float "table_mean" (read only by a
                                                            last linear or the output)
  avg_pool2d(x) -> q, x float: cats / max_pool2d of [relu](conv2d) outputs (inception_v3's branch pools;
        oneDNN writes f32, Inductor's C++ max-pools,        per f32 part: conv2d "output": "float32"
        copies into the cat buffer, averages, quantizes)    [-> max_pool2d (f32)] -> inductor_avg_pool2d;
                                                            a cat of the bytes
  dq -> max_pool2d(ceil_mode) -> q                          max_pool2d without ceil_mode (Inductor's
                                                            quantized.max_pool2d drops it; refused where the
                                                            shape would differ)
  [post-op](conv2d/linear) read by a float op or as a graph output (oneDNN writes f32)
                                                            conv2d / linear with "output": "float32"
                                                            (post-op relu / hardswish / swish), once per value
  gate(conv_b) * [post-op](conv_a) -> q (squeeze-excitation, hardsigmoid / sigmoid gate)
                                                            inductor_gate_mul of the two f32 outputs
  linear -> hardswish -> q (mobilenet_v3's classifier)      inductor_hardswish of the f32 linear output
  a + b -> q, a and b f32 (e.g. max pools of relu(conv))    inductor_add of the two f32 tensors
  conv -> silu -> q                                         conv2d, requant "onednn", "eltwise": "swish"
Refused with ExportError naming the node: float ops on float conv outputs other than those above
(an add with a relu after it, an add of a dequantized tensor and a float one), an
average pool of a float tensor other than the inception form above, and anything else.
"""
import operator

import numpy as np
import torch
import torch.fx

from . import pt2e as P

aten = torch.ops.aten


def is_inductor_x86(gm):
    """True when the graph's activations are uint8 (X86InductorQuantizer's)."""
    P._init_ops()
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target in P.Q_T:
            dt = n.kwargs.get("dtype", n.args[5] if len(n.args) > 5 else None)
            return dt == torch.uint8
    return False


def onednn_u8(v, s_out, z_out):
    """oneDNN's u8 output of an f32 value (README): clamp(rint(f32(v * f32(1/s)) + f32(z)))"""
    inv = np.float32(1.0) / np.float32(s_out)
    t = np.float32(np.float32(v) * inv) + np.float32(z_out)
    return int(np.clip(np.rint(np.float32(t)), 0, 255))


def inductor_u8(v, s_out, z_out):
    """Inductor's quantize of an f32 value: clamp(rint(f32(v * f32(1/s))) + z)"""
    inv = np.float32(1.0) / np.float32(s_out)
    return int(np.clip(np.rint(np.float32(np.float32(v) * inv)) + z_out, 0, 255))


def inductor_requant_table(s_in, z_in, s_out, z_out):
    """Inductor's C++ dequantize then quantize of every u8 byte: x = f32(f32(q - z_in) * s_in),
    y = clamp(rint(f32(x * c)) + z_out, 0, 255), c = f32(1.0 / s_out) (f64 division, as emitted)"""
    c = np.float32(1.0 / float(s_out))
    x = (np.arange(256, dtype=np.float32) - np.float32(z_in)).astype(np.float32) * np.float32(s_in)
    r = np.rint((x.astype(np.float32) * c).astype(np.float32)) + z_out
    return [int(v) for v in np.clip(r, 0, 255)]


def requant_chain_table(s_in, z_in, s_out, z_out, fns=()):
    """Inductor's C++ dequantize, elementwise float ops `fns` (innermost first), then quantize of
    every u8 byte (inductor_requant_table's steps): a list of 256 bytes, or a [C, 256] uint8 array
    when a batch norm makes the map per channel. `fns` entries, each a separate f32 operation as in
    the generated code (-ffp-contract=off):
      ("clamp", lo, hi)               relu: max(x, 0); hardtanh: min(max(x, lo), hi)
      ("bn", mean, invstd, w, b)      x = f32(f32(f32(x - mean[c]) * invstd[c]) * w[c]) + b[c]
                                      (cpp_fused__native_batch_norm_legit_no_training_...: the eval
                                      decomposition, invstd = rsqrt(var + eps) folded by freezing)"""
    c = np.float32(1.0 / float(s_out))
    per_channel = any(f[0] == "bn" for f in fns)
    x = float_chain_values(s_in, z_in, fns)
    r = np.clip(np.rint((x * c).astype(np.float32)) + np.float32(z_out), 0, 255)
    if per_channel:
        return r.astype(np.uint8)
    return [int(v) for v in r]


def float_chain_values(s_in, z_in, fns=(), channels=None):
    """the f32 values of every u8 byte after Inductor's dequantize and `fns` (requant_chain_table):
    [256], or [C, 256] with a batch norm or `channels`"""
    x = ((np.arange(256, dtype=np.float32) - np.float32(z_in)).astype(np.float32) * np.float32(s_in)).astype(np.float32)
    per_channel = any(f[0] == "bn" for f in fns)
    if channels is not None and not per_channel:
        x = np.tile(x, (channels, 1))
    if per_channel:
        nc = len(next(f for f in fns if f[0] == "bn")[1])
        x = np.tile(x, (nc, 1))
    for f in fns:
        if f[0] == "clamp":
            lo, hi = f[1], f[2]
            x = np.maximum(x, np.float32(lo)) if lo != -np.inf else x
            x = np.minimum(x, np.float32(hi)) if hi != np.inf else x
        else:
            mean, invstd, w, b = (np.asarray(v, dtype=np.float32)[:, None] for v in f[1:])
            x = (x - mean).astype(np.float32)
            x = (x * invstd).astype(np.float32)
            x = (x * w).astype(np.float32)
            x = (x + b).astype(np.float32)
    return x


class _IndWalker(P._Walker):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.fvalue = {}      # fx node -> the qfuse tensor holding its f32 value (float_value)
        self.host_f32 = {}    # quantized value name -> the host float value holding its dequantized bytes
        self.host_ok = False  # set while the graph outputs are mapped
        self.leaf_id = {}     # float-region source key -> id
        self.leaf_info = []   # id -> dict(kind, ..., name once written)

    def check_act(self, node, q):
        s, z, lo, hi, dt = q
        if dt != torch.uint8:
            self.fail(node, f"activation dtype {dt}: an X86InductorQuantizer model has uint8 activations")
        if (lo, hi) not in ((0, 255), (0, 127)):
            self.fail(node, f"activation range [{lo}, {hi}]: only [0, 255] (or reduce_range [0, 127])")
        return s, z

    def single_user(self, n, user):
        return len(n.users) == 1 and next(iter(n.users)) is user

    def act_of(self, n):
        """(lo, hi) of a relu / hardtanh / relu6 node"""
        if n.target in P.RELU:
            return (0.0, float("inf"))
        if n.target in P.RELU6:
            return (0.0, 6.0)
        lo = float(n.args[1]) if len(n.args) > 1 else float(n.kwargs.get("min_val", -1.0))
        hi = float(n.args[2]) if len(n.args) > 2 else float(n.kwargs.get("max_val", 1.0))
        return (lo, hi)

    def on_sum_pool(self, q, src, out, oq):
        reshape = None
        if src.target in P.RESHAPE and isinstance(src.args[0], torch.fx.Node) and len(src.users) == 1:
            reshape, src = src, src.args[0]
        if not (src.op == "call_function" and src.target == aten.adaptive_avg_pool2d.default and
                _pair(src.args[1]) == [1, 1] and len(src.users) == 1):
            return False
        inner = src.args[0]
        relu = None
        if isinstance(inner, torch.fx.Node) and inner.target in P.RELU and len(inner.users) == 1:
            relu, inner = inner, inner.args[0]
        if not (isinstance(inner, torch.fx.Node) and inner.target in P.ADD and len(inner.users) == 1):
            return False
        sc = self.sum_conv(inner)
        if sc is None:
            return False
        conv_node, other = sc
        if conv_node.args[6:7] and int(conv_node.args[6] or 1) != 1:
            self.fail(conv_node, "a grouped conv with a sum post-op read by a global average: only groups 1 "
                                 "(qfuse runs it on the split-K kernels)")
        self.covered.update([x for x in (reshape, src, relu, inner, conv_node) if x is not None])
        a_sum, _, _ = self.dq(inner, other)
        pooled = out if reshape is None else out + "__pool"
        if reshape is not None:
            self.qp[pooled] = self.qp[out]
            self.shape[pooled] = list(self.v[src].shape[1:])
        act = (0.0, float("inf")) if relu is not None else None
        self.layer(conv_node, pooled, oq, act, "onednn", extra=[a_sum], global_avg_pool=True)
        if reshape is not None:
            self.emit("reshape", [pooled], out, shape=self.shape[out])
        return True

    def on_conv_pool(self, q, src, out, oq):
        views = []
        while isinstance(src, torch.fx.Node) and src.op == "call_function" and \
                src.target in P.RESHAPE + P.DROPOUT and isinstance(src.args[0], torch.fx.Node) and \
                len(src.users) == 1:
            views.append(src)
            src = src.args[0]
        if not (isinstance(src, torch.fx.Node) and src.op == "call_function" and len(src.users) == 1):
            return False
        t = src.target
        if t == aten.mean.dim:
            if sorted(int(d) % 4 for d in src.args[1]) != [2, 3]:
                return False
        elif not (t == aten.adaptive_avg_pool2d.default and _pair(src.args[1]) == [1, 1]):
            return False
        inner = src.args[0]
        if isinstance(inner, torch.fx.Node) and inner.op == "call_function" and inner.target == aten.cat.default:
            return self.on_cat_pool(q, src, inner, views, out, oq)
        relu = None
        if isinstance(inner, torch.fx.Node) and inner.op == "call_function" and inner.target in P.RELU and \
                len(inner.users) == 1:
            relu, inner = inner, inner.args[0]
        if not (isinstance(inner, torch.fx.Node) and inner.op == "call_function" and inner.target in P.CONV):
            return False
        if len(inner.users) != 1:
            self.fail(inner, "a conv2d read by a global average and by other ops: its f32 output is read "
                             "unquantized elsewhere; not supported")
        groups = int(inner.args[6]) if len(inner.args) > 6 and inner.args[6] is not None else 1
        if groups != 1:
            self.fail(inner, "a grouped conv read by a global average: only groups 1 (qfuse runs it on the "
                             "split-K kernels)")
        if len(self.v[inner].shape) != 4:
            self.fail(inner, f"a conv2d of shape {list(self.v[inner].shape)} read by a global average")
        self.covered.update([x for x in [src, relu, inner] + views if x is not None])
        pooled = out + "__pool"
        self.qp[pooled] = self.qp[out]
        self.shape[pooled] = [int(self.v[inner].shape[1]), 1, 1]
        act = (0.0, float("inf")) if relu is not None else None
        self.layer(inner, pooled, oq, act, "onednn", global_avg_pool=True)
        if self.shape[out] == self.shape[pooled]:
            self.emit("identity", [pooled], out)
        else:
            self.emit("reshape", [pooled], out, shape=self.shape[out])
        return True

    def on_cat_pool(self, q, pool, cat, views, out, oq):
        """cat([relu](conv2d(dq(x_i))), 1) -> mean([2, 3]) / adaptive_avg_pool2d(1) [-> flatten / dropout] -> q
        (googlenet's end). Inductor's C++ (cpp_fused_cat_mean_quantize_per_tensor_view_...) copies each
        conv's oneDNN f32 output into the cat buffer unchanged, then per channel sums the pixels in
        order from 0 (channels-last, 16 channels per vector: one lane per channel), divides by
        f32(H*W) and quantizes: per channel exactly the plain conv's mean (on_conv_pool). A channel
        cat commutes with a per-channel average, so each branch is one conv2d "global_avg_pool"
        with the quantize's qparams, and the cat moves those bytes (equal qparams: a copy).
        Returns False (the float region's message) when a branch is not [relu](conv2d)."""
        dim = int(cat.args[1]) if len(cat.args) > 1 else int(cat.kwargs.get("dim", 0))
        if len(cat.users) != 1 or dim % self.v[cat].dim() != 1:
            return False
        # nested channel cats read only by the outer cat (inception_v3's Mixed_7c: cat([x, cat([a,
        # b]), cat([c, d]), y])) are one cat of their inputs
        xs, inner = [], []

        def flat(n):
            if isinstance(n, torch.fx.Node) and n.op == "call_function" and n.target == aten.cat.default and \
                    len(n.users) == 1 and (int(n.args[1]) if len(n.args) > 1 else
                                           int(n.kwargs.get("dim", 0))) % self.v[n].dim() == 1:
                inner.append(n)
                for m in n.args[0]:
                    flat(m)
            else:
                xs.append(n)

        for m in cat.args[0]:
            flat(m)
        branches = []
        for x in xs:
            relu, c = None, x
            if isinstance(c, torch.fx.Node) and c.op == "call_function" and c.target in P.RELU and len(c.users) == 1:
                relu, c = c, c.args[0]
            if not (isinstance(c, torch.fx.Node) and c.op == "call_function" and c.target in P.CONV and
                    len(c.users) == 1 and len(self.v[c].shape) == 4):
                return False
            groups = int(c.args[6]) if len(c.args) > 6 and c.args[6] is not None else 1
            if groups != 1:
                self.fail(c, "a grouped conv read by a global average (through a cat): only groups 1 "
                             "(qfuse runs it on the split-K kernels)")
            branches.append((relu, c))
        self.covered.update([pool, cat] + views + inner)
        names = []
        for i, (relu, c) in enumerate(branches):
            self.covered.update([n for n in (relu, c) if n is not None])
            pooled = f"{out}__pool{i}"
            self.qp[pooled] = self.qp[out]
            self.shape[pooled] = [int(self.v[c].shape[1]), 1, 1]
            act = (0.0, float("inf")) if relu is not None else None
            self.layer(c, pooled, oq, act, "onednn", global_avg_pool=True)
            names.append(pooled)
        cat_out = out + "__cat"
        self.qp[cat_out] = self.qp[out]
        self.shape[cat_out] = [sum(self.shape[n][0] for n in names), 1, 1]
        if len(names) == 1:
            self.emit("identity", names, cat_out)
        else:
            self.emit("cat", names, cat_out, dim=1, **oq)
        if self.shape[out] == self.shape[cat_out]:
            self.emit("identity", [cat_out], out)
        else:
            self.emit("reshape", [cat_out], out, shape=self.shape[out])
        return True

    def sum_conv(self, add):
        """(conv node, the dequantize of the other addend) when `add` is conv(dq(x)) + dq(a) with the
        conv read by the add alone (Inductor's qconv2d_pointwise.binary pattern), else None"""
        if len(add.args) < 2 or (len(add.args) > 2 and add.args[2] != 1) or add.kwargs.get("alpha", 1) != 1:
            return None
        a, b = add.args[0], add.args[1]
        for c, o in ((a, b), (b, a)):
            if isinstance(c, torch.fx.Node) and c.op == "call_function" and c.target in P.CONV and \
                    len(c.users) == 1 and isinstance(o, torch.fx.Node) and o.target in P.DQ_T:
                return c, o
        return None

    def float_add(self, add):
        """Whether `add` adds two float tensors Inductor holds in f32 (neither a dequantize: oneDNN's
        f32 conv outputs or max pools of them), alpha 1"""
        if len(add.args) < 2 or (len(add.args) > 2 and add.args[2] != 1) or add.kwargs.get("alpha", 1) != 1:
            return False
        return all(isinstance(v, torch.fx.Node) and v.op == "call_function" and v.target not in P.DQ_T
                   for v in add.args[:2])

    def sum_in_place(self, conv, other, add):
        """Whether Inductor lets oneDNN write conv(x) + dq(a) into a's u8 buffer (its u8 sum
        pattern; torch/_inductor/fx_passes/quantization.py, _is_valid_quantized_op_binary_optimization_
        pattern): not when a is the conv's own input, nor when an op that is not an ancestor of the
        conv still reads a. Otherwise Inductor takes the f32 pattern (oneDNN writes f32)."""
        accum = other.args[0]
        x = conv.args[0]
        if isinstance(x, torch.fx.Node) and x.target in P.DQ_T and x.args[0] is accum:
            return False
        ancestors, todo = set(), [conv]
        while todo:
            n = todo.pop()
            for i in n.all_input_nodes:
                if i not in ancestors:
                    ancestors.add(i)
                    todo.append(i)
        for u in accum.users:
            for r in (list(u.users) if u.target in P.DQ_T else [u]):
                if r is not add and r not in ancestors:
                    return False
        return True

    def layer(self, op, out, oq, act, requant, extra=(), global_avg_pool=False, eltwise=None,
              float_output=False):
        t = op.target
        x, wdq = op.args[0], op.args[1]
        bias = op.args[2] if len(op.args) > 2 else op.kwargs.get("bias")
        a, s_in, z_in = self.dq(op, x)
        wq, ws, pc = self.weight(op, wdq)
        b = self.const(op, bias)
        kw = dict(input_scale=s_in, input_zero_point=z_in, weight_q=wq, weight_scale=ws, per_channel=pc,
                  bias=b, src=op, requant=requant, **oq)
        if act is not None:
            kw.update(act_min=act[0], act_max=act[1])
        if global_avg_pool:
            kw.update(global_avg_pool=True)
        if eltwise is not None:
            kw.update(eltwise=eltwise)
        if float_output:
            kw.update(float_output=True)
        if t in P.CONV:
            a_ = list(op.args) + [None] * (7 - len(op.args))
            if isinstance(a_[4], str):
                self.fail(op, f"conv2d padding {a_[4]!r} (string padding) is not supported")
            kw.update(stride=_pair(a_[3] or 1), padding=_pair(a_[4] or 0), dilation=_pair(a_[5] or 1),
                      groups=int(a_[6] or 1))
            if extra and self.shape[extra[0]] != list(self.v[op].shape[1:]):
                self.fail(op, f"the sum addend has shape {self.shape[extra[0]]}, the conv's output "
                              f"{list(self.v[op].shape[1:])} (no broadcasting)")
            return self.emit("conv2d", [a] + list(extra), out, **kw)
        if len(self.shape[a]) != 1:
            self.fail(op, f"linear on a per-sample shape {self.shape[a]}: only [N, K] inputs")
        return self.emit("linear", [a], out, **kw)

    # -- f32 tensors: a conv/linear output that a float op reads (Inductor has oneDNN write it in f32)
    def float_value(self, n):
        """The qfuse tensor holding the f32 value of `n`: [post-op](conv2d/linear(dq(x), ...)) that
        Inductor has oneDNN write in f32 (`qconv_pointwise(..., torch.float32, post_op)`, post-op
        'relu' / 'hardswish' / 'swish' or none): a conv2d/linear node with "output": "float32"
        (EpilogueForm::OnednnFloat), emitted once however many ops read it."""
        if n in self.fvalue:
            return self.fvalue[n]
        hsw = (aten.hardswish.default, aten.hardswish_.default)
        silu = (aten.silu.default, aten.silu_.default)
        post, conv = None, n
        if isinstance(n, torch.fx.Node) and n.op == "call_function" and n.target in P.RELU + hsw + silu:
            post, conv = n, n.args[0]
        if not (isinstance(conv, torch.fx.Node) and conv.op == "call_function" and
                conv.target in P.CONV + P.LINEAR):
            self.fail(n, f"reads the float value of {getattr(n, 'target', n)}: only a conv2d/linear "
                         f"[-> relu | hardswish | silu] output is held in f32")
        if post is not None and len(conv.users) != 1:
            self.fail(conv, f"a conv2d/linear read by its {post.target} and by other ops: oneDNN applies "
                            f"the post-op inside the conv, so the value before it is not written")
        act, eltwise = None, None
        if post is not None and post.target in P.RELU:
            act = (0.0, float("inf"))
        elif post is not None and post.target in hsw:
            eltwise = "hardswish"
        elif post is not None:
            eltwise = "swish"
        out = n.name + "__f32"
        self.shape[out] = list(self.v[n].shape[1:])
        self.covered.update([x for x in (post, conv) if x is not None])
        self.layer(conv, out, {}, act, "onednn", eltwise=eltwise, float_output=True)
        self.fvalue[n] = out
        return out

    def f32_parts(self, n):
        """The f32 tensors whose channel concatenation is the float value of `n`: a channel `cat`
        of parts, an f32 `max_pool2d` of parts (one qfuse max_pool2d per part: max pooling is per
        channel, so it commutes with the cat), or float_value (oneDNN's f32 conv output). Inductor's
        C++ copies the parts into the cat buffer unchanged and max-pools in f32 (read in the code
        generated for inception_v3: cpp_fused_avg_pool2d_cat_max_pool2d_with_indices_...)."""
        key = ("parts", n)
        if key in self.fvalue:
            return self.fvalue[key]
        if isinstance(n, torch.fx.Node) and n.op == "call_function" and n.target == aten.cat.default:
            dim = int(n.args[1]) if len(n.args) > 1 else int(n.kwargs.get("dim", 0))
            if dim % self.v[n].dim() != 1:
                self.fail(n, f"an f32 cat along dim {dim}: only the channels (dim 1)")
            parts = [p for x in n.args[0] for p in self.f32_parts(x)]
            self.covered.add(n)
        elif isinstance(n, torch.fx.Node) and n.op == "call_function" and n.target == aten.max_pool2d.default:
            parts = []
            for k, a in enumerate(self.f32_parts(n.args[0])):
                o = f"{n.name}__f32_{k}"
                h, w = self.v[n].shape[2:]
                self.shape[o] = [self.shape[a][0], int(h), int(w)]
                self.emit_maxpool(n, a, o)
                parts.append(o)
            self.covered.add(n)
        else:
            parts = [self.float_value(n)]
        self.fvalue[key] = parts
        return parts

    def on_f32_avg_pool(self, op, x, out, oq):
        """avg_pool2d(x) -> q with x float: oneDNN's f32 conv outputs, f32 max pools and cats of them
        (inception_v3's branch pools). Inductor's C++ (cpp_fused_avg_pool2d_[cat_][max_pool2d_with_
        indices_]quantize_per_tensor_*): per output and channel the window's taps summed in f32 in
        row-major order, / f32(count), rint(v * f32(1/s)) + z, clamped. Per channel, so one
        inductor_avg_pool2d per f32 part with the quantize's qparams, and a cat of the bytes (equal
        qparams: a copy)."""
        a_ = list(op.args) + [None] * (7 - len(op.args))
        k = _pair(a_[1])
        st = _pair(a_[2]) if a_[2] else k
        pad = _pair(a_[3] or 0)
        ceil = bool(a_[4] or False)
        cip = True if a_[5] is None else bool(a_[5])
        div = None if a_[6] is None else int(a_[6])
        if k[0] * k[1] > INDUCTOR_UNROLL and k != st:
            self.fail(op, f"avg_pool2d with a {k[0]}x{k[1]} kernel (> {INDUCTOR_UNROLL} taps) and stride "
                          f"{st}: Inductor calls ATen's kernel (its fallback), whose arithmetic is not "
                          f"reproduced")
        parts = self.f32_parts(x)
        oh, ow = (int(v) for v in self.v[op].shape[2:])
        names = []
        for i, a in enumerate(parts):
            o = out if len(parts) == 1 else f"{out}__avg{i}"
            self.qp[o] = self.qp[out]
            self.shape[o] = [self.shape[a][0], oh, ow]
            self.emit("inductor_avg_pool2d", [a], o, kernel=k, stride=st, padding=pad, ceil_mode=ceil,
                      count_include_pad=cip, divisor_override=div, **oq)
            names.append(o)
        if len(names) > 1:
            self.emit("cat", names, out, dim=1, **oq)

    def quantized_conv(self, conv, post, name, oq, act):
        """`name` = Inductor's quantize of oneDNN's f32 output of `post` ([act](conv)): a conv with
        requant "inductor_x86", or, when an f32 average pool also reads that f32 value
        (f32_wanted), a quantize of the f32 conv output (the same bytes: quantize.wgsl is the
        fused epilogue's rule, tests/inductor_f32_conv.rs)"""
        if post in getattr(self, "f32_wanted", ()) and (act is None or (act == (0.0, float("inf")) and
                                                                      post.target in P.RELU)):
            self.emit("quantize", [self.float_value(post)], name, **oq)
        else:
            self.layer(conv, name, oq, act, "inductor_x86")

    def on_se_mul(self, q, mul, out, oq):
        """gate(conv_b(...)) * x -> q, x = [post-op](conv_a(...)) in f32, gate hardsigmoid or sigmoid
        (squeeze-excitation, either operand order): Inductor's C++
        (cpp_fused_hardsigmoid_mul_quantize_per_tensor_* / ..._mul_quantize_per_tensor_sigmoid_*)
        multiplies oneDNN's two f32 conv outputs and quantizes: conv_a and conv_b with "output":
        "float32", then inductor_gate_mul. False when `mul` is not that pattern."""
        gates = {aten.hardsigmoid.default: "hardsigmoid", aten.hardsigmoid_.default: "hardsigmoid",
                 aten.sigmoid.default: "sigmoid", aten.sigmoid_.default: "sigmoid"}
        if len(mul.args) < 2 or len(mul.users) != 1:
            return False
        for g, x in ((mul.args[0], mul.args[1]), (mul.args[1], mul.args[0])):
            if not (isinstance(g, torch.fx.Node) and g.op == "call_function" and g.target in gates and
                    len(g.users) == 1 and isinstance(x, torch.fx.Node) and x.op == "call_function"):
                continue
            gc = g.args[0]
            if not (isinstance(gc, torch.fx.Node) and gc.op == "call_function" and
                    gc.target in P.CONV + P.LINEAR and len(gc.users) == 1):
                continue
            gshape = list(self.v[gc].shape[1:])
            xshape = list(self.v[x].shape[1:])
            if len(xshape) != 3 or gshape not in ([xshape[0], 1, 1], [xshape[0]]):
                self.fail(mul, f"a gate of shape {gshape} times a tensor of shape {xshape}: only a "
                               f"per-channel gate [C, 1, 1] of a [C, H, W] tensor")
            gv = self.float_value(gc)
            xv = self.float_value(x)
            self.covered.update([mul, g])
            self.emit("inductor_gate_mul", [xv, gv], out, gate=gates[g.target], **oq)
            return True
        return False

    def on_quantize(self, q):
        head = self.quantize_head(q)
        if head is None:
            return
        src, out, oq = head
        s, z = self.qp[out]
        if src.op != "call_function":
            self.fail(src, f"{src.op} {src.target} feeding a quantize is not supported")
        # linear/conv [-> relu] -> dropout (eval: the identity) -> q (a classifier's hidden layers,
        # alexnet / vgg): the dropout is dropped, the quantize reads its input
        if src.target in P.DROPOUT and isinstance(src.args[0], torch.fx.Node) and \
                src.args[0].op == "call_function" and len(src.users) == 1 and \
                src.args[0].target in P.RELU + P.HARDTANH + P.RELU6 + P.CONV + P.LINEAR + \
                (aten.hardswish.default, aten.hardswish_.default) and \
                self.single_user(src.args[0], src):
            if src.target == aten.dropout.default and len(src.args) > 2 and bool(src.args[2]):
                self.fail(src, "a dropout in training mode")
            self.covered.add(src)
            src = src.args[0]
        # gate(conv_b) * [post-op](conv_a) -> q: the squeeze-excitation product of two f32 conv outputs
        if src.target in P.MUL and self.on_se_mul(q, src, out, oq):
            return
        # relu(conv(dq(x)) + dq(a)) -> adaptive_avg_pool2d(1) [-> flatten] -> q (a resnet's end):
        # oneDNN's conv with a sum post-op writes f32, Inductor's C++ averages and quantizes
        if self.on_sum_pool(q, src, out, oq):
            return
        # [relu(]conv2d(dq(x))[)] -> mean([2, 3]) / adaptive_avg_pool2d(1) [-> flatten / dropout] -> q
        # (mnasnet's end): oneDNN writes the plain conv's f32 output, Inductor's C++ averages and quantizes
        if self.on_conv_pool(q, src, out, oq):
            return
        # cat / channel shuffle / max pool / relu on float values (dequantized bytes and oneDNN's
        # f32 conv outputs) -> q: Inductor's C++ moves f32 values and quantizes them
        if self.on_table_mean(q, src, out, (s, z)):
            return
        if self.is_float_region(src):
            self.on_float_region(q, src, out, (s, z))
            return
        # a float reshape before the quantize (conv -> relu -> max pool -> flatten -> q):
        # quantize is elementwise, so it commutes with the reshape
        reshape = None
        if src.target in P.RESHAPE and isinstance(src.args[0], torch.fx.Node) and \
                src.args[0].op == "call_function" and src.args[0].target == aten.max_pool2d.default and \
                self.single_user(src.args[0], src) and len(src.users) == 1:
            reshape = src
            self.covered.add(src)
            src = src.args[0]
        # conv [-> act] -> max_pool2d -> q: oneDNN writes f32, Inductor pools and quantizes
        if src.target == aten.max_pool2d.default and isinstance(src.args[0], torch.fx.Node) and \
                src.args[0].op == "call_function" and src.args[0].target not in P.DQ_T:
            inner = src.args[0]
            act = None
            if inner.target in P.RELU + P.HARDTANH + P.RELU6 and self.single_user(inner, src):
                act = self.act_of(inner)
                self.covered.add(inner)
                inner = inner.args[0]
            if not (isinstance(inner, torch.fx.Node) and inner.target in P.CONV and
                    len(inner.users) == 1):
                self.fail(src, "a float max_pool2d of something other than one conv2d [+ relu/hardtanh] "
                               "read by nothing else: Inductor's float path is not reproduced")
            self.covered.update([src, inner])
            pooled = out + "__conv"
            self.qp[pooled] = (s, z)
            self.shape[pooled] = list(self.v[inner].shape[1:])
            self.quantized_conv(inner, src.args[0] if act is not None else inner, pooled, oq, act)
            if reshape is None:
                self.emit_maxpool(src, pooled, out)
                return
            flat = out + "__pool"
            self.qp[flat] = (s, z)
            self.shape[flat] = list(self.v[src].shape[1:])
            self.emit_maxpool(src, pooled, flat)
            self.emit("reshape", [flat], out, shape=self.shape[out])
            return
        if reshape is not None:
            self.fail(reshape, "a float reshape before a quantize: not supported here")
        hsw = (aten.hardswish.default, aten.hardswish_.default)
        silu = (aten.silu.default, aten.silu_.default)
        if src.target in hsw + silu + P.RELU + P.HARDTANH + P.RELU6 and isinstance(src.args[0], torch.fx.Node) \
                and src.args[0].op == "call_function" and src.args[0].target in P.CONV + P.LINEAR and \
                len(src.users) > 1:
            others = [u for u in src.users if u is not q]
            se = [u for u in others if u.target in P.MUL]
            if se and len(se) == len(others):
                # squeeze-excitation: oneDNN writes [post-op](conv) in f32 (read by the SE mul, see
                # on_se_mul) and Inductor's C++ quantizes it for the pool
                self.emit("quantize", [self.float_value(src)], out, **oq)
                return
            if se:
                self.fail(se[0], f"squeeze-excitation: the mul reads the float output of {src.name} "
                                 f"({src.target}) of {src.args[0].name}: Inductor has oneDNN write that conv "
                                 f"in f32 (its post-op applied), quantizes it in C++ for the pool only, "
                                 f"and multiplies the f32 tensor by the gate (hardsigmoid / sigmoid of the "
                                 f"f32 output of the second SE conv) in C++ before quantizing; qfuse holds "
                                 f"no f32 tensors (tests/data/pt2e/README.md, 'Squeeze-excitation')")
            self.fail(src, "its float output is read by the quantize and by other ops (Inductor keeps that "
                           "tensor in f32); not supported")
        if src.target in hsw and isinstance(src.args[0], torch.fx.Node) and src.args[0].op == "call_function" \
                and src.args[0].target in P.CONV + P.LINEAR and len(src.args[0].users) == 1:
            # conv -> hardswish -> q: Inductor's qconv_pointwise(..., 'hardswish'), oneDNN's
            # eltwise post-op before its output quantization (EpilogueForm::OnednnHardswish)
            if src.args[0].target in P.LINEAR:
                # linear -> hardswish -> q (mobilenet_v3's classifier): X86InductorQuantizer does not fuse
                # it; oneDNN writes the linear in f32 and Inductor's C++
                # (cpp_fused_hardswish_quantize_per_tensor_*) computes the hardswish and quantizes
                self.covered.add(src)
                self.emit("inductor_hardswish", [self.float_value(src.args[0])], out, **oq)
                return
            self.covered.update([src, src.args[0]])
            self.layer(src.args[0], out, oq, None, "onednn", eltwise="hardswish")
            return
        if src.target in silu and isinstance(src.args[0], torch.fx.Node) and src.args[0].op == "call_function" \
                and src.args[0].target in P.CONV + P.LINEAR and len(src.args[0].users) == 1:
            # conv -> silu -> q: Inductor's qconv_pointwise(..., 'swish'), oneDNN's swish eltwise
            # post-op (its own polynomial exp) before its output quantization (EpilogueForm::OnednnSwish)
            if src.args[0].target in P.LINEAR:
                self.fail(src, "linear -> silu -> q: X86InductorQuantizer does not fuse it (Inductor's "
                               "qlinear writes f32 and its C++ computes the silu); not reproduced")
            self.covered.update([src, src.args[0]])
            self.layer(src.args[0], out, oq, None, "onednn", eltwise="swish")
            return
        act = None
        op = src
        if src.target in P.RELU + P.HARDTANH + P.RELU6 and isinstance(src.args[0], torch.fx.Node) and \
                src.args[0].op == "call_function" and src.args[0].target in P.CONV + P.LINEAR:
            if len(src.args[0].users) != 1:
                self.fail(src.args[0], "a conv/linear read by its activation and by other ops: part of its "
                                       "output stays float (oneDNN writes f32); not supported")
            act = self.act_of(src)
            self.covered.add(src)
            op = src.args[0]
        if src.target in P.RELU + P.HARDTANH + P.RELU6 and isinstance(src.args[0], torch.fx.Node) and \
                src.args[0].target in P.ADD + P.MUL:
            op = src.args[0]   # add -> relu -> q (a conv + sum below, or refused naming the add)
        # conv(dq(x)) + dq(a) [-> relu] -> q: oneDNN's conv with a sum post-op
        sum_conv = self.sum_conv(op) if op.target in P.ADD else None
        if sum_conv is not None:
            if op is not src:
                if src.target not in P.RELU:
                    self.fail(src, f"{src.target} after a conv + add: only relu is fused (Inductor's "
                                   f"qconv2d_pointwise.binary with a 'relu' unary post-op)")
                if len(op.users) != 1:
                    self.fail(op, "a conv + add read by its relu and by other ops: not supported")
                act = (0.0, float("inf"))
                self.covered.add(src)
            if len(src.users) != 1:
                self.fail(src, "its float output is read by the quantize and by other ops (Inductor keeps "
                               "that tensor in f32); not supported")
            conv_node, other = sum_conv
            self.covered.update([op, conv_node])
            a_sum, _, _ = self.dq(op, other)
            if self.sum_in_place(conv_node, other, op):
                self.layer(conv_node, out, oq, act, "onednn", extra=[a_sum])
            else:
                # Inductor's f32 pattern: oneDNN adds the dequantized addend to its f32 value, Inductor's
                # C++ quantizes (EpilogueForm::OnednnSumFloat, then a quantize)
                f = op.name + "__f32"
                self.shape[f] = list(self.v[op].shape[1:])
                self.layer(conv_node, f, {}, act, "onednn", extra=[a_sum], float_output=True)
                self.emit("quantize", [f], out, **oq)
            return
        if len(src.users) != 1:
            self.fail(src, "its float output is read by the quantize and by other ops (Inductor keeps that "
                           "tensor in f32); not supported")
        t = op.target
        self.covered.add(op)
        if t in P.CONV + P.LINEAR:
            self.layer(op, out, oq, act, "onednn")
        elif t == aten.max_pool2d.default:
            a, s_in, z_in = self.dq(op, op.args[0])
            self.same(op, (s_in, z_in), (s, z))
            # Inductor replaces dq -> max_pool2d -> q by quantized.max_pool2d(..., ceil_mode=False):
            # the lowering drops ceil_mode (measured: 10x10, 3x3 / 2 gives 4x4, eager 5x5)
            self.emit_maxpool(op, a, out, inductor_u8=True)
        elif t == aten.cat.default:
            srcs = [self.dq(op, x) for x in op.args[0]]
            dim = int(op.args[1]) if len(op.args) > 1 else int(op.kwargs.get("dim", 0))
            nd = len(self.shape[srcs[0][0]]) + 1
            if dim % nd != 1:
                self.fail(op, f"cat along dim {dim}: only the channels (dim 1)")
            for _, si, zi in srcs:
                self.same(op, (si, zi), (s, z))
            if len(srcs) == 1:   # densenet's first cat([x]): the tensor itself
                self.emit("identity", [srcs[0][0]], out)
            else:
                self.emit("cat", [x[0] for x in srcs], out, dim=1, **oq)
        elif t in P.RESHAPE + P.DROPOUT:
            x = op.args[0]
            if t in P.DROPOUT and isinstance(x, torch.fx.Node) and x.op == "call_function" and \
                    x.target in P.RESHAPE and len(x.users) == 1:
                # dq -> flatten -> dropout -> q (a classifier's head, e.g. mobilenet_v2): one view
                self.covered.add(x)
                op, t = x, x.target
            a, s_in, z_in = self.dq(op, op.args[0])
            view = out
            if (np.float32(s_in), z_in) != (np.float32(s), z):
                # dq -> view -> q with other qparams (a dropout observed on its own): Inductor's C++
                # dequantizes and quantizes each byte, a 256-entry table
                view = out + "__view"
                self.qp[view] = (s_in, z_in)
                self.shape[view] = self.shape[out]
            if t in P.DROPOUT or self.shape[out] == self.shape[a]:
                self.emit("identity", [a], view)
            else:
                self.emit("reshape", [a], view, shape=self.shape[out])
            if view != out:
                self.emit("requant_table", [view], out, table=inductor_requant_table(s_in, z_in, s, z), **oq)
        elif t in P.ADD and self.float_add(op):
            # Inductor's C++ adds two f32 tensors (oneDNN's f32 conv outputs, or max pools of them)
            # and quantizes: f32(a + b), then rint(f32(t * f32(1/s))) + z
            if op is not src:
                self.fail(src, f"{src.target} after an add of two float tensors: not measured")
            fa, fb = [self.f32_parts(v) for v in op.args[:2]]
            if len(fa) != 1 or len(fb) != 1:
                self.fail(op, "an add of channel cats of f32 tensors: not supported")
            if self.shape[fa[0]] != self.shape[fb[0]]:
                self.fail(op, f"an add of f32 tensors of shapes {self.shape[fa[0]]} and {self.shape[fb[0]]} "
                              f"(no broadcasting)")
            self.emit("inductor_add", [fa[0], fb[0]], out, **oq)
        elif t in P.ADD and any(isinstance(v, torch.fx.Node) and v.target in P.CONV + P.LINEAR
                                for v in op.args[:2]):
            self.fail(op, "conv2d + add (Inductor fuses it into oneDNN's qconv2d_pointwise.binary with a "
                          "'sum' post-op: the conv reads the other addend as a second input); qfuse's conv "
                          "has one input (the rule is measured: tests/data/pt2e/README.md, 'Inductor x86 "
                          "graphs')")
        elif t == aten.mean.dim or (t == aten.adaptive_avg_pool2d.default and _pair(op.args[1]) == [1, 1]):
            # Inductor's C++ global average of a channels-last u8 tensor: per channel an f32 sum
            # of f32(q - z) * s over the pixels in order, / f32(H*W), then rint(m * f32(1/s)) + z
            a, s_in, z_in = self.dq(op, op.args[0])
            self.same(op, (s_in, z_in), (s, z))
            if t == aten.mean.dim:
                dims = sorted(int(d) % 4 for d in op.args[1])
                keep = bool(op.args[2]) if len(op.args) > 2 else bool(op.kwargs.get("keepdim", False))
                if dims != [2, 3]:
                    self.fail(op, f"mean over dims {op.args[1]}: only H, W")
                if not keep:
                    pooled = out + "__pool"
                    self.qp[pooled] = (s, z)
                    self.shape[pooled] = self.shape[a][:1] + [1, 1]
                    self.emit("adaptive_avg_pool2d", [a], pooled, output_size=[1, 1])
                    self.emit("reshape", [pooled], out, shape=self.shape[out])
                    return
            self.emit("adaptive_avg_pool2d", [a], out, output_size=[1, 1])
        elif t in (aten.avg_pool2d.default, aten.adaptive_avg_pool2d.default):
            # Inductor's C++ average pool of a u8 tensor (dq -> pool -> q, equal qparams): per output
            # an f32 sum of f32(q - z) * s over the window in row-major order, / f32(count), then
            # rint(m * f32(1/s)) + z (tests/data/pt2e/README.md, "Inductor x86 graphs")
            x = op.args[0]
            if isinstance(x, torch.fx.Node) and x.op == "call_function" and x.target not in P.DQ_T and \
                    t == aten.avg_pool2d.default:
                # inception_v3: X86InductorQuantizer leaves a cat / max pool of relu(conv) outputs
                # unquantized, so oneDNN writes the convs' f32 outputs and Inductor pools those floats
                self.on_f32_avg_pool(op, x, out, oq)
                return
            if isinstance(x, torch.fx.Node) and x.op == "call_function" and x.target not in P.DQ_T:
                self.fail(op, f"{t} of the float output of {x.target} ({x.name}): X86InductorQuantizer "
                              f"did not quantize the pool's input, so Inductor averages f32 values (oneDNN's "
                              f"f32 conv outputs and the float ops after them), which qfuse does not hold; "
                              f"only a pool of a dequantized u8 tensor is reproduced")
            a, s_in, z_in = self.dq(op, x)
            self.same(op, (s_in, z_in), (s, z))
            h, w = self.shape[a][1], self.shape[a][2]
            if t == aten.adaptive_avg_pool2d.default:
                oh, ow = _pair(op.args[1])
                kmax = -(-(h + oh - 1) // oh) * -(-(w + ow - 1) // ow)
                if not (h % oh == 0 and w % ow == 0) and kmax > INDUCTOR_UNROLL:
                    self.fail(op, f"adaptive_avg_pool2d of {h}x{w} to {oh}x{ow}: windows of up to {kmax} "
                                  f"taps (> {INDUCTOR_UNROLL}) make Inductor call ATen's kernel (its "
                                  f"fallback), whose arithmetic is not reproduced")
                self.emit("adaptive_avg_pool2d", [a], out, output_size=[oh, ow])
                return
            a_ = list(op.args) + [None] * (7 - len(op.args))
            k = _pair(a_[1])
            st = _pair(a_[2]) if a_[2] else k
            pad = _pair(a_[3] or 0)
            ceil = bool(a_[4] or False)
            cip = True if a_[5] is None else bool(a_[5])
            div = None if a_[6] is None else int(a_[6])
            if k[0] * k[1] > INDUCTOR_UNROLL and k != st:
                self.fail(op, f"avg_pool2d with a {k[0]}x{k[1]} kernel (> {INDUCTOR_UNROLL} taps) and stride "
                              f"{st}: Inductor calls ATen's kernel (its fallback), whose arithmetic is not "
                              f"reproduced")
            self.emit("avg_pool2d", [a], out, kernel=k, stride=st, padding=pad, ceil_mode=ceil,
                      count_include_pad=cip, divisor_override=div)
        elif t in P.ADD + P.MUL or t == aten.mean.dim:
            self.fail(op, f"{t} between dequantize and quantize: Inductor computes it in float C++ that qfuse "
                          f"does not reproduce yet (tests/data/pt2e/README.md, 'Inductor x86 graphs')")
        else:
            self.fail(op, f"op {t} is not supported for pt2e/X86InductorQuantizer export")

    # -- float regions: what Inductor's C++ computes between dequantizes (or oneDNN's f32 conv
    # outputs) and a quantize when the ops between only move, select or clamp values
    def is_float_region(self, src):
        """True when `src` (a quantize's input) is a float region the base patterns do not take:
        a chunk/split item, a transpose / permute, a view of a non-dequantize, a cat of other than
        dequantizes with the output's qparams, a max pool of other than a dequantize or one conv,
        or a relu / hardtanh of other than a conv / linear / add"""
        if src.op != "call_function":
            return False
        t = src.target
        arg0 = src.args[0] if src.args else None
        is_node = isinstance(arg0, torch.fx.Node)
        if t == operator.getitem:
            return is_node and arg0.op == "call_function" and arg0.target in P.SPLIT
        if t in P.MOVE:
            return True
        if t in P.RESHAPE + P.DROPOUT:
            if not is_node or arg0.target in P.DQ_T:
                return False
            if t in P.DROPOUT and arg0.target in P.RESHAPE and isinstance(arg0.args[0], torch.fx.Node) and \
                    arg0.args[0].target in P.DQ_T:
                return False
            if arg0.target == aten.max_pool2d.default:
                return self.is_float_region(arg0)
            return True
        if t == aten.cat.default:
            return not all(isinstance(x, torch.fx.Node) and x.target in P.DQ_T for x in arg0)
        if t == aten.max_pool2d.default:
            inner = arg0
            if is_node and inner.target in P.RELU + P.HARDTANH + P.RELU6:
                inner = inner.args[0]
            return isinstance(inner, torch.fx.Node) and inner.target not in P.DQ_T + P.CONV
        if t in P.RELU + P.HARDTANH + P.RELU6:
            return is_node and arg0.op == "call_function" and \
                arg0.target not in P.CONV + P.LINEAR + P.ADD + P.MUL
        return self.bn_of(src) is not None

    def on_table_mean(self, q, src, out, qp):
        """`dq(a) -> (batch_norm | relu | hardtanh)+ -> adaptive_avg_pool2d(1) / mean([2, 3]) [-> flatten]
        -> q` (densenet's tail: the quantizer leaves the pool's input in float). Inductor's C++
        (cpp_fused__native_batch_norm_legit_no_training_dequantize_per_tensor_mean_quantize_...):
        per channel (channels-last, 16 per vector) `acc = 0; acc = acc + t_p` over the pixels in
        order, t_p the elementwise chain of the dequantized byte, then `/ f32(H*W)`, `* f32(1/s)`,
        round, `+ z`, clamp. qfuse: the dequantize then host_float `table_mean` (the chain as a
        [C, 256] f32 table; the rest on the host, exact), read only by a last linear or the output."""
        reshapes, n = [], src
        while n.op == "call_function" and n.target in P.RESHAPE + P.DROPOUT and \
                isinstance(n.args[0], torch.fx.Node) and len(n.users) == 1:
            reshapes.append(n)
            n = n.args[0]
        t = n.target if n.op == "call_function" else None
        if t == aten.mean.dim:
            keep = bool(n.args[2]) if len(n.args) > 2 else bool(n.kwargs.get("keepdim", False))
            if sorted(int(d) % 4 for d in n.args[1]) != [2, 3]:
                return False
        elif not (t == aten.adaptive_avg_pool2d.default and _pair(n.args[1]) == [1, 1]):
            return False
        pool, m, fns, chain = n, n.args[0], [], []
        while isinstance(m, torch.fx.Node) and m.op == "call_function" and len(m.users) == 1:
            if m.target in P.RELU + P.HARDTANH + P.RELU6:
                fns.insert(0, ("clamp",) + tuple(self.act_of(m)))
                chain.append(m)
                m = m.args[0]
            elif self.bn_of(m) is not None:
                bn = self.bn_of(m)
                fns.insert(0, self.bn_params(bn))
                chain += [m, bn]
                m = bn.args[0]
            else:
                break
        if not fns or not (isinstance(m, torch.fx.Node) and m.target in P.DQ_T):
            return False
        a, s_in, z_in = self.dq(pool, m)
        shp = self.shape[a]
        if len(shp) != 3:
            self.fail(pool, f"a global average of a per-sample shape {shp}: only [C, H, W]")
        self.covered.update([q, pool] + reshapes + chain)
        table = float_chain_values(s_in, z_in, fns, channels=shp[0])
        deq = out + "__deq"
        self.emit("dequantize", [a], deq)
        pooled = out + "__mean"
        self.emit("table_mean", [deq], pooled, table=table, input_scale=s_in, input_zero_point=z_in,
                  output_scale=qp[0], output_zero_point=qp[1])
        last = pooled
        if self.shape[out] != [shp[0], 1, 1]:
            last = out + "__view"
            self.emit("host_reshape", [pooled], last, shape=self.shape[out])
        self.host_f32[out] = last
        return True

    def dq(self, user, dq, virtual=False):
        if isinstance(dq, torch.fx.Node) and dq.op == "call_function" and dq.target not in P.DQ_T + P.Q_T and \
                any(isinstance(a, torch.fx.Node) for a in dq.args):
            self.fail(user, f"reads the float output of {dq.target} ({dq.name}) directly: Inductor computes "
                            f"{getattr(user, 'target', user)} on f32 values in its C++ (e.g. a global average of a "
                            f"conv's f32 output, the tail of shufflenet / mnasnet), which qfuse does not reproduce")
        r = super().dq(user, dq, virtual)
        if r[0] in self.host_f32 and not self.host_ok:
            self.fail(user, "reads a global average computed on the host (table_mean, after the last GPU "
                            "op): only a last linear or the graph output may read it")
        return r

    def on_float_region(self, q, src, out, qp):
        """`src -> q` where `src` is a chain of byte moves (cat, view, transpose, contiguous, chunk /
        split items), max pools and relu / hardtanh over f32 values that are each either a
        dequantized byte `f32(f32(b - z) * s)` or a conv's oneDNN f32 output. Inductor's C++
        (read in the generated code: cpp_fused_cat_clone_..._quantize_per_tensor) copies those f32
        values and quantizes each, `rint(f32(x * f32(1/s))) + z`, clamped; the moves do not change
        a value, max and clamps commute with the monotone quantize. So every source is quantized
        on its own with the output's qparams (a byte: a 256-entry table, or nothing when that
        table is the identity; a conv: requant "inductor_x86", its relu / hardtanh as the clamp),
        and the moves are one gather of those tensors (max pools on the bytes between)."""
        self.covered.add(q)
        fv = self.resolve(q, src, qp, ())
        if list(fv.shape) != self.shape[out]:
            self.fail(q, f"the moves give shape {list(fv.shape)}, PyTorch {self.shape[out]}")
        self.materialize_fv(q, fv, out)

    def leaf(self, key, info):
        if key not in self.leaf_id:
            self.leaf_id[key] = len(self.leaf_info)
            self.leaf_info.append(dict(info, key=key, name=None))
        return self.leaf_id[key]

    def leaf_values(self, lid, idx):
        return (np.int64(lid) << np.int64(32)) | np.asarray(idx, dtype=np.int64)

    def resolve(self, user, n, qp, fns):
        """the float value of node `n` after the elementwise clamps `fns` (innermost first), as an
        int64 array of its per-sample shape: (source id << 32) | element of that source"""
        if not (isinstance(n, torch.fx.Node) and n.op == "call_function"):
            self.fail(user, f"reads {getattr(n, 'name', n)}, which is not a tensor the exporter follows")
        t = n.target
        s, z = qp
        per_channel = any(f[0] == "bn" for f in fns)
        if t in P.DQ_T:
            # a per-channel map reads the channels of the stored tensor itself: no view
            a, s_in, z_in = self.dq(user, n, virtual=not per_channel)
            base, idx = self.view_of(a)
            table = requant_chain_table(s_in, z_in, s, z, fns)
            if per_channel:
                if self.shape[base][0] != table.shape[0]:
                    self.fail(user, f"a batch norm of {table.shape[0]} channels on a tensor of shape "
                                    f"{self.shape[base]}")
                lid = self.leaf(("chan", base, np.float32(s), z, table.tobytes()),
                                dict(kind="chan", base=base, tables=table))
                return self.leaf_values(lid, idx)
            if table == list(range(256)) and (np.float32(s_in), z_in) == (np.float32(s), z):
                lid = self.leaf(("val", base), dict(kind="val", base=base))
            else:
                lid = self.leaf(("bytes", base, np.float32(s), z, tuple(table)),
                                dict(kind="bytes", base=base, table=table, s_in=s_in, z_in=z_in))
            return self.leaf_values(lid, idx)
        if t in P.RELU + P.HARDTANH + P.RELU6:
            self.covered.add(n)
            return self.resolve(n, n.args[0], qp, (("clamp",) + tuple(self.act_of(n)),) + tuple(fns))
        bn = self.bn_of(n)
        if bn is not None:
            self.covered.update([n, bn])
            return self.resolve(n, bn.args[0], qp, (self.bn_params(bn),) + tuple(fns))
        if t in P.CONV:
            if len(n.users) != 1:
                self.fail(n, "a conv2d whose f32 output is read by several ops: not supported")
            self.covered.add(n)
            lo, hi = -np.inf, np.inf
            for f in fns:
                if f[0] != "clamp":
                    self.fail(user, "a batch norm of a conv2d's f32 output (oneDNN writes f32, Inductor's C++ "
                                    "normalizes it): qfuse holds no f32 tensors")
                _, flo, fhi = f
                lo, hi = min(max(lo, flo), fhi), min(max(hi, flo), fhi)
            act = None if (lo, hi) == (-np.inf, np.inf) else (max(lo, -np.inf), hi)
            if act is not None and act[0] == -np.inf:
                self.fail(n, f"a clamp {act} without a lower bound after a conv2d: not supported")
            lid = self.leaf(("conv", n.name, np.float32(s), z, act), dict(kind="conv", conv=n, act=act))
            return self.leaf_values(lid, np.arange(int(np.prod(self.v[n].shape[1:]))).reshape(
                list(self.v[n].shape[1:])))
        if t == aten.cat.default:
            xs = n.args[0]
            dim = int(n.args[1]) if len(n.args) > 1 else int(n.kwargs.get("dim", 0))
            nd = self.v[n].dim()
            if dim % nd != 1:
                self.fail(n, f"cat along dim {dim}: only the channels (dim 1)")
            self.covered.add(n)
            parts, c0 = [], 0
            for x in xs:
                c = int(self.v[x].shape[1])
                sub = tuple(f if f[0] != "bn" else ("bn",) + tuple(v[c0:c0 + c] for v in f[1:]) for f in fns)
                parts.append(self.resolve(n, x, qp, sub))
                c0 += c
            return np.concatenate(parts, axis=0)
        if per_channel:
            self.fail(n, f"{t} between a batch norm and the dequantize it reads: a per-channel float map "
                         f"is reproduced only through cat")
        if self.is_shape_op(n):
            self.covered.add(n)
            inner = n.args[0]
            if t == operator.getitem:
                self.covered.add(inner)
                inner = inner.args[0]
            return self.move(n, self.resolve(n, inner, qp, fns))
        if t == aten.max_pool2d.default:
            self.covered.add(n)
            vals = self.resolve(n, n.args[0], qp, fns)
            a = self.materialize_fv(n, vals, f"{n.name}__in{len(self.ir)}", qp)
            pooled = f"{n.name}__pool{len(self.ir)}"
            self.qp[pooled] = qp
            self.shape[pooled] = list(self.v[n].shape[1:])
            self.emit_maxpool(n, a, pooled)
            lid = self.leaf(("val", pooled), dict(kind="val", base=pooled))
            return self.leaf_values(lid, np.arange(int(np.prod(self.shape[pooled]))).reshape(self.shape[pooled]))
        if t in (aten.mean.dim, aten.adaptive_avg_pool2d.default):
            src = n.args[0]
            what = src.target if isinstance(src, torch.fx.Node) else src
            self.fail(n, f"a global average ({t}) of float values whose input is {what}: Inductor averages f32 "
                         f"values qfuse does not hold; reproduced only for [relu](conv2d) outputs, a channel cat "
                         f"of them (googlenet's end: one averaged conv per branch) or a dequantize through "
                         f"batch norms / relus")
        self.fail(n, f"{t} in a float region (between dequantizes / f32 conv outputs and a quantize): only "
                     f"cat, view, transpose, chunk / split, max_pool2d, relu and hardtanh are reproduced")

    def bn_params(self, bn):
        """("bn", mean, invstd, weight, bias) of an eval batch norm: invstd = rsqrt(var + eps) as
        torch computes it (the constant freezing folds)"""
        a_ = list(bn.args)
        if bn.target in P.BN:
            names = ["input", "weight", "bias", "running_mean", "running_var", "training", "momentum", "eps"]
        else:
            names = ["input", "weight", "bias", "running_mean", "running_var", "momentum", "eps"]
        arg = {k: (a_[i] if i < len(a_) else bn.kwargs.get(k)) for i, k in enumerate(names)}
        if arg.get("training"):
            self.fail(bn, "batch_norm in training mode")
        c = int(self.v[bn.args[0]].shape[1])

        def param(k, default):
            nd = arg[k]
            if nd is None:
                return torch.full((c,), default, dtype=torch.float32)
            t = self.v.get(nd) if isinstance(nd, torch.fx.Node) else None
            if not isinstance(t, torch.Tensor) or t.dtype != torch.float32 or t.numel() != c:
                self.fail(bn, f"batch_norm {k} is not a float32 constant of {c} values")
            self.covered.add(nd)
            return t.detach().reshape(-1).clone()

        mean, var = param("running_mean", 0.0), param("running_var", 1.0)
        w, b = param("weight", 1.0), param("bias", 0.0)
        eps = arg["eps"]
        if isinstance(eps, torch.fx.Node):
            self.fail(bn, "batch_norm eps is not a constant")
        invstd = torch.rsqrt(var + eps)
        return ("bn",) + tuple(v.numpy().astype(np.float32) for v in (mean, invstd, w, b))

    def make_leaf(self, user, lid, qp):
        info = self.leaf_info[lid]
        if info["name"] is not None:
            return info["name"]
        s, z = qp
        oq = dict(output_scale=s, output_zero_point=z)
        if info["kind"] == "val":
            name = info["base"]
        elif info["kind"] == "chan":
            name = f"{info['base']}__q{lid}"
            self.qp[name] = qp
            self.shape[name] = list(self.shape[info["base"]])
            self.emit("channel_lut", [info["base"]], name, tables=info["tables"], **oq)
        elif info["kind"] == "bytes":
            name = f"{info['base']}__q{lid}"
            self.qp[name] = qp
            self.shape[name] = list(self.shape[info["base"]])
            self.emit("requant_table", [info["base"]], name, table=info["table"], **oq)
        else:
            conv = info["conv"]
            name = f"{conv.name}__q{lid}"
            self.qp[name] = qp
            self.shape[name] = list(self.v[conv].shape[1:])
            post = next(iter(conv.users)) if info["act"] is not None and len(conv.users) == 1 else conv
            self.quantized_conv(conv, post, name, oq, info["act"])
        info["name"] = name
        return name

    def materialize_fv(self, user, vals, out, qp=None):
        """writes the values `vals` (resolve's array) as the qfuse value `out`: the sources they
        read (each once), then the identity, a reshape or one gather of them"""
        qp = qp if qp is not None else self.qp[out]
        self.qp[out] = qp
        self.shape[out] = list(vals.shape)
        lids = [int(v) for v in np.unique(vals >> np.int64(32))]
        names = [self.make_leaf(user, lid, qp) for lid in lids]
        offs, total = {}, 0
        for lid, nm in zip(lids, names):
            offs[lid] = total
            total += int(np.prod(self.shape[nm]))
        flat = vals.reshape(-1)
        lidv = flat >> np.int64(32)
        pos = flat & np.int64(0xFFFFFFFF)
        index = pos + np.vectorize(offs.get, otypes=[np.int64])(lidv) if flat.size else pos
        shape = list(vals.shape)
        if len(names) == 1 and index.size == total and np.array_equal(index, np.arange(total)):
            if shape == list(self.shape[names[0]]):
                self.emit("identity", [names[0]], out)
            else:
                self.emit("reshape", [names[0]], out, shape=shape)
        elif not 1 <= len(shape) <= 3:
            self.fail(user, f"a tensor of per-sample shape {shape}: qfuse tensors have 1 to 3 dimensions "
                            f"besides the batch")
        else:
            self.emit("gather", names, out, shape=shape, index=index.astype(np.uint32))
        return out

    def run(self):
        # the fx nodes whose f32 value an average pool of a float tensor reads (f32_parts' leaves:
        # inception_v3's branch convs): where the graph also quantizes them (a cat's or max pool's
        # quantize), that quantize reads the f32 conv output instead of a second conv
        self.f32_wanted = set()
        for n in self.gm.graph.nodes:
            if n.op == "call_function" and n.target == aten.avg_pool2d.default and \
                    isinstance(n.args[0], torch.fx.Node) and n.args[0].op == "call_function" and \
                    n.args[0].target not in P.DQ_T:
                stack = [n.args[0]]
                while stack:
                    m = stack.pop()
                    if isinstance(m, torch.fx.Node) and m.op == "call_function" and m.target == aten.cat.default:
                        stack += list(m.args[0])
                    elif isinstance(m, torch.fx.Node) and m.op == "call_function" and \
                            m.target == aten.max_pool2d.default:
                        stack.append(m.args[0])
                    else:
                        self.f32_wanted.add(m)
        try:
            return super().run()
        except Exception as e:  # the base class's leftover message names XNNPACK
            msg = str(e)
            if "pt2e/XNNPACK export" in msg:
                msg = msg.replace("is not supported for pt2e/XNNPACK export (or not between a dequantize and a "
                                  "quantize)", "is not supported for pt2e/X86InductorQuantizer export: its output "
                                  "stays float (no quantize reads it), and Inductor's float C++ for it is not "
                                  "reproduced")
                raise type(e)(msg) from None
            raise

    def emit_maxpool(self, op, a, out, inductor_u8=False):
        a_ = list(op.args) + [None] * (6 - len(op.args))
        k = _pair(a_[1])
        stride, pad, dil = _pair(a_[2]) if a_[2] else k, _pair(a_[3] or 0), _pair(a_[4] or 1)
        ceil = bool(a_[5] or False)
        if ceil and inductor_u8:
            size = list(self.v[op.args[0]].shape[2:])
            floor = [(size[i] + 2 * pad[i] - dil[i] * (k[i] - 1) - 1) // stride[i] + 1 for i in range(2)]
            if floor != list(self.v[op].shape[2:]):
                self.fail(op, f"max_pool2d with ceil_mode=True between a dequantize and a quantize: Inductor "
                              f"runs quantized.max_pool2d with ceil_mode=False (output {floor}, the graph "
                              f"{list(self.v[op].shape[2:])}), so the compiled model differs from the graph; "
                              f"use ceil_mode=False or an input size where it does not matter")
            ceil = False
        self.emit("max_pool2d", [a], out, kernel=k, stride=stride, padding=pad, dilation=dil, ceil_mode=ceil)

    def same(self, op, qi, qo):
        if (np.float32(qi[0]), qi[1]) != (np.float32(qo[0]), qo[1]):
            self.fail(op, f"input qparams {qi} differ from output qparams {qo}: not supported "
                          f"(X86InductorQuantizer shares them for this op)")

    def on_output(self, o):
        self.host_ok = True
        try:
            return self.on_output_(o)
        finally:
            self.host_ok = False

    def on_output_(self, o):
        if not isinstance(o, torch.fx.Node):
            self.fail(None, f"graph output {o!r} is not a tensor")
        if o.target in P.DQ_T:
            a, s, z = self.dq(o, o)
            if a in self.host_f32:
                return self.host_f32[a]
            out = o.name
            self.emit("dequantize", [a], out)
            return out
        if o.op == "call_function" and o.target in P.RESHAPE + P.DROPOUT and isinstance(o.args[0], torch.fx.Node):
            # dq(a) -> flatten / view [-> dropout] -> graph output (squeezenet's end): Inductor dequantizes
            # into the output buffer (a view is no arithmetic): the bytes reshaped, then dequantized
            chain, inner = [o], o.args[0]
            while isinstance(inner, torch.fx.Node) and inner.op == "call_function" and \
                    inner.target in P.RESHAPE + P.DROPOUT and len(inner.users) == 1 and \
                    isinstance(inner.args[0], torch.fx.Node):
                chain.append(inner)
                inner = inner.args[0]
            if isinstance(inner, torch.fx.Node) and inner.target in P.DQ_T and len(inner.users) == 1:
                a, s, z = self.dq(chain[-1], inner)
                self.covered.update(chain)
                shp = list(self.v[o].shape[1:])
                view = o.name + "__q"
                self.qp[view] = (s, z)
                self.shape[view] = shp
                if shp == self.shape[a]:
                    self.emit("identity", [a], view)
                else:
                    self.emit("reshape", [a], view, shape=shp)
                self.emit("dequantize", [view], o.name)
                return o.name
        lin, relu = o, False
        if isinstance(lin, torch.fx.Node) and lin.target in P.RELU and isinstance(lin.args[0], torch.fx.Node) \
                and len(lin.args[0].users) == 1:
            relu, lin = True, lin.args[0]
        if isinstance(lin, torch.fx.Node) and lin.target in P.LINEAR and len(lin.users) == 1:
            # a last linear: oneDNN writes f32; qfuse computes it on the host from the
            # dequantized input (host_float onednn_linear, exact)
            x, wdq = lin.args[0], lin.args[1]
            bias = lin.args[2] if len(lin.args) > 2 else lin.kwargs.get("bias")
            a, s_in, z_in = self.dq(lin, x)
            if len(self.shape[a]) != 1:
                self.fail(lin, f"linear on a per-sample shape {self.shape[a]}: only [N, K] inputs")
            wq, ws, pc = self.weight(lin, wdq)
            b = self.const(lin, bias)
            self.covered.update([o, lin])
            deq = self.host_f32.get(a)
            if deq is None:
                deq = o.name + "__in"
                self.emit("dequantize", [a], deq)
            self.emit("linear_f32", [deq], o.name, input_scale=s_in, input_zero_point=z_in, weight_q=wq,
                      weight_scale=ws, bias=b, relu=relu, src=lin)
            return o.name
        inner, pooled = o, False
        while isinstance(inner, torch.fx.Node) and inner.target in P.RELU + P.HARDTANH + P.RELU6 + P.RESHAPE + \
                P.DROPOUT + (aten.mean.dim, aten.adaptive_avg_pool2d.default):
            pooled = pooled or inner.target in (aten.mean.dim, aten.adaptive_avg_pool2d.default)
            inner = inner.args[0]
        if isinstance(inner, torch.fx.Node) and inner.target in P.CONV and pooled:
            self.fail(inner, "a conv2d whose f32 output is averaged into a float graph output (e.g. "
                             "relu(conv) -> adaptive_avg_pool2d(1) -> flatten -> output with a functional relu, "
                             "which the quantizer does not fuse): oneDNN writes f32 and Inductor averages it in "
                             "C++; qfuse has no float conv output (a module nn.ReLU after the conv makes the "
                             "quantizer quantize the pool, which qfuse runs)")
        post = (aten.hardswish.default, aten.hardswish_.default, aten.silu.default, aten.silu_.default)
        if o.op == "call_function" and (o.target in P.CONV or (o.target in P.RELU + post and isinstance(
                o.args[0], torch.fx.Node) and o.args[0].op == "call_function" and o.args[0].target in P.CONV)):
            # [post-op](conv2d) -> graph output: oneDNN writes it in f32 ("output": "float32")
            return self.float_value(o)
        if isinstance(inner, torch.fx.Node) and inner.target in P.CONV + P.LINEAR:
            self.fail(inner, "a conv2d/linear whose output is not quantized (a graph output): oneDNN writes "
                             "it in f32 (v = f32(f32(f32(acc) * s_in) * ws) + b), and qfuse has no float "
                             "conv/linear output yet")
        self.fail(o, f"graph output from op {o.target}: outputs must be dequantized uint8 tensors")


# Inductor unrolls average-pool windows of at most this many taps; past it an avg_pool2d with
# kernel != stride, or an adaptive_avg_pool2d with varying windows, runs ATen's kernel instead
INDUCTOR_UNROLL = 25


def _pair(v, n=2):
    return P._pair(v, n)


def _bound(fn, v, s, z):
    if v == float("inf"):
        return 255
    if v == float("-inf"):
        return 0
    return fn(np.float32(v), s, z)


def build_inductor(gm, example_inputs, fail, warn):
    """The qfuse header pieces (inputs, outputs, nodes, tensors, observed shapes)."""
    P._init_ops()
    rec = P._Recorder(gm)
    with torch.no_grad():
        rec.run(*example_inputs)
    w = _IndWalker(gm, rec.val, fail).run()
    ir = w.ir
    nodes, tensors = [], {}
    canon = {}
    for k, nd in enumerate(ir):
        canon[nd["output"]] = f"{nd['op']}_{k}"
    alias = {}

    def nm(v):
        v = canon.get(v, v)
        return alias.get(v, v)

    def qkeys(s, z):
        return {"scale": float(s), "zero_point": int(z)}

    def layer_node(node, nd, op, out):
        """a conv2d/linear node's op, geometry and tensors (weights, scales, zero points, bias)"""
        wq, ws = nd["weight_q"], nd["weight_scale"]
        o = wq.shape[0]
        b = nd["bias"] if nd["bias"] is not None else np.zeros(o, dtype=np.float32)
        if b.shape != (o,):
            fail(nd["src"], f"bias of shape {list(b.shape)} for {o} output channels")
        node.update(op=op)
        if op == "conv2d":
            node.update(stride=nd["stride"], padding=nd["padding"], dilation=nd["dilation"],
                        groups=nd["groups"])
        tensors[f"{out}.weight"] = np.ascontiguousarray(wq)
        tensors[f"{out}.weight_scale"] = np.ascontiguousarray(ws, dtype=np.float32)
        tensors[f"{out}.weight_zero_point"] = np.zeros(o, dtype=np.int32)
        tensors[f"{out}.bias"] = np.ascontiguousarray(b, dtype=np.float32)

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
        elif op in ("conv2d", "linear") and nd.get("float_output"):
            # oneDNN's f32 output (EpilogueForm::OnednnFloat): no output qparams
            layer_node(node, nd, op, out)
            relu = "act_min" in nd
            if relu and (nd["act_min"], nd["act_max"]) != (0.0, float("inf")):
                fail(nd["src"], "a clamp other than relu on an f32 conv/linear output")
            node.update(activation="relu" if relu else "none", requant="onednn", output="float32")
            if nd.get("eltwise"):
                node["eltwise"] = nd["eltwise"]
        elif op == "inductor_gate_mul":
            node.update(op="inductor_gate_mul", gate=nd["gate"],
                        **qkeys(nd["output_scale"], nd["output_zero_point"]))
        elif op in ("inductor_hardswish", "inductor_add"):
            node.update(op=op, **qkeys(nd["output_scale"], nd["output_zero_point"]))
        elif op in ("conv2d", "linear"):
            so, zo = nd["output_scale"], nd["output_zero_point"]
            layer_node(node, nd, op, out)
            act = "none"
            lo, hi = 0, 255
            if "act_min" in nd:
                fn = onednn_u8 if nd["requant"] == "onednn" else inductor_u8
                if nd["act_min"] == 0.0 and nd["act_max"] == float("inf"):
                    act = "relu"
                else:
                    lo, hi = _bound(fn, nd["act_min"], so, zo), _bound(fn, nd["act_max"], so, zo)
            node.update(activation=act, requant=nd["requant"], **qkeys(so, zo))
            if nd.get("global_avg_pool"):
                node["global_avg_pool"] = True
            if nd.get("eltwise"):
                node["eltwise"] = nd["eltwise"]
            if (lo, hi) != (0, 255):
                node["clamp"] = [int(lo), int(hi)]
        elif op == "adaptive_avg_pool2d":
            node.update(op="adaptive_avg_pool2d", output_size=nd["output_size"])
        elif op == "requant_table":
            node.update(op="lut", table=nd["table"], **qkeys(nd["output_scale"], nd["output_zero_point"]))
        elif op == "avg_pool2d":
            node.update(op="avg_pool2d", kernel_size=nd["kernel"], stride=nd["stride"], padding=nd["padding"],
                        ceil_mode=nd["ceil_mode"], count_include_pad=nd["count_include_pad"],
                        divisor_override=nd["divisor_override"])
        elif op == "inductor_avg_pool2d":
            node.update(op="inductor_avg_pool2d", kernel_size=nd["kernel"], stride=nd["stride"],
                        padding=nd["padding"], ceil_mode=nd["ceil_mode"],
                        count_include_pad=nd["count_include_pad"], divisor_override=nd["divisor_override"],
                        **qkeys(nd["output_scale"], nd["output_zero_point"]))
        elif op == "max_pool2d":
            node.update(op="max_pool2d", kernel_size=nd["kernel"], stride=nd["stride"], padding=nd["padding"],
                        dilation=nd["dilation"], ceil_mode=nd["ceil_mode"])
        elif op == "cat":
            node.update(op="cat", dim=1, **qkeys(nd["output_scale"], nd["output_zero_point"]))
        elif op == "linear_f32":
            wq = nd["weight_q"]
            o = wq.shape[0]
            b = nd["bias"] if nd["bias"] is not None else np.zeros(o, dtype=np.float32)
            node.update(op="host_float", fn="onednn_linear", input_scale=float(nd["input_scale"]),
                        input_zero_point=int(nd["input_zero_point"]),
                        activation="relu" if nd["relu"] else "none")
            tensors[f"{out}.weight"] = np.ascontiguousarray(wq)
            tensors[f"{out}.weight_scale"] = np.ascontiguousarray(nd["weight_scale"], dtype=np.float32)
            tensors[f"{out}.bias"] = np.ascontiguousarray(b, dtype=np.float32)
        elif op == "reshape":
            shp = nd["shape"]
            if len(shp) == 1:
                node.update(op="flatten", start_dim=1, end_dim=-1)
            else:
                node.update(op="reshape", shape=shp)
        elif op == "table_mean":
            node.update(op="host_float", fn="table_mean", input_scale=float(nd["input_scale"]),
                        input_zero_point=int(nd["input_zero_point"]), **qkeys(nd["output_scale"],
                                                                           nd["output_zero_point"]))
            tensors[f"{out}.table"] = np.ascontiguousarray(nd["table"], dtype=np.float32)
        elif op == "host_reshape":
            node.update(op="host_float", fn="reshape", shape=nd["shape"])
        elif op == "channel_lut":
            node.update(op="channel_lut", **qkeys(nd["output_scale"], nd["output_zero_point"]))
            tensors[f"{out}.tables"] = np.ascontiguousarray(nd["tables"], dtype=np.uint8)
        elif op == "gather":
            node.update(op="gather", shape=nd["shape"])
            tensors[f"{out}.index"] = np.ascontiguousarray(nd["index"], dtype=np.uint32)
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
