#!/usr/bin/env python3
"""Records the `inductor_x86_convpool/` cases: mnasnet's end under X86InductorQuantizer,
relu(conv(dq(x))) -> mean([2, 3]) -> q -> linear, compiled by torch.compile (Inductor,
freezing). oneDNN writes the plain conv's f32 output (relu post-op); Inductor's C++
(`cpp_fused_mean_quantize_per_tensor`) sums each channel's pixels in row-major order
from 0 (channels in vector lanes, no lane partial sums within a channel), divides by
f32(H*W) and quantizes: rint(f32(m * f32(1.0/s))) + z, clamped.

The mean's output scale is **mined** after convert_pt2e so that close alternatives of
the rule give other bytes: the average by the reciprocal (S * f32(1/HW)), other sum
orders (reversed, column-major, pairwise), the input scale's reciprocal round trip
(f32(1/f32(1/s)), PyTorch eager's) where it moves the scale. The linear after the mean
has identity weights and no bias, so each pooled byte is recovered from the compiled
output (`pooled.npy`, u8 [N, O]); case.json lists how many pooled bytes each
alternative changes. tests/pt2e_inductor_convpool.rs checks all of it without Python.

Usage: python3 tools/pt2e/gen_inductor_convpool.py OUT (tests/data/pt2e/inductor_x86_convpool)
Needs the venv of tools/pt2e/requirements.txt, gcc, and qfuse_export (python/).
Vectors depend on the CPU: AVX-512 VNNI here.
"""
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "python"))
sys.path.insert(0, HERE)
import qfuse_export  # noqa: E402
from inductor_oracle import compiled_output  # noqa: E402
from test_inductor_export import Fn, quantize  # noqa: E402

f32 = np.float32
# name -> (C in, O, kernel, stride, padding, input H, W, batch, seed)
CASES = {
    "pool_mined_7x7": (16, 64, 3, 2, 1, 14, 14, 2, 51),
    "pool_mined_5x3": (12, 64, 1, 1, 0, 5, 3, 2, 52),
    "pool_mined_2x2": (16, 96, 1, 1, 0, 2, 2, 2, 53),
}


def build(c, o, k, st, p):
    lin = nn.Linear(o, o)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(o))
        lin.bias.zero_()
    return Fn(lambda s, x: s.l(torch.relu(s.a(x)).mean([2, 3])), a=nn.Conv2d(c, o, k, stride=st, padding=p), l=lin)


def nodes(cm):
    qd = torch.ops.quantized_decomposed
    qs = [n for n in cm.graph.nodes if n.op == "call_function" and n.target == qd.quantize_per_tensor.default]
    conv = [n for n in cm.graph.nodes if n.op == "call_function" and n.target == torch.ops.aten.conv2d.default][0]
    return qs, conv


def attr(gm, t):
    for p in t.split("."):
        gm = getattr(gm, p)
    return gm


def pixel_values(cm, x, s_in_rule):
    """oneDNN's f32 conv outputs with relu, [N, O, H*W] (README rule), and the layer geometry"""
    qs, conv = nodes(cm)
    s, z = float(qs[0].args[1]), int(qs[0].args[2])
    c = f32(1.0 / s)
    xq = np.clip(np.rint((x.numpy().astype(f32) * c).astype(f32)) + z, 0, 255)
    wdq = conv.args[1]
    wq = attr(cm, wdq.args[0].target).numpy().astype(np.float64)
    ws = attr(cm, wdq.args[1].target).numpy().astype(f32)
    b = attr(cm, conv.args[2].target).detach().numpy().astype(f32)
    a = list(conv.args) + [None] * 7
    acc = F.conv2d(torch.tensor(xq - z, dtype=torch.float64), torch.tensor(wq), None,
                   a[3] or 1, a[4] or 0, a[5] or 1, a[6] or 1).numpy()
    assert np.all(np.abs(acc) < 2 ** 24)
    si = f32(s) if s_in_rule == "plain" else f32(f32(1) / f32(f32(1) / f32(s)))
    v = (acc.astype(f32) * si).astype(f32)
    v = (v * ws[None, :, None, None]).astype(f32)
    v = (v + b[None, :, None, None]).astype(f32)
    v = np.maximum(v, f32(0))
    n, o, h, w = v.shape
    return v, (h, w)


def seq(vals):
    s = f32(0)
    for t in vals:
        s = f32(s + t)
    return s


def pairwise(vals):
    vals = list(vals)
    while len(vals) > 1:
        nxt = [f32(vals[i] + vals[i + 1]) for i in range(0, len(vals) - 1, 2)]
        if len(vals) % 2:
            nxt.append(vals[-1])
        vals = nxt
    return vals[0]


def means(v, alt):
    n, o, h, w = v.shape
    hw = h * w
    out = np.zeros((n, o), dtype=f32)
    for i in range(n):
        for c in range(o):
            p = v[i, c]
            if alt == "reversed":
                s = seq(p.reshape(-1)[::-1])
            elif alt == "column_major":
                s = seq(p.T.reshape(-1))
            elif alt == "pairwise":
                s = pairwise(p.reshape(-1))
            else:
                s = seq(p.reshape(-1))
            out[i, c] = f32(s * f32(f32(1) / f32(hw))) if alt == "reciprocal" else f32(s / f32(hw))
    return out


def quant(m, s, z):
    inv = f32(1.0 / float(s))
    return np.clip(np.rint((m * inv).astype(f32)) + z, 0, 255).astype(np.uint8)


ALTS = ["reciprocal", "reversed", "column_major", "pairwise", "src_round_trip"]


def mine(v_rule, v_rt, z):
    """an f32 output scale s (Inductor's constant f32(1.0/s) known) separating as many alternatives as
    possible, each at >= 1 pooled byte in [16, 240]"""
    m = {"rule": means(v_rule, "rule")}
    for a in ALTS:
        m[a] = means(v_rt, "rule") if a == "src_round_trip" else means(v_rule, a)
    cands = set()
    for a in ALTS:
        for idx in zip(*np.nonzero(m[a] != m["rule"])):
            lo, hi = sorted([float(m["rule"][idx]), float(m[a][idx])])
            if lo <= 0:
                continue
            for k in range(16, 240, 7):
                # inv with lo * inv < k + 0.5 - z <= hi * inv (or the reverse): the tie between them
                t = k + 0.5 - z
                for inv in (t / hi, t / lo, t / ((lo + hi) / 2)):
                    iv = f32(inv)
                    for d in (-1, 0, 1):
                        cands.add(float(np.nextafter(iv, f32(np.inf) if d > 0 else f32(-np.inf)) if d else iv))
    best = None
    for inv in sorted(cands):
        s = float(f32(1.0 / inv))
        if float(f32(1.0 / s)) != inv:
            continue
        ref = quant(m["rule"], s, z)
        diff = {a: int(np.sum(quant(m[a], s, z) != ref)) for a in ALTS}
        score = (sum(1 for d in diff.values() if d), sum(diff.values()))
        if best is None or score > best[0]:
            best = (score, s, diff)
    return best


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/pt2e/inductor_x86_convpool"
    for name, (c, o, k, st, p, h, w, n, seed) in CASES.items():
        cm, x = quantize(build(c, o, k, st, p), (n, c, h, w), seed, False)
        qs, conv = nodes(cm)
        qmean = [q for q in qs if q.args[0].target == torch.ops.aten.mean.dim][0]
        z = int(qmean.args[2])
        v_rule, _ = pixel_values(cm, x, "plain")
        v_rt, _ = pixel_values(cm, x, "round_trip")
        (score, s, diff) = mine(v_rule, v_rt, z)
        qd = torch.ops.quantized_decomposed
        qmean.args = (qmean.args[0], s, z) + tuple(qmean.args[3:])
        for u in list(qmean.users):
            if u.target == qd.dequantize_per_tensor.default:
                u.args = (u.args[0], s, z) + tuple(u.args[3:])
        cm.recompile()
        ref = compiled_output(cm, x)
        # the pooled bytes behind the identity head: y[n, c] = f32(f32(f32((q - z) * w[c]) * s) * ws[c]) + 0
        lin = [nd for nd in cm.graph.nodes if nd.op == "call_function" and nd.target == torch.ops.aten.linear.default][0]
        ws = attr(cm, lin.args[1].args[1].target).numpy().astype(f32)
        wl = attr(cm, lin.args[1].args[0].target).numpy().astype(np.int64)
        assert np.array_equal(wl, np.diag(np.diag(wl))), "the head's weights must be diagonal"
        acc = (np.arange(256)[None, :] - z) * np.diag(wl)[:, None]   # [O, 256]
        head = ((acc.astype(f32) * f32(s)).astype(f32) * ws[:, None]).astype(f32) + f32(0)
        pooled = np.zeros((n, o), dtype=np.uint8)
        for i in range(n):
            for ch in range(o):
                hit = np.nonzero(head[ch].view(np.uint32) == ref[i, ch:ch + 1].view(np.uint32))[0]
                assert hit.size >= 1, (name, i, ch)
                pooled[i, ch] = hit[0] if hit.size == 1 else hit[np.argmin(np.abs(hit - hit[0]))]
        rule = quant(means(v_rule, "rule"), s, z)
        assert np.array_equal(rule, pooled), f"{name}: the rule misses {np.sum(rule != pooled)} pooled bytes"
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        h1 = qfuse_export.export(cm, x, os.path.join(d, "model.safetensors"))
        np.save(os.path.join(d, "input.npy"), x.numpy())
        np.save(os.path.join(d, "output.npy"), ref)
        np.save(os.path.join(d, "pooled.npy"), pooled)
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump(dict(name=name, input_shape=[n, c, h, w], conv=dict(out=o, kernel=k, stride=st, padding=p),
                           seed=seed, mean_scale=s, mean_zero_point=z,
                           alternatives_pooled_bytes_differing=diff,
                           torch=torch.__version__, oracle="torch.compile (Inductor, freezing=True)",
                           cpu="x86-64 with AVX-512 VNNI", nodes=len(h1["nodes"])), f, indent=1)
        print(f"{name}: mean scale {s!r} zp {z}; rule == compiled on {pooled.size} pooled bytes; "
              f"alternatives differ on {diff}")


if __name__ == "__main__":
    main()
