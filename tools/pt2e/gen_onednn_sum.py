#!/usr/bin/env python3
"""Records oneDNN's int8 conv with a `sum` post-op as Inductor calls it for X86InductorQuantizer's
`conv(dq(x)) + dq(a) [-> relu] -> q` (torch.ops.onednn.qconv2d_pointwise.binary_tensor, u8
addend, u8 output) on crafted layers, for tests/pt2e_inductor.rs (no Python in CI): half of the
layers with power-of-two scales and odd output zero points, so that `t * (1/so)` lands on exact
.5 ties where adding the zero point before rounding (oneDNN) and after it give different bytes.

Usage: python3 tools/pt2e/gen_onednn_sum.py OUT    (writes OUT/<case>/{case.json, x_u8.npy,
    addend_u8.npy, weight_q.npy, weight_scale.npy, bias.npy, output_u8.npy}; this CPU: x86-64
    with AVX-512 VNNI)
"""
import json, os, sys, warnings

warnings.filterwarnings("ignore")
import numpy as np
import torch

F32 = np.float32


def layer(rng, crafted, relu):
    C, O, H = 16, 16, 7
    if crafted:
        si, zi = F32(2.0 ** -5), int(rng.integers(60, 200))
        ws = np.full(O, 2.0 ** -7, dtype=F32)
        wq = rng.integers(-3, 4, (O, C, 3, 3)).astype(np.int8)
        b = (rng.integers(-64, 65, O) * 2.0 ** -12).astype(F32)
        xq = np.clip(zi + rng.integers(-3, 4, (1, C, H, H)), 0, 255).astype(np.uint8)
        so = sa = F32(2.0 ** -11)
        za = int(rng.integers(100, 150))
        aq = np.clip(za + rng.integers(-20, 21, (1, O, H, H)), 0, 255).astype(np.uint8)
        zo = int(rng.choice([31, 101, 127]))
    else:
        si, zi = F32(10 ** rng.uniform(-3, -1)), int(rng.integers(0, 256))
        ws = (10 ** rng.uniform(-3.5, -1.5, O)).astype(F32)
        wq = rng.integers(-128, 128, (O, C, 3, 3)).astype(np.int8)
        b = (rng.standard_normal(O) * 0.2).astype(F32)
        xq = rng.integers(0, 256, (1, C, H, H)).astype(np.uint8)
        so, sa = F32(rng.uniform(0.02, 0.2)), F32(rng.uniform(0.01, 0.1))
        za, zo = int(rng.integers(0, 256)), int(rng.integers(0, 10) if relu else rng.integers(0, 256))
        aq = rng.integers(0, 256, (1, O, H, H)).astype(np.uint8)
    pw = torch.ops.onednn.qconv_prepack(torch.from_numpy(wq), torch.from_numpy(ws), float(si), zi, [1, 1], [1, 1],
                                        [1, 1], 1, list(xq.shape))
    y = torch.ops.onednn.qconv2d_pointwise.binary_tensor(
        torch.from_numpy(xq).contiguous(memory_format=torch.channels_last), torch.tensor(float(si)),
        torch.tensor(zi, dtype=torch.int32), pw, torch.from_numpy(ws), torch.zeros(O, dtype=torch.int32),
        torch.from_numpy(aq).contiguous(memory_format=torch.channels_last), torch.from_numpy(b), [1, 1], [1, 1],
        [1, 1], 1, float(so), zo, torch.uint8, float(sa), za, "sum", 1.0, "relu" if relu else "none", [None], "")
    return dict(si=si, zi=zi, ws=ws, wq=wq, b=b, xq=xq, sa=sa, za=za, aq=aq, so=so, zo=zo,
                y=y.contiguous().numpy().astype(np.uint8))


def main():
    out = sys.argv[1]
    rng = np.random.default_rng(11)
    for name, crafted, relu in (("sum_tie", True, False), ("sum_tie_relu", True, True),
                                ("sum_random", False, False), ("sum_random_relu", False, True)):
        L = layer(rng, crafted, relu)
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        for k, f in (("xq", "x_u8"), ("aq", "addend_u8"), ("wq", "weight_q"), ("ws", "weight_scale"),
                     ("b", "bias"), ("y", "output_u8")):
            np.save(os.path.join(d, f + ".npy"), L[k])
        case = dict(name=name, op="qconv2d_pointwise.binary_tensor ('sum', unary 'relu' or 'none')",
                    relu=relu, crafted_ties=crafted, stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=1,
                    input=dict(scale=float(L["si"]), zero_point=L["zi"]),
                    addend=dict(scale=float(L["sa"]), zero_point=L["za"]),
                    output=dict(scale=float(L["so"]), zero_point=L["zo"]),
                    torch=torch.__version__, cpu_capability=torch.backends.cpu.get_cpu_capability(),
                    cpu="x86-64 with AVX-512 VNNI")
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump(case, f, indent=1)
        print(name, L["y"].size, "outputs")


if __name__ == "__main__":
    main()
