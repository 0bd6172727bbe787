#!/usr/bin/env python3
"""Vectors for the float unary ops that XNNPACKQuantizer leaves between a dequantize and a
quantize (`dq -> f -> q`; XNNPACK turns each such chain into a 256-entry table:
xnn_subgraph_fuse_unary_quantized_into_lut). One case per op, `tests/data/pt2e/xnnpack/
unary_<op>/`: 8 parallel chains `x_i -> quantize -> dq -> f -> q -> dequantize`, each input
holding the 256 values that quantize to every int8 value, with 4 random and 4 power-of-two
qparam sets (power-of-two scales give outputs exactly on rounding ties for hardswish,
hardsigmoid and leaky_relu). The oracle is ExecuTorch's runtime with the XNNPACK delegate;
the case's `unary` nodes also hold the table the exporter's rule
(`qfuse_export.xnnpack_rules.unary_table`) gives, which tests/pt2e_xnnpack.rs runs as an
`Op::Lut` and tools/pt2e/check_pt2e_ops.py recomputes.

Usage: python3 tools/pt2e/gen_pt2e_unary.py OUT [--only sigmoid,tanh] [--sweep N]
  --sweep N: no files; compares the rule with ExecuTorch on N more random and N power-of-two
             qparam sets per op and prints the entries that differ.
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
F32 = np.float32
OPS = {
    "sigmoid": (torch.sigmoid, None),
    "tanh": (torch.tanh, None),
    "hardswish": (F.hardswish, None),
    "hardsigmoid": (F.hardsigmoid, None),
    "silu": (F.silu, None),
    "gelu": (F.gelu, None),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), 0.1),
}
K = 8  # chains per case


class Chains(nn.Module):
    def __init__(self, fn, qps):
        super().__init__()
        self.fn, self.qps = fn, qps

    def forward(self, *xs):
        outs = []
        for x, ((s1, z1), (s2, z2)) in zip(xs, self.qps):
            d = qd.dequantize_per_tensor(qd.quantize_per_tensor(x, s1, z1, -128, 127, torch.int8),
                                         s1, z1, -128, 127, torch.int8)
            y = self.fn(d)
            outs.append(qd.dequantize_per_tensor(qd.quantize_per_tensor(y, s2, z2, -128, 127, torch.int8),
                                                 s2, z2, -128, 127, torch.int8))
        return tuple(outs)


def qparam_sets(g, n_rand, n_pow2):
    out = []
    for _ in range(n_rand):
        out.append(((float(F32(g.uniform(0.01, 0.1))), int(g.integers(-64, 64))),
                    (float(F32(g.uniform(0.004, 0.05))), int(g.integers(-64, 64)))))
    for _ in range(n_pow2):
        out.append(((float(2.0 ** -int(g.integers(3, 7))), int(g.integers(-64, 64))),
                    (float(2.0 ** -int(g.integers(4, 9))), int(g.integers(-128, 64)))))
    return out


def ramp(s1, z1):
    """f32 inputs that quantize to -128..127 in order"""
    k = np.arange(-128, 128)
    x = ((k - z1).astype(F32) * F32(s1)).astype(F32)
    assert np.array_equal(np.clip(np.rint(x * F32(F32(1) / F32(s1))) + z1, -128, 127), k)
    return x.reshape(1, 256)


def executorch_tables(name, qps):
    fn, _ = OPS[name]
    xs = [torch.tensor(ramp(*q1)) for q1, _ in qps]
    ep = torch.export.export(Chains(fn, qps).eval(), tuple(xs))
    low = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
    inside, outside = lowered_ops(low)
    prog = low.to_executorch()
    program = Runtime.get().load_program(prog.buffer)
    method = program.load_method("forward")
    outs = [o.clone().numpy() for o in method.execute([x.clone() for x in xs])]
    del method, program
    qs = []
    for o, (_, (s2, z2)) in zip(outs, qps):
        q = np.rint(o / F32(s2)).astype(np.int64) + z2
        assert np.array_equal(((q - z2).astype(F32) * F32(s2)).astype(F32), o), "output not on the int8 grid"
        qs.append(q.reshape(-1))
    return xs, outs, qs, sorted(set(inside)), sorted(set(outside))


def ties(name, q1, q2):
    """outputs whose f32(v * f32(1/s_out)) is exactly halfway between two integers"""
    _, param = OPS[name]
    s1, z1 = q1
    s2, _ = q2
    v = xr.unary_f32(name, ((np.arange(-128, 128) - z1).astype(F32) * F32(s1)).astype(F32), param)
    t = (v * F32(F32(1) / F32(s2))).astype(F32)
    return int(np.sum(np.abs(t - np.floor(t)) == 0.5))


def rule(name, q1, q2):
    _, param = OPS[name]
    return np.array(xr.unary_table([(name, param)], *q1, *q2), dtype=np.int64) - 128


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--only", default="")
    ap.add_argument("--sweep", type=int, default=0)
    a = ap.parse_args()
    names = [n for n in OPS if not a.only or n in a.only.split(",")]
    if a.sweep:
        tot = bad = nt = 0
        for j, name in enumerate(names):
            g = np.random.default_rng(1000 + j)
            qps = qparam_sets(g, a.sweep, a.sweep)
            for i in range(0, len(qps), K):
                part = qps[i:i + K]
                _, _, qs, _, _ = executorch_tables(name, part)
                for (q1, q2), q in zip(part, qs):
                    r = rule(name, q1, q2)
                    d = np.flatnonzero(r != q)
                    tot += 256
                    bad += len(d)
                    nt += ties(name, q1, q2)
                    if len(d):
                        print(f"DIFF {name} {q1} {q2}: entries {d.tolist()[:8]} rule {r[d][:8].tolist()} "
                              f"executorch {q[d][:8].tolist()}")
            print(f"{name}: {len(qps)} tables compared", flush=True)
        print(f"sweep: {bad} of {tot} entries differ; {nt} ties met")
        return 1 if bad else 0
    os.makedirs(a.out, exist_ok=True)
    for j, name in enumerate(names):
        g = np.random.default_rng(list(OPS).index(name))
        qps = qparam_sets(g, K // 2, K // 2)
        xs, outs, qs, inside, outside = executorch_tables(name, qps)
        d = os.path.join(a.out, f"unary_{name}")
        os.makedirs(d, exist_ok=True)
        _, param = OPS[name]
        nodes, inputs, outputs, shapes = [], [], [], {}
        nt = 0
        agree = 0
        for i, ((q1, q2), x, o, q) in enumerate(zip(qps, xs, outs, qs)):
            v = [f"c{i}_{k}" for k in range(4)]
            np.save(os.path.join(d, f"input_{i}.npy"), x.numpy())
            np.save(os.path.join(d, f"output_{i}.npy"), o)
            np.save(os.path.join(d, f"output_q_{i}.npy"), q.reshape(o.shape).astype(np.int8))
            inputs.append({"name": v[0], "file": f"input_{i}.npy", "shape": [1, 256]})
            table = xr.unary_table([(name, param)], *q1, *q2)
            agree += int(np.array_equal(np.array(table) - 128, q))
            nt += ties(name, q1, q2)
            base = 4 * i
            nodes += [
                {"id": base, "op": "quantize", "inputs": [v[0]], "output": v[1], "output_scale": q1[0],
                 "output_zero_point": q1[1], "backend": "xnnpack"},
                {"id": base + 1, "op": "unary", "fn": name, "param": param, "inputs": [v[1]], "output": v[2],
                 "input_scale": q1[0], "input_zero_point": q1[1], "output_scale": q2[0],
                 "output_zero_point": q2[1], "table": table, "backend": "xnnpack"},
                {"id": base + 2, "op": "dequantize", "inputs": [v[2]], "output": v[3], "input_scale": q2[0],
                 "input_zero_point": q2[1], "backend": "xnnpack"},
            ]
            outputs.append({"name": v[3], "op": "dequantize", "int8": f"output_q_{i}.npy"})
            for vv in v:
                shapes[vv] = [1, 256]
        case = {
            "name": f"unary_{name}", "per_channel_weights": None, "qparams_overridden": False,
            "input_kind": "ramp: the 256 f32 values that quantize to -128..127",
            "versions": versions(), "inputs": inputs, "outputs": outputs, "nodes": nodes, "shapes": shapes,
            "delegated_ops": inside, "portable_ops": outside, "ties": nt,
            "rule_tables_equal_executorch": f"{agree}/{len(qps)}",
        }
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump(case, f, indent=1)
        print(f"unary_{name}: rule table = ExecuTorch on {agree}/{len(qps)}, {nt} ties, delegated {inside}, "
              f"portable {outside}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
