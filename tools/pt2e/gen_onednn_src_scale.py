#!/usr/bin/env python3
"""Records oneDNN's int8 1x1 conv as Inductor calls it for X86InductorQuantizer graphs
(torch.ops.onednn.qconv_pointwise.tensor, u8 output; with an addend:
qconv2d_pointwise.binary_tensor 'sum') on layers crafted to show which input scale oneDNN
multiplies by: the scale itself (Inductor) or PyTorch eager's reciprocal round trip
`f32(1/f32(1/s))` (`qfuse::quant::onednn_src_scale`, the FX x86/onednn path). The input scale
is drawn among those the round trip moves; each output channel's bias puts one pixel on an
exact .5 tie of `v * (1/so)` (so a power of two, zero point 0) under the plain scale, which the round-trip
scale moves off the tie. For tests/pt2e_inductor.rs (no Python in CI).

Usage: python3 tools/pt2e/gen_onednn_src_scale.py OUT   (writes OUT/<case>/{case.json, x_u8.npy,
    [addend_u8.npy,] weight_q.npy, weight_scale.npy, bias.npy, output_u8.npy}; this CPU: x86-64
    with AVX-512 VNNI)
"""
import json, os, sys, warnings

warnings.filterwarnings("ignore")
import numpy as np
import torch

F32, F64, I64 = np.float32, np.float64, np.int64


def round_trip(s):
    return F32(1.0 / F64(F32(1.0 / F64(s))))


def rule(acc, si, ws, b, so, zo, relu, aq=None, sa=None, za=None):
    """qfuse's EpilogueForm::Onednn / OnednnSum with input scale si"""
    v = ((((acc.astype(F32) * F32(si)).astype(F32) * ws[None, :, None, None]).astype(F32))
         + b[None, :, None, None]).astype(F32)
    t = (v * F32(F32(1) / F32(so))).astype(F32)
    if aq is not None:
        w = ((aq.astype(F32) - F32(za)) * F32(F32(sa) / F32(so))).astype(F32)
        t = (t + w).astype(F32)
    if relu:
        t = np.maximum(t, F32(0))
    return np.clip(np.rint((t + F32(zo)).astype(F32)), 0, 255).astype(np.uint8)


def layer(rng, with_sum, relu):
    C, O, H = 32, 64, 8
    while True:
        si = F32(10 ** rng.uniform(-3, -1.5))
        if round_trip(si) != si:
            break
    zi = int(rng.integers(0, 40))
    ws = (10 ** rng.uniform(-3, -2, O)).astype(F32)
    wq = rng.integers(-128, 128, (O, C, 1, 1)).astype(np.int8)
    xq = rng.integers(0, 256, (1, C, H, H)).astype(np.uint8)
    acc = np.einsum("oc,nchw->nohw", wq[:, :, 0, 0].astype(I64), xq.astype(I64) - zi)
    p = ((acc.astype(F32) * si).astype(F32) * ws[None, :, None, None]).astype(F32)
    p2 = ((acc.astype(F32) * round_trip(si)).astype(F32) * ws[None, :, None, None]).astype(F32)
    so = F32(2.0 ** np.round(np.log2(float(np.std(p)) / 30)))
    inv = F32(1) / so
    zo = 0  # a zero point added before rounding would absorb the moved ulp (f32(t + zo))
    b = np.zeros(O, dtype=F32)
    for o in range(O):
        cand = np.flatnonzero(((p[0, o] != p2[0, o]) & (p[0, o] * inv > 4)).ravel())
        if cand.size == 0:
            continue
        j = cand[0]
        pv = p[0, o].ravel()[j]
        target = F32((np.floor(F64(pv) * F64(inv)) + 0.5) / F64(inv))
        bo = F32(F64(target) - F64(pv))
        if F32(pv + bo) == target:
            b[o] = bo
    sa = za = aq = None
    if with_sum:
        sa, za = so, 120
        aq = np.clip(za + rng.integers(-3, 4, (1, O, H, H)), 0, 255).astype(np.uint8)
    pw = torch.ops.onednn.qconv_prepack(torch.from_numpy(wq), torch.from_numpy(ws), float(si), zi, [1, 1], [0, 0],
                                        [1, 1], 1, list(xq.shape))
    xt = torch.from_numpy(xq).contiguous(memory_format=torch.channels_last)
    common = (torch.tensor(float(si)), torch.tensor(zi, dtype=torch.int32), pw, torch.from_numpy(ws),
              torch.zeros(O, dtype=torch.int32))
    if with_sum:
        y = torch.ops.onednn.qconv2d_pointwise.binary_tensor(
            xt, *common, torch.from_numpy(aq).contiguous(memory_format=torch.channels_last), torch.from_numpy(b),
            [1, 1], [0, 0], [1, 1], 1, float(so), zo, torch.uint8, float(sa), za, "sum", 1.0,
            "relu" if relu else "none", [None], "")
    else:
        y = torch.ops.onednn.qconv_pointwise.tensor(
            xt, *common, torch.from_numpy(b), [1, 1], [0, 0], [1, 1], 1, float(so), zo, torch.uint8,
            "relu" if relu else "none", [None], "")
    y = y.contiguous().numpy().astype(np.uint8)
    plain = rule(acc, si, ws, b, so, zo, relu, aq, sa, za)
    rt = rule(acc, round_trip(si), ws, b, so, zo, relu, aq, sa, za)
    print(f"  plain scale: {int((plain != y).sum())} of {y.size} bytes differ from oneDNN; "
          f"round-trip scale: {int((rt != y).sum())}")
    return dict(si=si, zi=zi, ws=ws, wq=wq, b=b, xq=xq, sa=sa, za=za, aq=aq, so=so, zo=zo, y=y)


def main():
    out = sys.argv[1]
    rng = np.random.default_rng(5)
    for name, with_sum, relu in (("src_tie", False, False), ("src_tie_relu", False, True),
                                 ("src_tie_sum", True, False)):
        print(name)
        L = layer(rng, with_sum, relu)
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        files = [("xq", "x_u8"), ("wq", "weight_q"), ("ws", "weight_scale"), ("b", "bias"), ("y", "output_u8")]
        for k, f in files + ([("aq", "addend_u8")] if with_sum else []):
            np.save(os.path.join(d, f + ".npy"), L[k])
        case = dict(name=name, op="qconv_pointwise.tensor" + (" / qconv2d_pointwise.binary_tensor 'sum'" if with_sum else ""),
                    relu=relu, stride=[1, 1], padding=[0, 0], dilation=[1, 1], groups=1,
                    input=dict(scale=float(L["si"]), zero_point=L["zi"],
                               round_trip_scale=float(round_trip(L["si"]))),
                    addend=dict(scale=float(L["sa"]), zero_point=L["za"]) if with_sum else None,
                    output=dict(scale=float(L["so"]), zero_point=L["zo"]),
                    torch=torch.__version__, cpu_capability=torch.backends.cpu.get_cpu_capability(),
                    cpu="x86-64 with AVX-512 VNNI")
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump(case, f, indent=1)


if __name__ == "__main__":
    main()
