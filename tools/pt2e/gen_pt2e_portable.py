#!/usr/bin/env python3
"""Vectors for the two float ops XNNPACKQuantizer leaves between a dequantize and a quantize
in torchvision's densenet121 and inception_v3, as ExecuTorch 1.5 runs them with the XNNPACK
delegate (tests/data/pt2e/README.md "batch norm" and "ExecuTorch portable kernels"):

  batch_norm_mined     a BatchNorm2d not after a conv (`dq -> batch_norm [-> act] -> q`): the
                       XNNPACK partitioner decomposes it into an f32 1x1 depthwise convolution
                       (DecomposeBatchNorm). 4 chains (no activation, relu, relu6, hardtanh),
                       each input holding the 256 values that quantize to every int8 value in
                       each of 64 channels, with BatchNorm parameters mined so that the FMA
                       rule, a multiply-then-add and ExecuTorch's portable batch-norm formula
                       give different tables (so the vectors decide between them).
  avg_pool2d_portable  `dq -> avg_pool2d -> q` (not delegated: ExecuTorch's portable kernel on
                       f32, quantized by the next partition; the XNNPACK partitioner takes an
                       avg_pool2d only without ceil_mode, without padding counted in the divisor
                       and without a divisor_override other than the window, none of which these
                       are), 6 chains covering padding with
                       count_include_pad true and false, ceil_mode windows clipped by the
                       padded input, divisor_override, random qparams.
  avg_pool2d_portable_tie  the same windows with power-of-two scales: exact .5 ties after the
                       division.
  batch_norm_mean      densenet's tail `dq -> batch_norm -> relu -> adaptive_avg_pool2d(1) ->
                       flatten -> q`, left in float by XNNPACKQuantizer: the batch norm is the
                       f32 depthwise conv above, the pool XNNPACK's f32 global average
                       (static_mean, f32-rdsum). 6 quantized chains (2x2 .. 13x11 pixels, 100
                       channels: a 64-channel block and a tail; relu, relu6, none; adaptive_avg_pool2d
                       and mean keepdim), each output scale chosen so that the rule's bytes differ
                       from those of the other sum orders / scale forms somewhere; and 6 chains
                       without the final quantize (`f32_chains`: the pooled f32 values themselves,
                       ExecuTorch's f32 output), which pin the order and the scale bit for bit.
  avg_pool2d_xnnpack   densenet's transitions `dq -> avg_pool2d -> q` delegated to XNNPACK (no
                       ceil_mode, padding not in the divisor): its f32 average pooling (column-major
                       taps, 9-tap tree per pass, * f32(1/n)). 7 quantized chains (2x2 .. 4x5, two
                       and three passes, strides, one padded) with output scales that separate the
                       alternatives, and the same 7 pools without the quantize (`f32_pools`).

The oracle is ExecuTorch's runtime; each case's nodes hold what tests/pt2e_xnnpack.rs builds
(batch_norm: the tables `n<k>_tables.npy` that qfuse_export.xnnpack_rules.batch_norm_tables
gives, the parameters beside them) and tools/pt2e/check_pt2e_ops.py recomputes.

Usage: python3 tools/pt2e/gen_pt2e_portable.py OUT [--only a,b]
"""
import argparse
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")
import logging

logging.disable(logging.WARNING)

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401  (registers quantized_decomposed)
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import to_edge_transform_and_lower
from executorch.runtime import Runtime

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "python"))
sys.path.insert(0, HERE)
from qfuse_export import xnnpack_rules as xr  # noqa: E402
from gen_pt2e_ops import versions, lowered_ops  # noqa: E402

qd = torch.ops.quantized_decomposed
F32, F64, I64 = np.float32, np.float64, np.int64
C = 64
EPS = 1e-5
BN_ACTS = [("none", -np.inf, np.inf), ("relu", 0.0, np.inf), ("relu6", 0.0, 6.0), ("hardtanh", -1.0, 1.0)]
POOLS = [  # kernel, stride, padding, ceil_mode, count_include_pad, divisor_override
    ((3, 3), (1, 1), (1, 1), False, True, None),   # inception_v3's branch pool
    ((3, 3), (2, 2), (1, 1), True, False, None),
    ((3, 3), (2, 2), (1, 1), True, True, None),
    ((2, 2), (2, 2), (0, 0), True, True, None),
    ((5, 3), (3, 2), (2, 1), True, True, 5),
    ((3, 5), (2, 3), (1, 2), True, False, None),
]
HW = (13, 14)


def q_dq(x, s, z):
    return qd.dequantize_per_tensor(qd.quantize_per_tensor(x, s, z, -128, 127, torch.int8), s, z, -128, 127,
                                    torch.int8)


class Chains(nn.Module):
    def __init__(self, fns, mods, qps):
        super().__init__()
        self.fns, self.qps = fns, qps
        self.mods = nn.ModuleList(mods)

    def forward(self, *xs):
        outs = []
        for x, fn, m, ((s1, z1), (s2, z2)) in zip(xs, self.fns, self.mods, self.qps):
            outs.append(q_dq(fn(m, q_dq(x, s1, z1)), s2, z2))
        return tuple(outs)


def run_executorch(model, xs):
    ep = torch.export.export(model.eval(), tuple(xs))
    low = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
    inside, outside = lowered_ops(low)
    prog = low.to_executorch()
    program = Runtime.get().load_program(prog.buffer)
    method = program.load_method("forward")
    outs = [o.clone().numpy() for o in method.execute([x.clone() for x in xs])]
    del method, program
    return outs, sorted(set(inside)), sorted(set(outside))


def int8_of(o, s2, z2):
    q = np.rint(o / F32(s2)).astype(I64) + z2
    assert np.array_equal(((q - z2).astype(F32) * F32(s2)).astype(F32), o), "output not on the int8 grid"
    return q


def ramp(s1, z1):
    k = np.arange(-128, 128)
    return ((k - z1).astype(F32) * F32(s1)).astype(F32)


def portable_bn(x, mean, var, gamma, beta):
    """ExecuTorch's portable _native_batch_norm_legit_no_training (not what runs: a candidate)"""
    invstd = (1.0 / np.sqrt(var.astype(F64) + EPS)).astype(F32)
    return ((((x - mean[:, None]).astype(F32) * invstd[:, None]).astype(F32) * gamma[:, None]).astype(F32)
            + beta[:, None]).astype(F32)


def bn_candidates(x, mean, var, gamma, beta, lo, hi, s2, z2):
    w, b = xr.batch_norm_weights(mean, var, gamma, beta, EPS)
    inv = F32(F32(1) / F32(s2))

    def q(y):
        y = np.minimum(np.maximum(y, F32(lo)), F32(hi))
        return np.clip(np.rint((y * inv).astype(F32)) + z2, -128, 127)

    return [q(xr.fma_f32(x[None, :], w[:, None], b[:, None])),
            q(((x[None, :] * w[:, None]).astype(F32) + b[:, None]).astype(F32)),
            q(portable_bn(x[None, :], mean, var, gamma, beta))]


def mine_bn(g, x, lo, hi, s2, z2):
    """C channels of BatchNorm parameters, each where the FMA table differs from the
    multiply-then-add or the portable formula's"""
    keep = []
    while len(keep) < C:
        n = 4096
        mean = g.normal(0, 0.5, n).astype(F32)
        var = g.uniform(0.3, 2.0, n).astype(F32)
        gamma = g.normal(1, 0.5, n).astype(F32)
        beta = g.normal(0, 0.5, n).astype(F32)
        a, b, c = bn_candidates(x, mean, var, gamma, beta, lo, hi, s2, z2)
        d = (a != b).any(1) | (a != c).any(1)
        keep += [(mean[i], var[i], gamma[i], beta[i]) for i in np.flatnonzero(d)]
    return [np.array(v, F32) for v in zip(*keep[:C])]


def write_case(d, name, xs, outs, qs, nodes, shapes, inside, outside, extra, files):
    os.makedirs(d, exist_ok=True)
    inputs, outputs = [], []
    for i, (x, o, q) in enumerate(zip(xs, outs, qs)):
        np.save(os.path.join(d, f"input_{i}.npy"), x.numpy())
        np.save(os.path.join(d, f"output_{i}.npy"), o)
        np.save(os.path.join(d, f"output_q_{i}.npy"), q.reshape(o.shape).astype(np.int8))
        inputs.append({"name": f"c{i}_0", "file": f"input_{i}.npy", "shape": list(x.shape)})
        outputs.append({"name": f"c{i}_3", "op": "dequantize", "int8": f"output_q_{i}.npy"})
    for k, v in files.items():
        np.save(os.path.join(d, f"{k}.npy"), v)
    case = {"name": name, "per_channel_weights": None, "qparams_overridden": False, "versions": versions(),
            "inputs": inputs, "outputs": outputs, "nodes": nodes, "shapes": shapes,
            "delegated_ops": inside, "portable_ops": outside}
    case.update(extra)
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(case, f, indent=1)


def chain_nodes(i, mid, q1, q2, backend):
    v = [f"c{i}_{k}" for k in range(4)]
    base = 4 * i
    mid = dict(mid, id=base + 1, inputs=[v[1]], output=v[2], input_scale=q1[0], input_zero_point=q1[1],
               output_scale=q2[0], output_zero_point=q2[1], backend=backend)
    return [
        {"id": base, "op": "quantize", "inputs": [v[0]], "output": v[1], "output_scale": q1[0],
         "output_zero_point": q1[1], "backend": "xnnpack"},
        mid,
        {"id": base + 2, "op": "dequantize", "inputs": [v[2]], "output": v[3], "input_scale": q2[0],
         "input_zero_point": q2[1], "backend": "xnnpack"},
    ], v


def case_batch_norm(out):
    g = np.random.default_rng(7)
    qps, params, xs = [], [], []
    for _, lo, hi in BN_ACTS:
        q1 = (float(F32(g.uniform(0.01, 0.1))), int(g.integers(-64, 64)))
        q2 = (float(F32(g.uniform(0.004, 0.05))), int(g.integers(-64, 64)))
        x = ramp(*q1)
        params.append(mine_bn(g, x, lo, hi, *q2))
        qps.append((q1, q2))
        xs.append(torch.tensor(np.tile(x.reshape(1, 1, 16, 16), (1, C, 1, 1))))
    mods, fns = [], []
    for (act, lo, hi), (mean, var, gamma, beta) in zip(BN_ACTS, params):
        bn = nn.BatchNorm2d(C, eps=EPS)
        with torch.no_grad():
            for t, v in ((bn.running_mean, mean), (bn.running_var, var), (bn.weight, gamma), (bn.bias, beta)):
                t.copy_(torch.tensor(v))
        mods.append(bn)
        fns.append({"none": lambda m, v: m(v), "relu": lambda m, v: F.relu(m(v)),
                    "relu6": lambda m, v: F.relu6(m(v)),
                    "hardtanh": lambda m, v: F.hardtanh(m(v), -1.0, 1.0)}[act])
    outs, inside, outside = run_executorch(Chains(fns, mods, qps), xs)
    nodes, shapes, files, qs = [], {}, {}, []
    agree = []
    for i, ((act, lo, hi), (mean, var, gamma, beta), (q1, q2), o) in enumerate(zip(BN_ACTS, params, qps, outs)):
        q = int8_of(o, *q2)
        qs.append(q)
        tables = xr.batch_norm_tables(mean, var, gamma, beta, EPS, *q1, *q2, lo, hi)
        x = ramp(*q1)
        cands = bn_candidates(x, mean, var, gamma, beta, lo, hi, *q2)
        got = q.reshape(C, 256)
        agree.append({"fma": int((tables.astype(I64) - 128 != got).sum()),
                      "mul_then_add": int((cands[1] != got).sum()), "portable_formula": int((cands[2] != got).sum())})
        k = 4 * i + 1
        files.update({f"n{k}_running_mean": mean, f"n{k}_running_var": var, f"n{k}_weight": gamma,
                      f"n{k}_bias": beta, f"n{k}_tables": tables})
        nn_, v = chain_nodes(i, {"op": "batch_norm", "activation": act, "act_min": lo, "act_max": hi, "eps": EPS,
                                 "channels": C}, q1, q2, "xnnpack")
        nodes += nn_
        for vv in v:
            shapes[vv] = [1, C, 16, 16]
    d = os.path.join(out, "batch_norm_mined")
    write_case(d, "batch_norm_mined", xs, outs, qs, nodes, shapes, inside, outside,
               {"input_kind": "ramp: the 256 f32 values that quantize to -128..127, in every channel",
                "table_entries_differing_from_executorch": agree}, files)
    print(f"batch_norm_mined: entries differing from ExecuTorch per chain {agree}; delegated {inside}, "
          f"portable {outside}", flush=True)


def case_avg_pool(out, tie):
    name = "avg_pool2d_portable_tie" if tie else "avg_pool2d_portable"
    g = np.random.default_rng(11 if tie else 5)
    qps, xs = [], []
    for _ in POOLS:
        if tie:
            q1 = (float(2.0 ** -int(g.integers(3, 6))), int(g.integers(-32, 32)))
            q2 = (float(2.0 ** -int(g.integers(3, 6))), int(g.integers(-32, 32)))
        else:
            q1 = (float(F32(g.uniform(0.01, 0.05))), int(g.integers(-64, 64)))
            q2 = (float(F32(g.uniform(0.005, 0.04))), int(g.integers(-64, 64)))
        qps.append((q1, q2))
        xs.append(torch.tensor(g.normal(0, 1.2, (1, 8) + HW).astype(F32)))
    fns = [(lambda k, s, p, cm, cip, dv: lambda m, v: F.avg_pool2d(v, k, s, p, cm, cip, dv))(*pp) for pp in POOLS]
    outs, inside, outside = run_executorch(Chains(fns, [nn.Identity() for _ in POOLS], qps), xs)
    nodes, shapes, qs = [], {}, []
    for i, ((k, s, p, cm, cip, dv), (q1, q2), o) in enumerate(zip(POOLS, qps, outs)):
        qs.append(int8_of(o, *q2))
        nn_, v = chain_nodes(i, {"op": "avg_pool2d", "kernel": list(k), "stride": list(s), "padding": list(p),
                                 "ceil_mode": cm, "count_include_pad": cip, "divisor_override": dv},
                             q1, q2, "portable")
        nodes += nn_
        shapes[v[0]] = shapes[v[1]] = [1, 8] + list(HW)
        shapes[v[2]] = shapes[v[3]] = list(o.shape)
    write_case(os.path.join(out, name), name, xs, outs, qs, nodes, shapes, inside, outside,
               {"input_kind": "randn * 1.2" + (", power-of-two scales" if tie else "")}, {})
    print(f"{name}: delegated {inside}, portable {outside}", flush=True)


# densenet's tail: (H, W), activation, pool
GAP_CHAINS = [((2, 2), "relu", "adaptive"), ((7, 7), "relu", "mean"), ((13, 11), "none", "adaptive"),
              ((5, 3), "relu6", "adaptive"), ((1, 1), "relu", "adaptive"), ((3, 5), "relu", "mean")]
GAP_C = 100
ACT_BOUNDS = {"none": (-np.inf, np.inf), "relu": (0.0, np.inf), "relu6": (0.0, 6.0)}


def gap_alternatives(values, q, params, s1, z1, lo, hi):
    """the rule's f32 means (xnnpack_rules.channel_mean_f32) and plausible wrong ones, [C] each"""
    n, c, h, w = q.shape
    N = h * w
    v = values[np.arange(c)[:, None], (q[0].reshape(c, N) + 128)]
    inv = F32(F32(1) / F32(N))

    def seq(vals):
        acc = np.zeros(c, F32)
        for p in range(vals.shape[1]):
            acc = (vals[:, p] + acc).astype(F32)
        return acc

    def tree(vals):
        while vals.shape[1] > 1:
            if vals.shape[1] % 2:
                vals = np.concatenate([vals, np.zeros((c, 1), F32)], 1)
            vals = (vals[:, 0::2] + vals[:, 1::2]).astype(F32)
        return vals[:, 0]

    mean, var, gamma, beta = params
    wb, bb = xr.batch_norm_weights(mean, var, gamma, beta, EPS)
    x = ((q[0].reshape(c, N) - z1).astype(F32) * F32(s1)).astype(F32)
    nofma = np.minimum(np.maximum(((x * wb[:, None]).astype(F32) + bb[:, None]).astype(F32), F32(lo)), F32(hi))
    cm = v.reshape(c, h, w).transpose(0, 2, 1).reshape(c, N)
    rule = (seq(v) * inv).astype(F32)
    assert np.array_equal(rule.view(np.int32), xr.channel_mean_f32(values, q)[0].view(np.int32))
    return rule, {"divide_by_n": (seq(v) / F32(N)).astype(F32), "column_major": (seq(cm) * inv).astype(F32),
                  "pairwise_tree": (tree(v) * inv).astype(F32),
                  "f64_mean": (v.astype(F64).sum(1) / N).astype(F32),
                  "bn_mul_add": (seq(nofma.astype(F32)) * inv).astype(F32)}


def gap_quant(m, s2, z2, div=False):
    p = (m / F32(s2)).astype(F32) if div else (m * F32(F32(1) / F32(s2))).astype(F32)
    return np.clip(np.rint(p).astype(I64) + z2, -128, 127)


def pick_output_scale(rule, alts, z2, span):
    """an output scale (f32) near max|rule| / span under which the rule's bytes differ from as
    many alternatives' as possible (each candidate puts a rounding boundary between the rule's
    mean and one alternative's in one channel)"""
    vmax = float(np.abs(rule).max())
    s_mid = vmax / span
    cands = [F32(s_mid)]
    for a in alts.values():
        for c in np.flatnonzero(a != rule):
            mid = (float(a[c]) + float(rule[c])) / 2
            k = np.floor(abs(mid) / s_mid)
            s = F32(abs(mid) / (k + 0.5))
            for d in range(-2, 3):
                cands.append(F32(s * F32(1 + d * 2.0 ** -23)))

    def score(s2):
        qr = gap_quant(rule, s2, z2)
        if (qr == 127).any() or (qr == -128).mean() > 0.5:
            return -1, {}
        sep = {k: int((gap_quant(a, s2, z2) != qr).sum()) for k, a in alts.items()}
        sep["convert_divides"] = int((gap_quant(rule, s2, z2, div=True) != qr).sum())
        return sum(1 for v in sep.values() if v) + 1e-3 * sum(sep.values()), sep

    best = max(cands, key=lambda s2: score(s2)[0])
    return float(best), score(best)[1]


class GapChains(nn.Module):
    def __init__(self, specs, qps, quant):
        super().__init__()
        self.specs, self.qps, self.quant = specs, qps, quant
        self.bns = nn.ModuleList([nn.BatchNorm2d(GAP_C, eps=EPS) for _ in specs])

    def forward(self, *xs):
        outs = []
        for x, bn, (_, act, pool), (s1, z1, s2, z2) in zip(xs, self.bns, self.specs, self.qps):
            y = bn(q_dq(x, s1, z1))
            y = {"none": lambda t: t, "relu": F.relu, "relu6": F.relu6}[act](y)
            y = F.adaptive_avg_pool2d(y, 1) if pool == "adaptive" else y.mean([2, 3], keepdim=True)
            y = torch.flatten(y, 1)
            outs.append(q_dq(y, s2, z2) if self.quant else y)
        return tuple(outs)


def case_batch_norm_mean(out):
    name = "batch_norm_mean"
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    g = np.random.default_rng(23)
    runs = {}
    for quant in (True, False):
        params, qps, xs, values, qs_in = [], [], [], [], []
        for (hw, act, pool) in GAP_CHAINS:
            lo, hi = ACT_BOUNDS[act]
            prm = (g.normal(0, 0.3, GAP_C).astype(F32), g.uniform(0.5, 2.0, GAP_C).astype(F32),
                   g.uniform(0.3, 3.0, GAP_C).astype(F32), g.normal(0.3, 1.0, GAP_C).astype(F32))
            s1, z1 = float(F32(g.uniform(0.02, 0.1))), int(g.integers(-20, 20))
            x = g.normal(0, 3, (1, GAP_C) + hw).astype(F32)
            q = np.clip(np.rint((x * F32(F32(1) / F32(s1))).astype(F32)).astype(I64) + z1, -128, 127)
            vals = xr.batch_norm_values(*prm, EPS, s1, z1, lo, hi)
            params.append(prm)
            values.append(vals)
            qs_in.append(q)
            xs.append(torch.tensor(x))
            qps.append([s1, z1, 1.0, 0])
        seps = []
        for i, ((hw, act, pool), prm, vals, q) in enumerate(zip(GAP_CHAINS, params, values, qs_in)):
            lo, hi = ACT_BOUNDS[act]
            rule, alts = gap_alternatives(vals, q, prm, qps[i][0], qps[i][1], lo, hi)
            if quant:
                z2 = 0 if act == "none" else -120
                s2, sep = pick_output_scale(rule, alts, z2, 110 if act == "none" else 230)
                qps[i][2:] = [s2, z2]
            else:
                sep = {k: int((a.view(np.int32) != rule.view(np.int32)).sum()) for k, a in alts.items()}
            seps.append(sep)
        m = GapChains(GAP_CHAINS, qps, quant)
        with torch.no_grad():
            for bn, (mean, var, gamma, beta) in zip(m.bns, params):
                for t, v in ((bn.running_mean, mean), (bn.running_var, var), (bn.weight, gamma), (bn.bias, beta)):
                    t.copy_(torch.tensor(v))
        outs, inside, outside = run_executorch(m, xs)
        runs[quant] = (params, qps, xs, values, qs_in, seps, outs, inside, outside)
        print(f"{name} ({'quantized' if quant else 'f32'}): separated {seps}; delegated {inside}, portable {outside}",
              flush=True)
    # quantized chains: the case's nodes and outputs
    params, qps, xs, values, qs_in, seps, outs, inside, outside = runs[True]
    nodes, shapes, files, oq = [], {}, {}, []
    for i, ((hw, act, pool), prm, (s1, z1, s2, z2), vals, sep, o) in enumerate(
            zip(GAP_CHAINS, params, qps, values, seps, outs)):
        lo, hi = ACT_BOUNDS[act]
        oq.append(int8_of(o, s2, z2))
        v = [f"c{i}_{j}" for j in range(5)]
        k = 4 * i + 1
        files.update({f"n{k}_running_mean": prm[0], f"n{k}_running_var": prm[1], f"n{k}_weight": prm[2],
                      f"n{k}_bias": prm[3], f"n{k}_values": vals})
        nodes += [
            {"id": 4 * i, "op": "quantize", "inputs": [v[0]], "output": v[1], "output_scale": s1,
             "output_zero_point": z1, "backend": "xnnpack"},
            {"id": k, "op": "batch_norm_mean", "inputs": [v[1]], "output": v[2], "activation": act,
             "act_min": lo, "act_max": hi, "eps": EPS, "channels": GAP_C, "pool": pool, "input_scale": s1,
             "input_zero_point": z1, "output_scale": s2, "output_zero_point": z2, "backend": "xnnpack",
             "bytes_differing_from_rule": sep},
            {"id": 4 * i + 2, "op": "reshape", "inputs": [v[2]], "output": v[3], "shape": [1, GAP_C],
             "backend": "xnnpack"},
            {"id": 4 * i + 3, "op": "dequantize", "inputs": [v[3]], "output": v[4], "input_scale": s2,
             "input_zero_point": z2, "backend": "xnnpack"},
        ]
        shapes.update({v[0]: [1, GAP_C] + list(hw), v[1]: [1, GAP_C] + list(hw), v[2]: [1, GAP_C, 1, 1],
                       v[3]: [1, GAP_C], v[4]: [1, GAP_C]})
    # f32 chains: ExecuTorch's pooled f32 values
    fparams, fqps, fxs, fvalues, fqs, fseps, fouts, finside, foutside = runs[False]
    f32_chains = []
    for j, ((hw, act, pool), prm, (s1, z1, _, _), vals, sep, o) in enumerate(
            zip(GAP_CHAINS, fparams, fqps, fvalues, fseps, fouts)):
        lo, hi = ACT_BOUNDS[act]
        files.update({f"f{j}_input": fxs[j].numpy(), f"f{j}_output": o, f"f{j}_running_mean": prm[0],
                      f"f{j}_running_var": prm[1], f"f{j}_weight": prm[2], f"f{j}_bias": prm[3],
                      f"f{j}_values": vals})
        f32_chains.append({"id": j, "shape": [1, GAP_C] + list(hw), "activation": act, "act_min": lo,
                           "act_max": hi, "eps": EPS, "pool": pool, "input_scale": s1, "input_zero_point": z1,
                           "f32_outputs_differing_from_rule": sep})
    write_case(d, name, xs, outs, oq, nodes, shapes, inside, outside,
               {"input_kind": "randn * 3; BatchNorm statistics random; output scales chosen to separate the "
                              "alternatives (bytes_differing_from_rule)",
                "f32_chains": f32_chains, "f32_delegated_ops": finside, "f32_portable_ops": foutside}, files)
    # write_case names outputs c{i}_3 (chain_nodes' layout): here the dequantize writes c{i}_4
    with open(os.path.join(d, "case.json")) as f:
        case = json.load(f)
    for i, o in enumerate(case["outputs"]):
        o["name"] = f"c{i}_4"
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(case, f, indent=1)


# XNNPACK's f32 average pooling (densenet's transitions): kernel, stride, padding (count_include_pad
# False where padded: the partitioner delegates it, XNNPACK's pixelwise kernel)
XPOOLS = [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (0, 0)), ((3, 3), (1, 1), (0, 0)), ((4, 4), (2, 2), (0, 0)),
          ((5, 3), (3, 2), (0, 0)), ((4, 5), (1, 1), (0, 0)), ((3, 3), (2, 2), (1, 1))]
XP_C, XP_HW = 24, (12, 13)


def xpool_alternatives(q, s1, z1, k, s, p):
    rule = xr.avg_pool2d_f32(q, s1, z1, k, s, p)
    alts = {"row_major": xr.avg_pool2d_f32(q, s1, z1, k, s, p, order="row"),
            "divide": xr.avg_pool2d_f32(q, s1, z1, k, s, p, divide=True),
            "flat_sum": xr.avg_pool2d_f32(q, s1, z1, k, s, p, tree=False),
            "row_major_flat_sum": xr.avg_pool2d_f32(q, s1, z1, k, s, p, order="row", tree=False)}
    xf = ((q - z1).astype(F32) * F32(s1)).astype(F32)
    alts["f64_mean"] = F.avg_pool2d(torch.tensor(xf.astype(F64)), k, s, p, count_include_pad=False).numpy().astype(F32)
    return rule, alts


class XPoolChains(nn.Module):
    def __init__(self, qps, quant):
        super().__init__()
        self.qps, self.quant = qps, quant

    def forward(self, *xs):
        outs = []
        for x, (k, s, p), (s1, z1, s2, z2) in zip(xs, XPOOLS, self.qps):
            y = F.avg_pool2d(q_dq(x, s1, z1), k, s, p, False, False)
            outs.append(q_dq(y, s2, z2) if self.quant else y)
        return tuple(outs)


def case_avg_pool_xnnpack(out):
    name = "avg_pool2d_xnnpack"
    d = os.path.join(out, name)
    g = np.random.default_rng(31)
    runs = {}
    for quant in (True, False):
        qps, xs, qs_in, seps = [], [], [], []
        for (k, s, p) in XPOOLS:
            s1, z1 = float(F32(g.uniform(0.01, 0.1))), int(g.integers(-20, 20))
            q = g.integers(-128, 128, (1, XP_C) + XP_HW)
            xs.append(torch.tensor(((q - z1).astype(F32) * F32(s1)).astype(F32)))
            qs_in.append(q)
            rule, alts = xpool_alternatives(q, s1, z1, k, s, p)
            if quant:
                z2 = int(g.integers(-10, 10))
                s2, sep = pick_output_scale(rule.reshape(-1), {a: v.reshape(-1) for a, v in alts.items()}, z2, 100)
            else:
                s2, z2 = 1.0, 0
                sep = {a: int((v.view(np.int32) != rule.view(np.int32)).sum()) for a, v in alts.items()}
            qps.append((s1, z1, s2, z2))
            seps.append(sep)
        outs, inside, outside = run_executorch(XPoolChains(qps, quant), xs)
        runs[quant] = (qps, xs, qs_in, seps, outs, inside, outside)
        print(f"{name} ({'quantized' if quant else 'f32'}): separated {seps}; delegated {inside}, portable {outside}",
              flush=True)
    qps, xs, qs_in, seps, outs, inside, outside = runs[True]
    nodes, shapes, oq = [], {}, []
    for i, ((k, s, p), (s1, z1, s2, z2), sep, o) in enumerate(zip(XPOOLS, qps, seps, outs)):
        oq.append(int8_of(o, s2, z2))
        nn_, v = chain_nodes(i, {"op": "avg_pool2d", "kernel": list(k), "stride": list(s), "padding": list(p),
                                 "ceil_mode": False, "count_include_pad": False, "divisor_override": None,
                                 "bytes_differing_from_rule": sep}, (s1, z1), (s2, z2), "xnnpack")
        nodes += nn_
        shapes[v[0]] = shapes[v[1]] = [1, XP_C] + list(XP_HW)
        shapes[v[2]] = shapes[v[3]] = list(o.shape)
    fqps, fxs, fqs, fseps, fouts, finside, foutside = runs[False]
    files, f32_pools = {}, []
    for j, ((k, s, p), (s1, z1, _, _), sep, o) in enumerate(zip(XPOOLS, fqps, fseps, fouts)):
        files.update({f"f{j}_input": fxs[j].numpy(), f"f{j}_output": o})
        f32_pools.append({"id": j, "shape": [1, XP_C] + list(XP_HW), "kernel": list(k), "stride": list(s),
                          "padding": list(p), "input_scale": s1, "input_zero_point": z1,
                          "f32_outputs_differing_from_rule": sep})
    write_case(d, name, xs, outs, oq, nodes, shapes, inside, outside,
               {"input_kind": "uniform int8 codes, random f32 input scales; output scales chosen to separate the "
                              "alternatives (bytes_differing_from_rule)",
                "f32_pools": f32_pools, "f32_delegated_ops": finside, "f32_portable_ops": foutside}, files)


CASES = {"batch_norm_mined": case_batch_norm,
         "avg_pool2d_portable": lambda out: case_avg_pool(out, False),
         "avg_pool2d_portable_tie": lambda out: case_avg_pool(out, True),
         "batch_norm_mean": case_batch_norm_mean,
         "avg_pool2d_xnnpack": case_avg_pool_xnnpack}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    for n, fn in CASES.items():
        if not a.only or n in a.only.split(","):
            fn(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
