#!/usr/bin/env python3
"""Make ONNX Runtime vectors for the quantized ONNX operators: one small model per
case (a single QOperator node, or a QDQ group as onnxruntime.quantization's
quantize_static writes it), run by onnxruntime's CPU execution provider with its
default graph optimizations (ORT_ENABLE_ALL), and store model, inputs and ORT's
outputs so that tools/onnx/check_onnx_ops.py (numpy) and the Rust side can
reproduce them bit for bit.

    python3 tools/onnx/gen_onnx_ops.py tests/data/onnx/ops [--seed 1]

Writes OUT/<case>/model.onnx, OUT/<case>/input_<i>.npy, OUT/<case>/output_<j>.npy
and OUT/manifest.json. Every session runs twice (1 intra-op thread, then ORT's
default thread count) and the outputs must agree; the graph ORT actually executes
is saved with SessionOptions.optimized_model_filepath and its node types are
recorded per case (`ort_nodes`), so the manifest says which kernel ran.
Needs: onnx, onnxruntime, numpy (tools/onnx/requirements.txt).
"""
import argparse
import json
import os
import platform
import shutil
import tempfile

import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 19
MS = "com.microsoft"
F32 = np.float32

NP2TP = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.uint8): TensorProto.UINT8,
    np.dtype(np.int8): TensorProto.INT8,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.int64): TensorProto.INT64,
}
QRANGE = {"u8": (0, 255), "s8": (-128, 127)}
QDT = {"u8": np.uint8, "s8": np.int8}


# ----------------------------------------------------------------- model helpers

class G:
    """Tiny graph builder."""

    def __init__(self):
        self.nodes, self.inputs, self.outputs, self.inits = [], [], [], []
        self.feeds = {}
        self.n = 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, base, arr):
        nm = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), nm))
        return nm

    def inp(self, base, arr):
        arr = np.asarray(arr)
        self.inputs.append(helper.make_tensor_value_info(base, NP2TP[arr.dtype], list(arr.shape)))
        self.feeds[base] = arr
        return base

    def node(self, op, ins, domain="", n_out=1, **attrs):
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, ins, outs, domain=domain or None, **attrs))
        return outs[0] if n_out == 1 else outs

    def out(self, name, dtype, shape=None):
        self.outputs.append(helper.make_tensor_value_info(name, NP2TP[np.dtype(dtype)], shape))

    def model(self):
        graph = helper.make_graph(self.nodes, "case", self.inputs, self.outputs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    helper.make_opsetid(MS, 1)])
        m.ir_version = 9
        return m


def q_np(x, s, zp, kind):
    """numpy QuantizeLinear (x / s, ties to even, saturate), only to make inputs."""
    lo, hi = QRANGE[kind]
    return np.clip(np.rint(F32(x) / F32(s)) + zp, lo, hi).astype(QDT[kind])


def rnd_q(rng, shape, kind, lo=None, hi=None):
    a, b = QRANGE[kind]
    lo = a if lo is None else lo
    hi = b if hi is None else hi
    return rng.integers(lo, hi + 1, size=shape).astype(QDT[kind])


def rnd_w(rng, shape, bits):
    """signed weights in [-(2^(bits-1)), 2^(bits-1)] (8: [-127, 127]; 7: [-64, 64]), nonzero mostly"""
    m = 127 if bits == 8 else 64
    w = rng.integers(-m, m + 1, size=shape).astype(np.int8)
    return w


def rnd_scale(rng, lo, hi):
    return F32(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def pow2(e):
    return F32(2.0 ** e)


# ------------------------------------------------------------------- ORT runner

ort.set_default_logger_severity(3)


def run_ort(model, feeds):
    tmpdir = tempfile.mkdtemp()
    try:
        results = []
        opt_path = os.path.join(tmpdir, "opt.onnx")
        for threads in (1, 0):
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            if threads == 1:
                so.optimized_model_filepath = opt_path
            sess = ort.InferenceSession(model.SerializeToString(), so,
                                        providers=["CPUExecutionProvider"])
            results.append(sess.run(None, feeds))
        for a, b in zip(results[0], results[1]):
            if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
                raise RuntimeError("ORT output depends on the thread count")
        opt = onnx.load(opt_path)
        nodes = [(n.domain or "ai.onnx") + "::" + n.op_type for n in opt.graph.node]
        return results[0], nodes
    finally:
        shutil.rmtree(tmpdir)


# ------------------------------------------------------------- QOperator cases

def case_quantize(rng, kind, axis, ties):
    g = G()
    shape = (2, 5, 3, 7)
    if ties:
        # scales are powers of two: x / s is exact, so x = (k + 0.5) * s is an exact tie
        s = np.array([pow2(-e) for e in rng.integers(2, 7, size=5)], F32) if axis else pow2(-4)
        sb = s.reshape(1, 5, 1, 1) if axis else s
        k = rng.integers(-140, 300, size=shape)
        x = ((k + rng.choice([0.5, -0.5, 0.0, 0.25], size=shape)) * sb).astype(F32)
    else:
        s = np.array([rnd_scale(rng, 0.003, 0.2) for _ in range(5)], F32) if axis else rnd_scale(rng, 0.003, 0.2)
        sb = s.reshape(1, 5, 1, 1) if axis else s
        x = (rng.normal(0, 90, size=shape) * sb).astype(F32)
    lo, hi = QRANGE[kind]
    zp = (rng.integers(lo + 20, hi - 20, size=5) if axis else rng.integers(lo + 20, hi - 20)).astype(QDT[kind])
    xi = g.inp("x", x)
    y = g.node("QuantizeLinear", [xi, g.const("s", s), g.const("zp", zp)], **({"axis": 1} if axis else {}))
    g.out(y, QDT[kind], list(shape))
    return g, {"op": "QuantizeLinear", "format": "qoperator", "act": kind,
               "per_axis": bool(axis), "ties": ties}


def case_dequantize(rng, kind, axis):
    g = G()
    shape = (2, 4, 3, 5)
    if kind == "s32":
        x = rng.integers(-2 ** 20, 2 ** 20, size=shape).astype(np.int32)
        zp = np.zeros(4, np.int32) if axis else np.int32(0)
    else:
        x = rnd_q(rng, shape, kind)
        lo, hi = QRANGE[kind]
        zp = (rng.integers(lo, hi + 1, size=4) if axis else rng.integers(lo, hi + 1)).astype(QDT[kind])
    s = np.array([rnd_scale(rng, 1e-4, 0.3) for _ in range(4)], F32) if axis else rnd_scale(rng, 1e-4, 0.3)
    xi = g.inp("x", x)
    y = g.node("DequantizeLinear", [xi, g.const("s", s), g.const("zp", zp)], **({"axis": 1} if axis else {}))
    g.out(y, F32, list(shape))
    return g, {"op": "DequantizeLinear", "format": "qoperator", "act": kind, "per_axis": bool(axis)}


def conv_out_hw(h, k, s, p, d):
    return (h + 2 * p - d * (k - 1) - 1) // s + 1


def case_qlinearconv(rng, act="u8", wkind="s8", per_channel=True, bits=7, cin=8, cout=16,
                     k=3, hw=(6, 7), stride=1, pad=1, dil=1, groups=1, bias=True,
                     scales="random", big=False, n=1):
    g = G()
    H, W = hw
    xs = pow2(-4) if scales == "pow2" else rnd_scale(rng, 0.005, 0.05)
    xlo, xhi = QRANGE[act]
    x_zp = QDT[act](rng.integers(xlo, xhi + 1) if not big else (xlo if act == "u8" else 0))
    x = rnd_q(rng, (n, cin, H, W), act)
    if big:
        x = np.full((n, cin, H, W), xhi, QDT[act])
        x[..., ::2, ::3] = xlo
    wshape = (cout, cin // groups, k, k)
    if wkind == "s8":
        w = rnd_w(rng, wshape, bits)
        if big:
            w = np.full(wshape, 127 if bits == 8 else 64, np.int8)
            w[1::2] = -w[1::2]
        w_zp = np.zeros(cout, np.int8) if per_channel else np.int8(0)
    else:
        w = rnd_q(rng, wshape, "u8")
        w_zp = np.uint8(rng.integers(100, 156))
        if per_channel:
            w_zp = np.full(cout, w_zp, np.uint8)  # QLinearConv: all per-channel zero points equal
    if scales == "pow2":
        # tie-friendly: small values around the zero points and multipliers 2^-1 / 2^-2 exactly,
        # so that a quarter to a half of the outputs are exact .5 ties
        x_zp = QDT[act](rng.integers(xlo + 10, xhi - 10))
        x = np.clip(int(x_zp) + rng.integers(-3, 4, size=x.shape), xlo, xhi).astype(QDT[act])
        w = rng.integers(-2, 3, size=wshape).astype(np.int8)
        ws = np.array([pow2(-int(e)) for e in rng.integers(5, 7, size=cout)], F32)
        if not per_channel:
            ws = ws[0]
    else:
        ws = np.array([rnd_scale(rng, 0.002, 0.02) for _ in range(cout)], F32) if per_channel \
            else rnd_scale(rng, 0.002, 0.02)
    # pick the output scale from the real accumulator range so outputs spread over the range
    wz = np.asarray(w_zp, np.int64)
    wz = wz.reshape(-1, 1, 1, 1) if wz.ndim else wz
    acc = ref_conv_int(x.astype(np.int64) - int(x_zp), w.astype(np.int64) - wz, stride, pad, dil, groups)
    b = None
    if bias:
        b = rng.integers(-3000, 3000, size=cout).astype(np.int32)
        if scales == "pow2":
            b = rng.integers(-20, 21, size=cout).astype(np.int32)
        if big:
            b = rng.integers(-2 ** 26, 2 ** 26, size=cout).astype(np.int32)
        acc = acc + b.reshape(1, -1, 1, 1)
    wmax = float(np.max(ws))
    span = float(acc.max() - acc.min()) * float(xs) * wmax
    ylo, yhi = QRANGE[act]
    if scales == "pow2":
        ys = pow2(-8)
        y_zp = QDT[act]((ylo + yhi + 1) // 2 + rng.integers(-10, 10))
    else:
        ys = F32(max(span, 1e-6) / rng.uniform(180, 300))
        y_zp = QDT[act](np.clip(np.round(-(acc.min() * xs * wmax) / ys) + ylo + rng.integers(-10, 10), ylo, yhi))
    xi = g.inp("x", x)
    ins = [xi, g.const("x_scale", xs), g.const("x_zp", x_zp), g.const("w", w), g.const("w_scale", ws),
           g.const("w_zp", w_zp), g.const("y_scale", ys), g.const("y_zp", y_zp)]
    if bias:
        ins.append(g.const("b", b))
    y = g.node("QLinearConv", ins, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4,
               dilations=[dil, dil], group=groups)
    g.out(y, QDT[act])
    return g, {"op": "QLinearConv", "format": "qoperator", "act": act, "weight": wkind,
               "per_channel": per_channel, "weight_bits": bits if wkind == "s8" else 8,
               "groups": groups, "stride": stride, "pad": pad, "dilation": dil, "kernel": k,
               "bias": bias, "scales": scales, "big_accumulator": big}


def ref_conv_int(x, w, stride, pad, dil, groups):
    """int64 NCHW conv of zero-point-free values (only used to pick output scales)."""
    n, c, h, wd = x.shape
    o, cg, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = conv_out_hw(h, k, stride, pad, dil), conv_out_hw(wd, k, stride, pad, dil)
    out = np.zeros((n, o, oh, ow), np.int64)
    og = o // groups
    for gi in range(groups):
        xs = xp[:, gi * cg:(gi + 1) * cg]
        for ky in range(k):
            for kx in range(k):
                patch = xs[:, :, ky * dil: ky * dil + stride * (oh - 1) + 1: stride,
                           kx * dil: kx * dil + stride * (ow - 1) + 1: stride]
                out[:, gi * og:(gi + 1) * og] += np.einsum("nchw,oc->nohw", patch, w[gi * og:(gi + 1) * og, :, ky, kx])
    return out


def pick_out_qparams(rng, acc_lo, acc_hi, kind, pow2scale=False):
    span = max(acc_hi - acc_lo, 1e-6)
    ylo, yhi = QRANGE[kind]
    ys = pow2(int(np.round(np.log2(span / 200.0)))) if pow2scale else F32(span / rng.uniform(180, 300))
    zp = int(np.clip(np.round(-acc_lo / ys) + ylo + rng.integers(-10, 10), ylo, yhi))
    return ys, QDT[kind](zp)


def case_qlinearmatmul(rng, act="u8", wkind="s8", per_col=False, bits=7, M=5, K=24, N=20,
                       batch=None, scales="random", big=False):
    g = G()
    xs = pow2(-4) if scales == "pow2" else rnd_scale(rng, 0.005, 0.05)
    ashape = (batch, M, K) if batch else (M, K)
    a = rnd_q(rng, ashape, act)
    lo, hi = QRANGE[act]
    a_zp = QDT[act](rng.integers(lo, hi + 1))
    if big:
        a = (hi - rng.integers(0, 3, size=ashape)).astype(QDT[act])
        a_zp = QDT[act](lo if act == "u8" else 0)
    if wkind == "s8":
        b = rnd_w(rng, (K, N), bits)
        if big:
            b = ((127 if bits == 8 else 64) - rng.integers(0, 3, size=(K, N))).astype(np.int8)
        b_zp = np.zeros(N, np.int8) if per_col else np.int8(0)
    else:
        b = rnd_q(rng, (K, N), "u8")
        b_zp = rng.integers(100, 156, size=N).astype(np.uint8) if per_col else np.uint8(rng.integers(100, 156))
    if scales == "pow2":
        # tie-friendly: small values, multipliers exactly 2^-1 / 2^-2
        a_zp = QDT[act](rng.integers(lo + 10, hi - 10))
        a = np.clip(int(a_zp) + rng.integers(-3, 4, size=ashape), lo, hi).astype(QDT[act])
        b = rng.integers(-2, 3, size=(K, N)).astype(np.int8)
        bs = np.array([pow2(-int(e)) for e in rng.integers(5, 7, size=N)], F32) if per_col else pow2(-5)
    else:
        bs = np.array([rnd_scale(rng, 0.002, 0.02) for _ in range(N)], F32) if per_col else rnd_scale(rng, 0.002, 0.02)
    acc = (a.astype(np.int64) - int(a_zp)) @ (b.astype(np.int64) - np.asarray(b_zp, np.int64))
    f = acc * float(xs) * float(np.max(bs))
    ys, y_zp = pick_out_qparams(rng, f.min(), f.max(), act, scales == "pow2")
    if scales == "pow2":
        ys, y_zp = pow2(-8), QDT[act]((lo + hi + 1) // 2 + rng.integers(-10, 10))
    if big:  # keep the outputs inside the range: the point is the size of the accumulator
        ys, y_zp = F32(f.max() / (QRANGE[act][1] - 3)), QDT[act](0)
    ai = g.inp("a", a)
    y = g.node("QLinearMatMul", [ai, g.const("a_scale", xs), g.const("a_zp", a_zp), g.const("b", b),
                                 g.const("b_scale", bs), g.const("b_zp", b_zp), g.const("y_scale", ys),
                                 g.const("y_zp", y_zp)])
    g.out(y, QDT[act])
    return g, {"op": "QLinearMatMul", "format": "qoperator", "act": act, "weight": wkind,
               "per_channel": per_col, "weight_bits": bits if wkind == "s8" else 8, "scales": scales,
               "big_accumulator": big}


def case_matmulinteger(rng, act="u8", wkind="s8", per_col=False, M=4, K=40, N=9, bits=8, const_b=True):
    g = G()
    a = rnd_q(rng, (M, K), act)
    lo, hi = QRANGE[act]
    a_zp = QDT[act](rng.integers(lo, hi + 1))
    if wkind == "s8":
        b = rnd_w(rng, (K, N), bits)
        b_zp = rng.integers(-5, 6, size=N).astype(np.int8) if per_col else np.int8(rng.integers(-5, 6))
    else:
        b = rnd_q(rng, (K, N), "u8")
        b_zp = rng.integers(100, 156, size=N).astype(np.uint8) if per_col else np.uint8(rng.integers(100, 156))
    ai = g.inp("a", a)
    bi = g.const("b", b) if const_b else g.inp("b", b)
    y = g.node("MatMulInteger", [ai, bi, g.const("a_zp", a_zp), g.const("b_zp", b_zp)])
    g.out(y, np.int32)
    return g, {"op": "MatMulInteger", "format": "qoperator", "act": act, "weight": wkind,
               "per_channel": per_col, "weight_bits": bits if wkind == "s8" else 8, "const_b": const_b}


def case_convinteger(rng, cin=6, cout=5, k=3, hw=(6, 5), stride=1, pad=1, dil=1, groups=1):
    g = G()
    x = rnd_q(rng, (1, cin, *hw), "u8")
    w = rnd_q(rng, (cout, cin // groups, k, k), "u8")
    x_zp = np.uint8(rng.integers(0, 256))
    w_zp = np.uint8(rng.integers(0, 256))
    xi = g.inp("x", x)
    y = g.node("ConvInteger", [xi, g.const("w", w), g.const("x_zp", x_zp), g.const("w_zp", w_zp)],
               kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, dilations=[dil, dil], group=groups)
    g.out(y, np.int32)
    return g, {"op": "ConvInteger", "format": "qoperator", "act": "u8", "weight": "u8",
               "groups": groups, "stride": stride, "pad": pad, "dilation": dil}


def case_qgemm(rng, act="u8", per_col=True, bits=7, M=3, K=32, N=12, bias=True, float_out=False,
               transA=0, scales="random"):
    g = G()
    lo, hi = QRANGE[act]
    a = rnd_q(rng, (K, M) if transA else (M, K), act)
    a_zp = QDT[act](rng.integers(lo, hi + 1))
    xs = pow2(-4) if scales == "pow2" else rnd_scale(rng, 0.005, 0.05)
    b = rnd_w(rng, (N, K), bits)  # transB = 1, as the quantizer writes it
    b_zp = np.zeros(N, np.int8) if per_col else np.int8(0)
    if scales == "pow2":
        # tie-friendly: small values, multipliers exactly 2^-1 / 2^-2
        a_zp = QDT[act](rng.integers(lo + 10, hi - 10))
        a = np.clip(int(a_zp) + rng.integers(-3, 4, size=a.shape), lo, hi).astype(QDT[act])
        b = rng.integers(-2, 3, size=(N, K)).astype(np.int8)
        bs = np.array([pow2(-int(e)) for e in rng.integers(5, 7, size=N)], F32) if per_col else pow2(-5)
    else:
        bs = np.array([rnd_scale(rng, 0.002, 0.02) for _ in range(N)], F32) if per_col else rnd_scale(rng, 0.002, 0.02)
    aa = (a.T if transA else a).astype(np.int64) - int(a_zp)
    acc = aa @ b.astype(np.int64).T
    c = rng.integers(-4000, 4000, size=N).astype(np.int32) if bias else None
    if bias and scales == "pow2":
        c = rng.integers(-20, 21, size=N).astype(np.int32)
    if bias:
        acc = acc + c
    f = acc * float(xs) * float(np.max(bs))
    ai = g.inp("a", a)
    ins = [ai, g.const("a_scale", xs), g.const("a_zp", a_zp), g.const("b", b), g.const("b_scale", bs),
           g.const("b_zp", b_zp), g.const("c", c) if bias else ""]
    if not float_out:
        ys, y_zp = pick_out_qparams(rng, f.min(), f.max(), act, scales == "pow2")
        if scales == "pow2":
            ys, y_zp = pow2(-8), QDT[act]((lo + hi + 1) // 2 + rng.integers(-10, 10))
        ins += [g.const("y_scale", ys), g.const("y_zp", y_zp)]
    y = g.node("QGemm", ins, domain=MS, transA=transA, transB=1, alpha=1.0)
    g.out(y, F32 if float_out else QDT[act])
    return g, {"op": "QGemm", "format": "qoperator", "act": act, "weight": "s8", "per_channel": per_col,
               "weight_bits": bits, "bias": bias, "float_output": float_out, "transA": transA, "scales": scales}


def case_qbinary(rng, op, act="u8", shape_a=(1, 8, 5, 7), shape_b=(1, 8, 5, 7), scales="random", exhaustive=False,
                 const_a=False, const_b=False):
    g = G()
    lo, hi = QRANGE[act]
    if exhaustive:
        # every (a, b) pair: 256 x 256 elements
        av = np.arange(lo, hi + 1)
        a = np.repeat(av, 256).astype(QDT[act]).reshape(1, 256, 256)
        b = np.tile(av, 256).astype(QDT[act]).reshape(1, 256, 256)
        shape_a = shape_b = a.shape
    else:
        a = rnd_q(rng, shape_a, act)
        b = rnd_q(rng, shape_b, act)
    if scales == "pow2":
        sa, sb, sc = pow2(-5), pow2(-4), pow2(-4)
    else:
        sa, sb = rnd_scale(rng, 0.005, 0.1), rnd_scale(rng, 0.005, 0.1)
        sc = F32((sa + sb) * rng.uniform(0.8, 1.3)) if op == "QLinearAdd" else F32(sa * sb * 128 * rng.uniform(0.7, 1.5))
    za, zb, zc = (QDT[act](rng.integers(lo, hi + 1)) for _ in range(3))
    # const_a / const_b: that operand is an initializer (a constant tensor), not a graph input
    ai = g.const("a", a) if const_a else g.inp("a", a)
    bi = g.const("b", b) if const_b else g.inp("b", b)
    y = g.node(op, [ai, g.const("a_scale", sa), g.const("a_zp", za), bi, g.const("b_scale", sb),
                    g.const("b_zp", zb), g.const("c_scale", sc), g.const("c_zp", zc)], domain=MS)
    g.out(y, QDT[act])
    meta = {"op": op, "format": "qoperator", "act": act, "shape_a": list(shape_a), "shape_b": list(shape_b),
            "scales": scales, "exhaustive": exhaustive}
    if const_a or const_b:
        meta["constant"] = "a" if const_a else "b"
    return g, meta


def case_qgap(rng, act="u8", shape=(2, 10, 5, 6), channels_last=0):
    g = G()
    lo, hi = QRANGE[act]
    x = rnd_q(rng, shape, act)
    xs = rnd_scale(rng, 0.005, 0.1)
    ys = F32(xs * rng.uniform(0.3, 1.5))
    xz, yz = QDT[act](rng.integers(lo, hi + 1)), QDT[act](rng.integers(lo, hi + 1))
    xi = g.inp("x", x)
    y = g.node("QLinearGlobalAveragePool", [xi, g.const("x_scale", xs), g.const("x_zp", xz),
                                            g.const("y_scale", ys), g.const("y_zp", yz)],
               domain=MS, channels_last=channels_last)
    g.out(y, QDT[act])
    return g, {"op": "QLinearGlobalAveragePool", "format": "qoperator", "act": act, "channels_last": channels_last}


def case_qavgpool(rng, act="u8", shape=(1, 6, 7, 8), k=3, stride=2, pad=1, count_include_pad=0,
                  ceil_mode=0, channels_last=0, same_q=False):
    g = G()
    lo, hi = QRANGE[act]
    x = rnd_q(rng, shape, act)
    xs = rnd_scale(rng, 0.005, 0.1)
    xz = QDT[act](rng.integers(lo, hi + 1))
    ys, yz = (xs, xz) if same_q else (F32(xs * rng.uniform(0.5, 1.5)), QDT[act](rng.integers(lo, hi + 1)))
    xi = g.inp("x", x)
    y = g.node("QLinearAveragePool", [xi, g.const("x_scale", xs), g.const("x_zp", xz),
                                      g.const("y_scale", ys), g.const("y_zp", yz)], domain=MS,
               kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4,
               count_include_pad=count_include_pad, ceil_mode=ceil_mode, channels_last=channels_last)
    g.out(y, QDT[act])
    return g, {"op": "QLinearAveragePool", "format": "qoperator", "act": act, "kernel": k, "stride": stride,
               "pad": pad, "count_include_pad": count_include_pad, "ceil_mode": ceil_mode,
               "channels_last": channels_last}


def case_qconcat(rng, act="u8", n_in=3, axis=1, same_first=True):
    g = G()
    lo, hi = QRANGE[act]
    ys, yz = rnd_scale(rng, 0.01, 0.1), QDT[act](rng.integers(lo, hi + 1))
    ins = [g.const("y_scale", ys), g.const("y_zp", yz)]
    for i in range(n_in):
        x = rnd_q(rng, (1, 2 + i, 4, 3) if axis == 1 else (1, 3, 2 + i, 3), act)
        if i == 0 and same_first:
            s, z = ys, yz
        else:
            s, z = F32(ys * rng.uniform(0.4, 2.5)), QDT[act](rng.integers(lo, hi + 1))
        ins += [g.inp(f"x{i}", x), g.const("s", s), g.const("z", z)]
    y = g.node("QLinearConcat", ins, domain=MS, axis=axis)
    g.out(y, QDT[act])
    return g, {"op": "QLinearConcat", "format": "qoperator", "act": act, "inputs": n_in, "axis": axis}


def case_qlut(rng, op, act="u8", alpha=0.1):
    """QLinearSigmoid / QLinearLeakyRelu over every input value (they are 256-entry tables)."""
    g = G()
    lo, hi = QRANGE[act]
    x = np.arange(lo, hi + 1).astype(QDT[act]).reshape(1, 4, 8, 8)
    xs = rnd_scale(rng, 0.02, 0.08)
    xz = QDT[act](rng.integers(lo + 60, hi - 60))
    if op == "QLinearSigmoid":
        ys = F32(1.0 / 256.0) if rng.random() < 0.5 else rnd_scale(rng, 0.003, 0.005)
        yz = QDT[act](lo)
    else:
        ys, yz = F32(xs * rng.uniform(0.6, 1.2)), QDT[act](rng.integers(lo + 20, hi - 100))
    xi = g.inp("x", x)
    attrs = {"alpha": float(alpha)} if op == "QLinearLeakyRelu" else {}
    y = g.node(op, [xi, g.const("x_scale", xs), g.const("x_zp", xz), g.const("y_scale", ys),
                    g.const("y_zp", yz)], domain=MS, **attrs)
    g.out(y, QDT[act])
    return g, {"op": op, "format": "qoperator", "act": act, **({"alpha": alpha} if attrs else {})}


def case_qsoftmax(rng, act="u8", shape=(3, 10), axis=-1, opset=13):
    g = G()
    lo, hi = QRANGE[act]
    x = rnd_q(rng, shape, act)
    xs = rnd_scale(rng, 0.02, 0.2)
    xz = QDT[act](rng.integers(lo, hi + 1))
    ys = F32(1.0 / 256.0)
    yz = QDT[act](lo)
    xi = g.inp("x", x)
    y = g.node("QLinearSoftmax", [xi, g.const("x_scale", xs), g.const("x_zp", xz), g.const("y_scale", ys),
                                  g.const("y_zp", yz)], domain=MS, axis=axis, opset=opset)
    g.out(y, QDT[act])
    return g, {"op": "QLinearSoftmax", "format": "qoperator", "act": act, "axis": axis, "opset": opset}


def case_maxpool(rng, act="u8", shape=(1, 5, 7, 8), k=3, stride=2, pad=1, dil=1, ceil_mode=0):
    g = G()
    x = rnd_q(rng, shape, act)
    xi = g.inp("x", x)
    y = g.node("MaxPool", [xi], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4,
               dilations=[dil, dil], ceil_mode=ceil_mode)
    g.out(y, QDT[act])
    return g, {"op": "MaxPool", "format": "qoperator", "act": act, "kernel": k, "stride": stride, "pad": pad,
               "dilation": dil, "ceil_mode": ceil_mode}


# ---------------------------------------------------------- adversarial cases
# Inputs/qparams searched so that the rule in check_onnx_ops.py and plausible alternatives
# (reciprocal instead of division, another product order, FMA or no FMA, zero point added after
# rounding, ...) give different outputs: these vectors pin the detail, not just the idea.

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_onnx_ops as R  # noqa: E402  (same folder)


def _differs(rule_out, alt_outs):
    return sum(int(np.any(np.asarray(a) != np.asarray(rule_out))) for a in alt_outs)


def search(rng, draw, rule, alts, tries=400):
    """draw(rng) -> params; rule(params) -> output; alts: list of params -> output.
    Returns the first params where every alternative differs from the rule, else the best seen."""
    best, best_n = None, -1
    for _ in range(tries):
        p = draw(rng)
        n = _differs(rule(p), [a(p) for a in alts])
        if n > best_n:
            best, best_n = p, n
        if n == len(alts):
            break
    return best, best_n


def case_quantize_adversarial(rng, kind):
    """x / s versus x * (1 / s): values next to .5 ties where the two round differently."""
    g = G()
    lo, hi = QRANGE[kind]
    for _ in range(100):
        s = rnd_scale(rng, 0.003, 0.2)
        k = rng.integers(lo - 5, hi + 5, size=4000)
        base = ((k + 0.5) * np.float64(s)).astype(F32)
        x = np.nextafter(base, np.where(rng.random(4000) < 0.5, np.inf, -np.inf).astype(F32)).astype(F32)
        x = np.where(rng.random(4000) < 0.3, base, x).astype(F32)
        inv = F32(F32(1.0) / s)
        d1 = np.rint(x / s)
        d2 = np.rint(F32(x * inv))
        pick = np.flatnonzero(d1 != d2)
        if pick.size >= 24:
            break
    sel = np.concatenate([x[pick[:40]], x[rng.integers(0, 4000, size=24)]]).astype(F32)
    zp = QDT[kind](rng.integers(lo + 20, hi - 20))
    xi = g.inp("x", sel.reshape(1, -1))
    y = g.node("QuantizeLinear", [xi, g.const("s", s), g.const("zp", zp)])
    g.out(y, QDT[kind])
    return g, {"op": "QuantizeLinear", "format": "qoperator", "act": kind, "per_axis": False,
               "adversarial": f"{min(pick.size, 40)} inputs where x/s and x*(1/s) round differently"}


def case_qlinearconv_adversarial(rng, act="u8"):
    """output multiplier (xs*ws)/ys versus xs*(ws/ys), (xs/ys)*ws and an f64 product: per-channel
    scales where the multipliers differ in the last bit, and per-channel biases chosen so that an
    output lands where the difference changes the rounded result."""
    g = G()
    cin, cout, k = 8, 12, 3
    x = rnd_q(rng, (1, cin, 6, 6), act)
    lo, hi = QRANGE[act]
    x_zp = QDT[act](rng.integers(lo, hi + 1))
    w = rnd_w(rng, (cout, cin, k, k), 7)
    acc0 = R.conv_acc(x, w, x_zp, 0, [1, 1], [1, 1, 1, 1], [1, 1], 1)[0]          # [cout, 6, 6]
    alts = [lambda xs, ws, ys: F32(xs * F32(ws / ys)),
            lambda xs, ws, ys: F32(F32(xs / ys) * ws),
            lambda xs, ws, ys: F32(np.float64(xs) * np.float64(ws) / np.float64(ys))]
    xs = rnd_scale(rng, 0.005, 0.05)
    span = float(acc0.max() - acc0.min()) * float(xs) * 0.02
    ys = F32(span / rng.uniform(60, 120))
    yz = QDT[act](np.clip(np.round(-acc0.min() * float(xs) * 0.01 / ys) + lo, lo, hi))
    ws = np.zeros(cout, F32)
    b = np.zeros(cout, np.int32)
    hits = 0
    for c in range(cout):
        alt = alts[c % len(alts)]
        for _ in range(500):
            wsc = rnd_scale(rng, 0.002, 0.02)
            m = R.out_scale(xs, wsc, ys)
            ma = alt(xs, wsc, ys)
            if m == ma:
                continue
            # biases that make some output of this channel round differently
            cand = np.arange(-30000, 30000, dtype=np.int64)
            found = None
            for t in acc0[c].reshape(-1)[:6]:
                v = cand + int(t)
                r1 = R.requantize(v, m, yz, QDT[act])
                r2 = R.requantize(v, ma, yz, QDT[act])
                d = np.flatnonzero(r1 != r2)
                if d.size:
                    found = int(cand[d[rng.integers(0, d.size)]])
                    break
            if found is not None:
                ws[c], b[c] = wsc, found
                hits += 1
                break
        else:
            ws[c], b[c] = rnd_scale(rng, 0.002, 0.02), rng.integers(-2000, 2000)
    xi = g.inp("x", x)
    y = g.node("QLinearConv", [xi, g.const("x_scale", xs), g.const("x_zp", x_zp), g.const("w", w),
                               g.const("w_scale", ws), g.const("w_zp", np.zeros(cout, np.int8)),
                               g.const("y_scale", ys), g.const("y_zp", yz), g.const("b", b)],
               kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    g.out(y, QDT[act])
    return g, {"op": "QLinearConv", "format": "qoperator", "act": act, "weight": "s8", "per_channel": True,
               "weight_bits": 7, "groups": 1, "stride": 1, "pad": 1, "dilation": 1, "kernel": 3, "bias": True,
               "adversarial": f"{hits}/{cout} channels where another multiplier order changes an output"}


def case_qlinearconv_f32_accumulator(rng, act="u8"):
    """|acc| > 2^24: the i32 accumulator (bias included) is converted to f32 (round to nearest even)
    before the multiply. Power-of-two scales make the multiplier exactly 2^-18; per-channel biases put
    one output of every channel at acc = (2k+1)*2^17 - 1 with k odd, where the exact value rounds to
    k but f32(acc) = (2k+1)*2^17 is a tie that rounds to k+1."""
    g = G()
    cin, cout, k = 64, 8, 3
    lo, hi = QRANGE[act]
    x_zp = QDT[act](0 if act == "s8" else lo)
    x = (hi - rng.integers(0, 20, size=(1, cin, 4, 4))).astype(QDT[act])
    w = (64 - rng.integers(0, 8, size=(cout, cin, k, k))).astype(np.int8)
    w[1::2] = -w[1::2]
    acc0 = R.conv_acc(x, w, x_zp, 0, [1, 1], [1, 1, 1, 1], [1, 1], 1)[0]     # [cout, 4, 4]
    xs, ws, ys = pow2(-4), np.full(cout, pow2(-7), F32), pow2(7)
    assert R.out_scale(xs, ws[0], ys) == pow2(-18)
    b = np.zeros(cout, np.int32)
    yz = QDT[act](0 if act == "u8" else 0)
    for c in range(cout):
        a = int(acc0[c, 1, 1])
        # target total (2k+1)*2^17 - 1, |total| in [2^24, 2^25], k odd, sign of the channel
        kk = int(rng.integers(32, 63)) * 2 + 1
        kk = kk if act == "u8" or c % 2 == 0 else -kk
        if act == "u8":
            kk = abs(kk)
        target = (2 * kk + 1) * 2 ** 17 - 1
        b[c] = target - a
    xi = g.inp("x", x)
    y = g.node("QLinearConv", [xi, g.const("x_scale", xs), g.const("x_zp", x_zp), g.const("w", w),
                               g.const("w_scale", ws), g.const("w_zp", np.zeros(cout, np.int8)),
                               g.const("y_scale", ys), g.const("y_zp", yz), g.const("b", b)],
               kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    g.out(y, QDT[act])
    return g, {"op": "QLinearConv", "format": "qoperator", "act": act, "weight": "s8", "per_channel": True,
               "weight_bits": 7, "groups": 1, "stride": 1, "pad": 1, "dilation": 1, "kernel": 3, "bias": True,
               "adversarial": "accumulators in [2^24, 2^26]: f32(acc) rounding decides one output per channel"}


def _binary_inputs(act, mode):
    lo, hi = QRANGE[act]
    av = np.arange(lo, hi + 1).astype(QDT[act])
    full_a = np.repeat(av, 256).reshape(1, 256, 256)
    full_b = np.tile(av, 256).reshape(1, 256, 256)
    col = av.reshape(1, 256, 1)
    return {"vector": (full_a, full_b), "scalar_b": (full_b, col), "scalar_a": (col, full_b)}[mode]


def case_qbinary_adversarial(rng, op, act="u8", mode="vector"):
    """QLinearAdd: fma-contracted fixed part and broadcast role swap; QLinearMul: no FMA, (sa*sb)/sc."""
    g = G()
    lo, hi = QRANGE[act]
    a, b = _binary_inputs(act, mode)

    def draw(r):
        sa, sb = rnd_scale(r, 0.005, 0.1), rnd_scale(r, 0.005, 0.1)
        sc = F32((sa + sb) * r.uniform(0.8, 1.3)) if op == "QLinearAdd" else F32(sa * sb * 128 * r.uniform(0.7, 1.5))
        return (sa, QDT[act](r.integers(lo, hi + 1)), sb, QDT[act](r.integers(lo, hi + 1)), sc,
                QDT[act](r.integers(lo, hi + 1)))

    if op == "QLinearAdd":
        rule = lambda p: R.k_qlinearadd(a, p[0], p[1], b, p[2], p[3], p[4], p[5])

        def alt_add(p, fixed_fma, swap):
            sa, za, sb, zb, sc, zc = p
            A_, B_ = a, b
            if swap and R.binary_mode(a.shape, b.shape) == "scalar_a":
                A_, B_, sa, sb, za, zb = b, a, sb, sa, zb, za
            ra, rb = F32(sa / sc), F32(sb / sc)
            if fixed_fma:
                fixed = F32(F32(int(zc)) - R.fma32(ra, F32(int(za)), F32(rb * F32(int(zb)))))
            else:
                fixed = F32(F32(int(zc)) - F32(F32(ra * F32(int(za))) + F32(rb * F32(int(zb)))))
            shp = np.broadcast_shapes(A_.shape, B_.shape)
            Af = np.broadcast_to(A_.astype(np.int32).astype(F32), shp)
            Bf = np.broadcast_to(B_.astype(np.int32).astype(F32), shp)
            return R.saturate(np.rint(R.fma32(Af, ra, R.fma32(Bf, rb, fixed))), A_.dtype)

        alts = [lambda p: alt_add(p, False, True)]
        if mode == "scalar_a":
            alts.append(lambda p: alt_add(p, True, False))
    else:
        rule = lambda p: R.k_qlinearmul(a, p[0], p[1], b, p[2], p[3], p[4], p[5])

        def alt_mul(p, fma, order):
            sa, za, sb, zb, sc, zc = p
            r = F32(F32(sa * sb) / sc) if order == 0 else F32(sa * F32(sb / sc))
            pr = (a.astype(np.int64) - int(za)) * (b.astype(np.int64) - int(zb))
            v = R.fma32(pr.astype(F32), r, F32(int(zc))) if fma else F32(F32(pr.astype(F32) * r) + F32(int(zc)))
            return R.saturate(np.rint(v), a.dtype)

        alts = [lambda p: alt_mul(p, True, 0), lambda p: alt_mul(p, False, 1)]
    p, n = search(rng, draw, rule, alts, tries=300)
    ai, bi = g.inp("a", a), g.inp("b", b)
    y = g.node(op, [ai, g.const("a_scale", p[0]), g.const("a_zp", p[1]), bi, g.const("b_scale", p[2]),
                    g.const("b_zp", p[3]), g.const("c_scale", p[4]), g.const("c_zp", p[5])], domain=MS)
    g.out(y, QDT[act])
    return g, {"op": op, "format": "qoperator", "act": act, "shape_a": list(a.shape), "shape_b": list(b.shape),
               "exhaustive": True, "adversarial": f"{n}/{len(alts)} alternative formulas give other outputs"}


def case_qgap_adversarial(rng, act="u8"):
    """scale xs/(ys*N) versus (xs/ys)/N, an f64 scale, and the zero point added before rounding:
    qparams where each alternative differs for some channel sum, then channels built with those sums."""
    g = G()
    lo, hi = QRANGE[act]
    H, W = 6, 7
    N = H * W
    alts = [lambda xs, ys: F32(F32(xs / ys) / F32(N)),
            lambda xs, ys: F32(np.float64(xs) / (np.float64(ys) * N)),
            None]
    sums_all = np.arange(lo * N, hi * N + 1, dtype=np.int64)
    best = None
    for _ in range(3000):
        xs = rnd_scale(rng, 0.005, 0.1)
        ys = F32(xs * rng.uniform(0.05, 0.3))
        xz, yz = QDT[act](rng.integers(lo, hi + 1)), QDT[act](rng.integers(lo, hi + 1))
        acc = sums_all - int(xz) * N
        sc = F32(xs / F32(ys * F32(N)))
        rule = R.requantize(acc, sc, yz, QDT[act])
        picks = []
        for k, alt in enumerate(alts):
            if alt is None:  # zero point added in f32 before rounding
                v = np.clip(R.i2f(acc) * sc, F32(lo - int(yz)), F32(hi - int(yz)))
                other = R.saturate(np.rint(F32(v + F32(int(yz)))), QDT[act])
            else:
                other = R.requantize(acc, alt(xs, ys), yz, QDT[act])
            d = np.flatnonzero(other != rule)
            if d.size:
                picks.append(sums_all[d[: 8]])
        if best is None or len(picks) > len(best[0]):
            best = (picks, xs, ys, xz, yz)
        if len(picks) == len(alts):
            break
    picks, xs, ys, xz, yz = best
    sums = np.concatenate(picks + [rng.integers(lo * N, hi * N + 1, size=64 - sum(len(p) for p in picks))])
    x = np.zeros((1, len(sums), H, W), np.int64)
    for c, sm in enumerate(sums):
        base = sm // N
        rem = sm - base * N
        v = np.full(N, base)
        v[:rem] += 1
        rng.shuffle(v)
        x[0, c] = v.reshape(H, W)
    x = x.astype(QDT[act])
    xi = g.inp("x", x)
    y = g.node("QLinearGlobalAveragePool", [xi, g.const("x_scale", xs), g.const("x_zp", xz),
                                            g.const("y_scale", ys), g.const("y_zp", yz)], domain=MS, channels_last=0)
    g.out(y, QDT[act])
    return g, {"op": "QLinearGlobalAveragePool", "format": "qoperator", "act": act, "channels_last": 0,
               "adversarial": f"{len(picks)}/3 alternatives (scale order, f64 scale, zero point before rounding) "
                              "differ on some channel"}


def case_qavgpool_adversarial(rng, act="u8"):
    """k=3, s=3 windows (count 9, no padding): qparams and window contents where the zero point added
    after rounding, an f64 mean, and multiplying by 1/9 each give another output than the rule."""
    g = G()
    lo, hi = QRANGE[act]
    C = 16
    # candidate windows: 256 constant ones and random ones
    cands = np.concatenate([np.repeat(np.arange(lo, hi + 1), 9).reshape(-1, 9),
                            rng.integers(lo, hi + 1, size=(3000, 9))]).astype(np.int64)

    def outs(xs, xz, ys, yz):
        d = R.dequantize(cands, xs, xz)
        s_ = np.zeros(len(cands), F32)
        for t in range(9):
            s_ = F32(s_ + d[:, t])
        v = F32(s_ / F32(9))
        rule = R.saturate(np.rint(F32(F32(v / ys) + F32(int(yz)))), QDT[act])
        a0 = R.saturate(np.rint(F32(v / ys)) + int(yz), QDT[act])
        a1 = R.saturate(np.rint(F32(F32(F32(d.astype(np.float64).mean(1)) / ys) + F32(int(yz)))), QDT[act])
        a2 = R.saturate(np.rint(F32(F32(F32(s_ * F32(F32(1) / F32(9))) / ys) + F32(int(yz)))), QDT[act])
        return rule, [a0, a1, a2]

    best = None
    for _ in range(1500):
        xs = rnd_scale(rng, 0.005, 0.1)
        p = (xs, QDT[act](rng.integers(lo, hi + 1)), F32(xs * rng.uniform(0.3, 1.5)), QDT[act](rng.integers(lo, hi + 1)))
        rule, alts = outs(*p)
        diffs = [np.flatnonzero(a != rule) for a in alts]
        n = sum(int(d.size > 0) for d in diffs)
        if best is None or n > best[0]:
            best = (n, p, diffs)
        if n == 3:
            break
    n, p, diffs = best
    chosen = list(np.concatenate([d[:20] for d in diffs]))
    while len(chosen) < C * 9:
        chosen.append(int(rng.integers(0, len(cands))))
    chosen = chosen[:C * 9]
    x = np.zeros((1, C, 9, 9), np.int64)
    for i, ci in enumerate(chosen):
        c, wi = divmod(i, 9)
        oy, ox = divmod(wi, 3)
        x[0, c, oy * 3:oy * 3 + 3, ox * 3:ox * 3 + 3] = cands[ci].reshape(3, 3)
    x = x.astype(QDT[act])
    xi = g.inp("x", x)
    y = g.node("QLinearAveragePool", [xi, g.const("x_scale", p[0]), g.const("x_zp", p[1]),
                                      g.const("y_scale", p[2]), g.const("y_zp", p[3])], domain=MS,
               kernel_shape=[3, 3], strides=[3, 3], pads=[0, 0, 0, 0], count_include_pad=0)
    g.out(y, QDT[act])
    return g, {"op": "QLinearAveragePool", "format": "qoperator", "act": act, "kernel": 3, "stride": 3, "pad": 0,
               "count_include_pad": 0, "ceil_mode": 0, "channels_last": 0,
               "adversarial": f"{n}/3 alternatives (zero point after rounding, f64 mean, times 1/9) differ on some window"}


def case_qsigmoid_adversarial(rng, act="u8"):
    """table entries where the FMA logistic kernel, the non-FMA one and an exact sigmoid disagree"""
    g = G()
    lo, hi = QRANGE[act]
    x = np.arange(lo, hi + 1).astype(QDT[act]).reshape(1, 1, 16, 16)

    def draw(r):
        return rnd_scale(r, 0.02, 0.1), QDT[act](r.integers(lo + 60, hi - 60)), rnd_scale(r, 0.0035, 0.0045), QDT[act](lo)

    rule = lambda p: R.k_qlut("QLinearSigmoid", x, *p, {})

    def alt(p, k):
        xs, xz, ys, yz = p
        vals, d = R.lut_input(x.dtype, xs, xz)
        if k == 0:
            f = (1.0 / (1.0 + np.exp(-d.astype(np.float64)))).astype(F32)
        else:  # the SSE2 kernel (no FMA), clamped to [0, 1]
            c = [F32(v) for v in (4.37031012579801e-11, 1.15627324459942e-07, 6.08574864600143e-05,
                                  8.51377133304701e-03, 2.48287947061529e-01, 6.10247389755681e-13,
                                  5.76102136993427e-09, 6.29106785017040e-06, 1.70198817374094e-03,
                                  1.16817656904453e-01, 9.93151921023180e-01)]
            v = np.clip(d, F32(-18), F32(18))
            v2 = F32(v * v)
            pp = F32(F32(v2 * c[0]) + c[1])
            for cc in c[2:5]:
                pp = F32(F32(pp * v2) + cc)
            pp = F32(pp * v)
            q = F32(F32(v2 * c[5]) + c[6])
            for cc in c[7:11]:
                q = F32(F32(q * v2) + cc)
            f = np.clip(F32(F32(pp / q) + F32(0.5)), F32(0), F32(1))
        return R.apply_lut(x, R.quantize(f, ys, yz, x.dtype))

    alts = [lambda p, k=k: alt(p, k) for k in range(2)]
    p, n = search(rng, draw, rule, alts, tries=600)
    xi = g.inp("x", x)
    y = g.node("QLinearSigmoid", [xi, g.const("x_scale", p[0]), g.const("x_zp", p[1]), g.const("y_scale", p[2]),
                                  g.const("y_zp", p[3])], domain=MS)
    g.out(y, QDT[act])
    return g, {"op": "QLinearSigmoid", "format": "qoperator", "act": act,
               "adversarial": f"{n}/2 alternative sigmoids (exact, non-FMA kernel) give other tables"}


# ------------------------------------------------------------------- QDQ cases

class QDQ(G):
    """Builds graphs the way quantize_static writes them: float graph input -> Q -> DQ,
    weights as int8 initializers -> DQ, int32 bias -> DQ(scale = x_scale * w_scale), every
    op output -> Q -> DQ, float graph output."""

    def q(self, x, s, z):
        return self.node("QuantizeLinear", [x, self.const("s", s), self.const("zp", z)])

    def dq(self, x, s, z, axis=None):
        return self.node("DequantizeLinear", [x, self.const("s", s), self.const("zp", z)],
                         **({"axis": axis} if axis is not None else {}))

    def qdq(self, x, s, z):
        return self.dq(self.q(x, s, z), s, z)

    def float_input(self, name, rng, shape, s, z, kind, ties=False):
        lo, hi = QRANGE[kind]
        q = rng.integers(lo, hi + 1, size=shape)
        jitter = rng.choice([0.0, 0.5, -0.5, 0.3, -0.2], size=shape) if ties else rng.uniform(-0.49, 0.49, size=shape)
        x = ((q - int(z) + jitter) * float(s)).astype(F32)
        return self.inp(name, x)


def weight_dq(g, w, ws, axis):
    wz = np.zeros(ws.shape, np.int8) if np.ndim(ws) else np.int8(0)
    return g.dq(g.const("w_q", w), ws, wz, axis=axis if np.ndim(ws) else None)


def bias_dq(g, b, xs, ws):
    bs = (np.float32(xs) * np.asarray(ws, F32)).astype(F32)
    if np.ndim(bs) == 0:
        bs = np.full(b.shape, bs, F32)  # quantize_static writes a per-channel bias scale vector
    return g.dq(g.const("b_q", b), bs, np.zeros(b.shape, np.int32), axis=0)


def act_params(rng, kind, lo_f, hi_f):
    """scale/zero point the way the quantizer computes them from a float range (min(0,lo), max(0,hi))"""
    qlo, qhi = QRANGE[kind]
    lo_f, hi_f = min(lo_f, 0.0), max(hi_f, 0.0)
    s = F32((hi_f - lo_f) / (qhi - qlo))
    z = QDT[kind](np.clip(np.round(qlo - lo_f / s), qlo, qhi))
    return s, z


def case_qdq_conv(rng, act="u8", per_channel=True, bits=7, act_fn=None, cin=8, cout=16, k=3, hw=(6, 6),
                  stride=1, pad=1, groups=1, bias=True, relu_zp_at_min=True, float_bias=False, quantized_input=False,
                  clip_wider=False):
    g = QDQ()
    xs, xz = act_params(rng, act, -2.0, 3.0)
    if quantized_input:
        # the graph input is already quantized (no QuantizeLinear in front of the DQ)
        xd = g.dq(g.inp("x", rnd_q(rng, (1, cin, *hw), act)), xs, xz)
    else:
        x = g.float_input("x", rng, (1, cin, *hw), xs, xz, act, ties=True)
        xd = g.qdq(x, xs, xz)
    wshape = (cout, cin // groups, k, k)
    w = rnd_w(rng, wshape, bits)
    ws = np.array([rnd_scale(rng, 0.002, 0.02) for _ in range(cout)], F32) if per_channel else rnd_scale(rng, 0.002, 0.02)
    wd = weight_dq(g, w, ws, 0)
    ins = [xd, wd]
    if bias:
        if float_bias:
            ins.append(g.const("b", rng.normal(0, 0.3, size=cout).astype(F32)))
        else:
            ins.append(bias_dq(g, rng.integers(-3000, 3000, size=cout).astype(np.int32), xs, ws))
    y = g.node("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=groups)
    # output range from a float estimate
    est_hi = 3.0 * np.sqrt(cin // groups * k * k) * float(np.max(ws)) * float(xs) * 40
    ylo_f, yhi_f = -est_hi, est_hi
    if act_fn == "Relu":
        y = g.node("Relu", [y])
        ylo_f = 0.0 if relu_zp_at_min else -0.3 * est_hi
    elif act_fn == "Clip":
        y = g.node("Clip", [y, g.const("min", F32(0.0)), g.const("max", F32(6.0))])
        ylo_f, yhi_f = (-0.5, 8.0) if clip_wider else (0.0, 6.0)
    ys, yz = act_params(rng, act, ylo_f, yhi_f)
    out = g.qdq(y, ys, yz)
    g.out(out, F32)
    return g, {"op": "Conv" + ("+" + act_fn if act_fn else ""), "format": "qdq", "act": act, "weight": "s8",
               "per_channel": per_channel, "weight_bits": bits, "groups": groups, "stride": stride, "pad": pad,
               "kernel": k, "bias": bias, "float_bias": float_bias, "quantized_graph_input": quantized_input,
               **({"clip_range_inside_q_range": not clip_wider} if act_fn == "Clip" else {}),
               **({"output_zp_at_qmin": relu_zp_at_min} if act_fn == "Relu" else {})}


def case_qdq_gemm(rng, op="Gemm", act="u8", per_channel=True, bits=7, M=3, K=32, N=10, bias=True):
    g = QDQ()
    xs, xz = act_params(rng, act, -1.5, 2.5)
    x = g.float_input("x", rng, (M, K), xs, xz, act, ties=True)
    xd = g.qdq(x, xs, xz)
    ws = np.array([rnd_scale(rng, 0.002, 0.02) for _ in range(N)], F32) if per_channel else rnd_scale(rng, 0.002, 0.02)
    if op == "Gemm":
        w = rnd_w(rng, (N, K), bits)
        ins = [xd, weight_dq(g, w, ws, 0)]
        if bias:
            ins.append(bias_dq(g, rng.integers(-3000, 3000, size=N).astype(np.int32), xs, ws))
        y = g.node("Gemm", ins, transB=1)
    else:
        w = rnd_w(rng, (K, N), bits)
        y = g.node("MatMul", [xd, weight_dq(g, w, ws, 1)])
    est = 3.0 * np.sqrt(K) * float(np.max(ws)) * float(xs) * 40
    ys, yz = act_params(rng, act, -est, est)
    out = g.qdq(y, ys, yz)
    g.out(out, F32)
    return g, {"op": op, "format": "qdq", "act": act, "weight": "s8", "per_channel": per_channel,
               "weight_bits": bits, "bias": bias and op == "Gemm"}


def case_qdq_binary(rng, op, act="u8", shape_a=(1, 6, 5, 7), shape_b=(1, 6, 5, 7)):
    g = QDQ()
    sa, za = act_params(rng, act, -1.0, 2.0)
    sb, zb = act_params(rng, act, -1.5, 1.0)
    a = g.qdq(g.float_input("a", rng, shape_a, sa, za, act), sa, za)
    b = g.qdq(g.float_input("b", rng, shape_b, sb, zb, act), sb, zb)
    y = g.node(op, [a, b])
    ys, yz = act_params(rng, act, -2.5, 3.0) if op == "Add" else act_params(rng, act, -1.5, 2.0)
    g.out(g.qdq(y, ys, yz), F32)
    return g, {"op": op, "format": "qdq", "act": act, "shape_a": list(shape_a), "shape_b": list(shape_b)}


def case_qdq_unary(rng, op, act="u8", shape=(1, 6, 7, 7), same_q=False, out_range=None, **attrs):
    g = QDQ()
    xs, xz = act_params(rng, act, -4.0, 4.0)
    x = g.qdq(g.float_input("x", rng, shape, xs, xz, act), xs, xz)
    y = g.node(op, [x], **attrs)
    if out_range:
        ys, yz = act_params(rng, act, *out_range)
    elif same_q:
        ys, yz = xs, xz
    elif op in ("Sigmoid", "HardSigmoid", "Softmax"):
        ys, yz = act_params(rng, act, 0.0, 1.0)
    elif op == "LeakyRelu":
        ys, yz = act_params(rng, act, -4.0 * attrs.get("alpha", 0.01), 4.0)
    else:
        ys, yz = act_params(rng, act, -3.0, 3.5)
    g.out(g.qdq(y, ys, yz), F32)
    return g, {"op": op, "format": "qdq", "act": act, "same_qparams": same_q,
               **{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in attrs.items()}}


def case_qdq_batchnorm(rng, act="u8", shape=(2, 20, 5, 6), relu=False, ties=False):
    """DQ -> BatchNormalization (-> Relu) -> Q: ORT runs it in float (densenet121's pre-activation
    norm after a Concat). ties: channels with scale 1, mean 0, bias 0, var 1 - eps and power-of-two
    qparams, so BN(DQ(q)) / y_scale lands on halves."""
    g = QDQ()
    c = shape[1]
    xs, xz = act_params(rng, act, -4.0, 4.0)
    sc = rng.uniform(-1.5, 1.5, c).astype(F32)
    b = rng.uniform(-1.0, 1.0, c).astype(F32)
    mean = rng.uniform(-1.0, 1.0, c).astype(F32)
    var = rng.uniform(0.2, 2.0, c).astype(F32)
    eps = 1e-5
    ys, yz = act_params(rng, act, -3.0, 3.5)
    if ties:
        xs, ys = F32(0.125), F32(0.25)
        k = c // 2
        sc[:k], b[:k], mean[:k], var[:k] = 1.0, 0.0, 0.0, F32(1.0) - F32(eps)
    x = g.qdq(g.float_input("x", rng, shape, xs, xz, act), xs, xz)
    y = g.node("BatchNormalization", [x, g.const("scale", sc), g.const("B", b), g.const("mean", mean),
                                      g.const("var", var)], epsilon=eps)
    if relu:
        y = g.node("Relu", [y])
    g.out(g.qdq(y, ys, yz), F32)
    return g, {"op": "BatchNormalization", "format": "qdq", "act": act, "relu": relu, "ties": ties}


def case_qdq_chconst(rng, op, act="u8", kshape=(6, 1, 1), const_first=False, relu=False):
    """DQ -> Add/Sub/Mul/Div with a float constant (one value or one per channel) (-> Relu) -> Q:
    ORT runs it in float (no QDQ pattern has a float initializer operand)."""
    g = QDQ()
    shape = (2, 6, 5, 7)
    xs, xz = act_params(rng, act, -4.0, 4.0)
    k = (rng.uniform(0.4, 2.0, kshape) * rng.choice([-1.0, 1.0], kshape)).astype(F32)
    x = g.qdq(g.float_input("x", rng, shape, xs, xz, act), xs, xz)
    kc = g.const("k", k)
    y = g.node(op, [kc, x] if const_first else [x, kc])
    if relu:
        y = g.node("Relu", [y])
    ys, yz = act_params(rng, act, -5.0, 5.0)
    g.out(g.qdq(y, ys, yz), F32)
    return g, {"op": "FloatConst", "float_op": op, "format": "qdq", "act": act, "const_shape": list(kshape),
               "const_first": const_first,
               "relu": relu}


def case_qdq_concat(rng, act="u8", n_in=3):
    g = QDQ()
    ins = []
    for i in range(n_in):
        s, z = act_params(rng, act, -rng.uniform(0.5, 3), rng.uniform(0.5, 3))
        ins.append(g.qdq(g.float_input(f"x{i}", rng, (1, 2 + i, 4, 5), s, z, act), s, z))
    y = g.node("Concat", ins, axis=1)
    ys, yz = act_params(rng, act, -3.0, 3.0)
    g.out(g.qdq(y, ys, yz), F32)
    return g, {"op": "Concat", "format": "qdq", "act": act, "inputs": n_in}


def case_qdq_passthrough(rng, op, act="u8"):
    g = QDQ()
    xs, xz = act_params(rng, act, -2.0, 3.0)
    x = g.qdq(g.float_input("x", rng, (1, 6, 4, 5), xs, xz, act), xs, xz)
    if op == "Reshape":
        y = g.node("Reshape", [x, g.const("shape", np.array([1, 6, 20], np.int64))])
    elif op == "Flatten":
        y = g.node("Flatten", [x], axis=1)
    elif op == "Transpose":
        y = g.node("Transpose", [x], perm=[0, 2, 3, 1])
    elif op == "Slice":
        # channels 1, 3, 5; columns 4, 2, 0 (negative starts, ends and step)
        y = g.node("Slice", [x, g.const("starts", np.array([1, -1], np.int64)),
                             g.const("ends", np.array([6, -6], np.int64)),
                             g.const("axes", np.array([1, 3], np.int64)),
                             g.const("steps", np.array([2, -2], np.int64))])
    elif op == "Gather":
        y = g.node("Gather", [x, g.const("indices", np.array([3, 0, -2], np.int64))], axis=2)
    elif op == "ChannelShuffle":
        # ShuffleNet's channel shuffle, as quantize_static writes it (Q/DQ after each op): a
        # per-sample rank-4 view between the reshapes
        y = g.qdq(g.node("Reshape", [x, g.const("shape", np.array([1, 2, 3, 4, 5], np.int64))]), xs, xz)
        y = g.qdq(g.node("Transpose", [y], perm=[0, 2, 1, 3, 4]), xs, xz)
        y = g.node("Reshape", [y, g.const("shape", np.array([1, 6, 4, 5], np.int64))])
    elif op == "GatherScalar":
        y = g.node("Gather", [x, g.const("indices", np.array(4, np.int64))], axis=1)
    else:
        y = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    g.out(g.qdq(y, xs, xz), F32)
    return g, {"op": op, "format": "qdq", "act": act}


def case_qdq_split(rng, act="u8", axis=1, split=None, num_outputs=None):
    """DQ -> Split -> Q per output (same qparams): ORT runs the Split on the quantized bytes."""
    g = QDQ()
    xs, xz = act_params(rng, act, -2.0, 3.0)
    x = g.qdq(g.float_input("x", rng, (1, 6, 4, 5), xs, xz, act), xs, xz)
    ins = [x] + ([g.const("split", np.array(split, np.int64))] if split is not None else [])
    n_out = len(split) if split is not None else num_outputs
    extra = {"num_outputs": num_outputs} if num_outputs is not None else {}
    ys = g.node("Split", ins, n_out=n_out, axis=axis, **extra)
    ys = ys if isinstance(ys, list) else [ys]
    for y in ys:
        g.out(g.qdq(y, xs, xz), F32)
    return g, {"op": "Split", "format": "qdq", "act": act, "axis": axis,
               **({"split": split} if split is not None else {"num_outputs": num_outputs})}


def case_qdq_pad(rng, act="u8", mode="constant", pads=(0, 0, 1, 2, 0, 0, 2, 0)):
    """DQ -> Pad -> Q (same qparams); constant 0 (= the zero point's value) or edge/reflect."""
    g = QDQ()
    xs, xz = act_params(rng, act, -2.0, 3.0)
    x = g.qdq(g.float_input("x", rng, (1, 3, 4, 5), xs, xz, act), xs, xz)
    ins = [x, g.const("pads", np.array(pads, np.int64))]
    if mode == "constant":
        ins.append(g.const("value", np.array(0.0, F32)))
    y = g.node("Pad", ins, mode=mode)
    g.out(g.qdq(y, xs, xz), F32)
    return g, {"op": "Pad", "format": "qdq", "act": act, "mode": mode, "pads": list(pads)}


def case_qdq_resize(rng, act="u8", ctm="asymmetric", nearest="floor", scales=None, sizes=None,
                    mode="nearest", shape=(1, 3, 4, 5), y_range=None, **attrs):
    """DQ -> Resize -> Q (same qparams unless y_range): mode nearest: ORT drops the DQ/Q pair
    and gathers the bytes; mode linear: ORT 1.32 keeps DQ -> Resize (float) -> Q."""
    g = QDQ()
    xs, xz = act_params(rng, act, -2.0, 3.0)
    x = g.qdq(g.float_input("x", rng, shape, xs, xz, act), xs, xz)
    ys, yz = (xs, xz) if y_range is None else act_params(rng, act, *y_range)
    ins = [x, ""]
    if scales is not None:
        ins.append(g.const("scales", np.array(scales, F32)))
    else:
        ins += ["", g.const("sizes", np.array(sizes, np.int64))]
    if mode == "nearest":
        attrs["nearest_mode"] = nearest
    y = g.node("Resize", ins, mode=mode, coordinate_transformation_mode=ctm, **attrs)
    g.out(g.qdq(y, ys, yz), F32)
    return g, {"op": "Resize", "format": "qdq", "act": act, "mode": mode,
               "coordinate_transformation_mode": ctm, **attrs,
               **({"scales": scales} if scales is not None else {"sizes": sizes})}


def case_q_resize(rng, act="u8", ctm="half_pixel", scales=None, sizes=None, shape=(1, 3, 4, 5)):
    """Q -> Resize (linear) -> DQ: ORT's Resize on the uint8/int8 tensor itself (as in a
    QOperator model): float weights on the stored values, truncated toward zero."""
    g = QDQ()
    xs, xz = act_params(rng, act, -2.0, 3.0)
    x = g.q(g.float_input("x", rng, shape, xs, xz, act), xs, xz)
    ins = [x, ""]
    if scales is not None:
        ins.append(g.const("scales", np.array(scales, F32)))
    else:
        ins += ["", g.const("sizes", np.array(sizes, np.int64))]
    y = g.node("Resize", ins, mode="linear", coordinate_transformation_mode=ctm)
    g.out(g.dq(y, xs, xz), F32)
    return g, {"op": "Resize", "format": "qoperator", "act": act, "mode": "linear",
               "coordinate_transformation_mode": ctm,
               **({"scales": scales} if scales is not None else {"sizes": sizes})}


def case_qdq_conv_resize(rng, act="u8", mode="linear", ctm="half_pixel"):
    """DQ -> Conv -> Q -> DQ -> Resize -> Q -> DQ -> Conv -> Q: ORT's NHWC transformer may
    move the Resize between its NHWC convs (then NhwcUpsampleBilinearInteger runs)."""
    g = QDQ()
    xs, xz = act_params(rng, act, -2.0, 3.0)
    x = g.qdq(g.float_input("x", rng, (1, 4, 5, 6), xs, xz, act), xs, xz)
    s1, z1 = act_params(rng, act, 0.0, 2.5)
    for i, (cin, cout) in enumerate(((4, 8), (8, 8))):
        ws = np.array([rnd_scale(rng, 0.01, 0.05) for _ in range(cout)], F32)
        s_in = xs if i == 0 else s1
        w = weight_dq(g, rnd_w(rng, (cout, cin, 3, 3), 7), ws, 0)
        b = bias_dq(g, rng.integers(-500, 500, size=cout).astype(np.int32), s_in, ws)
        y = g.node("Conv", [x, w, b], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        x = g.qdq(y, s1, z1)
        if i == 0:
            y = g.node("Resize", [x, "", g.const("scales", np.array([1, 1, 2, 2], F32))], mode=mode,
                       coordinate_transformation_mode=ctm)
            x = g.qdq(y, s1, z1)
    g.out(x, F32)
    return g, {"op": "Conv+Resize+Conv", "format": "qdq", "act": act, "mode": mode,
               "coordinate_transformation_mode": ctm, "weight_bits": 7}


def case_qdq_conv_chain(rng, act="u8"):
    """DQ -> Conv -> Q -> DQ -> Conv -> Q: the second conv reads the first one's quantized output."""
    g = QDQ()
    xs, xz = act_params(rng, act, -2.0, 3.0)
    x = g.qdq(g.float_input("x", rng, (1, 4, 6, 6), xs, xz, act), xs, xz)
    s1, z1 = act_params(rng, act, 0.0, 2.5)
    for i, (cin, cout) in enumerate(((4, 8), (8, 8))):
        ws = np.array([rnd_scale(rng, 0.01, 0.05) for _ in range(cout)], F32)
        s_in = xs if i == 0 else s1
        w = weight_dq(g, rnd_w(rng, (cout, cin, 3, 3), 7), ws, 0)
        b = bias_dq(g, rng.integers(-500, 500, size=cout).astype(np.int32), s_in, ws)
        y = g.node("Conv", [x, w, b], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        y = g.node("Relu", [y])
        x = g.qdq(y, s1, z1)
    g.out(x, F32)
    return g, {"op": "Conv+Relu chain", "format": "qdq", "act": act, "weight_bits": 7}


# ----------------------------------------------------------------------- cases

def all_cases(rng):
    C = []

    def add(name, fn, *a, **k):
        C.append((name, fn, a, k))

    for kind in ("u8", "s8"):
        for axis in (False, True):
            for ties in (False, True):
                add(f"quantize_{kind}_{'axis' if axis else 'tensor'}{'_ties' if ties else ''}",
                    case_quantize, kind, axis, ties)
        for axis in (False, True):
            add(f"dequantize_{kind}_{'axis' if axis else 'tensor'}", case_dequantize, kind, axis)
    add("dequantize_s32_tensor", case_dequantize, "s32", False)

    # QLinearConv: u8 activations (s8 weights: symmetric ConvSym path; u8 weights: generic GEMM path)
    for act in ("u8", "s8"):
        for pc in (True, False):
            add(f"qlinearconv_{act}_s8w7_{'pc' if pc else 'pt'}", case_qlinearconv, act=act, per_channel=pc, bits=7)
        add(f"qlinearconv_{act}_s8w8_pc", case_qlinearconv, act=act, per_channel=True, bits=8)
        add(f"qlinearconv_{act}_s8w7_pc_ties", case_qlinearconv, act=act, per_channel=True, bits=7, scales="pow2")
        add(f"qlinearconv_{act}_s8w7_pt_ties", case_qlinearconv, act=act, per_channel=False, bits=7, scales="pow2")
        add(f"qlinearconv_{act}_depthwise16", case_qlinearconv, act=act, cin=16, cout=16, groups=16, hw=(7, 6))
        add(f"qlinearconv_{act}_depthwise5_s2", case_qlinearconv, act=act, cin=5, cout=5, groups=5, stride=2,
            hw=(7, 8))
        add(f"qlinearconv_{act}_grouped", case_qlinearconv, act=act, cin=8, cout=12, groups=4)
        add(f"qlinearconv_{act}_stride2_pad0", case_qlinearconv, act=act, stride=2, pad=0, hw=(9, 8))
        add(f"qlinearconv_{act}_dilation2", case_qlinearconv, act=act, dil=2, pad=2, hw=(8, 8))
        add(f"qlinearconv_{act}_pointwise", case_qlinearconv, act=act, k=1, pad=0, cin=12, cout=16)
        add(f"qlinearconv_{act}_k5_nobias", case_qlinearconv, act=act, k=5, pad=2, bias=False, cin=4, cout=8)
        add(f"qlinearconv_{act}_cin3_stem", case_qlinearconv, act=act, cin=3, cout=16, stride=2, hw=(9, 9))
        add(f"qlinearconv_{act}_big_acc_w8", case_qlinearconv, act=act, cin=64, cout=8, k=3, hw=(4, 4), bits=8,
            big=True)
    add("qlinearconv_u8_u8w_pc", case_qlinearconv, act="u8", wkind="u8", per_channel=True)
    add("qlinearconv_u8_u8w_pt", case_qlinearconv, act="u8", wkind="u8", per_channel=False)
    add("qlinearconv_u8_big_acc_w7", case_qlinearconv, act="u8", cin=64, cout=16, k=3, hw=(4, 4), bits=7, big=True)

    for act in ("u8", "s8"):
        add(f"qlinearmatmul_{act}_s8w7_pt", case_qlinearmatmul, act=act, per_col=False)
        add(f"qlinearmatmul_{act}_s8w7_pc", case_qlinearmatmul, act=act, per_col=True)
        add(f"qlinearmatmul_{act}_s8w8_pt", case_qlinearmatmul, act=act, per_col=False, bits=8)
        add(f"qlinearmatmul_{act}_ties", case_qlinearmatmul, act=act, per_col=True, scales="pow2")
        add(f"qlinearmatmul_{act}_batched", case_qlinearmatmul, act=act, batch=3, M=2)
        add(f"qlinearmatmul_{act}_big_acc", case_qlinearmatmul, act=act, K=2048, M=2, N=4, bits=8, big=True)
    add("qlinearmatmul_u8_u8w_pt", case_qlinearmatmul, act="u8", wkind="u8", per_col=False)

    add("matmulinteger_u8_s8", case_matmulinteger, act="u8", wkind="s8")
    add("matmulinteger_u8_s8_pc_zp", case_matmulinteger, act="u8", wkind="s8", per_col=True)
    add("matmulinteger_u8_u8", case_matmulinteger, act="u8", wkind="u8")
    add("matmulinteger_s8_s8", case_matmulinteger, act="s8", wkind="s8")
    add("matmulinteger_u8_s8_dynamic_b", case_matmulinteger, act="u8", wkind="s8", const_b=False)
    add("convinteger_u8", case_convinteger)
    add("convinteger_u8_s2_grouped", case_convinteger, cin=6, cout=6, groups=3, stride=2, hw=(7, 7))

    for act in ("u8", "s8"):
        add(f"qgemm_{act}_pc", case_qgemm, act=act, per_col=True)
        add(f"qgemm_{act}_pt_ties", case_qgemm, act=act, per_col=False, scales="pow2")
        add(f"qgemm_{act}_float_out", case_qgemm, act=act, per_col=True, float_out=True)
    add("qgemm_u8_nobias_transA", case_qgemm, act="u8", bias=False, transA=1)

    for op in ("QLinearAdd", "QLinearMul"):
        for act in ("u8", "s8"):
            nm = op[7:].lower()
            add(f"q{nm}_{act}", case_qbinary, op, act=act)
            add(f"q{nm}_{act}_scalar_b", case_qbinary, op, act=act, shape_b=(1,))
            add(f"q{nm}_{act}_bcast_channel", case_qbinary, op, act=act, shape_b=(1, 8, 1, 1))
        add(f"q{nm}_u8_pow2", case_qbinary, op, act="u8", scales="pow2")
        # a constant (initializer) scalar operand: b of shape [1], a of shape [] (ORT swaps the roles)
        for act in ("u8", "s8"):
            add(f"q{nm}_{act}_const_b", case_qbinary, op, act=act, shape_b=(1,), const_b=True)
            add(f"q{nm}_{act}_const_a", case_qbinary, op, act=act, shape_a=(), shape_b=(1, 8, 5, 7), const_a=True)

    for act in ("u8", "s8"):
        add(f"qgap_{act}_nchw", case_qgap, act=act)
        add(f"qgap_{act}_nhwc", case_qgap, act=act, shape=(2, 5, 6, 11), channels_last=1)
        add(f"qgap_{act}_big", case_qgap, act=act, shape=(1, 4, 32, 33))
        add(f"qavgpool_{act}_k3s2p1", case_qavgpool, act=act)
        add(f"qavgpool_{act}_k3s2p1_incpad", case_qavgpool, act=act, count_include_pad=1)
        add(f"qavgpool_{act}_k2s2_ceil", case_qavgpool, act=act, k=2, stride=2, pad=0, ceil_mode=1, shape=(1, 4, 7, 7))
        add(f"qavgpool_{act}_nhwc", case_qavgpool, act=act, channels_last=1, shape=(1, 7, 8, 6))
        add(f"qavgpool_{act}_global_kernel", case_qavgpool, act=act, k=4, stride=1, pad=0, shape=(1, 5, 4, 4))
        add(f"qconcat_{act}", case_qconcat, act=act)
        add(f"qconcat_{act}_axis2_alldiff", case_qconcat, act=act, axis=2, same_first=False)
        add(f"qsigmoid_{act}", case_qlut, "QLinearSigmoid", act=act)
        add(f"qleakyrelu_{act}", case_qlut, "QLinearLeakyRelu", act=act, alpha=0.1)
        add(f"qsoftmax_{act}", case_qsoftmax, act=act)
        add(f"qsoftmax_{act}_axis1_of3", case_qsoftmax, act=act, shape=(2, 7, 3), axis=1)
        add(f"qsoftmax_{act}_opset12", case_qsoftmax, act=act, shape=(2, 3, 4), axis=1, opset=12)
        add(f"maxpool_{act}_k3s2p1", case_maxpool, act=act)
        add(f"maxpool_{act}_k2s2_ceil_dil", case_maxpool, act=act, k=2, stride=2, pad=0, dil=2, ceil_mode=1)
    add("qsigmoid_u8_b", case_qlut, "QLinearSigmoid", act="u8")
    add("qleakyrelu_u8_a001", case_qlut, "QLinearLeakyRelu", act="u8", alpha=0.01)

    # ---------------- adversarial (detail-pinning) cases
    for act in ("u8", "s8"):
        add(f"quantize_{act}_adv_divide", case_quantize_adversarial, act)
        add(f"qlinearconv_{act}_adv_scale_order", case_qlinearconv_adversarial, act=act)
        add(f"qlinearconv_{act}_adv_f32_accumulator", case_qlinearconv_f32_accumulator, act=act)
        add(f"qadd_{act}_adv_fma", case_qbinary_adversarial, "QLinearAdd", act=act, mode="vector")
        add(f"qadd_{act}_adv_scalar_b", case_qbinary_adversarial, "QLinearAdd", act=act, mode="scalar_b")
        add(f"qadd_{act}_adv_scalar_a", case_qbinary_adversarial, "QLinearAdd", act=act, mode="scalar_a")
        add(f"qmul_{act}_adv", case_qbinary_adversarial, "QLinearMul", act=act, mode="vector")
        add(f"qmul_{act}_adv_scalar_a", case_qbinary_adversarial, "QLinearMul", act=act, mode="scalar_a")
        add(f"qgap_{act}_adv", case_qgap_adversarial, act=act)
        add(f"qavgpool_{act}_adv", case_qavgpool_adversarial, act=act)
        add(f"qsigmoid_{act}_adv", case_qsigmoid_adversarial, act=act)

    # ---------------- QDQ groups
    for act in ("u8", "s8"):
        add(f"qdq_conv_{act}_pc_w7", case_qdq_conv, act=act, per_channel=True, bits=7)
        add(f"qdq_conv_{act}_pt_w7", case_qdq_conv, act=act, per_channel=False, bits=7)
        add(f"qdq_conv_{act}_pc_w8", case_qdq_conv, act=act, per_channel=True, bits=8)
        add(f"qdq_conv_{act}_relu", case_qdq_conv, act=act, act_fn="Relu")
        add(f"qdq_conv_{act}_relu_zp_not_min", case_qdq_conv, act=act, act_fn="Relu", relu_zp_at_min=False)
        add(f"qdq_conv_{act}_clip06", case_qdq_conv, act=act, act_fn="Clip")
        add(f"qdq_conv_{act}_clip_kept", case_qdq_conv, act=act, act_fn="Clip", clip_wider=True)
        add(f"qdq_conv_{act}_quantized_input", case_qdq_conv, act=act, quantized_input=True)
        add(f"qdq_conv_{act}_depthwise", case_qdq_conv, act=act, cin=16, cout=16, groups=16)
        add(f"qdq_conv_{act}_s2_nobias", case_qdq_conv, act=act, stride=2, bias=False, hw=(7, 7))
        add(f"qdq_conv_{act}_float_bias", case_qdq_conv, act=act, float_bias=True)
        add(f"qdq_gemm_{act}_pc", case_qdq_gemm, "Gemm", act=act, per_channel=True)
        add(f"qdq_gemm_{act}_pt_w8", case_qdq_gemm, "Gemm", act=act, per_channel=False, bits=8)
        add(f"qdq_matmul_{act}_pt", case_qdq_gemm, "MatMul", act=act, per_channel=False)
        add(f"qdq_matmul_{act}_pc", case_qdq_gemm, "MatMul", act=act, per_channel=True)
        add(f"qdq_add_{act}", case_qdq_binary, "Add", act=act)
        add(f"qdq_add_{act}_bcast", case_qdq_binary, "Add", act=act, shape_b=(1, 6, 1, 1))
        add(f"qdq_mul_{act}", case_qdq_binary, "Mul", act=act)
        add(f"qdq_avgpool_{act}", case_qdq_unary, "AveragePool", act=act, kernel_shape=[3, 3], strides=[2, 2],
            pads=[1, 1, 1, 1])
        add(f"qdq_gap_{act}", case_qdq_unary, "GlobalAveragePool", act=act)
        add(f"qdq_concat_{act}", case_qdq_concat, act=act)
        add(f"qdq_sigmoid_{act}", case_qdq_unary, "Sigmoid", act=act)
        add(f"qdq_hardsigmoid_{act}", case_qdq_unary, "HardSigmoid", act=act, alpha=1.0 / 6, beta=0.5)
        add(f"qdq_leakyrelu_{act}", case_qdq_unary, "LeakyRelu", act=act, alpha=0.1)
        add(f"qdq_softmax_{act}", case_qdq_unary, "Softmax", act=act, shape=(2, 12), axis=-1)
        add(f"qdq_relu_alone_{act}", case_qdq_unary, "Relu", act=act)
        add(f"qdq_relu_alone_{act}_zp_min", case_qdq_unary, "Relu", act=act, out_range=(0.0, 3.5))
        for op in ("Reshape", "Flatten", "Transpose", "MaxPool", "Slice", "Gather", "GatherScalar",
                   "ChannelShuffle"):
            add(f"qdq_{op.lower()}_{act}", case_qdq_passthrough, op, act=act)
        add(f"qdq_conv_chain_{act}", case_qdq_conv_chain, act=act)
        add(f"qdq_split_{act}_channels", case_qdq_split, act=act, axis=1, split=[1, 2, 3])
        add(f"qdq_split_{act}_h", case_qdq_split, act=act, axis=2, split=[3, 1])
        add(f"qdq_split_{act}_w_num_outputs", case_qdq_split, act=act, axis=-1, num_outputs=3)
        add(f"qdq_pad_{act}_constant", case_qdq_pad, act=act)
        add(f"qdq_pad_{act}_edge", case_qdq_pad, act=act, mode="edge")
        add(f"qdq_pad_{act}_reflect", case_qdq_pad, act=act, mode="reflect", pads=(0, 0, 2, 1, 0, 0, 1, 3))
        add(f"qdq_batchnorm_{act}", case_qdq_batchnorm, act=act)
        add(f"qdq_batchnorm_{act}_relu", case_qdq_batchnorm, act=act, relu=True, shape=(2, 70, 3, 4))
        add(f"qdq_batchnorm_{act}_ties", case_qdq_batchnorm, act=act, ties=True, shape=(1, 9, 6, 6))
        add(f"qdq_chconst_{act}_mul", case_qdq_chconst, "Mul", act=act)
        add(f"qdq_chconst_{act}_add_relu", case_qdq_chconst, "Add", act=act, kshape=(1, 6, 1, 1), relu=True)
        add(f"qdq_chconst_{act}_sub_first", case_qdq_chconst, "Sub", act=act, const_first=True)
        add(f"qdq_chconst_{act}_div_scalar", case_qdq_chconst, "Div", act=act, kshape=())
        add(f"qdq_resize_{act}_nearest_x2", case_qdq_resize, act=act, scales=[1, 1, 2, 2])
        add(f"qdq_resize_{act}_nearest_half_pixel", case_qdq_resize, act=act, ctm="half_pixel",
            nearest="round_prefer_floor", sizes=[1, 3, 7, 9])
        add(f"qdq_resize_{act}_nearest_align_corners", case_qdq_resize, act=act, ctm="align_corners",
            nearest="round_prefer_ceil", sizes=[1, 3, 8, 3])
        # mode linear (ORT 1.32: DQ -> float Resize -> Q; on the bytes when no DQ precedes it)
        lin = dict(act=act, mode="linear", shape=(2, 5, 6, 7))
        add(f"qdq_resize_{act}_linear_half_pixel", case_qdq_resize, ctm="half_pixel",
            sizes=[2, 5, 11, 15], **lin)
        add(f"qdq_resize_{act}_linear_x2", case_qdq_resize, ctm="half_pixel", scales=[1, 1, 2, 2], **lin)
        add(f"qdq_resize_{act}_linear_pytorch_half_pixel", case_qdq_resize, ctm="pytorch_half_pixel",
            sizes=[2, 5, 1, 4], **lin)
        add(f"qdq_resize_{act}_linear_asymmetric", case_qdq_resize, ctm="asymmetric",
            scales=[1, 1, 1.7, 0.6], **lin)
        add(f"qdq_resize_{act}_linear_align_corners", case_qdq_resize, ctm="align_corners",
            sizes=[2, 5, 11, 13], **lin)
        add(f"qdq_resize_{act}_linear_requant", case_qdq_resize, ctm="half_pixel",
            sizes=[2, 5, 9, 14], y_range=(-1.0, 1.5), **lin)
        add(f"qdq_resize_{act}_linear_w_only", case_qdq_resize, ctm="align_corners",
            sizes=[2, 5, 6, 13], **lin)
        add(f"qdq_conv_resize_{act}_linear", case_qdq_conv_resize, act=act)
        add(f"q_resize_{act}_linear_half_pixel", case_q_resize, act=act, sizes=[1, 3, 7, 9])
        add(f"q_resize_{act}_linear_align_corners", case_q_resize, act=act, ctm="align_corners",
            sizes=[1, 3, 7, 9])
        add(f"q_resize_{act}_linear_asymmetric_down", case_q_resize, act=act, ctm="asymmetric",
            scales=[1, 1, 0.75, 0.5], shape=(1, 3, 8, 10))
        add(f"qdq_resize_{act}_cubic", case_qdq_resize, ctm="half_pixel", sizes=[1, 3, 7, 9], mode="cubic")
        cub = dict(act=act, mode="cubic", shape=(2, 4, 6, 7))
        add(f"qdq_resize_{act}_cubic_x2", case_qdq_resize, ctm="half_pixel", scales=[1, 1, 2, 2], **cub)
        add(f"qdq_resize_{act}_cubic_align_corners", case_qdq_resize, ctm="align_corners",
            sizes=[2, 4, 11, 13], **cub)
        add(f"qdq_resize_{act}_cubic_asymmetric_down", case_qdq_resize, ctm="asymmetric",
            scales=[1, 1, 0.6, 1.5], **cub)
        add(f"qdq_resize_{act}_cubic_pytorch_half_pixel_a05", case_qdq_resize, ctm="pytorch_half_pixel",
            sizes=[2, 4, 9, 1], cubic_coeff_a=-0.5, **cub)
        add(f"qdq_resize_{act}_cubic_requant", case_qdq_resize, ctm="half_pixel", sizes=[2, 4, 13, 10],
            y_range=(-1.0, 1.5), **cub)
    return C


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", default=None, help="substring filter on case names")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    manifest = {
        "generator": "tools/onnx/gen_onnx_ops.py",
        "seed": args.seed,
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "numpy": np.__version__,
        "opset": OPSET,
        "cpu": cpu_description(),
        "session": "CPUExecutionProvider, default SessionOptions (graph_optimization_level ORT_ENABLE_ALL); "
                   "run with 1 and with the default number of intra-op threads, identical outputs",
        "cases": [],
    }
    for name, fn, a, k in all_cases(rng):
        # every case draws from its own stream so that adding cases does not change the others
        crng = np.random.default_rng([args.seed, zlib_crc(name)])
        if args.only and args.only not in name:
            continue
        g, meta = fn(crng, *a, **k)
        model = g.model()
        outs, nodes = run_ort(model, g.feeds)
        d = os.path.join(args.out, name)
        os.makedirs(d, exist_ok=True)
        onnx.save(model, os.path.join(d, "model.onnx"))
        ins = []
        for i, (nm, arr) in enumerate(g.feeds.items()):
            np.save(os.path.join(d, f"input_{i}.npy"), arr)
            ins.append({"name": nm, "file": f"input_{i}.npy", "dtype": str(arr.dtype), "shape": list(arr.shape)})
        outl = []
        for j, (o, arr) in enumerate(zip(g.outputs, outs)):
            np.save(os.path.join(d, f"output_{j}.npy"), arr)
            outl.append({"name": o.name, "file": f"output_{j}.npy", "dtype": str(arr.dtype), "shape": list(arr.shape)})
        manifest["cases"].append({"name": name, **meta, "inputs": ins, "outputs": outl, "ort_nodes": nodes})
        print(f"{name:40s} {' '.join(nodes)}")
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"{len(manifest['cases'])} cases written to {args.out}")


def zlib_crc(s):
    import zlib
    return zlib.crc32(s.encode())


def cpu_description():
    flags = set()
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    keys = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8"]
    return {"model": model, "machine": platform.machine(), "flags": [k for k in keys if k in flags]}


if __name__ == "__main__":
    main()
