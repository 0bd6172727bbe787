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


CASES = {"batch_norm_mined": case_batch_norm,
         "avg_pool2d_portable": lambda out: case_avg_pool(out, False),
         "avg_pool2d_portable_tie": lambda out: case_avg_pool(out, True)}


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
