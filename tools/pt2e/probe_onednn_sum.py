#!/usr/bin/env python3
"""Probe oneDNN's int8 conv with a `sum` post-op (what Inductor calls for
`conv(x) + dq(a) [-> relu] -> q` in X86InductorQuantizer graphs, e.g. torchvision's
resnet18 / mobilenet_v2 residual adds): torch.ops.onednn.qconv2d_pointwise.binary_tensor
with a u8 accumulator `a` (scale sa, zero point za) and a u8 output (so, zo), over
random layers. Prints, per candidate formula, the fraction of outputs reproduced and
the largest difference in steps. `v` is the conv's f32 value (oneDNN's
f32(f32(f32(acc) * si) * ws) + b, exact on the f32 outputs: README).

Usage: python3 tools/pt2e/probe_onednn_sum.py [--trials N] [--seed S]
"""
import argparse, os, sys, warnings

warnings.filterwarnings("ignore")
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_inductor import accumulate, fma32_np  # noqa: E402

F32, I64 = np.float32, np.int64


def candidates(v, aq, sa, za, so, zo, relu):
    inv = F32(F32(1.0) / F32(so))
    da = ((aq.astype(F32) - F32(za)).astype(F32) * F32(sa)).astype(F32)    # dequantized accumulator
    r = (lambda t: np.maximum(t, F32(0))) if relu else (lambda t: t)
    out = {}
    t = r((v + da).astype(F32))
    out["rint(f32(relu(v + f32(a-za)*sa) * inv) + zo)"] = np.rint((t * inv).astype(F32) + F32(zo))
    out["rint(f32(relu(v + f32(a-za)*sa) * inv)) + zo"] = np.rint((t * inv).astype(F32)) + zo
    # the accumulator rescaled to the output scale: sum scale sa/so on (a - za)
    ss = F32(F32(sa) / F32(so))
    ss2 = F32(F32(sa) * inv)
    for sname, s_ in (("f32(sa/so)", ss), ("f32(sa*inv)", ss2)):
        u = (v * inv).astype(F32)
        w = ((aq.astype(F32) - F32(za)) * s_).astype(F32)
        t2 = (u + w).astype(F32)
        if relu:
            t2 = np.maximum(t2, F32(0))
        out[f"rint(f32(v*inv) + f32((a-za)*{sname}) + zo)"] = np.rint((t2 + F32(zo)).astype(F32))
        out[f"rint(f32(v*inv) + f32((a-za)*{sname})) + zo"] = np.rint(t2) + zo
        w3 = (aq.astype(F32) * s_).astype(F32)
        t3 = ((u + w3).astype(F32) + F32(zo - 0) - (F32(za) * s_).astype(F32)).astype(F32)
        out[f"rint(f32(v*inv) + f32(a*{sname}) + zo - f32(za*{sname}))"] = np.rint(t3)
        t4 = fma32_np((aq.astype(F32) - F32(za)).astype(F32), s_, u)
        if relu:
            t4 = np.maximum(t4, F32(0))
        out[f"rint(fma(a-za, {sname}, f32(v*inv)) + zo)"] = np.rint((t4 + F32(zo)).astype(F32))
    return {k: np.clip(x, 0, 255).astype(I64) for k, x in out.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    tot = {}
    n_out = 0
    for trial in range(a.trials):
        relu = trial % 2 == 1
        C, O, H = int(rng.choice([8, 16, 32])), int(rng.choice([8, 16, 32])), int(rng.integers(5, 13))
        si = F32(10 ** rng.uniform(-3, -0.5)); zi = int(rng.integers(0, 256))
        ws = (10 ** rng.uniform(-3.5, -1.5, O)).astype(F32)
        wq = rng.integers(-128, 128, (O, C, 3, 3)).astype(np.int8)
        b = (rng.standard_normal(O) * 0.2).astype(F32)
        xq = rng.integers(0, 256, (1, C, H, H)).astype(np.uint8)
        case = dict(op="conv2d", act_qparams=[dict(scale=float(si), zero_point=zi)], stride=[1, 1],
                    padding=[1, 1], dilation=[1, 1], groups=1)
        acc = accumulate(case, xq.astype(I64), wq)
        v = ((acc.astype(F32) * si).astype(F32) * ws.reshape(1, -1, 1, 1)).astype(F32) + b.reshape(1, -1, 1, 1)
        v = v.astype(F32)
        sa = F32(float(np.std(v)) / float(rng.uniform(10, 60))); za = int(rng.integers(0, 256))
        aq = rng.integers(0, 256, v.shape).astype(np.uint8)
        so = F32(float(np.std(v)) / float(rng.uniform(10, 40))); zo = int(rng.integers(0, 256))
        if relu:
            zo = int(rng.integers(0, 10))
        if trial % 4 >= 2:
            # crafted: powers of two (si 2^-5, ws 2^-7, so = sa = 2^-11, biases k * 2^-13,
            # activations near their zero point): v * inv often ends in .5 exactly, so the
            # zero point added before or after rounding gives different bytes (odd zo)
            si, zi = F32(2.0 ** -5), int(rng.integers(60, 200))
            ws = np.full(O, 2.0 ** -7, dtype=F32)
            wq = rng.integers(-3, 4, (O, C, 3, 3)).astype(np.int8)
            b = (rng.integers(-64, 65, O) * 2.0 ** -13).astype(F32)
            xq = np.clip(zi + rng.integers(-3, 4, (1, C, H, H)), 0, 255).astype(np.uint8)
            case["act_qparams"][0]["zero_point"] = zi
            acc = accumulate(case, xq.astype(I64), wq)
            v = (((acc.astype(F32) * si).astype(F32) * ws.reshape(1, -1, 1, 1)).astype(F32)
                 + b.reshape(1, -1, 1, 1)).astype(F32)
            so = sa = F32(2.0 ** -11)
            za = int(rng.integers(100, 150))
            aq = np.clip(za + rng.integers(-20, 21, v.shape), 0, 255).astype(np.uint8)
            zo = int(rng.choice([31, 101, 127]))
        x_t = torch.from_numpy(xq).contiguous(memory_format=torch.channels_last)
        w_s = torch.from_numpy(ws)
        pw = torch.ops.onednn.qconv_prepack(torch.from_numpy(wq), w_s, float(si), zi, [1, 1], [1, 1], [1, 1], 1,
                                            list(xq.shape))
        acc_t = torch.from_numpy(aq).contiguous(memory_format=torch.channels_last)
        y = torch.ops.onednn.qconv2d_pointwise.binary_tensor(
            x_t, torch.tensor(float(si)), torch.tensor(zi, dtype=torch.int32), pw, w_s,
            torch.zeros(O, dtype=torch.int32), acc_t, torch.from_numpy(b), [1, 1], [1, 1], [1, 1], 1,
            float(so), zo, torch.uint8, float(sa), za, "sum", 1.0, "relu" if relu else "none", [None], "")
        y = y.contiguous().numpy().astype(I64)
        for k, c in candidates(v, aq, sa, za, so, zo, relu).items():
            d = np.abs(c - y)
            e = tot.setdefault(k, [0, 0, 0])
            e[0] += int((d == 0).sum()); e[1] += d.size; e[2] = max(e[2], int(d.max()))
        n_out += y.size
    print(f"{a.trials} random conv layers with a u8 sum post-op (half with relu), {n_out} u8 outputs; "
          f"torch {torch.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}")
    for k, (ok, n, mx) in sorted(tot.items(), key=lambda kv: -kv[1][0] / kv[1][1]):
        print(f"  {100.0 * ok / n:8.4f}% exact, max diff {mx:4d} step(s)   {k}")


if __name__ == "__main__":
    main()
