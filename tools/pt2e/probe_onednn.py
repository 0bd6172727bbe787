#!/usr/bin/env python3
"""Probe oneDNN's int8 conv/linear epilogue directly, through the same ops that
Inductor's generated code calls (torch.ops.onednn.qconv_pointwise /
qlinear_pointwise after qconv_prepack / qlinear_prepack), over many random
layers and quantization parameters. Prints, per candidate formula, the fraction
of outputs reproduced bit for bit and the largest difference.

Usage: python3 tools/pt2e/probe_onednn.py [--trials N] [--seed S]
Needs: torch (x86 CPU build with oneDNN), numpy
"""
import argparse, os, sys, warnings

warnings.filterwarnings("ignore")
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_inductor import candidates_f32, candidates_u8, accumulate  # noqa: E402

F32, F64, I64 = np.float32, np.float64, np.int64


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--big", action="store_true", help="64x64 images: ~1e5 outputs per layer")
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    tot = {}
    ties_total = 0
    n_out = 0
    for trial in range(a.trials):
        # every 5th layer is crafted: si = 2^-5, ws = 2^-7, so = 2^-11 (m = 1/2), bias = 2^-20 * so,
        # activations near their zero point: acc * m + 2^-20 lands just above a .5 tie, and
        # (v + zo) in f32 loses the 2^-20 when zo is large -> separates rint(v) + zo from rint(v + zo)
        crafted = trial % 5 == 4
        linear = trial % 4 == 3 and not crafted
        C = int(rng.choice([3, 8, 16, 32, 64]))
        O = int(rng.choice([4, 8, 16, 24, 32]))
        si = F32(10 ** rng.uniform(-3, -0.5))
        zi = int(rng.integers(0, 256))
        ws = (10 ** rng.uniform(-3.5, -1.5, O)).astype(F32)
        wq = rng.integers(-128, 128, (O, C) if linear else (O, C, 3, 3)).astype(np.int8)
        b = (rng.standard_normal(O) * 0.2).astype(F32)
        if crafted:
            C, O, si, zi = 16, 16, F32(2.0 ** -5), int(rng.integers(60, 200))
            ws = np.full(O, 2.0 ** -7, dtype=F32)
            wq = rng.integers(-3, 4, (O, C, 3, 3)).astype(np.int8)
            b = np.full(O, 2.0 ** -31, dtype=F32) * rng.choice([-1, 1], O).astype(F32)
        if linear:
            N = int(rng.choice([1, 4, 16, 33]))
            xq = rng.integers(0, 256, (N, C)).astype(np.uint8)
            case = dict(op="linear", act_qparams=[dict(scale=float(si), zero_point=zi)])
        else:
            H = 64 if a.big else int(rng.integers(5, 13))
            xq = rng.integers(0, 256, (1, C, H, H)).astype(np.uint8)
            if crafted:
                xq = np.clip(zi + rng.integers(-3, 4, (1, C, H, H)), 0, 255).astype(np.uint8)
            case = dict(op="conv2d", act_qparams=[dict(scale=float(si), zero_point=zi)], stride=[1, 1], padding=[1, 1],
                        dilation=[1, 1], groups=1)
        acc = accumulate(case, xq.astype(I64), wq)
        # output scale so that the result spans the u8 range
        t = candidates_f32(acc, si, ws, b)["(acc*si)*ws + b"]
        so = F32(max(float(np.std(t)), 1e-6) / float(rng.uniform(20, 60)))
        zo = int(rng.integers(0, 256))
        if crafted:
            so, zo = F32(2.0 ** -11), int(rng.choice([20, 130, 200, 250]))
        xs = torch.tensor(float(si), dtype=torch.float32)
        xz = torch.tensor(zi, dtype=torch.int32)
        w_s = torch.from_numpy(ws)
        w_z = torch.zeros(O, dtype=torch.int32)
        bias = torch.from_numpy(b)
        if linear:
            pw = torch.ops.onednn.qlinear_prepack(torch.from_numpy(wq), list(xq.shape))
            run = lambda os_, oz, dt: torch.ops.onednn.qlinear_pointwise.tensor(
                torch.from_numpy(xq), xs, xz, pw, w_s, w_z, bias, os_, oz, dt, "none", [None], "")
        else:
            x_t = torch.from_numpy(xq).contiguous(memory_format=torch.channels_last)
            pw = torch.ops.onednn.qconv_prepack(torch.from_numpy(wq), w_s, float(si), zi, [1, 1], [1, 1], [1, 1], 1,
                                                list(xq.shape))
            run = lambda os_, oz, dt: torch.ops.onednn.qconv_pointwise.tensor(
                x_t, xs, xz, pw, w_s, w_z, bias, [1, 1], [1, 1], [1, 1], 1, os_, oz, dt, "none", [None], "")
        yf = run(1.0, 0, torch.float32).contiguous().numpy()
        yq = run(float(so), zo, torch.uint8).contiguous().numpy().astype(I64)
        for k, v in candidates_f32(acc, si, ws, b).items():
            du = np.abs(v.view(np.int32).astype(I64) - yf.view(np.int32).astype(I64))
            e = tot.setdefault("f32 out: " + k, [0, 0, 0])
            e[0] += int((du == 0).sum()); e[1] += du.size; e[2] = max(e[2], int(du.max()))
        for k, v in candidates_u8(acc, si, ws, b, so, zo, 0, 255).items():
            dd = np.abs(v.astype(I64) - yq)
            e = tot.setdefault("u8 out: " + k, [0, 0, 0])
            e[0] += int((dd == 0).sum()); e[1] += dd.size; e[2] = max(e[2], int(dd.max()))
        n_out += yq.size
    print(f"{a.trials} random layers, {n_out} outputs each for f32 and u8; torch {torch.__version__}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")
    for k, (ok, n, mx) in sorted(tot.items(), key=lambda kv: -kv[1][0] / kv[1][1]):
        print(f"  {100.0 * ok / n:8.4f}% exact, max diff {mx:5d} {'ulp' if k.startswith('f32') else 'step(s)'}   {k}")


if __name__ == "__main__":
    main()
