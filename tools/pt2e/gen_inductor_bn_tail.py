#!/usr/bin/env python3
"""Vectors that SEPARATE the operation order of two Inductor-x86 float rules from plausible
alternatives (tests/data/pt2e/README.md, "Inductor x86 graphs": batch norm, `table_mean`):

  bn_orders     dq -> batch_norm (eval) -> relu -> q -> dq, 24 channels of 16x16 pixels, every
                input byte once per channel. qfuse's rule (`channel_lut`, requant_chain_table):
                t = f32(f32(f32(f32(x - mean) * invstd) * w) + b), relu, Inductor's quantize.
  tail_div      dq -> batch_norm -> relu -> adaptive_avg_pool2d(1) -> flatten -> q -> dq (densenet's
                tail), 32 channels of 7x7 pixels, channels-last input. qfuse's rule (`table_mean`):
                per channel acc = 0, acc = acc + t_p over the pixels in order, `/ f32(H*W)`, quantize.

The per-channel parameters (batch norm statistics, and for tail_div the pixel bytes) are searched
with numpy (seeded) so that each candidate order below gives at least one output byte other than
qfuse's rule; the graph (q / dq with the chosen qparams written directly, as convert_pt2e writes
them: the qparams are exact) is compiled by torch.compile (Inductor, freezing;
tools/pt2e/inductor_oracle.py), exported by qfuse_export, run with `qfuse run` (CPU and GPU) and
compared bit for bit. Candidates (each operation an f32 rounding unless `fma`, one rounding):
  batch norm (a = f32(invstd * w)):
    mul_order      f32(f32(x - mean) * a) + b
    fused          f32(x * a) + f32(b - f32(mean * a))     (ATen's eager CPU kernel's alpha / beta)
    fused_fma      fma(x, a, f32(b - f32(mean * a)))
    mul_order_fma  fma(f32(x - mean), a, b)
    last_fma       fma(f32(f32(x - mean) * invstd), w, b)
    w_first        f32(f32(f32(x - mean) * w) * invstd) + b
    exact          the f64 value of ((x - mean) * invstd) * w + b rounded once
  global average (t_p the batch norm + relu values of qfuse's rule):
    mul_recip      f32(acc * f32(1 / (H*W)))
    pixel_lanes    16 lane partial sums over the pixel index (p mod 16) folded by halving, / f32(H*W)
    exact_mean     the f64 sum of the t_p divided by H*W, rounded once
    folded_scale   no division: the quantize's f32(acc * f32(1 / (H*W * s_out)))
--save DIR writes DIR/<case>/{model.safetensors,input.npy,output.npy,params.npy,case.json} (default
tests/data/pt2e/inductor_x86_float), read by tests/pt2e_inductor_float.rs. params.npy: [4 + 4, C]
f32 rows mean, invstd (torch.rsqrt(var + eps), as freezing folds it), w, b, then s_in, z_in, s_out,
z_out (constant rows). case.json's `misses` holds how many recorded output bytes each candidate
gets wrong.

Usage: python3 tools/pt2e/gen_inductor_bn_tail.py [--qfuse PATH] [--no-gpu] [--save [DIR]] [--code]
Vectors depend on the CPU: recorded on an Intel Xeon with AVX-512 VNNI (torch 2.15, torchao 0.18).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import warnings

warnings.filterwarnings("ignore")
import logging

logging.disable(logging.WARNING)

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, HERE)
import qfuse_export  # noqa: E402
from qfuse_export.xnnpack_rules import fma_f32  # noqa: E402
from inductor_oracle import compiled_output  # noqa: E402
from test_inductor_export import compare, qfuse_run  # noqa: E402

F32, F64 = np.float32, np.float64
EPS = 1e-5
QD = torch.ops.quantized_decomposed


def f32s(v):
    """a Python float that is an f32 (so a Rust test rebuilds every constant from f32 data)"""
    return float(np.float32(v))


# qparams of each case: (s_in, z_in, s_out, z_out); scales are f32 values
QP = {"bn_orders": (f32s(0.043), 131, f32s(0.0297), 12),
      "tail_div": (f32s(0.047), 126, f32s(0.00731), 3)}


def invstd_of(var):
    return torch.rsqrt(torch.from_numpy(np.asarray(var, F32)) + EPS).numpy().astype(F32)


def dequant(q, s, z):
    return ((np.asarray(q, F32) - F32(z)).astype(F32) * F32(s)).astype(F32)


def quant(t, s, z):
    """Inductor's quantize: clamp(rint(f32(t * f32(1 / s))) + z, 0, 255) (1 / s in f64)"""
    c = F32(1.0 / float(s))
    return np.clip(np.rint((np.asarray(t, F32) * c).astype(F32)) + F32(z), 0, 255).astype(np.uint8)


def bn_candidates(x, mean, invstd, w, b):
    """{name: f32 batch norm values} of x (broadcast against the [.., 1] parameters)"""
    x, m, i, w, b = (np.asarray(v, F32) for v in (x, mean, invstd, w, b))
    d = (x - m).astype(F32)
    a = (i * w).astype(F32)
    sh = (b - (m * a).astype(F32)).astype(F32)
    return {
        "qfuse": (((d * i).astype(F32) * w).astype(F32) + b).astype(F32),
        "mul_order": ((d * a).astype(F32) + b).astype(F32),
        "fused": ((x * a).astype(F32) + sh).astype(F32),
        "fused_fma": fma_f32(x, a, sh),
        "mul_order_fma": fma_f32(d, a, b),
        "last_fma": fma_f32((d * i).astype(F32), w, b),
        "w_first": (((d * w).astype(F32) * i).astype(F32) + b).astype(F32),
        "exact": ((d.astype(F64) * i.astype(F64) * w.astype(F64) + b.astype(F64)).astype(F32)),
    }


BN_NAMES = ["mul_order", "fused", "fused_fma", "mul_order_fma", "last_fma", "w_first", "exact"]
MEAN_NAMES = ["mul_recip", "pixel_lanes", "exact_mean", "folded_scale"]


def random_params(g, n):
    mean = g.uniform(-1.5, 1.5, n).astype(F32)
    var = g.uniform(0.1, 2.5, n).astype(F32)
    w = g.uniform(0.3, 2.5, n).astype(F32)
    b = g.uniform(-1.0, 1.5, n).astype(F32)
    return mean, var, w, b


def bn_bytes(xq, mean, invstd, w, b, qp):
    """{candidate: output bytes} of the dq -> bn -> relu -> q chain of input bytes xq [N, K]"""
    s_in, z_in, s_out, z_out = qp
    x = dequant(xq, s_in, z_in)
    col = lambda v: np.asarray(v, F32)[:, None]  # noqa: E731
    return {k: quant(np.maximum(t, F32(0)), s_out, z_out)
            for k, t in bn_candidates(x, col(mean), col(invstd), col(w), col(b)).items()}


def mean_candidates(t, hw):
    """{name: f32 mean} of f32 values t [N, hw] (pixels in row-major order)"""
    n = t.shape[0]
    acc = np.zeros(n, F32)
    for p in range(hw):
        acc = (acc + t[:, p]).astype(F32)
    lanes = np.zeros((n, 16), F32)
    for p in range(hw):
        lanes[:, p % 16] = (lanes[:, p % 16] + t[:, p]).astype(F32)
    exact = np.zeros(n, F64)  # in order (the f64 sum of 49 f32 values: exact but for the last bits)
    for p in range(hw):
        exact = exact + t[:, p].astype(F64)
    while lanes.shape[1] > 1:
        h = lanes.shape[1] // 2
        lanes = (lanes[:, :h] + lanes[:, h:]).astype(F32)
    return {
        "qfuse": (acc / F32(hw)).astype(F32),
        "mul_recip": (acc * F32(1.0 / hw)).astype(F32),
        "pixel_lanes": (lanes[:, 0] / F32(hw)).astype(F32),
        "exact_mean": (exact / hw).astype(F32),
    }


def tail_bytes(xq, mean, invstd, w, b, qp):
    s_in, z_in, s_out, z_out = qp
    x = dequant(xq, s_in, z_in)
    col = lambda v: np.asarray(v, F32)[:, None]  # noqa: E731
    t = np.maximum(bn_candidates(x, col(mean), col(invstd), col(w), col(b))["qfuse"], F32(0))
    hw = xq.shape[1]
    r = {k: quant(m, s_out, z_out) for k, m in mean_candidates(t, hw).items()}
    # folded_scale: the division and the quantize's scale as one factor f32(1 / (H*W * s_out))
    acc = np.zeros(t.shape[0], F32)
    for p in range(hw):
        acc = (acc + t[:, p]).astype(F32)
    y = np.rint((acc * F32(1.0 / (hw * float(s_out)))).astype(F32)) + F32(z_out)
    r["folded_scale"] = np.clip(y, 0, 255).astype(np.uint8)
    return r


def pick(found, names, per, total, g, channels):
    """`channels` indices: up to `per` that each candidate misses (found[name] = indices), then
    random others"""
    chosen = []
    for k in names:
        got = [i for i in found[k] if i not in chosen][:per]
        if not got:
            raise SystemExit(f"search found no parameters separating {k}")
        chosen += got
    rest = [i for i in range(total) if i not in chosen]
    chosen += list(g.choice(rest, channels - len(chosen), replace=False))
    return chosen


def search_bn(seed, channels):
    """per-channel statistics where each candidate batch norm order misses some byte"""
    qp = QP["bn_orders"]
    g = np.random.default_rng(seed)
    n = 20000
    mean, var, w, b = random_params(g, n)
    inv = invstd_of(var)
    xq = np.tile(np.arange(256), (n, 1))
    out = bn_bytes(xq, mean, inv, w, b, qp)
    found = {k: list(np.flatnonzero((out[k] != out["qfuse"]).any(1))) for k in BN_NAMES}
    print("bn search: " + ", ".join(f"{k} {len(v)}" for k, v in found.items()) + f" of {n} channels")
    idx = pick(found, BN_NAMES, 2, n, g, channels)
    return mean[idx], var[idx], inv[idx], w[idx], b[idx]


def search_tail(seed, channels, hw):
    qp = QP["tail_div"]
    g = np.random.default_rng(seed)
    n = 40000
    mean, var, w, b = random_params(g, n)
    inv = invstd_of(var)
    xq = g.integers(0, 256, (n, hw))
    # move each channel's mean next to a rounding boundary of the quantize (k + 1/2) / c by its
    # bias (random means rarely fall within an ulp of one): three corrections
    c = F32(1.0 / float(qp[2]))
    for _ in range(3):
        x = dequant(xq, qp[0], qp[1])
        t = np.maximum(bn_candidates(x, mean[:, None], inv[:, None], w[:, None], b[:, None])["qfuse"], F32(0))
        m = mean_candidates(t, hw)["qfuse"].astype(F64)
        target = (np.floor(m * float(c) - 0.5) + 0.5 + g.integers(0, 2, n)) / float(c)
        b = (b.astype(F64) + (target - m) * np.where(t > 0, 1.0, 0.0).mean(1).clip(0.2, 1) ** -1).astype(F32)
    out = tail_bytes(xq, mean, inv, w, b, qp)
    found = {k: list(np.flatnonzero(out[k] != out["qfuse"])) for k in MEAN_NAMES}
    print("tail search: " + ", ".join(f"{k} {len(v)}" for k, v in found.items()) + f" of {n} channels")
    idx = pick(found, MEAN_NAMES, 3, n, g, channels)
    return mean[idx], var[idx], inv[idx], w[idx], b[idx], xq[idx]


class Graph(torch.nn.Module):
    """q -> dq -> batch_norm (eval) -> relu [-> adaptive_avg_pool2d(1) -> flatten] -> q -> dq"""

    def __init__(self, mean, var, w, b, qp, tail):
        super().__init__()
        for k, v in dict(mean=mean, var=var, w=w, b=b).items():
            self.register_buffer(k, torch.from_numpy(np.asarray(v, F32).copy()))
        self.qp, self.tail = qp, tail

    def forward(self, x):
        s_in, z_in, s_out, z_out = self.qp
        q = QD.quantize_per_tensor(x, s_in, z_in, 0, 255, torch.uint8)
        d = QD.dequantize_per_tensor(q, s_in, z_in, 0, 255, torch.uint8)
        y = torch.relu(F.batch_norm(d, self.mean, self.var, self.w, self.b, False, 0.1, EPS))
        if self.tail:
            y = torch.flatten(F.adaptive_avg_pool2d(y, 1), 1)
        q = QD.quantize_per_tensor(y, s_out, z_out, 0, 255, torch.uint8)
        return QD.dequantize_per_tensor(q, s_out, z_out, 0, 255, torch.uint8)


def build(name):
    """(module, input, expected bytes {candidate: [..]} in the output's order)"""
    qp = QP[name]
    s_in, z_in = qp[0], qp[1]
    if name == "bn_orders":
        c = 24
        mean, var, inv, w, b = search_bn(101, c)
        g = np.random.default_rng(7)
        xq = np.stack([g.permutation(256) for _ in range(c)])          # [C, 256]: every byte once
        exp = bn_bytes(xq, mean, inv, w, b, qp)
        x = dequant(xq, s_in, z_in).reshape(1, c, 16, 16)
        xt = torch.from_numpy(x)
    else:
        c, h, wd = 32, 7, 7
        mean, var, inv, w, b, xq = search_tail(202, c, h * wd)
        exp = {k: v[None, :] for k, v in tail_bytes(xq, mean, inv, w, b, qp).items()}  # [1, C]
        x = dequant(xq, s_in, z_in).reshape(1, c, h, wd)
        xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)  # densenet's layout
    m = Graph(mean, var, w, b, qp, name != "bn_orders").eval()
    params = np.stack([mean, inv, w, b] + [np.full(c, v, F32) for v in qp]).astype(F32)
    return m, xt, exp, params


def main():
    ap = argparse.ArgumentParser()
    tgt = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    ap.add_argument("--qfuse", default=os.path.join(tgt, "release", "qfuse"))
    ap.add_argument("--no-gpu", action="store_true")
    ap.add_argument("--code", action="store_true", help="print Inductor's kernels")
    ap.add_argument("--save", nargs="?", const=os.path.join(ROOT, "tests/data/pt2e/inductor_x86_float"), default="")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="qfuse_indbn_")
    devs = ["cpu"] + ([] if a.no_gpu else ["gpu"])
    nfail = 0
    for name in QP:
        m, x, exp, params = build(name)
        gm = torch.export.export(m, (x,)).module()
        ref, code = compiled_output(gm, x, return_code=True)
        if a.code:
            print(code)
        s_out, z_out = QP[name][2], QP[name][3]
        got_bytes = np.rint(ref.reshape(exp["qfuse"].shape) / np.float64(s_out) + z_out).astype(np.int64)
        if not np.array_equal(dequant(got_bytes, s_out, z_out), ref.reshape(got_bytes.shape)):
            raise SystemExit(f"{name}: the compiled output is not dequantized bytes")
        misses = {k: int((v.astype(np.int64) != got_bytes).sum()) for k, v in exp.items()}
        print(f"{name}: output bytes each rule gets wrong (of {got_bytes.size}): {misses}")
        if misses["qfuse"] or not all(misses[k] for k in misses if k != "qfuse"):
            print(f"FAIL {name}: qfuse's rule must match every byte and each candidate miss one")
            nfail += 1
        mp = os.path.join(work, f"{name}.safetensors")
        h = qfuse_export.export(gm, x, mp)
        ops = sorted({n["op"] if n["op"] != "host_float" else f"host_float {n['fn']}" for n in h["nodes"]})
        xp = os.path.join(work, f"{name}_x.npy")
        np.save(xp, x.contiguous().numpy())
        for dev in devs:
            got, err = qfuse_run(a.qfuse, mp, xp, os.path.join(work, f"{name}_{dev}.npy"), dev == "cpu")
            msg = f"qfuse run: {err}" if err else compare(got, ref)
            if msg:
                print(f"FAIL {name} [{dev}]: {msg}")
                nfail += 1
            else:
                print(f"ok   {name} [{dev}]: {ref.size} outputs bit-exact with torch.compile ({', '.join(ops)})")
        if a.save:
            d = os.path.join(a.save, name)
            os.makedirs(d, exist_ok=True)
            shutil.copy(mp, os.path.join(d, "model.safetensors"))
            np.save(os.path.join(d, "input.npy"), x.contiguous().numpy())
            np.save(os.path.join(d, "output.npy"), ref)
            np.save(os.path.join(d, "params.npy"), params)
            with open(os.path.join(d, "case.json"), "w") as f:
                json.dump(dict(name=name, input_shape=list(x.shape), torch=torch.__version__,
                               oracle="torch.compile (Inductor, freezing=True)", cpu="x86-64 with AVX-512 VNNI",
                               generator="tools/pt2e/gen_inductor_bn_tail.py", ops=ops, misses=misses), f, indent=1)
    print("FAILED" if nfail else "all ok")
    return 1 if nfail else 0


if __name__ == "__main__":
    sys.exit(main())
